//! Durable storage of case threads, behind one trait.
//!
//! The rest of the hub talks to a [`Store`]; [`kv_store::KvStore`] is the
//! embedded default, and other backends (PostgreSQL for several hub instances)
//! implement the same trait. A store owns three promises that callers rely on:
//!
//! - sequence numbers within a thread are assigned by the store, from 1, without
//!   gaps, and a message id is stored at most once per thread;
//! - a write is durable once a later [`Store::flush`] has returned;
//! - reads of thread entries see only durable entries, so nothing is ever
//!   delivered that a crash could take back.
//!
//! Methods are synchronous: the engine answers from memory in microseconds, and the
//! one slow call, `flush`, runs on a blocking thread (see `durability`).

pub mod chunk_files;
pub mod engine;
pub mod kv_store;
mod presence;

use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use uuid::Uuid;
use wire::audit::{AuditEntry, AuditRecord, SignedTreeHead};
use wire::merkle::Hash;

use crate::audit::chain::Sealed;
use crate::audit::verify::Link;

use crate::devices::DeviceRecord;
use wire::{BlobId, DeviceId, Entry, MemberId, MessageId, Oin, ThreadId};

// Every lock of the store leaves its data whole before anything can panic (each holder says how).
use crate::locks::lock;

pub use kv_store::KvStore;

/// A storage failure. The action that hit it did not take effect.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The backend reported an I/O or corruption error.
    #[error("storage backend failed: {0}")]
    Backend(String),
    /// A stored record could not be decoded.
    #[error("stored record is corrupt: {0}")]
    Corrupt(String),
    /// The thread does not exist.
    #[error("no such thread")]
    NoSuchThread,
}

/// The result of an append.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Appended {
    /// The entry's sequence number.
    pub seq: u64,
    /// The entry written, or `None` when it was already there and nothing new was stored.
    pub entry: Option<Entry>,
}

impl Appended {
    /// True when nothing new was stored.
    pub fn duplicate(&self) -> bool {
        self.entry.is_none()
    }
}

/// The result of creating a thread.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Created {
    /// The thread.
    pub thread: ThreadId,
    /// The thread's first entry, or `None` when the creator's reference had
    /// already created this thread.
    pub entry: Option<Entry>,
}

/// A commit the hub accepted, to store atomically: the group's new public
/// state, the commit entry, the removals it makes, and the Welcome.
#[derive(Debug)]
pub struct AcceptedCommit<'a> {
    /// The thread.
    pub thread: ThreadId,
    /// Who committed.
    pub by: &'a MemberId,
    /// The group's public state after the commit.
    pub state: &'a [u8],
    /// The epoch after the commit.
    pub epoch: u64,
    /// The commit message.
    pub commit: &'a [u8],
    /// The GroupInfo of the epoch after it, already checked against `state`.
    pub group_info: &'a [u8],
    /// The claims (KeyPackage digests, claimed by `by`) it redeems: each adds one device once.
    pub redeemed: &'a [[u8; 32]],
    /// The current members whose last device the commit removes: their
    /// membership ends with it.
    pub removed: &'a [MemberId],
    /// The Welcome and the members it is for.
    pub welcome: Option<(&'a [MemberId], &'a [u8])>,
    /// The memberships of the case's side threads that end with the commit's removals.
    pub evict_sides: &'a [(ThreadId, Vec<MemberId>)],
    /// The case's ownership state, when the commit changes it (it removes
    /// devices that were due for removal).
    pub ownership: Option<&'a wire::handover::Ownership>,
    /// The hub's time.
    pub at_ms: u64,
}

/// A handover step to store atomically: the case's new ownership state, the
/// thread entry that shows the step, and for an acceptance the receiver's
/// membership.
#[derive(Debug)]
pub struct HandoverStep<'a> {
    /// The case.
    pub thread: ThreadId,
    /// Who took the step.
    pub by: &'a MemberId,
    /// The ownership state after it.
    pub ownership: &'a wire::handover::Ownership,
    /// The entries to append, in order.
    pub events: Vec<wire::handover::HandoverEvent>,
    /// Members to add (the receiver who accepted, a conference's invitees), those not members yet.
    pub admit: &'a [MemberId],
    /// Members whose membership ends with the step (those who left the case),
    /// each with a `member_removed` entry after the step's own entries.
    pub evict: Vec<MemberId>,
    /// Memberships of the case's side threads that end with it (its members'
    /// departures, or all of them when it is archived).
    pub evict_sides: Vec<(ThreadId, Vec<MemberId>)>,
    /// Notices to organisations' inboxes (see [`Store::ensure_inbox`]), each
    /// appended there as a `notice` entry about the case.
    pub notices: Vec<(ThreadId, wire::handover::Notice)>,
    /// The hub's time.
    pub at_ms: u64,
}

