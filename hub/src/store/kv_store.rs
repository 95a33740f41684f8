//! The embedded [`Store`] backend, on an ordered key-value [`Engine`]
//! (fjall for new stores, sled for stores written before; see [`super::engine`]).
//!
//! Everything lives in one ordered key space. A change of several keys (a new thread,
//! a new member with its entry, index and cursor) is one atomic batch. A message
//! is two plain inserts, because it is the hot path and sled batches cost several
//! times more than inserts: its de-duplication key first, its entry second, so
//! that a crash can lose the entry but never keep an entry without its key; a key
//! whose entry is missing is ignored. An audit entry, on the path of every
//! message too, is plain inserts in the same way: its index keys first, then
//! the entry with the tree nodes it completes (see [`Store::append_audit`]).
//! Keys start with a one-byte tag:
//!
//! | tag | key after the tag | value |
//! |---|---|---|
//! | `T` | thread | thread record |
//! | `M` | thread, member | membership record (the open interval) |
//! | `I` | member, thread, from seq (u64 BE) | until seq: an ended membership interval |
//! | `E` | thread, seq (u64 BE) | entry |
//! | `D` | thread, message id | seq |
//! | `X` | member, thread | (empty): the member's threads |
//! | `C` | member, thread | cursor seq; kept when the membership ends, so the rest of the interval is still delivered |
//! | `R` | member, client ref | thread: idempotent creation |
//! | `K` | member, id (u64 BE, above every stored one) | an MLS KeyPackage, oldest first |
//! | `G` | thread | the public state of the thread's MLS group |
//! | `B` | thread, blob | blob record (per thread: another case's blob id names nothing) |
//! | `A` | seq (u64 BE) | audit entry: `0x02`, seq, prev hash, hash, a count of levels, the hashes of the perfect subtrees of the audit Merkle tree that end at its leaf (32 bytes per level from 0 up), then the record's CBOR (see `encode_audit`; `0x01` entries, from before, have no levels) |
//! | `H` | last leaf (u64 BE) | the hashes of the perfect subtrees that end at this leaf, as in an `A` value: kept for entries pruned, or written before the nodes moved into the entry |
//! | `O` | thread | the case's ownership (regie) and handover state, written with the thread |
//! | `Y` | thread, member | (empty): a former owner who only reads, kept with the ownership state |
//! | `P` | size (u64 BE), at_ms (u64 BE) | signed tree head of the audit log |
//! | `Q` | (none) | the latest signed tree head again, so that replies read it with one look-up |
//! | `L` | thread, member | the ownership state when the member left: the answer to a resent `leave_case` |
//! | `W` | OIN, thread | (empty): the case has an offer to or from the organisation |
//! | `N` | thread, seq (u64 BE) | (empty): an audit entry about the case |
//! | `U` | OIN, seq (u64 BE) | (empty): an audit entry about no case by the organisation's people |
//! | `V` | (none) | the version of the indexes above; a store without it has them rebuilt when opened |
//! | `r` | (none) | per CRL issuer, the newest `thisUpdate` the hub has had in force |
//!
//! Attachment chunks are files in `DIR/attachments` (see [`super::chunk_files`]).
//!
//! A member is encoded as its 20 OIN digits, a length byte and the worker id,
//! which keeps prefixes unambiguous. Values are CBOR.
//!
//! Sequence numbers are assigned under a per-thread lock. Each thread also has
//! a durable watermark, advanced only after a flush that covered the entry, and
//! reads never go past it.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use serde::{de::DeserializeOwned, Deserialize, Serialize};
use uuid::Uuid;
use wire::audit::{AuditEntry, AuditRecord, SignedTreeHead};
use wire::merkle::{Hash, Node};

use crate::audit::chain::Sealed;
use crate::audit::verify::Link;
use crate::devices::DeviceRecord;
use wire::{BlobId, DeviceId, Entry, EntryBody, MemberId, MessageId, Oin, ThreadId};

use super::chunk_files::ChunkFiles;
use super::engine::{self, Batch, Engine, EngineSettings};
use super::{
    leaf_of, lock, AcceptedCommit, Appended, AuditIndex, BlobRecord, Created, DeviceWrite, HandoverStep, Interval,
    Store, StoreError,
};

const THREAD: u8 = b'T';
const MEMBER: u8 = b'M';
const ENTRY: u8 = b'E';
const DEDUP: u8 = b'D';
const MEMBER_THREAD: u8 = b'X';
const CURSOR: u8 = b'C';
const CREATE_REF: u8 = b'R';
const KEY_PACKAGE: u8 = b'K';
const GROUP: u8 = b'G';
const GROUP_INFO: u8 = b'F';
const DEVICE: u8 = b'S';
const BLOB: u8 = b'B';
const AUDIT: u8 = b'A';
const OWNERSHIP: u8 = b'O';
const READ_ONLY: u8 = b'Y';
const CHECKPOINT: u8 = b'P';
const FORMER: u8 = b'I';
const FAREWELL: u8 = b'L';
const OFFERS_OF: u8 = b'W';
const AUDIT_OF_CASE: u8 = b'N';
const AUDIT_OF_ORGANISATION: u8 = b'U';
const INDEX_VERSION: u8 = b'V';
const CLAIM: u8 = b'J';
const AUDIT_NODE: u8 = b'H';
const LATEST_HEAD: u8 = b'Q';
/// Cases closed by their owner (and not reopened): nobody writes in them.
const CLOSED: u8 = b'Z';
/// A case's side threads: case id then side thread id.
const SIDE: u8 = b's';
/// The newest CRL of each issuer the hub has had in force.
const REVOCATION_MARKS: u8 = b'r';
/// The keys whose presence the policy checks on every message, which the
/// engine remembers (see `presence`).
const CHECKED_ON_EVERY_MESSAGE: &[u8] = &[MEMBER, READ_ONLY, CLOSED];
/// The first byte of an audit entry that holds its tree nodes (the current layout).
const AUDIT_LAYOUT: u8 = 0x02;
/// The first byte of an audit entry whose tree nodes are `H` values; CBOR maps
/// (the layout before that) never start with either.
const AUDIT_LAYOUT_BEFORE: u8 = 0x01;
/// Bytes before the levels (current layout) or the record (the layout before) in an audit entry's value.
const AUDIT_HEADER: usize = 1 + 8 + 32 + 32;
/// The indexes' layout; a store written before them gets them on opening.
/// 2: the tree nodes an append completes are one value (1 had a key per node).
const INDEXES: u8 = 2;
/// The first layout with the offer and audit indexes.
const INDEXED: u8 = 1;

#[derive(Serialize, Deserialize)]
struct ThreadRecord {
    creator: MemberId,
    created_at_ms: u64,
    /// Set for a side thread.
    #[serde(default)]
    side: Option<wire::SideThread>,
    /// Set for an organisation's inbox.
    #[serde(default)]
    inbox: bool,
}

#[derive(Serialize, Deserialize)]
struct MembershipRecord {
    added_by: MemberId,
    added_seq: u64,
    added_at_ms: u64,
}

/// An entry a handover step appends to a thread beside its case.
enum Beside<'a> {
    /// A membership of a side thread ends.
    Evict(&'a MemberId),
    /// A notice to an organisation's inbox.
    Notice(&'a wire::handover::Notice),
}

/// What a write appends beside its own thread, by thread.
type BesideMap<'a> = BTreeMap<ThreadId, Vec<Beside<'a>>>;

/// The logs a write holds locked beside its own, each with the next seq it moves to once applied.
type Held<'l> = Vec<(MutexGuard<'l, ThreadLog>, u64)>;

/// Side-thread departures and inbox notices, grouped by the thread they go to.
fn beside<'a>(
    evict_sides: &'a [(ThreadId, Vec<MemberId>)],
    notices: &'a [(ThreadId, wire::handover::Notice)],
) -> BesideMap<'a> {
    let mut beside: BesideMap<'a> = BTreeMap::new();
    for (side, members) in evict_sides {
        beside.entry(*side).or_default().extend(members.iter().map(Beside::Evict));
    }
    for (inbox, notice) in notices {
        beside.entry(*inbox).or_default().push(Beside::Notice(notice));
    }
    beside
}

/// Where a thread's log stands: the next seq to assign and the highest durable one.
#[derive(Debug)]
struct ThreadLog {
    next_seq: u64,
    durable_seq: u64,
    /// For a side thread, its case: asked by every send (closed? read-only?), so kept beside the log.
    case: Option<ThreadId>,
    /// Whether it is an organisation's inbox, which only the hub writes.
    inbox: bool,
}

/// The store, on an ordered key-value [`Engine`]. Its locks (taken with
/// `super::lock`) guard single assignments, which a panic cannot leave half made.
pub struct KvStore {
    db: Engine,
    /// The id of the next KeyPackage stored: above every stored one, so that they stay oldest first.
    next_package: AtomicU64,
    chunks: ChunkFiles,
    logs: Mutex<HashMap<ThreadId, Arc<Mutex<ThreadLog>>>>,
    dirty: Mutex<HashSet<ThreadId>>,
    creating: Mutex<()>,
}

impl std::fmt::Debug for KvStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KvStore").finish_non_exhaustive()
    }
}

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    wire::encode(value)
}

fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, StoreError> {
    wire::decode(bytes).map_err(|e| StoreError::Corrupt(e.to_string()))
}

fn member_key(member: &MemberId) -> Vec<u8> {
    let worker = member.worker.as_bytes();
    let mut key = Vec::with_capacity(21 + worker.len());
    key.extend_from_slice(member.oin.as_str().as_bytes());
    key.push(worker.len() as u8);
    key.extend_from_slice(worker);
    key
}

/// The claim of a KeyPackage (by digest) handed to `claimer` for `thread`.
fn claim_key(thread: ThreadId, claimer: &MemberId, digest: &[u8; 32]) -> Vec<u8> {
    key(CLAIM, &[thread.0.as_bytes(), &member_key(claimer), digest])
}

/// A device's cursor in a thread; the default device's key is the one
/// membership writes, so that it is also every device's starting point.
fn cursor_key(member_key: &[u8], device: &DeviceId, thread: ThreadId) -> Vec<u8> {
    key(CURSOR, &[member_key, thread.0.as_bytes(), device.as_str().as_bytes()])
}

fn key(tag: u8, parts: &[&[u8]]) -> Vec<u8> {
    let mut key = Vec::with_capacity(1 + parts.iter().map(|p| p.len()).sum::<usize>());
    key.push(tag);
    for part in parts {
        key.extend_from_slice(part);
    }
    key
}

fn blob_key(thread: ThreadId, blob: BlobId) -> Vec<u8> {
    key(BLOB, &[thread.0.as_bytes(), blob.0.as_bytes()])
}

/// The index keys of an audit entry: its case, or when it names none, the
/// organisations of its actor and of whom it acted for.
fn audit_index_keys(entry: &AuditEntry) -> Vec<Vec<u8>> {
    let seq = entry.seq.to_be_bytes();
    let record = &entry.record;
    if let Some(case) = record.case {
        return vec![key(AUDIT_OF_CASE, &[case.0.as_bytes(), &seq])];
    }
    let mut oins: Vec<&Oin> = crate::audit::indexed_organisations(record).collect();
    oins.dedup();
    oins.into_iter().map(|oin| key(AUDIT_OF_ORGANISATION, &[oin.as_str().as_bytes(), &seq])).collect()
}

