//! The benchmark: the hub against the bare relay, in one run.
//!
//! On a shared, noisy machine only figures taken side by side compare, so
//! every phase runs against the relay (the ceiling: TLS, WebSocket and CBOR,
//! nothing else) and against the hub (durable storage and membership checks on)
//! with the same SDK clients and the same workload, and reports the ratio. Both
//! servers run as separate processes so that their memory and CPU time can be
//! read from `/proc`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::Context;
use certs::dev::{DevPki, ExtraClient, SampleOrg, GI_SAVE, LT_OUDEWATER, LT_WOERDEN, RVDK, VT_UTRECHT};
use futures_util::StreamExt;
use hub::store::{KvStore, Store};
use ketenhub_sdk::{Client, ClientBuilder, Event, ThreadId};
use serde::Serialize;
use wire::{MemberId, MessageId, Role};

use crate::{client_for, spawn_listening, HubProcess};

mod replay;

/// Distinct bench identities, and the senders of the throughput workload.
pub const SENDERS: usize = 64;
/// Members per thread.
pub const THREAD_SIZE: usize = 4;
/// Payload size in bytes.
pub const PAYLOAD: usize = 1024;
/// Sends each sender keeps in flight in the throughput phase.
const WINDOW: usize = 8;
/// Messages a client receives between acknowledgements.
const ACK_EVERY: u32 = 64;

/// Sends of one latency sender waiting for their answer at once.
const LATENCY_IN_FLIGHT: usize = 32;

/// How long and how big a run is.
#[derive(Debug, Clone, Copy)]
pub struct Scale {
    /// Measurement window of the throughput and latency phases.
    pub window: Duration,
    /// Idle connections opened for the memory figure.
    pub idle_connections: usize,
    /// Duration of the handshake phase.
    pub handshake_window: Duration,
    /// Messages stored before the restart measurement.
    pub restart_messages: usize,
    /// Size of the attachment sent through the hub, in MiB.
    pub attachment_mib: usize,
    /// Messages a device catches up on after being offline.
    pub catch_up_messages: usize,
}

impl Scale {
    /// Finishes in under a minute.
    pub fn quick() -> Self {
        Self {
            window: Duration::from_secs(3),
            idle_connections: 2_000,
            handshake_window: Duration::from_secs(2),
            restart_messages: 100_000,
            attachment_mib: 32,
            catch_up_messages: 2_000,
        }
    }

    /// A seconds-long run that proves every phase works; its figures mean nothing.
    pub fn smoke() -> Self {
        Self {
            window: Duration::from_millis(300),
            idle_connections: 50,
            handshake_window: Duration::from_millis(300),
            restart_messages: 1_000,
            attachment_mib: 2,
            catch_up_messages: 50,
        }
    }

    /// The figures the issue asks for; finishes in a few minutes.
    pub fn full() -> Self {
        Self {
            window: Duration::from_secs(10),
            idle_connections: 10_000,
            handshake_window: Duration::from_secs(5),
            restart_messages: 1_000_000,
            attachment_mib: 100,
            catch_up_messages: 10_000,
        }
    }
}

/// Whether a larger figure is better.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Better {
    /// Larger is better (rates).
    Higher,
    /// Smaller is better (latency, memory, time).
    Lower,
}

/// One row of the report.
#[derive(Debug, Clone, Serialize)]
pub struct Figure {
    /// What is measured.
    pub name: String,
    /// Its unit.
    pub unit: &'static str,
    /// The hub's value.
    pub hub: f64,
    /// The relay's value, where the relay can be measured.
    pub relay: Option<f64>,
    /// hub / relay.
    pub ratio: Option<f64>,
    /// Which direction is better.
    pub better: Better,
    /// With more than one round: the spread of each value over the rounds,
    /// whose medians are the values above.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rounds: Option<Spread>,
}

/// Minimum, median and maximum of a figure over the rounds of a run, for the hub,
/// the relay and their ratio (taken within each round, as the servers ran side by side).
#[derive(Debug, Clone, Serialize)]
pub struct Spread {
    /// How many rounds.
    pub count: usize,
    /// The hub's value: min, median, max.
    pub hub: [f64; 3],
    /// The relay's value: min, median, max.
    pub relay: Option<[f64; 3]>,
    /// hub / relay: min, median, max.
    pub ratio: Option<[f64; 3]>,
}

/// Min, median (the lower middle of an even count) and max; `None` when empty.
fn min_median_max(mut values: Vec<f64>) -> Option<[f64; 3]> {
    values.sort_by(f64::total_cmp);
    Some([*values.first()?, values[(values.len() - 1) / 2], *values.last()?])
}

/// Folds the figures of several rounds of the same phases into one row each:
/// the median as its value and the spread beside it. Rounds report the same
/// figures in the same order; a round that differs is an error.
pub fn fold_rounds(rounds: Vec<Vec<Figure>>) -> anyhow::Result<Vec<Figure>> {
    let Some(first) = rounds.first() else { anyhow::bail!("no rounds") };
    let mut folded = Vec::with_capacity(first.len());
    for (i, figure) in first.iter().enumerate() {
        let column = |value: &dyn Fn(&Figure) -> Option<f64>| -> anyhow::Result<Option<[f64; 3]>> {
            let mut values = Vec::with_capacity(rounds.len());
            for round in &rounds {
                let same = round.get(i).filter(|f| f.name == figure.name);
                let same = same.with_context(|| format!("a round did not report {:?} in its place", figure.name))?;
                values.extend(value(same));
            }
            Ok(min_median_max(values))
        };
        let hub = column(&|f| Some(f.hub))?.context("a hub value")?;
        let (relay, ratio) = (column(&|f| f.relay)?, column(&|f| f.ratio)?);
        folded.push(Figure {
            hub: hub[1],
            relay: relay.map(|r| r[1]),
            ratio: ratio.map(|r| r[1]),
            rounds: Some(Spread { count: rounds.len(), hub, relay, ratio }),
            ..figure.clone()
        });
    }
    Ok(folded)
}

impl Figure {
    fn new(name: impl Into<String>, unit: &'static str, hub: f64, relay: Option<f64>, better: Better) -> Self {
        let ratio = relay.filter(|r| *r != 0.0).map(|r| hub / r);
        Self { name: name.into(), unit, hub, relay, ratio, better, rounds: None }
    }
}

/// The benchmark's start: payload timestamps count from here.
fn epoch() -> Instant {
    static START: OnceLock<Instant> = OnceLock::new();
    *START.get_or_init(Instant::now)
}

