//! Handover requests resent after a lost reply answer as the first time did.
//!
//! Each step goes out on a raw connection that is dropped before it reads the
//! reply; once the step shows in the case, a new connection sends the same
//! request again. The resend must answer with the case's ownership, exactly as
//! `get_ownership` shows it, and the thread must hold one entry for the step.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::bail;
use hub::store::{KvStore, Store};
use ketenhub_sdk::{ClockKind, FamilyTold, HandoverEvent, OfferRequest, OfferState, Ownership};
use tests::DevHub;
use wire::{ClientFrame, EntryBody, Reply, Request, ThreadId};

const WAIT: Duration = Duration::from_secs(20);

/// The case's ownership as a member of it sees it.
async fn ownership(hub: &DevHub, slug: &str, thread: ThreadId) -> anyhow::Result<Ownership> {
    let mut raw = hub.client(slug).connect_raw().await?;
    match tests::raw_reply(&mut raw, Request::GetOwnership { thread }).await? {
        Ok(Reply::Ownership { ownership }) => Ok(*ownership),
        other => bail!("get_ownership answered {other:?}"),
    }
}

/// Sends `request` as `slug` and drops the connection unread; waits until
/// `taken` holds for the case as `observer` sees it; sends it again on a new
/// connection and checks that it answers with the case's ownership.
async fn resend(
    hub: &DevHub,
    slug: &str,
    request: Request,
    observer: &str,
    thread: ThreadId,
    taken: impl Fn(&Ownership) -> bool,
) -> anyhow::Result<()> {
    let mut lost = hub.client(slug).connect_raw().await?;
    lost.send_frame(&ClientFrame::Request { id: 1, request: request.clone() }).await?;
    drop(lost);
    let deadline = tokio::time::Instant::now() + WAIT;
    while !taken(&ownership(hub, observer, thread).await?) {
        if tokio::time::Instant::now() > deadline {
            bail!("the step {request:?} never took effect");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut again = hub.client(slug).connect_raw().await?;
    let answer = tests::raw_reply(&mut again, request.clone()).await?;
    let now = ownership(hub, observer, thread).await?;
    assert_eq!(answer, Ok(Reply::Ownership { ownership: Box::new(now) }), "resending {request:?}");
    Ok(())
}

/// Every handover step stored in the thread (entries are read up to the durable watermark).
fn handover_steps(store: &dyn Store, thread: ThreadId) -> anyhow::Result<Vec<HandoverEvent>> {
    let entries = store.entries_after(thread, 0, 1000)?;
    Ok(entries
        .into_iter()
        .filter_map(|e| match e.body {
            EntryBody::Handover { event } => Some(event),
            _ => None,
        })
        .collect())
}

/// A dev hub on a store the test can read as well.
async fn start(dir: &Path) -> anyhow::Result<(DevHub, Arc<dyn Store>)> {
    std::fs::create_dir_all(dir.join("data"))?;
    let store: Arc<dyn Store> = Arc::new(KvStore::open(&dir.join("data/store"))?);
    Ok((DevHub::start_with_store(dir, tests::limits(), store.clone()).await?, store))
}

fn measure(to: &wire::Oin) -> OfferRequest {
    OfferRequest {
        to: to.clone(),
        to_worker: None,
        route: "rvdk-gi-measure".into(),
        legal_basis: "ots-measure".into(),
        reason: "OTS ordered by the juvenile court".into(),
        justification: Some("C/16/555123 JE RK 26-101".into()),
        deadline_ms: hub::clock::now_ms() + 86_400_000,
    }
}

#[tokio::test]
async fn every_handover_step_resent_after_a_dropped_connection_answers_as_the_first_time() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (hub, store) = start(dir.path()).await?;
    let (rvdk, gi) = ("rvdk-caseworker", "gi-save-caseworker");
    let raad = hub.client(rvdk).discard_events().connect().await?;
    let gi_oin = hub.client(gi).discard_events().connect().await?.identity().oin.clone();
    let thread = raad.create_thread().await?;
    let gi_member =
        |o: &Ownership| o.offers.iter().any(|o| matches!(&o.state, OfferState::Accepted { by } if by.oin == gi_oin));

    let offer = Request::OfferHandover { thread, offer: measure(&gi_oin) };
    resend(&hub, rvdk, offer, rvdk, thread, |o| o.offers.len() == 1).await?;
    let accept = Request::AnswerOffer { thread, offer: 1, accept: true, reason: None };
    resend(&hub, gi, accept, rvdk, thread, gi_member).await?;
    let done = Request::ReportDone { thread, clock: ClockKind::FirstContact, due_ms: None };
    let contact_done = |o: &Ownership| o.clocks.iter().any(|c| c.kind == ClockKind::FirstContact && c.done);
    resend(&hub, gi, done, rvdk, thread, contact_done).await?;
    let complete = Request::CompleteHandover { thread, offer: 1, family: FamilyTold::Yes };
    resend(&hub, gi, complete, rvdk, thread, |o| o.owner.oin == gi_oin).await?;
    let rappel = Request::ScheduleRappel { thread };
    resend(&hub, gi, rappel, gi, thread, |o| o.clocks.iter().any(|c| c.kind == ClockKind::Rappel)).await?;

    let case = ownership(&hub, gi, thread).await?;
    let kinds: Vec<_> = case.clocks.iter().map(|c| c.kind).collect();
    let each = [ClockKind::FirstContact, ClockKind::SafetyPlan, ClockKind::Completion, ClockKind::Rappel];
    assert_eq!(kinds, each, "one clock each");
    let steps = handover_steps(store.as_ref(), thread)?;
    let names: Vec<_> = steps
        .iter()
        .map(|s| match s {
            HandoverEvent::Offered { .. } => "offered",
            HandoverEvent::Accepted { .. } => "accepted",
            HandoverEvent::Done { .. } => "done",
            HandoverEvent::Completed { .. } => "completed",
            HandoverEvent::Scheduled { .. } => "scheduled",
            other => panic!("unexpected step {other:?}"),
        })
        .collect();
    assert_eq!(names, ["offered", "accepted", "done", "completed", "scheduled"], "one entry per step");
    hub.stop().await
}

#[tokio::test]
async fn a_decline_resent_after_a_dropped_connection_answers_as_the_first_time() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (hub, store) = start(dir.path()).await?;
    let (rvdk, gi) = ("rvdk-caseworker", "gi-save-caseworker");
    let raad = hub.client(rvdk).discard_events().connect().await?;
    let gi_oin = hub.client(gi).discard_events().connect().await?.identity().oin.clone();
    let thread = raad.create_thread().await?;
    raad.offer_handover(thread, measure(&gi_oin)).await?;
    let decline =
        Request::AnswerOffer { thread, offer: 1, accept: false, reason: Some("no capacity this month".into()) };
    let declined = |o: &Ownership| matches!(o.offers[0].state, OfferState::Declined { .. });
    resend(&hub, gi, decline, rvdk, thread, declined).await?;
    let steps = handover_steps(store.as_ref(), thread)?;
    assert_eq!(steps.iter().filter(|s| matches!(s, HandoverEvent::Declined { .. })).count(), 1);
    hub.stop().await
}
