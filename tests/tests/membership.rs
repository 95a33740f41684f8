//! A caller outside a thread can neither read nor write it, and cannot tell it
//! from a thread that does not exist.

use ketenhub_sdk::raw::{RawConnection, RawIncoming};
use ketenhub_sdk::{Error, ErrorCode, MemberId, MessageId, ThreadId};
use tests::{limits, DevHub};
use wire::{ClientFrame, HubFrame, Request};

fn refusal(result: Result<impl std::fmt::Debug, Error>) -> wire::WireError {
    match result {
        Err(Error::Hub(e)) => e,
        other => panic!("expected a refusal from the hub, got {other:?}"),
    }
}

/// Sends one request on a raw connection and returns the hub's refusal.
/// (An outsider's SDK could not even encrypt for a group it is not in; the
/// raw connection shows what the hub itself answers.)
async fn raw_refusal(raw: &mut RawConnection, request: Request) -> wire::WireError {
    raw.send_frame(&ClientFrame::Request { id: 1, request }).await.expect("sent");
    loop {
        match raw.next().await.expect("an answer") {
            RawIncoming::Frame(HubFrame::Reply { result: Err(e), .. }) => return e,
            RawIncoming::Frame(HubFrame::Event { .. }) => continue,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }
}

fn send(thread: ThreadId) -> Request {
    Request::Send { thread, message: MessageId::new(), payload: b"x".to_vec() }
}

#[tokio::test]
async fn a_non_member_cannot_read_send_add_or_tell_that_the_thread_exists() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let hub = DevHub::start(dir.path(), limits()).await?;
    let vt = hub.client("vt-utrecht-caseworker").discard_events().connect().await?;
    let outsider = hub.client("lt-oudewater-caseworker").discard_events().connect().await?;
    let mut raw = hub.client("lt-oudewater-caseworker").connect_raw().await?;
    let real = vt.create_thread().await?;
    vt.send(real, b"case content".to_vec()).await?;
    let unknown = ThreadId::random();
    let someone = MemberId::new("00000001800000000003", "joris.smit")?;

    for thread in [real, unknown] {
        let on_send = raw_refusal(&mut raw, send(thread)).await;
        let on_read = refusal(outsider.members(thread).await);
        let on_add = refusal(outsider.add_member(thread, someone.clone(), &tests::consent()).await);
        for e in [&on_send, &on_read, &on_add] {
            assert_eq!(e.code, ErrorCode::NotFound);
        }
    }
    // Byte-for-byte the same answer for the real and the unknown thread.
    assert_eq!(refusal(outsider.members(real).await), refusal(outsider.members(unknown).await));
    assert_eq!(raw_refusal(&mut raw, send(real)).await, raw_refusal(&mut raw, send(unknown)).await);
    let claim = |thread| Request::ClaimKeyPackage { thread, member: someone.clone() };
    assert_eq!(raw_refusal(&mut raw, claim(real)).await, raw_refusal(&mut raw, claim(unknown)).await);
    assert!(outsider.threads().await?.is_empty());

    // The outsider cannot add itself, and nothing it tried reached the thread.
    let members = vt.members(real).await?;
    assert_eq!(members, vec![vt.member_id()]);
    hub.stop().await
}

#[tokio::test]
async fn an_outsider_gets_no_events_from_a_thread() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let hub = DevHub::start(dir.path(), limits()).await?;
    let vt = hub.client("vt-utrecht-caseworker").discard_events().connect().await?;
    let outsider = hub.client("lt-oudewater-caseworker").connect().await?;
    let mut events = outsider.events().unwrap();
    let thread = vt.create_thread().await?;
    vt.send(thread, b"case content".to_vec()).await?;
    // Connected comes first; nothing else may follow.
    let quiet = tests::next_event(&mut events, std::time::Duration::from_millis(500), |e| e.position().is_some()).await;
    assert!(quiet.is_err(), "an outsider received {quiet:?}");
    hub.stop().await
}
