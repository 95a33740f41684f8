//! The hub's side of warm handover: policy checks for offers, and applying
//! each step atomically on the writer thread.
//!
//! The rules of ownership are in [`wire::handover`], shared with the SDK. Here
//! an offer is checked against the policy's route table (route, kinds, legal
//! basis, written justification for sharing without consent), each step is
//! applied to the stored state in the writer thread (so two answers to one
//! offer cannot both win), and the step, its thread entry and an acceptance's
//! new membership are stored in one write. [`sweep`] fires deadlines.
//!
//! A step repeated by the same party (a client resending a request whose reply
//! it lost) leaves the state as it is: [`apply`] then writes nothing and
//! answers with the current state, as the first time.

use wire::handover::{
    Calendar, ClockKind, Escalation, FamilyTold, HandoverError, HandoverEvent, OfferRequest, OfferState, Ownership,
};
use wire::{ErrorCode, MemberId, ThreadId, WireError};

use wire::audit::{AuditAction, AuditOutcome, AuditRecord};

use crate::durability::{Auditor, WriteError};
use crate::policy::{Decision, Policy};
use crate::store::{HandoverStep, Store};
use wire::calendar::DAY_MS;
use wire::handover::Notice;
use wire::Oin;

/// What a handover step is applied with, carried to the writer with each of
/// them: the working-day calendar, and the policy in force when it was asked
/// for (its routes' clocks, the background role, when an offer is urgent).
#[derive(Debug, Clone)]
pub struct Rules {
    /// The working-day calendar.
    pub calendar: Calendar,
    /// The policy in force.
    pub policy: std::sync::Arc<Policy>,
    /// Clocks that run at once on a case at most (`limits.max_clocks_per_case`).
    pub max_clocks: usize,
}

impl Rules {
    fn urgent(&self, offer: &wire::handover::Offer) -> bool {
        offer.made_ms > 0 && self.policy.is_urgent(offer.deadline_ms, offer.made_ms)
    }

    /// The route of offer `id` of the case.
    fn route_of(ownership: &Ownership, id: u32) -> &str {
        ownership.offers.iter().find(|o| o.id == id).map_or("", |o| o.route.as_str())
    }

    /// The notices an offer gives: one to the receiving organisation's inbox
    /// when it names no worker, or is urgent.
    fn offer_notices(&self, offer: &wire::handover::Offer) -> Vec<(Oin, Notice)> {
        let urgent = self.urgent(offer);
        let notice = match &offer.to_worker {
            None => Notice::Offered { offer: Box::new(offer.clone()), urgent },
            // Only the worker named reads the offer: its colleagues learn that it waits, and until when.
            Some(worker) if urgent => {
                Notice::Urgent { offer: offer.id, to_worker: worker.clone(), deadline_ms: offer.deadline_ms }
            }
            Some(_) => return Vec::new(),
        };
        vec![(offer.to.clone(), notice)]
    }

    /// The notices an escalation gives: one to the inbox of the organisation
    /// that answers for it, and for an urgent offer that expired one to the
    /// receiving organisation's too.
    fn escalation_notices(&self, ownership: &Ownership, escalation: &Escalation) -> Vec<(Oin, Notice)> {
        let notice = || Notice::Escalated { escalation: escalation.clone() };
        match escalation {
            Escalation::OfferExpired { offer, sender } => {
                let mut to = vec![(sender.oin.clone(), notice())];
                let urgent = ownership.offers.iter().find(|o| o.id == *offer).filter(|o| self.urgent(o));
                to.extend(urgent.filter(|o| o.to != sender.oin).map(|o| (o.to.clone(), notice())));
                to
            }
            Escalation::Overdue { owner, .. } => vec![(owner.oin.clone(), notice())],
        }
    }
}

/// Refuses a step that made the case hold more than `max` (the limit `key`); checked after the
/// step, so that who may not take it at all hears so, and a resend that
/// changes nothing gets its first answer again.
fn at_most((before, after): (usize, usize), max: usize, key: &str) -> Result<(), WriteError> {
    if after > before && after > max {
        return Err(WriteError::Refused(crate::quotas::exceeded(key, max, "the case holds that many already")));
    }
    Ok(())
}

