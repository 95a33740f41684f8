//! The audit log anchored outside the hub: witnesses (the privacy officer's
//! SDK) and `hub audit verify --witness` catch a log whose newest entries were
//! deleted on disk, the hub refuses to start without the log's own key, the SDK
//! refuses an entry that is not in the signed tree, and every kind of tampering
//! with an export is named. Real hub processes, real store files, real TLS.

use std::path::Path;
use std::time::Duration;

use futures_util::StreamExt as _;
use hub::audit::chain::AuditKey;
use hub::store::{KvStore, Store};
use ketenhub_sdk::{AuditAction, AuditError, AuditFilter, Error, Event};
use tests::HubProcess;
use wire::ThreadId;

const HUB: &str = env!("CARGO_BIN_EXE_ketenhub-hub");
const WAIT: Duration = Duration::from_secs(20);

/// Runs `hub audit ARGS`; returns the exit code and stdout and stderr.
fn audit(args: &[&str]) -> anyhow::Result<(i32, String)> {
    tests::hub_audit(HUB, args)
}

use tests::path_arg as path;

fn key_path(dir: &Path) -> std::path::PathBuf {
    hub::server::audit_key_path(&dir.join("data"))
}

/// The hub's audit public key, from its key file, written as `hub audit pubkey` prints it to `dir/audit.pub`.
fn public_key(dir: &Path) -> anyhow::Result<[u8; 32]> {
    let key = AuditKey::load(&key_path(dir))?;
    std::fs::write(dir.join("audit.pub"), key.public_key_hex())?;
    Ok(key.public_key())
}

/// Deletes, as someone with access to a stopped hub's files could, every audit entry after `keep` and every
/// signed head over more entries, straight in the store's files.
fn truncate_audit_log(store: &Path, keep: u64) -> anyhow::Result<u64> {
    let db = tests::store_engine(store)?;
    let mut removed = 0;
    for item in db.scan_prefix([b'A']) {
        let (key, _) = item?;
        let seq = u64::from_be_bytes(key[1..9].try_into()?);
        if seq > keep {
            db.remove(key)?;
            removed += 1;
        }
    }
    for item in db.scan_prefix([b'P']) {
        let (key, _) = item?;
        if u64::from_be_bytes(key[1..9].try_into()?) > keep {
            db.remove(key)?;
        }
    }
    // The copy of the latest head goes too.
    db.remove([b'Q'])?;
    db.flush()?;
    Ok(removed)
}

async fn activity(hub: &HubProcess, messages: usize) -> anyhow::Result<ThreadId> {
    let vt = hub.client("vt-utrecht-caseworker").discard_events().connect().await?;
    let thread = vt.create_thread().await?;
    for i in 0..messages {
        vt.send_text(thread, &format!("bericht {i}")).await?;
    }
    vt.close().await;
    Ok(thread)
}

