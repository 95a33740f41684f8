//! The handover life cycle beyond the happy path, through a real hub:
//! reassignment to a colleague by a team lead, a team lead's takeover from an
//! absent owner, offers withdrawn and cancelled, and the completion deadline
//! that escalates.

use std::time::Duration;

use hub::clock::Clock;
use ketenhub_sdk::{
    AuditFilter, ClockKind, Escalation, Event, EventStream, FamilyTold, Grounds, HandoverEvent, OfferRequest,
    OfferState, ParticipantRole,
};
use tests::{connect, messages, next_event, refusal_rule, DevHub};
use wire::handover::REASSIGNMENT_ROUTE;
use wire::MemberId;

const WAIT: Duration = Duration::from_secs(20);
const DAY_MS: u64 = 86_400_000;

fn offer(to: &MemberId, route: &str, deadline_ms: u64) -> OfferRequest {
    OfferRequest {
        to: to.oin.clone(),
        to_worker: Some(to.worker.clone()),
        route: route.into(),
        legal_basis: "consent".into(),
        reason: "the family needs support at home".into(),
        justification: None,
        deadline_ms,
    }
}

async fn handover_step(events: &mut EventStream, want: impl Fn(&HandoverEvent) -> bool) -> anyhow::Result<()> {
    next_event(events, WAIT, |e| matches!(e, Event::Handover { event, .. } if want(event))).await.map(drop)
}

fn deadline() -> u64 {
    hub::clock::now_ms() + 2 * DAY_MS
}

#[tokio::test]
async fn a_team_lead_reassigns_the_case_of_a_sick_worker_to_a_colleague() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let hub = DevHub::start(dir.path(), tests::limits()).await?;
    let (anna, _anna_events) = connect(&hub, "vt-utrecht-caseworker").await?;
    let (sanne, _sanne_events) = connect(&hub, "lt-woerden-caseworker").await?;
    let (bram, mut bram_events) = connect(&hub, "vt-utrecht-colleague").await?;
    let (petra, _) = connect(&hub, "vt-utrecht-teamlead").await?;
    let thread = anna.create_thread().await?;
    anna.add_member(thread, sanne.member_id(), &Grounds::new("support at home", "consent")).await?;

    // Anna is sick. A colleague who is no team lead may not reassign her case; the team lead may, unseen.
    let to_bram = offer(&bram.member_id(), REASSIGNMENT_ROUTE, deadline());
    assert_eq!(refusal_rule(bram.offer_handover(thread, to_bram.clone()).await), "NotFound");
    let mut to_nobody = to_bram.clone();
    to_nobody.to_worker = None;
    assert_eq!(refusal_rule(petra.offer_handover(thread, to_nobody).await), "reassign-to-a-colleague");
    let mut off_route = to_bram.clone();
    off_route.route = "vt-lt-referral".into();
    assert_eq!(refusal_rule(petra.offer_handover(thread, off_route).await), "reassignment-route");
    let made = petra.offer_handover(thread, to_bram).await?;
    assert_eq!(made.owner, anna.member_id(), "offering does not move regie");
    let id = made.offers[0].id;
    assert!(petra.members(thread).await.is_err(), "the team lead reassigns without reading the case");

    bram.accept_offer(thread, id).await?;
    // The owner is away: another member of the case brings the colleague's device into the group.
    sanne.add_member(thread, bram.member_id(), &Grounds::new("the new worker of VT", "consent")).await?;
    sanne.send_text(thread, "Welkom Bram; het gezin verwacht je donderdag.").await?;
    let read = messages(&mut bram_events, 1, WAIT).await?;
    assert_eq!(read[0].content.as_bytes(), "Welkom Bram; het gezin verwacht je donderdag.".as_bytes());

    let done = bram.complete_handover(thread, id, FamilyTold::Yes).await?;
    assert_eq!(done.owner, bram.member_id());
    assert!(done.background.iter().any(|b| b.member == anna.member_id()), "the former owner keeps a background role");
    assert_eq!(refusal_rule(anna.send_text(thread, "ik ben terug").await), "background-read-only");

    let officer = hub.client("vt-utrecht-privacy").discard_events().connect().await?;
    let log = officer.audit_query(AuditFilter { case: Some(thread), ..AuditFilter::default() }).await?;
    let by_lead = log.iter().find(|e| {
        e.record.actor.as_ref().is_some_and(|a| a.worker == "petra.vos") && e.record.rule == "team-lead-of-owner"
    });
    let object = by_lead.and_then(|e| e.record.object.as_deref());
    assert!(object.is_some_and(|o| o.starts_with("offer to")), "the lead's offer is audited as the lead's: {object:?}");
    hub.stop().await
}

