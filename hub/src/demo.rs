//! `hub demo`: Ketenhub's story in one command, on loopback.
//!
//! It starts a hub with a fresh dev PKI in a temporary directory (or `--data`),
//! connects SDK clients of the agencies of the chain, and follows one family's
//! case through warm handovers, printing a timeline a person can follow: who did
//! what, who holds regie now, what was refused and why. The hub's deadline clock
//! is moved forward where the story needs days to pass. It exits non-zero if
//! anything does not happen as it should, so the test suite runs it as a check.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use ketenhub_sdk::packet::Date;
use ketenhub_sdk::{
    Client, ClockKind, Content, Escalation, Event, EventStream, FamilyTold, Grounds, HandoverEvent, HandoverPacket,
    OfferRequest, ParticipantRole, SharedItem, ThreadId,
};

use crate::clock::Clock;
use crate::config::Limits;
use crate::devhub::DevHub;

const HOUR_MS: u64 = 3_600_000;
const DAY_MS: u64 = 24 * HOUR_MS;

/// The smallest count a cell of the chain figures shows in the demo (10 by default).
const DEMO_MIN_FIGURE_COUNT: u64 = 2;

/// Prints timeline lines with the time since the demo started.
struct Timeline {
    start: Instant,
}

impl Timeline {
    fn say(&self, who: &str, what: impl AsRef<str>) {
        let t = self.start.elapsed().as_secs_f64();
        println!("[{t:7.3}s] {who:<38} {}", what.as_ref());
    }

    fn chapter(&self, title: &str) {
        println!("\n── {title}");
    }
}

fn who(client: &Client) -> String {
    let id = client.identity();
    format!("{} ({})", id.organisation, id.worker)
}

/// Waits for the next event that `pick` turns into something.
async fn wait_for<T>(events: &mut EventStream, mut pick: impl FnMut(Event) -> Option<T>) -> anyhow::Result<T> {
    let wait = async {
        while let Some(event) = events.next().await {
            if let Some(found) = pick(event) {
                return Ok(found);
            }
        }
        anyhow::bail!("event stream ended")
    };
    tokio::time::timeout(Duration::from_secs(10), wait).await?
}

/// One agency's participant in the story: its client and its events.
struct Party {
    client: Client,
    events: EventStream,
}

impl Party {
    async fn join(hub: &DevHub, slug: &str, line: &Timeline) -> anyhow::Result<Self> {
        let client = hub.client(slug).connect().await?;
        let events = client.events().ok_or_else(|| anyhow::anyhow!("events already taken"))?;
        line.say(&who(&client), format!("connected with mTLS as {}", client.identity()));
        Ok(Self { client, events })
    }

    fn name(&self) -> String {
        who(&self.client)
    }
}

/// What a handover in the story carries.
struct Handover<'a> {
    route: &'a str,
    legal_basis: &'a str,
    reason: &'a str,
    justification: Option<&'a str>,
    packet: Content,
    /// An earlier message the sender re-shares with the receiver before it completes.
    history: Option<&'a ketenhub_sdk::Message>,
}

async fn owner_line(line: &Timeline, party: &Party, thread: ThreadId) -> anyhow::Result<()> {
    let ownership = party.client.ownership(thread).await?;
    let background: Vec<String> = ownership.background.iter().map(|b| b.member.to_string()).collect();
    let background =
        if background.is_empty() { String::new() } else { format!("; background: {}", background.join(", ")) };
    line.say("hub", format!("regie now with {}{background}", ownership.owner));
    Ok(())
}

