//! The handover packet: what one agency hands to the next, typed and versioned.
//!
//! A warm handover (`DOMAIN.md`, "What warm handover means here") is not a file transfer. The sender
//! offers a case to a named receiver and stays responsible until the receiver accepts; the family is
//! told who its contact is now; the receiver must be able to carry on without making the family tell
//! its story again. What travels with the offer is a [`HandoverPacket`]. It is typed rather than a
//! free-text letter so that the receiver can rely on what is in it: every item `DOMAIN.md` says a
//! packet carries at least is a field here, and [`HandoverPacket::validate`] refuses a packet that
//! leaves one out. Validation reports every problem at once, each with the path of the field
//! (`family[1].gezag`), so a worker or a case system can fix a packet in one pass.
//!
//! Silence is never an answer in a packet. Facts, suspicions and opinions are separate, labelled
//! statements, and a fact always has a source and a date. A risk or protective-factor analysis that
//! was not done says so with a reason ([`Assessment::NotAssessed`]); a family that was not informed
//! says why ([`FamilyInvolvement::NotInformed`]). Following the privacy rules, family members carry
//! local ids only (never a BSN, the national citizen number), factors carry no scores (the hub must
//! not become a tool for profiling families), and the family's contact is a role address, never a
//! worker's personal details.
//!
//! The packet travels inside a thread's MLS encryption; this module defines its shape, its rules
//! and its JSON form (for case systems, fixtures and tests). The SDK encodes it to CBOR with its own
//! helper. [`PACKET_VERSION`] changes with any change of shape, and a reader refuses other versions
//! rather than guessing at fields it does not know.
//!
//! Dutch terms are kept as the field uses them:
//! - *gezag*: parental authority (custody) over a minor, held per adult;
//! - *drang*: voluntary help accepted under the pressure of a possible court measure;
//! - *OTS* (ondertoezichtstelling): a court order placing a child under supervision;
//! - *voogdij*: guardianship, where someone other than the parents holds gezag;
//! - *veiligheidsplan*: the written safety plan agreed with the family;
//! - *regie*: the responsibility for coordinating the family's one plan, held by the regisseur.
//!
//! ```
//! use ketenhub_sdk::packet::{Date, HandoverPacket};
//!
//! let today: Date = "2026-03-16".parse()?;
//! let packet = HandoverPacket::example(today);
//! packet.validate(today)?;
//! let back = HandoverPacket::from_json(&packet.to_json())?;
//! assert_eq!(back, packet);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::collections::HashSet;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use wire::{AgencyKind, BlobId, MemberId, Oin};

mod consent;

pub use consent::{Consent, FamilyReview, Informed, Recipient, Told, ALONE_AGE, OWN_SAY_AGE};

/// The version of the packet's shape that this SDK writes: 2 added consent, information and review per
/// person (the `consent` module) and the household's children who are not the handover's subject.
pub const PACKET_VERSION: u16 = 2;

/// The versions this SDK reads. A version 1 packet reads with no consent, information or review
/// records and every family member concerned; [`HandoverPacket::validate`] checks version 2 only,
/// since it is the check before sending.
pub const READS_VERSIONS: std::ops::RangeInclusive<u16> = 1..=PACKET_VERSION;

/// The values of [`FamilyView::view`] that mean "the family's view is not known" (compared without
/// regard to case or surrounding spaces). Allowed only when the family was not informed.
pub const UNKNOWN_VIEW: [&str; 2] = ["unknown", "onbekend"];

/// Oldest birth year accepted, counted back from `today`: older is a typing error, not a grandparent.
const MAX_AGE_YEARS: u16 = 130;

// ---------------------------------------------------------------------------------------------
// The packet
// ---------------------------------------------------------------------------------------------

/// Everything a receiving agency needs to take over a case, as the sender hands it over.
///
/// Build one with a struct literal (every field is public) and check it with
/// [`validate`](Self::validate) before sending; [`example`](Self::example) shows a complete one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HandoverPacket {
    /// The shape's version: [`PACKET_VERSION`] when written, any of [`READS_VERSIONS`] when read.
    pub version: u16,
    /// Who hands the case over, and stays responsible until the receiver accepts.
    pub sender: Party,
    /// Who is asked to take the case over.
    pub receiver: Party,
    /// The typed route, as configured for the region, for example `vt-lt-referral`.
    pub route: String,
    /// Why the case is handed over now.
    pub reason: String,
    /// The legal frame the case is in, with the court measure if there is one.
    pub legal_frame: LegalStatus,
    /// The legal ground on which this packet may be shared with the receiver.
    pub lawful_basis: LawfulBasis,
    /// Each family member separately, with their own role and gezag: every child of the household,
    /// also siblings the handover is not about (so that nobody overlooks them).
    pub family: Vec<FamilyMember>,
    /// The family members' consents to sharing, carried from packet to packet of the case (version 2).
    #[serde(default)]
    pub consents: Vec<Consent>,
    /// What each family member was told about the decisions of this handover, or why not (version 2).
    #[serde(default)]
    pub informed: Vec<Informed>,
    /// Whether the family saw this packet before it was sent; required from version 2.
    #[serde(default)]
    pub family_review: Option<FamilyReview>,
    /// The analysis: facts, suspicions and opinions, each labelled as such.
    pub statements: Vec<Statement>,
    /// What threatens the children's safety or development.
    pub risks: Assessment,
    /// What protects them: the family's strengths, network and other safeguards.
    pub protective_factors: Assessment,
    /// Help already tried and what it achieved; empty when none was tried yet.
    pub interventions: Vec<Intervention>,
    /// The family's current plan.
    pub plan: Plan,
    /// Who the family turns to once the receiver has taken over.
    pub contact: Contact,
    /// Whether the family took part in or was told about the handover.
    pub family_involvement: FamilyInvolvement,
    /// What the family itself thinks, including where it disagrees.
    pub family_view: FamilyView,
    /// Documents that go with the packet, such as reports and the veiligheidsplan.
    pub attachments: Vec<AttachmentRef>,
}

/// An organisation in the chain that is connected to the hub.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Organisation {
    /// Its OIN, as in its PKIoverheid certificate.
    pub oin: Oin,
    /// Its name, as people in the chain know it.
    pub name: String,
    /// What kind of agency it is.
    pub kind: AgencyKind,
}

/// A worker at an organisation: one end of a handover.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Party {
    /// The worker's organisation.
    pub organisation: Organisation,
    /// The worker id inside the organisation, as in the worker's certificate.
    pub worker: String,
}

impl Party {
    /// How the hub addresses this worker in a thread.
    pub fn member_id(&self) -> MemberId {
        MemberId { oin: self.organisation.oin.clone(), worker: self.worker.clone() }
    }
}

/// The legal frame the help takes place in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LegalFrame {
    /// Voluntary help, with the family's agreement.
    Vrijwillig,
    /// Drang: voluntary help accepted under the pressure of a possible court measure.
    Drang,
    /// A provisional court measure (voorlopige OTS or voorlopige voogdij), pending a full ruling.
    VoorlopigeMaatregel,
    /// An OTS: the court placed the child under supervision of a GI.
    Ots,
    /// Voogdij: guardianship, gezag is held by someone other than the parents.
    Voogdij,
    /// Jeugdreclassering: supervision of a young person in a criminal case.
    JeugdReclassering,
}

impl LegalFrame {
    /// Whether a court ordered this frame, so that a [`Measure`] must be given.
    pub fn is_measure(self) -> bool {
        !matches!(self, Self::Vrijwillig | Self::Drang)
    }

    /// The code used in JSON, for messages.
    pub fn code(self) -> &'static str {
        match self {
            Self::Vrijwillig => "vrijwillig",
            Self::Drang => "drang",
            Self::VoorlopigeMaatregel => "voorlopige_maatregel",
            Self::Ots => "ots",
            Self::Voogdij => "voogdij",
            Self::JeugdReclassering => "jeugd_reclassering",
        }
    }

    /// Whether the court always grants this frame for a fixed term (an OTS for at most a year, a
    /// provisional measure for a few months), so that the measure must have an end date.
    fn has_fixed_term(self) -> bool {
        matches!(self, Self::Ots | Self::VoorlopigeMaatregel)
    }
}

impl fmt::Display for LegalFrame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// The legal frame, with the court measure when the frame is one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LegalStatus {
    /// The frame.
    pub frame: LegalFrame,
    /// The court measure: required when [`LegalFrame::is_measure`], absent otherwise.
    pub measure: Option<Measure>,
}

/// A court measure's reference and term.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Measure {
    /// The court's case reference for the ruling.
    pub court_reference: String,
    /// The day the measure took effect.
    pub start_date: Date,
    /// The day it ends; required for an OTS and a provisional measure, absent for voogdij that
    /// lasts until the child comes of age.
    pub end_date: Option<Date>,
}

/// The legal ground for sharing this packet with the receiver.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LawfulBasis {
    /// A code from the region's list, for example `consent` or `vt-safety` (Veilig Thuis's
    /// meldrecht under Wmo art. 5.2.6); lowercase letters, digits, `.`, `_` and `-`.
    pub code: String,
    /// Why sharing is justified; required for every basis except `consent`, because sharing
    /// without consent is reviewed by a privacy officer, who needs the written reasoning.
    pub justification: Option<String>,
    /// The ids of the [`Consent`]s this sharing relies on. A `consent` basis names one in force, for
    /// the receiver, from everyone whose consent it needs ([`HandoverPacket::consent_needed`]).
    #[serde(default)]
    pub consents: Vec<String>,
}

impl LawfulBasis {
    /// The code for sharing with the family's consent.
    pub const CONSENT: &'static str = "consent";

    /// Whether the family consented to sharing (anything else is flagged for privacy review).
    pub fn is_consent(&self) -> bool {
        self.code == Self::CONSENT
    }
}

/// One member of the family, modelled separately because custody differs per person.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FamilyMember {
    /// An id local to this packet, used to refer to the member from factors; never a BSN.
    pub id: String,
    /// The member's name.
    pub name: String,
    /// The member's place in the family.
    pub role: FamilyRole,
    /// The year of birth, when known; a year is enough to tell the children's ages.
    pub birth_year: Option<u16>,
    /// Whether this member holds gezag over the children.
    pub gezag: Gezag,
    /// Whether the handover is about this member. A sibling in the household whom the handover does
    /// not concern is listed with `false`, so the receiver knows the child is there; at least one
    /// child is concerned. Version 1 packets read as concerned.
    #[serde(default = "concerned_by_default")]
    pub concerned: bool,
}