#[tokio::test]
async fn truncating_the_newest_entries_on_disk_is_caught_by_the_witness_and_by_verify() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let officer_state = dir.path().join("officer");
    let mut hub = HubProcess::start(HUB.as_ref(), dir.path(), "127.0.0.1:0", "")?;
    let key = public_key(dir.path())?;
    let officer = |hub: &HubProcess| hub.client("vt-utrecht-privacy").audit_public_key(key).state_dir(&officer_state);

    activity(&hub, 3).await?;
    let first = officer(&hub).discard_events().connect().await?;
    first.audit_query(AuditFilter::default()).await?;
    let early = first.witnessed_audit_head().expect("a witnessed head").size;
    // Many entries after the first witnessed head, so that what is cut off outweighs what a restart adds.
    activity(&hub, 60).await?;
    let witnessed = first.witness_audit().await?;
    assert!(witnessed.size > early + 60, "{witnessed:?}");
    first.close().await;
    assert!(hub.terminate()?.success());
    let witness_file = officer_state.join(ketenhub_sdk::witness::HEAD_FILE);
    assert!(witness_file.is_file(), "the SDK keeps the witnessed head in its state directory");

    // The newest entries, and the heads over them, go from the stopped hub's files.
    let removed = truncate_audit_log(&dir.path().join("data/store"), early)?;
    assert!(removed > 60, "{removed}");

    // The hub resumes on what the store holds; the witness catches it as soon as it reconnects.
    let mut hub = HubProcess::start(HUB.as_ref(), dir.path(), "127.0.0.1:0", "")?;
    let officer_again = officer(&hub).connect().await?;
    let mut events = officer_again.events().unwrap();
    let caught = officer_again.witness_audit().await;
    assert!(
        matches!(&caught, Err(Error::Audit(AuditError::Rollback { witnessed: w, .. })) if *w == witnessed.size),
        "{caught:?}"
    );
    let alarm = tokio::time::timeout(WAIT, async {
        loop {
            match events.next().await {
                Some(Event::AuditAlarm(error)) => return Some(error),
                Some(_) => continue,
                None => return None,
            }
        }
    })
    .await?;
    assert!(matches!(alarm, Some(AuditError::Rollback { .. })), "{alarm:?}");
    // The witnessed head stays: a later check fails again rather than adopting the truncated log.
    assert_eq!(officer_again.witnessed_audit_head(), Some(witnessed.clone()));
    let query = officer_again.audit_query(AuditFilter::default()).await;
    assert!(matches!(query, Err(Error::Audit(_))), "{query:?}");
    officer_again.close().await;
    assert!(hub.terminate()?.success());

    // Offline: the log alone still looks whole (its heads were deleted with its entries) ...
    let data = dir.path().join("data");
    let pubkey = dir.path().join("audit.pub");
    let (code, out) = audit(&["verify", "--data", path(&data), "--pubkey", path(&pubkey)])?;
    assert_eq!(code, 0, "without a witness a clean truncation is undetectable: {out}");
    // ... but not against the head the witness kept, in the store or in an export.
    let (code, out) =
        audit(&["verify", "--data", path(&data), "--pubkey", path(&pubkey), "--witness", path(&witness_file)])?;
    assert_eq!(code, 17, "{out}");
    assert!(out.contains("[truncated-end]") && out.contains(&format!("covers {} entries", witnessed.size)), "{out}");
    let export = dir.path().join("audit.jsonl");
    let (code, out) = audit(&["export", "--data", path(&data), "--out", path(&export)])?;
    assert_eq!(code, 0, "{out}");
    let (code, out) =
        audit(&["verify", "--file", path(&export), "--pubkey", path(&pubkey), "--witness", path(&witness_file)])?;
    assert_eq!(code, 17, "{out}");
    assert!(out.contains("[truncated-end]"), "{out}");
    Ok(())
}

#[tokio::test]
async fn the_hub_refuses_to_start_without_its_audit_key_or_with_another() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut hub = HubProcess::start(HUB.as_ref(), dir.path(), "127.0.0.1:0", "")?;
    activity(&hub, 1).await?;
    assert!(hub.terminate()?.success());
    let key = key_path(dir.path());
    let original = std::fs::read(&key)?;

    // Missing: refused, and no new key is made in its place.
    std::fs::remove_file(&key)?;
    let refused = HubProcess::start(HUB.as_ref(), dir.path(), "127.0.0.1:0", "").map(|_| ()).unwrap_err();
    let said = format!("{refused:#}");
    assert!(said.contains("is missing") && said.contains("entries"), "{said}");
    assert!(!key.exists(), "a deleted audit key was silently re-created");

    // Another key: refused.
    AuditKey::create(&key)?;
    let refused = HubProcess::start(HUB.as_ref(), dir.path(), "127.0.0.1:0", "").map(|_| ()).unwrap_err();
    let said = format!("{refused:#}");
    assert!(said.contains("did not sign the log's latest head"), "{said}");

    // The log's own key again: it starts.
    std::fs::remove_file(&key)?;
    certs::private::write_file(&key, &original)?;
    let mut hub = HubProcess::start(HUB.as_ref(), dir.path(), "127.0.0.1:0", "")?;
    // Served before stopped: a SIGTERM right after "listening" could beat the signal handler.
    activity(&hub, 1).await?;
    assert!(hub.terminate()?.success());
    Ok(())
}

