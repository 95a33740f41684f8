//! The binding of an MLS leaf to a chain certificate, so that no one but the
//! holder of an identity's certificate key can pass for it in a case's group.
//!
//! An MLS basic credential is only a name: anyone can make a KeyPackage whose
//! credential says "Anna of Veilig Thuis Utrecht", the hub included. So every
//! leaf node Ketenhub makes carries a leaf-node extension of type
//! [`EXTENSION_TYPE`] holding the identity's certificate chain and a signature,
//! made with the certificate's private key (the one its TLS connection uses),
//! over a domain-separated statement naming the credential and the leaf's MLS
//! signature key ([`statement`]). A client accepts a leaf only when the chain
//! leads to the identity CA it is configured with, the certificate's subject is
//! the credential's identity, and the signature verifies ([`Verifier`]).
//!
//! A leaf being brought in (a KeyPackage to add, a new group's first leaf, a
//! leaf a commit changes) needs a certificate valid now ([`Validity::Now`]): a
//! key from an expired certificate binds nothing new. A leaf already in a
//! group's tree is checked at the earlier of now and its certificate's end of
//! validity ([`Validity::Ever`]), so that a member whose certificate has since
//! expired stays recognisable. Clients do not see CRLs yet (see docs/mls.md).
//! Only caseworker and system certificates hold case devices.
//!
//! Each bound leaf has a [`SafetyNumber`]: a short digest of the certificate and
//! the leaf's signature key that two caseworkers compare out of band.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use openmls::prelude::{Capabilities, Extension, ExtensionType, Extensions, LeafNode, UnknownExtension};
use rustls::crypto::ring::default_provider;
use rustls::sign::SigningKey;
use rustls::SignatureScheme;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, TrustAnchor, UnixTime};
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;
use wire::merkle::sha256;
use wire::mls::{credential_identity, credential_member, CIPHERSUITE};
use wire::{Identity, MemberId};

use crate::{fingerprint, identity_from_der, CertIdentityError};

/// The leaf-node extension type of a binding, from the range RFC 9420 leaves to private use.
pub const EXTENSION_TYPE: u16 = 0xF4B1;

/// Domain separation: the certificate key signs this statement and nothing that could be mistaken for it.
const STATEMENT_DOMAIN: &[u8] = b"ketenhub-mls-leaf-binding-v1";
/// Domain separation of the safety number's digest.
const SAFETY_DOMAIN: &[u8] = b"ketenhub-safety-number-v1";
/// The one format version of the extension's content.
const FORMAT: u8 = 1;
/// The largest extension accepted: a chain of a few certificates and a signature.
pub const MAX_EXTENSION_BYTES: usize = 32 * 1024;
/// The most certificates a chain may hold (the end entity and its intermediates).
pub const MAX_CHAIN: usize = 4;

/// The TLS signature schemes a binding may be signed with, in order of preference.
const SCHEMES: &[SignatureScheme] = &[
    SignatureScheme::ED25519,
    SignatureScheme::ECDSA_NISTP256_SHA256,
    SignatureScheme::ECDSA_NISTP384_SHA384,
    SignatureScheme::RSA_PSS_SHA256,
];

/// When a binding's certificate must have been valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Validity {
    /// Now: for a leaf being brought into a group.
    Now,
    /// At some time up to now: for a leaf already in a group's tree.
    Ever,
}