#[tokio::test]
async fn a_team_lead_takes_over_directly_and_the_privacy_officer_sees_why() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let hub = DevHub::start(dir.path(), tests::limits()).await?;
    let (anna, mut anna_events) = connect(&hub, "vt-utrecht-caseworker").await?;
    let (bram, _) = connect(&hub, "vt-utrecht-colleague").await?;
    let (petra, mut petra_events) = connect(&hub, "vt-utrecht-teamlead").await?;
    let (sanne, _) = connect(&hub, "lt-woerden-caseworker").await?;
    let thread = anna.create_thread().await?;
    anna.add_member(thread, bram.member_id(), &Grounds::new("second worker on the case", "consent")).await?;

    // A colleague on the case is no team lead; a team lead of another organisation's case sees nothing.
    assert_eq!(refusal_rule(bram.take_over(thread, "anna is sick").await), "Forbidden");
    let theirs = sanne.create_thread().await?;
    assert_eq!(refusal_rule(petra.take_over(theirs, "anna is sick").await), "NotFound");
    assert_eq!(refusal_rule(petra.take_over(thread, " ").await), "Invalid", "a takeover needs a reason");

    let taken = petra.take_over(thread, "Anna is langdurig ziek").await?;
    assert_eq!(taken.owner, petra.member_id());
    assert!(taken.background.iter().any(|b| b.member == anna.member_id()));
    handover_step(
        &mut anna_events,
        |e| matches!(e, HandoverEvent::TakenOver { owner, .. } if *owner == petra.member_id()),
    )
    .await?;
    // The lead is on the case now; a member brings its device into the group, and it reads.
    bram.add_member(thread, petra.member_id(), &Grounds::new("the team lead took the case over", "consent")).await?;
    bram.send_text(thread, "Petra, het dossier staat hieronder.").await?;
    messages(&mut petra_events, 1, WAIT).await?;

    let officer = hub.client("vt-utrecht-privacy").discard_events().connect().await?;
    let log = officer.audit_query(AuditFilter { case: Some(thread), ..AuditFilter::default() }).await?;
    let takeover = log.iter().rev().find(|e| {
        e.record.object.as_deref() == Some("team lead takes the case over") && e.record.rule == "team-lead-of-owner"
    });
    let takeover = takeover.expect("the takeover is in the log");
    assert_eq!(takeover.record.purpose.as_deref(), Some("Anna is langdurig ziek"));
    assert_eq!(takeover.record.actor.as_ref().map(|a| a.worker.as_str()), Some("petra.vos"));
    hub.stop().await
}

#[tokio::test]
async fn offers_are_withdrawn_and_cancelled_and_an_unfinished_one_escalates() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let clock = Clock::system();
    let hub = DevHub::start_with_clock(dir.path(), tests::limits(), clock.clone()).await?;
    let (anna, mut anna_events) = connect(&hub, "vt-utrecht-caseworker").await?;
    let (sanne, _) = connect(&hub, "lt-woerden-caseworker").await?;
    let thread = anna.create_thread().await?;
    let lt = sanne.member_id();

    let first = anna.offer_handover(thread, offer(&lt, "vt-lt-referral", clock.now_ms() + DAY_MS)).await?;
    let id = first.offers[0].id;
    assert_eq!(refusal_rule(sanne.withdraw_offer(thread, id, "niet de onze").await), "NotFound");
    assert_eq!(refusal_rule(anna.withdraw_offer(thread, id, "").await), "Invalid");
    let withdrawn = anna.withdraw_offer(thread, id, "verkeerde regio").await?;
    assert!(matches!(withdrawn.offers[0].state, OfferState::Withdrawn { .. }));
    anna.withdraw_offer(thread, id, "verkeerde regio").await?;
    assert_eq!(refusal_rule(sanne.accept_offer(thread, id).await), "Conflict");
    assert!(sanne.pending_offers().await?.is_empty(), "a withdrawn offer waits for nobody");

    let second = anna.offer_handover(thread, offer(&lt, "vt-lt-referral", clock.now_ms() + 2 * DAY_MS)).await?;
    let id = second.offers[1].id;
    let accepted = sanne.accept_offer(thread, id).await?;
    let completion = accepted.clocks.iter().find(|c| c.kind == ClockKind::Completion).expect("the route's deadline");
    assert!(!completion.done);
    let cancelled = sanne.cancel_offer(thread, id, "het gezin verhuist naar Gouda").await?;
    assert_eq!(cancelled.owner, anna.member_id(), "the sender stays owner");
    assert!(cancelled.clocks.iter().all(|c| c.kind != ClockKind::Completion || c.done));
    handover_step(&mut anna_events, |e| matches!(e, HandoverEvent::Cancelled { receiver, .. } if *receiver == lt))
        .await?;
    assert!(!anna.members(thread).await?.contains(&lt), "the receiver of a cancelled offer leaves the case");
    sanne.cancel_offer(thread, id, "het gezin verhuist naar Gouda").await.expect("a resent cancel reads as done");
    assert_eq!(refusal_rule(sanne.members(thread).await), "NotFound", "and sees nothing more of it");

    // Accepted and never completed: past the route's ten working days the owner hears of it.
    let third = anna.offer_handover(thread, offer(&lt, "vt-lt-referral", clock.now_ms() + 3 * DAY_MS)).await?;
    let id = third.offers[2].id;
    sanne.accept_offer(thread, id).await?;
    clock.advance(16 * DAY_MS);
    hub.hub().fire_deadlines().await?;
    let owner = anna.member_id();
    handover_step(&mut anna_events, |e| {
        matches!(e, HandoverEvent::Escalated { escalation: Escalation::Overdue { clock: ClockKind::Completion, owner: o, .. } } if *o == owner)
    })
    .await?;
    assert_eq!(anna.ownership(thread).await?.owner, anna.member_id(), "the owner stays the family's contact");
    hub.stop().await
}

