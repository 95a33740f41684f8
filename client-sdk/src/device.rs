//! This device's MLS identity: its signature key, its credential, and the
//! MLS state (KeyPackage secrets, groups) that must survive a restart.
//!
//! The credential names the same identity as the device's TLS certificate (see
//! `wire::mls`), and every leaf this device makes carries a binding signed with
//! that certificate's key (`certs::binding`). The device in turn accepts no
//! one else's leaf (in a KeyPackage it adds, a group it joins, or a commit it
//! processes) whose binding does not verify against its identity CA: the hub
//! hands out KeyPackages and Welcomes, but is never believed about whose key
//! is whose. The
//! state lives in openmls's key-value storage, which this module writes to
//! `STATE_DIR/mls-state.cbor` atomically (write, sync, rename), so a crash
//! leaves either the old or the new state, never half. What this device sends
//! (a message, a commit, KeyPackages) is written before it leaves, so no key is
//! ever used twice; what it reads (entries processed, messages kept, and
//! acknowledgements) is only marked [`Device::is_dirty`] and written by
//! [`Device::save`] once per burst, before the hub hears of any acknowledgement
//! it covers. A crash in between loses nothing: the hub still holds those
//! entries and delivers them again to the state that can still read them.
//! Without a state directory the state lives in memory and dies with the client.
//!
//! The state holds the device's signature key and its groups' secrets, so the
//! file is created readable by its owner only (0600) in a directory only its
//! owner may enter (0700). An application that wants more (the state on a
//! shared or backed-up disk) gives a [`StateKey`]: the file is then sealed with
//! AES-256-GCM, and opening it with another key, or with none, is a typed
//! error rather than a silently new identity.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use std::collections::HashMap;
use std::sync::Arc;

use certs::binding::{Binder, BindingError, Bound, SafetyNumber, Validity, Verifier};

use openmls::messages::group_info::{GroupInfo, VerifiableGroupInfo};
use openmls::prelude::tls_codec::{Deserialize as _, Serialize as _};
use openmls::prelude::Member;
use openmls::prelude::{
    BasicCredential, Credential, CredentialWithKey, Extensions, KeyPackage, LeafNode, LeafNodeIndex,
    LeafNodeParameters, MlsGroup, MlsGroupCreateConfig, MlsGroupJoinConfig, MlsMessageBodyIn, MlsMessageIn,
    MlsMessageOut, ProcessedMessageContent, ProposalStore, PublicGroup, RatchetTreeIn, Sender, StagedCommit,
    StagedWelcome, PURE_PLAINTEXT_WIRE_FORMAT_POLICY,
};
use openmls_basic_credential::SignatureKeyPair;
use openmls_memory_storage::MemoryStorage;
use openmls_rust_crypto::RustCrypto;
use openmls_traits::OpenMlsProvider;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use ring::rand::{SecureRandom as _, SystemRandom};
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;
use wire::mls::{credential_identity, group_id, member_leaf, member_of, CIPHERSUITE};
use wire::{MemberId, ThreadId};

/// Messages handed to the application and not yet acknowledged that a device keeps at most.
pub const MAX_UNACKNOWLEDGED: usize = 4096;

/// Past epochs whose keys a device keeps, so messages sent just before a
/// commit can still be read after it.
const MAX_PAST_EPOCHS: usize = 4;

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
    /// The state file is encrypted and the given [`StateKey`] does not open it
    /// (or the file was altered).
    #[error("the MLS state in {0} does not open with the given state key (a wrong key, or the file was altered)")]
    WrongKey(PathBuf),
    /// The state file is encrypted and no [`StateKey`] was given.
    #[error("the MLS state in {0} is encrypted: give its state key")]
    KeyRequired(PathBuf),
    /// A leaf (in a KeyPackage to add) is not bound to its identity's
    /// certificate; nothing was encrypted to it.
    #[error("refused an MLS leaf: {0}")]
    Unbound(#[from] BindingError),
    /// A group offered to recover into holds an identity that is not in the
    /// group this device holds (see [`Rejoin::Recover`]); it kept its group.
    #[error("the group offered to rejoin holds {0}, who is not in this device's group; the application decides")]
    Stranger(String),
}

/// The first bytes of an encrypted state file, then a nonce and the sealed
/// state. A plain state file is CBOR and never starts with them.
const SEALED_MAGIC: &[u8] = b"KETENHUB-SEALED-STATE-1\n";

/// A 256-bit key the application supplies to encrypt the device state at
/// rest (AES-256-GCM). Keep it outside the state directory, for example in
/// the operating system's key store; without it the state cannot be read.
#[derive(Clone)]
pub struct StateKey([u8; 32]);

impl StateKey {
    /// The key from its 32 bytes.
    pub fn new(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    fn cipher(&self) -> LessSafeKey {
        let key = UnboundKey::new(&AES_256_GCM, &self.0).unwrap_or_else(|_| unreachable!("32 bytes fit AES-256"));
        LessSafeKey::new(key)
    }

    /// Seals `plain` under a fresh random nonce: magic, nonce, ciphertext and tag.
    fn seal(&self, plain: &[u8]) -> Result<Vec<u8>, String> {
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new().fill(&mut nonce).map_err(|_| "the system's random source failed".to_owned())?;
        let mut sealed = plain.to_vec();
        self.cipher()
            .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(SEALED_MAGIC), &mut sealed)
            .map_err(|_| "encryption failed".to_owned())?;
        Ok([SEALED_MAGIC, &nonce, &sealed].concat())
    }

    /// Opens what [`Self::seal`] wrote (`body` is the part after the magic).
    fn open(&self, body: &[u8]) -> Option<Vec<u8>> {
        let (nonce, sealed) = body.split_first_chunk::<NONCE_LEN>()?;
        let mut sealed = sealed.to_vec();
        let plain = self
            .cipher()
            .open_in_place(Nonce::assume_unique_for_key(*nonce), Aad::from(SEALED_MAGIC), &mut sealed)
            .ok()?;
        Some(plain.to_vec())
    }
}

impl std::fmt::Debug for StateKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StateKey(<redacted>)")
    }
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
    /// openmls's store, as `wire::mls::export_storage` writes it.
    storage: ByteBuf,
    #[serde(default)]
    delivered: Vec<(ThreadId, u64)>,
    /// Decrypted messages handed to the application and not yet acknowledged.
    #[serde(default)]
    inbox: Vec<crate::Message>,
}

