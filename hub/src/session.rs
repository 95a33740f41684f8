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
use wire::audit::{AuditAction, AuditFilter, AuditOutcome, AuditRecord};
use wire::{BlobId, ErrorCode, Identity, MemberId, Reply, Request, ThreadId, ThreadSummary, WireError};

use crate::audit::{self, Recorder};
use crate::blobs::{self, ChunkUpload};
use crate::clock::Clock;
use crate::config::Limits;
use crate::delivery::{Farewell, Registry};
use crate::durability::{Durable, Write, WriteError, WriteLog, Written};
use crate::groups::CommitKind;
use crate::handovers::{self, HandoverOp};
use crate::policy::{Action, Decision, Grounds, Policy, PolicySource};
use crate::store::{Store, StoreError};
use certs::binding::Validity;
use certs::revocation::CertValidity;
use wire::handover::Calendar;

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
    /// How often, at most, the audit chain is checkpointed while idle.
    pub checkpoint_every_ms: u64,
    /// The clock handover deadlines run on (tests move it).
    pub clock: Clock,
    /// Working days for handover deadlines.
    pub calendar: Calendar,
    /// The per-identity quotas' counters.
    pub quotas: crate::quotas::Quotas,
    /// Refused handshakes of the current interval, for aggregated audit entries.
    pub refusals: crate::admission::Refusals,
    /// The hub-wide budget of bytes queued towards connections.
    pub outbound: Arc<tokio::sync::Semaphore>,
    /// The TLS configuration and the CRLs in force.
    pub certificates: Arc<crate::tls::Certificates>,
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
    /// Its certificate's validity period and serial, checked again over the
    /// connection's life.
    pub certificate: CertValidity,
    /// Its network address.
    pub peer: SocketAddr,
    /// Which of the identity's devices it is (see `crate::devices`).
    pub device: wire::DeviceId,
}

