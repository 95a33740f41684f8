//! How an MLS credential names a Ketenhub identity.
//!
//! Each device's MLS credential (a basic credential) carries, as its identity
//! bytes, the same organisation, agency kind and worker as the device's TLS
//! certificate, in one canonical text form. The hub compares the two and refuses
//! a KeyPackage or commit whose credential names anyone else, so a member cannot
//! speak in a thread under another identity.

use crate::{AgencyKind, Identity, MemberId, Oin};

/// The identity bytes of the MLS credential that belongs to `identity`:
/// `ketenhub/1/<OIN>/<kind>/<worker>`.
pub fn credential_identity(identity: &Identity) -> Vec<u8> {
    format!("ketenhub/1/{}/{}/{}", identity.oin, identity.kind, identity.worker).into_bytes()
}

/// The member a credential's identity bytes name, with its agency kind, or
/// `None` when the bytes are not in the canonical form.
pub fn credential_member(bytes: &[u8]) -> Option<(MemberId, AgencyKind)> {
    let text = std::str::from_utf8(bytes).ok()?;
    let mut parts = text.split('/');
    if (parts.next()?, parts.next()?) != ("ketenhub", "1") {
        return None;
    }
    let oin: Oin = parts.next()?.parse().ok()?;
    let kind: AgencyKind = parts.next()?.parse().ok()?;
    let worker = parts.next()?;
    if parts.next().is_some() {
        return None;
    }
    let member = MemberId::new(oin.as_str(), worker).ok()?;
    Some((member, kind))
}

#[cfg(feature = "mls")]
pub use checks::*;

#[cfg(feature = "mls")]
mod checks {
    use openmls::prelude::tls_codec::Deserialize as _;
    use openmls::prelude::{BasicCredential, Ciphersuite, KeyPackage, KeyPackageIn, ProtocolVersion};
    use openmls_rust_crypto::RustCrypto;

    use crate::{AgencyKind, MemberId};

    /// The one ciphersuite Ketenhub uses: X25519, AES-128-GCM, SHA-256, Ed25519.
    pub const CIPHERSUITE: Ciphersuite = Ciphersuite::MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519;

    /// Why a KeyPackage was refused.
    #[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
    pub enum KeyPackageError {
        /// The bytes are not a TLS-encoded KeyPackage.
        #[error("not a KeyPackage: {0}")]
        Malformed(String),
        /// The signature, lifetime or content does not verify.
        #[error("KeyPackage does not verify: {0}")]
        Invalid(String),
        /// Another ciphersuite than Ketenhub's.
        #[error("KeyPackage uses ciphersuite {0:?}, not Ketenhub's")]
        Ciphersuite(Ciphersuite),
        /// The credential is not a Ketenhub basic credential.
        #[error("KeyPackage credential does not name a Ketenhub identity")]
        Credential,
    }

    /// A verified KeyPackage and the member its credential names.
    #[derive(Debug)]
    pub struct VerifiedKeyPackage {
        /// The KeyPackage.
        pub key_package: KeyPackage,
        /// The member its credential names.
        pub member: MemberId,
        /// That member's agency kind.
        pub kind: AgencyKind,
    }

    /// openmls's in-memory key-value store as bytes, for keeping it on disk
    /// (the SDK's device state) or in the hub's store (a group's public state).
    pub fn export_storage(storage: &openmls_memory_storage::MemoryStorage) -> Vec<u8> {
        let values: Vec<(serde_bytes::ByteBuf, serde_bytes::ByteBuf)> = storage
            .values
            .read()
            .map(|map| map.iter().map(|(k, v)| (k.clone().into(), v.clone().into())).collect())
            .unwrap_or_default();
        crate::encode(&values)
    }

    /// Fills a store with what [`export_storage`] wrote.
    pub fn import_storage(
        bytes: &[u8],
        storage: &openmls_memory_storage::MemoryStorage,
    ) -> Result<(), crate::DecodeError> {
        let values: Vec<(serde_bytes::ByteBuf, serde_bytes::ByteBuf)> = crate::decode(bytes)?;
        if let Ok(mut map) = storage.values.write() {
            map.extend(values.into_iter().map(|(k, v)| (k.into_vec(), v.into_vec())));
        }
        Ok(())
    }