fn payload() -> Vec<u8> {
    let mut bytes = vec![0u8; PAYLOAD];
    let nanos = epoch().elapsed().as_nanos() as u64;
    bytes[..8].copy_from_slice(&nanos.to_le_bytes());
    bytes
}

fn sent_at(payload: &[u8]) -> Option<Duration> {
    let nanos = u64::from_le_bytes(payload.get(..8)?.try_into().ok()?);
    Some(Duration::from_nanos(nanos))
}

const ORGS: [SampleOrg; 5] = [VT_UTRECHT, LT_WOERDEN, LT_OUDEWATER, RVDK, GI_SAVE];

/// The identity sets of the benchmark. Each phase has its own, so that no
/// phase inherits another's backlog.
#[derive(Debug, Clone, Copy)]
enum Crew {
    /// The senders of the throughput phase.
    Throughput,
    /// The senders of the latency phase.
    Latency,
    /// Identities in no thread, for the connection phases.
    Idle,
    /// The raw connections of the replay phase (`replay`).
    Replay,
}

impl Crew {
    const ALL: [Crew; 4] = [Crew::Throughput, Crew::Latency, Crew::Idle, Crew::Replay];

    fn name(self) -> &'static str {
        match self {
            Crew::Throughput => "bench",
            Crew::Latency => "lat",
            Crew::Idle => "idle",
            Crew::Replay => "route",
        }
    }

    fn slug(self, i: usize) -> String {
        format!("{}-{:02}", self.name(), i % SENDERS)
    }
}

fn bench_clients() -> Vec<ExtraClient> {
    Crew::ALL
        .iter()
        .flat_map(|crew| {
            (0..SENDERS).map(move |i| ExtraClient {
                slug: crew.slug(i),
                org: ORGS[i % ORGS.len()],
                worker: format!("{}.{i:02}", crew.name()),
                role: Role::Caseworker,
            })
        })
        .collect()
}

/// A server under test: the hub or the relay, as a child process.
pub struct Target {
    /// "hub" or "relay".
    pub name: &'static str,
    url: String,
    pki: PathBuf,
    pid: u32,
    /// Where the hub writes its stage timings (`hub::stages`); none for the relay.
    stages: Option<PathBuf>,
    _process: Process,
}

/// Keeps the server process alive; dropping it stops the process.
enum Process {
    Hub(#[allow(dead_code)] HubProcess),
    Relay(Child),
}

impl Drop for Process {
    fn drop(&mut self) {
        if let Process::Relay(child) = self {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Target {
    fn client(&self, crew: Crew, i: usize) -> ClientBuilder {
        // A small KeyPackage stock: each identity is added to one thread.
        client_for(&self.url, &self.pki, &crew.slug(i)).request_timeout(Duration::from_secs(60)).key_package_stock(2)
    }

    /// Resident memory of the server process, in bytes.
    fn rss(&self) -> anyhow::Result<u64> {
        rss_of(self.pid)
    }

    /// The hub's latest stage timings, written every 200 ms; waits for a fresh one.
    async fn stage_snapshot(&self) -> Option<hub::stages::Snapshot> {
        let path = self.stages.as_ref()?;
        tokio::time::sleep(Duration::from_millis(250)).await;
        hub::stages::Snapshot::read(path).ok()
    }

    /// Keeps `measuring` set for `window` and returns the seconds that took and
    /// the server's CPU over them, in cores: the measurement window of a load phase.
    async fn measure(&self, window: Duration, measuring: &AtomicBool) -> anyhow::Result<(f64, f64)> {
        measuring.store(true, Ordering::Relaxed);
        let (start, cpu_before) = (Instant::now(), self.cpu()?);
        tokio::time::sleep(window).await;
        measuring.store(false, Ordering::Relaxed);
        let elapsed = start.elapsed().as_secs_f64();
        Ok((elapsed, (self.cpu()? - cpu_before).as_secs_f64() / elapsed))
    }

    /// CPU time (user + system) the server process has used.
    fn cpu(&self) -> anyhow::Result<Duration> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid))?;
        let after_name = stat.rsplit_once(')').context("stat format")?.1;
        let fields: Vec<&str> = after_name.split_whitespace().collect();
        let ticks: u64 = fields[11].parse::<u64>()? + fields[12].parse::<u64>()?;
        Ok(Duration::from_millis(ticks * 10))
    }
}

/// The example policy plus a route between every two kinds of agency on
/// `consent`: the benchmark's threads mix organisations freely.
fn bench_policy() -> String {
    let kinds = ["VT", "LT", "RvdK", "GI"];
    let mut policy = hub::devhub::DEV_POLICY.to_owned();
    for from in kinds {
        for to in kinds {
            policy.push_str(&format!(
                "\n[[routes]]\nname = \"bench-{from}-{to}\"\nfrom = \"{from}\"\nto = \"{to}\"\nlegal_bases = [\"consent\"]\n"
            ));
        }
    }
    policy
}

fn bench_grounds() -> ketenhub_sdk::Grounds {
    ketenhub_sdk::Grounds::new("benchmark", "consent")
}

/// Writes the PKI and the benchmark's policy where a server started in `dir` finds them.
fn write_setup(pki: &DevPki, dir: &Path) -> anyhow::Result<()> {
    pki.write_to(&dir.join("pki"))?;
    std::fs::write(dir.join("policy.toml"), bench_policy())?;
    Ok(())
}

/// Resident memory of a process, in bytes.
fn rss_of(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .context("no VmRSS")?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()?;
    Ok(kib * 1024)
}

/// The hub's configuration for the benchmark: durable storage and membership
/// checks as always; the per-connection rate limit and connection caps raised
/// so that they do not cap the load generator.
const HUB_BENCH_CONFIG: &str = "[limits]\nframes_per_second = 1000000\nframes_burst = 1000000\n\
max_connections_per_identity = 100000\nmax_connections = 100000\nidle_timeout_ms = 600000\n\
max_handshakes_per_address = 100000\nmax_pending_handshakes = 100000\nmax_threads_per_identity_per_day = 1000000\n\
outbound_total_bytes = 2000000000000\n";

fn start_hub(dir: &Path) -> anyhow::Result<Target> {
    let mut command = Command::new(std::env::current_exe()?);
    let stages = dir.join("stages.json");
    command.arg("hub").env("KETENHUB_STAGES", &stages);
    let hub = HubProcess::spawn(command, dir, "127.0.0.1:0", HUB_BENCH_CONFIG)?;
    let (url, pid, pki) = (hub.url(), hub.pid(), dir.join("pki"));
    Ok(Target { name: "hub", url, pki, pid, stages: Some(stages), _process: Process::Hub(hub) })
}

fn start_relay(dir: &Path) -> anyhow::Result<Target> {
    let mut command = Command::new(std::env::current_exe()?);
    command.args(["relay", "--listen", "127.0.0.1:0", "--pki"]).arg(dir.join("pki"));
    let (child, addr) = spawn_listening(command, &dir.join("relay.log"))?;
    Ok(Target {
        name: "relay",
        url: format!("wss://localhost:{}", addr.port()),
        pki: dir.join("pki"),
        pid: child.id(),
        stages: None,
        _process: Process::Relay(child),
    })
}

/// Counters shared by a swarm's event readers.
#[derive(Default)]
struct Tally {
    delivered: AtomicU64,
    /// Devices that joined a thread's group from a Welcome.
    joined: AtomicU64,
    recording: AtomicBool,
    latencies_us: Mutex<Vec<u32>>,
}

/// `SENDERS` connected clients in threads of `THREAD_SIZE`.
struct Swarm {
    clients: Vec<(Client, ThreadId)>,
    tally: Arc<Tally>,
}

impl Swarm {
    async fn connect(target: &Target, crew: Crew) -> anyhow::Result<Self> {
        let tally = Arc::new(Tally::default());
        let mut clients = Vec::with_capacity(SENDERS);
        for i in 0..SENDERS {
            let client = target.client(crew, i).event_buffer(4096).connect().await?;
            let mut events = client.events().context("events")?;
            let (me, tally, acker) = (client.member_id(), tally.clone(), client.clone());
            tokio::spawn(async move {
                // Acknowledge as a real client does, every so many messages.
                let mut unacked = 0u32;
                while let Some(event) = events.next().await {
                    if let Event::Joined { .. } = event {
                        tally.joined.fetch_add(1, Ordering::Relaxed);
                    }
                    if let Event::Message(m) = event {
                        tally.delivered.fetch_add(1, Ordering::Relaxed);
                        unacked += 1;
                        if unacked == ACK_EVERY {
                            unacked = 0;
                            let _ = acker.ack(m.thread, m.seq).await;
                        }
                        if m.sender != me && tally.recording.load(Ordering::Relaxed) {
                            if let Some(at) = sent_at(m.payload()) {
                                let us = epoch().elapsed().saturating_sub(at).as_micros() as u32;
                                tally.latencies_us.lock().unwrap().push(us);
                            }
                        }
                    }
                }
            });
            clients.push(client);
        }
        let mut members = Vec::with_capacity(SENDERS);
        for group in clients.chunks(THREAD_SIZE) {
            let thread = group[0].create_thread().await?;
            for other in &group[1..] {
                group[0].add_member(thread, other.member_id(), &bench_grounds()).await?;
            }
            members.extend(group.iter().map(|c| (c.clone(), thread)));
        }
        // A device that has not joined yet cannot encrypt: its senders would fail at once, without end.
        let added = (SENDERS - SENDERS.div_ceil(THREAD_SIZE)) as u64;
        let tally_ref = &tally;
        crate::eventually(
            Duration::from_secs(60),
            || async move { Ok(tally_ref.joined.load(Ordering::Relaxed) >= added) },
        )
        .await
        .context("members did not join their threads")?;
        Ok(Self { clients: members, tally })
    }

