//! The family's own summary of a handover, in plain Dutch, made on the agency's side.
//!
//! Families in the chain's reviews did not know who their contact was, what would happen next, who
//! their confidant was or what rights they had. The receiving agency gives them this page after a
//! handover: who is involved now and in what role, their contact and how to reach them, what
//! happens next and when, what they can do if they disagree, their confidant at the AKJ and the
//! complaint route, and their right to see who accessed their data.
//!
//! It is made from the decrypted packet on the agency's own machine (the hub never sees it), written
//! at B1 level (short sentences, everyday words, "u"), and names organisations and role addresses
//! only: the family sees no worker's personal address, as the packet's own rule for the contact
//! already ensures. The HTML carries a print stylesheet, so the page prints as a letter.

use crate::packet::{Consent, Date, FamilyReview, HandoverPacket, Recipient, Told};

/// The Advies- en Klachtenbureau Jeugdzorg: the independent confidants (vertrouwenspersonen) for
/// children and parents in youth care and youth protection, free of charge.
pub const AKJ: &str = "het AKJ (Advies- en Klachtenbureau Jeugdzorg): telefoon 088 555 1000, www.akj.nl";

const TITLE: &str = "Wat er nu gebeurt";

/// The stylesheet inside the page, for a standalone file.
pub(crate) fn inline_style() -> String {
    format!("<style>\n{STYLE}</style>")
}

/// A link to the stylesheet served at `href`.
pub(crate) fn linked_style(href: &str) -> String {
    format!("<link rel=\"stylesheet\" href=\"{}\">", escape(href))
}

const MONTHS: [&str; 12] = [
    "januari",
    "februari",
    "maart",
    "april",
    "mei",
    "juni",
    "juli",
    "augustus",
    "september",
    "oktober",
    "november",
    "december",
];

/// A day as Dutch readers write it: `16 maart 2026`.
pub fn dutch_date(date: Date) -> String {
    let month = MONTHS.get(usize::from(date.month()).saturating_sub(1)).copied().unwrap_or_default();
    format!("{} {month} {}", date.day(), date.year())
}

/// The summary as one standalone HTML page, its print stylesheet inside, for the family of `packet`,
/// made on `today`.
pub fn summary_html(packet: &HandoverPacket, today: Date) -> String {
    summary(packet, today).page(TITLE, &inline_style())
}

/// The summary as an HTML page that links its stylesheet from `href` (serve [`STYLE`] there), for a
/// web application whose Content-Security-Policy admits no inline style.
pub fn summary_html_linked(packet: &HandoverPacket, today: Date, href: &str) -> String {
    summary(packet, today).page(TITLE, &linked_style(href))
}

/// The summary as plain text (headings underlined, list items with a dash), for a letter or a terminal.
pub fn summary_text(packet: &HandoverPacket, today: Date) -> String {
    summary(packet, today).text()
}

