//! The audit log as requests see it: a privacy officer's query, a witness's
//! signed tree head, and the record every request leaves behind.
//!
//! The record is drawn up from the request before the policy decides, so that
//! a refusal is logged with the same detail as an allowed access.

use tokio::task::JoinHandle;
use wire::audit::{AuditAction, AuditFilter, AuditRecord};
use wire::{ErrorCode, MemberId, Reply, Request, WireError};

use crate::audit;
use crate::policy::Policy;
use crate::session::{internal, Caller, Hub};
use crate::store::Store;

impl Hub {
    pub(super) fn spawn_audit_query(
        &self,
        caller: &Caller,
        filter: AuditFilter,
        known_size: u64,
    ) -> JoinHandle<Result<Reply, WireError>> {
        let (store, oin, most) = (self.store.clone(), caller.identity.oin.clone(), self.limits.max_audit_query_entries);
        tokio::task::spawn_blocking(move || audit_query(store.as_ref(), &oin, &filter, (known_size, most)))
    }

    /// Checks, off the runtime, that a privacy officer's review names a share
    /// without consent within its scope.
    pub(super) fn spawn_review(
        &self,
        caller: &Caller,
        entry: u64,
        note: String,
    ) -> JoinHandle<Result<Reply, WireError>> {
        let (store, policy, oin) = (self.store.clone(), self.policy.current(), caller.identity.oin.clone());
        tokio::task::spawn_blocking(move || reviewable(store.as_ref(), &policy, &oin, entry, &note))
    }

    /// The chain figures over the officer's organisation's cases, computed off the runtime.
    pub(super) fn spawn_chain_figures(
        &self,
        caller: &Caller,
        since_ms: u64,
        until_ms: u64,
    ) -> JoinHandle<Result<Reply, WireError>> {
        let (store, policy, oin) = (self.store.clone(), self.policy.current(), caller.identity.oin.clone());
        let settings = wire::figures::Settings {
            since_ms,
            until_ms,
            min_count: self.limits.min_figure_count,
            calendar: self.calendar.clone(),
        };
        let most = self.limits.max_figure_cases;
        tokio::task::spawn_blocking(move || {
            // Whole days only: periods that differ by a moment would tell single events apart.
            let whole = |ms: u64| ms.is_multiple_of(wire::calendar::DAY_MS);
            if since_ms >= until_ms || !whole(since_ms) || !whole(until_ms) {
                let why = "a period of whole days (UTC midnights), since_ms before until_ms";
                return Err(WireError::new(ErrorCode::Invalid, why));
            }
            let cases = store.organisation_cases(&oin).map_err(internal)?;
            if cases.len() > most {
                let why = format!(
                    "the organisation has {} cases, more than limits.max_figure_cases ({most}) for one request; \
                     the operator reports on all of them with `hub report chain`",
                    cases.len()
                );
                return Err(WireError::new(ErrorCode::LimitExceeded, why));
            }
            let report = crate::chain_figures::report(store.as_ref(), &policy, &settings, cases).map_err(internal)?;
            Ok(Reply::ChainFigures { report: Box::new(report) })
        })
    }

    pub(super) fn signed_head(&self, known_size: u64) -> Result<Reply, WireError> {
        let (head, consistency) = audit_head(self.store.as_ref(), known_size)?;
        let head =
            head.ok_or_else(|| WireError::new(ErrorCode::Unavailable, "the audit log has no signed tree head yet"))?;
        Ok(Reply::AuditHead { head: Box::new(head), consistency })
    }
}

/// A privacy officer's query, within the scope of its organisation.
fn audit_query(
    store: &dyn Store,
    oin: &wire::Oin,
    filter: &AuditFilter,
    (known_size, most): (u64, usize),
) -> Result<Reply, WireError> {
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
    let (entries, truncated) = audit::query(store, oin, &cases, filter, (covered, most)).map_err(internal)?;
    let proofs = entries
        .iter()
        .map(|entry| {
            // A seq 0 is a corrupt store, answered as the hub's own failure.
            let leaf = crate::store::leaf_of(entry.seq).map_err(internal)?;
            let path = wire::merkle::inclusion_proof(leaf, covered, &mut audit::node_source(store));
            path.map(wire::audit::Proof::from_hashes).map_err(internal)
        })
        .collect::<Result<_, _>>()?;
    Ok(Reply::AuditEntries { entries, truncated, head: head.map(Box::new), proofs, consistency })
}

