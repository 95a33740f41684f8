//! Consent, information and review per person: what each family member agreed to, was told and saw.
//!
//! The chain's own reviews found the family handled as one block: a consent form from both parents at
//! every agency ("werkt vertragend"), a mother told a day after a decision, drafts never shown to the
//! client. Version 2 of the packet therefore records, per family member:
//!
//! - a [`Consent`]: who agreed to which sharing (recipient organisations or kinds of agency, purpose),
//!   when, until when, and a withdrawal. It is written once and travels with the case, so the next
//!   handover refers to the same record instead of asking for a new form; the packet's
//!   [`LawfulBasis::consents`](super::LawfulBasis::consents) names the records it relies on;
//! - an [`Informed`] record per decision: who was told what, when and by whom, or why not;
//! - the family's [`FamilyReview`] of the packet itself: shown to whom, when, and their response.
//!
//! Who must consent follows the ages of the WGBO (Burgerlijk Wetboek 7:450 and 7:465): for a child
//! under 12 the holders of gezag decide; from 12 to 15 the child and the holders of gezag both; from 16
//! the young person alone. A holder whose gezag is not yet established is asked too, since nobody may
//! assume they have no say. Who must be informed is wider: every parent, also one without gezag, keeps
//! a right to information (Burgerlijk Wetboek 1:377c), and the packet's own rule is that informing one
//! parent never waits for the other's consent.

use serde::{Deserialize, Serialize};
use wire::{AgencyKind, Oin};

use super::{Checker, Date, FamilyMember, Gezag, HandoverPacket, Party, Problem};

/// The age from which a child consents beside the holders of gezag.
pub const OWN_SAY_AGE: u16 = 12;

/// The age from which a young person consents alone.
pub const ALONE_AGE: u16 = 16;

/// One family member's consent to sharing, reusable across the case's handovers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Consent {
    /// An id local to the case's packets (`c1`), by which a lawful basis refers to it.
    pub id: String,
    /// The family member who consented, by their id in [`HandoverPacket::family`].
    pub member: String,
    /// To whom the family member agreed the case may be handed: named organisations or kinds of agency.
    pub recipients: Vec<Recipient>,
    /// What for, in the words used with the family ("hulp bij opvoeden na het onderzoek").
    pub purpose: String,
    /// The day it was given.
    pub given_on: Date,
    /// Who recorded it: the organisation and role address, never a worker's personal details.
    pub recorded_by: String,
    /// The last day it holds, if the family member limited it.
    pub until: Option<Date>,
    /// The day the family member withdrew it; from that day it covers nothing.
    pub withdrawn_on: Option<Date>,
}

/// A recipient a consent names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Recipient {
    /// One organisation, by its OIN.
    Organisation(Oin),
    /// Every organisation of a kind in the region ("het lokaal team", "de gecertificeerde instelling").
    Kind(AgencyKind),
}

impl std::str::FromStr for Recipient {
    type Err = Problem;

    /// An OIN (20 digits) or a kind of agency's code (`LT`, `GI`), as a form or a case system writes it.
    fn from_str(text: &str) -> Result<Self, Problem> {
        let refused = || Problem::NotARecipient { value: text.to_owned() };
        if text.bytes().all(|b| b.is_ascii_digit()) {
            text.parse().map(Recipient::Organisation).map_err(|_| refused())
        } else {
            text.parse().map(Recipient::Kind).map_err(|_| refused())
        }
    }
}

impl std::fmt::Display for Recipient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Organisation(oin) => write!(f, "{oin}"),
            Self::Kind(kind) => write!(f, "{kind}"),
        }
    }
}

impl Consent {
    /// Whether the consent is in force on `today`: given, not expired, not withdrawn.
    pub fn in_force(&self, today: Date) -> bool {
        self.given_on <= today
            && self.until.is_none_or(|until| today <= until)
            && self.withdrawn_on.is_none_or(|withdrawn| today < withdrawn)
    }

    /// Whether it names the receiving organisation, by its OIN or its kind.
    pub fn covers(&self, receiver: &Party) -> bool {
        self.recipients.iter().any(|r| match r {
            Recipient::Organisation(oin) => *oin == receiver.organisation.oin,
            Recipient::Kind(kind) => *kind == receiver.organisation.kind,
        })
    }
}

/// What one family member was told about one decision, or why they were not.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Informed {
    /// The family member, by their id in [`HandoverPacket::family`].
    pub member: String,
    /// The decision ("overdracht aan het lokaal team", "verzoek tot onderzoek aan de Raad").
    pub decision: String,
    /// Whether and how they were told.
    pub outcome: Told,
}