fn summary(packet: &HandoverPacket, today: Date) -> Page {
    let mut page = Page::default();
    let receiver = &packet.receiver.organisation.name;
    page.heading(1, "Wat er nu gebeurt");
    page.para(&format!(
        "Deze brief is voor {}. Hierin staat wie u nu helpt, wie uw contactpersoon is en wat u kunt doen. \
         Gemaakt op {}.",
        family_names(packet),
        dutch_date(today)
    ));

    page.heading(2, "Wie helpt u nu");
    page.list(&[
        format!("{receiver} helpt u vanaf nu. Zij zijn verantwoordelijk."),
        format!(
            "{} heeft uw gezin eerst geholpen. Zij hebben alles wat nodig is aan {receiver} gegeven. \
             U hoeft uw verhaal dus niet opnieuw te vertellen.",
            packet.sender.organisation.name
        ),
    ]);
    let others = other_helpers(packet);
    if !others.is_empty() {
        page.para("Ook deze organisaties werken mee aan het plan:");
        page.list(&others);
    }

    page.heading(2, "Uw contactpersoon");
    page.para(&format!(
        "Uw contactpersoon is {} van {receiver}. U bereikt hem of haar via: {}.",
        packet.contact.worker_display_name, packet.contact.role_address
    ));
    page.para("Heeft u vragen? Of gaat er iets mis? Neem dan contact op met uw contactpersoon.");

    page.heading(2, "Wat gebeurt er nu");
    let mut goals: Vec<_> = packet.plan.goals.iter().collect();
    goals.sort_by_key(|g| g.evaluation_date);
    page.list(
        &goals
            .iter()
            .map(|g| {
                format!(
                    "{} Op {} kijken we samen hoe het gaat. Dit doet {}.",
                    sentence(&g.text),
                    dutch_date(g.evaluation_date),
                    g.owner.organisation
                )
            })
            .collect::<Vec<_>>(),
    );

    page.heading(2, "Bent u het ergens niet mee eens?");
    if !packet.family_view.disagreements.is_empty() {
        page.para("Dit hebben wij opgeschreven waar u het niet mee eens bent:");
        page.list(&packet.family_view.disagreements);
    }
    page.para(&format!(
        "Praat er eerst over met uw contactpersoon. Komt u er samen niet uit? Dan kunt u een klacht \
         indienen bij {receiver}. Vraag uw contactpersoon hoe dat gaat."
    ));

    page.heading(2, "Een vertrouwenspersoon");
    page.para(&format!(
        "Wilt u hulp van iemand die niet bij {receiver} werkt? Een vertrouwenspersoon luistert naar u, \
         geeft advies en helpt u bij een klacht. Dat is gratis. Kinderen en jongeren kunnen ook zelf bellen. \
         U bereikt de vertrouwenspersoon via {AKJ}."
    ));

    consents(&mut page, packet, today);

    page.heading(2, "Uw gegevens");
    page.para(&format!(
        "U mag altijd weten wie uw gegevens heeft gezien en waarom. Vraag dit aan {receiver}. \
         Zij vragen het na bij hun functionaris gegevensbescherming. U krijgt dan een overzicht, \
         ook van de andere organisaties die uw gegevens kregen. Klopt er iets niet in uw gegevens? \
         Dan mag u vragen om het te verbeteren."
    ));
    review(&mut page, packet);
    page
}

/// The names of the family members the letter is for: not those recorded as not told (a parent who
/// must not learn of the handover for someone's safety, say) and told nothing since.
fn family_names(packet: &HandoverPacket) -> String {
    let kept_out = |id: &str| {
        let records: Vec<_> = packet.informed.iter().filter(|r| r.member == id).collect();
        !records.is_empty() && records.iter().all(|r| !r.outcome.was_told())
    };
    let names: Vec<&str> = packet.family.iter().filter(|m| !kept_out(&m.id)).map(|m| m.name.as_str()).collect();
    match names.split_last() {
        None => "uw gezin".into(),
        Some((last, [])) => (*last).to_owned(),
        Some((last, rest)) => format!("{} en {last}", rest.join(", ")),
    }
}

/// The organisations of the plan's goals other than the sender and the receiver, once each.
fn other_helpers(packet: &HandoverPacket) -> Vec<String> {
    let known = [&packet.sender.organisation.name, &packet.receiver.organisation.name];
    let mut others: Vec<String> = Vec::new();
    for goal in &packet.plan.goals {
        let name = &goal.owner.organisation;
        if !known.contains(&name) && !others.contains(name) {
            others.push(name.clone());
        }
    }
    others
}

fn consents(page: &mut Page, packet: &HandoverPacket, today: Date) {
    let in_force: Vec<&Consent> = packet.consents.iter().filter(|c| c.in_force(today)).collect();
    if in_force.is_empty() {
        return;
    }
    page.heading(2, "Uw toestemming");
    let lines: Vec<String> = in_force
        .iter()
        .map(|c| {
            let member = packet.family.iter().find(|m| m.id == c.member);
            let who = member.map_or("Iemand uit het gezin", |m| m.name.as_str());
            // A child's own consent is the child's: the letter the parents read says that it was given, not what for.
            if member.is_none_or(|m| m.role.is_child()) {
                return format!("{who} gaf ook zelf toestemming.");
            }
            let until = c.until.map(|d| format!(" Dit geldt tot en met {}.", dutch_date(d))).unwrap_or_default();
            format!(
                "{who} gaf op {} toestemming om gegevens te delen met {}. Waarvoor: {}.{until}",
                dutch_date(c.given_on),
                recipients(&c.recipients, packet),
                c.purpose.trim_end_matches('.')
            )
        })
        .collect();
    page.list(&lines);
    page.para("U mag uw toestemming altijd intrekken. Zeg het tegen uw contactpersoon.");
}

