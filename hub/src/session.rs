//! What a request from an authenticated caller does.
//!
//! A connection awaits [`Hub::apply`] for one request after another, and apply
//! waits only for room on the write path, so a client that pipelines sends gets
//! them stored in the order it sent them. Writes then wait for durability in
//! [`Hub::settle`], concurrently with other requests, so that one flush covers
//! many of them. Membership is
//! checked here for every thread-scoped request; a caller outside a thread gets
//! exactly the answer it would get for a thread that does not exist.

use std::net::SocketAddr;
use std::sync::Arc;

use tracing::error;
use wire::{BlobId, ErrorCode, Identity, MemberId, Reply, Request, ThreadId, ThreadSummary, WireError};

use crate::blobs::{self, ChunkUpload};
use crate::config::Limits;
use crate::delivery::Registry;
use crate::durability::{Durable, Write, WriteError, WriteLog, Written};
use crate::policy::{Action, Decision, Grounds, Policy, PolicySource};
use crate::store::{Store, StoreError};

/// KeyPackages accepted in one upload.
const MAX_KEY_PACKAGE_UPLOAD: usize = 100;
/// KeyPackages held for one identity.
const MAX_KEY_PACKAGE_STOCK: usize = 500;

/// The state shared by every connection of a running hub.
pub struct Hub {
    /// The store, for reads; writes go through [`Hub::writes`].
    pub store: Arc<dyn Store>,
    /// The write path.
    pub writes: WriteLog,
    /// The online connections.
    pub registry: Arc<Registry>,
    /// The limits in force.
    pub limits: Limits,
    /// The need-to-know policy.
    pub policy: Arc<PolicySource>,
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

/// Which request a pending write answers, to shape its reply.
#[derive(Debug, Clone, Copy)]
pub enum WriteKind {
    /// A thread creation.
    CreateThread,
    /// A member added.
    AddMember,
    /// A message sent.
    Send,
    /// A group registered.
    Group,
    /// A commit.
    Commit,
    /// KeyPackages uploaded.
    UploadKeyPackages,
    /// A KeyPackage claimed.
    ClaimKeyPackage,
    /// An attachment chunk stored.
    PutBlobChunk,
}

/// What became of a request once applied.
#[derive(Debug)]
pub enum Outcome {
    /// Answered without a write.
    Ready(Result<Reply, WireError>),
    /// Queued on the write path; the reply goes out once it is durable.
    Writing {
        /// The request it answers.
        kind: WriteKind,
        /// Where the durable result arrives.
        durable: Durable,
    },
}

fn internal(e: StoreError) -> WireError {
    error!(error = %e, "store failure");
    WireError::new(ErrorCode::Internal, "the hub could not complete the request; nothing was changed")
}

/// A policy denial as the caller sees it: the rule and why.
fn denied(decision: Decision) -> WireError {
    WireError::new(ErrorCode::Forbidden, format!("denied by rule {}: {}", decision.rule, decision.reason))
}

fn not_durable(e: WriteError) -> WireError {
    match e {
        WriteError::Refused(refusal) => refusal,
        WriteError::Store(StoreError::NoSuchThread) => WireError::thread_not_found(),
        e => {
            error!(error = %e, "write failed");
            WireError::new(ErrorCode::Unavailable, "the hub could not make the change durable; retry")
        }
    }
}

impl Hub {
    /// Builds the shared state around a store; starts the writer thread.
    pub fn new(store: Arc<dyn Store>, limits: Limits, policy: Arc<PolicySource>) -> std::io::Result<Arc<Self>> {
        let registry = Registry::new(limits.max_connections_per_identity);
        let writes = WriteLog::start(store.clone(), registry.clone())?;
        Ok(Arc::new(Self { writes, store, registry, limits, policy }))
    }

    /// Reloads the policy file; a file that does not validate leaves the policy in force.
    pub async fn reload_policy(&self) {
        match self.policy.reload() {
            Ok(()) => tracing::info!(file = %self.policy.path().display(), "policy reloaded"),
            Err(e) => error!("policy reload refused, the previous policy stays in force: {e}"),
        }
    }

