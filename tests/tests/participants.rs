//! The team model through a real hub: a consultant of another organisation
//! takes part in a case until an end date, brings nobody in and takes no
//! handover step; at the end date the hub ends the membership, audits it,
//! and the owner's device is prompted to remove its devices from the group.

use std::time::Duration;

use hub::clock::Clock;
use ketenhub_sdk::{AuditFilter, ErrorCode, Event, Grounds, HandoverEvent, ParticipantRole};
use tests::{connect, messages, next_event, refusal_rule, DevHub};
use wire::handover::PARTICIPATION_ENDED;
use wire::MemberId;

const WAIT: Duration = Duration::from_secs(20);
const DAY_MS: u64 = 86_400_000;

/// The refusal's code and whether its message names `rule`.
fn refused_by(result: Result<impl std::fmt::Debug, ketenhub_sdk::Error>, rule: &str) -> Option<ErrorCode> {
    match result {
        Err(ketenhub_sdk::Error::Hub(e)) if e.message.contains(rule) => Some(e.code),
        other => panic!("expected a refusal by {rule}, got {other:?}"),
    }
}

#[tokio::test]
async fn a_consultant_takes_part_until_its_end_date_and_then_the_owner_removes_it() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let clock = Clock::system();
    let hub = DevHub::start_with_clock(dir.path(), tests::limits(), clock.clone()).await?;
    let (anna, mut anna_events) = connect(&hub, "vt-utrecht-caseworker").await?;
    let (sanne, mut sanne_events) = connect(&hub, "lt-woerden-caseworker").await?;
    let (bram, _) = connect(&hub, "vt-utrecht-colleague").await?;
    let thread = anna.create_thread().await?;
    let advice = Grounds::new("gedragsadvies over de jongste", "consent");
    let until = clock.now_ms() + 14 * DAY_MS;

    // Nobody off the case brings anyone in; the policy bounds the period; a co-worker is a colleague.
    let consultant = (ParticipantRole::Consultant, until);
    assert_eq!(refusal_rule(sanne.add_participant(thread, sanne.member_id(), consultant, &advice).await), "NotFound");
    let too_long = (ParticipantRole::Consultant, clock.now_ms() + 120 * DAY_MS);
    let refusal = anna.add_participant(thread, sanne.member_id(), too_long, &advice).await;
    assert_eq!(refusal_rule(refusal), "participation-too-long");
    let outside = (ParticipantRole::CoWorker, until);
    let refusal = anna.add_participant(thread, sanne.member_id(), outside, &advice).await;
    assert_eq!(refused_by(refusal, "co-worker-inside-organisation"), Some(ErrorCode::Invalid));

    let ownership = anna.add_participant(thread, sanne.member_id(), consultant, &advice).await?;
    let taking_part = ownership.participants.iter().find(|p| p.member == sanne.member_id()).expect("a participant");
    assert_eq!((taking_part.role, taking_part.until_ms), consultant);
    assert!(anna.members(thread).await?.contains(&sanne.member_id()));
    anna.send_text(thread, "Sanne, wat zie jij in het gedrag van Daan?").await?;
    assert_eq!(
        messages(&mut sanne_events, 1, WAIT).await?[0].content.as_bytes(),
        "Sanne, wat zie jij in het gedrag van Daan?".as_bytes()
    );
    sanne.send_text(thread, "Angst bij harde geluiden; ik adviseer een observatie.").await?;
    messages(&mut anna_events, 1, WAIT).await?;

    // A colleague of the owner is a co-worker, not a consultant; a full member is not made a participant.
    let petra = MemberId { oin: anna.identity().oin.clone(), worker: "petra.vos".into() };
    let refusal = anna.add_participant(thread, petra, consultant, &advice).await;
    assert_eq!(refused_by(refusal, "consultant-from-another-organisation"), Some(ErrorCode::Invalid));

    // A consultant brings nobody in, throws nobody out, and does not take the case over, even when it is
    // offered to its organisation.
    let refusal = sanne.add_member(thread, bram.member_id(), &Grounds::new("a colleague", "consent")).await;
    assert_eq!(refusal_rule(refusal), "participants-add-no-one");
    anna.add_member(thread, bram.member_id(), &Grounds::new("tweede werker", "consent")).await?;
    let refusal = anna.add_participant(thread, bram.member_id(), (ParticipantRole::CoWorker, until), &advice).await;
    assert_eq!(refused_by(refusal, "already-on-the-case"), Some(ErrorCode::Conflict));
    assert_eq!(refusal_rule(sanne.remove_member(thread, bram.member_id()).await), "participants-remove-no-one");
    assert!(anna.members(thread).await?.contains(&bram.member_id()));
    let to_lt = tests::referral_to_lt(clock.now_ms() + 2 * DAY_MS);
    let offer = anna.offer_handover(thread, to_lt).await?.offers[0].id;
    let refusal = sanne.accept_offer(thread, offer).await;
    assert_eq!(refused_by(refusal, "participants-do-not-hand-over"), Some(ErrorCode::Forbidden));
    anna.withdraw_offer(thread, offer, "eerst het advies afwachten").await?;

    // The end date passes: the hub ends the membership, and the owner's device is asked to remove the devices.
    clock.advance(15 * DAY_MS);
    hub.hub().fire_deadlines().await?;
    let ended = sanne.member_id();
    next_event(&mut anna_events, WAIT, |e| {
        matches!(e, Event::Handover { event: HandoverEvent::Left { member, reason }, .. }
            if *member == ended && reason == PARTICIPATION_ENDED)
    })
    .await?;
    let prompt = next_event(&mut anna_events, WAIT, |e| matches!(e, Event::MemberRemoved { .. })).await?;
    assert!(matches!(prompt, Event::MemberRemoved { member, devices_remain: true, .. } if member == ended));
    anna.remove_member(thread, sanne.member_id()).await?;
    assert!(!anna.members(thread).await?.contains(&sanne.member_id()));
    assert!(anna.ownership(thread).await?.participants.is_empty());
    assert_eq!(refusal_rule(sanne.send_text(thread, "nog een vraag").await), "NotFound");

    // The privacy officer sees why the consultant came and that the end date ended it.
    let officer = hub.client("vt-utrecht-privacy").discard_events().connect().await?;
    let log = officer.audit_query(AuditFilter { case: Some(thread), ..AuditFilter::default() }).await?;
    let added = log
        .iter()
        .find(|e| {
            e.record.object.as_deref().is_some_and(|o| o.contains("Consultant")) && e.record.rule == "route-permits"
        })
        .expect("the participation is in the log");
    assert_eq!(added.record.purpose.as_deref(), Some("gedragsadvies over de jongste"));
    assert_eq!(added.record.legal_basis.as_deref(), Some("consent"));
    assert!(log.iter().any(|e| e.record.rule == "participation-ended"), "the end of the membership is audited");
    hub.stop().await
}
