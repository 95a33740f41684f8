//! A development PKI: one chain CA, a hub certificate, and sample identities.
//!
//! Everything here is for development and tests only. Production deployments
//! use PKIoverheid certificates (see `certs/README.md`). The generator writes
//! the same kinds of certificates a production chain would contain, plus the
//! deliberately bad ones the tests need: expired, from an untrusted CA,
//! without identity attributes, and revoked.

use std::fs;
use std::path::Path;

use rcgen::string::PrintableString;
use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, CertifiedIssuer, DistinguishedName, DnType,
    DnValue, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, RevokedCertParams, SerialNumber,
};
use rustls_pki_types::pem::PemObject;
use time::{Duration, OffsetDateTime};
use wire::{AgencyKind, Role};

/// A sample organisation of the development chain.
#[derive(Debug, Clone, Copy)]
pub struct SampleOrg {
    /// The organisation's (fictitious) OIN.
    pub oin: &'static str,
    /// Its name.
    pub name: &'static str,
    /// Its kind of agency.
    pub kind: AgencyKind,
}

/// Veilig Thuis Utrecht.
pub const VT_UTRECHT: SampleOrg =
    SampleOrg { oin: "00000001800000000001", name: "Veilig Thuis Utrecht", kind: AgencyKind::VT };
/// The local team of Woerden (Woerden Wijzer).
pub const LT_WOERDEN: SampleOrg =
    SampleOrg { oin: "00000001800000000002", name: "Lokaal team Woerden", kind: AgencyKind::LT };
/// The local team of Oudewater.
pub const LT_OUDEWATER: SampleOrg =
    SampleOrg { oin: "00000001800000000003", name: "Lokaal team Oudewater", kind: AgencyKind::LT };
/// The Raad voor de Kinderbescherming.
pub const RVDK: SampleOrg =
    SampleOrg { oin: "00000001800000000004", name: "Raad voor de Kinderbescherming", kind: AgencyKind::RVDK };
/// SAVE, a regional certified institution (GI).
pub const GI_SAVE: SampleOrg = SampleOrg { oin: "00000001800000000005", name: "SAVE Utrecht", kind: AgencyKind::GI };
/// A primary school: a limited recipient, which is told only what is deliberately shared with it.
pub const SCHOOL: SampleOrg =
    SampleOrg { oin: "00000001800000000006", name: "Basisschool De Regenboog", kind: AgencyKind::OTHER };

/// A sample identity: the file stem it is written under and its subject.
#[derive(Debug, Clone, Copy)]
pub struct SampleIdentity {
    /// The file stem: `SLUG.crt` and `SLUG.key`.
    pub slug: &'static str,
    /// The organisation.
    pub org: SampleOrg,
    /// The worker or system id (`CN`).
    pub worker: &'static str,
    /// The role (`title`).
    pub role: Role,
}

/// The identities `certs dev` writes, one client certificate each.
pub const SAMPLE_IDENTITIES: &[SampleIdentity] = &[
    SampleIdentity { slug: "vt-utrecht-caseworker", org: VT_UTRECHT, worker: "anna.devries", role: Role::Caseworker },
    SampleIdentity { slug: "vt-utrecht-system", org: VT_UTRECHT, worker: "vt-casesystem", role: Role::System },
    SampleIdentity { slug: "vt-utrecht-privacy", org: VT_UTRECHT, worker: "fenna.jansen", role: Role::PrivacyOfficer },
    SampleIdentity { slug: "vt-utrecht-colleague", org: VT_UTRECHT, worker: "bram.kok", role: Role::Caseworker },
    SampleIdentity { slug: "vt-utrecht-teamlead", org: VT_UTRECHT, worker: "petra.vos", role: Role::Caseworker },
    SampleIdentity { slug: "lt-woerden-caseworker", org: LT_WOERDEN, worker: "sanne.bakker", role: Role::Caseworker },
    SampleIdentity { slug: "lt-woerden-system", org: LT_WOERDEN, worker: "lt-casesystem", role: Role::System },
    SampleIdentity { slug: "lt-oudewater-caseworker", org: LT_OUDEWATER, worker: "joris.smit", role: Role::Caseworker },
    SampleIdentity { slug: "rvdk-caseworker", org: RVDK, worker: "mila.visser", role: Role::Caseworker },
    SampleIdentity { slug: "gi-save-caseworker", org: GI_SAVE, worker: "daan.mulder", role: Role::Caseworker },
    SampleIdentity { slug: "school-mentor", org: SCHOOL, worker: "ib.deregenboog", role: Role::Caseworker },
];