fn recipients(recipients: &[Recipient], packet: &HandoverPacket) -> String {
    let named: Vec<String> = recipients
        .iter()
        .map(|r| match r {
            Recipient::Organisation(oin) if *oin == packet.receiver.organisation.oin => {
                packet.receiver.organisation.name.clone()
            }
            Recipient::Organisation(_) => "een andere organisatie".into(),
            Recipient::Kind(kind) => match kind.code() {
                "LT" => "het lokaal team".into(),
                "GI" => "de gecertificeerde instelling (jeugdbescherming)".into(),
                "RvdK" => "de Raad voor de Kinderbescherming".into(),
                "VT" => "Veilig Thuis".into(),
                _ => "een andere organisatie".into(),
            },
        })
        .collect();
    named.join(" en ")
}

/// Whether the family saw the handover, and who was told: so that a family that was not told can say so.
fn review(page: &mut Page, packet: &HandoverPacket) {
    let told: Vec<&str> = packet
        .informed
        .iter()
        .filter(|r| matches!(r.outcome, Told::Told { .. }))
        .filter_map(|r| packet.family.iter().find(|m| m.id == r.member).map(|m| m.name.as_str()))
        .collect();
    page.heading(2, "Wat u al weet");
    if let Some(FamilyReview::Shown { on, .. }) = &packet.family_review {
        page.para(&format!(
            "Wat wij aan {} hebben gegeven, hebben wij op {} met u besproken.",
            packet.receiver.organisation.name,
            dutch_date(*on)
        ));
    }
    if !told.is_empty() {
        let mut names = told.clone();
        names.dedup();
        page.para(&format!("Over deze overdracht is verteld aan: {}.", names.join(", ")));
    }
    page.para("Weet u iets niet, of klopt er iets niet? Vraag het uw contactpersoon.");
}

/// Ends a text with a full stop, so that the letter's sentences stay sentences (an empty text stays
/// empty). The family's access report words its reasons with it too.
pub(crate) fn sentence(text: &str) -> String {
    let text = text.trim();
    if text.is_empty() || text.ends_with(['.', '!', '?']) {
        text.to_owned()
    } else {
        format!("{text}.")
    }
}

/// One block of the page.
enum Block {
    Heading(u8, String),
    Para(String),
    List(Vec<String>),
}

/// A page for the family being written, as blocks that render to HTML or to text (the access report
/// for the family is written with it too).
#[derive(Default)]
pub(crate) struct Page {
    blocks: Vec<Block>,
}

impl Page {
    pub(crate) fn heading(&mut self, level: u8, text: &str) {
        self.blocks.push(Block::Heading(level, text.to_owned()));
    }

    pub(crate) fn para(&mut self, text: &str) {
        self.blocks.push(Block::Para(text.to_owned()));
    }

    pub(crate) fn list(&mut self, items: &[String]) {
        self.blocks.push(Block::List(items.to_vec()));
    }

    /// The whole page titled `title`, with `style` (an inline stylesheet or a link to one) in its head.
    pub(crate) fn page(self, title: &str, style: &str) -> String {
        let mut body = String::new();
        for block in &self.blocks {
            match block {
                Block::Heading(level, text) => body.push_str(&format!("<h{level}>{}</h{level}>\n", escape(text))),
                Block::Para(text) => body.push_str(&format!("<p>{}</p>\n", escape(text))),
                Block::List(items) => {
                    body.push_str("<ul>\n");
                    for item in items {
                        body.push_str(&format!("<li>{}</li>\n", escape(item)));
                    }
                    body.push_str("</ul>\n");
                }
            }
        }
        format!(
            "<!doctype html>\n<html lang=\"nl\">\n<head>\n<meta charset=\"utf-8\">\n<title>{}</title>\n{style}\n</head>\n<body>\n<main>\n{body}</main>\n</body>\n</html>\n",
            escape(title)
        )
    }

    pub(crate) fn text(self) -> String {
        let mut out = String::new();
        for block in &self.blocks {
            match block {
                Block::Heading(level, text) => {
                    let rule = if *level == 1 { '=' } else { '-' };
                    out.push_str(&format!("\n{text}\n{}\n", rule.to_string().repeat(text.chars().count())));
                }
                Block::Para(text) => out.push_str(&format!("{text}\n")),
                Block::List(items) => items.iter().for_each(|item| out.push_str(&format!("- {item}\n"))),
            }
        }
        out.trim_start().to_owned()
    }
}