/// One line per chain figure: the chain's cell, and how many cells of the breakdowns show or are suppressed.
fn chain_lines(report: &ketenhub_sdk::ChainReport) -> Vec<String> {
    report
        .figures
        .iter()
        .map(|figure| {
            let (all, parts) = figure.cells.split_first().map_or((None, &[][..]), |(all, rest)| (Some(all), rest));
            let chain = match all {
                Some(cell) if !cell.suppressed() => {
                    let values: Vec<String> =
                        figure.measures.iter().zip(&cell.values).map(|(m, v)| format!("{m} {v}")).collect();
                    format!("n={}: {}", cell.count.unwrap_or_default(), values.join(", "))
                }
                _ => "suppressed".to_owned(),
            };
            let hidden = parts.iter().filter(|c| c.suppressed()).count();
            format!("{:<27} {chain}  [{} cells shown, {hidden} suppressed]", figure.code, parts.len() - hidden)
        })
        .collect()
}

/// A line about what a receiver read.
fn describe(content: &Content, today: Date) -> anyhow::Result<String> {
    Ok(match content {
        Content::HandoverPacket(packet) => {
            packet.validate(today).map_err(|e| anyhow::anyhow!("the packet does not validate:\n{e}"))?;
            format!(
                "handover packet v{} ({} family members with their gezag, consent from {} of them covering everyone \
                 who must consent, {} told in person, {} statements with facts, suspicions and opinions apart, {} plan \
                 goals; contact {}) — complete and valid",
                packet.version,
                packet.family.len(),
                packet.consents.len(),
                packet.informed.len(),
                packet.statements.len(),
                packet.plan.goals.len(),
                packet.contact.role_address
            )
        }
        Content::Text { text } => format!("{text:?}"),
        other => format!("{other:?}"),
    })
}

/// Offers the case, has it accepted, shares the packet, and completes the handover.
async fn hand_over(
    line: &Timeline,
    clock: &Clock,
    thread: ThreadId,
    from: &mut Party,
    to: &mut Party,
    handover: Handover<'_>,
) -> anyhow::Result<()> {
    let request = OfferRequest {
        to: to.client.identity().oin.clone(),
        to_worker: Some(to.client.identity().worker.clone()),
        route: handover.route.into(),
        legal_basis: handover.legal_basis.into(),
        reason: handover.reason.into(),
        justification: handover.justification.map(str::to_owned),
        deadline_ms: clock.now_ms() + 2 * DAY_MS,
    };
    let offer = from.client.offer_handover(thread, request).await?.offers.last().map(|o| o.id).unwrap_or_default();
    line.say(
        &from.name(),
        format!(
            "offers the case to {} ({}, basis {}): {}",
            to.client.identity().organisation,
            handover.route,
            handover.legal_basis,
            handover.reason
        ),
    );
    let waiting = to.client.pending_offers().await?;
    anyhow::ensure!(waiting.iter().any(|(t, o)| *t == thread && o.id == offer), "the receiver does not see the offer");
    to.client.accept_offer(thread, offer).await?;
    line.say(&to.name(), "accepts the offer and joins the case thread; the sender still holds regie");
    owner_line(line, from, thread).await?;
    // The sender's device brings the receiver into the MLS group, then shares the packet.
    let grounds = Grounds::new(handover.reason, handover.legal_basis);
    from.client.add_member(thread, to.client.member_id(), &grounds).await?;
    let today = Date::from_unix_ms(clock.now_ms());
    match handover.packet {
        Content::HandoverPacket(packet) => from.client.send_packet(thread, *packet, today).await?,
        other => from.client.send_content(thread, other).await?,
    };
    let received = wait_for(&mut to.events, |e| match e {
        Event::Message(m) if m.thread == thread => Some(m.content),
        _ => None,
    })
    .await?;
    line.say(&to.name(), format!("reads, end-to-end encrypted: {}", describe(&received, today)?));
    if let Content::HandoverPacket(packet) = &received {
        line.say(&to.name(), "prints the family's own summary from it, in plain Dutch (the hub never sees it):");
        for row in ketenhub_sdk::family::summary_text(packet, today).lines() {
            println!("             | {row}");
        }
    }
    if let Some(earlier) = handover.history {
        share_history(line, thread, from, to, earlier).await?;
    }
    to.client.complete_handover(thread, offer, FamilyTold::Yes).await?;
    line.say(&to.name(), "met the family, told them who their contact is now, and completes the handover");
    owner_line(line, to, thread).await
}

