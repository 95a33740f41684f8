//! Several devices per worker: each its own MLS leaf, bound to the worker's
//! certificate, joining the worker's threads by itself, with its own delivery
//! cursor, so that what one device acknowledged is never deleted before the
//! other has received it.

use std::time::Duration;

use ketenhub_sdk::{Content, Event, EventStream};
use tests::{next_event, DevHub};
use wire::calendar::DAY_MS;
use wire::{EntryBody, ThreadId};

const WAIT: Duration = Duration::from_secs(20);
const VT: &str = "vt-utrecht-caseworker";
const LT: &str = "lt-woerden-caseworker";

/// Waits until `events` shows the text message `text` in `thread`; returns its seq and sender.
async fn shows(events: &mut EventStream, thread: ThreadId, text: &str) -> anyhow::Result<(u64, wire::MemberId)> {
    let wanted = Content::Text { text: text.into() };
    match next_event(events, WAIT, |e| matches!(e, Event::Message(m) if m.thread == thread && m.content == wanted))
        .await
    {
        Ok(Event::Message(m)) => Ok((m.seq, m.sender)),
        other => anyhow::bail!("{text:?} not shown: {other:?}"),
    }
}

/// A hub, and VT's desk (an SDK client with its own state) connected to it;
/// the laptop's state directory is made but not used yet.
struct Office {
    _dir: tempfile::TempDir,
    hub: DevHub,
    _desk_state: tempfile::TempDir,
    laptop_state: tempfile::TempDir,
    desk: ketenhub_sdk::Client,
    desk_events: EventStream,
}

impl Office {
    async fn open() -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let hub = DevHub::start(dir.path(), tests::limits()).await?;
        let (desk_state, laptop_state) = (tempfile::tempdir()?, tempfile::tempdir()?);
        let desk = hub.client(VT).state_dir(desk_state.path()).connect().await?;
        let desk_events = desk.events().expect("events");
        Ok(Self { _dir: dir, hub, _desk_state: desk_state, laptop_state, desk, desk_events })
    }
}

/// A case VT's desk opened with LT's caseworker in it, once LT's device joined.
async fn case_with_lt(
    hub: &DevHub,
    desk: &ketenhub_sdk::Client,
) -> anyhow::Result<(ketenhub_sdk::Client, EventStream, ThreadId)> {
    let lt = hub.client(LT).connect().await?;
    let mut lt_events = lt.events().expect("events");
    let thread = desk.create_thread().await?;
    desk.add_member(thread, lt.member_id(), &tests::consent()).await?;
    next_event(&mut lt_events, WAIT, |e| matches!(e, Event::Joined { .. })).await?;
    Ok((lt, lt_events, thread))
}

/// VT's laptop (the same certificate, its own state) connects and joins `thread` by itself.
async fn laptop_joins(
    hub: &DevHub,
    state: &std::path::Path,
    desk: &ketenhub_sdk::Client,
    thread: ThreadId,
) -> anyhow::Result<(ketenhub_sdk::Client, EventStream)> {
    let laptop = hub.client(VT).state_dir(state).connect().await?;
    let mut laptop_events = laptop.events().expect("events");
    next_event(&mut laptop_events, WAIT, |e| matches!(e, Event::Rejoined { thread: t, .. } if *t == thread)).await?;
    tests::eventually(WAIT, || async { Ok(desk.epoch(thread) == laptop.epoch(thread)) }).await?;
    Ok((laptop, laptop_events))
}

#[tokio::test]
async fn a_second_device_joins_by_itself_and_each_device_shows_the_others_sends() -> anyhow::Result<()> {
    let Office { _dir, hub, _desk_state, laptop_state, desk, mut desk_events } = Office::open().await?;
    let (_lt, mut lt_events, thread) = case_with_lt(&hub, &desk).await?;

    // The laptop: the same certificate, its own state; nobody adds it.
    let (laptop, mut laptop_events) = laptop_joins(&hub, laptop_state.path(), &desk, thread).await?;
    let vt_devices =
        desk.devices(thread).into_iter().filter(|d| d.as_ref().is_ok_and(|b| b.member == desk.member_id()));
    assert_eq!(vt_devices.count(), 2, "the desk and the laptop, each bound to VT's certificate");

    // The desk's send reaches the laptop as VT's, not dropped as the laptop's own; the desk shows it once.
    desk.send_text(thread, "vanaf het bureau").await?;
    assert_eq!(shows(&mut laptop_events, thread, "vanaf het bureau").await?.1, desk.member_id());
    shows(&mut desk_events, thread, "vanaf het bureau").await?;
    // And the other way round; LT reads both.
    laptop.send_text(thread, "vanaf de laptop").await?;
    shows(&mut desk_events, thread, "vanaf de laptop").await?;
    shows(&mut laptop_events, thread, "vanaf de laptop").await?;
    shows(&mut lt_events, thread, "vanaf het bureau").await?;
    shows(&mut lt_events, thread, "vanaf de laptop").await?;
    hub.stop().await
}

