//! Clocks declared in the policy through a real hub: a route's first-contact
//! and safety-plan clocks and its background role, and the rappel period, come
//! from the policy file, and follow it when it is reloaded.

use std::time::Duration;

use hub::clock::Clock;
use ketenhub_sdk::{ClockKind, Escalation, Event, FamilyTold, Grounds, HandoverEvent, Measure, OfferRequest};
use tests::{next_event, refusal_rule, DevHub};
use wire::calendar::DAY_MS;
use wire::handover::Calendar;

#[tokio::test]
async fn a_routes_clocks_and_background_follow_the_policy_in_force() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let clock = Clock::system();
    let hub = DevHub::start_with_clock(dir.path(), tests::limits(), clock.clone()).await?;
    let policy = dir.path().join("policy.toml");
    let text = std::fs::read_to_string(&policy)?.replacen("rappel_days = 91", "rappel_days = 14", 1).replacen(
        "completion_days = 10\n",
        "completion_days = 10\nfirst_contact_days = 2\nsafety_plan_days = 30\nbackground_days = 7\n",
        1,
    );
    std::fs::write(&policy, text)?;
    hub.hub().reload_policy().await;

    let anna = hub.client("vt-utrecht-caseworker").discard_events().connect().await?;
    let sanne = hub.client("lt-woerden-caseworker").discard_events().connect().await?;
    let case = anna.create_thread().await?;
    let offer = tests::referral_to_lt(clock.now_ms() + 2 * DAY_MS);
    let id = anna.offer_handover(case, offer).await?.offers[0].id;
    let accepted_at = clock.now_ms();
    let clocks = sanne.accept_offer(case, id).await?.clocks;
    let due = |kind| clocks.iter().find(|c| c.kind == kind).map(|c| (c.due_ms, c.again_days));
    let calendar = Calendar::default();
    let first = due(ClockKind::FirstContact).expect("the route starts a first-contact clock");
    assert_eq!(first, (calendar.after_working_days(accepted_at, 2), None), "two working days, escalated once");
    let plan = due(ClockKind::SafetyPlan).expect("and a safety-plan clock").0;
    assert!((accepted_at + 30 * DAY_MS..accepted_at + 30 * DAY_MS + 5_000).contains(&plan));
    assert!(due(ClockKind::Completion).is_some());

    anna.add_member(case, sanne.member_id(), &Grounds::new("accepted", "consent")).await?;
    let ownership = sanne.complete_handover(case, id, FamilyTold::Yes).await?;
    let background = ownership.background.iter().find(|b| b.member == anna.member_id()).expect("a background role");
    assert!(background.until_ms <= clock.now_ms() + 7 * DAY_MS && background.until_ms > clock.now_ms() + 6 * DAY_MS);
    let rappel = sanne.schedule_rappel(case).await?.clocks.into_iter().find(|c| c.kind == ClockKind::Rappel);
    let rappel = rappel.expect("a rappel").due_ms;
    assert!(rappel <= clock.now_ms() + 14 * DAY_MS && rappel > clock.now_ms() + 13 * DAY_MS);
    hub.stop().await
}