    /// Applies a request. Requests applied one after another are written in
    /// that order; this waits only for room on the write path, not for disk.
    pub async fn apply(&self, caller: &Caller, request: Request) -> Outcome {
        match self.try_apply(caller, request).await {
            Ok(outcome) => outcome,
            Err(e) => Outcome::Ready(Err(e)),
        }
    }

    async fn try_apply(&self, caller: &Caller, request: Request) -> Result<Outcome, WireError> {
        let policy = self.policy.current();
        let (on_behalf_of, request) = match request {
            Request::OnBehalfOf { member, request } => (Some(member), *request),
            other => (None, other),
        };
        let actor = policy.actor(&caller.identity, on_behalf_of.as_ref()).map_err(denied)?;
        self.authorize(&policy, caller, &actor, &request)?;
        let (kind, write) = match request {
            Request::CreateThread { client_ref } => {
                (WriteKind::CreateThread, Write::CreateThread { creator: actor, client_ref })
            }
            Request::AddMember { thread, member, .. } => {
                (WriteKind::AddMember, Write::AddMember { thread, by: actor, member })
            }
            Request::Send { thread, message, payload } => {
                let epoch = wire::mls::check_private_message(&payload, thread)
                    .map_err(|e| WireError::new(ErrorCode::Invalid, e))?;
                (WriteKind::Send, Write::Append { thread, sender: actor, id: message, payload, epoch })
            }
            Request::InitGroup { thread, group_info, ratchet_tree } => {
                (WriteKind::Group, Write::InitGroup { thread, caller: actor, group_info, ratchet_tree })
            }
            Request::Commit { thread, commit, welcome } => {
                let welcome = welcome.map(serde_bytes::ByteBuf::into_vec);
                (WriteKind::Commit, Write::Commit { thread, caller: actor, commit, welcome })
            }
            Request::UploadKeyPackages { key_packages } => {
                if key_packages.is_empty() {
                    let stock = self.store.key_package_stock(&caller.member).map_err(internal)?;
                    return Ok(Outcome::Ready(Ok(Reply::KeyPackagesStored { stock })));
                }
                let packages = self.verify_key_packages(caller, key_packages)?;
                (WriteKind::UploadKeyPackages, Write::AddKeyPackages { member: caller.member.clone(), packages })
            }
            Request::ClaimKeyPackage { thread, member } => {
                if !self.is_member(thread, &member)? {
                    return Err(WireError::new(ErrorCode::Invalid, format!("{member} is not a member of the thread")));
                }
                (WriteKind::ClaimKeyPackage, Write::TakeKeyPackage { member })
            }
            Request::PutBlobChunk { thread, blob, index, last, data } => {
                let upload = ChunkUpload { thread, uploader: actor, blob, index, last, data };
                (WriteKind::PutBlobChunk, Write::PutBlobChunk { upload, max_bytes: self.limits.max_blob_bytes })
            }
            Request::GetBlobChunk { blob, index } => return Ok(Outcome::Ready(self.blob_chunk(&actor, blob, index))),
            Request::ListThreads => return Ok(Outcome::Ready(self.list_threads(&actor))),
            Request::ListMembers { thread } => {
                let members = self.store.members(thread).map_err(internal)?;
                return Ok(Outcome::Ready(Ok(Reply::Members { members })));
            }
            Request::AuditQuery { .. } => {
                return Err(WireError::new(ErrorCode::Invalid, "the audit log is not available yet"));
            }
            Request::OnBehalfOf { .. } => unreachable!("refused by authorize"),
        };
        Ok(Outcome::Writing { kind, durable: self.writes.submit(write).await })
    }