/// This device's MLS keys and state.
pub struct Device {
    provider: Provider,
    signer: SignatureKeyPair,
    credential: CredentialWithKey,
    /// The binding of this device's leaves to its certificate.
    binding: Extensions<LeafNode>,
    /// Checks everyone else's bindings against the identity CA.
    verifier: Arc<Verifier>,
    state_file: Option<PathBuf>,
    state_key: Option<StateKey>,
    /// Groups in use, loaded from the storage on first use.
    groups: HashMap<ThreadId, MlsGroup>,
    /// Per thread, the last entry handed to the application, so that entries
    /// delivered again after a restart are not processed twice.
    delivered: HashMap<ThreadId, u64>,
    /// Messages handed to the application and not yet acknowledged by it,
    /// oldest first: MLS forward secrecy means the hub's copies can never be
    /// decrypted again, so these are handed over again after a restart.
    inbox: Vec<crate::Message>,
    /// Whether reading changed the state since it was last written.
    dirty: bool,
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
    /// Opens the device of the identity `binder`'s certificate names: loads
    /// its state from `state_dir` when there is one, and creates new keys
    /// otherwise. Other members' leaves are checked with `verifier`. The state
    /// is kept in plain CBOR (owner-only); see [`Self::open_sealed`] to encrypt it.
    pub fn open(binder: &Binder, verifier: Arc<Verifier>, state_dir: Option<&Path>) -> Result<Self, DeviceError> {
        Self::open_sealed(binder, verifier, state_dir, None)
    }

    /// Like [`Self::open`], with the state encrypted at rest under `key` when
    /// one is given. A plain state file found there is read and sealed from
    /// now on; a sealed one needs its key ([`DeviceError::WrongKey`],
    /// [`DeviceError::KeyRequired`]).
    pub fn open_sealed(
        binder: &Binder,
        verifier: Arc<Verifier>,
        state_dir: Option<&Path>,
        key: Option<&StateKey>,
    ) -> Result<Self, DeviceError> {
        let name = credential_identity(binder.identity());
        if let Some(dir) = state_dir {
            // Narrowed before anything is read or written: an older SDK left it 0755.
            certs::private::create_dir_all(dir).map_err(|e| state_error(dir, e))?;
        }
        let state_file = state_dir.map(|dir| dir.join("mls-state.cbor"));
        let (mut device, write) = match state_file.as_deref().filter(|p| p.exists()) {
            Some(path) => {
                certs::private::restrict_file(path).map_err(|e| state_error(path, e))?;
                let (device, sealed) = Self::load(path, &name, key, verifier)?;
                // A plain file is sealed as soon as a key is given.
                (device, key.is_some() && !sealed)
            }
            None => {
                let provider = Provider::default();
                let signer = SignatureKeyPair::new(CIPHERSUITE.signature_algorithm()).map_err(mls_error)?;
                signer.store(provider.storage()).map_err(mls_error)?;
                (Self::assemble(provider, signer, name, state_file, verifier), true)
            }
        };
        device.state_key = key.cloned();
        // Made afresh at every start, so a renewed certificate binds the leaves made from now on.
        device.binding = binder.extensions(device.signer.public())?;
        if write {
            device.persist()?;
        }
        Ok(device)
    }

    fn assemble(
        provider: Provider,
        signer: SignatureKeyPair,
        name: Vec<u8>,
        state_file: Option<PathBuf>,
        verifier: Arc<Verifier>,
    ) -> Self {
        let credential: Credential = BasicCredential::new(name).into();
        let credential = CredentialWithKey { credential, signature_key: signer.public().into() };
        Self {
            provider,
            signer,
            credential,
            binding: Extensions::empty(),
            verifier,
            state_file,
            state_key: None,
            groups: HashMap::new(),
            delivered: HashMap::new(),
            inbox: Vec::new(),
            dirty: false,
        }
    }

    /// The device stored at `path`, and whether the file was sealed.
    fn load(
        path: &Path,
        name: &[u8],
        key: Option<&StateKey>,
        verifier: Arc<Verifier>,
    ) -> Result<(Self, bool), DeviceError> {
        let bytes = std::fs::read(path).map_err(|e| state_error(path, e))?;
        let sealed = bytes.starts_with(SEALED_MAGIC);
        let bytes = match (bytes.strip_prefix(SEALED_MAGIC), key) {
            (Some(body), Some(key)) => key.open(body).ok_or_else(|| DeviceError::WrongKey(path.to_owned()))?,
            (Some(_), None) => return Err(DeviceError::KeyRequired(path.to_owned())),
            (None, _) => bytes,
        };
        let state: StateFile = wire::decode(&bytes).map_err(|e| state_error(path, e))?;
        if state.identity.as_slice() != name {
            return Err(DeviceError::OtherIdentity(path.to_owned()));
        }
        let provider = Provider::default();
        wire::mls::import_storage(&state.storage, &provider.storage).map_err(|e| state_error(path, e))?;
        let signer =
            SignatureKeyPair::read(provider.storage(), &state.signature_public_key, CIPHERSUITE.signature_algorithm())
                .ok_or_else(|| state_error(path, "the signature key is missing from the state"))?;
        let mut device = Self::assemble(provider, signer, name.to_vec(), Some(path.to_owned()), verifier);
        device.delivered = state.delivered.into_iter().collect();
        device.inbox = state.inbox;
        Ok((device, sealed))
    }

    /// Writes the state to disk, atomically; a no-op without a state directory.
    pub(crate) fn persist(&self) -> Result<(), DeviceError> {
        let Some(path) = &self.state_file else { return Ok(()) };
        let state = StateFile {
            identity: ByteBuf::from(self.credential_name()),
            signature_public_key: ByteBuf::from(self.signer.public().to_vec()),
            storage: ByteBuf::from(wire::mls::export_storage(&self.provider.storage)),
            delivered: self.delivered.iter().map(|(t, s)| (*t, *s)).collect(),
            inbox: self.inbox.clone(),
        };
        let mut bytes = wire::encode(&state);
        if let Some(key) = &self.state_key {
            bytes = key.seal(&bytes).map_err(|e| state_error(path, e))?;
        }
        write_atomically(path, &bytes).map_err(|e| state_error(path, e))
    }

    fn credential_name(&self) -> Vec<u8> {
        BasicCredential::try_from(self.credential.credential.clone()).map(|c| c.identity().to_vec()).unwrap_or_default()
    }

    /// This device's id at the hub, where it has its own delivery cursors:
    /// the first 16 bytes of the SHA-256 of its signature key, in hex. A new
    /// state (a new key) is a new device.
    pub fn device_id(&self) -> wire::DeviceId {
        let digest = wire::merkle::sha256(&[self.signer.public()]);
        let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
        wire::DeviceId::try_from(hex).unwrap_or_default()
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
                    .leaf_node_capabilities(certs::binding::capabilities())
                    .leaf_node_extensions(self.binding.clone())
                    .build(CIPHERSUITE, &self.provider, &self.signer, self.credential.clone())
                    .map_err(mls_error)?;
                bundle.key_package().tls_serialize_detached().map_err(mls_error)
            })
            .collect::<Result<Vec<_>, _>>()?;
        self.persist()?;
        Ok(packages)
    }
}

/// Why an entry could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecryptError {
    /// This device is not in the thread's MLS group (never joined, or removed).
    #[error("this device is not a member of the thread's group")]
    NotMember,
    /// The message is from an epoch this device has no keys for (for example,
    /// sent before it joined).
    #[error("cannot decrypt: {0}")]
    CannotDecrypt(String),
    /// The ciphertext or its signature does not verify: it was altered.
    #[error("the message was tampered with")]
    Tampered,
    /// The bytes are not an MLS message.
    #[error("not an MLS message: {0}")]
    Malformed(String),
    /// A leaf the message brings into the group (an added member, a joined
    /// tree, a commit's new leaf) is not bound to the certificate of the
    /// identity it names, or changes its identity; the message was not applied.
    #[error("refused an MLS leaf: {0}")]
    Unbound(BindingError),
    /// An external commit that breaks the rule for rejoining (see
    /// `Client::rejoin`): by an identity with no device in the group, or
    /// removing another identity's devices; it was not applied.
    #[error("refused an external commit: {0}")]
    RefusedRejoin(String),
}

