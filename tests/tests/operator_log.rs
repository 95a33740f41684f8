//! What the hub's log shows an operator at its default level. Admitted
//! connections are debug lines (the audit log records each one), while a
//! client the hub cuts off for its frames is a warning naming who it was.
//! These tests run `hub serve` as a real process and read its log.

use std::time::Duration;

use ketenhub_sdk::raw::RawIncoming;
use tests::HubProcess;

fn hub(dir: &std::path::Path) -> anyhow::Result<HubProcess> {
    HubProcess::start(env!("CARGO_BIN_EXE_ketenhub-hub").as_ref(), dir, "127.0.0.1:0", "")
}

/// Waits until a line of the hub's log holds every one of `needles`.
async fn logged(hub: &HubProcess, needles: &[&str]) -> anyhow::Result<String> {
    for _ in 0..100 {
        if let Some(line) = hub.log().lines().find(|l| needles.iter().all(|n| l.contains(n))) {
            return Ok(line.to_owned());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    anyhow::bail!("no line with {needles:?} in the hub log:\n{}", hub.log())
}

#[tokio::test]
async fn a_client_cut_off_for_malformed_frames_is_a_warning_with_its_identity() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut hub = hub(dir.path())?;
    let mut raw = hub.client("vt-utrecht-caseworker").connect_timeout(Duration::from_secs(5)).connect_raw().await?;
    for _ in 0..tests::limits().max_protocol_errors {
        raw.send_bytes(vec![0xff]).await?;
    }
    let closed = loop {
        match tokio::time::timeout(Duration::from_secs(10), raw.next()).await?? {
            RawIncoming::Closed { code, .. } => break code,
            RawIncoming::Frame(_) => {}
            other => anyhow::bail!("unexpected {other:?}"),
        }
    };
    assert_eq!(closed, 1008);
    let line = logged(&hub, &["WARN", "closing connection", "too many malformed frames"]).await?;
    // The sample identity "vt-utrecht-caseworker" is the worker anna.devries.
    assert!(
        line.contains("anna.devries") && line.contains("peer="),
        "the warning does not name whom and where: {line}"
    );
    assert!(hub.terminate()?.success());
    Ok(())
}

#[tokio::test]
async fn an_admitted_connection_is_no_line_at_the_default_level() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut hub = hub(dir.path())?;
    let mut raw = hub.client("vt-utrecht-caseworker").connect_timeout(Duration::from_secs(5)).connect_raw().await?;
    tests::raw_reply(&mut raw, wire::Request::ListThreads).await?.map_err(|e| anyhow::anyhow!("{e:?}"))?;
    drop(raw);
    assert!(hub.terminate()?.success());
    let log = hub.log();
    assert!(log.contains("shut down cleanly"), "{log}");
    assert!(!log.contains(": connected ") && !log.contains(": disconnected "), "per-connection lines at info:\n{log}");
    Ok(())
}