/// An audit entry as stored: a layout byte, seq, prev hash and hash, the tree
/// nodes that end at its leaf (a count of levels, then 32 bytes per level), and
/// the record's CBOR as it is hashed. Keeping the hashed bytes as they are lets
/// verification hash them without decoding the record. The nodes ride in the
/// entry because every append completes at least its leaf: a key of their own
/// was one more insert on the path of every message.
fn encode_audit(entry: &AuditEntry, record: &[u8], levels: &[u8]) -> Result<Vec<u8>, StoreError> {
    let count =
        u8::try_from(levels.len() / 32).map_err(|_| StoreError::Corrupt("an audit tree over 255 levels".into()))?;
    let mut value = Vec::with_capacity(AUDIT_HEADER + 1 + levels.len() + record.len());
    value.push(AUDIT_LAYOUT);
    value.extend_from_slice(&entry.seq.to_be_bytes());
    value.extend_from_slice(&entry.prev_hash);
    value.extend_from_slice(&entry.hash);
    value.push(count);
    value.extend_from_slice(levels);
    value.extend_from_slice(record);
    Ok(value)
}

/// A stored audit entry's parts.
struct AuditParts<'a> {
    seq: u64,
    prev: Hash,
    hash: Hash,
    /// The tree nodes that end at its leaf, 32 bytes per level; empty in the layout before.
    levels: &'a [u8],
    /// The record's CBOR.
    record: &'a [u8],
}

/// The parts of a stored audit entry; `None` for the first layout (a CBOR entry).
fn split_audit(value: &[u8]) -> Result<Option<AuditParts<'_>>, StoreError> {
    let layout = value.first().copied();
    if layout != Some(AUDIT_LAYOUT) && layout != Some(AUDIT_LAYOUT_BEFORE) {
        return Ok(None);
    }
    let short = || StoreError::Corrupt("short audit entry".into());
    let header = value.get(1..AUDIT_HEADER).ok_or_else(short)?;
    let seq = seq_from(&header[..8])?;
    let prev: Hash = header[8..40].try_into().map_err(|_| short())?;
    let hash: Hash = header[40..72].try_into().map_err(|_| short())?;
    let (levels, record) = if layout == Some(AUDIT_LAYOUT) {
        let count = usize::from(*value.get(AUDIT_HEADER).ok_or_else(short)?);
        let end = AUDIT_HEADER + 1 + count * 32;
        (value.get(AUDIT_HEADER + 1..end).ok_or_else(short)?, &value[end..])
    } else {
        (&[][..], &value[AUDIT_HEADER..])
    };
    Ok(Some(AuditParts { seq, prev, hash, levels, record }))
}

fn decode_audit(value: &[u8]) -> Result<AuditEntry, StoreError> {
    match split_audit(value)? {
        Some(p) => Ok(AuditEntry { seq: p.seq, prev_hash: p.prev, hash: p.hash, record: decode(p.record)? }),
        None => decode(value),
    }
}

/// The node of `level` in a value of nodes (32 bytes per level), if it holds that level.
fn level_in(levels: &[u8], level: u8) -> Result<Option<Hash>, StoreError> {
    let at = usize::from(level) * 32;
    levels.get(at..at + 32).map(node_hash).transpose()
}

/// The key of the nodes an append completes: the last leaf they all share.
/// Keys so sort in the order of appends, as entries do.
fn nodes_key(last_leaf: u64) -> Vec<u8> {
    key(AUDIT_NODE, &[&last_leaf.to_be_bytes()])
}

/// The last leaf of the perfect subtree `index` of `level`.
fn last_leaf(level: u8, index: u64) -> u64 {
    // Saturating: no tree the hub can hold reaches it, and a reader asking past the end finds nothing.
    let span = 1u64.checked_shl(u32::from(level));
    span.and_then(|span| index.checked_add(1)?.checked_mul(span)).map_or(u64::MAX, |end| end - 1)
}

/// The layout before, one key per node: its last leaf, then its level.
fn is_node_key_before(key: &[u8]) -> bool {
    key.len() == 1 + 8 + 1 && key[0] == AUDIT_NODE
}

/// Nodes, given by last leaf, level and hash, grouped by the last leaf they
/// are stored under: each value holds a hash per level from 0 up, the levels of one append being
/// 0 to its height (a level not given stays zero, which no reader asks for).
fn node_values(nodes: impl IntoIterator<Item = (u64, u8, Hash)>) -> BTreeMap<u64, Vec<u8>> {
    let mut values: BTreeMap<u64, Vec<u8>> = BTreeMap::new();
    for (leaf, level, hash) in nodes {
        let value = values.entry(leaf).or_default();
        let at = usize::from(level) * 32;
        if value.len() < at + 32 {
            value.resize(at + 32, 0);
        }
        value[at..at + 32].copy_from_slice(&hash);
    }
    values
}

fn node_hash(bytes: &[u8]) -> Result<Hash, StoreError> {
    Hash::try_from(bytes).map_err(|_| StoreError::Corrupt("audit tree node is not 32 bytes".into()))
}

fn seq_from(bytes: &[u8]) -> Result<u64, StoreError> {
    let array: [u8; 8] = bytes.try_into().map_err(|_| StoreError::Corrupt("seq is not 8 bytes".into()))?;
    Ok(u64::from_be_bytes(array))
}

/// The highest KeyPackage id stored, of any member: a key ends with it.
fn last_package_id(db: &Engine) -> Result<Option<u64>, StoreError> {
    let mut last = None;
    for key in db.scan_prefix([KEY_PACKAGE]).keys() {
        let key = key?;
        let id = seq_from(&key[key.len().saturating_sub(8)..])?;
        last = last.max(Some(id));
    }
    Ok(last)
}

fn uuid_from(bytes: &[u8]) -> Result<Uuid, StoreError> {
    Uuid::from_slice(bytes).map_err(|e| StoreError::Corrupt(e.to_string()))
}

impl KvStore {
    /// Whether `dir` holds a store (an engine's files), for commands that
    /// must read an existing store and never create one.
    pub fn exists(dir: &Path) -> bool {
        engine::existing(dir).is_some()
    }