/// What processing a thread entry through the group produced.
#[derive(Debug)]
pub enum Processed {
    /// An application message, decrypted, from the member its credential names.
    Application {
        /// The plaintext.
        plaintext: Vec<u8>,
        /// The sender, as the MLS credential names it.
        sender: MemberId,
    },
    /// A commit was applied; `removed_self` when it removed this device.
    Commit {
        /// Whether this device was removed by it.
        removed_self: bool,
    },
    /// Nothing to do (an echo of this device's own message, or an old commit).
    Nothing,
}

/// When [`Device::rejoin`] rejoins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejoin {
    /// For a device that holds no group of the thread and was not told it
    /// lost one: only when the tree holds a device of this identity but none
    /// with this device's key. Not when it holds this device's key (it was
    /// added, and its Welcome is on its way), nor when it holds no device of
    /// the identity (not added yet: a rejoin would be refused).
    IfMissing,
    /// For a device that could not follow its group: always, but only into a
    /// tree whose identities all are in the group it holds
    /// ([`DeviceError::Stranger`] otherwise). A hostile hub that makes a
    /// device fail a commit and then offers an older or forked group with
    /// someone since removed gets nothing; someone rightly added meanwhile
    /// makes the application decide ([`Rejoin::Always`]).
    Recover,
    /// When the application says so.
    Always,
}

/// A commit this device made, TLS-encoded as the hub takes it.
#[derive(Debug, Clone)]
pub struct Commit {
    /// The commit (an MLS public message).
    pub commit: Vec<u8>,
    /// The Welcome for the devices it adds, if any.
    pub welcome: Option<Vec<u8>>,
    /// The GroupInfo of the epoch it leads to, which the hub keeps for devices that rejoin.
    pub group_info: Vec<u8>,
}

impl Commit {
    fn encode(
        commit: &MlsMessageOut,
        welcome: Option<MlsMessageOut>,
        group_info: Option<GroupInfo>,
    ) -> Result<Self, DeviceError> {
        // Always made: the group config asks openmls for the ratchet tree extension, which implies it.
        let group_info = group_info.ok_or_else(|| DeviceError::Mls("openmls made no GroupInfo".into()))?;
        Ok(Self {
            commit: commit.tls_serialize_detached().map_err(mls_error)?,
            welcome: welcome.map(|w| w.tls_serialize_detached()).transpose().map_err(mls_error)?,
            group_info: MlsMessageOut::from(group_info).tls_serialize_detached().map_err(mls_error)?,
        })
    }
}

/// Classifies openmls's processing errors. openmls does not export all of its
/// error types, so this reads their names: AEAD and signature failures mean
/// the bytes were altered, and a key used twice means a ciphertext was replayed
/// (the SDK never processes an entry twice); eviction means this device left.
fn decrypt_error(error: impl std::fmt::Debug) -> DecryptError {
    let text = format!("{error:?}");
    let tampered = ["AeadError", "InvalidSignature", "InvalidMembershipTag", "MalformedContent", "SecretReuseError"];
    if tampered.iter().any(|t| text.contains(t)) {
        DecryptError::Tampered
    } else if text.contains("UseAfterEviction") {
        DecryptError::NotMember
    } else {
        DecryptError::CannotDecrypt(text)
    }
}

/// The leaf nodes of every member of `group`.
fn leaves(group: &MlsGroup) -> impl Iterator<Item = &LeafNode> {
    let public = group.public_group();
    group.members().filter_map(move |m| public.leaf(m.index))
}

/// Checks every leaf a commit brings into the group: the KeyPackages it adds,
/// the leaves its Update proposals and its update path put in place. Each must
/// be bound to its certificate, and an updated leaf must keep the identity of
/// the leaf it replaces, so that no member can pass for another.
fn check_new_leaves(
    verifier: &Verifier,
    group: &MlsGroup,
    staged: &StagedCommit,
    committer: &Option<LeafNodeIndex>,
) -> Result<(), DecryptError> {
    let public = group.public_group();
    let bound = |old: Option<LeafNodeIndex>, leaf: &LeafNode| {
        verifier.verify_replacement(old.and_then(|i| public.leaf(i)), leaf).map_err(DecryptError::Unbound)
    };
    let same_identity = |index: LeafNodeIndex, leaf: &LeafNode| {
        let before = public.leaf(index).map(|l| l.credential());
        if before == Some(leaf.credential()) {
            Ok(())
        } else {
            Err(DecryptError::Unbound(BindingError::OtherIdentity {
                credential: member_of(leaf.credential()).map(|(m, _)| m.to_string()).unwrap_or_default(),
                certificate: before.and_then(member_of).map(|(m, _)| m.to_string()).unwrap_or_default(),
            }))
        }
    };
    for add in staged.add_proposals() {
        bound(None, add.add_proposal().key_package().leaf_node())?;
    }
    for update in staged.update_proposals() {
        let leaf = update.update_proposal().leaf_node();
        let sender = member_leaf(update.sender());
        if let Some(index) = sender {
            same_identity(index, leaf)?;
        }
        bound(sender, leaf)?;
    }
    if let Some(leaf) = staged.update_path_leaf_node() {
        if let Some(index) = committer {
            same_identity(*index, leaf)?;
        }
        bound(*committer, leaf)?;
    }
    Ok(())
}

/// Checks an external commit: a device may join this way only for an identity
/// that already has a device in the group (a new device of a member, or one
/// that lost its state), and may remove only devices of that identity. The
/// hub admits a rejoin only from a member of the thread, but is not believed:
/// without this rule it could let any holder of a chain certificate in.
fn check_rejoin(group: &MlsGroup, staged: &StagedCommit, joiner: &Credential) -> Result<(), DecryptError> {
    let refused = |why: &str| DecryptError::RefusedRejoin(why.to_owned());
    if !group.members().any(|m| &m.credential == joiner) {
        return Err(refused("an external commit by an identity with no device in the group"));
    }
    let public = group.public_group();
    let removes_others = staged
        .remove_proposals()
        .any(|r| public.leaf(r.remove_proposal().removed()).map(|l| l.credential()) != Some(joiner));
    if removes_others || staged.add_proposals().next().is_some() || staged.psk_proposals().next().is_some() {
        return Err(refused("an external commit that adds, or removes another identity's devices"));
    }
    Ok(())
}

fn parse(bytes: &[u8]) -> Result<MlsMessageIn, DecryptError> {
    MlsMessageIn::tls_deserialize_exact(bytes).map_err(|e| DecryptError::Malformed(e.to_string()))
}

