//! Who is on the other end of a connection.
//!
//! An identity comes from the subject of a client certificate (see `DESIGN.md`,
//! "Identity"): the organisation's OIN, its name, its kind of agency, the worker
//! or system id inside it, and a role. The hub addresses members of a thread by
//! [`MemberId`], the pair of OIN and worker id, which is stable across
//! certificate renewals.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Why an identity attribute was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    /// The OIN is not 20 ASCII digits.
    #[error("OIN must be 20 digits, got {0:?}")]
    BadOin(String),
    /// The agency kind is not 1-16 ASCII letters, digits or `-`, starting with a letter.
    #[error("agency kind must be 1-16 characters of [A-Za-z0-9-] starting with a letter, got {0:?}")]
    BadKind(String),
    /// The role is not one of the known roles.
    #[error("unknown role {0:?} (expected caseworker, system, privacy-officer or admin)")]
    BadRole(String),
    /// The worker id is empty, too long, or has characters outside `[A-Za-z0-9._-]`.
    #[error("worker id must be 1-64 characters of [A-Za-z0-9._-], got {0:?}")]
    BadWorker(String),
    /// A required subject attribute is missing.
    #[error("certificate subject lacks the {0} attribute")]
    Missing(&'static str),
}

/// An Organisatie-identificatienummer: the 20-digit number that identifies a
/// Dutch government or chain organisation (carried in the certificate's
/// `serialNumber`, as PKIoverheid does).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Oin(String);

impl Oin {
    /// The OIN as its 20 digits.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Oin {
    type Error = IdentityError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        if value.len() == 20 && value.bytes().all(|b| b.is_ascii_digit()) {
            Ok(Self(value))
        } else {
            Err(IdentityError::BadOin(value))
        }
    }
}

impl FromStr for Oin {
    type Err = IdentityError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::try_from(s.to_owned())
    }
}

impl From<Oin> for String {
    fn from(oin: Oin) -> Self {
        oin.0
    }
}

impl fmt::Display for Oin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The kind of agency in the youth-protection chain (the certificate's `OU`).
///
/// Which kinds exist is policy data, not code: the hub's policy file declares
/// them (`[[kinds]]`), and routes and organisations name them. The wire only
/// checks the code's form, so a new kind of agency (a jeugdhulp provider, the
/// police) needs a policy reload, not a new release. The chain's four agencies
/// have constants because the sample certificates and the tests name them.
///
/// The code is held inline, so a kind is `Copy` like the enum it replaced.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct AgencyKind {
    // Zero-padded: ASCII codes never hold a zero byte, so the order is the codes' order.
    bytes: [u8; AgencyKind::MAX_LEN],
    len: u8,
}

impl AgencyKind {
    /// Veilig Thuis: the advice and reporting centre for domestic violence and child abuse.
    pub const VT: Self = Self::known("VT");
    /// A lokaal team (wijkteam): the municipality's voluntary help.
    pub const LT: Self = Self::known("LT");
    /// The Raad voor de Kinderbescherming: investigates and asks the court for measures.
    pub const RVDK: Self = Self::known("RvdK");
    /// A Gecertificeerde Instelling: carries out court measures (OTS, voogdij, jeugdreclassering).
    pub const GI: Self = Self::known("GI");
    /// Any other party (a school, a GP, the police), as the sample policy names them.
    pub const OTHER: Self = Self::known("OTHER");

    /// The longest code accepted, in bytes.
    pub const MAX_LEN: usize = 16;

    /// A kind from a code written in the source; a malformed one fails to compile.
    const fn known(code: &'static str) -> Self {
        match Self::from_bytes(code.as_bytes()) {
            Some(kind) => kind,
            None => panic!("malformed agency kind"),
        }
    }

    /// 1 to [`AgencyKind::MAX_LEN`] ASCII letters, digits or `-`, starting with a letter:
    /// short enough for a certificate field, plain enough for a log line or a file name.
    const fn from_bytes(code: &[u8]) -> Option<Self> {
        if code.is_empty() || code.len() > Self::MAX_LEN || !code[0].is_ascii_alphabetic() {
            return None;
        }
        let mut bytes = [0; Self::MAX_LEN];
        let mut i = 0;
        while i < code.len() {
            if !(code[i].is_ascii_alphanumeric() || code[i] == b'-') {
                return None;
            }
            bytes[i] = code[i];
            i += 1;
        }
        Some(Self { bytes, len: code.len() as u8 })
    }

