//! Chain figures through a real hub: a privacy officer gets them over its own organisation's cases only,
//! nobody else gets them, and `hub report chain` gives the whole chain's from the stopped hub's data,
//! run as a real process.

use std::process::Command;

use ketenhub_sdk::packet::Date;
use ketenhub_sdk::{ChainReport, Client, ClockKind, FamilyTold, OfferRequest};
use tests::{refusal_rule, DevHub};

const DAY_MS: u64 = 24 * 3_600_000;
const HUB: &str = env!("CARGO_BIN_EXE_ketenhub-hub");

fn offer(to: &Client, route: &str, basis: &str) -> OfferRequest {
    OfferRequest {
        to: to.identity().oin.clone(),
        to_worker: Some(to.identity().worker.clone()),
        route: route.into(),
        legal_basis: basis.into(),
        reason: "the case needs the next organisation".into(),
        justification: (basis != "consent").then(|| "the court ordered a measure".to_owned()),
        deadline_ms: hub::clock::now_ms() + 2 * DAY_MS,
    }
}

/// A case `from` creates and hands to `to`, who accepts and completes it.
async fn handed(from: &Client, to: &Client, route: &str, basis: &str) -> anyhow::Result<wire::ThreadId> {
    let thread = from.create_thread().await?;
    let id = from.offer_handover(thread, offer(to, route, basis)).await?.offers[0].id;
    to.accept_offer(thread, id).await?;
    to.complete_handover(thread, id, FamilyTold::Yes).await?;
    Ok(thread)
}

fn all<'a>(report: &'a ChainReport, figure: &str) -> &'a wire::figures::Cell {
    let figure = report.figures.iter().find(|f| f.code == figure).expect("the figure");
    &figure.cells[0]
}

#[tokio::test]
async fn an_officer_sees_its_own_cases_figures_and_the_command_the_whole_chain() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let limits = hub::config::Limits { min_figure_count: 1, ..tests::limits() };
    let hub = DevHub::start(dir.path(), limits).await?;
    let connect = |slug: &'static str| hub.client(slug).discard_events().connect();
    let (vt, lt, rvdk, gi) = (
        connect("vt-utrecht-caseworker").await?,
        connect("lt-woerden-caseworker").await?,
        connect("rvdk-caseworker").await?,
        connect("gi-save-caseworker").await?,
    );
    for _ in 0..3 {
        handed(&vt, &lt, "vt-lt-referral", "consent").await?;
    }
    // Two measures VT's people were never on: outside the VT officer's scope.
    for _ in 0..2 {
        let case = handed(&rvdk, &gi, "rvdk-gi-measure", "ots-measure").await?;
        gi.report_done(case, ClockKind::FirstContact).await?;
    }
    let today = Date::from_unix_ms(hub::clock::now_ms());
    let (since, until) = (today.add_days(-1), today.add_days(2));

    let officer = connect("vt-utrecht-privacy").await?;
    let mine = officer.chain_figures(since, until).await?;
    let answered = all(&mine, "offer_answered");
    assert_eq!((answered.count, answered.values.as_slice()), (Some(3), &[3.0, 0.0, 0.0, 0.0, 0.0][..]));
    assert!(all(&mine, "first_contact").suppressed(), "the GI's cases are not VT's: no observation at all");
    assert_eq!(refusal_rule(vt.chain_figures(since, until).await), "role-forbids");
    assert_eq!(refusal_rule(gi.chain_figures(since, until).await), "role-forbids");
    let backwards = officer.chain_figures(until, since).await;
    assert!(matches!(backwards, Err(ketenhub_sdk::Error::Hub(e)) if e.code == wire::ErrorCode::Invalid));
    let queries = officer
        .audit_query(wire::audit::AuditFilter {
            action: Some(wire::audit::AuditAction::AuditQuery),
            ..Default::default()
        })
        .await?;
    assert!(
        queries.iter().any(|e| e.record.object.as_deref().is_some_and(|o| o.starts_with("chain figures "))),
        "the officer's request is audited"
    );
    for client in [vt, lt, rvdk, gi, officer] {
        client.close().await;
    }
    let data = hub.data_dir().to_owned();
    hub.stop().await?;

    let report = |extra: &[&str]| -> anyhow::Result<std::process::Output> {
        let mut command = Command::new(HUB);
        command.args(["report", "chain", "--data"]).arg(&data).arg("--policy").arg(dir.path().join("policy.toml"));
        command.args(["--since", &since.to_string(), "--until", &until.to_string()]).args(extra);
        tests::output_within(&mut command, tests::RUN_LIMIT)
    };
    let json = report(&["--format", "json", "--min-count", "1"])?;
    assert!(json.status.success(), "{}", String::from_utf8_lossy(&json.stderr));
    let chain: ChainReport = serde_json::from_slice(&json.stdout)?;
    assert_eq!(all(&chain, "offer_answered").count, Some(5), "the command counts every case");
    let contact = all(&chain, "first_contact");
    assert_eq!((contact.count, contact.values.as_slice()), (Some(2), &[2.0, 0.0, 0.0, 0.0][..]));
    let text = String::from_utf8(json.stdout)?;
    for secret in ["anna.devries", "sanne.bakker", "00000001800000000001"] {
        assert!(!text.contains(secret), "{secret} in the report");
    }

    // The default minimum of 10 suppresses every cell of so small a history.
    let csv = report(&["--format", "csv"])?;
    assert!(csv.status.success());
    let csv = String::from_utf8(csv.stdout)?;
    assert!(csv.lines().skip(1).all(|l| l.contains(",suppressed,")), "{csv}");
    let markdown = String::from_utf8(report(&[])?.stdout)?;
    assert!(markdown.contains("| all | all | < 10 |"), "{markdown}");

    let empty = tempfile::tempdir()?;
    let refused = tests::output_within(
        Command::new(HUB)
            .args(["report", "chain", "--since", "2026-01-01", "--policy"])
            .arg(dir.path().join("policy.toml"))
            .arg("--data")
            .arg(empty.path()),
        tests::RUN_LIMIT,
    )?;
    assert_eq!(refused.status.code(), Some(2), "a directory without a hub store is refused");
    assert!(std::fs::read_dir(empty.path())?.next().is_none(), "and nothing is created in it");
    Ok(())
}

#[tokio::test]
async fn an_officer_whose_organisation_has_too_many_cases_is_sent_to_the_operator() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let limits = hub::config::Limits { max_figure_cases: 2, ..tests::limits() };
    let hub = DevHub::start(dir.path(), limits).await?;
    let vt = hub.client("vt-utrecht-caseworker").discard_events().connect().await?;
    let officer = hub.client("vt-utrecht-privacy").discard_events().connect().await?;
    let today = Date::from_unix_ms(hub::clock::now_ms());
    officer.chain_figures(today, today.add_days(1)).await?;
    for _ in 0..3 {
        vt.create_thread().await?;
    }
    match officer.chain_figures(today, today.add_days(1)).await {
        Err(ketenhub_sdk::Error::Hub(e)) => {
            assert_eq!(e.code, wire::ErrorCode::LimitExceeded, "{e:?}");
            assert!(e.message.contains("hub report chain"), "{}", e.message);
        }
        other => anyhow::bail!("three cases are over a limit of two: {other:?}"),
    }
    vt.close().await;
    officer.close().await;
    hub.stop().await
}
