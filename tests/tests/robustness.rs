//! Bad input from one client gets a typed answer, never a panic, and never
//! touches another client's work.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ketenhub_sdk::raw::{RawConnection, RawIncoming};
use ketenhub_sdk::{Client, ErrorCode, ThreadId};
use tests::{messages, DevHub};
use wire::{ClientFrame, HubFrame, MessageId, Request};

const WAIT: Duration = Duration::from_secs(10);

/// The next frame that is not a thread event (these tests look at answers only).
async fn next(raw: &mut RawConnection) -> RawIncoming {
    loop {
        match tokio::time::timeout(WAIT, raw.next()).await.expect("the hub answered").expect("a decodable frame") {
            RawIncoming::Frame(HubFrame::Event { .. }) => continue,
            other => return other,
        }
    }
}

async fn next_error(raw: &mut RawConnection) -> wire::WireError {
    match next(raw).await {
        RawIncoming::Frame(HubFrame::Error { error }) => error,
        other => panic!("expected an error frame, got {other:?}"),
    }
}

/// A bystander with a thread, to show it is unaffected.
async fn bystander(hub: &DevHub) -> anyhow::Result<(Client, ThreadId, ketenhub_sdk::EventStream)> {
    let client = hub.client("lt-woerden-caseworker").connect().await?;
    let events = client.events().unwrap();
    let thread = client.create_thread().await?;
    Ok((client, thread, events))
}

async fn still_works(client: &Client, thread: ThreadId, events: &mut ketenhub_sdk::EventStream) -> anyhow::Result<()> {
    let sent = client.send(thread, b"still here".to_vec()).await?;
    let got = messages(events, 1, WAIT).await?;
    assert_eq!((got[0].seq, got[0].payload()), (sent.seq, &b"still here"[..]));
    Ok(())
}

#[tokio::test]
async fn malformed_frames_get_typed_errors_and_the_connection_survives_a_few() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let hub = DevHub::start(dir.path(), tests::limits()).await?;
    let (other, thread, mut events) = bystander(&hub).await?;
    let mut raw = hub.client("vt-utrecht-caseworker").connect_raw().await?;

    raw.send_bytes(vec![0xff, 0x13, 0x37]).await?;
    assert_eq!(next_error(&mut raw).await.code, ErrorCode::Malformed);
    raw.send_bytes(wire::encode(&"a string, not a frame")).await?;
    assert_eq!(next_error(&mut raw).await.code, ErrorCode::Malformed);
    raw.send_text("{\"type\":\"request\"}").await?;
    assert_eq!(next_error(&mut raw).await.code, ErrorCode::Malformed);

    // The same connection still serves a valid request.
    raw.send_frame(&ClientFrame::Request { id: 7, request: Request::ListThreads }).await?;
    match next(&mut raw).await {
        RawIncoming::Frame(HubFrame::Reply { id: 7, result: Ok(_) }) => {}
        other => panic!("expected the reply to request 7, got {other:?}"),
    }
    still_works(&other, thread, &mut events).await?;
    hub.stop().await
}

#[tokio::test]
async fn a_stream_of_malformed_frames_is_closed_with_a_reason() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let limits = hub::config::Limits { max_protocol_errors: 5, ..tests::limits() };
    let hub = DevHub::start(dir.path(), limits).await?;
    let (other, thread, mut events) = bystander(&hub).await?;
    let mut raw = hub.client("vt-utrecht-caseworker").connect_raw().await?;
    for _ in 0..5 {
        raw.send_bytes(vec![0xff]).await?;
    }
    let mut errors = 0;
    let closed = loop {
        match next(&mut raw).await {
            RawIncoming::Frame(HubFrame::Error { error }) if error.code == ErrorCode::Malformed => errors += 1,
            RawIncoming::Closed { code, reason } => break (code, reason),
            other => panic!("unexpected {other:?}"),
        }
    };
    assert_eq!(errors, 5);
    assert_eq!(closed, (1008, "too many malformed frames".to_owned()));
    still_works(&other, thread, &mut events).await?;
    hub.stop().await
}

/// A frame far over the limit: the hub refuses it at its header, while the
/// client is still sending the rest. The client still gets the typed error
/// and the close, not a TCP reset (which, before, cut off even its own send).
#[tokio::test]
async fn a_frame_far_over_the_limit_still_gets_its_typed_error_and_close() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let limits = hub::config::Limits { max_frame_bytes: 64 * 1024, ..tests::limits() };
    let hub = DevHub::start(dir.path(), limits).await?;
    let vt = hub.client("vt-utrecht-caseworker").discard_events().connect().await?;
    let own = vt.create_thread().await?;
    let mut raw = hub.client("vt-utrecht-caseworker").connect_raw().await?;
    let huge = ClientFrame::Request {
        id: 1,
        request: Request::Send { thread: own, message: MessageId::new(), payload: vec![0; 4 << 20] },
    };
    raw.send_frame(&huge).await?;
    assert_eq!(next_error(&mut raw).await.code, ErrorCode::FrameTooLarge);
    assert!(matches!(next(&mut raw).await, RawIncoming::Closed { code: 1009, .. }));
    // The hub ends its side at once, rather than after lingering its whole while.
    let ended = tokio::time::timeout(std::time::Duration::from_secs(1), raw.next()).await;
    assert!(matches!(ended, Ok(Ok(RawIncoming::Ended))), "{ended:?}");
    hub.stop().await
}