    /// The enforcement point: every request passes here before it has any
    /// effect, and is refused unless the policy allows it.
    fn authorize(
        &self,
        policy: &Policy,
        caller: &Caller,
        actor: &MemberId,
        request: &Request,
    ) -> Result<(), WireError> {
        let (action, thread) = match request {
            Request::CreateThread { .. } => (Action::CreateThread, None),
            Request::AddMember { thread, .. } | Request::ClaimKeyPackage { thread, .. } => {
                (Action::AddMember, Some(*thread))
            }
            Request::Send { thread, .. }
            | Request::InitGroup { thread, .. }
            | Request::Commit { thread, .. }
            | Request::PutBlobChunk { thread, .. } => (Action::Send, Some(*thread)),
            Request::ListMembers { thread } => (Action::Read, Some(*thread)),
            // A blob's thread is known only from its record: `blob_chunk` checks membership.
            Request::ListThreads | Request::UploadKeyPackages { .. } | Request::GetBlobChunk { .. } => {
                (Action::Read, None)
            }
            Request::AuditQuery { .. } => (Action::AuditQuery, None),
            Request::OnBehalfOf { .. } => {
                return Err(WireError::new(ErrorCode::Invalid, "on_behalf_of cannot be nested"));
            }
        };
        let allowed = policy.role_allows(caller.identity.role, action);
        if !allowed.allowed {
            return Err(denied(allowed));
        }
        if let Some(thread) = thread {
            // Not a member: the same answer as for a case that does not exist.
            if !self.is_member(thread, actor)? {
                return Err(WireError::thread_not_found());
            }
        }
        if let Request::AddMember { member, reason, legal_basis, .. } = request {
            wire::identity::validate_worker(&member.worker)
                .map_err(|e| WireError::new(ErrorCode::Invalid, e.to_string()))?;
            let decision = policy.may_add(actor, member, Grounds { reason, legal_basis });
            if !decision.allowed {
                return Err(denied(decision));
            }
        }
        Ok(())
    }

    /// Verifies uploaded KeyPackages: each must verify and carry the caller's
    /// own identity, and the caller's stock must stay within bounds.
    fn verify_key_packages(
        &self,
        caller: &Caller,
        uploads: Vec<serde_bytes::ByteBuf>,
    ) -> Result<Vec<Vec<u8>>, WireError> {
        let stock = self.store.key_package_stock(&caller.member).map_err(internal)?;
        if uploads.len() > MAX_KEY_PACKAGE_UPLOAD || stock as usize + uploads.len() > MAX_KEY_PACKAGE_STOCK {
            return Err(WireError::new(
                ErrorCode::Invalid,
                format!(
                    "at most {MAX_KEY_PACKAGE_UPLOAD} per upload and {MAX_KEY_PACKAGE_STOCK} held; {stock} held now"
                ),
            ));
        }
        uploads
            .into_iter()
            .map(|bytes| {
                let verified = wire::mls::verify_key_package(&bytes)
                    .map_err(|e| WireError::new(ErrorCode::Invalid, e.to_string()))?;
                if verified.member != caller.member || verified.kind != caller.identity.kind {
                    tracing::warn!(peer = %caller.peer, identity = %caller.identity, claimed = %verified.member,
                        "refused a KeyPackage whose credential names another identity");
                    return Err(WireError::new(
                        ErrorCode::Forbidden,
                        "the KeyPackage's credential does not name this connection's identity",
                    ));
                }
                Ok(bytes.into_vec())
            })
            .collect()
    }

    /// A chunk of a sealed blob, for a current member of its thread only.
    fn blob_chunk(&self, actor: &MemberId, blob: BlobId, index: u32) -> Result<Reply, WireError> {
        let (thread, chunks) = blobs::sealed_thread(self.store.blob(blob).map_err(internal)?)?;
        if !self.is_member(thread, actor)? {
            return Err(blobs::not_found());
        }
        let data = match self.store.blob_chunk(blob, index).map_err(internal)? {
            Some(data) if index < chunks => data,
            _ => return Err(WireError::new(ErrorCode::Invalid, format!("the blob has chunks 0 to {}", chunks - 1))),
        };
        Ok(Reply::BlobChunk { blob, index, last: index + 1 == chunks, data })
    }