/// Refuses a step that made more than `max` clocks run; then forgets stopped
/// ones beyond as many, so that what a case stores stays bounded too.
fn clock_quota(before: &Ownership, after: &mut Ownership, max: usize) -> Result<(), WriteError> {
    at_most((before.running_clocks(), after.running_clocks()), max, "limits.max_clocks_per_case")?;
    after.forget_stopped(max);
    Ok(())
}

/// The inboxes of `notices` about `case`, made where missing, with their
/// notices; each disclosure is audited on the case, so that its access report
/// shows it. An organisation the policy no longer holds gets none.
fn to_inboxes(
    store: &dyn Store,
    (rules, case): (&Rules, ThreadId),
    notices: Vec<(Oin, Notice)>,
    (at_ms, audit): (u64, &mut Auditor<'_>),
) -> Result<Vec<(ThreadId, Notice)>, WriteError> {
    let mut to = Vec::new();
    for (oin, notice) in notices.into_iter().filter(|(oin, _)| rules.policy.organisation(oin).is_some()) {
        audit.record(AuditRecord {
            case: Some(case),
            object: Some(format!("notice to the inbox of {}", oin.as_str())),
            rule: "inbox-notice".into(),
            ..crate::audit::hub_record(AuditAction::Handover)
        })?;
        to.push((store.ensure_inbox(&oin, at_ms)?, notice));
    }
    Ok(to)
}

/// A handover step, applied by the writer thread.
#[derive(Debug)]
pub enum HandoverOp {
    /// The owner (or a team lead of its organisation, reassigning) offers the case.
    Offer {
        /// The offer.
        request: OfferRequest,
        /// Whether the actor leads a team of its organisation.
        lead: bool,
    },
    /// The receiver accepts or declines.
    Answer {
        /// The offer.
        offer: u32,
        /// Accept (true) or decline.
        accept: bool,
        /// Why, when declining.
        reason: Option<String>,
    },
    /// The sender withdraws an unanswered offer.
    Withdraw {
        /// The offer.
        offer: u32,
        /// Why.
        reason: String,
    },
    /// Either side cancels an accepted offer.
    Cancel {
        /// The offer.
        offer: u32,
        /// Why.
        reason: String,
    },
    /// A team lead takes the case over from an absent owner.
    TakeOver {
        /// Why.
        reason: String,
        /// Whether the actor leads a team of its organisation.
        lead: bool,
    },
    /// The receiver completes it.
    Complete {
        /// The offer.
        offer: u32,
        /// What the family was told.
        family: FamilyTold,
    },
    /// The owner (or the receiver who accepted) reports a clock's work done.
    Done(ClockKind, Option<u64>),
    /// The owner schedules a VT re-check (rappel), the policy's days out.
    Rappel,
    /// The owner calls a case conference.
    Conference {
        /// What it is about.
        topic: String,
        /// When the invitees' participation ends.
        until_ms: u64,
        /// Who, and why.
        invited: Vec<wire::handover::Invitation>,
        /// Members a thread may hold, and conferences a case, at most.
        max: (usize, usize),
    },
    /// The owner records a conference's regie decision.
    Decide {
        /// The conference.
        conference: u32,
        /// What it decided.
        decision: wire::handover::RegieDecision,
    },
    /// The owner (or the receiver who accepted) registers the measure's period, or an extension.
    Measure(wire::handover::Measure),
    /// The owner (or the receiver who accepted) registers a plan evaluation date.
    Evaluation {
        /// When, ms since the Unix epoch.
        due_ms: u64,
    },
    /// A former owner in its background role, or a participant, leaves, with a reason.
    Leave(String),
    /// The owner closes the case.
    Close {
        /// The outcome code, checked against the policy.
        outcome: String,
        /// Why.
        reason: String,
        /// Until when it may be reopened.
        reopen_until_ms: u64,
    },
    /// The owner (or a team lead of its organisation) reopens it.
    Reopen {
        /// Why.
        reason: String,
        /// Whether the actor leads a team of its organisation.
        lead: bool,
    },
    /// The owner brings in a consultant or co-worker until an end date.
    Engage {
        /// Who, in what role, until when, why.
        participant: wire::handover::Participant,
        /// The most members a thread may have.
        max_members: usize,
    },
}

/// Checks an offer against the policy's route table; an offer inside the
/// actor's own organisation is a reassignment, on its own route.
pub fn check_offer(policy: &Policy, by: &MemberId, offer: &OfferRequest) -> Decision {
    let deny = |rule, reason: String| Decision { allowed: false, rule, reason };
    if offer.to == by.oin {
        return check_reassignment(policy, offer);
    }
    let Some(route) = policy.route(&offer.route) else {
        return deny("unknown-route", format!("no route {} in the policy", offer.route));
    };
    let (Some(from), Some(to)) = (policy.organisation(&by.oin), policy.organisation(&offer.to)) else {
        return deny("member-unknown-organisation", format!("{} is not in the policy", offer.to));
    };
    if route.limited {
        return deny("limited-route", format!("route {} leads to a limited recipient, who takes no case", route.name));
    }
    if route.from != from.kind || route.to != to.kind {
        return deny(
            "route-does-not-fit",
            format!("route {} leads from {} to {}", route.name, route.from.code(), route.to.code()),
        );
    }
    if !route.legal_bases.contains(&offer.legal_basis) {
        return deny("basis-not-on-route", format!("{} is not allowed on {}", offer.legal_basis, route.name));
    }
    let without_consent = policy.legal_basis(&offer.legal_basis).is_some_and(|b| b.without_consent);
    if without_consent && offer.justification.as_deref().is_none_or(|j| j.trim().is_empty()) {
        return deny(
            "justification-required",
            format!("{} shares without consent: justify it in writing", offer.legal_basis),
        );
    }
    Decision { allowed: true, rule: "route-permits", reason: format!("route {}", route.name) }
}

/// A reassignment names the colleague, travels on the reserved route and
/// states a basis the policy knows; it shares nothing outside the organisation.
fn check_reassignment(policy: &Policy, offer: &OfferRequest) -> Decision {
    let deny = |rule, reason: String| Decision { allowed: false, rule, reason };
    if offer.route != wire::handover::REASSIGNMENT_ROUTE {
        let route = wire::handover::REASSIGNMENT_ROUTE;
        return deny("reassignment-route", format!("an offer inside the organisation travels on route {route}"));
    }
    if offer.to_worker.as_deref().is_none_or(|w| wire::identity::validate_worker(w).is_err()) {
        return deny("reassign-to-a-colleague", "a reassignment names the colleague who takes the case".into());
    }
    if policy.legal_basis(&offer.legal_basis).is_none() {
        return deny("unknown-legal-basis", format!("no legal basis {}", offer.legal_basis));
    }
    Decision { allowed: true, rule: "reassignment-within-organisation", reason: "a colleague takes the case".into() }
}

/// The rule recorded for an allowed offer: offers that share without consent
/// go to the privacy officers' review queue, and the audit entry says so.
pub fn offer_rule(policy: &Policy, offer: &OfferRequest, decision: &Decision) -> &'static str {
    if offer.route == wire::handover::REASSIGNMENT_ROUTE {
        decision.rule
    } else if needs_review(policy, &offer.legal_basis) {
        "route-permits; queued-for-privacy-review"
    } else {
        "route-permits"
    }
}

