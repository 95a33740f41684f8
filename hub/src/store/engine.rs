//! The ordered key-value engines the embedded store runs on.
//!
//! [`super::kv_store::KvStore`] keeps its threads, audit log and indexes as
//! tagged keys in one ordered key space; it needs of an engine only what this
//! module offers: point reads and writes, atomic batches, ordered scans (both
//! ways) and a flush that makes every earlier write durable. Two engines offer it:
//!
//! - **fjall** (an LSM tree with a write-ahead journal), the engine of new
//!   stores. A write appends to the journal and a sorted in-memory table, so
//!   the path of a routed message writes each key once, where sled copies a
//!   whole leaf per insert (`docs/benchmarks.md` has both measured).
//! - **sled**, the engine of stores written before fjall; such a store is
//!   opened with sled, so an upgrade needs no migration.
//!
//! Both keep a crash's losses to a suffix of the writes since the last flush:
//! a write that survives has every earlier write with it. The store's
//! ordering of plain inserts (a de-duplication key before its entry) relies on that.
//!
//! fjall takes no lock of its own on its files, so the engine holds an
//! exclusive lock on `DIR/lock` for as long as it is open, whichever engine it
//! is: a second process (an audit command beside a running hub) is refused,
//! and the choice of engine for a new store is made under the lock.

use std::fs::File;
use std::ops::{Deref, RangeBounds};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::presence::Presence;
use super::StoreError;

/// Which engine a store runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EngineKind {
    /// fjall, the engine of new stores.
    #[default]
    Fjall,
    /// sled, the engine of stores written before fjall.
    Sled,
}

/// How a store's engine is opened (`[store]` in the configuration).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EngineSettings {
    /// The engine a new store is created with. An existing store is always
    /// opened with the engine that wrote it.
    pub engine: EngineKind,
    /// Bytes of memory the engine may keep as its cache of stored data.
    pub cache_bytes: u64,
    /// Bytes of memory for remembering which membership, read-only and
    /// closed-case keys exist (the policy's per-message checks); 0 turns it off.
    pub presence_cache_bytes: u64,
}

impl Default for EngineSettings {
    fn default() -> Self {
        Self { engine: EngineKind::default(), cache_bytes: 256 << 20, presence_cache_bytes: 16 << 20 }
    }
}

/// A stored key or value, borrowed from the engine without a copy.
#[derive(Debug, Clone)]
pub enum Value {
    /// Held by sled.
    Sled(sled::IVec),
    /// Held by fjall.
    Fjall(fjall::Slice),
}

impl Deref for Value {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match self {
            Value::Sled(v) => v,
            Value::Fjall(v) => v,
        }
    }
}

impl PartialEq for Value {
    fn eq(&self, other: &Self) -> bool {
        **self == **other
    }
}

impl Eq for Value {}

impl PartialOrd for Value {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Value {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (**self).cmp(&**other)
    }
}

impl AsRef<[u8]> for Value {
    fn as_ref(&self) -> &[u8] {
        self
    }
}

/// One key and its value, from a scan.
pub type Item = Result<(Value, Value), StoreError>;

/// An ordered scan, readable from either end.
pub struct Iter(Box<dyn DoubleEndedIterator<Item = Item>>);

impl Iterator for Iter {
    type Item = Item;

    fn next(&mut self) -> Option<Item> {
        self.0.next()
    }
}

impl DoubleEndedIterator for Iter {
    fn next_back(&mut self) -> Option<Item> {
        self.0.next_back()
    }
}

impl Iter {
    /// The keys alone.
    pub fn keys(self) -> impl DoubleEndedIterator<Item = Result<Value, StoreError>> {
        self.map(|item| item.map(|(key, _)| key))
    }
}

/// Writes applied together or not at all.
#[derive(Debug, Default)]
pub struct Batch(Vec<(Vec<u8>, Option<Vec<u8>>)>);

impl Batch {
    /// Sets `key` to `value`.
    pub fn insert(&mut self, key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) {
        self.0.push((key.as_ref().to_vec(), Some(value.as_ref().to_vec())));
    }

    /// Removes `key`.
    pub fn remove(&mut self, key: impl AsRef<[u8]>) {
        self.0.push((key.as_ref().to_vec(), None));
    }
}

