//! Delivery of thread entries to the members that are online.
//!
//! Each open connection has a [`Mailbox`]: a set of threads with news and a
//! wake-up. When an entry becomes durable the writer thread publishes it
//! ([`Registry::publish`]): the entry is encoded once as an event frame, kept in
//! a small per-thread cache of recent frames, and its thread is marked in the
//! mailbox of every online member. The connection's [`pump`] then sends the
//! frames after where that connection stands, from the cache when it covers
//! them and from the store otherwise (a reconnect with a backlog, a thread
//! evicted from the cache). Delivery is therefore in order, resumes from the
//! member's cursor, never shows an entry before it is durable, and uses memory
//! bounded by the cache budget and the number of threads, not the number of
//! messages.

use std::collections::hash_map::Entry as Slot;
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use certs::revocation::{CertRefusal, CertValidity};
use tokio::sync::Notify;
use tokio_tungstenite::tungstenite::Bytes;
use wire::{DeviceId, Entry, EntryBody, ErrorCode, HubFrame, Identity, MemberId, ThreadId, WireError};

use wire::audit::AuditRecord;

use crate::durability::{Write, WriteLog};
use crate::locks::lock;
use crate::outbox::Outbox;
use crate::store::{Interval, Store, StoreError};

/// Entries read from the store per round, per thread.
const BATCH: usize = 64;
/// Recent frames kept per thread.
const RECENT_PER_THREAD: usize = 64;
/// Bytes of recent frames kept over all threads.
const RECENT_BUDGET: usize = 32 << 20;

/// Why the hub ends an open connection it no longer admits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Farewell {
    /// The rule that no longer admits it, for the audit log.
    pub rule: &'static str,
    /// An error frame to send before the close, if the client is to learn more.
    pub error: Option<WireError>,
    /// The reason in the close frame.
    pub close: &'static str,
}

/// The refusal of a certificate that is no longer good, as the client sees it.
pub fn certificate_denied(refusal: &CertRefusal) -> WireError {
    WireError::new(ErrorCode::Forbidden, format!("denied by rule {}: {refusal}", refusal.rule()))
}

impl Farewell {
    /// A reloaded policy no longer admits the connection (closed without an error frame).
    pub fn policy() -> Self {
        Self {
            rule: "policy-no-longer-admits",
            error: None,
            close: "the policy in force no longer admits this connection",
        }
    }

    /// The connection's certificate is no longer good: expired, revoked, or its
    /// issuer's CRL out of date. The close frame names the rule.
    pub fn certificate(refusal: &CertRefusal) -> Self {
        Self { rule: refusal.rule(), error: Some(certificate_denied(refusal)), close: refusal.rule() }
    }

    /// The audit record of closing the connection that `record` describes.
    pub fn record(&self, record: AuditRecord) -> AuditRecord {
        AuditRecord {
            action: wire::audit::AuditAction::Connect,
            outcome: wire::audit::AuditOutcome::Denied,
            rule: format!("{}: the connection is closed", self.rule),
            at_ms: crate::clock::now_ms(),
            ..record
        }
    }
}

/// The threads with news for one connection.
#[derive(Debug, Default)]
pub struct Mailbox {
    pending: Mutex<HashSet<ThreadId>>,
    wake: Notify,
    /// Set when the hub no longer admits this connection: nothing more is
    /// sent, and the connection closes.
    revoked: tokio_util::sync::CancellationToken,
    /// Why, once revoked.
    farewell: Mutex<Option<Farewell>>,
    /// Set when the connection closes: the pump records what it sent and stops.
    closed: AtomicBool,
    /// Deliveries not yet recorded, per thread: the first and last seq sent.
    /// An async lock, held while records are submitted, so that an ack waits
    /// for the record of what it acknowledges (see [`Mailbox::before_ack`]).
    unrecorded: tokio::sync::Mutex<HashMap<ThreadId, (u64, u64)>>,
}

impl Mailbox {
    /// Stops delivery to this connection for good and tells the connection to
    /// close, saying why (the first reason given stays).
    pub fn revoke(&self, farewell: Farewell) {
        lock(&self.farewell).get_or_insert(farewell);
        self.revoked.cancel();
        self.wake.notify_one();
    }

    /// Whether delivery to this connection was stopped.
    pub fn is_revoked(&self) -> bool {
        self.revoked.is_cancelled()
    }

