//! TLS 1.3 with mandatory client certificates, and who the peer is.
//!
//! rustls (ring provider) checks the chain to the configured CA and the
//! validity period. On top of that the [`IdentityVerifier`] refuses, still
//! inside the handshake, any certificate that the CRLs in force revoke (or
//! whose status they leave unknown), and any whose subject does not carry a
//! complete Ketenhub identity. A connection that completes the handshake
//! therefore always has an identity, which [`peer`] reads back. This
//! module must never accept a connection without a verified client certificate.
//!
//! The revocation check is the hub's own ([`RevocationLists`]) rather than
//! rustls's: rustls verifies a CRL's signature in every handshake that uses it,
//! about a tenth of a handshake's cost, where the hub verifies each list once,
//! when it loads it, against the CA file's certificates, and refuses a list
//! that none of them signed.
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

use certs::revocation::{CertRefusal, CertValidity, Intermediate, RevocationList, RevocationLists};
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
    /// A reread CRL is older than the one of its issuer in force.
    #[error("a revocation list issued {issued} is older than the one in force")]
    Older {
        /// The older list's `thisUpdate`.
        issued: String,
    },
    /// A CRL at a start or a reread is older than one of its issuer this hub
    /// had in force before: putting it in force would undo the revocations
    /// published since.
    #[error(
        "a revocation list issued {issued} is older than the one of its issuer this hub had in force before \
         (issued {before}); publish a list at least as new"
    )]
    OlderThanBefore {
        /// The older list's `thisUpdate`.
        issued: String,
        /// The `thisUpdate` of the newest list of that issuer the hub had in force.
        before: String,
    },
}

impl TlsError {
    /// The refusal of a list that would roll revocations back, found against
    /// the newest lists the hub has had in force (at a start or a reread).
    pub fn rolled_back(older: certs::revocation::RolledBack) -> Self {
        let utc = certs::revocation::utc;
        Self::OlderThanBefore { issued: utc(older.issued), before: utc(older.in_force) }
    }
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
    roots_of(path, load_certs(path)?)
}

fn roots_of(path: &Path, authorities: Vec<CertificateDer<'static>>) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in authorities {
        roots.add(cert).map_err(|e| load_error(path, e))?;
    }
    Ok(roots)
}