/// Looks up a sample identity by slug.
pub fn sample(slug: &str) -> Option<&'static SampleIdentity> {
    SAMPLE_IDENTITIES.iter().find(|s| s.slug == slug)
}

/// A further client identity to issue, beyond the samples.
#[derive(Debug, Clone)]
pub struct ExtraClient {
    /// The file stem.
    pub slug: String,
    /// The organisation.
    pub org: SampleOrg,
    /// The worker id (`CN`).
    pub worker: String,
    /// The role.
    pub role: Role,
}

/// A certificate and its private key, both PEM.
#[derive(Clone)]
pub struct PemPair {
    /// The certificate chain's leaf, PEM.
    pub cert: String,
    /// The PKCS#8 private key, PEM.
    pub key: String,
}

/// Shows the certificate and hides the key: a formatted PKI (in a log line or
/// a failed assertion) must not hand out private keys.
impl std::fmt::Debug for PemPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PemPair").field("cert", &self.cert).field("key", &"<redacted>").finish()
    }
}

/// A whole development PKI held in memory; [`DevPki::write_to`] puts it on disk.
#[derive(Debug, Clone)]
pub struct DevPki {
    /// The chain CA (`ca.crt`, `ca.key`).
    pub ca: PemPair,
    /// The hub's server certificate for localhost (`hub.crt`, `hub.key`).
    pub hub: PemPair,
    /// One client pair per entry of [`SAMPLE_IDENTITIES`], in the same order,
    /// then the extra clients.
    pub clients: Vec<(String, PemPair)>,
    /// Validly signed, but its validity ended yesterday.
    pub expired: PemPair,
    /// A complete identity issued by a CA the hub does not trust.
    pub intruder: PemPair,
    /// That untrusted CA's certificate, PEM (another name than the chain CA's),
    /// for tests that trust a second CA.
    pub rogue_ca: String,
    /// Signed by the chain CA but without the identity attributes.
    pub noattrs: PemPair,
    /// Signed by the chain CA and then revoked in `ca.crl`.
    pub revoked: PemPair,
    /// The chain CA's revocation list, PEM, listing `revoked`.
    pub crl: String,
}

/// Failure to generate or write the PKI.
#[derive(Debug, thiserror::Error)]
pub enum DevPkiError {
    /// rcgen refused the parameters (a bug here, not user input).
    #[error("certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),
    /// A certificate or key given to be reused could not be read.
    #[error("cannot read a certificate: {0}")]
    Read(#[from] crate::revocation::Unreadable),
    /// Writing the files failed.
    #[error("cannot write {path}")]
    Write {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
}

/// The name of the dev chain CA (its subject's CN).
const CHAIN_CA: &str = "Ketenhub Dev Chain CA";

fn ca(name: &str) -> Result<CertifiedIssuer<'static, KeyPair>, DevPkiError> {
    Ok(CertifiedIssuer::self_signed(ca_params(name), KeyPair::generate()?)?)
}

/// A CA's parameters; the same name gives the same subject, key usages and key
/// identifier method, so the CA can sign again later from its key alone.
fn ca_params(name: &str) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, name);
    params.distinguished_name.push(DnType::OrganizationName, "Ketenhub development");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    params.not_before = OffsetDateTime::now_utc() - Duration::days(1);
    params.not_after = OffsetDateTime::now_utc() + Duration::days(3650);
    params
}

/// A CRL of `issuer` revoking `serials` (DER integer contents), valid from an
/// hour ago until `next_update`.
fn revocation_list(
    issuer: &Issuer<'_, KeyPair>,
    serials: Vec<SerialNumber>,
    next_update: OffsetDateTime,
) -> Result<String, DevPkiError> {
    let now = OffsetDateTime::now_utc();
    let this_update = (now - Duration::hours(1)).min(next_update - Duration::hours(1));
    let revoked_certs = serials
        .into_iter()
        .map(|serial_number| RevokedCertParams {
            serial_number,
            revocation_time: this_update,
            reason_code: Some(rcgen::RevocationReason::KeyCompromise),
            invalidity_date: None,
        })
        .collect();
    let params = CertificateRevocationListParams {
        this_update,
        next_update,
        crl_number: SerialNumber::from(now.unix_timestamp().max(1) as u64),
        issuing_distribution_point: None,
        revoked_certs,
        key_identifier_method: rcgen::KeyIdMethod::Sha256,
    };
    Ok(params.signed_by(issuer)?.pem()?)
}

