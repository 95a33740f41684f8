//! Warm handover: who holds regie over a case, and how it passes on.
//!
//! The rules live here, in the crate hub and SDK share, so that the state a
//! client is shown is the state the hub enforces.
//!
//! *Regie* is the responsibility for a case: one organisation and worker who
//! are the family's contact and answer for the child's safety. Children have
//! been lost "between organisations" when nobody held it, so the hub keeps it
//! as metadata beside every case thread and makes a gap impossible:
//!
//! - a case always has exactly one owner ([`Ownership::owner`] is a single
//!   value, never optional);
//! - the owner offers the case to another organisation; the owner stays owner
//!   while the offer is open and after it is declined or expires;
//! - the receiver accepts (it joins the thread) and then completes the
//!   handover, confirming that the family was told who their contact is now, or
//!   recording why not. Only completion moves ownership, in one step;
//! - the former owner stays in a background role for a while (the policy's
//!   days; 30 in the example), or leaves with a recorded reason.
//!
//! Clocks run beside it: an offer's acceptance deadline, and those the
//! policy declares for a route ([`RouteClocks`]): for a court measure handed
//! to a certified institution (GI) the first face-to-face contact within 5
//! working days (escalated at day 5 and day 10), the safety plan
//! (veiligheidsplan) due 3 months after the measure starts, and the
//! completion of the handover; and a VT re-check (rappel) that can be
//! scheduled. The durations come in as parameters, so that the rules stay
//! here and the numbers in the policy. [`Ownership::due`] fires what is due at
//! a given time; the hub calls it with its clock, tests with theirs.
//!
//! Everything here is a pure function of the state, the request and the time,
//! so that the writer thread applies it atomically and a property test can
//! drive it through any order of events.
//!
//! Every step is idempotent, because a client resends a request whose reply it
//! lost: the identical step taken again by the same party changes nothing and
//! succeeds, so the hub answers it with the case's state as the first time and
//! appends no second thread entry. "Identical" is what the step says: an offer
//! with the same fields as the case's latest offer, by its sender; the same
//! answer to the same offer by the same receiver; the same completion; a done
//! report for a clock already stopped; a rappel while one is running.

use std::collections::BTreeSet;

use crate::{MemberId, Oin};
use serde::{Deserialize, Serialize};

use crate::calendar::DAY_MS;

/// The clocks an accepted offer starts, as the policy declares them for its route.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RouteClocks {
    /// Working days from acceptance to the first face-to-face contact (5 for a court measure).
    pub first_contact_days: Option<u32>,
    /// Working days after the first escalation of the first contact until the second (5 more).
    pub first_contact_again_days: Option<u32>,
    /// Days from acceptance to the safety plan (veiligheidsplan; 91, three months).
    pub safety_plan_days: Option<u32>,
    /// Working days from acceptance to completion.
    pub completion_days: Option<u32>,
}

/// The reason recorded for a former owner whose background role ran out.
pub const BACKGROUND_ENDED: &str = "background role ended";

/// The reason recorded for a consultant or co-worker whose end date passed.
pub const PARTICIPATION_ENDED: &str = "participation ended";

/// The legal basis a former owner's device states when it brings the case's
/// new owner into a side thread: the handover that moved regie, audited with
/// its own basis, is what entitles the owner.
pub const FOLLOWS_OWNER_BASIS: &str = "regie-moved";

/// The reason recorded for a co-worker whose organisation handed the case on.
pub const REGIE_MOVED: &str = "regie moved to another organisation";

/// The route of a reassignment: an offer to a named colleague in the owner's own organisation.
pub const REASSIGNMENT_ROUTE: &str = "reassignment";

/// Why a handover step is refused. Each names the rule, for the audit log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandoverError {
    /// Only the current owner may offer the case.
    #[error("only the owner of the case may offer it (rule only-owner-offers)")]
    NotOwner,
    /// A case has at most one open offer at a time.
    #[error("offer {0} is still open (rule one-open-offer)")]
    OfferOpen(u32),
    /// An offer inside the owner's own organisation must name the colleague it reassigns the case to.
    #[error(
        "the case is already with this organisation: a reassignment names a colleague (rule reassign-to-a-colleague)"
    )]
    SameOrganisation,
    /// Only a team lead of the owner's organisation takes a case over without an offer.
    #[error("only a team lead of the owner's organisation takes over a case (rule team-lead-takes-over)")]
    NotTeamLead,
    /// Only the offer's sender or the case's owner withdraws an offer; the receiver who accepted may also cancel it.
    #[error("offer {0} is not the caller's to withdraw or cancel (rule only-parties-cancel)")]
    NotParty(u32),
    /// No such offer in this case.
    #[error("no offer {0} in this case")]
    NoSuchOffer(u32),
    /// The offer is not in the state the step needs.
    #[error("offer {offer} is {state}, not {needed}")]
    WrongState {
        /// The offer.
        offer: u32,
        /// Its state.
        state: &'static str,
        /// The state the step needs.
        needed: &'static str,
    },
    /// The caller is not the receiver the offer names.
    #[error("offer {0} is not addressed to the caller (rule only-receiver-answers)")]
    NotReceiver(u32),
    /// A reason is required for this step.
    #[error("a reason is required: {0}")]
    ReasonRequired(&'static str),
    /// Only a former owner in its background role can leave this way.
    #[error("only a former owner in its background role leaves the case this way")]
    NotInBackground,
    /// The deadline is not in the future.
    #[error("the acceptance deadline must be in the future")]
    DeadlineInPast,
    /// A participant's end date is not in the future.
    #[error("a participation ends in the future (rule participation-has-an-end)")]
    EndInPast,
    /// A co-worker works for the owner's organisation.
    #[error("a co-worker is a colleague of the owner; someone of another organisation is consulted (rule co-worker-inside-organisation)")]
    CoWorkerOutside,
    /// A consultant comes from another organisation than the owner's.
    #[error("a colleague of the owner takes part as a co-worker, not a consultant (rule consultant-from-another-organisation)")]
    ConsultantInside,
    /// The member holds regie or is taking the case over; it cannot also be a participant.
    #[error("the member is owner or receiver of the case already (rule already-on-the-case)")]
    AlreadyOnCase,
    /// No such case conference.
    #[error("no case conference {0} in this case")]
    NoSuchConference(u32),
    /// The conference's regie decision is recorded already, otherwise.
    #[error("case conference {0} recorded another decision already (rule one-decision)")]
    Decided(u32),
    /// A conference invites someone, and ends in the future.
    #[error(
        "a case conference invites someone, each for a reason, and ends in the future (rule conference-needs-invitees)"
    )]
    NoInvitees,
    /// A measure's dates do not make a period that ends in the future.
    #[error("a measure ends after it starts, and in the future (rule measure-dates)")]
    MeasureDates,
    /// A date to watch lies in the past.
    #[error("an evaluation date lies in the future (rule evaluation-in-future)")]
    EvaluationInPast,
    /// No clock of that kind (or, for an evaluation, of that date) was started.
    #[error("no clock of that kind was started in this case")]
    NoSuchClock,
    /// Several evaluations run: the report names the one done by its date.
    #[error("several evaluations are running: name the one done by its due_ms (rule evaluation-by-date)")]
    WhichEvaluation,
    /// The case is closed: nothing is offered, engaged or scheduled until it is reopened.
    #[error("the case is closed; reopen it first (rule case-closed)")]
    Closed,
    /// The case is not closed.
    #[error("the case is open (rule reopen-a-closed-case)")]
    NotClosed,
    /// The period in which a closed case may be reopened has passed.
    #[error("the case was closed too long ago to reopen; open a new case (rule reopen-period-over)")]
    ReopenPeriodOver,
    /// A consultant or co-worker takes no handover step.
    #[error("a consultant or co-worker takes part in the case but takes no handover step (rule participants-do-not-hand-over)")]
    Participant,
}

/// What the receiver confirms on completion.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum FamilyTold {
    /// The family was told who their contact is now.
    Yes,
    /// Not told, and why (for example: the family could not be reached yet).
    No {
        /// Why not.
        reason: String,
    },
}

/// Where an offer stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum OfferState {
    /// Waiting for the receiver; the sender is owner.
    Offered,
    /// Accepted by `by`, who is now on the thread; the sender is still owner.
    Accepted {
        /// Who accepted.
        by: MemberId,
    },
    /// Declined by the receiver; the sender stays owner.
    Declined {
        /// Who declined.
        by: MemberId,
        /// Why.
        reason: String,
    },
    /// Not answered by the deadline; the sender stays owner.
    Expired,
    /// Withdrawn by its sender before anyone answered; the owner stays owner.
    Withdrawn {
        /// Who withdrew it.
        by: MemberId,
        /// Why.
        reason: String,
    },
    /// Accepted, then cancelled by either side before completion; the owner
    /// stays owner and the receiver leaves the case.
    Cancelled {
        /// Who cancelled it.
        by: MemberId,
        /// The receiver who had accepted it.
        receiver: MemberId,
        /// Why.
        reason: String,
    },
    /// Completed: `by` became owner.
    Completed {
        /// The new owner.
        by: MemberId,
        /// What the family was told.
        family: FamilyTold,
    },
}

impl Offer {
    /// The request that made this offer, to recognise the same request sent again.
    fn requested(&self) -> OfferRequest {
        OfferRequest {
            to: self.to.clone(),
            to_worker: self.to_worker.clone(),
            route: self.route.clone(),
            legal_basis: self.legal_basis.clone(),
            reason: self.reason.clone(),
            justification: self.justification.clone(),
            deadline_ms: self.deadline_ms,
        }
    }
}

impl OfferState {
    fn name(&self) -> &'static str {
        match self {
            Self::Offered => "offered",
            Self::Accepted { .. } => "accepted",
            Self::Declined { .. } => "declined",
            Self::Expired => "expired",
            Self::Withdrawn { .. } => "withdrawn",
            Self::Cancelled { .. } => "cancelled",
            Self::Completed { .. } => "completed",
        }
    }

    fn is_open(&self) -> bool {
        matches!(self, Self::Offered | Self::Accepted { .. })
    }
}

