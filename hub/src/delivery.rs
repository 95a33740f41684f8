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

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::{mpsc, Notify};
use tokio_tungstenite::tungstenite::Bytes;
use wire::{Entry, EntryBody, HubFrame, MemberId, ThreadId};

use crate::store::{Store, StoreError};

/// Entries read from the store per round, per thread.
const BATCH: usize = 64;
/// Recent frames kept per thread.
const RECENT_PER_THREAD: usize = 64;
/// Bytes of recent frames kept over all threads.
const RECENT_BUDGET: usize = 32 << 20;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The threads with news for one connection.
#[derive(Debug, Default)]
pub struct Mailbox {
    pending: Mutex<HashSet<ThreadId>>,
    wake: Notify,
}

impl Mailbox {
    /// Marks `thread` as having news and wakes the pump.
    pub fn mark(&self, thread: ThreadId) {
        lock(&self.pending).insert(thread);
        self.wake.notify_one();
    }

    async fn take(&self) -> Vec<ThreadId> {
        loop {
            let threads: Vec<ThreadId> = lock(&self.pending).drain().collect();
            if !threads.is_empty() {
                return threads;
            }
            self.wake.notified().await;
        }
    }
}

/// Refused registration: the identity already has its maximum of connections.
#[derive(Debug, thiserror::Error)]
#[error("{member} already has {limit} open connections")]
pub struct TooManyConnections {
    /// The identity.
    pub member: MemberId,
    /// The limit.
    pub limit: usize,
}

/// Tells one connection's registration from another's.
type ConnectionId = u64;

/// One member's open connections.
type Connections = Vec<(ConnectionId, Arc<Mailbox>)>;

/// A thread's members and its most recent durable entries, encoded.
#[derive(Debug)]
struct ThreadNews {
    members: Arc<[MemberId]>,
    recent: VecDeque<(u64, Bytes)>,
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
    fn push(&mut self, thread: ThreadId, members: Arc<[MemberId]>, seq: u64, frame: Bytes) {
        self.bytes += frame.len();
        let news = self.threads.entry(thread).or_insert_with(|| {
            self.order.push_back(thread);
            ThreadNews { members: members.clone(), recent: VecDeque::new() }
        });
        news.members = members;
        news.recent.push_back((seq, frame));
        if news.recent.len() > RECENT_PER_THREAD {
            if let Some((_, old)) = news.recent.pop_front() {
                self.bytes -= old.len();
            }
        }
        while self.bytes > RECENT_BUDGET {
            let Some(evicted) = self.order.pop_front() else { break };
            if let Some(news) = self.threads.remove(&evicted) {
                self.bytes -= news.recent.iter().map(|(_, f)| f.len()).sum::<usize>();
            }
        }
    }

    /// The frames after `after`, when the cache holds all of them.
    fn after(&self, thread: ThreadId, after: u64) -> Option<Vec<(u64, Bytes)>> {
        let recent = &self.threads.get(&thread)?.recent;
        let first = recent.front()?.0;
        if first > after + 1 {
            return None;
        }
        Some(recent.iter().filter(|(seq, _)| *seq > after).cloned().collect())
    }
}

/// The online connections, by member, and the news waiting for them.
#[derive(Debug)]
pub struct Registry {
    online: Mutex<HashMap<MemberId, Connections>>,
    news: Mutex<NewsCache>,
    next_id: AtomicU64,
    per_identity: usize,
}

impl Registry {
    /// An empty registry allowing `per_identity` connections per member.
    pub fn new(per_identity: usize) -> Arc<Self> {
        Arc::new(Self {
            online: Mutex::new(HashMap::new()),
            news: Mutex::new(NewsCache::default()),
            next_id: AtomicU64::new(1),
            per_identity,
        })
    }

