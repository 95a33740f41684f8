//! The write path: one thread applies every write and makes it durable in
//! batches (group commit).
//!
//! The hub acknowledges a write only after it is on disk. Flushing once per
//! write would cap throughput at the disk's sync rate, and letting the async
//! workers write to the store themselves lets them block inside the storage engine
//! while it writes its log. So every write goes, in the order a connection
//! submitted it, to one dedicated thread. That thread applies all writes that
//! are waiting and passes the batch to a second thread, which makes it durable
//! with a single [`Store::flush`] and only then answers the writes and publishes
//! their new entries for delivery. While one batch is being flushed the next is
//! already being applied, so the disk's latency does not add to every batch.
//! The storage engine sees a single writer, the async workers never block on storage I/O, under
//! load one flush covers hundreds of writes, and entries reach delivery in
//! sequence order, each encoded once for all members.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::{mpsc, oneshot};
use tracing::error;
use uuid::Uuid;
use wire::{ErrorCode, MemberId, MessageId, ThreadId, WireError};

use wire::audit::{AuditAction, AuditOutcome, AuditRecord};

use certs::binding::Verifier;

use crate::audit::Recorder;
use crate::clock::now_ms;
use crate::delivery::Registry;
use crate::groups::CommitKind;
use crate::stages::{self, Stage};
use crate::store::{AcceptedCommit, Store, StoreError};

/// Writes waiting for the writer thread before submitters wait for room.
const QUEUE: usize = 8192;
/// Writes applied under one flush at most.
const MAX_BATCH: usize = 4096;
/// How long a stalled writer waits before it tries the failed flush again.
const FLUSH_RETRY: std::time::Duration = std::time::Duration::from_millis(100);

/// Why an add was allowed, which the writer checks again in write order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// The policy allowed the adder to bring the member in: the adder must still write.
    Granted,
    /// A handover step admitted the member (rule `admitted-by-handover`): it
    /// must still be on the case, and the write only confirms that.
    Handover,
    /// The member is the owner of the side thread's case (rule
    /// `side-thread-follows-owner`), whom any member of the side thread brings
    /// in, a former owner included: it must still be the owner.
    CaseOwner,
}