/// What an audit index lists.
#[derive(Debug, Clone, Copy)]
pub enum AuditIndex<'a> {
    /// The entries about one case.
    Case(ThreadId),
    /// The entries about no case whose actor (or on whose behalf) is of the organisation.
    Organisation(&'a Oin),
}

/// One stretch of an identity's membership of a thread, in the thread's own
/// sequence numbers: from the entry that added it to the entry that ended it.
/// An identity receives exactly the entries inside its intervals.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Interval {
    /// The seq of the `member_added` entry that began it.
    pub from: u64,
    /// The seq of the `member_removed` entry that ended it; `None` while it lasts.
    pub until: Option<u64>,
}

impl Interval {
    /// Whether the entry at `seq` falls inside this stretch.
    pub fn contains(&self, seq: u64) -> bool {
        seq >= self.from && self.until.is_none_or(|until| seq <= until)
    }
}

/// What the hub knows about an attachment blob. The content is ciphertext
/// whose key only the thread's members hold.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobRecord {
    /// The thread whose current members may fetch it.
    pub thread: ThreadId,
    /// Who uploads it; nobody else may add chunks.
    pub uploader: MemberId,
    /// Chunks stored so far.
    pub chunks: u32,
    /// Bytes stored so far.
    pub bytes: u64,
    /// True once the last chunk is stored; a sealed blob never changes.
    pub sealed: bool,
    /// The thread's last seq when the blob was sealed: the message naming it
    /// comes later, so members past this seq may have fetched it.
    #[serde(default)]
    pub sealed_seq: u64,
    /// When its first chunk arrived.
    pub created_at_ms: u64,
}

/// A device's registration (see [`Store::put_device`] and `crate::devices`).
#[derive(Debug)]
pub struct DeviceWrite<'a> {
    /// The device.
    pub device: &'a DeviceId,
    /// What the hub keeps of it.
    pub record: DeviceRecord,
    /// Where its cursors start, per thread (empty for a known device).
    pub starts: &'a [(ThreadId, u64)],
    /// The member's devices it takes the place of.
    pub forget: &'a [DeviceId],
}

/// The worker recorded as the writer of an organisation's inbox: the hub
/// itself. Not a valid worker id (the colon), so no certificate or policy names it.
pub const INBOX_WRITER: &str = "ketenhub:inbox";

/// The audit tree's leaf of the entry `seq`: leaves count from 0, entries from 1,
/// so a stored entry 0 is a corrupt store.
pub fn leaf_of(seq: u64) -> Result<u64, StoreError> {
    seq.checked_sub(1).ok_or_else(|| StoreError::Corrupt("an audit entry with seq 0".into()))
}

/// KeyPackages handed out and not yet added that the hub remembers per claimer and thread.
pub const MAX_OPEN_CLAIMS: usize = 64;