fn concerned_by_default() -> bool {
    true
}

/// A family member's place in the family.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FamilyRole {
    /// A child or young person (jeugdige) the case is about.
    Child,
    /// A parent.
    Parent,
    /// A parent's partner who is not the child's parent.
    StepParent,
    /// A foster parent (pleegouder).
    FosterParent,
    /// A grandparent.
    Grandparent,
    /// Anyone else, described in a few words (an aunt, a sibling who is not part of the case).
    Other(String),
}

impl FamilyRole {
    /// Whether this is a child the case is about; everyone else is treated as an adult for gezag.
    pub fn is_child(&self) -> bool {
        matches!(self, Self::Child)
    }
}

/// Whether a family member holds gezag (parental authority) over the children.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Gezag {
    /// Holds gezag.
    Yes,
    /// Does not hold gezag (but may still have to be informed).
    No,
    /// Not yet established; said explicitly so that nobody assumes either way.
    Unknown,
    /// For the children themselves, over whom gezag is held.
    NotApplicable,
}

/// One statement of the analysis, labelled with what kind of statement it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Statement {
    /// Whether this is a fact, a suspicion or an opinion.
    pub kind: StatementKind,
    /// The statement.
    pub text: String,
    /// Where it comes from (a person, a report, an observation); required for a fact.
    pub source: Option<String>,
    /// When it was observed or established; required for a fact, never after the packet's day.
    pub date: Option<Date>,
}

/// What kind of statement a [`Statement`] is: the three are kept apart so that a suspicion is
/// never read as an established fact further down the chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StatementKind {
    /// Established, with a source and a date.
    Fact,
    /// Suspected but not established.
    Suspicion,
    /// A professional's (or someone else's) judgement.
    Opinion,
}

/// The outcome of assessing risks or protective factors.
///
/// An empty list is ambiguous (nothing found, or nobody looked?), so it is refused: an assessment
/// that found nothing says so as a factor, one that was not done is [`NotAssessed`](Self::NotAssessed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Assessment {
    /// Not assessed (yet).
    NotAssessed {
        /// Why not, for example that the investigation was cut short.
        reason: String,
    },
    /// Assessed, with what was found; never empty.
    Assessed(Vec<Factor>),
}

/// One risk or protective factor. Deliberately without a score: the hub holds no risk scores.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Factor {
    /// The factor, in words.
    pub text: String,
    /// The ids of the family members it concerns; empty when it concerns the family as a whole.
    pub members: Vec<String>,
}

/// Help that was already tried, and what came of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Intervention {
    /// What was done.
    pub what: String,
    /// Who did it (by name; it need not be an organisation on the hub).
    pub by_organisation: String,
    /// When it started.
    pub from: Date,
    /// When it ended; absent while it is still going on.
    pub until: Option<Date>,
    /// What it achieved, or how it is going.
    pub result: String,
}

/// The family's current plan ("1 gezin, 1 plan, 1 regisseur": the receiver continues it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Plan {
    /// The goals; at least one.
    pub goals: Vec<Goal>,
}

/// One goal of the plan, with who answers for it and when it is looked at again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Goal {
    /// The goal.
    pub text: String,
    /// Who answers for it.
    pub owner: GoalOwner,
    /// When progress is next evaluated; not before the packet's day.
    pub evaluation_date: Date,
}

/// Who answers for a goal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GoalOwner {
    /// The organisation, by name (it need not be on the hub, for example a jeugdhulp provider).
    pub organisation: String,
    /// The worker id or role address there that answers for the goal.
    pub address: String,
}

/// The family's contact for the next phase: in the team model, the worker who holds regie.
///
/// Staff safety: families see this, so it names a role address (a team mailbox, a desk's phone
/// number), never a worker's personal details. The address counts as personal, and is refused,
/// when its local part (before `@`, or all of it), compared without case and without `.`, `_` and
/// `-`, equals the display name's words run together, the name's first initial followed by the
/// rest, any single word of the name of three letters or more, or the sender's or receiver's
/// worker id. `sanne.bakker@...`, `s.bakker@...`, `sanne@...` are refused for "Sanne Bakker";
/// `jeugd@...` is accepted. This is a guard against the common mistakes, not a proof.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Contact {
    /// The organisation; must be the receiver's, since the receiver takes over.
    pub organisation: Organisation,
    /// A role address at that organisation.
    pub role_address: String,
    /// The name the family knows its contact by.
    pub worker_display_name: String,
}

/// Whether the family took part in the handover.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum FamilyInvolvement {
    /// The family was there (a joint conversation or home visit with sender and receiver).
    Present,
    /// The family was told about the handover and who its contact is, but was not there.
    Informed,
    /// The family was not told.
    NotInformed {
        /// Why not, for example that telling would endanger a child.
        reason: String,
    },
}

/// The family's own view of the case and the handover.
///
/// The rule: `view` is never empty. When the family's view is not known it says so with one of
/// [`UNKNOWN_VIEW`], which is allowed only if the family was not informed (the reason why is then
/// in [`FamilyInvolvement::NotInformed`]) and then lists no disagreements. A family that was present
/// or informed always has its view recorded, even if that view is that it declined to give one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FamilyView {
    /// The family's view, in its own words where possible.
    pub view: String,
    /// Each point on which the family disagrees with the analysis or the plan.
    pub disagreements: Vec<String>,
}

impl FamilyView {
    /// Whether the view says it is not known.
    pub fn is_unknown(&self) -> bool {
        UNKNOWN_VIEW.iter().any(|word| self.view.trim().eq_ignore_ascii_case(word))
    }
}

/// A document that goes with the packet, referring to an encrypted attachment in the same thread.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttachmentRef {
    /// The attachment's blob at the hub.
    pub blob: BlobId,
    /// The file's name, without a path.
    pub name: String,
    /// The SHA-256 of the file's content, as 64 lowercase hex digits, so the receiver can tell
    /// that the file fetched is the one the packet means.
    pub sha256_hex: String,
    /// What the document is, for example "veiligheidsplan, ondertekend door beide ouders".
    pub description: String,
}

impl AttachmentRef {
    /// A reference from an uploaded attachment's blob id, file name and SHA-256.
    pub fn new(blob: BlobId, name: impl Into<String>, sha256: &[u8; 32], description: impl Into<String>) -> Self {
        let sha256_hex = sha256.iter().map(|b| format!("{b:02x}")).collect();
        Self { blob, name: name.into(), sha256_hex, description: description.into() }
    }

    /// The reference to an attachment that was uploaded, with the attachment's own name and hash.
    pub fn to(attachment: &crate::attachment::Attachment, description: impl Into<String>) -> Self {
        Self::new(attachment.blob, attachment.name.clone(), &attachment.sha256, description)
    }

    /// Whether a received attachment is the one this reference names: same blob and same SHA-256.
    /// Fetching it ([`crate::Client::fetch_attachment`]) then proves that it decrypts and that the
    /// content has that hash.
    pub fn names(&self, attachment: &crate::attachment::Attachment) -> bool {
        self.blob == attachment.blob && self.sha256_hex == attachment.sha256_hex()
    }
}

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

/// One problem with one field of a packet.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {problem}")]
pub struct FieldError {
    /// Where, in the JSON's terms: `family[1].gezag`, `legal_frame.measure.court_reference`.
    pub path: String,
    /// What is wrong: its English sentence is its `Display`, its `code` and values (serialized, tagged
    /// `code`) let an application word it in its own language.
    pub problem: Problem,
}

impl FieldError {
    /// The problem `problem` at `path`.
    pub fn new(path: impl Into<String>, problem: Problem) -> Self {
        Self { path: path.into(), problem }
    }
}

