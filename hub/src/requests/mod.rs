//! What a request from an authenticated caller does: the dispatch, and the
//! one place the policy decides.
//!
//! A connection awaits [`Hub::apply`] for one request after another, and apply
//! waits only for room on the write path, so a client that pipelines sends gets
//! them stored in the order it sent them. Writes then wait for durability in
//! [`Hub::settle`], concurrently with other requests, so that one flush covers
//! many of them. Membership is checked here for every thread-scoped request; a
//! caller outside a thread gets exactly the answer it would get for a thread
//! that does not exist.
//!
//! Every request passes `Hub::authorize` here before any family module sees
//! it, so that a new kind of request cannot bypass the policy by living in its
//! own file: the modules below only turn an allowed request into its write or
//! its answer, one family each (threads, MLS, blobs, handovers, audit).

mod audit;
mod blobs;
mod handover;
mod mls;
mod side;
mod threads;

use tracing::error;
use wire::audit::{AuditOutcome, AuditRecord};
use wire::{ErrorCode, MemberId, Reply, Request, ThreadId, WireError};

use serde_bytes::ByteBuf;

use crate::blobs::ChunkUpload;
use crate::durability::{Admission, Durable, Write, WriteError, Written};
use crate::groups::CommitKind;
use crate::handovers::{self, HandoverOp};
use crate::policy::{Action, Decision, Grounds, Policy};
use crate::session::{internal, not_durable, Caller, Hub};

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
/// The rule that lets any member who writes bring into the MLS group someone a
/// handover step put on the case; [`Hub::prepare`] marks such an add so that
/// the writer checks again that the member is still on the case.
const ADMITTED_BY_HANDOVER: &str = "admitted-by-handover";

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

/// Refuses what would write something new in a closed case. Also checked in
/// write order (see `durability`), since a close may land between the two.
pub(crate) fn open_case(store: &dyn crate::store::Store, thread: ThreadId) -> Result<(), WireError> {
    if store.is_closed(thread).map_err(internal)? {
        return Err(WireError::new(
            ErrorCode::Forbidden,
            "denied by rule case-closed: the case is closed; its owner reopens it to write in it again",
        ));
    }
    Ok(())
}

/// A member id whose worker part is well formed.
fn valid_worker(member: &MemberId) -> Result<(), (WireError, &'static str)> {
    wire::identity::validate_worker(&member.worker)
        .map_err(|e| (WireError::new(ErrorCode::Invalid, e.to_string()), "invalid-member"))
}

/// A policy denial as the caller sees it: the rule and why.
fn denied(decision: &Decision) -> WireError {
    WireError::new(ErrorCode::Forbidden, format!("denied by rule {}: {}", decision.rule, decision.reason))
}

/// The rule that allowed, or the denial with the rule that refused.
fn decided(decision: Decision) -> Result<&'static str, (WireError, &'static str)> {
    if decision.allowed {
        Ok(decision.rule)
    } else {
        Err((denied(&decision), decision.rule))
    }
}