/// Storage for threads, members, entries, cursors, KeyPackages and blobs.
pub trait Store: Send + Sync + 'static {
    /// Creates a thread whose first entry records `creator` as its first member.
    /// The same creator with the same `client_ref` gets the same thread back.
    fn create_thread(&self, creator: &MemberId, client_ref: Uuid, at_ms: u64) -> Result<Created, StoreError>;

    /// Creates a side thread of `side.case`, as [`Store::create_thread`] does a
    /// thread, linked to the case: it has no ownership state of its own, and
    /// answers [`Store::is_closed`] and [`Store::is_read_only`] as its case does.
    fn create_side_thread(
        &self,
        side: &wire::SideThread,
        creator: &MemberId,
        client_ref: Uuid,
        at_ms: u64,
    ) -> Result<Created, StoreError>;

    /// The thread `creator` created with `client_ref`, if any.
    fn created_by_ref(&self, creator: &MemberId, client_ref: Uuid) -> Result<Option<ThreadId>, StoreError>;

    /// What links `thread` to its case, if it is a side thread.
    fn side(&self, thread: ThreadId) -> Result<Option<wire::SideThread>, StoreError>;

    /// The case `thread` belongs to: its own id, or for a side thread its case's.
    fn case_of(&self, thread: ThreadId) -> Result<ThreadId, StoreError>;

    /// The inbox thread of organisation `oin` ([`ThreadId::inbox_of`]),
    /// created (without members or owner) if it does not exist yet.
    fn ensure_inbox(&self, oin: &Oin, at_ms: u64) -> Result<ThreadId, StoreError>;

    /// Whether `thread` is an organisation's inbox, which only the hub writes.
    fn is_inbox(&self, thread: ThreadId) -> Result<bool, StoreError>;

    /// Ends the memberships of `members` in `thread` (those who are members),
    /// each with a `member_removed` entry by `by`; returns the entries.
    fn remove_members(
        &self,
        thread: ThreadId,
        by: &MemberId,
        members: &[MemberId],
        at_ms: u64,
    ) -> Result<Vec<Entry>, StoreError>;

    /// The side threads of `case`, in no particular order.
    fn side_threads(&self, case: ThreadId) -> Result<Vec<ThreadId>, StoreError>;

    /// Adds `member` to `thread`, recording a membership entry; the new
    /// member's cursor starts just before that entry, so it receives no earlier
    /// entries. Adding an existing member changes nothing and returns the seq of
    /// the entry that added it, marked as a duplicate.
    fn add_member(
        &self,
        thread: ThreadId,
        by: &MemberId,
        member: &MemberId,
        at_ms: u64,
    ) -> Result<Appended, StoreError>;

    /// Appends a message. A message id already stored in this thread is not
    /// stored again; the original seq is returned, marked as a duplicate.
    fn append_message(
        &self,
        thread: ThreadId,
        sender: &MemberId,
        id: MessageId,
        payload: &[u8],
        at_ms: u64,
    ) -> Result<Appended, StoreError>;

    /// Whether `member` is a member of `thread` (false for unknown threads).
    fn is_member(&self, thread: ThreadId, member: &MemberId) -> Result<bool, StoreError>;

    /// The members of a thread.
    fn members(&self, thread: ThreadId) -> Result<Vec<MemberId>, StoreError>;

    /// The threads a member belongs to.
    fn threads_of(&self, member: &MemberId) -> Result<Vec<ThreadId>, StoreError>;

    /// Every stretch of `member`'s membership of `thread`, oldest first; the
    /// last one is open while it is a member. Empty for an identity that was
    /// never a member.
    fn intervals(&self, thread: ThreadId, member: &MemberId) -> Result<Vec<Interval>, StoreError>;

    /// The threads `member` was a member of and no longer is.
    fn former_threads(&self, member: &MemberId) -> Result<Vec<ThreadId>, StoreError>;

    /// The cases any identity of the organisation `oin` is or was a member of:
    /// a privacy officer's scope.
    fn organisation_cases(&self, oin: &Oin) -> Result<HashSet<ThreadId>, StoreError>;

    /// Up to `limit` durable entries of `thread` with seq greater than `after`, in order.
    fn entries_after(&self, thread: ThreadId, after: u64, limit: usize) -> Result<Vec<Entry>, StoreError>;

    /// The highest durable seq of a thread (0 when empty or unknown).
    fn last_seq(&self, thread: ThreadId) -> Result<u64, StoreError>;

    /// The acknowledged cursor of one of the member's devices in a thread. A
    /// device without a cursor of its own there has the default device's,
    /// which starts just before the member was added (0 when none).
    fn cursor(&self, member: &MemberId, device: &DeviceId, thread: ThreadId) -> Result<u64, StoreError>;

    /// Moves the device's cursor forward to `seq`; never moves it back.
    fn advance_cursor(
        &self,
        member: &MemberId,
        device: &DeviceId,
        thread: ThreadId,
        seq: u64,
    ) -> Result<(), StoreError>;

    /// The member's devices the hub keeps (see `crate::devices`).
    fn devices(&self, member: &MemberId) -> Result<Vec<(DeviceId, DeviceRecord)>, StoreError>;

    /// Stores a device's registration in one atomic batch: its record, its
    /// starting cursors, and the devices it makes room by forgetting (their
    /// records and cursors).
    fn put_device(&self, member: &MemberId, write: &DeviceWrite<'_>) -> Result<(), StoreError>;

    /// The public state of the thread's MLS group, if registered.
    fn group_state(&self, thread: ThreadId) -> Result<Option<Vec<u8>>, StoreError>;

    /// The GroupInfo of the thread's current epoch, as its last committer (or
    /// its creator) signed it: what a device rejoins from.
    fn group_info(&self, thread: ThreadId) -> Result<Option<Vec<u8>>, StoreError>;

    /// Registers the public state of the thread's new MLS group and its first GroupInfo.
    fn init_group(&self, thread: ThreadId, state: &[u8], group_info: &[u8]) -> Result<(), StoreError>;

    /// Stores an accepted commit in one atomic write: the new group state and
    /// GroupInfo, the commit entry, a `MemberRemoved` entry per removal (ending the membership
    /// itself), and the Welcome entry. Returns the entries, in order.
    fn apply_commit(&self, commit: &AcceptedCommit<'_>) -> Result<Vec<(ThreadId, Entry)>, StoreError>;

    /// Adds MLS KeyPackages (already verified) for `member`; returns how many it holds now.
    fn add_key_packages(&self, member: &MemberId, packages: &[Vec<u8>]) -> Result<u64, StoreError>;

    /// Removes and returns the oldest KeyPackage of `member`, if any, and
    /// remembers (in the same batch) that it was handed to `claimer` for
    /// `thread`: a commit may add only KeyPackages the hub handed out so. At
    /// most [`MAX_OPEN_CLAIMS`] stay remembered per claimer and thread, the
    /// oldest forgotten first.
    fn claim_key_package(
        &self,
        thread: ThreadId,
        claimer: &MemberId,
        member: &MemberId,
        at_ms: u64,
    ) -> Result<Option<Vec<u8>>, StoreError>;

    /// Whether every KeyPackage (by SHA-256) was handed to `claimer` for
    /// `thread`. A commit that adds them redeems them (see [`AcceptedCommit::redeemed`]).
    fn holds_claims(&self, thread: ThreadId, claimer: &MemberId, digests: &[[u8; 32]]) -> Result<bool, StoreError>;

    /// How many KeyPackages `member` holds.
    fn key_package_stock(&self, member: &MemberId) -> Result<u64, StoreError>;

    /// The record of `thread`'s blob, if any chunk of it is stored. Blobs are
    /// kept per thread, so that another case's blob id names nothing here.
    fn blob(&self, thread: ThreadId, blob: BlobId) -> Result<Option<BlobRecord>, StoreError>;

    /// Stores chunk `index` of `thread`'s blob together with its updated record (`record.thread` is `thread`).
    fn put_blob_chunk(&self, blob: BlobId, record: &BlobRecord, index: u32, data: &[u8]) -> Result<(), StoreError>;

    /// One stored chunk of `thread`'s blob.
    fn blob_chunk(&self, thread: ThreadId, blob: BlobId, index: u32) -> Result<Option<Vec<u8>>, StoreError>;

    /// Every thread.
    fn threads(&self) -> Result<Vec<ThreadId>, StoreError>;

    /// The case's ownership state; `None` for a thread created before handovers existed.
    fn ownership(&self, thread: ThreadId) -> Result<Option<wire::handover::Ownership>, StoreError>;

    /// Every case's ownership state.
    fn ownerships(&self) -> Result<Vec<(ThreadId, wire::handover::Ownership)>, StoreError>;

    /// The ownership state of every case with an offer to or from the
    /// organisation `oin`, from an index kept with each handover step.
    fn offers_of(&self, oin: &Oin) -> Result<Vec<(ThreadId, wire::handover::Ownership)>, StoreError>;

    /// Whether the case is closed (and not reopened): nobody sends, uploads or
    /// adds in it, nor in its side threads.
    fn is_closed(&self, thread: ThreadId) -> Result<bool, StoreError>;

    /// Whether `member` only reads `thread` (a former owner: see
    /// [`wire::handover::Ownership::is_read_only`]), or a side thread of a case
    /// it only reads. Answered without decoding the ownership state, because
    /// every send asks.
    fn is_read_only(&self, thread: ThreadId, member: &MemberId) -> Result<bool, StoreError>;

    /// The case's ownership state as it stood when `member`'s membership ended
    /// by a departure (a step with `evict`): the answer to a resent `leave_case`.
    fn farewell(&self, thread: ThreadId, member: &MemberId) -> Result<Option<wire::handover::Ownership>, StoreError>;

    /// Stores a handover step in one atomic write; returns the entries
    /// appended, each with its thread (the case's, then its side threads').
    fn apply_handover(&self, step: &HandoverStep<'_>) -> Result<Vec<(ThreadId, Entry)>, StoreError>;

    /// Replaces the content of `thread`'s messages (and an inbox's notices) up
    /// to `up_to` stored before `before_ms` with [`wire::EntryBody::Expired`];
    /// returns how many.
    fn expire_messages(&self, thread: ThreadId, up_to: u64, before_ms: u64) -> Result<u64, StoreError>;

    /// The blobs of one thread with their records.
    fn thread_blobs(&self, thread: ThreadId) -> Result<Vec<(BlobId, BlobRecord)>, StoreError>;

    /// Every blob with its record (which names its thread).
    fn blobs(&self) -> Result<Vec<(BlobId, BlobRecord)>, StoreError>;

    /// Deletes `thread`'s blob and its chunks.
    fn delete_blob(&self, thread: ThreadId, blob: BlobId) -> Result<(), StoreError>;

    /// Deletes the oldest audit entries recorded before `before_ms`, and the
    /// heads they alone covered; returns how many entries, and the seq below
    /// which every entry is now gone (0 when none was deleted). The tree's
    /// nodes stay (a backend that keeps them inside the entries keeps them
    /// apart first): they are hashes, and later proofs and heads need them.
    fn prune_audit(&self, before_ms: u64) -> Result<(u64, u64), StoreError>;

    /// Appends an audit entry (its seq follows the last one), stored with the
    /// record's CBOR it was hashed over, indexed by its case, or when it has
    /// none, by the organisations of its actor, with the Merkle tree nodes it
    /// completes. The nodes are written with the entry or
    /// before it, and the index keys before it: after a crash every stored
    /// entry has its nodes, so the tree always matches the entries, but an
    /// entry lost in the crash may leave its index keys (and, in a backend that
    /// writes the nodes apart, its nodes, which readers must not prefer to the
    /// nodes the next entry of that seq brings). A stale index key is not
    /// removed, so readers of [`Store::audit_index`] check each entry against
    /// the case or organisation they looked up.
    fn append_audit(&self, sealed: &Sealed) -> Result<(), StoreError>;

    /// The hash of the perfect subtree `index` of `level` of the audit tree (see `wire::merkle`).
    fn audit_node(&self, level: u8, index: u64) -> Result<Option<Hash>, StoreError>;

    /// Every stored audit entry in order as [`Link`]s, with the record decoded
    /// only for retention entries; stops when `visit` returns false. For
    /// verification: the embedded store hashes records without decoding them.
    fn audit_links(&self, visit: &mut dyn FnMut(Link, Option<AuditRecord>) -> bool) -> Result<(), StoreError>;

    /// The seqs of the audit entries about `case`, or about no case by people
    /// of an organisation, oldest first: what a privacy officer's query reads,
    /// so that it costs what its answer holds, not the whole log.
    fn audit_index(&self, of: AuditIndex<'_>) -> Result<Vec<u64>, StoreError>;

    /// Up to `limit` audit entries with seq of at least `from`, in order.
    fn audit_entries(&self, from: u64, limit: usize) -> Result<Vec<AuditEntry>, StoreError>;

    /// The seq and hash of the last audit entry, if any.
    fn last_audit(&self) -> Result<Option<(u64, [u8; 32])>, StoreError>;

    /// Stores a signed tree head of the audit log.
    fn put_checkpoint(&self, head: &SignedTreeHead) -> Result<(), StoreError>;

    /// Every signed tree head, by size.
    fn checkpoints(&self) -> Result<Vec<SignedTreeHead>, StoreError>;

    /// The latest (largest) signed tree head.
    fn latest_head(&self) -> Result<Option<SignedTreeHead>, StoreError>;

    /// The newest `thisUpdate` of each CRL issuer the hub has had in force, so
    /// that neither a reread nor a restart puts an older list in force.
    fn revocation_marks(&self) -> Result<Vec<certs::revocation::Mark>, StoreError>;

    /// Replaces the marks of [`Store::revocation_marks`].
    fn put_revocation_marks(&self, marks: &[certs::revocation::Mark]) -> Result<(), StoreError>;

    /// Makes every write made before this call durable, and visible to reads.
    fn flush(&self) -> Result<(), StoreError>;
}