impl Device {
    fn create_config(&self) -> Result<MlsGroupCreateConfig, DeviceError> {
        Ok(MlsGroupCreateConfig::builder()
            .ciphersuite(CIPHERSUITE)
            .wire_format_policy(PURE_PLAINTEXT_WIRE_FORMAT_POLICY)
            .use_ratchet_tree_extension(true)
            .max_past_epochs(MAX_PAST_EPOCHS)
            .capabilities(certs::binding::capabilities())
            .with_leaf_node_extensions(self.binding.clone())
            .map_err(mls_error)?
            .build())
    }

    fn join_config() -> MlsGroupJoinConfig {
        MlsGroupJoinConfig::builder()
            .wire_format_policy(PURE_PLAINTEXT_WIRE_FORMAT_POLICY)
            .use_ratchet_tree_extension(true)
            .max_past_epochs(MAX_PAST_EPOCHS)
            .build()
    }

    fn group(&mut self, thread: ThreadId) -> Option<&mut MlsGroup> {
        if !self.groups.contains_key(&thread) {
            let group = MlsGroup::load(self.provider.storage(), &group_id(thread)).ok().flatten()?;
            self.groups.insert(thread, group);
        }
        self.groups.get_mut(&thread)
    }

    /// The thread's group, loaded on first use, with the provider and signer
    /// that operate on it: openmls needs all three at once.
    fn group_parts(&mut self, thread: ThreadId) -> Option<(&mut MlsGroup, &Provider, &SignatureKeyPair)> {
        self.group(thread)?;
        let group = self.groups.get_mut(&thread)?;
        Some((group, &self.provider, &self.signer))
    }

    fn group_or_err(&mut self, thread: ThreadId) -> Result<(&mut MlsGroup, &Provider, &SignatureKeyPair), DeviceError> {
        self.group_parts(thread).ok_or_else(|| DeviceError::Mls("this device has no group for the thread".into()))
    }

    /// Creates the MLS group of a new thread; returns its GroupInfo and ratchet
    /// tree for the hub.
    pub fn create_group(&mut self, thread: ThreadId) -> Result<(Vec<u8>, Vec<u8>), DeviceError> {
        let group = MlsGroup::new_with_group_id(
            &self.provider,
            &self.signer,
            &self.create_config()?,
            group_id(thread),
            self.credential.clone(),
        )
        .map_err(mls_error)?;
        let info = group.export_group_info(self.provider.crypto(), &self.signer, false).map_err(mls_error)?;
        let info = info.tls_serialize_detached().map_err(mls_error)?;
        let tree = group.export_ratchet_tree().tls_serialize_detached().map_err(mls_error)?;
        self.groups.insert(thread, group);
        self.persist()?;
        Ok((info, tree))
    }

    /// The group's epoch, if this device is in the thread's group.
    pub fn epoch(&mut self, thread: ThreadId) -> Option<u64> {
        self.group(thread).map(|g| g.epoch().as_u64())
    }

    /// Whether `member` is in the thread's group, as this device sees it.
    pub fn has_member(&mut self, thread: ThreadId, member: &MemberId) -> bool {
        self.group(thread)
            .is_some_and(|g| g.members().any(|m| member_of(&m.credential).is_some_and(|(x, _)| &x == member)))
    }

    /// Prepares a commit adding the device of `key_package`. The commit stays
    /// pending until accepted or refused.
    pub fn add(&mut self, thread: ThreadId, key_package: KeyPackage) -> Result<Commit, DeviceError> {
        self.verifier.verify_leaf(key_package.leaf_node(), Validity::Now)?;
        let (group, provider, signer) = self.group_or_err(thread)?;
        let (commit, welcome, info) = group.add_members(provider, signer, &[key_package]).map_err(mls_error)?;
        let out = Commit::encode(&commit, Some(welcome), info)?;
        self.persist()?;
        Ok(out)
    }

    /// Joins the thread's group again by an external commit, from the GroupInfo
    /// and ratchet tree the hub keeps (`Reply::GroupInfo`): for a device that
    /// was never in it (a new device of a member) or lost track of it. Any
    /// group this device held for the thread is dropped, and a leaf of this
    /// device still in the tree is removed by the same commit. Every leaf of
    /// the tree must be bound to its certificate, as when joining from a
    /// Welcome: the hub hands out the GroupInfo, but is not believed about it.
    /// The group is in use at once; [`Self::forget`] it if the hub refuses the
    /// commit.
    ///
    /// `mode` says when to rejoin at all (see [`Rejoin`]); `None` when not.
    pub fn rejoin(
        &mut self,
        thread: ThreadId,
        (group_info, ratchet_tree): (&[u8], &[u8]),
        mode: Rejoin,
    ) -> Result<Option<Commit>, DeviceError> {
        let info = match MlsMessageIn::tls_deserialize_exact(group_info).map_err(mls_error)?.extract() {
            MlsMessageBodyIn::GroupInfo(info) => info,
            _ => return Err(DeviceError::Mls("not a GroupInfo".into())),
        };
        if info.group_id() != &group_id(thread) {
            return Err(DeviceError::Mls("a GroupInfo of another thread".into()));
        }
        let offered = self.members_of_tree(&info, ratchet_tree)?;
        if !self.should_rejoin(thread, &offered, mode)? {
            return Ok(None);
        }
        let tree = RatchetTreeIn::tls_deserialize_exact(ratchet_tree).map_err(mls_error)?;
        self.forget(thread)?;
        let leaf = LeafNodeParameters::builder()
            .with_capabilities(certs::binding::capabilities())
            .with_extensions(self.binding.clone())
            .build();
        let (mut group, bundle) = MlsGroup::external_commit_builder()
            .with_ratchet_tree(tree)
            .with_config(Self::join_config())
            .build_group(&self.provider, info, self.credential.clone())
            .map_err(mls_error)?
            .leaf_node_parameters(leaf)
            .load_psks(self.provider.storage())
            .map_err(mls_error)?
            .build(self.provider.rand(), self.provider.crypto(), &self.signer, |_| true)
            .map_err(mls_error)?
            .finalize(&self.provider)
            .map_err(mls_error)?;
        if let Some(refusal) = self.unbound_leaf(&group) {
            let _ = group.delete(self.provider.storage());
            return Err(DeviceError::Unbound(refusal));
        }
        let (commit, _, info) = bundle.into_contents();
        let out = Commit::encode(&commit, None, info)?;
        self.groups.insert(thread, group);
        self.persist()?;
        Ok(Some(out))
    }

    /// The devices of the tree the hub offers, verified against its GroupInfo.
    fn members_of_tree(&self, info: &VerifiableGroupInfo, tree: &[u8]) -> Result<Vec<Member>, DeviceError> {
        let tree = RatchetTreeIn::tls_deserialize_exact(tree).map_err(mls_error)?;
        let storage = MemoryStorage::default();
        let (public, _) =
            PublicGroup::from_external(self.provider.crypto(), &storage, tree, info.clone(), ProposalStore::new())
                .map_err(mls_error)?;
        Ok(public.members().collect())
    }