    /// Stops the pump because the connection closes: it sends nothing more,
    /// records the deliveries it has not recorded yet and ends.
    pub fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        self.wake.notify_one();
    }

    /// Submits the record of the thread's unrecorded deliveries before an ack
    /// of `thread` is submitted: the writer applies writes in order, so no
    /// cursor is ever durable before the record of the deliveries it
    /// acknowledges. Every delivery an ack can cover is noted before its frame
    /// is queued, and a range leaves the map only once submitted, so once the
    /// lock is had, the thread's deliveries are in the map or recorded.
    pub async fn before_ack(&self, log: impl FnOnce() -> DeliveryLog, thread: ThreadId) {
        let mut unrecorded = self.unrecorded.lock().await;
        if let Some((first, last)) = unrecorded.remove(&thread) {
            log().delivered(thread, first, last).await;
        }
    }

    /// Notes that `seq` of `thread` is being sent; noted before it is queued,
    /// so that no ack of it can come before. Returns what to restore if the
    /// frame is not queued after all.
    async fn sending(&self, thread: ThreadId, seq: u64) -> Option<(u64, u64)> {
        let mut unrecorded = self.unrecorded.lock().await;
        let before = unrecorded.get(&thread).copied();
        unrecorded.insert(thread, noted(before, seq));
        before
    }

    /// Takes back `seq`, which [`sending`](Self::sending) noted for a frame
    /// that was not queued after all; unless it was recorded meanwhile (by an
    /// ack, by the shutdown): that record stands, overstating, never the reverse.
    async fn not_sent(&self, thread: ThreadId, seq: u64, before: Option<(u64, u64)>) {
        let mut unrecorded = self.unrecorded.lock().await;
        if unrecorded.get(&thread) != Some(&noted(before, seq)) {
            return;
        }
        match before {
            Some(range) => unrecorded.insert(thread, range),
            None => unrecorded.remove(&thread),
        };
    }

    /// Whether the pump must send nothing more.
    fn is_stopped(&self) -> bool {
        self.is_revoked() || self.closed.load(Ordering::SeqCst)
    }

    /// Resolves when the hub stops this connection, with the reason.
    pub async fn revoked(&self) -> Farewell {
        self.revoked.cancelled().await;
        lock(&self.farewell).clone().unwrap_or_else(Farewell::policy)
    }

    /// Marks `thread` as having news and wakes the pump.
    pub fn mark(&self, thread: ThreadId) {
        lock(&self.pending).insert(thread);
        self.wake.notify_one();
    }

    /// The threads with news; none once the pump must stop.
    async fn take(&self) -> Option<Vec<ThreadId>> {
        loop {
            if self.is_stopped() {
                return None;
            }
            let threads: Vec<ThreadId> = lock(&self.pending).drain().collect();
            if !threads.is_empty() {
                return Some(threads);
            }
            self.wake.notified().await;
        }
    }
}

/// The range of unrecorded deliveries once `seq` is noted after `before`.
fn noted(before: Option<(u64, u64)>, seq: u64) -> (u64, u64) {
    before.map_or((seq, seq), |(first, _)| (first, seq))
}

/// A refused registration.
#[derive(Debug, thiserror::Error)]
pub enum NotRegistered {
    /// The identity already has its maximum of connections.
    #[error("{member} already has {limit} open connections")]
    TooManyConnections {
        /// The identity.
        member: MemberId,
        /// The limit.
        limit: usize,
    },
    /// The hub is shutting down: its last deliveries are being recorded.
    #[error("the hub is shutting down")]
    ShuttingDown,
}

impl NotRegistered {
    /// The error frame's code and the close's reason.
    pub fn code_and_reason(&self) -> (ErrorCode, &'static str) {
        match self {
            Self::TooManyConnections { .. } => {
                (ErrorCode::TooManyConnections, "too many connections for this identity")
            }
            Self::ShuttingDown => (ErrorCode::Unavailable, "hub shutting down"),
        }
    }
}

/// Tells one connection's registration from another's.
type ConnectionId = u64;

/// One open connection, as the registry knows it.
#[derive(Debug)]
struct Online {
    id: ConnectionId,
    /// Its certificate's identity: the same worker may hold certificates of several roles.
    identity: Identity,
    /// Its audit record, for entries about the connection itself.
    record: AuditRecord,
    /// Its certificate's validity, to check again when the CRLs change.
    certificate: CertValidity,
    mailbox: Arc<Mailbox>,
}