/// An offer of the case to another organisation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Offer {
    /// Its number within the case, from 1.
    pub id: u32,
    /// The owner who offered it.
    pub from: MemberId,
    /// The receiving organisation.
    pub to: Oin,
    /// The receiving worker, if the offer names one.
    pub to_worker: Option<String>,
    /// The route type from the policy, for example `vt-lt-referral`.
    pub route: String,
    /// The legal basis, allowed on that route.
    pub legal_basis: String,
    /// Why the case is offered.
    pub reason: String,
    /// The written justification, required for a basis that shares without consent.
    pub justification: Option<String>,
    /// When the offer escalates if unanswered, ms since the Unix epoch.
    pub deadline_ms: u64,
    /// When it was made, ms since the Unix epoch (0 for offers stored before this was kept).
    #[serde(default)]
    pub made_ms: u64,
    /// Where it stands.
    pub state: OfferState,
}

/// A former owner's read-only role after a completed handover.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Background {
    /// Who.
    pub member: MemberId,
    /// Until when, ms since the Unix epoch.
    pub until_ms: u64,
}

/// How someone takes part in a case without holding or receiving regie:
/// "brings others in but does not hand over".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ParticipantRole {
    /// Someone of another organisation (a behavioural expert, a school's
    /// care coordinator) who reads and writes from joining until an end date.
    Consultant,
    /// A colleague of the owner who works the case beside it until an end date.
    CoWorker,
}

/// A time-boxed participant of a case, brought in by the owner.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Participant {
    /// Who.
    pub member: MemberId,
    /// In what role.
    pub role: ParticipantRole,
    /// When the participation ends and the hub ends the membership, ms since the Unix epoch.
    pub until_ms: u64,
    /// Why they take part.
    pub reason: String,
}

/// A case closed by its owner, with the outcome the policy names and a reason.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Closure {
    /// The owner who closed it.
    pub by: MemberId,
    /// The outcome code from the policy (for example `safe-at-home`).
    pub outcome: String,
    /// Why, in a sentence.
    pub reason: String,
    /// When, ms since the Unix epoch.
    pub at_ms: u64,
    /// Until when it may be reopened; after it the hub archives the case.
    pub reopen_until_ms: u64,
    /// Set when it was reopened.
    pub reopened: Option<Reopening>,
    /// Set once the reopening period passed: every membership ended.
    #[serde(default)]
    pub archived: bool,
}

/// The reopening of a closed case.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reopening {
    /// Who reopened it: the owner, or a team lead of the owner's organisation.
    pub by: MemberId,
    /// Why (the family is back in view, a new report).
    pub reason: String,
    /// When, ms since the Unix epoch.
    pub at_ms: u64,
}

/// A clock that escalates when its work is not reported done in time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaseClock {
    /// What is due.
    pub kind: ClockKind,
    /// When it escalates (first, or next), ms since the Unix epoch.
    pub due_ms: u64,
    /// Escalations raised so far.
    pub escalations: u32,
    /// Set when the work was reported done; the clock stops.
    pub done: bool,
    /// Working days after the first escalation until a second one; none: one escalation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub again_days: Option<u32>,
    /// The offer whose acceptance started it, for a route's clock: cancelling
    /// that offer stops it. None for a clock the case's owner set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offer: Option<u32>,
}

impl CaseClock {
    fn new(kind: ClockKind, due_ms: u64) -> Self {
        Self { kind, due_ms, escalations: 0, done: false, again_days: None, offer: None }
    }
}

/// The kinds of case clocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClockKind {
    /// The GI's first face-to-face contact after a measure is handed over:
    /// escalated at 5 and again at 10 working days.
    FirstContact,
    /// The safety plan (veiligheidsplan), due 3 months after a measure starts.
    SafetyPlan,
    /// A VT re-check (rappel) on the family.
    Rappel,
    /// The completion of an accepted offer, within the working days its route
    /// allows; stopped by completion or cancellation.
    Completion,
    /// The request to renew (or end) a court measure, due the policy's days
    /// before the measure ends; a new end date (an extension) moves it.
    Renewal,
    /// An evaluation of the plan on a date the owner's case system registered
    /// (the hub sees the date, never the plan); each is reported done on its own.
    Evaluation,
}

impl ClockKind {
    /// The kind's snake_case code, as it is serialized (for URLs, keys and reports).
    pub fn code(self) -> &'static str {
        match self {
            ClockKind::FirstContact => "first_contact",
            ClockKind::SafetyPlan => "safety_plan",
            ClockKind::Rappel => "rappel",
            ClockKind::Completion => "completion",
            ClockKind::Renewal => "renewal",
            ClockKind::Evaluation => "evaluation",
        }
    }

    /// Every kind of clock.
    pub const ALL: [ClockKind; 6] = [
        ClockKind::FirstContact,
        ClockKind::SafetyPlan,
        ClockKind::Rappel,
        ClockKind::Completion,
        ClockKind::Renewal,
        ClockKind::Evaluation,
    ];
}

/// Someone the owner invites to a case conference, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Invitation {
    /// Who.
    pub member: MemberId,
    /// Why they are needed at the table.
    pub reason: String,
}

/// A case conference (jeugdbeschermingstafel): named people take part in the
/// case until its end, each for a recorded reason, and the regie decision it
/// reaches is recorded as a fact; the minutes travel as content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Conference {
    /// Its number within the case, from 1.
    pub id: u32,
    /// What it is about.
    pub topic: String,
    /// When the invitees' participation ends, ms since the Unix epoch.
    pub until_ms: u64,
    /// Who was invited, and why.
    pub invited: Vec<Invitation>,
    /// Its regie decision, once recorded.
    pub decision: Option<RegieDecision>,
}

/// What a case conference decided about regie: which organisation holds it
/// from now on. A fact in the case's state; regie itself moves only by a
/// completed handover (or a takeover), which the decision may call for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegieDecision {
    /// The organisation that holds regie by the decision.
    pub regie_with: Oin,
    /// Why, in the conference's words.
    pub reason: String,
}

/// A court measure's period, as the owner's case system registers it (the
/// hub sees the dates, never the order).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Measure {
    /// When it started, ms since the Unix epoch.
    pub start_ms: u64,
    /// When it ends, ms since the Unix epoch, unless it is extended.
    pub end_ms: u64,
}

/// Something the hub must raise: to the offer's sender, the sender's system
/// identity and the hub's log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Escalation {
    /// An offer was not answered by its deadline and expired; the sender is still owner.
    OfferExpired {
        /// The offer.
        offer: u32,
        /// Its sender (the owner).
        sender: MemberId,
    },
    /// A clock's work is overdue.
    Overdue {
        /// Which clock.
        clock: ClockKind,
        /// The how-manieth escalation of this clock (1 at day 5, 2 at day 10 for first contact).
        escalation: u32,
        /// The owner who answers for it.
        owner: MemberId,
    },
}

/// What an organisation's inbox tells its system identities, team leads and
/// on-call workers, who are not on the case: the hub pushes it to them, and
/// keeps it for them while they are offline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "notice", rename_all = "snake_case")]
pub enum Notice {
    /// A case was offered to the organisation with no worker named, or urgently.
    Offered {
        /// The offer.
        offer: Box<Offer>,
        /// Whether its deadline is within the policy's `urgent_hours`: the
        /// on-call worker answers, and when nobody does the escalation reaches
        /// the receiving organisation's inbox too.
        urgent: bool,
    },
    /// An urgent offer to one of the organisation's workers waits for that
    /// worker's answer: the on-call worker or team lead reaches the worker. It
    /// says no more, since only the worker named may answer or read the offer.
    Urgent {
        /// The offer's number in the case.
        offer: u32,
        /// The worker it is addressed to.
        to_worker: String,
        /// Its deadline, ms since the Unix epoch.
        deadline_ms: u64,
    },
    /// Something in one of the organisation's cases was not done in time.
    Escalated {
        /// What.
        escalation: Escalation,
    },
}

/// A step of a case's handover, as it appears in the case thread.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "step", rename_all = "snake_case")]
pub enum HandoverEvent {
    /// The owner offered the case.
    Offered {
        /// The offer.
        offer: Box<Offer>,
    },
    /// The receiver accepted and joined the case; the sender is still owner.
    Accepted {
        /// The offer's number.
        offer: u32,
        /// Who accepted.
        by: MemberId,
    },
    /// The receiver declined; the sender stays owner.
    Declined {
        /// The offer's number.
        offer: u32,
        /// Why.
        reason: String,
    },
    /// The handover completed: regie moved.
    Completed {
        /// The offer's number.
        offer: u32,
        /// The new owner.
        owner: MemberId,
        /// What the family was told.
        family: FamilyTold,
    },
    /// Something was not done in time.
    Escalated {
        /// What.
        escalation: Escalation,
    },
    /// A former owner left the case, with a reason.
    Left {
        /// Who left.
        member: MemberId,
        /// Why.
        reason: String,
    },
    /// The owner brought in a participant, or changed its end date.
    Engaged {
        /// The participant, its role, end date and reason.
        participant: Participant,
    },
    /// The owner scheduled a clock (a VT re-check).
    Scheduled {
        /// Which clock.
        clock: ClockKind,
    },
    /// The owner reported a clock's work done.
    Done {
        /// Which clock.
        clock: ClockKind,
    },
    /// The sender withdrew an open offer.
    Withdrawn {
        /// The offer's number.
        offer: u32,
        /// Why.
        reason: String,
    },
    /// An accepted offer was cancelled before completion; the owner stays owner.
    Cancelled {
        /// The offer's number.
        offer: u32,
        /// Who cancelled it (the sender, the owner or the receiver).
        by: MemberId,
        /// The receiver, who leaves the case.
        receiver: MemberId,
        /// Why.
        reason: String,
    },
    /// The owner closed the case; every member reads it, nobody writes in it, until it is reopened.
    Closed {
        /// The outcome code.
        outcome: String,
        /// Why.
        reason: String,
        /// Until when it may be reopened.
        reopen_until_ms: u64,
    },
    /// The case was reopened: members write again.
    Reopened {
        /// Why.
        reason: String,
    },
    /// The reopening period of a closed case passed: every membership ends.
    Archived,
    /// The measure's period was registered, or extended.
    MeasureSet {
        /// Its period.
        measure: Measure,
    },
    /// A plan evaluation date was registered.
    EvaluationScheduled {
        /// When.
        due_ms: u64,
    },
    /// The owner called a case conference; its invitees take part until its end.
    ConferenceCalled {
        /// The conference.
        conference: Box<Conference>,
    },
    /// A case conference's regie decision was recorded.
    Decided {
        /// The conference's number.
        conference: u32,
        /// What it decided.
        decision: RegieDecision,
    },
    /// A team lead took the case over from an owner who is away.
    TakenOver {
        /// The new owner: the team lead.
        owner: MemberId,
        /// The former owner, now in its background role.
        former: MemberId,
        /// Why (the owner is sick, has left the organisation, …).
        reason: String,
    },
}

