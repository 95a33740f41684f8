//! The audit log through real hub processes and the `hub audit` command:
//! accesses are recorded, chains verify offline, every kind of tampering is
//! caught at the first bad sequence number, and privacy officers stay in scope.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use hub::store::Store;
use ketenhub_sdk::{AuditAction, AuditFilter, AuditOutcome, ErrorCode, Event};
use tests::faulty::FaultyStore;
use tests::{messages, DevHub, HubProcess};
use wire::{AgencyKind, MemberId, Request, ThreadId};

const HUB: &str = env!("CARGO_BIN_EXE_ketenhub-hub");
const WAIT: Duration = Duration::from_secs(20);

/// Runs `hub audit ARGS`; returns the exit code and stdout and stderr.
fn audit(args: &[&str]) -> anyhow::Result<(i32, String)> {
    tests::hub_audit(HUB, args)
}

use tests::path_arg as path;

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
    let (_, pubkey) = audit(&["pubkey", "--data", path(&data)])?;
    let key_file = dir.path().join("audit.pub");
    std::fs::write(&key_file, pubkey.trim())?;
    let (code, out) = audit(&["verify", "--data", path(&data), "--pubkey", path(&key_file)])?;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("intact"), "{out}");

    let export = dir.path().join("audit.jsonl");
    let (code, out) = audit(&["export", "--data", path(&data), "--out", path(&export)])?;
    assert_eq!(code, 0, "{out}");
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
    assert!(text.contains("\"type\":\"tree_head\""), "shutdown left no signed head");

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
    let public = tests::write_audit_log(&data, ENTRIES)?;
    let export = dir.path().join("audit.jsonl");
    let (code, out) = audit(&["export", "--data", path(&data), "--out", path(&export)])?;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("exported 100000 entries"), "{out}");
    let key_file = dir.path().join("audit.pub");
    std::fs::write(&key_file, &public)?;
    let verify = |file: &Path| audit(&["verify", "--file", path(file), "--pubkey", path(&key_file)]);
    let (code, out) = verify(&export)?;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("100000 entries") && out.contains("100 signed heads"), "{out}");

    let bad = dir.path().join("bad.jsonl");
    let expect_broken_at = |seq: u64, what: &str| -> anyhow::Result<()> {
        let (code, out) = verify(&bad)?;
        assert!(code >= 10, "{what} was not detected: {out}");
        assert!(out.contains(&format!("BROKEN at seq {seq} [")), "{what}: {out}");
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
        let i = lines.iter().position(|l| l.contains("\"type\":\"tree_head\",\"size\":3000,")).expect("head");
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
        .any(|e| e.record.case == Some(ours) && e.record.actor.as_ref().is_some_and(|a| a.kind == AgencyKind::LT));
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
    // The refusal is in the log, but it names a case outside the officer's scope, so the officer is not shown it.
    let mut recorded = false;
    hub::audit::scan(hub.store().as_ref(), |e| {
        recorded |= e.record.action == AuditAction::AuditQuery
            && e.record.case == Some(theirs)
            && e.record.outcome == AuditOutcome::Denied;
        true
    })?;
    assert!(recorded, "the refused query is not in the log");
    let queries = officer.audit_query(AuditFilter::default()).await?;
    assert!(queries.iter().all(|e| e.record.case != Some(theirs)), "the refusal widened the officer's scope");

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

#[tokio::test]
async fn an_action_whose_audit_entry_cannot_be_written_is_refused() -> anyhow::Result<()> {
    use std::sync::atomic::Ordering;
    let dir = tempfile::tempdir()?;
    let faults = Arc::new(FaultyStore::open(&dir.path().join("data/store"))?);
    let hub = DevHub::start_with_store(dir.path(), tests::limits(), faults.clone()).await?;
    let vt = hub.client("vt-utrecht-caseworker").discard_events().connect().await?;
    let lt = hub.client("lt-woerden-caseworker").connect().await?;
    let mut lt_events = lt.events().unwrap();
    let thread = vt.create_thread().await?;
    vt.add_member(thread, lt.member_id(), &tests::consent()).await?;
    vt.send_text(thread, "before").await?;

    faults.audit_fails.store(true, Ordering::SeqCst);
    let during = vt.send_text(thread, "while the audit log cannot be written").await;
    assert_eq!(during.err().and_then(|e| e.code()), Some(ErrorCode::Unavailable));
    assert_eq!(lt.members(thread).await.err().and_then(|e| e.code()), Some(ErrorCode::Unavailable), "reads too");
    let stored = faults.inner.entries_after(thread, 0, 100)?;
    assert_eq!(stored.iter().filter(|e| matches!(e.body, wire::EntryBody::Message { .. })).count(), 1);

    // Nor is anyone let in, nor a new policy put in force, while their entries cannot be written.
    let refused = hub.client("lt-oudewater-caseworker").discard_events().connect().await;
    assert!(refused.is_err(), "a connection was served without its audit entry");
    let policy_file = dir.path().join("policy.toml");
    let policy = std::fs::read_to_string(&policy_file)?;
    std::fs::write(
        &policy_file,
        policy.replace(
            "name = \"vt-lt-referral\"\nfrom = \"VT\"\nto = \"LT\"",
            "name = \"vt-lt-referral\"\nfrom = \"VT\"\nto = \"VT\"",
        ),
    )?;
    hub.hub().reload_policy().await;
    faults.audit_fails.store(false, Ordering::SeqCst);
    let oudewater = MemberId::new("00000001800000000003", "joris.smit")?;
    // Oudewater never connected, so its device cannot join; the hub's own membership table shows the policy.
    let _ = vt.add_member(thread, oudewater.clone(), &tests::consent()).await;
    assert!(vt.members(thread).await?.contains(&oudewater), "the unaudited policy took effect");
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

#[tokio::test]
async fn refusals_before_the_write_path_are_audited_too() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let hub = DevHub::start(dir.path(), tests::limits()).await?;
    let vt = hub.client("vt-utrecht-caseworker").discard_events().connect().await?;
    let thread = vt.create_thread().await?;
    let mut raw = hub.client("vt-utrecht-caseworker").connect_raw().await?;
    // A payload that is not an MLS message, and a KeyPackage naming another identity.
    let not_mls = Request::Send { thread, message: wire::MessageId::new(), payload: b"plain text".to_vec() };
    assert_eq!(tests::raw_refusal(&mut raw, not_mls).await?.code, ErrorCode::Invalid);
    let lt = hub.client("lt-woerden-caseworker").discard_events().connect().await?;
    drop(lt);
    let device = tests::device(hub.pki_dir(), "lt-woerden-caseworker", None)?;
    let upload =
        Request::UploadKeyPackages { key_packages: device.key_packages(1)?.into_iter().map(Into::into).collect() };
    assert_eq!(tests::raw_refusal(&mut raw, upload).await?.code, ErrorCode::Forbidden);

    let mut found = (false, false);
    hub::audit::scan(hub.store().as_ref(), |e| {
        let r = &e.record;
        found.0 |= r.action == AuditAction::Send && r.case == Some(thread) && r.outcome == AuditOutcome::Failed;
        found.1 |= r.action == AuditAction::KeyPackage && r.outcome == AuditOutcome::Denied;
        true
    })?;
    assert_eq!(found, (true, true), "(non-MLS send, foreign KeyPackage) audited");
    hub.stop().await
}

/// The seq ranges of `worker`'s delivery records in `thread`.
fn deliveries_to(store: &dyn Store, thread: ThreadId, worker: &str) -> anyhow::Result<Vec<(u64, u64)>> {
    let mut ranges = Vec::new();
    hub::audit::scan(store, |e| {
        let to_worker = e.record.actor.as_ref().is_some_and(|a| a.worker == worker);
        if e.record.action == AuditAction::Deliver && e.record.case == Some(thread) && to_worker {
            let range = e.record.object.as_deref().and_then(|o| o.strip_prefix("seq ")).and_then(|r| r.split_once('-'));
            if let Some((first, last)) = range.and_then(|(f, l)| Some((f.parse().ok()?, l.parse().ok()?))) {
                ranges.push((first, last));
            }
        }
        true
    })?;
    Ok(ranges)
}

#[tokio::test]
async fn deliveries_close_together_are_one_record_and_a_closing_connection_records_the_rest() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let hub = DevHub::start(dir.path(), tests::limits()).await?;
    let vt = hub.client("vt-utrecht-caseworker").discard_events().connect().await?;
    let lt = hub.client("lt-woerden-caseworker").connect().await?;
    let mut events = lt.events().unwrap();
    let thread = vt.create_thread().await?;
    vt.add_member(thread, lt.member_id(), &tests::consent()).await?;
    let mut seqs = Vec::new();
    for i in 0..10 {
        seqs.push(vt.send_text(thread, &format!("note {i}")).await?.seq);
    }
    let last = *seqs.last().unwrap();
    tests::next_event(&mut events, Duration::from_secs(30), |e| e.position() == Some((thread, last))).await?;
    // Closed at once, inside the window: what it was sent is recorded on the way out.
    lt.close().await;
    let worker = lt.member_id().worker.clone();
    let covered = |ranges: &[(u64, u64)]| seqs.iter().all(|s| ranges.iter().any(|(f, l)| f <= s && s <= l));
    tests::eventually(Duration::from_secs(30), || async {
        Ok(covered(&deliveries_to(hub.store().as_ref(), thread, &worker)?))
    })
    .await?;
    let ranges = deliveries_to(hub.store().as_ref(), thread, &worker)?;
    // Ten sends one after the other were ten bursts, each its own record.
    assert!(ranges.len() <= 5, "the bursts were not merged: {ranges:?}");
    Ok(())
}