    /// Opens (or creates) the store in `dir` with the default settings.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        Self::open_with(dir, &EngineSettings::default())
    }

    /// Opens (or creates) the store in `dir`, owner-only: `dir` is created (or
    /// narrowed to) 0700 before the engine writes anything into it, so no other user
    /// can open the files it creates, and the files already there (the engines make
    /// them with the default mode, an older hub left them so) are narrowed to 0600.
    pub fn open_with(dir: &Path, settings: &EngineSettings) -> Result<Self, StoreError> {
        let private = |e: std::io::Error| StoreError::Backend(format!("store directory {}: {e}", dir.display()));
        let db = Engine::open(dir, settings)?.remembering_presence_of(CHECKED_ON_EVERY_MESSAGE);
        certs::private::narrow_tree(dir).map_err(private)?;
        let chunks = ChunkFiles::open(&dir.join("attachments"))?;
        let next_package = match last_package_id(&db)? {
            None => 0,
            Some(last) => {
                last.checked_add(1).ok_or_else(|| StoreError::Corrupt("a KeyPackage id at the end of u64".into()))?
            }
        };
        let next_package = AtomicU64::new(next_package);
        let store = Self {
            db,
            next_package,
            chunks,
            logs: Mutex::new(HashMap::new()),
            dirty: Mutex::new(HashSet::new()),
            creating: Mutex::new(()),
        };
        store.build_indexes()?;
        store.build_tree()?;
        Ok(store)
    }

    /// Writes the offer and audit indexes of a store that predates them, and
    /// regroups the tree nodes of one that stored a key per node.
    fn build_indexes(&self) -> Result<(), StoreError> {
        let version = self.db.get([INDEX_VERSION])?.and_then(|v| v.first().copied());
        if version == Some(INDEXES) {
            return Ok(());
        }
        if version != Some(INDEXED) {
            self.write_indexes()?;
        }
        self.regroup_nodes()?;
        self.db.insert([INDEX_VERSION], &[INDEXES][..])?;
        self.db.flush()?;
        Ok(())
    }

    /// The offer and audit indexes, written from the entries and ownerships.
    fn write_indexes(&self) -> Result<(), StoreError> {
        for item in self.db.scan_prefix([AUDIT]) {
            let entry = decode_audit(&item?.1)?;
            for index in audit_index_keys(&entry) {
                self.db.insert(index, &[][..])?;
            }
        }
        for (thread, ownership) in self.ownerships()? {
            for offer in &ownership.offers {
                for oin in [&offer.to, &offer.from.oin] {
                    self.db.insert(key(OFFERS_OF, &[oin.as_str().as_bytes(), thread.0.as_bytes()]), &[][..])?;
                }
            }
        }
        Ok(())
    }

    /// Writes the audit Merkle tree of a store that predates it, and drops its old checkpoints (signatures
    /// over chain hashes, which no verifier checks any more; the next head signs the tree).
    fn build_tree(&self) -> Result<(), StoreError> {
        let Some((last, _)) = self.last_audit()? else { return Ok(()) };
        let leaf = leaf_of(last)?;
        if self.audit_node(0, leaf)?.is_some() {
            return Ok(());
        }
        let mut tree = wire::merkle::CompactRange::new();
        for item in self.db.scan_prefix([AUDIT]) {
            let entry = decode_audit(&item?.1)?;
            if entry.seq != tree.size() + 1 {
                return Err(StoreError::Corrupt(format!(
                    "the audit log starts at entry {} and has no Merkle tree: a pruned log from before the tree cannot be rebuilt",
                    entry.seq
                )));
            }
            self.put_nodes(&tree.append(wire::merkle::leaf_hash(&entry.hash)))?;
        }
        for item in self.db.scan_prefix([CHECKPOINT]) {
            self.db.remove(item?.0)?;
        }
        self.db.remove([LATEST_HEAD])?;
        self.db.flush()?;
        Ok(())
    }

    /// Stores nodes as `H` values, one per last leaf: the tree rebuilt for a
    /// store from before the tree, whose entries are not rewritten.
    fn put_nodes(&self, nodes: &[Node]) -> Result<(), StoreError> {
        for (leaf, value) in node_values(nodes.iter().map(|n| (last_leaf(n.level, n.index), n.level, n.hash))) {
            self.db.insert(nodes_key(leaf), value)?;
        }
        Ok(())
    }

    /// Rewrites the tree nodes of the layout before (a key per node) as a
    /// value per append. Each append's nodes are written before the keys they
    /// replace are removed, so a crash midway leaves keys the next opening
    /// rewrites again, to the same value.
    fn regroup_nodes(&self) -> Result<(), StoreError> {
        let mut before = Vec::new();
        for item in self.db.scan_prefix([AUDIT_NODE]) {
            let (key, value) = item?;
            if is_node_key_before(&key) {
                before.push((seq_from(&key[1..9])?, key[9], node_hash(&value)?, key));
            }
        }
        for (leaf, value) in node_values(before.iter().map(|(leaf, level, hash, _)| (*leaf, *level, *hash))) {
            self.db.insert(nodes_key(leaf), value)?;
        }
        for (_, _, _, key) in before {
            self.db.remove(key)?;
        }
        Ok(())
    }

    fn entry_key(thread: ThreadId, seq: u64) -> Vec<u8> {
        key(ENTRY, &[thread.0.as_bytes(), &seq.to_be_bytes()])
    }

    /// The message id stored at `seq`, if there is an entry there.
    fn entry_id(&self, thread: ThreadId, seq: u64) -> Result<Option<MessageId>, StoreError> {
        match self.db.get(Self::entry_key(thread, seq))? {
            Some(bytes) => Ok(Some(decode::<Entry>(&bytes)?.id)),
            None => Ok(None),
        }
    }

    /// The in-memory log position of a thread, loaded from disk on first use.
    fn log(&self, thread: ThreadId) -> Result<Arc<Mutex<ThreadLog>>, StoreError> {
        if let Some(log) = lock(&self.logs).get(&thread) {
            return Ok(log.clone());
        }
        let Some(record) = self.db.get(key(THREAD, &[thread.0.as_bytes()]))? else {
            return Err(StoreError::NoSuchThread);
        };
        let record: ThreadRecord = decode(&record)?;
        let (case, inbox) = (record.side.map(|s| s.case), record.inbox);
        let last = match self.db.scan_prefix(key(ENTRY, &[thread.0.as_bytes()])).next_back() {
            Some(item) => {
                let (k, _) = item?;
                seq_from(&k[17..])?
            }
            None => 0,
        };
        let mut logs = lock(&self.logs);
        let log = logs
            .entry(thread)
            .or_insert_with(|| Arc::new(Mutex::new(ThreadLog { next_seq: last + 1, durable_seq: last, case, inbox })));
        Ok(log.clone())
    }

    /// Appends one entry under the thread's lock. `prepare` sees the seq the
    /// entry would get and either returns an earlier seq (a duplicate; nothing
    /// is written) or adds its own keys to the batch that also writes the entry.
    fn append(
        &self,
        thread: ThreadId,
        prepare: impl FnOnce(u64, &mut Batch) -> Result<Option<u64>, StoreError>,
        entry: impl FnOnce(u64) -> Entry,
    ) -> Result<Appended, StoreError> {
        let log = self.log(thread)?;
        let mut log = lock(&log);
        let seq = log.next_seq;
        let mut batch = Batch::default();
        if let Some(existing) = prepare(seq, &mut batch)? {
            return Ok(Appended { seq: existing, entry: None });
        }
        let entry = entry(seq);
        batch.insert(Self::entry_key(thread, seq), encode(&entry));
        self.db.apply(batch)?;
        log.next_seq = seq + 1;
        lock(&self.dirty).insert(thread);
        Ok(Appended { seq, entry: Some(entry) })
    }

    /// Opens a membership interval. A member that comes back keeps the cursor
    /// of its earlier interval, so whatever of that interval it had not
    /// acknowledged is still delivered; delivery skips the entries in between.
    fn membership_writes(
        &self,
        batch: &mut Batch,
        thread: ThreadId,
        member: &MemberId,
        record: &MembershipRecord,
    ) -> Result<(), StoreError> {
        let mk = member_key(member);
        batch.insert(key(MEMBER, &[thread.0.as_bytes(), &mk]), encode(record));
        batch.insert(key(MEMBER_THREAD, &[&mk, thread.0.as_bytes()]), &[][..]);
        let cursor = cursor_key(&mk, &DeviceId::default(), thread);
        if !self.db.contains_key(&cursor)? {
            batch.insert(cursor, &(record.added_seq - 1).to_be_bytes()[..]);
        }
        Ok(())
    }

    /// Ends `member`'s open interval at `until` (the seq of its
    /// `member_removed` entry); false when it is not a member.
    fn end_membership(
        &self,
        batch: &mut Batch,
        thread: ThreadId,
        member: &MemberId,
        until: u64,
    ) -> Result<bool, StoreError> {
        let mk = member_key(member);
        let record_key = key(MEMBER, &[thread.0.as_bytes(), &mk]);
        let Some(record) = self.db.get(&record_key)? else { return Ok(false) };
        let record: MembershipRecord = decode(&record)?;
        batch.remove(record_key);
        batch.remove(key(MEMBER_THREAD, &[&mk, thread.0.as_bytes()]));
        batch.insert(
            key(FORMER, &[&mk, thread.0.as_bytes(), &record.added_seq.to_be_bytes()]),
            &until.to_be_bytes()[..],
        );
        Ok(true)
    }

    /// The logs of the threads a write appends to beside its own.
    fn logs_of(&self, beside: &BesideMap<'_>) -> Result<Vec<Arc<Mutex<ThreadLog>>>, StoreError> {
        beside.keys().map(|t| self.log(*t)).collect()
    }

    /// Adds to `batch` what a write about `case` by `by` appends beside its own
    /// thread, each of those logs locked (as the write's own is) until the batch
    /// is applied; returns the locks with each log's next seq, and the entries.
    fn write_beside<'l>(
        &self,
        batch: &mut Batch,
        logs: &'l [Arc<Mutex<ThreadLog>>],
        beside: &BesideMap<'_>,
        (case, by, at_ms): (ThreadId, &MemberId, u64),
    ) -> Result<(Held<'l>, Vec<(ThreadId, Entry)>), StoreError> {
        let mut held = Vec::new();
        let mut appended = Vec::new();
        for (other_log, (other, items)) in logs.iter().zip(beside) {
            let guard = lock(other_log);
            let mut seq = guard.next_seq;
            for item in items {
                let body = match item {
                    Beside::Evict(member) if self.end_membership(batch, *other, member, seq)? => {
                        EntryBody::MemberRemoved { member: (*member).clone() }
                    }
                    Beside::Evict(_) => continue,
                    Beside::Notice(notice) => EntryBody::Notice { case, notice: (*notice).clone() },
                };
                let entry = Entry { seq, id: MessageId::new(), sender: by.clone(), at_ms, body };
                batch.insert(Self::entry_key(*other, seq), encode(&entry));
                appended.push((*other, entry));
                seq += 1;
            }
            held.push((guard, seq));
        }
        Ok((held, appended))
    }

    /// After the batch is applied: the logs beside `thread` move on, and all are to be flushed.
    fn released(&self, held: Held<'_>, thread: ThreadId, beside: &BesideMap<'_>) {
        for (mut guard, next_seq) in held {
            guard.next_seq = next_seq;
        }
        let mut dirty = lock(&self.dirty);
        dirty.insert(thread);
        dirty.extend(beside.keys().copied());
    }

    /// Creates a thread, or a side thread of `side.case`; see [`Store::create_thread`].
    fn create(
        &self,
        creator: &MemberId,
        client_ref: Uuid,
        side: Option<&wire::SideThread>,
        at_ms: u64,
    ) -> Result<Created, StoreError> {
        let _one_at_a_time = lock(&self.creating);
        if let Some(thread) = self.created_by_ref(creator, client_ref)? {
            return Ok(Created { thread, entry: None });
        }
        let thread = ThreadId::random();
        let record = MembershipRecord { added_by: creator.clone(), added_seq: 1, added_at_ms: at_ms };
        let entry = Entry {
            seq: 1,
            id: MessageId::new(),
            sender: creator.clone(),
            at_ms,
            body: EntryBody::MemberAdded { member: creator.clone() },
        };
        let mut batch = Batch::default();
        let side = side.cloned();
        let case = side.as_ref().map(|s| s.case);
        batch.insert(
            key(THREAD, &[thread.0.as_bytes()]),
            encode(&ThreadRecord { creator: creator.clone(), created_at_ms: at_ms, side, inbox: false }),
        );
        self.membership_writes(&mut batch, thread, creator, &record)?;
        batch.insert(Self::entry_key(thread, 1), encode(&entry));
        batch.insert(key(CREATE_REF, &[&member_key(creator), client_ref.as_bytes()]), &thread.0.as_bytes()[..]);
        match case {
            // A side thread answers for ownership to its case.
            Some(case) => batch.insert(key(SIDE, &[case.0.as_bytes(), thread.0.as_bytes()]), &[][..]),
            // The creator holds regie from the first moment: a case is never without an owner.
            None => batch.insert(
                key(OWNERSHIP, &[thread.0.as_bytes()]),
                encode(&wire::handover::Ownership::new(creator.clone())),
            ),
        }
        self.db.apply(batch)?;
        let log = ThreadLog { next_seq: 2, durable_seq: 0, case, inbox: false };
        lock(&self.logs).insert(thread, Arc::new(Mutex::new(log)));
        lock(&self.dirty).insert(thread);
        Ok(Created { thread, entry: Some(entry) })
    }

    /// The threads named by the keys under `prefix`, whose thread id sits
    /// `tail` bytes before the end of each key.
    fn threads_under(&self, prefix: &[u8], tail: usize) -> Result<HashSet<ThreadId>, StoreError> {
        self.db
            .scan_prefix(prefix)
            .keys()
            .map(|k| {
                let k = k?;
                let end = k.len().checked_sub(tail).ok_or_else(|| StoreError::Corrupt("short key".into()))?;
                let start = end.checked_sub(16).ok_or_else(|| StoreError::Corrupt("short key".into()))?;
                Ok(ThreadId(uuid_from(&k[start..end])?))
            })
            .collect()
    }
}

/// Entries read and hashed per step of [`audit_links`]'s reading thread.
const LINK_BATCH: usize = 1024;

/// Reads the audit entries on two threads, taking turns at chunks of [`LINK_BATCH`] seqs, which hash each
/// record's stored CBOR (decoding only retention entries, whose record the verifier reads), the entry and its
/// leaf; this thread takes the chunks in order, alternately from each, and is left only the tree's inner
/// nodes and the links between entries. Verification then runs on both cores instead of one.
fn audit_links(db: &Engine, visit: &mut dyn FnMut(Link, Option<AuditRecord>) -> bool) -> Result<(), StoreError> {
    type Batch = Vec<(Link, Option<AuditRecord>)>;
    const READERS: u64 = 2;
    let seq_of = |item: Option<engine::Item>| -> Result<Option<u64>, StoreError> {
        item.map(|item| seq_from(item?.0.get(1..9).unwrap_or_default())).transpose()
    };
    let (Some(low), Some(high)) =
        (seq_of(db.scan_prefix([AUDIT]).next())?, seq_of(db.scan_prefix([AUDIT]).next_back())?)
    else {
        return Ok(());
    };
    let step = LINK_BATCH as u64;
    let chunks = (high - low) / step + 1;
    std::thread::scope(|scope| {
        let mut channels = Vec::new();
        for reader in 0..READERS {
            let (batches, received) = std::sync::mpsc::sync_channel::<Result<Batch, StoreError>>(8);
            channels.push(received);
            scope.spawn(move || {
                for chunk in (reader..chunks).step_by(READERS as usize) {
                    let from = low + chunk * step;
                    let range =
                        key(AUDIT, &[&from.to_be_bytes()])..key(AUDIT, &[&from.saturating_add(step).to_be_bytes()]);
                    let batch: Result<Batch, StoreError> =
                        db.range(range).map(|item| item.and_then(|(_, value)| link_of(&value))).collect();
                    let failed = batch.is_err();
                    // A closed channel means the verifier stopped: nothing more to read.
                    if batches.send(batch).is_err() || failed {
                        return;
                    }
                }
            });
        }
        let result = (|| {
            for chunk in 0..chunks {
                let Ok(batch) = channels[(chunk % READERS) as usize].recv() else { break };
                for (link, record) in batch? {
                    if !visit(link, record) {
                        return Ok(());
                    }
                }
            }
            Ok(())
        })();
        // Dropping the receivers ends the readers at their next send; the scope joins them.
        drop(channels);
        result
    })
}