/// The working-day calendar: weekends and the configured public holidays are not working days.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Calendar {
    /// Public holidays, as days since 1970-01-01 (UTC).
    pub holidays: BTreeSet<u64>,
}

impl Calendar {
    fn is_working_day(&self, day: u64) -> bool {
        // 1970-01-01 was a Thursday: day % 7 == 2 is Saturday, 3 is Sunday.
        !matches!(day % 7, 2 | 3) && !self.holidays.contains(&day)
    }

    /// The end of the `n`th working day after the day of `from_ms`.
    pub fn after_working_days(&self, from_ms: u64, n: u32) -> u64 {
        let mut day = from_ms / DAY_MS;
        let mut counted = 0;
        while counted < n {
            day += 1;
            if self.is_working_day(day) {
                counted += 1;
            }
        }
        (day + 1) * DAY_MS
    }
}

/// An offer as the owner requests it; the hub checks its route and basis against the policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OfferRequest {
    /// The receiving organisation.
    pub to: Oin,
    /// The receiving worker, if named.
    pub to_worker: Option<String>,
    /// The route type.
    pub route: String,
    /// The legal basis.
    pub legal_basis: String,
    /// Why.
    pub reason: String,
    /// The written justification (required by the policy for bases without consent).
    pub justification: Option<String>,
    /// The acceptance deadline.
    pub deadline_ms: u64,
}

/// The ownership state of one case.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ownership {
    /// Who holds regie now: exactly one, always.
    pub owner: MemberId,
    /// Every offer made, in order.
    pub offers: Vec<Offer>,
    /// Former owners in their background role.
    pub background: Vec<Background>,
    /// The case's clocks.
    pub clocks: Vec<CaseClock>,
    /// Former owners who left the case, with their recorded reason.
    #[serde(default)]
    pub left: Vec<(MemberId, String)>,
    /// Members whose membership ended while their devices are still in the
    /// case's MLS group: the owner's device removes them with a commit, and
    /// each stays listed until that commit is accepted.
    #[serde(default)]
    pub removal_due: Vec<MemberId>,
    /// Consultants and co-workers, each until its end date.
    #[serde(default)]
    pub participants: Vec<Participant>,
    /// Every closing of the case, in order; the last is in force unless reopened.
    #[serde(default)]
    pub closures: Vec<Closure>,
    /// Everyone who ever took part as consultant or co-worker, with the role,
    /// for routes that keep duties apart (see [`Ownership::has_served_as`]).
    #[serde(default)]
    pub served: Vec<(MemberId, ParticipantRole)>,
    /// The court measure's period, once registered.
    #[serde(default)]
    pub measure: Option<Measure>,
    /// Every case conference, in order.
    #[serde(default)]
    pub conferences: Vec<Conference>,
}

impl Ownership {
    /// A new case, owned by its creator.
    pub fn new(creator: MemberId) -> Self {
        Self {
            owner: creator,
            offers: Vec::new(),
            background: Vec::new(),
            clocks: Vec::new(),
            left: Vec::new(),
            removal_due: Vec::new(),
            participants: Vec::new(),
            closures: Vec::new(),
            served: Vec::new(),
            measure: None,
            conferences: Vec::new(),
        }
    }

    /// Whether `member` takes or took part in the case in `role`.
    pub fn has_served_as(&self, member: &MemberId, role: ParticipantRole) -> bool {
        self.served.iter().any(|(m, r)| m == member && *r == role)
    }

    /// The closing in force, if the case is closed (archived or not).
    pub fn closed(&self) -> Option<&Closure> {
        self.closures.last().filter(|c| c.reopened.is_none())
    }

    fn refuse_if_closed(&self) -> Result<(), HandoverError> {
        match self.closed() {
            Some(_) => Err(HandoverError::Closed),
            None => Ok(()),
        }
    }

    /// The owner closes the case with an outcome code and a reason: clocks stop,
    /// nobody writes in it, and it may be reopened until `reopen_until_ms`. An
    /// open offer is withdrawn or cancelled first. Closed again with the same
    /// outcome and reason, it changes nothing.
    pub fn close(
        &mut self,
        by: &MemberId,
        (outcome, reason): (&str, &str),
        now_ms: u64,
        reopen_until_ms: u64,
    ) -> Result<(), HandoverError> {
        if by != &self.owner {
            return Err(HandoverError::NotOwner);
        }
        if let Some(closed) = self.closed() {
            if closed.outcome == outcome && closed.reason == reason {
                return Ok(());
            }
            return Err(HandoverError::Closed);
        }
        if outcome.trim().is_empty() || reason.trim().is_empty() {
            return Err(HandoverError::ReasonRequired("the outcome and why the case is closed"));
        }
        if let Some(open) = self.open_offer() {
            return Err(HandoverError::OfferOpen(open.id));
        }
        self.clocks.iter_mut().for_each(|c| c.done = true);
        self.closures.push(Closure {
            by: by.clone(),
            outcome: outcome.to_owned(),
            reason: reason.to_owned(),
            at_ms: now_ms,
            reopen_until_ms,
            reopened: None,
            archived: false,
        });
        Ok(())
    }

    /// The owner, or a team lead of its organisation (`lead`, which the policy
    /// knows), reopens a closed case within its period; the members write again.
    pub fn reopen(&mut self, by: &MemberId, lead: bool, reason: &str, now_ms: u64) -> Result<(), HandoverError> {
        if by != &self.owner && !(lead && by.oin == self.owner.oin) {
            return Err(HandoverError::NotOwner);
        }
        let last = self.closures.last_mut().ok_or(HandoverError::NotClosed)?;
        if let Some(done) = &last.reopened {
            return if &done.by == by && done.reason == reason { Ok(()) } else { Err(HandoverError::NotClosed) };
        }
        if last.archived || now_ms >= last.reopen_until_ms {
            return Err(HandoverError::ReopenPeriodOver);
        }
        if reason.trim().is_empty() {
            return Err(HandoverError::ReasonRequired("why the case is reopened"));
        }
        last.reopened = Some(Reopening { by: by.clone(), reason: reason.to_owned(), at_ms: now_ms });
        Ok(())
    }

    /// Whether `member` may only read the case: a former owner in its
    /// background role, or one that left. The owner, receivers and consulted
    /// members write.
    pub fn is_read_only(&self, member: &MemberId) -> bool {
        self.background.iter().any(|b| &b.member == member) || self.left.iter().any(|(m, _)| m == member)
    }

    /// A former owner in its background role, or a participant before its
    /// end date, leaves the case, with a reason.
    pub fn leave(&mut self, member: &MemberId, reason: &str) -> Result<(), HandoverError> {
        if reason.trim().is_empty() {
            return Err(HandoverError::ReasonRequired("why the member leaves the case"));
        }
        if self.left.iter().any(|(m, r)| m == member && r == reason) {
            return Ok(());
        }
        // The hub's own departures are told apart by their reasons, in the audit log too.
        if [BACKGROUND_ENDED, PARTICIPATION_ENDED, REGIE_MOVED].contains(&reason) {
            return Err(HandoverError::ReasonRequired("a reason of the member's own"));
        }
        let background = self.background.iter().any(|b| &b.member == member);
        if !background && self.participant(member).is_none() {
            return Err(HandoverError::NotInBackground);
        }
        self.background.retain(|b| &b.member != member);
        self.participants.retain(|p| &p.member != member);
        self.left.push((member.clone(), reason.to_owned()));
        Ok(())
    }

    /// `member`'s participation, if it is a consultant or co-worker of the case.
    pub fn participant(&self, member: &MemberId) -> Option<&Participant> {
        self.participants.iter().find(|p| &p.member == member)
    }

    /// The owner brings in a consultant or co-worker until an end date, or
    /// changes the end date (or role, or reason) of one already taking part.
    /// A former owner in its background role, or one who left, may so come
    /// back to write; the owner and the receiver of an open offer cannot.
    pub fn engage(&mut self, by: &MemberId, participant: Participant, now_ms: u64) -> Result<(), HandoverError> {
        if by != &self.owner {
            return Err(HandoverError::NotOwner);
        }
        self.refuse_if_closed()?;
        if self.participant(&participant.member) == Some(&participant) {
            return Ok(());
        }
        if participant.reason.trim().is_empty() {
            return Err(HandoverError::ReasonRequired("why the participant is brought in"));
        }
        if participant.until_ms <= now_ms {
            return Err(HandoverError::EndInPast);
        }
        if participant.role == ParticipantRole::CoWorker && participant.member.oin != self.owner.oin {
            return Err(HandoverError::CoWorkerOutside);
        }
        if participant.role == ParticipantRole::Consultant && participant.member.oin == self.owner.oin {
            return Err(HandoverError::ConsultantInside);
        }
        let receiving =
            self.offers.iter().any(|o| matches!(&o.state, OfferState::Accepted { by } if by == &participant.member));
        if participant.member == self.owner || receiving {
            return Err(HandoverError::AlreadyOnCase);
        }
        self.background.retain(|b| b.member != participant.member);
        self.left.retain(|(m, _)| m != &participant.member);
        self.removal_due.retain(|m| m != &participant.member);
        self.participants.retain(|p| p.member != participant.member);
        if !self.has_served_as(&participant.member, participant.role) {
            self.served.push((participant.member.clone(), participant.role));
        }
        self.participants.push(participant);
        Ok(())
    }