/// What is wrong with one field, in a sentence a worker can act on. Serialized as an object with the
/// snake_case `code` and the values the sentence names, so that a desk can say it in Dutch.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize)]
#[serde(tag = "code", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Problem {
    /// The packet's version is not the one this SDK writes.
    #[error("is {found}; this SDK writes version {writes}")]
    WrongVersion {
        /// The packet's version.
        found: u16,
        /// The version this SDK writes.
        writes: u16,
    },
    /// The receiver is the sender's own organisation.
    #[error("is the sender's organisation; a handover goes to another one")]
    SameOrganisation,
    /// A text that must say something is empty or blank.
    #[error("is empty")]
    Empty,
    /// A code (route, lawful basis) is not spelled as codes are.
    #[error("{value:?} is not a code of lowercase letters, digits, '.', '_' and '-'")]
    NotACode {
        /// The code as given.
        value: String,
    },
    /// A date that may not lie in the future does.
    #[error("{date} is after today ({today})")]
    AfterToday {
        /// The date.
        date: String,
        /// The day the packet is sent.
        today: String,
    },
    /// A worker id is not 1-64 characters of letters, digits, '.', '_' and '-'.
    #[error("{value:?} is not a worker id of 1-64 letters, digits, '.', '_' and '-'")]
    NotAWorker {
        /// The worker id as given.
        value: String,
    },
    /// A court measure's details are missing.
    #[error("is missing; {frame} is a court measure")]
    MeasureMissing {
        /// The legal frame's code.
        frame: String,
    },
    /// Measure details are given for a frame that is no court measure.
    #[error("must be absent; {frame} is not a court measure")]
    MeasureNotAllowed {
        /// The legal frame's code.
        frame: String,
    },
    /// A measure ends on or before its start.
    #[error("{end} is not after the start date {start}")]
    EndNotAfterStart {
        /// The end date.
        end: String,
        /// The start date.
        start: String,
    },
    /// A measure with a fixed term has no end date.
    #[error("is missing; {frame} has a fixed term")]
    EndMissing {
        /// The legal frame's code.
        frame: String,
    },
    /// Sharing without consent, and no justification.
    #[error("is missing; sharing without consent needs a written justification for privacy review")]
    JustificationMissing,
    /// No family member at all.
    #[error("is empty; a handover is about at least one child")]
    NoFamily,
    /// Family members, but no child.
    #[error("has no member with role child; a handover is about at least one")]
    NoChild,
    /// A member's id is not 1-64 characters of [A-Za-z0-9._-].
    #[error("{value:?} is not 1-64 characters of [A-Za-z0-9._-]")]
    NotAnId {
        /// The id as given.
        value: String,
    },
    /// A member's id looks like a BSN, which must not travel in the packet.
    #[error("looks like a BSN; use an id local to the packet")]
    LooksLikeBsn,
    /// Two members share an id.
    #[error("{value:?} is also the id of an earlier item")]
    DuplicateId {
        /// The id.
        value: String,
    },
    /// A member's role is `other` without a description.
    #[error("other needs a description of the member's role")]
    RoleUndescribed,
    /// A birth year after this year.
    #[error("{year} is after this year ({this_year})")]
    BornLater {
        /// The year given.
        year: u16,
        /// This year.
        this_year: u16,
    },
    /// A birth year implausibly long ago.
    #[error("{year} is more than {most} years ago")]
    BornTooLongAgo {
        /// The year given.
        year: u16,
        /// The most years ago a birth year may lie.
        most: u16,
    },
    /// A child with gezag other than not_applicable.
    #[error("must be not_applicable for a child")]
    ChildGezag,
    /// Someone other than a child with gezag not_applicable.
    #[error("must be yes, no or unknown for anyone but a child; not_applicable is for children")]
    AdultGezag,
    /// No fact, suspicion or opinion.
    #[error("is empty; the analysis needs at least one fact, suspicion or opinion")]
    NoStatements,
    /// A fact without its source.
    #[error("is missing; a fact needs its source")]
    SourceMissing,
    /// A fact without the date it was established.
    #[error("is missing; a fact needs the date it was established")]
    DateMissing,
    /// An assessment with no factor at all.
    #[error("is empty; write a finding of nothing as a factor, or use not_assessed with a reason")]
    NoFactors,
    /// A factor names someone who is not in the family.
    #[error("{member:?} is not in family")]
    NotInFamily {
        /// The id named.
        member: String,
    },
    /// An intervention that ends before it started.
    #[error("{until} is before from ({from})")]
    UntilBeforeFrom {
        /// The end.
        until: String,
        /// The start.
        from: String,
    },
    /// An intervention's end in the future.
    #[error("{until} is after today; leave it out while ongoing")]
    UntilAfterToday {
        /// The end.
        until: String,
    },
    /// A plan without goals.
    #[error("is empty; the plan needs at least one goal")]
    NoGoals,
    /// An evaluation date already past.
    #[error("{date} is before today ({today})")]
    BeforeToday {
        /// The date.
        date: String,
        /// The day the packet is sent.
        today: String,
    },
    /// The contact is not with the receiving organisation.
    #[error("is not the receiver's organisation, which takes over the case")]
    ContactNotReceiver,
    /// The contact address names a worker.
    #[error("looks like a worker's personal address; give a role address")]
    PersonalAddress,
    /// The family's view is unknown although they were present or informed.
    #[error("is unknown, but the family was present or informed; record its view")]
    ViewMissing,
    /// Disagreements listed while the view is unknown.
    #[error("lists disagreements although the family's view is unknown")]
    DisagreementsWithoutView,
    /// Two attachments name the same blob.
    #[error("refers to the same blob as an earlier attachment")]
    DuplicateBlob,
    /// A file name with a path in it.
    #[error("contains a path; give the file's name only")]
    NameHasPath,
    /// Not a SHA-256 in lowercase hex.
    #[error("is not a SHA-256 as 64 lowercase hex digits")]
    NotSha256,
    /// A form field that should hold a date does not (for forms that build a packet).
    #[error("{value:?} is not a date (YYYY-MM-DD)")]
    NotADate {
        /// The text given.
        value: String,
    },
    /// A form field that should hold a year does not.
    #[error("{value:?} is not a year")]
    NotAYear {
        /// The text given.
        value: String,
    },
    /// A choice the form requires was not made (or not among the offered ones).
    #[error("is not chosen")]
    NotChosen,
    /// A route and legal basis that the policy does not allow towards the chosen receiver.
    #[error("is not allowed for this receiver")]
    NotAllowedForReceiver,
    /// A date that must lie in the future does not.
    #[error("is not a date in the future")]
    NotInFuture,
    /// Children in the family, but the handover concerns none of them.
    #[error("concerns no child; mark the child or children the handover is about")]
    NoConcernedChild,
    /// A consent that names no recipient.
    #[error("is empty; a consent names the organisations or kinds of agency it allows")]
    NoRecipients,
    /// A lawful basis names a consent the packet does not hold.
    #[error("{id:?} is not the id of a consent in consents")]
    NoSuchConsent {
        /// The id named.
        id: String,
    },
    /// A named consent was withdrawn.
    #[error("was withdrawn on {on}")]
    ConsentWithdrawn {
        /// The day of the withdrawal.
        on: String,
    },
    /// A named consent is not in force today.
    #[error("is not in force today (given {from}, until {until})")]
    ConsentNotInForce {
        /// The day it was given.
        from: String,
        /// The last day it held, if limited.
        until: String,
    },
    /// A named consent does not name the receiver.
    #[error("does not name the receiving organisation or its kind")]
    ConsentNotForReceiver,
    /// Someone whose consent the basis needs did not give one.
    #[error("has no consent in force for this receiver from {name} ({member})")]
    ConsentMissing {
        /// The member's id.
        member: String,
        /// The member's name.
        name: String,
    },
    /// Someone who must be informed has no information record.
    #[error("says nothing about informing {name} ({member}); record what they were told or why not")]
    InformedMissing {
        /// The member's id.
        member: String,
        /// The member's name.
        name: String,
    },
    /// The family was present or informed, but nobody is recorded as told.
    #[error("records nobody as told, but the family was present or informed")]
    NobodyTold,
    /// No record of whether the family saw the packet.
    #[error("is missing; record whether the family saw the packet, or why not")]
    ReviewMissing,
    /// A consent's recipient is neither an OIN nor a kind of agency (for forms that build a packet).
    #[error("{value:?} is neither an OIN of 20 digits nor a kind of agency such as LT or GI")]
    NotARecipient {
        /// The text given.
        value: String,
    },
}

impl Problem {
    /// One problem of each kind, with example values: an application that words problems in its own
    /// language checks with it that it has words for every one.
    pub fn every_kind() -> Vec<Problem> {
        let (d, t, v) = (|| "2026-03-16".to_owned(), || "2026-03-17".to_owned(), || "x".to_owned());
        let every = vec![
            Problem::WrongVersion { found: 9, writes: PACKET_VERSION },
            Problem::SameOrganisation,
            Problem::Empty,
            Problem::NotACode { value: v() },
            Problem::AfterToday { date: t(), today: d() },
            Problem::NotAWorker { value: v() },
            Problem::MeasureMissing { frame: v() },
            Problem::MeasureNotAllowed { frame: v() },
            Problem::EndNotAfterStart { end: d(), start: t() },
            Problem::EndMissing { frame: v() },
            Problem::JustificationMissing,
            Problem::NoFamily,
            Problem::NoChild,
            Problem::NotAnId { value: v() },
            Problem::LooksLikeBsn,
            Problem::DuplicateId { value: v() },
            Problem::RoleUndescribed,
            Problem::BornLater { year: 2030, this_year: 2026 },
            Problem::BornTooLongAgo { year: 1800, most: MAX_AGE_YEARS },
            Problem::ChildGezag,
            Problem::AdultGezag,
            Problem::NoStatements,
            Problem::SourceMissing,
            Problem::DateMissing,
            Problem::NoFactors,
            Problem::NotInFamily { member: v() },
            Problem::UntilBeforeFrom { until: d(), from: t() },
            Problem::UntilAfterToday { until: t() },
            Problem::NoGoals,
            Problem::BeforeToday { date: d(), today: t() },
            Problem::ContactNotReceiver,
            Problem::PersonalAddress,
            Problem::ViewMissing,
            Problem::DisagreementsWithoutView,
            Problem::DuplicateBlob,
            Problem::NameHasPath,
            Problem::NotSha256,
            Problem::NotADate { value: v() },
            Problem::NotAYear { value: v() },
            Problem::NotChosen,
            Problem::NotAllowedForReceiver,
            Problem::NotInFuture,
            Problem::NoConcernedChild,
            Problem::NoRecipients,
            Problem::NoSuchConsent { id: v() },
            Problem::ConsentWithdrawn { on: d() },
            Problem::ConsentNotInForce { from: d(), until: t() },
            Problem::ConsentNotForReceiver,
            Problem::ConsentMissing { member: v(), name: v() },
            Problem::InformedMissing { member: v(), name: v() },
            Problem::NobodyTold,
            Problem::ReviewMissing,
            Problem::NotARecipient { value: v() },
        ];
        // A new kind does not compile here until it is listed: the reminder to give it an example above.
        for problem in &every {
            match problem {
                Problem::WrongVersion { .. }
                | Problem::SameOrganisation
                | Problem::Empty
                | Problem::NotACode { .. }
                | Problem::AfterToday { .. }
                | Problem::NotAWorker { .. }
                | Problem::MeasureMissing { .. }
                | Problem::MeasureNotAllowed { .. }
                | Problem::EndNotAfterStart { .. }
                | Problem::EndMissing { .. }
                | Problem::JustificationMissing
                | Problem::NoFamily
                | Problem::NoChild
                | Problem::NotAnId { .. }
                | Problem::LooksLikeBsn
                | Problem::DuplicateId { .. }
                | Problem::RoleUndescribed
                | Problem::BornLater { .. }
                | Problem::BornTooLongAgo { .. }
                | Problem::ChildGezag
                | Problem::AdultGezag
                | Problem::NoStatements
                | Problem::SourceMissing
                | Problem::DateMissing
                | Problem::NoFactors
                | Problem::NotInFamily { .. }
                | Problem::UntilBeforeFrom { .. }
                | Problem::UntilAfterToday { .. }
                | Problem::NoGoals
                | Problem::BeforeToday { .. }
                | Problem::ContactNotReceiver
                | Problem::PersonalAddress
                | Problem::ViewMissing
                | Problem::DisagreementsWithoutView
                | Problem::DuplicateBlob
                | Problem::NameHasPath
                | Problem::NotSha256
                | Problem::NotADate { .. }
                | Problem::NotAYear { .. }
                | Problem::NotChosen
                | Problem::NotAllowedForReceiver
                | Problem::NotInFuture
                | Problem::NoConcernedChild
                | Problem::NoRecipients
                | Problem::NoSuchConsent { .. }
                | Problem::ConsentWithdrawn { .. }
                | Problem::ConsentNotInForce { .. }
                | Problem::ConsentNotForReceiver
                | Problem::ConsentMissing { .. }
                | Problem::InformedMissing { .. }
                | Problem::NobodyTold
                | Problem::ReviewMissing
                | Problem::NotARecipient { .. } => {}
            }
        }
        every
    }

