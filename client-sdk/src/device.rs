//! This device's MLS identity: its signature key, its credential, and the
//! MLS state (KeyPackage secrets, groups) that must survive a restart.
//!
//! The credential names the same identity as the device's TLS certificate (see
//! `wire::mls`), so the hub can refuse anything signed for someone else. The
//! state lives in openmls's key-value storage, which this module writes to
//! `STATE_DIR/mls-state.cbor` after every change, atomically (write, sync,
//! rename), so a crash leaves either the old or the new state, never half.
//! Without a state directory the state lives in memory and dies with the client.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use openmls::prelude::tls_codec::Serialize as _;
use openmls::prelude::{BasicCredential, Credential, CredentialWithKey, KeyPackage};
use openmls_basic_credential::SignatureKeyPair;
use openmls_memory_storage::MemoryStorage;
use openmls_rust_crypto::RustCrypto;
use openmls_traits::OpenMlsProvider;
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;
use wire::mls::{credential_identity, CIPHERSUITE};
use wire::Identity;

/// A failure of the device's MLS state.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    /// The state file could not be read or written.
    #[error("MLS state in {path}: {message}")]
    State {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// The state directory belongs to another identity.
    #[error("the MLS state in {0} belongs to another identity")]
    OtherIdentity(PathBuf),
    /// openmls refused an operation.
    #[error("MLS: {0}")]
    Mls(String),
}

/// openmls's provider: RustCrypto for cryptography, an in-memory store that
/// this module persists.
#[derive(Default)]
pub(crate) struct Provider {
    crypto: RustCrypto,
    storage: MemoryStorage,
}

impl OpenMlsProvider for Provider {
    type CryptoProvider = RustCrypto;
    type RandProvider = RustCrypto;
    type StorageProvider = MemoryStorage;

    fn storage(&self) -> &MemoryStorage {
        &self.storage
    }

    fn crypto(&self) -> &RustCrypto {
        &self.crypto
    }

    fn rand(&self) -> &RustCrypto {
        &self.crypto
    }
}

/// What the state file holds besides openmls's own values.
#[derive(Serialize, Deserialize)]
struct StateFile {
    identity: ByteBuf,
    signature_public_key: ByteBuf,
    values: Vec<(ByteBuf, ByteBuf)>,
}

/// This device's MLS keys and state.
pub struct Device {
    provider: Provider,
    signer: SignatureKeyPair,
    credential: CredentialWithKey,
    state_file: Option<PathBuf>,
}

impl std::fmt::Debug for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Device").field("state_file", &self.state_file).finish_non_exhaustive()
    }
}

fn state_error(path: &Path, message: impl ToString) -> DeviceError {
    DeviceError::State { path: path.to_owned(), message: message.to_string() }
}

fn mls_error(e: impl std::fmt::Debug) -> DeviceError {
    DeviceError::Mls(format!("{e:?}"))
}

impl Device {
    /// Opens the device of `identity`: loads its state from `state_dir` when
    /// there is one, and creates new keys otherwise.
    pub fn open(identity: &Identity, state_dir: Option<&Path>) -> Result<Self, DeviceError> {
        let name = credential_identity(identity);
        let state_file = state_dir.map(|dir| dir.join("mls-state.cbor"));
        if let Some(path) = state_file.as_deref().filter(|p| p.exists()) {
            return Self::load(path, &name);
        }
        let provider = Provider::default();
        let signer = SignatureKeyPair::new(CIPHERSUITE.signature_algorithm()).map_err(mls_error)?;
        signer.store(provider.storage()).map_err(mls_error)?;
        let device = Self::assemble(provider, signer, name, state_file);
        device.persist()?;
        Ok(device)
    }

    fn assemble(provider: Provider, signer: SignatureKeyPair, name: Vec<u8>, state_file: Option<PathBuf>) -> Self {
        let credential: Credential = BasicCredential::new(name).into();
        let credential = CredentialWithKey { credential, signature_key: signer.public().into() };
        Self { provider, signer, credential, state_file }
    }