    /// The owner calls a case conference about `topic` until `until_ms`: each
    /// invitee takes part as a participant until then (a consultant from
    /// another organisation, a co-worker from the owner's), all or none.
    /// Returns its number; the same call again changes nothing.
    pub fn call_conference(
        &mut self,
        by: &MemberId,
        (topic, until_ms, invited): (&str, u64, &[Invitation]),
        now_ms: u64,
    ) -> Result<u32, HandoverError> {
        if by != &self.owner {
            return Err(HandoverError::NotOwner);
        }
        let same = |c: &&Conference| c.topic == topic && c.until_ms == until_ms && c.invited == invited;
        if let Some(latest) = self.conferences.last().filter(same) {
            return Ok(latest.id);
        }
        self.refuse_if_closed()?;
        let distinct: BTreeSet<&MemberId> = invited.iter().map(|i| &i.member).collect();
        let unreasoned = invited.iter().any(|i| i.reason.trim().is_empty());
        if topic.trim().is_empty() || invited.is_empty() || unreasoned || distinct.len() != invited.len() {
            return Err(HandoverError::NoInvitees);
        }
        let mut after = self.clone();
        for invitation in invited {
            let role = if invitation.member.oin == self.owner.oin {
                ParticipantRole::CoWorker
            } else {
                ParticipantRole::Consultant
            };
            let member = invitation.member.clone();
            after.engage(by, Participant { member, role, until_ms, reason: invitation.reason.clone() }, now_ms)?;
        }
        let id = after.conferences.len() as u32 + 1;
        let invited = invited.to_vec();
        after.conferences.push(Conference { id, topic: topic.to_owned(), until_ms, invited, decision: None });
        *self = after;
        Ok(id)
    }

    /// The owner records conference `id`'s regie decision while the case is
    /// open; the same decision again changes nothing, even once it is closed.
    pub fn decide(&mut self, by: &MemberId, id: u32, decision: RegieDecision) -> Result<(), HandoverError> {
        if by != &self.owner {
            return Err(HandoverError::NotOwner);
        }
        let closed = self.closed().is_some();
        let conference = self.conferences.iter_mut().find(|c| c.id == id).ok_or(HandoverError::NoSuchConference(id))?;
        match &conference.decision {
            Some(recorded) if *recorded == decision => Ok(()),
            Some(_) => Err(HandoverError::Decided(id)),
            None if decision.reason.trim().is_empty() => {
                Err(HandoverError::ReasonRequired("why the conference decided so"))
            }
            None if closed => Err(HandoverError::Closed),
            None => {
                conference.decision = Some(decision);
                Ok(())
            }
        }
    }

    /// The open offer (offered or accepted), if any.
    pub fn open_offer(&self) -> Option<&Offer> {
        self.offers.iter().find(|o| o.state.is_open())
    }

    fn offer_mut(&mut self, id: u32) -> Result<&mut Offer, HandoverError> {
        self.offers.iter_mut().find(|o| o.id == id).ok_or(HandoverError::NoSuchOffer(id))
    }

    /// The owner offers the case; returns the offer's number. `lead` says
    /// that `by` leads a team of the owner's organisation (the policy knows):
    /// a team lead may reassign the case to a colleague without being its owner.
    pub fn offer(
        &mut self,
        by: &MemberId,
        lead: bool,
        request: OfferRequest,
        now_ms: u64,
    ) -> Result<u32, HandoverError> {
        let reassigns = request.to == self.owner.oin;
        let lead_reassigns = lead && reassigns && by.oin == self.owner.oin;
        if by != &self.owner && !lead_reassigns {
            return Err(HandoverError::NotOwner);
        }
        if let Some(latest) = self.offers.last().filter(|o| &o.from == by && o.requested() == request) {
            // A resend: whatever became of that offer since, it is not made twice.
            return Ok(latest.id);
        }
        self.refuse_if_closed()?;
        if let Some(open) = self.open_offer() {
            return Err(HandoverError::OfferOpen(open.id));
        }
        if reassigns && request.to_worker.as_ref().is_none_or(|w| *w == self.owner.worker) {
            return Err(HandoverError::SameOrganisation);
        }
        if request.reason.trim().is_empty() {
            return Err(HandoverError::ReasonRequired("why the case is offered"));
        }
        if request.deadline_ms <= now_ms {
            return Err(HandoverError::DeadlineInPast);
        }
        let id = self.offers.len() as u32 + 1;
        self.offers.push(Offer {
            id,
            from: by.clone(),
            to: request.to,
            to_worker: request.to_worker,
            route: request.route,
            legal_basis: request.legal_basis,
            reason: request.reason,
            justification: request.justification,
            deadline_ms: request.deadline_ms,
            made_ms: now_ms,
            state: OfferState::Offered,
        });
        Ok(id)
    }

    /// Offer `id` if it is addressed to `by`. Checked before anything else about
    /// an answer, so that anyone else learns nothing from the refusal.
    fn addressed_to(&mut self, by: &MemberId, id: u32) -> Result<&mut Offer, HandoverError> {
        let offer = self.offer_mut(id)?;
        let addressed = offer.to == by.oin && offer.to_worker.as_ref().is_none_or(|w| w == &by.worker);
        if !addressed {
            return Err(HandoverError::NotReceiver(id));
        }
        Ok(offer)
    }

    /// Moves an offer addressed to `by` from offered to `answer`; the same answer again changes nothing.
    fn answer(&mut self, by: &MemberId, id: u32, answer: OfferState) -> Result<(), HandoverError> {
        let participant = self.participant(by).is_some();
        let offer = self.addressed_to(by, id)?;
        if participant {
            return Err(HandoverError::Participant);
        }
        if offer.state == answer {
            return Ok(());
        }
        if offer.state != OfferState::Offered {
            return Err(HandoverError::WrongState { offer: id, state: offer.state.name(), needed: "offered" });
        }
        offer.state = answer;
        Ok(())
    }

    /// The receiver accepts: it joins the case; the sender stays owner until completion.
    pub fn accept(&mut self, by: &MemberId, id: u32) -> Result<(), HandoverError> {
        let before = self.offers.iter().find(|o| o.id == id).map(|o| o.state.clone());
        self.answer(by, id, OfferState::Accepted { by: by.clone() })?;
        // A receiver that once left the case comes back as a full member; an acceptance resent changes nothing.
        if before != Some(OfferState::Accepted { by: by.clone() }) {
            self.left.retain(|(m, _)| m != by);
        }
        Ok(())
    }

    /// Whether `by` is a party who may withdraw or cancel `offer`: the owner,
    /// or its sender while it still writes (a former owner in its background
    /// role, after a takeover, no longer does).
    fn may_call_off(&self, by: &MemberId, offer: &Offer) -> bool {
        by == &self.owner || (by == &offer.from && !self.is_read_only(by))
    }

    /// Whether `member` came onto the case by a handover step: the owner, or
    /// the receiver of an accepted or completed offer. The hub lets any member
    /// who writes bring such a member's devices into the MLS group.
    pub fn admitted_by_handover(&self, member: &MemberId) -> bool {
        member == &self.owner
            || self.participant(member).is_some()
            || self.offers.iter().any(
                |o| matches!(&o.state, OfferState::Accepted { by } | OfferState::Completed { by, .. } if by == member),
            )
    }

    /// Starts the clocks an accepted offer's route declares, from now: the
    /// completion deadline, and for a court measure handed to a GI the first
    /// face-to-face contact and the safety plan.
    pub fn start_clocks(&mut self, calendar: &Calendar, now_ms: u64, (clocks, offer): (&RouteClocks, u32)) {
        let of_offer = |kind, due_ms| CaseClock { offer: Some(offer), ..CaseClock::new(kind, due_ms) };
        if let Some(days) = clocks.first_contact_days {
            let due_ms = calendar.after_working_days(now_ms, days);
            let again_days = clocks.first_contact_again_days;
            self.clocks.push(CaseClock { again_days, ..of_offer(ClockKind::FirstContact, due_ms) });
        }
        if let Some(days) = clocks.safety_plan_days {
            self.clocks.push(of_offer(ClockKind::SafetyPlan, now_ms + u64::from(days) * DAY_MS));
        }
        if let Some(days) = clocks.completion_days {
            self.clocks.retain(|c| c.kind != ClockKind::Completion || !c.done);
            self.clocks.push(of_offer(ClockKind::Completion, calendar.after_working_days(now_ms, days)));
        }
    }

    /// The clocks still running: what `limits.max_clocks_per_case` bounds.
    pub fn running_clocks(&self) -> usize {
        self.clocks.iter().filter(|c| !c.done).count()
    }

    /// Forgets the oldest stopped rappels, renewals and evaluations beyond
    /// `keep`, so that a case's clocks stay bounded however often a measure is
    /// extended. The clocks a handover started stay: they are its record.
    pub fn forget_stopped(&mut self, keep: usize) {
        let set_on_the_case =
            |c: &CaseClock| c.done && matches!(c.kind, ClockKind::Rappel | ClockKind::Renewal | ClockKind::Evaluation);
        let mut excess = self.clocks.iter().filter(|c| set_on_the_case(c)).count().saturating_sub(keep);
        self.clocks.retain(|c| {
            let forget = excess > 0 && set_on_the_case(c);
            excess -= usize::from(forget);
            !forget
        });
    }

    fn stop(&mut self, kind: ClockKind) {
        self.clocks.iter_mut().filter(|c| c.kind == kind).for_each(|c| c.done = true);
    }

    /// The sender (or the owner) withdraws an offer nobody answered yet; the owner stays owner.
    pub fn withdraw(&mut self, by: &MemberId, id: u32, reason: &str) -> Result<(), HandoverError> {
        let party = self.offers.iter().find(|o| o.id == id).is_some_and(|o| self.may_call_off(by, o));
        let offer = self.offer_mut(id)?;
        if !party {
            return Err(HandoverError::NotParty(id));
        }
        let withdrawn = OfferState::Withdrawn { by: by.clone(), reason: reason.to_owned() };
        if offer.state == withdrawn {
            return Ok(());
        }
        if reason.trim().is_empty() {
            return Err(HandoverError::ReasonRequired("why the offer is withdrawn"));
        }
        if offer.state != OfferState::Offered {
            return Err(HandoverError::WrongState { offer: id, state: offer.state.name(), needed: "offered" });
        }
        offer.state = withdrawn;
        Ok(())
    }

