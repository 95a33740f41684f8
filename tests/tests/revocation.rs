//! Revocation and expiry bite on live connections: a CRL published while the
//! hub runs (read on SIGHUP or on the reload interval) closes the open
//! connections it revokes and refuses their reconnects, resumed TLS sessions
//! included; a certificate that expires while connected is disconnected at
//! expiry; a stale CRL is refused unless configured; a garbled CRL changes
//! nothing. These tests run `hub serve` as a real process with real
//! certificate files, and dial with their own TLS client configuration so that
//! they can see (and require) that a reconnect resumed its TLS session.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use certs::dev::{DevPki, ExtraClient, VT_UTRECHT};
use certs::time::{Duration as Span, OffsetDateTime};
use futures_util::StreamExt;
use ketenhub_sdk::{Error, ErrorCode, Role};
use tests::HubProcess;
use tokio::net::TcpStream;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio_rustls::rustls::{self, ClientConfig, HandshakeKind, RootCertStore};
use tokio_rustls::TlsConnector;
use tokio_tungstenite::tungstenite::Message;
use wire::{HubFrame, WireError};

const WAIT: Duration = Duration::from_secs(30);

/// How long the short-lived certificate is valid: long enough to connect on a
/// busy machine, short enough to wait for.
const LIFETIME_SECONDS: i64 = 8;

fn binary() -> &'static Path {
    env!("CARGO_BIN_EXE_ketenhub-hub").as_ref()
}

/// A fresh dev PKI written to `dir/pki`, kept to sign new CRLs and certificates.
fn pki_in(dir: &Path) -> anyhow::Result<DevPki> {
    let pki = DevPki::generate()?;
    pki.write_to(&dir.join("pki"))?;
    Ok(pki)
}

/// Publishes `crl` where the hub reads its CRL.
fn publish_crl(dir: &Path, crl: &str) -> anyhow::Result<()> {
    Ok(std::fs::write(dir.join("pki/ca.crl"), crl)?)
}

fn in_thirty_days() -> OffsetDateTime {
    OffsetDateTime::now_utc() + Span::days(30)
}

type Ws = tokio_tungstenite::WebSocketStream<tokio_rustls::client::TlsStream<TcpStream>>;

/// How a dial ended.
enum Dialed {
    /// The hub said hello.
    Accepted(Box<Ws>),
    /// The hub refused with an error frame.
    Refused(WireError),
    /// The TLS or WebSocket handshake failed (a TLS alert, say).
    Failed(String),
}

impl std::fmt::Debug for Dialed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Accepted(_) => f.write_str("Accepted"),
            Self::Refused(e) => write!(f, "Refused({e:?})"),
            Self::Failed(e) => write!(f, "Failed({e})"),
        }
    }
}

/// One identity's TLS client with its own session cache: a second dial
/// resumes the session of the first.
struct Dialer {
    config: Arc<ClientConfig>,
    port: u16,
}

impl Dialer {
    fn new(pki: &Path, slug: &str, port: u16) -> anyhow::Result<Self> {
        let mut roots = RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(pki.join("ca.crt"))? {
            roots.add(cert?)?;
        }
        let chain = CertificateDer::pem_file_iter(pki.join(format!("{slug}.crt")))?.collect::<Result<Vec<_>, _>>()?;
        let key = PrivateKeyDer::from_pem_file(pki.join(format!("{slug}.key")))?;
        let config = ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)?;
        Ok(Self { config: Arc::new(config), port })
    }

    /// Dials once: whether TLS resumed a session, and how the hub answered.
    async fn dial(&self) -> anyhow::Result<(Option<HandshakeKind>, Dialed)> {
        let tcp = TcpStream::connect(("127.0.0.1", self.port)).await?;
        let tls = TlsConnector::from(self.config.clone()).connect(ServerName::try_from("localhost")?, tcp).await?;
        let kind = tls.get_ref().1.handshake_kind();
        let url = format!("wss://localhost:{}", self.port);
        let mut ws = match tokio_tungstenite::client_async(url, tls).await {
            Ok((ws, _)) => ws,
            Err(e) => return Ok((kind, Dialed::Failed(e.to_string()))),
        };
        let dialed = match tokio::time::timeout(WAIT, ws.next()).await? {
            Some(Ok(Message::Binary(bytes))) => match wire::decode::<HubFrame>(&bytes)? {
                HubFrame::Hello(_) => Dialed::Accepted(Box::new(ws)),
                HubFrame::Error { error } => Dialed::Refused(error),
                other => anyhow::bail!("expected hello, got {other:?}"),
            },
            other => Dialed::Failed(format!("{other:?}")),
        };
        Ok((kind, dialed))
    }

    /// Dials and requires the hub to accept.
    async fn connect(&self) -> anyhow::Result<Ws> {
        match self.dial().await? {
            (_, Dialed::Accepted(ws)) => Ok(*ws),
            (_, other) => anyhow::bail!("the hub did not accept: {other:?}"),
        }
    }

    /// Dials again, requires the TLS session to be resumed, and returns the
    /// hub's refusal.
    async fn resumed_refusal(&self) -> anyhow::Result<WireError> {
        match self.dial().await? {
            (Some(HandshakeKind::Resumed), Dialed::Refused(error)) => Ok(error),
            (kind, dialed) => anyhow::bail!("expected a resumed session, refused; got {kind:?}, {dialed:?}"),
        }
    }
}

