//! Every MLS leaf belongs to its certificate identity, whoever runs the hub.
//!
//! The hub hands out KeyPackages and Welcomes, so it is the obvious place to
//! slip in a key of its own under a caseworker's name. These tests play the hub
//! operator (rewriting the store on disk between runs) and a member that
//! bypasses the SDK, and check that the sender's SDK refuses the substitute
//! with a typed error before encrypting anything, that the hub refuses what it
//! can refuse early, and that members can compare safety numbers.

use std::time::Duration;

use hub::store::kv_store::KvStore;
use hub::store::Store;
use ketenhub_sdk::{BindingError, Error, Event};
use tests::forged::ForgedDevice;
use tests::{next_event, DevHub, HubProcess};

const HUB: &str = env!("CARGO_BIN_EXE_ketenhub-hub");
use wire::{EntryBody, MemberId, Reply, Request, ThreadId};

const WAIT: Duration = Duration::from_secs(20);
const VT: &str = "vt-utrecht-caseworker";
const LT: &str = "lt-woerden-caseworker";

/// Replaces every KeyPackage the store holds for `member` with `substitutes`,
/// as an operator with write access to the hub's disk could.
fn substitute_key_packages(
    data_dir: &std::path::Path,
    member: &MemberId,
    substitutes: &[Vec<u8>],
) -> anyhow::Result<()> {
    let store = KvStore::open(&data_dir.join("store"))?;
    let scratch = ThreadId::random();
    while store.claim_key_package(scratch, member, member, 0)?.is_some() {}
    store.add_key_packages(member, substitutes)?;
    store.flush()?;
    Ok(())
}

#[tokio::test]
async fn a_key_package_substituted_on_the_hubs_disk_is_refused_by_the_sender() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut hub = HubProcess::start(HUB.as_ref(), dir.path(), "127.0.0.1:0", "")?;
    // LT stocks its KeyPackages at the hub and goes offline.
    let lt = hub.client(LT).discard_events().connect().await?;
    let lt_member = lt.member_id();
    tests::eventually(WAIT, || async { Ok(lt.upload_key_packages(Vec::new()).await? > 0) }).await?;
    let lt_identity = lt.identity().clone();
    lt.close().await;
    hub.terminate()?;

    // The operator files a KeyPackage of its own under LT's name: it has no LT key, so no binding.
    let operator = ForgedDevice::unbound(&lt_identity)?;
    substitute_key_packages(&dir.path().join("data"), &lt_member, &[operator.key_package()?])?;

    let mut hub = HubProcess::start(HUB.as_ref(), dir.path(), "127.0.0.1:0", "")?;
    let vt = hub.client(VT).discard_events().connect().await?;
    let thread = vt.create_thread().await?;
    let refused = vt.add_member(thread, lt_member.clone(), &tests::consent()).await;
    assert!(matches!(refused, Err(Error::Unbound(BindingError::Missing))), "{refused:?}");

    // Nothing was encrypted to the substitute: no commit and no Welcome in the thread.
    let mut raw = hub.client(VT).connect_raw().await?;
    let entries = raw_entries(&mut raw, thread).await?;
    assert!(
        !entries.iter().any(|body| matches!(body, EntryBody::Commit { .. } | EntryBody::Welcome { .. })),
        "{entries:?}"
    );
    assert!(vt.devices(thread).iter().all(|d| d.as_ref().is_ok_and(|b| b.member == vt.member_id())));
    hub.terminate()?;
    Ok(())
}

/// The bodies of the thread's entries the hub sends `raw` (its backlog).
async fn raw_entries(raw: &mut ketenhub_sdk::raw::RawConnection, thread: ThreadId) -> anyhow::Result<Vec<EntryBody>> {
    let mut bodies = Vec::new();
    while let Ok(Some(incoming)) = tokio::time::timeout(Duration::from_millis(500), raw.next()).await.map(Some) {
        if let ketenhub_sdk::raw::RawIncoming::Frame(wire::HubFrame::Event { thread: t, entry }) = incoming? {
            if t == thread {
                bodies.push(entry.body);
            }
        }
    }
    Ok(bodies)
}

#[tokio::test]
async fn the_hub_adds_only_bound_key_packages_it_handed_out() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let hub = DevHub::start(dir.path(), tests::limits()).await?;
    let mut vt_raw = hub.client(VT).connect_raw().await?;
    let mut vt_device = ForgedDevice::bound(&tests::binder(hub.pki_dir(), VT)?)?;
    let thread = vt_device.create_thread(&mut vt_raw).await?;
    let lt = hub.client(LT).discard_events().key_package_stock(0).connect().await?;
    let add =
        Request::AddMember { thread, member: lt.member_id(), reason: "referral".into(), legal_basis: "consent".into() };
    let Ok(Reply::MemberAdded { .. }) = tests::raw_reply(&mut vt_raw, add).await? else { anyhow::bail!("not added") };

    // A KeyPackage that only names LT.
    let unbound = ForgedDevice::unbound(lt.identity())?.key_package()?;
    let refused = vt_device.try_add(&mut vt_raw, thread, &[unbound]).await?.expect_err("an unbound leaf was added");
    assert!(refused.message.contains("leaf-unbound"), "{refused:?}");

    // LT's own, bound KeyPackage, but one the hub never handed out.
    let lt_device = tests::device(hub.pki_dir(), LT, None)?;
    let mut packages = lt_device.key_packages(2)?;
    let refused =
        vt_device.try_add(&mut vt_raw, thread, &packages[..1]).await?.expect_err("an unclaimed KeyPackage was added");
    assert!(refused.message.contains("key-package-not-claimed"), "{refused:?}");

    // Uploaded by LT and claimed by VT for this thread, it is added; once.
    lt.upload_key_packages(vec![packages.remove(1)]).await?;
    let claim = Request::ClaimKeyPackage { thread, member: lt.member_id() };
    let Ok(Reply::KeyPackage { key_package }) = tests::raw_reply(&mut vt_raw, claim).await? else {
        anyhow::bail!("no KeyPackage")
    };
    vt_device.add(&mut vt_raw, thread, &[key_package.to_vec()]).await?;
    hub.stop().await
}