/// fjall's key space and its one partition.
#[derive(Clone)]
struct Fjall {
    keyspace: fjall::Keyspace,
    items: fjall::PartitionHandle,
    /// Held by a read-modify-write, which fjall has no single call for.
    updating: Arc<Mutex<()>>,
    /// Set by the first write fjall failed. fjall may have left part of that
    /// write in its journal, and its recovery drops everything after such a
    /// part, so nothing written after it may be acknowledged: every later
    /// write and flush fails until the hub restarts.
    broken: Arc<AtomicBool>,
}

/// The engine's own handle.
#[derive(Clone)]
enum Db {
    Sled(sled::Db),
    Fjall(Fjall),
}

/// An open engine. Cloning it is cheap and shares it.
#[derive(Clone)]
pub struct Engine {
    db: Db,
    /// Answers repeated presence checks of the kinds of key it is given.
    presence: Arc<Presence>,
    /// Released when the last handle is dropped, after the engine (fields drop
    /// in order), whose drop waits for its background threads.
    _lock: Arc<File>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self.kind() {
            EngineKind::Fjall => "Engine::Fjall",
            EngineKind::Sled => "Engine::Sled",
        })
    }
}

/// How long `open` waits for a lock that is still being released.
pub(crate) const LOCK_RELEASE_WAIT: Duration = Duration::from_secs(3);

/// How much fjall gathers in memory before writing it out as a sorted file.
/// The write-out competes with the hub's own flushes for the disk (on ext4 a
/// flush may wait for it), so large tables put long stalls in the delivery
/// tail, and small ones many short ones: measured, 8 MiB was the best of
/// 2, 4, 8, 16 and 64 (docs/benchmarks.md).
const MEMTABLE_BYTES: u32 = 8 << 20;

/// Memory all tables not yet written out may hold together before writes wait.
const WRITE_BUFFER_BYTES: u64 = 8 * MEMTABLE_BYTES as u64;

/// How fjall merges its sorted files: size-tiered, each level four times the
/// one before, starting at one table. The hub's keys interleave every thread's
/// log, so under fjall's default levelled merging every file overlaps the next
/// level and each merge rewrites it: a message was rewritten many times, which
/// cost about a fifth of the hub's CPU under load; tiered merging writes it once
/// per level (docs/benchmarks.md). fjall stores the strategy with the partition,
/// so a fjall store made before keeps levelled merging.
fn compaction() -> fjall::compaction::Strategy {
    fjall::compaction::Strategy::SizeTiered(fjall::compaction::SizeTiered::new(MEMTABLE_BYTES, 4))
}

/// The one partition of a fjall store: the tags in the keys keep its records apart.
const PARTITION: &str = "items";

fn sled_error(e: sled::Error) -> StoreError {
    StoreError::Backend(e.to_string())
}

fn fjall_error(e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(e.to_string())
}

fn fjall_dir(dir: &Path) -> PathBuf {
    dir.join("fjall")
}

/// The engine whose files `dir` holds, if any.
pub fn existing(dir: &Path) -> Option<EngineKind> {
    if fjall_dir(dir).join("version").is_file() {
        Some(EngineKind::Fjall)
    } else if dir.join("conf").is_file() && dir.join("db").is_file() {
        Some(EngineKind::Sled)
    } else {
        None
    }
}

/// Retries `open` while it reports a lock still held, up to [`LOCK_RELEASE_WAIT`]:
/// an earlier open in this process (a command after a migration, a test after
/// it wrote a store) may still be letting go. Another process holding the
/// store still fails, after the wait.
fn waiting_for_lock<T>(mut open: impl FnMut() -> Result<T, (bool, StoreError)>) -> Result<T, StoreError> {
    let started = Instant::now();
    loop {
        match open() {
            Err((true, _)) if started.elapsed() < LOCK_RELEASE_WAIT => std::thread::sleep(Duration::from_millis(20)),
            result => return result.map_err(|(_, e)| e),
        }
    }
}

/// Takes the exclusive lock on `DIR/lock`, waiting briefly for a holder that is letting go.
fn lock(dir: &Path) -> Result<File, StoreError> {
    // Owner-only before anything is written into it (the engines make their files with the default mode).
    certs::private::create_dir_all(dir)
        .map_err(|e| StoreError::Backend(format!("store directory {}: {e}", dir.display())))?;
    let path = dir.join("lock");
    let lock = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| StoreError::Backend(format!("store lock {}: {e}", path.display())))?;
    waiting_for_lock(|| match lock.try_lock() {
        Ok(()) => Ok(()),
        Err(std::fs::TryLockError::WouldBlock) => {
            Err((true, StoreError::Backend(format!("store {} is locked by another process", dir.display()))))
        }
        Err(std::fs::TryLockError::Error(e)) => {
            Err((false, StoreError::Backend(format!("store lock {}: {e}", path.display()))))
        }
    })?;
    Ok(lock)
}