#[tokio::test]
async fn the_audit_key_may_live_outside_the_data_dir_and_be_rotated() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let keys = dir.path().join("keys");
    let old = keys.join("audit-1.pk8");
    let config = format!("[audit]\nkey = {:?}\n", path(&old));
    let mut hub = HubProcess::start(HUB.as_ref(), dir.path(), "127.0.0.1:0", &config)?;
    activity(&hub, 1).await?;
    assert!(hub.terminate()?.success());
    assert_eq!(certs::private::mode_of(&old)? & 0o777, 0o600);
    assert!(!key_path(dir.path()).exists(), "the key is where the config says, not in the data directory");

    let data = dir.path().join("data");
    let new = keys.join("audit-2.pk8");
    let (code, out) = audit(&["rotate-key", "--data", path(&data), "--key", path(&old), "--new-key", path(&new)])?;
    assert_eq!(code, 0, "{out}");
    assert_eq!(certs::private::mode_of(&new)? & 0o777, 0o600);
    // The old key no longer starts the hub; the new one does, and the log verifies under either key.
    assert!(HubProcess::start(HUB.as_ref(), dir.path(), "127.0.0.1:0", &config).is_err());
    let config = format!("[audit]\nkey = {:?}\n", path(&new));
    let mut hub = HubProcess::start(HUB.as_ref(), dir.path(), "127.0.0.1:0", &config)?;
    activity(&hub, 1).await?;
    assert!(hub.terminate()?.success());
    for key in [&old, &new] {
        let pubkey = dir.path().join("audit.pub");
        std::fs::write(&pubkey, AuditKey::load(key)?.public_key_hex())?;
        let (code, out) = audit(&["verify", "--data", path(&data), "--pubkey", path(&pubkey)])?;
        assert_eq!(code, 0, "{out}");
    }
    Ok(())
}

#[tokio::test]
async fn an_entry_changed_on_disk_fails_its_inclusion_proof_in_the_sdk() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let officer_state = dir.path().join("officer");
    let mut hub = HubProcess::start(HUB.as_ref(), dir.path(), "127.0.0.1:0", "")?;
    let key = public_key(dir.path())?;
    let thread = activity(&hub, 2).await?;
    let officer = hub.client("vt-utrecht-privacy").audit_public_key(key).state_dir(&officer_state);
    let officer = officer.discard_events().connect().await?;
    let filter = AuditFilter { case: Some(thread), ..AuditFilter::default() };
    let entries = officer.audit_query(filter.clone()).await?;
    let target = entries.iter().find(|e| e.record.action == AuditAction::Send).expect("a send").clone();
    officer.close().await;
    assert!(hub.terminate()?.success());

    // Rewrite the entry as someone with write access but without the key could: new record, recomputed
    // chain hash, in the store's layout (0x02, seq, prev hash, hash, the tree nodes kept as they were,
    // record CBOR).
    {
        let db = tests::store_engine(&dir.path().join("data/store"))?;
        let mut key = vec![b'A'];
        key.extend_from_slice(&target.seq.to_be_bytes());
        let stored = db.get(&key)?.expect("the entry is stored");
        assert_eq!(stored[0], 0x02, "the store's current layout");
        let nodes = &stored[73..74 + 32 * usize::from(stored[73])];
        let mut record = target.record.clone();
        record.purpose = Some("rewritten afterwards".into());
        let hash = wire::audit::entry_hash(target.seq, &target.prev_hash, &record);
        let mut value = vec![0x02];
        value.extend_from_slice(&target.seq.to_be_bytes());
        value.extend_from_slice(&target.prev_hash);
        value.extend_from_slice(&hash);
        value.extend_from_slice(nodes);
        value.extend_from_slice(&wire::encode(&record));
        db.insert(key, value)?;
        db.flush()?;
    }

    let hub = HubProcess::start(HUB.as_ref(), dir.path(), "127.0.0.1:0", "")?;
    let officer = hub.client("vt-utrecht-privacy").audit_public_key(key).state_dir(&officer_state);
    let officer = officer.discard_events().connect().await?;
    let result = officer.audit_query(filter).await;
    assert!(matches!(&result, Err(Error::Audit(AuditError::Inclusion { seq })) if *seq == target.seq), "{result:?}");
    Ok(())
}

