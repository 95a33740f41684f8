//! Organisation inboxes through a real hub: an offer to an organisation that
//! names no worker, an urgent offer, and every escalation reach the
//! organisation's case system and team leads (who are not on the case), online
//! or, from their cursor, after they reconnect; only the hub writes there, and
//! the policy decides who receives it.

use std::time::Duration;

use anyhow::Context;
use hub::clock::Clock;
use ketenhub_sdk::{Escalation, Event, EventStream, OfferRequest};
use tests::{connect, next_event, refusal_rule, DevHub};
use wire::handover::Notice;
use wire::{EntryBody, ThreadId};

const WAIT: Duration = Duration::from_secs(20);
const HOUR_MS: u64 = 3_600_000;
const DAY_MS: u64 = 24 * HOUR_MS;
const LT: &str = "00000001800000000002";
const VT: &str = "00000001800000000001";

fn to_lt(worker: Option<&str>, deadline_ms: u64) -> OfferRequest {
    OfferRequest { to: LT.parse().unwrap(), to_worker: worker.map(str::to_owned), ..tests::referral_to_lt(deadline_ms) }
}

/// The next notice about `case` in `events`.
async fn notice_about(events: &mut EventStream, case: ThreadId) -> anyhow::Result<Notice> {
    match next_event(events, WAIT, |e| matches!(e, Event::Notice { case: c, .. } if *c == case)).await? {
        Event::Notice { notice, .. } => Ok(notice),
        _ => unreachable!(),
    }
}

/// The next notice of any case in `events`.
async fn next_notice(events: &mut EventStream) -> anyhow::Result<(ThreadId, Notice)> {
    match next_event(events, WAIT, |e| matches!(e, Event::Notice { .. })).await? {
        Event::Notice { case, notice, .. } => Ok((case, notice)),
        _ => unreachable!(),
    }
}