    async fn close(self) {
        for (client, _) in self.clients {
            client.close().await;
        }
    }
}

/// Durable routed messages per second with `WINDOW` sends in flight per sender.
async fn throughput(target: &Target, window: Duration) -> anyhow::Result<(f64, f64, f64)> {
    let swarm = Swarm::connect(target, Crew::Throughput).await?;
    let stop = Arc::new(AtomicBool::new(false));
    let measuring = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for (client, thread) in &swarm.clients {
        for _ in 0..WINDOW {
            let (client, thread) = (client.clone(), *thread);
            let (stop, measuring, acked) = (stop.clone(), measuring.clone(), acked.clone());
            tasks.push(tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    match client.send(thread, payload()).await {
                        Ok(_) if measuring.load(Ordering::Relaxed) => _ = acked.fetch_add(1, Ordering::Relaxed),
                        Ok(_) => {}
                        Err(_) => back_off().await,
                    }
                }
            }));
        }
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let delivered_before = swarm.tally.delivered.load(Ordering::Relaxed);
    let (elapsed, cores) = target.measure(window, &measuring).await?;
    let delivered = swarm.tally.delivered.load(Ordering::Relaxed) - delivered_before;
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        task.await?;
    }
    swarm.close().await;
    Ok((acked.load(Ordering::Relaxed) as f64 / elapsed, delivered as f64 / elapsed, cores))
}

/// After a failed call: a call that fails before its first await would
/// otherwise loop without yielding and starve the runtime's few workers.
async fn back_off() {
    tokio::time::sleep(Duration::from_millis(1)).await;
}

/// Delivery latency percentiles (ms) at `rate` messages per second in total.
async fn latency(target: &Target, rate: f64, window: Duration) -> anyhow::Result<[f64; 3]> {
    let swarm = Swarm::connect(target, Crew::Latency).await?;
    let period = Duration::from_secs_f64(SENDERS as f64 / rate.max(1.0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for (client, thread) in &swarm.clients {
        let (client, thread, stop) = (client.clone(), *thread, stop.clone());
        tasks.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            // Sends wait for their answer in parallel, up to a bound: an overloaded
            // server slows the senders down instead of growing an unbounded queue.
            let in_flight = Arc::new(tokio::sync::Semaphore::new(LATENCY_IN_FLIGHT));
            while !stop.load(Ordering::Relaxed) {
                tick.tick().await;
                let (client, permit) = (client.clone(), in_flight.clone().acquire_owned().await?);
                tokio::spawn(async move {
                    let _ = client.send(thread, payload()).await;
                    drop(permit);
                });
            }
            anyhow::Ok(())
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    swarm.tally.recording.store(true, Ordering::Relaxed);
    tokio::time::sleep(window).await;
    // A slow machine may deliver nothing within a smoke run's short window: record until the first sample.
    let tally = &swarm.tally;
    let sampled = || async move { Ok(!tally.latencies_us.lock().unwrap().is_empty()) };
    // Without a sample after all, the phase fails below, naming it.
    let _ = crate::eventually(Duration::from_secs(30), sampled).await;
    swarm.tally.recording.store(false, Ordering::Relaxed);
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        task.await??;
    }
    let mut samples = std::mem::take(&mut *swarm.tally.latencies_us.lock().unwrap());
    swarm.close().await;
    anyhow::ensure!(!samples.is_empty(), "no deliveries recorded");
    samples.sort_unstable();
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q) as usize] as f64 / 1000.0;
    Ok([at(0.50), at(0.99), at(0.999)])
}

