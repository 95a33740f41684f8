//! The audit log through real hub processes and the `hub audit` command:
//! accesses are recorded, chains verify offline, every kind of tampering is
//! caught at the first bad sequence number, and privacy officers stay in scope.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use hub::audit::chain::AuditKey;
use hub::audit::{CheckpointSettings, Recorder};
use hub::store::{SledStore, Store};
use ketenhub_sdk::{AuditAction, AuditFilter, AuditOutcome, ErrorCode, Event};
use tests::{messages, DevHub, HubProcess};
use wire::audit::{AuditActor, AuditRecord};
use wire::{AgencyKind, Role, ThreadId};

const HUB: &str = env!("CARGO_BIN_EXE_ketenhub-hub");
const WAIT: Duration = Duration::from_secs(20);

/// Runs `hub audit ARGS`; returns the exit code and stdout.
fn audit(args: &[&str]) -> anyhow::Result<(i32, String)> {
    let output = Command::new(HUB).arg("audit").args(args).output()?;
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    Ok((output.status.code().unwrap_or(-1), format!("{stdout}{stderr}")))
}

fn path(p: &Path) -> &str {
    p.to_str().expect("temporary paths are UTF-8")
}

#[tokio::test]
async fn accesses_are_recorded_and_the_chain_verifies_offline() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut hub = HubProcess::start(HUB.as_ref(), dir.path(), "127.0.0.1:0", "")?;
    let vt = hub.client("vt-utrecht-caseworker").discard_events().connect().await?;
    let lt = hub.client("lt-woerden-caseworker").connect().await?;
    let mut lt_events = lt.events().unwrap();
    let gi = hub.client("gi-save-caseworker").discard_events().connect().await?;
    let thread = vt.create_thread().await?;
    vt.add_member(thread, lt.member_id(), &tests::consent()).await?;
    let canary = format!("canary-{}", uuid::Uuid::new_v4());
    vt.send_text(thread, &canary).await?;
    messages(&mut lt_events, 1, WAIT).await?;
    assert!(gi.members(thread).await.is_err());
    let rvdk = hub.client("rvdk-caseworker").discard_events().connect().await?;
    let safety = ketenhub_sdk::Grounds::new("unsafe situation persists", "vt-safety");
    vt.add_member(thread, rvdk.member_id(), &safety).await?;
    vt.remove_member(thread, rvdk.member_id()).await?;
    // Deliveries are recorded just after they are sent; give the last one a moment.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(hub.terminate()?.success());

    let data = dir.path().join("data");
    let (code, out) = audit(&["verify", "--data", path(&data)])?;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("intact"), "{out}");

    let export = dir.path().join("audit.jsonl");
    let (code, out) = audit(&["export", "--data", path(&data), "--out", path(&export)])?;
    assert_eq!(code, 0, "{out}");
    let (_, pubkey) = audit(&["pubkey", "--data", path(&data)])?;
    let key_file = dir.path().join("audit.pub");
    std::fs::write(&key_file, pubkey.trim())?;
    let (code, out) = audit(&["verify", "--file", path(&export), "--pubkey", path(&key_file)])?;
    assert_eq!(code, 0, "{out}");

    // One case's export: the other entries are omitted lines, and every link still verifies.
    let case_export = dir.path().join("case.jsonl");
    let args = ["export", "--data", path(&data), "--case", &thread.to_string(), "--out", path(&case_export)];
    let (code, out) = audit(&args)?;
    assert_eq!(code, 0, "{out}");
    let case_text = std::fs::read_to_string(&case_export)?;
    assert!(case_text.contains("\"type\":\"omitted\""), "nothing was omitted");
    assert!(!case_text.contains("\"name\":\"connect\""), "a connect entry is not about the case");
    let (code, out) = audit(&["verify", "--file", path(&case_export), "--pubkey", path(&key_file)])?;
    assert_eq!(code, 0, "{out}");

    let text = std::fs::read_to_string(&export)?;
    assert!(!text.contains(&canary), "content reached the audit log");
    for action in ["connect", "create_thread", "add_member", "remove_member", "send", "deliver", "list_members"] {
        assert!(text.contains(&format!("\"name\":\"{action}\"")), "no {action} entry");
    }
    assert!(text.contains("\"nen7513.rule\":\"not-a-member\""), "GI's refusal is not recorded");
    assert!(text.contains("\"nen7513.legal_basis\":\"consent\""), "the add's legal basis is not recorded");
    assert!(text.contains("\"type\":\"checkpoint\""), "shutdown left no checkpoint");

    // The report for the family names both organisations and no content.
    let (code, report) = audit(&["report", "--data", path(&data), "--case", &thread.to_string()])?;
    assert_eq!(code, 0, "{report}");
    assert!(report.contains("Veilig Thuis Utrecht") && report.contains("Lokaal team Woerden"), "{report}");
    let (had_access, timeline) = report.split_once("## Timeline").expect("two sections");
    assert!(!had_access.contains("SAVE Utrecht"), "a refused organisation is listed as having access: {report}");
    assert!(
        timeline.contains("| SAVE Utrecht | daan.mulder | caseworker | looked up who is on the case | - | refused |"),
        "{report}"
    );
    assert!(!report.contains(&canary));
    Ok(())
}

