//! History shared on purpose: MLS gives a member who joins later nothing of
//! what went before, so the sender's device re-shares chosen earlier messages
//! as one end-to-end encrypted history share. The hub audits which entries
//! were disclosed to whom, never their content.

use std::time::Duration;

use ketenhub_sdk::{AuditFilter, Content, Event, Grounds, SharedItem};
use tests::{messages, next_event, refusal_rule, DevHub};

const WAIT: Duration = Duration::from_secs(20);

#[tokio::test]
async fn earlier_messages_are_shared_on_purpose_with_a_member_who_joined_later_and_the_disclosure_is_audited(
) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let hub = DevHub::start(dir.path(), tests::limits()).await?;
    let vt = hub.client("vt-utrecht-caseworker").connect().await?;
    let mut vt_events = vt.events().expect("events");
    let bram = hub.client("vt-utrecht-colleague").discard_events().connect().await?;
    let lt = hub.client("lt-woerden-caseworker").connect().await?;
    let mut lt_events = lt.events().expect("events");
    let thread = vt.create_thread().await?;
    vt.add_member(thread, bram.member_id(), &Grounds::new("tweede werker", "consent")).await?;
    let texts = ["Melding ontvangen van de school.", "Huisbezoek gepland.", "Moeder wil hulp thuis."];
    for text in texts {
        vt.send_text(thread, text).await?;
    }
    // Bram is on the case from before the messages: a share discloses nothing new to him.
    let own = messages(&mut vt_events, 3, WAIT).await?;
    vt.add_member(thread, lt.member_id(), &Grounds::new("support at home", "consent")).await?;

    let chosen = vec![SharedItem::of(&own[2]), SharedItem::of(&own[0])];
    let (sent, recipients) = vt.share_history(thread, chosen).await?;
    assert_eq!(recipients, vec![lt.member_id()], "only the member who joined later receives something new");
    let shared = next_event(&mut lt_events, WAIT, |e| matches!(e, Event::Message(m) if m.id == sent.id)).await?;
    let Event::Message(message) = shared else { unreachable!() };
    let Content::HistoryShare(share) = message.content else { panic!("not a history share: {message:?}") };
    let got: Vec<(u64, &[u8])> = share.items.iter().map(|i| (i.seq, i.content.as_bytes())).collect();
    assert_eq!(got, vec![(own[0].seq, texts[0].as_bytes()), (own[2].seq, texts[2].as_bytes())], "in original order");
    assert_eq!(share.items[0].id, own[0].id, "with the original ids");
    assert_eq!(message.sender, vt.member_id(), "marked as shared by whom");

    // Nothing to share, an entry that does not exist, or someone off the case: refused.
    assert!(matches!(vt.share_history(thread, Vec::new()).await, Err(ketenhub_sdk::Error::Invalid(_))));
    let mut beyond = SharedItem::of(&own[0]);
    beyond.seq = 1_000;
    assert_eq!(refusal_rule(vt.share_history(thread, vec![beyond]).await), "Invalid");
    let outsider = hub.client("lt-oudewater-caseworker").discard_events().connect().await?;
    assert_eq!(refusal_rule(outsider.share_history(thread, vec![SharedItem::of(&own[0])]).await), "NotFound");

    let officer = hub.client("vt-utrecht-privacy").discard_events().connect().await?;
    let log = officer.audit_query(AuditFilter { case: Some(thread), ..AuditFilter::default() }).await?;
    let disclosure = log
        .iter()
        .find(|e| {
            e.record.action == wire::audit::AuditAction::ShareHistory
                && e.record.outcome == wire::audit::AuditOutcome::Allowed
        })
        .expect("the disclosure is audited");
    let object = disclosure.record.object.as_deref().unwrap_or_default();
    assert!(object.contains("of 2 earlier entries") && object.contains(&lt.member_id().to_string()), "{object}");
    assert!(!object.contains(texts[0]), "the hub records no content");
    let report = officer.access_report(thread).await?;
    assert!(report.contains("shared earlier messages"), "the access report shows the share:\n{report}");
    hub.stop().await
}
