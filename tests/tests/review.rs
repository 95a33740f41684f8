//! A privacy officer reviews the shares made without the family's consent.
//!
//! The review queue is drawn from the audit log itself, and a review is an
//! audit entry: so an inspector sees in the verified chain which shares were
//! reviewed, by whom and with what note. Only a share in the officer's own
//! scope can be marked, and only by a privacy officer.

use certs::dev::{DevPki, ExtraClient, LT_OUDEWATER};
use ketenhub_sdk::report::review_queue;
use tests::DevHub;
use wire::audit::{AuditAction, AuditFilter};

/// An offer from VT to the local team on the safety basis, which needs no consent.
fn safety_referral() -> ketenhub_sdk::OfferRequest {
    ketenhub_sdk::OfferRequest {
        legal_basis: "vt-safety".into(),
        justification: Some("acute risk; the parents refuse all contact".into()),
        ..tests::referral_to_lt(hub::clock::now_ms() + 86_400_000)
    }
}

#[tokio::test]
async fn an_officer_marks_its_own_organisations_shares_without_consent_as_reviewed_in_the_audit_log(
) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let outsider = ExtraClient {
        slug: "lt-oudewater-privacy".into(),
        org: LT_OUDEWATER,
        worker: "kees.de.wit".into(),
        role: wire::Role::PrivacyOfficer,
    };
    DevPki::generate_with(&[outsider])?.write_to(&dir.path().join("pki"))?;
    let hub = DevHub::start(dir.path(), tests::limits()).await?;
    let vt = hub.client("vt-utrecht-caseworker").discard_events().connect().await?;
    let officer = hub.client("vt-utrecht-privacy").discard_events().connect().await?;
    let case = vt.create_thread().await?;
    vt.offer_handover(case, tests::referral_to_lt(hub::clock::now_ms() + 86_400_000)).await?;
    let other = vt.create_thread().await?;
    vt.offer_handover(other, safety_referral()).await?;

    // The queue holds the share without consent, with its justification, and not the one on consent.
    let vt_oin = officer.identity().oin.clone();
    let without_consent = |basis: &str| basis == "vt-safety";
    let queue_now = || async {
        let entries = officer.audit_query(AuditFilter::default()).await?;
        anyhow::Ok(review_queue(&entries, &vt_oin, without_consent))
    };
    let queue = queue_now().await?;
    assert_eq!(queue.len(), 1, "{queue:?}");
    let share = queue[0].share.clone();
    assert_eq!(share.record.case, Some(other));
    let purpose = share.record.purpose.as_deref().unwrap_or_default();
    assert!(purpose.contains("acute risk"), "the justification is not in the audit record: {purpose}");
    assert!(queue[0].reviews.is_empty());

    // Only a share can be reviewed, with a note, by a privacy officer, in its scope.
    let send = officer
        .audit_query(AuditFilter { case: Some(case), action: Some(AuditAction::Handover), ..Default::default() })
        .await?;
    let on_consent = send.iter().find(|e| e.record.legal_basis.as_deref() == Some("consent")).expect("the offer");
    let refused = officer.mark_reviewed(on_consent.seq, "fine").await;
    assert!(matches!(&refused, Err(ketenhub_sdk::Error::Hub(e)) if e.code == wire::ErrorCode::Invalid), "{refused:?}");
    let empty = officer.mark_reviewed(share.seq, "  ").await;
    assert!(matches!(&empty, Err(ketenhub_sdk::Error::Hub(e)) if e.code == wire::ErrorCode::Invalid), "{empty:?}");
    assert_eq!(tests::refusal_rule(vt.mark_reviewed(share.seq, "mine").await), "role-forbids");
    let stranger = hub.client("lt-oudewater-privacy").discard_events().connect().await?;
    assert_eq!(tests::refusal_rule(stranger.mark_reviewed(share.seq, "seen").await), "audit-outside-scope");
    assert_eq!(tests::refusal_rule(stranger.mark_reviewed(u64::MAX / 2, "seen").await), "audit-outside-scope");

    assert_eq!(officer.mark_reviewed(share.seq, "justified: the safety assessment").await?, other);
    let queue = queue_now().await?;
    assert_eq!(queue[0].reviews.len(), 1, "{queue:?}");
    let review = &queue[0].reviews[0].record;
    assert_eq!(review.action, AuditAction::Review);
    assert_eq!(review.case, Some(other), "the review is filed on the shared case");
    assert_eq!(review.purpose.as_deref(), Some("justified: the safety assessment"));
    assert_eq!(review.actor.as_ref().map(|a| a.worker.as_str()), Some("fenna.jansen"));
    // The action filter finds it, beside the refused and failed attempts, which are logged too.
    let reviews = officer.audit_query(AuditFilter { action: Some(AuditAction::Review), ..Default::default() }).await?;
    assert!(reviews.iter().all(|e| e.record.action == AuditAction::Review), "{reviews:?}");
    let allowed: Vec<_> = reviews.iter().filter(|e| e.record.outcome == wire::audit::AuditOutcome::Allowed).collect();
    assert_eq!(allowed.len(), 1, "{reviews:?}");
    assert!(reviews.len() >= 4, "the refusals of VT's own people are in its scope: {reviews:?}");
    hub.stop().await
}
