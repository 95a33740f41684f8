//! Warm handover through a real hub: one owner at every step, every refusal,
//! and deadlines that fire after a restart on a clock the test moves.

use std::path::Path;
use std::time::Duration;

use hub::clock::Clock;
use ketenhub_sdk::packet::Date;
use ketenhub_sdk::HandoverPacket;
use ketenhub_sdk::{
    Client, ClockKind, Error, Escalation, Event, EventStream, FamilyTold, Grounds, HandoverEvent, OfferRequest,
    OfferState,
};
use tests::{messages, next_event, refusal_rule, DevHub};
use wire::ThreadId;

const WAIT: Duration = Duration::from_secs(20);
const HOUR_MS: u64 = 3_600_000;
const DAY_MS: u64 = 24 * HOUR_MS;

fn offer(to: &Client, route: &str, basis: &str, deadline_ms: u64) -> OfferRequest {
    OfferRequest {
        to: to.identity().oin.clone(),
        to_worker: Some(to.identity().worker.clone()),
        route: route.into(),
        legal_basis: basis.into(),
        reason: "the family needs support at home".into(),
        justification: None,
        deadline_ms,
    }
}

async fn next_handover(events: &mut EventStream) -> anyhow::Result<HandoverEvent> {
    match next_event(events, WAIT, |e| matches!(e, Event::Handover { .. })).await? {
        Event::Handover { event, .. } => Ok(event),
        _ => unreachable!(),
    }
}

#[tokio::test]
async fn a_case_passes_from_vt_to_lt_with_one_owner_at_every_step() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let hub = DevHub::start(dir.path(), tests::limits()).await?;
    let vt = hub.client("vt-utrecht-caseworker").connect().await?;
    let mut vt_events = vt.events().unwrap();
    let lt = hub.client("lt-woerden-caseworker").connect().await?;
    let mut lt_events = lt.events().unwrap();
    let thread = vt.create_thread().await?;
    vt.send_text(thread, "Melding: zorgen over de veiligheid van twee kinderen.").await?;
    assert_eq!(vt.ownership(thread).await?.owner, vt.member_id(), "the creator owns the case");

    let deadline = hub::clock::now_ms() + 2 * DAY_MS;
    let made = vt.offer_handover(thread, offer(&lt, "vt-lt-referral", "consent", deadline)).await?;
    let id = made.offers[0].id;
    assert_eq!(made.owner, vt.member_id());
    let waiting = lt.pending_offers().await?;
    assert_eq!(waiting.iter().map(|(t, o)| (*t, o.id)).collect::<Vec<_>>(), vec![(thread, id)]);
    assert!(lt.members(thread).await.is_err(), "an offer alone shows the receiver nothing");

    let accepted = lt.accept_offer(thread, id).await?;
    assert_eq!(accepted.owner, vt.member_id(), "accepting does not move regie");
    assert!(lt.members(thread).await?.contains(&lt.member_id()));
    assert!(matches!(next_handover(&mut vt_events).await?, HandoverEvent::Offered { .. }));
    assert!(matches!(next_handover(&mut vt_events).await?, HandoverEvent::Accepted { .. }));
    // The sender's device brings the receiver into the MLS group and shares what it needs.
    vt.add_member(thread, lt.member_id(), &Grounds::new("accepted handover", "consent")).await?;
    let today = Date::from_unix_ms(hub::clock::now_ms());
    let mut incomplete = HandoverPacket::example(today);
    incomplete.reason.clear();
    incomplete.family.retain(|m| !m.role.is_child());
    match vt.send_packet(thread, incomplete, today).await {
        Err(Error::Packet(errors)) => {
            let paths = errors.paths();
            assert!(paths.iter().any(|p| p.starts_with("reason")), "{errors}");
            assert!(paths.iter().any(|p| p.starts_with("family")), "{errors}");
        }
        other => panic!("an incomplete packet was not refused: {other:?}"),
    }
    // The packet names a report attached to the thread; the receiver confirms it.
    let report = dir.path().join("rapportage.pdf");
    tests::write_random_file(&report, 400_000, 9)?;
    let (_, attachment) = vt.send_attachment(thread, &report, "application/pdf").await?;
    let mut packet = HandoverPacket::example(today);
    packet.attachments = vec![ketenhub_sdk::packet::AttachmentRef::to(&attachment, "VT's report of the home visit")];
    vt.send_packet(thread, packet.clone(), today).await?;
    let got = messages(&mut lt_events, 2, WAIT).await?;
    let ketenhub_sdk::Content::Attachment(received) = &got[0].content else { panic!("expected the attachment") };
    assert_eq!(got[1].content, ketenhub_sdk::Content::HandoverPacket(Box::new(packet.clone())));
    let confirmed =
        lt.confirm_attachment(thread, &packet.attachments[0], received, dir.path().join("ontvangen.pdf")).await?;
    assert_eq!(confirmed.size, 400_000);
    let mut wrong = packet.attachments[0].clone();
    wrong.sha256_hex = "0".repeat(64);
    assert!(lt.confirm_attachment(thread, &wrong, received, dir.path().join("x.pdf")).await.is_err());
    assert_eq!(HandoverPacket::from_json(&packet.to_json())?, packet, "case systems read the JSON form");

    let empty = FamilyTold::No { reason: String::new() };
    assert_eq!(refusal_rule(lt.complete_handover(thread, id, empty).await), "Invalid");
    assert_eq!(refusal_rule(vt.complete_handover(thread, id, FamilyTold::Yes).await), "NotFound", "only the acceptor");
    let done = lt.complete_handover(thread, id, FamilyTold::Yes).await?;
    assert_eq!(done.owner, lt.member_id());
    assert_eq!(done.background.iter().map(|b| &b.member).collect::<Vec<_>>(), vec![&vt.member_id()]);
    assert!(matches!(done.offers[0].state, OfferState::Completed { .. }));
    // VT stays in the background: still a member and reading, no longer writing or owning.
    assert!(vt.members(thread).await?.contains(&vt.member_id()));
    assert_eq!(refusal_rule(vt.send_text(thread, "one more thing").await), "background-read-only");
    lt.send_text(thread, "LT writes as the owner").await?;
    assert_eq!(refusal_rule(lt.leave_case(thread, "owner").await), "Invalid", "the owner does not leave this way");
    assert_eq!(refusal_rule(vt.leave_case(thread, " ").await), "Invalid", "leaving needs a reason");
    let after = vt.leave_case(thread, "LT has regie and the family knows their contact").await?;
    assert!(after.background.is_empty() && after.left.iter().any(|(m, _)| *m == vt.member_id()));
    assert!(matches!(
        next_event(&mut lt_events, WAIT, |e| matches!(e, Event::Handover { event: HandoverEvent::Left { .. }, .. }))
            .await?,
        Event::Handover { .. }
    ));
    // Having left, VT is off the case: it cannot tell the case from one that does not exist.
    assert_eq!(
        refusal_rule(vt.offer_handover(thread, offer(&lt, "vt-lt-referral", "consent", deadline)).await),
        "NotFound"
    );
    hub.stop().await
}

