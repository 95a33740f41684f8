//! The access report as the family reads it: who had access to their data, what kind, when and why.
//!
//! The officer's report lists every person and every action, in English, for checking. A family that
//! asks (GDPR article 15) needs the same facts in plain Dutch: per organisation and role, what kind
//! of access (read the case, took it over, added someone, shared earlier messages), from when to
//! when, on what legal ground in words, and every share made without their consent with the written
//! reason for it. Workers appear by their organisation and role, never by name or id: the family
//! learns who had access without the staff's personal details (staff safety); the officer's version
//! keeps the names for when the law requires them. Refused attempts gave no access and are left out.

use std::collections::{BTreeMap, BTreeSet};

use wire::audit::{AuditAction, AuditEntry, AuditOutcome, AuditRecord};
use wire::{Role, ThreadId};

use crate::family::{dutch_date, inline_style, linked_style, sentence, Page};
use crate::packet::Date;

/// What the report needs to say things in words: the policy's legal bases and organisations.
#[derive(Debug, Clone, Default)]
pub struct Glossary {
    /// Per legal basis code: what it means in words for the family, and whether it allows sharing
    /// without consent.
    pub bases: BTreeMap<String, (String, bool)>,
    /// Organisation names by OIN.
    pub organisations: BTreeMap<String, String>,
    /// The organisation whose privacy officer answers the family's questions about the report.
    pub answered_by: String,
}

impl Glossary {
    fn basis(&self, code: &str) -> String {
        match self.bases.get(code) {
            Some((words, _)) => words.clone(),
            None if code == crate::packet::LawfulBasis::CONSENT => "met toestemming".into(),
            None => code.to_owned(),
        }
    }

    fn without_consent(&self, code: &str) -> bool {
        self.bases.get(code).is_some_and(|(_, without)| *without)
    }

    fn organisation(&self, oin: &str) -> String {
        self.organisations.get(oin).cloned().unwrap_or_else(|| "een andere organisatie".into())
    }
}

/// A kind of access, in the order the report lists them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Read,
    Wrote,
    Received,
    HandedOver,
    Step,
    Added,
    Removed,
    Shared,
    Checked,
    Reviewed,
}

impl Kind {
    fn of(record: &AuditRecord) -> Option<Kind> {
        let object = record.object.as_deref().unwrap_or_default();
        Some(match record.action {
            AuditAction::Deliver | AuditAction::BlobFetch | AuditAction::ListMembers => Kind::Read,
            AuditAction::Send | AuditAction::BlobPut => Kind::Wrote,
            AuditAction::Handover if object.starts_with("accept offer") || object.starts_with("complete offer") => {
                Kind::Received
            }
            AuditAction::Handover if object == "team lead takes the case over" => Kind::Received,
            AuditAction::Handover if object.starts_with("offer to") => Kind::HandedOver,
            AuditAction::Handover => Kind::Step,
            AuditAction::AddMember => Kind::Added,
            AuditAction::RemoveMember => Kind::Removed,
            AuditAction::ShareHistory => Kind::Shared,
            AuditAction::AuditQuery => Kind::Checked,
            AuditAction::Review => Kind::Reviewed,
            _ => return None,
        })
    }

    fn words(self) -> &'static str {
        match self {
            Kind::Read => "las de berichten en stukken van de zaak",
            Kind::Wrote => "schreef in de zaak of voegde een stuk toe",
            Kind::Received => "nam de zaak over",
            Kind::HandedOver => "bood de zaak aan een andere organisatie aan",
            Kind::Step => "werkte aan de afspraken over de zaak (termijnen, afsluiten, overdracht)",
            Kind::Added => "voegde iemand toe aan de zaak",
            Kind::Removed => "haalde iemand van de zaak",
            Kind::Shared => "deelde eerdere berichten met iemand die later bij de zaak kwam",
            Kind::Checked => "controleerde wie toegang had tot de zaak",
            Kind::Reviewed => "beoordeelde een deling zonder toestemming",
        }
    }
}

fn role_words(role: Role) -> &'static str {
    match role {
        Role::Caseworker => "medewerkers",
        Role::System => "het computersysteem",
        Role::PrivacyOfficer => "functionaris gegevensbescherming",
        Role::Admin => "beheer van Ketenhub",
    }
}

/// What one organisation's people in one role did of one kind.
#[derive(Default)]
struct Seen {
    first_ms: u64,
    last_ms: u64,
    times: usize,
    bases: BTreeSet<String>,
}

/// One organisation's people in one role: who they are (counted, never shown) and what they did.
type Group = (BTreeSet<String>, BTreeMap<Kind, Seen>);