/// A write to apply.
#[derive(Debug)]
pub enum Write {
    /// Create a thread (see [`Store::create_thread`]).
    CreateThread {
        /// The creator and first member.
        creator: MemberId,
        /// The creator's idempotency reference.
        client_ref: Uuid,
    },
    /// Open a side thread of a case (see [`Store::create_side_thread`]).
    OpenSideThread {
        /// The case's owner, its first member.
        creator: MemberId,
        /// The creator's idempotency reference.
        client_ref: Uuid,
        /// The case and the purpose.
        side: wire::SideThread,
        /// Side threads the case may have at most (`limits.max_side_threads_per_case`).
        max_sides: usize,
    },
    /// Add a member (see [`Store::add_member`]).
    AddMember {
        /// The thread.
        thread: ThreadId,
        /// Who adds.
        by: MemberId,
        /// Who is added.
        member: MemberId,
        /// Members the thread may hold at most (`limits.max_members_per_thread`).
        max_members: usize,
        /// Which rule allowed it, and so what the writer checks again.
        admission: Admission,
    },
    /// Append a message (see [`Store::append_message`]).
    Append {
        /// The thread.
        thread: ThreadId,
        /// The sender.
        sender: MemberId,
        /// The sender's message id.
        id: MessageId,
        /// The payload: an MLS private message.
        payload: Vec<u8>,
        /// The epoch it was encrypted in, which must be the group's.
        epoch: u64,
    },
    /// Register a thread's new MLS group (see [`crate::groups::init`]).
    InitGroup {
        /// The thread.
        thread: ThreadId,
        /// Who registers it: the thread's creator.
        caller: MemberId,
        /// The GroupInfo message.
        group_info: Vec<u8>,
        /// The ratchet tree.
        ratchet_tree: Vec<u8>,
    },
    /// Apply an MLS commit to a thread's group (see [`crate::groups::check_commit`]).
    Commit {
        /// The thread.
        thread: ThreadId,
        /// Who commits.
        caller: MemberId,
        /// A member's commit, or a device's rejoin.
        kind: CommitKind,
        /// Whether the committer's role may change membership (add or remove
        /// devices); the commit's own content decides whether it does.
        may_change_membership: bool,
        /// The commit message.
        commit: Vec<u8>,
        /// The Welcome for the members it adds.
        welcome: Option<Vec<u8>>,
        /// The GroupInfo of the epoch it leads to (see [`crate::groups::check_group_info`]).
        group_info: Option<Vec<u8>>,
        /// Devices one identity may have in the group (`limits.max_devices_per_identity`).
        max_devices: usize,
    },
    /// Store verified KeyPackages (see [`Store::add_key_packages`]).
    AddKeyPackages {
        /// Whose.
        member: MemberId,
        /// The TLS-encoded KeyPackages.
        packages: Vec<Vec<u8>>,
    },
    /// Hand out one KeyPackage (see [`Store::claim_key_package`]).
    TakeKeyPackage {
        /// The thread it is claimed for.
        thread: ThreadId,
        /// Who claims it, to add it.
        claimer: MemberId,
        /// Whose.
        member: MemberId,
    },
    /// Store an attachment chunk (see [`crate::blobs::put_chunk`]).
    PutBlobChunk {
        /// The chunk.
        upload: crate::blobs::ChunkUpload,
        /// The largest blob allowed, in bytes.
        limits: crate::blobs::BlobLimits,
    },
    /// Nothing but the audit entry that comes with it (reads, denials, connects).
    Audit,
    /// Remembers the CRLs a reread puts in force (see [`Store::revocation_marks`]).
    RevocationMarks {
        /// Each new list's issuer and `thisUpdate`.
        newer: Vec<certs::revocation::Mark>,
    },
    /// Nothing: wakes the writer so that a due checkpoint is signed while idle.
    Tick,
    /// Signs a checkpoint now, due or not (at shutdown, so the log ends signed).
    Seal,
    /// A warm-handover step (see [`crate::handovers::apply`]).
    Handover {
        /// The case.
        thread: ThreadId,
        /// Who takes the step.
        by: MemberId,
        /// The step.
        op: crate::handovers::HandoverOp,
        /// The calendar and the urgency of offers.
        rules: crate::handovers::Rules,
        /// The time of the step.
        now_ms: u64,
    },
    /// Fires handover deadlines (see [`crate::handovers::sweep`]).
    HandoverDeadlines {
        /// The calendar and the urgency of offers.
        rules: crate::handovers::Rules,
        /// The time to fire at.
        now_ms: u64,
    },
    /// Makes each organisation's inbox hold exactly the members the policy
    /// names for it (see [`crate::inbox::sync`]).
    Inboxes {
        /// Per organisation, who receives its inbox.
        members: Vec<(wire::Oin, Vec<MemberId>)>,
    },
    /// Deletes what the retention periods allow (see [`crate::retention::sweep`]).
    Retention {
        /// The periods.
        retention: crate::policy::Retention,
        /// Which devices retention waits for.
        devices: crate::devices::DeviceLimits,
        /// The time to sweep at.
        now_ms: u64,
    },
    /// Record that a device connected (see [`crate::devices::register`]).
    RegisterDevice {
        /// Whose device.
        member: MemberId,
        /// Which.
        device: wire::DeviceId,
        /// The bounds on the identity's devices.
        limits: crate::devices::DeviceLimits,
    },
    /// Move a cursor forward (see [`Store::advance_cursor`]); nobody waits for it.
    Cursor {
        /// Whose cursor.
        member: MemberId,
        /// Which of its devices'.
        device: wire::DeviceId,
        /// The thread.
        thread: ThreadId,
        /// The new position.
        seq: u64,
    },
}

/// What a durable write produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Written {
    /// A thread was created, or found by the creator's reference.
    Thread {
        /// The thread.
        thread: ThreadId,
    },
    /// An entry was appended at `seq`, or found there when `duplicate`.
    Entry {
        /// Its sequence number.
        seq: u64,
        /// True when it was already stored.
        duplicate: bool,
    },
    /// The thread's MLS group was registered at `epoch`.
    Group {
        /// Its epoch.
        epoch: u64,
    },
    /// A commit was accepted: the group is at `epoch` and the commit is entry `seq`.
    Commit {
        /// The new epoch.
        epoch: u64,
        /// The commit's entry.
        seq: u64,
    },
    /// KeyPackages were stored; the member now holds `stock`.
    KeyPackages {
        /// How many the member holds.
        stock: u64,
    },
    /// A KeyPackage was taken, or there was none.
    KeyPackage(Option<Vec<u8>>),
    /// A blob chunk was stored, or was already.
    BlobChunk {
        /// The blob.
        blob: wire::BlobId,
        /// The chunk's position.
        index: u32,
        /// True when it was already stored.
        duplicate: bool,
    },
    /// A cursor moved.
    Cursor,
    /// Only the audit entry was written (or nothing, for a tick).
    Audited,
    /// A retention sweep ran.
    Swept(crate::retention::Swept),
    /// Deadlines fired: the escalations raised, per case.
    Escalated(Vec<(ThreadId, wire::handover::Escalation)>),
    /// A handover step was stored; the case's ownership after it.
    Ownership(Box<wire::handover::Ownership>),
}

/// Why a write did not become durable.
#[derive(Debug, Clone, thiserror::Error)]
pub enum WriteError {
    /// The store refused the write or failed to flush it.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The write's own checks refused it (a commit that does not fit the group
    /// or the membership table); nothing was written.
    #[error("{0}")]
    Refused(WireError),
    /// The writer thread is gone (the hub is shutting down).
    #[error("the hub is shutting down")]
    Closed,
    /// An earlier flush failed and the store has not yet made it good: the
    /// hub takes no writes until it has, so nothing is acknowledged past a gap.
    #[error("the store could not make earlier writes durable; writes resume once it does")]
    Stalled,
}