impl Caller {
    /// A caller with the given identity, certificate (fingerprint and
    /// validity) and address.
    pub fn new(identity: Identity, fingerprint: String, certificate: CertValidity, peer: SocketAddr) -> Self {
        let member = identity.member_id();
        Self { identity, member, fingerprint, certificate, peer, device: wire::DeviceId::default() }
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
    /// A handover step.
    Handover,
}

/// An authorised request, turned into what the hub does with it.
enum Prepared {
    /// A write, and the reply it will shape.
    Write(WriteKind, Write),
    /// The answer to a read.
    Read(Result<Reply, WireError>),
    /// A read that runs on a blocking thread.
    Slow(tokio::task::JoinHandle<Result<Reply, WireError>>),
}

/// The identity a request acts as, when the policy lets it act at all.
fn actor_of(policy: &Policy, caller: &Caller, on_behalf_of: &Option<MemberId>) -> Option<MemberId> {
    policy.actor(&caller.identity, on_behalf_of.as_ref()).ok()
}

/// What became of a request once applied.
#[derive(Debug)]
pub enum Outcome {
    /// Answered without a write.
    Ready(Result<Reply, WireError>),
    /// Answered, but the reply goes out only once the access's audit entry is durable.
    Audited {
        /// The answer.
        reply: Result<Reply, WireError>,
        /// Where the audit entry's durability is reported.
        durable: Durable,
    },
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
fn denied(decision: &Decision) -> WireError {
    WireError::new(ErrorCode::Forbidden, format!("denied by rule {}: {}", decision.rule, decision.reason))
}

/// How a refused reread is told: `what` was refused, and what `stays` in force.
#[derive(Debug, Clone, Copy)]
pub struct Refused {
    /// For example "policy reload refused"; its kebab case is the audit rule.
    pub what: &'static str,
    /// What stays in force instead.
    pub stays: &'static str,
}

/// The audit record of a reload of `object` (the policy file, the CRL files):
/// what the hub puts in force decides who is admitted, so both are `policy_reload`.
pub fn reload_record(object: &str, outcome: AuditOutcome, rule: String) -> AuditRecord {
    AuditRecord {
        object: Some(object.to_owned()),
        outcome,
        rule,
        ..audit::blank_record(AuditAction::PolicyReload, None)
    }
}

/// The connections a policy change from `before` to `after` no longer admits.
fn no_longer_admits<'a>(
    before: &'a Policy,
    after: &'a Policy,
) -> impl Fn(crate::delivery::Open<'_>) -> Option<Farewell> + 'a {
    move |open| (!PolicySource::keeps(before, after, open.member, open.role)).then(Farewell::policy)
}

fn not_durable(e: WriteError) -> WireError {
    match e {
        WriteError::Refused(refusal) => refusal,
        WriteError::Store(StoreError::NoSuchThread) => WireError::thread_not_found(),
        WriteError::Stalled => WireError::new(ErrorCode::Unavailable, e.to_string()),
        e => {
            error!(error = %e, "write failed");
            WireError::new(ErrorCode::Unavailable, "the hub could not make the change durable; retry")
        }
    }
}

impl Hub {
    /// Builds the shared state around a store; starts the writer thread.
    pub fn new(
        store: Arc<dyn Store>,
        limits: Limits,
        policy: Arc<PolicySource>,
        recorder: Recorder,
        clock: Clock,
        calendar: Calendar,
        certificates: Arc<crate::tls::Certificates>,
    ) -> std::io::Result<Arc<Self>> {
        let registry = Registry::new(limits.max_connections_per_identity);
        let checkpoint_every_ms = recorder.checkpoint_every_ms();
        let writes = WriteLog::start(store.clone(), registry.clone(), recorder, certificates.identities())?;
        let quotas = crate::quotas::Quotas::default();
        let refusals = crate::admission::Refusals::default();
        let outbound =
            Arc::new(tokio::sync::Semaphore::new(limits.outbound_total_bytes.min(tokio::sync::Semaphore::MAX_PERMITS)));
        Ok(Arc::new(Self {
            writes,
            store,
            registry,
            limits,
            policy,
            checkpoint_every_ms,
            clock,
            calendar,
            quotas,
            refusals,
            outbound,
            certificates,
        }))
    }

    /// Reloads the policy file; a file that does not validate leaves the policy
    /// in force. The reload, and the closing of every connection the new policy
    /// no longer admits, are audited before they take effect; those
    /// connections receive nothing once it is in force.
    pub async fn reload_policy(&self) {
        let path = self.policy.path().display().to_string();
        let refused = Refused { what: "policy reload refused", stays: "the previous policy stays in force" };
        let Some(candidate) = self.reread(&path, self.policy.read_again(), refused).await else { return };
        let before = self.policy.current();
        let mut records = vec![reload_record(&path, AuditOutcome::Allowed, "policy-reloaded".to_owned())];
        records.extend(self.registry.refused_by(no_longer_admits(&before, &candidate)));
        if let Err(e) = self.audit_all(records).await {
            error!(error = %e, "cannot audit the policy reload; the previous policy stays in force");
            return;
        }
        self.policy.install(candidate);
        let after = self.policy.current();
        self.registry.revoke(no_longer_admits(&before, &after));
        tracing::info!(file = %path, "policy reloaded");
    }

    /// The result of rereading `object`; a failure is logged and audited
    /// (outcome failed, rule `what` in kebab case) and gives `None`: what is in force stays.
    pub async fn reread<T, E: std::fmt::Display>(
        &self,
        object: &str,
        read: Result<T, E>,
        refused: Refused,
    ) -> Option<T> {
        let e = match read {
            Ok(candidate) => return Some(candidate),
            Err(e) => e,
        };
        error!("{}, {}: {e}", refused.what, refused.stays);
        let rule = format!("{}: {e}", refused.what.to_lowercase().replace(' ', "-"));
        let _ = self.audit_all(vec![reload_record(object, AuditOutcome::Failed, rule)]).await;
        None
    }

    /// Writes `records` to the audit log, one after another, until one fails.
    pub async fn audit_all(&self, records: Vec<AuditRecord>) -> Result<(), WriteError> {
        for record in records {
            self.writes.submit(Write::Audit, Some(record)).await.await.unwrap_or(Err(WriteError::Closed))?;
        }
        Ok(())
    }

    /// Runs a retention sweep at `now_ms` with the policy's periods and records
    /// what it deleted.
    pub async fn sweep_retention(&self, now_ms: u64) -> Result<crate::retention::Swept, WireError> {
        let retention = self.policy.current().retention.clone();
        let devices = self.limits.devices();
        let written = self.writes.submit(Write::Retention { retention, devices, now_ms }, None).await;
        match written.await.unwrap_or(Err(WriteError::Closed)) {
            Ok(Written::Swept(swept)) => Ok(swept),
            Ok(other) => Err(WireError::new(ErrorCode::Internal, format!("unexpected {other:?}"))),
            Err(e) => Err(not_durable(e)),
        }
    }

    /// The audit record of deliveries to this caller's connection.
    pub fn delivery_record(&self, caller: &Caller) -> AuditRecord {
        AuditRecord {
            actor: Some(audit::actor(&caller.identity, &caller.fingerprint)),
            rule: "member-of-case".into(),
            ..audit::blank_record(AuditAction::Deliver, Some(caller.peer))
        }
    }

    /// Records a connection, or a refused handshake (with no caller), in the
    /// audit log, and waits until the entry is durable.
    pub async fn audit_connection(
        &self,
        caller: Option<&Caller>,
        peer: SocketAddr,
        action: AuditAction,
        outcome: AuditOutcome,
        why: &str,
    ) -> Result<(), WireError> {
        let record = AuditRecord {
            actor: caller.map(|c| audit::actor(&c.identity, &c.fingerprint)),
            outcome,
            rule: why.to_owned(),
            ..audit::blank_record(action, Some(peer))
        };
        let durable = self.writes.submit(Write::Audit, Some(record)).await;
        durable.await.unwrap_or(Err(WriteError::Closed)).map(drop).map_err(not_durable)
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
        let mut record = access_record(caller, on_behalf_of.clone(), &request);
        let decided = policy
            .actor(&caller.identity, on_behalf_of.as_ref())
            .map_err(|d| (denied(&d), d.rule))
            .and_then(|actor| Ok((self.authorize(&policy, caller, &actor, &request)?, actor)));
        let actor = match decided {
            Ok((rule, actor)) => {
                record.rule = rule.to_owned();
                actor
            }
            Err((refusal, rule)) => {
                if let Some(farewell) = self.farewell(&actor_of(&policy, caller, &on_behalf_of), &request, rule) {
                    record.rule = "leave-already-recorded".into();
                    let durable = self.writes.submit(Write::Audit, Some(record)).await;
                    return Ok(Outcome::Audited { reply: Ok(farewell), durable });
                }
                record.outcome = AuditOutcome::Denied;
                record.rule = rule.to_owned();
                return Err(self.refuse(record, refusal).await);
            }
        };
        if matches!(request, Request::AuditQuery { .. } | Request::AuditHead { .. }) {
            // A witness asks for the log as it is now: a head over every entry so far is signed (and durable)
            // first, so that the reply's head covers them. One flush per query; queries are rare.
            let _ = self.writes.submit(Write::Seal, None).await.await;
        }
        match self.prepare(&policy, caller, actor, request) {
            Ok(Prepared::Write(kind, write)) => {
                Ok(Outcome::Writing { kind, durable: self.writes.submit(write, Some(record)).await })
            }
            Ok(Prepared::Slow(slow)) => {
                let reply = slow.await.unwrap_or_else(|e| {
                    error!(error = %e, "a read off the runtime failed");
                    Err(WireError::new(ErrorCode::Internal, "internal error"))
                });
                Ok(self.answered(record, reply).await)
            }
            Ok(Prepared::Read(reply)) => Ok(self.answered(record, reply).await),
            Err(refusal) => {
                let forbidden = refusal.code == ErrorCode::Forbidden;
                record.outcome = if forbidden { AuditOutcome::Denied } else { AuditOutcome::Failed };
                record.rule = format!("{}; refused: {}", record.rule, refusal.message);
                Err(self.refuse(record, refusal).await)
            }
        }
    }

    /// Releases a read's answer once its audit entry, saying whether it failed, is durable.
    async fn answered(&self, mut record: AuditRecord, reply: Result<Reply, WireError>) -> Outcome {
        if let Err(e) = &reply {
            record.outcome = AuditOutcome::Failed;
            record.rule = format!("{}; failed: {:?}", record.rule, e.code);
        }
        Outcome::Audited { reply, durable: self.writes.submit(Write::Audit, Some(record)).await }
    }

    /// Records a refusal in the audit log and hands it back. The refusal
    /// stands whether or not its entry could be written.
    async fn refuse(&self, record: AuditRecord, refusal: WireError) -> WireError {
        let _ = self.writes.submit(Write::Audit, Some(record)).await.await;
        refusal
    }

    /// The answer to a resent `leave_case` from a member who has left: the
    /// case's state as it stood when it left, so that the step reads as done
    /// without showing anything that happened after.
    fn farewell(&self, actor: &Option<MemberId>, request: &Request, rule: &str) -> Option<Reply> {
        let (Request::LeaveCase { thread, reason }, Some(actor), "not-a-member") = (request, actor, rule) else {
            return None;
        };
        let ownership = self.store.farewell(*thread, actor).ok()??;
        let recorded = ownership.left.iter().any(|(m, r)| m == actor && r == reason);
        recorded.then(|| Reply::Ownership { ownership: Box::new(ownership) })
    }

    /// Turns an authorised request into its write, or answers it when it only reads.
    fn prepare(
        &self,
        policy: &Policy,
        caller: &Caller,
        actor: MemberId,
        request: Request,
    ) -> Result<Prepared, WireError> {
        let (kind, write) = match request {
            Request::CreateThread { client_ref } => {
                // Counted for the certificate's identity, so a system cannot spread them over workers it names.
                self.quotas.create_thread(&self.limits, &caller.member, self.clock.now_ms())?;
                (WriteKind::CreateThread, Write::CreateThread { creator: actor, client_ref })
            }
            Request::AddMember { thread, member, .. } => {
                let max_members = self.limits.max_members_per_thread;
                (WriteKind::AddMember, Write::AddMember { thread, by: actor, member, max_members })
            }
            Request::Send { thread, message, payload } => {
                let epoch = wire::mls::check_private_message(&payload, thread)
                    .map_err(|e| WireError::new(ErrorCode::Invalid, e))?;
                (WriteKind::Send, Write::Append { thread, sender: actor, id: message, payload, epoch })
            }
            Request::InitGroup { thread, group_info, ratchet_tree } => {
                (WriteKind::Group, Write::InitGroup { thread, caller: actor, group_info, ratchet_tree })
            }
            Request::Commit { thread, commit, welcome, group_info } => {
                let may_change_membership = policy.role_allows(caller.identity.role, Action::AddMember).allowed;
                let write = Write::Commit {
                    thread,
                    caller: actor,
                    kind: CommitKind::Member,
                    may_change_membership,
                    commit,
                    welcome: welcome.map(serde_bytes::ByteBuf::into_vec),
                    group_info: group_info.map(serde_bytes::ByteBuf::into_vec),
                    max_devices: self.limits.max_devices_per_identity,
                };
                (WriteKind::Commit, write)
            }
            Request::Rejoin { thread, commit, group_info } => {
                let write = Write::Commit {
                    thread,
                    caller: actor,
                    kind: CommitKind::Rejoin,
                    may_change_membership: false,
                    commit,
                    welcome: None,
                    group_info: Some(group_info),
                    max_devices: self.limits.max_devices_per_identity,
                };
                (WriteKind::Commit, write)
            }
            Request::UploadKeyPackages { key_packages } if !key_packages.is_empty() => {
                self.quotas.upload_key_packages(&self.limits, &caller.member)?;
                let packages = self.verify_key_packages(caller, key_packages)?;
                (WriteKind::UploadKeyPackages, Write::AddKeyPackages { member: caller.member.clone(), packages })
            }
            Request::ClaimKeyPackage { thread, member } => {
                if !self.is_member(thread, &member)? {
                    return Err(WireError::new(ErrorCode::Invalid, format!("{member} is not a member of the thread")));
                }
                (WriteKind::ClaimKeyPackage, Write::TakeKeyPackage { thread, claimer: actor, member })
            }
            Request::PutBlobChunk { thread, blob, index, last, data } => {
                let upload = ChunkUpload { thread, uploader: actor, blob, index, last, data };
                (
                    WriteKind::PutBlobChunk,
                    Write::PutBlobChunk { upload, limits: crate::blobs::BlobLimits::of(&self.limits) },
                )
            }
            Request::OfferHandover { thread, offer } => {
                // Every offer stays in the case's state, which every `ownership` reply carries.
                let made = self.store.ownership(thread).map_err(internal)?.map_or(0, |o| o.offers.len());
                if made >= self.limits.max_offers_per_case {
                    let key = "limits.max_offers_per_case";
                    return Err(crate::quotas::exceeded(key, self.limits.max_offers_per_case, "too many offers"));
                }
                self.handover(thread, &actor, HandoverOp::Offer(offer))
            }
            Request::AnswerOffer { thread, offer, accept, reason } => {
                self.handover(thread, &actor, HandoverOp::Answer { offer, accept, reason })
            }
            Request::CompleteHandover { thread, offer, family } => {
                self.handover(thread, &actor, HandoverOp::Complete { offer, family })
            }
            Request::ReportDone { thread, clock } => self.handover(thread, &actor, HandoverOp::Done(clock)),
            Request::ScheduleRappel { thread } => self.handover(thread, &actor, HandoverOp::Rappel),
            Request::LeaveCase { thread, reason } => self.handover(thread, &actor, HandoverOp::Leave(reason)),
            // These read through indexes that still grow with the organisation's
            // history: they run on a blocking thread, never on the async workers.
            Request::AuditQuery { filter, known_size } => {
                let (store, oin) = (self.store.clone(), caller.identity.oin.clone());
                let slow = tokio::task::spawn_blocking(move || audit_query(store.as_ref(), &oin, &filter, known_size));
                return Ok(Prepared::Slow(slow));
            }
            Request::ListOffers => {
                let (store, policy, identity) = (self.store.clone(), self.policy.current(), caller.identity.clone());
                let slow = tokio::task::spawn_blocking(move || list_offers(store.as_ref(), &policy, &identity, &actor));
                return Ok(Prepared::Slow(slow));
            }
            read => return Ok(Prepared::Read(self.read(caller, &actor, read))),
        };
        Ok(Prepared::Write(kind, write))
    }

    fn handover(&self, thread: ThreadId, actor: &MemberId, op: HandoverOp) -> (WriteKind, Write) {
        let (calendar, now_ms) = (self.calendar.clone(), self.clock.now_ms());
        (WriteKind::Handover, Write::Handover { thread, by: actor.clone(), op, calendar, now_ms })
    }

    /// Fires handover deadlines due by the hub's clock; each escalation is
    /// recorded in the audit log before it is written to its thread.
    pub async fn fire_deadlines(&self) -> Result<(), WireError> {
        let write = Write::HandoverDeadlines { calendar: self.calendar.clone(), now_ms: self.clock.now_ms() };
        let written = self.writes.submit(write, None).await.await.unwrap_or(Err(WriteError::Closed));
        written.map(drop).map_err(not_durable)
    }

    /// Answers a request that changes nothing.
    fn read(&self, caller: &Caller, actor: &MemberId, request: Request) -> Result<Reply, WireError> {
        match request {
            Request::UploadKeyPackages { .. } => {
                let stock = self.store.key_package_stock(&caller.member).map_err(internal)?;
                Ok(Reply::KeyPackagesStored { stock })
            }
            Request::GetBlobChunk { thread, blob, index } => self.blob_chunk(thread, blob, index),
            Request::ListThreads => self.list_threads(caller, actor),
            Request::ListMembers { thread } => {
                Ok(Reply::Members { members: self.store.members(thread).map_err(internal)? })
            }
            Request::GroupInfo { thread } => self.group_info(thread),
            Request::GetOwnership { thread } => match self.store.ownership(thread).map_err(internal)? {
                Some(ownership) => Ok(Reply::Ownership { ownership: Box::new(ownership) }),
                None => Err(WireError::thread_not_found()),
            },
            Request::AuditHead { known_size } => {
                let (head, consistency) = audit_head(self.store.as_ref(), known_size)?;
                let head = head.ok_or_else(|| {
                    WireError::new(ErrorCode::Unavailable, "the audit log has no signed tree head yet")
                })?;
                Ok(Reply::AuditHead { head: Box::new(head), consistency })
            }
            other => Err(WireError::new(ErrorCode::Internal, format!("not a read: {other:?}"))),
        }
    }

    /// The enforcement point: every request passes here before it has any
    /// effect, and is refused unless the policy allows it. Returns the rule that
    /// allowed it, or the refusal and the rule that made it.
    fn authorize(
        &self,
        policy: &Policy,
        caller: &Caller,
        actor: &MemberId,
        request: &Request,
    ) -> Result<&'static str, (WireError, &'static str)> {
        let (action, thread) = match request {
            Request::CreateThread { .. } => (Action::CreateThread, None),
            Request::AddMember { thread, .. } | Request::ClaimKeyPackage { thread, .. } => {
                (Action::AddMember, Some(*thread))
            }
            Request::Send { thread, .. }
            | Request::InitGroup { thread, .. }
            | Request::Commit { thread, .. }
            | Request::PutBlobChunk { thread, .. } => (Action::Send, Some(*thread)),
            // Getting the group back is part of reading the case.
            Request::ListMembers { thread }
            | Request::GetBlobChunk { thread, .. }
            | Request::GroupInfo { thread }
            | Request::Rejoin { thread, .. } => (Action::Read, Some(*thread)),
            Request::ListThreads | Request::UploadKeyPackages { .. } => (Action::Read, None),
            Request::AuditQuery { .. } => (Action::AuditQuery, None),
            Request::OfferHandover { thread, .. }
            | Request::CompleteHandover { thread, .. }
            | Request::ReportDone { thread, .. }
            | Request::ScheduleRappel { thread }
            | Request::LeaveCase { thread, .. } => (Action::Handover, Some(*thread)),
            // The receiver is not on the case yet: the offer itself says whether it may answer.
            Request::AnswerOffer { .. } => (Action::Handover, None),
            Request::GetOwnership { thread } => (Action::Read, Some(*thread)),
            Request::ListOffers | Request::AuditHead { .. } if caller.identity.role == wire::Role::PrivacyOfficer => {
                (Action::AuditQuery, None)
            }
            // A head is sizes and hashes: whoever may read may witness it.
            Request::AuditHead { .. } => (Action::Read, None),
            Request::ListOffers => (Action::Handover, None),
            Request::OnBehalfOf { .. } => {
                return Err((WireError::new(ErrorCode::Invalid, "on_behalf_of cannot be nested"), "no-nesting"));
            }
        };
        crate::quotas::check_text(&self.limits, request).map_err(|e| (e, "max-text-bytes"))?;
        let allowed = policy.role_allows(caller.identity.role, action);
        if !allowed.allowed {
            return Err((denied(&allowed), allowed.rule));
        }
        if let Some(thread) = thread {
            // Not a member: the same answer as for a case that does not exist.
            let member = self.is_member(thread, actor).map_err(|e| (e, "store-failure"))?;
            if !member {
                return Err((WireError::thread_not_found(), "not-a-member"));
            }
            // Former owners read; they change nothing, membership least of all.
            let writes = matches!(
                request,
                Request::Send { .. }
                    | Request::PutBlobChunk { .. }
                    | Request::Commit { .. }
                    | Request::InitGroup { .. }
                    | Request::AddMember { .. }
                    | Request::ClaimKeyPackage { .. }
            );
            if writes {
                self.writable(thread, actor)?;
            }
        }
        if let Request::AddMember { member, reason, legal_basis, .. } = request {
            wire::identity::validate_worker(&member.worker)
                .map_err(|e| (WireError::new(ErrorCode::Invalid, e.to_string()), "invalid-member"))?;
            let decision = policy.may_add(actor, member, Grounds { reason, legal_basis });
            if !decision.allowed {
                return Err((denied(&decision), decision.rule));
            }
            return Ok(decision.rule);
        }
        if let Request::OfferHandover { offer, .. } = request {
            let decision = handovers::check_offer(policy, actor, offer);
            if !decision.allowed {
                return Err((denied(&decision), decision.rule));
            }
            return Ok(handovers::offer_rule(policy, offer));
        }
        Ok(if thread.is_some() { "member-of-case" } else { allowed.rule })
    }

    /// Former owners in their background role, and those who left, only read.
    fn writable(&self, thread: ThreadId, actor: &MemberId) -> Result<(), (WireError, &'static str)> {
        if self.store.is_read_only(thread, actor).map_err(|e| (internal(e), "store-failure"))? {
            let refusal = WireError::new(
                ErrorCode::Forbidden,
                "denied by rule background-read-only: a former owner reads the case but no longer writes in it",
            );
            return Err((refusal, "background-read-only"));
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
                        "denied by rule key-package-names-another-identity: the KeyPackage's credential does not name this connection's identity",
                    ));
                }
                self.certificates.identities().verify_leaf(verified.key_package.leaf_node(), Validity::Now).map_err(|e| {
                    WireError::new(ErrorCode::Forbidden, format!("denied by rule leaf-unbound: {e}"))
                })?;
                Ok(bytes.into_vec())
            })
            .collect()
    }

    /// A chunk of a sealed blob of `thread` (whose membership [`Hub::authorize`] checked).
    fn blob_chunk(&self, thread: ThreadId, blob: BlobId, index: u32) -> Result<Reply, WireError> {
        let chunks = blobs::sealed_chunks(self.store.blob(thread, blob).map_err(internal)?)?;
        let data = match self.store.blob_chunk(thread, blob, index).map_err(internal)? {
            Some(data) if index < chunks => data,
            _ => return Err(WireError::new(ErrorCode::Invalid, format!("the blob has chunks 0 to {}", chunks - 1))),
        };
        Ok(Reply::BlobChunk { blob, index, last: index + 1 == chunks, data })
    }

    /// What a device outside the thread's group rejoins from.
    fn group_info(&self, thread: ThreadId) -> Result<Reply, WireError> {
        let no_group = || WireError::new(ErrorCode::Invalid, "the thread has no MLS group");
        let state = self.store.group_state(thread).map_err(internal)?.ok_or_else(no_group)?;
        let group_info = self.store.group_info(thread).map_err(internal)?.ok_or_else(no_group)?;
        let (epoch, ratchet_tree) = crate::groups::epoch_and_tree(&state, thread)?;
        Ok(Reply::GroupInfo { epoch, group_info: group_info.into(), ratchet_tree: ratchet_tree.into() })
    }

    /// The actor's threads, with the cursors of this connection's device (a
    /// system acting for a worker sees the worker's default device's).
    fn list_threads(&self, caller: &Caller, actor: &MemberId) -> Result<Reply, WireError> {
        let device = if actor == &caller.member { caller.device.clone() } else { wire::DeviceId::default() };
        let summary = |thread| -> Result<ThreadSummary, StoreError> {
            Ok(ThreadSummary {
                thread,
                last_seq: self.store.last_seq(thread)?,
                cursor: self.store.cursor(actor, &device, thread)?,
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
            Outcome::Audited { reply, durable } => {
                return match durable.await.unwrap_or(Err(WriteError::Closed)) {
                    Ok(_) => reply,
                    Err(e) => Err(not_durable(e)),
                };
            }
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
            (WriteKind::Handover, Written::Ownership(ownership)) => Ok(Reply::Ownership { ownership }),
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
        // A cursor is shared by the identity's connections: only a certificate
        // that may read moves it (not an admin's with the same worker id).
        let policy = self.policy.current();
        let reads = policy.role_allows(caller.identity.role, Action::Read);
        if policy.actor(&caller.identity, None).is_err() || !reads.allowed {
            return Err(WireError::thread_not_found());
        }
        if !self.is_member(thread, &caller.member)? {
            // A former member acknowledges the rest of its interval, and nothing past it.
            let intervals = self.store.intervals(thread, &caller.member).map_err(internal)?;
            if !intervals.iter().any(|i| i.until.is_some_and(|until| seq <= until)) {
                return Err(WireError::thread_not_found());
            }
        }
        let last = self.store.last_seq(thread).map_err(internal)?;
        if seq > last {
            return Err(WireError::new(ErrorCode::Invalid, format!("ack for seq {seq} beyond the last entry {last}")));
        }
        let cursor = Write::Cursor { member: caller.member.clone(), device: caller.device.clone(), thread, seq };
        self.writes.submit_unanswered(cursor, None).await;
        Ok(())
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

/// Offers waiting for the actor's answer; for a privacy officer, the review
/// queue: offers to or from its organisation that share without consent.
fn list_offers(store: &dyn Store, policy: &Policy, identity: &Identity, actor: &MemberId) -> Result<Reply, WireError> {
    let offers = if identity.role == wire::Role::PrivacyOfficer {
        let oin = &identity.oin;
        let all = store.offers_of(oin).map_err(internal)?;
        all.into_iter()
            .flat_map(|(thread, o)| o.offers.into_iter().map(move |offer| (thread, offer)))
            .filter(|(_, offer)| {
                (offer.to == *oin || offer.from.oin == *oin) && handovers::needs_review(policy, &offer.legal_basis)
            })
            .collect()
    } else {
        handovers::waiting_for(store, actor).map_err(not_durable)?
    };
    Ok(Reply::Offers { offers })
}

/// A privacy officer's query, within the scope of its organisation.
fn audit_query(store: &dyn Store, oin: &wire::Oin, filter: &AuditFilter, known_size: u64) -> Result<Reply, WireError> {
    let cases = store.organisation_cases(oin).map_err(internal)?;
    // Outside the organisation's cases, a case and a non-case look the same.
    if filter.case.is_some_and(|case| !cases.contains(&case)) {
        return Err(WireError::new(
            ErrorCode::Forbidden,
            "denied by rule audit-outside-scope: the case is not one of your organisation's",
        ));
    }
    let (head, consistency) = audit_head(store, known_size)?;
    let covered = head.as_ref().map_or(0, |h| h.size);
    let (entries, truncated) = audit::query(store, oin, &cases, filter, covered).map_err(internal)?;
    let proofs = entries
        .iter()
        .map(|entry| {
            let path = wire::merkle::inclusion_proof(entry.seq - 1, covered, &mut audit::node_source(store));
            path.map(wire::audit::Proof::from_hashes).map_err(internal)
        })
        .collect::<Result<_, _>>()?;
    Ok(Reply::AuditEntries { entries, truncated, head: head.map(Box::new), proofs, consistency })
}

/// The latest signed tree head and the consistency proof to it from the tree of `known_size` entries (empty
/// when that is not below the head: the caller's check then fails or has nothing to prove).
fn audit_head(
    store: &dyn Store,
    known_size: u64,
) -> Result<(Option<wire::audit::SignedTreeHead>, wire::audit::Proof), WireError> {
    let Some(head) = store.latest_head().map_err(internal)? else { return Ok((None, wire::audit::Proof::default())) };
    let proof =
        wire::merkle::consistency_proof(known_size, head.size, &mut audit::node_source(store)).map_err(internal)?;
    Ok((Some(head), wire::audit::Proof::from_hashes(proof)))
}

/// What the audit log records about a request, before the policy decides.
fn access_record(caller: &Caller, on_behalf_of: Option<MemberId>, request: &Request) -> AuditRecord {
    let mut record = AuditRecord {
        actor: Some(audit::actor(&caller.identity, &caller.fingerprint)),
        on_behalf_of,
        ..audit::blank_record(AuditAction::ListThreads, Some(caller.peer))
    };
    let (action, case, object) = match request {
        Request::CreateThread { .. } => (AuditAction::CreateThread, None, None),
        Request::AddMember { thread, member, reason, legal_basis } => {
            record.purpose = Some(reason.clone());
            record.legal_basis = Some(legal_basis.clone());
            (AuditAction::AddMember, Some(*thread), Some(member.to_string()))
        }
        Request::Send { thread, message, .. } => (AuditAction::Send, Some(*thread), Some(message.to_string())),
        Request::InitGroup { thread, .. } | Request::Commit { thread, .. } => {
            (AuditAction::Commit, Some(*thread), None)
        }
        Request::Rejoin { thread, .. } => (AuditAction::Commit, Some(*thread), Some("rejoin".into())),
        Request::GroupInfo { thread } => (AuditAction::ListMembers, Some(*thread), Some("group info".into())),
        Request::UploadKeyPackages { .. } => (AuditAction::KeyPackage, None, None),
        Request::ClaimKeyPackage { thread, member } => {
            (AuditAction::KeyPackage, Some(*thread), Some(member.to_string()))
        }
        Request::PutBlobChunk { thread, blob, index, .. } => {
            (AuditAction::BlobPut, Some(*thread), Some(format!("{blob}#{index}")))
        }
        Request::GetBlobChunk { thread, blob, index } => {
            (AuditAction::BlobFetch, Some(*thread), Some(format!("{blob}#{index}")))
        }
        Request::ListThreads => (AuditAction::ListThreads, None, None),
        Request::ListMembers { thread } => (AuditAction::ListMembers, Some(*thread), None),
        Request::AuditQuery { filter, .. } => (AuditAction::AuditQuery, filter.case, Some(format!("{filter:?}"))),
        Request::AuditHead { known_size } => {
            (AuditAction::AuditQuery, None, Some(format!("tree head from {known_size}")))
        }
        Request::OnBehalfOf { .. } => (AuditAction::ListThreads, None, Some("nested on_behalf_of".into())),
        Request::OfferHandover { thread, offer } => {
            record.purpose = Some(offer.reason.clone());
            record.legal_basis = Some(offer.legal_basis.clone());
            let object = format!("offer to {} on route {}", offer.to.as_str(), offer.route);
            (AuditAction::Handover, Some(*thread), Some(object))
        }
        Request::AnswerOffer { thread, offer, accept, reason } => {
            record.purpose = reason.clone();
            let verb = if *accept { "accept" } else { "decline" };
            (AuditAction::Handover, Some(*thread), Some(format!("{verb} offer {offer}")))
        }
        Request::CompleteHandover { thread, offer, .. } => {
            (AuditAction::Handover, Some(*thread), Some(format!("complete offer {offer}")))
        }
        Request::ReportDone { thread, clock } => {
            (AuditAction::Handover, Some(*thread), Some(format!("{clock:?} done")))
        }
        Request::ScheduleRappel { thread } => (AuditAction::Handover, Some(*thread), Some("rappel scheduled".into())),
        Request::LeaveCase { thread, reason } => {
            record.purpose = Some(reason.clone());
            (AuditAction::Handover, Some(*thread), Some("leaves the case".into()))
        }
        Request::GetOwnership { thread } => (AuditAction::ListMembers, Some(*thread), Some("ownership".into())),
        Request::ListOffers => (AuditAction::Handover, None, Some("list offers".into())),
    };
    record.action = action;
    record.case = case;
    record.object = object;
    record
}