/// Full handshakes (TCP, TLS 1.3 with client certificate, WebSocket, hello)
/// per second, and per CPU-second the server spent.
async fn handshakes(target: &Target, window: Duration) -> anyhow::Result<(f64, f64)> {
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let cpu_before = target.cpu()?;
    let start = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..16 {
        let builder = target.client(Crew::Idle, i).tls_resumption(false);
        let (stop, done) = (stop.clone(), done.clone());
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                match builder.clone().connect_raw().await {
                    Ok(_) => _ = done.fetch_add(1, Ordering::Relaxed),
                    Err(_) => back_off().await,
                }
            }
        }));
    }
    tokio::time::sleep(window).await;
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        task.await?;
    }
    let elapsed = start.elapsed().as_secs_f64();
    let cpu = (target.cpu()? - cpu_before).as_secs_f64();
    let count = done.load(Ordering::Relaxed) as f64;
    Ok((count / elapsed, if cpu > 0.0 { count / cpu } else { 0.0 }))
}

/// Resident bytes per idle, authenticated connection.
async fn idle_memory(target: &Target, connections: usize) -> anyhow::Result<f64> {
    let before = target.rss()?;
    let mut open = Vec::with_capacity(connections);
    for chunk in (0..connections).collect::<Vec<_>>().chunks(64) {
        let dialing = chunk.iter().map(|&i| target.client(Crew::Idle, i).connect_raw());
        for connection in futures_util::future::join_all(dialing).await {
            open.push(connection?);
        }
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = target.rss()?;
    drop(open);
    Ok(after.saturating_sub(before) as f64 / connections as f64)
}

/// Seconds from starting a hub on a store holding `messages` messages until a
/// member receives the first delivery; and until it listens.
async fn restart(dir: &Path, pki: &DevPki, messages: usize) -> anyhow::Result<(f64, f64)> {
    write_setup(pki, dir)?;
    let member = MemberId::new(ORGS[0].oin, "bench.00")?;
    {
        let store = KvStore::open(&dir.join("data").join("store"))?;
        let threads = 100;
        let body = vec![7u8; PAYLOAD];
        for t in 0..threads {
            let thread = store.create_thread(&member, uuid::Uuid::new_v4(), 0)?.thread;
            for _ in 0..messages / threads {
                store.append_message(thread, &member, MessageId::new(), &body, 0)?;
            }
            if t % 10 == 9 {
                store.flush()?;
            }
        }
        store.flush()?;
    }
    let start = Instant::now();
    let mut command = Command::new(std::env::current_exe()?);
    command.arg("hub");
    let hub = HubProcess::spawn(command, dir, "127.0.0.1:0", HUB_BENCH_CONFIG)?;
    let listening = start.elapsed().as_secs_f64();
    let client = hub.client(&Crew::Throughput.slug(0)).connect().await?;
    let mut events = client.events().context("events")?;
    crate::next_event(&mut events, Duration::from_secs(60), |e| e.position().is_some()).await?;
    let first = start.elapsed().as_secs_f64();
    client.close().await;
    Ok((first, listening))
}

/// The phases of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Phase {
    /// Durable routed messages per second.
    Throughput,
    /// Delivery latency at half the hub's throughput.
    Latency,
    /// Routing capacity: pre-built MLS messages replayed through raw connections.
    Routing,
    /// Full handshakes per second.
    Handshakes,
    /// Memory per idle connection.
    Memory,
    /// Restart time with stored messages.
    Restart,
    /// MLS costs on one device, against plain AEAD.
    Mls,
    /// An encrypted attachment through the hub, against plain AES-GCM.
    Attachment,
    /// Audit log append (durable) and verification rates.
    Audit,
    /// A device with a state directory catching up on a backlog, against a raw reader.
    CatchUp,
}