/// Reads an open connection until the hub closes it: the error frame it sent
/// first (if any) and the close code.
async fn farewell(ws: &mut Ws) -> anyhow::Result<(Option<WireError>, Option<u16>)> {
    let mut error = None;
    let read = async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Binary(bytes))) => {
                    if let HubFrame::Error { error: e } = wire::decode::<HubFrame>(&bytes)? {
                        error = Some(e);
                    }
                }
                Some(Ok(Message::Close(frame))) => return Ok(frame.map(|f| u16::from(f.code))),
                Some(Ok(_)) => {}
                None | Some(Err(_)) => return anyhow::Ok(None),
            }
        }
    };
    let code = tokio::time::timeout(WAIT, read).await.map_err(|_| anyhow::anyhow!("the connection stayed open"))??;
    Ok((error, code))
}

/// Requires `error` to be the `forbidden` refusal of `rule`.
fn assert_denied(error: Option<&WireError>, rule: &str) {
    let error = error.unwrap_or_else(|| panic!("no error frame; expected rule {rule}"));
    assert_eq!(error.code, ErrorCode::Forbidden, "{error:?}");
    assert!(error.message.starts_with(&format!("denied by rule {rule}: ")), "{error:?}");
}

/// Waits until the hub's log has a line holding every one of `needles`.
async fn logged(hub: &HubProcess, needles: &[&str]) -> anyhow::Result<String> {
    let mut found = String::new();
    tests::eventually(WAIT, || {
        found = hub.log().lines().find(|l| needles.iter().all(|n| l.contains(n))).unwrap_or_default().to_owned();
        let seen = !found.is_empty();
        async move { Ok(seen) }
    })
    .await
    .map_err(|_| anyhow::anyhow!("no log line with {needles:?}:\n{}", hub.log()))?;
    Ok(found)
}

/// Stops the hub and returns its audit log as exported JSON Lines.
fn audit_log(hub: &mut HubProcess, dir: &Path) -> anyhow::Result<String> {
    anyhow::ensure!(hub.terminate()?.success(), "the hub did not stop cleanly:\n{}", hub.log());
    let out: PathBuf = dir.join("audit.jsonl");
    let status = std::process::Command::new(binary())
        .args(["audit", "export", "--data"])
        .arg(dir.join("data"))
        .arg("--out")
        .arg(&out)
        .status()?;
    anyhow::ensure!(status.success(), "hub audit export failed");
    Ok(std::fs::read_to_string(out)?)
}