    /// Either side cancels an accepted offer before completion: the owner
    /// stays owner, the receiver leaves the case, the clocks its acceptance
    /// started stop.
    /// Returns the receiver.
    pub fn cancel(&mut self, by: &MemberId, id: u32, reason: &str) -> Result<MemberId, HandoverError> {
        let party = self.offers.iter().find(|o| o.id == id).is_some_and(|o| self.may_call_off(by, o));
        let offer = self.offer_mut(id)?;
        let receiver = match &offer.state {
            OfferState::Accepted { by: receiver } => receiver.clone(),
            OfferState::Cancelled { by: who, receiver, reason: why } if who == by && why == reason => {
                return Ok(receiver.clone());
            }
            other => return Err(HandoverError::WrongState { offer: id, state: other.name(), needed: "accepted" }),
        };
        if !party && by != &receiver {
            return Err(HandoverError::NotParty(id));
        }
        if reason.trim().is_empty() {
            return Err(HandoverError::ReasonRequired("why the accepted offer is cancelled"));
        }
        offer.state = OfferState::Cancelled { by: by.clone(), receiver: receiver.clone(), reason: reason.to_owned() };
        // By kind too: a completion clock stored before clocks named their offer has none.
        self.stop(ClockKind::Completion);
        self.clocks.iter_mut().filter(|c| c.offer == Some(id)).for_each(|c| c.done = true);
        // A receiver that became owner meanwhile (a team lead who took over) stays.
        if receiver != self.owner {
            self.left.push((receiver.clone(), format!("offer {id} cancelled: {reason}")));
        }
        Ok(receiver)
    }

    /// A team lead of the owner's organisation takes the case over from an
    /// owner who is away, with a recorded reason: the lead becomes owner at
    /// once and the former owner keeps a background role. `lead` says that
    /// `by` leads a team (the policy knows).
    pub fn take_over(
        &mut self,
        by: &MemberId,
        lead: bool,
        reason: &str,
        (now_ms, background_days): (u64, u32),
    ) -> Result<(), HandoverError> {
        if !lead || by.oin != self.owner.oin {
            return Err(HandoverError::NotTeamLead);
        }
        if self.closed().is_some_and(|c| c.archived) {
            return Err(HandoverError::Closed);
        }
        if by == &self.owner {
            return Ok(());
        }
        if reason.trim().is_empty() {
            return Err(HandoverError::ReasonRequired("why the team lead takes the case over"));
        }
        self.become_owner(by, now_ms, background_days);
        Ok(())
    }

    /// Moves regie to `by`; the former owner keeps a background role for `background_days`.
    fn become_owner(&mut self, by: &MemberId, now_ms: u64, background_days: u32) {
        // A receiver who took the case over meanwhile (a team lead) completes as owner already.
        if by == &self.owner {
            return;
        }
        let former = std::mem::replace(&mut self.owner, by.clone());
        self.background.retain(|b| b.member != *by);
        self.left.retain(|(m, _)| m != by);
        self.participants.retain(|p| p.member != *by);
        // Co-workers were the former owner's team: when regie leaves their organisation, so do they.
        let (stay, go): (Vec<_>, Vec<_>) = std::mem::take(&mut self.participants)
            .into_iter()
            .partition(|p| p.role != ParticipantRole::CoWorker || p.member.oin == by.oin);
        self.participants = stay;
        self.left.extend(go.into_iter().map(|p| (p.member, REGIE_MOVED.to_owned())));
        let until_ms = now_ms + u64::from(background_days) * DAY_MS;
        self.background.push(Background { member: former, until_ms });
    }

    /// The receiver declines; the sender stays owner.
    pub fn decline(&mut self, by: &MemberId, id: u32, reason: &str) -> Result<(), HandoverError> {
        self.addressed_to(by, id)?;
        if reason.trim().is_empty() {
            return Err(HandoverError::ReasonRequired("why the offer is declined"));
        }
        self.answer(by, id, OfferState::Declined { by: by.clone(), reason: reason.to_owned() })
    }

    /// The receiver who accepted completes the handover and becomes owner; the
    /// former owner keeps a background role for `background_days` (the
    /// policy's, for the offer's route).
    pub fn complete(
        &mut self,
        by: &MemberId,
        (id, family): (u32, FamilyTold),
        (now_ms, background_days): (u64, u32),
    ) -> Result<(), HandoverError> {
        if let FamilyTold::No { reason } = &family {
            if reason.trim().is_empty() {
                return Err(HandoverError::ReasonRequired("why the family was not told who their contact is"));
            }
        }
        let offer = self.offer_mut(id)?;
        match &offer.state {
            OfferState::Accepted { by: accepted } if accepted == by => {}
            OfferState::Completed { by: done, family: told } if done == by && *told == family => return Ok(()),
            OfferState::Accepted { .. } => return Err(HandoverError::NotReceiver(id)),
            other => return Err(HandoverError::WrongState { offer: id, state: other.name(), needed: "accepted" }),
        }
        offer.state = OfferState::Completed { by: by.clone(), family };
        self.stop(ClockKind::Completion);
        self.become_owner(by, now_ms, background_days);
        Ok(())
    }

    /// Who may report a clock's work done: the owner, and the receiver who
    /// accepted an open offer (the GI reports its first contact before it completes).
    pub fn may_report(&self, member: &MemberId) -> bool {
        member == &self.owner
            || self.offers.iter().any(|o| matches!(&o.state, OfferState::Accepted { by } if by == member))
    }

    /// Schedules a VT re-check (rappel) `days` out (the policy's `rappel_days`).
    /// One runs at a time: while one is running, this changes nothing. A closed
    /// case schedules none.
    pub fn schedule_rappel(&mut self, now_ms: u64, days: u32) -> Result<(), HandoverError> {
        self.refuse_if_closed()?;
        if self.clocks.iter().any(|c| c.kind == ClockKind::Rappel && !c.done) {
            return Ok(());
        }
        self.clocks.push(CaseClock::new(ClockKind::Rappel, now_ms + u64::from(days) * DAY_MS));
        Ok(())
    }

    /// The owner, or the receiver who accepted, registers the measure's
    /// period, or a new end (an extension): the renewal clock is due
    /// `renewal_days_before` its end, replacing a running one. The same period
    /// again changes nothing.
    pub fn set_measure(
        &mut self,
        by: &MemberId,
        measure: Measure,
        (now_ms, renewal_days_before): (u64, u32),
    ) -> Result<(), HandoverError> {
        if !self.may_report(by) {
            return Err(HandoverError::NotOwner);
        }
        self.refuse_if_closed()?;
        if self.measure == Some(measure) {
            return Ok(());
        }
        if measure.end_ms <= measure.start_ms || measure.end_ms <= now_ms {
            return Err(HandoverError::MeasureDates);
        }
        self.stop(ClockKind::Renewal);
        let due_ms = measure.end_ms.saturating_sub(u64::from(renewal_days_before) * DAY_MS).max(now_ms);
        self.clocks.push(CaseClock::new(ClockKind::Renewal, due_ms));
        self.measure = Some(measure);
        Ok(())
    }

    /// The owner, or the receiver who accepted, registers a plan evaluation
    /// date. The same date while its clock runs changes nothing.
    pub fn schedule_evaluation(&mut self, by: &MemberId, due_ms: u64, now_ms: u64) -> Result<(), HandoverError> {
        if !self.may_report(by) {
            return Err(HandoverError::NotOwner);
        }
        self.refuse_if_closed()?;
        if self.clocks.iter().any(|c| c.kind == ClockKind::Evaluation && !c.done && c.due_ms == due_ms) {
            return Ok(());
        }
        if due_ms <= now_ms {
            return Err(HandoverError::EvaluationInPast);
        }
        self.clocks.push(CaseClock::new(ClockKind::Evaluation, due_ms));
        Ok(())
    }

    /// The days from `now_ms` to the end of the measure, at least one; none without a measure.
    pub fn days_to_measure_end(&self, now_ms: u64) -> Option<u32> {
        let left = self.measure?.end_ms.saturating_sub(now_ms);
        Some(u32::try_from(left.div_ceil(DAY_MS)).unwrap_or(u32::MAX).max(1))
    }

    /// Reports a clock's work done (for example, the first contact took place);
    /// `NoSuchClock` when none such was ever started. A clock already stopped
    /// stays as it is. `due_ms` names one clock of the kind by its date; without it, every
    /// clock of the kind stops, except that of several running evaluations the
    /// report must name one: reported again, a report changes nothing more.
    pub fn report_done(&mut self, kind: ClockKind, due_ms: Option<u64>) -> Result<(), HandoverError> {
        let named = |c: &CaseClock| c.kind == kind && due_ms.is_none_or(|due| c.due_ms == due);
        let running = self.clocks.iter().filter(|c| named(c) && !c.done).count();
        if kind == ClockKind::Evaluation && due_ms.is_none() && running > 1 {
            return Err(HandoverError::WhichEvaluation);
        }
        let mut started = false;
        for clock in self.clocks.iter_mut().filter(|c| named(c)) {
            clock.done = true;
            started = true;
        }
        if started {
            Ok(())
        } else {
            Err(HandoverError::NoSuchClock)
        }
    }