/// How many entries after an attempt the hub's record of its failure may lie: only the entries the
/// failed write itself made (its departures) come between.
const FAILURE_WITHIN: usize = 64;

/// The answer to a review of audit entry `entry`: an offer or add on a basis
/// without consent about one of the officer's organisation's cases. Another
/// entry, or one that does not exist, is refused as one outside the scope.
fn reviewable(store: &dyn Store, policy: &Policy, oin: &wire::Oin, entry: u64, note: &str) -> Result<Reply, WireError> {
    if note.trim().is_empty() {
        return Err(WireError::new(ErrorCode::Invalid, "a review needs a note"));
    }
    let outside = || {
        WireError::new(
            ErrorCode::Forbidden,
            "denied by rule audit-outside-scope: not an entry of your organisation's cases",
        )
    };
    // The hub records a failure right after the attempt, within the same write.
    let around = store.audit_entries(entry, 1 + FAILURE_WITHIN).map_err(internal)?;
    let found = around.iter().find(|e| e.seq == entry).ok_or_else(outside)?;
    let case = found.record.case.ok_or_else(outside)?;
    if !store.organisation_cases(oin).map_err(internal)?.contains(&case) {
        return Err(outside());
    }
    let undone = around.iter().any(|later| wire::audit::undoes(later, found));
    if undone
        || !wire::audit::is_share_without_consent(&found.record, |basis| crate::handovers::needs_review(policy, basis))
    {
        return Err(WireError::new(ErrorCode::Invalid, format!("entry {entry} is not a share without consent")));
    }
    Ok(Reply::Reviewed { entry, case })
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
/// Completes a history share's record with whom it discloses to, as the access report must name them.
pub(super) fn disclosed_to(record: &mut AuditRecord, recipients: &[MemberId]) {
    let to: Vec<String> = recipients.iter().map(ToString::to_string).collect();
    let to = if to.is_empty() { "nobody new".to_owned() } else { to.join(", ") };
    record.object = record.object.take().map(|o| format!("{o} to {to}"));
}

/// What the audit log records about a request, before the policy decides.
pub(super) fn access_record(caller: &Caller, on_behalf_of: Option<MemberId>, request: &Request) -> AuditRecord {
    let mut record = AuditRecord {
        actor: Some(audit::actor(&caller.identity, &caller.fingerprint)),
        on_behalf_of,
        ..audit::blank_record(AuditAction::ListThreads, Some(caller.peer))
    };
    let (action, case, object) = match request {
        Request::CreateThread { .. } => (AuditAction::CreateThread, None, None),
        Request::OpenSideThread { case, purpose, .. } => {
            record.purpose = Some(purpose.clone());
            (AuditAction::CreateThread, Some(*case), Some("side thread".into()))
        }
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
        Request::DeliveryStatus { thread } => (AuditAction::ListMembers, Some(*thread), Some("delivery status".into())),
        Request::AuditQuery { filter, .. } => (AuditAction::AuditQuery, filter.case, Some(format!("{filter:?}"))),
        Request::AuditHead { known_size } => {
            (AuditAction::AuditQuery, None, Some(format!("tree head from {known_size}")))
        }
        Request::ChainFigures { since_ms, until_ms } => {
            let (since, until) = (wire::calendar::format_ms(*since_ms), wire::calendar::format_ms(*until_ms));
            (AuditAction::AuditQuery, None, Some(format!("chain figures {since}..{until}")))
        }
        Request::OnBehalfOf { .. } => (AuditAction::ListThreads, None, Some("nested on_behalf_of".into())),
        Request::OfferHandover { thread, offer } => {
            // Why the family's consent was not asked is what a privacy officer reviews.
            record.purpose = Some(match &offer.justification {
                Some(why) => format!("{} (justification: {why})", offer.reason),
                None => offer.reason.clone(),
            });
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
        Request::ReportDone { thread, clock, .. } => {
            (AuditAction::Handover, Some(*thread), Some(format!("{clock:?} done")))
        }
        Request::ScheduleRappel { thread } => (AuditAction::Handover, Some(*thread), Some("rappel scheduled".into())),
        Request::CallConference { thread, topic, until_ms, invited, legal_basis } => {
            record.purpose = Some(topic.clone());
            record.legal_basis = Some(legal_basis.clone());
            let who: Vec<String> = invited.iter().map(|i| format!("{} ({})", i.member, i.reason)).collect();
            (
                AuditAction::AddMember,
                Some(*thread),
                Some(format!("case conference until {until_ms} ms: {}", who.join(", "))),
            )
        }
        Request::RecordDecision { thread, conference, decision } => {
            record.purpose = Some(decision.reason.clone());
            let object = format!("conference {conference} decided: regie with {}", decision.regie_with.as_str());
            (AuditAction::Handover, Some(*thread), Some(object))
        }
        Request::SetMeasure { thread, measure } => {
            let object = format!("measure from {} ms until {} ms", measure.start_ms, measure.end_ms);
            (AuditAction::Handover, Some(*thread), Some(object))
        }
        Request::ScheduleEvaluation { thread, due_ms } => {
            (AuditAction::Handover, Some(*thread), Some(format!("plan evaluation due {due_ms} ms")))
        }
        Request::LeaveCase { thread, reason } => {
            record.purpose = Some(reason.clone());
            (AuditAction::Handover, Some(*thread), Some("leaves the case".into()))
        }
        Request::WithdrawOffer { thread, offer, reason } => {
            record.purpose = Some(reason.clone());
            (AuditAction::Handover, Some(*thread), Some(format!("withdraw offer {offer}")))
        }
        Request::CancelOffer { thread, offer, reason } => {
            record.purpose = Some(reason.clone());
            (AuditAction::Handover, Some(*thread), Some(format!("cancel offer {offer}")))
        }
        Request::TakeOver { thread, reason } => {
            record.purpose = Some(reason.clone());
            (AuditAction::Handover, Some(*thread), Some("team lead takes the case over".into()))
        }
        Request::AddParticipant { thread, participant, legal_basis } => {
            record.purpose = Some(participant.reason.clone());
            record.legal_basis = Some(legal_basis.clone());
            let object = format!("{} as {:?} until {} ms", participant.member, participant.role, participant.until_ms);
            (AuditAction::AddMember, Some(*thread), Some(object))
        }
        Request::RecordHistoryShare { thread, message, seqs } => {
            // Which entries, each once: the access report says what was disclosed, never what it said.
            let named: std::collections::BTreeSet<&u64> = seqs.iter().collect();
            let object = format!("history share {message} of {} earlier entries {named:?}", named.len());
            (AuditAction::ShareHistory, Some(*thread), Some(object))
        }
        Request::MarkReviewed { entry, note } => {
            record.purpose = Some(note.clone());
            (AuditAction::Review, None, Some(wire::audit::review_object(*entry)))
        }
        Request::CloseCase { thread, outcome, reason } => {
            record.purpose = Some(reason.clone());
            (AuditAction::Handover, Some(*thread), Some(format!("close the case: {outcome}")))
        }
        Request::ReopenCase { thread, reason } => {
            record.purpose = Some(reason.clone());
            (AuditAction::Handover, Some(*thread), Some("reopen the case".into()))
        }
        Request::GetOwnership { thread } => (AuditAction::ListMembers, Some(*thread), Some("ownership".into())),
        Request::ListOffers => (AuditAction::Handover, None, Some("list offers".into())),
    };
    record.action = action;
    record.case = case;
    record.object = object;
    record
}