/// The answer to one write, delivered once it is durable.
pub type Durable = oneshot::Receiver<Result<Written, WriteError>>;

struct Job {
    write: Write,
    audit: Option<AuditRecord>,
    reply: Option<oneshot::Sender<Result<Written, WriteError>>>,
    /// When it was submitted, for the queue's stage timing.
    queued: Instant,
}

/// A handle to the write path; cheap to clone.
#[derive(Clone, Debug)]
pub struct WriteLog {
    jobs: mpsc::Sender<Job>,
}

impl WriteLog {
    /// Starts the writer and flusher threads for `store`, publishing new entries
    /// to `registry` and recording audit entries with `recorder`.
    /// MLS leaves in commits must be bound to certificates from `identities`.
    pub fn start(
        store: Arc<dyn Store>,
        registry: Arc<Registry>,
        recorder: Recorder,
        identities: Arc<Verifier>,
    ) -> std::io::Result<Self> {
        let (jobs, receiver) = mpsc::channel(QUEUE);
        // At most one batch waits while another is flushed: deeper would only add latency.
        let (batches, flusher_input) = std::sync::mpsc::sync_channel(1);
        let flusher_store = store.clone();
        let stalled = Arc::new(AtomicBool::new(false));
        let flusher_stalled = stalled.clone();
        std::thread::Builder::new()
            .name("ketenhub-flusher".into())
            .spawn(move || flush_loop(flusher_store, registry, flusher_input, &flusher_stalled))?;
        std::thread::Builder::new()
            .name("ketenhub-writer".into())
            .spawn(move || apply_loop(store, recorder, identities, receiver, batches, &stalled))?;
        Ok(Self { jobs })
    }

    /// Queues a write and returns where its durable result will arrive. Writes
    /// submitted one after another are applied in that order.
    pub async fn submit(&self, write: Write, audit: Option<AuditRecord>) -> Durable {
        let (reply, durable) = oneshot::channel();
        // If the writer is gone the reply sender is dropped and `durable` says so.
        stages::record_receive();
        let _ = self.jobs.send(Job { write, audit, reply: Some(reply), queued: Instant::now() }).await;
        durable
    }

    /// Queues a write whose result nobody waits for.
    pub async fn submit_unanswered(&self, write: Write, audit: Option<AuditRecord>) {
        stages::record_receive();
        let _ = self.jobs.send(Job { write, audit, reply: None, queued: Instant::now() }).await;
    }
}

/// A write's outcome and the entries it added, for publishing.
type Applied = (Written, Vec<(ThreadId, wire::Entry)>);

/// What the writer knows of the threads' MLS groups: each one's epoch, and
/// the identity CA their leaves must be bound to. Only the writer changes
/// epochs, so checking a message against this, in write order, is exact: no
/// message encrypted for an old epoch lands after the commit that ended it.
struct Groups {
    epochs: HashMap<ThreadId, u64>,
    identities: Arc<Verifier>,
}

impl Groups {
    fn of(&mut self, store: &dyn Store, thread: ThreadId) -> Result<u64, WriteError> {
        if let Some(epoch) = self.epochs.get(&thread) {
            return Ok(*epoch);
        }
        let epoch = crate::groups::epoch(&group_state(store, thread)?, thread).map_err(WriteError::Refused)?;
        self.epochs.insert(thread, epoch);
        Ok(epoch)
    }
}

/// Writes audit entries from inside a write, before the effect they describe:
/// a commit's removals, a departure, an escalation, a retention sweep.
pub struct Auditor<'a> {
    store: &'a dyn Store,
    recorder: &'a mut Recorder,
    request: Option<&'a AuditRecord>,
}

impl<'a> Auditor<'a> {
    /// An auditor for the hub's own work on `store` (a sweep run by hand, as
    /// `hub` subcommands and tests do), outside any request.
    pub fn new(store: &'a dyn Store, recorder: &'a mut Recorder) -> Self {
        Self { store, recorder, request: None }
    }

    /// Appends `record` to the chain and returns its seq; the write that asked is refused if it cannot be.
    pub fn record(&mut self, record: AuditRecord) -> Result<u64, WriteError> {
        self.recorder.record(self.store, record).map(|entry| entry.seq).map_err(|e| {
            error!(error = %e, "cannot write an audit entry; the action is refused");
            WriteError::Store(e)
        })
    }