/// Why a leaf's binding was refused, or could not be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BindingError {
    /// The leaf carries no binding extension.
    #[error("the leaf carries no certificate binding")]
    Missing,
    /// The extension is not a binding in Ketenhub's format.
    #[error("the certificate binding is malformed: {0}")]
    Malformed(String),
    /// The certificate chain does not lead to the identity CA.
    #[error("the binding's certificate is not from the identity CA: {0}")]
    Chain(String),
    /// The certificate carries no Ketenhub identity.
    #[error("the binding's certificate has no Ketenhub identity: {0}")]
    NoIdentity(#[from] CertIdentityError),
    /// The certificate names someone else than the leaf's credential.
    #[error("the leaf's credential names {credential} but its certificate is {certificate}'s")]
    OtherIdentity {
        /// Whom the credential names.
        credential: String,
        /// Whom the certificate names.
        certificate: String,
    },
    /// The certificate's role holds no case devices (only caseworkers and systems do).
    #[error("a {0} certificate cannot hold a device in a case")]
    Role(wire::Role),
    /// The signature over the statement does not verify with the certificate's key.
    #[error("the binding's signature does not verify with its certificate")]
    Signature,
    /// This side cannot make a binding (an unusable certificate or key).
    #[error("cannot make a binding: {0}")]
    Key(String),
}

/// What a binding extension holds (CBOR), see docs/mls.md.
#[derive(Serialize, Deserialize)]
struct Content {
    /// [`FORMAT`].
    v: u8,
    /// The end-entity certificate first, then intermediates, DER.
    chain: Vec<ByteBuf>,
    /// The TLS `SignatureScheme` code the signature is made with.
    scheme: u16,
    /// The signature over [`statement`].
    signature: ByteBuf,
}

/// The bytes the certificate key signs: the domain, a zero byte, then the
/// credential identity and the MLS signature key, each after its length as a
/// big-endian u16.
pub fn statement(credential_identity: &[u8], signature_key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(STATEMENT_DOMAIN.len() + 5 + credential_identity.len() + signature_key.len());
    out.extend_from_slice(STATEMENT_DOMAIN);
    out.push(0);
    for part in [credential_identity, signature_key] {
        // Both are far below 64 KiB: an identity is a short text, a key at most a few hundred bytes.
        out.extend_from_slice(&(part.len().min(u16::MAX as usize) as u16).to_be_bytes());
        out.extend_from_slice(part);
    }
    out
}

/// The capabilities every Ketenhub leaf declares: its ciphersuite and the binding extension.
pub fn capabilities() -> Capabilities {
    Capabilities::new(None, Some(&[CIPHERSUITE]), Some(&[ExtensionType::Unknown(EXTENSION_TYPE)]), None, None)
}

/// Makes bindings for this identity's leaves: holds the certificate chain and
/// the certificate's private key.
#[derive(Clone)]
pub struct Binder {
    chain: Vec<CertificateDer<'static>>,
    key: Arc<dyn SigningKey>,
    identity: Identity,
}

impl fmt::Debug for Binder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Binder").field("identity", &self.identity.member_id().to_string()).finish_non_exhaustive()
    }
}

impl Binder {
    /// A binder from the identity's certificate chain and private key, in PEM.
    pub fn from_pem(cert_pem: &[u8], key_pem: &[u8]) -> Result<Self, BindingError> {
        let chain = CertificateDer::pem_slice_iter(cert_pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| BindingError::Key(format!("certificate PEM: {e}")))?;
        let first = chain.first().ok_or_else(|| BindingError::Key("the certificate PEM holds none".into()))?;
        let identity = identity_from_der(first)?;
        let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| BindingError::Key(format!("key PEM: {e}")))?;
        let key =
            default_provider().key_provider.load_private_key(key).map_err(|e| BindingError::Key(e.to_string()))?;
        if chain.len() > MAX_CHAIN {
            return Err(BindingError::Key(format!("a chain of more than {MAX_CHAIN} certificates")));
        }
        Ok(Self { chain, key, identity })
    }

    /// The identity the certificate names.
    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    /// The leaf-node extensions binding `signature_key` (a leaf's MLS
    /// signature key) to this identity.
    pub fn extensions(&self, signature_key: &[u8]) -> Result<Extensions<LeafNode>, BindingError> {
        let signer = self.key.choose_scheme(SCHEMES).ok_or_else(|| BindingError::Key("no usable key type".into()))?;
        let signature = signer
            .sign(&statement(&credential_identity(&self.identity), signature_key))
            .map_err(|e| BindingError::Key(e.to_string()))?;
        let content = Content {
            v: FORMAT,
            chain: self.chain.iter().map(|c| ByteBuf::from(c.to_vec())).collect(),
            scheme: u16::from(signer.scheme()),
            signature: ByteBuf::from(signature),
        };
        let extension = Extension::Unknown(EXTENSION_TYPE, UnknownExtension(wire::encode(&content)));
        Extensions::from_vec(vec![extension]).map_err(|e| BindingError::Key(format!("{e:?}")))
    }
}