    /// Whether to rejoin, by `mode`, the group whose devices are `offered`.
    fn should_rejoin(&mut self, thread: ThreadId, offered: &[Member], mode: Rejoin) -> Result<bool, DeviceError> {
        let held: Option<Vec<Credential>> = self.group(thread).map(|g| g.members().map(|m| m.credential).collect());
        Ok(match (mode, held) {
            (Rejoin::IfMissing, Some(_)) => false,
            (Rejoin::IfMissing, None) => {
                !offered.iter().any(|m| m.signature_key == self.signer.public())
                    && offered.iter().any(|m| m.credential == self.credential.credential)
            }
            (Rejoin::Recover, Some(held)) => {
                let strangers = offered.iter().filter(|m| !held.contains(&m.credential));
                if let Some(stranger) = strangers.map(|m| m.credential.clone()).next() {
                    let who = member_of(&stranger).map(|(m, _)| m.to_string()).unwrap_or_default();
                    return Err(DeviceError::Stranger(who));
                }
                true
            }
            (Rejoin::Recover, None) | (Rejoin::Always, _) => true,
        })
    }

    /// Drops this device's group of the thread, if it holds one.
    pub fn forget(&mut self, thread: ThreadId) -> Result<(), DeviceError> {
        if let Some(mut group) = self.group(thread).is_some().then(|| self.groups.remove(&thread)).flatten() {
            group.delete(self.provider.storage()).map_err(mls_error)?;
            self.persist()?;
        }
        Ok(())
    }

    /// Prepares a commit removing `member`'s devices; the commit stays pending.
    pub fn remove(&mut self, thread: ThreadId, member: &MemberId) -> Result<Commit, DeviceError> {
        let (group, provider, signer) = self.group_or_err(thread)?;
        let leaves: Vec<LeafNodeIndex> = group
            .members()
            .filter(|m| member_of(&m.credential).is_some_and(|(x, _)| &x == member))
            .map(|m| m.index)
            .collect();
        if leaves.is_empty() {
            return Err(DeviceError::Mls(format!("{member} is not in the group")));
        }
        let (commit, _, info) = group.remove_members(provider, signer, &leaves).map_err(mls_error)?;
        let commit = Commit::encode(&commit, None, info)?;
        self.persist()?;
        Ok(commit)
    }

    /// The hub accepted this device's pending commit (a no-op when it was
    /// already merged because the commit's own entry arrived first).
    pub fn commit_accepted(&mut self, thread: ThreadId) -> Result<(), DeviceError> {
        if let Some((group, provider, _)) = self.group_parts(thread).filter(|(g, _, _)| g.pending_commit().is_some()) {
            group.merge_pending_commit(provider).map_err(mls_error)?;
        }
        self.persist()
    }

    /// Drops a pending commit the hub will never accept.
    pub fn commit_abandoned(&mut self, thread: ThreadId) -> Result<(), DeviceError> {
        if let Some((group, provider, _)) = self.group_parts(thread) {
            group.clear_pending_commit(provider.storage()).map_err(mls_error)?;
        }
        self.persist()
    }

    /// Encrypts an application message for the thread.
    pub fn encrypt(&mut self, thread: ThreadId, plaintext: &[u8]) -> Result<Vec<u8>, DeviceError> {
        let (group, provider, signer) = self.group_or_err(thread)?;
        let message = group.create_message(provider, signer, plaintext).map_err(mls_error)?;
        let bytes = message.tls_serialize_detached().map_err(mls_error)?;
        self.persist()?;
        Ok(bytes)
    }

    /// Processes an MLS message of the thread (an application message or a commit).
    pub fn process(&mut self, thread: ThreadId, bytes: &[u8]) -> Result<Processed, DecryptError> {
        let message =
            parse(bytes)?.try_into_protocol_message().map_err(|e| DecryptError::Malformed(format!("{e:?}")))?;
        let verifier = self.verifier.clone();
        let (group, provider, _) = self.group_parts(thread).ok_or(DecryptError::NotMember)?;
        if message.epoch() < group.epoch() && message.is_handshake_message() {
            return Ok(Processed::Nothing);
        }
        let processed = group.process_message(provider, message).map_err(decrypt_error)?;
        let sender = member_of(processed.credential()).map(|(m, _)| m);
        let sender_leaf = member_leaf(processed.sender());
        let joiner = matches!(processed.sender(), Sender::NewMemberCommit).then(|| processed.credential().clone());
        let result = match processed.into_content() {
            ProcessedMessageContent::ApplicationMessage(message) => Processed::Application {
                plaintext: message.into_bytes(),
                sender: sender
                    .ok_or_else(|| DecryptError::CannotDecrypt("the sender has no Ketenhub credential".into()))?,
            },
            ProcessedMessageContent::StagedCommitMessage(staged) => {
                if let Some(joiner) = &joiner {
                    check_rejoin(group, &staged, joiner)?;
                }
                check_new_leaves(&verifier, group, &staged, &sender_leaf)?;
                let removed_self = staged.self_removed();
                group
                    .merge_staged_commit(provider, *staged)
                    .map_err(|e| DecryptError::CannotDecrypt(format!("{e:?}")))?;
                Processed::Commit { removed_self }
            }
            ProcessedMessageContent::OwnPendingCommit => {
                group.merge_pending_commit(provider).map_err(|e| DecryptError::CannotDecrypt(format!("{e:?}")))?;
                Processed::Commit { removed_self: false }
            }
            _ => Processed::Nothing,
        };
        // Not persisted here: the caller persists the new group state together
        // with what it hands the application (see `keep`), in one write.
        Ok(result)
    }

    /// Joins a thread's group from a Welcome addressed to this device.
    /// False when this device already holds the thread's group: it rejoined by
    /// an external commit, which removed the leaf this Welcome was for.
    pub fn join(&mut self, thread: ThreadId, welcome: &[u8]) -> Result<bool, DecryptError> {
        if self.group(thread).is_some() {
            return Ok(false);
        }
        let welcome = match parse(welcome)?.extract() {
            MlsMessageBodyIn::Welcome(welcome) => welcome,
            _ => return Err(DecryptError::Malformed("not a Welcome".into())),
        };
        let mut group = StagedWelcome::new_from_welcome(&self.provider, &Self::join_config(), welcome, None)
            .and_then(|staged| staged.into_group(&self.provider))
            .map_err(|e| DecryptError::CannotDecrypt(format!("{e:?}")))?;
        let refusal = if group.group_id() != &group_id(thread) {
            Some(DecryptError::Malformed("a Welcome for another thread".into()))
        } else {
            self.unbound_leaf(&group).map(DecryptError::Unbound)
        };
        if let Some(refusal) = refusal {
            // openmls stored the group as it joined; a refused one must not stay behind.
            let _ = group.delete(self.provider.storage());
            return Err(refusal);
        }
        self.groups.insert(thread, group);
        let _ = self.persist();
        Ok(true)
    }

    /// The first leaf of `group` whose binding does not verify, if any.
    fn unbound_leaf(&self, group: &MlsGroup) -> Option<BindingError> {
        leaves(group).find_map(|leaf| self.verifier.verify_leaf(leaf, Validity::Ever).err())
    }