/// The summary's stylesheet: readable on a screen, a letter on paper.
pub const STYLE: &str =
    "body { font-family: system-ui, sans-serif; font-size: 1.1rem; line-height: 1.5; color: #1a1a1a; }
main { max-width: 40rem; margin: 2rem auto; padding: 0 1rem; }
h1 { font-size: 1.6rem; } h2 { font-size: 1.25rem; margin-top: 1.5rem; }
@media print {
  body { font-size: 11pt; color: #000; }
  main { max-width: none; margin: 0; }
  h2 { break-after: avoid; }
  li, p { break-inside: avoid; }
  @page { margin: 2cm; }
}
";

fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn today() -> Date {
        Date::new(2026, 3, 16).unwrap()
    }

    #[test]
    fn the_summary_says_who_helps_who_to_call_what_comes_next_and_the_familys_rights() {
        let packet = HandoverPacket::example(today());
        let html = summary_html(&packet, today());
        for expected in [
            "<html lang=\"nl\">",
            "@media print",
            "Lokaal team Woerden helpt u vanaf nu.",
            "U hoeft uw verhaal dus niet opnieuw te vertellen.",
            "Uw contactpersoon is Sanne Bakker van Lokaal team Woerden",
            "team-jeugd@lokaalteamwoerden.example",
            "Op 27 april 2026 kijken we samen hoe het gaat.",
            "088 555 1000",
            "een klacht",
            "U mag altijd weten wie uw gegevens heeft gezien",
            "Linda de Vries gaf op 6 maart 2026 toestemming",
            "U mag uw toestemming altijd intrekken.",
            "volgens hem is er niet met spullen gegooid",
            "Gemaakt op 16 maart 2026.",
        ] {
            assert!(html.contains(expected), "{expected:?} missing in:\n{html}");
        }
        // Role addresses only: no worker's id appears, and the goals' addresses are left out.
        for personal in ["sanne.bakker", "anna.devries", "rappel@"] {
            assert!(!html.contains(personal), "{personal} in the family's summary");
        }
    }

    #[test]
    fn what_the_family_wrote_is_escaped_and_a_withdrawn_consent_is_not_shown_as_given() {
        let mut packet = HandoverPacket::example(today());
        packet.family_view.disagreements = vec!["<script>alert(1)</script> & meer".into()];
        packet.consents[0].withdrawn_on = Some(today());
        let html = summary_html(&packet, today());
        assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt; &amp; meer"));
        assert!(!html.contains("<script>"));
        assert!(!html.contains("Linda de Vries gaf op"), "the withdrawn consent is not listed");
        assert!(html.contains("Lotte de Vries gaf ook zelf toestemming."));
        assert!(!html.contains("een eigen gesprek voor Lotte"), "what a child consented to is the child's");
    }

    #[test]
    fn a_member_recorded_as_not_told_is_not_addressed() {
        let mut packet = HandoverPacket::example(today());
        packet.informed[1].outcome = Told::NotTold { reason: "vader is dreigend".into() };
        let html = summary_html(&packet, today());
        assert!(
            html.contains("Deze brief is voor Linda de Vries, Sem Jansen, Noor Jansen en Lotte de Vries."),
            "{html}"
        );
        assert!(!html.contains("vader is dreigend"));
    }

    #[test]
    fn the_text_form_says_the_same_without_markup() {
        let text = summary_text(&HandoverPacket::example(today()), today());
        assert!(text.starts_with("Wat er nu gebeurt\n================="), "{text}");
        assert!(text.contains("\nUw contactpersoon\n-----------------\n"));
        assert!(text.contains("- Lokaal team Woerden helpt u vanaf nu."));
        assert!(!text.contains('<'));
    }

    #[test]
    fn a_linked_page_holds_no_inline_style() {
        let html = summary_html_linked(&HandoverPacket::example(today()), today(), "/assets/family.css");
        assert!(html.contains("<link rel=\"stylesheet\" href=\"/assets/family.css\">"));
        assert!(!html.contains("<style>"));
    }

    #[test]
    fn dates_are_written_the_dutch_way() {
        assert_eq!(dutch_date(Date::new(2026, 1, 5).unwrap()), "5 januari 2026");
        assert_eq!(dutch_date(Date::new(2024, 12, 31).unwrap()), "31 december 2024");
    }
}