    /// Records that `member`'s membership of `thread` ends, as part of the
    /// request being applied (or of the hub's own sweep, without one).
    pub fn removal(&mut self, thread: ThreadId, member: &MemberId, rule: &str) -> Result<(), WriteError> {
        let record = match self.request {
            Some(request) => AuditRecord {
                action: AuditAction::RemoveMember,
                case: Some(thread),
                object: Some(member.to_string()),
                rule: format!("{}; {rule}", request.rule),
                ..request.clone()
            },
            None => AuditRecord {
                case: Some(thread),
                object: Some(member.to_string()),
                rule: rule.to_owned(),
                ..crate::audit::hub_record(AuditAction::RemoveMember)
            },
        };
        self.record(record).map(drop)
    }
}

fn apply(store: &dyn Store, groups: &mut Groups, write: Write, audit: &mut Auditor<'_>) -> Result<Applied, WriteError> {
    let at = now_ms();
    let appended = |thread: ThreadId, a: crate::store::Appended| {
        (Written::Entry { seq: a.seq, duplicate: a.duplicate() }, a.entry.map(|e| (thread, e)).into_iter().collect())
    };
    Ok(match write {
        Write::CreateThread { creator, client_ref } => {
            let c = store.create_thread(&creator, client_ref, at)?;
            (Written::Thread { thread: c.thread }, c.entry.map(|e| (c.thread, e)).into_iter().collect())
        }
        Write::InitGroup { thread, caller, group_info, ratchet_tree } => {
            if !store.is_member(thread, &caller)? {
                return Err(WriteError::Refused(WireError::thread_not_found()));
            }
            if store.group_state(thread)?.is_some() {
                return Err(refused(ErrorCode::Conflict, "the thread's group is already registered"));
            }
            let state = crate::groups::init(&groups.identities, thread, &caller, &group_info, &ratchet_tree)
                .and_then(|state| crate::groups::check_group_info(&state, thread, &group_info).map(|()| state))
                .map_err(WriteError::Refused)?;
            store.init_group(thread, &state, &group_info)?;
            groups.epochs.insert(thread, 0);
            (Written::Group { epoch: 0 }, Vec::new())
        }
        Write::Commit { thread, caller, kind, may_change_membership, commit, welcome, group_info, max_devices } => {
            let commit = ProposedCommit {
                thread,
                caller: &caller,
                kind,
                may_change_membership,
                commit: &commit,
                welcome,
                group_info,
                max_devices,
            };
            let applied = apply_commit(store, &groups.identities, commit, at, audit)?;
            if let Written::Commit { epoch, .. } = applied.0 {
                groups.epochs.insert(thread, epoch);
            }
            applied
        }
        Write::OpenSideThread { creator, client_ref, side, max_sides } => {
            if let Some(thread) = store.created_by_ref(&creator, client_ref)? {
                if store.side(thread)?.is_none_or(|s| s.case != side.case) {
                    return Err(refused(ErrorCode::Conflict, "client_ref already names another thread of the caller"));
                }
                return Ok((Written::Thread { thread }, Vec::new()));
            }
            still_adds(store, side.case, &creator)?;
            if store.ownership(side.case)?.is_none_or(|o| o.owner != creator) {
                return Err(forbidden("side-thread-by-owner", "only the case's owner opens a side thread"));
            }
            if store.side_threads(side.case)?.len() >= max_sides {
                let full = "the case has that many side threads";
                return Err(WriteError::Refused(crate::quotas::exceeded(
                    "limits.max_side_threads_per_case",
                    max_sides,
                    full,
                )));
            }
            let c = store.create_side_thread(&side, &creator, client_ref, at)?;
            (Written::Thread { thread: c.thread }, c.entry.map(|e| (c.thread, e)).into_iter().collect())
        }
        Write::AddMember { thread, by, member, max_members, admission } => {
            match admission {
                Admission::CaseOwner => follows_owner(store, thread, &by, &member)?,
                Admission::Granted | Admission::Handover => still_adds(store, thread, &by)?,
            }
            let present = store.is_member(thread, &member)?;
            if admission == Admission::Handover && !present {
                return Err(WriteError::Refused(WireError::new(
                    ErrorCode::Forbidden,
                    "denied by rule admitted-by-handover: the member left the case before it could be added",
                )));
            }
            room_for(store, thread, present, max_members)?;
            appended(thread, store.add_member(thread, &by, &member, at)?)
        }
        Write::Append { thread, sender, id, payload, epoch } => {
            still_adds(store, thread, &sender)?;
            let current = groups.of(store, thread)?;
            if epoch != current {
                return Err(WriteError::Refused(crate::groups::stale(current)));
            }
            appended(thread, store.append_message(thread, &sender, id, &payload, at)?)
        }
        Write::AddKeyPackages { member, packages } => {
            (Written::KeyPackages { stock: store.add_key_packages(&member, &packages)? }, Vec::new())
        }
        Write::TakeKeyPackage { thread, claimer, member } => {
            crate::requests::open_case(store, thread).map_err(WriteError::Refused)?;
            (Written::KeyPackage(store.claim_key_package(thread, &claimer, &member, at)?), Vec::new())
        }
        Write::PutBlobChunk { upload, limits } => {
            still_adds(store, upload.thread, &upload.uploader)?;
            let duplicate = crate::blobs::put_chunk(store, &upload, limits, at)?;
            (Written::BlobChunk { blob: upload.blob, index: upload.index, duplicate }, Vec::new())
        }
        Write::RegisterDevice { member, device, limits } => {
            crate::devices::register(store, &member, &device, at, limits)?;
            (Written::Audited, Vec::new())
        }
        Write::Cursor { member, device, thread, seq } => {
            store.advance_cursor(&member, &device, thread, seq)?;
            (Written::Cursor, Vec::new())
        }
        Write::Audit | Write::Tick | Write::Seal => (Written::Audited, Vec::new()),
        Write::RevocationMarks { newer } => {
            let kept = store.revocation_marks()?;
            if let Some(older) = certs::revocation::rolled_back(&newer, &kept) {
                return Err(refused(ErrorCode::Conflict, &crate::tls::TlsError::rolled_back(older).to_string()));
            }
            store.put_revocation_marks(&certs::revocation::merge_marks(&kept, &newer))?;
            (Written::Audited, Vec::new())
        }
        Write::Handover { thread, by, op, rules, now_ms } => {
            let (ownership, entries) = crate::handovers::apply(store, &rules, thread, &by, op, now_ms, audit)?;
            (Written::Ownership(Box::new(ownership)), entries)
        }
        Write::HandoverDeadlines { rules, now_ms } => {
            let (raised, entries) = crate::handovers::sweep(store, &rules, now_ms, audit)?;
            (Written::Escalated(raised), entries)
        }
        Write::Inboxes { members } => (Written::Audited, crate::inbox::sync(store, &members, at, audit)?),
        Write::Retention { retention, devices, now_ms } => {
            (Written::Swept(crate::retention::sweep(store, &retention, devices, now_ms, audit)?), Vec::new())
        }
    })
}