/// Whether an offer shares without consent and so waits in the privacy officers' review queue.
pub fn needs_review(policy: &Policy, legal_basis: &str) -> bool {
    policy.legal_basis(legal_basis).is_some_and(|b| b.without_consent)
}

fn refused(e: HandoverError) -> WriteError {
    let code = match e {
        // Not addressed to the caller, or no such offer: as if the case did not exist.
        HandoverError::NotReceiver(_) | HandoverError::NoSuchOffer(_) => {
            return WriteError::Refused(WireError::thread_not_found())
        }
        HandoverError::NotOwner
        | HandoverError::NotTeamLead
        | HandoverError::NotParty(_)
        | HandoverError::Participant => ErrorCode::Forbidden,
        HandoverError::OfferOpen(_)
        | HandoverError::WrongState { .. }
        | HandoverError::AlreadyOnCase
        | HandoverError::Closed
        | HandoverError::NotClosed
        | HandoverError::ReopenPeriodOver
        | HandoverError::Decided(_) => ErrorCode::Conflict,
        _ => ErrorCode::Invalid,
    };
    WriteError::Refused(WireError::new(code, e.to_string()))
}

/// Applies one step to a case; returns the new state and the entries appended.
pub fn apply(
    store: &dyn Store,
    rules: &Rules,
    thread: ThreadId,
    by: &MemberId,
    op: HandoverOp,
    now_ms: u64,
    audit: &mut Auditor<'_>,
) -> Result<(Ownership, Vec<(ThreadId, wire::Entry)>), WriteError> {
    let Some(mut ownership) = store.ownership(thread)? else {
        return Err(WriteError::Refused(WireError::thread_not_found()));
    };
    let before = ownership.clone();
    let answered = match &op {
        HandoverOp::Answer { offer, .. } => Some(*offer),
        _ => None,
    };
    let mut admit: Vec<MemberId> = Vec::new();
    let event = match op {
        HandoverOp::Offer { request, lead } => {
            let id = ownership.offer(by, lead, request, now_ms).map_err(refused)?;
            let offer = ownership.offers.iter().find(|o| o.id == id).cloned().expect("just made");
            HandoverEvent::Offered { offer: Box::new(offer) }
        }
        HandoverOp::Answer { offer, accept: true, .. } => {
            ownership.accept(by, offer).map_err(refused)?;
            // A repeated acceptance starts no second set of clocks.
            if ownership != before {
                let clocks = rules.policy.route_clocks(Rules::route_of(&ownership, offer));
                ownership.start_clocks(&rules.calendar, now_ms, (&clocks, offer));
            }
            admit = vec![by.clone()];
            HandoverEvent::Accepted { offer, by: by.clone() }
        }
        HandoverOp::Withdraw { offer, reason } => {
            ownership.withdraw(by, offer, &reason).map_err(refused)?;
            HandoverEvent::Withdrawn { offer, reason }
        }
        HandoverOp::Cancel { offer, reason } => {
            let receiver = ownership.cancel(by, offer, &reason).map_err(refused)?;
            HandoverEvent::Cancelled { offer, by: by.clone(), receiver, reason }
        }
        HandoverOp::TakeOver { reason, lead } => {
            let former = ownership.owner.clone();
            let background_days = rules.policy.clocks.background_days;
            ownership.take_over(by, lead, &reason, (now_ms, background_days)).map_err(refused)?;
            admit = vec![by.clone()];
            HandoverEvent::TakenOver { owner: by.clone(), former, reason }
        }
        HandoverOp::Answer { offer, accept: false, reason, .. } => {
            let reason = reason.unwrap_or_default();
            ownership.decline(by, offer, &reason).map_err(refused)?;
            HandoverEvent::Declined { offer, reason }
        }
        HandoverOp::Complete { offer, family } => {
            let to_end = ownership.days_to_measure_end(now_ms);
            let background_days = rules.policy.background_days(Rules::route_of(&ownership, offer), to_end);
            ownership.complete(by, (offer, family.clone()), (now_ms, background_days)).map_err(refused)?;
            HandoverEvent::Completed { offer, owner: by.clone(), family }
        }
        HandoverOp::Engage { participant, max_members } => {
            let member = participant.member.clone();
            let present = store.is_member(thread, &member)?;
            crate::durability::room_for(store, thread, present, max_members)?;
            let full = ownership.participant(&member).is_none() && !ownership.is_read_only(&member);
            if full && present {
                // Already a full member: taking part for a while would end a membership that has no end.
                return Err(refused(HandoverError::AlreadyOnCase));
            }
            ownership.engage(by, participant.clone(), now_ms).map_err(refused)?;
            admit = vec![member];
            HandoverEvent::Engaged { participant }
        }
        HandoverOp::Close { outcome, reason, reopen_until_ms } => {
            ownership.close(by, (&outcome, &reason), now_ms, reopen_until_ms).map_err(refused)?;
            let reopen_until_ms = ownership.closed().map_or(reopen_until_ms, |c| c.reopen_until_ms);
            HandoverEvent::Closed { outcome, reason, reopen_until_ms }
        }
        HandoverOp::Reopen { reason, lead } => {
            // A team lead reopens without joining the case; to work it, it takes it over.
            ownership.reopen(by, lead, &reason, now_ms).map_err(refused)?;
            HandoverEvent::Reopened { reason }
        }
        HandoverOp::Leave(reason) => {
            ownership.leave(by, &reason).map_err(refused)?;
            HandoverEvent::Left { member: by.clone(), reason }
        }
        HandoverOp::Rappel => {
            if by != &ownership.owner {
                return Err(refused(HandoverError::NotOwner));
            }
            ownership.schedule_rappel(now_ms, rules.policy.clocks.rappel_days).map_err(refused)?;
            clock_quota(&before, &mut ownership, rules.max_clocks)?;
            HandoverEvent::Scheduled { clock: ClockKind::Rappel }
        }
        HandoverOp::Conference { topic, until_ms, invited, max: (max_members, max_conferences) } => {
            let mut newcomers = 0;
            for invitation in &invited {
                let present = store.is_member(thread, &invitation.member)?;
                if present
                    && ownership.participant(&invitation.member).is_none()
                    && !ownership.is_read_only(&invitation.member)
                {
                    // Already a full member: it sits at the table without an end to its membership.
                    return Err(refused(HandoverError::AlreadyOnCase));
                }
                newcomers += usize::from(!present);
            }
            if store.members(thread)?.len() + newcomers > max_members {
                let full = crate::quotas::exceeded("limits.max_members_per_thread", max_members, "the thread is full");
                return Err(WriteError::Refused(full));
            }
            let id = ownership.call_conference(by, (&topic, until_ms, &invited), now_ms).map_err(refused)?;
            at_most(
                (before.conferences.len(), ownership.conferences.len()),
                max_conferences,
                "limits.max_conferences_per_case",
            )?;
            // A resent call admits no one again: an invitee who left since stays gone.
            if ownership != before {
                admit = invited.iter().map(|i| i.member.clone()).collect();
            }
            let conference = ownership.conferences.iter().find(|c| c.id == id).cloned().expect("just called");
            HandoverEvent::ConferenceCalled { conference: Box::new(conference) }
        }
        HandoverOp::Decide { conference, decision } => {
            ownership.decide(by, conference, decision.clone()).map_err(refused)?;
            HandoverEvent::Decided { conference, decision }
        }
        HandoverOp::Measure(measure) => {
            let clocks = &rules.policy.clocks;
            let max_ms = u64::from(clocks.measure_max_days) * DAY_MS;
            // A start far ahead would keep a former owner in the background for as long.
            if measure.end_ms.saturating_sub(measure.start_ms) > max_ms
                || measure.start_ms > now_ms.saturating_add(max_ms)
            {
                return Err(WriteError::Refused(WireError::new(
                    ErrorCode::Invalid,
                    format!(
                        "a measure is registered for {} days at most, starting within as many (rule measure-dates)",
                        clocks.measure_max_days
                    ),
                )));
            }
            ownership.set_measure(by, measure, (now_ms, clocks.renewal_days_before)).map_err(refused)?;
            clock_quota(&before, &mut ownership, rules.max_clocks)?;
            HandoverEvent::MeasureSet { measure }
        }
        HandoverOp::Evaluation { due_ms } => {
            ownership.schedule_evaluation(by, due_ms, now_ms).map_err(refused)?;
            clock_quota(&before, &mut ownership, rules.max_clocks)?;
            HandoverEvent::EvaluationScheduled { due_ms }
        }
        HandoverOp::Done(clock, due_ms) => {
            // Only completing or cancelling the offer stops its completion deadline.
            if clock == ClockKind::Completion {
                return Err(WriteError::Refused(WireError::new(
                    ErrorCode::Invalid,
                    "the completion deadline stops when the handover completes or is cancelled",
                )));
            }
            if !ownership.may_report(by) {
                return Err(refused(HandoverError::NotOwner));
            }
            ownership.report_done(clock, due_ms).map_err(refused)?;
            HandoverEvent::Done { clock }
        }
    };
    // A receiver that is not on the case sees only the offer it answered.
    let outsider = answered.is_some() && admit.is_empty() && !store.is_member(thread, by)?;
    let view = |ownership: Ownership| match answered.filter(|_| outsider) {
        Some(offer) => offer_only(ownership, offer),
        None => ownership,
    };
    // A member a step admits again (a participant renewed after a commit removed it) is written even
    // when the state is as it was.
    let mut readmits = false;
    for member in &admit {
        readmits |= !store.is_member(thread, member)?;
    }
    if ownership == before && !readmits {
        return Ok((view(ownership), Vec::new()));
    }
    let evict = departures(store, thread, &mut ownership)?;
    for member in &evict {
        audit.removal(thread, member, removal_rule(&ownership, member, "left-the-case"))?;
    }
    let evict_sides = side_departures(store, (thread, &ownership), &evict, "left-the-case", audit)?;
    let notices = match &event {
        HandoverEvent::Offered { offer } => {
            to_inboxes(store, (rules, thread), rules.offer_notices(offer), (now_ms, audit))?
        }
        _ => Vec::new(),
    };
    let admit = admit.as_slice();
    let events = vec![event];
    let step =
        HandoverStep { thread, by, ownership: &ownership, events, admit, evict, evict_sides, notices, at_ms: now_ms };
    let entries = store.apply_handover(&step)?;
    Ok((view(ownership), entries))
}

