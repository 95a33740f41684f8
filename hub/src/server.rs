//! The listener: accepts TCP, completes TLS and WebSocket handshakes within
//! the handshake timeout, and hands authenticated connections to `connection`.
//!
//! Every refused handshake is logged with the peer address and the reason
//! (missing, unknown, expired, revoked or attribute-less certificate, timeout).
//! A completed handshake is not yet an admission: the peer's certificate is
//! checked once more against its validity period and the CRLs in force, since
//! a resumed TLS session restores it without rustls verifying it again.
//! The total number of connections is bounded; past it new connections are
//! closed at once rather than queued.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::time::timeout;
use tokio_rustls::TlsAcceptor;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};
use wire::audit::{AuditAction, AuditOutcome};
use wire::{DeviceId, ErrorCode, WireError};

use crate::admission::{Admission, Pending};
use crate::audit::Recorder;
use crate::clock::Clock;
use crate::config::{Config, ConfigError};
use crate::connection::{self, WsStream};
use crate::session::{Caller, Hub};
use crate::store::{KvStore, Store, StoreError};
use crate::tls::{self, TlsError};
use certs::revocation::CertRefusal;

/// Where a hub keeps its Ed25519 audit key unless `[audit] key` says otherwise (created on first start, mode 0600).
pub fn audit_key_path(data: &std::path::Path) -> std::path::PathBuf {
    data.join("audit-key.pk8")
}

/// How long shutdown waits for connections to finish.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// A hub that could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The configuration is incomplete or invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The certificates could not be loaded.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The policy file is missing or invalid.
    #[error(transparent)]
    Policy(#[from] crate::policy::PolicyError),
    /// The audit key could not be loaded or created.
    #[error("audit key: {0}")]
    AuditKey(#[from] crate::audit::chain::KeyError),
    /// The store could not be opened or flushed.
    #[error("store: {0}")]
    Store(#[from] StoreError),
    /// A socket or directory operation failed.
    #[error("{what}")]
    Io {
        /// What was being done.
        what: String,
        /// The cause.
        source: std::io::Error,
    },
}

/// Wakes the writer now and then so that a checkpoint falls due even when the
/// hub is idle after writing entries.
async fn checkpoint_ticks(hub: Arc<Hub>, shutdown: CancellationToken) {
    let mut ticks = tokio::time::interval(Duration::from_millis(hub.checkpoint_every_ms.max(100)));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticks.tick() => hub.writes.submit_unanswered(crate::durability::Write::Tick, None).await,
        }
    }
}

/// Sweeps retention periodically (the first sweep soon after start).
async fn retention_sweeps(hub: Arc<Hub>, every: Duration, shutdown: CancellationToken) {
    let mut ticks = tokio::time::interval(every);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticks.tick() => match hub.sweep_retention(crate::clock::now_ms()).await {
                Ok(swept) => info!(?swept, "retention sweep"),
                Err(e) => warn!("retention sweep failed: {e}"),
            },
        }
    }
}

/// Fires handover deadlines periodically; the first sweep runs at start, so
/// deadlines that passed while the hub was down fire at once.
async fn deadline_sweeps(hub: Arc<Hub>, every: Duration, shutdown: CancellationToken) {
    let mut ticks = tokio::time::interval(every);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticks.tick() => if let Err(e) = hub.fire_deadlines().await {
                warn!("handover deadline sweep failed: {e}");
            },
        }
    }
}

/// Ends each interval of refused handshakes: one audit entry for every source
/// address and reason that was refused more than once, with the count.
async fn refusal_summaries(hub: Arc<Hub>, shutdown: CancellationToken) {
    let mut ticks = tokio::time::interval(Duration::from_millis(hub.limits.refused_handshake_audit_ms));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticks.tick() => for (peer, reason, more) in hub.refusals.drain() {
                let summary = format!("{reason}; {more} more refusals of this address in the interval");
                let _ = hub.audit_connection(None, peer, AuditAction::HandshakeRefused, AuditOutcome::Denied, &summary).await;
            },
        }
    }
}

/// Records a refused handshake: at once when it is the first of its address and
/// reason in the interval, otherwise counted for [`refusal_summaries`].
async fn refused_handshake(hub: &Hub, peer: SocketAddr, reason: &str) {
    warn!(%peer, reason, "refused connection");
    if hub.refusals.first(peer, reason) {
        let _ = hub.audit_connection(None, peer, AuditAction::HandshakeRefused, AuditOutcome::Denied, reason).await;
    }
}

