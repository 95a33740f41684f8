//! Configuring a client: where the hub is, which certificates to use, and how
//! patient to be.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio_tungstenite::tungstenite::http::Uri;

use certs::binding::{Binder, Verifier};

use crate::device::StateKey;
use crate::raw::{FrameTap, RawConnection};
use crate::{Client, Error};

#[derive(Clone)]
enum Pem {
    File(PathBuf),
    Text(String),
}

/// A path is shown, PEM text is not: the key's PEM is the client's private key,
/// and a builder may well be formatted into a log line.
impl std::fmt::Debug for Pem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::File(path) => f.debug_tuple("File").field(path).finish(),
            Self::Text(_) => f.write_str("Text(<redacted>)"),
        }
    }
}

impl Pem {
    fn bytes(&self, what: &str) -> Result<Vec<u8>, Error> {
        match self {
            Self::Text(text) => Ok(text.clone().into_bytes()),
            Self::File(path) => {
                std::fs::read(path).map_err(|e| Error::Config(format!("cannot read {what} {}: {e}", path.display())))
            }
        }
    }
}

/// Builds a [`Client`]; obtain one with [`Client::builder`].
#[derive(Debug, Clone)]
pub struct ClientBuilder {
    url: Option<String>,
    ca: Option<Pem>,
    identity_ca: Option<Pem>,
    cert: Option<Pem>,
    key: Option<Pem>,
    request_timeout: Duration,
    connect_timeout: Duration,
    backoff: (Duration, Duration),
    refused_backoff: Duration,
    event_buffer: usize,
    keep_events: bool,
    resumption: bool,
    max_frame_bytes: usize,
    state_dir: Option<PathBuf>,
    state_key: Option<StateKey>,
    key_package_stock: u64,
    frame_tap: Option<FrameTap>,
    audit_key: Option<[u8; 32]>,
    witness_audit: bool,
}

impl Default for ClientBuilder {
    fn default() -> Self {
        Self {
            url: None,
            ca: None,
            identity_ca: None,
            cert: None,
            key: None,
            request_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            backoff: (Duration::from_millis(50), Duration::from_secs(5)),
            refused_backoff: Duration::from_secs(300),
            event_buffer: 1024,
            keep_events: true,
            resumption: true,
            max_frame_bytes: 4 << 20,
            state_dir: None,
            state_key: None,
            key_package_stock: 16,
            frame_tap: None,
            audit_key: None,
            witness_audit: false,
        }
    }
}

/// Everything the connection driver needs, resolved once.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub url: String,
    pub host: String,
    pub port: u16,
    pub server_name: ServerName<'static>,
    pub tls: Arc<ClientConfig>,
    /// Binds this device's MLS leaves to its certificate, or why it cannot:
    /// checked only once the hub has accepted the certificate, so that a
    /// certificate the hub refuses is refused by the hub.
    pub binder: Result<Binder, String>,
    /// Checks other members' leaves against the identity CA.
    pub verifier: Arc<Verifier>,
    pub request_timeout: Duration,
    pub connect_timeout: Duration,
    pub backoff: (Duration, Duration),
    /// The pause after the hub refused this identity by its policy.
    pub refused_backoff: Duration,
    pub event_buffer: usize,
    pub keep_events: bool,
    pub max_frame_bytes: usize,
    pub state_dir: Option<PathBuf>,
    pub state_key: Option<StateKey>,
    pub key_package_stock: u64,
    pub frame_tap: Option<FrameTap>,
    /// The audit public key, when this client witnesses the audit log.
    pub witness_key: Option<[u8; 32]>,
    /// Whether a client that is not a privacy officer witnesses too.
    pub witness_any_role: bool,
}

impl ClientBuilder {
    /// The hub's URL, `wss://host:port`.
    pub fn url(mut self, url: impl Into<String>) -> Self {
        self.url = Some(url.into());
        self
    }

