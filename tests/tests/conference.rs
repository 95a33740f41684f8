//! The case conference (jeugdbeschermingstafel) through a real hub: the owner
//! invites named people, each for a reason, until the conference ends; they
//! read and write in the case meanwhile and then leave by themselves; the regie
//! decision is a fact in the case's state, and the minutes travel end to end
//! encrypted.

use std::time::Duration;

use hub::clock::Clock;
use ketenhub_sdk::{Client, Content, Event, Grounds, HandoverEvent, Invitation, RegieDecision};
use tests::{connect, messages, next_event, refusal_rule, DevHub};
use wire::calendar::DAY_MS;

const WAIT: Duration = Duration::from_secs(20);

#[tokio::test]
async fn a_case_conference_invites_for_a_while_records_its_decision_and_sends_minutes() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let clock = Clock::system();
    let hub = DevHub::start_with_clock(dir.path(), tests::limits(), clock.clone()).await?;
    let (anna, mut anna_events) = connect(&hub, "vt-utrecht-caseworker").await?;
    let (sanne, mut sanne_events) = connect(&hub, "lt-woerden-caseworker").await?;
    let (bram, _) = connect(&hub, "vt-utrecht-colleague").await?;
    let (school, _) = connect(&hub, "school-mentor").await?;
    let case = anna.create_thread().await?;
    let until = clock.now_ms() + 2 * DAY_MS;
    let invite = |member: &Client, reason: &str| Invitation { member: member.member_id(), reason: reason.into() };
    let table = vec![invite(&sanne, "kent het gezin uit het wijkteam"), invite(&bram, "tweede werker VT")];

    // Only the owner calls one; every invitee needs a reason and a route; a limited recipient never sits at it.
    let topic = ("veiligheid thuis na de melding", until);
    assert_eq!(refusal_rule(sanne.call_conference(case, topic, table.clone(), "consent").await), "NotFound");
    let no_reason = vec![Invitation { member: sanne.member_id(), reason: " ".into() }];
    assert_eq!(refusal_rule(anna.call_conference(case, topic, no_reason, "consent").await), "add-needs-reason");
    let with_school = vec![invite(&school, "aanwezigheid")];
    assert_eq!(refusal_rule(anna.call_conference(case, topic, with_school, "consent").await), "limited-recipient");
    let too_long = ("veiligheid", clock.now_ms() + 400 * DAY_MS);
    assert_eq!(
        refusal_rule(anna.call_conference(case, too_long, table.clone(), "consent").await),
        "participation-too-long"
    );

    let ownership = anna.call_conference(case, topic, table.clone(), "consent").await?;
    let conference = ownership.conferences.last().expect("a conference").clone();
    assert_eq!((conference.id, conference.invited.len(), conference.decision.clone()), (1, 2, None));
    for member in [sanne.member_id(), bram.member_id()] {
        let p = ownership.participant(&member).expect("each invitee takes part");
        assert_eq!(p.until_ms, until);
    }
    // Called again, it changes nothing.
    assert_eq!(anna.call_conference(case, topic, table.clone(), "consent").await?.conferences.len(), 1);

    // The owner's device brings the invitees into the group; they read what is said at the table.
    for member in [sanne.member_id(), bram.member_id()] {
        anna.add_member(case, member, &Grounds::new("invited to the case conference", "consent")).await?;
    }
    anna.send_text(case, "Welkom aan tafel.").await?;
    assert_eq!(messages(&mut sanne_events, 1, WAIT).await?[0].content.as_bytes(), "Welkom aan tafel.".as_bytes());

    // The decision is the owner's to record, once; the minutes are content.
    let decision =
        RegieDecision { regie_with: sanne.identity().oin.clone(), reason: "vrijwillige hulp via het wijkteam".into() };
    assert_eq!(refusal_rule(sanne.record_decision(case, 1, decision.clone()).await), "Forbidden");
    assert_eq!(refusal_rule(anna.record_decision(case, 2, decision.clone()).await), "Invalid");
    let nowhere = RegieDecision { regie_with: "00000009999999999999".parse()?, reason: "elders".into() };
    assert_eq!(refusal_rule(anna.record_decision(case, 1, nowhere).await), "member-unknown-organisation");
    let ownership = anna.record_decision(case, 1, decision.clone()).await?;
    assert_eq!(ownership.conferences[0].decision.as_ref(), Some(&decision));
    anna.record_decision(case, 1, decision.clone()).await?;
    let other = RegieDecision { regie_with: anna.identity().oin.clone(), reason: "toch VT".into() };
    assert_eq!(refusal_rule(anna.record_decision(case, 1, other).await), "Conflict");
    let minutes = Content::Minutes { conference: 1, text: "Besluit: regie naar het wijkteam.".into() };
    anna.send_content(case, minutes.clone()).await?;
    let got = next_event(&mut sanne_events, WAIT, |e| matches!(e, Event::Message(m) if m.content == minutes)).await?;
    assert!(matches!(got, Event::Message(m) if m.sender == anna.member_id()));
    next_event(&mut anna_events, WAIT, |e| {
        matches!(e, Event::Handover { event: HandoverEvent::Decided { conference: 1, .. }, .. })
    })
    .await?;

    // An invitee who leaves early is not brought back by the call sent again.
    bram.leave_case(case, "mijn deel is gedaan").await?;
    anna.call_conference(case, topic, table.clone(), "consent").await?;
    assert!(!anna.members(case).await?.contains(&bram.member_id()), "a resent call readmitted a departed invitee");

    // When the conference ends, so does the invitees' participation.
    clock.advance(3 * DAY_MS);
    hub.hub().fire_deadlines().await?;
    let after = anna.ownership(case).await?;
    assert!(after.participants.is_empty(), "{:?}", after.participants);
    assert!(!anna.members(case).await?.contains(&sanne.member_id()));
    hub.stop().await
}

/// A resent request whose first answer was lost gets that answer again, even
/// at a limit; and a limit tells no one who may not make the request at all.
#[tokio::test]
async fn at_its_limits_a_case_answers_a_resend_the_same_and_a_stranger_forbidden() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let limits = hub::config::Limits { max_conferences_per_case: 1, max_clocks_per_case: 1, ..tests::limits() };
    let clock = Clock::system();
    let hub = DevHub::start_with_clock(dir.path(), limits, clock.clone()).await?;
    let (anna, _) = connect(&hub, "vt-utrecht-caseworker").await?;
    let (sanne, _) = connect(&hub, "lt-woerden-caseworker").await?;
    let case = anna.create_thread().await?;
    let table = vec![Invitation { member: sanne.member_id(), reason: "kent het gezin".into() }];
    let topic = ("veiligheid thuis", clock.now_ms() + DAY_MS);
    let called = anna.call_conference(case, topic, table.clone(), "consent").await?;
    assert_eq!(anna.call_conference(case, topic, table.clone(), "consent").await?, called, "the resend");
    assert_eq!(refusal_rule(sanne.call_conference(case, ("elders", topic.1), table, "consent").await), "Forbidden");
    let scheduled = anna.schedule_rappel(case).await?;
    assert_eq!(anna.schedule_rappel(case).await?, scheduled, "the resend");
    assert_eq!(refusal_rule(sanne.schedule_rappel(case).await), "Forbidden");
    assert_eq!(refusal_rule(anna.schedule_evaluation(case, clock.now_ms() + DAY_MS).await), "LimitExceeded");
    hub.stop().await
}
