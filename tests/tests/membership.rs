//! A caller outside a thread can neither read nor write it, and cannot tell it
//! from a thread that does not exist.

use ketenhub_sdk::{Error, ErrorCode, MemberId, ThreadId};
use tests::{limits, DevHub};

fn refusal(result: Result<impl std::fmt::Debug, Error>) -> wire::WireError {
    match result {
        Err(Error::Hub(e)) => e,
        other => panic!("expected a refusal from the hub, got {other:?}"),
    }
}

#[tokio::test]
async fn a_non_member_cannot_read_send_add_or_tell_that_the_thread_exists() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let hub = DevHub::start(dir.path(), limits()).await?;
    let vt = hub.client("vt-utrecht-caseworker").discard_events().connect().await?;
    let outsider = hub.client("lt-oudewater-caseworker").discard_events().connect().await?;
    let real = vt.create_thread().await?;
    vt.send(real, b"case content".to_vec()).await?;
    let unknown = ThreadId::random();
    let someone = MemberId::new("00000001800000000003", "joris.smit")?;

    for thread in [real, unknown] {
        let on_send = refusal(outsider.send(thread, b"x".to_vec()).await);
        let on_read = refusal(outsider.members(thread).await);
        let on_add = refusal(outsider.add_member(thread, someone.clone()).await);
        for e in [&on_send, &on_read, &on_add] {
            assert_eq!(e.code, ErrorCode::NotFound);
        }
    }
    // Byte-for-byte the same answer for the real and the unknown thread.
    assert_eq!(refusal(outsider.members(real).await), refusal(outsider.members(unknown).await));
    assert_eq!(refusal(outsider.send(real, b"x".to_vec()).await), refusal(outsider.send(unknown, b"x".to_vec()).await));
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