#[tokio::test]
async fn every_handover_refusal_is_typed_and_named() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let hub = DevHub::start(dir.path(), tests::limits()).await?;
    let vt = hub.client("vt-utrecht-caseworker").discard_events().connect().await?;
    let lt = hub.client("lt-woerden-caseworker").discard_events().connect().await?;
    let oudewater = hub.client("lt-oudewater-caseworker").discard_events().connect().await?;
    let rvdk = hub.client("rvdk-caseworker").discard_events().connect().await?;
    let gi = hub.client("gi-save-caseworker").discard_events().connect().await?;
    let officer = hub.client("vt-utrecht-privacy").discard_events().connect().await?;
    let thread = vt.create_thread().await?;
    let deadline = hub::clock::now_ms() + DAY_MS;

    assert_eq!(
        refusal_rule(vt.offer_handover(thread, offer(&gi, "vt-gi-referral", "consent", deadline)).await),
        "unknown-route"
    );
    assert_eq!(
        refusal_rule(vt.offer_handover(thread, offer(&gi, "rvdk-gi-measure", "ots-measure", deadline)).await),
        "route-does-not-fit"
    );
    assert_eq!(
        refusal_rule(vt.offer_handover(thread, offer(&lt, "vt-lt-referral", "ots-measure", deadline)).await),
        "basis-not-on-route"
    );
    assert_eq!(
        refusal_rule(vt.offer_handover(thread, offer(&rvdk, "vt-rvdk-request", "vt-safety", deadline)).await),
        "justification-required"
    );
    assert_eq!(
        refusal_rule(gi.offer_handover(thread, offer(&lt, "gi-lt-step-down", "consent", deadline)).await),
        "NotFound",
        "outsiders learn nothing"
    );
    assert_eq!(
        refusal_rule(vt.offer_handover(thread, offer(&lt, "vt-lt-referral", "consent", 1)).await),
        "Invalid",
        "deadline in the past"
    );

    // Sharing without consent: allowed with a written justification, and queued for review.
    let mut unsafe_home = offer(&rvdk, "vt-rvdk-request", "vt-safety", deadline);
    unsafe_home.justification = Some("Acute unsafety; the parents refuse help and deny the incidents.".into());
    let id = vt.offer_handover(thread, unsafe_home).await?.offers[0].id;
    let review = officer.pending_offers().await?;
    assert!(review.iter().any(|(t, o)| *t == thread && o.id == id), "not in VT's privacy review queue");
    assert_eq!(
        refusal_rule(vt.offer_handover(thread, offer(&lt, "vt-lt-referral", "consent", deadline)).await),
        "Conflict",
        "one open offer"
    );
    // Only the addressed receiver answers; others get the answer for an unknown case.
    assert_eq!(refusal_rule(gi.accept_offer(thread, id).await), "NotFound");
    assert_eq!(refusal_rule(oudewater.decline_offer(thread, id, "not ours").await), "NotFound");
    assert_eq!(refusal_rule(rvdk.decline_offer(thread, id, " ").await), "Invalid", "a decline needs a reason");
    let declined = rvdk.decline_offer(thread, id, "No court route needed yet; try the local team.").await?;
    assert_eq!(declined.owner, vt.member_id(), "declining leaves the sender owner");
    assert_eq!(refusal_rule(rvdk.accept_offer(thread, id).await), "Conflict", "a declined offer stays declined");
    // A privacy officer takes no handover steps.
    assert_eq!(refusal_rule(officer.accept_offer(thread, id).await), "role-forbids");
    hub.stop().await
}