/// The link of one stored entry, hashing the record's CBOR as stored.
fn link_of(value: &[u8]) -> Result<(Link, Option<AuditRecord>), StoreError> {
    match split_audit(value)? {
        Some(AuditParts { seq, prev: prev_hash, hash, record, .. }) => {
            let digest = sha256(record);
            // Every retention record's CBOR holds its action's name; decoding only those keeps the rest cheap.
            let retention = record.windows(RETENTION.len()).any(|w| w == RETENTION);
            let decoded = if retention { Some(decode::<AuditRecord>(record)?) } else { None };
            Ok((Link::new(seq, prev_hash, Some(hash), &digest), decoded))
        }
        None => {
            let entry: AuditEntry = decode(value)?;
            let digest = wire::audit::record_digest(&entry.record);
            let link = Link::new(entry.seq, entry.prev_hash, Some(entry.hash), &digest);
            Ok((link, Some(entry.record)))
        }
    }
}

const RETENTION: &[u8] = b"retention";

fn sha256(bytes: &[u8]) -> Hash {
    let mut out = [0u8; 32];
    // SHA-256 digests are 32 bytes by definition.
    out.copy_from_slice(ring::digest::digest(&ring::digest::SHA256, bytes).as_ref());
    out
}

impl Store for KvStore {
    fn create_thread(&self, creator: &MemberId, client_ref: Uuid, at_ms: u64) -> Result<Created, StoreError> {
        self.create(creator, client_ref, None, at_ms)
    }

    fn create_side_thread(
        &self,
        side: &wire::SideThread,
        creator: &MemberId,
        client_ref: Uuid,
        at_ms: u64,
    ) -> Result<Created, StoreError> {
        self.create(creator, client_ref, Some(side), at_ms)
    }

    fn created_by_ref(&self, creator: &MemberId, client_ref: Uuid) -> Result<Option<ThreadId>, StoreError> {
        let found = self.db.get(key(CREATE_REF, &[&member_key(creator), client_ref.as_bytes()]))?;
        found.map(|t| uuid_from(&t).map(ThreadId)).transpose()
    }

    fn side(&self, thread: ThreadId) -> Result<Option<wire::SideThread>, StoreError> {
        match self.db.get(key(THREAD, &[thread.0.as_bytes()]))? {
            Some(record) => Ok(decode::<ThreadRecord>(&record)?.side),
            None => Ok(None),
        }
    }

    fn case_of(&self, thread: ThreadId) -> Result<ThreadId, StoreError> {
        match self.log(thread) {
            Ok(log) => Ok(lock(&log).case.unwrap_or(thread)),
            Err(StoreError::NoSuchThread) => Ok(thread),
            Err(e) => Err(e),
        }
    }

    fn ensure_inbox(&self, oin: &Oin, at_ms: u64) -> Result<ThreadId, StoreError> {
        let thread = ThreadId::inbox_of(oin);
        let _one_at_a_time = lock(&self.creating);
        let record_key = key(THREAD, &[thread.0.as_bytes()]);
        if !self.db.contains_key(&record_key)? {
            // The hub writes it; no one creates it, and it has no owner.
            let creator = MemberId { oin: oin.clone(), worker: super::INBOX_WRITER.to_owned() };
            let record = ThreadRecord { creator, created_at_ms: at_ms, side: None, inbox: true };
            self.db.insert(record_key, encode(&record))?;
        }
        Ok(thread)
    }

    fn is_inbox(&self, thread: ThreadId) -> Result<bool, StoreError> {
        match self.log(thread) {
            Ok(log) => Ok(lock(&log).inbox),
            Err(StoreError::NoSuchThread) => Ok(false),
            Err(e) => Err(e),
        }
    }

    fn remove_members(
        &self,
        thread: ThreadId,
        by: &MemberId,
        members: &[MemberId],
        at_ms: u64,
    ) -> Result<Vec<Entry>, StoreError> {
        let log = self.log(thread)?;
        let mut log = lock(&log);
        let mut batch = Batch::default();
        let mut removed = Vec::new();
        for member in members {
            let seq = log.next_seq + removed.len() as u64;
            if self.end_membership(&mut batch, thread, member, seq)? {
                let body = EntryBody::MemberRemoved { member: member.clone() };
                let entry = Entry { seq, id: MessageId::new(), sender: by.clone(), at_ms, body };
                batch.insert(Self::entry_key(thread, seq), encode(&entry));
                removed.push(entry);
            }
        }
        self.db.apply(batch)?;
        log.next_seq += removed.len() as u64;
        lock(&self.dirty).insert(thread);
        Ok(removed)
    }

    fn side_threads(&self, case: ThreadId) -> Result<Vec<ThreadId>, StoreError> {
        Ok(self.threads_under(&key(SIDE, &[case.0.as_bytes()]), 0)?.into_iter().collect())
    }

    fn add_member(
        &self,
        thread: ThreadId,
        by: &MemberId,
        member: &MemberId,
        at_ms: u64,
    ) -> Result<Appended, StoreError> {
        let member_record_key = key(MEMBER, &[thread.0.as_bytes(), &member_key(member)]);
        self.append(
            thread,
            |seq, batch| {
                if let Some(existing) = self.db.get(&member_record_key)? {
                    return Ok(Some(decode::<MembershipRecord>(&existing)?.added_seq));
                }
                let record = MembershipRecord { added_by: by.clone(), added_seq: seq, added_at_ms: at_ms };
                self.membership_writes(batch, thread, member, &record)?;
                Ok(None)
            },
            |seq| Entry {
                seq,
                id: MessageId::new(),
                sender: by.clone(),
                at_ms,
                body: EntryBody::MemberAdded { member: member.clone() },
            },
        )
    }

    fn append_message(
        &self,
        thread: ThreadId,
        sender: &MemberId,
        id: MessageId,
        payload: &[u8],
        at_ms: u64,
    ) -> Result<Appended, StoreError> {
        let log = self.log(thread)?;
        let mut log = lock(&log);
        let dedup_key = key(DEDUP, &[thread.0.as_bytes(), id.0.as_bytes()]);
        if let Some(existing) = self.db.get(&dedup_key)? {
            let seq = seq_from(&existing)?;
            if self.entry_id(thread, seq)? == Some(id) {
                return Ok(Appended { seq, entry: None });
            }
            // The key outlived its entry (lost in a crash before a flush): the id is free.
        }
        let seq = log.next_seq;
        let entry =
            Entry { seq, id, sender: sender.clone(), at_ms, body: EntryBody::Message { payload: payload.to_vec() } };
        // Two single inserts rather than one batch: sled batches cost several
        // times more. The de-duplication key goes first, so a crash can leave a
        // key without its entry (checked above) but never an entry without its key.
        self.db.insert(dedup_key, &seq.to_be_bytes()[..])?;
        self.db.insert(Self::entry_key(thread, seq), encode(&entry))?;
        log.next_seq = seq + 1;
        lock(&self.dirty).insert(thread);
        Ok(Appended { seq, entry: Some(entry) })
    }

    fn is_member(&self, thread: ThreadId, member: &MemberId) -> Result<bool, StoreError> {
        self.db.contains_key(key(MEMBER, &[thread.0.as_bytes(), &member_key(member)]))
    }

    fn members(&self, thread: ThreadId) -> Result<Vec<MemberId>, StoreError> {
        self.db
            .scan_prefix(key(MEMBER, &[thread.0.as_bytes()]))
            .map(|item| {
                let (k, _) = item?;
                let mk = &k[17..];
                let (oin, rest) = mk.split_at(20.min(mk.len()));
                let worker = rest.get(1..).ok_or_else(|| StoreError::Corrupt("member key too short".into()))?;
                let oin = std::str::from_utf8(oin).map_err(|e| StoreError::Corrupt(e.to_string()))?;
                let worker = std::str::from_utf8(worker).map_err(|e| StoreError::Corrupt(e.to_string()))?;
                MemberId::new(oin, worker).map_err(|e| StoreError::Corrupt(e.to_string()))
            })
            .collect()
    }

    fn threads_of(&self, member: &MemberId) -> Result<Vec<ThreadId>, StoreError> {
        let prefix = key(MEMBER_THREAD, &[&member_key(member)]);
        self.db
            .scan_prefix(&prefix)
            .map(|item| {
                let (k, _) = item?;
                Ok(ThreadId(uuid_from(&k[prefix.len()..])?))
            })
            .collect()
    }