#[test]
fn every_kind_of_export_tampering_is_named() -> anyhow::Result<()> {
    const ENTRIES: u64 = 5_000;
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    std::fs::write(dir.path().join("audit.pub"), tests::write_audit_log(&data, ENTRIES)?)?;
    let witness = dir.path().join("witness.json");
    {
        let store = KvStore::open(&data.join("store"))?;
        // A witness kept the last head, as an officer's SDK would.
        let last = store.latest_head()?.expect("a head");
        assert_eq!(last.size, ENTRIES);
        let line = serde_json::to_string(&ketenhub_sdk::witness::HeadJson::from_head(&last))?;
        std::fs::write(&witness, line + "\n")?;
    }
    let export = dir.path().join("audit.jsonl");
    let (code, out) = audit(&["export", "--data", path(&data), "--out", path(&export)])?;
    assert_eq!(code, 0, "{out}");
    let pubkey = dir.path().join("audit.pub");
    let verify =
        |file: &Path| audit(&["verify", "--file", path(file), "--pubkey", path(&pubkey), "--witness", path(&witness)]);
    let (code, out) = verify(&export)?;
    assert_eq!(code, 0, "{out}");

    let original: Vec<String> = std::fs::read_to_string(&export)?.lines().map(str::to_owned).collect();
    let line_of = |lines: &[String], seq: u64| {
        let needle = format!("\"type\":\"dataverwerking\",\"seq\":{seq},");
        lines.iter().position(|l| l.contains(&needle)).expect("the entry is in the export")
    };
    let head_of = |lines: &[String], size: u64| {
        let needle = format!("\"type\":\"tree_head\",\"size\":{size},");
        lines.iter().position(|l| l.contains(&needle)).expect("the head is in the export")
    };
    let bad = dir.path().join("bad.jsonl");
    let mut codes = std::collections::HashMap::new();
    let mut expect = |what: &str, kind: &str, seq: u64, change: &dyn Fn(&mut Vec<String>)| -> anyhow::Result<()> {
        let mut lines = original.clone();
        change(&mut lines);
        std::fs::write(&bad, lines.join("\n") + "\n")?;
        let (code, out) = verify(&bad)?;
        assert!(out.contains(&format!("BROKEN at seq {seq} [{kind}]")), "{what}: {out}");
        assert!(code >= 10, "{what}: {out}");
        codes.insert(kind.to_owned(), code);
        Ok(())
    };
    expect("a changed entry", "changed", 4242, &|lines| {
        let i = line_of(lines, 4242);
        lines[i] = lines[i].replace("message 4242", "message 4243");
    })?;
    expect("a deleted entry", "deleted", 3000, &|lines| {
        let i = line_of(lines, 3000);
        lines.remove(i);
    })?;
    expect("an inserted entry", "inserted", 2001, &|lines| {
        let i = line_of(lines, 2000);
        let copy = lines[i].clone();
        lines.insert(i + 1, copy);
    })?;
    expect("reordered entries", "reordered", 1500, &|lines| {
        let (a, b) = (line_of(lines, 1500), line_of(lines, 1501));
        lines.swap(a, b);
    })?;
    expect("a forged head", "forged-head", 3000, &|lines| {
        let i = head_of(lines, 3000);
        let at = lines[i].find("\"signature\":\"").expect("signature") + "\"signature\":\"".len();
        let flipped = if &lines[i][at..at + 1] == "0" { "1" } else { "0" };
        lines[i].replace_range(at..at + 1, flipped);
    })?;
    expect("the oldest entries cut off", "truncated-start", 11, &|lines| {
        lines.drain(..line_of(lines, 11));
    })?;
    expect("the newest entries and their heads cut off", "truncated-end", 4500, &|lines| {
        lines.truncate(line_of(lines, 4500) + 1);
    })?;
    let distinct: std::collections::HashSet<i32> = codes.values().copied().collect();
    assert_eq!(distinct.len(), codes.len(), "each kind has its own exit code: {codes:?}");
    Ok(())
}

#[tokio::test]
async fn the_tree_matches_the_entries_after_a_kill_9() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut hub = HubProcess::start(HUB.as_ref(), dir.path(), "127.0.0.1:0", "")?;
    public_key(dir.path())?;
    // Killed while entries arrive: no seal, no shutdown code.
    let vt = hub.client("vt-utrecht-caseworker").request_timeout(Duration::from_secs(2));
    let vt = vt.discard_events().connect().await?;
    let thread = vt.create_thread().await?;
    let sending = tokio::spawn(async move {
        for i in 0..200 {
            if vt.send_text(thread, &format!("bericht {i}")).await.is_err() {
                break;
            }
        }
    });
    tokio::time::sleep(Duration::from_millis(150)).await;
    hub.kill_9()?;
    let _ = sending.await;

    // The restarted hub appends to the tree where the entries end, and the whole log verifies.
    let mut hub = HubProcess::start(HUB.as_ref(), dir.path(), "127.0.0.1:0", "")?;
    activity(&hub, 5).await?;
    assert!(hub.terminate()?.success());
    let data = dir.path().join("data");
    let pubkey = dir.path().join("audit.pub");
    let (code, out) = audit(&["verify", "--data", path(&data), "--pubkey", path(&pubkey)])?;
    assert_eq!(code, 0, "{out}");
    Ok(())
}
