//! Delivery of thread entries to the members that are online.
//!
//! Each open connection has a [`Mailbox`]: a set of threads with news and a
//! wake-up. When an entry becomes durable the hub marks its thread in the
//! mailbox of every online member ([`Registry::notify`]); the connection's
//! [`pump`] then reads the new entries from the store, from where that
//! connection stands, and queues them for sending. Because the pump always reads
//! from the store, delivery is in order, resumes from the member's cursor after
//! a reconnect, never shows an entry before it is durable, and uses memory
//! bounded by the number of threads rather than the number of messages.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::{mpsc, Notify};
use tokio_tungstenite::tungstenite::Bytes;
use wire::{HubFrame, MemberId, ThreadId};

use crate::store::{Store, StoreError};

/// Entries read from the store per round, per thread.
const BATCH: usize = 64;

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

/// The online connections, by member.
#[derive(Debug)]
pub struct Registry {
    online: Mutex<HashMap<MemberId, Connections>>,
    next_id: AtomicU64,
    per_identity: usize,
}

impl Registry {
    /// An empty registry allowing `per_identity` connections per member.
    pub fn new(per_identity: usize) -> Arc<Self> {
        Arc::new(Self { online: Mutex::new(HashMap::new()), next_id: AtomicU64::new(1), per_identity })
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
/// event frames, for as long as the connection lives: first the backlog of all its threads, then news as
/// the mailbox reports it.
pub async fn pump(
    store: Arc<dyn Store>,
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
                let entries = store.entries_after(thread, *after, BATCH)?;
                let complete = entries.len() < BATCH;
                for entry in entries {
                    *after = entry.seq;
                    let frame = wire::encode(&HubFrame::Event { thread, entry });
                    out.send(frame.into()).await.map_err(|_| PumpStopped::Closed)?;
                }
                if complete {
                    break;
                }
            }
        }
    }
}