/// Refuses a new member (one not `present` yet) once the thread holds `max_members`.
pub(crate) fn room_for(
    store: &dyn Store,
    thread: ThreadId,
    present: bool,
    max_members: usize,
) -> Result<(), WriteError> {
    if !present && store.members(thread)?.len() >= max_members {
        let full = crate::quotas::exceeded("limits.max_members_per_thread", max_members, "the thread is full");
        return Err(WriteError::Refused(full));
    }
    Ok(())
}

/// Checks, in write order, that `by` (a member of side thread `thread`, who may
/// only read) still brings in the owner of the thread's case: `member` is
/// that owner, and the case is open.
fn follows_owner(store: &dyn Store, thread: ThreadId, by: &MemberId, member: &MemberId) -> Result<(), WriteError> {
    if !store.is_member(thread, by)? || !store.is_member(store.case_of(thread)?, by)? {
        return Err(WriteError::Refused(WireError::thread_not_found()));
    }
    crate::requests::open_case(store, thread).map_err(WriteError::Refused)?;
    if case_owner(store, thread)?.as_ref() != Some(member) {
        return Err(forbidden("side-thread-follows-owner", format!("{member} no longer holds regie over the case")));
    }
    Ok(())
}

/// The owner of a side thread's case; None for a thread that is no side thread.
fn case_owner(store: &dyn Store, thread: ThreadId) -> Result<Option<MemberId>, WriteError> {
    let case = store.case_of(thread)?;
    if case == thread {
        return Ok(None);
    }
    Ok(store.ownership(case)?.map(|o| o.owner))
}

/// Checks, in write order, that `member` still writes something new in
/// `thread`: as [`still_writes`], and the case is not closed meanwhile.
fn still_adds(store: &dyn Store, thread: ThreadId, member: &MemberId) -> Result<(), WriteError> {
    still_writes(store, thread, member)?;
    crate::requests::open_case(store, thread).map_err(WriteError::Refused)
}

/// Checks, in write order, that `member` still writes in `thread`: the check at
/// the enforcement point read state that an earlier write in the same batch
/// (a removal, a completed handover) may have changed since.
fn still_writes(store: &dyn Store, thread: ThreadId, member: &MemberId) -> Result<(), WriteError> {
    if !store.is_member(thread, member)? {
        return Err(WriteError::Refused(WireError::thread_not_found()));
    }
    if store.is_read_only(thread, member)? {
        return Err(refused(
            ErrorCode::Forbidden,
            "denied by rule background-read-only: a former owner reads the case but no longer writes in it",
        ));
    }
    Ok(())
}

fn refused(code: ErrorCode, message: &str) -> WriteError {
    WriteError::Refused(WireError::new(code, message))
}

/// The stored public state of the thread's MLS group, which must exist.
fn group_state(store: &dyn Store, thread: ThreadId) -> Result<Vec<u8>, WriteError> {
    store.group_state(thread)?.ok_or_else(|| refused(ErrorCode::Invalid, "the thread has no MLS group"))
}

