//! Whether a certificate is still good: its validity period and the revocation
//! lists (CRLs) in force.
//!
//! rustls checks both inside a full handshake, but a resumed TLS 1.3 session
//! restores the client's certificate without checking it again, and a
//! connection, once open, outlives both its certificate's `notAfter` and any
//! CRL published later. The hub therefore checks the certificate itself after
//! every handshake and again whenever its CRLs change, with [`RevocationLists::check`].
//!
//! The same check runs inside every full handshake, after rustls has verified
//! the chain, so that a CRL's signature is verified once, when it is loaded
//! ([`RevocationList::signed_by`]), rather than in every handshake as rustls's
//! own CRL support does. Certificates are not verified here: one read here
//! has passed rustls's chain verification when its session was first
//! established. What is read here are the facts that change with time.

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
    /// The CA certificates the client presented with it that are not the
    /// hub's anchors (none, usually): they are checked with it, in the
    /// handshake, after a resumed one and when the lists change.
    intermediates: Vec<Intermediate>,
}

/// A CA certificate a client presented between its own and the hub's anchors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Intermediate {
    validity: CertValidity,
    /// Its subject name, as DER (what the lists of its certificates name as issuer).
    subject: Vec<u8>,
    /// Its key (DER SubjectPublicKeyInfo).
    key: Vec<u8>,
}

impl Intermediate {
    /// Reads an intermediate from DER.
    pub fn from_der(der: &[u8]) -> Result<Self, Unreadable> {
        let (_, cert) = X509Certificate::from_der(der).map_err(|e| Unreadable::Certificate(e.to_string()))?;
        Ok(Self {
            validity: CertValidity::of(&cert),
            subject: cert.subject().as_raw().to_vec(),
            key: cert.public_key().raw.to_vec(),
        })
    }
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
    /// A CRL that no trusted CA of its issuer's name signed (or one whose key
    /// may not sign CRLs): a forgery, or a list of a CA the hub does not trust.
    #[error("no trusted CA named as its issuer signed this revocation list")]
    Unsigned,
    /// Two trusted CAs with different keys carry the list's issuer name: a
    /// list is matched to certificates by that name, so it cannot tell whose
    /// certificates it covers.
    #[error("two trusted CAs with different keys carry this revocation list's issuer name")]
    AmbiguousIssuer,
    /// A CRL with a critical extension (a partitioned, delta or indirect list):
    /// read as a complete list of its issuer, it would pass certificates it
    /// does not cover.
    #[error("the revocation list has a critical extension (partitioned, delta or indirect lists are not supported)")]
    Unsupported,
    /// A CRL signed with an algorithm rustls would not accept (SHA-1, say), or
    /// whose signed part names another algorithm than its signature.
    #[error("the revocation list's signature algorithm is not accepted")]
    Algorithm,
    /// A CRL without `nextUpdate` would never be stale.
    #[error("the revocation list has no nextUpdate")]
    NoNextUpdate,
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
    /// No CRL in force is its issuer's, while lists are in force: its
    /// revocation status is unknown, and unknown is refused.
    #[error("no revocation list in force covers the client certificate's issuer")]
    UnknownStatus,
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
            Self::UnknownStatus => "revocation-status-unknown",
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
        Ok(Self::of(&cert))
    }

    /// The facts of a parsed certificate.
    pub fn of(cert: &X509Certificate<'_>) -> Self {
        let validity = cert.validity();
        Self {
            issuer: cert.issuer().as_raw().to_vec(),
            serial: cert.raw_serial().to_vec(),
            not_before: validity.not_before.timestamp(),
            not_after: validity.not_after.timestamp(),
            intermediates: Vec::new(),
        }
    }

    /// These facts with the intermediates the client presented with the certificate.
    pub fn with_intermediates(self, intermediates: Vec<Intermediate>) -> Self {
        Self { intermediates, ..self }
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

/// The signature algorithms a CRL may use: those rustls's ring provider
/// verifies for certificates (no SHA-1).
const ACCEPTED_SIGNATURES: [x509_parser::oid_registry::Oid<'static>; 7] = [
    x509_parser::oid_registry::OID_SIG_ECDSA_WITH_SHA256,
    x509_parser::oid_registry::OID_SIG_ECDSA_WITH_SHA384,
    x509_parser::oid_registry::OID_SIG_ED25519,
    x509_parser::oid_registry::OID_PKCS1_SHA256WITHRSA,
    x509_parser::oid_registry::OID_PKCS1_SHA384WITHRSA,
    x509_parser::oid_registry::OID_PKCS1_SHA512WITHRSA,
    x509_parser::oid_registry::OID_PKCS1_RSASSAPSS,
];

/// A CA's key usage, where stated, must include signing CRLs (RFC 5280, 4.2.1.3).
fn may_sign_crls(ca: &X509Certificate<'_>) -> bool {
    match ca.key_usage() {
        Ok(Some(usage)) => usage.value.crl_sign(),
        Ok(None) => true,
        Err(_) => false,
    }
}

/// How new a list of one issuer was: its DER name and the list's `thisUpdate`
/// (Unix seconds). A hub keeps the newest it has had in force per issuer, so
/// that no later reread or restart puts an older list in force.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Mark {
    /// The issuer's DER name.
    #[serde(with = "serde_bytes")]
    pub issuer: Vec<u8>,
    /// The list's `thisUpdate`.
    pub this_update: i64,
}