/// The family's report as one standalone HTML page with its print stylesheet.
pub fn family_html(case: ThreadId, entries: &[AuditEntry], glossary: &Glossary) -> String {
    family_page(case, entries, glossary).page(TITLE, &inline_style())
}

/// The family's report as an HTML page that links its stylesheet from `href`
/// ([`crate::family::STYLE`] served there).
pub fn family_html_linked(case: ThreadId, entries: &[AuditEntry], glossary: &Glossary, href: &str) -> String {
    family_page(case, entries, glossary).page(TITLE, &linked_style(href))
}

const TITLE: &str = "Wie heeft uw gegevens gezien";

fn day(at_ms: u64) -> String {
    dutch_date(Date::from_unix_ms(at_ms))
}

fn family_page(case: ThreadId, entries: &[AuditEntry], glossary: &Glossary) -> Page {
    // An allowed action the hub then recorded as failed gave no access either.
    let undone: BTreeSet<u64> = entries.iter().filter_map(|e| wire::audit::undone_entry(&e.record)).collect();
    let allowed: Vec<&AuditEntry> = entries
        .iter()
        .filter(|e| e.record.outcome == AuditOutcome::Allowed)
        .filter(|e| !undone.contains(&e.seq) || !entries.iter().any(|later| wire::audit::undoes(later, e)))
        .collect();
    let mut page = Page::default();
    page.heading(1, TITLE);
    let reference = case.0.simple().to_string();
    let period = match (allowed.first(), allowed.last()) {
        (Some(first), Some(last)) => format!(" van {} tot en met {}", day(first.record.at_ms), day(last.record.at_ms)),
        _ => String::new(),
    };
    page.para(&format!(
        "Dit overzicht laat zien wie uw gegevens in Ketenhub heeft gezien of gedeeld{period}, en waarom. \
         Het gaat over de zaak met kenmerk {}. Het komt uit het logboek van Ketenhub. Wat er in de zaak \
         staat, staat hier niet in: dat kan Ketenhub niet lezen.",
        &reference[..8]
    ));
    organisations(&mut page, &allowed, glossary);
    without_consent(&mut page, entries, glossary);
    page.heading(2, "Wat kunt u doen");
    page.para(&format!(
        "Heeft u een vraag over dit overzicht? Of vindt u dat iemand uw gegevens niet had mogen zien? \
         Neem contact op met de functionaris gegevensbescherming van {}. U mag ook een klacht indienen \
         bij de Autoriteit Persoonsgegevens.",
        glossary.answered_by
    ));
    page.para(
        "Namen van medewerkers staan hier niet in; u ziet hun organisatie en hun rol. Heeft u de namen \
         nodig, bijvoorbeeld voor een klacht? Vraag ze dan aan de functionaris gegevensbescherming.",
    );
    page
}