/// A connection of `vt-utrecht-caseworker` is open; its certificate is revoked
/// in a new CRL, which `reload` makes the hub read. The live connection is
/// closed with the rule, a resumed reconnect and a full handshake are refused,
/// and other identities still connect. Returns the audit log.
async fn revocation_closes_the_live_connection(
    extra_config: &str,
    reload: impl FnOnce(&HubProcess) -> anyhow::Result<()>,
) -> anyhow::Result<String> {
    let dir = tempfile::tempdir()?;
    let pki = pki_in(dir.path())?;
    let mut hub = HubProcess::start(binary(), dir.path(), "127.0.0.1:0", extra_config)?;
    let slug = "vt-utrecht-caseworker";
    let dialer = Dialer::new(&dir.path().join("pki"), slug, hub.addr().port())?;
    let mut live = dialer.connect().await?;

    let cert = &pki.client(slug).expect("a sample identity").cert;
    publish_crl(dir.path(), &pki.revocation_list(&[cert, &pki.revoked.cert], in_thirty_days())?)?;
    reload(&hub)?;

    let (error, code) = farewell(&mut live).await?;
    assert_denied(error.as_ref(), "certificate-revoked");
    assert_eq!(code, Some(1008));
    assert_denied(Some(&dialer.resumed_refusal().await?), "certificate-revoked");
    logged(&hub, &["refused connection", "certificate-revoked"]).await?;
    let full = hub.client(slug).connect_timeout(WAIT).connect().await;
    assert!(matches!(full, Err(Error::Refused(_))), "a full handshake with the revoked certificate: {full:?}");
    let lt = hub.client("lt-woerden-caseworker").discard_events().connect().await?;
    lt.close().await;
    audit_log(&mut hub, dir.path())
}

#[tokio::test]
async fn a_certificate_revoked_while_connected_is_disconnected_on_sighup_and_refused_when_resuming(
) -> anyhow::Result<()> {
    let audit =
        revocation_closes_the_live_connection("[tls]\ncrl_reload_seconds = 0\n", |hub| tests::sighup(hub.pid()))
            .await?;
    assert!(audit.contains("crl-reloaded"), "the reload is audited");
    assert!(audit.contains("certificate-revoked: the connection is closed"), "the closing is audited");
    assert!(audit.contains("certificate-revoked: the client certificate"), "the resumed refusal is audited");
    Ok(())
}

#[tokio::test]
async fn a_certificate_revoked_while_connected_is_disconnected_by_the_interval_reload() -> anyhow::Result<()> {
    let audit = revocation_closes_the_live_connection("[tls]\ncrl_reload_seconds = 1\n", |_| Ok(())).await?;
    assert!(audit.contains("certificate-revoked: the connection is closed"), "the closing is audited");
    Ok(())
}

#[tokio::test]
async fn a_stale_crl_refuses_handshakes_unless_the_configuration_allows_it() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let pki = pki_in(dir.path())?;
    publish_crl(dir.path(), &pki.revocation_list(&[&pki.revoked.cert], OffsetDateTime::now_utc() - Span::hours(1))?)?;

    let strict = HubProcess::start(binary(), dir.path(), "127.0.0.1:0", "")?;
    logged(&strict, &["revocation list is out of date", "certificates it covers are refused"]).await?;
    let refused = strict.client("vt-utrecht-caseworker").connect_timeout(WAIT).connect().await;
    assert!(matches!(refused, Err(Error::Refused(_))), "a stale CRL let a certificate in: {refused:?}");
    logged(&strict, &["refused connection", "certificate revocation list expired"]).await?;
    drop(strict);

    let lenient = HubProcess::start(binary(), dir.path(), "127.0.0.1:0", "[tls]\nallow_stale_crl = true\n")?;
    let vt = lenient.client("vt-utrecht-caseworker").discard_events().connect().await?;
    vt.create_thread().await?;
    let revoked = lenient.client("revoked").connect_timeout(WAIT).connect().await;
    assert!(matches!(revoked, Err(Error::Refused(_))), "the stale list still revokes: {revoked:?}");
    Ok(())
}

#[tokio::test]
async fn a_certificate_that_expires_while_connected_is_disconnected_and_its_resumed_session_refused(
) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let pki = pki_in(dir.path())?;
    let hub = HubProcess::start(binary(), dir.path(), "127.0.0.1:0", "")?;
    let client = ExtraClient {
        slug: "short-lived".into(),
        org: VT_UTRECHT,
        worker: "kort.geldig".into(),
        role: Role::Caseworker,
    };
    let now = OffsetDateTime::now_utc();
    let pair = pki.issue_client(&client, 7000, now - Span::minutes(1), now + Span::seconds(LIFETIME_SECONDS))?;
    std::fs::write(dir.path().join("pki/short-lived.crt"), &pair.cert)?;
    std::fs::write(dir.path().join("pki/short-lived.key"), &pair.key)?;
    let dialer = Dialer::new(&dir.path().join("pki"), "short-lived", hub.addr().port())?;
    let mut live = dialer.connect().await?;

    let (error, code) = farewell(&mut live).await?;
    assert_denied(error.as_ref(), "certificate-expired");
    assert_eq!(code, Some(1008));
    assert!(OffsetDateTime::now_utc() > now + Span::seconds(LIFETIME_SECONDS), "closed before the certificate expired");
    assert_denied(Some(&dialer.resumed_refusal().await?), "certificate-expired");
    logged(&hub, &["refused connection", "certificate-expired"]).await?;
    Ok(())
}