impl Engine {
    /// Opens the store's engine in `dir`: the one whose files are there, or
    /// for a new store the one `settings` names.
    ///
    /// The choice is made under the lock, so that two processes creating a
    /// store at once cannot make one of each.
    pub fn open(dir: &Path, settings: &EngineSettings) -> Result<Self, StoreError> {
        let lock = lock(dir)?;
        let db = match existing(dir).unwrap_or(settings.engine) {
            EngineKind::Sled => open_sled(dir, settings.cache_bytes)?,
            EngineKind::Fjall => open_fjall(dir, settings.cache_bytes)?,
        };
        let presence =
            Arc::new(Presence::new(&[], usize::try_from(settings.presence_cache_bytes).unwrap_or(usize::MAX)));
        Ok(Engine { db, presence, _lock: Arc::new(lock) })
    }

    /// The engine, remembering whether the keys starting with one of
    /// `prefixes` exist (see [`super::presence`]). Set before the engine is
    /// shared: its clones keep the memory they were made with.
    pub fn remembering_presence_of(mut self, prefixes: &'static [u8]) -> Self {
        self.presence = Arc::new(Presence::new(prefixes, self.presence.budget()));
        self
    }

    /// Which engine this is.
    pub fn kind(&self) -> EngineKind {
        match &self.db {
            Db::Sled(_) => EngineKind::Sled,
            Db::Fjall(_) => EngineKind::Fjall,
        }
    }

    /// The value of `key`.
    pub fn get(&self, key: impl AsRef<[u8]>) -> Result<Option<Value>, StoreError> {
        match &self.db {
            Db::Sled(db) => Ok(db.get(key).map_err(sled_error)?.map(Value::Sled)),
            Db::Fjall(f) => Ok(f.items.get(key).map_err(fjall_error)?.map(Value::Fjall)),
        }
    }

    /// Whether `key` has a value.
    pub fn contains_key(&self, key: impl AsRef<[u8]>) -> Result<bool, StoreError> {
        let key = key.as_ref();
        self.presence.contains(key, || match &self.db {
            Db::Sled(db) => db.contains_key(key).map_err(sled_error),
            Db::Fjall(f) => f.items.contains_key(key).map_err(fjall_error),
        })
    }

    /// Sets `key` to `value`.
    pub fn insert(&self, key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) -> Result<(), StoreError> {
        let key = key.as_ref();
        let _forgetting = self.presence.forgetting([key]);
        match &self.db {
            Db::Sled(db) => db.insert(key, value.as_ref()).map(drop).map_err(sled_error),
            Db::Fjall(f) => f.writing(|| f.items.insert(key, value.as_ref())),
        }
    }

    /// Removes `key`.
    pub fn remove(&self, key: impl AsRef<[u8]>) -> Result<(), StoreError> {
        let key = key.as_ref();
        let _forgetting = self.presence.forgetting([key]);
        match &self.db {
            Db::Sled(db) => db.remove(key).map(drop).map_err(sled_error),
            Db::Fjall(f) => f.writing(|| f.items.remove(key)),
        }
    }

    /// Sets `key` to what `change` makes of its value (`None` when it has
    /// none), atomically with respect to other updates.
    pub fn update(&self, key: impl AsRef<[u8]>, change: impl Fn(Option<&[u8]>) -> Vec<u8>) -> Result<(), StoreError> {
        let key = key.as_ref();
        let _forgetting = self.presence.forgetting([key]);
        match &self.db {
            Db::Sled(db) => db.fetch_and_update(key, |old| Some(change(old))).map(drop).map_err(sled_error),
            Db::Fjall(f) => {
                let _held = super::lock(&f.updating);
                let old = f.items.get(key).map_err(fjall_error)?;
                f.writing(|| f.items.insert(key, change(old.as_deref())))
            }
        }
    }

    /// Applies every write of `batch`, or none of them.
    pub fn apply(&self, batch: Batch) -> Result<(), StoreError> {
        let _forgetting = self.presence.forgetting(batch.0.iter().map(|(key, _)| key.as_slice()));
        self.write_batch(batch)
    }