fn identity_subject(org: &SampleOrg, worker: &str, role: Role) -> Result<DistinguishedName, DevPkiError> {
    let mut dn = DistinguishedName::new();
    let oin = PrintableString::try_from(org.oin).map_err(DevPkiError::Generate)?;
    dn.push(DnType::CustomDnType(vec![2, 5, 4, 5]), DnValue::PrintableString(oin));
    dn.push(DnType::OrganizationName, org.name);
    dn.push(DnType::OrganizationalUnitName, org.kind.code());
    dn.push(DnType::CommonName, worker);
    dn.push(DnType::CustomDnType(vec![2, 5, 4, 12]), role.code());
    Ok(dn)
}

struct Leaf {
    subject: DistinguishedName,
    server_names: Vec<String>,
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
    serial: u64,
}

impl Leaf {
    fn client(subject: DistinguishedName, serial: u64) -> Self {
        let now = OffsetDateTime::now_utc();
        Self {
            subject,
            server_names: vec![],
            not_before: now - Duration::days(1),
            not_after: now + Duration::days(825),
            serial,
        }
    }

    fn issue(self, issuer: &Issuer<'_, KeyPair>) -> Result<PemPair, DevPkiError> {
        let mut params = CertificateParams::new(self.server_names.clone())?;
        params.distinguished_name = self.subject;
        params.not_before = self.not_before;
        params.not_after = self.not_after;
        params.serial_number = Some(SerialNumber::from(self.serial));
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = if self.server_names.is_empty() {
            vec![ExtendedKeyUsagePurpose::ClientAuth]
        } else {
            vec![ExtendedKeyUsagePurpose::ServerAuth]
        };
        params.use_authority_key_identifier_extension = true;
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, issuer)?;
        Ok(PemPair { cert: cert.pem(), key: key.serialize_pem() })
    }
}

impl DevPki {
    /// Generates a fresh PKI with new keys.
    pub fn generate() -> Result<Self, DevPkiError> {
        Self::generate_with(&[])
    }

    /// Generates a fresh PKI with, beside the samples, one client pair per
    /// entry of `extra` (the benchmark uses this for many distinct workers).
    pub fn generate_with(extra: &[ExtraClient]) -> Result<Self, DevPkiError> {
        let chain_ca = ca(CHAIN_CA)?;
        let rogue_ca = ca("Rogue CA")?;
        let now = OffsetDateTime::now_utc();

        let mut hub_subject = DistinguishedName::new();
        hub_subject.push(DnType::CommonName, "localhost");
        hub_subject.push(DnType::OrganizationName, "Ketenhub");
        let hub = Leaf {
            subject: hub_subject,
            server_names: vec!["localhost".into(), "127.0.0.1".into(), "::1".into()],
            not_before: now - Duration::days(1),
            not_after: now + Duration::days(825),
            serial: 1,
        }
        .issue(&chain_ca)?;

        let specs = SAMPLE_IDENTITIES
            .iter()
            .map(|s| ExtraClient { slug: s.slug.to_owned(), org: s.org, worker: s.worker.to_owned(), role: s.role })
            .chain(extra.iter().cloned());
        let mut clients = Vec::with_capacity(SAMPLE_IDENTITIES.len() + extra.len());
        for (i, spec) in specs.enumerate() {
            let subject = identity_subject(&spec.org, &spec.worker, spec.role)?;
            clients.push((spec.slug, Leaf::client(subject, 1000 + i as u64).issue(&chain_ca)?));
        }

        let expired_subject = identity_subject(&VT_UTRECHT, "expired.worker", Role::Caseworker)?;
        let expired = Leaf {
            not_before: now - Duration::days(400),
            not_after: now - Duration::days(1),
            ..Leaf::client(expired_subject, 200)
        }
        .issue(&chain_ca)?;
        let intruder =
            Leaf::client(identity_subject(&VT_UTRECHT, "intruder", Role::Caseworker)?, 201).issue(&rogue_ca)?;
        let mut bare = DistinguishedName::new();
        bare.push(DnType::CommonName, "no-attributes");
        let noattrs = Leaf::client(bare, 202).issue(&chain_ca)?;
        let revoked_serial = 203;
        let revoked = Leaf::client(identity_subject(&LT_WOERDEN, "revoked.worker", Role::Caseworker)?, revoked_serial)
            .issue(&chain_ca)?;
        let crl = revocation_list(&chain_ca, vec![SerialNumber::from(revoked_serial)], now + Duration::days(30))?;

        let ca = PemPair { cert: chain_ca.pem(), key: chain_ca.key().serialize_pem() };
        let rogue_ca = rogue_ca.pem();
        Ok(Self { ca, hub, clients, expired, intruder, rogue_ca, noattrs, revoked, crl })
    }