impl Informed {
    /// Whether every field that must say something does.
    pub fn is_complete(&self) -> bool {
        let filled = |text: &str| !text.trim().is_empty();
        filled(&self.member)
            && filled(&self.decision)
            && match &self.outcome {
                Told::Told { by, what, .. } => filled(by) && filled(what),
                Told::NotTold { reason } => filled(reason),
            }
    }
}

/// Whether a family member was told about a decision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Told {
    /// Told on a day, by someone, with what they were told.
    Told {
        /// The day.
        on: Date,
        /// Who told them: a role ("jeugdbeschermer, SAVE"), never a worker's personal details.
        by: String,
        /// What they were told, in a sentence.
        what: String,
    },
    /// Not told, and why (a parent who cannot be reached; telling would endanger a child).
    NotTold {
        /// Why not.
        reason: String,
    },
}

impl Told {
    /// Whether the member was told.
    pub fn was_told(&self) -> bool {
        matches!(self, Self::Told { .. })
    }
}

/// Whether the family saw this packet before it was sent: drafts were found never shown to the client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum FamilyReview {
    /// Shown to the members named, on a day, with their response.
    Shown {
        /// Who saw it, by their ids in [`HandoverPacket::family`].
        to: Vec<String>,
        /// The day.
        on: Date,
        /// What they said about it ("geen opmerkingen", or their corrections).
        response: String,
    },
    /// Not shown, and why.
    NotShown {
        /// Why not.
        reason: String,
    },
}

impl HandoverPacket {
    /// The family members whose consent a `consent` basis needs on `today` (see the module's text).
    ///
    /// Only the birth year is known, so a child is somewhere between two ages; each rule takes the side
    /// that asks more consent: a child has its own say from the year it may have turned 12, and decides
    /// alone only once it has surely turned 16.
    pub fn consent_needed(&self, today: Date) -> Vec<&FamilyMember> {
        let oldest = |m: &FamilyMember| m.birth_year.map(|year| today.year().saturating_sub(year));
        let youngest = |m: &FamilyMember| oldest(m).map(|age| age.saturating_sub(1));
        let concerned = || self.family.iter().filter(|m| m.role.is_child() && self.concerns(m));
        // A child whose age is not known is treated as a young child: its parents decide.
        let parents_decide = concerned().any(|child| youngest(child).is_none_or(|age| age < ALONE_AGE));
        let holders = self
            .family
            .iter()
            .filter(|m| parents_decide && !m.role.is_child() && matches!(m.gezag, Gezag::Yes | Gezag::Unknown));
        let own_say = concerned().filter(|child| oldest(child).is_some_and(|age| age >= OWN_SAY_AGE));
        holders.chain(own_say).collect()
    }

    /// Whether the handover concerns `member`: it says so, or the analysis names it (a risk or protective
    /// factor about a child is about that child, whatever its flag says).
    pub fn concerns(&self, member: &FamilyMember) -> bool {
        let named = |assessment: &super::Assessment| match assessment {
            super::Assessment::Assessed(factors) => factors.iter().any(|f| f.members.contains(&member.id)),
            super::Assessment::NotAssessed { .. } => false,
        };
        member.concerned || named(&self.risks) || named(&self.protective_factors)
    }

    /// The family members who must be informed of the handover: everyone who consents, and every parent.
    pub fn inform_needed(&self, today: Date) -> Vec<&FamilyMember> {
        let mut needed = self.consent_needed(today);
        for parent in self.family.iter().filter(|m| matches!(m.role, super::FamilyRole::Parent)) {
            if !needed.iter().any(|m| m.id == parent.id) {
                needed.push(parent);
            }
        }
        needed
    }
}

