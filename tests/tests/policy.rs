//! The need-to-know policy through a real hub: every denial names its rule,
//! system identities act only for their own workers, and the policy reloads on
//! SIGHUP while a bad file leaves the one in force.

use std::time::Duration;

use certs::dev::{DevPki, ExtraClient, SampleOrg};
use ketenhub_sdk::{AgencyKind, Client, Error, ErrorCode, Grounds, MemberId, Role};
use tests::{refusal_rule, DevHub, HubProcess};
use wire::audit::{AuditAction, AuditOutcome};
use wire::Request;

const WAIT: Duration = Duration::from_secs(20);

#[tokio::test]
async fn every_denial_names_its_rule() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    // One organisation the policy does not know.
    let stranger = SampleOrg { oin: "00000009999999999999", name: "Onbekende stichting", kind: AgencyKind::LT };
    let extra = ExtraClient { slug: "stranger".into(), org: stranger, worker: "s.one".into(), role: Role::Caseworker };
    DevPki::generate_with(&[extra])?.write_to(&dir.path().join("pki"))?;
    let hub = DevHub::start(dir.path(), tests::limits()).await?;
    let vt = hub.client("vt-utrecht-caseworker").discard_events().connect().await?;
    let lt = hub.client("lt-woerden-caseworker").discard_events().connect().await?;
    let gi = hub.client("gi-save-caseworker").discard_events().connect().await?;
    let thread = vt.create_thread().await?;
    let grounds = |basis: &str| Grounds::new("referral after a report", basis);

    // Roles: a privacy officer opens no cases.
    let officer = hub.client("vt-utrecht-privacy").discard_events().connect().await?;
    assert_eq!(refusal_rule(officer.create_thread().await), "role-forbids");
    // Organisations outside the policy do nothing.
    // Organisations outside the policy are not even let in.
    assert_eq!(refusal_rule(hub.client("stranger").discard_events().connect().await), "unknown-organisation");

    // Adding someone needs a reason, a route between the kinds, and a basis on that route.
    assert_eq!(
        refusal_rule(vt.add_member(thread, lt.member_id(), &Grounds::new(" ", "consent")).await),
        "add-needs-reason"
    );
    assert_eq!(refusal_rule(vt.add_member(thread, gi.member_id(), &grounds("consent")).await), "no-route");
    assert_eq!(
        refusal_rule(vt.add_member(thread, lt.member_id(), &grounds("ots-measure")).await),
        "basis-not-on-route"
    );
    assert_eq!(refusal_rule(vt.add_member(thread, lt.member_id(), &grounds("made-up")).await), "unknown-legal-basis");
    let unknown_member = MemberId::new("00000009999999999999", "s.one")?;
    assert_eq!(
        refusal_rule(vt.add_member(thread, unknown_member, &grounds("consent")).await),
        "member-unknown-organisation"
    );
    assert!(!vt.members(thread).await?.contains(&lt.member_id()), "a refused add changed nothing");
    vt.add_member(thread, lt.member_id(), &grounds("consent")).await?;

    // A caller outside the case learns nothing: its answers for this case and a
    // case that does not exist are identical, and carry no rule.
    let mut raw_gi = hub.client("gi-save-caseworker").connect_raw().await?;
    let on_real = tests::raw_reply(&mut raw_gi, Request::ListMembers { thread }).await?;
    let on_unknown = tests::raw_reply(&mut raw_gi, Request::ListMembers { thread: wire::ThreadId::random() }).await?;
    assert_eq!(on_real, on_unknown);
    assert_eq!(on_real.err().map(|e| e.code), Some(ErrorCode::NotFound));

    // Only a system identity may act for someone else.
    let mut raw_lt = hub.client("lt-woerden-caseworker").connect_raw().await?;
    let for_colleague = Request::OnBehalfOf {
        member: MemberId::new("00000001800000000002", "colleague")?,
        request: Box::new(Request::ListThreads),
    };
    let refusal = tests::raw_reply(&mut raw_lt, for_colleague).await?.err().map(|e| e.message).unwrap_or_default();
    assert!(refusal.contains("on-behalf-only-for-system"), "{refusal}");
    hub.stop().await
}

