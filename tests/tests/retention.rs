//! Retention on a real store: content and blobs go once every member has them
//! and the period has passed; audit entries stay for their own, longer period
//! and the chain that remains still verifies.

use std::time::Duration;

use hub::audit::chain::AuditKey;
use hub::audit::Recorder;
use hub::durability::Auditor;
use hub::policy::Policy;
use hub::store::{KvStore, Store};
use ketenhub_sdk::{Content, Event};
use tests::{messages, next_event, HubProcess};
use wire::EntryBody;

const HUB: &str = env!("CARGO_BIN_EXE_ketenhub-hub");
const WAIT: Duration = Duration::from_secs(20);
const DAY_MS: u64 = 86_400_000;

#[tokio::test]
async fn content_received_by_all_expires_and_audit_entries_outlive_it() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut hub = HubProcess::start(HUB.as_ref(), dir.path(), "127.0.0.1:0", "")?;
    let vt_state = dir.path().join("vt");
    let vt = hub.client("vt-utrecht-caseworker").state_dir(&vt_state).discard_events().connect().await?;
    let lt_state = dir.path().join("lt");
    let lt = hub.client("lt-woerden-caseworker").state_dir(&lt_state).connect().await?;
    let mut lt_events = lt.events().unwrap();
    let thread = vt.create_thread().await?;
    vt.add_member(thread, lt.member_id(), &tests::consent()).await?;
    vt.send_text(thread, "received by everyone").await?;
    let file = dir.path().join("verslag.txt");
    tests::write_random_file(&file, 300_000, 3)?;
    let (with_file, attachment) = vt.send_attachment(thread, &file, "text/plain").await?;
    messages(&mut lt_events, 2, WAIT).await?;
    // Both members have everything up to the attachment's message.
    lt.ack(thread, with_file.seq).await?;
    vt.ack(thread, with_file.seq).await?;
    let pending = vt.send_text(thread, "not yet acknowledged by LT").await?;
    next_event(&mut lt_events, WAIT, |e| matches!(e, Event::Message(_))).await?;
    lt.close().await;
    vt.close().await;
    assert!(hub.terminate()?.success());

    let data = dir.path().join("data");
    let policy = Policy::load(&dir.path().join("policy.toml"))?;
    let now = hub::clock::now_ms();
    {
        let store = KvStore::open(&data.join("store"))?;
        let key = std::sync::Arc::new(AuditKey::load_or_create(&hub::server::audit_key_path(&data))?);
        let mut recorder = Recorder::resume(&store, key.clone(), Default::default())?;
        let mut audit = Auditor::new(&store, &mut recorder);
        // Within the period nothing goes.
        let early = hub::retention::sweep(
            &store,
            &policy.retention,
            hub::config::Limits::default().devices(),
            now + DAY_MS,
            &mut audit,
        )?;
        assert_eq!(early, hub::retention::Swept::default());

        let swept = hub::retention::sweep(
            &store,
            &policy.retention,
            hub::config::Limits::default().devices(),
            now + 31 * DAY_MS,
            &mut audit,
        )?;
        assert_eq!((swept.messages, swept.blobs, swept.audit_entries), (2, 1, 0), "{swept:?}");
        let entries = store.entries_after(thread, 0, 100)?;
        let body = |seq: u64| entries.iter().find(|e| e.seq == seq).map(|e| e.body.clone());
        assert_eq!(body(with_file.seq), Some(EntryBody::Expired));
        assert!(matches!(body(pending.seq), Some(EntryBody::Message { .. })), "LT has not acknowledged it yet");
        assert!(store.blob(thread, attachment.blob)?.is_none());
        assert!(store.blob_chunk(thread, attachment.blob, 0)?.is_none(), "the chunk file is gone");
        assert!(entries.iter().any(|e| matches!(e.body, EntryBody::MemberAdded { .. })), "membership stays");

        // Audit entries older than five years go, oldest first; what remains verifies.
        let all = store.audit_entries(1, usize::MAX)?;
        let middle = &all[all.len() / 2];
        let five_years = 5 * 36_525 * DAY_MS / 100;
        let later = hub::retention::sweep(
            &store,
            &policy.retention,
            hub::config::Limits::default().devices(),
            middle.record.at_ms + five_years,
            &mut audit,
        )?;
        let remaining = store.audit_entries(1, usize::MAX)?;
        assert!(later.audit_entries > 0 && !remaining.is_empty(), "{later:?}");
        // What remains holds the sweep's own three entries: what it was about to delete, the prune (signed
        // evidence that the entries before the first one went by retention), and what it deleted.
        assert_eq!(later.audit_entries as usize + remaining.len(), all.len() + 3);
        assert!(remaining[0].record.at_ms >= middle.record.at_ms);
        recorder.checkpoint_if_due(&store, hub::clock::now_ms(), true)?;
        let verified = hub::audit::export::verify_store(&store, &key.public_key(), Vec::new())?;
        assert!(verified.is_ok(), "{verified:?}");
        store.flush()?;
    }

    // Back online, LT receives what it had not acknowledged, and the blob is gone for everyone.
    let hub = HubProcess::start(HUB.as_ref(), dir.path(), "127.0.0.1:0", "")?;
    let lt = hub.client("lt-woerden-caseworker").state_dir(&lt_state).connect().await?;
    let fetched = lt.fetch_attachment(thread, &attachment, dir.path().join("again.txt")).await;
    assert!(matches!(&fetched, Err(e) if e.is_not_found()), "{fetched:?}");
    let vt = hub.client("vt-utrecht-caseworker").state_dir(&vt_state).discard_events().connect().await?;
    vt.send_text(thread, "after the sweep").await?;
    let mut lt_events = lt.events().unwrap();
    // LT was handed the last message before and never acknowledged it: it comes again first.
    let got = messages(&mut lt_events, 2, WAIT).await?;
    assert_eq!(got[0].content, Content::Text { text: "not yet acknowledged by LT".into() });
    assert_eq!(got[1].content, Content::Text { text: "after the sweep".into() });
    Ok(())
}
