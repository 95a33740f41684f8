//! A flush that fails must never lose an acknowledged message: the writes of a
//! batch whose flush failed are refused, and whatever of them the store makes
//! durable later is delivered before anything that follows, so no member
//! acknowledges past a gap.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use ketenhub_sdk::{Content, ErrorCode, MessageId};
use tests::faulty::FaultyStore;
use tests::{messages, DevHub};

const WAIT: Duration = Duration::from_secs(20);

/// A hub on a fault-injecting store, VT connected and LT listening, and a thread of VT's.
struct Setup {
    store: Arc<FaultyStore>,
    hub: DevHub,
    vt: ketenhub_sdk::Client,
    lt: ketenhub_sdk::Client,
    lt_events: ketenhub_sdk::EventStream,
    thread: ketenhub_sdk::ThreadId,
}

async fn setup(dir: &std::path::Path) -> anyhow::Result<Setup> {
    let store = Arc::new(FaultyStore::open(&dir.join("data/store"))?);
    let hub = DevHub::start_with_store(dir, tests::limits(), store.clone()).await?;
    let vt = hub.client("vt-utrecht-caseworker").discard_events().connect().await?;
    let lt = hub.client("lt-woerden-caseworker").connect().await?;
    let lt_events = lt.events().ok_or_else(|| anyhow::anyhow!("no event stream"))?;
    let thread = vt.create_thread().await?;
    Ok(Setup { store, hub, vt, lt, lt_events, thread })
}

#[tokio::test]
async fn a_failed_flush_leaves_no_gap_and_the_resend_is_delivered() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let Setup { store, hub, vt, lt, mut lt_events, thread } = setup(dir.path()).await?;
    vt.add_member(thread, lt.member_id(), &tests::consent()).await?;
    vt.send_text(thread, "one").await?;
    // Let the hub's own writes about "one" (its delivery) settle, so that the
    // failing flush is the one that carries "two".
    messages(&mut lt_events, 1, WAIT).await?;
    tokio::time::sleep(Duration::from_millis(100)).await;

    store.flush_fails.store(true, Ordering::SeqCst);
    let second = MessageId::new();
    let text = |t: &str| Content::Text { text: t.into() };
    let refused = vt.send_with_id(thread, second, text("two")).await;
    assert_eq!(refused.err().and_then(|e| e.code()), Some(ErrorCode::Unavailable));
    store.flush_fails.store(false, Ordering::SeqCst);

    // The hub recovers; what follows arrives, and nothing before it is skipped.
    tests::eventually(WAIT, || async { Ok(vt.send_text(thread, "three").await.is_ok()) }).await?;
    let resent = vt.send_with_id(thread, second, text("two")).await?;
    let got = messages(&mut lt_events, 2, WAIT).await?;
    assert!(got.windows(2).all(|w| w[0].seq + 1 == w[1].seq), "a gap or a reordering: {got:?}");
    let texts: Vec<&Content> = got.iter().map(|m| &m.content).collect();
    // The failed flush had stored "two" (the resend finds it), so it comes first.
    assert!(resent.duplicate, "the failing flush did not carry the message");
    assert_eq!(texts, [&text("two"), &text("three")], "LT missed or reordered a message");
    assert_eq!(got[0].seq, resent.seq, "the resend found the message where it was stored");
    hub.stop().await
}

#[tokio::test]
async fn the_writer_survives_a_panic_while_checking_one_write() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let Setup { store, hub, vt, lt, mut lt_events, thread } = setup(dir.path()).await?;

    store.group_state_panics.store(true, Ordering::SeqCst);
    let failed = vt.add_member(thread, lt.member_id(), &tests::consent()).await;
    assert_eq!(failed.err().and_then(|e| e.code()), Some(ErrorCode::Internal));
    store.group_state_panics.store(false, Ordering::SeqCst);

    // That write failed alone: the hub serves on, and the step can be taken again.
    vt.add_member(thread, lt.member_id(), &tests::consent()).await?;
    vt.send_text(thread, "after the fault").await?;
    let got = messages(&mut lt_events, 1, WAIT).await?;
    assert_eq!(got[0].content, Content::Text { text: "after the fault".into() });
    let verified = hub.stop_and_verify_audit().await?;
    assert!(verified.is_ok(), "{verified:?}");
    Ok(())
}