/// A commit as the writer receives it.
struct ProposedCommit<'a> {
    thread: ThreadId,
    caller: &'a MemberId,
    kind: CommitKind,
    may_change_membership: bool,
    commit: &'a [u8],
    welcome: Option<Vec<u8>>,
    group_info: Option<Vec<u8>>,
    max_devices: usize,
}

fn forbidden(rule: &str, reason: impl std::fmt::Display) -> WriteError {
    WriteError::Refused(WireError::new(ErrorCode::Forbidden, format!("denied by rule {rule}: {reason}")))
}

/// Checks a commit against the group, the membership table and the case's
/// ownership, records the memberships it ends, then stores it.
fn apply_commit(
    store: &dyn Store,
    identities: &Verifier,
    proposed: ProposedCommit<'_>,
    at_ms: u64,
    audit: &mut Auditor<'_>,
) -> Result<Applied, WriteError> {
    let ProposedCommit { thread, caller, kind, may_change_membership, commit, welcome, group_info, max_devices } =
        proposed;
    let side_owner = case_owner(store, thread)?;
    // In a side thread a former owner's device still brings the case's new owner in, and does nothing else.
    let mut read_only = None;
    match kind {
        CommitKind::Member => match still_writes(store, thread, caller) {
            Err(refusal) if side_owner.is_some() && store.is_member(thread, caller)? => read_only = Some(refusal),
            other => other?,
        },
        // Whoever may read the case may get its group back, former owners included.
        CommitKind::Rejoin if !store.is_member(thread, caller)? => {
            return Err(WriteError::Refused(WireError::thread_not_found()))
        }
        CommitKind::Rejoin => {}
    }
    let state = group_state(store, thread)?;
    let checked =
        crate::groups::check_commit(identities, &state, thread, caller, commit, kind).map_err(WriteError::Refused)?;
    let changes_membership = !checked.added.is_empty() || !checked.removes_devices_of.is_empty();
    let adds_only_owner = !checked.added.is_empty()
        && checked.removes_devices_of.is_empty()
        && checked.added.iter().all(|m| Some(m) == side_owner.as_ref());
    if let Some(refusal) = read_only.filter(|_| !adds_only_owner) {
        return Err(refusal);
    }
    // A rejoin removes only the caller's own stale devices (checked in `groups`): no membership changes.
    if changes_membership && !may_change_membership && kind == CommitKind::Member {
        return Err(forbidden("role-forbids", "this role may not add or remove members"));
    }
    if checked.most_devices > max_devices {
        return Err(WriteError::Refused(crate::quotas::exceeded(
            "limits.max_devices_per_identity",
            max_devices,
            "an identity would have too many devices in the group",
        )));
    }
    if !checked.added.is_empty() {
        // KeyPackages claimed before a close bring no new device into a closed case.
        crate::requests::open_case(store, thread).map_err(WriteError::Refused)?;
    }
    for added in &checked.added {
        if !store.is_member(thread, added)? {
            return Err(WriteError::Refused(WireError::new(
                ErrorCode::Forbidden,
                format!("denied by rule add-not-on-membership: the commit adds {added}, who is not on the thread's membership"),
            )));
        }
    }
    let mut ownership = store.ownership(thread)?;
    let owner = ownership.as_ref().map(|o| &o.owner).or(side_owner.as_ref());
    if let Some(owner) = owner.filter(|o| checked.removes_devices_of.contains(o)) {
        return Err(forbidden(
            "owner-stays",
            format!("{owner} holds regie over the case; ownership moves only by a completed handover"),
        ));
    }
    let others_removed = checked.removes_devices_of.iter().any(|m| m != caller);
    if side_owner.as_ref().is_some_and(|o| o != caller) && others_removed {
        return Err(forbidden("side-thread-owner-removes", "in a side thread only the case's owner removes others"));
    }
    let participant = ownership.as_ref().is_some_and(|o| o.participant(caller).is_some());
    if participant && others_removed {
        return Err(forbidden("participants-remove-no-one", "a consultant or co-worker removes only its own devices"));
    }
    if checked.added.is_empty() != welcome.is_none() {
        return Err(refused(ErrorCode::Invalid, "a commit that adds members needs a Welcome, and only then"));
    }
    let group_info = group_info.ok_or_else(|| {
        refused(ErrorCode::Invalid, "a commit must carry the GroupInfo of the epoch it leads to (group_info)")
    })?;
    crate::groups::check_group_info(&checked.state, thread, &group_info).map_err(WriteError::Refused)?;
    if !store.holds_claims(thread, caller, &checked.added_packages)? {
        return Err(forbidden(
            "key-package-not-claimed",
            "the commit adds a KeyPackage the hub did not hand to this identity for this thread",
        ));
    }
    // Only a current member's membership can end; a departed member's devices
    // leave the group without a second removal.
    let mut removed = Vec::new();
    for member in &checked.removed {
        if store.is_member(thread, member)? {
            audit.removal(thread, member, "removed-by-commit")?;
            removed.push(member.clone());
        }
    }
    let done = |o: &mut wire::handover::Ownership| {
        let due = o.removal_due.len();
        o.removal_due.retain(|m| !checked.removed.contains(m));
        o.removal_due.len() != due
    };
    let ownership = ownership.as_mut().and_then(|o| done(o).then_some(&*o));
    // Whom a commit removes from the case leaves its side threads with it.
    let evict_sides = match side_owner {
        Some(_) => Vec::new(),
        None if removed.is_empty() => Vec::new(),
        None => crate::handovers::leave_side_threads(
            store,
            thread,
            |m| removed.contains(m),
            |_| "removed-by-commit",
            audit,
        )?,
    };
    let accepted = AcceptedCommit {
        thread,
        by: caller,
        state: &checked.state,
        epoch: checked.epoch,
        commit,
        group_info: &group_info,
        redeemed: &checked.added_packages,
        removed: &removed,
        welcome: welcome.as_deref().map(|w| (checked.added.as_slice(), w)),
        evict_sides: &evict_sides,
        ownership,
        at_ms,
    };
    let entries = store.apply_commit(&accepted)?;
    let seq = entries
        .iter()
        .find(|(t, e)| *t == thread && matches!(e.body, wire::EntryBody::Commit { .. }))
        .map_or(0, |(_, e)| e.seq);
    Ok((Written::Commit { epoch: checked.epoch, seq }, entries))
}