    /// The chain CA as an issuer again, from its key: to sign what a test
    /// needs after the PKI was generated.
    fn chain_issuer(&self) -> Result<Issuer<'static, KeyPair>, DevPkiError> {
        Ok(Issuer::new(ca_params(CHAIN_CA), KeyPair::from_pem(&self.ca.key)?))
    }

    /// A new CRL of the chain CA (PEM) revoking the given certificates (PEM),
    /// with `next_update` as its `nextUpdate`: in the past for a stale list.
    pub fn revocation_list(&self, revoked: &[&str], next_update: OffsetDateTime) -> Result<String, DevPkiError> {
        let serials = revoked
            .iter()
            .map(|pem| {
                let der = rustls_pki_types::CertificateDer::from_pem_slice(pem.as_bytes())
                    .map_err(|e| crate::revocation::Unreadable::Certificate(e.to_string()))?;
                let serial = crate::revocation::CertValidity::from_der(&der)?.serial_bytes().to_vec();
                Ok(SerialNumber::from_slice(&serial))
            })
            .collect::<Result<_, DevPkiError>>()?;
        revocation_list(&self.chain_issuer()?, serials, next_update)
    }

    /// A further client certificate of the chain CA, valid from `not_before`
    /// to `not_after` (a few seconds, for a test of expiry), with `serial`.
    pub fn issue_client(
        &self,
        client: &ExtraClient,
        serial: u64,
        not_before: OffsetDateTime,
        not_after: OffsetDateTime,
    ) -> Result<PemPair, DevPkiError> {
        let subject = identity_subject(&client.org, &client.worker, client.role)?;
        Leaf { not_before, not_after, ..Leaf::client(subject, serial) }.issue(&self.chain_issuer()?)
    }

    /// The client pair of a sample identity, by slug.
    pub fn client(&self, slug: &str) -> Option<&PemPair> {
        self.clients.iter().find(|(s, _)| *s == slug).map(|(_, pair)| pair)
    }

    /// Every file this PKI consists of, as (file name, PEM contents).
    pub fn files(&self) -> Vec<(String, &str)> {
        let named: Vec<(&str, &PemPair)> = [("ca", &self.ca), ("hub", &self.hub)]
            .into_iter()
            .chain(self.clients.iter().map(|(s, p)| (s.as_str(), p)))
            .chain([
                ("expired", &self.expired),
                ("intruder", &self.intruder),
                ("noattrs", &self.noattrs),
                ("revoked", &self.revoked),
            ])
            .collect();
        let mut files: Vec<(String, &str)> = named
            .into_iter()
            .flat_map(|(stem, p)| [(format!("{stem}.crt"), p.cert.as_str()), (format!("{stem}.key"), p.key.as_str())])
            .collect();
        files.push(("ca.crl".into(), self.crl.as_str()));
        files
    }

    /// Writes every file into `dir`, creating it; keys are created readable by
    /// the owner only (mode 0600 from the first byte: there is no moment in
    /// which another user could open them).
    pub fn write_to(&self, dir: &Path) -> Result<(), DevPkiError> {
        let io = |path: &Path, source| DevPkiError::Write { path: path.display().to_string(), source };
        fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
        for (name, contents) in self.files() {
            let path = dir.join(&name);
            let written = if name.ends_with(".key") {
                crate::private::write_file(&path, contents.as_bytes())
            } else {
                fs::write(&path, contents)
            };
            written.map_err(|e| io(&path, e))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity_from_der;
    use rustls_pki_types::{pem::PemObject, CertificateDer};

    fn der(pem: &str) -> Vec<u8> {
        CertificateDer::from_pem_slice(pem.as_bytes()).unwrap().to_vec()
    }

    #[test]
    fn a_partitioned_list_is_refused_rather_than_read_as_complete() {
        let pki = DevPki::generate().unwrap();
        let now = OffsetDateTime::now_utc();
        let params = CertificateRevocationListParams {
            this_update: now - Duration::hours(1),
            next_update: now + Duration::days(1),
            crl_number: SerialNumber::from(1u64),
            issuing_distribution_point: Some(rcgen::CrlIssuingDistributionPoint {
                distribution_point: rcgen::CrlDistributionPoint { uris: vec!["http://crl.example/part1".into()] },
                scope: Some(rcgen::CrlScope::UserCertsOnly),
            }),
            revoked_certs: vec![],
            key_identifier_method: rcgen::KeyIdMethod::Sha256,
        };
        let partitioned = params.signed_by(&pki.chain_issuer().unwrap()).unwrap().der().to_vec();
        let refused = crate::revocation::RevocationList::signed_by(&partitioned, &[der(&pki.ca.cert)]).unwrap_err();
        assert_eq!(refused, crate::revocation::Unreadable::Unsupported);
        let whole = rustls_pki_types::CertificateRevocationListDer::from_pem_slice(pki.crl.as_bytes()).unwrap();
        crate::revocation::RevocationList::signed_by(&whole, &[der(&pki.ca.cert)]).unwrap();
    }

    #[test]
    fn sample_certificates_carry_their_identity() {
        let pki = DevPki::generate().unwrap();
        for (sample, (slug, pair)) in SAMPLE_IDENTITIES.iter().zip(&pki.clients) {
            assert_eq!(sample.slug, slug);
            let id = identity_from_der(&der(&pair.cert)).unwrap();
            assert_eq!(id.oin.as_str(), sample.org.oin);
            assert_eq!(id.organisation, sample.org.name);
            assert_eq!(id.kind, sample.org.kind);
            assert_eq!(id.worker, sample.worker);
            assert_eq!(id.role, sample.role);
        }
    }

    #[test]
    fn the_noattrs_certificate_has_no_identity() {
        let pki = DevPki::generate().unwrap();
        let err = identity_from_der(&der(&pki.noattrs.cert)).unwrap_err();
        assert!(matches!(err, crate::CertIdentityError::Attribute(wire::IdentityError::Missing(_))), "{err}");
    }

    #[test]
    fn debug_output_holds_no_private_key() {
        let pki = DevPki::generate().unwrap();
        let printed = format!("{pki:?}");
        // Debug escapes the PEM's line breaks, so compare line by line.
        let body = |pem: &str| pem.lines().filter(|l| !l.starts_with("-----")).map(str::to_owned).collect::<Vec<_>>();
        assert!(body(&pki.ca.cert).iter().all(|l| printed.contains(l.as_str())), "the certificates are still shown");
        for (name, contents) in pki.files() {
            if name.ends_with(".key") {
                let leaked = body(contents).into_iter().filter(|l| printed.contains(l.as_str())).count();
                assert_eq!(leaked, 0, "{name} is in the Debug output");
            }
        }
        assert!(!printed.contains("PRIVATE KEY"), "{printed}");
    }

    #[test]
    fn writes_every_named_file() {
        let dir = tempfile::tempdir().unwrap();
        DevPki::generate().unwrap().write_to(dir.path()).unwrap();
        for name in ["ca.crt", "ca.key", "hub.crt", "hub.key", "expired.crt", "intruder.key", "noattrs.crt", "ca.crl"] {
            assert!(dir.path().join(name).is_file(), "{name} missing");
        }
        for sample in SAMPLE_IDENTITIES {
            assert!(dir.path().join(format!("{}.crt", sample.slug)).is_file());
            assert!(dir.path().join(format!("{}.key", sample.slug)).is_file());
        }
    }
}