    /// The problem's snake_case code, as it is serialized.
    pub fn code(&self) -> String {
        let value = serde_json::to_value(self).unwrap_or_default();
        value["code"].as_str().unwrap_or_default().to_owned()
    }
}

/// Every problem [`HandoverPacket::validate`] found, in the order of the packet's fields; never empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PacketErrors(pub Vec<FieldError>);

impl PacketErrors {
    /// The paths of the fields with problems, in order (a field may appear more than once).
    pub fn paths(&self) -> Vec<&str> {
        self.0.iter().map(|e| e.path.as_str()).collect()
    }
}

impl fmt::Display for PacketErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, error) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

impl std::error::Error for PacketErrors {}

/// Why a text could not be read as a packet at all (whether it is a valid one is
/// [`HandoverPacket::validate`]'s question).
#[derive(Debug, thiserror::Error)]
pub enum PacketError {
    /// Not JSON, or not the packet's shape (a missing or unknown field, a bad date or OIN).
    #[error("not a handover packet: {0}")]
    Json(#[from] serde_json::Error),
    /// A packet of a version this SDK does not read.
    #[error("handover packet version {found} is not supported (this SDK reads versions 1 to {PACKET_VERSION})")]
    UnsupportedVersion {
        /// The version the packet says it is.
        found: u16,
    },
}

// ---------------------------------------------------------------------------------------------
// Validation
// ---------------------------------------------------------------------------------------------

impl HandoverPacket {
    /// Checks every rule and returns every problem found, not just the first.
    ///
    /// `today` is the day the packet is sent, passed in rather than read from the clock so that
    /// checking is repeatable: statements and interventions may not lie after it, and evaluation
    /// dates may not lie before it.
    pub fn validate(&self, today: Date) -> Result<(), PacketErrors> {
        let mut check = Checker::default();
        if self.version != PACKET_VERSION {
            check.fail("version", Problem::WrongVersion { found: self.version, writes: PACKET_VERSION });
        }
        check.party("sender", &self.sender);
        check.party("receiver", &self.receiver);
        if self.sender.organisation.oin == self.receiver.organisation.oin {
            check.fail("receiver.organisation.oin", Problem::SameOrganisation);
        }
        // The route is a free code for the region's configuration; only its spelling is checked.
        let _ = check.code("route", &self.route);
        check.text("reason", &self.reason);
        check.legal_frame(&self.legal_frame);
        check.lawful_basis(&self.lawful_basis);
        let ids = check.family(&self.family, today);
        check.consents(&self.consents, &ids, today);
        check.consent_basis(self, today);
        check.statements(&self.statements, today);
        check.assessment("risks", &self.risks, &ids);
        check.assessment("protective_factors", &self.protective_factors, &ids);
        check.interventions(&self.interventions, today);
        check.plan(&self.plan, today);
        check.contact(&self.contact, &self.receiver, &[self.sender.worker.as_str(), self.receiver.worker.as_str()]);
        if let FamilyInvolvement::NotInformed { reason } = &self.family_involvement {
            check.text("family_involvement.not_informed.reason", reason);
        }
        check.informed(self, &ids, today);
        check.review(self.family_review.as_ref(), &ids, today);
        check.family_view(&self.family_view, &self.family_involvement);
        check.attachments(&self.attachments);
        if check.errors.is_empty() {
            Ok(())
        } else {
            Err(PacketErrors(check.errors))
        }
    }
}

/// Collects problems while walking the packet.
#[derive(Default)]
struct Checker {
    errors: Vec<FieldError>,
}

impl Checker {
    fn fail(&mut self, path: impl Into<String>, problem: Problem) {
        self.errors.push(FieldError::new(path, problem));
    }

    fn text(&mut self, path: impl Into<String>, value: &str) {
        if value.trim().is_empty() {
            self.fail(path, Problem::Empty);
        }
    }

    /// Codes (routes, lawful bases) are matched against regional configuration, so they are kept
    /// to a spelling that cannot differ by case or stray spaces.
    /// Returns whether the code is well formed.
    fn code(&mut self, path: &str, value: &str) -> bool {
        if value.is_empty() {
            self.fail(path, Problem::Empty);
            false
        } else if !value.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b)) {
            self.fail(path, Problem::NotACode { value: value.to_owned() });
            false
        } else {
            true
        }
    }

    fn not_after(&mut self, path: impl Into<String>, date: Date, today: Date) {
        if date > today {
            self.fail(path, Problem::AfterToday { date: date.to_string(), today: today.to_string() });
        }
    }

    fn party(&mut self, path: &str, party: &Party) {
        self.text(format!("{path}.organisation.name"), &party.organisation.name);
        if wire::identity::validate_worker(&party.worker).is_err() {
            self.fail(format!("{path}.worker"), Problem::NotAWorker { value: party.worker.clone() });
        }
    }

    fn legal_frame(&mut self, legal: &LegalStatus) {
        let frame = legal.frame;
        match (&legal.measure, frame.is_measure()) {
            (None, false) => {}
            (None, true) => {
                self.fail("legal_frame.measure", Problem::MeasureMissing { frame: frame.to_string() });
            }
            (Some(_), false) => {
                self.fail("legal_frame.measure", Problem::MeasureNotAllowed { frame: frame.to_string() });
            }
            (Some(measure), true) => {
                self.text("legal_frame.measure.court_reference", &measure.court_reference);
                match measure.end_date {
                    Some(end) if end <= measure.start_date => {
                        let (end, start) = (end.to_string(), measure.start_date.to_string());
                        self.fail("legal_frame.measure.end_date", Problem::EndNotAfterStart { end, start });
                    }
                    Some(_) => {}
                    None if frame.has_fixed_term() => {
                        self.fail("legal_frame.measure.end_date", Problem::EndMissing { frame: frame.to_string() });
                    }
                    None => {}
                }
            }
        }
    }

    fn lawful_basis(&mut self, basis: &LawfulBasis) {
        if !self.code("lawful_basis.code", &basis.code) {
            // Whether a justification is needed depends on the basis, which is not known.
            return;
        }
        match &basis.justification {
            None if !basis.is_consent() => self.fail("lawful_basis.justification", Problem::JustificationMissing),
            Some(text) if text.trim().is_empty() => self.fail("lawful_basis.justification", Problem::Empty),
            _ => {}
        }
    }

    /// Returns the members' ids, for checking references to them.
    fn family<'a>(&mut self, family: &'a [FamilyMember], today: Date) -> HashSet<&'a str> {
        if family.is_empty() {
            self.fail("family", Problem::NoFamily);
        } else if !family.iter().any(|m| m.role.is_child()) {
            self.fail("family", Problem::NoChild);
        } else if !family.iter().any(|m| m.role.is_child() && m.concerned) {
            self.fail("family", Problem::NoConcernedChild);
        }
        let mut ids = HashSet::new();
        for (i, member) in family.iter().enumerate() {
            let path = format!("family[{i}]");
            let id = member.id.as_str();
            if self.local_id(&format!("{path}.id"), id) && !ids.insert(id) {
                self.fail(format!("{path}.id"), Problem::DuplicateId { value: id.to_owned() });
            }
            self.text(format!("{path}.name"), &member.name);
            if let FamilyRole::Other(description) = &member.role {
                if description.trim().is_empty() {
                    self.fail(format!("{path}.role"), Problem::RoleUndescribed);
                }
            }
            if let Some(year) = member.birth_year {
                if year > today.year() {
                    self.fail(format!("{path}.birth_year"), Problem::BornLater { year, this_year: today.year() });
                } else if year < today.year().saturating_sub(MAX_AGE_YEARS) {
                    self.fail(format!("{path}.birth_year"), Problem::BornTooLongAgo { year, most: MAX_AGE_YEARS });
                }
            }
            match (member.role.is_child(), member.gezag) {
                (true, Gezag::NotApplicable) | (false, Gezag::Yes | Gezag::No | Gezag::Unknown) => {}
                (true, _) => self.fail(format!("{path}.gezag"), Problem::ChildGezag),
                (false, _) => self.fail(format!("{path}.gezag"), Problem::AdultGezag),
            }
        }
        ids
    }

    /// An id local to the packet (a member's, a consent's); returns whether it is well formed.
    fn local_id(&mut self, path: &str, id: &str) -> bool {
        let problem = if id.is_empty() {
            Problem::Empty
        } else if !id.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b)) || id.len() > 64 {
            Problem::NotAnId { value: id.to_owned() }
        } else if looks_like_bsn(id) {
            Problem::LooksLikeBsn
        } else {
            return true;
        };
        self.fail(path, problem);
        false
    }

    fn statements(&mut self, statements: &[Statement], today: Date) {
        if statements.is_empty() {
            self.fail("statements", Problem::NoStatements);
        }
        for (i, statement) in statements.iter().enumerate() {
            let path = format!("statements[{i}]");
            let fact = statement.kind == StatementKind::Fact;
            self.text(format!("{path}.text"), &statement.text);
            match &statement.source {
                None if fact => self.fail(format!("{path}.source"), Problem::SourceMissing),
                Some(source) if source.trim().is_empty() => self.fail(format!("{path}.source"), Problem::Empty),
                _ => {}
            }
            match statement.date {
                None if fact => self.fail(format!("{path}.date"), Problem::DateMissing),
                Some(date) => self.not_after(format!("{path}.date"), date, today),
                None => {}
            }
        }
    }

    fn assessment(&mut self, path: &str, assessment: &Assessment, ids: &HashSet<&str>) {
        match assessment {
            Assessment::NotAssessed { reason } => self.text(format!("{path}.not_assessed.reason"), reason),
            Assessment::Assessed(factors) if factors.is_empty() => {
                self.fail(format!("{path}.assessed"), Problem::NoFactors)
            }
            Assessment::Assessed(factors) => {
                for (i, factor) in factors.iter().enumerate() {
                    self.text(format!("{path}.assessed[{i}].text"), &factor.text);
                    for (j, member) in factor.members.iter().enumerate() {
                        if !ids.contains(member.as_str()) {
                            let problem = Problem::NotInFamily { member: member.clone() };
                            self.fail(format!("{path}.assessed[{i}].members[{j}]"), problem);
                        }
                    }
                }
            }
        }
    }

    fn interventions(&mut self, interventions: &[Intervention], today: Date) {
        for (i, intervention) in interventions.iter().enumerate() {
            let path = format!("interventions[{i}]");
            self.text(format!("{path}.what"), &intervention.what);
            self.text(format!("{path}.by_organisation"), &intervention.by_organisation);
            self.not_after(format!("{path}.from"), intervention.from, today);
            if let Some(until) = intervention.until {
                if until < intervention.from {
                    let (until, from) = (until.to_string(), intervention.from.to_string());
                    self.fail(format!("{path}.until"), Problem::UntilBeforeFrom { until, from });
                } else if until > today {
                    self.fail(format!("{path}.until"), Problem::UntilAfterToday { until: until.to_string() });
                }
            }
            self.text(format!("{path}.result"), &intervention.result);
        }
    }

    fn plan(&mut self, plan: &Plan, today: Date) {
        if plan.goals.is_empty() {
            self.fail("plan.goals", Problem::NoGoals);
        }
        for (i, goal) in plan.goals.iter().enumerate() {
            let path = format!("plan.goals[{i}]");
            self.text(format!("{path}.text"), &goal.text);
            self.text(format!("{path}.owner.organisation"), &goal.owner.organisation);
            self.text(format!("{path}.owner.address"), &goal.owner.address);
            if goal.evaluation_date < today {
                let (date, today) = (goal.evaluation_date.to_string(), today.to_string());
                self.fail(format!("{path}.evaluation_date"), Problem::BeforeToday { date, today });
            }
        }
    }

    fn contact(&mut self, contact: &Contact, receiver: &Party, workers: &[&str]) {
        self.text("contact.organisation.name", &contact.organisation.name);
        if contact.organisation != receiver.organisation {
            self.fail("contact.organisation", Problem::ContactNotReceiver);
        }
        if contact.role_address.trim().is_empty() {
            self.fail("contact.role_address", Problem::Empty);
        } else if looks_personal(&contact.role_address, &contact.worker_display_name, workers) {
            self.fail("contact.role_address", Problem::PersonalAddress);
        }
        self.text("contact.worker_display_name", &contact.worker_display_name);
    }

    fn family_view(&mut self, view: &FamilyView, involvement: &FamilyInvolvement) {
        self.text("family_view.view", &view.view);
        if view.is_unknown() {
            if !matches!(involvement, FamilyInvolvement::NotInformed { .. }) {
                self.fail("family_view.view", Problem::ViewMissing);
            }
            if !view.disagreements.is_empty() {
                self.fail("family_view.disagreements", Problem::DisagreementsWithoutView);
            }
        }
        for (i, disagreement) in view.disagreements.iter().enumerate() {
            self.text(format!("family_view.disagreements[{i}]"), disagreement);
        }
    }

    fn attachments(&mut self, attachments: &[AttachmentRef]) {
        let mut blobs = HashSet::new();
        for (i, attachment) in attachments.iter().enumerate() {
            let path = format!("attachments[{i}]");
            if !blobs.insert(attachment.blob) {
                self.fail(format!("{path}.blob"), Problem::DuplicateBlob);
            }
            if attachment.name.trim().is_empty() {
                self.fail(format!("{path}.name"), Problem::Empty);
            } else if attachment.name.contains(['/', '\\']) {
                self.fail(format!("{path}.name"), Problem::NameHasPath);
            }
            let sha = &attachment.sha256_hex;
            if sha.len() != 64 || !sha.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
                self.fail(format!("{path}.sha256_hex"), Problem::NotSha256);
            }
            self.text(format!("{path}.description"), &attachment.description);
        }
    }
}