    /// Every device in the thread's group, with its verified binding (or why it
    /// does not verify), this device's own included.
    pub fn bindings(&mut self, thread: ThreadId) -> Vec<Result<Bound, BindingError>> {
        let verifier = self.verifier.clone();
        let Some(group) = self.group(thread) else { return Vec::new() };
        leaves(group).map(|leaf| verifier.verify_leaf(leaf, Validity::Ever)).collect()
    }

    /// This device's own safety number, as other members see it.
    pub fn safety_number(&self) -> Result<SafetyNumber, BindingError> {
        let extension = self.binding.unknown(certs::binding::EXTENSION_TYPE).ok_or(BindingError::Missing)?;
        let bound =
            self.verifier.verify(&extension.0, &self.credential_name(), self.signer.public(), Validity::Ever)?;
        Ok(bound.safety_number)
    }

    /// The last entry of `thread` handed to the application.
    pub fn delivered(&self, thread: ThreadId) -> u64 {
        self.delivered.get(&thread).copied().unwrap_or(0)
    }

    /// Records that the application has seen `thread` up to `seq`.
    pub fn mark_delivered(&mut self, thread: ThreadId, seq: u64) {
        let seen = self.delivered.entry(thread).or_default();
        *seen = (*seen).max(seq);
        self.dirty = true;
    }

    /// Keeps a message handed to the application until it acknowledges it;
    /// only a device with a state directory keeps anything, since nothing
    /// else survives a restart. At most [`MAX_UNACKNOWLEDGED`] are kept: an
    /// application acknowledges what it has handled.
    pub fn keep(&mut self, message: crate::Message) {
        if self.state_file.is_none() {
            return;
        }
        if self.inbox.len() >= MAX_UNACKNOWLEDGED {
            let dropped = self.inbox.remove(0);
            tracing::warn!(thread = %dropped.thread, seq = dropped.seq, "too many unacknowledged messages; the oldest is no longer kept");
        }
        self.inbox.push(message);
        self.dirty = true;
    }

    /// The messages handed over and not yet acknowledged, oldest first.
    pub fn unacknowledged(&self) -> &[crate::Message] {
        &self.inbox
    }

    /// The application acknowledged `thread` up to `seq`: those messages are
    /// no longer kept once the state is next saved, which must happen before
    /// the hub hears of the acknowledgement.
    pub fn acknowledge(&mut self, thread: ThreadId, seq: u64) {
        let before = self.inbox.len();
        self.inbox.retain(|m| m.thread != thread || m.seq > seq);
        self.dirty |= self.inbox.len() != before;
    }

    /// Whether reading changed the state since it was last saved.
    pub fn is_dirty(&self) -> bool {
        self.dirty
    }

    /// Writes what reading changed (group states, entries handed over, kept
    /// and acknowledged messages) to disk in one write; a no-op when nothing did.
    pub fn save(&mut self) -> Result<(), DeviceError> {
        if self.dirty {
            self.persist()?;
            self.dirty = false;
        }
        Ok(())
    }
}

fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    certs::private::create_dir_all(dir)?;
    let temporary = path.with_extension("tmp");
    {
        // Owner-only from creation; the rename keeps the mode.
        let mut file = certs::private::create_file(&temporary)?;
        file.write_all(bytes)?;
        file.sync_all()?;
    }
    std::fs::rename(&temporary, path)?;
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use certs::dev::DevPki;
    use std::sync::OnceLock;

    /// One dev PKI for all of this module's tests: making one takes a moment.
    fn pki() -> &'static DevPki {
        static PKI: OnceLock<DevPki> = OnceLock::new();
        PKI.get_or_init(|| DevPki::generate().unwrap())
    }

    fn binder_of(pki: &DevPki, slug: &str) -> Binder {
        let pair = pki.client(slug).unwrap();
        Binder::from_pem(pair.cert.as_bytes(), pair.key.as_bytes()).unwrap()
    }

    fn verifier() -> Arc<Verifier> {
        Arc::new(Verifier::from_pem(pki().ca.cert.as_bytes()).unwrap())
    }

    fn binder(slug: &str) -> Binder {
        binder_of(pki(), slug)
    }

    fn open(slug: &str, dir: Option<&Path>) -> Result<Device, DeviceError> {
        Device::open(&binder(slug), verifier(), dir)
    }

    fn sealed(slug: &str, dir: &Path, key: &StateKey) -> Result<Device, DeviceError> {
        Device::open_sealed(&binder(slug), verifier(), Some(dir), Some(key))
    }

    fn package_of(device: &Device) -> KeyPackage {
        wire::mls::verify_key_package(&device.key_packages(1).unwrap()[0]).unwrap().key_package
    }

    const ANNA: &str = "vt-utrecht-caseworker";
    const SANNE: &str = "lt-woerden-caseworker";
    const JORIS: &str = "lt-oudewater-caseworker";

    #[test]
    fn key_packages_verify_and_name_the_device_identity() {
        let device = open(ANNA, None).unwrap();
        let packages = device.key_packages(3).unwrap();
        assert_eq!(packages.len(), 3);
        for bytes in packages {
            let verified = wire::mls::verify_key_package(&bytes).unwrap();
            assert_eq!(verified.member, binder(ANNA).identity().member_id());
            assert_eq!(verified.kind, wire::AgencyKind::VT);
            let bound = verifier().verify_leaf(verified.key_package.leaf_node(), Validity::Now).unwrap();
            assert_eq!(bound.safety_number, device.safety_number().unwrap());
        }
    }

    #[test]
    fn the_device_keeps_its_keys_across_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let first = open(ANNA, Some(dir.path())).unwrap();
        first.key_packages(2).unwrap();
        let key = first.signature_key().to_vec();
        drop(first);
        let again = open(ANNA, Some(dir.path())).unwrap();
        assert_eq!(again.signature_key(), key.as_slice());
        assert!(!again.provider.storage.values.read().unwrap().is_empty());
        assert!(matches!(open(SANNE, Some(dir.path())), Err(DeviceError::OtherIdentity(_))));
    }

    #[test]
    fn a_flipped_bit_in_a_fresh_ciphertext_is_tampering() {
        let thread = ThreadId::random();
        let mut alice = open(ANNA, None).unwrap();
        let mut bob = open(SANNE, None).unwrap();
        alice.create_group(thread).unwrap();
        let package = package_of(&bob);
        let welcome = alice.add(thread, package).unwrap().welcome.unwrap();
        alice.commit_accepted(thread).unwrap();
        bob.join(thread, &welcome).unwrap();
        let mut ciphertext = alice.encrypt(thread, b"hello").unwrap();
        let middle = ciphertext.len() / 2;
        ciphertext[middle] ^= 0x10;
        assert_eq!(bob.process(thread, &ciphertext).unwrap_err(), DecryptError::Tampered);
        // The untouched message still reads.
        let clean = alice.encrypt(thread, b"again").unwrap();
        match bob.process(thread, &clean).unwrap() {
            Processed::Application { plaintext, sender } => {
                assert_eq!(plaintext, b"again");
                assert_eq!(sender, binder(ANNA).identity().member_id());
            }
            other => panic!("expected an application message, got {other:?}"),
        }
    }

    /// A KeyPackage whose credential names `slug`'s identity, made by someone
    /// without its certificate key: what a hub could hand out.
    fn unbound_package(slug: &str) -> KeyPackage {
        let provider = Provider::default();
        let signer = SignatureKeyPair::new(CIPHERSUITE.signature_algorithm()).unwrap();
        signer.store(provider.storage()).unwrap();
        let credential = BasicCredential::new(credential_identity(binder(slug).identity())).into();
        let credential = CredentialWithKey { credential, signature_key: signer.public().into() };
        KeyPackage::builder().build(CIPHERSUITE, &provider, &signer, credential).unwrap().key_package().clone()
    }

    /// Anna's group with Sanne in it, both devices up to date.
    fn pair_in_group(thread: ThreadId) -> (Device, Device) {
        let mut anna = open(ANNA, None).unwrap();
        let mut sanne = open(SANNE, None).unwrap();
        anna.create_group(thread).unwrap();
        let welcome = anna.add(thread, package_of(&sanne)).unwrap().welcome.unwrap();
        anna.commit_accepted(thread).unwrap();
        sanne.join(thread, &welcome).unwrap();
        (anna, sanne)
    }

    #[test]
    fn a_second_device_of_a_member_rejoins_but_no_outsider_does() {
        let thread = ThreadId::random();
        let mut anna = open(ANNA, None).unwrap();
        let (info, tree) = anna.create_group(thread).unwrap();
        // Someone with a chain certificate but no device in the group, given the GroupInfo (by a hostile hub, say).
        let mut sanne = open(SANNE, None).unwrap();
        // Asked to rejoin only if that is what it takes, it does not: it has no device in the group.
        assert!(sanne.rejoin(thread, (&info, &tree), Rejoin::IfMissing).unwrap().is_none());
        let outsider = sanne.rejoin(thread, (&info, &tree), Rejoin::Always).unwrap().unwrap();
        let refused = anna.process(thread, &outsider.commit);
        assert!(matches!(refused, Err(DecryptError::RefusedRejoin(_))), "{refused:?}");
        assert_eq!(anna.epoch(thread), Some(0), "not applied");
        // Anna's laptop: same certificate, its own key, and a device of Anna's is in the group.
        let mut laptop = open(ANNA, None).unwrap();
        let rejoin = laptop
            .rejoin(thread, (&info, &tree), Rejoin::IfMissing)
            .unwrap()
            .expect("a device of Anna's is in the group");
        assert!(matches!(anna.process(thread, &rejoin.commit), Ok(Processed::Commit { removed_self: false })));
        assert_eq!(anna.epoch(thread), laptop.epoch(thread));
        let sent = anna.encrypt(thread, b"voor beide apparaten").unwrap();
        let Ok(Processed::Application { plaintext, sender }) = laptop.process(thread, &sent) else { panic!() };
        assert_eq!((plaintext.as_slice(), sender), (&b"voor beide apparaten"[..], binder(ANNA).identity().member_id()));
    }

    #[test]
    fn a_device_does_not_recover_into_a_group_with_someone_it_saw_removed() {
        let thread = ThreadId::random();
        let (mut anna, sanne) = pair_in_group(thread);
        // What a hostile hub kept: the GroupInfo and tree of the epoch with Sanne in it.
        let (group, provider, signer) = anna.group_parts(thread).unwrap();
        let old_tree = group.export_ratchet_tree().tls_serialize_detached().unwrap();
        let old_info = group.export_group_info(provider.crypto(), signer, false).unwrap();
        let old_info = old_info.tls_serialize_detached().unwrap();
        anna.remove(thread, &binder(SANNE).identity().member_id()).unwrap();
        anna.commit_accepted(thread).unwrap();
        drop(sanne);
        // Told it lost the group, Anna's device is offered the old one back: it refuses and keeps its own.
        let epoch = anna.epoch(thread);
        let refused = anna.rejoin(thread, (&old_info, &old_tree), Rejoin::Recover);
        assert!(matches!(refused, Err(DeviceError::Stranger(_))), "{refused:?}");
        assert_eq!(anna.epoch(thread), epoch, "the group it held is kept");
    }

    #[test]
    fn a_key_package_not_bound_to_the_chain_is_never_added() {
        let thread = ThreadId::random();
        let mut anna = open(ANNA, None).unwrap();
        anna.create_group(thread).unwrap();
        // A name alone: no binding.
        let refused = anna.add(thread, unbound_package(SANNE));
        assert!(matches!(refused, Err(DeviceError::Unbound(BindingError::Missing))), "{refused:?}");
        // A binding made under another CA, as a hub with a PKI of its own would.
        let elsewhere = DevPki::generate().unwrap();
        let other_ca = Arc::new(Verifier::from_pem(elsewhere.ca.cert.as_bytes()).unwrap());
        let impostor = Device::open(&binder_of(&elsewhere, SANNE), other_ca, None).unwrap();
        let refused = anna.add(thread, package_of(&impostor));
        assert!(matches!(refused, Err(DeviceError::Unbound(BindingError::Chain(_)))), "{refused:?}");
        // Nothing was encrypted to either: the group is as it was.
        assert_eq!(anna.epoch(thread), Some(0));
        assert!(anna.group(thread).unwrap().pending_commit().is_none());
    }

    #[test]
    fn a_welcome_into_a_tree_with_an_unbound_leaf_is_refused() {
        let thread = ThreadId::random();
        // A group made by hand whose creator has no binding.
        let provider = Provider::default();
        let signer = SignatureKeyPair::new(CIPHERSUITE.signature_algorithm()).unwrap();
        signer.store(provider.storage()).unwrap();
        let credential = BasicCredential::new(credential_identity(binder(ANNA).identity())).into();
        let credential = CredentialWithKey { credential, signature_key: signer.public().into() };
        let config = MlsGroupCreateConfig::builder()
            .ciphersuite(CIPHERSUITE)
            .use_ratchet_tree_extension(true)
            .capabilities(certs::binding::capabilities())
            .build();
        let mut forged =
            MlsGroup::new_with_group_id(&provider, &signer, &config, group_id(thread), credential).unwrap();
        let mut sanne = open(SANNE, None).unwrap();
        let (_, welcome, _) = forged.add_members(&provider, &signer, &[package_of(&sanne)]).unwrap();
        let refused = sanne.join(thread, &welcome.tls_serialize_detached().unwrap());
        assert_eq!(refused.unwrap_err(), DecryptError::Unbound(BindingError::Missing));
        assert_eq!(sanne.epoch(thread), None, "the refused group stayed behind");
    }

    #[test]
    fn a_commit_that_renames_a_leaf_or_adds_an_unbound_one_is_not_applied() {
        let thread = ThreadId::random();
        let (mut anna, mut sanne) = pair_in_group(thread);
        // Sanne renames her own leaf to Joris in an update path.
        let credential = BasicCredential::new(credential_identity(binder(JORIS).identity())).into();
        let renamed = CredentialWithKey { credential, signature_key: sanne.signer.public().into() };
        let parameters = openmls::prelude::LeafNodeParameters::builder().with_credential_with_key(renamed).build();
        let (group, provider, signer) = sanne.group_parts(thread).unwrap();
        let commit =
            group.self_update(provider, signer, parameters).unwrap().commit().tls_serialize_detached().unwrap();
        group.clear_pending_commit(provider.storage()).unwrap();
        let refused = anna.process(thread, &commit).unwrap_err();
        assert!(matches!(refused, DecryptError::Unbound(BindingError::OtherIdentity { .. })), "{refused:?}");
        assert_eq!(anna.epoch(thread), Some(1));

        // Sanne adds a KeyPackage nobody bound.
        let (group, provider, signer) = sanne.group_parts(thread).unwrap();
        let (commit, _, _) = group.add_members(provider, signer, &[unbound_package(JORIS)]).unwrap();
        let refused = anna.process(thread, &commit.tls_serialize_detached().unwrap()).unwrap_err();
        assert_eq!(refused, DecryptError::Unbound(BindingError::Missing));
        assert_eq!(anna.epoch(thread), Some(1));
        assert!(!anna.has_member(thread, &binder(JORIS).identity().member_id()));
    }

    #[test]
    fn a_devices_own_message_read_back_is_nothing_not_an_error() {
        let thread = ThreadId::random();
        let (mut anna, _sanne) = pair_in_group(thread);
        let sent = anna.encrypt(thread, b"mine").unwrap();
        // As after a restart, when the local copy of the send is gone.
        assert!(matches!(anna.process(thread, &sent), Ok(Processed::Nothing)));
    }

    #[test]
    fn both_members_see_the_same_safety_numbers() {
        let thread = ThreadId::random();
        let (mut anna, mut sanne) = pair_in_group(thread);
        let seen_by_anna: Vec<Bound> = anna.bindings(thread).into_iter().map(Result::unwrap).collect();
        let seen_by_sanne: Vec<Bound> = sanne.bindings(thread).into_iter().map(Result::unwrap).collect();
        assert_eq!(seen_by_anna, seen_by_sanne);
        assert!(seen_by_anna.iter().any(|b| b.safety_number == anna.safety_number().unwrap()));
        assert!(seen_by_anna.iter().any(|b| b.safety_number == sanne.safety_number().unwrap()));
        assert_ne!(anna.safety_number().unwrap(), sanne.safety_number().unwrap());
    }

    #[test]
    fn a_reopened_device_commits_to_a_group_it_has_not_loaded_yet() {
        let dir = tempfile::tempdir().unwrap();
        let thread = ThreadId::random();
        open(ANNA, Some(dir.path())).unwrap().create_group(thread).unwrap();
        let mut alice = open(ANNA, Some(dir.path())).unwrap();
        let bob = open(SANNE, None).unwrap();
        let package = package_of(&bob);
        alice.add(thread, package).unwrap();
        alice.commit_accepted(thread).unwrap();
        assert_eq!(alice.epoch(thread), Some(1));
    }

    #[cfg(unix)]
    #[test]
    fn the_state_is_owner_only_even_in_a_directory_that_was_open() {
        use std::os::unix::fs::PermissionsExt as _;
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("state");
        std::fs::create_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        let device = open(ANNA, Some(&dir)).unwrap();
        device.key_packages(1).unwrap();
        let file = dir.join("mls-state.cbor");
        assert_eq!(certs::private::mode_of(&dir).unwrap(), 0o700);
        assert_eq!(certs::private::mode_of(&file).unwrap(), 0o600);
        // A file an older SDK left readable is narrowed when it is opened.
        drop(device);
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        open(ANNA, Some(&dir)).unwrap();
        assert_eq!(certs::private::mode_of(&file).unwrap(), 0o600);
        // A nested state directory that does not exist yet is created owner-only.
        let nested = root.path().join("a/b");
        open(ANNA, Some(&nested)).unwrap();
        assert_eq!(certs::private::mode_of(&nested).unwrap(), 0o700);
        assert_eq!(certs::private::mode_of(&nested.join("mls-state.cbor")).unwrap(), 0o600);
    }

    #[test]
    fn a_sealed_state_opens_only_with_its_key() {
        let dir = tempfile::tempdir().unwrap();
        let key = StateKey::new([7; 32]);
        let first = sealed(ANNA, dir.path(), &key).unwrap();
        first.key_packages(2).unwrap();
        let public = first.signature_key().to_vec();
        drop(first);
        let bytes = std::fs::read(dir.path().join("mls-state.cbor")).unwrap();
        let name = credential_identity(binder(ANNA).identity());
        assert!(!bytes.windows(public.len()).any(|w| w == public), "the signature key is readable");
        assert!(!bytes.windows(name.len()).any(|w| w == name.as_slice()), "the identity is readable");
        assert!(wire::decode::<StateFile>(&bytes).is_err());

        let again = sealed(ANNA, dir.path(), &key).unwrap();
        assert_eq!(again.signature_key(), public.as_slice());
        drop(again);
        let wrong = sealed(ANNA, dir.path(), &StateKey::new([8; 32]));
        assert!(matches!(wrong, Err(DeviceError::WrongKey(_))), "{wrong:?}");
        assert!(matches!(open(ANNA, Some(dir.path())), Err(DeviceError::KeyRequired(_))));
        // Neither refusal touched the file.
        assert_eq!(std::fs::read(dir.path().join("mls-state.cbor")).unwrap(), bytes);

        let mut altered = bytes.clone();
        let last = altered.len() - 1;
        altered[last] ^= 1;
        std::fs::write(dir.path().join("mls-state.cbor"), &altered).unwrap();
        let tampered = sealed(ANNA, dir.path(), &key);
        assert!(matches!(tampered, Err(DeviceError::WrongKey(_))), "{tampered:?}");
    }

    #[test]
    fn a_plain_state_is_sealed_once_a_key_is_given() {
        let dir = tempfile::tempdir().unwrap();
        let public = open(ANNA, Some(dir.path())).unwrap().signature_key().to_vec();
        let key = StateKey::new([9; 32]);
        let sealed = sealed(ANNA, dir.path(), &key).unwrap();
        assert_eq!(sealed.signature_key(), public.as_slice());
        assert!(std::fs::read(dir.path().join("mls-state.cbor")).unwrap().starts_with(SEALED_MAGIC));
    }

    #[test]
    fn debug_output_holds_no_key_material() {
        let key = StateKey::new([0xAB; 32]);
        let dir = tempfile::tempdir().unwrap();
        let device = sealed(ANNA, dir.path(), &key).unwrap();
        let printed = format!("{key:?} {device:?}");
        // The key as Debug would print its bytes (decimal or hex).
        assert!(!printed.contains("171, 171") && !printed.to_lowercase().contains("abab"), "{printed}");
        assert!(printed.contains("redacted"), "{printed}");
    }

    #[test]
    fn a_corrupt_state_file_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("mls-state.cbor"), b"\xff\x00garbage").unwrap();
        assert!(matches!(open(ANNA, Some(dir.path())), Err(DeviceError::State { .. })));
    }
}