    fn load(path: &Path, name: &[u8]) -> Result<Self, DeviceError> {
        let bytes = std::fs::read(path).map_err(|e| state_error(path, e))?;
        let state: StateFile = wire::decode(&bytes).map_err(|e| state_error(path, e))?;
        if state.identity.as_slice() != name {
            return Err(DeviceError::OtherIdentity(path.to_owned()));
        }
        let provider = Provider::default();
        provider
            .storage
            .values
            .write()
            .map_err(|_| state_error(path, "storage lock poisoned"))?
            .extend(state.values.into_iter().map(|(k, v)| (k.into_vec(), v.into_vec())));
        let signer =
            SignatureKeyPair::read(provider.storage(), &state.signature_public_key, CIPHERSUITE.signature_algorithm())
                .ok_or_else(|| state_error(path, "the signature key is missing from the state"))?;
        Ok(Self::assemble(provider, signer, name.to_vec(), Some(path.to_owned())))
    }

    /// Writes the state to disk, atomically; a no-op without a state directory.
    pub(crate) fn persist(&self) -> Result<(), DeviceError> {
        let Some(path) = &self.state_file else { return Ok(()) };
        let values: Vec<(ByteBuf, ByteBuf)> = {
            let values = self.provider.storage.values.read().map_err(|_| state_error(path, "storage lock poisoned"))?;
            values.iter().map(|(k, v)| (ByteBuf::from(k.clone()), ByteBuf::from(v.clone()))).collect()
        };
        let state = StateFile {
            identity: ByteBuf::from(self.credential_name()),
            signature_public_key: ByteBuf::from(self.signer.public().to_vec()),
            values,
        };
        write_atomically(path, &wire::encode(&state)).map_err(|e| state_error(path, e))
    }

    fn credential_name(&self) -> Vec<u8> {
        BasicCredential::try_from(self.credential.credential.clone()).map(|c| c.identity().to_vec()).unwrap_or_default()
    }

    /// The public signature key, as other members see it.
    pub fn signature_key(&self) -> &[u8] {
        self.signer.public()
    }

    /// Makes `count` fresh KeyPackages (TLS-encoded); their secrets stay here.
    pub fn key_packages(&self, count: usize) -> Result<Vec<Vec<u8>>, DeviceError> {
        let packages = (0..count)
            .map(|_| {
                let bundle = KeyPackage::builder()
                    .build(CIPHERSUITE, &self.provider, &self.signer, self.credential.clone())
                    .map_err(mls_error)?;
                bundle.key_package().tls_serialize_detached().map_err(mls_error)
            })
            .collect::<Result<Vec<_>, _>>()?;
        self.persist()?;
        Ok(packages)
    }
}

fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let temporary = path.with_extension("tmp");
    {
        let mut file = std::fs::File::create(&temporary)?;
        file.write_all(bytes)?;
        file.sync_all()?;
    }
    std::fs::rename(&temporary, path)?;
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use wire::{AgencyKind, Role};

    fn identity(worker: &str) -> Identity {
        Identity {
            oin: "00000001800000000001".parse().unwrap(),
            organisation: "Veilig Thuis Utrecht".into(),
            kind: AgencyKind::Vt,
            worker: worker.into(),
            role: Role::Caseworker,
        }
    }

    #[test]
    fn key_packages_verify_and_name_the_device_identity() {
        let device = Device::open(&identity("anna"), None).unwrap();
        let packages = device.key_packages(3).unwrap();
        assert_eq!(packages.len(), 3);
        for bytes in packages {
            let verified = wire::mls::verify_key_package(&bytes).unwrap();
            assert_eq!(verified.member, identity("anna").member_id());
            assert_eq!(verified.kind, AgencyKind::Vt);
        }
    }

    #[test]
    fn the_device_keeps_its_keys_across_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let first = Device::open(&identity("anna"), Some(dir.path())).unwrap();
        first.key_packages(2).unwrap();
        let key = first.signature_key().to_vec();
        drop(first);
        let again = Device::open(&identity("anna"), Some(dir.path())).unwrap();
        assert_eq!(again.signature_key(), key.as_slice());
        assert!(!again.provider.storage.values.read().unwrap().is_empty());
        assert!(matches!(Device::open(&identity("piet"), Some(dir.path())), Err(DeviceError::OtherIdentity(_))));
    }

    #[test]
    fn a_corrupt_state_file_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("mls-state.cbor"), b"\xff\x00garbage").unwrap();
        assert!(matches!(Device::open(&identity("anna"), Some(dir.path())), Err(DeviceError::State { .. })));
    }
}