#[tokio::test]
async fn a_garbled_crl_on_reload_keeps_the_lists_in_force_and_the_hub_serving() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let _pki = pki_in(dir.path())?;
    let mut hub = HubProcess::start(binary(), dir.path(), "127.0.0.1:0", "[tls]\ncrl_reload_seconds = 0\n")?;
    let vt = hub.client("vt-utrecht-caseworker").discard_events().connect().await?;
    let thread = vt.create_thread().await?;

    let garbled =
        ["this is not a revocation list\n", "-----BEGIN X509 CRL-----\nbm90IERFUg==\n-----END X509 CRL-----\n"];
    for (i, text) in garbled.iter().enumerate() {
        publish_crl(dir.path(), text)?;
        tests::sighup(hub.pid())?;
        tests::eventually(WAIT, || async { Ok(hub.log().matches("CRL reload refused").count() > i) }).await?;
    }
    vt.send_text(thread, "still connected").await?;
    let revoked = hub.client("revoked").connect_timeout(WAIT).connect().await;
    assert!(matches!(revoked, Err(Error::Refused(_))), "the CRL in force still revokes: {revoked:?}");
    let lt = hub.client("lt-woerden-caseworker").discard_events().connect().await?;
    lt.close().await;
    vt.close().await;
    let audit = audit_log(&mut hub, dir.path())?;
    assert_eq!(audit.matches("crl-reload-refused").count(), 2, "each refused reload is audited");
    Ok(())
}

#[tokio::test]
async fn a_crl_signed_by_another_key_in_the_cas_name_is_refused_and_the_lists_in_force_stay() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let pki = pki_in(dir.path())?;
    let mut hub = HubProcess::start(binary(), dir.path(), "127.0.0.1:0", "[tls]\ncrl_reload_seconds = 0\n")?;
    let vt = hub.client("vt-utrecht-caseworker").discard_events().connect().await?;
    let thread = vt.create_thread().await?;

    // Another dev PKI names its CA as ours does, with a key of its own: its
    // list, revoking our caseworker, must count for nothing.
    let impostor = DevPki::generate()?;
    let ours = pki.client("vt-utrecht-caseworker").context("no VT caseworker")?;
    let forged = impostor.revocation_list(&[&ours.cert], in_thirty_days())?;
    publish_crl(dir.path(), &forged)?;
    tests::sighup(hub.pid())?;
    tests::eventually(WAIT, || async { Ok(hub.log().contains("CRL reload refused")) }).await?;
    vt.send_text(thread, "still connected").await?;
    let again = hub.client("vt-utrecht-caseworker").discard_events().connect().await?;
    again.close().await;
    let revoked = hub.client("revoked").connect_timeout(WAIT).connect().await;
    assert!(matches!(revoked, Err(Error::Refused(_))), "the CRL in force still revokes: {revoked:?}");
    vt.close().await;
    let audit = audit_log(&mut hub, dir.path())?;
    assert_eq!(audit.matches("crl-reload-refused").count(), 1, "the refused reload is audited");
    Ok(())
}