/// A list that would roll revocations back: its `thisUpdate`, and the later
/// one of its issuer that was in force (Unix seconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RolledBack {
    /// The older list's `thisUpdate`.
    pub issued: i64,
    /// The `thisUpdate` of its issuer's list that was in force.
    pub in_force: i64,
}

/// The first issuer whose newest list in `newer` is older than its mark in
/// `kept`. Only the newest list of each issuer is compared: all of an issuer's
/// lists count together, so an older one beside a newer one takes nothing back.
pub fn rolled_back(newer: &[Mark], kept: &[Mark]) -> Option<RolledBack> {
    merge_marks(&[], newer).into_iter().find_map(|new| {
        let kept = kept.iter().find(|k| k.issuer == new.issuer && k.this_update > new.this_update)?;
        Some(RolledBack { issued: new.this_update, in_force: kept.this_update })
    })
}

/// `marks` with `newer` merged in: per issuer, the later `thisUpdate`. An
/// issuer whose list is no longer given keeps its mark.
pub fn merge_marks(marks: &[Mark], newer: &[Mark]) -> Vec<Mark> {
    let mut merged = marks.to_vec();
    for mark in newer {
        match merged.iter_mut().find(|m| m.issuer == mark.issuer) {
            Some(kept) => kept.this_update = kept.this_update.max(mark.this_update),
            None => merged.push(mark.clone()),
        }
    }
    merged
}

/// One CRL's facts: whose certificates it covers, until when, and which it revokes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevocationList {
    issuer: Vec<u8>,
    /// The key that signed it (DER SubjectPublicKeyInfo): a CA of the same
    /// name with another key is not the list's issuer.
    signer: Vec<u8>,
    /// Unix seconds.
    this_update: i64,
    next_update: Option<i64>,
    revoked: HashSet<Vec<u8>>,
}

