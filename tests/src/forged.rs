//! A device made by hand with openmls, for the attacks a well-behaved SDK
//! never makes: removing one of an identity's devices at a time, adding any
//! KeyPackage it likes, naming itself without its certificate's binding. It
//! holds one group and speaks to the hub through a raw connection, so every
//! check it meets is the hub's own.

use anyhow::{anyhow, Context};
use certs::binding::Binder;
use ketenhub_sdk::raw::RawConnection;
use ketenhub_sdk::raw::RawIncoming;
use openmls::messages::group_info::GroupInfo;
use openmls::prelude::tls_codec::{Deserialize as _, Serialize as _};
use openmls::prelude::{
    BasicCredential, CredentialWithKey, Extensions, KeyPackage, LeafNode, LeafNodeIndex, LeafNodeParameters, MlsGroup,
    MlsGroupCreateConfig, MlsGroupJoinConfig, MlsMessageBodyIn, MlsMessageIn, MlsMessageOut, StagedWelcome,
    PURE_PLAINTEXT_WIRE_FORMAT_POLICY,
};
use openmls_basic_credential::SignatureKeyPair;
use openmls_rust_crypto::OpenMlsRustCrypto;
use openmls_traits::OpenMlsProvider as _;
use wire::mls::{credential_identity, group_id, member_of, CIPHERSUITE};
use wire::{EntryBody, HubFrame, Identity, MemberId, Reply, Request, ThreadId};

fn mls(e: impl std::fmt::Debug) -> anyhow::Error {
    anyhow!("openmls: {e:?}")
}

/// The `commit` request for a commit openmls made, with its Welcome and the
/// GroupInfo of the epoch it leads to.
fn commit_request(
    thread: ThreadId,
    commit: &MlsMessageOut,
    welcome: Option<&MlsMessageOut>,
    group_info: Option<GroupInfo>,
) -> anyhow::Result<Request> {
    let group_info = group_info.context("openmls made no GroupInfo")?;
    Ok(Request::Commit {
        thread,
        commit: commit.tls_serialize_detached().map_err(mls)?,
        welcome: welcome.map(|w| w.tls_serialize_detached()).transpose().map_err(mls)?.map(Into::into),
        group_info: Some(MlsMessageOut::from(group_info).tls_serialize_detached().map_err(mls)?.into()),
    })
}

/// One hand-made device of one identity, in one thread's group.
pub struct ForgedDevice {
    provider: OpenMlsRustCrypto,
    signer: SignatureKeyPair,
    credential: CredentialWithKey,
    /// The leaf extensions: a binding, or none for a device that only names itself.
    binding: Extensions<LeafNode>,
    group: Option<MlsGroup>,
}

impl ForgedDevice {
    /// A new device of `binder`'s identity whose leaves carry a valid binding:
    /// an insider that holds its certificate and misbehaves otherwise.
    pub fn bound(binder: &Binder) -> anyhow::Result<Self> {
        let mut device = Self::unbound(binder.identity())?;
        device.binding = binder.extensions(device.signer.public())?;
        Ok(device)
    }

    /// A new device whose credential names `identity` without any binding:
    /// what someone without the identity's certificate key can make.
    pub fn unbound(identity: &Identity) -> anyhow::Result<Self> {
        let provider = OpenMlsRustCrypto::default();
        let signer = SignatureKeyPair::new(CIPHERSUITE.signature_algorithm()).map_err(mls)?;
        signer.store(provider.storage()).map_err(mls)?;
        let credential = BasicCredential::new(credential_identity(identity)).into();
        let credential = CredentialWithKey { credential, signature_key: signer.public().into() };
        Ok(Self { provider, signer, credential, binding: Extensions::empty(), group: None })
    }

    fn group(&mut self) -> anyhow::Result<&mut MlsGroup> {
        self.group.as_mut().context("no group yet")
    }

    /// Creates `thread` on the hub through `raw` and registers this device's group for it.
    pub async fn create_thread(&mut self, raw: &mut RawConnection) -> anyhow::Result<ThreadId> {
        let request = Request::CreateThread { client_ref: uuid::Uuid::new_v4() };
        let Ok(Reply::ThreadCreated { thread }) = crate::raw_reply(raw, request).await? else {
            anyhow::bail!("thread not created");
        };
        let config = MlsGroupCreateConfig::builder()
            .ciphersuite(CIPHERSUITE)
            .wire_format_policy(PURE_PLAINTEXT_WIRE_FORMAT_POLICY)
            .use_ratchet_tree_extension(true)
            .capabilities(certs::binding::capabilities())
            .with_leaf_node_extensions(self.binding.clone())
            .map_err(mls)?
            .build();
        let group = MlsGroup::new_with_group_id(
            &self.provider,
            &self.signer,
            &config,
            group_id(thread),
            self.credential.clone(),
        )
        .map_err(mls)?;
        let group_info = group.export_group_info(self.provider.crypto(), &self.signer, false).map_err(mls)?;
        let group_info = group_info.tls_serialize_detached().map_err(mls)?;
        let ratchet_tree = group.export_ratchet_tree().tls_serialize_detached().map_err(mls)?;
        self.group = Some(group);
        crate::raw_reply(raw, Request::InitGroup { thread, group_info, ratchet_tree })
            .await?
            .map_err(|e| anyhow!("{e:?}"))?;
        Ok(thread)
    }

