//! The handover packet as a form: every field of `HandoverPacket`, named by its path.
//!
//! Each control is named by the path the SDK's `validate` uses for the field
//! (`family[1].gezag`, `plan.goals[0].evaluation_date`), so every problem the
//! SDK finds is shown at its own control without a table that maps one name
//! to another. Values that do not even parse (a date that is no date) are
//! reported the same way, at their path. The form's values are kept as a flat
//! map, so that a draft survives adding a row, a preview and a restart.

use std::collections::BTreeMap;

use ketenhub_sdk::packet::{
    Assessment, AttachmentRef, Consent, Contact, Date, Factor, FamilyInvolvement, FamilyMember, FamilyReview,
    FamilyRole, FamilyView, FieldError, Gezag, Goal, GoalOwner, HandoverPacket, Informed, Intervention, LawfulBasis,
    LegalFrame, LegalStatus, Measure, Organisation, Party, Plan, Problem, Recipient, Statement, StatementKind, Told,
    PACKET_VERSION,
};

/// The form's values, by field path.
pub type Values = BTreeMap<String, String>;

/// The repeated sections of the form, with the name of their row count.
pub const SECTIONS: [&str; 8] = [
    "family",
    "consents",
    "informed",
    "statements",
    "risks.assessed",
    "protective_factors.assessed",
    "interventions",
    "plan.goals",
];

/// What the packet takes from outside the form: both parties and the route.
#[derive(Debug, Clone)]
pub struct Frame {
    /// The sender (this desk).
    pub sender: Party,
    /// The receiving organisation; the worker comes from the form.
    pub receiver: Organisation,
    /// The route chosen.
    pub route: String,
    /// The legal basis chosen.
    pub legal_basis: String,
}

/// How many rows a repeated section has (at least one, so there is always a row to fill).
pub fn rows(values: &Values, section: &str) -> usize {
    values.get(&format!("{section}.count")).and_then(|c| c.parse().ok()).unwrap_or(1).clamp(1, 50)
}

/// Adds an empty row to a section.
pub fn add_row(values: &mut Values, section: &str) {
    let next = rows(values, section) + 1;
    values.insert(format!("{section}.count"), next.to_string());
}

/// Reads a form's values into a packet, with every problem at its path.
struct Reader<'a> {
    values: &'a Values,
    errors: Vec<FieldError>,
}