fn record(i: u64) -> AuditRecord {
    AuditRecord {
        at_ms: 1_700_000_000_000 + i,
        actor: Some(AuditActor {
            oin: "00000001800000000001".parse().expect("a valid OIN"),
            organisation: "Veilig Thuis Utrecht".into(),
            kind: AgencyKind::Vt,
            worker: format!("worker.{}", i % 7),
            role: Role::Caseworker,
            certificate: "ab".repeat(32),
        }),
        on_behalf_of: None,
        action: AuditAction::Send,
        case: Some(ThreadId(uuid::Uuid::from_u128(u128::from(i % 50)))),
        object: Some(format!("message {i}")),
        purpose: None,
        legal_basis: Some("consent".into()),
        outcome: AuditOutcome::Allowed,
        rule: "member-of-case".into(),
        peer: Some("127.0.0.1:4000".into()),
    }
}

/// Rewrites an export file's lines.
fn tampered(export: &Path, out: &Path, change: impl FnOnce(&mut Vec<String>)) -> anyhow::Result<()> {
    let mut lines: Vec<String> = std::fs::read_to_string(export)?.lines().map(str::to_owned).collect();
    change(&mut lines);
    std::fs::write(out, lines.join("\n") + "\n")?;
    Ok(())
}

/// The index of the line holding entry `seq`.
fn line_of(lines: &[String], seq: u64) -> usize {
    let needle = format!("\"type\":\"dataverwerking\",\"seq\":{seq},");
    lines.iter().position(|l| l.contains(&needle)).expect("the entry is in the export")
}

#[test]
fn a_chain_of_100000_entries_verifies_and_every_tampering_is_named() -> anyhow::Result<()> {
    const ENTRIES: u64 = 100_000;
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    let key = AuditKey::load_or_create(&hub::server::audit_key_path(&data))?;
    let public = key.public_key_hex();
    {
        let store = SledStore::open(&data.join("store"))?;
        let settings = CheckpointSettings { every_entries: 1000, every_ms: u64::MAX };
        let mut recorder = Recorder::resume(&store, Arc::new(key), settings)?;
        for i in 1..=ENTRIES {
            recorder.record(&store, record(i))?;
            recorder.checkpoint_if_due(&store, 1_700_000_000_000 + i, false)?;
        }
        store.flush()?;
    }
    let export = dir.path().join("audit.jsonl");
    let (code, out) = audit(&["export", "--data", path(&data), "--out", path(&export)])?;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("exported 100000 entries"), "{out}");
    let key_file = dir.path().join("audit.pub");
    std::fs::write(&key_file, &public)?;
    let verify = |file: &Path| audit(&["verify", "--file", path(file), "--pubkey", path(&key_file)]);
    let (code, out) = verify(&export)?;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("100000 entries") && out.contains("100 checkpoints"), "{out}");

    let bad = dir.path().join("bad.jsonl");
    let expect_broken_at = |seq: u64, what: &str| -> anyhow::Result<()> {
        let (code, out) = verify(&bad)?;
        assert_eq!(code, 1, "{what} was not detected: {out}");
        assert!(out.contains(&format!("BROKEN at seq {seq}:")), "{what}: {out}");
        Ok(())
    };
    tampered(&export, &bad, |lines| {
        let i = line_of(lines, 4242);
        lines[i] = lines[i].replace("message 4242", "message 4243");
    })?;
    expect_broken_at(4242, "a changed entry")?;
    tampered(&export, &bad, |lines| {
        let i = line_of(lines, 5000);
        lines.remove(i);
    })?;
    expect_broken_at(5000, "a deleted entry")?;
    tampered(&export, &bad, |lines| {
        let i = line_of(lines, 6000);
        let copy = lines[i].clone();
        lines.insert(i + 1, copy);
    })?;
    expect_broken_at(6001, "an inserted entry")?;
    tampered(&export, &bad, |lines| {
        let (a, b) = (line_of(lines, 7000), line_of(lines, 7001));
        lines.swap(a, b);
    })?;
    expect_broken_at(7000, "reordered entries")?;
    tampered(&export, &bad, |lines| {
        let i = lines.iter().position(|l| l.contains("\"type\":\"checkpoint\",\"seq\":3000,")).expect("checkpoint");
        let at = lines[i].find("\"signature\":\"").expect("signature") + "\"signature\":\"".len();
        let flipped = if &lines[i][at..at + 1] == "0" { "1" } else { "0" };
        lines[i].replace_range(at..at + 1, flipped);
    })?;
    expect_broken_at(3000, "a forged checkpoint")?;
    Ok(())
}