fn organisations(page: &mut Page, allowed: &[&AuditEntry], glossary: &Glossary) {
    let mut groups: BTreeMap<(String, &'static str), Group> = BTreeMap::new();
    for entry in allowed {
        let record = &entry.record;
        let (Some(actor), Some(kind)) = (&record.actor, Kind::of(record)) else { continue };
        let group = groups.entry((actor.organisation.clone(), role_words(actor.role))).or_default();
        group.0.insert(actor.worker.clone());
        let seen = group.1.entry(kind).or_insert_with(|| Seen { first_ms: record.at_ms, ..Seen::default() });
        seen.last_ms = seen.last_ms.max(record.at_ms);
        seen.times += 1;
        seen.bases.extend(record.legal_basis.iter().map(|b| glossary.basis(b)));
    }
    page.heading(2, "Wie had toegang");
    if groups.is_empty() {
        page.para("Niemand had toegang tot de zaak.");
    }
    for ((organisation, role), (people, kinds)) in groups {
        let count = match people.len() {
            1 => "1 persoon".to_owned(),
            n => format!("{n} personen"),
        };
        page.heading(3, &format!("{organisation}: {role} ({count})"));
        let lines: Vec<String> = kinds
            .iter()
            .map(|(kind, seen)| {
                let when = if day(seen.first_ms) == day(seen.last_ms) {
                    format!("op {}", day(seen.first_ms))
                } else {
                    format!("van {} tot en met {}", day(seen.first_ms), day(seen.last_ms))
                };
                let times = if seen.times == 1 { "1 keer".to_owned() } else { format!("{} keer", seen.times) };
                let bases = if seen.bases.is_empty() {
                    String::new()
                } else {
                    format!(" Grond: {}.", seen.bases.iter().cloned().collect::<Vec<_>>().join("; "))
                };
                format!("{} {when} ({times}).{bases}", capitalised(kind.words()))
            })
            .collect();
        page.list(&lines);
    }
}

fn without_consent(page: &mut Page, entries: &[AuditEntry], glossary: &Glossary) {
    page.heading(2, "Gedeeld zonder uw toestemming");
    let shares = super::shares_without_consent(entries, |basis| glossary.without_consent(basis));
    if shares.is_empty() {
        page.para("Uw gegevens zijn niet zonder uw toestemming gedeeld.");
        return;
    }
    page.para(
        "Soms mag een organisatie uw gegevens delen zonder uw toestemming, bijvoorbeeld om een kind te \
         beschermen. Dat moet dan worden opgeschreven, met de reden. Dit is er gedeeld:",
    );
    let lines: Vec<String> = shares
        .iter()
        .map(|share| {
            let record = &share.record;
            let from = record.actor.as_ref().map_or("Een organisatie", |a| a.organisation.as_str());
            let to = recipient(record, glossary);
            let basis = record.legal_basis.as_deref().map(|b| glossary.basis(b)).unwrap_or_default();
            let purpose = record.purpose.as_deref().unwrap_or_default();
            let why = match purpose.split_once(" (justification: ") {
                Some((reason, justification)) => {
                    format!("{} {}", sentence(reason), sentence(justification.trim_end_matches(')')))
                }
                None => sentence(purpose),
            };
            format!("Op {}: {from} gaf uw gegevens aan {to}. Grond: {basis}. Reden: {why}", day(record.at_ms))
        })
        .collect();
    page.list(&lines);
}

/// To whom a share went, by organisation: an offer names the receiving OIN, an add the member.
fn recipient(record: &AuditRecord, glossary: &Glossary) -> String {
    let object = record.object.as_deref().unwrap_or_default();
    let oin = match object.strip_prefix("offer to ") {
        Some(rest) => rest.split_whitespace().next().unwrap_or_default(),
        None => object.split_whitespace().next().and_then(|member| member.rsplit_once('@')).map_or("", |(_, oin)| oin),
    };
    glossary.organisation(oin)
}

fn capitalised(text: &str) -> String {
    let mut chars = text.chars();
    chars.next().map_or_else(String::new, |first| first.to_uppercase().chain(chars).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use wire::audit::AuditActor;
    use wire::AgencyKind;

    const VT: &str = "00000001800000000001";
    const LT: &str = "00000001800000000002";
    /// 2026-03-16 09:00 UTC.
    const MORNING: u64 = 1_773_651_600_000;
    const DAY: u64 = 86_400_000;

    fn actor(oin: &str, organisation: &str, worker: &str, role: Role) -> AuditActor {
        AuditActor {
            oin: oin.parse().unwrap(),
            organisation: organisation.into(),
            kind: if oin == VT { AgencyKind::VT } else { AgencyKind::LT },
            worker: worker.into(),
            role,
            certificate: "00".into(),
        }
    }

    struct Log {
        case: ThreadId,
        entries: Vec<AuditEntry>,
    }

    impl Log {
        fn add(
            &mut self,
            at_ms: u64,
            actor: &AuditActor,
            action: AuditAction,
            object: &str,
            basis: Option<&str>,
        ) -> &mut AuditRecord {
            let record = AuditRecord {
                at_ms,
                actor: Some(actor.clone()),
                on_behalf_of: None,
                action,
                case: Some(self.case),
                object: Some(object.into()),
                purpose: None,
                legal_basis: basis.map(Into::into),
                outcome: AuditOutcome::Allowed,
                rule: "allowed".into(),
                peer: None,
            };
            let seq = self.entries.len() as u64 + 1;
            self.entries.push(AuditEntry { seq, prev_hash: [0; 32], hash: [0; 32], record });
            &mut self.entries.last_mut().unwrap().record
        }
    }

    fn glossary() -> Glossary {
        let mut g = Glossary { answered_by: "Veilig Thuis Utrecht".into(), ..Glossary::default() };
        g.bases.insert("consent".into(), ("met toestemming van het gezin".into(), false));
        g.bases
            .insert("vt-safety".into(), ("om een kind te beschermen, ook zonder toestemming (Wmo 2015)".into(), true));
        g.organisations.insert(VT.into(), "Veilig Thuis Utrecht".into());
        g.organisations.insert(LT.into(), "Lokaal team Woerden".into());
        g
    }

    /// VT opens the case, writes, shares it without consent with the local team, whose worker takes it
    /// over and reads; a refused attempt, a failed offer and key handling are no access.
    fn log() -> Log {
        let mut log = Log {
            case: ThreadId(uuid::Uuid::from_u128(0xabcd_ef01_2345_6789_abcd_ef01_2345_6789)),
            entries: Vec::new(),
        };
        let anna = actor(VT, "Veilig Thuis Utrecht", "anna.devries", Role::Caseworker);
        let bram = actor(VT, "Veilig Thuis Utrecht", "bram.kok", Role::Caseworker);
        let sanne = actor(LT, "Lokaal team Woerden", "sanne.bakker", Role::Caseworker);
        let fenna = actor(VT, "Veilig Thuis Utrecht", "fenna.jansen", Role::PrivacyOfficer);
        log.add(MORNING, &anna, AuditAction::CreateThread, "case", None);
        log.add(MORNING, &anna, AuditAction::Send, "m1", None);
        log.add(MORNING + DAY, &bram, AuditAction::Send, "m2", None);
        log.add(MORNING + DAY, &anna, AuditAction::KeyPackage, "", None);
        let offer = log.add(
            MORNING + 2 * DAY,
            &anna,
            AuditAction::Handover,
            &format!("offer to {LT} on route vt-lt-referral"),
            Some("vt-safety"),
        );
        offer.purpose = Some("Acute zorgen (justification: vader mag niet weten waar moeder woont)".into());
        // An offer that failed to take effect shared nothing.
        log.add(
            MORNING + 2 * DAY,
            &anna,
            AuditAction::Handover,
            &format!("offer to {VT} on route x"),
            Some("vt-safety"),
        );
        let failed = log.add(
            MORNING + 2 * DAY,
            &anna,
            AuditAction::Handover,
            &format!("offer to {VT} on route x"),
            Some("vt-safety"),
        );
        failed.outcome = AuditOutcome::Failed;
        failed.rule = wire::audit::failure_rule("allowed", "an offer is open", 6);
        log.add(MORNING + 3 * DAY, &sanne, AuditAction::Handover, "accept offer 1", None);
        log.add(MORNING + 3 * DAY, &sanne, AuditAction::Deliver, "m1", None);
        log.add(MORNING + 4 * DAY, &sanne, AuditAction::Deliver, "m2", None);
        let refused =
            log.add(MORNING + 4 * DAY, &sanne, AuditAction::AddMember, &format!("school.mentor@{VT}"), Some("consent"));
        refused.outcome = AuditOutcome::Denied;
        log.add(MORNING + 5 * DAY, &fenna, AuditAction::AuditQuery, "filter", None);
        log
    }

    #[test]
    fn the_family_reads_per_organisation_and_role_what_kind_of_access_when_and_why() {
        let log = log();
        let html = family_html(log.case, &log.entries, &glossary());
        for expected in [
            "<html lang=\"nl\">",
            "@media print",
            "van 16 maart 2026 tot en met 21 maart 2026",
            "kenmerk abcdef01",
            "Veilig Thuis Utrecht: medewerkers (2 personen)",
            "Schreef in de zaak of voegde een stuk toe van 16 maart 2026 tot en met 17 maart 2026 (2 keer).",
            "Bood de zaak aan een andere organisatie aan op 18 maart 2026 (1 keer). Grond: om een kind te beschermen",
            "Lokaal team Woerden: medewerkers (1 persoon)",
            "Nam de zaak over op 19 maart 2026 (1 keer).",
            "Las de berichten en stukken van de zaak van 19 maart 2026 tot en met 20 maart 2026 (2 keer).",
            "Veilig Thuis Utrecht: functionaris gegevensbescherming (1 persoon)",
            "Controleerde wie toegang had tot de zaak op 21 maart 2026 (1 keer).",
            "Op 18 maart 2026: Veilig Thuis Utrecht gaf uw gegevens aan Lokaal team Woerden. Grond: om een kind te beschermen, ook zonder toestemming (Wmo 2015). Reden: Acute zorgen. vader mag niet weten waar moeder woont.",
            "Autoriteit Persoonsgegevens",
        ] {
            assert!(html.contains(expected), "{expected:?} missing in:\n{html}");
        }
        for hidden in ["anna.devries", "sanne.bakker", "fenna.jansen", "school.mentor", VT, LT] {
            assert!(!html.contains(hidden), "{hidden} is in the family's report");
        }
        assert!(!html.contains("voegde iemand toe"), "the refused add gave no access");
        assert!(!html.contains("gaf uw gegevens aan Veilig Thuis Utrecht"), "the failed offer shared nothing");
    }

    #[test]
    fn a_case_shared_with_consent_says_so() {
        let mut log = log();
        log.entries.retain(|e| e.record.legal_basis.is_none());
        let html = family_html_linked(log.case, &log.entries, &glossary(), "/assets/family.css");
        assert!(html.contains("Uw gegevens zijn niet zonder uw toestemming gedeeld."));
        assert!(!html.contains("<style>"));
        let empty = family_html(log.case, &[], &glossary());
        assert!(empty.contains("Niemand had toegang tot de zaak."));
    }
}