#[tokio::test]
async fn a_reread_that_would_put_an_older_crl_over_a_newer_one_is_refused() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let pki = pki_in(dir.path())?;
    let mut hub = HubProcess::start(binary(), dir.path(), "127.0.0.1:0", "[tls]\ncrl_reload_seconds = 0\n")?;
    // Lists count time in seconds: the newer one must be issued a second later.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let ours = pki.client("vt-utrecht-caseworker").context("no VT caseworker")?;
    publish_crl(dir.path(), &pki.revocation_list(&[&pki.revoked.cert, &ours.cert], in_thirty_days())?)?;
    tests::sighup(hub.pid())?;
    tests::eventually(WAIT, || async { Ok(hub.log().contains("revocation lists reloaded")) }).await?;
    let revoked = hub.client("vt-utrecht-caseworker").connect_timeout(WAIT).connect().await;
    assert!(matches!(revoked, Err(Error::Refused(_))), "the newer list does not revoke: {revoked:?}");

    // The list of the start, which does not list the caseworker, published again.
    publish_crl(dir.path(), &pki.crl)?;
    tests::sighup(hub.pid())?;
    tests::eventually(WAIT, || async { Ok(hub.log().contains("CRL reload refused")) }).await?;
    let still = hub.client("vt-utrecht-caseworker").connect_timeout(WAIT).connect().await;
    assert!(matches!(still, Err(Error::Refused(_))), "the older list rolled the revocation back: {still:?}");
    let audit = audit_log(&mut hub, dir.path())?;
    assert_eq!(audit.matches("crl-reload-refused").count(), 1, "the refused reread is audited");

    // Nor does a restart on it: the hub remembered the newer list it had put in force.
    refused_start_on_an_older_list(dir.path(), "[tls]\ncrl_reload_seconds = 0\n")
}

/// Starts a hub on `dir` and requires it to refuse to, naming the older list.
fn refused_start_on_an_older_list(dir: &Path, config: &str) -> anyhow::Result<()> {
    let restarted = HubProcess::start(binary(), dir, "127.0.0.1:0", config);
    let error = format!("{:#}", restarted.err().context("the hub started on the older list")?);
    anyhow::ensure!(error.contains("older than the one of its issuer this hub had in force before"), "{error}");
    Ok(())
}

#[tokio::test]
async fn a_restart_on_an_older_crl_than_the_one_the_hub_started_on_is_refused() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let pki = pki_in(dir.path())?;
    // Lists count time in seconds: the newer one must be issued a second later.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let ours = pki.client("vt-utrecht-caseworker").context("no VT caseworker")?;
    publish_crl(dir.path(), &pki.revocation_list(&[&pki.revoked.cert, &ours.cert], in_thirty_days())?)?;
    let mut hub = HubProcess::start(binary(), dir.path(), "127.0.0.1:0", "")?;
    assert!(hub.terminate()?.success(), "{}", hub.log());

    // The list of the PKI's start, which does not list the caseworker, put back while the hub was stopped.
    publish_crl(dir.path(), &pki.crl)?;
    refused_start_on_an_older_list(dir.path(), "")?;

    // A list at least as new as the one remembered starts it again.
    publish_crl(dir.path(), &pki.revocation_list(&[&pki.revoked.cert, &ours.cert], in_thirty_days())?)?;
    let mut hub = HubProcess::start(binary(), dir.path(), "127.0.0.1:0", "")?;
    let revoked = hub.client("vt-utrecht-caseworker").connect_timeout(WAIT).connect().await;
    assert!(matches!(revoked, Err(Error::Refused(_))), "the list in force does not revoke: {revoked:?}");
    assert!(hub.terminate()?.success());
    Ok(())
}

/// What a revoked connection was sent after it had sent its requests.
struct AfterRevocation {
    /// The blob chunks it was sent.
    chunks: u64,
    /// The error frame, if one came.
    farewell: Option<WireError>,
    /// How the connection ended.
    ended: ketenhub_sdk::raw::RawIncoming,
}

/// Room for every reply in the connection's queue (a reply that may be a
/// frame holds a frame's room), so that the hub reads every request, and a
/// writer that waits on the socket far longer than the test takes.
const ROOM: &str = "outbound_queue_bytes = 200000000\nmax_connections_per_identity = 2\n\
                    outbound_total_bytes = 800000000\nwrite_timeout_ms = 120000\n";

/// Chunks far larger than the loopback sockets' buffers, so that only a few fit there.
const BIG_CHUNK: usize = 2 << 20;

