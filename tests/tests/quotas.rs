//! Quotas: what one identity can make the hub store or compute is bounded,
//! each bound has a config key, and going over it is a typed
//! `limit_exceeded` error that names the key, with nothing stored.

use hub::config::Limits;
use ketenhub_sdk::{Error, ErrorCode, Grounds, MemberId};
use tests::DevHub;
use wire::Request;

/// The key a `limit_exceeded` refusal names.
fn exceeded(result: Result<impl std::fmt::Debug, Error>) -> String {
    match result {
        Err(Error::Hub(e)) if e.code == ErrorCode::LimitExceeded => {
            e.message.split_whitespace().find(|w| w.starts_with("limits.")).unwrap_or_default().to_owned()
        }
        other => panic!("expected limit_exceeded, got {other:?}"),
    }
}

#[tokio::test]
async fn members_threads_and_free_text_are_bounded() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let limits = Limits {
        max_members_per_thread: 2,
        max_threads_per_identity_per_day: 3,
        max_text_bytes: 100,
        max_offers_per_case: 1,
        ..Limits::default()
    };
    let hub = DevHub::start(dir.path(), limits).await?;
    let vt = hub.client("vt-utrecht-caseworker").discard_events().connect().await?;
    let woerden = hub.client("lt-woerden-caseworker").discard_events().connect().await?;
    let oudewater = MemberId::new("00000001800000000003", "joris.smit")?;

    let thread = vt.create_thread().await?;
    vt.add_member(thread, woerden.member_id(), &tests::consent()).await?;
    assert_eq!(
        exceeded(vt.add_member(thread, oudewater.clone(), &tests::consent()).await),
        "limits.max_members_per_thread"
    );
    assert_eq!(vt.members(thread).await?.len(), 2, "nothing was added");

    // One offer per case here: a second, after the first was declined, is over the quota.
    let offered = vt.create_thread().await?;
    let offer = |reason: &str| ketenhub_sdk::OfferRequest {
        to: woerden.identity().oin.clone(),
        reason: reason.into(),
        ..tests::referral_to_lt(hub::clock::now_ms() + 86_400_000)
    };
    let id = vt.offer_handover(offered, offer("first")).await?.offers[0].id;
    woerden.decline_offer(offered, id, "no capacity").await?;
    assert_eq!(exceeded(vt.offer_handover(offered, offer("second")).await), "limits.max_offers_per_case");

    vt.create_thread().await?;
    assert_eq!(exceeded(vt.create_thread().await), "limits.max_threads_per_identity_per_day");
    assert_eq!(vt.threads().await?.len(), 3);

    // Free text is stored for years in the audit log: it stays short.
    let other = woerden.create_thread().await?;
    let long = Grounds::new("x".repeat(101), "consent");
    assert_eq!(exceeded(woerden.add_member(other, vt.member_id(), &long).await), "limits.max_text_bytes");
    assert!(!woerden.members(other).await?.contains(&vt.member_id()));
    hub.stop().await
}

#[tokio::test]
async fn key_package_uploads_are_rate_limited_before_they_are_verified() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let limits = Limits { key_package_uploads_per_minute: 2, ..Limits::default() };
    let hub = DevHub::start(dir.path(), limits).await?;
    let mut raw = hub.client("lt-oudewater-caseworker").connect_raw().await?;
    let device = tests::device(hub.pki_dir(), "lt-oudewater-caseworker", None)?;
    let upload = || -> anyhow::Result<Request> {
        Ok(Request::UploadKeyPackages { key_packages: device.key_packages(1)?.into_iter().map(Into::into).collect() })
    };
    for _ in 0..2 {
        tests::raw_reply(&mut raw, upload()?).await?.map_err(|e| anyhow::anyhow!("{e:?}"))?;
    }
    let refused = tests::raw_refusal(&mut raw, upload()?).await?;
    assert_eq!(refused.code, ErrorCode::LimitExceeded, "{refused:?}");
    assert!(refused.message.contains("limits.key_package_uploads_per_minute"), "{refused:?}");
    // Asking for the stock is not an upload.
    let stock = tests::raw_reply(&mut raw, Request::UploadKeyPackages { key_packages: Vec::new() }).await?;
    assert!(matches!(stock, Ok(wire::Reply::KeyPackagesStored { stock: 2 })), "{stock:?}");
    hub.stop().await
}

#[tokio::test]
async fn attachment_uploads_are_bounded_per_thread_in_count_and_bytes() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let limits = Limits { max_open_blobs_per_thread: 2, max_blob_bytes_per_thread: 10_000, ..Limits::default() };
    let hub = DevHub::start(dir.path(), limits).await?;
    let vt = hub.client("vt-utrecht-caseworker").discard_events().connect().await?;
    let thread = vt.create_thread().await?;
    let mut raw = hub.client("vt-utrecht-caseworker").connect_raw().await?;
    let chunk = |blob, index, last, size| Request::PutBlobChunk { thread, blob, index, last, data: vec![1; size] };
    let (a, b, c) = (wire::BlobId::random(), wire::BlobId::random(), wire::BlobId::random());
    for blob in [a, b] {
        tests::raw_reply(&mut raw, chunk(blob, 0, false, 1000)).await?.map_err(|e| anyhow::anyhow!("{e:?}"))?;
    }
    let third = tests::raw_refusal(&mut raw, chunk(c, 0, false, 1000)).await?;
    assert_eq!(third.code, ErrorCode::LimitExceeded);
    assert!(third.message.contains("limits.max_open_blobs_per_thread"), "{third:?}");
    // Sealing one makes room for another upload, but not for more bytes than the thread may hold.
    tests::raw_reply(&mut raw, chunk(a, 1, true, 1000)).await?.map_err(|e| anyhow::anyhow!("{e:?}"))?;
    tests::raw_reply(&mut raw, chunk(c, 0, false, 1000)).await?.map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let big = tests::raw_refusal(&mut raw, chunk(b, 1, false, 7000)).await?;
    assert_eq!(big.code, ErrorCode::LimitExceeded);
    assert!(big.message.contains("limits.max_blob_bytes_per_thread"), "{big:?}");
    hub.stop().await
}