    /// Fires everything due at `now_ms`: open offers past their deadline expire,
    /// and overdue clocks escalate (first contact again 5 working days later, once).
    pub fn due(&mut self, calendar: &Calendar, now_ms: u64) -> Vec<Escalation> {
        let mut raised = Vec::new();
        for offer in self.offers.iter_mut().filter(|o| o.state == OfferState::Offered && o.deadline_ms <= now_ms) {
            offer.state = OfferState::Expired;
            raised.push(Escalation::OfferExpired { offer: offer.id, sender: offer.from.clone() });
        }
        for clock in self.clocks.iter_mut().filter(|c| !c.done && c.due_ms <= now_ms) {
            clock.escalations += 1;
            raised.push(Escalation::Overdue {
                clock: clock.kind,
                escalation: clock.escalations,
                owner: self.owner.clone(),
            });
            match clock.again_days {
                Some(days) if clock.escalations == 1 => {
                    clock.due_ms = calendar.after_working_days(clock.due_ms - DAY_MS, days);
                }
                _ => clock.done = true,
            }
        }
        // A background role or a participation that ends becomes a recorded departure: the member stays read-only.
        for ended in self.background.iter().filter(|b| b.until_ms <= now_ms) {
            self.left.push((ended.member.clone(), BACKGROUND_ENDED.to_owned()));
        }
        self.background.retain(|b| b.until_ms > now_ms);
        if let Some(closure) = self.closures.last_mut().filter(|c| c.reopened.is_none() && !c.archived) {
            // Past its reopening period the case is archived: the hub ends every membership.
            closure.archived = closure.reopen_until_ms <= now_ms;
        }
        for ended in self.participants.iter().filter(|p| p.until_ms <= now_ms) {
            self.left.push((ended.member.clone(), PARTICIPATION_ENDED.to_owned()));
        }
        self.participants.retain(|p| p.until_ms > now_ms);
        raised
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn member(oin: &str, worker: &str) -> MemberId {
        MemberId { oin: oin.parse().unwrap(), worker: worker.into() }
    }

    const VT: &str = "00000001800000000001";

    /// The clocks of a court measure handed to a GI, as the example policy declares them.
    const MEASURE: RouteClocks = RouteClocks {
        first_contact_days: Some(5),
        first_contact_again_days: Some(5),
        safety_plan_days: Some(91),
        completion_days: None,
    };
    const LT: &str = "00000001800000000002";
    const GI: &str = "00000001800000000005";

    fn request(to: &str, deadline_ms: u64) -> OfferRequest {
        OfferRequest {
            to: to.parse().unwrap(),
            to_worker: None,
            route: "vt-lt-referral".into(),
            legal_basis: "consent".into(),
            reason: "support at home".into(),
            justification: None,
            deadline_ms,
        }
    }

    #[test]
    fn a_closed_case_takes_no_new_decision_but_a_resent_one_is_answered_the_same() {
        let (anna, sanne) = (member(VT, "anna"), member(LT, "sanne"));
        let mut case = Ownership::new(anna.clone());
        let invited = [Invitation { member: sanne, reason: "the family's support".into() }];
        let first = case.call_conference(&anna, ("safety at home", DAY_MS, &invited), 0).unwrap();
        let second = case.call_conference(&anna, ("school", 2 * DAY_MS, &invited), 0).unwrap();
        let decision = RegieDecision { regie_with: LT.parse().unwrap(), reason: "closest to the family".into() };
        case.decide(&anna, first, decision.clone()).unwrap();
        case.close(&anna, ("closed", "support ended"), 3 * DAY_MS, 400 * DAY_MS).unwrap();
        assert_eq!(case.decide(&anna, first, decision.clone()), Ok(()), "a resend after closing");
        assert_eq!(case.decide(&anna, second, decision), Err(HandoverError::Closed));
    }

    #[test]
    fn the_sender_stays_owner_until_the_receiver_completes() {
        let (anna, sanne) = (member(VT, "anna"), member(LT, "sanne"));
        let mut case = Ownership::new(anna.clone());
        let id = case.offer(&anna, false, request(LT, 10 * DAY_MS), 0).unwrap();
        assert_eq!(case.offer(&anna, false, request(GI, 10 * DAY_MS), 0), Err(HandoverError::OfferOpen(id)));
        assert_eq!(case.offer(&sanne, false, request(GI, 10 * DAY_MS), 0), Err(HandoverError::NotOwner));
        case.accept(&sanne, id).unwrap();
        assert_eq!(case.owner, anna, "accepting does not move regie");
        let empty = FamilyTold::No { reason: " ".into() };
        assert!(matches!(case.complete(&sanne, (id, empty), (DAY_MS, 30)), Err(HandoverError::ReasonRequired(_))));
        case.complete(&sanne, (id, FamilyTold::Yes), (DAY_MS, 30)).unwrap();
        assert_eq!(case.owner, sanne);
        assert_eq!(case.background, vec![Background { member: anna, until_ms: 31 * DAY_MS }]);
    }

    #[test]
    fn a_team_lead_reassigns_or_takes_over_inside_the_organisation_only() {
        let (anna, bram, petra, sanne) = (member(VT, "anna"), member(VT, "bram"), member(VT, "petra"), member(LT, "s"));
        let mut case = Ownership::new(anna.clone());
        let mut to_bram = request(VT, 10 * DAY_MS);
        assert_eq!(case.offer(&anna, false, to_bram.clone(), 0), Err(HandoverError::SameOrganisation));
        to_bram.to_worker = Some("bram".into());
        assert_eq!(case.offer(&petra, false, to_bram.clone(), 0), Err(HandoverError::NotOwner), "not a lead");
        assert_eq!(case.offer(&petra, true, request(LT, 10 * DAY_MS), 0), Err(HandoverError::NotOwner));
        let id = case.offer(&petra, true, to_bram, 0).unwrap();
        assert_eq!(case.accept(&sanne, id), Err(HandoverError::NotReceiver(id)));
        case.accept(&bram, id).unwrap();
        assert_eq!(case.cancel(&sanne, id, "x"), Err(HandoverError::NotParty(id)));
        assert_eq!(case.cancel(&bram, id, "sick too").unwrap(), bram);
        assert_eq!(case.owner, anna, "a cancelled offer leaves the owner as it was");
        assert!(case.is_read_only(&bram), "the cancelled receiver leaves the case");
        assert_eq!(case.take_over(&sanne, true, "owner sick", (DAY_MS, 30)), Err(HandoverError::NotTeamLead));
        assert_eq!(case.take_over(&petra, false, "owner sick", (DAY_MS, 30)), Err(HandoverError::NotTeamLead));
        assert!(matches!(case.take_over(&petra, true, " ", (DAY_MS, 30)), Err(HandoverError::ReasonRequired(_))));
        case.take_over(&petra, true, "owner sick", (DAY_MS, 30)).unwrap();
        assert_eq!(case.owner, petra);
        assert!(case.is_read_only(&anna), "the absent owner keeps a background role");
    }

    #[test]
    fn an_offer_is_withdrawn_only_while_unanswered_and_by_its_sender() {
        let (anna, sanne) = (member(VT, "anna"), member(LT, "sanne"));
        let mut case = Ownership::new(anna.clone());
        let id = case.offer(&anna, false, request(LT, 10 * DAY_MS), 0).unwrap();
        assert_eq!(case.withdraw(&sanne, id, "no"), Err(HandoverError::NotParty(id)));
        assert!(matches!(case.withdraw(&anna, id, ""), Err(HandoverError::ReasonRequired(_))));
        case.withdraw(&anna, id, "family moved away").unwrap();
        assert!(case.open_offer().is_none(), "a withdrawn offer is closed");
        case.withdraw(&anna, id, "family moved away").unwrap();
        assert!(matches!(case.accept(&sanne, id), Err(HandoverError::WrongState { .. })));
    }

    #[test]
    fn after_a_takeover_the_absent_owner_calls_off_nothing() {
        let (anna, petra, sanne) = (member(VT, "anna"), member(VT, "petra"), member(LT, "sanne"));
        let mut case = Ownership::new(anna.clone());
        let id = case.offer(&anna, false, request(LT, 10 * DAY_MS), 0).unwrap();
        case.take_over(&petra, true, "owner sick", (DAY_MS, 30)).unwrap();
        assert_eq!(case.withdraw(&anna, id, "mine"), Err(HandoverError::NotParty(id)), "anna is read-only now");
        case.accept(&sanne, id).unwrap();
        assert_eq!(case.cancel(&anna, id, "mine"), Err(HandoverError::NotParty(id)));
        case.cancel(&petra, id, "the new owner decides").unwrap();
    }

    #[test]
    fn an_acceptance_resent_after_leaving_does_not_bring_the_member_back() {
        let (anna, sanne) = (member(VT, "anna"), member(LT, "sanne"));
        let mut case = Ownership::new(anna.clone());
        let first = case.offer(&anna, false, request(LT, 10 * DAY_MS), 0).unwrap();
        case.accept(&sanne, first).unwrap();
        case.complete(&sanne, (first, FamilyTold::Yes), (DAY_MS, 30)).unwrap();
        // Sanne offers the case back to VT; Anna, in her background role, accepts, then leaves.
        let back = case.offer(&sanne, false, request(VT, 10 * DAY_MS), DAY_MS).unwrap();
        case.accept(&anna, back).unwrap();
        case.leave(&anna, "not mine any more").unwrap();
        case.accept(&anna, back).unwrap();
        assert!(case.is_read_only(&anna), "a resent acceptance undid a departure");
    }

    #[test]
    fn a_consultant_takes_part_until_its_end_date_and_takes_no_handover_step() {
        let (anna, sanne, bram) = (member(VT, "anna"), member(LT, "sanne"), member(VT, "bram"));
        let mut case = Ownership::new(anna.clone());
        let consultant = |member: &MemberId, role, until_ms| Participant {
            member: member.clone(),
            role,
            until_ms,
            reason: "behavioural advice".into(),
        };
        let sanne_until = consultant(&sanne, ParticipantRole::Consultant, 10 * DAY_MS);
        assert_eq!(case.engage(&bram, sanne_until.clone(), 0), Err(HandoverError::NotOwner));
        assert_eq!(
            case.engage(&anna, consultant(&sanne, ParticipantRole::Consultant, 0), 0),
            Err(HandoverError::EndInPast)
        );
        let outside = consultant(&sanne, ParticipantRole::CoWorker, DAY_MS);
        assert_eq!(case.engage(&anna, outside, 0), Err(HandoverError::CoWorkerOutside));
        case.engage(&anna, sanne_until.clone(), 0).unwrap();
        case.engage(&anna, sanne_until, 0).unwrap();
        assert_eq!(case.participants.len(), 1, "engaging again with the same terms changes nothing");
        assert!(case.admitted_by_handover(&sanne) && !case.is_read_only(&sanne));
        let id = case.offer(&anna, false, request(LT, 5 * DAY_MS), 0).unwrap();
        assert_eq!(case.accept(&sanne, id), Err(HandoverError::Participant), "a consultant does not take the case");
        case.engage(&anna, consultant(&bram, ParticipantRole::CoWorker, 3 * DAY_MS), 0).unwrap();
        case.due(&Calendar::default(), 3 * DAY_MS);
        assert_eq!(case.left, vec![(bram.clone(), PARTICIPATION_ENDED.to_owned())]);
        assert!(case.is_read_only(&bram) && case.participant(&sanne).is_some());
        case.leave(&sanne, "advice given").unwrap();
        assert!(case.participants.is_empty() && case.is_read_only(&sanne));
    }

    #[test]
    fn co_workers_leave_with_regie_and_consultants_stay() {
        let (anna, bram, sanne, expert) =
            (member(VT, "anna"), member(VT, "bram"), member(LT, "sanne"), member(GI, "expert"));
        let mut case = Ownership::new(anna.clone());
        for (who, role) in [(&bram, ParticipantRole::CoWorker), (&expert, ParticipantRole::Consultant)] {
            let participant = Participant { member: who.clone(), role, until_ms: 60 * DAY_MS, reason: "team".into() };
            case.engage(&anna, participant, 0).unwrap();
        }
        let id = case.offer(&anna, false, request(LT, 5 * DAY_MS), 0).unwrap();
        case.accept(&sanne, id).unwrap();
        case.complete(&sanne, (id, FamilyTold::Yes), (DAY_MS, 30)).unwrap();
        assert_eq!(case.left, vec![(bram, REGIE_MOVED.to_owned())]);
        assert_eq!(case.participants.iter().map(|p| &p.member).collect::<Vec<_>>(), vec![&expert]);
    }

    #[test]
    fn a_closed_case_takes_no_new_step_and_reopens_only_within_its_period() {
        let (anna, sanne, petra) = (member(VT, "anna"), member(LT, "sanne"), member(VT, "petra"));
        let mut case = Ownership::new(anna.clone());
        let closing = ("safe-at-home", "the family is safe; support ended");
        let id = case.offer(&anna, false, request(LT, 5 * DAY_MS), 0).unwrap();
        assert_eq!(case.close(&anna, closing, 0, 30 * DAY_MS), Err(HandoverError::OfferOpen(id)));
        case.withdraw(&anna, id, "not needed").unwrap();
        case.schedule_rappel(0, 91).unwrap();
        assert_eq!(case.close(&sanne, closing, 0, 30 * DAY_MS), Err(HandoverError::NotOwner));
        case.close(&anna, closing, DAY_MS, 30 * DAY_MS).unwrap();
        case.close(&anna, closing, 2 * DAY_MS, 40 * DAY_MS).unwrap();
        assert_eq!(case.closures.len(), 1, "closing again changes nothing");
        assert!(case.clocks.iter().all(|c| c.done), "closing stops the clocks");
        assert_eq!(case.offer(&anna, false, request(LT, 9 * DAY_MS), 2 * DAY_MS), Err(HandoverError::Closed));
        assert_eq!(case.schedule_rappel(2 * DAY_MS, 91), Err(HandoverError::Closed));
        assert_eq!(case.reopen(&sanne, true, "new report", 3 * DAY_MS), Err(HandoverError::NotOwner));
        case.reopen(&petra, true, "a new report about the youngest", 3 * DAY_MS).unwrap();
        assert!(case.closed().is_none());
        case.offer(&anna, false, request(LT, 9 * DAY_MS), 3 * DAY_MS).unwrap();

        let mut later = Ownership::new(anna.clone());
        later.close(&anna, closing, 0, 10 * DAY_MS).unwrap();
        later.due(&Calendar::default(), 10 * DAY_MS);
        assert!(later.closed().is_some_and(|c| c.archived));
        assert_eq!(later.reopen(&anna, false, "too late", 10 * DAY_MS), Err(HandoverError::ReopenPeriodOver));
    }

    #[test]
    fn working_days_skip_weekends_and_holidays() {
        // 2026-11-23 is a Monday: day 20780.
        let monday = 20_780 * DAY_MS;
        let calendar = Calendar::default();
        // Five working days after Monday: Tuesday..Friday, then Monday; due at the end of that Monday.
        assert_eq!(calendar.after_working_days(monday, 5), (20_780 + 7 + 1) * DAY_MS);
        let with_holiday = Calendar { holidays: [20_781].into_iter().collect() };
        assert_eq!(with_holiday.after_working_days(monday, 5), (20_780 + 8 + 1) * DAY_MS);
    }

    #[test]
    fn measure_clocks_escalate_at_day_five_and_ten_and_at_the_safety_plan_date() {
        let calendar = Calendar::default();
        let monday = 20_780 * DAY_MS;
        let mut case = Ownership::new(member(GI, "daan"));
        case.start_clocks(&calendar, monday, (&MEASURE, 1));
        assert!(case.due(&calendar, monday + 7 * DAY_MS).is_empty());
        let day5 = case.due(&calendar, calendar.after_working_days(monday, 5));
        assert!(matches!(day5[..], [Escalation::Overdue { clock: ClockKind::FirstContact, escalation: 1, .. }]));
        let day10 = case.due(&calendar, calendar.after_working_days(monday, 10));
        assert!(matches!(day10[..], [Escalation::Overdue { clock: ClockKind::FirstContact, escalation: 2, .. }]));
        let plan = case.due(&calendar, monday + 100 * DAY_MS);
        assert!(matches!(plan[..], [Escalation::Overdue { clock: ClockKind::SafetyPlan, escalation: 1, .. }]));
        assert!(case.due(&calendar, monday + 200 * DAY_MS).is_empty());
    }

    #[test]
    fn a_cancelled_acceptance_stops_the_clocks_it_started_and_only_those() {
        let calendar = Calendar::default();
        let monday = 20_780 * DAY_MS;
        let (raad, daan, gi) = (member(VT, "raad"), member(GI, "daan"), member(GI, "eva"));
        let mut case = Ownership::new(raad.clone());
        let own = RouteClocks { safety_plan_days: Some(30), ..RouteClocks::default() };
        case.start_clocks(&calendar, monday, (&own, 99));
        let id = case.offer(&raad, false, request(GI, monday + 10 * DAY_MS), monday).unwrap();
        case.accept(&daan, id).unwrap();
        case.start_clocks(&calendar, monday, (&MEASURE, id));
        case.cancel(&gi, id, "x").unwrap_err();
        case.cancel(&daan, id, "wrong region").unwrap();
        let due = case.due(&calendar, monday + 100 * DAY_MS);
        assert_eq!(due.len(), 1, "only the owner's own clock is left: {due:?}");
        assert!(matches!(due[..], [Escalation::Overdue { clock: ClockKind::SafetyPlan, escalation: 1, .. }]));
    }

    #[test]
    fn a_route_declares_its_clocks_and_a_clock_escalates_again_only_when_declared() {
        let calendar = Calendar::default();
        let monday = 20_780 * DAY_MS;
        let mut case = Ownership::new(member(GI, "daan"));
        let once = RouteClocks { first_contact_days: Some(3), ..RouteClocks::default() };
        case.start_clocks(&calendar, monday, (&once, 1));
        assert_eq!(case.clocks.len(), 1, "no safety plan, no completion: the route declares none");
        let day3 = case.due(&calendar, calendar.after_working_days(monday, 3));
        assert!(matches!(day3[..], [Escalation::Overdue { clock: ClockKind::FirstContact, escalation: 1, .. }]));
        assert!(case.due(&calendar, monday + 60 * DAY_MS).is_empty(), "escalated once: no repeat declared");
    }

    /// One step of a random history.
    #[derive(Debug, Clone)]
    enum Step {
        Offer {
            by: usize,
            to: usize,
            worker: Option<usize>,
        },
        Accept {
            by: usize,
        },
        Decline {
            by: usize,
        },
        Complete {
            by: usize,
            told: bool,
        },
        Rappel,
        Measure {
            by: usize,
            from: i64,
            days: u64,
        },
        Evaluation {
            by: usize,
            days: u64,
        },
        Conference {
            invited: (usize, usize),
            days: u64,
        },
        Decide {
            by: usize,
            conference: u32,
            to: usize,
        },
        Done {
            clock: usize,
        },
        Withdraw {
            by: usize,
        },
        Cancel {
            by: usize,
        },
        TakeOver {
            by: usize,
        },
        Engage {
            member: usize,
            co_worker: bool,
            days: u64,
        },
        Leave {
            by: usize,
        },
        Close {
            by: usize,
        },
        Reopen {
            by: usize,
        },
        Time {
            days: u64,
        },
        /// The previous step sent again, as a client does when its reply was lost.
        Repeat,
    }

    fn people() -> Vec<MemberId> {
        ["00000001800000000001", "00000001800000000002", "00000001800000000004", "00000001800000000005"]
            .iter()
            .flat_map(|oin| ["a", "b"].map(|w| member(oin, w)))
            .collect()
    }

    /// In the random histories, worker `b` of every organisation leads a team.
    fn is_lead(member: &MemberId) -> bool {
        member.worker == "b"
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            (0..8usize, 0..4usize, proptest::option::of(0..2usize)).prop_map(|(by, to, worker)| Step::Offer {
                by,
                to,
                worker
            }),
            (0..8usize).prop_map(|by| Step::Accept { by }),
            (0..8usize).prop_map(|by| Step::Decline { by }),
            (0..8usize, any::<bool>()).prop_map(|(by, told)| Step::Complete { by, told }),
            Just(Step::Rappel),
            (0..8usize, -3..3i64, 0..200u64).prop_map(|(by, from, days)| Step::Measure { by, from, days }),
            (0..8usize, 0..40u64).prop_map(|(by, days)| Step::Evaluation { by, days }),
            (0..8usize, 0..8usize, 0..6u64).prop_map(|(a, b, days)| Step::Conference { invited: (a, b), days }),
            (0..8usize, 1..3u32, 0..4usize).prop_map(|(by, conference, to)| Step::Decide { by, conference, to }),
            (0..6usize).prop_map(|clock| Step::Done { clock }),
            (0..8usize).prop_map(|by| Step::Withdraw { by }),
            (0..8usize).prop_map(|by| Step::Cancel { by }),
            (0..8usize).prop_map(|by| Step::TakeOver { by }),
            (0..8usize, any::<bool>(), 0..8u64).prop_map(|(member, co_worker, days)| Step::Engage {
                member,
                co_worker,
                days
            }),
            (0..8usize).prop_map(|by| Step::Leave { by }),
            (0..8usize).prop_map(|by| Step::Close { by }),
            (0..8usize).prop_map(|by| Step::Reopen { by }),
            (0..6u64).prop_map(|days| Step::Time { days }),
            Just(Step::Repeat),
            Just(Step::Repeat),
        ]
    }

