//! Clocks declared in the policy through a real hub: a route's first-contact
//! and safety-plan clocks and its background role, and the rappel period, come
//! from the policy file, and follow it when it is reloaded.

use hub::clock::Clock;
use ketenhub_sdk::{ClockKind, FamilyTold, Grounds, OfferRequest};
use tests::DevHub;
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
    let offer = OfferRequest {
        to: sanne.identity().oin.clone(),
        to_worker: None,
        route: "vt-lt-referral".into(),
        legal_basis: "consent".into(),
        reason: "support at home".into(),
        justification: None,
        deadline_ms: clock.now_ms() + 2 * DAY_MS,
    };
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