#[tokio::test]
async fn an_acknowledged_delivery_is_recorded_by_the_time_its_cursor_is_durable() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut hub = HubProcess::start(HUB.as_ref(), dir.path(), "127.0.0.1:0", "")?;
    let vt = hub.client("vt-utrecht-caseworker").discard_events().connect().await?;
    let lt = hub.client("lt-woerden-caseworker").connect().await?;
    let mut events = lt.events().unwrap();
    let thread = vt.create_thread().await?;
    vt.add_member(thread, lt.member_id(), &tests::consent()).await?;
    let seq = vt.send_text(thread, "to be acknowledged").await?.seq;
    tests::next_event(&mut events, Duration::from_secs(30), |e| e.position() == Some((thread, seq))).await?;
    lt.ack(thread, seq).await?;
    let acked = |members: &[ketenhub_sdk::MemberDelivery]| {
        members.iter().any(|m| m.member == lt.member_id() && m.any_device >= seq)
    };
    tests::eventually(Duration::from_secs(30), || async { Ok(acked(&vt.delivery(thread).await?)) }).await?;
    // A write after the cursor's, answered once durable: the cursor is durable too,
    // well inside the window in which the delivery's record could still be waiting.
    vt.send_text(thread, "after the ack").await?;
    hub.kill_9()?;

    let store = hub::store::KvStore::open(&dir.path().join("data/store"))?;
    let cursor = store.cursor(&lt.member_id(), &lt.device_id(), thread)?;
    assert!(cursor >= seq, "the cursor is not durable ({cursor} < {seq}); the test shows nothing");
    let recorded = deliveries_to(&store, thread, &lt.member_id().worker)?;
    assert!(recorded.iter().any(|(f, l)| *f <= seq && seq <= *l), "acknowledged without a record: {recorded:?}");
    Ok(())
}