#[tokio::test]
async fn a_system_acts_only_for_its_own_workers_and_must_name_them() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let hub = DevHub::start(dir.path(), tests::limits()).await?;
    let system = hub.client("vt-utrecht-system").discard_events().connect().await?;
    let lt = hub.client("lt-woerden-caseworker").discard_events().connect().await?;
    assert_eq!(refusal_rule(system.create_thread().await), "system-names-worker");

    // For a VT worker: allowed, with that worker's access. (MLS content stays
    // with the worker's own device; the system reads the case's metadata.)
    let own_device = hub.client("vt-utrecht-caseworker").discard_events().connect().await?;
    let thread = own_device.create_thread().await?;
    let anna: Client = system.on_behalf_of("anna.devries");
    let anna_id = MemberId::new("00000001800000000001", "anna.devries")?;
    let threads = anna.threads().await?;
    assert!(threads.iter().any(|t| t.thread == thread), "the system sees anna's case for her");
    assert_eq!(anna.members(thread).await?, vec![anna_id.clone()]);
    assert!(system.threads().await.is_err(), "without naming a worker the system sees nothing");

    // For a worker of another organisation: refused, whatever the request.
    let mut raw = hub.client("vt-utrecht-system").connect_raw().await?;
    let for_lt_worker = Request::OnBehalfOf { member: lt.member_id(), request: Box::new(Request::ListThreads) };
    let refusal = tests::raw_reply(&mut raw, for_lt_worker).await?.err().map(|e| e.message).unwrap_or_default();
    assert!(refusal.contains("system-own-organisation"), "{refusal}");
    let add_for_lt = Request::OnBehalfOf {
        member: lt.member_id(),
        request: Box::new(Request::AddMember {
            thread,
            member: lt.member_id(),
            reason: "referral".into(),
            legal_basis: "consent".into(),
        }),
    };
    let refusal = tests::raw_reply(&mut raw, add_for_lt).await?.err().map(|e| e.code);
    assert_eq!(refusal, Some(ErrorCode::Forbidden));
    assert_eq!(anna.members(thread).await?, vec![anna_id]);
    hub.stop().await
}

/// The example policy without the VT-to-LT route.
fn without_vt_lt_route(policy: &str) -> String {
    policy.replace(
        "name = \"vt-lt-referral\"\nfrom = \"VT\"\nto = \"LT\"",
        "name = \"vt-lt-referral\"\nfrom = \"VT\"\nto = \"VT\"",
    )
}

#[tokio::test]
async fn the_policy_reloads_on_sighup_and_a_bad_file_changes_nothing() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let binary = env!("CARGO_BIN_EXE_ketenhub-hub");
    let hub = HubProcess::start(binary.as_ref(), dir.path(), "127.0.0.1:0", "")?;
    let policy_file = dir.path().join("policy.toml");
    let original = std::fs::read_to_string(&policy_file)?;
    let vt = hub.client("vt-utrecht-caseworker").discard_events().connect().await?;
    let woerden = hub.client("lt-woerden-caseworker").discard_events().connect().await?;
    let oudewater = hub.client("lt-oudewater-caseworker").discard_events().connect().await?;
    let thread = vt.create_thread().await?;
    vt.add_member(thread, woerden.member_id(), &tests::consent()).await?;

    // The route from VT to LT is withdrawn.
    std::fs::write(&policy_file, without_vt_lt_route(&original))?;
    tests::sighup(hub.pid())?;
    let consent = tests::consent();
    tests::eventually(WAIT, || async {
        Ok(matches!(vt.add_member(thread, oudewater.member_id(), &consent).await,
            Err(Error::Hub(ref e)) if e.message.contains("no-route")))
    })
    .await?;

    // A broken file is refused; the stricter policy stays in force and the hub serves on.
    std::fs::write(&policy_file, "[retention]\ncontent_days = \"soon\"\n")?;
    tests::sighup(hub.pid())?;
    tests::eventually(WAIT, || async { Ok(hub.log().contains("policy reload refused")) }).await?;
    assert_eq!(refusal_rule(vt.add_member(thread, oudewater.member_id(), &consent).await), "no-route");
    vt.send_text(thread, "still serving").await?;

    // A hub does not start on a broken policy, and says why.
    let broken = tempfile::tempdir()?;
    std::fs::write(broken.path().join("policy.toml"), "[retention]\ncontent_days = 0\n")?;
    let refused = HubProcess::start(binary.as_ref(), broken.path(), "127.0.0.1:0", "");
    let message = format!("{:#}", refused.err().expect("the hub started on a broken policy"));
    assert!(message.contains("retention periods must be greater than zero"), "{message}");
    Ok(())
}

/// A kind of agency the example policy does not know, with a limited route from VT.
const POLICE: &str = r#"
[[kinds]]
code = "POLITIE"
name = "Politie"

