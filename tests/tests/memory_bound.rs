//! Memory is bounded in bytes, not frames: connections that ask for large
//! replies and never read them hold the hub's memory to its byte budgets.
//! The attack below took a hub from 26 MB to 4 GB resident when the outbound
//! queue was bounded only in frames.

use std::time::{Duration, Instant};

use ketenhub_sdk::raw::RawConnection;
use tests::HubProcess;
use wire::{BlobId, ClientFrame, Reply, Request};

const CHUNK: usize = 900_000;
const CHUNKS: u32 = 8;
/// The documented bound (docs/operations.md): well under 1 GB.
const BOUND_MIB: u64 = 512;

fn resident_mib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no VmRSS"))?;
    Ok(kib / 1024)
}

/// Asks for chunk after chunk without reading anything, for `for_how_long`.
async fn ask_and_never_read(mut raw: RawConnection, thread: wire::ThreadId, blob: BlobId, for_how_long: Duration) {
    let until = Instant::now() + for_how_long;
    for id in 0u64.. {
        let request = Request::GetBlobChunk { thread, blob, index: (id % u64::from(CHUNKS)) as u32 };
        let frame = ClientFrame::Request { id, request };
        let sent = tokio::time::timeout_at(until.into(), raw.send_frame(&frame));
        if !matches!(sent.await, Ok(Ok(()))) {
            break;
        }
    }
    tokio::time::sleep_until(until.into()).await;
    drop(raw);
}

#[tokio::test]
async fn replies_nobody_reads_hold_the_hub_to_its_byte_budget() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let hub = HubProcess::start(env!("CARGO_BIN_EXE_ketenhub-hub").as_ref(), dir.path(), "127.0.0.1:0", "")?;
    let vt = hub.client("vt-utrecht-caseworker").discard_events().connect().await?;
    let thread = vt.create_thread().await?;
    let mut uploader = hub.client("vt-utrecht-caseworker").connect_raw().await?;
    let blob = BlobId::random();
    for index in 0..CHUNKS {
        let put =
            Request::PutBlobChunk { thread, blob, index, last: index + 1 == CHUNKS, data: vec![index as u8; CHUNK] };
        let stored = tests::raw_reply(&mut uploader, put).await?;
        anyhow::ensure!(matches!(stored, Ok(Reply::BlobChunkStored { .. })), "{stored:?}");
    }
    let before = resident_mib(hub.pid())?;

    let mut attackers = Vec::new();
    for _ in 0..14 {
        let raw = hub.client("vt-utrecht-caseworker").connect_raw().await?;
        attackers.push(tokio::spawn(ask_and_never_read(raw, thread, blob, Duration::from_secs(6))));
    }
    let mut peak = before;
    let watch_until = Instant::now() + Duration::from_secs(6);
    while Instant::now() < watch_until {
        peak = peak.max(resident_mib(hub.pid())?);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for attacker in attackers {
        attacker.await?;
    }
    eprintln!("hub resident: {before} MiB before, {peak} MiB at the peak of the attack");
    assert!(peak < BOUND_MIB, "the hub grew to {peak} MiB (bound {BOUND_MIB} MiB)");
    // And it still serves.
    vt.send(thread, b"still here".to_vec()).await?;
    Ok(())
}