impl Reader<'_> {
    fn text(&self, path: &str) -> String {
        self.values.get(path).map(|v| v.trim().to_owned()).unwrap_or_default()
    }

    fn optional(&self, path: &str) -> Option<String> {
        Some(self.text(path)).filter(|v| !v.is_empty())
    }

    fn fail(&mut self, path: &str, problem: Problem) {
        self.errors.push(FieldError::new(path, problem));
    }

    fn date(&mut self, path: &str) -> Option<Date> {
        let text = self.optional(path)?;
        match text.parse() {
            Ok(date) => Some(date),
            Err(_) => {
                self.fail(path, Problem::NotADate { value: text });
                None
            }
        }
    }

    /// A date the packet requires; a missing one is reported, and a placeholder keeps reading going.
    fn required_date(&mut self, path: &str) -> Date {
        match self.date(path) {
            Some(date) => date,
            None => {
                if self.optional(path).is_none() {
                    self.fail(path, Problem::Empty);
                }
                Date::from_unix_ms(0)
            }
        }
    }

    /// A list of ids separated by commas or spaces.
    fn ids(&self, path: &str) -> Vec<String> {
        self.text(path).split([',', ' ']).filter(|m| !m.is_empty()).map(str::to_owned).collect()
    }

    /// Whether any field of a row has a value: untouched rows are left out.
    fn row_used(&self, prefix: &str) -> bool {
        self.values.iter().any(|(k, v)| k.starts_with(prefix) && !k.ends_with(".count") && !v.trim().is_empty())
    }

    fn used_rows(&self, section: &str) -> Vec<String> {
        (0..rows(self.values, section)).map(|i| format!("{section}[{i}]")).filter(|p| self.row_used(p)).collect()
    }

    fn family(&mut self) -> Vec<FamilyMember> {
        let mut family = Vec::new();
        for path in self.used_rows("family") {
            let role = match self.text(&format!("{path}.role")).as_str() {
                "child" => FamilyRole::Child,
                "parent" => FamilyRole::Parent,
                "step_parent" => FamilyRole::StepParent,
                "foster_parent" => FamilyRole::FosterParent,
                "grandparent" => FamilyRole::Grandparent,
                _ => FamilyRole::Other(self.text(&format!("{path}.role_other"))),
            };
            let birth_year = match self.optional(&format!("{path}.birth_year")) {
                None => None,
                Some(year) => match year.parse() {
                    Ok(year) => Some(year),
                    Err(_) => {
                        self.fail(&format!("{path}.birth_year"), Problem::NotAYear { value: year.clone() });
                        None
                    }
                },
            };
            let gezag = match self.text(&format!("{path}.gezag")).as_str() {
                "yes" => Gezag::Yes,
                "no" => Gezag::No,
                "not_applicable" => Gezag::NotApplicable,
                _ => Gezag::Unknown,
            };
            family.push(FamilyMember {
                id: self.text(&format!("{path}.id")),
                name: self.text(&format!("{path}.name")),
                role,
                birth_year,
                gezag,
                concerned: self.text(&format!("{path}.concerned")) != "no",
            });
        }
        family
    }

    fn consents(&mut self) -> Vec<Consent> {
        let mut consents = Vec::new();
        for path in self.used_rows("consents") {
            let mut recipients = Vec::new();
            for token in self.ids(&format!("{path}.recipients")) {
                match token.parse::<Recipient>() {
                    Ok(recipient) => recipients.push(recipient),
                    Err(problem) => self.fail(&format!("{path}.recipients"), problem),
                }
            }
            consents.push(Consent {
                id: self.text(&format!("{path}.id")),
                member: self.text(&format!("{path}.member")),
                recipients,
                purpose: self.text(&format!("{path}.purpose")),
                given_on: self.required_date(&format!("{path}.given_on")),
                recorded_by: self.text(&format!("{path}.recorded_by")),
                until: self.date(&format!("{path}.until")),
                withdrawn_on: self.date(&format!("{path}.withdrawn_on")),
            });
        }
        consents
    }

    fn informed(&mut self) -> Vec<Informed> {
        let mut informed = Vec::new();
        for path in self.used_rows("informed") {
            let outcome = if self.text(&format!("{path}.outcome")) == "not_told" {
                Told::NotTold { reason: self.text(&format!("{path}.outcome.not_told.reason")) }
            } else {
                Told::Told {
                    on: self.required_date(&format!("{path}.outcome.told.on")),
                    by: self.text(&format!("{path}.outcome.told.by")),
                    what: self.text(&format!("{path}.outcome.told.what")),
                }
            };
            informed.push(Informed {
                member: self.text(&format!("{path}.member")),
                decision: self.text(&format!("{path}.decision")),
                outcome,
            });
        }
        informed
    }

    fn review(&mut self) -> Option<FamilyReview> {
        match self.text("family_review.kind").as_str() {
            "shown" => Some(FamilyReview::Shown {
                to: self.ids("family_review.shown.to"),
                on: self.required_date("family_review.shown.on"),
                response: self.text("family_review.shown.response"),
            }),
            "not_shown" => Some(FamilyReview::NotShown { reason: self.text("family_review.not_shown.reason") }),
            _ => None,
        }
    }

    fn statements(&mut self) -> Vec<Statement> {
        let mut statements = Vec::new();
        for path in self.used_rows("statements") {
            let kind = match self.text(&format!("{path}.kind")).as_str() {
                "fact" => StatementKind::Fact,
                "suspicion" => StatementKind::Suspicion,
                _ => StatementKind::Opinion,
            };
            statements.push(Statement {
                kind,
                text: self.text(&format!("{path}.text")),
                source: self.optional(&format!("{path}.source")),
                date: self.date(&format!("{path}.date")),
            });
        }
        statements
    }

    fn assessment(&mut self, section: &str) -> Assessment {
        if self.text(&format!("{section}.done")) == "no" {
            return Assessment::NotAssessed { reason: self.text(&format!("{section}.not_assessed.reason")) };
        }
        let factors = self
            .used_rows(&format!("{section}.assessed"))
            .iter()
            .map(|path| Factor {
                text: self.text(&format!("{path}.text")),
                members: self.ids(&format!("{path}.members")),
            })
            .collect();
        Assessment::Assessed(factors)
    }

    fn interventions(&mut self) -> Vec<Intervention> {
        let mut interventions = Vec::new();
        for path in self.used_rows("interventions") {
            interventions.push(Intervention {
                what: self.text(&format!("{path}.what")),
                by_organisation: self.text(&format!("{path}.by_organisation")),
                from: self.required_date(&format!("{path}.from")),
                until: self.date(&format!("{path}.until")),
                result: self.text(&format!("{path}.result")),
            });
        }
        interventions
    }

    fn goals(&mut self) -> Vec<Goal> {
        let mut goals = Vec::new();
        for path in self.used_rows("plan.goals") {
            goals.push(Goal {
                text: self.text(&format!("{path}.text")),
                owner: GoalOwner {
                    organisation: self.text(&format!("{path}.owner.organisation")),
                    address: self.text(&format!("{path}.owner.address")),
                },
                evaluation_date: self.required_date(&format!("{path}.evaluation_date")),
            });
        }
        goals
    }

    fn legal_frame(&mut self) -> LegalStatus {
        let frame = [
            LegalFrame::Vrijwillig,
            LegalFrame::Drang,
            LegalFrame::VoorlopigeMaatregel,
            LegalFrame::Ots,
            LegalFrame::Voogdij,
            LegalFrame::JeugdReclassering,
        ]
        .into_iter()
        .find(|f| f.code() == self.text("legal_frame.frame"))
        .unwrap_or(LegalFrame::Vrijwillig);
        let measure = frame.is_measure().then(|| Measure {
            court_reference: self.text("legal_frame.measure.court_reference"),
            start_date: self.required_date("legal_frame.measure.start_date"),
            end_date: self.date("legal_frame.measure.end_date"),
        });
        LegalStatus { frame, measure }
    }

    fn involvement(&self) -> FamilyInvolvement {
        match self.text("family_involvement.kind").as_str() {
            "present" => FamilyInvolvement::Present,
            "informed" => FamilyInvolvement::Informed,
            _ => FamilyInvolvement::NotInformed { reason: self.text("family_involvement.not_informed.reason") },
        }
    }
}