/// Runs the phases in `only` (all when empty) and returns the report rows.
/// `offered` fixes the latency phase's load when the throughput phase is skipped.
pub async fn run(
    scale: Scale,
    only: &[Phase],
    offered: Option<f64>,
    progress: impl Fn(&str),
) -> anyhow::Result<Vec<Figure>> {
    let wanted = |phase| only.is_empty() || only.contains(&phase);
    epoch();
    let _ = rlimit::increase_nofile_limit(200_000);
    let dir = tempfile::tempdir()?;
    let pki = DevPki::generate_with(&bench_clients())?;
    let serve_dir = dir.path().join("serve");
    write_setup(&pki, &serve_dir)?;
    let relay = start_relay(&serve_dir)?;
    let hub = start_hub(&serve_dir)?;
    let mut figures = Vec::new();

    let mut hub_rate = None;
    if wanted(Phase::Throughput) {
        progress("throughput");
        let (relay_rate, relay_delivered, relay_cores) = throughput(&relay, scale.window).await?;
        let (rate, hub_delivered, hub_cores) = throughput(&hub, scale.window).await?;
        hub_rate = Some(rate);
        figures.push(Figure::new(
            format!("durable routed messages/s ({PAYLOAD} B, {THREAD_SIZE}-member threads, {SENDERS} senders)"),
            "msg/s",
            rate,
            Some(relay_rate),
            Better::Higher,
        ));
        figures.push(Figure::new(
            "deliveries/s (to every member)",
            "msg/s",
            hub_delivered,
            Some(relay_delivered),
            Better::Higher,
        ));
        figures.push(Figure::new(
            "server CPU during the throughput window",
            "cores",
            hub_cores,
            Some(relay_cores),
            Better::Lower,
        ));
        figures.push(Figure::new(
            "server CPU per routed message",
            "µs",
            hub_cores * 1e6 / rate.max(1.0),
            Some(relay_cores * 1e6 / relay_rate.max(1.0)),
            Better::Lower,
        ));
    }

    if wanted(Phase::Routing) {
        progress("routing: raw replay");
        figures.extend(routing_figures(&relay, &hub, scale.window).await?);
    }
    if let Some(offered) = offered.or(hub_rate.map(|r| r / 2.0)).filter(|_| wanted(Phase::Latency)) {
        latency_figures(&mut figures, &relay, &hub, offered, scale.window, &progress).await?;
    }
    if wanted(Phase::Handshakes) {
        progress("handshakes");
        let (relay_hs, relay_hs_cpu) = handshakes(&relay, scale.handshake_window).await?;
        let (hub_hs, hub_hs_cpu) = handshakes(&hub, scale.handshake_window).await?;
        figures.push(Figure::new(
            "full mTLS handshakes/s (2 cores, clients on the same machine)",
            "1/s",
            hub_hs,
            Some(relay_hs),
            Better::Higher,
        ));
        figures.push(Figure::new(
            "full mTLS handshakes per server CPU-second",
            "1/s",
            hub_hs_cpu,
            Some(relay_hs_cpu),
            Better::Higher,
        ));
    }
    if wanted(Phase::Attachment) {
        progress(&format!("a {} MiB attachment", scale.attachment_mib));
        figures.extend(attachment_figures(&hub, dir.path(), scale.attachment_mib).await?);
    }
    if wanted(Phase::CatchUp) {
        progress(&format!("a device catching up on {} messages", scale.catch_up_messages));
        figures.extend(catch_up_figures(&hub, dir.path(), scale.catch_up_messages).await?);
    }
    drop((relay, hub));
    if wanted(Phase::Audit) {
        progress(&format!("audit log: {} entries", scale.restart_messages / 10));
        figures.extend(audit_figures(&dir.path().join("audit"), (scale.restart_messages / 10).max(1000))?);
    }
    if wanted(Phase::Memory) {
        // Fresh processes: memory freed by earlier phases would otherwise be
        // reused by the new connections and hide part of their cost.
        let fresh = dir.path().join("memory");
        write_setup(&pki, &fresh)?;
        let (relay, hub) = (start_relay(&fresh)?, start_hub(&fresh)?);
        progress(&format!("{} idle connections", scale.idle_connections));
        let relay_mem = idle_memory(&relay, scale.idle_connections).await?;
        let hub_mem = idle_memory(&hub, scale.idle_connections).await?;
        figures.push(Figure::new(
            format!("resident memory per idle mTLS connection ({} connections)", scale.idle_connections),
            "KiB",
            hub_mem / 1024.0,
            Some(relay_mem / 1024.0),
            Better::Lower,
        ));
    }

    if wanted(Phase::Mls) {
        progress("MLS on one device");
        figures.extend(mls_figures()?);
    }
    if wanted(Phase::Restart) {
        progress(&format!("restart with {} stored messages", scale.restart_messages));
        let (first, listening) = restart(&dir.path().join("restart"), &pki, scale.restart_messages).await?;
        figures.push(Figure::new(
            format!("restart with {} stored messages: until listening", scale.restart_messages),
            "s",
            listening,
            None,
            Better::Lower,
        ));
        figures.push(Figure::new(
            format!("restart with {} stored messages: until first delivery", scale.restart_messages),
            "s",
            first,
            None,
            Better::Lower,
        ));
    }
    Ok(figures)
}

/// The replay phase's rows: what the servers route when no client encrypts.
async fn routing_figures(relay: &Target, hub: &Target, window: Duration) -> anyhow::Result<Vec<Figure>> {
    let relay_routing = replay::routing(relay, window).await?;
    let hub_routing = replay::routing(hub, window).await?;
    let per_message = |r: &replay::Routing| r.cores * 1e6 / r.sent.max(1.0);
    Ok(vec![
        Figure::new(
            format!("routing capacity: pre-built MLS messages replayed raw ({SENDERS} connections, msg/s)"),
            "msg/s",
            hub_routing.sent,
            Some(relay_routing.sent),
            Better::Higher,
        ),
        Figure::new(
            "routing: deliveries/s (to every member)",
            "msg/s",
            hub_routing.delivered,
            Some(relay_routing.delivered),
            Better::Higher,
        ),
        Figure::new(
            "routing: server CPU per routed message",
            "µs",
            per_message(&hub_routing),
            Some(per_message(&relay_routing)),
            Better::Lower,
        ),
    ])
}

async fn latency_figures(
    figures: &mut Vec<Figure>,
    relay: &Target,
    hub: &Target,
    offered: f64,
    window: Duration,
    progress: &impl Fn(&str),
) -> anyhow::Result<()> {
    progress(&format!("latency at {offered:.0} msg/s"));
    let relay_lat = latency(relay, offered, window).await?;
    let before = hub.stage_snapshot().await;
    let hub_lat = latency(hub, offered, window).await?;
    if let (Some(before), Some(after)) = (before, hub.stage_snapshot().await) {
        figures.extend(stage_figures(&after.since(&before)));
    }
    figures.push(Figure::new("latency phase: offered load (both servers)", "msg/s", offered, None, Better::Higher));
    for (i, name) in ["p50", "p99", "p999"].iter().enumerate() {
        figures.push(Figure::new(
            format!("delivery latency {name} at the offered load"),
            "ms",
            hub_lat[i],
            Some(relay_lat[i]),
            Better::Lower,
        ));
    }
    Ok(())
}

/// The hub's write path during the latency phase, stage by stage (`hub::stages`): where a message's
/// time goes before it is published. Bucket upper bounds, so a figure is at most that value.
fn stage_figures(window: &hub::stages::Snapshot) -> Vec<Figure> {
    use hub::stages::Stage;
    let mut figures = Vec::new();
    for stage in Stage::ALL {
        let unit = if stage == Stage::Batch { "writes" } else { "µs" };
        // The max too: one rare stall delays every message queued behind it, so it
        // shows in the delivery p99 while staying under 1 % of a stage's own events.
        for (name, q) in [("p50", 0.5), ("p99", 0.99), ("max", 1.0)] {
            let value = window.quantile(stage, q) as f64;
            let what = format!("hub path in the latency phase: {} {name} (bucket bound)", stage.name());
            figures.push(Figure::new(what, unit, value, None, Better::Lower));
        }
    }
    figures
}