    fn list_threads(&self, actor: &MemberId) -> Result<Reply, WireError> {
        let summary = |thread| -> Result<ThreadSummary, StoreError> {
            Ok(ThreadSummary {
                thread,
                last_seq: self.store.last_seq(thread)?,
                cursor: self.store.cursor(actor, thread)?,
            })
        };
        let threads = self.store.threads_of(actor).and_then(|t| t.into_iter().map(summary).collect());
        Ok(Reply::Threads { threads: threads.map_err(internal)? })
    }

    /// Waits for durability where needed and yields the reply. (The writer
    /// thread has published the new entry to the members by then.)
    pub async fn settle(&self, outcome: Outcome) -> Result<Reply, WireError> {
        let (kind, durable) = match outcome {
            Outcome::Ready(result) => return result,
            Outcome::Writing { kind, durable } => (kind, durable),
        };
        let written = durable.await.unwrap_or(Err(WriteError::Closed)).map_err(not_durable)?;
        match (kind, written) {
            (WriteKind::CreateThread, Written::Thread { thread }) => Ok(Reply::ThreadCreated { thread }),
            (WriteKind::AddMember, Written::Entry { seq, .. }) => Ok(Reply::MemberAdded { seq }),
            (WriteKind::Send, Written::Entry { seq, duplicate }) => Ok(Reply::Sent { seq, duplicate }),
            (WriteKind::Group, Written::Group { epoch }) => Ok(Reply::GroupReady { epoch }),
            (WriteKind::Commit, Written::Commit { epoch, seq }) => Ok(Reply::CommitAccepted { epoch, seq }),
            (WriteKind::UploadKeyPackages, Written::KeyPackages { stock }) => Ok(Reply::KeyPackagesStored { stock }),
            (WriteKind::ClaimKeyPackage, Written::KeyPackage(Some(package))) => {
                Ok(Reply::KeyPackage { key_package: package.into() })
            }
            (WriteKind::PutBlobChunk, Written::BlobChunk { blob, index, duplicate }) => {
                Ok(Reply::BlobChunkStored { blob, index, duplicate })
            }
            (WriteKind::ClaimKeyPackage, Written::KeyPackage(None)) => Err(WireError::new(
                ErrorCode::NoKeyPackage,
                "the member has no KeyPackage left at the hub; it uploads more when it connects",
            )),
            (kind, written) => {
                error!(?kind, ?written, "a write was answered with the wrong kind of result");
                Err(WireError::new(ErrorCode::Internal, "internal error"))
            }
        }
    }

    /// Records that the caller processed `thread` up to `seq`. The cursor
    /// becomes durable with the next flush; losing it in a crash only means
    /// entries are delivered again.
    pub async fn ack(&self, caller: &Caller, thread: ThreadId, seq: u64) -> Result<(), WireError> {
        self.require_member(caller, thread)?;
        let last = self.store.last_seq(thread).map_err(internal)?;
        if seq > last {
            return Err(WireError::new(ErrorCode::Invalid, format!("ack for seq {seq} beyond the last entry {last}")));
        }
        self.writes.submit_unanswered(Write::Cursor { member: caller.member.clone(), thread, seq }).await;
        Ok(())
    }

    fn require_member(&self, caller: &Caller, thread: ThreadId) -> Result<(), WireError> {
        if self.is_member(thread, &caller.member)? {
            Ok(())
        } else {
            Err(WireError::thread_not_found())
        }
    }

    /// Whether `member` is on the thread: from the delivery cache when it holds
    /// the thread, from the store otherwise.
    fn is_member(&self, thread: ThreadId, member: &MemberId) -> Result<bool, WireError> {
        match self.registry.cached_membership(thread, member) {
            Some(member) => Ok(member),
            None => self.store.is_member(thread, member).map_err(internal),
        }
    }
}
