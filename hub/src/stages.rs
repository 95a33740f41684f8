//! Timings of the write path's stages, for finding where a message's latency comes from.
//!
//! A request's frame is decoded and checked on its connection's task, then every
//! write waits in the writer's queue, is applied, waits for the flusher, is made durable by a
//! flush shared with its batch, and is answered and published; each member's delivery pump then
//! queues the entry for its connection, which writes it to the socket. Each of those is recorded here in a
//! lock-free histogram (buckets of half powers of two), cheap enough to stay on in production.
//! With `KETENHUB_STAGES=PATH` in its environment the hub writes the cumulative histograms to PATH
//! every 200 ms (written aside, then renamed), so that a benchmark can take two snapshots around
//! its measurement window and report the stages of that window alone ([`Snapshot::since`]).

use std::num::NonZeroU64;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::LazyLock;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// A stage of the write path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// From a request frame's arrival on its connection until each write it makes is submitted to the
    /// writer (µs): decoding, the rate limit and the request's own checks. Only requests that write count.
    Receive,
    /// From submitting a write until the writer thread takes it (µs).
    Queue,
    /// Applying one write: its checks, its audit entry and its store writes (µs).
    Apply,
    /// From a batch's last write applied until the flusher takes the batch (µs).
    Handoff,
    /// One flush, making a batch durable (µs).
    Flush,
    /// Answering a batch's writes and publishing their entries after its flush (µs).
    Answer,
    /// Writes per flushed batch (a count, not a time).
    Batch,
    /// From publishing an entry until a member's delivery pump queues it for the connection (µs).
    Pump,
    /// From publishing an entry until its frame is flushed to a member's socket (µs).
    Deliver,
}

impl Stage {
    /// Every stage, in the order a write passes them.
    pub const ALL: [Stage; 9] = [
        Stage::Receive,
        Stage::Queue,
        Stage::Apply,
        Stage::Handoff,
        Stage::Flush,
        Stage::Answer,
        Stage::Batch,
        Stage::Pump,
        Stage::Deliver,
    ];

    /// Its name in snapshots.
    pub fn name(self) -> &'static str {
        match self {
            Stage::Receive => "receive",
            Stage::Queue => "queue",
            Stage::Apply => "apply",
            Stage::Handoff => "handoff",
            Stage::Flush => "flush",
            Stage::Answer => "answer",
            Stage::Batch => "batch",
            Stage::Pump => "pump",
            Stage::Deliver => "deliver",
        }
    }
}

/// Enough buckets for every `u64`: 0, then two per power of two.
const BUCKETS: usize = 129;

/// Counts per bucket: bucket 0 holds 0, then two buckets per power of two.
struct Histogram {
    counts: [AtomicU64; BUCKETS],
}

static HISTOGRAMS: [Histogram; Stage::ALL.len()] =
    [const { Histogram { counts: [const { AtomicU64::new(0) }; BUCKETS] } }; Stage::ALL.len()];

/// The bucket of a value: 0 for 0; otherwise twice its log2, plus one in the upper half of the octave.
fn bucket(value: u64) -> usize {
    if value == 0 {
        return 0;
    }
    let log = 63 - value.leading_zeros();
    let upper = log > 0 && value >= (3u64 << log) >> 1;
    (1 + 2 * log as usize + usize::from(upper)).min(BUCKETS - 1)
}

/// The largest value a bucket holds (what a quantile reports: an upper bound).
fn bucket_top(index: usize) -> u64 {
    if index == 0 {
        return 0;
    }
    let log = (index - 1) / 2;
    let base = 1u64 << log;
    if (index - 1).is_multiple_of(2) && log > 0 {
        base + base / 2 - 1
    } else {
        base.checked_mul(2).map_or(u64::MAX, |next| next - 1)
    }
}