    /// Sends a commit adding one device per KeyPackage, with its Welcome; the hub must accept it.
    pub async fn add(&mut self, raw: &mut RawConnection, thread: ThreadId, packages: &[Vec<u8>]) -> anyhow::Result<()> {
        self.try_add(raw, thread, packages).await?.map_err(|e| anyhow!("commit refused: {e:?}"))
    }

    /// Sends a commit removing the `nth` device (leaf) of `member` only.
    pub async fn remove_one_device(
        &mut self,
        raw: &mut RawConnection,
        thread: ThreadId,
        member: &MemberId,
        nth: usize,
    ) -> anyhow::Result<Result<(), wire::WireError>> {
        let leaf: LeafNodeIndex = self
            .group()?
            .members()
            .filter(|m| member_of(&m.credential).is_some_and(|(x, _)| &x == member))
            .nth(nth)
            .map(|m| m.index)
            .context("no such device")?;
        let (provider, signer) = (&self.provider, &self.signer);
        let group = self.group.as_mut().context("no group yet")?;
        let (commit, _, info) = group.remove_members(provider, signer, &[leaf]).map_err(mls)?;
        let reply = crate::raw_reply(raw, commit_request(thread, &commit, None, info)?).await?;
        self.settle(reply)
    }

    /// A fresh KeyPackage of this device (TLS-encoded), to upload for it.
    pub fn key_package(&self) -> anyhow::Result<Vec<u8>> {
        let bundle = KeyPackage::builder()
            .leaf_node_capabilities(certs::binding::capabilities())
            .leaf_node_extensions(self.binding.clone())
            .build(CIPHERSUITE, &self.provider, &self.signer, self.credential.clone())
            .map_err(mls)?;
        bundle.key_package().tls_serialize_detached().map_err(mls)
    }

    /// Waits on `raw` for the Welcome of `thread` and joins its group from it.
    pub async fn join_from(&mut self, raw: &mut RawConnection, thread: ThreadId) -> anyhow::Result<()> {
        loop {
            let incoming = tokio::time::timeout(std::time::Duration::from_secs(20), raw.next()).await??;
            let RawIncoming::Frame(HubFrame::Event { thread: t, entry }) = incoming else { continue };
            let EntryBody::Welcome { welcome, .. } = entry.body else { continue };
            if t != thread {
                continue;
            }
            let MlsMessageBodyIn::Welcome(welcome) = MlsMessageIn::tls_deserialize_exact(&welcome)?.extract() else {
                anyhow::bail!("not a Welcome");
            };
            let config = MlsGroupJoinConfig::builder()
                .wire_format_policy(PURE_PLAINTEXT_WIRE_FORMAT_POLICY)
                .use_ratchet_tree_extension(true)
                .build();
            let staged = StagedWelcome::new_from_welcome(&self.provider, &config, welcome, None).map_err(mls)?;
            self.group = Some(staged.into_group(&self.provider).map_err(mls)?);
            return Ok(());
        }
    }

    /// Sends a self-update whose new leaf names `identity` instead of this
    /// device's own: an attempt to pass for someone else in the group.
    pub async fn rename_self(
        &mut self,
        raw: &mut RawConnection,
        thread: ThreadId,
        identity: &Identity,
    ) -> anyhow::Result<Result<(), wire::WireError>> {
        self.update_self(raw, thread, identity, None).await
    }

    /// Sends a self-update whose new leaf is bound by `binder`, another
    /// certificate: a leaf that names the same worker under another agency kind, say.
    pub async fn rebind_self(
        &mut self,
        raw: &mut RawConnection,
        thread: ThreadId,
        binder: &Binder,
    ) -> anyhow::Result<Result<(), wire::WireError>> {
        let binding = binder.extensions(self.signer.public())?;
        self.update_self(raw, thread, binder.identity(), Some(binding)).await
    }