#[tokio::test]
async fn a_privacy_officer_sees_its_organisations_scope_and_no_more() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let hub = DevHub::start(dir.path(), tests::limits()).await?;
    let vt = hub.client("vt-utrecht-caseworker").discard_events().connect().await?;
    let lt = hub.client("lt-woerden-caseworker").discard_events().connect().await?;
    let gi = hub.client("gi-save-caseworker").discard_events().connect().await?;
    let officer = hub.client("vt-utrecht-privacy").connect().await?;
    let mut officer_events = officer.events().unwrap();
    let ours = vt.create_thread().await?;
    vt.add_member(ours, lt.member_id(), &tests::consent()).await?;
    lt.send_text(ours, "LT's note").await?;
    let theirs = gi.create_thread().await?;
    gi.send_text(theirs, "GI only").await?;

    let seen = officer.audit_query(AuditFilter::default()).await?;
    let cases: std::collections::HashSet<ThreadId> = seen.iter().filter_map(|e| e.record.case).collect();
    assert!(cases.contains(&ours), "the officer does not see its own case");
    assert!(!cases.contains(&theirs), "the officer sees a case of another organisation");
    let lt_in_ours = seen
        .iter()
        .any(|e| e.record.case == Some(ours) && e.record.actor.as_ref().is_some_and(|a| a.kind == AgencyKind::Lt));
    assert!(lt_in_ours, "what LT did in VT's case is in scope");

    // By worker and by time range.
    let anna = vt.member_id();
    let by_anna = officer.audit_query(AuditFilter { worker: Some(anna.clone()), ..Default::default() }).await?;
    assert!(!by_anna.is_empty());
    assert!(by_anna.iter().all(|e| e.record.actor.as_ref().is_some_and(|a| a.worker == anna.worker)));
    let future = officer.audit_query(AuditFilter { since_ms: Some(u64::MAX / 2), ..Default::default() }).await?;
    assert!(future.is_empty());

    // Another organisation's case is refused, like a case that does not exist; the refusal is recorded.
    let refused = officer.audit_query(AuditFilter { case: Some(theirs), ..Default::default() }).await;
    let unknown = officer.audit_query(AuditFilter { case: Some(ThreadId::random()), ..Default::default() }).await;
    assert_eq!(refused.as_ref().err().and_then(|e| e.code()), Some(ErrorCode::Forbidden));
    assert_eq!(format!("{refused:?}"), format!("{unknown:?}"));
    let queries = officer.audit_query(AuditFilter::default()).await?;
    assert!(queries.iter().any(|e| e.record.action == AuditAction::AuditQuery
        && e.record.case == Some(theirs)
        && e.record.outcome == AuditOutcome::Failed));

    // The family's access report: who, when, in what role, on what basis; no content.
    let report = officer.access_report(ours).await?;
    assert!(report.contains("Lokaal team Woerden") && report.contains("consent"), "{report}");
    assert!(!report.contains("LT's note"));
    // A privacy officer opens no case, and receives no case entries.
    assert!(officer.create_thread().await.is_err());
    assert!(tokio::time::timeout(Duration::from_millis(200), async {
        use futures_util::StreamExt;
        while let Some(event) = officer_events.next().await {
            if matches!(event, Event::Message(_)) {
                return;
            }
        }
    })
    .await
    .is_err());
    hub.stop().await
}