    /// The member and agency kind a credential names, if it is a Ketenhub basic credential.
    pub fn member_of(credential: &openmls::prelude::Credential) -> Option<(MemberId, AgencyKind)> {
        let basic = BasicCredential::try_from(credential.clone()).ok()?;
        super::credential_member(basic.identity())
    }

    /// The leaf of a member that sent a message or proposal; `None` for a
    /// sender outside the group (an external sender or a new member's commit).
    pub fn member_leaf(sender: &openmls::prelude::Sender) -> Option<openmls::prelude::LeafNodeIndex> {
        match sender {
            openmls::prelude::Sender::Member(index) => Some(*index),
            _ => None,
        }
    }

    /// The MLS group id of a thread: its 16 bytes.
    pub fn group_id(thread: crate::ThreadId) -> openmls::prelude::GroupId {
        openmls::prelude::GroupId::from_slice(thread.0.as_bytes())
    }

    /// Parses an MLS message that must be a private (encrypted) message of the
    /// thread's group, as application messages are; returns its epoch.
    pub fn check_private_message(bytes: &[u8], thread: crate::ThreadId) -> Result<u64, String> {
        use openmls::prelude::{MlsMessageIn, ProtocolMessage};
        let message = MlsMessageIn::tls_deserialize_exact(bytes).map_err(|e| format!("not an MLS message: {e}"))?;
        match message.try_into_protocol_message().map_err(|e| format!("not an MLS protocol message: {e:?}"))? {
            ProtocolMessage::PrivateMessage(m) if m.group_id() == &group_id(thread) => Ok(m.epoch().as_u64()),
            ProtocolMessage::PrivateMessage(_) => Err("an MLS message of another group".into()),
            ProtocolMessage::PublicMessage(_) => Err("application messages must be MLS private messages".into()),
        }
    }

    /// Parses and verifies a TLS-encoded KeyPackage (signature, lifetime,
    /// ciphersuite) and reads the identity from its credential.
    pub fn verify_key_package(bytes: &[u8]) -> Result<VerifiedKeyPackage, KeyPackageError> {
        let unverified =
            KeyPackageIn::tls_deserialize_exact(bytes).map_err(|e| KeyPackageError::Malformed(e.to_string()))?;
        let key_package = unverified
            .validate(&RustCrypto::default(), ProtocolVersion::Mls10)
            .map_err(|e| KeyPackageError::Invalid(e.to_string()))?;
        if key_package.ciphersuite() != CIPHERSUITE {
            return Err(KeyPackageError::Ciphersuite(key_package.ciphersuite()));
        }
        let credential = BasicCredential::try_from(key_package.leaf_node().credential().clone())
            .map_err(|_| KeyPackageError::Credential)?;
        let (member, kind) = super::credential_member(credential.identity()).ok_or(KeyPackageError::Credential)?;
        Ok(VerifiedKeyPackage { key_package, member, kind })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Role;

    #[test]
    fn credential_identities_round_trip_and_reject_other_forms() {
        let identity = Identity {
            oin: "00000001800000000001".parse().unwrap(),
            organisation: "Veilig Thuis Utrecht".into(),
            kind: AgencyKind::VT,
            worker: "anna.devries".into(),
            role: Role::Caseworker,
        };
        let bytes = credential_identity(&identity);
        assert_eq!(bytes, b"ketenhub/1/00000001800000000001/VT/anna.devries");
        assert_eq!(credential_member(&bytes), Some((identity.member_id(), AgencyKind::VT)));
        for bad in [
            &b"alice"[..],
            b"ketenhub/2/00000001800000000001/VT/anna.devries",
            b"ketenhub/1/0001/VT/anna.devries",
            b"ketenhub/1/00000001800000000001/9X/anna.devries",
            b"ketenhub/1/00000001800000000001//anna.devries",
            b"ketenhub/1/00000001800000000001/V_T/anna.devries",
            b"ketenhub/1/00000001800000000001/VT/anna devries",
            b"ketenhub/1/00000001800000000001/VT/anna/extra",
        ] {
            assert_eq!(credential_member(bad), None, "{}", String::from_utf8_lossy(bad));
        }
    }
}