#[tokio::test]
async fn a_closed_case_is_read_only_for_everyone_reopens_in_its_period_and_is_archived_after_it() -> anyhow::Result<()>
{
    let dir = tempfile::tempdir()?;
    let clock = Clock::system();
    let hub = DevHub::start_with_clock(dir.path(), tests::limits(), clock.clone()).await?;
    let (anna, _) = connect(&hub, "vt-utrecht-caseworker").await?;
    let (sanne, mut sanne_events) = connect(&hub, "lt-woerden-caseworker").await?;
    let (petra, _) = connect(&hub, "vt-utrecht-teamlead").await?;
    let thread = anna.create_thread().await?;
    anna.add_member(thread, sanne.member_id(), &Grounds::new("support at home", "consent")).await?;

    // Only the owner closes, with an outcome the policy names, and not while an offer is open.
    assert_eq!(refusal_rule(sanne.close_case(thread, "safe-at-home", "safe").await), "Forbidden");
    assert_eq!(refusal_rule(anna.close_case(thread, "solved", "safe").await), "unknown-outcome");
    let open = anna.offer_handover(thread, offer(&sanne.member_id(), "vt-lt-referral", deadline())).await?;
    assert_eq!(refusal_rule(anna.close_case(thread, "safe-at-home", "safe").await), "Conflict");
    anna.withdraw_offer(thread, open.offers[0].id, "not needed after all").await?;
    let closed = anna.close_case(thread, "safe-at-home", "het gezin is veilig; de hulp is afgerond").await?;
    let closure = closed.closed().expect("closed").clone();
    assert_eq!(closure.reopen_until_ms, closure.at_ms + 456 * DAY_MS, "the policy's reopening period");
    handover_step(
        &mut sanne_events,
        |e| matches!(e, HandoverEvent::Closed { outcome, .. } if outcome == "safe-at-home"),
    )
    .await?;
    anna.close_case(thread, "safe-at-home", "het gezin is veilig; de hulp is afgerond").await.expect("a resend");

    // Closed: everyone reads, nobody writes or brings anyone in.
    assert_eq!(refusal_rule(sanne.send_text(thread, "nog iets").await), "case-closed");
    assert_eq!(refusal_rule(anna.send_text(thread, "nog iets").await), "case-closed");
    let refusal = anna.add_member(thread, petra.member_id(), &Grounds::new("a colleague", "consent")).await;
    assert_eq!(refusal_rule(refusal), "case-closed");
    let again = offer(&sanne.member_id(), "vt-lt-referral", deadline());
    assert_eq!(refusal_rule(anna.offer_handover(thread, again).await), "Conflict");
    assert!(sanne.members(thread).await?.contains(&anna.member_id()), "members still read the case");

    // Within the period the team lead reopens it (the owner is away) without joining; members are told.
    assert_eq!(refusal_rule(sanne.reopen_case(thread, "nieuwe melding").await), "Forbidden");
    let reopened = petra.reopen_case(thread, "nieuwe melding over de jongste").await?;
    assert!(reopened.closed().is_none());
    handover_step(&mut sanne_events, |e| matches!(e, HandoverEvent::Reopened { .. })).await?;
    assert_eq!(refusal_rule(petra.members(thread).await), "NotFound", "reopening does not make the lead a member");
    sanne.send_text(thread, "Ik ken het gezin nog; ik help graag.").await?;

    // Closed again and left past its period: archived, every membership ends, and it cannot be reopened.
    anna.close_case(thread, "handed-to-regular-care", "de huisarts volgt het gezin").await?;
    clock.advance(457 * DAY_MS);
    hub.hub().fire_deadlines().await?;
    handover_step(&mut sanne_events, |e| matches!(e, HandoverEvent::Archived)).await?;
    next_event(
        &mut sanne_events,
        WAIT,
        |e| matches!(e, Event::MemberRemoved { member, .. } if *member == sanne.member_id()),
    )
    .await?;
    assert_eq!(refusal_rule(anna.members(thread).await), "NotFound", "the owner's membership ended too");
    assert_eq!(refusal_rule(anna.reopen_case(thread, "te laat").await), "NotFound");
    let officer = hub.client("vt-utrecht-privacy").discard_events().connect().await?;
    let log = officer.audit_query(AuditFilter { case: Some(thread), ..AuditFilter::default() }).await?;
    // The refused attempts are in the log too, each followed by its failure; the close that happened carries its reason.
    assert!(log.iter().any(|e| e.record.object.as_deref() == Some("close the case: safe-at-home")
        && e.record.purpose.as_deref() == Some("het gezin is veilig; de hulp is afgerond")));
    assert!(log
        .iter()
        .any(|e| e.record.object.as_deref() == Some("reopen the case") && e.record.rule == "team-lead-of-owner"));
    assert_eq!(log.iter().filter(|e| e.record.rule == "case-archived").count(), 2, "both memberships ended, audited");
    // Nobody waits for an archived case's content: retention deletes it once its period has passed.
    let swept = hub.hub().sweep_retention(clock.now_ms() + 31 * DAY_MS).await?;
    assert_eq!(swept.messages, 1, "the one message of the archived case: {swept:?}");
    hub.stop().await
}

