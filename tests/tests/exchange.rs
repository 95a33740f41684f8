//! Messages between organisations: both ways, in order, once, and to members
//! that were offline.

use std::time::Duration;

use ketenhub_sdk::raw::RawIncoming;
use ketenhub_sdk::{Content, Event, MessageId};
use tests::{limits, messages, next_event, DevHub};
use wire::HubFrame;

const WAIT: Duration = Duration::from_secs(20);

#[tokio::test]
async fn two_organisations_exchange_messages_both_ways() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let hub = DevHub::start(dir.path(), limits()).await?;
    let vt = hub.client("vt-utrecht-caseworker").connect().await?;
    let lt = hub.client("lt-woerden-caseworker").connect().await?;
    let mut vt_events = vt.events().unwrap();
    let mut lt_events = lt.events().unwrap();

    let thread = vt.create_thread().await?;
    vt.add_member(thread, lt.member_id(), &tests::consent()).await?;
    let joined = next_event(&mut lt_events, WAIT, |e| matches!(e, Event::MemberAdded { .. })).await?;
    assert_eq!(joined, Event::MemberAdded { thread, seq: 2, member: lt.member_id(), by: vt.member_id() });

    for i in 0..5 {
        vt.send(thread, format!("vt {i}").into_bytes()).await?;
        lt.send(thread, format!("lt {i}").into_bytes()).await?;
    }
    let at_lt = messages(&mut lt_events, 10, WAIT).await?;
    let at_vt = messages(&mut vt_events, 10, WAIT).await?;
    assert_eq!(at_lt, at_vt, "both members see the same log");
    let seqs: Vec<u64> = at_lt.iter().map(|m| m.seq).collect();
    // Entries 1-4: two members on the table, the MLS commit adding LT and its Welcome.
    assert_eq!(seqs, (5..15).collect::<Vec<_>>(), "gap-free, in order");
    for (i, pair) in at_lt.chunks(2).enumerate() {
        assert_eq!(pair[0].payload(), format!("vt {i}").into_bytes());
        assert_eq!(pair[0].sender, vt.member_id());
        assert_eq!(pair[1].payload(), format!("lt {i}").into_bytes());
        assert_eq!(pair[1].sender, lt.member_id());
    }
    hub.stop().await
}

#[tokio::test]
async fn a_resend_with_the_same_id_is_acknowledged_but_stored_once() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let hub = DevHub::start(dir.path(), limits()).await?;
    let vt = hub.client("vt-utrecht-caseworker").connect().await?;
    let mut events = vt.events().unwrap();
    let thread = vt.create_thread().await?;
    let id = MessageId::new();
    let first = vt.send_with_id(thread, id, Content::Bytes { data: b"once".to_vec() }).await?;
    let again = vt.send_with_id(thread, id, Content::Bytes { data: b"once".to_vec() }).await?;
    assert!(!first.duplicate);
    assert!(again.duplicate);
    assert_eq!(first.seq, again.seq);
    let after = vt.send(thread, b"next".to_vec()).await?;
    assert_eq!(after.seq, first.seq + 1, "the resend took no sequence number");
    let got = messages(&mut events, 2, WAIT).await?;
    assert_eq!(got.iter().map(|m| m.payload()).collect::<Vec<_>>(), vec![&b"once"[..], b"next"]);
    hub.stop().await
}

#[tokio::test]
async fn an_offline_member_receives_everything_in_order_from_its_cursor() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let state = tempfile::tempdir()?;
    let hub = DevHub::start(dir.path(), limits()).await?;
    let vt = hub.client("vt-utrecht-caseworker").discard_events().connect().await?;
    let thread = vt.create_thread().await?;
    let lt_device = || hub.client("lt-woerden-caseworker").state_dir(state.path());
    let lt = lt_device().connect().await?;
    vt.add_member(thread, lt.member_id(), &tests::consent()).await?;

    // Online: take the first ten and acknowledge up to the seventh.
    let mut events = lt.events().unwrap();
    for i in 0..10 {
        vt.send(thread, format!("m{i}").into_bytes()).await?;
    }
    let first = messages(&mut events, 10, WAIT).await?;
    let acked = first[6].seq;
    lt.ack(thread, acked).await?;
    lt.close().await;

    // Offline: forty more.
    for i in 10..50 {
        vt.send(thread, format!("m{i}").into_bytes()).await?;
    }

    // What the hub sends on reconnecting: every entry after the device's cursor, in order.
    let as_device = format!("{}/?device={}", hub.url(), lt.device_id());
    let mut raw = hub.client("lt-woerden-caseworker").url(as_device).connect_raw().await?;
    let mut seqs = Vec::new();
    while seqs.last() != Some(&(first[9].seq + 40)) {
        match tokio::time::timeout(WAIT, raw.next()).await?? {
            RawIncoming::Frame(HubFrame::Event { entry, .. }) => seqs.push(entry.seq),
            RawIncoming::Frame(_) => {}
            other => anyhow::bail!("connection ended: {other:?}"),
        }
    }
    assert_eq!(seqs, (acked + 1..=first[9].seq + 40).collect::<Vec<_>>());
    drop(raw);

    // The same device back online: the SDK hands over again what it had shown
    // but the application had not acknowledged (m7 to m9, kept in its state
    // directory), then what it had not shown yet, decrypted and in order.
    let lt = lt_device().connect().await?;
    let mut events = lt.events().unwrap();
    let resumed = messages(&mut events, 43, WAIT).await?;
    let payloads: Vec<String> = resumed.iter().map(|m| String::from_utf8(m.payload().to_vec()).unwrap()).collect();
    let expected: Vec<String> = (7..50).map(|i| format!("m{i}")).collect();
    assert_eq!(payloads, expected);
    assert!(resumed.windows(2).all(|w| w[1].seq == w[0].seq + 1));
    hub.stop().await
}