#[tokio::test]
async fn an_oversized_frame_is_refused_with_a_close_reason() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let limits = hub::config::Limits { max_frame_bytes: 64 * 1024, ..tests::limits() };
    let hub = DevHub::start(dir.path(), limits).await?;
    let (other, thread, mut events) = bystander(&hub).await?;
    let vt = hub.client("vt-utrecht-caseworker").discard_events().connect().await?;
    let own = vt.create_thread().await?;

    let mut raw = hub.client("vt-utrecht-caseworker").connect_raw().await?;
    assert_eq!(raw.hello().limits.max_frame_bytes, 64 * 1024);
    let huge = ClientFrame::Request {
        id: 1,
        request: Request::Send { thread: own, message: MessageId::new(), payload: vec![0; 100 * 1024] },
    };
    raw.send_frame(&huge).await?;
    let error = next_error(&mut raw).await;
    assert_eq!(error.code, ErrorCode::FrameTooLarge);
    match next(&mut raw).await {
        RawIncoming::Closed { code, reason } => {
            assert_eq!(code, 1009);
            assert!(reason.contains("frame too large"), "{reason}");
        }
        other => panic!("expected a close, got {other:?}"),
    }
    // Nothing of it was stored, and the hub serves everyone else.
    let summary = vt.threads().await?;
    assert_eq!(summary.iter().find(|t| t.thread == own).map(|t| t.last_seq), Some(1));
    still_works(&other, thread, &mut events).await?;
    hub.stop().await
}

#[tokio::test]
async fn a_flood_over_the_rate_limit_is_refused_while_others_are_served() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let limits = hub::config::Limits { frames_per_second: 50, frames_burst: 100, ..tests::limits() };
    let hub = DevHub::start(dir.path(), limits).await?;
    let (other, thread, mut events) = bystander(&hub).await?;
    let mut raw = hub.client("vt-utrecht-caseworker").connect_raw().await?;

    let flood = 2_000u64;
    for id in 0..flood {
        raw.send_frame(&ClientFrame::Request { id, request: Request::ListThreads }).await?;
    }
    // While the flood is being answered, the bystander is served.
    still_works(&other, thread, &mut events).await?;

    let (mut ok, mut limited) = (0, 0);
    while ok + limited < flood {
        match next(&mut raw).await {
            RawIncoming::Frame(HubFrame::Reply { result: Ok(_), .. }) => ok += 1,
            RawIncoming::Frame(HubFrame::Reply { result: Err(e), .. }) => {
                assert_eq!(e.code, ErrorCode::RateLimited);
                assert!(e.retry_after_ms.is_some());
                limited += 1;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(limited > flood / 2, "only {limited} of {flood} were limited");
    assert!(ok >= 100, "the burst should have been served, got {ok}");
    still_works(&other, thread, &mut events).await?;
    hub.stop().await
}

#[tokio::test]
async fn an_invalid_ack_is_answered_with_an_error() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let hub = DevHub::start(dir.path(), tests::limits()).await?;
    let mut raw = hub.client("vt-utrecht-caseworker").connect_raw().await?;
    raw.send_frame(&ClientFrame::Ack { thread: ThreadId::random(), seq: 5 }).await?;
    assert_eq!(next_error(&mut raw).await.code, ErrorCode::NotFound);
    hub.stop().await
}

#[tokio::test]
async fn connections_per_identity_are_limited() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let limits = hub::config::Limits { max_connections_per_identity: 2, ..tests::limits() };
    let hub = DevHub::start(dir.path(), limits).await?;
    let _a = hub.client("vt-utrecht-caseworker").discard_events().connect().await?;
    let _b = hub.client("vt-utrecht-caseworker").discard_events().connect().await?;
    let third = hub.client("vt-utrecht-caseworker").connect().await;
    assert_eq!(third.err().and_then(|e| e.code()), Some(ErrorCode::TooManyConnections));
    // Another identity is not affected.
    hub.client("lt-woerden-caseworker").discard_events().connect().await?;
    hub.stop().await
}