/// What a check of the open connections sees of each.
#[derive(Debug, Clone, Copy)]
pub struct Open<'a> {
    /// Whose connection it is.
    pub member: &'a MemberId,
    /// Its certificate's identity (role and kind included).
    pub identity: &'a Identity,
    /// Its certificate.
    pub certificate: &'a CertValidity,
}

/// One member's open connections.
type Connections = Vec<Online>;

/// A recent entry: its seq, its encoded frame, and, for a Welcome, the only
/// members who may receive it.
#[derive(Debug, Clone)]
pub struct Frame {
    seq: u64,
    bytes: Bytes,
    to: Option<Arc<[MemberId]>>,
    /// The member this entry adds to the thread, if it does.
    adds: Option<MemberId>,
    /// The member this entry removes from the thread, if it does.
    removes: Option<MemberId>,
    /// When it was published, for the delivery's stage timings; none for a frame read from the store.
    published: Option<crate::stages::Stamp>,
}

impl Frame {
    fn of(thread: ThreadId, entry: Entry) -> Self {
        let to = match &entry.body {
            EntryBody::Welcome { to, .. } => Some(to.clone().into()),
            _ => None,
        };
        let (adds, removes) = match &entry.body {
            EntryBody::MemberAdded { member } => (Some(member.clone()), None),
            EntryBody::MemberRemoved { member } => (None, Some(member.clone())),
            _ => (None, None),
        };
        let seq = entry.seq;
        let bytes = wire::encode(&HubFrame::Event { thread, entry }).into();
        Self { seq, bytes, to, adds, removes, published: None }
    }

    fn is_for(&self, member: &MemberId) -> bool {
        self.to.as_ref().is_none_or(|to| to.contains(member))
    }
}

/// A thread's members and its most recent durable entries, encoded.
#[derive(Debug)]
struct ThreadNews {
    members: Arc<[MemberId]>,
    recent: VecDeque<Frame>,
}

/// Recent news of the threads that were active lately, within a byte budget.
#[derive(Debug, Default)]
struct NewsCache {
    threads: HashMap<ThreadId, ThreadNews>,
    /// Threads in the order they were first cached; evicted from the front.
    order: VecDeque<ThreadId>,
    bytes: usize,
}

impl NewsCache {
    fn push(&mut self, thread: ThreadId, members: Arc<[MemberId]>, frame: Frame) {
        self.bytes += frame.bytes.len();
        let news = self.threads.entry(thread).or_insert_with(|| {
            self.order.push_back(thread);
            ThreadNews { members: members.clone(), recent: VecDeque::new() }
        });
        news.members = members;
        news.recent.push_back(frame);
        if news.recent.len() > RECENT_PER_THREAD {
            if let Some(old) = news.recent.pop_front() {
                self.bytes -= old.bytes.len();
            }
        }
        while self.bytes > RECENT_BUDGET {
            let Some(evicted) = self.order.pop_front() else { break };
            if let Some(news) = self.threads.remove(&evicted) {
                self.bytes -= news.recent.iter().map(|f| f.bytes.len()).sum::<usize>();
            }
        }
    }

    /// The frames after `after`, when the cache holds every one of them: any
    /// gap, at the front or between two frames, sends the reader to the store.
    fn after(&self, thread: ThreadId, after: u64) -> Option<Vec<Frame>> {
        let recent = &self.threads.get(&thread)?.recent;
        if recent.front()?.seq > after + 1 {
            return None;
        }
        let newer = recent.iter().filter(|f| f.seq > after);
        (after + 1..).zip(newer).map(|(expected, frame)| (frame.seq == expected).then(|| frame.clone())).collect()
    }
}

/// The online connections, by member, and the news waiting for them.
#[derive(Debug)]
pub struct Registry {
    online: Mutex<HashMap<MemberId, Connections>>,
    /// Set, under `online`'s lock, once no connection may register.
    closed: AtomicBool,
    news: Mutex<NewsCache>,
    next_id: AtomicU64,
    per_identity: usize,
}

impl Registry {
    /// An empty registry allowing `per_identity` connections per member.
    pub fn new(per_identity: usize) -> Arc<Self> {
        Arc::new(Self {
            online: Mutex::new(HashMap::new()),
            closed: AtomicBool::new(false),
            news: Mutex::new(NewsCache::default()),
            next_id: AtomicU64::new(1),
            per_identity,
        })
    }