/// A BSN is 9 digits (8 in old records that dropped the leading zero); a local id that looks like
/// one is refused, since a real BSN must not travel in the packet.
fn looks_like_bsn(id: &str) -> bool {
    matches!(id.len(), 8 | 9) && id.bytes().all(|b| b.is_ascii_digit())
}

/// The rule described on [`Contact`].
fn looks_personal(address: &str, display_name: &str, workers: &[&str]) -> bool {
    fn squash(s: &str) -> String {
        s.chars().filter(|c| !matches!(c, '.' | '_' | '-')).flat_map(char::to_lowercase).collect()
    }
    let address = address.trim();
    let local = squash(address.rsplit_once('@').map_or(address, |(local, _)| local));
    if local.is_empty() {
        return false;
    }
    let words: Vec<String> = display_name.split_whitespace().map(squash).filter(|w| !w.is_empty()).collect();
    let mut personal: Vec<String> = workers.iter().map(|w| squash(w)).collect();
    personal.push(words.concat());
    personal.extend(words.iter().filter(|w| w.chars().count() >= 3).cloned());
    if let Some((first, rest)) = words.split_first() {
        if let Some(initial) = first.chars().next() {
            if !rest.is_empty() {
                personal.push(format!("{initial}{}", rest.concat()));
            }
        }
    }
    personal.contains(&local)
}

// ---------------------------------------------------------------------------------------------
// JSON
// ---------------------------------------------------------------------------------------------

impl HandoverPacket {
    /// The packet as pretty-printed JSON.
    pub fn to_json(&self) -> String {
        // Every map in a packet has string keys and every value is plain data, so serde_json
        // cannot fail here; a failure would be a bug in this module's types, not in input.
        serde_json::to_string_pretty(self).expect("a handover packet always serialises to JSON")
    }

    /// Reads a packet from JSON, without validating it: call [`validate`](Self::validate) next.
    ///
    /// The version is read first, so that a packet from a newer SDK is reported as such rather than
    /// as whatever field its shape happens to break first.
    pub fn from_json(text: &str) -> Result<Self, PacketError> {
        #[derive(Deserialize)]
        struct Versioned {
            version: u16,
        }
        let Versioned { version } = serde_json::from_str(text)?;
        if !READS_VERSIONS.contains(&version) {
            return Err(PacketError::UnsupportedVersion { found: version });
        }
        Ok(serde_json::from_str(text)?)
    }
}

// ---------------------------------------------------------------------------------------------
// The example
// ---------------------------------------------------------------------------------------------