/// Reloads the policy and the CRLs on every SIGHUP until shutdown.
#[cfg(unix)]
async fn reload_on_sighup(hub: Arc<Hub>, shutdown: CancellationToken) {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut hangups) = signal(SignalKind::hangup()) else {
        warn!("cannot listen for SIGHUP; the policy and the CRLs are reloaded only by a restart");
        return;
    };
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            Some(()) = hangups.recv() => {
                hub.reload_policy().await;
                hub.reload_crls().await;
            }
        }
    }
}

#[cfg(not(unix))]
async fn reload_on_sighup(_hub: Arc<Hub>, _shutdown: CancellationToken) {}

/// Why a connection did not get past its handshakes.
#[derive(Debug, thiserror::Error)]
enum Refusal {
    #[error("TLS handshake failed: {0}")]
    Tls(std::io::Error),
    #[error("client certificate carries no identity")]
    NoIdentity,
    #[error("WebSocket handshake failed: {0}")]
    WebSocket(tokio_tungstenite::tungstenite::Error),
    #[error("handshake timed out")]
    Timeout,
}

/// A bound, ready hub.
pub struct Server {
    listener: TcpListener,
    hub: Arc<Hub>,
    sweep_every: Duration,
    deadlines_every: Duration,
    crl_reload_every: Option<Duration>,
}

impl Server {
    /// Opens the store, loads the certificates and binds the listener.
    pub async fn bind(config: &Config) -> Result<Self, ServeError> {
        Self::bind_with_clock(config, Clock::system()).await
    }

    /// Like [`Server::bind`], with handover deadlines on `clock` (tests move it).
    pub async fn bind_with_clock(config: &Config, clock: Clock) -> Result<Self, ServeError> {
        let data = config.validate()?.data;
        std::fs::create_dir_all(data)
            .map_err(|source| ServeError::Io { what: format!("create {}", data.display()), source })?;
        Self::bind_with_store(config, Arc::new(KvStore::open_with(&data.join("store"), &config.store)?), clock).await
    }

    /// Like [`Server::bind`], on a store opened by the caller (fault-injection
    /// tests wrap the embedded store to make chosen writes fail) and with a clock
    /// for handover deadlines that tests can move.
    pub async fn bind_with_store(config: &Config, store: Arc<dyn Store>, clock: Clock) -> Result<Self, ServeError> {
        let resolved = config.validate()?;
        let certificates = tls::Certificates::load(
            resolved.ca,
            resolved.cert,
            resolved.key,
            config.tls.crl.clone(),
            config.tls.allow_stale_crl,
        )?;
        crate::revocation::warn_if_stale(
            &certificates.current(),
            &certificates.crl_files(),
            config.tls.allow_stale_crl,
        );
        crate::revocation::start_no_older(store.as_ref(), &certificates.current().lists)?;
        let listener = TcpListener::bind(resolved.listen)
            .await
            .map_err(|source| ServeError::Io { what: format!("listen on {}", resolved.listen), source })?;
        let policy = Arc::new(crate::policy::PolicySource::load(resolved.policy)?);
        let key = crate::audit::load_key(store.as_ref(), &config.audit, resolved.data)?;
        let recorder = Recorder::resume(store.as_ref(), Arc::new(key), config.audit.clone())?;
        let calendar = config.handover.calendar()?;
        let hub = Hub::new(store, config.limits.clone(), policy, recorder, clock, calendar, Arc::new(certificates))
            .map_err(|source| ServeError::Io { what: "start the writer thread".into(), source })?;
        let sweep_every = Duration::from_millis(config.retention.sweep_every_ms.max(1000));
        let deadlines_every = Duration::from_millis(config.handover.deadline_sweep_ms.max(10));
        let crl_reload_every = config.tls.crl_reload_every();
        Ok(Self { listener, hub, sweep_every, deadlines_every, crl_reload_every })
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("a bound listener has an address")
    }

    /// The shared hub state.
    pub fn hub(&self) -> Arc<Hub> {
        self.hub.clone()
    }

