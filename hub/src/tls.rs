//! TLS 1.3 with mandatory client certificates, and who the peer is.
//!
//! rustls (ring provider) checks the chain to the configured CA, the validity
//! period and, when CRLs are configured, revocation. On top of that the
//! [`IdentityVerifier`] refuses, still inside the handshake, any certificate
//! whose subject does not carry a complete Ketenhub identity. A connection that
//! completes the handshake therefore always has an identity, which
//! [`peer_identity`] reads back. This module must never accept a connection
//! without a verified client certificate.

use std::path::Path;
use std::sync::Arc;

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

fn load_crls(paths: &[impl AsRef<Path>]) -> Result<Vec<CertificateRevocationListDer<'static>>, TlsError> {
    let mut crls = Vec::new();
    for path in paths {
        let path = path.as_ref();
        for crl in CertificateRevocationListDer::pem_file_iter(path).map_err(|e| load_error(path, e))? {
            crls.push(crl.map_err(|e| load_error(path, e))?);
        }
    }
    Ok(crls)
}

/// The ring crypto provider, the one crypto backend of Ketenhub's TLS.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Builds the hub's TLS configuration: TLS 1.3 only, client certificate required.
pub fn server_config(
    ca: &Path,
    cert: &Path,
    key: &Path,
    crls: &[impl AsRef<Path>],
) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = provider();
    let inner = WebPkiClientVerifier::builder_with_provider(Arc::new(load_roots(ca)?), provider.clone())
        .with_crls(load_crls(crls)?)
        .build()
        .map_err(|e| TlsError::Config(e.to_string()))?;
    let config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_client_cert_verifier(Arc::new(IdentityVerifier { inner }))
        .with_single_cert(load_certs(cert)?, load_key(key)?)
        .map_err(|e| TlsError::Config(e.to_string()))?;
    Ok(Arc::new(config))
}

/// The identity of a connection that completed the handshake.
pub fn peer_identity(conn: &ServerConnection) -> Option<(Identity, String)> {
    let leaf = conn.peer_certificates()?.first()?;
    let identity = certs::identity_from_der(leaf).ok()?;
    Some((identity, certs::fingerprint(leaf)))
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
