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
    // Its own log shows both attempts as denied, not as failures of the hub.
    let attempts =
        stranger.audit_query(AuditFilter { action: Some(AuditAction::Review), ..Default::default() }).await?;
    let outcomes: Vec<_> = attempts.iter().map(|e| e.record.outcome).collect();
    assert_eq!(outcomes, [wire::audit::AuditOutcome::Denied; 2], "{attempts:?}");

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

#[tokio::test]
async fn an_offer_that_failed_shared_nothing_and_a_queue_longer_than_one_answer_is_read_to_its_end(
) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    // Small answers, so that a handful of entries already spans several pages.
    let limits = hub::config::Limits { max_audit_query_entries: 3, ..tests::limits() };
    let hub = DevHub::start(dir.path(), limits).await?;
    let vt = hub.client("vt-utrecht-caseworker").discard_events().connect().await?;
    let officer = hub.client("vt-utrecht-privacy").discard_events().connect().await?;
    let case = vt.create_thread().await?;
    vt.offer_handover(case, safety_referral()).await?;
    // Offering again while the offer is open passes the policy, is recorded as allowed, then fails
    // in the case's state: a flood of such attempts must not flood the officer's queue.
    for _ in 0..8 {
        let again = vt.offer_handover(case, safety_referral()).await;
        assert!(matches!(&again, Err(ketenhub_sdk::Error::Hub(e)) if e.code == wire::ErrorCode::Conflict), "{again:?}");
    }
    let later = vt.create_thread().await?;
    vt.offer_handover(later, safety_referral()).await?;

    let filter = AuditFilter { action: Some(AuditAction::Handover), ..Default::default() };
    let page = officer.audit_page(filter.clone()).await?;
    assert!(page.truncated && page.entries.len() == 3, "one answer holds three entries: {page:?}");
    let next =
        officer.audit_page(AuditFilter { after_seq: page.entries.last().map(|e| e.seq), ..filter.clone() }).await?;
    assert!(next.entries.first().is_some_and(|e| e.seq > page.entries[2].seq), "the next page reads on: {next:?}");

    let entries = officer.audit_query(filter).await?;
    assert!(entries.len() >= 18, "every attempt and its failure, across pages: {}", entries.len());
    let queue = review_queue(&entries, &officer.identity().oin, |basis| basis == "vt-safety");
    let cases: Vec<_> = queue.iter().map(|item| item.share.record.case).collect();
    assert_eq!(cases, [Some(case), Some(later)], "only the offers that took effect: {queue:?}");

    // The hub, too, refuses to have a failed attempt reviewed.
    let attempt = entries
        .iter()
        .find(|e| e.record.outcome == wire::audit::AuditOutcome::Allowed && e.seq > queue[0].share.seq)
        .expect("an allowed-then-failed attempt");
    assert_eq!(attempt.record.case, Some(case));
    let refused = officer.mark_reviewed(attempt.seq, "nothing to see").await;
    assert!(matches!(&refused, Err(ketenhub_sdk::Error::Hub(e)) if e.code == wire::ErrorCode::Invalid), "{refused:?}");
    officer.mark_reviewed(queue[0].share.seq, "justified").await?;
    hub.stop().await
}

#[tokio::test]
async fn a_members_steady_reads_do_not_keep_the_officers_report_from_ending() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let limits = hub::config::Limits { max_audit_query_entries: 2, ..tests::limits() };
    let hub = DevHub::start(dir.path(), limits).await?;
    let vt = hub.client("vt-utrecht-caseworker").discard_events().connect().await?;
    let officer = hub.client("vt-utrecht-privacy").discard_events().connect().await?;
    let case = vt.create_thread().await?;
    for _ in 0..4 {
        vt.members(case).await?;
    }
    // While the officer reads, the member keeps reading the case: each read is a new entry about it.
    let reader = vt.clone();
    let reads = tokio::spawn(async move {
        loop {
            if reader.members(case).await.is_err() {
                return;
            }
        }
    });
    let filter = AuditFilter { case: Some(case), ..Default::default() };
    let read = tokio::time::timeout(std::time::Duration::from_secs(20), officer.audit_query(filter)).await;
    reads.abort();
    let entries = read.map_err(|_| anyhow::anyhow!("the officer's query never ended"))??;
    assert!(entries.len() >= 5, "the case's entries up to the first answer's head: {}", entries.len());
    assert!(entries.windows(2).all(|w| w[0].seq < w[1].seq));
    hub.stop().await
}