/// The case's state as a receiver outside it may see it: the one offer it
/// answered, with the offer's sender as owner, and nothing else. An answer
/// sent again later so learns nothing of what happened to the case since.
fn offer_only(ownership: Ownership, offer: u32) -> Ownership {
    let offers: Vec<_> = ownership.offers.into_iter().filter(|o| o.id == offer).collect();
    let owner = offers.first().map_or(ownership.owner, |o| o.from.clone());
    Ownership { offers, ..Ownership::new(owner) }
}

/// The members who left the case (or whose background role ended) and are
/// still on its membership. Their membership ends with the step that records
/// the departure, so they receive nothing after it; where their devices are in
/// the case's MLS group, they become due for removal by the owner's device.
fn departures(store: &dyn Store, thread: ThreadId, ownership: &mut Ownership) -> Result<Vec<MemberId>, WriteError> {
    if ownership.closed().is_some_and(|c| c.archived) {
        // Nobody is left to remove devices from the group, and nobody may write in it.
        ownership.removal_due.clear();
        return Ok(store.members(thread)?);
    }
    let mut evict = Vec::new();
    for (member, _) in &ownership.left {
        if store.is_member(thread, member)? {
            evict.push(member.clone());
        }
    }
    if evict.is_empty() {
        return Ok(evict);
    }
    let in_group = match store.group_state(thread)? {
        Some(state) => crate::groups::devices_of(&state, thread).map_err(WriteError::Refused)?,
        None => Vec::new(),
    };
    for member in evict.iter().filter(|m| in_group.contains(m)) {
        if !ownership.removal_due.contains(member) {
            ownership.removal_due.push(member.clone());
        }
    }
    Ok(evict)
}