    /// Registers a connection of `member` with `certificate` of `identity`, and
    /// `record` for the audit entries about it; dropping the result unregisters it.
    pub fn register(
        self: &Arc<Self>,
        member: MemberId,
        identity: Identity,
        certificate: CertValidity,
        record: AuditRecord,
    ) -> Result<Registration, NotRegistered> {
        let mut online = lock(&self.online);
        if self.closed.load(Ordering::SeqCst) {
            return Err(NotRegistered::ShuttingDown);
        }
        let connections = online.entry(member.clone()).or_default();
        if connections.len() >= self.per_identity {
            return Err(NotRegistered::TooManyConnections { member, limit: self.per_identity });
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mailbox = Arc::new(Mailbox::default());
        connections.push(Online { id, identity, record, certificate, mailbox: mailbox.clone() });
        Ok(Registration { registry: self.clone(), member, id, mailbox })
    }

    /// Takes no more connections (at shutdown, before the last deliveries
    /// are recorded) and returns every open connection's mailbox, with the
    /// audit record of its deliveries: none registers after this snapshot.
    pub fn close_registrations(&self) -> Vec<(Arc<Mailbox>, AuditRecord)> {
        let online = lock(&self.online);
        self.closed.store(true, Ordering::SeqCst);
        online.values().flatten().map(|o| (o.mailbox.clone(), o.record.clone())).collect()
    }

    /// The mailboxes of `member`'s open connections.
    pub fn mailboxes_of(&self, member: &MemberId) -> Vec<Arc<Mailbox>> {
        lock(&self.online).get(member).map_or_else(Vec::new, |c| c.iter().map(|o| o.mailbox.clone()).collect())
    }

    /// The audit records of closing the open connections that `refuses`
    /// refuses (after a reload of the policy or the CRLs): the connections to close.
    pub fn refused_by(&self, refuses: impl Fn(Open<'_>) -> Option<Farewell>) -> Vec<AuditRecord> {
        let mut records = Vec::new();
        self.each_refused(refuses, |c, farewell| records.push(farewell.record(c.record.clone())));
        records
    }

    /// Stops delivery to every open connection that `refuses` refuses, at
    /// once, and tells each to close with its farewell.
    pub fn revoke(&self, refuses: impl Fn(Open<'_>) -> Option<Farewell>) {
        self.each_refused(refuses, |c, farewell| c.mailbox.revoke(farewell));
    }

    /// Visits the open connections that `refuses` refuses.
    fn each_refused(&self, refuses: impl Fn(Open<'_>) -> Option<Farewell>, mut visit: impl FnMut(&Online, Farewell)) {
        let online = lock(&self.online);
        for (member, connections) in online.iter() {
            for connection in connections {
                let open = Open { member, identity: &connection.identity, certificate: &connection.certificate };
                if let Some(farewell) = refuses(open) {
                    visit(connection, farewell);
                }
            }
        }
    }

    /// Publishes a durable entry: encodes it once, caches it, and tells the
    /// thread's online members. Entries of a thread must be published in order.
    pub fn publish(&self, store: &dyn Store, thread: ThreadId, entry: Entry) {
        let membership_changed = matches!(entry.body, EntryBody::MemberAdded { .. } | EntryBody::MemberRemoved { .. });
        let cached = lock(&self.news).threads.get(&thread).map(|news| news.members.clone());
        let members: Arc<[MemberId]> = match cached.clone().filter(|_| !membership_changed) {
            Some(members) => members,
            None => match store.members(thread) {
                Ok(members) => members.into(),
                Err(e) => {
                    tracing::error!(error = %e, %thread, "cannot read members; delivery waits for the next entry");
                    return;
                }
            },
        };
        let frame = Frame { published: Some(crate::stages::Stamp::now()), ..Frame::of(thread, entry) };
        // A removed member still hears of its removal, and a Welcome goes only to its addressees.
        let mut audience: Vec<MemberId> = members.iter().filter(|m| frame.is_for(m)).cloned().collect();
        if let Some(removed) = &frame.removes {
            audience.push(removed.clone());
        }
        lock(&self.news).push(thread, members, frame);
        self.notify(thread, &audience);
    }

    /// Whether `member` belongs to `thread`, when the thread is cached. The cache
    /// is refreshed by every published membership entry, so it answers like the
    /// store; it spares the hot path a storage read.
    pub fn cached_membership(&self, thread: ThreadId, member: &MemberId) -> Option<bool> {
        lock(&self.news).threads.get(&thread).map(|news| news.members.contains(member))
    }

    /// The recent frames of `thread` after `after`, when the cache holds them all.
    pub fn recent_after(&self, thread: ThreadId, after: u64) -> Option<Vec<Frame>> {
        lock(&self.news).after(thread, after)
    }

    /// Tells every online connection of `members` that `thread` has news.
    pub fn notify(&self, thread: ThreadId, members: &[MemberId]) {
        let online = lock(&self.online);
        for member in members {
            for connection in online.get(member).into_iter().flatten() {
                connection.mailbox.mark(thread);
            }
        }
    }
}

/// A registered connection; unregisters itself when dropped.
#[derive(Debug)]
pub struct Registration {
    registry: Arc<Registry>,
    member: MemberId,
    id: ConnectionId,
    mailbox: Arc<Mailbox>,
}

impl Registration {
    /// This connection's mailbox.
    pub fn mailbox(&self) -> Arc<Mailbox> {
        self.mailbox.clone()
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut online = lock(&self.registry.online);
        if let Some(connections) = online.get_mut(&self.member) {
            connections.retain(|c| c.id != self.id);
            if connections.is_empty() {
                online.remove(&self.member);
            }
        }
    }
}

/// Why a pump stopped.
#[derive(Debug, thiserror::Error)]
pub enum PumpStopped {
    /// The connection's outbound queue is closed.
    #[error("connection closed")]
    Closed,
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Records deliveries in the audit log: one entry per thread for the entries
/// sent to a connection within [`RECORD_WINDOW`] of the first not yet recorded,
/// and for the rest when the connection closes. Deliveries are recorded after
/// the fact and not awaited, unlike requests: holding every event until its
/// entry is flushed would add a flush to each delivery. The window merges the
/// bursts of a busy thread, each of which was an entry of its own: at load,
/// nearly every delivery is a burst, so a message cost an audit entry per
/// receiving connection besides its own.
#[derive(Debug, Clone)]
pub struct DeliveryLog {
    /// The write path.
    pub writes: WriteLog,
    /// The record of the receiving connection; case and object are filled in.
    pub template: AuditRecord,
}

/// How long a delivery waits to be recorded together with the next ones of its
/// connection. A crash loses at most this much of the record of what was sent
/// (the entries are delivered again from the cursor, and recorded then).
pub const RECORD_WINDOW: std::time::Duration = std::time::Duration::from_millis(250);

/// When the pump records its connection's deliveries next: [`RECORD_WINDOW`]
/// after the first one it noted since it last recorded them. Boxed, and only
/// while something waits: an idle connection holds no timer.
#[derive(Debug, Default)]
struct RecordTimer {
    due: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
}

impl RecordTimer {
    async fn add(&mut self, mailbox: &Mailbox, thread: ThreadId, seq: u64) -> Option<(u64, u64)> {
        if self.due.is_none() {
            self.due = Some(Box::pin(tokio::time::sleep(RECORD_WINDOW)));
        }
        mailbox.sending(thread, seq).await
    }

    /// Whether the window has passed: a long burst records on its way, not only at its end.
    fn is_due(&self) -> bool {
        self.due.as_ref().is_some_and(|sleep| sleep.is_elapsed())
    }

    /// Resolves when the deliveries noted must be recorded; never while none waits.
    async fn due(&mut self) {
        match self.due.as_mut() {
            Some(sleep) => sleep.await,
            None => std::future::pending().await,
        }
    }
}

impl DeliveryLog {
    /// Records every delivery of the connection not yet recorded (some may
    /// have been, by an ack since).
    async fn record(&self, mailbox: &Mailbox, timer: &mut RecordTimer) {
        timer.due = None;
        self.record_left(mailbox).await;
    }

    /// Records what the mailbox holds unrecorded. Each range leaves it only
    /// once submitted, so that a pump aborted halfway leaves the rest to
    /// whoever records after it (the connection, when it ends).
    pub async fn record_left(&self, mailbox: &Mailbox) {
        let mut pending = mailbox.unrecorded.lock().await;
        let threads: Vec<ThreadId> = pending.keys().copied().collect();
        for thread in threads {
            if let Some(&(first, last)) = pending.get(&thread) {
                self.delivered(thread, first, last).await;
                pending.remove(&thread);
            }
        }
    }

    pub(crate) async fn delivered(&self, thread: ThreadId, first: u64, last: u64) {
        let record = AuditRecord {
            at_ms: crate::clock::now_ms(),
            case: Some(thread),
            object: Some(format!("seq {first}-{last}")),
            ..self.template.clone()
        };
        // Boxed: inline, the submission (a write and its record) would be part
        // of every open connection's pump, idle or not.
        let submitting = Box::pin(self.writes.submit_unanswered(Write::Audit, Some(record)));
        submitting.await;
    }
}

/// Where one member's delivery of one thread stands: the last seq it has
/// passed, and the stretches of membership whose entries it may receive.
#[derive(Debug)]
struct Track {
    after: u64,
    intervals: Vec<Interval>,
}

impl Track {
    /// Where `member` stands in `thread` by the store: `None` when it was never
    /// a member, so that nothing of the thread is ever sent to it.
    fn load(
        store: &dyn Store,
        (member, device): (&MemberId, &DeviceId),
        thread: ThreadId,
    ) -> Result<Option<Self>, StoreError> {
        let intervals = store.intervals(thread, member)?;
        let Some(first) = intervals.first() else { return Ok(None) };
        let after = store.cursor(member, device, thread)?.max(first.from - 1);
        Ok(Some(Self { after, intervals }))
    }

    /// Follows the member's own membership entries as they pass, so that the
    /// intervals stay exact without asking the store again.
    fn observe(&mut self, frame: &Frame, member: &MemberId) {
        let open = self.intervals.last().is_some_and(|i| i.until.is_none());
        if frame.adds.as_ref() == Some(member) && !open && self.intervals.iter().all(|i| !i.contains(frame.seq)) {
            self.intervals.push(Interval { from: frame.seq, until: None });
        }
        if frame.removes.as_ref() == Some(member) {
            if let Some(last) = self.intervals.last_mut().filter(|i| i.until.is_none() && i.from <= frame.seq) {
                last.until = Some(frame.seq);
            }
        }
    }

    fn wants(&self, seq: u64) -> bool {
        self.intervals.iter().any(|i| i.contains(seq))
    }

    /// True once the member's last interval has ended and everything in it is sent.
    fn finished(&self) -> bool {
        self.intervals.last().and_then(|i| i.until).is_some_and(|until| self.after >= until)
    }
}

/// Sends `member` every durable entry past its cursor that lies inside its
/// membership intervals, in order and encoded as event frames, for as long as
/// the connection lives: first the backlog of its threads (the current ones,
/// and the rest of any interval that ended while it was away), then news as
/// the mailbox reports it. However it stops, it records what it sent.
pub async fn pump(
    store: Arc<dyn Store>,
    registry: Arc<Registry>,
    member: (MemberId, DeviceId),
    mailbox: Arc<Mailbox>,
    out: Outbox,
    log: DeliveryLog,
) -> Result<(), PumpStopped> {
    let mut timer = RecordTimer::default();
    let result = pump_recording(store, &registry, member, &mailbox, &out, &log, &mut timer).await;
    let recording = Box::pin(log.record(&mailbox, &mut timer));
    recording.await;
    result
}

async fn pump_recording(
    store: Arc<dyn Store>,
    registry: &Registry,
    (member, device): (MemberId, DeviceId),
    mailbox: &Mailbox,
    out: &Outbox,
    log: &DeliveryLog,
    timer: &mut RecordTimer,
) -> Result<(), PumpStopped> {
    for thread in store.threads_of(&member)?.into_iter().chain(store.former_threads(&member)?) {
        mailbox.mark(thread);
    }
    let mut tracks: HashMap<ThreadId, Track> = HashMap::new();
    loop {
        let threads = tokio::select! {
            threads = mailbox.take() => threads.ok_or(PumpStopped::Closed)?,
            () = timer.due() => {
                let recording = Box::pin(log.record(mailbox, timer));
                recording.await;
                continue;
            }
        };
        for thread in threads {
            if mailbox.is_stopped() {
                return Err(PumpStopped::Closed);
            }
            let track = match tracks.entry(thread) {
                Slot::Occupied(known) => known.into_mut(),
                Slot::Vacant(slot) => match Track::load(store.as_ref(), (&member, &device), thread)? {
                    Some(track) if !track.finished() => slot.insert(track),
                    _ => continue,
                },
            };
            // Boxed: inline, a burst's state would be part of every idle connection's pump.
            let delivering =
                Box::pin(deliver(store.as_ref(), registry, (&member, mailbox, out, log), thread, track, timer));
            delivering.await?;
            if track.finished() {
                // A later mark (the member added again) loads it afresh.
                tracks.remove(&thread);
            }
        }
    }
}

/// Sends one thread's frames after `track.after` that the member may receive,
/// noting each one sent in the mailbox's unrecorded deliveries.
async fn deliver(
    store: &dyn Store,
    registry: &Registry,
    (member, mailbox, out, log): (&MemberId, &Mailbox, &Outbox, &DeliveryLog),
    thread: ThreadId,
    track: &mut Track,
    timer: &mut RecordTimer,
) -> Result<(), PumpStopped> {
    loop {
        let (frames, complete) = match registry.recent_after(thread, track.after) {
            Some(frames) => (frames, true),
            None => {
                let entries = store.entries_after(thread, track.after, BATCH)?;
                let complete = entries.len() < BATCH;
                (entries.into_iter().map(|entry| Frame::of(thread, entry)).collect(), complete)
            }
        };
        for frame in frames {
            track.after = frame.seq;
            track.observe(&frame, member);
            if track.wants(frame.seq) && frame.is_for(member) {
                if mailbox.is_stopped() {
                    return Err(PumpStopped::Closed);
                }
                if let Some(published) = frame.published {
                    crate::stages::record_time(crate::stages::Stage::Pump, published.elapsed());
                }
                let before = timer.add(mailbox, thread, frame.seq).await;
                // Stopped while noting (the shutdown records what is noted once it stops us): not sent.
                let queued = !mailbox.is_stopped() && {
                    // Boxed: inline, the queueing would be part of every open connection's pump.
                    let queueing = Box::pin(out.send_published(frame.bytes, frame.published));
                    queueing.await.is_ok()
                };
                if !queued {
                    mailbox.not_sent(thread, frame.seq, before).await;
                    return Err(PumpStopped::Closed);
                }
                if timer.is_due() {
                    let recording = Box::pin(log.record(mailbox, timer));
                    recording.await;
                }
            }
            if track.finished() {
                return Ok(());
            }
        }
        if complete {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(seq: u64, size: usize) -> Frame {
        Frame { seq, bytes: Bytes::from(vec![seq as u8; size]), to: None, adds: None, removes: None, published: None }
    }

    #[test]
    fn the_cache_answers_only_when_it_covers_the_gap() {
        let mut cache = NewsCache::default();
        let thread = ThreadId::random();
        let members: Arc<[MemberId]> = Arc::from(Vec::new());
        for seq in 5..=8 {
            cache.push(thread, members.clone(), frame(seq, 10));
        }
        assert_eq!(cache.after(thread, 4).unwrap().len(), 4);
        assert_eq!(cache.after(thread, 6).unwrap().iter().map(|f| f.seq).collect::<Vec<_>>(), vec![7, 8]);
        assert_eq!(cache.after(thread, 8).unwrap().len(), 0);
        assert!(cache.after(thread, 3).is_none(), "seq 4 is not cached, so the store must answer");
        assert!(cache.after(ThreadId::random(), 0).is_none());
        // A frame missing in the middle is a gap too.
        cache.push(thread, members.clone(), frame(10, 10));
        assert!(cache.after(thread, 6).is_none(), "seq 9 is missing, so the store must answer");
    }

    #[test]
    fn the_cache_keeps_a_bounded_window_and_budget() {
        let mut cache = NewsCache::default();
        let members: Arc<[MemberId]> = Arc::from(Vec::new());
        let thread = ThreadId::random();
        for seq in 1..=(RECENT_PER_THREAD as u64 + 10) {
            cache.push(thread, members.clone(), frame(seq, 100));
        }
        assert_eq!(cache.threads[&thread].recent.len(), RECENT_PER_THREAD);
        assert!(cache.after(thread, 1).is_none());
        let big = RECENT_BUDGET / 4 + 1;
        for _ in 0..8 {
            cache.push(ThreadId::random(), members.clone(), frame(1, big));
        }
        assert!(cache.bytes <= RECENT_BUDGET);
        assert!(!cache.threads.contains_key(&thread), "the oldest thread was evicted");
    }
}