    fn intervals(&self, thread: ThreadId, member: &MemberId) -> Result<Vec<Interval>, StoreError> {
        let mk = member_key(member);
        let mut intervals = self
            .db
            .scan_prefix(key(FORMER, &[&mk, thread.0.as_bytes()]))
            .map(|item| {
                let (k, v) = item?;
                let from = seq_from(k.get(k.len().saturating_sub(8)..).unwrap_or_default())?;
                Ok(Interval { from, until: Some(seq_from(&v)?) })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        if let Some(open) = self.db.get(key(MEMBER, &[thread.0.as_bytes(), &mk]))? {
            intervals.push(Interval { from: decode::<MembershipRecord>(&open)?.added_seq, until: None });
        }
        Ok(intervals)
    }

    fn former_threads(&self, member: &MemberId) -> Result<Vec<ThreadId>, StoreError> {
        let former = self.threads_under(&key(FORMER, &[&member_key(member)]), 8)?;
        Ok(former.into_iter().collect())
    }

    fn organisation_cases(&self, oin: &Oin) -> Result<HashSet<ThreadId>, StoreError> {
        // Member keys begin with the OIN, so one prefix covers the organisation's people.
        let mut cases = self.threads_under(&key(MEMBER_THREAD, &[oin.as_str().as_bytes()]), 0)?;
        cases.extend(self.threads_under(&key(FORMER, &[oin.as_str().as_bytes()]), 8)?);
        Ok(cases)
    }

    fn entries_after(&self, thread: ThreadId, after: u64, limit: usize) -> Result<Vec<Entry>, StoreError> {
        let log = self.log(thread)?;
        let durable = lock(&log).durable_seq;
        if after >= durable || limit == 0 {
            return Ok(Vec::new());
        }
        self.db
            .range(Self::entry_key(thread, after + 1)..=Self::entry_key(thread, durable))
            .take(limit)
            .map(|item| decode(&item?.1))
            .collect()
    }

    fn last_seq(&self, thread: ThreadId) -> Result<u64, StoreError> {
        match self.log(thread) {
            Ok(log) => Ok(lock(&log).durable_seq),
            Err(StoreError::NoSuchThread) => Ok(0),
            Err(e) => Err(e),
        }
    }

    fn cursor(&self, member: &MemberId, device: &DeviceId, thread: ThreadId) -> Result<u64, StoreError> {
        let mk = member_key(member);
        let own = self.db.get(cursor_key(&mk, device, thread))?;
        let found = match own {
            None if !device.is_default() => self.db.get(cursor_key(&mk, &DeviceId::default(), thread))?,
            found => found,
        };
        found.map_or(Ok(0), |v| seq_from(&v))
    }

    fn advance_cursor(
        &self,
        member: &MemberId,
        device: &DeviceId,
        thread: ThreadId,
        seq: u64,
    ) -> Result<(), StoreError> {
        let from = self.cursor(member, device, thread)?;
        self.db.update(cursor_key(&member_key(member), device, thread), |old| {
            let current = old.and_then(|v| v.try_into().ok()).map(u64::from_be_bytes).unwrap_or(from);
            current.max(seq).to_be_bytes().to_vec()
        })
    }

    fn devices(&self, member: &MemberId) -> Result<Vec<(DeviceId, DeviceRecord)>, StoreError> {
        let prefix = key(DEVICE, &[&member_key(member)]);
        self.db
            .scan_prefix(&prefix)
            .map(|item| {
                let (k, v) = item?;
                let id =
                    String::from_utf8(k[prefix.len()..].to_vec()).map_err(|e| StoreError::Corrupt(e.to_string()))?;
                Ok((DeviceId::try_from(id).map_err(StoreError::Corrupt)?, decode(&v)?))
            })
            .collect()
    }

    fn put_device(&self, member: &MemberId, write: &DeviceWrite<'_>) -> Result<(), StoreError> {
        let mk = member_key(member);
        let mut batch = Batch::default();
        batch.insert(key(DEVICE, &[&mk, write.device.as_str().as_bytes()]), encode(&write.record));
        for (thread, seq) in write.starts {
            let start = self.cursor(member, write.device, *thread)?.max(*seq);
            batch.insert(cursor_key(&mk, write.device, *thread), &start.to_be_bytes()[..]);
        }
        if !write.forget.is_empty() {
            let threads: Vec<ThreadId> =
                self.threads_of(member)?.into_iter().chain(self.former_threads(member)?).collect();
            for gone in write.forget.iter().filter(|d| !d.is_default()) {
                batch.remove(key(DEVICE, &[&mk, gone.as_str().as_bytes()]));
                threads.iter().for_each(|t| batch.remove(cursor_key(&mk, gone, *t)));
            }
        }
        self.db.apply(batch)?;
        Ok(())
    }

    fn group_state(&self, thread: ThreadId) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.db.get(key(GROUP, &[thread.0.as_bytes()]))?.map(|v| v.to_vec()))
    }