impl Checker {
    /// The consent records on their own: well formed, about a member of the family, dates in order.
    pub(super) fn consents(&mut self, consents: &[Consent], ids: &std::collections::HashSet<&str>, today: Date) {
        let mut seen = std::collections::HashSet::new();
        for (i, consent) in consents.iter().enumerate() {
            let path = format!("consents[{i}]");
            if self.local_id(&format!("{path}.id"), &consent.id) && !seen.insert(consent.id.as_str()) {
                self.fail(format!("{path}.id"), Problem::DuplicateId { value: consent.id.clone() });
            }
            self.member(&format!("{path}.member"), &consent.member, ids);
            if consent.recipients.is_empty() {
                self.fail(format!("{path}.recipients"), Problem::NoRecipients);
            }
            self.text(format!("{path}.purpose"), &consent.purpose);
            self.text(format!("{path}.recorded_by"), &consent.recorded_by);
            self.not_after(format!("{path}.given_on"), consent.given_on, today);
            if let Some(until) = consent.until.filter(|until| *until < consent.given_on) {
                let (until, from) = (until.to_string(), consent.given_on.to_string());
                self.fail(format!("{path}.until"), Problem::UntilBeforeFrom { until, from });
            }
            if let Some(withdrawn) = consent.withdrawn_on {
                if withdrawn < consent.given_on {
                    let (until, from) = (withdrawn.to_string(), consent.given_on.to_string());
                    self.fail(format!("{path}.withdrawn_on"), Problem::UntilBeforeFrom { until, from });
                } else {
                    self.not_after(format!("{path}.withdrawn_on"), withdrawn, today);
                }
            }
        }
    }

    /// The consents a lawful basis names: each exists, holds today and names the receiver; and a
    /// `consent` basis names one for everyone whose consent it needs.
    pub(super) fn consent_basis(&mut self, packet: &HandoverPacket, today: Date) {
        let mut covered = Vec::new();
        for (j, id) in packet.lawful_basis.consents.iter().enumerate() {
            let path = format!("lawful_basis.consents[{j}]");
            let Some(consent) = packet.consents.iter().find(|c| c.id == *id) else {
                self.fail(path, Problem::NoSuchConsent { id: id.clone() });
                continue;
            };
            if let Some(on) = consent.withdrawn_on.filter(|on| *on <= today) {
                self.fail(path, Problem::ConsentWithdrawn { on: on.to_string() });
            } else if !consent.in_force(today) {
                let until = consent.until.map(|d| d.to_string()).unwrap_or_default();
                self.fail(path, Problem::ConsentNotInForce { from: consent.given_on.to_string(), until });
            } else if !consent.covers(&packet.receiver) {
                self.fail(path, Problem::ConsentNotForReceiver);
            } else {
                covered.push(consent.member.as_str());
            }
        }
        if packet.lawful_basis.is_consent() {
            for member in packet.consent_needed(today) {
                if !covered.contains(&member.id.as_str()) {
                    let problem = Problem::ConsentMissing { member: member.id.clone(), name: member.name.clone() };
                    self.fail("lawful_basis.consents", problem);
                }
            }
        }
    }

    /// The information records: about members of the family, each complete, and one for everyone who
    /// must be informed; a family that was present or informed has at least one member who was told.
    pub(super) fn informed(&mut self, packet: &HandoverPacket, ids: &std::collections::HashSet<&str>, today: Date) {
        for (i, record) in packet.informed.iter().enumerate() {
            let path = format!("informed[{i}]");
            self.member(&format!("{path}.member"), &record.member, ids);
            self.text(format!("{path}.decision"), &record.decision);
            match &record.outcome {
                Told::Told { on, by, what } => {
                    self.not_after(format!("{path}.outcome.told.on"), *on, today);
                    self.text(format!("{path}.outcome.told.by"), by);
                    self.text(format!("{path}.outcome.told.what"), what);
                }
                Told::NotTold { reason } => self.text(format!("{path}.outcome.not_told.reason"), reason),
            }
        }
        for member in packet.inform_needed(today) {
            if !packet.informed.iter().any(|r| r.member == member.id) {
                let problem = Problem::InformedMissing { member: member.id.clone(), name: member.name.clone() };
                self.fail("informed", problem);
            }
        }
        let involved = !matches!(packet.family_involvement, super::FamilyInvolvement::NotInformed { .. });
        if involved && !packet.informed.iter().any(|r| r.outcome.was_told()) {
            self.fail("informed", Problem::NobodyTold);
        }
    }

    /// The family's review of the packet: recorded, and complete.
    pub(super) fn review(&mut self, review: Option<&FamilyReview>, ids: &std::collections::HashSet<&str>, today: Date) {
        match review {
            None => self.fail("family_review", Problem::ReviewMissing),
            Some(FamilyReview::Shown { to, on, response }) => {
                if to.is_empty() {
                    self.fail("family_review.shown.to", Problem::Empty);
                }
                for (i, member) in to.iter().enumerate() {
                    self.member(&format!("family_review.shown.to[{i}]"), member, ids);
                }
                self.not_after("family_review.shown.on", *on, today);
                self.text("family_review.shown.response", response);
            }
            Some(FamilyReview::NotShown { reason }) => self.text("family_review.not_shown.reason", reason),
        }
    }

