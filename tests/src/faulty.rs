//! The real embedded store with faults injected on demand, for tests of what the
//! hub does when its disk fails: audit appends that fail (as on a full disk),
//! and flushes that fail. Everything else passes through to the store.

use hub::audit::chain::Sealed;
use hub::audit::verify::Link;
use hub::store::{
    AcceptedCommit, Appended, AuditIndex, BlobRecord, Created, HandoverStep, Interval, KvStore, Store, StoreError,
};
use std::collections::HashSet;
use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering;
use uuid::Uuid;
use wire::audit::{AuditEntry, AuditRecord, SignedTreeHead};
use wire::handover::Ownership;
use wire::merkle::Hash;
use wire::{BlobId, Entry, MemberId, MessageId, Oin, ThreadId};

/// The real embedded store, with failures switched on and off by the test.
pub struct FaultyStore {
    /// The store underneath.
    pub inner: KvStore,
    /// While set, every audit append fails.
    pub audit_fails: AtomicBool,
    /// While set, every flush fails.
    pub flush_fails: AtomicBool,
    /// While set, reading a thread's MLS group state panics: a stand-in for a
    /// bug in one of the writer's checks.
    pub group_state_panics: AtomicBool,
}

impl FaultyStore {
    /// Opens the embedded store in `dir`, with no fault switched on.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        Ok(Self {
            inner: KvStore::open(dir)?,
            audit_fails: AtomicBool::new(false),
            flush_fails: AtomicBool::new(false),
            group_state_panics: AtomicBool::new(false),
        })
    }
}