    /// Accepts connections until `shutdown` is cancelled, then drains and flushes.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), ServeError> {
        let tracker = TaskTracker::new();
        self.hub.sync_inboxes().await;
        tokio::spawn(reload_on_sighup(self.hub.clone(), shutdown.clone()));
        tokio::spawn(checkpoint_ticks(self.hub.clone(), shutdown.clone()));
        tokio::spawn(retention_sweeps(self.hub.clone(), self.sweep_every, shutdown.clone()));
        tokio::spawn(deadline_sweeps(self.hub.clone(), self.deadlines_every, shutdown.clone()));
        tokio::spawn(refusal_summaries(self.hub.clone(), shutdown.clone()));
        if let Some(every) = self.crl_reload_every {
            tokio::spawn(crate::revocation::crl_reloads(self.hub.clone(), every, shutdown.clone()));
        }
        let slots = Arc::new(Semaphore::new(self.hub.limits.max_connections));
        let admission = Admission::new(&self.hub.limits);
        loop {
            let (tcp, peer) = tokio::select! {
                _ = shutdown.cancelled() => break,
                accepted = self.listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        // Usually out of file descriptors: back off instead of spinning.
                        warn!("accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let pending = match admission.admit(peer.ip()) {
                Ok(pending) => pending,
                Err(refusal) => {
                    drop(tcp);
                    let hub = self.hub.clone();
                    tracker.spawn(async move { refused_handshake(&hub, peer, &refusal.to_string()).await });
                    continue;
                }
            };
            let hub = self.hub.clone();
            let accepted = Accepted { tcp, peer, pending, slots: slots.clone() };
            // Read per connection: a CRL reload swaps the configuration for the next handshake.
            let acceptor = TlsAcceptor::from(self.hub.certificates.current().server.clone());
            tracker.spawn(handle(hub, acceptor, accepted, shutdown.clone()));
        }
        info!("no longer accepting connections");
        tracker.close();
        if timeout(SHUTDOWN_GRACE, tracker.wait()).await.is_err() {
            warn!("connections still open after {SHUTDOWN_GRACE:?}; stopping anyway");
        }
        // Before the seal, so that the final checkpoint covers what they were sent.
        self.hub.record_open_deliveries().await;
        // The log ends on a signed checkpoint, durable before the process exits.
        let _ = self.hub.writes.submit(crate::durability::Write::Seal, None).await.await;
        self.hub.store.flush()?;
        info!("store flushed; shut down cleanly");
        Ok(())
    }
}

/// Bytes read from the TLS stream at a time. tungstenite zero-fills its read
/// buffer up to this size, so it is resident memory for every open connection;
/// the 128 KiB default would cost more than the rest of a connection together.
const WEBSOCKET_READ_BUFFER: usize = 8 * 1024;

/// The WebSocket settings of every hub connection (the benchmark's relay uses
/// them too, so that the two compare).
pub fn websocket_config(max_frame_bytes: usize) -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(WEBSOCKET_READ_BUFFER)
        .max_message_size(Some(max_frame_bytes))
        .max_frame_size(Some(max_frame_bytes))
}

/// The device a connection names in its WebSocket request: `device=ID` in the
/// query, or none (the identity's default device).
fn device_of(uri: &tokio_tungstenite::tungstenite::http::Uri) -> Result<DeviceId, String> {
    let named = uri.query().unwrap_or("").split('&').find_map(|pair| pair.strip_prefix("device="));
    named.map_or(Ok(DeviceId::default()), |id| DeviceId::try_from(id.to_owned()))
}

/// A connection past its handshakes, the verdict on its certificate now, and the device it names.
type Shaken = (WsStream, Caller, Result<(), CertRefusal>, Result<DeviceId, String>);

async fn handshake(hub: &Hub, acceptor: TlsAcceptor, tcp: TcpStream, peer: SocketAddr) -> Result<Shaken, Refusal> {
    let _ = tcp.set_nodelay(true);
    let steps = async {
        let tls = acceptor.accept(tcp).await.map_err(Refusal::Tls)?;
        let (identity, leaf, fingerprint) = tls::peer(tls.get_ref().1).ok_or(Refusal::NoIdentity)?;
        let presented = hub.certificates.presented(tls.get_ref().1).ok_or(Refusal::NoIdentity)?;
        let certificate = leaf.with_intermediates(presented);
        // A resumed session was not verified in this handshake: the certificate
        // may have expired or been revoked since the session began.
        let verdict = hub.certificates.check(&certificate);
        let ws_config = websocket_config(hub.limits.max_frame_bytes);
        let mut device = Ok(DeviceId::default());
        // The callback's error type is tungstenite's, not ours to shrink.
        #[allow(clippy::result_large_err)]
        let named = |request: &tokio_tungstenite::tungstenite::handshake::server::Request, response| {
            device = device_of(request.uri());
            Ok(response)
        };
        let ws = tokio_tungstenite::accept_hdr_async_with_config(tls, named, Some(ws_config))
            .await
            .map_err(Refusal::WebSocket)?;
        Ok((ws, Caller::new(identity, fingerprint, certificate, peer), verdict, device))
    };
    timeout(hub.limits.handshake_timeout(), steps).await.unwrap_or(Err(Refusal::Timeout))
}

