//! Need to know, tried as an attacker would: a privacy officer cannot widen
//! its own scope, a read-only former owner changes no membership, nobody
//! removes the owner, a member who leaves is off the case at once, an identity
//! is sent exactly the entries of its own membership intervals, and delivery
//! follows the policy in force.

use std::time::Duration;

use certs::dev::{DevPki, ExtraClient, SampleOrg, LT_WOERDEN};
use ketenhub_sdk::raw::{RawConnection, RawIncoming};
use ketenhub_sdk::{
    AgencyKind, AuditFilter, Client, Content, ErrorCode, Event, EventStream, FamilyTold, Grounds, OfferRequest, Role,
    ThreadId,
};
use tests::forged::ForgedDevice;
use tests::{next_event, refusal_rule, DevHub, HubProcess};
use wire::{HubFrame, Reply, Request};

const WAIT: Duration = Duration::from_secs(20);
const QUIET: Duration = Duration::from_millis(600);

/// The events a raw connection receives for `thread` until it has been quiet for a while.
async fn raw_events_of(raw: &mut RawConnection, thread: ThreadId) -> Vec<wire::Entry> {
    let mut entries = Vec::new();
    while let Ok(Ok(incoming)) = tokio::time::timeout(QUIET, raw.next()).await {
        match incoming {
            RawIncoming::Frame(HubFrame::Event { thread: t, entry }) if t == thread => entries.push(entry),
            RawIncoming::Frame(_) => {}
            _ => break,
        }
    }
    entries
}

/// Whether the message `text` of `thread` reaches `events` within a short while.
async fn hears(events: &mut EventStream, thread: ThreadId, text: &str) -> bool {
    let said = |e: &Event| matches!(e, Event::Message(m) if m.thread == thread && m.content == Content::Text { text: text.into() });
    next_event(events, QUIET, said).await.is_ok()
}

fn offer(to: &Client, route: &str) -> OfferRequest {
    OfferRequest {
        to: to.identity().oin.clone(),
        to_worker: Some(to.identity().worker.clone()),
        route: route.into(),
        legal_basis: "consent".into(),
        reason: "the family needs support at home".into(),
        justification: None,
        deadline_ms: hub::clock::now_ms() + 86_400_000,
    }
}

/// VT hands a case to LT: LT owns it, VT is in the background, both are in the group.
async fn handed_over(vt: &Client, lt: &Client) -> anyhow::Result<ThreadId> {
    let thread = vt.create_thread().await?;
    vt.send_text(thread, "Melding: zorgen over de veiligheid.").await?;
    let id = vt.offer_handover(thread, offer(lt, "vt-lt-referral")).await?.offers[0].id;
    lt.accept_offer(thread, id).await?;
    vt.add_member(thread, lt.member_id(), &Grounds::new("accepted handover", "consent")).await?;
    let done = lt.complete_handover(thread, id, FamilyTold::Yes).await?;
    assert_eq!(done.owner, lt.member_id());
    Ok(thread)
}

#[tokio::test]
async fn a_refused_audit_query_and_a_denied_request_never_widen_an_officers_scope() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let hub = DevHub::start(dir.path(), tests::limits()).await?;
    let lt = hub.client("lt-woerden-caseworker").discard_events().connect().await?;
    let vt = hub.client("vt-utrecht-caseworker").discard_events().connect().await?;
    let officer = hub.client("vt-utrecht-privacy").discard_events().connect().await?;
    let theirs = lt.create_thread().await?;
    lt.send_text(theirs, "LT only").await?;

    // Asking again and again changes nothing.
    for attempt in 1..=10 {
        let refused = officer.audit_query(AuditFilter { case: Some(theirs), ..Default::default() }).await;
        assert_eq!(refusal_rule(refused), "audit-outside-scope", "attempt {attempt}");
    }
    // A caseworker of the officer's organisation naming the case is refused too...
    assert_eq!(vt.members(theirs).await.err().and_then(|e| e.code()), Some(ErrorCode::NotFound));
    // ...and that does not bring the case into the organisation's scope either.
    let seen = officer.audit_query(AuditFilter::default()).await?;
    assert!(seen.iter().all(|e| e.record.case != Some(theirs)), "the officer sees entries of a case VT was never in");
    assert_eq!(
        refusal_rule(officer.audit_query(AuditFilter { case: Some(theirs), ..Default::default() }).await),
        "audit-outside-scope"
    );

    // A case VT was a member of stays in scope after VT's membership ended.
    let shared = lt.create_thread().await?;
    lt.add_member(shared, vt.member_id(), &Grounds::new("consultation", "consent")).await?;
    lt.remove_member(shared, vt.member_id()).await?;
    assert!(!lt.members(shared).await?.contains(&vt.member_id()));
    let past = officer.audit_query(AuditFilter { case: Some(shared), ..Default::default() }).await?;
    assert!(past.iter().any(|e| e.record.action == wire::audit::AuditAction::RemoveMember), "{past:?}");
    hub.stop().await
}