/// Records one value of `stage`.
pub fn record(stage: Stage, value: u64) {
    // `Stage::ALL` lists the stages in their declaration order, so a stage's number is its histogram.
    HISTOGRAMS[stage as usize].counts[bucket(value)].fetch_add(1, Ordering::Relaxed);
}

/// Records a duration of `stage`, in µs.
pub fn record_time(stage: Stage, elapsed: Duration) {
    record(stage, u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX));
}

tokio::task_local! {
    /// When the request being handled in this task arrived.
    static ARRIVED: Instant;
}

/// Handles a request that arrived `at`, so that its writes can record [`Stage::Receive`].
pub async fn arrived<F: std::future::Future>(at: Instant, handling: F) -> F::Output {
    ARRIVED.scope(at, handling).await
}

/// Records [`Stage::Receive`] when called while a request is handled (see [`arrived`]); otherwise nothing.
pub fn record_receive() {
    if let Ok(at) = ARRIVED.try_with(|at| *at) {
        record_time(Stage::Receive, at.elapsed());
    }
}

/// The process's epoch for [`Stamp`]s.
static EPOCH: LazyLock<Instant> = LazyLock::new(Instant::now);

/// When an entry was published, in eight bytes: nanoseconds since the
/// process's epoch. An [`Instant`] takes sixteen, and every connection's queue
/// allocates a block of 32 frame slots up front, each carrying one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp(NonZeroU64);

impl Stamp {
    /// Now.
    pub fn now() -> Self {
        let nanos = u64::try_from(EPOCH.elapsed().as_nanos()).unwrap_or(u64::MAX);
        Self(NonZeroU64::new(nanos).unwrap_or(NonZeroU64::MIN))
    }

    /// The time since this stamp.
    pub fn elapsed(self) -> Duration {
        Stamp::now().since(self)
    }

    fn since(self, earlier: Stamp) -> Duration {
        Duration::from_nanos(self.0.get().saturating_sub(earlier.0.get()))
    }
}

/// The histograms at one moment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// Per stage, by name: the count in each bucket.
    pub stages: Vec<(String, Vec<u64>)>,
}

impl Snapshot {
    /// The histograms now.
    pub fn now() -> Self {
        let stages = Stage::ALL
            .iter()
            .zip(&HISTOGRAMS)
            .map(|(stage, h)| (stage.name().to_owned(), h.counts.iter().map(|c| c.load(Ordering::Relaxed)).collect()))
            .collect();
        Self { stages }
    }

    /// What was recorded after `earlier`.
    pub fn since(&self, earlier: &Snapshot) -> Snapshot {
        let stages = self
            .stages
            .iter()
            .map(|(name, counts)| {
                let before = earlier.stages.iter().find(|(n, _)| n == name).map(|(_, c)| c.as_slice()).unwrap_or(&[]);
                let diff = counts.iter().enumerate().map(|(i, c)| c.saturating_sub(*before.get(i).unwrap_or(&0)));
                (name.clone(), diff.collect())
            })
            .collect();
        Snapshot { stages }
    }

    /// How many values `stage` recorded.
    pub fn count(&self, stage: Stage) -> u64 {
        self.counts(stage).iter().sum()
    }

    /// The `q` quantile (0 to 1) of `stage`, as its bucket's upper bound; 0 when nothing was recorded.
    pub fn quantile(&self, stage: Stage, q: f64) -> u64 {
        let counts = self.counts(stage);
        let total: u64 = counts.iter().sum();
        if total == 0 {
            return 0;
        }
        let rank = ((total as f64 * q).ceil() as u64).clamp(1, total);
        let mut seen = 0;
        for (index, count) in counts.iter().enumerate() {
            seen += count;
            if seen >= rank {
                return bucket_top(index);
            }
        }
        bucket_top(counts.len().saturating_sub(1))
    }

    fn counts(&self, stage: Stage) -> &[u64] {
        self.stages.iter().find(|(name, _)| name == stage.name()).map_or(&[], |(_, c)| c.as_slice())
    }