/// The packet the form describes, or every problem found while reading it (the SDK's `validate` is the
/// caller's next step, with the problems of a packet that reads).
pub fn packet(
    values: &Values,
    frame: &Frame,
    attachments: &[AttachmentRef],
) -> Result<HandoverPacket, Vec<FieldError>> {
    let mut r = Reader { values, errors: Vec::new() };
    let receiver = Party { organisation: frame.receiver.clone(), worker: r.text("receiver.worker") };
    let packet = HandoverPacket {
        version: PACKET_VERSION,
        sender: frame.sender.clone(),
        route: frame.route.clone(),
        reason: r.text("reason"),
        legal_frame: r.legal_frame(),
        lawful_basis: LawfulBasis {
            code: frame.legal_basis.clone(),
            justification: r.optional("lawful_basis.justification"),
            consents: r.ids("lawful_basis.consents"),
        },
        family: r.family(),
        consents: r.consents(),
        informed: r.informed(),
        family_review: r.review(),
        statements: r.statements(),
        risks: r.assessment("risks"),
        protective_factors: r.assessment("protective_factors"),
        interventions: r.interventions(),
        plan: Plan { goals: r.goals() },
        contact: Contact {
            organisation: frame.receiver.clone(),
            role_address: r.text("contact.role_address"),
            worker_display_name: r.text("contact.worker_display_name"),
        },
        family_involvement: r.involvement(),
        family_view: FamilyView {
            view: r.text("family_view.view"),
            disagreements: r
                .text("family_view.disagreements")
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(str::to_owned)
                .collect(),
        },
        attachments: attachments.iter().filter(|a| r.text(&format!("attach.{}", a.blob.0)) == "on").cloned().collect(),
        receiver,
    };
    if r.errors.is_empty() {
        Ok(packet)
    } else {
        Err(r.errors)
    }
}

