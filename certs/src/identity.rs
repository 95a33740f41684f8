//! Reading a Ketenhub identity from a certificate subject.
//!
//! The attributes follow PKIoverheid practice (see `DESIGN.md`): `serialNumber`
//! holds the OIN, `O` the organisation, `OU` the agency kind, `CN` the worker or
//! system id and `title` the role. A certificate that lacks any of them, or
//! carries a value outside the allowed set, has no identity and must be refused.
//! This function never trusts a certificate by itself: chain, validity and
//! revocation are checked by rustls before it is called.

use crate::revocation::CertValidity;
use wire::{Identity, IdentityError};
use x509_parser::oid_registry::{
    Oid, OID_X509_COMMON_NAME, OID_X509_ORGANIZATIONAL_UNIT, OID_X509_ORGANIZATION_NAME, OID_X509_SERIALNUMBER,
    OID_X509_TITLE,
};
use x509_parser::prelude::{FromDer, X509Certificate};

/// Why no identity could be read from a certificate.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CertIdentityError {
    /// The bytes are not a DER X.509 certificate.
    #[error("certificate is not valid DER: {0}")]
    NotDer(String),
    /// An attribute is missing or has an invalid value.
    #[error(transparent)]
    Attribute(#[from] IdentityError),
    /// An attribute appears more than once, which would make the identity ambiguous.
    #[error("certificate subject has more than one {0} attribute")]
    Repeated(&'static str),
}

/// Reads the identity from a DER-encoded certificate.
pub fn identity_from_der(der: &[u8]) -> Result<Identity, CertIdentityError> {
    identity_of(&parse(der)?)
}

/// Reads the identity and the validity facts from a DER-encoded certificate,
/// parsing it once: the handshake needs both for every connection.
pub fn identity_and_validity(der: &[u8]) -> Result<(Identity, CertValidity), CertIdentityError> {
    let cert = parse(der)?;
    Ok((identity_of(&cert)?, CertValidity::of(&cert)))
}

fn parse(der: &[u8]) -> Result<X509Certificate<'_>, CertIdentityError> {
    let (_, cert) = X509Certificate::from_der(der).map_err(|e| CertIdentityError::NotDer(e.to_string()))?;
    Ok(cert)
}

fn identity_of(cert: &X509Certificate<'_>) -> Result<Identity, CertIdentityError> {
    let subject = cert.subject();
    let attribute = |oid: &Oid<'static>, name: &'static str| -> Result<String, CertIdentityError> {
        let mut values = subject.iter_attributes().filter(|a| a.attr_type() == oid);
        let first = values.next().ok_or(IdentityError::Missing(name))?;
        if values.next().is_some() {
            return Err(CertIdentityError::Repeated(name));
        }
        let value = first.as_str().map_err(|_| IdentityError::Missing(name))?;
        Ok(value.to_owned())
    };
    let worker = attribute(&OID_X509_COMMON_NAME, "CN")?;
    wire::identity::validate_worker(&worker)?;
    Ok(Identity {
        oin: attribute(&OID_X509_SERIALNUMBER, "serialNumber")?.parse()?,
        organisation: attribute(&OID_X509_ORGANIZATION_NAME, "O")?,
        kind: attribute(&OID_X509_ORGANIZATIONAL_UNIT, "OU")?.parse()?,
        worker,
        role: attribute(&OID_X509_TITLE, "title")?.parse()?,
    })
}

/// The SHA-256 fingerprint of a DER certificate, as lowercase hex.
pub fn fingerprint(der: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, der);
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}