/// The real sled store, with audit appends failing on demand (as on a full
/// disk); everything else passes through.
struct AuditFails {
    inner: SledStore,
    failing: std::sync::atomic::AtomicBool,
}

mod delegate {
    use hub::store::{AcceptedCommit, Appended, BlobRecord, Created, HandoverStep, Store, StoreError};
    use std::sync::atomic::Ordering;
    use uuid::Uuid;
    use wire::audit::{AuditCheckpoint, AuditEntry};
    use wire::handover::Ownership;
    use wire::{BlobId, Entry, MemberId, MessageId, ThreadId};

    impl Store for super::AuditFails {
        fn append_audit(&self, entry: &AuditEntry) -> Result<(), StoreError> {
            if self.failing.load(Ordering::SeqCst) {
                return Err(StoreError::Backend("injected: no space left on device".into()));
            }
            self.inner.append_audit(entry)
        }
        fn create_thread(&self, c: &MemberId, r: Uuid, at: u64) -> Result<Created, StoreError> {
            self.inner.create_thread(c, r, at)
        }
        fn add_member(&self, t: ThreadId, b: &MemberId, m: &MemberId, at: u64) -> Result<Appended, StoreError> {
            self.inner.add_member(t, b, m, at)
        }
        fn append_message(
            &self,
            t: ThreadId,
            s: &MemberId,
            id: MessageId,
            p: &[u8],
            at: u64,
        ) -> Result<Appended, StoreError> {
            self.inner.append_message(t, s, id, p, at)
        }
        fn is_member(&self, t: ThreadId, m: &MemberId) -> Result<bool, StoreError> {
            self.inner.is_member(t, m)
        }
        fn members(&self, t: ThreadId) -> Result<Vec<MemberId>, StoreError> {
            self.inner.members(t)
        }
        fn threads_of(&self, m: &MemberId) -> Result<Vec<ThreadId>, StoreError> {
            self.inner.threads_of(m)
        }
        fn entries_after(&self, t: ThreadId, a: u64, l: usize) -> Result<Vec<Entry>, StoreError> {
            self.inner.entries_after(t, a, l)
        }
        fn last_seq(&self, t: ThreadId) -> Result<u64, StoreError> {
            self.inner.last_seq(t)
        }
        fn cursor(&self, m: &MemberId, t: ThreadId) -> Result<u64, StoreError> {
            self.inner.cursor(m, t)
        }
        fn advance_cursor(&self, m: &MemberId, t: ThreadId, s: u64) -> Result<(), StoreError> {
            self.inner.advance_cursor(m, t, s)
        }
        fn group_state(&self, t: ThreadId) -> Result<Option<Vec<u8>>, StoreError> {
            self.inner.group_state(t)
        }
        fn init_group(&self, t: ThreadId, s: &[u8]) -> Result<(), StoreError> {
            self.inner.init_group(t, s)
        }
        fn apply_commit(&self, c: &AcceptedCommit<'_>) -> Result<Vec<Entry>, StoreError> {
            self.inner.apply_commit(c)
        }
        fn add_key_packages(&self, m: &MemberId, p: &[Vec<u8>]) -> Result<u64, StoreError> {
            self.inner.add_key_packages(m, p)
        }
        fn take_key_package(&self, m: &MemberId) -> Result<Option<Vec<u8>>, StoreError> {
            self.inner.take_key_package(m)
        }
        fn key_package_stock(&self, m: &MemberId) -> Result<u64, StoreError> {
            self.inner.key_package_stock(m)
        }
        fn blob(&self, t: ThreadId, b: BlobId) -> Result<Option<BlobRecord>, StoreError> {
            self.inner.blob(t, b)
        }
        fn put_blob_chunk(&self, b: BlobId, r: &BlobRecord, i: u32, d: &[u8]) -> Result<(), StoreError> {
            self.inner.put_blob_chunk(b, r, i, d)
        }
        fn blob_chunk(&self, t: ThreadId, b: BlobId, i: u32) -> Result<Option<Vec<u8>>, StoreError> {
            self.inner.blob_chunk(t, b, i)
        }
        fn threads(&self) -> Result<Vec<ThreadId>, StoreError> {
            self.inner.threads()
        }
        fn ownership(&self, t: ThreadId) -> Result<Option<Ownership>, StoreError> {
            self.inner.ownership(t)
        }
        fn is_read_only(&self, t: ThreadId, m: &MemberId) -> Result<bool, StoreError> {
            self.inner.is_read_only(t, m)
        }
        fn ownerships(&self) -> Result<Vec<(ThreadId, Ownership)>, StoreError> {
            self.inner.ownerships()
        }
        fn apply_handover(&self, step: &HandoverStep<'_>) -> Result<Vec<Entry>, StoreError> {
            self.inner.apply_handover(step)
        }
        fn expire_messages(&self, t: ThreadId, u: u64, b: u64) -> Result<u64, StoreError> {
            self.inner.expire_messages(t, u, b)
        }
        fn blobs(&self) -> Result<Vec<(BlobId, BlobRecord)>, StoreError> {
            self.inner.blobs()
        }
        fn delete_blob(&self, t: ThreadId, b: BlobId) -> Result<(), StoreError> {
            self.inner.delete_blob(t, b)
        }
        fn prune_audit(&self, b: u64) -> Result<u64, StoreError> {
            self.inner.prune_audit(b)
        }
        fn audit_entries(&self, f: u64, l: usize) -> Result<Vec<AuditEntry>, StoreError> {
            self.inner.audit_entries(f, l)
        }
        fn last_audit(&self) -> Result<Option<(u64, [u8; 32])>, StoreError> {
            self.inner.last_audit()
        }
        fn put_checkpoint(&self, c: &AuditCheckpoint) -> Result<(), StoreError> {
            self.inner.put_checkpoint(c)
        }
        fn checkpoints(&self) -> Result<Vec<AuditCheckpoint>, StoreError> {
            self.inner.checkpoints()
        }
        fn flush(&self) -> Result<(), StoreError> {
            self.inner.flush()
        }
    }
}

