//! The SDK examples run against a real hub, and `hub demo` tells its story and
//! exits 0: what the README promises a newcomer.

use std::process::Command;
use std::time::Duration;

use tests::DevHub;

#[path = "../../client-sdk/examples/exchange.rs"]
mod exchange;
#[path = "../../client-sdk/examples/inbox.rs"]
mod inbox;

#[tokio::test]
async fn the_sdk_examples_run_against_a_hub() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let hub = DevHub::start(dir.path(), tests::limits()).await?;
    let received = exchange::run(&hub.url(), hub.pki_dir()).await?;
    assert_eq!(received.len(), 2);
    assert!(received[0].contains("warme overdracht"));
    // A fresh device of VT (a new state, so a new device to the hub) starts at the
    // thread's last entry: MLS gives a new device no history, so the hub sends it
    // none, though VT's earlier device never acknowledged anything.
    let seen = inbox::run(&hub.url(), hub.pki_dir(), "vt-utrecht-caseworker", Duration::from_millis(500)).await?;
    assert_eq!(seen, 0);
    hub.stop().await
}

#[test]
fn the_demo_runs_and_exits_zero() -> anyhow::Result<()> {
    let output = tests::output_within(Command::new(env!("CARGO_BIN_EXE_ketenhub-hub")).arg("demo"), tests::RUN_LIMIT)?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "demo failed:\n{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    assert!(stdout.contains("listening on"), "{stdout}");
    assert!(stdout.contains("refused"), "the demo shows an outsider being refused:\n{stdout}");
    assert!(stdout.contains("Uw contactpersoon is Sanne Bakker"), "the demo prints the family's summary:\n{stdout}");
    let figures = stdout.find("prints the chain figures").expect("the demo prints the chain figures");
    let verified = stdout.find("chain verified").expect("the demo verifies the audit chain");
    assert!(figures < verified, "the figures come just before the audit verification");
    let shown = &stdout[figures..verified];
    assert!(shown.contains(" suppressed]") && shown.contains("n="), "some cells shown, some suppressed:\n{shown}");
    assert!(!shown.contains("anna.devries") && !shown.contains("00000001800000000001"), "no worker or OIN:\n{shown}");
    Ok(())
}
