//! The hub's KeyPackage directory: devices keep a stock at the hub, members of
//! a thread claim each other's KeyPackages once each, and nobody can upload a
//! KeyPackage that names another identity.

use std::time::Duration;

use ketenhub_sdk::{Client, ErrorCode};
use tests::forged::ForgedDevice;
use tests::{limits, DevHub};

async fn stock(client: &Client) -> anyhow::Result<u64> {
    Ok(client.upload_key_packages(Vec::new()).await?)
}

/// Waits until the SDK's background top-up has reached `want`.
async fn stocked(client: &Client, want: u64) -> anyhow::Result<()> {
    for _ in 0..200 {
        if stock(client).await? >= want {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    anyhow::bail!("the stock never reached {want}")
}

#[tokio::test]
async fn members_claim_each_others_key_packages_once_each() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let hub = DevHub::start(dir.path(), limits()).await?;
    let state = tempfile::tempdir()?;
    let vt = hub.client("vt-utrecht-caseworker").discard_events().state_dir(state.path().join("vt")).connect().await?;
    let lt = hub
        .client("lt-woerden-caseworker")
        .discard_events()
        .state_dir(state.path().join("lt"))
        .key_package_stock(4)
        .connect()
        .await?;
    stocked(&lt, 4).await?;

    let thread = vt.create_thread().await?;
    // Not a member of the thread yet: its KeyPackages cannot be claimed for it.
    let early = vt.claim_key_package(thread, lt.member_id()).await;
    assert_eq!(early.err().and_then(|e| e.code()), Some(ErrorCode::Invalid));

    // Adding LT to the thread's MLS group takes one; three are left to claim.
    vt.add_member(thread, lt.member_id(), &tests::consent()).await?;
    assert_eq!(stock(&lt).await?, 3);
    let mut claimed = Vec::new();
    for _ in 0..3 {
        let bytes = vt.claim_key_package(thread, lt.member_id()).await?;
        let verified = wire::mls::verify_key_package(&bytes)?;
        assert_eq!(verified.member, lt.member_id());
        claimed.push(bytes);
    }
    claimed.sort();
    claimed.dedup();
    assert_eq!(claimed.len(), 3, "each KeyPackage is handed out once");
    let exhausted = vt.claim_key_package(thread, lt.member_id()).await;
    assert_eq!(exhausted.err().and_then(|e| e.code()), Some(ErrorCode::NoKeyPackage));

    // Topping up again refills the stock.
    assert_eq!(lt.top_up_key_packages().await?, 4);
    hub.stop().await
}

#[tokio::test]
async fn outsiders_cannot_claim_key_packages() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let hub = DevHub::start(dir.path(), limits()).await?;
    let vt = hub.client("vt-utrecht-caseworker").discard_events().connect().await?;
    let lt = hub.client("lt-woerden-caseworker").discard_events().key_package_stock(3).connect().await?;
    let outsider = hub.client("lt-oudewater-caseworker").discard_events().connect().await?;
    stocked(&lt, 3).await?;
    let thread = vt.create_thread().await?;
    vt.add_member(thread, lt.member_id(), &tests::consent()).await?;
    assert_eq!(stock(&lt).await?, 2, "the add used one");
    let refused = outsider.claim_key_package(thread, lt.member_id()).await;
    assert_eq!(refused.err().and_then(|e| e.code()), Some(ErrorCode::NotFound));
    assert_eq!(stock(&lt).await?, 2, "nothing was taken");
    hub.stop().await
}

#[tokio::test]
async fn a_key_package_for_another_identity_is_refused() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let hub = DevHub::start(dir.path(), limits()).await?;
    let vt = hub.client("vt-utrecht-caseworker").discard_events().key_package_stock(0).connect().await?;
    let lt = hub.client("lt-woerden-caseworker").discard_events().key_package_stock(0).connect().await?;

    // VT's connection offers KeyPackages whose credential names LT's worker.
    let impostor = tests::device(hub.pki_dir(), "lt-woerden-caseworker", None)?;
    let forged = impostor.key_packages(1)?;
    let refused = vt.upload_key_packages(forged).await;
    assert_eq!(refused.err().and_then(|e| e.code()), Some(ErrorCode::Forbidden));
    assert_eq!(stock(&vt).await?, 0);
    assert_eq!(stock(&lt).await?, 0, "nothing was filed under LT either");

    // A credential for the same worker id in another organisation is refused too.
    let mut elsewhere = vt.identity().clone();
    elsewhere.oin = "00000001800000000004".parse()?;
    let forged = vec![ForgedDevice::unbound(&elsewhere)?.key_package()?];
    assert_eq!(vt.upload_key_packages(forged).await.err().and_then(|e| e.code()), Some(ErrorCode::Forbidden));

    // VT's own name without its certificate's binding: anyone could have made it.
    let unbound = vec![ForgedDevice::unbound(vt.identity())?.key_package()?];
    let refused = vt.upload_key_packages(unbound).await;
    assert!(tests::refusal_rule(refused).contains("leaf-unbound"));

    // Garbage is refused as invalid, and one bad package refuses the whole upload.
    let own_device = tests::device(hub.pki_dir(), "vt-utrecht-caseworker", None)?;
    let mut mixed = own_device.key_packages(2)?;
    mixed.push(b"not a key package".to_vec());
    assert_eq!(vt.upload_key_packages(mixed).await.err().and_then(|e| e.code()), Some(ErrorCode::Invalid));
    assert_eq!(stock(&vt).await?, 0);

    let own = own_device.key_packages(2)?;
    assert_eq!(vt.upload_key_packages(own).await?, 2);
    hub.stop().await
}
