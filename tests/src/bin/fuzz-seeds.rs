//! `fuzz-seeds`: writes the seed corpora of the fuzz targets in `fuzz/`.
//!
//! ```text
//! cargo run -p tests --bin fuzz-seeds -- fuzz/corpus
//! ```
//!
//! A fuzzer that starts from nothing spends its minute learning that a frame is
//! CBOR and a packet JSON; one that starts from real inputs mutates its way into
//! the checks behind the first parse. So every seed here is made with the code
//! that makes such input in production (the SDK's MLS device, the packet
//! example, the audit chain, the example policy) and is checked to pass the
//! reader it seeds before it is written: a seed that no longer parses fails
//! this program, rather than silently leaving a fuzzer at the front door.
//! The seeds are generated rather than committed because MLS keys are fresh
//! each run and the formats follow the code.
//!
//! The MLS targets read length-prefixed sections (4-byte big-endian length,
//! then the bytes; see `docs/fuzzing.md`). This program includes the fuzz
//! crate's reader of them (`fuzz/src/lib.rs`, which is its own workspace and so
//! cannot be a dependency) and reads every MLS seed back with it, so the writer
//! here and the reader there cannot drift apart unnoticed; `cargo test
//! --workspace` runs that reader's unit test too.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{ensure, Context as _};
use hub::audit::chain::{self, AuditKey, Chain, ExportLine};
use std::sync::Arc;

use certs::binding::{Binder, Verifier};
use ketenhub_sdk::device::Device;
use ketenhub_sdk::packet::{Date, HandoverPacket};
use wire::audit::{AuditAction, AuditActor, AuditOutcome, AuditRecord};
use wire::{AgencyKind, ClientFrame, MemberId, MessageId, Request, Role, ThreadId};

/// The example policy, as the hub ships it.
#[path = "../../../fuzz/src/lib.rs"]
mod framing;

const POLICY: &str = include_str!("../../../deploy/policy.toml");

/// The day the packet seed is made for; `fuzz/fuzz_targets/packet_json.rs` validates on the same day.
const TODAY: (u16, u8, u8) = (2026, 3, 16);