/// The owner is ill: the team lead, who is not on the case, reassigns it to a
/// colleague, who accepts and completes; the ill worker keeps a background role.
async fn reassign(
    line: &Timeline,
    clock: &Clock,
    thread: ThreadId,
    lead: &Party,
    to: &mut Party,
) -> anyhow::Result<()> {
    let request = OfferRequest {
        to: to.client.identity().oin.clone(),
        to_worker: Some(to.client.identity().worker.clone()),
        route: wire::handover::REASSIGNMENT_ROUTE.into(),
        legal_basis: "consent".into(),
        reason: "de casushouder is langdurig ziek".into(),
        justification: None,
        deadline_ms: clock.now_ms() + DAY_MS,
    };
    let offer = lead.client.offer_handover(thread, request).await?.offers.last().map(|o| o.id).unwrap_or_default();
    line.say(&lead.name(), format!("team lead, not on the case: reassigns it to {} (owner on sick leave)", to.name()));
    to.client.accept_offer(thread, offer).await?;
    to.client.complete_handover(thread, offer, FamilyTold::Yes).await?;
    line.say(&to.name(), "accepts, calls the mother to introduce himself, and completes: regie moves inside VT");
    owner_line(line, to, thread).await
}

/// The owner consults someone of another organisation for two weeks: the
/// consultant reads and advises, and when the end date passes the hub ends
/// the membership and the owner's device removes the consultant's devices.
async fn consult(
    line: &Timeline,
    clock: &Clock,
    thread: ThreadId,
    owner: &mut Party,
    consultant: &mut Party,
) -> anyhow::Result<()> {
    let member = consultant.client.member_id();
    let grounds = Grounds::new("de vader woont in Oudewater; advies over zijn netwerk", "consent");
    let until = clock.now_ms() + 14 * DAY_MS;
    owner.client.add_participant(thread, member.clone(), (ParticipantRole::Consultant, until), &grounds).await?;
    line.say(
        &owner.name(),
        format!("consults {} for two weeks, without handing over: {}", consultant.name(), grounds.reason),
    );
    owner.client.send_text(thread, "Wie kan de vader steunen bij het veiligheidsplan?").await?;
    wait_for(&mut consultant.events, |e| matches!(e, Event::Message(m) if m.thread == thread).then_some(())).await?;
    consultant.client.send_text(thread, "Zijn broer; die woont in de straat en is bereid mee te denken.").await?;
    line.say(&consultant.name(), "reads the question and advises in the thread; it cannot offer, accept or add anyone");
    clock.advance(15 * DAY_MS);
    line.say("hub", "(fifteen days pass: the consultation's end date)");
    wait_for(&mut owner.events, |e| match e {
        Event::MemberRemoved { member: gone, devices_remain: true, .. } if gone == member => Some(()),
        _ => None,
    })
    .await?;
    line.say(
        "hub",
        format!(
            "participation ended: {} is off the case, and the owner's device is asked to remove it",
            consultant.name()
        ),
    );
    owner.client.remove_member(thread, member).await?;
    line.say(&owner.name(), "removes the consultant's devices from the MLS group: nothing sent after it reaches them");
    Ok(())
}