impl RevocationList {
    /// Reads the facts from a DER CRL whose signature one of `authorities`
    /// (DER CA certificates: the hub's trust anchors) made: one named as the
    /// list's issuer, whose key usage, if stated, allows signing CRLs.
    pub fn signed_by(der: &[u8], authorities: &[impl AsRef<[u8]>]) -> Result<Self, Unreadable> {
        let (_, crl) =
            CertificateRevocationList::from_der(der).map_err(|e| Unreadable::RevocationList(e.to_string()))?;
        let critical =
            |extensions: &[x509_parser::extensions::X509Extension<'_>]| extensions.iter().any(|e| e.critical);
        if critical(crl.extensions()) || crl.iter_revoked_certificates().any(|r| critical(r.extensions())) {
            return Err(Unreadable::Unsupported);
        }
        let algorithm = &crl.signature_algorithm;
        if algorithm != &crl.tbs_cert_list.signature || !ACCEPTED_SIGNATURES.contains(&algorithm.algorithm) {
            return Err(Unreadable::Algorithm);
        }
        if crl.next_update().is_none() {
            return Err(Unreadable::NoNextUpdate);
        }
        let named: Vec<_> = authorities
            .iter()
            .filter_map(|der| X509Certificate::from_der(der.as_ref()).ok().map(|(_, ca)| ca))
            .filter(|ca| ca.subject().as_raw() == crl.issuer().as_raw())
            .collect();
        if named.iter().any(|ca| ca.public_key().raw != named[0].public_key().raw) {
            return Err(Unreadable::AmbiguousIssuer);
        }
        let signer = named.iter().find(|ca| may_sign_crls(ca) && crl.verify_signature(ca.public_key()).is_ok());
        let signer = signer.ok_or(Unreadable::Unsigned)?.public_key().raw.to_vec();
        Ok(Self::of(&crl, signer))
    }

    fn of(crl: &CertificateRevocationList<'_>, signer: Vec<u8>) -> Self {
        Self {
            issuer: crl.issuer().as_raw().to_vec(),
            signer,
            this_update: crl.last_update().timestamp(),
            next_update: crl.next_update().map(|t| t.timestamp()),
            revoked: crl.iter_revoked_certificates().map(|r| r.raw_serial().to_vec()).collect(),
        }
    }

    /// When the next CRL is due (Unix seconds), if the list says.
    pub fn next_update(&self) -> Option<i64> {
        self.next_update
    }

    /// When the list was issued (its `thisUpdate`, Unix seconds).
    pub fn this_update(&self) -> i64 {
        self.this_update
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

    /// The first of these lists that is older (an earlier `thisUpdate`) than a
    /// list of the same issuer in `in_force`: a reread must not roll back a
    /// revocation by putting an old list over a newer one.
    pub fn older_than(&self, in_force: &RevocationLists) -> Option<RolledBack> {
        rolled_back(&self.marks(), &in_force.marks())
    }

    /// Each list's issuer (its DER name) and `thisUpdate`: what a later start
    /// or reread compares its lists with (see [`rolled_back`]).
    pub fn marks(&self) -> Vec<Mark> {
        self.lists.iter().map(|l| Mark { issuer: l.issuer.clone(), this_update: l.this_update }).collect()
    }

    /// Checks an intermediate a client presented (not one of the hub's
    /// anchors) at `now`: as [`check`](Self::check), and, where a list names
    /// it as issuer but another key signed that list, its status is unknown:
    /// the list is another CA's of the same name, not the intermediate's.
    fn check_presented(&self, intermediate: &Intermediate, now: i64) -> Result<(), CertRefusal> {
        if self.lists.iter().any(|l| l.issuer == intermediate.subject && l.signer != intermediate.key) {
            return Err(CertRefusal::UnknownStatus);
        }
        self.check_one(&intermediate.validity, now)
    }

    /// Checks a certificate at `now` (Unix seconds), with the intermediates
    /// presented with it: each one's validity period, then each list of its
    /// issuer: not stale unless allowed, and not listing it.
    /// While any list is in force, a certificate whose issuer has none is
    /// refused (its status is unknown), as rustls refuses it by default.
    pub fn check(&self, cert: &CertValidity, now: i64) -> Result<(), CertRefusal> {
        self.check_one(cert, now)?;
        cert.intermediates.iter().try_for_each(|intermediate| self.check_presented(intermediate, now))
    }

    fn check_one(&self, cert: &CertValidity, now: i64) -> Result<(), CertRefusal> {
        cert.check_period(now)?;
        let mut own = self.lists.iter().filter(|l| l.issuer == cert.issuer).peekable();
        if own.peek().is_none() && !self.lists.is_empty() {
            return Err(CertRefusal::UnknownStatus);
        }
        for list in own {
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

    fn der(pem: &str) -> CertificateRevocationListDer<'static> {
        CertificateRevocationListDer::from_pem_slice(pem.as_bytes()).unwrap()
    }

    fn ca(pki: &DevPki) -> Vec<CertificateDer<'static>> {
        vec![CertificateDer::from_pem_slice(pki.ca.cert.as_bytes()).unwrap()]
    }

    fn list(pki: &DevPki, pem: &str) -> RevocationList {
        RevocationList::signed_by(&der(pem), &ca(pki)).unwrap()
    }

    fn now() -> i64 {
        time::OffsetDateTime::now_utc().unix_timestamp()
    }

    #[test]
    fn a_roll_back_is_an_issuers_newest_list_older_than_its_mark_even_with_no_list_in_force() {
        let mark = |issuer: &[u8], this_update| Mark { issuer: issuer.to_vec(), this_update };
        let kept = [mark(b"a", 10), mark(b"b", 20)];
        // b's newest list is older than b's mark, though a's list (the only one in force, say) is newer.
        let back = rolled_back(&[mark(b"a", 11), mark(b"b", 15)], &kept);
        assert_eq!(back, Some(RolledBack { issued: 15, in_force: 20 }));
        // An older list of b beside a list as new as the mark takes nothing back.
        assert_eq!(rolled_back(&[mark(b"b", 5), mark(b"b", 20)], &kept), None);
        assert_eq!(rolled_back(&[mark(b"c", 1)], &kept), None, "an issuer without a mark is new");
    }

    #[test]
    fn merged_marks_keep_the_newest_date_of_each_issuer_and_every_issuer() {
        let mark = |issuer: &[u8], this_update| Mark { issuer: issuer.to_vec(), this_update };
        let kept = [mark(b"a", 10), mark(b"b", 20)];
        let merged = merge_marks(&kept, &[mark(b"a", 5), mark(b"b", 30), mark(b"c", 1)]);
        assert_eq!(merged, [mark(b"a", 10), mark(b"b", 30), mark(b"c", 1)]);
    }

    #[test]
    fn the_dev_crl_revokes_the_revoked_certificate_only() {
        let pki = DevPki::generate().unwrap();
        let lists = RevocationLists::new(vec![list(&pki, &pki.crl)], false);
        let refusal = lists.check(&cert(&pki.revoked.cert), now()).unwrap_err();
        assert_eq!(refusal.rule(), "certificate-revoked", "{refusal}");
        lists.check(&cert(&pki.client("vt-utrecht-caseworker").unwrap().cert), now()).unwrap();
        assert_eq!(lists.check(&cert(&pki.expired.cert), now()).unwrap_err().rule(), "certificate-expired");
    }

    #[test]
    fn a_stale_list_refuses_unless_allowed_and_concerns_only_its_issuer() {
        let pki = DevPki::generate().unwrap();
        let good = cert(&pki.client("vt-utrecht-caseworker").unwrap().cert);
        let later = list(&pki, &pki.crl).next_update().unwrap() + 1;
        let strict = RevocationLists::new(vec![list(&pki, &pki.crl)], false);
        let refusal = strict.check(&CertValidity { not_after: later + 10, ..good.clone() }, later).unwrap_err();
        assert_eq!(refusal.rule(), "revocation-list-out-of-date", "{refusal}");
        let lenient = RevocationLists::new(vec![list(&pki, &pki.crl)], true);
        lenient.check(&CertValidity { not_after: later + 10, ..good.clone() }, later).unwrap();
        let foreign = CertValidity { not_after: later + 10, issuer: b"another issuer".to_vec(), ..good };
        assert_eq!(lenient.check(&foreign, later).unwrap_err().rule(), "revocation-status-unknown");
        RevocationLists::default().check(&foreign, later).unwrap();
    }

    #[test]
    fn a_certificate_is_refused_with_a_revoked_or_expired_intermediate_it_was_presented_with() {
        let pki = DevPki::generate().unwrap();
        let lists = RevocationLists::new(vec![list(&pki, &pki.crl)], false);
        let der = |pem: &str| CertificateDer::from_pem_slice(pem.as_bytes()).unwrap();
        let leaf = cert(&pki.client("vt-utrecht-caseworker").unwrap().cert);
        // The dev PKI has no intermediate CA; the revoked and the expired leaf
        // stand in for one, which is all the lists look at.
        let revoked = Intermediate::from_der(&der(&pki.revoked.cert)).unwrap();
        let expired = Intermediate::from_der(&der(&pki.expired.cert)).unwrap();
        lists.check(&leaf, now()).unwrap();
        let refusal = lists.check(&leaf.clone().with_intermediates(vec![revoked]), now()).unwrap_err();
        assert_eq!(refusal.rule(), "certificate-revoked");
        let refusal = lists.check(&leaf.with_intermediates(vec![expired]), now()).unwrap_err();
        assert_eq!(refusal.rule(), "certificate-expired");
    }

    #[test]
    fn an_intermediate_named_as_a_lists_issuer_but_with_another_key_has_no_known_status() {
        let (pki, impostor) = (DevPki::generate().unwrap(), DevPki::generate().unwrap());
        let lists = RevocationLists::new(vec![list(&pki, &pki.crl)], false);
        let der = |pem: &str| CertificateDer::from_pem_slice(pem.as_bytes()).unwrap();
        let leaf = cert(&pki.client("vt-utrecht-caseworker").unwrap().cert);
        let presenting = |ca: &str| leaf.clone().with_intermediates(vec![Intermediate::from_der(&der(ca)).unwrap()]);
        lists.check(&presenting(&pki.ca.cert), now()).unwrap();
        let other_key = lists.check(&presenting(&impostor.ca.cert), now()).unwrap_err();
        assert_eq!(other_key.rule(), "revocation-status-unknown");
        assert!(Intermediate::from_der(b"not a certificate").is_err());
    }

    #[test]
    fn a_list_counts_only_when_its_issuers_key_signed_it() {
        let (pki, impostor) = (DevPki::generate().unwrap(), DevPki::generate().unwrap());
        RevocationList::signed_by(&der(&pki.crl), &ca(&pki)).unwrap();
        let forged = RevocationList::signed_by(&der(&impostor.crl), &ca(&pki)).unwrap_err();
        assert_eq!(forged, Unreadable::Unsigned);
        let both = [ca(&impostor), ca(&pki)].concat();
        assert_eq!(RevocationList::signed_by(&der(&pki.crl), &both).unwrap_err(), Unreadable::AmbiguousIssuer);
        let rogue = CertificateDer::from_pem_slice(pki.rogue_ca.as_bytes()).unwrap();
        RevocationList::signed_by(&der(&pki.crl), &[rogue, ca(&pki)[0].clone()]).unwrap();
        assert!(RevocationList::signed_by(&der(&pki.crl), &[] as &[&[u8]]).is_err());
    }

    #[test]
    fn times_read_as_utc() {
        assert_eq!(utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc(1_796_185_105), "2026-12-02 04:18:25 UTC");
    }
}