/// A leaf whose binding verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bound {
    /// The member the leaf belongs to.
    pub member: MemberId,
    /// The SHA-256 fingerprint of its certificate (lowercase hex).
    pub certificate: String,
    /// What two people compare to know they see the same device.
    pub safety_number: SafetyNumber,
}

/// A short digest of a device's binding: SHA-256 over the certificate's
/// fingerprint and the leaf's signature key, shown as eight groups of five
/// digits. Two people who read the same number for a device see the same
/// certificate and the same key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SafetyNumber(String);

impl SafetyNumber {
    fn of(certificate: &[u8], signature_key: &[u8]) -> Self {
        let certificate = sha256(&[certificate]);
        let digest = sha256(&[SAFETY_DOMAIN, &[0], &certificate, signature_key]);
        let groups: Vec<String> = digest
            .chunks_exact(4)
            .map(|c| format!("{:05}", u32::from_be_bytes([c[0], c[1], c[2], c[3]]) % 100_000))
            .collect();
        Self(groups.join(" "))
    }

    /// The number as shown: `12345 67890 …`.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SafetyNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Verifies bindings against the identity CA.
#[derive(Debug, Clone)]
pub struct Verifier {
    anchors: Vec<TrustAnchor<'static>>,
}

fn malformed(e: impl fmt::Display) -> BindingError {
    BindingError::Malformed(e.to_string())
}

impl Verifier {
    /// A verifier that trusts the CA certificates in `ca_pem`.
    pub fn from_pem(ca_pem: &[u8]) -> Result<Self, BindingError> {
        let anchors = CertificateDer::pem_slice_iter(ca_pem)
            .map(|cert| {
                let cert = cert.map_err(|e| BindingError::Chain(format!("CA PEM: {e}")))?;
                webpki::anchor_from_trusted_cert(&cert)
                    .map(|a| a.to_owned())
                    .map_err(|e| BindingError::Chain(format!("CA certificate: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        if anchors.is_empty() {
            return Err(BindingError::Chain("the CA PEM holds no certificate".into()));
        }
        Ok(Self { anchors })
    }

    /// Verifies the binding of a leaf node: its extension, against its
    /// credential and signature key.
    pub fn verify_leaf(&self, leaf: &LeafNode, validity: Validity) -> Result<Bound, BindingError> {
        let extension = leaf.extensions().unknown(EXTENSION_TYPE).ok_or(BindingError::Missing)?;
        let credential = openmls::prelude::BasicCredential::try_from(leaf.credential().clone())
            .map_err(|_| malformed("the leaf's credential is not a basic credential"))?;
        self.verify(&extension.0, credential.identity(), leaf.signature_key().as_slice(), validity)
    }

    /// Verifies a leaf that replaces `old` (an update path or an Update
    /// proposal): one that keeps the old binding and key brings nothing new in
    /// and is checked as a leaf of the tree, any other as a new one.
    pub fn verify_replacement(&self, old: Option<&LeafNode>, new: &LeafNode) -> Result<Bound, BindingError> {
        let binding = |leaf: &LeafNode| leaf.extensions().unknown(EXTENSION_TYPE).map(|e| e.0.clone());
        let kept = old.is_some_and(|old| binding(old) == binding(new) && old.signature_key() == new.signature_key());
        self.verify_leaf(new, if kept { Validity::Ever } else { Validity::Now })
    }

    /// Verifies binding `extension` for a leaf with `credential` (identity
    /// bytes) and MLS `signature_key`, with the certificate valid as `validity` says.
    pub fn verify(
        &self,
        extension: &[u8],
        credential: &[u8],
        signature_key: &[u8],
        validity: Validity,
    ) -> Result<Bound, BindingError> {
        if extension.len() > MAX_EXTENSION_BYTES {
            return Err(malformed(format!("more than {MAX_EXTENSION_BYTES} bytes")));
        }
        let content: Content = wire::decode(extension).map_err(malformed)?;
        if content.v != FORMAT || content.chain.is_empty() || content.chain.len() > MAX_CHAIN {
            return Err(malformed("an unknown version or a chain of the wrong length"));
        }
        let chain: Vec<CertificateDer<'_>> = content.chain.iter().map(|c| CertificateDer::from(c.as_slice())).collect();
        let (leaf_cert, intermediates) = chain.split_first().ok_or_else(|| malformed("an empty chain"))?;
        let identity = identity_from_der(leaf_cert)?;
        if !matches!(identity.role, wire::Role::Caseworker | wire::Role::System) {
            return Err(BindingError::Role(identity.role));
        }
        let (named, _) = credential_member(credential).ok_or_else(|| malformed("the credential is not Ketenhub's"))?;
        if credential_identity(&identity) != credential {
            return Err(BindingError::OtherIdentity {
                credential: named.to_string(),
                certificate: identity.member_id().to_string(),
            });
        }
        let end_entity = webpki::EndEntityCert::try_from(leaf_cert).map_err(|e| BindingError::Chain(e.to_string()))?;
        let algorithms = default_provider().signature_verification_algorithms;
        end_entity
            .verify_for_usage(
                algorithms.all,
                &self.anchors,
                intermediates,
                checked_at(leaf_cert, validity)?,
                webpki::KeyUsage::client_auth(),
                None,
                None,
            )
            .map_err(|e| BindingError::Chain(e.to_string()))?;
        let scheme = SignatureScheme::from(content.scheme);
        let candidates = algorithms
            .mapping
            .iter()
            .find(|(s, _)| *s == scheme && SCHEMES.contains(s))
            .map(|(_, algs)| *algs)
            .ok_or(BindingError::Signature)?;
        let message = statement(credential, signature_key);
        if !candidates.iter().any(|alg| end_entity.verify_signature(*alg, &message, &content.signature).is_ok()) {
            return Err(BindingError::Signature);
        }
        Ok(Bound {
            member: identity.member_id(),
            certificate: fingerprint(leaf_cert),
            safety_number: SafetyNumber::of(leaf_cert, signature_key),
        })
    }
}

/// The time a chain is checked at: now, or for [`Validity::Ever`] the
/// certificate's last valid second if that came first.
fn checked_at(cert: &[u8], validity: Validity) -> Result<UnixTime, BindingError> {
    if validity == Validity::Now {
        return Ok(UnixTime::now());
    }
    use x509_parser::prelude::{FromDer, X509Certificate};
    let (_, parsed) = X509Certificate::from_der(cert).map_err(|e| malformed(format!("certificate: {e}")))?;
    let not_after = u64::try_from(parsed.validity().not_after.timestamp()).unwrap_or(0);
    let now = UnixTime::now().as_secs();
    Ok(UnixTime::since_unix_epoch(Duration::from_secs(now.min(not_after))))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dev::DevPki;

    fn binder(pki: &DevPki, slug: &str) -> Binder {
        let pair = pki.client(slug).unwrap();
        Binder::from_pem(pair.cert.as_bytes(), pair.key.as_bytes()).unwrap()
    }

    fn content(extensions: &Extensions<LeafNode>) -> Vec<u8> {
        extensions.unknown(EXTENSION_TYPE).unwrap().0.clone()
    }

    #[test]
    fn a_binding_verifies_for_its_own_identity_and_key_only() {
        let pki = DevPki::generate().unwrap();
        let verifier = Verifier::from_pem(pki.ca.cert.as_bytes()).unwrap();
        let anna = binder(&pki, "vt-utrecht-caseworker");
        let name = credential_identity(anna.identity());
        let extension = content(&anna.extensions(b"mls-key").unwrap());
        let bound = verifier.verify(&extension, &name, b"mls-key", Validity::Now).unwrap();
        assert_eq!(bound.member, anna.identity().member_id());
        assert_eq!(bound.safety_number.as_str().len(), 8 * 5 + 7);
        // Another MLS key under the same binding: the signature does not cover it.
        assert_eq!(verifier.verify(&extension, &name, b"other-key", Validity::Now), Err(BindingError::Signature));
        // Another identity's credential with Anna's certificate.
        let other = credential_identity(binder(&pki, "lt-woerden-caseworker").identity());
        assert!(matches!(
            verifier.verify(&extension, &other, b"mls-key", Validity::Now),
            Err(BindingError::OtherIdentity { .. })
        ));
    }

    #[test]
    fn a_certificate_from_another_ca_is_refused() {
        let (chain, elsewhere) = (DevPki::generate().unwrap(), DevPki::generate().unwrap());
        let verifier = Verifier::from_pem(chain.ca.cert.as_bytes()).unwrap();
        let impostor = binder(&elsewhere, "vt-utrecht-caseworker");
        let extension = content(&impostor.extensions(b"mls-key").unwrap());
        let name = credential_identity(impostor.identity());
        assert!(matches!(verifier.verify(&extension, &name, b"mls-key", Validity::Now), Err(BindingError::Chain(_))));
    }

    #[test]
    fn an_expired_certificate_binds_nothing_new_and_an_officer_holds_no_device() {
        let pki = DevPki::generate().unwrap();
        let verifier = Verifier::from_pem(pki.ca.cert.as_bytes()).unwrap();
        let old = Binder::from_pem(pki.expired.cert.as_bytes(), pki.expired.key.as_bytes()).unwrap();
        let name = credential_identity(old.identity());
        let extension = content(&old.extensions(b"mls-key").unwrap());
        // A key from an expired certificate brings no new leaf in...
        let fresh = verifier.verify(&extension, &name, b"mls-key", Validity::Now);
        assert!(matches!(fresh, Err(BindingError::Chain(_))), "{fresh:?}");
        // ...while a leaf it bound while valid stays recognisable in a tree.
        assert!(verifier.verify(&extension, &name, b"mls-key", Validity::Ever).is_ok());
        let officer = binder(&pki, "vt-utrecht-privacy");
        let extension = content(&officer.extensions(b"mls-key").unwrap());
        let refused = verifier.verify(&extension, &credential_identity(officer.identity()), b"mls-key", Validity::Now);
        assert_eq!(refused, Err(BindingError::Role(wire::Role::PrivacyOfficer)));
    }

    #[test]
    fn garbage_is_malformed_not_a_panic() {
        let pki = DevPki::generate().unwrap();
        let verifier = Verifier::from_pem(pki.ca.cert.as_bytes()).unwrap();
        for bytes in [&b""[..], b"\xa0", b"\xff\xff", &[0u8; 40][..]] {
            assert!(
                matches!(verifier.verify(bytes, b"x", b"k", Validity::Now), Err(BindingError::Malformed(_))),
                "{bytes:?}"
            );
        }
        assert!(matches!(
            verifier.verify(&vec![0; MAX_EXTENSION_BYTES + 1], b"x", b"k", Validity::Now),
            Err(BindingError::Malformed(_))
        ));
    }

    #[test]
    fn safety_numbers_differ_by_key_and_certificate() {
        let a = SafetyNumber::of(b"cert-a", b"key");
        assert_eq!(a, SafetyNumber::of(b"cert-a", b"key"));
        assert_ne!(a, SafetyNumber::of(b"cert-b", b"key"));
        assert_ne!(a, SafetyNumber::of(b"cert-a", b"other"));
    }
}