/// One applied batch: each write's reply channel and what applying it produced.
type Batch = Vec<(Option<oneshot::Sender<Result<Written, WriteError>>>, Result<Applied, WriteError>)>;

/// A batch on its way to the flusher, with when its last write was applied.
type Handed = (Instant, Batch);

/// Applies a write together with its audit entry. The entry goes first: an
/// action whose entry cannot be written is refused before it takes effect. A
/// write that then fails gets a second entry saying so.
fn apply_audited(
    store: &dyn Store,
    groups: &mut Groups,
    recorder: &mut Recorder,
    write: Write,
    audit: Option<AuditRecord>,
) -> Result<Applied, WriteError> {
    let mut auditor = Auditor { store, recorder, request: audit.as_ref() };
    let recorded = match &audit {
        Some(record) => auditor.record(record.clone())?,
        None => 0,
    };
    let result = apply(store, groups, write, &mut auditor);
    if let (Err(e), Some(record)) = (&result, &audit) {
        let failed = AuditRecord {
            outcome: AuditOutcome::Failed,
            rule: wire::audit::failure_rule(&record.rule, e, recorded),
            at_ms: now_ms(),
            ..record.clone()
        };
        auditor.record(failed)?;
    }
    result
}

/// How much of a write's Debug form a fault while applying it logs.
const WHAT_CHARS: usize = 80;

/// The first `chars` characters of `value`'s Debug form, formatting no further than that.
fn debug_prefix(value: &impl std::fmt::Debug, chars: usize) -> String {
    struct Prefix {
        text: String,
        room: usize,
    }
    impl std::fmt::Write for Prefix {
        fn write_str(&mut self, s: &str) -> std::fmt::Result {
            for c in s.chars() {
                if self.room == 0 {
                    // An error ends the formatting: nothing past the prefix is produced.
                    return Err(std::fmt::Error);
                }
                self.text.push(c);
                self.room -= 1;
            }
            Ok(())
        }
    }
    let mut prefix = Prefix { text: String::with_capacity(chars), room: chars };
    let _ = std::fmt::Write::write_fmt(&mut prefix, format_args!("{value:?}"));
    prefix.text
}

/// Applies a write as [`apply_audited`] does, but a panic while checking or
/// applying it fails that write alone: the writer thread serves on. Every
/// change a write makes is one atomic store batch (or none), except a message
/// and an audit entry, whose plain inserts end with the entry itself; and the
/// chain advances only after its entry is stored. A write interrupted by a
/// panic thus leaves at most what a crash leaves (an audit entry's index key,
/// which queries check against the entry; see [`Store::append_audit`]).
fn apply_guarded(
    store: &dyn Store,
    groups: &mut Groups,
    recorder: &mut Recorder,
    write: Write,
    audit: Option<AuditRecord>,
) -> Result<Applied, WriteError> {
    // Only the start is kept for the log, and only that much is formatted: the writer thread does
    // this for every write, and a message's Debug form spells out its whole payload.
    let what = debug_prefix(&write, WHAT_CHARS);
    let applied =
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| apply_audited(store, groups, recorder, write, audit)));
    applied.unwrap_or_else(|_| {
        error!(write = %what, "a fault while checking a write; that write is refused and the hub serves on");
        // The epoch cache may have been half updated: reload it from the store when next needed.
        groups.epochs.clear();
        Err(WriteError::Refused(WireError::new(
            ErrorCode::Internal,
            "the hub failed to check this write; nothing was changed",
        )))
    })
}