#[tokio::test]
async fn content_one_device_acknowledged_waits_for_the_other_device() -> anyhow::Result<()> {
    let Office { _dir, hub, _desk_state, laptop_state, desk, mut desk_events } = Office::open().await?;
    let lt = hub.client(LT).discard_events().connect().await?;
    let thread = desk.create_thread().await?;
    desk.add_member(thread, lt.member_id(), &tests::consent()).await?;
    let laptop = hub.client(VT).state_dir(laptop_state.path()).connect().await?;
    let mut laptop_events = laptop.events().expect("events");
    next_event(&mut laptop_events, WAIT, |e| matches!(e, Event::Rejoined { .. })).await?;
    tests::eventually(WAIT, || async { Ok(lt.epoch(thread) == laptop.epoch(thread)) }).await?;
    laptop.close().await;
    drop(laptop_events);

    // LT writes while the laptop is away; the desk reads and acknowledges it.
    lt.send_text(thread, "voor beide apparaten").await?;
    let (seq, _) = shows(&mut desk_events, thread, "voor beide apparaten").await?;
    desk.ack(thread, seq).await?;
    lt.ack(thread, seq).await?;
    let store = hub.store();
    tests::eventually(WAIT, || async { Ok(store.cursor(&desk.member_id(), &desk.device_id(), thread)? >= seq) })
        .await?;

    // Past the content period: the laptop has not received it, so it stays.
    let shared = hub.hub();
    let sweep = |days: u64| shared.sweep_retention(hub::clock::now_ms() + days * DAY_MS);
    sweep(31).await?;
    assert!(matches!(entry(&hub, thread, seq)?, EntryBody::Message { .. }), "deleted before the laptop had it");
    // The laptop comes back and reads it.
    let laptop = hub.client(VT).state_dir(laptop_state.path()).connect().await?;
    let mut laptop_events = laptop.events().expect("events");
    shows(&mut laptop_events, thread, "voor beide apparaten").await?;
    laptop.ack(thread, seq).await?;
    tests::eventually(WAIT, || async {
        sweep(31).await?;
        Ok(matches!(entry(&hub, thread, seq)?, EntryBody::Expired))
    })
    .await?;
    hub.stop().await
}

#[tokio::test]
async fn a_device_away_longer_than_the_idle_period_no_longer_holds_content_back() -> anyhow::Result<()> {
    let Office { _dir, hub, _desk_state, laptop_state, desk, mut desk_events } = Office::open().await?;
    let thread = desk.create_thread().await?;
    let laptop = hub.client(VT).state_dir(laptop_state.path()).connect().await?;
    let mut laptop_events = laptop.events().expect("events");
    next_event(&mut laptop_events, WAIT, |e| matches!(e, Event::Rejoined { .. })).await?;
    laptop.close().await;
    let sent = desk.send_text(thread, "de laptop is weg").await?;
    shows(&mut desk_events, thread, "de laptop is weg").await?;
    desk.ack(thread, sent.seq).await?;
    let idle = u64::from(tests::limits().device_idle_days) + 1;
    tests::eventually(WAIT, || async {
        hub.hub().sweep_retention(hub::clock::now_ms() + idle * DAY_MS).await?;
        Ok(matches!(entry(&hub, thread, sent.seq)?, EntryBody::Expired))
    })
    .await?;
    hub.stop().await
}

#[tokio::test]
async fn a_new_device_over_the_bound_takes_the_place_of_the_one_seen_least_recently() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let limits = hub::config::Limits { max_devices_per_identity: 2, ..tests::limits() };
    let hub = DevHub::start(dir.path(), limits).await?;
    let states = [tempfile::tempdir()?, tempfile::tempdir()?, tempfile::tempdir()?];
    let mut ids = Vec::new();
    for state in &states {
        let client = hub.client(VT).state_dir(state.path()).discard_events().connect().await?;
        ids.push(client.device_id());
        client.close().await;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Never more than the bound, and the worker who reinstalled is not locked out.
    let member = hub.client(VT).discard_events().key_package_stock(0).connect().await?.member_id();
    let kept: Vec<wire::DeviceId> = hub.store().devices(&member)?.into_iter().map(|(d, _)| d).collect();
    assert!(kept.len() <= 2, "{kept:?}");
    assert!(!kept.contains(&ids[0]) && kept.contains(&ids[2]), "the oldest went, the newest stays: {kept:?}");
    hub.stop().await
}