    /// The code used in certificates and policy files.
    pub fn code(&self) -> &str {
        // Only ASCII is ever stored, so this never falls back.
        std::str::from_utf8(&self.bytes[..usize::from(self.len)]).unwrap_or_default()
    }
}

impl fmt::Debug for AgencyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AgencyKind({:?})", self.code())
    }
}

impl TryFrom<String> for AgencyKind {
    type Error = IdentityError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::from_bytes(value.as_bytes()).ok_or(IdentityError::BadKind(value))
    }
}

impl From<AgencyKind> for String {
    fn from(kind: AgencyKind) -> Self {
        kind.code().to_owned()
    }
}

impl FromStr for AgencyKind {
    type Err = IdentityError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::try_from(s.to_owned())
    }
}

impl fmt::Display for AgencyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// What a certificate holder does (the certificate's `title`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// A professional working on cases.
    Caseworker,
    /// An agency's case system, acting for its own workers.
    System,
    /// A privacy officer (functionaris gegevensbescherming) who audits access.
    PrivacyOfficer,
    /// An operator of the hub; sees no case content.
    Admin,
}

impl Role {
    /// The code used in certificates and policy files.
    pub fn code(self) -> &'static str {
        match self {
            Self::Caseworker => "caseworker",
            Self::System => "system",
            Self::PrivacyOfficer => "privacy-officer",
            Self::Admin => "admin",
        }
    }
}

impl FromStr for Role {
    type Err = IdentityError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "caseworker" => Ok(Self::Caseworker),
            "system" => Ok(Self::System),
            "privacy-officer" => Ok(Self::PrivacyOfficer),
            "admin" => Ok(Self::Admin),
            other => Err(IdentityError::BadRole(other.to_owned())),
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// Checks a worker id: short, and free of characters that could confuse logs or keys.
pub fn validate_worker(worker: &str) -> Result<(), IdentityError> {
    let ok = (1..=64).contains(&worker.len())
        && worker.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(IdentityError::BadWorker(worker.to_owned()))
    }
}

/// How a thread addresses a member: organisation and worker, without role or name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct MemberId {
    /// The member's organisation.
    pub oin: Oin,
    /// The worker or system id inside that organisation.
    pub worker: String,
}

impl MemberId {
    /// Builds a member id, checking the OIN and the worker id.
    pub fn new(oin: &str, worker: &str) -> Result<Self, IdentityError> {
        validate_worker(worker)?;
        Ok(Self { oin: oin.parse()?, worker: worker.to_owned() })
    }
}

impl fmt::Display for MemberId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.worker, self.oin)
    }
}

/// A fully described identity, as read from a verified client certificate.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Identity {
    /// The organisation's OIN (`serialNumber`).
    pub oin: Oin,
    /// The organisation's name (`O`).
    pub organisation: String,
    /// The kind of agency (`OU`).
    pub kind: AgencyKind,
    /// The worker or system id (`CN`).
    pub worker: String,
    /// The role (`title`).
    pub role: Role,
}

impl Identity {
    /// The member id this identity is addressed by in threads.
    pub fn member_id(&self) -> MemberId {
        MemberId { oin: self.oin.clone(), worker: self.worker.clone() }
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({}, {} {})", self.member_id(), self.role, self.kind, self.organisation)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oin_must_be_twenty_digits() {
        assert!("00000001234567890000".parse::<Oin>().is_ok());
        assert!("0000000123456789000".parse::<Oin>().is_err());
        assert!("0000000123456789000x".parse::<Oin>().is_err());
    }

    #[test]
    fn worker_ids_are_restricted() {
        assert!(validate_worker("anna.devries").is_ok());
        assert!(validate_worker("").is_err());
        assert!(validate_worker("anna devries").is_err());
        assert!(validate_worker(&"a".repeat(65)).is_err());
    }

    #[test]
    fn kinds_and_roles_round_trip_their_codes() {
        for kind in [AgencyKind::VT, AgencyKind::LT, AgencyKind::RVDK, AgencyKind::GI, AgencyKind::OTHER] {
            assert_eq!(kind.code().parse::<AgencyKind>().unwrap(), kind);
        }
        assert_eq!("JH".parse::<AgencyKind>().unwrap().code(), "JH");
        for bad in ["", "1VT", "V T", "VT;", &"A".repeat(17)] {
            assert!(bad.parse::<AgencyKind>().is_err(), "{bad:?}");
        }
        for role in [Role::Caseworker, Role::System, Role::PrivacyOfficer, Role::Admin] {
            assert_eq!(role.code().parse::<Role>().unwrap(), role);
        }
    }
}
