//! Whether a certificate is still good: its validity period and the revocation
//! lists (CRLs) in force.
//!
//! rustls checks both inside a full handshake, but a resumed TLS 1.3 session
//! restores the client's certificate without checking it again, and a
//! connection, once open, outlives both its certificate's `notAfter` and any
//! CRL published later. The hub therefore checks the certificate itself after
//! every handshake and again whenever its CRLs change, with [`RevocationLists::check`].
//!
//! Nothing here verifies a signature: a certificate read here has passed
//! rustls's chain verification when its session was first established, and a
//! CRL is verified by rustls when the hub loads it (a list rustls refuses is
//! never put in force). What is read here are the facts that change with time.

use std::collections::HashSet;

use x509_parser::prelude::{FromDer, X509Certificate};
use x509_parser::revocation_list::CertificateRevocationList;

/// The validity facts of a client certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertValidity {
    /// The issuer's name, as DER (compared with a CRL's issuer).
    issuer: Vec<u8>,
    /// The serial number's bytes, as DER content.
    serial: Vec<u8>,
    /// Unix seconds.
    not_before: i64,
    /// Unix seconds; the certificate is valid through this second.
    not_after: i64,
}

/// A certificate or CRL that cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unreadable {
    /// Not a DER X.509 certificate.
    #[error("not a DER X.509 certificate: {0}")]
    Certificate(String),
    /// Not a DER X.509 CRL.
    #[error("not a DER X.509 revocation list: {0}")]
    RevocationList(String),
}

/// Why a certificate may no longer be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CertRefusal {
    /// Past its `notAfter`.
    #[error("the client certificate expired at {}", utc(*not_after))]
    Expired {
        /// Unix seconds.
        not_after: i64,
    },
    /// Before its `notBefore`.
    #[error("the client certificate is not valid before {}", utc(*not_before))]
    NotYetValid {
        /// Unix seconds.
        not_before: i64,
    },
    /// Listed in a CRL in force.
    #[error("the client certificate (serial {serial}) is revoked")]
    Revoked {
        /// The serial number, hex.
        serial: String,
    },
    /// The issuer's CRL in force is past its `nextUpdate`, so the certificate's
    /// revocation status is unknown.
    #[error("the revocation list of the certificate's issuer is out of date (next update was due {})", utc(*next_update))]
    StaleRevocationList {
        /// Unix seconds.
        next_update: i64,
    },
}

impl CertRefusal {
    /// The name of the rule that refuses, for error frames and the audit log.
    pub fn rule(&self) -> &'static str {
        match self {
            Self::Expired { .. } => "certificate-expired",
            Self::NotYetValid { .. } => "certificate-not-yet-valid",
            Self::Revoked { .. } => "certificate-revoked",
            Self::StaleRevocationList { .. } => "revocation-list-out-of-date",
        }
    }
}

/// `YYYY-MM-DD HH:MM:SS UTC` for Unix seconds.
pub fn utc(secs: i64) -> String {
    wire::calendar::format_seconds(secs)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl CertValidity {
    /// Reads the facts from a DER certificate.
    pub fn from_der(der: &[u8]) -> Result<Self, Unreadable> {
        let (_, cert) = X509Certificate::from_der(der).map_err(|e| Unreadable::Certificate(e.to_string()))?;
        let validity = cert.validity();
        Ok(Self {
            issuer: cert.issuer().as_raw().to_vec(),
            serial: cert.raw_serial().to_vec(),
            not_before: validity.not_before.timestamp(),
            not_after: validity.not_after.timestamp(),
        })
    }

    /// The last second (Unix) in which the certificate is valid.
    pub fn not_after(&self) -> i64 {
        self.not_after
    }

    /// The serial number, hex.
    pub fn serial(&self) -> String {
        hex(&self.serial)
    }

    /// The serial number's bytes (DER integer content).
    pub fn serial_bytes(&self) -> &[u8] {
        &self.serial
    }

    /// Whether the validity period holds at `now` (Unix seconds).
    pub fn check_period(&self, now: i64) -> Result<(), CertRefusal> {
        if now > self.not_after {
            return Err(CertRefusal::Expired { not_after: self.not_after });
        }
        if now < self.not_before {
            return Err(CertRefusal::NotYetValid { not_before: self.not_before });
        }
        Ok(())
    }
}

/// One CRL's facts: whose certificates it covers, until when, and which it revokes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevocationList {
    issuer: Vec<u8>,
    next_update: Option<i64>,
    revoked: HashSet<Vec<u8>>,
}