/// Restarts a dev hub on `dir`, retrying while the previous one releases the store.
async fn restart(dir: &Path, clock: Clock) -> anyhow::Result<DevHub> {
    for _ in 0..100 {
        match DevHub::start_with_clock(dir, tests::limits(), clock.clone()).await {
            Ok(hub) => return Ok(hub),
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    DevHub::start_with_clock(dir, tests::limits(), clock).await
}

#[tokio::test]
async fn deadlines_fire_after_a_restart_on_the_hubs_clock() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let clock = Clock::system();
    let hub = DevHub::start_with_clock(dir.path(), tests::limits(), clock.clone()).await?;
    let vt = hub.client("vt-utrecht-caseworker").state_dir(dir.path().join("vt")).discard_events().connect().await?;
    let lt = hub.client("lt-woerden-caseworker").discard_events().connect().await?;
    let rvdk = hub.client("rvdk-caseworker").state_dir(dir.path().join("rvdk")).discard_events().connect().await?;
    let gi = hub.client("gi-save-caseworker").discard_events().connect().await?;
    // An offer from VT to LT that nobody answers.
    let referral = vt.create_thread().await?;
    let deadline = clock.now_ms() + 2 * HOUR_MS;
    vt.offer_handover(referral, offer(&lt, "vt-lt-referral", "consent", deadline)).await?;
    // A court measure handed from the Raad to the GI, accepted: the contact clock starts.
    let measure: ThreadId = rvdk.create_thread().await?;
    let mut court = offer(&gi, "rvdk-gi-measure", "ots-measure", deadline);
    court.justification = Some("OTS ordered by the juvenile court, C/16/555123 JE RK 26-101".into());
    let id = rvdk.offer_handover(measure, court).await?.offers[0].id;
    gi.accept_offer(measure, id).await?;
    for client in [&vt, &lt, &rvdk, &gi] {
        client.close().await;
    }
    hub.stop().await?;

    // While the hub is down, three hours pass: the offer's deadline is behind us.
    clock.advance(3 * HOUR_MS);
    let hub = restart(dir.path(), clock.clone()).await?;
    let vt = hub.client("vt-utrecht-caseworker").state_dir(dir.path().join("vt")).connect().await?;
    let mut vt_events = vt.events().unwrap();
    let escalated = loop {
        if let HandoverEvent::Escalated { escalation } = next_handover(&mut vt_events).await? {
            break escalation;
        }
    };
    assert!(matches!(escalated, Escalation::OfferExpired { ref sender, .. } if *sender == vt.member_id()));
    let ownership = vt.ownership(referral).await?;
    assert_eq!((ownership.owner, &ownership.offers[0].state), (vt.member_id(), &OfferState::Expired));

    // Eight days on (five working days and more), the GI's first contact is overdue.
    clock.advance(8 * DAY_MS);
    let rvdk = hub.client("rvdk-caseworker").state_dir(dir.path().join("rvdk")).connect().await?;
    let mut rvdk_events = rvdk.events().unwrap();
    let overdue = loop {
        if let HandoverEvent::Escalated { escalation: Escalation::Overdue { clock, escalation, .. } } =
            next_handover(&mut rvdk_events).await?
        {
            break (clock, escalation);
        }
    };
    assert_eq!(overdue, (ClockKind::FirstContact, 1));
    // The GI, which accepted, reports the contact; others on the case may not. Then the clock stops.
    let gi = hub.client("gi-save-caseworker").discard_events().connect().await?;
    let lt = hub.client("lt-woerden-caseworker").discard_events().connect().await?;
    assert_eq!(
        refusal_rule(lt.report_done(measure, ClockKind::FirstContact).await),
        "NotFound",
        "LT is not on the case"
    );
    gi.report_done(measure, ClockKind::FirstContact).await?;
    let clocks = rvdk.ownership(measure).await?.clocks;
    assert!(clocks.iter().all(|c| c.kind != ClockKind::FirstContact || c.done));
    assert!(clocks.iter().any(|c| c.kind == ClockKind::SafetyPlan && !c.done), "the safety plan is due later");
    // A rappel is scheduled by the owner only.
    assert_eq!(refusal_rule(gi.schedule_rappel(measure).await), "Forbidden");
    rvdk.schedule_rappel(measure).await?;
    hub.stop().await
}

/// The receiver completes with what each family member was told: the records travel encrypted in the
/// thread, and the completion the hub keeps says whether the family was told, pointing at them if not.
#[tokio::test]
async fn a_completion_refers_to_what_each_family_member_was_told() -> anyhow::Result<()> {
    use ketenhub_sdk::packet::{Informed, Told};
    let dir = tempfile::tempdir()?;
    let hub = DevHub::start(dir.path(), tests::limits()).await?;
    let vt = hub.client("vt-utrecht-caseworker").connect().await?;
    let mut vt_events = vt.events().unwrap();
    let lt = hub.client("lt-woerden-caseworker").discard_events().connect().await?;
    let today = Date::from_unix_ms(hub::clock::now_ms());
    let record = |member: &str, outcome: Told| Informed {
        member: member.into(),
        decision: "Overdracht aan Lokaal team Woerden".into(),
        outcome,
    };
    let told = |member| {
        record(
            member,
            Told::Told { on: today, by: "lokaal team, team jeugd".into(), what: "wie het aanspreekpunt is".into() },
        )
    };
    let not_told = |member| record(member, Told::NotTold { reason: "nog niet bereikt".into() });

    let mut completions = Vec::new();
    for records in [vec![told("p1"), not_told("p2")], vec![not_told("p1")]] {
        let thread = vt.create_thread().await?;
        let deadline = hub::clock::now_ms() + 2 * DAY_MS;
        let id = vt.offer_handover(thread, offer(&lt, "vt-lt-referral", "consent", deadline)).await?.offers[0].id;
        lt.accept_offer(thread, id).await?;
        vt.add_member(thread, lt.member_id(), &Grounds::new("accepted handover", "consent")).await?;
        let empty = lt.complete_informed(thread, id, Vec::new()).await;
        assert!(matches!(empty, Err(Error::Invalid(_))), "no records: {empty:?}");
        let blank = lt.complete_informed(thread, id, vec![record("p1", Told::NotTold { reason: " ".into() })]).await;
        assert!(matches!(blank, Err(Error::Invalid(_))), "a record without its reason: {blank:?}");
        let (sent, ownership) = lt.complete_informed(thread, id, records.clone()).await?;
        assert_eq!(ownership.owner, lt.member_id(), "regie moved");
        let shown = next_event(
            &mut vt_events,
            WAIT,
            |e| matches!(e, Event::Message(m) if m.thread == thread && m.id == sent.id),
        )
        .await?;
        let Event::Message(message) = shown else { unreachable!() };
        assert_eq!(message.content, ketenhub_sdk::Content::Informed { offer: id, records });
        completions.push((sent.id, ownership.offers[0].state.clone()));
    }
    assert!(matches!(&completions[0].1, OfferState::Completed { family: FamilyTold::Yes, .. }));
    let OfferState::Completed { family: FamilyTold::No { reason }, .. } = &completions[1].1 else {
        panic!("nobody was told: {:?}", completions[1].1)
    };
    assert!(reason.contains(&completions[1].0.to_string()), "the reason points at the records: {reason}");
    hub.stop().await
}