#[tokio::test]
async fn a_former_owner_changes_no_membership_and_nobody_removes_the_owner() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let hub = DevHub::start(dir.path(), tests::limits()).await?;
    let vt = hub.client("vt-utrecht-caseworker").discard_events().connect().await?;
    let lt = hub.client("lt-woerden-caseworker").discard_events().connect().await?;
    let oudewater = hub.client("lt-oudewater-caseworker").discard_events().connect().await?;

    // Before any handover, an ordinary member cannot remove the owner.
    let early = vt.create_thread().await?;
    vt.add_member(early, lt.member_id(), &tests::consent()).await?;
    assert_eq!(refusal_rule(lt.remove_member(early, vt.member_id()).await), "owner-stays");
    assert!(lt.members(early).await?.contains(&vt.member_id()));

    let thread = handed_over(&vt, &lt).await?;
    // The former owner in its background role reads, but adds nobody and removes nobody.
    assert_eq!(
        refusal_rule(vt.add_member(thread, oudewater.member_id(), &tests::consent()).await),
        "background-read-only"
    );
    assert_eq!(refusal_rule(vt.remove_member(thread, lt.member_id()).await), "background-read-only");
    assert_eq!(vt.ownership(thread).await?.owner, lt.member_id(), "the case still has its owner");
    assert!(lt.members(thread).await?.contains(&lt.member_id()));
    // Nor does it claim KeyPackages to add devices with.
    let claim = vt.claim_key_package(thread, lt.member_id()).await;
    assert_eq!(refusal_rule(claim), "background-read-only");

    // A system identity naming itself is refused, as the protocol says.
    let system = hub.client("vt-utrecht-system").discard_events().connect().await?;
    let itself = system.on_behalf_of(&system.identity().worker);
    assert_eq!(refusal_rule(itself.create_thread().await), "system-names-worker");
    hub.stop().await
}

#[tokio::test]
async fn a_member_who_leaves_is_off_the_case_at_once_and_its_devices_are_removed() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let hub = DevHub::start(dir.path(), tests::limits()).await?;
    let vt = hub.client("vt-utrecht-caseworker").connect().await?;
    let mut vt_events = vt.events().unwrap();
    let lt = hub.client("lt-woerden-caseworker").connect().await?;
    let mut lt_events = lt.events().unwrap();
    let thread = handed_over(&vt, &lt).await?;

    let left = vt.leave_case(thread, "the local team has taken over").await?;
    assert!(left.removal_due.contains(&vt.member_id()), "{left:?}");
    // Off the membership table at once: VT sees nothing of the case any more.
    assert_eq!(vt.members(thread).await.err().and_then(|e| e.code()), Some(ErrorCode::NotFound));
    assert!(!lt.members(thread).await?.contains(&vt.member_id()));
    // The owner's device is told that VT's devices are still in the group.
    let prompt = next_event(&mut lt_events, WAIT, |e| matches!(e, Event::MemberRemoved { .. })).await?;
    let Event::MemberRemoved { member, devices_remain, .. } = prompt else { unreachable!() };
    assert_eq!((member, devices_remain), (vt.member_id(), true));
    lt.send_text(thread, "after VT left").await?;
    assert!(!hears(&mut vt_events, thread, "after VT left").await, "a member who left still receives the case");

    // The resent step answers as the first time did.
    assert_eq!(vt.leave_case(thread, "the local team has taken over").await?, left);
    assert_eq!(refusal_rule(vt.leave_case(thread, "another reason").await), "NotFound");

    // The owner removes VT's devices; the hub tracks that until it is done.
    lt.remove_member(thread, vt.member_id()).await?;
    assert!(lt.ownership(thread).await?.removal_due.is_empty());
    hub.stop().await
}