    /// Takes `step` (not `Repeat`) on `case` at `now`, on offer `open`.
    fn take(
        case: &mut Ownership,
        step: &Step,
        open: u32,
        now: &mut u64,
        people: &[MemberId],
        orgs: &[Oin],
    ) -> Result<(), HandoverError> {
        let calendar = Calendar::default();
        match step {
            Step::Offer { by, to, worker } => {
                let mut req = request(orgs[*to].as_str(), *now + 3 * DAY_MS);
                req.to_worker = worker.map(|w| ["a", "b"][w].to_owned());
                case.offer(&people[*by], is_lead(&people[*by]), req, *now).map(|_| ())
            }
            Step::Accept { by } => {
                let before = case.clone();
                let result = case.accept(&people[*by], open);
                // As the hub does: a repeated acceptance starts no second clock.
                if result.is_ok() && *case != before {
                    let clocks = RouteClocks { completion_days: Some(10), ..RouteClocks::default() };
                    case.start_clocks(&calendar, *now, (&clocks, open));
                }
                result
            }
            Step::Withdraw { by } => case.withdraw(&people[*by], open, "no longer needed"),
            Step::Cancel { by } => case.cancel(&people[*by], open, "family moved").map(|_| ()),
            Step::TakeOver { by } => case.take_over(&people[*by], is_lead(&people[*by]), "owner is sick", (*now, 30)),
            Step::Engage { member, co_worker, days } => {
                let role = if *co_worker { ParticipantRole::CoWorker } else { ParticipantRole::Consultant };
                let until_ms = *now + days * DAY_MS;
                let participant =
                    Participant { member: people[*member].clone(), role, until_ms, reason: "advice".into() };
                let owner = case.owner.clone();
                case.engage(&owner, participant, *now)
            }
            Step::Leave { by } => case.leave(&people[*by], "done here"),
            Step::Close { by } => case.close(&people[*by], ("safe", "the family is safe"), *now, *now + 10 * DAY_MS),
            Step::Reopen { by } => case.reopen(&people[*by], is_lead(&people[*by]), "a new report", *now),
            Step::Decline { by } => case.decline(&people[*by], open, "not our region"),
            Step::Complete { by, told } => {
                let family = if *told { FamilyTold::Yes } else { FamilyTold::No { reason: "not reached".into() } };
                case.complete(&people[*by], (open, family), (*now, 30))
            }
            Step::Rappel => case.schedule_rappel(*now, 91),
            Step::Measure { by, from, days } => {
                let start_ms = now.saturating_add_signed(from * 30 * DAY_MS as i64);
                let measure = Measure { start_ms, end_ms: start_ms + days * DAY_MS };
                case.set_measure(&people[*by], measure, (*now, 56))
            }
            Step::Evaluation { by, days } => case.schedule_evaluation(&people[*by], *now + days * DAY_MS, *now),
            Step::Conference { invited: (a, b), days } => {
                let invited: Vec<Invitation> = [a, b]
                    .iter()
                    .map(|i| Invitation { member: people[**i].clone(), reason: "at the table".into() })
                    .collect();
                let owner = case.owner.clone();
                case.call_conference(&owner, ("safety at home", *now + days * DAY_MS, &invited), *now).map(drop)
            }
            Step::Decide { by, conference, to } => {
                let decision = RegieDecision { regie_with: orgs[*to].clone(), reason: "the table decided".into() };
                case.decide(&people[*by], *conference, decision)
            }
            Step::Done { clock } => case.report_done(ClockKind::ALL[*clock], None),
            Step::Time { days } => {
                *now += days * DAY_MS;
                case.due(&calendar, *now);
                Ok(())
            }
            Step::Repeat => unreachable!("a repeat names the step it repeats"),
        }
    }