/// A connection that does not read holds the hub's shutdown past its grace:
/// its writer waits on the socket, its pump on the full queue, with deliveries
/// noted and not yet recorded. The hub records them before it seals the log,
/// so the final signed head covers them. Before, they were lost with the process.
#[tokio::test]
async fn deliveries_of_a_connection_still_open_at_shutdown_are_recorded_before_the_seal() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    // The stuck writer outlasts the shutdown's grace by far.
    let mut hub = HubProcess::start(HUB.as_ref(), dir.path(), "127.0.0.1:0", "[limits]\nwrite_timeout_ms = 120000\n")?;
    let vt = hub.client("vt-utrecht-caseworker").discard_events().connect().await?;
    let lt = hub.client("lt-woerden-caseworker").discard_events().connect().await?;
    let thread = vt.create_thread().await?;
    vt.add_member(thread, lt.member_id(), &tests::consent()).await?;
    lt.close().await;
    // More than the sockets' buffers and the connection's queue hold, waiting
    // before it connects: the pump queues at once, well inside the record window.
    let text = "x".repeat(500_000);
    let mut sent = Vec::new();
    for _ in 0..40 {
        sent.push(vt.send_text(thread, &text).await?.seq);
    }
    vt.close().await;
    // Connected, never read.
    let stuck = hub.client("lt-woerden-caseworker").connect_raw().await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let terminated_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_millis() as u64;
    anyhow::ensure!(hub.terminate()?.success(), "the hub did not stop cleanly:\n{}", hub.log());
    drop(stuck);
    assert!(hub.log().contains("connections still open"), "the connection did not outlast the grace:\n{}", hub.log());

    let store = hub::store::KvStore::open(&dir.path().join("data/store"))?;
    let sealed = store.latest_head()?.map_or(0, |head| head.size);
    let mut recorded = Vec::new();
    hub::audit::scan(&store, |e| {
        let to_lt = e.record.actor.as_ref().is_some_and(|a| a.worker == lt.member_id().worker);
        if e.record.action == AuditAction::Deliver && e.record.case == Some(thread) && to_lt {
            recorded.push((e.seq, e.record.at_ms, e.record.object.clone()));
        }
        true
    })?;
    let first = sent[0];
    let covers = |object: &Option<String>| {
        let range = object.as_deref().and_then(|o| o.strip_prefix("seq ")).and_then(|r| r.split_once('-'));
        range
            .and_then(|(f, l)| Some((f.parse::<u64>().ok()?, l.parse::<u64>().ok()?)))
            .is_some_and(|(f, l)| f <= first && first <= l)
    };
    // Written by the shutdown: the connection itself never got to record them.
    let record = recorded.iter().find(|(_, at_ms, object)| *at_ms >= terminated_ms && covers(object));
    let Some((at, ..)) = record else {
        panic!("no delivery record of seq {first} to the stuck connection written at shutdown: {recorded:?}")
    };
    assert!(*at <= sealed, "the delivery record (entry {at}) came after the final signed head (size {sealed})");
    Ok(())
}