#[tokio::test]
async fn an_identity_receives_only_the_entries_of_its_own_membership() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let hub = DevHub::start(dir.path(), tests::limits()).await?;
    // VT's device is made by hand, so that it can remove one of LT's devices at a time.
    let mut vt_raw = hub.client("vt-utrecht-caseworker").connect_raw().await?;
    let mut vt_device = ForgedDevice::bound(&tests::binder(hub.pki_dir(), "vt-utrecht-caseworker")?)?;
    let thread = vt_device.create_thread(&mut vt_raw).await?;
    vt_device.send(&mut vt_raw, thread, b"before LT was ever on the case").await?;

    // LT has two devices; both are added to the group.
    let mut lt_raw = hub.client("lt-woerden-caseworker").connect_raw().await?;
    let lt_identity = lt_raw.hello().identity.clone();
    let lt = lt_identity.member_id();
    for n in 0..2 {
        let device =
            tests::device(hub.pki_dir(), "lt-woerden-caseworker", Some(&dir.path().join(format!("lt-device-{n}"))))?;
        let upload =
            Request::UploadKeyPackages { key_packages: device.key_packages(1)?.into_iter().map(Into::into).collect() };
        tests::raw_reply(&mut lt_raw, upload).await?.map_err(|e| anyhow::anyhow!("{e:?}"))?;
    }
    let add =
        Request::AddMember { thread, member: lt.clone(), reason: "referral".into(), legal_basis: "consent".into() };
    let Ok(Reply::MemberAdded { seq: added }) = tests::raw_reply(&mut vt_raw, add).await? else {
        anyhow::bail!("not added")
    };
    let mut packages = Vec::new();
    for _ in 0..2 {
        let claim = Request::ClaimKeyPackage { thread, member: lt.clone() };
        let Ok(Reply::KeyPackage { key_package }) = tests::raw_reply(&mut vt_raw, claim).await? else {
            anyhow::bail!("no KeyPackage")
        };
        packages.push(key_package.into_vec());
    }
    vt_device.add(&mut vt_raw, thread, &packages).await?;
    // Removing one device keeps LT a member.
    vt_device.remove_one_device(&mut vt_raw, thread, &lt, 0).await?.map_err(|e| anyhow::anyhow!("{e:?}"))?;
    assert!(raw_events_of(&mut lt_raw, thread).await.iter().all(|e| e.seq >= added));
    // LT connects afresh; then its last device goes, which ends its membership.
    drop(lt_raw);
    let mut lt_again = hub.client("lt-woerden-caseworker").connect_raw().await?;
    vt_device.send(&mut vt_raw, thread, b"while LT is a member").await?;
    vt_device.remove_one_device(&mut vt_raw, thread, &lt, 0).await?.map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let during = raw_events_of(&mut lt_again, thread).await;
    assert!(during.iter().all(|e| e.seq >= added), "LT was sent entries from before it was added: {during:?}");
    let ended = during.iter().find(|e| matches!(&e.body, wire::EntryBody::MemberRemoved { member } if member == &lt));
    let ended = ended.map(|e| e.seq).expect("LT hears that its membership ended");

    // Nothing after the end reaches it, now or on a later connection.
    vt_device.send(&mut vt_raw, thread, b"after LT left").await?;
    assert!(raw_events_of(&mut lt_again, thread).await.is_empty(), "LT was sent entries after its membership ended");
    drop(lt_again);
    let mut lt_later = hub.client("lt-woerden-caseworker").connect_raw().await?;
    let backlog = raw_events_of(&mut lt_later, thread).await;
    assert!(backlog.iter().all(|e| (added..=ended).contains(&e.seq)), "outside LT's interval: {backlog:?}");
    hub.stop().await
}

#[tokio::test]
async fn a_certificate_whose_role_may_not_read_receives_no_entries() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    // An admin certificate of LT Woerden with the same worker id as its caseworker.
    let admin = ExtraClient {
        slug: "lt-woerden-admin".into(),
        org: LT_WOERDEN,
        worker: "sanne.bakker".into(),
        role: Role::Admin,
    };
    DevPki::generate_with(&[admin])?.write_to(&dir.path().join("pki"))?;
    let hub = DevHub::start(dir.path(), tests::limits()).await?;
    let vt = hub.client("vt-utrecht-caseworker").discard_events().connect().await?;
    let lt = hub.client("lt-woerden-caseworker").discard_events().connect().await?;
    let thread = vt.create_thread().await?;
    vt.add_member(thread, lt.member_id(), &tests::consent()).await?;
    let mut admin = hub.client("lt-woerden-admin").connect_raw().await?;
    assert_eq!(admin.hello().identity.member_id(), lt.member_id());
    vt.send_text(thread, "for the caseworker only").await?;
    let got = raw_events_of(&mut admin, thread).await;
    assert!(got.is_empty(), "an admin certificate received case entries: {got:?}");
    hub.stop().await
}