    /// The chain CA that signed the hub's certificate, as a PEM file.
    pub fn ca_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.ca = Some(Pem::File(path.into()));
        self
    }

    /// The chain CA as PEM text.
    pub fn ca_pem(mut self, pem: impl Into<String>) -> Self {
        self.ca = Some(Pem::Text(pem.into()));
        self
    }

    /// The CA that certifies the identities of other members' MLS devices, as a
    /// PEM file (default: the chain CA of [`Self::ca_file`]). Every leaf a
    /// KeyPackage, a Welcome or a commit brings in must be bound to a
    /// certificate from it (see `docs/mls.md`); the hub is not believed.
    pub fn identity_ca_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.identity_ca = Some(Pem::File(path.into()));
        self
    }

    /// The identity CA as PEM text.
    pub fn identity_ca_pem(mut self, pem: impl Into<String>) -> Self {
        self.identity_ca = Some(Pem::Text(pem.into()));
        self
    }

    /// This client's certificate and private key, as PEM files.
    pub fn identity_files(mut self, cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Self {
        self.cert = Some(Pem::File(cert.into()));
        self.key = Some(Pem::File(key.into()));
        self
    }

    /// This client's certificate and private key as PEM text.
    pub fn identity_pem(mut self, cert: impl Into<String>, key: impl Into<String>) -> Self {
        self.cert = Some(Pem::Text(cert.into()));
        self.key = Some(Pem::Text(key.into()));
        self
    }

    /// Connects without a client certificate. The hub refuses such
    /// connections; this exists to test exactly that.
    pub fn without_identity(mut self) -> Self {
        self.cert = None;
        self.key = None;
        self
    }

    /// How long a request may wait for its answer, across reconnects (default 30 s).
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// How long one connection attempt may take (default 10 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// The first and the largest pause between reconnection attempts (default 50 ms, 5 s).
    pub fn reconnect_backoff(mut self, first: Duration, max: Duration) -> Self {
        self.backoff = (first, max.max(first));
        self
    }

    /// The pause before trying again once the hub's policy refused this identity (default 5 min):
    /// a revoked certificate or an organisation the policy no longer admits will not be let in by
    /// retrying, and every attempt is an audit entry at the hub.
    pub fn refused_backoff(mut self, pause: Duration) -> Self {
        self.refused_backoff = pause;
        self
    }

    /// How many events may wait for the application before the SDK stops
    /// reading from the hub (default 1024). While it waits, answers to requests
    /// wait too: read the stream from the moment the client connects (or call
    /// [`ClientBuilder::discard_events`]). [`crate::Client::ack`] never waits,
    /// so the loop that reads may acknowledge every event.
    pub fn event_buffer(mut self, events: usize) -> Self {
        self.event_buffer = events.max(1);
        self
    }

    /// Drops thread events instead of buffering them, for clients that only send.
    /// The entries stay at the hub, unacknowledged.
    pub fn discard_events(mut self) -> Self {
        self.keep_events = false;
        self
    }

    /// Whether TLS sessions may be resumed on reconnect (default true). Turn it
    /// off to force a full handshake every time, as the benchmark does.
    pub fn tls_resumption(mut self, enabled: bool) -> Self {
        self.resumption = enabled;
        self
    }

    /// Where this device keeps its MLS keys and state across restarts. Without
    /// it, the state lives in memory only and a restarted client cannot read its
    /// threads' past messages.
    pub fn state_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.state_dir = Some(dir.into());
        self
    }

    /// Encrypts the device state in [`Self::state_dir`] at rest with AES-256-GCM
    /// under `key`, which the application keeps elsewhere (for example in the
    /// operating system's key store). A plain state already there is sealed on
    /// connect; a sealed one opened with another key fails with
    /// [`Error::StateKey`].
    pub fn state_key(mut self, key: StateKey) -> Self {
        self.state_key = Some(key);
        self
    }

    /// How many KeyPackages the SDK keeps at the hub so others can add this
    /// device to threads while it is offline (default 16; 0 uploads none).
    pub fn key_package_stock(mut self, count: u64) -> Self {
        self.key_package_stock = count;
        self
    }

    /// The largest frame accepted from the hub (default 4 MiB).
    pub fn max_frame_bytes(mut self, bytes: usize) -> Self {
        self.max_frame_bytes = bytes;
        self
    }

    /// Shows every binary frame the client sends and receives to `tap`, as
    /// bytes on the wire (for conformance tests and protocol debugging).
    pub fn frame_tap(mut self, tap: FrameTap) -> Self {
        self.frame_tap = Some(tap);
        self
    }

    /// The hub's audit public key (as `hub audit pubkey` prints it, 32 bytes). A privacy officer's client
    /// given it witnesses the audit log (see [`crate::witness`]): it checks every signed tree head and
    /// audit entry the hub sends, keeps the last verified head in [`Self::state_dir`], and fails with
    /// [`Error::Audit`] (and an [`crate::Event::AuditAlarm`]) when the log does not extend it.
    pub fn audit_public_key(mut self, key: [u8; 32]) -> Self {
        self.audit_key = Some(key);
        self
    }

    /// Makes a client of another role (a `system` identity) witness the audit log too; it needs
    /// [`Self::audit_public_key`].
    pub fn witness_audit(mut self, enabled: bool) -> Self {
        self.witness_audit = enabled;
        self
    }

    pub(crate) fn settings(&self) -> Result<Settings, Error> {
        let url = self.url.clone().ok_or_else(|| Error::Config("no hub URL given".into()))?;
        let uri: Uri = url.parse().map_err(|e| Error::Config(format!("invalid URL {url}: {e}")))?;
        if uri.scheme_str() != Some("wss") {
            return Err(Error::Config(format!("URL must start with wss://, got {url}")));
        }
        let host = uri.host().ok_or_else(|| Error::Config(format!("URL has no host: {url}")))?;
        let host = host.trim_start_matches('[').trim_end_matches(']').to_owned();
        let server_name =
            ServerName::try_from(host.clone()).map_err(|e| Error::Config(format!("invalid host name {host}: {e}")))?;
        Ok(Settings {
            port: uri.port_u16().unwrap_or(443),
            host,
            url,
            server_name,
            tls: self.tls_config()?,
            binder: self.binder(),
            verifier: Arc::new(self.verifier()?),
            request_timeout: self.request_timeout,
            connect_timeout: self.connect_timeout,
            backoff: self.backoff,
            refused_backoff: self.refused_backoff,
            event_buffer: self.event_buffer,
            keep_events: self.keep_events,
            max_frame_bytes: self.max_frame_bytes,
            state_dir: self.state_dir.clone(),
            state_key: self.state_key.clone(),
            key_package_stock: self.key_package_stock,
            frame_tap: self.frame_tap.clone(),
            witness_key: match (self.audit_key, self.witness_audit) {
                (None, true) => return Err(Error::Config("witness_audit needs audit_public_key".into())),
                (key, _) => key,
            },
            witness_any_role: self.witness_audit,
        })
    }

    fn binder(&self) -> Result<Binder, String> {
        let (Some(cert), Some(key)) = (&self.cert, &self.key) else { return Err("no client certificate given".into()) };
        let pem = |p: &Pem, what| p.bytes(what).map_err(|e| e.to_string());
        Binder::from_pem(&pem(cert, "certificate")?, &pem(key, "key")?)
            .map_err(|e| format!("the certificate cannot bind MLS leaves: {e}"))
    }

    fn verifier(&self) -> Result<Verifier, Error> {
        let ca = self.identity_ca.as_ref().or(self.ca.as_ref()).ok_or_else(|| Error::Config("no CA given".into()))?;
        Verifier::from_pem(&ca.bytes("identity CA")?).map_err(|e| Error::Config(e.to_string()))
    }

    fn tls_config(&self) -> Result<Arc<ClientConfig>, Error> {
        let ca = self.ca.as_ref().ok_or_else(|| Error::Config("no CA given".into()))?.bytes("CA")?;
        let mut roots = RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(&ca) {
            let cert = cert.map_err(|e| Error::Config(format!("invalid CA PEM: {e}")))?;
            roots.add(cert).map_err(|e| Error::Config(format!("invalid CA certificate: {e}")))?;
        }
        if roots.is_empty() {
            return Err(Error::Config("the CA PEM holds no certificate".into()));
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| Error::Config(e.to_string()))?
            .with_root_certificates(roots);
        let mut config = match (&self.cert, &self.key) {
            (Some(cert), Some(key)) => {
                let chain = CertificateDer::pem_slice_iter(&cert.bytes("certificate")?)
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| Error::Config(format!("invalid certificate PEM: {e}")))?;
                let key = PrivateKeyDer::from_pem_slice(&key.bytes("key")?)
                    .map_err(|e| Error::Config(format!("invalid key PEM: {e}")))?;
                builder.with_client_auth_cert(chain, key).map_err(|e| Error::Config(e.to_string()))?
            }
            _ => builder.with_no_client_auth(),
        };
        if !self.resumption {
            config.resumption = rustls::client::Resumption::disabled();
        }
        Ok(Arc::new(config))
    }

    /// Connects to the hub and waits for its greeting. Fails with
    /// [`Error::Refused`] when the hub does not accept the certificate.
    pub async fn connect(self) -> Result<Client, Error> {
        Client::connect(self.settings()?).await
    }

    /// Connects without the SDK's machinery: a [`RawConnection`] for protocol
    /// conformance tests and debugging.
    pub async fn connect_raw(self) -> Result<RawConnection, Error> {
        let (ws, hello) = crate::dial::dial(&self.settings()?).await?;
        Ok(RawConnection::new(ws, hello))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_holds_no_private_key() {
        let pki = certs::dev::DevPki::generate().expect("a dev PKI");
        let pair = pki.client("vt-utrecht-caseworker").expect("a sample identity");
        let builder = Client::builder()
            .url("wss://localhost:7443")
            .ca_pem(pki.ca.cert.clone())
            .identity_pem(pair.cert.clone(), pair.key.clone())
            .state_dir("/var/lib/case-system/mls")
            .state_key(StateKey::new([0xAB; 32]));
        let settings = builder.settings().expect("a complete configuration");
        let printed = format!("{builder:?} {settings:?}");
        let key_body = pair.key.lines().nth(1).expect("a PEM body line");
        assert!(!printed.contains(key_body), "the private key is in the Debug output");
        assert!(!printed.contains("PRIVATE KEY"), "{printed}");
        assert!(!printed.contains("171, 171") && !printed.to_lowercase().contains("abab"), "{printed}");
        assert!(printed.contains("/var/lib/case-system/mls"), "the rest is still shown: {printed}");
    }
}
