//! TLS 1.3 with mandatory client certificates, and who the peer is.
//!
//! rustls (ring provider) checks the chain to the configured CA, the validity
//! period and, when CRLs are configured, revocation. On top of that the
//! [`IdentityVerifier`] refuses, still inside the handshake, any certificate
//! whose subject does not carry a complete Ketenhub identity. A connection that
//! completes the handshake therefore always has an identity, which
//! [`peer_identity`] reads back. This module must never accept a connection
//! without a verified client certificate.
//!
//! The CRLs can be read again while the hub runs ([`Certificates`]): a reload
//! builds a whole new [`ServerConfig`] and swaps it in, so every handshake
//! uses one consistent set of lists, and a file that does not load leaves the
//! set in force untouched. The configurations share one session cache, so a
//! reload does not cost every client a full handshake; a resumed session is
//! not verified by rustls again, which is why the hub checks each peer's
//! certificate itself after the handshake ([`Certificates::check`]).

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use certs::revocation::{CertRefusal, CertValidity, RevocationList, RevocationLists};
use rustls::server::{ServerSessionMemoryCache, StoresServerSessions};

use rustls::client::danger::HandshakeSignatureValid;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ServerConnection, WebPkiClientVerifier};
use rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName, OtherError, RootCertStore, ServerConfig,
    SignatureScheme,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer, UnixTime};
use wire::Identity;

/// A TLS setup that could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file could not be read or holds nothing usable.
    #[error("cannot load {path}: {message}")]
    Load {
        /// The file.
        path: String,
        /// What was wrong.
        message: String,
    },
    /// rustls refused the configuration.
    #[error("invalid TLS configuration: {0}")]
    Config(String),
}

/// Sessions the hub remembers for resumption, shared by every configuration a
/// reload builds (rustls's default size).
const SESSION_CACHE_ENTRIES: usize = 256;

fn load_error(path: &Path, message: impl ToString) -> TlsError {
    TlsError::Load { path: path.display().to_string(), message: message.to_string() }
}

/// Reads every certificate from a PEM file; at least one must be there.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| load_error(path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| load_error(path, e))?;
    if certs.is_empty() {
        return Err(load_error(path, "no certificate found"));
    }
    Ok(certs)
}

/// Reads a private key from a PEM file.
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| load_error(path, e))
}

/// Builds a root store from a CA file.
pub fn load_roots(path: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in load_certs(path)? {
        roots.add(cert).map_err(|e| load_error(path, e))?;
    }
    Ok(roots)
}

/// Reads every CRL of every file, with what each says; a file without a CRL
/// is an error, not an empty list (a garbled file must never mean "nothing is
/// revoked").
fn load_crls(
    paths: &[impl AsRef<Path>],
) -> Result<(Vec<CertificateRevocationListDer<'static>>, Vec<RevocationList>), TlsError> {
    let (mut ders, mut lists) = (Vec::new(), Vec::new());
    for path in paths {
        let path = path.as_ref();
        let before = ders.len();
        for crl in CertificateRevocationListDer::pem_file_iter(path).map_err(|e| load_error(path, e))? {
            let crl = crl.map_err(|e| load_error(path, e))?;
            lists.push(RevocationList::from_der(&crl).map_err(|e| load_error(path, e))?);
            ders.push(crl);
        }
        if ders.len() == before {
            return Err(load_error(path, "no certificate revocation list found"));
        }
    }
    Ok((ders, lists))
}

/// The ring crypto provider, the one crypto backend of Ketenhub's TLS.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Builds the hub's TLS configuration: TLS 1.3 only, client certificate
/// required, CRLs past their `nextUpdate` refused.
pub fn server_config(
    ca: &Path,
    cert: &Path,
    key: &Path,
    crls: &[impl AsRef<Path>],
) -> Result<Arc<ServerConfig>, TlsError> {
    let crls = crls.iter().map(|p| p.as_ref().to_owned()).collect();
    Ok(Certificates::load(ca, cert, key, crls, false)?.current().server.clone())
}

/// The TLS configuration in force and the CRLs it was built with.
pub struct InForce {
    /// What new handshakes use.
    pub server: Arc<ServerConfig>,
    /// The lists, as the hub's own certificate checks read them.
    pub lists: RevocationLists,
    /// The lists' bytes, to tell a reload that changed something from one that did not.
    ders: Vec<CertificateRevocationListDer<'static>>,
}

impl InForce {
    /// Whether these are the same lists as `other`'s.
    pub fn same_lists(&self, other: &InForce) -> bool {
        self.ders == other.ders
    }

    /// The `nextUpdate` (Unix seconds) of each list past it at `now`.
    pub fn stale(&self, now: i64) -> Vec<i64> {
        self.lists.lists().iter().filter(|l| l.is_stale(now)).filter_map(RevocationList::next_update).collect()
    }
}

/// What every configuration is built from: all but the CRLs are read once.
struct Sources {
    /// The identity CA MLS leaves must be bound to: the same CA as for TLS.
    identities: Arc<certs::binding::Verifier>,
    crl_files: Vec<PathBuf>,
    allow_stale: bool,
    roots: Arc<RootCertStore>,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    sessions: Arc<dyn StoresServerSessions>,
}