impl Hub {
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
        let mut record = audit::access_record(caller, on_behalf_of.clone(), &request);
        let decided = policy
            .actor(&caller.identity, on_behalf_of.as_ref())
            .map_err(|d| (denied(&d), d.rule))
            .and_then(|actor| Ok((self.authorize(&policy, caller, &actor, &request)?, actor)));
        let (actor, rule) = match decided {
            Ok((rule, actor)) => {
                record.rule = rule.to_owned();
                (actor, rule)
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
        match self.prepare(&policy, caller, (actor, rule), request) {
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
        match &reply {
            Ok(Reply::HistoryShareRecorded { recipients }) => audit::disclosed_to(&mut record, recipients),
            // The review is filed on the reviewed entry's case, so that the case's queries show it.
            Ok(Reply::Reviewed { case, .. }) => record.case = Some(*case),
            _ => {}
        }
        if let Err(e) = &reply {
            // A read the scope refuses (a review outside it) is a denial, as the policy's own refusals are.
            let denied = e.code == ErrorCode::Forbidden;
            record.outcome = if denied { AuditOutcome::Denied } else { AuditOutcome::Failed };
            record.rule = format!("{}; {}: {:?}", record.rule, if denied { "refused" } else { "failed" }, e.code);
        }
        Outcome::Audited { reply, durable: self.writes.submit(Write::Audit, Some(record)).await }
    }

    /// Records a refusal in the audit log and hands it back. The refusal
    /// stands whether or not its entry could be written.
    async fn refuse(&self, record: AuditRecord, refusal: WireError) -> WireError {
        let _ = self.writes.submit(Write::Audit, Some(record)).await.await;
        refusal
    }

    /// Turns an authorised request into its write, or answers it when it only reads.
    fn prepare(
        &self,
        policy: &Policy,
        caller: &Caller,
        (actor, rule): (MemberId, &'static str),
        request: Request,
    ) -> Result<Prepared, WireError> {
        let (kind, write) = match request {
            Request::CreateThread { client_ref } => self.create_thread(caller, actor, client_ref)?,
            Request::AddMember { thread, member, .. } => {
                let admission = match rule {
                    ADMITTED_BY_HANDOVER => Admission::Handover,
                    side::FOLLOWS_OWNER => Admission::CaseOwner,
                    _ => Admission::Granted,
                };
                self.add_member(thread, actor, member, admission)
            }
            Request::OpenSideThread { case, client_ref, purpose } => {
                self.open_side_thread(caller, actor, wire::SideThread { case, purpose }, client_ref)?
            }
            Request::Send { thread, message, payload } => self.send(thread, actor, message, payload)?,
            Request::InitGroup { thread, group_info, ratchet_tree } => {
                self.init_group(thread, actor, group_info, ratchet_tree)
            }
            Request::Commit { thread, commit, welcome, group_info } => {
                let parts = (commit, welcome.map(ByteBuf::into_vec), group_info.map(ByteBuf::into_vec));
                self.commit((policy, caller, actor), thread, CommitKind::Member, parts)
            }
            Request::Rejoin { thread, commit, group_info } => {
                self.commit((policy, caller, actor), thread, CommitKind::Rejoin, (commit, None, Some(group_info)))
            }
            Request::UploadKeyPackages { key_packages } if !key_packages.is_empty() => {
                self.upload_key_packages(caller, key_packages)?
            }
            Request::ClaimKeyPackage { thread, member } => self.claim_key_package(thread, actor, member)?,
            Request::PutBlobChunk { thread, blob, index, last, data } => {
                self.put_blob_chunk(ChunkUpload { thread, uploader: actor, blob, index, last, data })
            }
            Request::OfferHandover { thread, offer } => self.offer_handover(thread, &actor, policy, offer)?,
            Request::AnswerOffer { thread, offer, accept, reason } => {
                self.handover(thread, &actor, HandoverOp::Answer { offer, accept, reason })
            }
            Request::CompleteHandover { thread, offer, family } => {
                self.handover(thread, &actor, HandoverOp::Complete { offer, family })
            }
            Request::ReportDone { thread, clock, due_ms } => {
                self.handover(thread, &actor, HandoverOp::Done(clock, due_ms))
            }
            Request::ScheduleRappel { thread } => self.handover(thread, &actor, HandoverOp::Rappel),
            Request::SetMeasure { thread, measure } => self.handover(thread, &actor, HandoverOp::Measure(measure)),
            Request::CallConference { thread, topic, until_ms, invited, .. } => {
                let max = (self.limits.max_members_per_thread, self.limits.max_conferences_per_case);
                self.handover(thread, &actor, HandoverOp::Conference { topic, until_ms, invited, max })
            }
            Request::RecordDecision { thread, conference, decision } => {
                self.handover(thread, &actor, HandoverOp::Decide { conference, decision })
            }
            Request::ScheduleEvaluation { thread, due_ms } => {
                self.handover(thread, &actor, HandoverOp::Evaluation { due_ms })
            }
            Request::LeaveCase { thread, reason } => self.handover(thread, &actor, HandoverOp::Leave(reason)),
            Request::WithdrawOffer { thread, offer, reason } => {
                self.handover(thread, &actor, HandoverOp::Withdraw { offer, reason })
            }
            Request::CancelOffer { thread, offer, reason } => {
                self.handover(thread, &actor, HandoverOp::Cancel { offer, reason })
            }
            Request::TakeOver { thread, reason } => self.take_over(thread, &actor, policy, reason),
            Request::CloseCase { thread, outcome, reason } => {
                let closed = self.store.ownership(thread).map_err(internal)?.map_or(0, |o| {
                    if o.closed().is_some() {
                        0
                    } else {
                        o.closures.len()
                    }
                });
                let max = self.limits.max_closures_per_case;
                if closed >= max {
                    return Err(crate::quotas::exceeded("limits.max_closures_per_case", max, "closed too often"));
                }
                let reopen_until_ms =
                    self.clock.now_ms() + u64::from(policy.closing.reopen_days) * wire::calendar::DAY_MS;
                self.handover(thread, &actor, HandoverOp::Close { outcome, reason, reopen_until_ms })
            }
            Request::ReopenCase { thread, reason } => {
                let lead = policy.is_team_lead(&actor);
                self.handover(thread, &actor, HandoverOp::Reopen { reason, lead })
            }
            Request::AddParticipant { thread, participant, .. } => {
                let max_members = self.limits.max_members_per_thread;
                self.handover(thread, &actor, HandoverOp::Engage { participant, max_members })
            }
            // These read through indexes that still grow with the organisation's
            // history: they run on a blocking thread, never on the async workers.
            Request::AuditQuery { filter, known_size } => {
                return Ok(Prepared::Slow(self.spawn_audit_query(caller, filter, known_size)));
            }
            Request::ListOffers => return Ok(Prepared::Slow(self.spawn_list_offers(caller, actor))),
            Request::ChainFigures { since_ms, until_ms } => {
                return Ok(Prepared::Slow(self.spawn_chain_figures(caller, since_ms, until_ms)));
            }
            Request::MarkReviewed { entry, note } => return Ok(Prepared::Slow(self.spawn_review(caller, entry, note))),
            Request::RecordHistoryShare { thread, seqs, .. } => {
                // Only the audit entry is written, and the reply waits for it to be durable.
                return Ok(Prepared::Read(self.history_share(thread, &actor, &seqs)));
            }
            read => return Ok(Prepared::Read(self.read(caller, &actor, read))),
        };
        Ok(Prepared::Write(kind, write))
    }

    /// Answers a request that changes nothing.
    fn read(&self, caller: &Caller, actor: &MemberId, request: Request) -> Result<Reply, WireError> {
        match request {
            Request::UploadKeyPackages { .. } => self.key_package_stock(caller),
            Request::GetBlobChunk { thread, blob, index } => self.blob_chunk(thread, blob, index),
            Request::ListThreads => self.list_threads(caller, actor),
            Request::GroupInfo { thread } => self.group_info(thread),
            Request::ListMembers { thread } => self.list_members(thread),
            Request::DeliveryStatus { thread } => self.delivery_status(thread),
            Request::GetOwnership { thread } => self.ownership(thread),
            Request::AuditHead { known_size } => self.signed_head(known_size),
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
            Request::OpenSideThread { case, .. } => (Action::CreateThread, Some(*case)),
            Request::AddMember { thread, .. }
            | Request::ClaimKeyPackage { thread, .. }
            | Request::AddParticipant { thread, .. }
            | Request::CallConference { thread, .. } => (Action::AddMember, Some(*thread)),
            Request::Send { thread, .. }
            | Request::RecordHistoryShare { thread, .. }
            | Request::InitGroup { thread, .. }
            | Request::Commit { thread, .. }
            | Request::PutBlobChunk { thread, .. } => (Action::Send, Some(*thread)),
            // Getting the group back is part of reading the case.
            Request::ListMembers { thread }
            | Request::DeliveryStatus { thread }
            | Request::GetBlobChunk { thread, .. }
            | Request::GroupInfo { thread }
            | Request::Rejoin { thread, .. } => (Action::Read, Some(*thread)),
            Request::ListThreads | Request::UploadKeyPackages { .. } => (Action::Read, None),
            Request::AuditQuery { .. } | Request::MarkReviewed { .. } => (Action::AuditQuery, None),
            // Figures are for the officers who answer for an organisation's cases, whatever else a policy
            // lets query the audit log.
            Request::ChainFigures { .. } if caller.identity.role != wire::Role::PrivacyOfficer => {
                let why = "denied by rule role-forbids: chain figures are for privacy officers";
                return Err((WireError::new(ErrorCode::Forbidden, why), "role-forbids"));
            }
            Request::ChainFigures { .. } => (Action::AuditQuery, None),
            Request::OfferHandover { thread, .. }
            | Request::CompleteHandover { thread, .. }
            | Request::ReportDone { thread, .. }
            | Request::ScheduleRappel { thread }
            | Request::SetMeasure { thread, .. }
            | Request::RecordDecision { thread, .. }
            | Request::ScheduleEvaluation { thread, .. }
            | Request::WithdrawOffer { thread, .. }
            | Request::CancelOffer { thread, .. }
            | Request::TakeOver { thread, .. }
            | Request::CloseCase { thread, .. }
            | Request::ReopenCase { thread, .. }
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
        let role_rule = decided(policy.role_allows(caller.identity.role, action))?;
        let (mut lead, mut side) = (false, false);
        if let Some(thread) = thread {
            // Not a member: the same answer as for a case that does not exist.
            let member = self.is_member(thread, actor).map_err(|e| (e, "store-failure"))?;
            lead = !member && self.lead_steps_in(policy, thread, actor, request)?;
            if !member && !lead {
                return Err((WireError::thread_not_found(), "not-a-member"));
            }
            let store_failure = |e| (internal(e), "store-failure");
            if self.store.is_inbox(thread).map_err(store_failure)? && !matches!(request, Request::ListMembers { .. }) {
                let why = "denied by rule inbox-is-read-only: the hub alone writes in an organisation's inbox";
                return Err((WireError::new(ErrorCode::Forbidden, why), "inbox-is-read-only"));
            }
            let case = self.store.case_of(thread).map_err(store_failure)?;
            side = case != thread;
            if side {
                if let Some(rule) = self.in_side_thread((thread, case), actor, (action, request))? {
                    return Ok(rule);
                }
            }
            // Former owners read; they change nothing, membership least of all.
            let writes = matches!(
                request,
                Request::Send { .. }
                    | Request::OpenSideThread { .. }
                    | Request::RecordHistoryShare { .. }
                    | Request::PutBlobChunk { .. }
                    | Request::Commit { .. }
                    | Request::InitGroup { .. }
                    | Request::AddMember { .. }
                    | Request::AddParticipant { .. }
                    | Request::CallConference { .. }
                    | Request::ClaimKeyPackage { .. }
            );
            // In a side thread the writer decides a commit: a former owner's may still bring the new owner in.
            if writes && !(side && matches!(request, Request::Commit { .. })) {
                self.writable(thread, actor)?;
            }
            // A closed case is read; nothing new is written or shared in it (commits still remove devices).
            let adds = writes && !matches!(request, Request::Commit { .. } | Request::InitGroup { .. });
            if adds {
                open_case(&*self.store, thread).map_err(|e| (e, "case-closed"))?;
            }
        }
        if let Request::AddMember { thread: case, member, reason, legal_basis } = request {
            valid_worker(member)?;
            let store_failure = |e| (internal(e), "store-failure");
            let ownership = self.store.ownership(*case).map_err(store_failure)?;
            // A member a handover step admitted (an acceptance, a takeover) is on the
            // case already: any member who writes may bring its devices into the group,
            // so that an absent owner does not keep the new one out.
            let admitted = ownership.as_ref().is_some_and(|o| o.admitted_by_handover(member))
                && self.store.is_member(*case, member).map_err(store_failure)?;
            let known_basis = policy.legal_basis(legal_basis).is_some();
            if admitted && known_basis && !reason.trim().is_empty() {
                return Ok(ADMITTED_BY_HANDOVER);
            }
            if ownership.is_some_and(|o| o.participant(actor).is_some()) {
                let rule = "participants-add-no-one";
                let why = format!("denied by rule {rule}: a consultant or co-worker brings nobody onto the case");
                return Err((WireError::new(ErrorCode::Forbidden, why), rule));
            }
            return decided(policy.may_add(actor, member, Grounds { reason, legal_basis }, side));
        }
        if let Request::OpenSideThread { case, .. } = request {
            self.owns_case(*case, actor)?;
        }
        if let Request::CloseCase { outcome, .. } = request {
            decided(policy.may_close(outcome))?;
        }
        if let Request::AddParticipant { participant, legal_basis, .. } = request {
            let until = participant.until_ms.saturating_sub(self.clock.now_ms());
            decided(policy.may_take_part(until, participant.role))?;
            valid_worker(&participant.member)?;
            let grounds = Grounds { reason: &participant.reason, legal_basis };
            return decided(policy.may_add(actor, &participant.member, grounds, false));
        }
        if let Request::RecordDecision { decision, .. } = request {
            if policy.organisation(&decision.regie_with).is_none() {
                let rule = "member-unknown-organisation";
                let why = format!("denied by rule {rule}: {} is not in the policy", decision.regie_with.as_str());
                return Err((WireError::new(ErrorCode::Forbidden, why), rule));
            }
        }
        if let Request::CallConference { until_ms, invited, legal_basis, .. } = request {
            return self.may_confer(policy, actor, (*until_ms, invited), legal_basis);
        }
        if let Request::OfferHandover { offer, .. } = request {
            let decision = handovers::check_offer(policy, actor, offer);
            if !decision.allowed {
                return Err((denied(&decision), decision.rule));
            }
            return Ok(if lead { "team-lead-of-owner" } else { handovers::offer_rule(policy, offer, &decision) });
        }
        Ok(match thread {
            Some(_) if lead => "team-lead-of-owner",
            Some(_) => "member-of-case",
            None => role_rule,
        })
    }

    /// Whether the sharing with every invitee of a case conference is allowed,
    /// as each were added as a participant until the conference ends.
    fn may_confer(
        &self,
        policy: &Policy,
        actor: &MemberId,
        (until_ms, invited): (u64, &[wire::handover::Invitation]),
        legal_basis: &str,
    ) -> Result<&'static str, (WireError, &'static str)> {
        let max = self.limits.max_conference_invitees;
        if invited.len() > max {
            let many = "a conference invites that many people at most";
            return Err((
                crate::quotas::exceeded("limits.max_conference_invitees", max, many),
                "max-conference-invitees",
            ));
        }
        let mut rule = "route-permits";
        for invitation in invited {
            valid_worker(&invitation.member)?;
            let role = if invitation.member.oin == actor.oin {
                wire::handover::ParticipantRole::CoWorker
            } else {
                wire::handover::ParticipantRole::Consultant
            };
            decided(policy.may_take_part(until_ms.saturating_sub(self.clock.now_ms()), role))?;
            rule = decided(policy.may_add(
                actor,
                &invitation.member,
                Grounds { reason: &invitation.reason, legal_basis },
                false,
            ))?;
        }
        Ok(rule)
    }

    /// Whether a team lead who is not on the case takes one of the steps a
    /// lead takes for its organisation's cases: reassigning (offering to a
    /// colleague, withdrawing or cancelling that offer) and taking over.
    fn lead_steps_in(
        &self,
        policy: &Policy,
        thread: ThreadId,
        actor: &MemberId,
        request: &Request,
    ) -> Result<bool, (WireError, &'static str)> {
        let step = match request {
            // Inside its own organisation only; the offer itself is checked as anyone's.
            Request::OfferHandover { offer, .. } => offer.to == actor.oin,
            Request::WithdrawOffer { .. }
            | Request::CancelOffer { .. }
            | Request::TakeOver { .. }
            | Request::ReopenCase { .. } => true,
            _ => false,
        };
        Ok(step && self.leads_owner(policy, thread, actor).map_err(|e| (e, "store-failure"))?)
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

    /// Whether `member` is on the thread: from the delivery cache when it holds
    /// the thread, from the store otherwise.
    fn is_member(&self, thread: ThreadId, member: &MemberId) -> Result<bool, WireError> {
        match self.registry.cached_membership(thread, member) {
            Some(member) => Ok(member),
            None => self.store.is_member(thread, member).map_err(internal),
        }
    }
}