/// A TCP connection admitted to its handshake.
struct Accepted {
    tcp: TcpStream,
    peer: SocketAddr,
    /// Its place among the pending handshakes, freed when the handshake ends.
    pending: Pending,
    /// The open connections; one is taken once the peer has authenticated.
    slots: Arc<Semaphore>,
}

/// Serves a connection once it is admitted.
async fn handle(hub: Arc<Hub>, acceptor: TlsAcceptor, accepted: Accepted, shutdown: CancellationToken) {
    // Both phases are boxed, each in a statement of its own. Inline, a task is
    // as large as its largest state, and the admission's (handshakes, refusals,
    // the audit entry) and the served connection's together made every open
    // connection's task about 25 KiB. A future boxed within the statement that
    // awaits it stays in the task's state too: a temporary lives to the
    // statement's end, past the await.
    let admission = Box::pin(admit(&hub, acceptor, accepted));
    let Some((ws, caller, _slot)) = admission.await else { return };
    let opening = Box::pin(connection::open(&hub, ws, &caller));
    let Some(session) = opening.await else { return };
    let serving = Box::pin(connection::serve(hub, session, &caller, shutdown));
    serving.await;
    // Connections and disconnections are logged at debug level: the audit log
    // records each connection durably, and formatting two lines per connection
    // was about 4 % of the hub's CPU in a burst of handshakes.
    debug!(peer = %caller.peer, identity = %caller.identity, "disconnected");
}

/// Takes a connection through its handshakes and admission: the connection,
/// its caller and its slot among the open connections; `None` once it is refused.
async fn admit(
    hub: &Hub,
    acceptor: TlsAcceptor,
    accepted: Accepted,
) -> Option<(WsStream, Caller, tokio::sync::OwnedSemaphorePermit)> {
    let Accepted { tcp, peer, pending, slots } = accepted;
    let shaken = handshake(hub, acceptor, tcp, peer).await;
    drop(pending);
    let (ws, caller) = match shaken {
        Ok((ws, caller, Ok(()), Ok(device))) => (ws, Caller { device, ..caller }),
        Ok((ws, _, Ok(()), Err(bad))) => {
            warn!(%peer, "refused connection: the WebSocket request's device is malformed: {bad}");
            let refusal = WireError::new(ErrorCode::Invalid, format!("the WebSocket request's device: {bad}"));
            connection::refuse(hub, ws, refusal, "the device id is malformed").await;
            return None;
        }
        Ok((ws, _, Err(refusal), _)) => {
            refused_handshake(hub, peer, &format!("{}: {refusal}", refusal.rule())).await;
            connection::refuse_certificate(hub, ws, &refusal).await;
            return None;
        }
        Err(refusal) => {
            refused_handshake(hub, peer, &refusal.to_string()).await;
            return None;
        }
    };
    let Ok(slot) = slots.try_acquire_owned() else {
        warn!(%peer, "refused connection: the hub is at its connection limit");
        let full = WireError::new(ErrorCode::TooManyConnections, "the hub is at its connection limit; retry later");
        connection::refuse(hub, ws, full, "the hub is at its connection limit").await;
        return None;
    };
    let admitted = hub.policy.current().admits(&caller.identity);
    let known = admitted.is_ok();
    let (outcome, rule) = match admitted {
        Ok(()) => (AuditOutcome::Allowed, "authenticated".to_owned()),
        Err(denied) => (AuditOutcome::Denied, format!("{}: {}", denied.rule, denied.reason)),
    };
    // The connection is served only once its entry is durable.
    let audited = hub.audit_connection(Some(&caller), peer, AuditAction::Connect, outcome, &rule).await;
    let refusal = match (known, audited) {
        (true, Ok(())) => None,
        (false, _) => Some(WireError::new(ErrorCode::Forbidden, format!("denied by rule {rule}"))),
        (true, Err(e)) => Some(e),
    };
    if let Some(refusal) = refusal {
        warn!(%peer, identity = %caller.identity, reason = %refusal.message, "refused connection");
        connection::refuse(hub, ws, refusal, "the connection is not admitted").await;
        return None;
    }
    if let Err(refusal) = hub.register_device(&caller).await {
        warn!(%peer, identity = %caller.identity, device = %caller.device, reason = %refusal.message, "refused device");
        connection::refuse(hub, ws, refusal, "the device is not admitted").await;
        return None;
    }
    debug!(%peer, identity = %caller.identity, device = %caller.device, fingerprint = %caller.fingerprint, "connected");
    Some((ws, caller, slot))
}