    /// Registers a connection of `member`; dropping the result unregisters it.
    pub fn register(self: &Arc<Self>, member: MemberId) -> Result<Registration, TooManyConnections> {
        let mut online = lock(&self.online);
        let connections = online.entry(member.clone()).or_default();
        if connections.len() >= self.per_identity {
            return Err(TooManyConnections { member, limit: self.per_identity });
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mailbox = Arc::new(Mailbox::default());
        connections.push((id, mailbox.clone()));
        Ok(Registration { registry: self.clone(), member, id, mailbox })
    }

    /// Publishes a durable entry: encodes it once, caches it, and tells the
    /// thread's online members. Entries of a thread must be published in order.
    pub fn publish(&self, store: &dyn Store, thread: ThreadId, entry: Entry) {
        let membership_changed = matches!(entry.body, EntryBody::MemberAdded { .. });
        let cached = if membership_changed {
            None
        } else {
            lock(&self.news).threads.get(&thread).map(|news| news.members.clone())
        };
        let members: Arc<[MemberId]> = match cached {
            Some(members) => members,
            None => match store.members(thread) {
                Ok(members) => members.into(),
                Err(e) => {
                    tracing::error!(error = %e, %thread, "cannot read members; delivery waits for the next entry");
                    return;
                }
            },
        };
        let seq = entry.seq;
        let frame: Bytes = wire::encode(&HubFrame::Event { thread, entry }).into();
        lock(&self.news).push(thread, members.clone(), seq, frame);
        self.notify(thread, &members);
    }

    /// Whether `member` belongs to `thread`, when the thread is cached. The cache
    /// is refreshed by every published membership entry, so it answers like the
    /// store; it spares the hot path a storage read.
    pub fn cached_membership(&self, thread: ThreadId, member: &MemberId) -> Option<bool> {
        lock(&self.news).threads.get(&thread).map(|news| news.members.contains(member))
    }

    /// The encoded frames of `thread` after `after`, when the cache holds them all.
    pub fn recent_after(&self, thread: ThreadId, after: u64) -> Option<Vec<(u64, Bytes)>> {
        lock(&self.news).after(thread, after)
    }

    /// Tells every online connection of `members` that `thread` has news.
    pub fn notify(&self, thread: ThreadId, members: &[MemberId]) {
        let online = lock(&self.online);
        for member in members {
            for (_, mailbox) in online.get(member).into_iter().flatten() {
                mailbox.mark(thread);
            }
        }
    }

    /// The number of open connections.
    pub fn connections(&self) -> usize {
        lock(&self.online).values().map(Vec::len).sum()
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
            connections.retain(|(id, _)| *id != self.id);
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

/// Sends `member` every durable entry past its cursor, in order and encoded as
/// event frames, for as long as the connection lives: first the backlog of all
/// its threads, then news as the mailbox reports it.
pub async fn pump(
    store: Arc<dyn Store>,
    registry: Arc<Registry>,
    member: MemberId,
    mailbox: Arc<Mailbox>,
    out: mpsc::Sender<Bytes>,
) -> Result<(), PumpStopped> {
    for thread in store.threads_of(&member)? {
        mailbox.mark(thread);
    }
    let mut next_after: HashMap<ThreadId, u64> = HashMap::new();
    loop {
        for thread in mailbox.take().await {
            let after = match next_after.get_mut(&thread) {
                Some(after) => after,
                None => next_after.entry(thread).or_insert(store.cursor(&member, thread)?),
            };
            loop {
                let (frames, complete) = match registry.recent_after(thread, *after) {
                    Some(frames) => (frames, true),
                    None => {
                        let entries = store.entries_after(thread, *after, BATCH)?;
                        let complete = entries.len() < BATCH;
                        let frames = entries
                            .into_iter()
                            .map(|entry| (entry.seq, wire::encode(&HubFrame::Event { thread, entry }).into()))
                            .collect();
                        (frames, complete)
                    }
                };
                for (seq, frame) in frames {
                    *after = seq;
                    out.send(frame).await.map_err(|_| PumpStopped::Closed)?;
                }
                if complete {
                    break;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(seq: u64, size: usize) -> (u64, Bytes) {
        (seq, Bytes::from(vec![seq as u8; size]))
    }

    #[test]
    fn the_cache_answers_only_when_it_covers_the_gap() {
        let mut cache = NewsCache::default();
        let thread = ThreadId::random();
        let members: Arc<[MemberId]> = Arc::from(Vec::new());
        for seq in 5..=8 {
            let (seq, f) = frame(seq, 10);
            cache.push(thread, members.clone(), seq, f);
        }
        assert_eq!(cache.after(thread, 4).unwrap().len(), 4);
        assert_eq!(cache.after(thread, 6).unwrap().iter().map(|(s, _)| *s).collect::<Vec<_>>(), vec![7, 8]);
        assert_eq!(cache.after(thread, 8).unwrap().len(), 0);
        assert!(cache.after(thread, 3).is_none(), "seq 4 is not cached, so the store must answer");
        assert!(cache.after(ThreadId::random(), 0).is_none());
    }

    #[test]
    fn the_cache_keeps_a_bounded_window_and_budget() {
        let mut cache = NewsCache::default();
        let members: Arc<[MemberId]> = Arc::from(Vec::new());
        let thread = ThreadId::random();
        for seq in 1..=(RECENT_PER_THREAD as u64 + 10) {
            let (seq, f) = frame(seq, 100);
            cache.push(thread, members.clone(), seq, f);
        }
        assert_eq!(cache.threads[&thread].recent.len(), RECENT_PER_THREAD);
        assert!(cache.after(thread, 1).is_none());
        let big = RECENT_BUDGET / 4 + 1;
        for _ in 0..8 {
            let (seq, f) = frame(1, big);
            cache.push(ThreadId::random(), members.clone(), seq, f);
        }
        assert!(cache.bytes <= RECENT_BUDGET);
        assert!(!cache.threads.contains_key(&thread), "the oldest thread was evicted");
    }
}
