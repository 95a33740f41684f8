//! MLS: a thread's group registered, commits, and the KeyPackages a member
//! is added with.
//!
//! The hub cannot read a group's messages but orders its commits, so it checks
//! each against the membership it keeps (in [`crate::groups`], in write order);
//! what is checked here is what needs the caller: its role, and that uploaded
//! KeyPackages name it and no one else.

use certs::binding::Validity;
use wire::{ErrorCode, MemberId, Reply, ThreadId, WireError};

use super::WriteKind;
use crate::durability::Write;
use crate::groups::CommitKind;
use crate::policy::{Action, Policy};
use crate::session::{internal, Caller, Hub};

/// KeyPackages accepted in one upload.
const MAX_KEY_PACKAGE_UPLOAD: usize = 100;
/// KeyPackages held for one identity.
const MAX_KEY_PACKAGE_STOCK: usize = 500;

impl Hub {
    pub(super) fn init_group(
        &self,
        thread: ThreadId,
        actor: MemberId,
        group_info: Vec<u8>,
        ratchet_tree: Vec<u8>,
    ) -> (WriteKind, Write) {
        (WriteKind::Group, Write::InitGroup { thread, caller: actor, group_info, ratchet_tree })
    }

    /// A member's commit (`kind` Member, with the Welcome if it adds) or a
    /// device's rejoin (`kind` Rejoin), with the GroupInfo it leads to.
    pub(super) fn commit(
        &self,
        (policy, caller, actor): (&Policy, &Caller, MemberId),
        thread: ThreadId,
        kind: CommitKind,
        (commit, welcome, group_info): (Vec<u8>, Option<Vec<u8>>, Option<Vec<u8>>),
    ) -> (WriteKind, Write) {
        // A rejoin changes no membership: it replaces the caller's own devices only.
        let may_change_membership =
            kind == CommitKind::Member && policy.role_allows(caller.identity.role, Action::AddMember).allowed;
        let write = Write::Commit {
            thread,
            caller: actor,
            kind,
            may_change_membership,
            commit,
            welcome,
            group_info,
            max_devices: self.limits.max_devices_per_identity,
        };
        (WriteKind::Commit, write)
    }

    /// What a device outside the thread's group rejoins from.
    pub(super) fn group_info(&self, thread: ThreadId) -> Result<Reply, WireError> {
        let no_group = || WireError::new(ErrorCode::Invalid, "the thread has no MLS group");
        let state = self.store.group_state(thread).map_err(internal)?.ok_or_else(no_group)?;
        let group_info = self.store.group_info(thread).map_err(internal)?.ok_or_else(no_group)?;
        let (epoch, ratchet_tree) = crate::groups::epoch_and_tree(&state, thread)?;
        Ok(Reply::GroupInfo { epoch, group_info: group_info.into(), ratchet_tree: ratchet_tree.into() })
    }

    pub(super) fn upload_key_packages(
        &self,
        caller: &Caller,
        key_packages: Vec<serde_bytes::ByteBuf>,
    ) -> Result<(WriteKind, Write), WireError> {
        self.quotas.upload_key_packages(&self.limits, &caller.member)?;
        let packages = self.verify_key_packages(caller, key_packages)?;
        Ok((WriteKind::UploadKeyPackages, Write::AddKeyPackages { member: caller.member.clone(), packages }))
    }

    /// An empty upload asks how many are held, so a device tops up without a write.
    pub(super) fn key_package_stock(&self, caller: &Caller) -> Result<Reply, WireError> {
        let stock = self.store.key_package_stock(&caller.member).map_err(internal)?;
        Ok(Reply::KeyPackagesStored { stock })
    }

    pub(super) fn claim_key_package(
        &self,
        thread: ThreadId,
        actor: MemberId,
        member: MemberId,
    ) -> Result<(WriteKind, Write), WireError> {
        if !self.is_member(thread, &member)? {
            return Err(WireError::new(ErrorCode::Invalid, format!("{member} is not a member of the thread")));
        }
        Ok((WriteKind::ClaimKeyPackage, Write::TakeKeyPackage { thread, claimer: actor, member }))
    }

    /// Verifies uploaded KeyPackages: each must verify and carry the caller's
    /// own identity, and the caller's stock must stay within bounds.
    fn verify_key_packages(
        &self,
        caller: &Caller,
        uploads: Vec<serde_bytes::ByteBuf>,
    ) -> Result<Vec<Vec<u8>>, WireError> {
        let stock = self.store.key_package_stock(&caller.member).map_err(internal)?;
        if uploads.len() > MAX_KEY_PACKAGE_UPLOAD || stock as usize + uploads.len() > MAX_KEY_PACKAGE_STOCK {
            return Err(WireError::new(
                ErrorCode::Invalid,
                format!(
                    "at most {MAX_KEY_PACKAGE_UPLOAD} per upload and {MAX_KEY_PACKAGE_STOCK} held; {stock} held now"
                ),
            ));
        }
        uploads
            .into_iter()
            .map(|bytes| {
                let verified = wire::mls::verify_key_package(&bytes)
                    .map_err(|e| WireError::new(ErrorCode::Invalid, e.to_string()))?;
                if verified.member != caller.member || verified.kind != caller.identity.kind {
                    tracing::warn!(peer = %caller.peer, identity = %caller.identity, claimed = %verified.member,
                        "refused a KeyPackage whose credential names another identity");
                    return Err(WireError::new(
                        ErrorCode::Forbidden,
                        "denied by rule key-package-names-another-identity: the KeyPackage's credential does not name this connection's identity",
                    ));
                }
                self.certificates.identities().verify_leaf(verified.key_package.leaf_node(), Validity::Now).map_err(|e| {
                    WireError::new(ErrorCode::Forbidden, format!("denied by rule leaf-unbound: {e}"))
                })?;
                Ok(bytes.into_vec())
            })
            .collect()
    }
}