    /// A self-update whose new leaf names `identity`, with `binding` or the old one.
    async fn update_self(
        &mut self,
        raw: &mut RawConnection,
        thread: ThreadId,
        identity: &Identity,
        binding: Option<Extensions<LeafNode>>,
    ) -> anyhow::Result<Result<(), wire::WireError>> {
        let credential = BasicCredential::new(credential_identity(identity)).into();
        let renamed = CredentialWithKey { credential, signature_key: self.signer.public().into() };
        let mut parameters = LeafNodeParameters::builder().with_credential_with_key(renamed);
        if let Some(binding) = binding {
            parameters = parameters.with_extensions(binding);
        }
        let (provider, signer) = (&self.provider, &self.signer);
        let group = self.group.as_mut().context("no group yet")?;
        let bundle = group.self_update(provider, signer, parameters.build()).map_err(mls)?;
        let (commit, _, info) = bundle.into_contents();
        let reply = crate::raw_reply(raw, commit_request(thread, &commit, None, info)?).await?;
        self.settle(reply)
    }

    /// Sends a self-update whose membership tag is broken: the hub, which
    /// holds no group secret, cannot tell, but no other member can process
    /// it. The sender's own group moves on; everyone else must rejoin.
    pub async fn commit_nobody_can_process(
        &mut self,
        raw: &mut RawConnection,
        thread: ThreadId,
    ) -> anyhow::Result<Result<(), wire::WireError>> {
        let (provider, signer) = (&self.provider, &self.signer);
        let group = self.group.as_mut().context("no group yet")?;
        let bundle = group.self_update(provider, signer, LeafNodeParameters::builder().build()).map_err(mls)?;
        let (commit, _, info) = bundle.into_contents();
        let mut request = commit_request(thread, &commit, None, info)?;
        if let Request::Commit { commit, .. } = &mut request {
            // The membership tag is the public message's last field.
            *commit.last_mut().context("an empty commit")? ^= 0x01;
        }
        let reply = crate::raw_reply(raw, request).await?;
        self.settle(reply)
    }

    /// Sends a commit whose one proposal changes the group context's
    /// extensions (here: requiring a capability), which Ketenhub never uses.
    pub async fn change_group_context(
        &mut self,
        raw: &mut RawConnection,
        thread: ThreadId,
    ) -> anyhow::Result<Result<(), wire::WireError>> {
        let required = openmls::prelude::RequiredCapabilitiesExtension::new(&[], &[], &[]);
        let extensions =
            Extensions::single(openmls::prelude::Extension::RequiredCapabilities(required)).map_err(mls)?;
        let (provider, signer) = (&self.provider, &self.signer);
        let group = self.group.as_mut().context("no group yet")?;
        let (commit, _, info) = group.update_group_context_extensions(provider, extensions, signer).map_err(mls)?;
        let reply = crate::raw_reply(raw, commit_request(thread, &commit, None, info)?).await?;
        self.settle(reply)
    }

    /// Sends a commit adding one device per KeyPackage, and the hub's answer.
    pub async fn try_add(
        &mut self,
        raw: &mut RawConnection,
        thread: ThreadId,
        packages: &[Vec<u8>],
    ) -> anyhow::Result<Result<(), wire::WireError>> {
        let packages = packages
            .iter()
            .map(|bytes| Ok(wire::mls::verify_key_package(bytes)?.key_package))
            .collect::<anyhow::Result<Vec<KeyPackage>>>()?;
        let (provider, signer) = (&self.provider, &self.signer);
        let group = self.group.as_mut().context("no group yet")?;
        let (commit, welcome, info) = group.add_members(provider, signer, &packages).map_err(mls)?;
        let reply = crate::raw_reply(raw, commit_request(thread, &commit, Some(&welcome), info)?).await?;
        self.settle(reply)
    }

    /// Merges the pending commit if the hub accepted it, drops it otherwise.
    fn settle(&mut self, reply: Result<Reply, wire::WireError>) -> anyhow::Result<Result<(), wire::WireError>> {
        let provider = &self.provider;
        let group = self.group.as_mut().context("no group yet")?;
        match reply {
            Ok(Reply::CommitAccepted { .. }) => {
                group.merge_pending_commit(provider).map_err(mls)?;
                Ok(Ok(()))
            }
            Ok(other) => Err(anyhow!("unexpected reply {other:?}")),
            Err(refusal) => {
                group.clear_pending_commit(provider.storage()).map_err(mls)?;
                Ok(Err(refusal))
            }
        }
    }

    /// Encrypts `plaintext` for the group and sends it.
    pub async fn send(&mut self, raw: &mut RawConnection, thread: ThreadId, plaintext: &[u8]) -> anyhow::Result<u64> {
        let (provider, signer) = (&self.provider, &self.signer);
        let group = self.group.as_mut().context("no group yet")?;
        let payload =
            group.create_message(provider, signer, plaintext).map_err(mls)?.tls_serialize_detached().map_err(mls)?;
        let request = Request::Send { thread, message: wire::MessageId::new(), payload };
        match crate::raw_reply(raw, request).await? {
            Ok(Reply::Sent { seq, .. }) => Ok(seq),
            other => Err(anyhow!("not sent: {other:?}")),
        }
    }
}