#[tokio::test]
async fn an_idle_connection_is_closed() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let limits = hub::config::Limits { idle_timeout_ms: 300, ..tests::limits() };
    let hub = DevHub::start(dir.path(), limits).await?;
    // A raw connection does not answer pings while nobody reads it, so it goes idle.
    let mut raw = hub.client("vt-utrecht-caseworker").connect_raw().await?;
    tokio::time::sleep(Duration::from_millis(800)).await;
    let end = loop {
        match next(&mut raw).await {
            RawIncoming::Frame(_) => continue,
            end => break end,
        }
    };
    assert!(matches!(end, RawIncoming::Closed { code: 1001, .. } | RawIncoming::Ended), "{end:?}");
    hub.stop().await
}

#[tokio::test]
async fn an_invalid_member_id_is_refused_with_a_typed_error() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let hub = DevHub::start(dir.path(), tests::limits()).await?;
    let vt = hub.client("vt-utrecht-caseworker").discard_events().connect().await?;
    let thread = vt.create_thread().await?;
    let bad = ketenhub_sdk::MemberId { oin: "00000001800000000002".parse()?, worker: "sanne bakker; drop".into() };
    let result = vt.add_member(thread, bad, &tests::consent()).await;
    assert_eq!(result.err().and_then(|e| e.code()), Some(ErrorCode::Invalid));
    assert_eq!(vt.members(thread).await?, vec![vt.member_id()]);
    hub.stop().await
}

/// A TCP relay between one client and the hub, whose hub-side socket has a
/// tiny receive buffer and stops being read while `stalled` is set: a client
/// that stops reading, however large the kernel lets loopback buffers grow.
async fn stalling_proxy(hub: std::net::SocketAddr, stalled: Arc<AtomicBool>) -> anyhow::Result<std::net::SocketAddr> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        let Ok((client, _)) = listener.accept().await else { return };
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket.set_recv_buffer_size(4096).expect("buffer size");
        let Ok(upstream) = socket.connect(hub).await else { return };
        let (mut client_read, mut client_write) = client.into_split();
        let (mut hub_read, mut hub_write) = upstream.into_split();
        tokio::spawn(async move { tokio::io::copy(&mut client_read, &mut hub_write).await });
        let mut buffer = vec![0u8; 16 * 1024];
        loop {
            while stalled.load(Ordering::SeqCst) {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            match hub_read.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if client_write.write_all(&buffer[..n]).await.is_err() {
                        break;
                    }
                }
            }
        }
    });
    Ok(addr)
}

#[tokio::test]
async fn a_client_that_stops_reading_is_disconnected_without_holding_up_others() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let limits = hub::config::Limits {
        write_timeout_ms: 500,
        frames_per_second: 100_000,
        frames_burst: 100_000,
        max_frame_bytes: 128 * 1024,
        ..tests::limits()
    };
    let hub = DevHub::start(dir.path(), limits).await?;
    let sender = hub.client("vt-utrecht-caseworker").discard_events().connect().await?;
    let thread = sender.create_thread().await?;
    // The stalled member leaves KeyPackages at the hub first, so it can be added.
    let once = hub.client("lt-oudewater-caseworker").discard_events().key_package_stock(1).connect().await?;
    while once.upload_key_packages(Vec::new()).await? < 1 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    once.close().await;
    let stalled_flag = Arc::new(AtomicBool::new(false));
    let proxy = stalling_proxy(hub.addr(), stalled_flag.clone()).await?;
    let proxy_url = format!("wss://localhost:{}", proxy.port());
    let mut stalled = tests::client_for(&proxy_url, hub.pki_dir(), "lt-oudewater-caseworker").connect_raw().await?;
    sender.add_member(thread, stalled.hello().identity.member_id(), &tests::consent()).await?;
    let (watcher, watched, mut events) = bystander(&hub).await?;

    // The stalled client stops reading; far more follows than the buffers hold.
    stalled_flag.store(true, Ordering::SeqCst);
    let sends = (0..200).map(|_| sender.send(thread, vec![0u8; 64 * 1024]));
    for result in futures_util::future::join_all(sends).await {
        result?;
    }
    still_works(&watcher, watched, &mut events).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;

    // The hub gave up on the stalled client: once it reads again, its stream
    // ends after what was buffered.
    stalled_flag.store(false, Ordering::SeqCst);
    let mut delivered = 0;
    let ended = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            match stalled.next().await {
                Ok(RawIncoming::Frame(_)) => delivered += 1,
                other => break other,
            }
        }
    })
    .await?;
    assert!(matches!(ended, Ok(RawIncoming::Ended) | Ok(RawIncoming::Closed { .. })), "{ended:?}");
    assert!(delivered < 200, "the stalled client got everything ({delivered} frames): it was never cut off");
    hub.stop().await
}
