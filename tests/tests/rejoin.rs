//! Groups that no member can break: a device that cannot follow its thread's
//! MLS group, or that lost its state, joins it again by itself through an
//! external commit from the GroupInfo the hub keeps, and the thread carries on.

use std::time::Duration;

use ketenhub_sdk::{Client, Event, EventStream};
use tests::forged::ForgedDevice;
use tests::{next_event, DevHub};
use wire::{ErrorCode, Reply, Request, ThreadId};

const WAIT: Duration = Duration::from_secs(20);
const VT: &str = "vt-utrecht-caseworker";
const LT: &str = "lt-woerden-caseworker";
const RVDK: &str = "rvdk-caseworker";

/// Puts `client` on the thread (the table, then its device into the group) as
/// the forged creator on `raw`, and waits until the client's device has joined.
async fn forged_add(
    raw: &mut ketenhub_sdk::raw::RawConnection,
    creator: &mut ForgedDevice,
    thread: ThreadId,
    (client, basis): (&Client, &str),
    events: &mut EventStream,
) -> anyhow::Result<()> {
    let add = Request::AddMember { thread, member: client.member_id(), reason: "r".into(), legal_basis: basis.into() };
    let Ok(Reply::MemberAdded { .. }) = tests::raw_reply(raw, add).await? else { anyhow::bail!("not added") };
    tests::eventually(WAIT, || async { Ok(client.upload_key_packages(Vec::new()).await? > 0) }).await?;
    let claim = Request::ClaimKeyPackage { thread, member: client.member_id() };
    let Ok(Reply::KeyPackage { key_package }) = tests::raw_reply(raw, claim).await? else {
        anyhow::bail!("no KeyPackage")
    };
    creator.add(raw, thread, &[key_package.into_vec()]).await?;
    next_event(events, WAIT, |e| matches!(e, Event::Joined { thread: t } if *t == thread)).await?;
    Ok(())
}

/// Sends `text` from `from` and waits until `to` shows it.
async fn reaches(from: &Client, to: &mut EventStream, thread: ThreadId, text: &str) -> anyhow::Result<()> {
    from.send_text(thread, text).await?;
    let wanted = ketenhub_sdk::Content::Text { text: text.into() };
    let shown = next_event(to, WAIT, |e| matches!(e, Event::Message(m) if m.content == wanted)).await;
    shown.map(drop).map_err(|e| anyhow::anyhow!("{text:?} did not arrive: {e}"))
}

#[tokio::test]
async fn a_commit_no_other_member_can_process_does_not_stop_the_thread() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let hub = DevHub::start(dir.path(), tests::limits()).await?;
    let mut raw = hub.client(VT).connect_raw().await?;
    let mut vt = ForgedDevice::bound(&tests::binder(hub.pki_dir(), VT)?)?;
    let thread = vt.create_thread(&mut raw).await?;
    let lt = hub.client(LT).connect().await?;
    let rvdk = hub.client(RVDK).connect().await?;
    let (mut lt_events, mut rvdk_events) = (lt.events().expect("events"), rvdk.events().expect("events"));
    forged_add(&mut raw, &mut vt, thread, (&lt, "consent"), &mut lt_events).await?;
    forged_add(&mut raw, &mut vt, thread, (&rvdk, "vt-safety"), &mut rvdk_events).await?;
    let epoch = lt.epoch(thread).expect("LT is in the group");

    // A member's commit with a broken membership tag: the hub, holding no secret, cannot tell.
    vt.commit_nobody_can_process(&mut raw, thread).await?.map_err(|e| anyhow::anyhow!("refused: {e:?}"))?;

    // Neither honest member can process it; both say so, and both get the group back by themselves.
    for events in [&mut lt_events, &mut rvdk_events] {
        next_event(events, WAIT, |e| matches!(e, Event::GroupLost { thread: t, .. } if *t == thread)).await?;
        next_event(events, WAIT, |e| matches!(e, Event::Rejoined { thread: t, .. } if *t == thread)).await?;
    }
    assert!(lt.epoch(thread).expect("LT is in the group again") > epoch + 1);
    // And the thread goes on: each reads what the other sends now.
    tests::eventually(WAIT, || async { Ok(lt.epoch(thread) == rvdk.epoch(thread)) }).await?;
    reaches(&lt, &mut rvdk_events, thread, "na het herstel: LT").await?;
    reaches(&rvdk, &mut lt_events, thread, "na het herstel: Raad").await?;
    hub.stop().await
}

#[tokio::test]
async fn a_device_that_lost_its_state_rejoins_and_reads_new_messages() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let hub = DevHub::start(dir.path(), tests::limits()).await?;
    let vt = hub.client(VT).connect().await?;
    let mut vt_events = vt.events().expect("events");
    let lt_state = tempfile::tempdir()?;
    let lt = hub.client(LT).state_dir(lt_state.path()).connect().await?;
    let mut lt_events = lt.events().expect("events");
    let thread = vt.create_thread().await?;
    vt.add_member(thread, lt.member_id(), &tests::consent()).await?;
    next_event(&mut lt_events, WAIT, |e| matches!(e, Event::Joined { .. })).await?;
    reaches(&vt, &mut lt_events, thread, "voor het verlies").await?;
    lt.close().await;

    // The laptop's disk is wiped: a new device state, with a new MLS key, for the same certificate.
    std::fs::remove_dir_all(lt_state.path())?;
    let lt = hub.client(LT).state_dir(lt_state.path()).connect().await?;
    let mut lt_events = lt.events().expect("events");
    next_event(&mut lt_events, WAIT, |e| matches!(e, Event::Rejoined { thread: t, .. } if *t == thread)).await?;
    // The lost device's leaf stays until someone removes it: the new state has a new MLS key, so
    // nothing ties the two but the certificate. VT sees both, each bound to LT's certificate.
    tests::eventually(WAIT, || async { Ok(vt.epoch(thread) == lt.epoch(thread)) }).await?;
    let lt_devices = vt.devices(thread).into_iter().filter(|d| d.as_ref().is_ok_and(|b| b.member == lt.member_id()));
    assert_eq!(lt_devices.count(), 2, "the new device and the lost one");
    reaches(&vt, &mut lt_events, thread, "na het herstel").await?;
    reaches(&lt, &mut vt_events, thread, "LT leest weer mee").await?;
    hub.stop().await
}

#[tokio::test]
async fn a_rejoin_is_refused_for_anyone_without_a_device_in_the_group() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let hub = DevHub::start(dir.path(), tests::limits()).await?;
    let vt = hub.client(VT).discard_events().connect().await?;
    let thread = vt.create_thread().await?;
    // RvdK is put on the thread's table, but its device is never added to the group.
    let rvdk = hub.client(RVDK).discard_events().key_package_stock(0).connect().await?;
    let add = Request::AddMember {
        thread,
        member: rvdk.member_id(),
        reason: "referral".into(),
        legal_basis: "vt-safety".into(),
    };
    let mut raw_vt = hub.client(VT).connect_raw().await?;
    tests::raw_reply(&mut raw_vt, add).await?.map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let refused = rvdk.rejoin(thread).await;
    assert!(tests::refusal_rule(refused).contains("external-join"));
    // A non-member is told the thread does not exist, for the GroupInfo as for anything else.
    let gi = hub.client("gi-save-caseworker").discard_events().connect().await?;
    let refused = gi.rejoin(thread).await.expect_err("an outsider rejoined");
    assert_eq!(refused.code(), Some(ErrorCode::NotFound));
    hub.stop().await
}