fn put(values: &mut Values, path: impl Into<String>, value: impl ToString) {
    values.insert(path.into(), value.to_string());
}

fn put_rows(values: &mut Values, section: &str, count: usize) {
    put(values, format!("{section}.count"), count.max(1));
}

/// The form's values for a packet: to start a draft from an existing packet (the demo's, or one being
/// corrected). The inverse of [`packet`] for the fields the form holds.
pub fn values(p: &HandoverPacket) -> Values {
    let mut v = Values::new();
    put(&mut v, "receiver.worker", &p.receiver.worker);
    put(&mut v, "reason", &p.reason);
    put(&mut v, "legal_frame.frame", p.legal_frame.frame.code());
    if let Some(m) = &p.legal_frame.measure {
        put(&mut v, "legal_frame.measure.court_reference", &m.court_reference);
        put(&mut v, "legal_frame.measure.start_date", m.start_date);
        if let Some(end) = m.end_date {
            put(&mut v, "legal_frame.measure.end_date", end);
        }
    }
    if let Some(j) = &p.lawful_basis.justification {
        put(&mut v, "lawful_basis.justification", j);
    }
    put_rows(&mut v, "family", p.family.len());
    for (i, m) in p.family.iter().enumerate() {
        let path = format!("family[{i}]");
        put(&mut v, format!("{path}.id"), &m.id);
        put(&mut v, format!("{path}.name"), &m.name);
        let role = match &m.role {
            FamilyRole::Child => "child",
            FamilyRole::Parent => "parent",
            FamilyRole::StepParent => "step_parent",
            FamilyRole::FosterParent => "foster_parent",
            FamilyRole::Grandparent => "grandparent",
            FamilyRole::Other(other) => {
                put(&mut v, format!("{path}.role_other"), other);
                "other"
            }
        };
        put(&mut v, format!("{path}.role"), role);
        if let Some(year) = m.birth_year {
            put(&mut v, format!("{path}.birth_year"), year);
        }
        let gezag = match m.gezag {
            Gezag::Yes => "yes",
            Gezag::No => "no",
            Gezag::Unknown => "unknown",
            Gezag::NotApplicable => "not_applicable",
        };
        put(&mut v, format!("{path}.gezag"), gezag);
        put(&mut v, format!("{path}.concerned"), if m.concerned { "yes" } else { "no" });
    }
    put(&mut v, "lawful_basis.consents", p.lawful_basis.consents.join(", "));
    put_consents(&mut v, &p.consents);
    put_informed(&mut v, &p.informed);
    match &p.family_review {
        Some(FamilyReview::Shown { to, on, response }) => {
            put(&mut v, "family_review.kind", "shown");
            put(&mut v, "family_review.shown.to", to.join(", "));
            put(&mut v, "family_review.shown.on", on);
            put(&mut v, "family_review.shown.response", response);
        }
        Some(FamilyReview::NotShown { reason }) => {
            put(&mut v, "family_review.kind", "not_shown");
            put(&mut v, "family_review.not_shown.reason", reason);
        }
        None => {}
    }
    put_rows(&mut v, "statements", p.statements.len());
    for (i, s) in p.statements.iter().enumerate() {
        let path = format!("statements[{i}]");
        let kind = match s.kind {
            StatementKind::Fact => "fact",
            StatementKind::Suspicion => "suspicion",
            StatementKind::Opinion => "opinion",
        };
        put(&mut v, format!("{path}.kind"), kind);
        put(&mut v, format!("{path}.text"), &s.text);
        put(&mut v, format!("{path}.source"), s.source.clone().unwrap_or_default());
        put(&mut v, format!("{path}.date"), s.date.map(|d| d.to_string()).unwrap_or_default());
    }
    for (section, assessment) in [("risks", &p.risks), ("protective_factors", &p.protective_factors)] {
        match assessment {
            Assessment::NotAssessed { reason } => {
                put(&mut v, format!("{section}.done"), "no");
                put(&mut v, format!("{section}.not_assessed.reason"), reason);
            }
            Assessment::Assessed(factors) => {
                put(&mut v, format!("{section}.done"), "yes");
                put_rows(&mut v, &format!("{section}.assessed"), factors.len());
                for (i, f) in factors.iter().enumerate() {
                    put(&mut v, format!("{section}.assessed[{i}].text"), &f.text);
                    put(&mut v, format!("{section}.assessed[{i}].members"), f.members.join(", "));
                }
            }
        }
    }
    put_rows(&mut v, "interventions", p.interventions.len());
    for (i, x) in p.interventions.iter().enumerate() {
        let path = format!("interventions[{i}]");
        put(&mut v, format!("{path}.what"), &x.what);
        put(&mut v, format!("{path}.by_organisation"), &x.by_organisation);
        put(&mut v, format!("{path}.from"), x.from);
        put(&mut v, format!("{path}.until"), x.until.map(|d| d.to_string()).unwrap_or_default());
        put(&mut v, format!("{path}.result"), &x.result);
    }
    put_rows(&mut v, "plan.goals", p.plan.goals.len());
    for (i, g) in p.plan.goals.iter().enumerate() {
        let path = format!("plan.goals[{i}]");
        put(&mut v, format!("{path}.text"), &g.text);
        put(&mut v, format!("{path}.owner.organisation"), &g.owner.organisation);
        put(&mut v, format!("{path}.owner.address"), &g.owner.address);
        put(&mut v, format!("{path}.evaluation_date"), g.evaluation_date);
    }
    put(&mut v, "contact.role_address", &p.contact.role_address);
    put(&mut v, "contact.worker_display_name", &p.contact.worker_display_name);
    let involvement = match &p.family_involvement {
        FamilyInvolvement::Present => "present",
        FamilyInvolvement::Informed => "informed",
        FamilyInvolvement::NotInformed { reason } => {
            put(&mut v, "family_involvement.not_informed.reason", reason);
            "not_informed"
        }
    };
    put(&mut v, "family_involvement.kind", involvement);
    put(&mut v, "family_view.view", &p.family_view.view);
    put(&mut v, "family_view.disagreements", p.family_view.disagreements.join("\n"));
    v
}

