//! Raw replay: a server's routing capacity without the clients' encryption.
//!
//! The SDK clients of the throughput phase encrypt every message and decrypt
//! every delivery on the same two cores as the server, so their rate says as
//! much about MLS as about the server. Here real devices make their MLS
//! application messages once, before the window; then raw connections of the
//! same identities send them again and again, each under a fresh message id, as
//! fast as the server answers, and count what it delivers. Neither server can
//! tell a replayed ciphertext from a new one, since neither decrypts; the hub
//! still checks each message's thread and epoch, stores it durably, audits it
//! and delivers it to every member.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ketenhub_sdk::raw::{RawConnection, RawIncoming};
use wire::{ClientFrame, HubFrame, MessageId, Request, ThreadId};

use super::{payload, Crew, Swarm, Target, ACK_EVERY, WINDOW};

/// Distinct ciphertexts each sender makes before the window and cycles through.
const CIPHERTEXTS: usize = 16;
/// How long a replaying connection waits for a frame before it checks whether to stop.
const POLL: Duration = Duration::from_millis(200);

/// What a replay window measured.
#[derive(Debug, Clone, Copy)]
pub(super) struct Routing {
    /// Sends the server answered with success, per second.
    pub sent: f64,
    /// Entries it delivered to the members' connections, per second.
    pub delivered: f64,
    /// Server CPU in cores during the window.
    pub cores: f64,
}

#[derive(Default)]
struct Counters {
    measuring: AtomicBool,
    stop: AtomicBool,
    sent: AtomicU64,
    refused: AtomicU64,
    delivered: AtomicU64,
}

/// Replays pre-built messages through raw connections for `window` and returns what the server routed.
pub(super) async fn routing(target: &Target, window: Duration) -> anyhow::Result<Routing> {
    let swarm = Swarm::connect(target, Crew::Replay).await?;
    let mut made = Vec::with_capacity(swarm.clients.len());
    for (client, thread) in &swarm.clients {
        let ciphertexts =
            (0..CIPHERTEXTS).map(|_| client.encrypt(*thread, payload())).collect::<Result<Vec<_>, _>>()?;
        made.push((*thread, ciphertexts));
    }
    swarm.close().await;

    let counters = Arc::new(Counters::default());
    let mut tasks = Vec::with_capacity(made.len());
    for (i, (thread, ciphertexts)) in made.into_iter().enumerate() {
        let connection = target.client(Crew::Replay, i).connect_raw().await?;
        tasks.push(tokio::spawn(replay(connection, thread, ciphertexts, counters.clone())));
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (elapsed, cores) = target.measure(window, &counters.measuring).await?;
    counters.stop.store(true, Ordering::Relaxed);
    for task in tasks {
        task.await??;
    }
    let sent = counters.sent.load(Ordering::Relaxed);
    let refused = counters.refused.load(Ordering::Relaxed);
    // A server that refuses part of the load would look faster than it is.
    anyhow::ensure!(sent > 0 && refused == 0, "{} answered {sent} replayed sends and refused {refused}", target.name);
    let per_second = |n: u64| n as f64 / elapsed;
    Ok(Routing { sent: per_second(sent), delivered: per_second(counters.delivered.load(Ordering::Relaxed)), cores })
}

/// One identity's connection: keeps `WINDOW` sends in flight, counts answers
/// and deliveries, and acknowledges deliveries as the SDK does.
async fn replay(
    mut connection: RawConnection,
    thread: ThreadId,
    ciphertexts: Vec<Vec<u8>>,
    counters: Arc<Counters>,
) -> anyhow::Result<()> {
    let (mut next_id, mut in_flight, mut unacked) = (0u64, 0usize, 0u32);
    while !counters.stop.load(Ordering::Relaxed) {
        while in_flight < WINDOW {
            let payload = ciphertexts[next_id as usize % ciphertexts.len()].clone();
            let request = Request::Send { thread, message: MessageId::new(), payload };
            connection.send_frame(&ClientFrame::Request { id: next_id, request }).await?;
            (next_id, in_flight) = (next_id + 1, in_flight + 1);
        }
        let Ok(incoming) = tokio::time::timeout(POLL, connection.next()).await else { continue };
        let measuring = counters.measuring.load(Ordering::Relaxed);
        match incoming? {
            RawIncoming::Frame(HubFrame::Reply { result, .. }) => {
                in_flight -= 1;
                let counter = if result.is_ok() { &counters.sent } else { &counters.refused };
                if measuring {
                    counter.fetch_add(1, Ordering::Relaxed);
                }
            }
            RawIncoming::Frame(HubFrame::Event { thread, entry }) => {
                if measuring {
                    counters.delivered.fetch_add(1, Ordering::Relaxed);
                }
                unacked += 1;
                if unacked == ACK_EVERY {
                    unacked = 0;
                    connection.send_frame(&ClientFrame::Ack { thread, seq: entry.seq }).await?;
                }
            }
            RawIncoming::Frame(_) => {}
            ended => anyhow::bail!("a replaying connection ended: {ended:?}"),
        }
    }
    Ok(())
}