impl HandoverPacket {
    /// A complete, valid packet for a fictional family: Veilig Thuis Utrecht hands the Jansen-de
    /// Vries family over to the lokaal team in Woerden after an investigation. Every date is relative
    /// to `today`, so the example validates on any day. For documentation, tests and demos.
    pub fn example(today: Date) -> HandoverPacket {
        let vt = Organisation {
            oin: example_oin("00000001800000000001"),
            name: "Veilig Thuis Utrecht".into(),
            kind: AgencyKind::VT,
        };
        let lt = Organisation {
            oin: example_oin("00000001800000000002"),
            name: "Lokaal team Woerden".into(),
            kind: AgencyKind::LT,
        };
        let day = |offset: i64| today.add_days(offset);
        let year = today.year();
        let member = |id: &str, name: &str, role: FamilyRole, age: u16, gezag: Gezag| FamilyMember {
            id: id.into(),
            name: name.into(),
            role,
            birth_year: Some(year.saturating_sub(age)),
            gezag,
            concerned: true,
        };
        let statement = |kind: StatementKind, text: &str, source: Option<&str>, date: Option<Date>| Statement {
            kind,
            text: text.into(),
            source: source.map(Into::into),
            date,
        };
        let factor = |text: &str, members: &[&str]| Factor {
            text: text.into(),
            members: members.iter().map(|m| (*m).to_owned()).collect(),
        };
        let goal = |text: &str, organisation: &Organisation, address: &str, evaluation_date: Date| Goal {
            text: text.into(),
            owner: GoalOwner { organisation: organisation.name.clone(), address: address.into() },
            evaluation_date,
        };
        HandoverPacket {
            version: PACKET_VERSION,
            sender: Party { organisation: vt.clone(), worker: "anna.devries".into() },
            receiver: Party { organisation: lt.clone(), worker: "sanne.bakker".into() },
            route: "vt-lt-referral".into(),
            reason: "Onderzoek afgerond. De zorgen over huiselijk geweld tussen de ouders, waar de kinderen bij \
                     waren, zijn bevestigd. Sinds vader apart woont is er geen acute onveiligheid meer; het gezin \
                     heeft vrijwillige hulp nodig en het veiligheidsplan moet worden gevolgd."
                .into(),
            legal_frame: LegalStatus { frame: LegalFrame::Vrijwillig, measure: None },
            lawful_basis: LawfulBasis {
                code: LawfulBasis::CONSENT.into(),
                justification: None,
                consents: vec!["c1".into(), "c2".into()],
            },
            family: vec![
                member("p1", "Linda de Vries", FamilyRole::Parent, 38, Gezag::Yes),
                member("p2", "Mark Jansen", FamilyRole::Parent, 41, Gezag::No),
                member("k1", "Sem Jansen", FamilyRole::Child, 9, Gezag::NotApplicable),
                member("k2", "Noor Jansen", FamilyRole::Child, 6, Gezag::NotApplicable),
                member("k3", "Lotte de Vries", FamilyRole::Child, 14, Gezag::NotApplicable),
            ],
            consents: vec![
                Consent {
                    id: "c1".into(),
                    member: "p1".into(),
                    recipients: vec![Recipient::Kind(AgencyKind::LT), Recipient::Kind(AgencyKind::GI)],
                    purpose: "Hulp en bescherming voor Sem, Noor en Lotte na het onderzoek van Veilig Thuis".into(),
                    given_on: day(-10),
                    recorded_by: "Veilig Thuis Utrecht, team onderzoek".into(),
                    until: None,
                    withdrawn_on: None,
                },
                Consent {
                    id: "c2".into(),
                    member: "k3".into(),
                    recipients: vec![Recipient::Organisation(lt.oin.clone())],
                    purpose: "Hulp voor het gezin en een eigen gesprek voor Lotte".into(),
                    given_on: day(-10),
                    recorded_by: "Veilig Thuis Utrecht, team onderzoek".into(),
                    until: Some(day(365)),
                    withdrawn_on: None,
                },
            ],
            informed: [("p1", -7), ("p2", -6), ("k3", -7), ("k1", -7)]
                .into_iter()
                .map(|(member, days)| Informed {
                    member: member.into(),
                    decision: "Overdracht aan Lokaal team Woerden".into(),
                    outcome: Told::Told {
                        on: day(days),
                        by: "Veilig Thuis Utrecht, team onderzoek".into(),
                        what: "Het lokaal team neemt de hulp over; het team jeugd is vanaf nu het aanspreekpunt."
                            .into(),
                    },
                })
                .collect(),
            family_review: Some(FamilyReview::Shown {
                to: vec!["p1".into(), "p2".into(), "k3".into()],
                on: day(-5),
                response: "Moeder en Lotte hebben geen opmerkingen; vader is het oneens met één punt (zie hun \
                           mening)."
                    .into(),
            }),
            statements: vec![
                statement(
                    StatementKind::Fact,
                    "Politie is ter plaatse geweest na een melding van buren over geschreeuw en gegooi met \
                     spullen; beide kinderen waren thuis.",
                    Some("Politie Midden-Nederland, zorgmelding"),
                    Some(day(-42)),
                ),
                statement(
                    StatementKind::Fact,
                    "Vader woont sinds deze datum op een eigen adres in Utrecht; de kinderen wonen bij moeder.",
                    Some("Gesprek met beide ouders, huurcontract van vader gezien"),
                    Some(day(-28)),
                ),
                statement(
                    StatementKind::Fact,
                    "Sem vertelt de intern begeleider dat hij 's nachts wakker ligt van de ruzies.",
                    Some("Intern begeleider van de basisschool van Sem"),
                    Some(day(-35)),
                ),
                statement(
                    StatementKind::Suspicion,
                    "Mogelijk is Sem tijdens een eerdere ruzie geslagen; Sem heeft dit niet bevestigd.",
                    Some("Melding van de basisschool"),
                    Some(day(-35)),
                ),
                statement(
                    StatementKind::Opinion,
                    "Moeder is goed in staat de afspraken uit het veiligheidsplan na te komen.",
                    Some("Anna de Vries, Veilig Thuis Utrecht"),
                    Some(day(-7)),
                ),
            ],
            risks: Assessment::Assessed(vec![
                factor("Nieuwe ruzies bij het overdragen van de kinderen tussen de ouders.", &["p1", "p2"]),
                factor("Sem heeft spanningsklachten (slecht slapen, stil in de klas).", &["k1"]),
            ]),
            protective_factors: Assessment::Assessed(vec![
                factor("Moeder heeft een steunend netwerk; haar zus woont in Woerden.", &["p1"]),
                factor("Beide ouders erkennen de zorgen en willen hulp.", &["p1", "p2"]),
                factor("Noor gaat graag naar school en heeft een vaste leerkracht bij wie ze terecht kan.", &["k2"]),
            ]),
            interventions: vec![
                Intervention {
                    what: "Veiligheidsplan opgesteld met beide ouders: kinderen worden overgedragen via de zus van \
                           moeder, niet thuis."
                        .into(),
                    by_organisation: vt.name.clone(),
                    from: day(-30),
                    until: None,
                    result: "Afspraken worden tot nu toe nagekomen.".into(),
                },
                Intervention {
                    what: "Opvoedondersteuning voor moeder.".into(),
                    by_organisation: "Jeugdhulp Utrecht-West".into(),
                    from: day(-700),
                    until: Some(day(-560)),
                    result: "Afgesloten na verhuizing naar Woerden; ruzies tussen de ouders kwamen niet aan bod."
                        .into(),
                },
            ],
            plan: Plan {
                goals: vec![
                    goal(
                        "Het veiligheidsplan wordt gevolgd en er zijn geen nieuwe incidenten.",
                        &lt,
                        "team-jeugd@lokaalteamwoerden.example",
                        day(42),
                    ),
                    goal(
                        "Sem krijgt hulp bij zijn spanningsklachten.",
                        &lt,
                        "team-jeugd@lokaalteamwoerden.example",
                        day(56),
                    ),
                    goal(
                        "Veilig Thuis gaat na drie maanden na of het gezin veilig is en hulp heeft (rappel).",
                        &vt,
                        "rappel@veiligthuisutrecht.example",
                        day(91),
                    ),
                ],
            },
            contact: Contact {
                organisation: lt,
                role_address: "team-jeugd@lokaalteamwoerden.example".into(),
                worker_display_name: "Sanne Bakker".into(),
            },
            family_involvement: FamilyInvolvement::Present,
            family_view: FamilyView {
                view: "Moeder vindt het goed dat het lokaal team het overneemt en wil vooral hulp voor Sem. \
                       Vader wil betrokken blijven bij de kinderen en doet mee aan het veiligheidsplan."
                    .into(),
                disagreements: vec!["Vader is het niet eens met de weergave van het politiebezoek: volgens hem \
                                     is er niet met spullen gegooid."
                    .into()],
            },
            attachments: vec![AttachmentRef {
                blob: BlobId(uuid::Uuid::from_u128(0x0195_9a3c_6e1f_4d20_8b4e_2f6a_1c3d_5e7f)),
                name: "veiligheidsplan-jansen-de-vries.pdf".into(),
                sha256_hex: "5d41c8a3f0b7e29164d8c2ab07f3e95d1c6a48b2e07f93d5a1c64e8b2d07f3a9".into(),
                description: "Veiligheidsplan, ondertekend door beide ouders".into(),
            }],
        }
    }
}

/// Parses one of the example's OIN literals, which are 20 digits, so this cannot fail on any input.
fn example_oin(digits: &str) -> Oin {
    digits.parse().expect("the example's OINs are 20 digits")
}

// ---------------------------------------------------------------------------------------------
// Dates
// ---------------------------------------------------------------------------------------------

/// A calendar day, written `YYYY-MM-DD` in JSON. Only real days can be built (no 30 February), so a
/// `Date` in hand is always valid. Days order chronologically.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Date {
    // Field order matters: the derived ordering compares year, then month, then day.
    year: u16,
    month: u8,
    day: u8,
}

/// Why a text or numbers are not a [`Date`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DateError {
    /// Not of the form `YYYY-MM-DD`.
    #[error("expected a date as YYYY-MM-DD, got {0:?}")]
    Format(String),
    /// Of the right form, but no such day (or a year outside 1-9999).
    #[error("{year:04}-{month:02}-{day:02} is not a calendar day")]
    NoSuchDay {
        /// The year given.
        year: u16,
        /// The month given.
        month: u8,
        /// The day given.
        day: u8,
    },
}

impl Date {
    /// The earliest date: 1 January of year 1.
    pub const MIN: Date = Date { year: 1, month: 1, day: 1 };
    /// The latest date: 31 December 9999, the last that has four digits.
    pub const MAX: Date = Date { year: 9999, month: 12, day: 31 };

    /// The day `year`-`month`-`day`, if there is one in the Gregorian calendar.
    pub fn new(year: u16, month: u8, day: u8) -> Result<Self, DateError> {
        if (1..=9999).contains(&year) && (1..=12).contains(&month) && day >= 1 && day <= days_in_month(year, month) {
            Ok(Self { year, month, day })
        } else {
            Err(DateError::NoSuchDay { year, month, day })
        }
    }

    /// The year.
    pub fn year(self) -> u16 {
        self.year
    }

    /// The month, 1-12.
    pub fn month(self) -> u8 {
        self.month
    }

    /// The day of the month, from 1.
    pub fn day(self) -> u8 {
        self.day
    }

    /// The first millisecond of this day (UTC) since the Unix epoch; 0 for a day before 1970.
    pub fn unix_ms(self) -> u64 {
        self.days_since_epoch().max(0) as u64 * wire::calendar::DAY_MS
    }

    /// The UTC date of a moment given in milliseconds since the Unix epoch.
    pub fn from_unix_ms(at_ms: u64) -> Date {
        let days = (at_ms / wire::calendar::DAY_MS) as i64;
        Self::from_days_since_epoch(days.clamp(Self::MIN.days_since_epoch(), Self::MAX.days_since_epoch()))
    }

    /// The day `days` later (earlier if negative), held at [`Date::MIN`] or [`Date::MAX`] rather
    /// than failing, so that relative dates (as in the example) can always be made.
    pub fn add_days(self, days: i64) -> Date {
        let target = self.days_since_epoch().saturating_add(days);
        Self::from_days_since_epoch(target.clamp(Self::MIN.days_since_epoch(), Self::MAX.days_since_epoch()))
    }

    /// Days since 1970-01-01 (see [`wire::calendar`]).
    fn days_since_epoch(self) -> i64 {
        // A Date is valid by construction, so the fallback is never taken.
        wire::calendar::days_from_civil(i64::from(self.year), i64::from(self.month), i64::from(self.day)).unwrap_or(0)
    }

    /// The inverse of [`days_since_epoch`](Self::days_since_epoch); the caller keeps `days` between
    /// `MIN` and `MAX`, so every part fits its field.
    fn from_days_since_epoch(days: i64) -> Date {
        let (year, month, day) = wire::calendar::civil_from_days(days);
        Date {
            year: u16::try_from(year).unwrap_or(Self::MAX.year),
            month: u8::try_from(month).unwrap_or(1),
            day: u8::try_from(day).unwrap_or(1),
        }
    }
}

fn is_leap_year(year: u16) -> bool {
    year.is_multiple_of(4) && (!year.is_multiple_of(100) || year.is_multiple_of(400))
}

fn days_in_month(year: u16, month: u8) -> u8 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if is_leap_year(year) => 29,
        2 => 28,
        _ => 0,
    }
}

impl FromStr for Date {
    type Err = DateError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bytes = text.as_bytes();
        let shaped = bytes.len() == 10
            && bytes.iter().enumerate().all(|(i, b)| if i == 4 || i == 7 { *b == b'-' } else { b.is_ascii_digit() });
        if !shaped {
            return Err(DateError::Format(text.to_owned()));
        }
        // At most four ASCII digits each, so the sums fit their types.
        let number = |range: std::ops::Range<usize>| {
            bytes.get(range).unwrap_or_default().iter().fold(0u16, |n, b| n * 10 + u16::from(b - b'0'))
        };
        let small = |range| u8::try_from(number(range)).unwrap_or(u8::MAX);
        Date::new(number(0..4), small(5..7), small(8..10))
    }
}

impl TryFrom<String> for Date {
    type Error = DateError;

    fn try_from(text: String) -> Result<Self, Self::Error> {
        text.parse()
    }
}

impl From<Date> for String {
    fn from(date: Date) -> Self {
        date.to_string()
    }
}