#[tokio::test]
async fn offers_and_escalations_reach_the_organisations_inbox_online_or_later() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let clock = Clock::system();
    let hub = DevHub::start_with_clock(dir.path(), tests::limits(), clock.clone()).await?;
    let (anna, _) = connect(&hub, "vt-utrecht-caseworker").await?;
    // The case system keeps its device state, as a case system does: it is the same device after a restart.
    let system_state = dir.path().join("vt-casesystem");
    let system = || hub.client("vt-utrecht-system").state_dir(system_state.clone()).connect();
    let vt_system = system().await?;
    let (lead, mut lead_events) = connect(&hub, "vt-utrecht-teamlead").await?;
    let (_lt_system, mut lt_events) = connect(&hub, "lt-woerden-system").await?;
    let (sanne, _) = connect(&hub, "lt-woerden-caseworker").await?;

    // The policy names who receives the inbox; nobody else sees it, and nobody but the hub writes in it.
    let (lt_inbox, vt_inbox) = (ThreadId::inbox_of(&LT.parse()?), ThreadId::inbox_of(&VT.parse()?));
    let listed = lead.threads().await?;
    assert!(listed.iter().any(|t| t.thread == vt_inbox && t.inbox), "{listed:?}");
    assert_eq!(refusal_rule(sanne.members(lt_inbox).await), "NotFound");
    assert_eq!(refusal_rule(anna.members(vt_inbox).await), "NotFound");
    assert_eq!(refusal_rule(lead.ownership(vt_inbox).await), "inbox-is-read-only");
    assert_eq!(refusal_rule(lead.close_case(vt_inbox, "safe-at-home", "no").await), "inbox-is-read-only");

    // An offer to the organisation with no worker named reaches its inbox.
    let open = anna.create_thread().await?;
    let deadline = clock.now_ms() + 48 * HOUR_MS;
    let offer = anna.offer_handover(open, to_lt(None, deadline)).await?.offers[0].clone();
    let got = notice_about(&mut lt_events, open).await?;
    assert_eq!(got, Notice::Offered { offer: Box::new(offer), urgent: false });

    // An offer to a named worker does not, unless it is urgent; then the colleagues learn only that it waits.
    let named = anna.create_thread().await?;
    anna.offer_handover(named, to_lt(Some("sanne.bakker"), deadline)).await?;
    let urgent = anna.create_thread().await?;
    anna.offer_handover(urgent, to_lt(Some("sanne.bakker"), clock.now_ms() + 2 * HOUR_MS)).await?;
    let (case, notice) = next_notice(&mut lt_events).await?;
    assert_eq!(case, urgent, "the named, unhurried offer gave no notice");
    assert!(matches!(&notice, Notice::Urgent { offer: 1, to_worker, .. } if to_worker == "sanne.bakker"), "{notice:?}");

    // Each notice is a disclosure of the case: its audit (and so the family's access report) shows it.
    let officer = hub.client("vt-utrecht-privacy").discard_events().connect().await?;
    let log = officer.audit_query(ketenhub_sdk::AuditFilter { case: Some(urgent), ..Default::default() }).await?;
    let told = format!("notice to the inbox of {LT}");
    assert!(log.iter().any(|e| e.record.object.as_deref() == Some(told.as_str())), "{log:?}");

    // VT's case system is offline when nobody answers the urgent offer in time.
    vt_system.close().await;
    clock.advance(3 * HOUR_MS);
    hub.hub().fire_deadlines().await?;
    let expired = |n: &Notice| matches!(n, Notice::Escalated { escalation: Escalation::OfferExpired { .. } });
    assert!(expired(&notice_about(&mut lead_events, urgent).await?), "the team lead is told");
    assert!(expired(&notice_about(&mut lt_events, urgent).await?), "the receiver is told of an urgent one too");
    let back = system().await?;
    let mut back_events = back.events().expect("events");
    let waited = next_event(&mut back_events, WAIT, |e| matches!(e, Event::Notice { case, .. } if *case == urgent));
    let Event::Notice { seq, notice, .. } = waited.await? else { unreachable!() };
    assert!(expired(&notice), "it waited for the case system");

    // The case system acknowledges its inbox as itself: after a reconnect it gets only what is new.
    back.ack(vt_inbox, seq).await?;
    let (store, device) = (hub.store(), back.device_id());
    let member = back.member_id();
    tests::eventually(WAIT, || {
        let cursor = store.cursor(&member, &device, vt_inbox);
        async move { Ok(cursor? >= seq) }
    })
    .await?;
    back.close().await;
    clock.advance(48 * HOUR_MS);
    hub.hub().fire_deadlines().await?;
    let again = system().await?;
    let mut again_events = again.events().expect("events");
    let (case, notice) = next_notice(&mut again_events).await?;
    assert!(case == open || case == named, "the acknowledged notice is not delivered again");
    assert!(expired(&notice));

    // The policy decides: a team lead the reloaded policy no longer names leaves the inbox.
    let policy = dir.path().join("policy.toml");
    let text = std::fs::read_to_string(&policy)?.replacen("team_leads = [\"petra.vos\"]", "team_leads = []", 1);
    std::fs::write(&policy, text)?;
    hub.hub().reload_policy().await;
    let vt_inbox = ThreadId::inbox_of(&VT.parse()?);
    assert_eq!(refusal_rule(lead.members(vt_inbox).await), "NotFound");
    let members = hub.store().members(vt_inbox)?;
    assert_eq!(members.iter().map(|m| m.worker.as_str()).collect::<Vec<_>>(), ["vt-casesystem"]);

    // A notice every member received goes with retention, as content does; one not yet received stays.
    hub.hub().sweep_retention(clock.now_ms() + 31 * DAY_MS).await?;
    let body = |seq: u64| -> anyhow::Result<EntryBody> {
        Ok(hub.store().entries_after(vt_inbox, seq - 1, 1)?.into_iter().next().context("the entry")?.body)
    };
    assert_eq!(body(seq)?, EntryBody::Expired);
    assert!(matches!(body(seq + 1)?, EntryBody::Notice { .. }), "not yet acknowledged: kept");
    Ok(())
}