/// MLS costs measured on devices in this process, against plain AES-GCM on
/// the same bytes (the "relay" column holds the baseline).
fn mls_figures() -> anyhow::Result<Vec<Figure>> {
    use certs::binding::{Binder, Verifier};
    use ketenhub_sdk::device::Device;
    let extra: Vec<ExtraClient> = (0..11)
        .map(|i| ExtraClient {
            slug: format!("mls-{i:02}"),
            org: ORGS[i % ORGS.len()],
            worker: format!("mls.{i:02}"),
            role: Role::Caseworker,
        })
        .collect();
    let pki = DevPki::generate_with(&extra)?;
    let identities = Arc::new(Verifier::from_pem(pki.ca.cert.as_bytes())?);
    let binder = |slug: &str| -> anyhow::Result<Binder> {
        let pair = pki.client(slug).ok_or_else(|| anyhow::anyhow!("no {slug}"))?;
        Ok(Binder::from_pem(pair.cert.as_bytes(), pair.key.as_bytes())?)
    };
    let thread = ThreadId::random();
    let mut devices: Vec<Device> = extra
        .iter()
        .map(|c| Ok(Device::open(&binder(&c.slug)?, identities.clone(), None)?))
        .collect::<anyhow::Result<_>>()?;
    devices[0].create_group(thread)?;
    for i in 1..10 {
        let package = wire::mls::verify_key_package(&devices[i].key_packages(1)?[0])?.key_package;
        let made = devices[0].add(thread, package)?;
        devices[0].commit_accepted(thread)?;
        for device in devices.iter_mut().take(i).skip(1) {
            device.process(thread, &made.commit).map_err(|e| anyhow::anyhow!("{e}"))?;
        }
        let welcome = made.welcome.ok_or_else(|| anyhow::anyhow!("an add without a Welcome"))?;
        devices[i].join(thread, &welcome).map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    // The commit adding an 11th member to the 10-member group, prepared and dropped again.
    let rounds = 20;
    let packages: Vec<_> = devices[10].key_packages(rounds)?;
    let started = Instant::now();
    for package in &packages {
        let package = wire::mls::verify_key_package(package)?.key_package;
        devices[0].add(thread, package)?;
        devices[0].commit_abandoned(thread)?;
    }
    let add_ms = started.elapsed().as_secs_f64() * 1000.0 / rounds as f64;
    // What of that is the binding check on the added KeyPackage's leaf (chain and signature).
    let leaf = wire::mls::verify_key_package(&packages[0])?.key_package;
    let checks = 200;
    let started = Instant::now();
    for _ in 0..checks {
        identities.verify_leaf(leaf.leaf_node(), certs::binding::Validity::Now)?;
    }
    let binding_ms = started.elapsed().as_secs_f64() * 1000.0 / checks as f64;

    let plaintext = vec![7u8; PAYLOAD];
    let messages = 2_000;
    let started = Instant::now();
    for _ in 0..messages {
        let ciphertext = devices[0].encrypt(thread, &plaintext)?;
        devices[1].process(thread, &ciphertext).map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    let mls_us = started.elapsed().as_secs_f64() * 1e6 / messages as f64;

    let unspecified = |_| anyhow::anyhow!("AES-GCM failed");
    let key = ring::aead::LessSafeKey::new(
        ring::aead::UnboundKey::new(&ring::aead::AES_128_GCM, &[9u8; 16]).map_err(unspecified)?,
    );
    let started = Instant::now();
    for i in 0..messages {
        let mut nonce = [0u8; 12];
        nonce[..8].copy_from_slice(&(i as u64).to_le_bytes());
        let mut buffer = plaintext.clone();
        key.seal_in_place_append_tag(
            ring::aead::Nonce::assume_unique_for_key(nonce),
            ring::aead::Aad::empty(),
            &mut buffer,
        )
        .map_err(unspecified)?;
        key.open_in_place(ring::aead::Nonce::assume_unique_for_key(nonce), ring::aead::Aad::empty(), &mut buffer)
            .map_err(unspecified)?;
    }
    let aead_us = started.elapsed().as_secs_f64() * 1e6 / messages as f64;
    Ok(vec![
        Figure::new("MLS: commit adding a member to a 10-member thread (create)", "ms", add_ms, None, Better::Lower),
        Figure::new(
            "MLS: binding check of an added member's leaf (in the commit above)",
            "ms",
            binding_ms,
            None,
            Better::Lower,
        ),
        Figure::new(
            format!("MLS: encrypt + decrypt {PAYLOAD} B (relay column: plain AES-128-GCM seal + open)"),
            "µs",
            mls_us,
            Some(aead_us),
            Better::Lower,
        ),
    ])
}

/// Samples the peak resident memory of processes until stopped.
struct PeakMemory {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<Vec<u64>>,
}

impl PeakMemory {
    fn start(pids: Vec<u32>) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let task = tokio::spawn(async move {
            let mut peaks = vec![0u64; pids.len()];
            while !flag.load(Ordering::Relaxed) {
                for (peak, pid) in peaks.iter_mut().zip(&pids) {
                    *peak = (*peak).max(rss_of(*pid).unwrap_or(0));
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            peaks
        });
        Self { stop, task }
    }

    async fn finish(self) -> anyhow::Result<Vec<u64>> {
        self.stop.store(true, Ordering::Relaxed);
        Ok(self.task.await?)
    }
}

/// A device that was offline reads a backlog of `count` messages through the
/// SDK with its state directory (decrypting, keeping each message until it is
/// acknowledged, saving per burst), acknowledging every 256; the "relay"
/// column is a raw connection of another member reading the same entries
/// without decrypting or saving anything: the hub's own delivery rate.
async fn catch_up_figures(hub: &Target, dir: &Path, count: usize) -> anyhow::Result<Vec<Figure>> {
    let sender = hub.client(Crew::Idle, 2).discard_events().connect().await?;
    let state = dir.join("catch-up-device");
    let device = hub.client(Crew::Idle, 3).state_dir(&state).connect().await?;
    let raw_reader = hub.client(Crew::Idle, 4).discard_events().connect().await?;
    let thread = sender.create_thread().await?;
    for member in [device.member_id(), raw_reader.member_id()] {
        sender.add_member(thread, member, &bench_grounds()).await?;
    }
    let mut events = device.events().context("events")?;
    crate::next_event(&mut events, Duration::from_secs(60), |e| matches!(e, Event::Joined { .. })).await?;
    device.close().await;
    raw_reader.close().await;
    for i in 0..count {
        sender.send_text(thread, &format!("backlog {i}")).await?;
    }

    let started = Instant::now();
    let device = hub.client(Crew::Idle, 3).state_dir(&state).connect().await?;
    let mut events = device.events().context("events")?;
    let mut read = 0;
    while read < count {
        let event = tokio::time::timeout(Duration::from_secs(60), events.next()).await?.context("events ended")?;
        if let Event::Message(message) = event {
            read += 1;
            if read % 256 == 0 || read == count {
                device.ack(thread, message.seq).await?;
            }
        }
    }
    let sdk_rate = count as f64 / started.elapsed().as_secs_f64();
    device.close().await;

    let started = Instant::now();
    let mut raw = hub.client(Crew::Idle, 4).connect_raw().await?;
    let mut read = 0;
    while read < count {
        use ketenhub_sdk::raw::RawIncoming;
        match tokio::time::timeout(Duration::from_secs(60), raw.next()).await?? {
            RawIncoming::Frame(wire::HubFrame::Event { entry, .. }) => {
                read += usize::from(matches!(entry.body, wire::EntryBody::Message { .. }));
            }
            RawIncoming::Frame(_) => {}
            // Reading again would answer at once, for ever.
            ended => anyhow::bail!("the raw reader's connection ended after {read} messages: {ended:?}"),
        }
    }
    let raw_rate = count as f64 / started.elapsed().as_secs_f64();
    sender.close().await;
    Ok(vec![Figure::new(
        format!("a device catching up on {count} messages with its state directory (relay column: a raw reader of the same entries)"),
        "entries/s",
        sdk_rate,
        Some(raw_rate),
        Better::Higher,
    )])
}

/// An attachment uploaded and fetched through the hub by two SDK clients in
/// this process, against a plain AES-256-GCM loop over the same file (the
/// "relay" column holds the baseline; the relay keeps no blobs).
async fn attachment_figures(hub: &Target, dir: &Path, mib: usize) -> anyhow::Result<Vec<Figure>> {
    let sender = hub.client(Crew::Idle, 0).discard_events().connect().await?;
    let receiver = hub.client(Crew::Idle, 1).discard_events().connect().await?;
    let thread = sender.create_thread().await?;
    sender.add_member(thread, receiver.member_id(), &bench_grounds()).await?;
    let source = dir.join("attachment.bin");
    crate::write_random_file(&source, mib << 20, 42)?;
    let baseline = aes_gcm_mib_per_s(&source)?;

    let before = (rss_of(hub.pid)?, rss_of(std::process::id())?);
    let peaks = PeakMemory::start(vec![hub.pid, std::process::id()]);
    let started = Instant::now();
    let file = tokio::fs::File::open(&source).await?;
    let attachment = sender.upload_attachment(thread, "bench.bin", "application/octet-stream", file).await?;
    let upload = mib as f64 / started.elapsed().as_secs_f64();
    let started = Instant::now();
    receiver.fetch_attachment(thread, &attachment, dir.join("received.bin")).await?;
    let download = mib as f64 / started.elapsed().as_secs_f64();
    let peaks = peaks.finish().await?;
    sender.close().await;
    receiver.close().await;
    let growth = |peak: u64, start: u64| peak.saturating_sub(start) as f64 / f64::from(1 << 20);
    Ok(vec![
        Figure::new(
            format!("attachment upload, {mib} MiB (relay column: plain AES-256-GCM over the file)"),
            "MiB/s",
            upload,
            Some(baseline),
            Better::Higher,
        ),
        Figure::new(
            format!("attachment download + verify, {mib} MiB (relay column: as above)"),
            "MiB/s",
            download,
            Some(baseline),
            Better::Higher,
        ),
        Figure::new(
            format!("hub resident memory growth during the {mib} MiB transfer"),
            "MiB",
            growth(peaks[0], before.0),
            None,
            Better::Lower,
        ),
        Figure::new(
            format!("SDK resident memory growth during the {mib} MiB transfer (both clients)"),
            "MiB",
            growth(peaks[1], before.1),
            None,
            Better::Lower,
        ),
    ])
}

/// A typical audit record: a caseworker's send in a case.
fn audit_record(i: usize) -> wire::audit::AuditRecord {
    use wire::audit::{AuditAction, AuditActor, AuditOutcome, AuditRecord};
    AuditRecord {
        at_ms: 1_700_000_000_000 + i as u64,
        actor: Some(AuditActor {
            oin: ORGS[0].oin.parse().expect("a valid OIN"),
            organisation: ORGS[0].name.into(),
            kind: ORGS[0].kind,
            worker: format!("bench.{:02}", i % SENDERS),
            role: Role::Caseworker,
            certificate: "ab".repeat(32),
        }),
        on_behalf_of: None,
        action: AuditAction::Send,
        case: Some(ThreadId(uuid::Uuid::from_u128(i as u128 % 1000))),
        object: Some(MessageId::new().to_string()),
        purpose: None,
        legal_basis: None,
        outcome: AuditOutcome::Allowed,
        rule: "member-of-case".into(),
        peer: Some("127.0.0.1:50000".into()),
    }
}

/// Audit entries appended durably (a flush per 256, as the hub's group commit
/// does under load) against plain inserts of the same records, into the
/// store's own engine, with the same flushes; and a full verification against hashing the same bytes.
fn audit_figures(dir: &Path, entries: usize) -> anyhow::Result<Vec<Figure>> {
    use hub::audit::chain::AuditKey;
    use hub::audit::{CheckpointSettings, Recorder};
    const FLUSH_EVERY: usize = 256;
    let records: Vec<_> = (0..entries).map(audit_record).collect();

    let plain = hub::store::engine::Engine::open(&dir.join("plain"), &Default::default())?;
    let started = Instant::now();
    for (i, record) in records.iter().enumerate() {
        plain.insert((i as u64).to_be_bytes(), wire::encode(record))?;
        if i % FLUSH_EVERY == FLUSH_EVERY - 1 {
            plain.flush()?;
        }
    }
    plain.flush()?;
    let plain_rate = entries as f64 / started.elapsed().as_secs_f64();

    let store = KvStore::open(&dir.join("store"))?;
    let key = AuditKey::generate()?;
    let public = key.public_key();
    let mut recorder = Recorder::resume(&store, Arc::new(key), CheckpointSettings::default())?;
    let started = Instant::now();
    for (i, record) in records.into_iter().enumerate() {
        recorder.record(&store, record)?;
        if i % FLUSH_EVERY == FLUSH_EVERY - 1 {
            recorder.checkpoint_if_due(&store, 1_700_000_000_000 + i as u64, false)?;
            store.flush()?;
        }
    }
    recorder.checkpoint_if_due(&store, u64::MAX / 2, true)?;
    store.flush()?;
    let append_rate = entries as f64 / started.elapsed().as_secs_f64();

    let started = Instant::now();
    let verified = hub::audit::export::verify_store(&store, &public, Vec::new())?
        .map_err(|e| anyhow::anyhow!("the benchmark's log does not verify: {e}"))?;
    let verify_rate = verified.entries as f64 / started.elapsed().as_secs_f64();
    let legacy_rate = legacy_verify_rate(&store)?;
    let encoded: Vec<Vec<u8>> = store.audit_entries(1, entries)?.iter().map(|e| wire::encode(&e.record)).collect();
    let started = Instant::now();
    for bytes in &encoded {
        std::hint::black_box(ring::digest::digest(&ring::digest::SHA256, bytes));
    }
    let hash_rate = entries as f64 / started.elapsed().as_secs_f64();
    Ok(vec![
        Figure::new(
            format!("audit entries appended durably, {entries} (relay column: plain inserts into the same engine, same flushes)"),
            "1/s",
            append_rate,
            Some(plain_rate),
            Better::Higher,
        ),
        Figure::new(
            "audit log verification, read + chain + Merkle tree + signed heads (relay column: SHA-256 of the same records)",
            "1/s",
            verify_rate,
            Some(hash_rate),
            Better::Higher,
        ),
        Figure::new(
            "audit verification as before the tree: decode, re-encode, chain (relay column: the above)",
            "1/s",
            legacy_rate,
            Some(verify_rate),
            Better::Higher,
        ),
    ])
}

/// Verification the way it was done before the Merkle tree, measured on the same store in the same run:
/// every entry decoded into an export line, its record encoded again to hash it, the chain followed.
fn legacy_verify_rate(store: &KvStore) -> anyhow::Result<f64> {
    use hub::audit::chain::ExportLine;
    let started = Instant::now();
    let mut lines = Vec::new();
    hub::audit::scan(store, |entry| {
        lines.push(ExportLine::Entry(entry));
        true
    })?;
    let mut prev = [0u8; 32];
    let mut checked = 0u64;
    for line in lines {
        if let ExportLine::Entry(entry) = line {
            let ok = hub::audit::chain::entry_hash(entry.seq, &entry.prev_hash, &entry.record) == entry.hash
                && entry.prev_hash == prev;
            anyhow::ensure!(ok, "entry {} does not verify", entry.seq);
            prev = entry.hash;
            checked += 1;
        }
    }
    Ok(checked as f64 / started.elapsed().as_secs_f64())
}

/// Reads a file in attachment-sized chunks and seals each with AES-256-GCM.
fn aes_gcm_mib_per_s(path: &Path) -> anyhow::Result<f64> {
    use std::io::Read;
    let key = ring::aead::LessSafeKey::new(
        ring::aead::UnboundKey::new(&ring::aead::AES_256_GCM, &[3u8; 32]).map_err(|_| anyhow::anyhow!("key"))?,
    );
    let mut file = std::fs::File::open(path)?;
    let started = Instant::now();
    let mut bytes = 0usize;
    for index in 0u64.. {
        let mut chunk = Vec::with_capacity(ketenhub_sdk::attachment::CHUNK_BYTES + 16);
        (&mut file).take(ketenhub_sdk::attachment::CHUNK_BYTES as u64).read_to_end(&mut chunk)?;
        if chunk.is_empty() {
            break;
        }
        bytes += chunk.len();
        let mut nonce = [0u8; 12];
        nonce[4..].copy_from_slice(&index.to_be_bytes());
        key.seal_in_place_append_tag(
            ring::aead::Nonce::assume_unique_for_key(nonce),
            ring::aead::Aad::empty(),
            &mut chunk,
        )
        .map_err(|_| anyhow::anyhow!("AES-GCM failed"))?;
    }
    Ok(bytes as f64 / f64::from(1 << 20) / started.elapsed().as_secs_f64())
}

/// Formats the report as a table.
pub fn table(figures: &[Figure]) -> String {
    let fmt = |v: f64| if v >= 100.0 { format!("{v:.0}") } else { format!("{v:.3}") };
    let spread = |s: Option<[f64; 3]>, fmt: &dyn Fn(f64) -> String| {
        s.map(|[min, _, max]| format!("{}–{}", fmt(min), fmt(max))).unwrap_or_else(|| "-".into())
    };
    let ratio = |r: f64| format!("{r:.2}");
    let rounds = figures.iter().find_map(|f| f.rounds.as_ref()).map(|s| s.count);
    let mut out = format!("{:<78} {:>12} {:>12} {:>10}", "figure", "hub", "relay", "hub/relay");
    if let Some(count) = rounds {
        out.push_str(&format!("   spread over {count} rounds (min–max): hub | relay | hub/relay"));
    }
    out.push('\n');
    for f in figures {
        out.push_str(&format!(
            "{:<78} {:>12} {:>12} {:>10}",
            format!("{} [{}]", f.name, f.unit),
            fmt(f.hub),
            f.relay.map(fmt).unwrap_or_else(|| "-".into()),
            f.ratio.map(ratio).unwrap_or_else(|| "-".into()),
        ));
        if let Some(s) = &f.rounds {
            let hub = spread(Some(s.hub), &fmt);
            out.push_str(&format!("   {hub} | {} | {}", spread(s.relay, &fmt), spread(s.ratio, &ratio)));
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round(hub: f64, relay: f64) -> Vec<Figure> {
        vec![
            Figure::new("rate", "msg/s", hub, Some(relay), Better::Higher),
            Figure::new("restart", "s", hub / 100.0, None, Better::Lower),
        ]
    }

    #[test]
    fn rounds_fold_into_their_medians_with_the_spread_and_ratios_per_round() {
        let folded = fold_rounds(vec![round(300.0, 1000.0), round(100.0, 400.0), round(200.0, 200.0)]).unwrap();
        let rate = &folded[0];
        assert_eq!((rate.hub, rate.relay, rate.ratio), (200.0, Some(400.0), Some(0.3)));
        let spread = rate.rounds.as_ref().unwrap();
        assert_eq!((spread.count, spread.hub, spread.relay), (3, [100.0, 200.0, 300.0], Some([200.0, 400.0, 1000.0])));
        // The ratio's spread is of the ratios within each round, not of the medians' ratio.
        assert_eq!(spread.ratio, Some([0.25, 0.3, 1.0]));
        assert_eq!((folded[1].hub, folded[1].relay, folded[1].rounds.as_ref().unwrap().relay), (2.0, None, None));
        let table = table(&folded);
        assert!(table.contains("spread over 3 rounds") && table.contains("100–300 | 200–1000 | 0.25–1.00"), "{table}");
    }

    #[test]
    fn rounds_that_report_different_figures_are_refused() {
        let mut other = round(1.0, 1.0);
        other[1].name = "something else".into();
        let refused = fold_rounds(vec![round(1.0, 1.0), other]).unwrap_err();
        assert!(refused.to_string().contains("restart"), "{refused}");
        assert!(fold_rounds(Vec::new()).is_err());
    }
}