impl fmt::Display for Date {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}-{:02}-{:02}", self.year, self.month, self.day)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn today() -> Date {
        Date::new(2026, 3, 16).unwrap()
    }

    fn errors_of(packet: &HandoverPacket) -> Vec<String> {
        match packet.validate(today()) {
            Ok(()) => Vec::new(),
            Err(errors) => errors.paths().into_iter().map(str::to_owned).collect(),
        }
    }

    #[test]
    fn the_example_is_valid_and_round_trips_through_json() {
        let packet = HandoverPacket::example(today());
        packet.validate(today()).unwrap();
        let json = packet.to_json();
        let back = HandoverPacket::from_json(&json).unwrap();
        assert_eq!(back, packet);
        assert_eq!(back.to_json(), json);
        // The JSON uses the documented spellings.
        assert!(json.contains("\"frame\": \"vrijwillig\""), "{json}");
        assert!(json.contains("\"gezag\": \"not_applicable\""), "{json}");
        assert!(json.contains("\"date\": \"2026-02-02\""), "{json}");
        assert!(json.contains("\"family_involvement\": \"present\""), "{json}");
    }

    #[test]
    fn the_example_is_valid_on_any_day() {
        for day in ["2024-02-29", "2026-12-31", "0001-01-01", "9999-12-31"] {
            let today: Date = day.parse().unwrap();
            HandoverPacket::example(today).validate(today).unwrap();
        }
    }

    #[test]
    fn each_kind_of_problem_has_its_own_code_and_serializes_its_values_beside_it() {
        let every = Problem::every_kind();
        let codes: HashSet<String> = every.iter().map(Problem::code).collect();
        assert_eq!(codes.len(), every.len(), "two kinds share a code");
        assert!(codes
            .iter()
            .all(|c| !c.is_empty() && c.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')));
        let value = serde_json::to_value(Problem::BornLater { year: 2030, this_year: 2026 }).unwrap();
        assert_eq!(value, serde_json::json!({ "code": "born_later", "year": 2030, "this_year": 2026 }));
        assert_eq!(Problem::BornLater { year: 2030, this_year: 2026 }.to_string(), "2030 is after this year (2026)");
    }

    #[test]
    fn every_problem_is_reported_at_once_with_its_path() {
        let mut p = HandoverPacket::example(today());
        p.version = 3;
        p.reason = "  ".into();
        p.legal_frame.frame = LegalFrame::Ots;
        p.family[1].gezag = Gezag::NotApplicable;
        p.family[2].gezag = Gezag::Yes;
        p.family[3].id = "k1".into();
        p.statements[0].source = None;
        p.statements[1].date = Some(today().add_days(1));
        p.risks = Assessment::Assessed(Vec::new());
        p.protective_factors = Assessment::NotAssessed { reason: String::new() };
        p.plan.goals[0].evaluation_date = today().add_days(-1);
        p.contact.role_address = "sanne.bakker@lokaalteamwoerden.example".into();
        p.family_involvement = FamilyInvolvement::NotInformed { reason: String::new() };
        p.attachments[0].sha256_hex = "xyz".into();
        let errors = p.validate(today()).unwrap_err();
        assert_eq!(
            errors.paths(),
            [
                "version",
                "reason",
                "legal_frame.measure",
                "family[1].gezag",
                "family[2].gezag",
                "family[3].id",
                "statements[0].source",
                "statements[1].date",
                "risks.assessed",
                "protective_factors.not_assessed.reason",
                "plan.goals[0].evaluation_date",
                "contact.role_address",
                "family_involvement.not_informed.reason",
                "attachments[0].sha256_hex",
            ]
        );
        let text = errors.to_string();
        assert_eq!(text.lines().count(), errors.0.len());
        assert!(text.lines().all(|line| line.contains(": ")), "{text}");
        assert!(text.starts_with("version: is 3;"), "{text}");
    }

    type Mutation = fn(&mut HandoverPacket);

    /// Each rule alone: the mutation breaks exactly that rule and nothing else.
    #[test]
    fn each_rule_has_a_failing_case() {
        let cases: Vec<(Mutation, &[&str])> = vec![
            (|p| p.version = 0, &["version"]),
            (|p| p.sender.organisation.name = String::new(), &["sender.organisation.name"]),
            (|p| p.sender.worker = "anna de vries".into(), &["sender.worker"]),
            (|p| p.receiver.worker = String::new(), &["receiver.worker"]),
            (|p| p.sender.organisation.oin = p.receiver.organisation.oin.clone(), &["receiver.organisation.oin"]),
            (|p| p.route = String::new(), &["route"]),
            (|p| p.route = "VT naar LT".into(), &["route"]),
            (|p| p.reason = "\n".into(), &["reason"]),
            (|p| p.legal_frame.frame = LegalFrame::Voogdij, &["legal_frame.measure"]),
            (|p| p.legal_frame.frame = LegalFrame::JeugdReclassering, &["legal_frame.measure"]),
            (
                |p| {
                    p.legal_frame.frame = LegalFrame::Drang;
                    p.legal_frame.measure = Some(measure(-10, Some(300)));
                },
                &["legal_frame.measure"],
            ),
            (|p| p.legal_frame.measure = Some(measure(-10, Some(300))), &["legal_frame.measure"]),
            (
                |p| {
                    p.legal_frame = ots(measure(-10, Some(300)));
                    p.legal_frame.measure.as_mut().unwrap().court_reference = " ".into();
                },
                &["legal_frame.measure.court_reference"],
            ),
            (|p| p.legal_frame = ots(measure(-10, Some(-10))), &["legal_frame.measure.end_date"]),
            (|p| p.legal_frame = ots(measure(-10, Some(-20))), &["legal_frame.measure.end_date"]),
            (|p| p.legal_frame = ots(measure(-10, None)), &["legal_frame.measure.end_date"]),
            (
                |p| {
                    p.legal_frame = ots(measure(-10, None));
                    p.legal_frame.frame = LegalFrame::VoorlopigeMaatregel;
                },
                &["legal_frame.measure.end_date"],
            ),
            (|p| p.lawful_basis.code = String::new(), &["lawful_basis.code"]),
            (|p| p.lawful_basis.code = "Consent".into(), &["lawful_basis.code"]),
            (|p| p.lawful_basis.code = "vt-safety".into(), &["lawful_basis.justification"]),
            (|p| p.lawful_basis.justification = Some(" ".into()), &["lawful_basis.justification"]),
            (
                |p| {
                    p.family.clear();
                    keep_records_of_family(p);
                    p.risks = Assessment::NotAssessed { reason: "onderzoek afgebroken".into() };
                    p.protective_factors = Assessment::NotAssessed { reason: "onderzoek afgebroken".into() };
                },
                // With nobody in the family, nobody can have been told.
                &["family", "informed"],
            ),
            (
                |p| {
                    p.family.truncate(2);
                    keep_records_of_family(p);
                    p.risks = Assessment::Assessed(vec![Factor { text: "Ruzie".into(), members: vec![] }]);
                    p.protective_factors =
                        Assessment::Assessed(vec![Factor { text: "Netwerk".into(), members: vec![] }]);
                },
                &["family"],
            ),
            (
                // The factors that referred to the member by its old id now refer to nobody.
                |p| p.family[0].id = String::new(),
                &[
                    "family[0].id",
                    "consents[0].member",
                    "lawful_basis.consents",
                    "risks.assessed[0].members[0]",
                    "protective_factors.assessed[0].members[0]",
                    "protective_factors.assessed[1].members[0]",
                    "informed[0].member",
                    "informed",
                    "family_review.shown.to[0]",
                ],
            ),
            (|p| p.family[3].id = "k 2".into(), &["family[3].id", "protective_factors.assessed[2].members[0]"]),
            (|p| p.family[3].id = "123456782".into(), &["family[3].id", "protective_factors.assessed[2].members[0]"]),
            (|p| p.family[3].id = "k1".into(), &["family[3].id", "protective_factors.assessed[2].members[0]"]),
            (|p| p.family[1].name = String::new(), &["family[1].name"]),
            (|p| p.family[1].role = FamilyRole::Other(" ".into()), &["family[1].role"]),
            (|p| p.family[2].birth_year = Some(2027), &["family[2].birth_year"]),
            (|p| p.family[0].birth_year = Some(1890), &["family[0].birth_year"]),
            (|p| p.family[2].gezag = Gezag::Unknown, &["family[2].gezag"]),
            (|p| p.family[0].gezag = Gezag::NotApplicable, &["family[0].gezag"]),
            (|p| p.family[0].role = FamilyRole::Grandparent, &[]),
            (|p| p.family[3].role = FamilyRole::Other("halfzus".into()), &["family[3].gezag"]),
            (|p| p.statements.clear(), &["statements"]),
            (|p| p.statements[3].text = String::new(), &["statements[3].text"]),
            (|p| p.statements[0].source = None, &["statements[0].source"]),
            (|p| p.statements[0].source = Some(String::new()), &["statements[0].source"]),
            (|p| p.statements[0].date = None, &["statements[0].date"]),
            (|p| p.statements[0].date = Some(today().add_days(1)), &["statements[0].date"]),
            (|p| p.statements[4].date = Some(today().add_days(1)), &["statements[4].date"]),
            (|p| p.statements[3].source = Some(" ".into()), &["statements[3].source"]),
            (
                |p| {
                    p.statements[3].source = None;
                    p.statements[3].date = None;
                },
                &[],
            ),
            (|p| p.risks = Assessment::NotAssessed { reason: " ".into() }, &["risks.not_assessed.reason"]),
            (|p| p.risks = Assessment::Assessed(vec![]), &["risks.assessed"]),
            (|p| p.protective_factors = Assessment::Assessed(vec![]), &["protective_factors.assessed"]),
            (|p| set_factor(&mut p.risks, 1, "", "k1"), &["risks.assessed[1].text"]),
            (|p| set_factor(&mut p.risks, 1, "Slaapt slecht", "k9"), &["risks.assessed[1].members[0]"]),
            (|p| p.interventions.clear(), &[]),
            (|p| p.interventions[0].what = String::new(), &["interventions[0].what"]),
            (|p| p.interventions[0].by_organisation = String::new(), &["interventions[0].by_organisation"]),
            (|p| p.interventions[0].result = String::new(), &["interventions[0].result"]),
            (|p| p.interventions[0].from = today().add_days(1), &["interventions[0].from"]),
            (|p| p.interventions[1].until = Some(today().add_days(-701)), &["interventions[1].until"]),
            (|p| p.interventions[1].until = Some(today().add_days(1)), &["interventions[1].until"]),
            (|p| p.plan.goals.clear(), &["plan.goals"]),
            (|p| p.plan.goals[1].text = String::new(), &["plan.goals[1].text"]),
            (|p| p.plan.goals[1].owner.organisation = String::new(), &["plan.goals[1].owner.organisation"]),
            (|p| p.plan.goals[1].owner.address = String::new(), &["plan.goals[1].owner.address"]),
            (|p| p.plan.goals[2].evaluation_date = today().add_days(-1), &["plan.goals[2].evaluation_date"]),
            (|p| p.plan.goals[2].evaluation_date = today(), &[]),
            (|p| p.contact.organisation = p.sender.organisation.clone(), &["contact.organisation"]),
            (|p| p.contact.organisation.name = String::new(), &["contact.organisation.name", "contact.organisation"]),
            (|p| p.contact.role_address = " ".into(), &["contact.role_address"]),
            (|p| p.contact.role_address = "Sanne_Bakker@lokaalteamwoerden.example".into(), &["contact.role_address"]),
            (|p| p.contact.role_address = "s.bakker@lokaalteamwoerden.example".into(), &["contact.role_address"]),
            (|p| p.contact.role_address = "sanne@lokaalteamwoerden.example".into(), &["contact.role_address"]),
            (|p| p.contact.role_address = "sanne.bakker".into(), &["contact.role_address"]),
            (|p| p.contact.role_address = "anna.devries@veiligthuisutrecht.example".into(), &["contact.role_address"]),
            (|p| p.contact.role_address = "0348 123 456 (team jeugd)".into(), &[]),
            (|p| p.contact.worker_display_name = String::new(), &["contact.worker_display_name"]),
            (
                |p| p.family_involvement = FamilyInvolvement::NotInformed { reason: String::new() },
                &["family_involvement.not_informed.reason"],
            ),
            (|p| p.family_view.view = String::new(), &["family_view.view"]),
            (|p| p.family_view.view = " Onbekend ".into(), &["family_view.view", "family_view.disagreements"]),
            (
                |p| {
                    p.family_view = FamilyView { view: "unknown".into(), disagreements: vec![] };
                    p.family_involvement = FamilyInvolvement::Informed;
                },
                &["family_view.view"],
            ),
            (
                |p| {
                    p.family_view.view = "unknown".into();
                    p.family_involvement = FamilyInvolvement::NotInformed { reason: "Vader is dreigend".into() };
                },
                &["family_view.disagreements"],
            ),
            (|p| p.family_view.disagreements.push(" ".into()), &["family_view.disagreements[1]"]),
            (|p| p.attachments.clear(), &[]),
            (|p| p.attachments.push(p.attachments[0].clone()), &["attachments[1].blob"]),
            (|p| p.attachments[0].name = String::new(), &["attachments[0].name"]),
            (|p| p.attachments[0].name = "../plan.pdf".into(), &["attachments[0].name"]),
            (
                |p| p.attachments[0].sha256_hex = p.attachments[0].sha256_hex.to_uppercase(),
                &["attachments[0].sha256_hex"],
            ),
            (
                |p| {
                    p.attachments[0].sha256_hex.pop();
                },
                &["attachments[0].sha256_hex"],
            ),
            (|p| p.attachments[0].description = String::new(), &["attachments[0].description"]),
        ];
        for (i, (mutate, expected)) in cases.into_iter().enumerate() {
            let mut packet = HandoverPacket::example(today());
            mutate(&mut packet);
            assert_eq!(errors_of(&packet), expected, "case {i}");
        }
    }

    #[test]
    fn allowed_alternatives_validate() {
        let mut voogdij = HandoverPacket::example(today());
        voogdij.legal_frame = LegalStatus { frame: LegalFrame::Voogdij, measure: Some(measure(-400, None)) };
        voogdij.validate(today()).unwrap();

        let mut unseen = HandoverPacket::example(today());
        unseen.lawful_basis = LawfulBasis {
            code: "vt-safety".into(),
            justification: Some("Informeren van vader brengt moeder in gevaar; delen zonder toestemming.".into()),
            consents: Vec::new(),
        };
        unseen.family_involvement = FamilyInvolvement::NotInformed { reason: "Vader is dreigend".into() };
        unseen.family_view = FamilyView { view: "unknown".into(), disagreements: vec![] };
        unseen.risks = Assessment::NotAssessed { reason: "Onderzoek afgebroken na verhuizing".into() };
        unseen.validate(today()).unwrap();
        assert!(!unseen.lawful_basis.is_consent());
    }

    #[test]
    fn dates_are_real_calendar_days() {
        assert_eq!("2026-02-30".parse::<Date>(), Err(DateError::NoSuchDay { year: 2026, month: 2, day: 30 }));
        assert!("2025-02-29".parse::<Date>().is_err());
        assert!("1900-02-29".parse::<Date>().is_err());
        assert!("2000-02-29".parse::<Date>().is_ok());
        assert!("2026-04-31".parse::<Date>().is_err());
        assert!("2026-13-01".parse::<Date>().is_err());
        assert!("2026-00-10".parse::<Date>().is_err());
        assert!("0000-01-01".parse::<Date>().is_err());
        for bad in ["2026-2-3", "2026/02/03", "2026-02-03T00:00", "", "+026-02-03", "２０２６-02-03", "2026-0２-3"]
        {
            assert_eq!(bad.parse::<Date>(), Err(DateError::Format(bad.into())), "{bad}");
        }
        let date: Date = "2026-03-16".parse().unwrap();
        assert_eq!((date.year(), date.month(), date.day()), (2026, 3, 16));
        assert_eq!(date.to_string(), "2026-03-16");
        assert_eq!(serde_json::to_string(&date).unwrap(), "\"2026-03-16\"");
        assert!(serde_json::from_str::<Date>("\"2026-02-30\"").is_err());
    }

    #[test]
    fn days_are_added_across_months_years_and_leap_days() {
        let d = |s: &str| s.parse::<Date>().unwrap();
        assert_eq!(d("2024-02-28").add_days(1), d("2024-02-29"));
        assert_eq!(d("2025-02-28").add_days(1), d("2025-03-01"));
        assert_eq!(d("2025-12-31").add_days(1), d("2026-01-01"));
        assert_eq!(d("2026-03-16").add_days(-42), d("2026-02-02"));
        assert_eq!(d("2026-03-16").add_days(365), d("2027-03-16"));
        assert_eq!(d("1970-01-01").add_days(0), d("1970-01-01"));
        assert_eq!(d("2000-03-01").add_days(-1), d("2000-02-29"));
        assert_eq!(d("0001-01-01").add_days(-1), Date::MIN);
        assert_eq!(d("9999-12-31").add_days(i64::MAX), Date::MAX);
        assert_eq!(Date::MIN.add_days(i64::MIN), Date::MIN);
        // Every day of a leap cycle round-trips through the day count.
        let mut day = d("1999-12-25");
        for _ in 0..(4 * 366) {
            let next = day.add_days(1);
            assert!(next > day);
            assert_eq!(next.add_days(-1), day);
            assert_eq!(Date::new(next.year(), next.month(), next.day()), Ok(next));
            day = next;
        }
    }

    #[test]
    fn reading_json_reports_parse_problems_apart_from_validation() {
        let json = HandoverPacket::example(today()).to_json();
        assert!(matches!(HandoverPacket::from_json("not json"), Err(PacketError::Json(_))));
        assert!(matches!(HandoverPacket::from_json("{}"), Err(PacketError::Json(_))));
        let newer = json.replacen("\"version\": 2", "\"version\": 3", 1);
        assert!(matches!(HandoverPacket::from_json(&newer), Err(PacketError::UnsupportedVersion { found: 3 })));
        let bad_date = json.replacen("\"date\": \"2026-02-02\"", "\"date\": \"2026-02-30\"", 1);
        let error = HandoverPacket::from_json(&bad_date).unwrap_err().to_string();
        assert!(error.contains("2026-02-30 is not a calendar day"), "{error}");
        let typo = json.replacen("\"disagreements\"", "\"disagreement\"", 1);
        assert!(matches!(HandoverPacket::from_json(&typo), Err(PacketError::Json(_))));
        let extra = json.replacen("\"route\":", "\"risk_score\": 7, \"route\":", 1);
        assert!(matches!(HandoverPacket::from_json(&extra), Err(PacketError::Json(_))));
        let bad_oin = json.replacen("00000001800000000001", "0000000180000000000", 1);
        assert!(matches!(HandoverPacket::from_json(&bad_oin), Err(PacketError::Json(_))));

        // Readable but invalid: parsing succeeds, validation says what is wrong.
        let mut invalid = HandoverPacket::example(today());
        invalid.plan.goals.clear();
        let back = HandoverPacket::from_json(&invalid.to_json()).unwrap();
        assert_eq!(back.validate(today()).unwrap_err().paths(), ["plan.goals"]);
    }

    #[test]
    fn attachment_refs_carry_the_hash_as_hex() {
        let mut sha = [0u8; 32];
        sha[0] = 0xab;
        sha[31] = 0x01;
        let reference = AttachmentRef::new(BlobId(uuid::Uuid::nil()), "rapport.pdf", &sha, "Raadsrapport");
        assert_eq!(reference.sha256_hex.len(), 64);
        assert!(reference.sha256_hex.starts_with("ab00") && reference.sha256_hex.ends_with("01"));
        let mut packet = HandoverPacket::example(today());
        packet.attachments.push(reference);
        packet.validate(today()).unwrap();
    }

    /// Drops the consent, information and review records of members no longer in the family.
    fn keep_records_of_family(p: &mut HandoverPacket) {
        let ids: Vec<String> = p.family.iter().map(|m| m.id.clone()).collect();
        p.consents.retain(|c| ids.contains(&c.member));
        let kept: Vec<String> = p.consents.iter().map(|c| c.id.clone()).collect();
        p.lawful_basis.consents.retain(|id| kept.contains(id));
        p.informed.retain(|r| ids.contains(&r.member));
        if let Some(FamilyReview::Shown { to, .. }) = &mut p.family_review {
            to.retain(|m| ids.contains(m));
            if to.is_empty() {
                p.family_review = Some(FamilyReview::NotShown { reason: "niemand om het aan voor te leggen".into() });
            }
        }
    }

    fn measure(start: i64, end: Option<i64>) -> Measure {
        Measure {
            court_reference: "C/16/512345 / JE RK 26-123".into(),
            start_date: today().add_days(start),
            end_date: end.map(|days| today().add_days(days)),
        }
    }

    fn ots(measure: Measure) -> LegalStatus {
        LegalStatus { frame: LegalFrame::Ots, measure: Some(measure) }
    }

    fn set_factor(assessment: &mut Assessment, index: usize, text: &str, member: &str) {
        if let Assessment::Assessed(factors) = assessment {
            factors[index] = Factor { text: text.into(), members: vec![member.into()] };
        }
    }
}