    fn write_batch(&self, batch: Batch) -> Result<(), StoreError> {
        match &self.db {
            Db::Sled(db) => {
                let mut writes = sled::Batch::default();
                for (key, value) in batch.0 {
                    match value {
                        Some(value) => writes.insert(key, value),
                        None => writes.remove(key),
                    }
                }
                db.apply_batch(writes).map_err(sled_error)
            }
            Db::Fjall(f) => {
                let mut writes = f.keyspace.batch();
                for (key, value) in batch.0 {
                    match value {
                        Some(value) => writes.insert(&f.items, key, value),
                        None => writes.remove(&f.items, key),
                    }
                }
                // fjall 2.11 ignores an error writing a batch to its journal
                // (and applies the batch all the same). Handing the journal's
                // buffer to the OS at once makes a failure that lasts show
                // here, where it stops the store, rather than after a later
                // write that its recovery would then drop.
                f.writing(|| writes.commit().and_then(|()| f.keyspace.persist(fjall::PersistMode::Buffer)))
            }
        }
    }

    /// The keys starting with `prefix`, in order.
    pub fn scan_prefix(&self, prefix: impl AsRef<[u8]>) -> Iter {
        match &self.db {
            Db::Sled(db) => Iter(Box::new(db.scan_prefix(prefix).map(sled_item))),
            Db::Fjall(f) => Iter(Box::new(f.items.prefix(prefix.as_ref()).map(fjall_item))),
        }
    }

    /// The keys in `range`, in order.
    pub fn range(&self, range: impl RangeBounds<Vec<u8>> + 'static) -> Iter {
        match &self.db {
            Db::Sled(db) => Iter(Box::new(db.range(range).map(sled_item))),
            Db::Fjall(f) => Iter(Box::new(f.items.range(range).map(fjall_item))),
        }
    }

    /// Makes every write made before this call durable.
    pub fn flush(&self) -> Result<(), StoreError> {
        match &self.db {
            Db::Sled(db) => db.flush().map(drop).map_err(sled_error),
            Db::Fjall(f) => f.writing(|| f.keyspace.persist(fjall::PersistMode::SyncAll)),
        }
    }
}

fn open_sled(dir: &Path, cache_bytes: u64) -> Result<Db, StoreError> {
    waiting_for_lock(|| {
        // No flushes of sled's own every 500 ms: the writer flushes every batch
        // before it answers, and sled's timed flush, contending with it for the
        // log, showed in the benchmark's delivery tail (docs/benchmarks.md).
        // What only a timed flush made durable (a cursor after the last write)
        // is delivered again after a crash, as the ack's contract allows; fjall
        // below runs the same way.
        // High-throughput mode: sled's default (low space) rewrites segments
        // early to reclaim disk, work on the writer's path (docs/benchmarks.md).
        let config = sled::Config::new().path(dir).cache_capacity(cache_bytes).mode(sled::Mode::HighThroughput);
        match config.flush_every_ms(None).open() {
            // sled reports a held lock only in its message, as an `Other` I/O error.
            Err(sled::Error::Io(e)) if e.to_string().contains("could not acquire lock") => {
                Err((true, sled_error(sled::Error::Io(e))))
            }
            result => result.map(Db::Sled).map_err(|e| (false, sled_error(e))),
        }
    })
}

fn open_fjall(dir: &Path, cache_bytes: u64) -> Result<Db, StoreError> {
    // The hub makes writes durable itself, with one flush per batch of
    // writes before it answers any of them; fjall's own flush after every
    // write would be a system call per key. Ciphertext does not compress,
    // so lz4 would only cost CPU.
    let keyspace = fjall::Config::new(fjall_dir(dir))
        .manual_journal_persist(true)
        .cache_size(cache_bytes)
        .max_write_buffer_size(WRITE_BUFFER_BYTES)
        .flush_workers(1)
        .compaction_workers(1)
        .open()
        .map_err(fjall_error)?;
    let options = fjall::PartitionCreateOptions::default()
        .manual_journal_persist(true)
        .compression(fjall::CompressionType::None)
        .max_memtable_size(MEMTABLE_BYTES)
        .compaction_strategy(compaction());
    let items = keyspace.open_partition(PARTITION, options).map_err(fjall_error)?;
    Ok(Db::Fjall(Fjall { keyspace, items, updating: Arc::default(), broken: Arc::default() }))
}