fn put_consents(v: &mut Values, consents: &[Consent]) {
    put_rows(v, "consents", consents.len());
    for (i, c) in consents.iter().enumerate() {
        let path = format!("consents[{i}]");
        put(v, format!("{path}.id"), &c.id);
        put(v, format!("{path}.member"), &c.member);
        let recipients: Vec<String> = c.recipients.iter().map(ToString::to_string).collect();
        put(v, format!("{path}.recipients"), recipients.join(", "));
        put(v, format!("{path}.purpose"), &c.purpose);
        put(v, format!("{path}.given_on"), c.given_on);
        put(v, format!("{path}.recorded_by"), &c.recorded_by);
        put(v, format!("{path}.until"), c.until.map(|d| d.to_string()).unwrap_or_default());
        put(v, format!("{path}.withdrawn_on"), c.withdrawn_on.map(|d| d.to_string()).unwrap_or_default());
    }
}

fn put_informed(v: &mut Values, informed: &[Informed]) {
    put_rows(v, "informed", informed.len());
    for (i, record) in informed.iter().enumerate() {
        let path = format!("informed[{i}]");
        put(v, format!("{path}.member"), &record.member);
        put(v, format!("{path}.decision"), &record.decision);
        match &record.outcome {
            Told::Told { on, by, what } => {
                put(v, format!("{path}.outcome"), "told");
                put(v, format!("{path}.outcome.told.on"), on);
                put(v, format!("{path}.outcome.told.by"), by);
                put(v, format!("{path}.outcome.told.what"), what);
            }
            Told::NotTold { reason } => {
                put(v, format!("{path}.outcome"), "not_told");
                put(v, format!("{path}.outcome.not_told.reason"), reason);
            }
        }
    }
}