#[tokio::test]
async fn an_organisation_dropped_from_the_policy_is_closed_off_and_refused() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    // An organisation the policy never knew is refused right after the handshake.
    let stranger = SampleOrg { oin: "00000009999999999999", name: "Onbekende stichting", kind: AgencyKind::LT };
    let extra = ExtraClient { slug: "stranger".into(), org: stranger, worker: "s.one".into(), role: Role::Caseworker };
    DevPki::generate_with(&[extra])?.write_to(&dir.path().join("pki"))?;
    let hub = HubProcess::start(env!("CARGO_BIN_EXE_ketenhub-hub").as_ref(), dir.path(), "127.0.0.1:0", "")?;
    let refused = hub.client("stranger").connect().await;
    assert!(refused.is_err(), "a connection outside the policy was accepted");

    let vt = hub.client("vt-utrecht-caseworker").discard_events().connect().await?;
    let oudewater = hub.client("lt-oudewater-caseworker").discard_events().connect().await?;
    let thread = vt.create_thread().await?;
    vt.add_member(thread, oudewater.member_id(), &tests::consent()).await?;
    let mut watching = hub.client("lt-oudewater-caseworker").connect_raw().await?;
    raw_events_of(&mut watching, thread).await;

    // Lokaal team Oudewater leaves the policy.
    let policy_file = dir.path().join("policy.toml");
    let policy = std::fs::read_to_string(&policy_file)?;
    let block = "[[organisations]]\noin = \"00000001800000000003\"\nname = \"Lokaal team Oudewater\"\nkind = \"LT\"\nregion = \"Oudewater\"\n";
    anyhow::ensure!(policy.contains(block), "the example policy changed");
    std::fs::write(&policy_file, policy.replace(block, ""))?;
    tests::sighup(hub.pid())?;
    tests::eventually(WAIT, || async { Ok(hub.log().contains("policy reloaded")) }).await?;

    // Its open connection is closed with a policy close, and nothing more reaches it.
    vt.send_text(thread, "after the reload").await?;
    let mut closed = false;
    while let Ok(Ok(incoming)) = tokio::time::timeout(WAIT, watching.next()).await {
        match incoming {
            RawIncoming::Frame(HubFrame::Event { entry, .. }) => {
                assert!(
                    !matches!(entry.body, wire::EntryBody::Message { .. }),
                    "a message reached a dropped organisation"
                )
            }
            RawIncoming::Frame(_) => {}
            _ => {
                closed = true;
                break;
            }
        }
    }
    assert!(closed, "the connection of a dropped organisation stayed open");
    assert!(hub.client("lt-oudewater-caseworker").connect().await.is_err(), "a new connection was accepted");
    Ok(())
}

#[tokio::test]
async fn a_member_cannot_give_its_device_another_identity() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let hub = DevHub::start(dir.path(), tests::limits()).await?;
    // LT's device is made by hand; VT owns the case and adds it.
    let vt = hub.client("vt-utrecht-caseworker").discard_events().connect().await?;
    let mut lt_raw = hub.client("lt-woerden-caseworker").connect_raw().await?;
    let lt_identity = lt_raw.hello().identity.clone();
    let mut lt_device = ForgedDevice::bound(&tests::binder(hub.pki_dir(), "lt-woerden-caseworker")?)?;
    let thread = vt.create_thread().await?;
    let package = lt_device.key_package()?;
    let upload = Request::UploadKeyPackages { key_packages: vec![package.into()] };
    tests::raw_reply(&mut lt_raw, upload).await?.map_err(|e| anyhow::anyhow!("{e:?}"))?;
    vt.add_member(thread, lt_identity.member_id(), &tests::consent()).await?;
    lt_device.join_from(&mut lt_raw, thread).await?;

    // LT renames its own leaf to VT, the owner, whom nobody may remove.
    let renamed = lt_device.rename_self(&mut lt_raw, thread, vt.identity()).await?;
    let refused = renamed.expect_err("the hub accepted a device renamed to the owner");
    assert!(refused.message.contains("leaf-keeps-identity"), "{refused:?}");
    // So the owner can still remove LT.
    vt.remove_member(thread, lt_identity.member_id()).await?;
    assert!(!vt.members(thread).await?.contains(&lt_identity.member_id()));
    hub.stop().await
}

#[tokio::test]
async fn a_receiver_outside_the_case_sees_only_its_own_offer_even_later() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let hub = DevHub::start(dir.path(), tests::limits()).await?;
    let vt = hub.client("vt-utrecht-caseworker").discard_events().connect().await?;
    let woerden = hub.client("lt-woerden-caseworker").discard_events().connect().await?;
    let oudewater = hub.client("lt-oudewater-caseworker").discard_events().connect().await?;
    let thread = vt.create_thread().await?;
    let first = vt.offer_handover(thread, offer(&woerden, "vt-lt-referral")).await?.offers[0].id;
    let declined = woerden.decline_offer(thread, first, "no capacity this month").await?;
    assert_eq!(declined.offers.len(), 1);
    // The case moves on: another offer, to another local team.
    let mut second = offer(&oudewater, "vt-lt-referral");
    second.reason = "the family moved to Oudewater".into();
    vt.offer_handover(thread, second).await?;
    // The decline sent again shows its own offer and nothing of what happened since.
    let again = woerden.decline_offer(thread, first, "no capacity this month").await?;
    assert_eq!(again.offers.iter().map(|o| o.id).collect::<Vec<_>>(), vec![first], "{again:?}");
    assert!(again.background.is_empty() && again.clocks.is_empty() && again.left.is_empty());
    hub.stop().await
}