impl Fjall {
    /// Runs a write, refusing it once an earlier one failed and marking the
    /// store broken when it fails itself.
    fn writing(&self, write: impl FnOnce() -> fjall::Result<()>) -> Result<(), StoreError> {
        if self.broken.load(Ordering::Acquire) {
            return Err(StoreError::Backend(
                "an earlier write to the store failed: nothing is written or flushed until the hub restarts".into(),
            ));
        }
        write().map_err(|e| {
            self.broken.store(true, Ordering::Release);
            fjall_error(e)
        })
    }
}

fn sled_item(item: sled::Result<(sled::IVec, sled::IVec)>) -> Item {
    item.map(|(k, v)| (Value::Sled(k), Value::Sled(v))).map_err(sled_error)
}

fn fjall_item(item: fjall::Result<fjall::KvPair>) -> Item {
    item.map(|(k, v)| (Value::Fjall(k), Value::Fjall(v))).map_err(fjall_error)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn each_engine(test: impl Fn(Engine)) {
        for engine in [EngineKind::Fjall, EngineKind::Sled] {
            let dir = tempfile::tempdir().unwrap();
            // A directory not there yet is made, as sled makes it.
            let dir = dir.path().join("new");
            test(Engine::open(&dir, &EngineSettings { engine, ..Default::default() }).unwrap());
        }
    }

    #[test]
    fn scans_are_ordered_both_ways_and_bounded_by_their_prefix_or_range() {
        each_engine(|db| {
            for key in [&b"b2"[..], b"a1", b"b1", b"c1", b"b3"] {
                db.insert(key, key).unwrap();
            }
            let keys = |iter: Iter| iter.keys().map(|k| k.unwrap().to_vec()).collect::<Vec<_>>();
            assert_eq!(keys(db.scan_prefix(b"b")), [b"b1".to_vec(), b"b2".to_vec(), b"b3".to_vec()]);
            assert_eq!(&*db.scan_prefix(b"b").next_back().unwrap().unwrap().0, b"b3");
            assert_eq!(
                keys(db.range(b"a1".to_vec()..b"b3".to_vec())),
                [b"a1".to_vec(), b"b1".to_vec(), b"b2".to_vec()]
            );
        });
    }

    #[test]
    fn a_batch_applies_its_inserts_and_removals_together() {
        each_engine(|db| {
            db.insert(b"gone", b"x").unwrap();
            let mut batch = Batch::default();
            batch.insert(b"new", b"y");
            batch.remove(b"gone");
            db.apply(batch).unwrap();
            assert!(!db.contains_key(b"gone").unwrap());
            assert_eq!(&*db.get(b"new").unwrap().unwrap(), b"y");
        });
    }

    #[test]
    fn remembered_presence_follows_every_kind_of_write() {
        each_engine(|db| {
            let db = db.remembering_presence_of(b"m");
            let present = |expected: bool| {
                // Twice: the second answer comes from the memory.
                assert_eq!(db.contains_key(b"m1").unwrap(), expected);
                assert_eq!(db.contains_key(b"m1").unwrap(), expected);
            };
            present(false);
            db.insert(b"m1", b"").unwrap();
            present(true);
            db.remove(b"m1").unwrap();
            present(false);
            let mut batch = Batch::default();
            batch.insert(b"other", b"");
            batch.insert(b"m1", b"");
            db.apply(batch).unwrap();
            present(true);
            let mut batch = Batch::default();
            batch.remove(b"m1");
            db.apply(batch).unwrap();
            present(false);
            db.update(b"m1", |_| Vec::new()).unwrap();
            present(true);
            // A clone shares the memory, so a write through one is seen by the other.
            db.clone().remove(b"m1").unwrap();
            present(false);
        });
    }

    #[test]
    fn a_store_is_opened_with_the_engine_that_wrote_it_whatever_the_settings_say() {
        for (wrote, asked) in [(EngineKind::Sled, EngineKind::Fjall), (EngineKind::Fjall, EngineKind::Sled)] {
            let dir = tempfile::tempdir().unwrap();
            let db = Engine::open(dir.path(), &EngineSettings { engine: wrote, ..Default::default() }).unwrap();
            db.insert(b"k", b"v").unwrap();
            db.flush().unwrap();
            drop(db);
            assert_eq!(existing(dir.path()), Some(wrote));
            let db = Engine::open(dir.path(), &EngineSettings { engine: asked, ..Default::default() }).unwrap();
            assert_eq!(db.kind(), wrote);
            assert_eq!(&*db.get(b"k").unwrap().unwrap(), b"v");
        }
    }
}