impl Store for FaultyStore {
    fn append_audit(&self, sealed: &Sealed) -> Result<(), StoreError> {
        if self.audit_fails.load(Ordering::SeqCst) {
            return Err(StoreError::Backend("injected: no space left on device".into()));
        }
        self.inner.append_audit(sealed)
    }
    fn create_thread(&self, c: &MemberId, r: Uuid, at: u64) -> Result<Created, StoreError> {
        self.inner.create_thread(c, r, at)
    }
    fn create_side_thread(
        &self,
        side: &wire::SideThread,
        c: &MemberId,
        r: Uuid,
        at: u64,
    ) -> Result<Created, StoreError> {
        self.inner.create_side_thread(side, c, r, at)
    }
    fn created_by_ref(&self, c: &MemberId, r: Uuid) -> Result<Option<ThreadId>, StoreError> {
        self.inner.created_by_ref(c, r)
    }
    fn side(&self, t: ThreadId) -> Result<Option<wire::SideThread>, StoreError> {
        self.inner.side(t)
    }
    fn case_of(&self, t: ThreadId) -> Result<ThreadId, StoreError> {
        self.inner.case_of(t)
    }
    fn side_threads(&self, case: ThreadId) -> Result<Vec<ThreadId>, StoreError> {
        self.inner.side_threads(case)
    }
    fn ensure_inbox(&self, oin: &wire::Oin, at: u64) -> Result<ThreadId, StoreError> {
        self.inner.ensure_inbox(oin, at)
    }
    fn is_inbox(&self, t: ThreadId) -> Result<bool, StoreError> {
        self.inner.is_inbox(t)
    }
    fn remove_members(&self, t: ThreadId, b: &MemberId, m: &[MemberId], at: u64) -> Result<Vec<Entry>, StoreError> {
        self.inner.remove_members(t, b, m, at)
    }
    fn add_member(&self, t: ThreadId, b: &MemberId, m: &MemberId, at: u64) -> Result<Appended, StoreError> {
        self.inner.add_member(t, b, m, at)
    }
    fn append_message(
        &self,
        t: ThreadId,
        s: &MemberId,
        id: MessageId,
        p: &[u8],
        at: u64,
    ) -> Result<Appended, StoreError> {
        self.inner.append_message(t, s, id, p, at)
    }
    fn is_member(&self, t: ThreadId, m: &MemberId) -> Result<bool, StoreError> {
        self.inner.is_member(t, m)
    }
    fn members(&self, t: ThreadId) -> Result<Vec<MemberId>, StoreError> {
        self.inner.members(t)
    }
    fn threads_of(&self, m: &MemberId) -> Result<Vec<ThreadId>, StoreError> {
        self.inner.threads_of(m)
    }
    fn intervals(&self, t: ThreadId, m: &MemberId) -> Result<Vec<Interval>, StoreError> {
        self.inner.intervals(t, m)
    }
    fn former_threads(&self, m: &MemberId) -> Result<Vec<ThreadId>, StoreError> {
        self.inner.former_threads(m)
    }
    fn organisation_cases(&self, oin: &Oin) -> Result<HashSet<ThreadId>, StoreError> {
        self.inner.organisation_cases(oin)
    }
    fn farewell(&self, t: ThreadId, m: &MemberId) -> Result<Option<Ownership>, StoreError> {
        self.inner.farewell(t, m)
    }
    fn entries_after(&self, t: ThreadId, a: u64, l: usize) -> Result<Vec<Entry>, StoreError> {
        self.inner.entries_after(t, a, l)
    }
    fn last_seq(&self, t: ThreadId) -> Result<u64, StoreError> {
        self.inner.last_seq(t)
    }
    fn cursor(&self, m: &MemberId, d: &wire::DeviceId, t: ThreadId) -> Result<u64, StoreError> {
        self.inner.cursor(m, d, t)
    }
    fn advance_cursor(&self, m: &MemberId, d: &wire::DeviceId, t: ThreadId, s: u64) -> Result<(), StoreError> {
        self.inner.advance_cursor(m, d, t, s)
    }
    fn devices(&self, m: &MemberId) -> Result<Vec<(wire::DeviceId, hub::devices::DeviceRecord)>, StoreError> {
        self.inner.devices(m)
    }
    fn put_device(&self, m: &MemberId, w: &hub::store::DeviceWrite<'_>) -> Result<(), StoreError> {
        self.inner.put_device(m, w)
    }
    fn group_state(&self, t: ThreadId) -> Result<Option<Vec<u8>>, StoreError> {
        assert!(!self.group_state_panics.load(Ordering::SeqCst), "injected: a bug while checking a write");
        self.inner.group_state(t)
    }
    fn group_info(&self, t: ThreadId) -> Result<Option<Vec<u8>>, StoreError> {
        self.inner.group_info(t)
    }
    fn init_group(&self, t: ThreadId, s: &[u8], g: &[u8]) -> Result<(), StoreError> {
        self.inner.init_group(t, s, g)
    }
    fn apply_commit(&self, c: &AcceptedCommit<'_>) -> Result<Vec<(ThreadId, Entry)>, StoreError> {
        self.inner.apply_commit(c)
    }
    fn add_key_packages(&self, m: &MemberId, p: &[Vec<u8>]) -> Result<u64, StoreError> {
        self.inner.add_key_packages(m, p)
    }
    fn claim_key_package(
        &self,
        t: ThreadId,
        c: &MemberId,
        m: &MemberId,
        at: u64,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        self.inner.claim_key_package(t, c, m, at)
    }
    fn holds_claims(&self, t: ThreadId, c: &MemberId, d: &[[u8; 32]]) -> Result<bool, StoreError> {
        self.inner.holds_claims(t, c, d)
    }
    fn key_package_stock(&self, m: &MemberId) -> Result<u64, StoreError> {
        self.inner.key_package_stock(m)
    }
    fn blob(&self, t: ThreadId, b: BlobId) -> Result<Option<BlobRecord>, StoreError> {
        self.inner.blob(t, b)
    }
    fn put_blob_chunk(&self, b: BlobId, r: &BlobRecord, i: u32, d: &[u8]) -> Result<(), StoreError> {
        self.inner.put_blob_chunk(b, r, i, d)
    }
    fn blob_chunk(&self, t: ThreadId, b: BlobId, i: u32) -> Result<Option<Vec<u8>>, StoreError> {
        self.inner.blob_chunk(t, b, i)
    }
    fn threads(&self) -> Result<Vec<ThreadId>, StoreError> {
        self.inner.threads()
    }
    fn ownership(&self, t: ThreadId) -> Result<Option<Ownership>, StoreError> {
        self.inner.ownership(t)
    }
    fn is_read_only(&self, t: ThreadId, m: &MemberId) -> Result<bool, StoreError> {
        self.inner.is_read_only(t, m)
    }
    fn is_closed(&self, t: ThreadId) -> Result<bool, StoreError> {
        self.inner.is_closed(t)
    }
    fn offers_of(&self, oin: &Oin) -> Result<Vec<(ThreadId, Ownership)>, StoreError> {
        self.inner.offers_of(oin)
    }
    fn audit_index(&self, of: AuditIndex<'_>) -> Result<Vec<u64>, StoreError> {
        self.inner.audit_index(of)
    }
    fn ownerships(&self) -> Result<Vec<(ThreadId, Ownership)>, StoreError> {
        self.inner.ownerships()
    }
    fn apply_handover(&self, step: &HandoverStep<'_>) -> Result<Vec<(ThreadId, Entry)>, StoreError> {
        self.inner.apply_handover(step)
    }
    fn expire_messages(&self, t: ThreadId, u: u64, b: u64) -> Result<u64, StoreError> {
        self.inner.expire_messages(t, u, b)
    }
    fn thread_blobs(&self, t: ThreadId) -> Result<Vec<(BlobId, BlobRecord)>, StoreError> {
        self.inner.thread_blobs(t)
    }
    fn blobs(&self) -> Result<Vec<(BlobId, BlobRecord)>, StoreError> {
        self.inner.blobs()
    }
    fn delete_blob(&self, t: ThreadId, b: BlobId) -> Result<(), StoreError> {
        self.inner.delete_blob(t, b)
    }
    fn audit_node(&self, level: u8, index: u64) -> Result<Option<Hash>, StoreError> {
        self.inner.audit_node(level, index)
    }
    fn audit_links(&self, visit: &mut dyn FnMut(Link, Option<AuditRecord>) -> bool) -> Result<(), StoreError> {
        self.inner.audit_links(visit)
    }
    fn latest_head(&self) -> Result<Option<SignedTreeHead>, StoreError> {
        self.inner.latest_head()
    }
    fn prune_audit(&self, b: u64) -> Result<(u64, u64), StoreError> {
        self.inner.prune_audit(b)
    }
    fn audit_entries(&self, f: u64, l: usize) -> Result<Vec<AuditEntry>, StoreError> {
        self.inner.audit_entries(f, l)
    }
    fn last_audit(&self) -> Result<Option<(u64, [u8; 32])>, StoreError> {
        self.inner.last_audit()
    }
    fn put_checkpoint(&self, c: &SignedTreeHead) -> Result<(), StoreError> {
        self.inner.put_checkpoint(c)
    }
    fn checkpoints(&self) -> Result<Vec<SignedTreeHead>, StoreError> {
        self.inner.checkpoints()
    }
    fn revocation_marks(&self) -> Result<Vec<certs::revocation::Mark>, StoreError> {
        self.inner.revocation_marks()
    }
    fn put_revocation_marks(&self, marks: &[certs::revocation::Mark]) -> Result<(), StoreError> {
        self.inner.put_revocation_marks(marks)
    }
    fn flush(&self) -> Result<(), StoreError> {
        if self.flush_fails.load(Ordering::SeqCst) {
            return Err(StoreError::Backend("injected: the disk did not confirm the write".into()));
        }
        self.inner.flush()
    }
}