/// The owner calls a case conference with a former owner for a day: it writes again until the conference ends,
/// the regie decision is recorded, and the minutes are sent end to end encrypted.
async fn confer(
    line: &Timeline,
    clock: &Clock,
    thread: ThreadId,
    owner: &Party,
    guest: &mut Party,
) -> anyhow::Result<()> {
    let reason = "kent het gezin uit de vrijwillige hulp".to_owned();
    let invited = vec![ketenhub_sdk::Invitation { member: guest.client.member_id(), reason }];
    let until_ms = clock.now_ms() + DAY_MS;
    let ownership = owner.client.call_conference(thread, ("veiligheidsplan", until_ms), invited, "consent").await?;
    line.say(
        &owner.name(),
        format!("calls a case conference (jeugdbeschermingstafel) for a day with {}", guest.name()),
    );
    let conference = ownership.conferences.last().map_or(1, |c| c.id);
    let decision = ketenhub_sdk::RegieDecision {
        regie_with: owner.client.identity().oin.clone(),
        reason: "de GI houdt de regie; het wijkteam ondersteunt thuis".into(),
    };
    owner.client.record_decision(thread, conference, decision).await?;
    let minutes = Content::Minutes { conference, text: "Veiligheidsplan besproken; GI houdt regie.".into() };
    owner.client.send_content(thread, minutes).await?;
    line.say(&owner.name(), "records the conference's decision (regie stays with the GI) and sends the minutes");
    let minutes =
        |e: Event| matches!(e, Event::Message(m) if matches!(m.content, Content::Minutes { .. })).then_some(());
    wait_for(&mut guest.events, minutes).await?;
    line.say(&guest.name(), "reads the minutes at the table; its participation ends with the conference");
    Ok(())
}

/// The owner cannot put a limited recipient (the school) on the case; it opens a side thread for it instead, in
/// which only the question and its answer travel, and the school still cannot read the case.
async fn ask_the_school(
    line: &Timeline,
    thread: ThreadId,
    owner: &mut Party,
    school: &mut Party,
) -> anyhow::Result<()> {
    let grounds = Grounds::new("aanwezigheid van de kinderen op school", "consent");
    match owner.client.add_member(thread, school.client.member_id(), &grounds).await {
        Err(ketenhub_sdk::Error::Hub(e)) if e.message.contains("limited-recipient") => line.say(
            &owner.name(),
            format!("tries to add {} to the case: refused (limited-recipient); a school sees no case", school.name()),
        ),
        other => anyhow::bail!("a limited recipient was put on the case: {other:?}"),
    }
    let side = owner.client.open_side_thread(thread, "aanwezigheid op school").await?;
    owner.client.add_member(side, school.client.member_id(), &grounds).await?;
    line.say(&owner.name(), format!("opens side thread {side} of the case and adds {} to it alone", school.name()));
    owner.client.send_text(side, "Hoe is de aanwezigheid van de kinderen sinds de zomer?").await?;
    wait_for(&mut school.events, |e| matches!(e, Event::Message(m) if m.thread == side).then_some(())).await?;
    school.client.send_text(side, "De oudste mist vaak de maandag; de jongste is er elke dag.").await?;
    line.say(&school.name(), "reads only the question, and answers it in the side thread");
    match school.client.members(thread).await {
        Err(e) if e.is_not_found() => line.say(
            &school.name(),
            format!("tries to read the case itself: refused ({e}), the same answer as for a case that does not exist"),
        ),
        other => anyhow::bail!("a limited recipient could see the case: {other:?}"),
    }
    Ok(())
}

/// The owner closes a case with an outcome and reopens it within the policy's period when a new report comes in.
async fn close_and_reopen(line: &Timeline, clock: &Clock, thread: ThreadId, owner: &mut Party) -> anyhow::Result<()> {
    let closed = owner
        .client
        .close_case(thread, "moved-out-of-region", "het gezin is verhuisd; de nieuwe gemeente is ingelicht")
        .await?;
    let until = closed.closed().map(|c| ketenhub_sdk::report::date_time(c.reopen_until_ms)).unwrap_or_default();
    line.say(
        &owner.name(),
        format!("closes case {thread} (outcome moved-out-of-region); it may be reopened until {until}"),
    );
    match owner.client.send_text(thread, "nog een notitie").await {
        Err(e) => line.say(&owner.name(), format!("tries to write in the closed case: refused ({e})")),
        Ok(_) => anyhow::bail!("a closed case took a message"),
    }
    clock.advance(120 * DAY_MS);
    line.say("hub", "(four months pass)");
    owner.client.reopen_case(thread, "nieuwe melding: het gezin woont weer in Utrecht").await?;
    wait_for(&mut owner.events, |e| match e {
        Event::Handover { event: HandoverEvent::Reopened { .. }, thread: t, .. } if t == thread => Some(()),
        _ => None,
    })
    .await?;
    line.say(&owner.name(), "reopens it after a new report: the members are told, the history is still there");
    Ok(())
}