/// The body of entry `seq` of `thread`, as the hub's store holds it now.
fn entry(hub: &DevHub, thread: ThreadId, seq: u64) -> anyhow::Result<EntryBody> {
    let entries = hub.store().entries_after(thread, seq - 1, 1)?;
    Ok(entries.into_iter().next().ok_or_else(|| anyhow::anyhow!("no entry {seq}"))?.body)
}

#[tokio::test]
async fn members_see_on_which_members_devices_a_message_arrived_and_outsiders_see_nothing() -> anyhow::Result<()> {
    let Office { _dir, hub, _desk_state, laptop_state, desk, mut desk_events } = Office::open().await?;
    let (lt, mut lt_events, thread) = case_with_lt(&hub, &desk).await?;
    let (laptop, laptop_events) = laptop_joins(&hub, laptop_state.path(), &desk, thread).await?;
    laptop.close().await;
    drop(laptop_events);

    // A device has a message once it has processed (acknowledged) it. The desk
    // acknowledges its own send; LT's device and VT's laptop have not yet.
    let sent = desk.send_text(thread, "wie heeft dit?").await?;
    let (vt_id, lt_id) = (desk.member_id(), lt.member_id());
    // (members listed, VT's (any, every), LT's (any, every)) as `c` sees them.
    let status = |c: &ketenhub_sdk::Client| {
        let (c, vt_id, lt_id) = (c.clone(), vt_id.clone(), lt_id.clone());
        async move {
            let all = c.delivery(thread).await?;
            let of = |m: wire::MemberId| all.iter().find(|d| d.member == m).map(|d| (d.any_device, d.every_device));
            anyhow::Ok((all.len(), of(vt_id), of(lt_id)))
        }
    };
    let (seq, _) = shows(&mut desk_events, thread, "wie heeft dit?").await?;
    assert_eq!(seq, sent.seq);
    desk.ack(thread, seq).await?;
    tests::eventually(WAIT, || async {
        let (count, vt, lt_now) = status(&desk).await?;
        Ok(count == 2
            && vt.is_some_and(|(any, every)| any >= seq && every < seq)
            && lt_now.is_some_and(|(any, _)| any < seq))
    })
    .await
    .map_err(|e| anyhow::anyhow!("VT's desk has it, VT's laptop and LT do not: {e}"))?;

    let (lt_seq, _) = shows(&mut lt_events, thread, "wie heeft dit?").await?;
    lt.ack(thread, lt_seq).await?;
    tests::eventually(WAIT, || async {
        let (_, vt, lt_now) = status(&desk).await?;
        Ok(vt.is_some_and(|(_, every)| every < seq) && lt_now.is_some_and(|(any, every)| any >= seq && every >= seq))
    })
    .await
    .map_err(|e| anyhow::anyhow!("LT's only device has it: {e}"))?;

    // The laptop comes back and catches up: now every device of VT has it.
    let laptop = hub.client(VT).state_dir(laptop_state.path()).connect().await?;
    let mut laptop_events = laptop.events().expect("events");
    let (laptop_seq, _) = shows(&mut laptop_events, thread, "wie heeft dit?").await?;
    laptop.ack(thread, laptop_seq).await?;
    tests::eventually(WAIT, || async {
        let (_, vt, _) = status(&lt).await?;
        Ok(vt.is_some_and(|(any, every)| any >= seq && every >= seq))
    })
    .await
    .map_err(|e| anyhow::anyhow!("both of VT's devices have it: {e}"))?;
    drop(lt_events);

    // Someone not on the case learns nothing, not even that the case exists.
    let outsider = hub.client("gi-save-caseworker").discard_events().connect().await?;
    let refused = outsider.delivery(thread).await;
    let unknown = outsider.delivery(ThreadId::random()).await;
    assert_eq!(format!("{refused:?}"), format!("{unknown:?}"));
    assert!(
        matches!(refused, Err(ketenhub_sdk::Error::Hub(ref e)) if e.code == wire::ErrorCode::NotFound),
        "{refused:?}"
    );
    hub.stop().await
}