impl RevocationList {
    /// Reads the facts from a DER CRL.
    pub fn from_der(der: &[u8]) -> Result<Self, Unreadable> {
        let (_, crl) =
            CertificateRevocationList::from_der(der).map_err(|e| Unreadable::RevocationList(e.to_string()))?;
        Ok(Self {
            issuer: crl.issuer().as_raw().to_vec(),
            next_update: crl.next_update().map(|t| t.timestamp()),
            revoked: crl.iter_revoked_certificates().map(|r| r.raw_serial().to_vec()).collect(),
        })
    }

    /// When the next CRL is due (Unix seconds), if the list says.
    pub fn next_update(&self) -> Option<i64> {
        self.next_update
    }

    /// Whether the list is past its `nextUpdate` at `now`.
    pub fn is_stale(&self, now: i64) -> bool {
        self.next_update.is_some_and(|next| now > next)
    }
}

/// The CRLs in force, and whether lists past their `nextUpdate` still count.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RevocationLists {
    lists: Vec<RevocationList>,
    allow_stale: bool,
}

impl RevocationLists {
    /// The given lists; `allow_stale` lets lists past their `nextUpdate` count.
    pub fn new(lists: Vec<RevocationList>, allow_stale: bool) -> Self {
        Self { lists, allow_stale }
    }

    /// The lists.
    pub fn lists(&self) -> &[RevocationList] {
        &self.lists
    }

    /// Checks a certificate at `now` (Unix seconds): its validity period, then
    /// each list of its issuer (as rustls does, lists of other issuers do not
    /// concern it): not stale unless allowed, and not listing it.
    pub fn check(&self, cert: &CertValidity, now: i64) -> Result<(), CertRefusal> {
        cert.check_period(now)?;
        for list in self.lists.iter().filter(|l| l.issuer == cert.issuer) {
            if !self.allow_stale && list.is_stale(now) {
                return Err(CertRefusal::StaleRevocationList { next_update: list.next_update.unwrap_or_default() });
            }
            if list.revoked.contains(&cert.serial) {
                return Err(CertRefusal::Revoked { serial: cert.serial() });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dev::DevPki;
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, CertificateRevocationListDer};

    fn cert(pem: &str) -> CertValidity {
        CertValidity::from_der(&CertificateDer::from_pem_slice(pem.as_bytes()).unwrap()).unwrap()
    }

    fn list(pem: &str) -> RevocationList {
        RevocationList::from_der(&CertificateRevocationListDer::from_pem_slice(pem.as_bytes()).unwrap()).unwrap()
    }

    fn now() -> i64 {
        time::OffsetDateTime::now_utc().unix_timestamp()
    }

    #[test]
    fn the_dev_crl_revokes_the_revoked_certificate_only() {
        let pki = DevPki::generate().unwrap();
        let lists = RevocationLists::new(vec![list(&pki.crl)], false);
        let refusal = lists.check(&cert(&pki.revoked.cert), now()).unwrap_err();
        assert_eq!(refusal.rule(), "certificate-revoked", "{refusal}");
        lists.check(&cert(&pki.client("vt-utrecht-caseworker").unwrap().cert), now()).unwrap();
        assert_eq!(lists.check(&cert(&pki.expired.cert), now()).unwrap_err().rule(), "certificate-expired");
    }

    #[test]
    fn a_stale_list_refuses_unless_allowed_and_concerns_only_its_issuer() {
        let pki = DevPki::generate().unwrap();
        let good = cert(&pki.client("vt-utrecht-caseworker").unwrap().cert);
        let later = list(&pki.crl).next_update().unwrap() + 1;
        let strict = RevocationLists::new(vec![list(&pki.crl)], false);
        let refusal = strict.check(&CertValidity { not_after: later + 10, ..good.clone() }, later).unwrap_err();
        assert_eq!(refusal.rule(), "revocation-list-out-of-date", "{refusal}");
        let lenient = RevocationLists::new(vec![list(&pki.crl)], true);
        lenient.check(&CertValidity { not_after: later + 10, ..good.clone() }, later).unwrap();
        let foreign = CertValidity { not_after: later + 10, issuer: b"another issuer".to_vec(), ..good };
        strict.check(&foreign, later).unwrap();
    }

    #[test]
    fn times_read_as_utc() {
        assert_eq!(utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc(1_796_185_105), "2026-12-02 04:18:25 UTC");
    }
}