#[tokio::test]
async fn a_route_that_keeps_duties_apart_refuses_an_offer_by_a_former_co_worker() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let hub = DevHub::start(dir.path(), tests::limits()).await?;
    let (anna, _) = connect(&hub, "vt-utrecht-caseworker").await?;
    let (bram, _) = connect(&hub, "vt-utrecht-colleague").await?;
    let (rvdk, _) = connect(&hub, "rvdk-caseworker").await?;
    let thread = anna.create_thread().await?;
    let until = hub::clock::now_ms() + 20 * DAY_MS;
    let team = Grounds::new("veiligheidsteam", "consent");
    anna.add_participant(thread, bram.member_id(), (ParticipantRole::CoWorker, until), &team).await?;

    let mut to_raad = offer(&rvdk.member_id(), "vt-rvdk-request", deadline());
    to_raad.legal_basis = "vt-safety".into();
    to_raad.justification = Some("aanhoudende onveiligheid ondanks het veiligheidsplan".into());
    // Anna never worked the case as a co-worker: she may file the request.
    let filed = anna.offer_handover(thread, to_raad.clone()).await?;
    anna.withdraw_offer(thread, filed.offers[0].id, "eerst de reassignment").await?;

    // Bram leaves the team and the case is reassigned to him; as a former co-worker he may not file it.
    bram.leave_case(thread, "het veiligheidsteam is klaar").await?;
    let id = anna.offer_handover(thread, offer(&bram.member_id(), REASSIGNMENT_ROUTE, deadline())).await?.offers[1].id;
    bram.accept_offer(thread, id).await?;
    bram.complete_handover(thread, id, FamilyTold::Yes).await?;
    to_raad.deadline_ms += 1;
    assert_eq!(refusal_rule(bram.offer_handover(thread, to_raad).await), "separation-of-duties");
    let mut to_local_team = offer(&rvdk.member_id(), "vt-lt-referral", deadline());
    to_local_team.to = "00000001800000000002".parse()?;
    to_local_team.to_worker = None;
    bram.offer_handover(thread, to_local_team).await.expect("other routes keep no such rule");
    hub.stop().await
}