/// Reads every CRL of every file, with what each says, each verified against
/// `authorities`; a file without a CRL is an error, not an empty list (a
/// garbled file must never mean "nothing is revoked").
fn load_crls(
    paths: &[impl AsRef<Path>],
    authorities: &[CertificateDer<'static>],
) -> Result<(Vec<CertificateRevocationListDer<'static>>, Vec<RevocationList>), TlsError> {
    let (mut ders, mut lists) = (Vec::new(), Vec::new());
    for path in paths {
        let path = path.as_ref();
        let before = ders.len();
        for crl in CertificateRevocationListDer::pem_file_iter(path).map_err(|e| load_error(path, e))? {
            let crl = crl.map_err(|e| load_error(path, e))?;
            lists.push(RevocationList::signed_by(&crl, authorities).map_err(|e| load_error(path, e))?);
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
    /// The lists, as the handshakes and the hub's later certificate checks read them.
    pub lists: Arc<RevocationLists>,
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
    /// The CA file's certificates: the anchors of every chain and the signers of the CRLs.
    authorities: Arc<[CertificateDer<'static>]>,
    roots: Arc<RootCertStore>,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    sessions: Arc<dyn StoresServerSessions>,
}

/// The hub's certificates and the CRLs in force, which a reload replaces.
pub struct Certificates {
    sources: Sources,
    in_force: RwLock<Arc<InForce>>,
    /// Held through a reread, from reading the files to installing the lists:
    /// two at once (SIGHUP and the timer) could otherwise install in the wrong order.
    rereading: tokio::sync::Mutex<()>,
}

/// Seconds since the Unix epoch, as certificates count time.
pub fn now_secs() -> i64 {
    (crate::clock::now_ms() / 1000) as i64
}

impl Sources {
    fn read(&self) -> Result<InForce, TlsError> {
        let (ders, lists) = load_crls(&self.crl_files, &self.authorities)?;
        let lists = Arc::new(RevocationLists::new(lists, self.allow_stale));
        let verifier = self.verifier(lists.clone())?;
        let mut config = ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| TlsError::Config(e.to_string()))?
            .with_client_cert_verifier(Arc::new(verifier))
            .with_single_cert(self.chain.clone(), self.key.clone_key())
            .map_err(|e| TlsError::Config(e.to_string()))?;
        config.session_storage = self.sessions.clone();
        Ok(InForce { server: Arc::new(config), lists, ders })
    }

    fn verifier(&self, lists: Arc<RevocationLists>) -> Result<IdentityVerifier, TlsError> {
        let inner = WebPkiClientVerifier::builder_with_provider(self.roots.clone(), provider())
            .build()
            .map_err(|e| TlsError::Config(e.to_string()))?;
        Ok(IdentityVerifier { inner, lists, anchors: self.authorities.clone() })
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
        let authorities = load_certs(ca)?;
        let sources = Sources {
            identities: Arc::new(identity_ca(ca)?),
            roots: Arc::new(roots_of(ca, authorities.clone())?),
            authorities: authorities.into(),
            chain: load_certs(cert)?,
            key: load_key(key)?,
            crl_files,
            allow_stale,
            sessions: ServerSessionMemoryCache::new(SESSION_CACHE_ENTRIES),
        };
        let first = sources.read()?;
        Ok(Self { sources, in_force: RwLock::new(Arc::new(first)), rereading: tokio::sync::Mutex::new(()) })
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

    /// Waits until no other reread runs, and keeps others waiting while held.
    pub async fn rereading(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.rereading.lock().await
    }

    /// What is in force now.
    pub fn current(&self) -> Arc<InForce> {
        self.in_force.read().unwrap_or_else(|poisoned| poisoned.into_inner()).clone()
    }

    /// Reads the CRL files again into a complete new configuration; nothing
    /// changes until it is [installed](Self::install).
    pub fn read_again(&self) -> Result<InForce, TlsError> {
        let candidate = self.sources.read()?;
        if let Some(older) = candidate.lists.older_than(&self.current().lists) {
            return Err(TlsError::Older { issued: certs::revocation::utc(older.issued) });
        }
        Ok(candidate)
    }

    /// Puts `candidate` in force for every handshake from now on.
    pub fn install(&self, candidate: InForce) {
        *self.in_force.write().unwrap_or_else(|poisoned| poisoned.into_inner()) = Arc::new(candidate);
    }

    /// The CA certificates the peer presented that are not anchors, to be
    /// checked with its own after every handshake (a resumed one runs no
    /// verifier) and when the CRLs change; `None` if one cannot be read.
    pub fn presented(&self, conn: &ServerConnection) -> Option<Vec<Intermediate>> {
        beyond_anchors(&self.sources.authorities, conn.peer_certificates()?.get(1..)?)
    }

    /// Checks a peer's certificate against its validity period and the CRLs in force, now.
    pub fn check(&self, certificate: &CertValidity) -> Result<(), CertRefusal> {
        self.current().lists.check(certificate, now_secs())
    }
}

/// Who the peer of a connection that completed the handshake is, what its
/// certificate says about its validity (after a resumed handshake: the
/// certificate of the session's first, full handshake) and the certificate's
/// fingerprint.
pub fn peer(conn: &ServerConnection) -> Option<(Identity, CertValidity, String)> {
    let leaf = conn.peer_certificates()?.first()?;
    let (identity, validity) = certs::identity_and_validity(leaf).ok()?;
    Some((identity, validity, certs::fingerprint(leaf)))
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

/// Wraps the WebPKI verifier (the chain, the validity period) and also checks
/// the CRLs in force and requires a complete Ketenhub identity.
#[derive(Debug)]
pub struct IdentityVerifier {
    inner: Arc<dyn ClientCertVerifier>,
    lists: Arc<RevocationLists>,
    /// Presented certificates that are anchors themselves are not checked, as rustls does not.
    anchors: Arc<[CertificateDer<'static>]>,
}

impl IdentityVerifier {
    /// The end entity and every presented intermediate that is not an anchor
    /// must pass the lists, as rustls checks a whole chain. An intermediate
    /// the client sends but the chain does not use is checked too: stricter,
    /// never laxer.
    fn check_revocation(
        &self,
        end_entity: CertValidity,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<(), rustls::Error> {
        let secs = i64::try_from(now.as_secs()).unwrap_or(i64::MAX);
        // An intermediate that cannot be read has no known status.
        let presented = beyond_anchors(&self.anchors, intermediates).ok_or(CertRefusal::UnknownStatus);
        let chain = presented.map(|presented| end_entity.with_intermediates(presented));
        chain.and_then(|chain| self.lists.check(&chain, secs)).map_err(|refusal| refused(refusal, now))
    }
}

/// The certificates a client presented besides its own that are not among
/// `anchors` (rustls does not check an anchor either), read; `None` if one
/// cannot be read.
fn beyond_anchors(anchors: &[CertificateDer<'_>], presented: &[CertificateDer<'_>]) -> Option<Vec<Intermediate>> {
    let foreign = presented.iter().filter(|c| !anchors.iter().any(|a| a.as_ref() == c.as_ref()));
    foreign.map(|der| Intermediate::from_der(der).ok()).collect()
}

/// rustls's error for a refusal of the lists, as its own CRL check would say it.
fn refused(refusal: CertRefusal, now: UnixTime) -> rustls::Error {
    let error = match refusal {
        CertRefusal::Revoked { .. } => CertificateError::Revoked,
        CertRefusal::UnknownStatus => CertificateError::UnknownRevocationStatus,
        CertRefusal::StaleRevocationList { next_update } => CertificateError::ExpiredRevocationListContext {
            time: now,
            next_update: UnixTime::since_unix_epoch(std::time::Duration::from_secs(
                u64::try_from(next_update).unwrap_or_default(),
            )),
        },
        CertRefusal::Expired { .. } => CertificateError::Expired,
        CertRefusal::NotYetValid { .. } => CertificateError::NotValidYet,
    };
    rustls::Error::InvalidCertificate(error)
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
        let (_, validity) = certs::identity_and_validity(end_entity).map_err(|e| {
            rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(NoIdentity(e)))))
        })?;
        self.check_revocation(validity, intermediates, now)?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use certs::dev::DevPki;

    fn der(pem: &str) -> CertificateDer<'static> {
        CertificateDer::from_pem_slice(pem.as_bytes()).unwrap()
    }

    /// A hub trusting the chain CA and a second one (the dev PKI's rogue CA),
    /// with only the chain CA's CRL in force.
    fn two_cas(dir: &Path) -> (DevPki, Result<Certificates, TlsError>) {
        let pki = DevPki::generate().unwrap();
        pki.write_to(dir).unwrap();
        std::fs::write(dir.join("cas.crt"), format!("{}{}", pki.ca.cert, pki.rogue_ca)).unwrap();
        let (cert, key, crls) = (dir.join("hub.crt"), dir.join("hub.key"), vec![dir.join("ca.crl")]);
        let certificates = Certificates::load(&dir.join("cas.crt"), &cert, &key, crls, false);
        (pki, certificates)
    }

    #[test]
    fn the_handshake_refuses_what_the_lists_revoke_or_leave_unknown() {
        let dir = tempfile::tempdir().unwrap();
        let (pki, certificates) = two_cas(dir.path());
        let certificates = certificates.unwrap();
        let verifier = certificates.sources.verifier(certificates.current().lists.clone()).unwrap();
        let verify = |pem: &str| verifier.verify_client_cert(&der(pem), &[], UnixTime::now()).map(|_| ());
        verify(&pki.client("vt-utrecht-caseworker").unwrap().cert).unwrap();
        let revoked = verify(&pki.revoked.cert).unwrap_err();
        assert_eq!(revoked, rustls::Error::InvalidCertificate(CertificateError::Revoked));
        // A presented intermediate that cannot be read has no known status.
        let leaf = CertValidity::from_der(&der(&pki.client("vt-utrecht-caseworker").unwrap().cert)).unwrap();
        let junk = CertificateDer::from(b"not a certificate".to_vec());
        let unreadable = verifier.check_revocation(leaf, &[junk], UnixTime::now()).unwrap_err();
        assert_eq!(unreadable, rustls::Error::InvalidCertificate(CertificateError::UnknownRevocationStatus));
        let unknown = verify(&pki.intruder.cert).unwrap_err();
        assert_eq!(unknown, rustls::Error::InvalidCertificate(CertificateError::UnknownRevocationStatus));
    }

    #[test]
    fn without_lists_only_the_chain_and_the_identity_count() {
        let dir = tempfile::tempdir().unwrap();
        let (pki, certificates) = two_cas(dir.path());
        let certificates = certificates.unwrap();
        let verifier = certificates.sources.verifier(Arc::default()).unwrap();
        let verify = |pem: &str| verifier.verify_client_cert(&der(pem), &[], UnixTime::now()).map(|_| ());
        verify(&pki.revoked.cert).unwrap();
        verify(&pki.intruder.cert).unwrap();
        let stranger = DevPki::generate().unwrap();
        assert!(verify(&stranger.intruder.cert).is_err(), "a CA the hub does not trust");
    }

    #[test]
    fn a_list_no_trusted_ca_signed_does_not_load() {
        let dir = tempfile::tempdir().unwrap();
        let (_, certificates) = two_cas(dir.path());
        let certificates = certificates.unwrap();
        let impostor = DevPki::generate().unwrap();
        std::fs::write(dir.path().join("ca.crl"), &impostor.crl).unwrap();
        let refused = certificates.read_again().err().expect("a forged list loaded");
        assert!(refused.to_string().contains("no trusted CA"), "{refused}");
    }

    #[test]
    fn two_trusted_cas_of_one_name_make_their_list_ambiguous() {
        let dir = tempfile::tempdir().unwrap();
        let (pki, impostor) = (DevPki::generate().unwrap(), DevPki::generate().unwrap());
        pki.write_to(dir.path()).unwrap();
        std::fs::write(dir.path().join("cas.crt"), format!("{}{}", pki.ca.cert, impostor.ca.cert)).unwrap();
        let (cert, key, crls) =
            (dir.path().join("hub.crt"), dir.path().join("hub.key"), vec![dir.path().join("ca.crl")]);
        let refused = Certificates::load(&dir.path().join("cas.crt"), &cert, &key, crls, false).err().expect("loaded");
        assert!(refused.to_string().contains("different keys"), "{refused}");
    }
}
