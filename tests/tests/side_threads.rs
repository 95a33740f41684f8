//! Limited recipients through a real hub: a school never receives the case
//! thread; the case's owner opens a side thread for it, in which only what is
//! sent there travels. The side thread answers to its case for ownership
//! (only the owner brings people in; regie moving brings the new owner in),
//! for closing and archiving, and for the audit log and access report.

use std::time::Duration;

use hub::clock::Clock;
use ketenhub_sdk::{AuditFilter, ErrorCode, Event, FamilyTold, Grounds, OfferRequest, ParticipantRole};
use tests::{connect, messages, next_event, refusal_rule, DevHub};
use wire::audit::{AuditAction, AuditOutcome};
use wire::{Reply, Request};

const WAIT: Duration = Duration::from_secs(20);
const DAY_MS: u64 = 86_400_000;

fn question() -> Grounds {
    Grounds::new("schoolverzuim van Daan navragen", "consent")
}

fn to_lt(now_ms: u64) -> OfferRequest {
    tests::referral_to_lt(now_ms + 2 * DAY_MS)
}

#[tokio::test]
async fn a_limited_recipient_receives_only_what_its_side_thread_shares() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let hub = DevHub::start(dir.path(), tests::limits()).await?;
    let (anna, mut anna_events) = connect(&hub, "vt-utrecht-caseworker").await?;
    let (school, mut school_events) = connect(&hub, "school-mentor").await?;
    let (sanne, _) = connect(&hub, "lt-woerden-caseworker").await?;
    let (bram, _) = connect(&hub, "vt-utrecht-colleague").await?;
    let case = anna.create_thread().await?;
    anna.add_member(case, sanne.member_id(), &Grounds::new("referral", "consent")).await?;
    anna.send_text(case, "Melding: zorgen over de veiligheid thuis").await?;

    // The school is a limited recipient: never on the case itself, however the add is put.
    assert_eq!(refusal_rule(anna.add_member(case, school.member_id(), &question()).await), "limited-recipient");
    assert!(!anna.members(case).await?.contains(&school.member_id()));

    // Only the case's owner opens a side thread; an outsider learns nothing of the case.
    assert_eq!(refusal_rule(school.open_side_thread(case, "vraag").await), "NotFound");
    assert_eq!(refusal_rule(sanne.open_side_thread(case, "vraag").await), "side-thread-by-owner");
    let side = anna.open_side_thread(case, "schoolverzuim").await?;
    anna.add_member(side, school.member_id(), &question()).await?;
    anna.send_text(side, "Hoe is de aanwezigheid van Daan de laatste weken?").await?;
    let got = messages(&mut school_events, 1, WAIT).await?;
    assert_eq!(
        (got[0].thread, got[0].content.as_bytes()),
        (side, "Hoe is de aanwezigheid van Daan de laatste weken?".as_bytes())
    );
    school.send_text(side, "Drie keer afwezig, steeds op maandag.").await?;
    let from_school = school.member_id();
    next_event(
        &mut anna_events,
        WAIT,
        |e| matches!(e, Event::Message(m) if m.thread == side && m.sender == from_school),
    )
    .await?;

    // The school sees its side thread, linked to the case, and nothing of the case.
    let listed = school.threads().await?;
    assert_eq!(listed.len(), 1);
    let link = listed[0].side.as_ref().expect("a side thread says so");
    assert_eq!((listed[0].thread, link.case, link.purpose.as_str()), (side, case, "schoolverzuim"));
    assert_eq!(refusal_rule(school.members(case).await), "NotFound");
    assert_eq!(refusal_rule(school.ownership(case).await), "NotFound");
    // A member of the case who is not on the side thread is not in it either.
    assert_eq!(refusal_rule(sanne.members(side).await), "NotFound");

    // In the side thread only the case's owner brings people in or removes them, and its devices stay.
    assert_eq!(refusal_rule(school.add_member(side, bram.member_id(), &question()).await), "side-thread-owner-adds");
    assert_eq!(refusal_rule(school.remove_member(side, anna.member_id()).await), "owner-stays");
    anna.add_member(side, bram.member_id(), &Grounds::new("tweede werker", "consent")).await?;
    assert_eq!(refusal_rule(school.remove_member(side, bram.member_id()).await), "side-thread-owner-removes");
    anna.remove_member(side, bram.member_id()).await?;

    // A client_ref names one thread: reused for another case it opens nothing.
    let mut raw = hub.client("vt-utrecht-caseworker").connect_raw().await?;
    let client_ref = uuid::Uuid::new_v4();
    let open = |case| Request::OpenSideThread { case, client_ref, purpose: "huisarts".into() };
    let Ok(Reply::ThreadCreated { thread: first }) = tests::raw_reply(&mut raw, open(case)).await? else {
        panic!("the first opening is answered with the thread")
    };
    let Ok(Reply::ThreadCreated { thread: again }) = tests::raw_reply(&mut raw, open(case)).await? else {
        panic!("a resend is answered with the same thread")
    };
    assert_eq!(first, again);
    let other = anna.create_thread().await?;
    assert_eq!(tests::raw_refusal(&mut raw, open(other)).await?.code, ErrorCode::Conflict);

    // A side thread has no handover of its own, and no side threads.
    let now_ms = Clock::system().now_ms();
    assert_eq!(refusal_rule(anna.offer_handover(side, to_lt(now_ms)).await), "side-thread-no-handover");
    assert_eq!(refusal_rule(anna.ownership(side).await), "side-thread-no-handover");
    assert_eq!(refusal_rule(anna.close_case(side, "safe-at-home", "klaar").await), "side-thread-no-handover");
    assert_eq!(refusal_rule(anna.open_side_thread(side, "nog een").await), "side-thread-no-handover");

    // Closing the case closes its side threads; reopening opens them again.
    anna.close_case(case, "safe-at-home", "de zorgen zijn weg").await?;
    assert_eq!(refusal_rule(school.send_text(side, "nog iets").await), "case-closed");
    assert_eq!(refusal_rule(anna.add_member(side, bram.member_id(), &question()).await), "case-closed");
    anna.reopen_case(case, "nieuwe melding").await?;
    school.send_text(side, "Weer afwezig vandaag.").await?;

    // The case's access report covers its side threads: who was brought in there, and why.
    let officer = hub.client("vt-utrecht-privacy").discard_events().connect().await?;
    let log = officer.audit_query(AuditFilter { case: Some(case), ..AuditFilter::default() }).await?;
    let opened = log
        .iter()
        .find(|e| {
            e.record.action == AuditAction::CreateThread
                && e.record.case == Some(case)
                && e.record.outcome == AuditOutcome::Allowed
        })
        .expect("the opening is in the case's log");
    assert_eq!(opened.record.purpose.as_deref(), Some("schoolverzuim"));
    let school_added = log
        .iter()
        .find(|e| {
            e.record.action == AuditAction::AddMember
                && e.record.case == Some(side)
                && e.record.object.as_deref() == Some(school.member_id().to_string().as_str())
        })
        .expect("the school's add is in the case's log");
    assert_eq!(school_added.record.purpose.as_deref(), Some("schoolverzuim van Daan navragen"));
    let report = officer.access_report(case).await?;
    assert!(report.contains("ib.deregenboog"), "{report}");
    assert!(report.contains(&format!("(side thread {})", &side.0.simple().to_string()[..8])), "{report}");
    Ok(())
}