/// The former owner re-shares an earlier message with the receiver, which MLS gave no history: on purpose and audited.
async fn share_history(
    line: &Timeline,
    thread: ThreadId,
    from: &Party,
    to: &mut Party,
    earlier: &ketenhub_sdk::Message,
) -> anyhow::Result<()> {
    let (sent, recipients) = from.client.share_history(thread, vec![SharedItem::of(earlier)]).await?;
    let names: Vec<String> = recipients.iter().map(ToString::to_string).collect();
    line.say(
        &from.name(),
        format!(
            "re-shares the report of the home visit (#{}); the hub audits the disclosure to {}",
            earlier.seq,
            names.join(", ")
        ),
    );
    let shared = wait_for(&mut to.events, |e| match e {
        Event::Message(m) if m.id == sent.id => Some(m.content),
        _ => None,
    })
    .await?;
    let Content::HistoryShare(share) = shared else { anyhow::bail!("the receiver got no history share") };
    let first =
        share.items.first().map(|i| String::from_utf8_lossy(i.content.as_bytes()).into_owned()).unwrap_or_default();
    line.say(&to.name(), format!("reads {} earlier message(s), marked as shared by VT: {first:?}", share.items.len()));
    Ok(())
}

/// A referral from VT to a local team as an organisation, with the family's consent.
fn to_local_team(team: &Party, reason: &str, deadline_ms: u64) -> OfferRequest {
    OfferRequest {
        to: team.client.identity().oin.clone(),
        to_worker: None,
        route: "vt-lt-referral".into(),
        legal_basis: "consent".into(),
        reason: reason.into(),
        justification: None,
        deadline_ms,
    }
}