/// Takes the family and its consents from an earlier packet of the case into the draft, replacing
/// what the draft had there, and names as the lawful basis's consents those in force on `today`.
pub fn carry(values: &mut Values, earlier: &HandoverPacket, today: Date) {
    let from = self::values(earlier);
    let carried = |key: &str| {
        key.starts_with("family[") || key.starts_with("consents[") || key == "family.count" || key == "consents.count"
    };
    values.retain(|key, _| !carried(key));
    values.extend(from.into_iter().filter(|(key, _)| carried(key)));
    let in_force: Vec<&str> = earlier.consents.iter().filter(|c| c.in_force(today)).map(|c| c.id.as_str()).collect();
    put(values, "lawful_basis.consents", in_force.join(", "));
}

/// The HTML id of a field's control, from its path.
pub fn field_id(path: &str) -> String {
    let mut id = String::from("f-");
    id.extend(path.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '-' }));
    id
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(p: &HandoverPacket) -> Frame {
        Frame {
            sender: p.sender.clone(),
            receiver: p.receiver.organisation.clone(),
            route: p.route.clone(),
            legal_basis: p.lawful_basis.code.clone(),
        }
    }

    #[test]
    fn the_example_packet_survives_the_form() {
        let today = Date::from_unix_ms(1_800_000_000_000);
        let mut example = HandoverPacket::example(today);
        let attachments = std::mem::take(&mut example.attachments);
        let mut v = values(&example);
        let back = packet(&v, &frame(&example), &attachments).expect("the form reads");
        assert_eq!(back, example);
        v.insert(format!("attach.{}", attachments[0].blob.0), "on".into());
        assert_eq!(packet(&v, &frame(&example), &attachments).expect("reads").attachments, attachments);
    }

    #[test]
    fn a_bad_date_is_reported_at_its_field() {
        let example = HandoverPacket::example(Date::from_unix_ms(1_800_000_000_000));
        let mut v = values(&example);
        v.insert("statements[0].date".into(), "gisteren".into());
        v.insert("family[0].birth_year".into(), "x".into());
        let errors = packet(&v, &frame(&example), &[]).expect_err("refused");
        let paths: Vec<_> = errors.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(paths, ["family[0].birth_year", "statements[0].date"]);
    }

    #[test]
    fn a_later_handover_takes_the_family_and_its_consents_in_force() {
        let today = Date::from_unix_ms(1_800_000_000_000);
        let mut earlier = HandoverPacket::example(today);
        earlier.consents[1].withdrawn_on = Some(today);
        let mut draft = Values::new();
        draft.insert("reason".into(), "verder naar de GI".into());
        draft.insert("family[7].name".into(), "a row of an older draft".into());
        carry(&mut draft, &earlier, today);
        assert_eq!(draft["reason"], "verder naar de GI", "the rest of the draft stays");
        assert!(!draft.contains_key("family[7].name"));
        assert_eq!(draft["family[4].name"], "Lotte de Vries");
        assert_eq!(draft["consents[0].recipients"], "LT, GI");
        assert_eq!(draft["consents.count"], "2");
        assert_eq!(draft["lawful_basis.consents"], "c1", "the withdrawn consent is not relied on");
    }

    #[test]
    fn ids_are_safe_for_html() {
        assert_eq!(field_id("family[1].gezag"), "f-family-1--gezag");
    }
}