[[organisations]]
oin = "00000001800000000007"
name = "Politie Midden-Nederland"
kind = "POLITIE"
region = "Midden-Nederland"

[[routes]]
name = "vt-police-question"
from = "VT"
to = "POLITIE"
limited = true
legal_bases = ["vt-safety"]
"#;

/// The kinds of agency are policy data: a kind only the policy file declares
/// connects and takes its route with no new hub. A certificate whose `OU`
/// names another kind than the policy gives its organisation is not let in,
/// and a reload that changes an organisation's kind ends its connections.
#[tokio::test]
async fn kinds_of_agency_are_policy_data_and_a_certificate_must_carry_its_own() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let police = SampleOrg { oin: "00000001800000000007", name: "Politie Midden-Nederland", kind: "POLITIE".parse()? };
    let posing = SampleOrg { kind: AgencyKind::LT, ..certs::dev::VT_UTRECHT };
    let extra = [
        ExtraClient { slug: "police".into(), org: police, worker: "agent.jansen".into(), role: Role::Caseworker },
        ExtraClient { slug: "posing".into(), org: posing, worker: "x.posing".into(), role: Role::Caseworker },
    ];
    DevPki::generate_with(&extra)?.write_to(&dir.path().join("pki"))?;
    let policy_file = dir.path().join("policy.toml");
    std::fs::write(&policy_file, format!("{}{POLICE}", hub::devhub::DEV_POLICY))?;
    let hub = DevHub::start(dir.path(), tests::limits()).await?;

    // VT's own OIN, under a certificate that says it is a local team.
    assert_eq!(refusal_rule(hub.client("posing").discard_events().connect().await), "kind-mismatch");

    let (anna, _) = tests::connect(&hub, "vt-utrecht-caseworker").await?;
    let (agent, mut agent_events) = tests::connect(&hub, "police").await?;
    let grounds = Grounds::new("navraag bij de politie over eerdere meldingen", "vt-safety");
    let case = anna.create_thread().await?;
    assert_eq!(refusal_rule(anna.add_member(case, agent.member_id(), &grounds).await), "limited-recipient");
    let side = anna.open_side_thread(case, "politie").await?;
    anna.add_member(side, agent.member_id(), &grounds).await?;
    anna.send_text(side, "Zijn er eerdere meldingen op dit adres?").await?;
    let got = tests::messages(&mut agent_events, 1, WAIT).await?;
    assert_eq!(got[0].content.as_bytes(), b"Zijn er eerdere meldingen op dit adres?");

    // The policy now calls the police OTHER: the open connection ends, and the certificate is not let in again.
    let renamed = std::fs::read_to_string(&policy_file)?.replace("kind = \"POLITIE\"", "kind = \"OTHER\"");
    std::fs::write(&policy_file, renamed)?;
    hub.hub().reload_policy().await;
    tests::next_event(&mut agent_events, WAIT, |e| matches!(e, ketenhub_sdk::Event::Disconnected { .. })).await?;
    assert_eq!(refusal_rule(hub.client("police").discard_events().connect().await), "kind-mismatch");
    // The agent's client tries once more, is refused by the policy, and then pauses for minutes rather
    // than redialling (and filling the audit log) every few seconds.
    let paused = |e: &ketenhub_sdk::Event| matches!(e, ketenhub_sdk::Event::Disconnected { reason } if reason.contains("refuses this identity"));
    tests::next_event(&mut agent_events, WAIT, paused).await?;
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;

    // Each refusal is audited with its rule: the posing certificate's one
    // attempt, and the police's closed connection, its one redial and the test's own attempt.
    let mut refused = std::collections::BTreeMap::<(String, String), usize>::new();
    hub::audit::scan(hub.store().as_ref(), |e| {
        let r = &e.record;
        if let (AuditAction::Connect, AuditOutcome::Denied, Some(actor)) = (r.action, r.outcome, &r.actor) {
            let rule = r.rule.split(':').next().unwrap_or_default().to_owned();
            *refused.entry((actor.worker.clone(), rule)).or_default() += 1;
        }
        true
    })?;
    let count = |worker: &str, rule: &str| refused.get(&(worker.to_owned(), rule.to_owned())).copied();
    assert_eq!(count("x.posing", "kind-mismatch"), Some(1), "{refused:?}");
    assert_eq!(count("agent.jansen", "policy-no-longer-admits"), Some(1), "{refused:?}");
    assert_eq!(count("agent.jansen", "kind-mismatch"), Some(2), "{refused:?}");
    hub.stop().await
}