/// Runs the demo story; `data` keeps the hub's files in a chosen directory.
pub async fn run(data: Option<PathBuf>) -> anyhow::Result<()> {
    let temp = tempfile::tempdir()?;
    let dir = data.unwrap_or_else(|| temp.path().to_owned());
    let line = Timeline { start: Instant::now() };
    let clock = Clock::system();
    // Two cases make few figures: the demo shows cells from 2 up, so that some show and some are suppressed.
    let limits = Limits { min_figure_count: DEMO_MIN_FIGURE_COUNT, ..Limits::default() };
    let started = Date::from_unix_ms(clock.now_ms());
    let hub = DevHub::start_with_clock(&dir, limits, clock.clone()).await?;
    // Name the data directory itself: it is what `hub audit --data` takes.
    line.say(
        "hub",
        format!(
            "listening on {} (dev PKI in {}, store in {})",
            hub.addr(),
            hub.pki_dir().display(),
            hub.data_dir().display()
        ),
    );

    let anna = Party::join(&hub, "vt-utrecht-caseworker", &line).await?;
    let mut vt = Party::join(&hub, "vt-utrecht-colleague", &line).await?;
    let mut lead = Party::join(&hub, "vt-utrecht-teamlead", &line).await?;
    let mut lt = Party::join(&hub, "lt-woerden-caseworker", &line).await?;
    let mut rvdk = Party::join(&hub, "rvdk-caseworker", &line).await?;
    let mut gi = Party::join(&hub, "gi-save-caseworker", &line).await?;
    let mut oudewater = Party::join(&hub, "lt-oudewater-caseworker", &line).await?;
    let mut school = Party::join(&hub, "school-mentor", &line).await?;

    line.chapter("1. Veilig Thuis takes a report; its worker falls ill and the team lead reassigns the case");
    let thread = anna.client.create_thread().await?;
    line.say(&anna.name(), format!("opens case {thread} after a report; VT holds regie"));
    anna.client.send_text(thread, "Melding: zorgen over de veiligheid van twee kinderen (8 en 11).").await?;
    anna.client
        .add_member(thread, vt.client.member_id(), &Grounds::new("tweede werker bij het onderzoek", "consent"))
        .await?;
    line.say(&anna.name(), format!("works the case in a pair with {}", vt.name()));
    anna.client.send_text(thread, "Huisbezoek: moeder wil hulp thuis; vader was er niet.").await?;
    let visit = wait_for(&mut vt.events, |e| match e {
        Event::Message(m) if m.thread == thread => Some(m),
        _ => None,
    })
    .await?;
    reassign(&line, &clock, thread, &lead, &mut vt).await?;
    let referral = Handover {
        route: "vt-lt-referral",
        legal_basis: "consent",
        reason: "voluntary support at home; the mother agrees",
        justification: None,
        packet: Content::HandoverPacket(Box::new(HandoverPacket::example(Date::from_unix_ms(clock.now_ms())))),
        history: Some(&visit),
    };
    line.chapter("2. The local team accepts, meets the family and completes; VT shares what went before and stays in the background");
    hand_over(&line, &clock, thread, &mut vt, &mut lt, referral).await?;

    line.chapter("3. Later the local team asks the Raad voor de Kinderbescherming to investigate");
    let request = Handover {
        route: "lt-rvdk-request",
        legal_basis: "rvdk-investigation",
        reason: "unsafety persists despite support; a measure may be needed",
        justification: Some("Two incidents since the plan started; the father refuses contact with the team."),
        packet: Content::Text {
            text: "Onderzoeksvraag aan de Raad; eerdere interventies en hun resultaat; visie van het gezin".into(),
        },
        history: None,
    };
    hand_over(&line, &clock, thread, &mut lt, &mut rvdk, request).await?;
    vt.client.leave_case(thread, "de Raad onderzoekt nu; de rol van Veilig Thuis is afgerond").await?;
    line.say(&vt.name(), "leaves the case with a recorded reason; its membership ends at once");
    rvdk.client.remove_member(thread, vt.client.member_id()).await?;
    line.say(&rvdk.name(), "removes VT's devices from the case's MLS group: VT can read nothing sent after it left");

    line.chapter(
        "4. After a court measure (OTS) the Raad hands the case to GI SAVE; the 5-day clock runs; a consultant",
    );
    let measure = Handover {
        route: "rvdk-gi-measure",
        legal_basis: "ots-measure",
        reason: "ondertoezichtstelling ordered by the juvenile court",
        justification: Some("OTS, court reference C/16/555123 JE RK 26-101, from 2026-11-23 for one year"),
        packet: Content::Text {
            text: "Maatregel OTS met zaaknummer en data; veiligheidsplan nog op te stellen".into(),
        },
        history: None,
    };
    hand_over(&line, &clock, thread, &mut rvdk, &mut gi, measure).await?;
    let (start_ms, end_ms) = (clock.now_ms(), clock.now_ms() + 365 * DAY_MS);
    gi.client.set_measure(thread, ketenhub_sdk::Measure { start_ms, end_ms }).await?;
    gi.client.schedule_evaluation(thread, clock.now_ms() + 42 * DAY_MS).await?;
    line.say(
        &gi.name(),
        "registers the OTS's dates (one year) and the plan's first evaluation; the hub sees dates, never the plan",
    );
    let clocks = gi.client.ownership(thread).await?.clocks;
    for c in &clocks {
        let state = if c.done { " (done)" } else { "" };
        line.say("hub", format!("clock {:?} due {}{state}", c.kind, ketenhub_sdk::report::date_time(c.due_ms)));
    }
    clock.advance(8 * DAY_MS);
    line.say("hub", "(eight days pass on the hub's deadline clock)");
    let overdue = wait_for(&mut gi.events, |e| match e {
        Event::Handover {
            event: HandoverEvent::Escalated { escalation: Escalation::Overdue { clock, escalation, .. } },
            ..
        } => Some((clock, escalation)),
        _ => None,
    })
    .await?;
    line.say("hub", format!("ESCALATION to {}: {:?} overdue (escalation {})", gi.name(), overdue.0, overdue.1));
    gi.client.report_done(thread, ClockKind::FirstContact).await?;
    line.say(&gi.name(), "reports the first face-to-face contact; the clock stops");
    consult(&line, &clock, thread, &mut gi, &mut oudewater).await?;
    confer(&line, &clock, thread, &gi, &mut lt).await?;

    line.chapter("5. An offer withdrawn, and an offer nobody answers that expires and escalates");
    let second = vt.client.create_thread().await?;
    let mistaken = to_local_team(&lt, "another family, living in Woerden", clock.now_ms() + 2 * DAY_MS);
    let mistaken = vt.client.offer_handover(second, mistaken).await?.offers[0].id;
    vt.client.withdraw_offer(second, mistaken, "het gezin blijkt in Oudewater te wonen").await?;
    line.say(&vt.name(), format!("offers case {second} to Lokaal team Woerden, then withdraws it: wrong municipality"));
    let unanswered = to_local_team(&oudewater, "another family, moved to Oudewater", clock.now_ms() + 2 * HOUR_MS);
    vt.client.offer_handover(second, unanswered).await?;
    line.say(&vt.name(), format!("offers case {second} to Lokaal team Oudewater; deadline in 2 hours"));
    clock.advance(3 * HOUR_MS);
    line.say("hub", "(three hours pass without an answer)");
    wait_for(&mut vt.events, |e| match e {
        Event::Handover {
            event: HandoverEvent::Escalated { escalation: Escalation::OfferExpired { .. } },
            thread,
            ..
        } if thread == second => Some(()),
        _ => None,
    })
    .await?;
    line.say("hub", format!("ESCALATION to {}: the offer expired; VT keeps regie and must act", vt.name()));
    wait_for(&mut lead.events, |e| match e {
        Event::Notice { case, notice: ketenhub_sdk::Notice::Escalated { .. }, .. } if case == second => Some(()),
        _ => None,
    })
    .await?;
    line.say(&lead.name(), "is told too, through VT's inbox (with VT's case system), though not on the case");
    owner_line(&line, &vt, second).await?;

    line.chapter("6. VT closes the second case; months later a new report reopens it");
    close_and_reopen(&line, &clock, second, &mut vt).await?;

    line.chapter("7. GI SAVE asks the school about attendance in a side thread; the school never sees the case");
    ask_the_school(&line, thread, &mut gi, &mut school).await?;

    line.chapter("8. The family asks who saw their data; the audit chain is verified");
    let officer = hub.client("vt-utrecht-privacy").discard_events().connect().await?;
    let who_name = who(&officer);
    line.say(&who(&officer), "prints the family's access report (GDPR art. 15):");
    let report = officer.access_report(thread).await?;
    let who_section = report.split("## Timeline").next().unwrap_or_default();
    for row in who_section.lines().filter(|l| !l.is_empty()) {
        println!("             {row}");
    }
    let until = Date::from_unix_ms(clock.now_ms()).add_days(1);
    let figures = officer.chain_figures(started, until).await?;
    for party in [anna, vt, lead, lt, rvdk, gi, oudewater, school] {
        party.client.close().await;
    }
    officer.close().await;
    let verified = hub.stop_and_verify_audit().await?;
    line.say("hub", "stopped cleanly; every acknowledged step was on disk first");
    line.say(
        &who_name,
        format!(
            "prints the chain figures of this history (cells under {} suppressed; 10 by default), no case or worker named:",
            figures.min_count
        ),
    );
    for row in chain_lines(&figures) {
        println!("             {row}");
    }
    match verified {
        Ok(v) => {
            line.say(
                "audit",
                format!("chain verified: {} entries, {} signed checkpoints, intact", v.entries, v.checkpoints),
            );
            Ok(())
        }
        Err(e) => {
            line.say("audit", format!("chain verification FAILED at seq {}: {e}", e.seq()));
            anyhow::bail!("the audit chain does not verify")
        }
    }
}
