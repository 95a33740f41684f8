//! Nothing acknowledged is lost when the hub process is killed with SIGKILL
//! mid-stream and restarted on the same data directory.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use hub::store::engine::EngineKind;
use ketenhub_sdk::{Client, ClientBuilder, Event, MessageId, ThreadId};
use tests::HubProcess;

const SENDERS: [&str; 3] = ["vt-utrecht-caseworker", "lt-oudewater-caseworker", "rvdk-caseworker"];
const PER_SENDER: usize = 1000;
const KILLS: usize = 2;

fn hardy(builder: ClientBuilder) -> ClientBuilder {
    builder
        .reconnect_backoff(Duration::from_millis(20), Duration::from_millis(200))
        .request_timeout(Duration::from_secs(60))
        .event_buffer(10_000)
}

#[derive(Default)]
struct Ledger {
    /// Message id -> (sender index, message number, seq) for every acknowledged send.
    acknowledged: HashMap<MessageId, (usize, usize, u64)>,
    /// Sends that ended in an error (they may or may not have been stored).
    unacknowledged: usize,
}

async fn send_all(client: Client, thread: ThreadId, sender: usize, ledger: Arc<Mutex<Ledger>>) {
    for n in 0..PER_SENDER {
        let id = MessageId::new();
        let payload = format!("{sender}:{n}").into_bytes();
        match client.send_with_id(thread, id, ketenhub_sdk::Content::Bytes { data: payload }).await {
            Ok(sent) => {
                ledger.lock().unwrap().acknowledged.insert(id, (sender, n, sent.seq));
            }
            Err(_) => ledger.lock().unwrap().unacknowledged += 1,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_loses_no_acknowledged_message() -> anyhow::Result<()> {
    kill_9_run(EngineKind::Fjall).await
}

/// Stores written before fjall stay on sled, so sled keeps the same promise.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_loses_no_acknowledged_message_on_sled() -> anyhow::Result<()> {
    kill_9_run(EngineKind::Sled).await
}

async fn kill_9_run(engine: EngineKind) -> anyhow::Result<()> {
    let binary = env!("CARGO_BIN_EXE_ketenhub-hub");
    let dir = tempfile::tempdir()?;
    let config = match engine {
        EngineKind::Fjall => "",
        EngineKind::Sled => "[store]\nengine = \"sled\"\n",
    };
    let mut hub = HubProcess::start(binary.as_ref(), dir.path(), "127.0.0.1:0", config)?;
    assert_eq!(hub::store::engine::existing(&dir.path().join("data/store")), Some(engine));
    let listen = hub.addr().to_string();

    let receiver = hardy(hub.client("lt-woerden-caseworker")).connect().await?;
    let creator = hardy(hub.client(SENDERS[0])).discard_events().connect().await?;
    let thread = creator.create_thread().await?;
    let mut senders = vec![creator];
    for slug in &SENDERS[1..] {
        let client = hardy(hub.client(slug)).discard_events().connect().await?;
        // VT brings in a local team on consent and the Raad on safety grounds, as the policy's routes allow.
        let grounds = if slug.starts_with("rvdk") {
            ketenhub_sdk::Grounds::new("unsafe situation persists", "vt-safety")
        } else {
            tests::consent()
        };
        senders[0].add_member(thread, client.member_id(), &grounds).await?;
        senders.push(client);
    }
    senders[0].add_member(thread, receiver.member_id(), &tests::consent()).await?;

    // The receiver records every message the SDK hands it, acknowledging as it goes.
    let received: Arc<Mutex<Vec<ketenhub_sdk::Message>>> = Arc::default();
    let unreadable: Arc<Mutex<Vec<String>>> = Arc::default();
    let mut events = receiver.events().unwrap();
    let collector = {
        let received = received.clone();
        let unreadable = unreadable.clone();
        let receiver = receiver.clone();
        tokio::spawn(async move {
            while let Some(event) = events.next().await {
                if let Event::Unreadable { seq, error, .. } = &event {
                    unreadable.lock().unwrap().push(format!("seq {seq}: {error}"));
                }
                if let Event::Message(message) = event {
                    let (thread, seq) = (message.thread, message.seq);
                    received.lock().unwrap().push(message);
                    if seq % 50 == 0 {
                        let _ = receiver.ack(thread, seq).await;
                    }
                }
            }
        })
    };

    let ledger: Arc<Mutex<Ledger>> = Arc::default();
    let sending: Vec<_> = senders
        .iter()
        .enumerate()
        .map(|(i, client)| tokio::spawn(send_all(client.clone(), thread, i, ledger.clone())))
        .collect();

    let total = SENDERS.len() * PER_SENDER;
    for kill in 1..=KILLS {
        let threshold = total * kill / (KILLS + 1);
        while ledger.lock().unwrap().acknowledged.len() < threshold {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        hub.kill_9()?;
        let acked_at_kill = ledger.lock().unwrap().acknowledged.len();
        eprintln!("kill -9 number {kill} after {acked_at_kill} acknowledged messages");
        tokio::time::sleep(Duration::from_millis(300)).await;
        hub = HubProcess::start(binary.as_ref(), dir.path(), &listen, config)?;
    }
    for task in sending {
        task.await?;
    }

    let (acknowledged, unacknowledged) = {
        let ledger = ledger.lock().unwrap();
        (ledger.acknowledged.clone(), ledger.unacknowledged)
    };
    let expected_ids: HashSet<MessageId> = acknowledged.keys().copied().collect();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let seen: HashSet<MessageId> = received.lock().unwrap().iter().map(|m| m.id).collect();
        if expected_ids.is_subset(&seen) || tokio::time::Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    collector.abort();

    let received = received.lock().unwrap().clone();
    let seen: HashSet<MessageId> = received.iter().map(|m| m.id).collect();
    let lost = expected_ids.difference(&seen).count();
    eprintln!(
        "{} acknowledged, {unacknowledged} unacknowledged, {} delivered; kill -9 x{KILLS} lost {lost} acknowledged messages",
        acknowledged.len(),
        received.len()
    );
    let unreadable = unreadable.lock().unwrap().clone();
    assert!(unreadable.is_empty(), "unreadable messages: {unreadable:?}");
    assert_eq!(lost, 0, "acknowledged messages were lost");
    assert_eq!(unacknowledged, 0, "the SDK should have retried every send through the restarts");
    assert_eq!(seen.len(), received.len(), "a message reached the application twice");
    assert!(received.windows(2).all(|w| w[0].seq < w[1].seq), "delivery out of order");
    for message in &received {
        if let Some((_, _, seq)) = acknowledged.get(&message.id) {
            assert_eq!(*seq, message.seq, "delivered at another seq than acknowledged");
        }
    }
    // Each sender's messages arrive in the order it sent them.
    let mut last_of_sender: HashMap<usize, usize> = HashMap::new();
    for message in &received {
        let text = String::from_utf8(message.payload().to_vec())?;
        let (sender, n) = text.split_once(':').expect("payload format");
        let (sender, n): (usize, usize) = (sender.parse()?, n.parse()?);
        if let Some(previous) = last_of_sender.insert(sender, n) {
            assert!(n > previous, "sender {sender}: {n} after {previous}");
        }
    }
    assert_eq!(acknowledged.len(), total);
    Ok(())
}