    /// Reads a snapshot the hub wrote.
    pub fn read(path: &std::path::Path) -> std::io::Result<Snapshot> {
        let text = std::fs::read_to_string(path)?;
        serde_json::from_str(&text).map_err(std::io::Error::other)
    }
}

/// Starts writing snapshots to the path in `KETENHUB_STAGES`, if it is set.
pub fn report_if_asked() {
    let Some(path) = std::env::var_os("KETENHUB_STAGES").map(std::path::PathBuf::from) else { return };
    let spawned = std::thread::Builder::new().name("ketenhub-stages".into()).spawn(move || {
        let aside = path.with_extension("tmp");
        loop {
            if let Ok(json) = serde_json::to_string(&Snapshot::now()) {
                if std::fs::write(&aside, json).is_ok() {
                    let _ = std::fs::rename(&aside, &path);
                }
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "cannot start writing stage timings");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stamp_measures_the_time_since_it_and_never_goes_negative() {
        let stamp = Stamp::now();
        std::thread::sleep(Duration::from_millis(5));
        let elapsed = stamp.elapsed();
        assert!(elapsed >= Duration::from_millis(5), "{elapsed:?}");
        assert_eq!(stamp.since(Stamp::now()), Duration::ZERO);
        assert_eq!(std::mem::size_of::<Option<Stamp>>(), 8);
    }

    #[tokio::test]
    async fn a_request_records_its_receive_time() {
        let at = Instant::now() - Duration::from_millis(3);
        let (counted, slowest) = arrived(at, async {
            let before = Snapshot::now();
            record_receive();
            let window = Snapshot::now().since(&before);
            (window.count(Stage::Receive), window.quantile(Stage::Receive, 1.0))
        })
        .await;
        // Other tests' hubs record into the same histograms, so the window may hold theirs too.
        assert!(counted >= 1 && slowest >= 3_000, "{counted} receive times, the largest {slowest} µs");
    }

    #[test]
    fn every_stage_has_its_own_histogram() {
        for (index, stage) in Stage::ALL.iter().enumerate() {
            assert_eq!(*stage as usize, index, "{} is out of place in Stage::ALL", stage.name());
        }
    }

    #[test]
    fn buckets_hold_their_values_and_quantiles_are_upper_bounds() {
        for value in [0u64, 1, 2, 3, 4, 5, 6, 7, 8, 11, 12, 1_000, 1 << 40, u64::MAX] {
            let index = bucket(value);
            assert!(value <= bucket_top(index), "{value} in bucket {index} up to {}", bucket_top(index));
            assert!(index == 0 || value > bucket_top(index - 1), "{value} belongs in a lower bucket than {index}");
        }
        // Other tests' hubs record into the same histograms: the arithmetic is checked on snapshots made here.
        let mut counts = vec![0u64; BUCKETS];
        counts[bucket(100)] = 9;
        counts[bucket(5_000)] = 1;
        let later = Snapshot { stages: vec![("flush".into(), counts), ("queue".into(), vec![0; BUCKETS])] };
        let earlier = Snapshot { stages: vec![("flush".into(), vec![0; BUCKETS])] };
        let window = later.since(&earlier);
        assert_eq!(window.count(Stage::Flush), 10);
        assert_eq!(window.quantile(Stage::Flush, 0.5), 127, "100 lies in 96..=127");
        assert_eq!(window.quantile(Stage::Flush, 0.99), 6_143, "5,000 lies in 4,096..=6,143");
        assert_eq!((window.count(Stage::Queue), window.quantile(Stage::Queue, 0.99)), (0, 0));
        let before = Snapshot::now().count(Stage::Answer);
        record_time(Stage::Answer, Duration::from_micros(3));
        assert!(Snapshot::now().count(Stage::Answer) > before);
        let text = serde_json::to_string(&window).unwrap();
        assert_eq!(serde_json::from_str::<Snapshot>(&text).unwrap(), window);
    }
}
