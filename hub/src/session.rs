//! What a request from an authenticated caller does.
//!
//! [`Hub::apply`] runs synchronously, in the order requests arrive on a
//! connection, so a client that pipelines sends gets them stored in the order it
//! sent them. Writes then wait for durability in [`Hub::settle`], concurrently
//! with other requests, so that one flush covers many of them. Membership is
//! checked here for every thread-scoped request; a caller outside a thread gets
//! exactly the answer it would get for a thread that does not exist.

use std::net::SocketAddr;
use std::sync::Arc;

use tracing::error;
use wire::{ErrorCode, Identity, MemberId, Reply, Request, ThreadId, ThreadSummary, WireError};

use crate::clock::now_ms;
use crate::config::Limits;
use crate::delivery::Registry;
use crate::durability::GroupCommit;
use crate::store::{Store, StoreError};

/// The state shared by every connection of a running hub.
pub struct Hub {
    /// The store.
    pub store: Arc<dyn Store>,
    /// The group-commit task.
    pub commit: GroupCommit,
    /// The online connections.
    pub registry: Arc<Registry>,
    /// The limits in force.
    pub limits: Limits,
}

/// The authenticated party behind a connection.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The identity from its certificate.
    pub identity: Identity,
    /// Its member id (derived once from the identity).
    pub member: MemberId,
    /// The SHA-256 fingerprint of its certificate.
    pub fingerprint: String,
    /// Its network address.
    pub peer: SocketAddr,
}

impl Caller {
    /// A caller with the given identity, certificate fingerprint and address.
    pub fn new(identity: Identity, fingerprint: String, peer: SocketAddr) -> Self {
        let member = identity.member_id();
        Self { identity, member, fingerprint, peer }
    }
}

/// What became of a request once applied.
#[derive(Debug)]
pub enum Outcome {
    /// Answered without a write.
    Ready(Result<Reply, WireError>),
    /// Written; the reply may go out once the write is durable, after which
    /// the members of `notify` (if any) learn of news in that thread.
    AfterCommit {
        /// The reply to send once durable.
        reply: Reply,
        /// The thread with a new entry, if any.
        notify: Option<ThreadId>,
    },
}

fn internal(e: StoreError) -> WireError {
    error!(error = %e, "store failure");
    WireError::new(ErrorCode::Internal, "the hub could not complete the request; nothing was changed")
}

impl Hub {
    /// Builds the shared state around a store; starts the group-commit task.
    pub fn new(store: Arc<dyn Store>, limits: Limits) -> Arc<Self> {
        let registry = Registry::new(limits.max_connections_per_identity);
        Arc::new(Self { commit: GroupCommit::start(store.clone()), store, registry, limits })
    }

    /// Applies a request in arrival order.
    pub fn apply(&self, caller: &Caller, request: Request) -> Outcome {
        match self.try_apply(caller, request) {
            Ok(outcome) => outcome,
            Err(e) => Outcome::Ready(Err(e)),
        }
    }

    fn try_apply(&self, caller: &Caller, request: Request) -> Result<Outcome, WireError> {
        let after_commit =
            |reply, notify: bool, thread| Outcome::AfterCommit { reply, notify: notify.then_some(thread) };
        match request {
            Request::CreateThread { client_ref } => {
                let created = self.store.create_thread(&caller.member, client_ref, now_ms()).map_err(internal)?;
                Ok(after_commit(Reply::ThreadCreated { thread: created.thread }, !created.existing, created.thread))
            }
            Request::AddMember { thread, member } => {
                self.require_member(caller, thread)?;
                wire::identity::validate_worker(&member.worker)
                    .map_err(|e| WireError::new(ErrorCode::Invalid, e.to_string()))?;
                let added = self.store.add_member(thread, &caller.member, &member, now_ms()).map_err(internal)?;
                Ok(after_commit(Reply::MemberAdded { seq: added.seq }, !added.duplicate, thread))
            }
            Request::Send { thread, message, payload } => {
                self.require_member(caller, thread)?;
                let appended =
                    self.store.append_message(thread, &caller.member, message, &payload, now_ms()).map_err(internal)?;
                let reply = Reply::Sent { seq: appended.seq, duplicate: appended.duplicate };
                Ok(after_commit(reply, !appended.duplicate, thread))
            }
            Request::ListThreads => {
                let threads = self
                    .store
                    .threads_of(&caller.member)
                    .and_then(|threads| {
                        threads
                            .into_iter()
                            .map(|thread| {
                                Ok(ThreadSummary {
                                    thread,
                                    last_seq: self.store.last_seq(thread)?,
                                    cursor: self.store.cursor(&caller.member, thread)?,
                                })
                            })
                            .collect()
                    })
                    .map_err(internal)?;
                Ok(Outcome::Ready(Ok(Reply::Threads { threads })))
            }
            Request::ListMembers { thread } => {
                self.require_member(caller, thread)?;
                let members = self.store.members(thread).map_err(internal)?;
                Ok(Outcome::Ready(Ok(Reply::Members { members })))
            }
        }
    }

    /// Waits for durability where needed, then notifies members and yields the reply.
    pub async fn settle(&self, outcome: Outcome) -> Result<Reply, WireError> {
        match outcome {
            Outcome::Ready(result) => result,
            Outcome::AfterCommit { reply, notify } => {
                self.commit.commit().await.map_err(|e| {
                    error!(error = %e, "commit failed");
                    WireError::new(ErrorCode::Unavailable, "the hub could not make the change durable; retry")
                })?;
                if let Some(thread) = notify {
                    self.notify_members(thread);
                }
                Ok(reply)
            }
        }
    }

    fn notify_members(&self, thread: ThreadId) {
        match self.store.members(thread) {
            Ok(members) => self.registry.notify(thread, &members),
            Err(e) => error!(error = %e, %thread, "cannot read members to notify"),
        }
    }

    /// Records that the caller processed `thread` up to `seq`.
    pub fn ack(&self, caller: &Caller, thread: ThreadId, seq: u64) -> Result<(), WireError> {
        self.require_member(caller, thread)?;
        let last = self.store.last_seq(thread).map_err(internal)?;
        if seq > last {
            return Err(WireError::new(ErrorCode::Invalid, format!("ack for seq {seq} beyond the last entry {last}")));
        }
        self.store.advance_cursor(&caller.member, thread, seq).map_err(internal)
    }

    fn require_member(&self, caller: &Caller, thread: ThreadId) -> Result<(), WireError> {
        match self.store.is_member(thread, &caller.member) {
            Ok(true) => Ok(()),
            Ok(false) => Err(WireError::thread_not_found()),
            Err(e) => Err(internal(e)),
        }
    }
}