#[tokio::test]
async fn a_measure_has_a_renewal_clock_and_a_plan_its_evaluations() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let clock = Clock::system();
    let limits = hub::config::Limits { max_clocks_per_case: 12, ..tests::limits() };
    let hub = DevHub::start_with_clock(dir.path(), limits, clock.clone()).await?;
    // On this route the Raad keeps its background role until the measure ends.
    let policy = dir.path().join("policy.toml");
    let text = std::fs::read_to_string(&policy)?.replacen(
        "safety_plan_days = 91\n",
        "safety_plan_days = 91\nbackground_until_measure_ends = true\n",
        1,
    );
    std::fs::write(&policy, text)?;
    hub.hub().reload_policy().await;
    let rvdk = hub.client("rvdk-caseworker").discard_events().connect().await?;
    let gi = hub.client("gi-save-caseworker").connect().await?;
    let mut gi_events = gi.events().expect("events");
    let case = rvdk.create_thread().await?;
    let offer = OfferRequest {
        to: gi.identity().oin.clone(),
        to_worker: None,
        route: "rvdk-gi-measure".into(),
        legal_basis: "ots-measure".into(),
        reason: "OTS ordered".into(),
        justification: Some("court reference C/16/1 JE RK 26-1".into()),
        deadline_ms: clock.now_ms() + 2 * DAY_MS,
    };
    let id = rvdk.offer_handover(case, offer).await?.offers[0].id;
    gi.accept_offer(case, id).await?;

    // Dates that make no period, or a longer one than the policy allows, are refused.
    let now = clock.now_ms();
    let backwards = Measure { start_ms: now, end_ms: now - DAY_MS };
    assert_eq!(refusal_rule(gi.set_measure(case, backwards).await), "Invalid");
    let too_long = Measure { start_ms: now, end_ms: now + 400 * DAY_MS };
    assert_eq!(refusal_rule(gi.set_measure(case, too_long).await), "Invalid");
    let far_ahead = Measure { start_ms: now + 3_650 * DAY_MS, end_ms: now + 3_700 * DAY_MS };
    assert_eq!(refusal_rule(gi.set_measure(case, far_ahead).await), "Invalid", "a background for a decade");
    assert_eq!(refusal_rule(gi.schedule_evaluation(case, now - DAY_MS).await), "Invalid");

    // The measure's end brings its renewal clock; an extension moves it.
    let measure = Measure { start_ms: now, end_ms: now + 180 * DAY_MS };
    let renewal = |o: &ketenhub_sdk::Ownership| {
        o.clocks.iter().filter(|c| c.kind == ClockKind::Renewal && !c.done).map(|c| c.due_ms).collect::<Vec<_>>()
    };
    let ownership = gi.set_measure(case, measure).await?;
    assert_eq!(renewal(&ownership), vec![measure.end_ms - 56 * DAY_MS]);
    let extended = Measure { start_ms: measure.end_ms, end_ms: measure.end_ms + 180 * DAY_MS };
    let ownership = gi.set_measure(case, extended).await?;
    assert_eq!(renewal(&ownership), vec![extended.end_ms - 56 * DAY_MS], "one renewal clock runs, for the new end");

    // Plan evaluations are clocks of their own; reporting one done stops the earliest.
    gi.schedule_evaluation(case, now + 30 * DAY_MS).await?;
    gi.schedule_evaluation(case, now + 60 * DAY_MS).await?;
    assert_eq!(refusal_rule(gi.report_done(case, ClockKind::Evaluation).await), "Invalid", "which one?");
    let running = gi.report_evaluation_done(case, now + 30 * DAY_MS).await?.clocks;
    assert_eq!(gi.report_evaluation_done(case, now + 30 * DAY_MS).await?.clocks, running, "a resend");
    let evaluations: Vec<(u64, bool)> =
        running.iter().filter(|c| c.kind == ClockKind::Evaluation).map(|c| (c.due_ms, c.done)).collect();
    assert_eq!(evaluations, vec![(now + 30 * DAY_MS, true), (now + 60 * DAY_MS, false)]);

    // Completed, the Raad stays in the background until the measure ends.
    rvdk.add_member(case, gi.member_id(), &Grounds::new("accepted", "ots-measure")).await?;
    let ownership = gi.complete_handover(case, id, FamilyTold::Yes).await?;
    let background = ownership.background.iter().find(|b| b.member == rvdk.member_id()).expect("background");
    assert!((extended.end_ms..extended.end_ms + DAY_MS).contains(&background.until_ms), "{background:?}");

    // Stopped clocks do not use up the quota, or one who may report could block the owner's own
    // clocks with extensions: the limit counts running clocks, and the oldest stopped ones are forgotten.
    let mut end_ms = extended.end_ms;
    for _ in 0..30 {
        end_ms += DAY_MS;
        let o = gi.set_measure(case, Measure { start_ms: end_ms - 100 * DAY_MS, end_ms }).await?;
        anyhow::ensure!(o.clocks.len() <= 2 * 12 + 3, "stopped clocks pile up: {}", o.clocks.len());
    }
    let mut due_ms = clock.now_ms() + 200 * DAY_MS;
    let bounded = loop {
        due_ms += DAY_MS;
        match gi.schedule_evaluation(case, due_ms).await {
            Ok(o) => anyhow::ensure!(o.running_clocks() <= 12, "more running clocks than the limit"),
            Err(e) => break e,
        }
    };
    assert_eq!(bounded.code(), Some(ketenhub_sdk::ErrorCode::LimitExceeded), "{bounded}");

    // The evaluation date passes without a report: it escalates to the owner.
    clock.advance(61 * DAY_MS);
    hub.hub().fire_deadlines().await?;
    next_event(&mut gi_events, Duration::from_secs(20), |e| {
        matches!(e, Event::Handover { event: HandoverEvent::Escalated {
            escalation: Escalation::Overdue { clock: ClockKind::Evaluation, .. } }, thread, .. } if *thread == case)
    })
    .await?;
    hub.stop().await
}