/// The memberships in the case's side threads that end with the step: those
/// of the members who leave the case or left it before (a side thread never
/// holds someone the case no longer does), and every one when it is archived.
fn side_departures(
    store: &dyn Store,
    (case, ownership): (ThreadId, &Ownership),
    evict: &[MemberId],
    otherwise: &'static str,
    audit: &mut Auditor<'_>,
) -> Result<Vec<(ThreadId, Vec<MemberId>)>, WriteError> {
    let archived = ownership.closed().is_some_and(|c| c.archived);
    let left = ownership.left.iter().map(|(m, _)| m);
    let leaving: Vec<&MemberId> = evict.iter().chain(left).collect();
    let leaves = |m: &MemberId| archived || leaving.contains(&m);
    leave_side_threads(store, case, leaves, |m| removal_rule(ownership, m, otherwise), audit)
}

/// Ends the memberships of the side threads of `case` held by members who
/// `leave`, each audited with its `rule` (as a record of the hub, which holds
/// nothing of the request that caused it: a side thread's members do not learn
/// the case's reasons). Returns them per side thread, for the write.
pub(crate) fn leave_side_threads(
    store: &dyn Store,
    case: ThreadId,
    leaves: impl Fn(&MemberId) -> bool,
    rule: impl Fn(&MemberId) -> &'static str,
    audit: &mut Auditor<'_>,
) -> Result<Vec<(ThreadId, Vec<MemberId>)>, WriteError> {
    let mut sides = Vec::new();
    for side in store.side_threads(case)? {
        let members: Vec<_> = store.members(side)?.into_iter().filter(|m| leaves(m)).collect();
        for member in &members {
            audit.record(AuditRecord {
                case: Some(side),
                object: Some(member.to_string()),
                rule: rule(member).to_owned(),
                ..crate::audit::hub_record(AuditAction::RemoveMember)
            })?;
        }
        if !members.is_empty() {
            sides.push((side, members));
        }
    }
    Ok(sides)
}