    fn group_info(&self, thread: ThreadId) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.db.get(key(GROUP_INFO, &[thread.0.as_bytes()]))?.map(|v| v.to_vec()))
    }

    fn init_group(&self, thread: ThreadId, state: &[u8], group_info: &[u8]) -> Result<(), StoreError> {
        let mut batch = Batch::default();
        batch.insert(key(GROUP, &[thread.0.as_bytes()]), state);
        batch.insert(key(GROUP_INFO, &[thread.0.as_bytes()]), group_info);
        self.db.apply(batch)?;
        Ok(())
    }

    fn apply_commit(&self, commit: &AcceptedCommit<'_>) -> Result<Vec<(ThreadId, Entry)>, StoreError> {
        let thread = commit.thread;
        let log = self.log(thread)?;
        let mut log = lock(&log);
        let mut batch = Batch::default();
        let mut entries = Vec::new();
        let mut next = |body: EntryBody| {
            let seq = log.next_seq + entries.len() as u64;
            let entry = Entry { seq, id: MessageId::new(), sender: commit.by.clone(), at_ms: commit.at_ms, body };
            batch.insert(Self::entry_key(thread, seq), encode(&entry));
            entries.push(entry);
            seq
        };
        // The commit first: a removed member's delivery stops at its removal entry,
        // so it still receives the commit that removes it.
        next(EntryBody::Commit { epoch: commit.epoch, commit: commit.commit.to_vec() });
        let mut ended = Vec::new();
        for member in commit.removed {
            ended.push((member, next(EntryBody::MemberRemoved { member: member.clone() })));
        }
        if let Some((to, welcome)) = commit.welcome {
            next(EntryBody::Welcome { to: to.to_vec(), welcome: welcome.to_vec() });
        }
        for (member, until) in ended {
            self.end_membership(&mut batch, thread, member, until)?;
        }
        batch.insert(key(GROUP, &[thread.0.as_bytes()]), commit.state);
        batch.insert(key(GROUP_INFO, &[thread.0.as_bytes()]), commit.group_info);
        for digest in commit.redeemed {
            batch.remove(claim_key(thread, commit.by, digest));
        }
        if let Some(ownership) = commit.ownership {
            batch.insert(key(OWNERSHIP, &[thread.0.as_bytes()]), encode(ownership));
        }
        let beside = beside(commit.evict_sides, &[]);
        let logs = self.logs_of(&beside)?;
        let (held, others) = self.write_beside(&mut batch, &logs, &beside, (thread, commit.by, commit.at_ms))?;
        self.db.apply(batch)?;
        log.next_seq += entries.len() as u64;
        self.released(held, thread, &beside);
        Ok(entries.into_iter().map(|e| (thread, e)).chain(others).collect())
    }

    fn add_key_packages(&self, member: &MemberId, packages: &[Vec<u8>]) -> Result<u64, StoreError> {
        let mk = member_key(member);
        let mut batch = Batch::default();
        for package in packages {
            let id = self.next_package.fetch_add(1, Ordering::Relaxed);
            batch.insert(key(KEY_PACKAGE, &[&mk, &id.to_be_bytes()]), package.as_slice());
        }
        self.db.apply(batch)?;
        self.key_package_stock(member)
    }

    fn claim_key_package(
        &self,
        thread: ThreadId,
        claimer: &MemberId,
        member: &MemberId,
        at_ms: u64,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        let Some(first) = self.db.scan_prefix(key(KEY_PACKAGE, &[&member_key(member)])).next() else {
            return Ok(None);
        };
        let (k, package) = first?;
        let mut batch = Batch::default();
        batch.remove(k);
        let open = key(CLAIM, &[thread.0.as_bytes(), &member_key(claimer)]);
        let mut claims = self
            .db
            .scan_prefix(&open)
            .map(|item| {
                let (k, v) = item?;
                Ok((u64::from_be_bytes(v.as_ref().try_into().unwrap_or_default()), k))
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        claims.sort();
        for (_, oldest) in claims.iter().take((claims.len() + 1).saturating_sub(super::MAX_OPEN_CLAIMS)) {
            batch.remove(oldest.clone());
        }
        let digest = crate::groups::key_package_digest(&package);
        batch.insert(key(CLAIM, &[&open[1..], &digest]), &at_ms.to_be_bytes()[..]);
        self.db.apply(batch)?;
        Ok(Some(package.to_vec()))
    }

    fn holds_claims(&self, thread: ThreadId, claimer: &MemberId, digests: &[[u8; 32]]) -> Result<bool, StoreError> {
        for digest in digests {
            if !self.db.contains_key(claim_key(thread, claimer, digest))? {
                return Ok(false);
            }
        }
        Ok(true)
    }

    fn key_package_stock(&self, member: &MemberId) -> Result<u64, StoreError> {
        Ok(self.db.scan_prefix(key(KEY_PACKAGE, &[&member_key(member)])).count() as u64)
    }

    fn blob(&self, thread: ThreadId, blob: BlobId) -> Result<Option<BlobRecord>, StoreError> {
        self.db.get(blob_key(thread, blob))?.map(|bytes| decode(&bytes)).transpose()
    }

    fn put_blob_chunk(&self, blob: BlobId, record: &BlobRecord, index: u32, data: &[u8]) -> Result<(), StoreError> {
        self.chunks.write(record.thread, blob, index, data)?;
        self.db.insert(blob_key(record.thread, blob), encode(record))?;
        Ok(())
    }

    fn blob_chunk(&self, thread: ThreadId, blob: BlobId, index: u32) -> Result<Option<Vec<u8>>, StoreError> {
        self.chunks.read(thread, blob, index)
    }

    fn ownership(&self, thread: ThreadId) -> Result<Option<wire::handover::Ownership>, StoreError> {
        self.db.get(key(OWNERSHIP, &[thread.0.as_bytes()]))?.map(|v| decode(&v)).transpose()
    }

    fn is_closed(&self, thread: ThreadId) -> Result<bool, StoreError> {
        let case = self.case_of(thread)?;
        self.db.contains_key(key(CLOSED, &[case.0.as_bytes()]))
    }

    fn is_read_only(&self, thread: ThreadId, member: &MemberId) -> Result<bool, StoreError> {
        let case = self.case_of(thread)?;
        self.db.contains_key(key(READ_ONLY, &[case.0.as_bytes(), &member_key(member)]))
    }

    fn ownerships(&self) -> Result<Vec<(ThreadId, wire::handover::Ownership)>, StoreError> {
        self.db
            .scan_prefix([OWNERSHIP])
            .map(|item| {
                let (k, v) = item?;
                Ok((ThreadId(uuid_from(&k[1..])?), decode(&v)?))
            })
            .collect()
    }

    fn farewell(&self, thread: ThreadId, member: &MemberId) -> Result<Option<wire::handover::Ownership>, StoreError> {
        let found = self.db.get(key(FAREWELL, &[thread.0.as_bytes(), &member_key(member)]))?;
        found.map(|v| decode(&v)).transpose()
    }

    fn apply_handover(&self, step: &HandoverStep<'_>) -> Result<Vec<(ThreadId, Entry)>, StoreError> {
        let thread = step.thread;
        let log = self.log(thread)?;
        let mut log = lock(&log);
        let mut batch = Batch::default();
        let mut entries: Vec<Entry> = Vec::new();
        let mut next = |batch: &mut Batch, body: EntryBody| {
            let seq = log.next_seq + entries.len() as u64;
            let entry = Entry { seq, id: MessageId::new(), sender: step.by.clone(), at_ms: step.at_ms, body };
            batch.insert(Self::entry_key(thread, seq), encode(&entry));
            entries.push(entry);
            seq
        };
        for event in &step.events {
            next(&mut batch, EntryBody::Handover { event: event.clone() });
        }
        for member in step.admit {
            if self.db.get(key(MEMBER, &[thread.0.as_bytes(), &member_key(member)]))?.is_none() {
                let seq = next(&mut batch, EntryBody::MemberAdded { member: member.clone() });
                let record = MembershipRecord { added_by: step.by.clone(), added_seq: seq, added_at_ms: step.at_ms };
                self.membership_writes(&mut batch, thread, member, &record)?;
            }
        }
        for member in &step.evict {
            if self.db.contains_key(key(MEMBER, &[thread.0.as_bytes(), &member_key(member)]))? {
                let until = next(&mut batch, EntryBody::MemberRemoved { member: member.clone() });
                self.end_membership(&mut batch, thread, member, until)?;
                batch.insert(key(FAREWELL, &[thread.0.as_bytes(), &member_key(member)]), encode(step.ownership));
            }
        }
        batch.insert(key(OWNERSHIP, &[thread.0.as_bytes()]), encode(step.ownership));
        for offer in &step.ownership.offers {
            for oin in [&offer.to, &offer.from.oin] {
                batch.insert(key(OFFERS_OF, &[oin.as_str().as_bytes(), thread.0.as_bytes()]), &[][..]);
            }
        }
        for stale in self.db.scan_prefix(key(READ_ONLY, &[thread.0.as_bytes()])).keys() {
            batch.remove(stale?);
        }
        let read_only =
            step.ownership.background.iter().map(|b| &b.member).chain(step.ownership.left.iter().map(|(m, _)| m));
        for member in read_only {
            batch.insert(key(READ_ONLY, &[thread.0.as_bytes(), &member_key(member)]), &[][..]);
        }
        match step.ownership.closed() {
            Some(_) => batch.insert(key(CLOSED, &[thread.0.as_bytes()]), &[][..]),
            None => batch.remove(key(CLOSED, &[thread.0.as_bytes()])),
        }
        // Departures from its side threads and notices to inboxes go in the same batch.
        let beside = beside(&step.evict_sides, &step.notices);
        let logs = self.logs_of(&beside)?;
        let (held, others) = self.write_beside(&mut batch, &logs, &beside, (thread, step.by, step.at_ms))?;
        self.db.apply(batch)?;
        log.next_seq += entries.len() as u64;
        self.released(held, thread, &beside);
        Ok(entries.into_iter().map(|e| (thread, e)).chain(others).collect())
    }

    fn threads(&self) -> Result<Vec<ThreadId>, StoreError> {
        self.db.scan_prefix([THREAD]).map(|item| Ok(ThreadId(uuid_from(&item?.0[1..])?))).collect()
    }

    fn expire_messages(&self, thread: ThreadId, up_to: u64, before_ms: u64) -> Result<u64, StoreError> {
        let mut expired = 0;
        let range = Self::entry_key(thread, 1)..=Self::entry_key(thread, up_to.max(1));
        for item in self.db.range(range) {
            let (key, value) = item?;
            let mut entry: Entry = decode(&value)?;
            // A notice copies an offer's or an escalation's metadata into an inbox: it goes like content.
            let delivered_only = matches!(entry.body, EntryBody::Message { .. } | EntryBody::Notice { .. });
            if delivered_only && entry.at_ms < before_ms {
                entry.body = EntryBody::Expired;
                self.db.insert(key, encode(&entry))?;
                expired += 1;
            }
        }
        Ok(expired)
    }

    fn thread_blobs(&self, thread: ThreadId) -> Result<Vec<(BlobId, BlobRecord)>, StoreError> {
        self.db
            .scan_prefix(key(BLOB, &[thread.0.as_bytes()]))
            .map(|item| {
                let (key, value) = item?;
                let blob = key.get(17..).ok_or_else(|| StoreError::Corrupt("short blob key".into()))?;
                Ok((BlobId(uuid_from(blob)?), decode(&value)?))
            })
            .collect()
    }

    fn blobs(&self) -> Result<Vec<(BlobId, BlobRecord)>, StoreError> {
        self.db
            .scan_prefix([BLOB])
            .map(|item| {
                let (key, value) = item?;
                let blob = key.get(17..).ok_or_else(|| StoreError::Corrupt("short blob key".into()))?;
                Ok((BlobId(uuid_from(blob)?), decode(&value)?))
            })
            .collect()
    }

    fn delete_blob(&self, thread: ThreadId, blob: BlobId) -> Result<(), StoreError> {
        self.chunks.remove(thread, blob)?;
        self.db.remove(blob_key(thread, blob))?;
        Ok(())
    }

    fn prune_audit(&self, before_ms: u64) -> Result<(u64, u64), StoreError> {
        let mut pruned = 0;
        let mut last_pruned = 0;
        for item in self.db.scan_prefix([AUDIT]) {
            let (key, value) = item?;
            let entry = decode_audit(&value)?;
            if entry.record.at_ms >= before_ms {
                break;
            }
            if key.get(1..).map(seq_from).transpose()? != Some(entry.seq) {
                return Err(StoreError::Corrupt(format!("the audit entry stored at {key:?} says {}", entry.seq)));
            }
            // The tree's nodes outlive the entry: they move to a key of their own before it goes.
            if let Some(parts) = split_audit(&value)?.filter(|p| !p.levels.is_empty()) {
                self.db.insert(nodes_key(leaf_of(parts.seq)?), parts.levels)?;
            }
            self.db.remove(key)?;
            for index in audit_index_keys(&entry) {
                self.db.remove(index)?;
            }
            pruned += 1;
            last_pruned = entry.seq;
        }
        // Heads over only pruned entries can no longer be checked against entries; the tree prefix replaces them.
        let covered = key(CHECKPOINT, &[&0u64.to_be_bytes()])..key(CHECKPOINT, &[&last_pruned.to_be_bytes()]);
        for item in self.db.range(covered) {
            self.db.remove(item?.0)?;
        }
        Ok((pruned, if pruned == 0 { 0 } else { last_pruned + 1 }))
    }

    fn append_audit(&self, sealed: &Sealed) -> Result<(), StoreError> {
        let Sealed { entry, record_cbor, nodes } = sealed;
        // The index keys come from the record and the stored bytes are what was hashed: they must agree.
        debug_assert_eq!(record_cbor, &encode(&entry.record), "a sealed entry whose bytes are not its record's");
        // Plain inserts, the entry last: a sled batch costs several times its
        // inserts and takes sled's global lock, on the path of every message.
        // Both engines recover a prefix of the inserts, so a crash keeps the entry
        // only with its index keys.
        let leaf = leaf_of(entry.seq)?;
        let mut values = node_values(nodes.iter().map(|n| (last_leaf(n.level, n.index), n.level, n.hash)));
        let levels = values.remove(&leaf).unwrap_or_default();
        // Every node an append completes ends at its own leaf; any other would be a caller's
        // mistake, and is still kept where a reader finds it.
        for (other, value) in values {
            self.db.insert(nodes_key(other), value)?;
        }
        for index in audit_index_keys(entry) {
            self.db.insert(index, &[][..])?;
        }
        self.db.insert(key(AUDIT, &[&entry.seq.to_be_bytes()]), encode_audit(entry, record_cbor, &levels)?)?;
        Ok(())
    }

    fn audit_node(&self, level: u8, index: u64) -> Result<Option<Hash>, StoreError> {
        let leaf = last_leaf(level, index);
        let Some(seq) = leaf.checked_add(1) else { return Ok(None) };
        // The entry first: an `H` value of the layout before may be stale (its entry lost in a crash,
        // the next entry of that seq holding its own nodes), while an entry and its nodes are one insert.
        if let Some(value) = self.db.get(key(AUDIT, &[&seq.to_be_bytes()]))? {
            if let Some(parts) = split_audit(&value)? {
                if parts.seq != seq {
                    return Err(StoreError::Corrupt(format!("the audit entry stored at {seq} says {}", parts.seq)));
                }
                if let Some(hash) = level_in(parts.levels, level)? {
                    return Ok(Some(hash));
                }
            }
        }
        // A pruned entry's nodes, or nodes written before they moved into the entry.
        let Some(value) = self.db.get(nodes_key(leaf))? else { return Ok(None) };
        level_in(&value, level)
    }

    fn audit_links(&self, visit: &mut dyn FnMut(Link, Option<AuditRecord>) -> bool) -> Result<(), StoreError> {
        audit_links(&self.db, visit)
    }

    fn audit_index(&self, of: AuditIndex<'_>) -> Result<Vec<u64>, StoreError> {
        let prefix = match of {
            AuditIndex::Case(thread) => key(AUDIT_OF_CASE, &[thread.0.as_bytes()]),
            AuditIndex::Organisation(oin) => key(AUDIT_OF_ORGANISATION, &[oin.as_str().as_bytes()]),
        };
        self.db.scan_prefix(&prefix).keys().map(|k| seq_from(k?.get(prefix.len()..).unwrap_or_default())).collect()
    }

    fn offers_of(&self, oin: &Oin) -> Result<Vec<(ThreadId, wire::handover::Ownership)>, StoreError> {
        let threads = self.threads_under(&key(OFFERS_OF, &[oin.as_str().as_bytes()]), 0)?;
        let mut found = Vec::new();
        for thread in threads {
            if let Some(ownership) = self.ownership(thread)? {
                found.push((thread, ownership));
            }
        }
        Ok(found)
    }

    fn audit_entries(&self, from: u64, limit: usize) -> Result<Vec<AuditEntry>, StoreError> {
        self.db
            .range(key(AUDIT, &[&from.to_be_bytes()])..key(AUDIT, &[&u64::MAX.to_be_bytes()]))
            .take(limit)
            .map(|item| decode_audit(&item?.1))
            .collect()
    }

    fn last_audit(&self) -> Result<Option<(u64, [u8; 32])>, StoreError> {
        let Some(last) = self.db.scan_prefix([AUDIT]).next_back() else { return Ok(None) };
        let entry = decode_audit(&last?.1)?;
        Ok(Some((entry.seq, entry.hash)))
    }

    fn put_checkpoint(&self, head: &SignedTreeHead) -> Result<(), StoreError> {
        let at = key(CHECKPOINT, &[&head.size.to_be_bytes(), &head.at_ms.to_be_bytes()]);
        // Only the writer (and `rotate-key` on a stopped hub) signs heads, always over the current tree: the
        // head stored last is the latest, even when it is smaller than one before it (a truncated log).
        let mut batch = Batch::default();
        batch.insert(at, encode(head));
        batch.insert(&[LATEST_HEAD][..], encode(head));
        self.db.apply(batch)
    }

    fn checkpoints(&self) -> Result<Vec<SignedTreeHead>, StoreError> {
        self.db.scan_prefix([CHECKPOINT]).map(|item| decode(&item?.1)).collect()
    }

    fn latest_head(&self) -> Result<Option<SignedTreeHead>, StoreError> {
        // One look-up per query instead of a reverse scan over every head.
        self.db.get([LATEST_HEAD])?.map(|value| decode(&value)).transpose()
    }

    fn revocation_marks(&self) -> Result<Vec<certs::revocation::Mark>, StoreError> {
        self.db.get([REVOCATION_MARKS])?.map_or(Ok(Vec::new()), |value| decode(&value))
    }

    fn put_revocation_marks(&self, marks: &[certs::revocation::Mark]) -> Result<(), StoreError> {
        self.db.insert([REVOCATION_MARKS], encode(&marks)).map(|_| ())
    }

    fn flush(&self) -> Result<(), StoreError> {
        self.chunks.sync()?;
        let dirty: Vec<ThreadId> = lock(&self.dirty).drain().collect();
        let marks: Vec<(ThreadId, Arc<Mutex<ThreadLog>>, u64)> = dirty
            .into_iter()
            .filter_map(|thread| Some((thread, lock(&self.logs).get(&thread)?.clone())))
            .map(|(thread, log)| {
                let written = lock(&log).next_seq - 1;
                (thread, log, written)
            })
            .collect();
        if let Err(e) = self.db.flush() {
            // Nothing is known to be durable: the threads stay dirty for the next flush.
            lock(&self.dirty).extend(marks.iter().map(|(thread, _, _)| *thread));
            return Err(e);
        }
        for (_, log, written) in marks {
            let mut log = lock(&log);
            log.durable_seq = log.durable_seq.max(written);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::engine::EngineKind;

    const ENGINES: [EngineKind; 2] = [EngineKind::Fjall, EngineKind::Sled];

    fn on(engine: EngineKind, dir: &Path) -> KvStore {
        KvStore::open_with(dir, &EngineSettings { engine, ..Default::default() }).unwrap()
    }

    fn member(worker: &str) -> MemberId {
        MemberId::new("00000001800000000001", worker).unwrap()
    }

    #[test]
    fn entries_become_visible_only_after_flush() {
        let dir = tempfile::tempdir().unwrap();
        let store = KvStore::open(dir.path()).unwrap();
        let anna = member("anna");
        let thread = store.create_thread(&anna, Uuid::new_v4(), 1).unwrap().thread;
        store.append_message(thread, &anna, MessageId::new(), b"x", 2).unwrap();
        assert!(store.entries_after(thread, 0, 10).unwrap().is_empty());
        store.flush().unwrap();
        let entries = store.entries_after(thread, 0, 10).unwrap();
        assert_eq!(entries.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![1, 2]);
    }

    #[test]
    fn a_message_id_is_stored_once_per_thread() {
        let dir = tempfile::tempdir().unwrap();
        let store = KvStore::open(dir.path()).unwrap();
        let anna = member("anna");
        let thread = store.create_thread(&anna, Uuid::new_v4(), 1).unwrap().thread;
        let id = MessageId::new();
        let first = store.append_message(thread, &anna, id, b"x", 2).unwrap();
        let again = store.append_message(thread, &anna, id, b"x", 3).unwrap();
        assert_eq!((first.seq, first.duplicate()), (2, false));
        assert_eq!(first.entry.unwrap().id, id);
        assert_eq!(again, Appended { seq: 2, entry: None });
    }

    #[test]
    fn a_dedup_key_whose_entry_was_lost_does_not_swallow_the_resend() {
        let dir = tempfile::tempdir().unwrap();
        let store = KvStore::open(dir.path()).unwrap();
        let anna = member("anna");
        let thread = store.create_thread(&anna, Uuid::new_v4(), 1).unwrap().thread;
        let id = MessageId::new();
        // What a crash between the two inserts leaves: the key, pointing at seq 2, and no entry.
        store.db.insert(key(DEDUP, &[thread.0.as_bytes(), id.0.as_bytes()]), &2u64.to_be_bytes()[..]).unwrap();
        let resent = store.append_message(thread, &anna, id, b"x", 2).unwrap();
        assert_eq!((resent.seq, resent.duplicate()), (2, false));
        store.flush().unwrap();
        assert_eq!(store.entries_after(thread, 1, 10).unwrap()[0].id, id);
        // A key pointing at another message's entry is not a duplicate either.
        let other = MessageId::new();
        store.db.insert(key(DEDUP, &[thread.0.as_bytes(), other.0.as_bytes()]), &2u64.to_be_bytes()[..]).unwrap();
        assert!(!store.append_message(thread, &anna, other, b"y", 3).unwrap().duplicate());
        assert_eq!(store.append_message(thread, &anna, other, b"y", 3).unwrap(), Appended { seq: 3, entry: None });
    }

    #[test]
    fn creation_is_idempotent_per_creator_and_reference() {
        let dir = tempfile::tempdir().unwrap();
        let store = KvStore::open(dir.path()).unwrap();
        let reference = Uuid::new_v4();
        let first = store.create_thread(&member("anna"), reference, 1).unwrap();
        let again = store.create_thread(&member("anna"), reference, 1).unwrap();
        let other = store.create_thread(&member("piet"), reference, 1).unwrap();
        assert!(first.entry.is_some() && again.entry.is_none() && other.entry.is_some());
        assert_eq!(first.thread, again.thread);
        assert_ne!(first.thread, other.thread);
    }

    #[test]
    fn state_survives_reopening_on_either_engine() {
        for engine in ENGINES {
            let dir = tempfile::tempdir().unwrap();
            let (anna, piet) = (member("anna"), member("piet"));
            let thread = {
                let store = on(engine, dir.path());
                let thread = store.create_thread(&anna, Uuid::new_v4(), 1).unwrap().thread;
                store.add_member(thread, &anna, &piet, 2).unwrap();
                store.append_message(thread, &anna, MessageId::new(), b"x", 3).unwrap();
                store.advance_cursor(&piet, &DeviceId::default(), thread, 3).unwrap();
                store.flush().unwrap();
                thread
            };
            let store = on(engine, dir.path());
            assert_eq!(store.last_seq(thread).unwrap(), 3);
            assert!(store.is_member(thread, &piet).unwrap());
            assert_eq!(store.threads_of(&piet).unwrap(), vec![thread]);
            let mut members = store.members(thread).unwrap();
            members.sort();
            assert_eq!(members, vec![anna.clone(), piet.clone()]);
            assert_eq!(store.cursor(&piet, &DeviceId::default(), thread).unwrap(), 3);
            let next = store.append_message(thread, &anna, MessageId::new(), b"y", 4).unwrap();
            assert_eq!(next.seq, 4);
            assert_eq!(store.db.kind(), engine);
        }
    }

    #[test]
    fn a_new_member_starts_at_its_own_entry_and_cursors_never_go_back() {
        let dir = tempfile::tempdir().unwrap();
        let store = KvStore::open(dir.path()).unwrap();
        let (anna, piet) = (member("anna"), member("piet"));
        let thread = store.create_thread(&anna, Uuid::new_v4(), 1).unwrap().thread;
        store.append_message(thread, &anna, MessageId::new(), b"before", 2).unwrap();
        let added = store.add_member(thread, &anna, &piet, 3).unwrap();
        assert_eq!(added.seq, 3);
        assert_eq!(store.cursor(&piet, &DeviceId::default(), thread).unwrap(), 2);
        assert_eq!(store.add_member(thread, &anna, &piet, 4).unwrap(), Appended { seq: 3, entry: None });
        store.advance_cursor(&piet, &DeviceId::default(), thread, 3).unwrap();
        store.advance_cursor(&piet, &DeviceId::default(), thread, 1).unwrap();
        assert_eq!(store.cursor(&piet, &DeviceId::default(), thread).unwrap(), 3);
    }

    #[test]
    fn key_packages_are_handed_out_once_oldest_first() {
        for engine in ENGINES {
            let dir = tempfile::tempdir().unwrap();
            let store = on(engine, dir.path());
            let (anna, piet) = (member("anna"), member("piet"));
            assert_eq!(store.add_key_packages(&anna, &[b"one".to_vec(), b"two".to_vec()]).unwrap(), 2);
            assert_eq!(store.add_key_packages(&piet, &[b"piet".to_vec()]).unwrap(), 1);
            let (thread, claimer) = (ThreadId::random(), MemberId::new("00000001800000000002", "sanne").unwrap());
            assert_eq!(store.claim_key_package(thread, &claimer, &anna, 1).unwrap().as_deref(), Some(&b"one"[..]));
            assert_eq!(store.claim_key_package(thread, &claimer, &anna, 2).unwrap().as_deref(), Some(&b"two"[..]));
            assert_eq!(store.claim_key_package(thread, &claimer, &anna, 3).unwrap(), None);
            // Handed out to that claimer for that thread, and redeemed once, by the commit that adds it.
            let one = crate::groups::key_package_digest(b"one");
            assert!(!store.holds_claims(ThreadId::random(), &claimer, &[one]).unwrap());
            assert!(!store.holds_claims(thread, &anna, &[one]).unwrap());
            assert!(store.holds_claims(thread, &claimer, &[one]).unwrap());
            let thread = store.create_thread(&claimer, Uuid::new_v4(), 1).unwrap().thread;
            store.claim_key_package(thread, &claimer, &piet, 4).unwrap();
            let piets = crate::groups::key_package_digest(b"piet");
            let commit = AcceptedCommit {
                thread,
                by: &claimer,
                state: b"state",
                epoch: 1,
                commit: b"commit",
                group_info: b"info",
                redeemed: &[piets],
                removed: &[],
                welcome: None,
                evict_sides: &[],
                ownership: None,
                at_ms: 5,
            };
            assert!(store.holds_claims(thread, &claimer, &[piets]).unwrap());
            store.apply_commit(&commit).unwrap();
            assert!(!store.holds_claims(thread, &claimer, &[piets]).unwrap());
            assert_eq!(store.group_info(thread).unwrap().as_deref(), Some(&b"info"[..]));
        }
    }

    #[test]
    fn key_packages_stored_after_a_reopen_come_after_those_stored_before() {
        for engine in ENGINES {
            let dir = tempfile::tempdir().unwrap();
            let (anna, claimer, thread) = (member("anna"), member("sanne"), ThreadId::random());
            {
                let store = on(engine, dir.path());
                store.add_key_packages(&anna, &[b"old".to_vec(), b"older".to_vec()]).unwrap();
                store.claim_key_package(thread, &claimer, &anna, 1).unwrap();
                store.flush().unwrap();
            }
            let store = on(engine, dir.path());
            store.add_key_packages(&anna, &[b"new".to_vec()]).unwrap();
            let claim = |at| store.claim_key_package(thread, &claimer, &anna, at).unwrap();
            assert_eq!(claim(2).as_deref(), Some(&b"older"[..]), "{engine:?}");
            assert_eq!(claim(3).as_deref(), Some(&b"new"[..]), "{engine:?}");
        }
    }

    #[test]
    fn unknown_threads_are_reported_as_such() {
        let dir = tempfile::tempdir().unwrap();
        let store = KvStore::open(dir.path()).unwrap();
        let thread = ThreadId::random();
        assert!(!store.is_member(thread, &member("anna")).unwrap());
        assert!(matches!(
            store.append_message(thread, &member("anna"), MessageId::new(), b"x", 1),
            Err(StoreError::NoSuchThread)
        ));
    }

    #[test]
    fn a_store_reopened_at_once_in_the_same_process_opens() {
        let dir = tempfile::tempdir().unwrap();
        let anna = member("anna");
        let body = vec![7u8; 4096];
        for round in 0..20 {
            let store = KvStore::open(dir.path()).unwrap_or_else(|e| panic!("reopen {round}: {e}"));
            let thread = store.create_thread(&anna, Uuid::new_v4(), 1).unwrap().thread;
            for _ in 0..200 {
                store.append_message(thread, &anna, MessageId::new(), &body, 2).unwrap();
            }
            store.flush().unwrap();
        }
    }

    #[test]
    fn a_store_another_handle_holds_is_refused_after_the_wait() {
        use super::super::engine::LOCK_RELEASE_WAIT;
        use std::time::Instant;
        let dir = tempfile::tempdir().unwrap();
        let _held = KvStore::open(dir.path()).unwrap();
        let started = Instant::now();
        let Err(refused) = KvStore::open(dir.path()) else { panic!("a second open while the first holds the store") };
        assert!(refused.to_string().contains("lock"), "{refused}");
        assert!(started.elapsed() >= LOCK_RELEASE_WAIT, "refused before the wait: {:?}", started.elapsed());
    }

    #[test]
    fn an_index_key_a_crash_left_behind_does_not_show_the_entry_that_took_its_seq() {
        use crate::audit::{chain::AuditKey, CheckpointSettings, Recorder};
        use wire::audit::{AuditAction, AuditFilter};
        let dir = tempfile::tempdir().unwrap();
        let store = KvStore::open(dir.path()).unwrap();
        let (ours, theirs) = (ThreadId(Uuid::new_v4()), ThreadId(Uuid::new_v4()));
        let oin: Oin = "00000001800000000001".parse().unwrap();
        // A crash after entry 1's index key (an entry about `theirs`) and before the entry itself:
        store.db.insert(key(AUDIT_OF_CASE, &[theirs.0.as_bytes(), &1u64.to_be_bytes()]), &[][..]).unwrap();
        let key = Arc::new(AuditKey::generate().unwrap());
        let mut recorder = Recorder::resume(&store, key, CheckpointSettings::default()).unwrap();
        let about_ours = AuditRecord { case: Some(ours), ..crate::audit::blank_record(AuditAction::Send, None) };
        assert_eq!(recorder.record(&store, about_ours).unwrap().seq, 1);
        store.flush().unwrap();
        let scope = HashSet::from([theirs]);
        for filter in [AuditFilter { case: Some(theirs), ..AuditFilter::default() }, AuditFilter::default()] {
            let (found, _) = crate::audit::query(&store, &oin, &scope, &filter, (u64::MAX, 100)).unwrap();
            assert!(found.is_empty(), "an officer of {theirs:?} was shown {found:?} through {filter:?}");
        }
        let ours_only = HashSet::from([ours]);
        let (found, _) =
            crate::audit::query(&store, &oin, &ours_only, &AuditFilter::default(), (u64::MAX, 100)).unwrap();
        assert_eq!(found.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![1]);
    }

    /// A store with seven audit entries (at times 1 to 7 ms), every perfect subtree of their tree as
    /// (level, index), and the subtrees' hashes as the store reads them, which match a tree rebuilt from
    /// the entries.
    fn seven_entries(dir: &Path) -> (KvStore, Vec<(u8, u64)>, Vec<Option<Hash>>) {
        use crate::audit::{chain::AuditKey, CheckpointSettings, Recorder};
        let store = KvStore::open(dir).unwrap();
        let mut recorder =
            Recorder::resume(&store, Arc::new(AuditKey::generate().unwrap()), CheckpointSettings::default()).unwrap();
        for at_ms in 1..=7 {
            let record = AuditRecord { at_ms, ..crate::audit::blank_record(wire::audit::AuditAction::Send, None) };
            recorder.record(&store, record).unwrap();
        }
        let subtrees: Vec<(u8, u64)> = (0..7u64)
            .flat_map(|leaf| (0..=leaf.trailing_ones() as u8).map(move |l| (l, ((leaf + 1) >> l) - 1)))
            .collect();
        let nodes = tree_nodes(&store, &subtrees);
        assert!(nodes.iter().all(Option::is_some), "{nodes:?}");
        assert_eq!(nodes, tree_from_entries(&store, &subtrees));
        (store, subtrees, nodes)
    }

    fn tree_nodes(store: &KvStore, subtrees: &[(u8, u64)]) -> Vec<Option<Hash>> {
        subtrees.iter().map(|&(l, i)| store.audit_node(l, i).unwrap()).collect()
    }

    /// The perfect subtrees' hashes as a tree built afresh from the stored entries' hashes has them.
    fn tree_from_entries(store: &KvStore, subtrees: &[(u8, u64)]) -> Vec<Option<Hash>> {
        let mut tree = wire::merkle::CompactRange::new();
        let mut nodes = HashMap::new();
        for entry in store.audit_entries(0, 100).unwrap() {
            for node in tree.append(wire::merkle::leaf_hash(&entry.hash)) {
                nodes.insert((node.level, node.index), node.hash);
            }
        }
        subtrees.iter().map(|at| nodes.get(at).copied()).collect()
    }

    /// Rewrites the audit entries as the layout before stored them: `0x01` entries without nodes, and
    /// each append's nodes as an `H` value.
    fn to_layout_before(store: &KvStore) {
        for item in store.db.scan_prefix([AUDIT]) {
            let (key, value) = item.unwrap();
            let parts = split_audit(&value).unwrap().unwrap();
            store.db.insert(nodes_key(parts.seq - 1), parts.levels).unwrap();
            let mut before = vec![AUDIT_LAYOUT_BEFORE];
            before.extend_from_slice(&value[1..AUDIT_HEADER]);
            before.extend_from_slice(parts.record);
            store.db.insert(key, before).unwrap();
        }
    }

    #[test]
    fn an_audit_entry_holds_the_tree_nodes_it_completes_and_no_key_of_their_own_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _, _) = seven_entries(dir.path());
        assert_eq!(store.db.scan_prefix([AUDIT_NODE]).count(), 0, "one insert per entry, its nodes inside it");
        let last = store.db.get(key(AUDIT, &[&7u64.to_be_bytes()])).unwrap().unwrap();
        // Leaf 6 completes its own node only; leaf 7 (seq 8) would complete three.
        assert_eq!(split_audit(&last).unwrap().unwrap().levels.len(), 32);
    }

    #[test]
    fn the_nodes_of_pruned_audit_entries_stay_readable() {
        let dir = tempfile::tempdir().unwrap();
        let (store, subtrees, nodes) = seven_entries(dir.path());
        assert_eq!(store.prune_audit(5).unwrap(), (4, 5));
        assert_eq!(store.audit_entries(0, 10).unwrap().first().map(|e| e.seq), Some(5));
        assert_eq!(tree_nodes(&store, &subtrees), nodes);
        store.flush().unwrap();
        drop(store);
        assert_eq!(tree_nodes(&KvStore::open(dir.path()).unwrap(), &subtrees), nodes);
    }

    #[test]
    fn a_log_stored_in_the_layout_before_reads_the_same_and_grows_in_the_current_one() {
        let dir = tempfile::tempdir().unwrap();
        let (store, subtrees, nodes) = seven_entries(dir.path());
        let entries = store.audit_entries(0, 10).unwrap();
        to_layout_before(&store);
        // What a crash left under the layout before: nodes for an eighth entry that was lost.
        store.db.insert(nodes_key(7), &[0xee; 4 * 32][..]).unwrap();
        assert_eq!(store.db.get(key(AUDIT, &[&1u64.to_be_bytes()])).unwrap().unwrap()[0], AUDIT_LAYOUT_BEFORE);
        assert_eq!(tree_nodes(&store, &subtrees), nodes);
        assert_eq!(store.audit_entries(0, 10).unwrap(), entries);
        store.flush().unwrap();
        drop(store);
        let store = KvStore::open(dir.path()).unwrap();
        let mut links = Vec::new();
        store
            .audit_links(&mut |link, _| {
                links.push(link);
                true
            })
            .unwrap();
        assert_eq!(links.len(), 7);
        let mut recorder = crate::audit::Recorder::resume(
            &store,
            Arc::new(crate::audit::chain::AuditKey::generate().unwrap()),
            crate::audit::CheckpointSettings::default(),
        )
        .unwrap();
        recorder.record(&store, crate::audit::blank_record(wire::audit::AuditAction::Send, None)).unwrap();
        // Leaf 7 completes the subtrees of levels 0 to 3, from the nodes of the layout before; the
        // stale nodes the crash left are neither read nor kept once the entry is pruned.
        let eighth = store.db.get(key(AUDIT, &[&8u64.to_be_bytes()])).unwrap().unwrap();
        assert_eq!(split_audit(&eighth).unwrap().unwrap().levels.len(), 4 * 32);
        let all: Vec<(u8, u64)> =
            subtrees.iter().copied().chain((0..4).map(|level| (level, (8 >> level) - 1))).collect();
        let expected = tree_from_entries(&store, &all);
        assert!(expected.iter().all(Option::is_some));
        assert_eq!(tree_nodes(&store, &all), expected);
        store.prune_audit(u64::MAX).unwrap();
        assert_eq!(tree_nodes(&store, &all), expected);
    }

    #[test]
    fn a_hostile_audit_value_is_a_typed_error() {
        let mut value = vec![AUDIT_LAYOUT];
        value.extend_from_slice(&1u64.to_be_bytes());
        value.extend_from_slice(&[0; 64]);
        value.push(5);
        value.extend_from_slice(&[0; 32]);
        assert!(matches!(split_audit(&value), Err(StoreError::Corrupt(_))), "five levels promised, one there");
        assert!(matches!(split_audit(&value[..40]), Err(StoreError::Corrupt(_))));
        let dir = tempfile::tempdir().unwrap();
        let (store, _, _) = seven_entries(dir.path());
        // An entry moved to another seq, as a rewrite of the disk could.
        let third = store.db.get(key(AUDIT, &[&3u64.to_be_bytes()])).unwrap().unwrap();
        store.db.insert(key(AUDIT, &[&2u64.to_be_bytes()]), third).unwrap();
        assert!(matches!(store.audit_node(0, 1), Err(StoreError::Corrupt(_))));
        assert!(matches!(store.prune_audit(u64::MAX), Err(StoreError::Corrupt(_))));
        assert_eq!(store.audit_node(0, u64::MAX).unwrap(), None);
        assert_eq!(store.audit_node(200, 5).unwrap(), None);
    }

    #[test]
    fn a_tree_stored_a_key_per_node_is_regrouped_when_opened_and_reads_the_same() {
        let dir = tempfile::tempdir().unwrap();
        let (store, subtrees, hashes) = seven_entries(dir.path());
        // Back to the layout of index version 1: entries without nodes, a key per node.
        to_layout_before(&store);
        for item in store.db.scan_prefix([AUDIT_NODE]) {
            store.db.remove(item.unwrap().0).unwrap();
        }
        for (&(level, index), hash) in subtrees.iter().zip(&hashes) {
            let old = key(AUDIT_NODE, &[&last_leaf(level, index).to_be_bytes(), &[level]]);
            store.db.insert(old, &hash.unwrap()[..]).unwrap();
        }
        store.db.insert([INDEX_VERSION], &[1][..]).unwrap();
        // Pruned, as a retention run does: the tree can no longer be rebuilt from the entries.
        store.db.remove(key(AUDIT, &[&1u64.to_be_bytes()])).unwrap();
        assert!(store.audit_node(0, 0).unwrap().is_none(), "the layout before is not read as it is");
        store.flush().unwrap();
        drop(store);
        let store = KvStore::open(dir.path()).unwrap();
        assert_eq!(tree_nodes(&store, &subtrees), hashes);
        assert!(store.db.scan_prefix([AUDIT_NODE]).keys().all(|k| !is_node_key_before(&k.unwrap())));
    }
}