fn main() -> ExitCode {
    let Some(out) = std::env::args_os().nth(1).map(PathBuf::from) else {
        eprintln!("usage: fuzz-seeds OUT_DIR   (writes OUT_DIR/<target>/<seed>)");
        return ExitCode::from(2);
    };
    match write_all(&out) {
        Ok(count) => {
            println!("wrote {count} seeds under {}", out.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("fuzz-seeds: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn write_all(out: &Path) -> anyhow::Result<usize> {
    let mut seeds = Seeds { out, count: 0 };
    let mls = mls_seeds()?;
    frames(&mut seeds, &mls)?;
    mls_targets(&mut seeds, &mls)?;
    packet(&mut seeds)?;
    audit(&mut seeds)?;
    seeds.write("policy_parse", "example-policy", POLICY.as_bytes())?;
    ensure!(hub::policy::Policy::parse(POLICY).is_ok(), "the example policy does not parse");
    Ok(seeds.count)
}

struct Seeds<'a> {
    out: &'a Path,
    count: usize,
}

impl Seeds<'_> {
    fn write(&mut self, target: &str, name: &str, bytes: &[u8]) -> anyhow::Result<()> {
        let dir = self.out.join(target);
        std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
        let path = dir.join(name);
        std::fs::write(&path, bytes).with_context(|| format!("write {}", path.display()))?;
        self.count += 1;
        Ok(())
    }
}

/// A real thread's group and the commits of its first epochs, all by its creator.
struct Mls {
    /// The dev PKI's CA, which the devices' leaves are bound to.
    ca: String,
    thread: ThreadId,
    creator: MemberId,
    group_info: Vec<u8>,
    ratchet_tree: Vec<u8>,
    /// Add bob (epoch 0), remove bob (epoch 1), add carol (epoch 2).
    commits: Vec<Vec<u8>>,
    /// The Welcome of the first commit.
    welcome: Vec<u8>,
    /// The GroupInfo of the epoch the first commit leads to.
    group_info_after_first: Vec<u8>,
    key_package: Vec<u8>,
}

fn mls_seeds() -> anyhow::Result<Mls> {
    let thread = ThreadId::random();
    let pki = certs::dev::DevPki::generate()?;
    let identities = Arc::new(Verifier::from_pem(pki.ca.cert.as_bytes())?);
    let binder = |slug: &str| -> anyhow::Result<Binder> {
        let pair = pki.client(slug).with_context(|| format!("no sample {slug}"))?;
        Ok(Binder::from_pem(pair.cert.as_bytes(), pair.key.as_bytes())?)
    };
    let (alice, bob, carol) =
        (binder("vt-utrecht-caseworker")?, binder("lt-woerden-caseworker")?, binder("rvdk-caseworker")?);
    let mut device = Device::open(&alice, identities.clone(), None)?;
    let package = |who: &Binder| -> anyhow::Result<_> {
        let bytes = Device::open(who, identities.clone(), None)?.key_packages(1)?.remove(0);
        let verified = wire::mls::verify_key_package(&bytes).map_err(|e| anyhow::anyhow!("key package: {e:?}"))?;
        Ok((bytes, verified.key_package))
    };
    let (group_info, ratchet_tree) = device.create_group(thread)?;
    let (bob_bytes, bob_package) = package(&bob)?;
    let add_bob = device.add(thread, bob_package)?;
    device.commit_accepted(thread)?;
    let remove_bob = device.remove(thread, &bob.identity().member_id())?;
    device.commit_accepted(thread)?;
    let (_, carol_package) = package(&carol)?;
    let add_carol = device.add(thread, carol_package)?;
    device.commit_accepted(thread)?;
    let welcome = add_bob.welcome.clone().context("an add without a Welcome")?;
    let mls = Mls {
        ca: pki.ca.cert.clone(),
        thread,
        creator: alice.identity().member_id(),
        group_info,
        ratchet_tree,
        commits: vec![add_bob.commit, remove_bob.commit, add_carol.commit],
        group_info_after_first: add_bob.group_info,
        welcome,
        key_package: bob_bytes,
    };
    // The hub must accept all of it, or the seeds would stop at the first check.
    let mut state = hub::groups::init(&identities, thread, &mls.creator, &mls.group_info, &mls.ratchet_tree)
        .map_err(|e| anyhow::anyhow!("the hub refuses the seed group: {e}"))?;
    for (i, commit) in mls.commits.iter().enumerate() {
        state = hub::groups::check_commit(
            &identities,
            &state,
            thread,
            &mls.creator,
            commit,
            hub::groups::CommitKind::Member,
        )
        .map_err(|e| anyhow::anyhow!("the hub refuses seed commit {i}: {e}"))?
        .state;
    }
    Ok(mls)
}

/// Length-prefixed sections, as `ketenhub_fuzz::sections` reads them.
fn sections<'a>(parts: impl IntoIterator<Item = &'a [u8]>) -> Vec<u8> {
    let mut out = Vec::new();
    for part in parts {
        let len = u32::try_from(part.len()).expect("seed parts are small");
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(part);
    }
    out
}

fn mls_targets(seeds: &mut Seeds<'_>, mls: &Mls) -> anyhow::Result<()> {
    let caller = format!("{}/{}", mls.creator.oin, mls.creator.worker);
    let head =
        [mls.ca.as_bytes(), mls.thread.0.as_bytes().as_slice(), caller.as_bytes(), &mls.group_info, &mls.ratchet_tree];
    let inputs = [
        ("mls_init", "new-group", head.to_vec()),
        ("mls_commit", "add", head.into_iter().chain([mls.commits[0].as_slice()]).collect()),
        ("mls_commit", "add-remove-add", head.into_iter().chain(mls.commits.iter().map(Vec::as_slice)).collect()),
    ];
    for (target, name, parts) in inputs {
        let bytes = sections(parts.iter().copied());
        // Read back as the fuzz target reads it.
        let read: Vec<&[u8]> = framing::sections(&bytes).collect();
        ensure!(read == parts, "seed {target}/{name} does not read back as its sections");
        let input = framing::group_input(&bytes).with_context(|| format!("seed {target}/{name}: no group read"))?;
        let misread = (input.thread, &input.caller) != (mls.thread, &mls.creator)
            || [input.group_info, input.tree] != parts[3..5]
            || input.rest.collect::<Vec<_>>() != parts[5..];
        ensure!(!misread, "seed {target}/{name}: the group's sections misread");
        // The CA read back must be the one the seed's leaves are bound to.
        hub::groups::init(&input.identities, input.thread, &input.caller, input.group_info, input.tree)
            .map_err(|e| anyhow::anyhow!("seed {target}/{name}: the group read back is refused: {e}"))?;
        seeds.write(target, name, &bytes)?;
    }
    Ok(())
}

fn frames(seeds: &mut Seeds<'_>, mls: &Mls) -> anyhow::Result<()> {
    let thread = mls.thread;
    let member = MemberId::new("00000001800000000002", "bob")?;
    let requests = [
        ("create-thread", Request::CreateThread { client_ref: uuid::Uuid::new_v4() }),
        (
            "add-member",
            Request::AddMember {
                thread,
                member: member.clone(),
                reason: "overdracht na onderzoek".into(),
                legal_basis: "vt-safety".into(),
            },
        ),
        ("send", Request::Send { thread, message: MessageId::new(), payload: mls.commits[0].clone() }),
        ("list-threads", Request::ListThreads),
        ("list-members", Request::ListMembers { thread }),
        (
            "upload-key-packages",
            Request::UploadKeyPackages { key_packages: vec![serde_bytes::ByteBuf::from(mls.key_package.clone())] },
        ),
        (
            "init-group",
            Request::InitGroup { thread, group_info: mls.group_info.clone(), ratchet_tree: mls.ratchet_tree.clone() },
        ),
        (
            "commit",
            Request::Commit {
                thread,
                commit: mls.commits[0].clone(),
                welcome: Some(serde_bytes::ByteBuf::from(mls.welcome.clone())),
                group_info: Some(serde_bytes::ByteBuf::from(mls.group_info_after_first.clone())),
            },
        ),
        ("claim-key-package", Request::ClaimKeyPackage { thread, member }),
    ];
    let mut frames: Vec<(&str, ClientFrame)> = requests
        .into_iter()
        .enumerate()
        .map(|(i, (name, request))| (name, ClientFrame::Request { id: i as u64 + 1, request }))
        .collect();
    frames.push(("ack", ClientFrame::Ack { thread, seq: 42 }));
    for (name, frame) in frames {
        let bytes = wire::encode(&frame);
        ensure!(wire::decode::<ClientFrame>(&bytes).is_ok(), "seed frame {name} does not decode");
        seeds.write("frame_decode", name, &bytes)?;
    }
    Ok(())
}

fn packet(seeds: &mut Seeds<'_>) -> anyhow::Result<()> {
    let today = Date::new(TODAY.0, TODAY.1, TODAY.2)?;
    let json = HandoverPacket::example(today).to_json();
    HandoverPacket::from_json(&json)?.validate(today).map_err(|e| anyhow::anyhow!("the example packet: {e}"))?;
    seeds.write("packet_json", "example", json.as_bytes())
}

fn audit(seeds: &mut Seeds<'_>) -> anyhow::Result<()> {
    const START_MS: u64 = 1_767_225_600_000;
    let key = AuditKey::generate()?;
    let actor = AuditActor {
        oin: "00000001800000000001".parse()?,
        organisation: "Veilig Thuis Utrecht".into(),
        kind: AgencyKind::VT,
        worker: "anna.devries".into(),
        role: Role::System,
        certificate: "ab".repeat(32),
    };
    let case = ThreadId::random();
    let records = [
        (AuditAction::Connect, None, AuditOutcome::Allowed),
        (AuditAction::CreateThread, Some(case), AuditOutcome::Allowed),
        (AuditAction::Send, Some(case), AuditOutcome::Allowed),
        (AuditAction::Deliver, Some(ThreadId::random()), AuditOutcome::Allowed),
        (AuditAction::AddMember, Some(case), AuditOutcome::Denied),
    ];
    let mut log = Chain::resume(None, wire::merkle::CompactRange::new(), START_MS);
    let mut lines = Vec::new();
    for (i, (action, case_of, outcome)) in records.into_iter().enumerate() {
        let at_ms = START_MS + i as u64 * 1_000;
        let record = AuditRecord {
            at_ms,
            // The first entry has no actor, as a refused handshake has none.
            actor: (i > 0).then(|| actor.clone()),
            on_behalf_of: Some(MemberId::new("00000001800000000001", "anna.devries")?),
            action,
            case: case_of,
            object: Some(format!("message-{i}")),
            purpose: Some("onderzoek".into()),
            legal_basis: case_of.map(|_| "vt-safety".into()),
            outcome,
            rule: "route-permits".into(),
            peer: Some("192.0.2.7:54321".into()),
        };
        let entry = log.append(record).entry;
        // The entry of another case is left out as a filtered export leaves it.
        if case_of.is_some() && case_of != Some(case) {
            let digest = chain::record_digest(&entry.record);
            lines.push(ExportLine::Omitted { seq: entry.seq, prev_hash: entry.prev_hash, digest });
        } else {
            lines.push(ExportLine::Entry(entry));
        }
        if i == 2 || i == 4 {
            lines.push(ExportLine::Head(log.checkpoint(&key, at_ms + 500).context("a head")?));
        }
    }
    let verified = hub::audit::verify::verify(lines.clone(), &key.public_key(), Vec::new())
        .map_err(|e| anyhow::anyhow!("the seed export does not verify: {e}"))?;
    ensure!(verified.checkpoints == 2 && verified.omitted == 1, "the seed export is not the one meant: {verified:?}");
    let mut file = key.public_key_hex();
    file.push('\n');
    for line in &lines {
        file.push_str(&chain::to_json_line(line));
        file.push('\n');
    }
    seeds.write("audit_export", "filtered-export", file.as_bytes())
}
