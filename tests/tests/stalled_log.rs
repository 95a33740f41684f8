//! A hub whose stderr nobody reads keeps serving: logging never blocks the
//! async workers. A real `hub serve` process writes its log into a pipe that
//! the test holds open without reading (the pipe fills after a few hundred
//! lines), is sent hundreds of connections and requests, and must answer
//! every one; once the test starts reading, the hub's shutdown line says how
//! many log lines it dropped.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::Duration;

use tests::HubProcess;

const HUB: &str = env!("CARGO_BIN_EXE_ketenhub-hub");

/// At debug level each connection logs two lines ("connected",
/// "disconnected") of some 250 bytes, so 400 connections write far more than a
/// pipe holds (64 KiB).
const CONNECTIONS: usize = 400;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hub_serves_on_while_nobody_reads_its_stderr() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut command = Command::new(HUB);
    // A small log buffer, so that the lines the pipe cannot take are dropped
    // (and counted) within this test's few hundred connections.
    command.env("HUB_LOG_BUFFER_LINES", "64");
    // The connection lines are debug lines (info would leave the pipe empty).
    command.env("RUST_LOG", "info,hub=debug");
    let mut hub = HubProcess::spawn_with_stderr(command, dir.path(), "127.0.0.1:0", "", Stdio::piped())?;
    // Held open and not read: the hub's writes to it block once it is full.
    let mut stderr = hub.take_stderr().expect("stderr is a pipe");

    for i in 0..CONNECTIONS {
        let round = async {
            let mut raw = hub
                .client("vt-utrecht-caseworker")
                .connect_timeout(Duration::from_secs(5))
                .key_package_stock(0)
                .connect_raw()
                .await?;
            tests::raw_reply(&mut raw, wire::Request::ListThreads).await?.map_err(|e| anyhow::anyhow!("{e:?}"))?;
            anyhow::Ok(())
        };
        tokio::time::timeout(Duration::from_secs(10), round)
            .await
            .map_err(|_| anyhow::anyhow!("connection {i} got no answer: the hub stalled on its log"))??;
    }

    // Now read the pipe, so the shutdown lines can get out.
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let status = hub.terminate()?;
    assert!(status.success(), "the hub did not shut down cleanly: {status}");
    let log = reader.join().expect("the reader thread");
    let dropped = log
        .lines()
        .find_map(|line| line.split("log lines dropped: ").nth(1))
        .unwrap_or_else(|| panic!("no dropped-lines count at shutdown in:\n{log}"));
    let dropped: u64 = dropped.trim().trim_matches('"').parse()?;
    assert!(dropped > 0, "the pipe was full, so lines must have been dropped:\n{log}");
    Ok(())
}