/// The rule recorded for ending `member`'s membership: the archiving of the
/// case, what its recorded departure says, or `otherwise`.
fn removal_rule(ownership: &Ownership, member: &MemberId, otherwise: &'static str) -> &'static str {
    if ownership.closed().is_some_and(|c| c.archived) {
        return "case-archived";
    }
    let reason = ownership.left.iter().rev().find(|(m, _)| m == member).map(|(_, r)| r.as_str());
    match reason {
        Some(wire::handover::PARTICIPATION_ENDED) => "participation-ended",
        Some(wire::handover::REGIE_MOVED) => "co-worker-leaves-with-regie",
        _ => otherwise,
    }
}

/// Fires every deadline due at `now_ms` in every case: expired offers and
/// overdue clocks become escalation entries in their threads.
pub fn sweep(store: &dyn Store, rules: &Rules, now_ms: u64, audit: &mut Auditor<'_>) -> Result<Swept, WriteError> {
    let mut appended = Vec::new();
    let mut raised = Vec::new();
    for (thread, mut ownership) in store.ownerships()? {
        let before = ownership.clone();
        let escalations = ownership.due(&rules.calendar, now_ms);
        // A background role or participation that ended is a departure, and a closed case past its
        // reopening period is archived: each written now, so that memberships end on time.
        if ownership == before {
            continue;
        }
        for escalation in &escalations {
            tracing::warn!(%thread, ?escalation, "handover escalation");
            audit.record(AuditRecord {
                case: Some(thread),
                object: Some(format!("{escalation:?}")),
                outcome: AuditOutcome::Failed,
                rule: "deadline-escalation".into(),
                ..crate::audit::hub_record(AuditAction::Handover)
            })?;
        }
        let by = match escalations.first() {
            Some(Escalation::OfferExpired { sender, .. }) => sender.clone(),
            Some(Escalation::Overdue { .. }) | None => ownership.owner.clone(),
        };
        let since = ownership.left.len();
        raised.extend(escalations.iter().map(|e| (thread, e.clone())));
        let notices = escalations.iter().flat_map(|e| rules.escalation_notices(&ownership, e)).collect();
        let notices = to_inboxes(store, (rules, thread), notices, (now_ms, audit))?;
        let mut events: Vec<HandoverEvent> =
            escalations.into_iter().map(|escalation| HandoverEvent::Escalated { escalation }).collect();
        events.extend(
            ownership.left[before.left.len()..since]
                .iter()
                .map(|(member, reason)| HandoverEvent::Left { member: member.clone(), reason: reason.clone() }),
        );
        let archived = |o: &Ownership| o.closed().is_some_and(|c| c.archived);
        if archived(&ownership) && !archived(&before) {
            events.push(HandoverEvent::Archived);
        }
        let evict = departures(store, thread, &mut ownership)?;
        for member in &evict {
            audit.removal(thread, member, removal_rule(&ownership, member, "background-role-ended"))?;
        }
        let evict_sides = side_departures(store, (thread, &ownership), &evict, "background-role-ended", audit)?;
        let step = HandoverStep {
            thread,
            by: &by,
            ownership: &ownership,
            events,
            admit: &[],
            evict,
            evict_sides,
            notices,
            at_ms: now_ms,
        };
        appended.extend(store.apply_handover(&step)?);
    }
    Ok((raised, appended))
}

/// What a deadline sweep raised, and the thread entries that show it.
pub type Swept = (Vec<(ThreadId, Escalation)>, Vec<(ThreadId, wire::Entry)>);

/// Offers waiting for an answer from `member`'s organisation (and, if named, `member`).
pub fn waiting_for(store: &dyn Store, member: &MemberId) -> Result<Vec<(ThreadId, wire::handover::Offer)>, WriteError> {
    Ok(store
        .offers_of(&member.oin)?
        .into_iter()
        .flat_map(|(thread, ownership)| ownership.offers.into_iter().map(move |offer| (thread, offer)))
        .filter(|(_, offer)| {
            offer.state == OfferState::Offered
                && offer.to == member.oin
                && offer.to_worker.as_ref().is_none_or(|w| w == &member.worker)
        })
        .collect())
}