    proptest! {
        /// Whatever happens, in whatever order: one owner at every moment; it
        /// changes only by completing an accepted offer, to the one who accepted it.
        #[test]
        fn a_case_always_has_exactly_one_owner(steps in proptest::collection::vec(step(), 1..60)) {
            let people = people();
            let orgs: Vec<Oin> = people.iter().step_by(2).map(|m| m.oin.clone()).collect();
            let mut case = Ownership::new(people[0].clone());
            let mut now = 20_780 * DAY_MS;
            // The last step taken, with the offer it named, while nothing else happened since.
            let mut last: Option<(Step, u32)> = None;
            for step in steps {
                let before = case.clone();
                if let Step::Repeat = step {
                    // Taken again, a step that succeeded changes nothing and succeeds again.
                    if let Some((previous, open)) = &last {
                        let again = take(&mut case, previous, *open, &mut now, &people, &orgs);
                        prop_assert_eq!(again, Ok(()), "a repeated {:?} was refused", previous);
                        prop_assert_eq!(&case, &before, "a repeated {:?} changed the case", previous);
                    }
                    continue;
                }
                let open = case.open_offer().map(|o| o.id).unwrap_or(1);
                let result = take(&mut case, &step, open, &mut now, &people, &orgs);
                last = match (&result, &step) {
                    (Ok(()), Step::Time { .. }) | (Err(_), _) => None,
                    (Ok(()), _) => Some((step.clone(), open)),
                };
                if result.is_err() {
                    prop_assert_eq!(&case, &before, "a refused step changed the case");
                }
                prop_assert!(case.offers.iter().filter(|o| o.state.is_open()).count() <= 1);
                for decided in before.conferences.iter().filter(|c| c.decision.is_some()) {
                    prop_assert_eq!(&case.conferences[decided.id as usize - 1].decision, &decided.decision, "a decision changed");
                }
                if let (Step::Conference { .. }, Ok(()), true) = (&step, &result, case.conferences.len() > before.conferences.len()) {
                    let called = case.conferences.last().expect("just called");
                    for invited in &called.invited {
                        let taking_part = case.participant(&invited.member);
                        prop_assert_eq!(taking_part.map(|p| p.until_ms), Some(called.until_ms), "an invitee not at the table");
                    }
                }
                let renewals = case.clocks.iter().filter(|c| c.kind == ClockKind::Renewal && !c.done).count();
                prop_assert!(renewals <= 1, "two renewal clocks run");
                if let Some(m) = case.measure.filter(|m| Some(*m) != before.measure) {
                    prop_assert!(m.end_ms > m.start_ms && m.end_ms > now, "a measure that ends before it starts, or in the past");
                    prop_assert_eq!(renewals, 1, "a registered measure without its renewal clock");
                }
                if matches!(step, Step::Evaluation { .. }) && result.is_ok() && case != before {
                    prop_assert!(case.clocks.last().is_some_and(|c| c.kind == ClockKind::Evaluation && c.due_ms > now));
                }
                prop_assert!(!case.is_read_only(&case.owner), "the owner is read-only");
                if case.owner != before.owner {
                    let completed = case.offers.iter().any(|o| matches!(&o.state,
                        OfferState::Completed { by, .. } if by == &case.owner)
                        && before.offers.iter().any(|b| b.id == o.id && matches!(&b.state,
                            OfferState::Accepted { by } if by == &case.owner)));
                    let taken = matches!(step, Step::TakeOver { .. })
                        && is_lead(&case.owner) && case.owner.oin == before.owner.oin;
                    prop_assert!(completed || taken, "ownership moved without a completed handover: {:?}", step);
                    prop_assert!(case.background.iter().any(|b| b.member == before.owner));
                }
                for offer in &case.offers {
                    if let OfferState::Accepted { by } | OfferState::Completed { by, .. } = &offer.state {
                        prop_assert_eq!(&by.oin, &offer.to, "someone outside the receiving organisation answered");
                    }
                    if offer.to == offer.from.oin {
                        prop_assert!(offer.to_worker.is_some(), "a reassignment that names no colleague");
                    }
                    let was_accepted = before.offers.iter().any(|b| b.id == offer.id && b.state.name() == "accepted");
                    if let OfferState::Cancelled { receiver, .. } = &offer.state {
                        let gone = case.left.iter().any(|(m, _)| m == receiver) || receiver == &case.owner;
                        prop_assert!(gone || !was_accepted, "a cancelled receiver stayed on the case");
                    }
                }
                for (i, p) in case.participants.iter().enumerate() {
                    prop_assert!(p.member != case.owner, "the owner is also a participant");
                    prop_assert!(case.has_served_as(&p.member, p.role), "a participation left no trace in `served`");
                    prop_assert!(!case.is_read_only(&p.member), "a participant is read-only");
                    prop_assert!(p.until_ms > now, "a participation outlived its end date");
                    prop_assert!(case.participants[..i].iter().all(|q| q.member != p.member), "a participant twice");
                    if p.role == ParticipantRole::CoWorker {
                        prop_assert_eq!(&p.member.oin, &case.owner.oin, "a co-worker outside the owner's organisation");
                    }
                    let receiving = case.offers.iter().any(|o| matches!(&o.state, OfferState::Accepted { by } if by == &p.member));
                    prop_assert!(!receiving, "a participant received the case");
                }
                // An accepted offer is the only thing a completion clock waits for.
                let accepted = case.offers.iter().any(|o| matches!(o.state, OfferState::Accepted { .. }));
                let running = case.clocks.iter().any(|c| c.kind == ClockKind::Completion && !c.done);
                prop_assert!(!running || accepted, "a completion clock runs with no accepted offer");
                if let Some(closure) = case.closed() {
                    prop_assert!(case.open_offer().is_none(), "a closed case has an open offer");
                    prop_assert!(case.clocks.iter().all(|c| c.done), "a clock runs on a closed case");
                    prop_assert_eq!(closure.archived, closure.reopen_until_ms <= now, "archived at the wrong time");
                }
                if matches!(step, Step::Reopen { .. }) && before.closed().is_some() && case.closed().is_none() {
                    let closure = before.closed().unwrap();
                    prop_assert!(!closure.archived && now < closure.reopen_until_ms, "reopened after its period");
                }
            }
        }
    }
}