#[tokio::test]
async fn a_commit_with_a_proposal_ketenhub_does_not_use_is_refused() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let hub = DevHub::start(dir.path(), tests::limits()).await?;
    let mut vt_raw = hub.client(VT).connect_raw().await?;
    let mut vt_device = ForgedDevice::bound(&tests::binder(hub.pki_dir(), VT)?)?;
    let thread = vt_device.create_thread(&mut vt_raw).await?;
    let refused = vt_device.change_group_context(&mut vt_raw, thread).await?.expect_err("the hub accepted the commit");
    assert!(refused.message.contains("proposal-not-allowed"), "{refused:?}");
    // The group is where it was: a message for epoch 0 still goes through.
    vt_device.send(&mut vt_raw, thread, b"still at epoch 0").await?;
    hub.stop().await
}

#[tokio::test]
async fn a_thread_without_a_bound_creator_is_refused() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let hub = DevHub::start(dir.path(), tests::limits()).await?;
    let mut raw = hub.client(VT).connect_raw().await?;
    let identity = raw.hello().identity.clone();
    let refused = ForgedDevice::unbound(&identity)?.create_thread(&mut raw).await.expect_err("an unbound group");
    assert!(refused.to_string().contains("leaf-unbound"), "{refused:#}");
    hub.stop().await
}

#[tokio::test]
async fn members_read_the_same_safety_numbers() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let hub = DevHub::start(dir.path(), tests::limits()).await?;
    let vt = hub.client(VT).discard_events().connect().await?;
    let lt = hub.client(LT).connect().await?;
    let mut lt_events = lt.events().expect("events");
    let thread = vt.create_thread().await?;
    vt.add_member(thread, lt.member_id(), &tests::consent()).await?;
    next_event(&mut lt_events, WAIT, |e| matches!(e, Event::Joined { .. })).await?;

    let numbers = |client: &ketenhub_sdk::Client| -> Vec<(MemberId, String)> {
        let mut seen: Vec<_> = client
            .devices(thread)
            .into_iter()
            .map(|d| d.map(|b| (b.member, b.safety_number.to_string())))
            .collect::<Result<_, _>>()
            .expect("every device is bound");
        seen.sort();
        seen
    };
    let (seen_by_vt, seen_by_lt) = (numbers(&vt), numbers(&lt));
    assert_eq!(seen_by_vt, seen_by_lt);
    assert!(seen_by_vt.contains(&(lt.member_id(), lt.safety_number()?.to_string())));
    assert!(seen_by_vt.contains(&(vt.member_id(), vt.safety_number()?.to_string())));
    hub.stop().await
}

#[tokio::test]
async fn a_commit_that_changes_a_leafs_agency_kind_is_refused_by_the_hub() -> anyhow::Result<()> {
    use certs::dev::{DevPki, ExtraClient, SampleOrg, LT_WOERDEN};
    let dir = tempfile::tempdir()?;
    // The same worker of LT Woerden, certified under another agency kind too.
    let other_kind = ExtraClient {
        slug: "lt-woerden-as-vt".into(),
        org: SampleOrg { kind: wire::AgencyKind::VT, ..LT_WOERDEN },
        worker: "sanne.bakker".into(),
        role: wire::Role::Caseworker,
    };
    DevPki::generate_with(&[other_kind])?.write_to(&dir.path().join("pki"))?;
    let hub = DevHub::start(dir.path(), tests::limits()).await?;
    let vt = hub.client(VT).discard_events().connect().await?;
    let mut lt_raw = hub.client(LT).connect_raw().await?;
    let mut lt_device = ForgedDevice::bound(&tests::binder(hub.pki_dir(), LT)?)?;
    let thread = vt.create_thread().await?;
    let upload = Request::UploadKeyPackages { key_packages: vec![lt_device.key_package()?.into()] };
    tests::raw_reply(&mut lt_raw, upload).await?.map_err(|e| anyhow::anyhow!("{e:?}"))?;
    vt.add_member(thread, lt_raw.hello().identity.member_id(), &tests::consent()).await?;
    lt_device.join_from(&mut lt_raw, thread).await?;

    // A validly bound leaf of the same member id, but another credential: every
    // client rejects it, so the hub must too, or it would wedge them.
    let other = tests::binder(hub.pki_dir(), "lt-woerden-as-vt")?;
    let refused = lt_device.rebind_self(&mut lt_raw, thread, &other).await?.expect_err("the hub accepted it");
    assert!(refused.message.contains("leaf-keeps-identity"), "{refused:?}");
    vt.send_text(thread, "the thread goes on").await?;
    hub.stop().await
}