/// The hub's certificates and the CRLs in force, which a reload replaces.
pub struct Certificates {
    sources: Sources,
    in_force: RwLock<Arc<InForce>>,
}

/// Seconds since the Unix epoch, as certificates count time.
pub fn now_secs() -> i64 {
    (crate::clock::now_ms() / 1000) as i64
}

impl Sources {
    fn read(&self) -> Result<InForce, TlsError> {
        let (ders, lists) = load_crls(&self.crl_files)?;
        let provider = provider();
        let mut verifier = WebPkiClientVerifier::builder_with_provider(self.roots.clone(), provider.clone())
            .with_crls(ders.iter().cloned());
        if !self.allow_stale {
            verifier = verifier.enforce_revocation_expiration();
        }
        let inner = verifier.build().map_err(|e| TlsError::Config(e.to_string()))?;
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| TlsError::Config(e.to_string()))?
            .with_client_cert_verifier(Arc::new(IdentityVerifier { inner }))
            .with_single_cert(self.chain.clone(), self.key.clone_key())
            .map_err(|e| TlsError::Config(e.to_string()))?;
        config.session_storage = self.sessions.clone();
        Ok(InForce { server: Arc::new(config), lists: RevocationLists::new(lists, self.allow_stale), ders })
    }
}

/// The CA file as the verifier of MLS leaf bindings.
fn identity_ca(path: &Path) -> Result<certs::binding::Verifier, TlsError> {
    let pem = std::fs::read(path).map_err(|e| load_error(path, e))?;
    certs::binding::Verifier::from_pem(&pem).map_err(|e| load_error(path, e))
}

impl Certificates {
    /// Loads the CA, the hub's pair and the CRLs; `allow_stale` lets CRLs past
    /// their `nextUpdate` count (otherwise certificates they cover are refused).
    pub fn load(
        ca: &Path,
        cert: &Path,
        key: &Path,
        crl_files: Vec<PathBuf>,
        allow_stale: bool,
    ) -> Result<Self, TlsError> {
        let sources = Sources {
            identities: Arc::new(identity_ca(ca)?),
            roots: Arc::new(load_roots(ca)?),
            chain: load_certs(cert)?,
            key: load_key(key)?,
            crl_files,
            allow_stale,
            sessions: ServerSessionMemoryCache::new(SESSION_CACHE_ENTRIES),
        };
        let first = sources.read()?;
        Ok(Self { sources, in_force: RwLock::new(Arc::new(first)) })
    }

    /// The verifier of MLS leaf bindings against the chain CA.
    pub fn identities(&self) -> Arc<certs::binding::Verifier> {
        self.sources.identities.clone()
    }

    /// The CRL files, for log lines and audit entries.
    pub fn crl_files(&self) -> String {
        self.sources.crl_files.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
    }

    /// Whether CRLs past their `nextUpdate` still count.
    pub fn allows_stale(&self) -> bool {
        self.sources.allow_stale
    }

    /// What is in force now.
    pub fn current(&self) -> Arc<InForce> {
        self.in_force.read().unwrap_or_else(|poisoned| poisoned.into_inner()).clone()
    }

    /// Reads the CRL files again into a complete new configuration; nothing
    /// changes until it is [installed](Self::install).
    pub fn read_again(&self) -> Result<InForce, TlsError> {
        self.sources.read()
    }

    /// Puts `candidate` in force for every handshake from now on.
    pub fn install(&self, candidate: InForce) {
        *self.in_force.write().unwrap_or_else(|poisoned| poisoned.into_inner()) = Arc::new(candidate);
    }

    /// Checks a peer's certificate against its validity period and the CRLs in force, now.
    pub fn check(&self, certificate: &CertValidity) -> Result<(), CertRefusal> {
        self.current().lists.check(certificate, now_secs())
    }
}

/// The identity of a connection that completed the handshake.
pub fn peer_identity(conn: &ServerConnection) -> Option<(Identity, String)> {
    let leaf = conn.peer_certificates()?.first()?;
    let identity = certs::identity_from_der(leaf).ok()?;
    Some((identity, certs::fingerprint(leaf)))
}

/// What the peer's certificate says about its validity: after a resumed
/// handshake, the certificate of the session's first, full handshake.
pub fn peer_validity(conn: &ServerConnection) -> Option<CertValidity> {
    CertValidity::from_der(conn.peer_certificates()?.first()?).ok()
}

/// A certificate without a usable identity. rustls prints wrapped errors with
/// `Debug`, so `Debug` here gives the readable reason for the refusal log.
struct NoIdentity(certs::CertIdentityError);

impl std::fmt::Debug for NoIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "no Ketenhub identity: {}", self.0)
    }
}

impl std::fmt::Display for NoIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self, f)
    }
}

impl std::error::Error for NoIdentity {}

/// Wraps the WebPKI verifier and also requires a complete Ketenhub identity.
#[derive(Debug)]
pub struct IdentityVerifier {
    inner: Arc<dyn ClientCertVerifier>,
}

impl ClientCertVerifier for IdentityVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let verified = self.inner.verify_client_cert(end_entity, intermediates, now)?;
        certs::identity_from_der(end_entity).map_err(|e| {
            rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(NoIdentity(e)))))
        })?;
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}
