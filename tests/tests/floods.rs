//! Floods before the handshake: half-open connections from one address do not
//! lock anyone else out, and a flood of bad certificates does not flood the
//! audit log through the hub's single writer.

use std::time::Duration;

use hub::config::Limits;
use ketenhub_sdk::AuditAction;
use tests::DevHub;

#[tokio::test]
async fn half_open_connections_from_one_address_lock_nobody_out() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let limits =
        Limits { max_connections: 8, max_handshakes_per_address: 4, handshake_timeout_ms: 30_000, ..Limits::default() };
    let hub = DevHub::start(dir.path(), limits).await?;
    // 32 connections from 127.0.0.3 that never start TLS.
    let mut idle = Vec::new();
    for _ in 0..32 {
        let socket = tokio::net::TcpSocket::new_v4()?;
        socket.bind("127.0.0.3:0".parse()?)?;
        idle.push(socket.connect(hub.addr()).await?);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    // Someone else, from another address, still gets in.
    let vt =
        hub.client("vt-utrecht-caseworker").discard_events().connect_timeout(Duration::from_secs(5)).connect().await?;
    vt.create_thread().await?;
    drop(idle);
    hub.stop().await
}

#[tokio::test]
async fn a_flood_of_bad_certificates_is_audited_in_aggregate() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let limits = Limits { refused_handshake_audit_ms: 300, ..Limits::default() };
    let hub = DevHub::start(dir.path(), limits).await?;
    let intruder = || {
        ketenhub_sdk::Client::builder()
            .url(hub.url())
            .ca_file(hub.pki_dir().join("ca.crt"))
            .identity_files(hub.pki_dir().join("intruder.crt"), hub.pki_dir().join("intruder.key"))
    };
    for _ in 0..40 {
        assert!(intruder().connect().await.is_err());
    }
    tokio::time::sleep(Duration::from_millis(900)).await;

    let mut refusals = Vec::new();
    hub::audit::scan(hub.store().as_ref(), |e| {
        if e.record.action == AuditAction::HandshakeRefused {
            refusals.push(e.record.rule.clone());
        }
        true
    })?;
    assert!(refusals.len() <= 4, "{} entries for one flood: {refusals:?}", refusals.len());
    // The first refusal of each interval has an entry of its own; the interval's
    // summary counts the rest. A slow machine may see the flood span two intervals.
    let alone = refusals.iter().filter(|r| !r.contains("; ")).count() as u64;
    let counted: u64 =
        refusals.iter().filter_map(|r| r.split("; ").nth(1)?.split_whitespace().next()?.parse::<u64>().ok()).sum();
    assert_eq!(alone + counted, 40, "every refusal is accounted for: {refusals:?}");
    hub.stop().await
}