/// Starts a hub with `limits` (its `[limits]` lines), puts a `BIG_CHUNK` blob
/// into a case between VT and LT, and on a raw LT connection asks for it
/// `chunks` times and for a case's delivery status `small` times, reading
/// nothing. Then LT's certificate is revoked and the connection read to its end.
async fn revoked_while_asking(limits: &str, chunks: u64, small: u64) -> anyhow::Result<AfterRevocation> {
    use ketenhub_sdk::raw::RawIncoming;
    use wire::{BlobId, ClientFrame, Request};
    let config = format!(
        "[tls]\ncrl_reload_seconds = 0\n[limits]\nmax_frame_bytes = 4194304\nmax_blob_bytes = 4194304\n{limits}"
    );
    let dir = tempfile::tempdir()?;
    let pki = pki_in(dir.path())?;
    let mut hub = HubProcess::start(binary(), dir.path(), "127.0.0.1:0", &config)?;
    let vt = hub.client("vt-utrecht-caseworker").discard_events().connect().await?;
    let lt = hub.client("lt-woerden-caseworker").discard_events().connect().await?;
    let thread = vt.create_thread().await?;
    vt.add_member(thread, lt.member_id(), &tests::consent()).await?;
    let mut raw = hub.client("lt-woerden-caseworker").connect_raw().await?;
    let blob = BlobId::random();
    let put = Request::PutBlobChunk { thread, blob, index: 0, last: true, data: vec![7; BIG_CHUNK] };
    raw.send_frame(&ClientFrame::Request { id: 0, request: put }).await?;
    loop {
        match raw.next().await? {
            RawIncoming::Frame(HubFrame::Reply { id: 0, result }) => {
                break anyhow::ensure!(result.is_ok(), "{result:?}")
            }
            RawIncoming::Frame(_) => {}
            ended => anyhow::bail!("the connection ended: {ended:?}"),
        }
    }
    let asks = (1..=chunks).map(|_| Request::GetBlobChunk { thread, blob, index: 0 });
    let statuses = (0..small).map(|_| Request::DeliveryStatus { thread });
    for (id, request) in (1..).zip(asks.chain(statuses)) {
        raw.send_frame(&ClientFrame::Request { id, request }).await?;
    }
    // The replies pile up in the hub's queue for the connection while nothing reads them.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let cert = &pki.client("lt-woerden-caseworker").expect("a sample identity").cert;
    publish_crl(dir.path(), &pki.revocation_list(&[cert, &pki.revoked.cert], in_thirty_days())?)?;
    tests::sighup(hub.pid())?;
    logged(&hub, &["revocation lists reloaded"]).await?;

    let (mut sent, mut farewell) = (0, None);
    let reading = async {
        loop {
            match raw.next().await? {
                RawIncoming::Frame(HubFrame::Reply { result: Ok(wire::Reply::BlobChunk { .. }), .. }) => sent += 1,
                RawIncoming::Frame(HubFrame::Error { error }) => farewell = Some(error),
                RawIncoming::Frame(_) => {}
                ended => return anyhow::Ok(ended),
            }
        }
    };
    let ended = tokio::time::timeout(WAIT, reading).await.context("the connection stayed open")??;
    vt.close().await;
    lt.close().await;
    drop(raw);
    anyhow::ensure!(hub.terminate()?.success(), "the hub did not stop cleanly:\n{}", hub.log());
    Ok(AfterRevocation { chunks: sent, farewell, ended })
}

/// A member that asked for a large blob chunk many times and read none of the
/// replies is revoked: what the hub had queued for it and not yet written is
/// not written after the revocation; it gets the farewell, not the chunks.
/// Before, every queued reply went out ahead of the close.
#[tokio::test]
async fn what_was_queued_for_a_revoked_connection_is_not_written_after_the_revocation() -> anyhow::Result<()> {
    const ASKED: u64 = 40;
    let room = ROOM;
    let after = revoked_while_asking(room, ASKED, 0).await?;
    assert_denied(after.farewell.as_ref(), "certificate-revoked");
    assert!(matches!(after.ended, ketenhub_sdk::raw::RawIncoming::Closed { code: 1008, .. }), "{:?}", after.ended);
    // What the sockets held before the revocation still arrives (a few chunks), not the rest of the queue.
    assert!(after.chunks < ASKED / 4, "{} of {ASKED} chunks were written to the revoked connection", after.chunks);
    Ok(())
}

/// As above, with the connection's queue full of small replies, so that its
/// reader waits for room when the revocation comes: the farewell still comes,
/// though the queue it waited on is gone.
#[tokio::test]
async fn a_revoked_connection_whose_queue_is_full_still_gets_its_farewell() -> anyhow::Result<()> {
    let room = ROOM;
    let after = revoked_while_asking(room, 10, 600).await?;
    assert_denied(after.farewell.as_ref(), "certificate-revoked");
    assert!(matches!(after.ended, ketenhub_sdk::raw::RawIncoming::Closed { code: 1008, .. }), "{:?}", after.ended);
    Ok(())
}