    fn member(&mut self, path: &str, member: &str, ids: &std::collections::HashSet<&str>) {
        if !ids.contains(member) {
            self.fail(path, Problem::NotInFamily { member: member.to_owned() });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::FamilyInvolvement;

    fn today() -> Date {
        Date::new(2026, 3, 16).unwrap()
    }

    fn problems(packet: &HandoverPacket) -> Vec<(String, String)> {
        match packet.validate(today()) {
            Ok(()) => Vec::new(),
            Err(errors) => errors.0.into_iter().map(|e| (e.path, e.problem.code())).collect(),
        }
    }

    type Mutation = fn(&mut HandoverPacket);

    /// Each rule of version 2 alone, with the path and the kind of problem it reports.
    #[test]
    fn each_consent_information_and_review_rule_has_a_failing_case() {
        let cases: Vec<(Mutation, Vec<(&str, &str)>)> = vec![
            (|p| p.lawful_basis.consents.clear(), vec![("lawful_basis.consents", "consent_missing"); 2]),
            (
                |p| p.consents[0].withdrawn_on = Some(today().add_days(-1)),
                vec![("lawful_basis.consents[0]", "consent_withdrawn"), ("lawful_basis.consents", "consent_missing")],
            ),
            (
                |p| p.consents[0].withdrawn_on = Some(today().add_days(1)),
                vec![("consents[0].withdrawn_on", "after_today")],
            ),
            (
                |p| p.consents[0].withdrawn_on = Some(today().add_days(-11)),
                vec![
                    ("consents[0].withdrawn_on", "until_before_from"),
                    ("lawful_basis.consents[0]", "consent_withdrawn"),
                    ("lawful_basis.consents", "consent_missing"),
                ],
            ),
            (
                |p| p.consents[1].until = Some(today().add_days(-1)),
                vec![
                    ("lawful_basis.consents[1]", "consent_not_in_force"),
                    ("lawful_basis.consents", "consent_missing"),
                ],
            ),
            (
                |p| p.consents[1].until = Some(today().add_days(-20)),
                vec![
                    ("consents[1].until", "until_before_from"),
                    ("lawful_basis.consents[1]", "consent_not_in_force"),
                    ("lawful_basis.consents", "consent_missing"),
                ],
            ),
            (
                |p| p.consents[0].given_on = today().add_days(1),
                vec![
                    ("consents[0].given_on", "after_today"),
                    ("lawful_basis.consents[0]", "consent_not_in_force"),
                    ("lawful_basis.consents", "consent_missing"),
                ],
            ),
            (
                |p| p.consents[1].recipients = vec![Recipient::Kind(AgencyKind::GI)],
                vec![
                    ("lawful_basis.consents[1]", "consent_not_for_receiver"),
                    ("lawful_basis.consents", "consent_missing"),
                ],
            ),
            (
                |p| p.consents[0].recipients.clear(),
                vec![
                    ("consents[0].recipients", "no_recipients"),
                    ("lawful_basis.consents[0]", "consent_not_for_receiver"),
                    ("lawful_basis.consents", "consent_missing"),
                ],
            ),
            (|p| p.lawful_basis.consents.push("c9".into()), vec![("lawful_basis.consents[2]", "no_such_consent")]),
            (
                |p| p.consents[1].id = "c1".into(),
                vec![
                    ("consents[1].id", "duplicate_id"),
                    ("lawful_basis.consents[1]", "no_such_consent"),
                    ("lawful_basis.consents", "consent_missing"),
                ],
            ),
            (
                |p| p.consents[1].id = "123456782".into(),
                vec![
                    ("consents[1].id", "looks_like_bsn"),
                    ("lawful_basis.consents[1]", "no_such_consent"),
                    ("lawful_basis.consents", "consent_missing"),
                ],
            ),
            (
                |p| p.consents[0].member = "k9".into(),
                vec![("consents[0].member", "not_in_family"), ("lawful_basis.consents", "consent_missing")],
            ),
            (|p| p.consents[0].purpose = " ".into(), vec![("consents[0].purpose", "empty")]),
            (|p| p.consents[0].recorded_by = String::new(), vec![("consents[0].recorded_by", "empty")]),
            // A father who holds gezag too must consent too; one without it is only informed.
            (|p| p.family[1].gezag = Gezag::Yes, vec![("lawful_basis.consents", "consent_missing")]),
            (|p| p.family[1].gezag = Gezag::Unknown, vec![("lawful_basis.consents", "consent_missing")]),
            // A sibling the handover does not concern needs no consent of her own.
            (
                |p| {
                    p.family[4].concerned = false;
                    p.consents.truncate(1);
                    p.lawful_basis.consents.truncate(1);
                },
                vec![],
            ),
            // Flagging the young children as not concerned does not drop the mother's consent while the
            // analysis is about them: Sem is named in a risk.
            (
                |p| {
                    let year = today().year();
                    p.family[2].concerned = false;
                    p.family[3].concerned = false;
                    p.family[4].birth_year = Some(year - 17);
                    p.lawful_basis.consents = vec!["c2".into()];
                },
                vec![("lawful_basis.consents", "consent_missing")],
            ),
            (
                |p| p.family.iter_mut().filter(|m| m.role.is_child()).for_each(|m| m.concerned = false),
                vec![("family", "no_concerned_child")],
            ),
            // Sharing on another basis relies on no consent.
            (
                |p| {
                    p.lawful_basis.code = "vt-safety".into();
                    p.lawful_basis.justification = Some("Acute zorg om de veiligheid van de kinderen.".into());
                    p.lawful_basis.consents.clear();
                },
                vec![],
            ),
            (
                |p| {
                    p.informed.remove(1);
                },
                vec![("informed", "informed_missing")],
            ),
            (
                |p| {
                    p.informed.remove(3);
                },
                vec![],
            ),
            (
                |p| p.informed[0].member = "k9".into(),
                vec![("informed[0].member", "not_in_family"), ("informed", "informed_missing")],
            ),
            (|p| p.informed[0].decision = String::new(), vec![("informed[0].decision", "empty")]),
            (
                |p| p.informed[0].outcome = Told::NotTold { reason: " ".into() },
                vec![("informed[0].outcome.not_told.reason", "empty")],
            ),
            (
                |p| {
                    if let Told::Told { on, by, what } = &mut p.informed[0].outcome {
                        *on = today().add_days(1);
                        by.clear();
                        what.clear();
                    }
                },
                vec![
                    ("informed[0].outcome.told.on", "after_today"),
                    ("informed[0].outcome.told.by", "empty"),
                    ("informed[0].outcome.told.what", "empty"),
                ],
            ),
            (
                |p| {
                    for record in &mut p.informed {
                        record.outcome = Told::NotTold { reason: "Niet bereikt".into() };
                    }
                },
                vec![("informed", "nobody_told")],
            ),
            (
                |p| {
                    for record in &mut p.informed {
                        record.outcome = Told::NotTold { reason: "Niet bereikt".into() };
                    }
                    p.family_involvement = FamilyInvolvement::NotInformed { reason: "Niet bereikt".into() };
                },
                vec![],
            ),
            (|p| p.family_review = None, vec![("family_review", "review_missing")]),
            (
                |p| p.family_review = Some(FamilyReview::NotShown { reason: String::new() }),
                vec![("family_review.not_shown.reason", "empty")],
            ),
            (|p| p.family_review = Some(FamilyReview::NotShown { reason: "Spoed: geen tijd".into() }), vec![]),
            (
                |p| {
                    p.family_review =
                        Some(FamilyReview::Shown { to: vec![], on: today().add_days(1), response: String::new() })
                },
                vec![
                    ("family_review.shown.to", "empty"),
                    ("family_review.shown.on", "after_today"),
                    ("family_review.shown.response", "empty"),
                ],
            ),
            (
                |p| {
                    p.family_review =
                        Some(FamilyReview::Shown { to: vec!["x".into()], on: today(), response: "ok".into() })
                },
                vec![("family_review.shown.to[0]", "not_in_family")],
            ),
        ];
        for (i, (mutate, expected)) in cases.into_iter().enumerate() {
            let mut packet = HandoverPacket::example(today());
            mutate(&mut packet);
            let found: Vec<(String, String)> = problems(&packet);
            let expected: Vec<(String, String)> =
                expected.into_iter().map(|(path, code)| (path.to_owned(), code.to_owned())).collect();
            assert_eq!(found, expected, "case {i}");
        }
    }

    #[test]
    fn a_missing_consent_names_who_is_missing() {
        let mut packet = HandoverPacket::example(today());
        packet.lawful_basis.consents = vec!["c1".into()];
        let errors = packet.validate(today()).unwrap_err();
        assert_eq!(
            errors.0,
            [crate::packet::FieldError::new(
                "lawful_basis.consents",
                Problem::ConsentMissing { member: "k3".into(), name: "Lotte de Vries".into() }
            )]
        );
        assert_eq!(
            errors.to_string(),
            "lawful_basis.consents: has no consent in force for this receiver from Lotte de Vries (k3)"
        );
    }

    #[test]
    fn who_must_consent_follows_the_ages() {
        let ids = |packet: &HandoverPacket| -> Vec<String> {
            packet.consent_needed(today()).iter().map(|m| m.id.clone()).collect()
        };
        let mut packet = HandoverPacket::example(today());
        // Sem 9, Noor 6, Lotte 14: the mother with gezag, and Lotte beside her.
        assert_eq!(ids(&packet), ["p1", "k3"]);
        let year = today().year();
        for child in packet.family.iter_mut().filter(|m| m.role.is_child()) {
            child.birth_year = Some(year - ALONE_AGE);
        }
        // Born 16 years ago, they may still be 15: the mother decides with them.
        assert_eq!(ids(&packet), ["p1", "k1", "k2", "k3"]);
        for child in packet.family.iter_mut().filter(|m| m.role.is_child()) {
            child.birth_year = Some(year - ALONE_AGE - 1);
        }
        // Surely 16, the young people consent alone.
        assert_eq!(ids(&packet), ["k1", "k2", "k3"]);
        packet.family[2].birth_year = None;
        packet.family[2].concerned = false;
        // Sem's flag says the handover is not about him, but a risk names him: it is, and his mother decides.
        // A child whose age is not known is treated as young: the mother decides for it.
        assert_eq!(ids(&packet), ["p1", "k2", "k3"]);
        // Everyone is informed who consents, and every parent, with gezag or without.
        let informed: Vec<&str> = packet.inform_needed(today()).iter().map(|m| m.id.as_str()).collect();
        assert_eq!(informed, ["p1", "k2", "k3", "p2"]);
    }

    #[test]
    fn a_consent_holds_from_its_day_until_its_end_or_withdrawal() {
        let packet = HandoverPacket::example(today());
        let mut consent = packet.consents[1].clone();
        assert!(consent.in_force(today()) && consent.covers(&packet.receiver));
        assert!(!consent.in_force(consent.given_on.add_days(-1)));
        assert!(consent.in_force(consent.until.unwrap()));
        assert!(!consent.in_force(consent.until.unwrap().add_days(1)));
        consent.withdrawn_on = Some(today());
        assert!(!consent.in_force(today()) && consent.in_force(today().add_days(-1)));
        assert!(!consent.covers(&packet.sender), "names the local team only");
        assert_eq!("LT".parse::<Recipient>(), Ok(Recipient::Kind(AgencyKind::LT)));
        assert_eq!(
            "00000001800000000002".parse::<Recipient>(),
            Ok(Recipient::Organisation(packet.receiver.organisation.oin.clone()))
        );
        assert_eq!("lokaal team".parse::<Recipient>(), Err(Problem::NotARecipient { value: "lokaal team".into() }));
        assert!("0000000180000000000".parse::<Recipient>().is_err());
    }

    /// A version 1 packet, as the SDK wrote it before version 2, reads in JSON and in a thread's CBOR.
    #[test]
    fn a_version_1_packet_reads_with_no_records_and_every_member_concerned() {
        let v1 = include_str!("../../tests/fixtures/packet-v1.json");
        let read = HandoverPacket::from_json(v1).unwrap();
        assert_eq!(read.version, 1);
        assert!(read.consents.is_empty() && read.informed.is_empty() && read.family_review.is_none());
        assert!(read.lawful_basis.consents.is_empty());
        assert!(read.family.iter().all(|m| m.concerned));
        let v2 = HandoverPacket::example(today());
        assert_eq!((read.statements, read.plan, read.contact), (v2.statements, v2.plan, v2.contact));
        assert_eq!(read.family.len(), 4);

        let mut tagged: serde_json::Value = serde_json::from_str(v1).unwrap();
        tagged["kind"] = "handover_packet".into();
        let content = crate::Content::decode(&wire::encode(&tagged)).unwrap();
        let crate::Content::HandoverPacket(packet) = content else { panic!("a packet") };
        assert_eq!(packet.version, 1);
        assert_eq!(*packet, HandoverPacket::from_json(v1).unwrap());

        // Validation is the check before sending: a version 1 packet is not sent any more.
        let errors = packet.validate(today()).unwrap_err();
        assert_eq!(errors.0[0].path, "version");
    }
}