#[tokio::test]
async fn an_action_whose_audit_entry_cannot_be_written_is_refused() -> anyhow::Result<()> {
    use std::sync::atomic::Ordering;
    let dir = tempfile::tempdir()?;
    let faults = Arc::new(AuditFails {
        inner: SledStore::open(&dir.path().join("data/store"))?,
        failing: std::sync::atomic::AtomicBool::new(false),
    });
    let hub = DevHub::start_with_store(dir.path(), tests::limits(), faults.clone()).await?;
    let vt = hub.client("vt-utrecht-caseworker").discard_events().connect().await?;
    let lt = hub.client("lt-woerden-caseworker").connect().await?;
    let mut lt_events = lt.events().unwrap();
    let thread = vt.create_thread().await?;
    vt.add_member(thread, lt.member_id(), &tests::consent()).await?;
    vt.send_text(thread, "before").await?;

    faults.failing.store(true, Ordering::SeqCst);
    let during = vt.send_text(thread, "while the audit log cannot be written").await;
    assert_eq!(during.err().and_then(|e| e.code()), Some(ErrorCode::Unavailable));
    assert_eq!(lt.members(thread).await.err().and_then(|e| e.code()), Some(ErrorCode::Unavailable), "reads too");
    let stored = faults.inner.entries_after(thread, 0, 100)?;
    assert_eq!(stored.iter().filter(|e| matches!(e.body, wire::EntryBody::Message { .. })).count(), 1);

    faults.failing.store(false, Ordering::SeqCst);
    vt.send_text(thread, "after").await?;
    let got: Vec<String> = messages(&mut lt_events, 2, WAIT)
        .await?
        .iter()
        .map(|m| String::from_utf8_lossy(m.payload()).into_owned())
        .collect();
    assert_eq!(got, ["before", "after"]);
    let verified = hub.stop_and_verify_audit().await?;
    assert!(verified.is_ok(), "{verified:?}");
    Ok(())
}