#[tokio::test]
async fn a_member_added_later_sees_no_earlier_entries() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let hub = DevHub::start(dir.path(), limits()).await?;
    let vt = hub.client("vt-utrecht-caseworker").discard_events().connect().await?;
    let thread = vt.create_thread().await?;
    vt.send(thread, b"before".to_vec()).await?;
    let lt = hub.client("lt-woerden-caseworker").connect().await?;
    let mut events = lt.events().unwrap();
    let added_at = vt.add_member(thread, lt.member_id(), &tests::consent()).await?;
    vt.send(thread, b"after".to_vec()).await?;
    let first = next_event(&mut events, WAIT, |e| e.position().is_some()).await?;
    assert_eq!(first.position(), Some((thread, added_at)));
    let got = messages(&mut events, 1, WAIT).await?;
    assert_eq!(got[0].payload(), b"after");
    hub.stop().await
}

#[tokio::test]
async fn threads_and_members_are_listed_for_members() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let hub = DevHub::start(dir.path(), limits()).await?;
    let vt = hub.client("vt-utrecht-caseworker").discard_events().connect().await?;
    let lt = hub.client("lt-woerden-caseworker").discard_events().connect().await?;
    let thread = vt.create_thread().await?;
    vt.add_member(thread, lt.member_id(), &tests::consent()).await?;
    vt.send(thread, b"x".to_vec()).await?;
    let mut members = lt.members(thread).await?;
    members.sort();
    let mut expected = vec![vt.member_id(), lt.member_id()];
    expected.sort();
    assert_eq!(members, expected);
    let threads = lt.threads().await?;
    assert_eq!(threads.len(), 1);
    assert_eq!((threads[0].thread, threads[0].last_seq, threads[0].cursor), (thread, 5, 1));
    hub.stop().await
}

#[tokio::test]
async fn the_event_stream_ends_when_the_client_closes() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let hub = DevHub::start(dir.path(), limits()).await?;
    let vt = hub.client("vt-utrecht-caseworker").connect().await?;
    let mut events = vt.events().expect("events");
    vt.close().await;
    // The application still holds the client; the stream ends all the same.
    let ended =
        tokio::time::timeout(WAIT, async { while futures_util::StreamExt::next(&mut events).await.is_some() {} }).await;
    assert!(ended.is_ok(), "the stream did not end after close");
    drop(vt);
    hub.stop().await
}

/// The pattern every application uses, an event loop that acknowledges what it
/// read, must not stall the client when the event buffer and the request queue
/// are both full: the driver waits for the loop to take an event while the loop
/// would wait for the driver to take its acknowledgement.
#[tokio::test]
async fn acknowledging_from_the_event_loop_never_stalls_a_busy_client() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let hub = DevHub::start(dir.path(), limits()).await?;
    let vt = hub.client("vt-utrecht-caseworker").event_buffer(1).connect().await?;
    let mut events = vt.events().expect("events");
    let acker = vt.clone();
    let reader = tokio::spawn(async move {
        let mut read = 0usize;
        while let Some(event) = futures_util::StreamExt::next(&mut events).await {
            if let Event::Message(m) = event {
                acker.ack(m.thread, m.seq).await?;
                read += 1;
            }
        }
        anyhow::Ok(read)
    });
    let thread = vt.create_thread().await?;
    // More sends in flight than the client's request queue holds.
    let sends: Vec<_> = (0..1_000)
        .map(|i| {
            let vt = vt.clone();
            tokio::spawn(async move { vt.send(thread, format!("{i}").into_bytes()).await })
        })
        .collect();
    let all_sent = tokio::time::timeout(Duration::from_secs(60), futures_util::future::join_all(sends)).await;
    assert!(all_sent.is_ok(), "the client stalled with its event loop acknowledging");
    for sent in all_sent.unwrap_or_default() {
        sent??;
    }
    vt.close().await;
    assert!(tokio::time::timeout(WAIT, reader).await.is_ok(), "the event loop did not end after close");
    hub.stop().await
}