fn apply_loop(
    store: Arc<dyn Store>,
    mut recorder: Recorder,
    identities: Arc<Verifier>,
    mut jobs: mpsc::Receiver<Job>,
    batches: std::sync::mpsc::SyncSender<Handed>,
    stalled: &AtomicBool,
) {
    let mut groups = Groups { epochs: HashMap::new(), identities };
    while let Some(first) = jobs.blocking_recv() {
        let mut batch = Vec::with_capacity(64);
        let mut job = Some(first);
        let mut seal = false;
        while let Some(Job { write, audit, reply, queued }) = job.take() {
            if stalled.load(Ordering::SeqCst) {
                // Refused unapplied: nothing new may pile up behind writes that are not yet durable.
                if let Some(reply) = reply {
                    let _ = reply.send(Err(WriteError::Stalled));
                }
                job = jobs.try_recv().ok();
                continue;
            }
            seal |= matches!(write, Write::Seal);
            let started = Instant::now();
            stages::record_time(Stage::Queue, started - queued);
            batch.push((reply, apply_guarded(store.as_ref(), &mut groups, &mut recorder, write, audit)));
            stages::record_time(Stage::Apply, started.elapsed());
            if batch.len() < MAX_BATCH {
                job = jobs.try_recv().ok();
            }
        }
        if let Err(e) = recorder.checkpoint_if_due(store.as_ref(), now_ms(), seal) {
            error!(error = %e, "cannot store an audit checkpoint; retrying with the next batch");
        }
        if batches.send((Instant::now(), batch)).is_err() {
            return;
        }
    }
}

/// Makes each batch durable with one flush, then answers its writes and
/// publishes their entries. When a flush fails, the batch's writes are refused
/// but stay in the store, so the hub stalls (see [`WriteError::Stalled`]) and
/// retries the flush; once one succeeds, every entry that waited is published,
/// in order, before anything newer. So a member never receives an entry past
/// one that is missing, and an entry a resend finds stored is delivered.
fn flush_loop(
    store: Arc<dyn Store>,
    registry: Arc<Registry>,
    batches: std::sync::mpsc::Receiver<Handed>,
    stalled: &AtomicBool,
) {
    let mut waiting: Vec<(ThreadId, wire::Entry)> = Vec::new();
    loop {
        let (handed, batch) = if stalled.load(Ordering::SeqCst) {
            match batches.recv_timeout(FLUSH_RETRY) {
                Ok(batch) => batch,
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => (Instant::now(), Vec::new()),
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return,
            }
        } else {
            match batches.recv() {
                Ok(batch) => batch,
                Err(_) => return,
            }
        };
        let flushing = Instant::now();
        stages::record_time(Stage::Handoff, flushing - handed);
        stages::record(Stage::Batch, batch.len() as u64);
        let flushed = store.flush();
        let answering = Instant::now();
        stages::record_time(Stage::Flush, answering - flushing);
        match &flushed {
            Ok(()) => {
                if stalled.swap(false, Ordering::SeqCst) {
                    tracing::info!(entries = waiting.len(), "the store is durable again; writes resume");
                }
                for (thread, entry) in waiting.drain(..) {
                    registry.publish(store.as_ref(), thread, entry);
                }
            }
            Err(e) => {
                if !stalled.swap(true, Ordering::SeqCst) {
                    error!(error = %e, "flush failed; writes are refused until the store is durable again");
                }
            }
        }
        for (reply, result) in batch {
            let answer = match (&flushed, result) {
                (Err(e), result) => {
                    waiting.extend(result.map(|(_, news)| news).unwrap_or_default());
                    Err(WriteError::Store(e.clone()))
                }
                (Ok(()), Err(e)) => Err(e),
                (Ok(()), Ok((written, news))) => {
                    for (thread, entry) in news {
                        registry.publish(store.as_ref(), thread, entry);
                    }
                    Ok(written)
                }
            };
            if let Some(reply) = reply {
                // A submitter that stopped waiting is not an error.
                let _ = reply.send(answer);
            }
        }
        stages::record_time(Stage::Answer, answering.elapsed());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Counts how much of a value's Debug form is produced.
    struct Counted(std::cell::Cell<usize>);

    impl std::fmt::Debug for Counted {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            for _ in 0..10_000 {
                self.0.set(self.0.get() + 1);
                f.write_str("0, ")?;
            }
            Ok(())
        }
    }

    #[test]
    fn a_writes_description_is_its_debug_prefix_formatted_no_further() {
        let payload = vec![7u8; 4096];
        let full = format!("{payload:?}");
        assert_eq!(debug_prefix(&payload, WHAT_CHARS), full.chars().take(WHAT_CHARS).collect::<String>());
        assert_eq!(debug_prefix(&"é".repeat(100), 3), "\"éé");
        let counted = Counted(std::cell::Cell::new(0));
        assert_eq!(debug_prefix(&counted, WHAT_CHARS).len(), WHAT_CHARS);
        assert!(counted.0.get() <= WHAT_CHARS / 3 + 1, "formatting went on: {} pieces", counted.0.get());
    }
}