#[tokio::test]
async fn the_side_thread_follows_regie_and_ends_with_the_case() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let clock = Clock::system();
    let hub = DevHub::start_with_clock(dir.path(), tests::limits(), clock.clone()).await?;
    let (anna, _) = connect(&hub, "vt-utrecht-caseworker").await?;
    let (school, mut school_events) = connect(&hub, "school-mentor").await?;
    let (sanne, mut sanne_events) = connect(&hub, "lt-woerden-caseworker").await?;
    let (bram, _) = connect(&hub, "vt-utrecht-colleague").await?;
    let case = anna.create_thread().await?;
    let side = anna.open_side_thread(case, "schoolverzuim").await?;
    anna.add_member(side, school.member_id(), &question()).await?;

    // Regie moves to the local team: the former owner only reads, in the side thread too.
    let offer = anna.offer_handover(case, to_lt(clock.now_ms())).await?.offers[0].id;
    sanne.accept_offer(case, offer).await?;
    anna.add_member(case, sanne.member_id(), &Grounds::new("support at home", "consent")).await?;
    sanne.complete_handover(case, offer, FamilyTold::Yes).await?;
    assert_eq!(refusal_rule(anna.send_text(side, "nog een vraag").await), "background-read-only");
    // The school, who sees no case, cannot tell who the new owner is: it brings no one in.
    let guess = school.add_member(side, sanne.member_id(), &question()).await;
    assert_eq!(refusal_rule(guess), "side-thread-owner-adds");
    let guess = school.claim_key_package(side, sanne.member_id()).await;
    assert_eq!(refusal_rule(guess), "side-thread-owner-adds");
    // Its device still brings the new owner in, and nobody else.
    let brought = anna.add_member(side, bram.member_id(), &question()).await;
    assert_eq!(refusal_rule(brought), "side-thread-owner-adds");
    assert_eq!(anna.follow_owner(case).await?, vec![side]);
    assert!(anna.follow_owner(case).await?.is_empty(), "the owner is brought in once");
    // That is all it may still do there: it removes no one, nor takes the owner's KeyPackages once it is in.
    assert_eq!(refusal_rule(anna.remove_member(side, school.member_id()).await), "background-read-only");
    let drained = anna.claim_key_package(side, sanne.member_id()).await;
    assert_eq!(refusal_rule(drained), "side-thread-follows-owner");
    sanne.send_text(side, "Ik ben de nieuwe contactpersoon van het gezin.").await?;
    let got = messages(&mut school_events, 1, WAIT).await?;
    assert_eq!(got[0].thread, side);
    school.send_text(side, "Welkom.").await?;
    assert_eq!(messages(&mut sanne_events, 1, WAIT).await?[0].thread, side);

    // Removed from the case by a commit, the former owner leaves its side threads in the same write.
    sanne.remove_member(case, anna.member_id()).await?;
    assert!(!sanne.members(side).await?.contains(&anna.member_id()));
    assert_eq!(refusal_rule(anna.members(side).await), "NotFound");
    // A participant whose end date passes leaves the side thread with the case.
    let until = clock.now_ms() + 10 * DAY_MS;
    let advice = Grounds::new("advies", "consent");
    sanne.add_participant(case, bram.member_id(), (ParticipantRole::Consultant, until), &advice).await?;
    sanne.add_member(case, bram.member_id(), &advice).await?;
    sanne.add_member(side, bram.member_id(), &advice).await?;
    clock.advance(31 * DAY_MS);
    hub.hub().fire_deadlines().await?;
    assert!(!sanne.members(side).await?.contains(&bram.member_id()));

    // Closed and past its reopening period, the case is archived: every side membership ends.
    sanne.close_case(case, "safe-at-home", "het gaat goed").await?;
    clock.advance(460 * DAY_MS);
    hub.hub().fire_deadlines().await?;
    assert_eq!(refusal_rule(school.members(side).await), "NotFound");
    assert!(school.threads().await?.is_empty());
    let officer = hub.client("vt-utrecht-privacy").discard_events().connect().await?;
    let log = officer.audit_query(AuditFilter { case: Some(case), ..AuditFilter::default() }).await?;
    let archived = log
        .iter()
        .filter(|e| e.record.case == Some(side) && e.record.action == AuditAction::RemoveMember)
        .map(|e| e.record.rule.as_str())
        .collect::<Vec<_>>();
    assert!(archived.contains(&"case-archived"), "{archived:?}");
    Ok(())
}
