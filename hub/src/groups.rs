//! The public state of each thread's MLS group, and the checks on commits.
//!
//! The hub holds no MLS secret. For each thread it keeps the group's public
//! state (openmls's `PublicGroup`: the ratchet tree and group context), from
//! which it verifies every commit: that it is a public message for the group's
//! current epoch (one commit per epoch; a stale one is refused with the current
//! epoch), that its sender's credential is the caller's, that it uses only the
//! proposal types Ketenhub needs (Add, Remove, Update), that every leaf it
//! brings in is bound to its identity's certificate (`certs::binding`), and
//! which members and KeyPackages it adds and removes, so the write path can
//! hold those against the hub's own membership table and the KeyPackages it
//! handed out. Application messages stay encrypted and are never opened.
//!
//! Clients check bindings themselves and never rely on these checks: the hub
//! refuses early what every honest client would reject anyway.

use certs::binding::Verifier;
use openmls::prelude::tls_codec::Deserialize as _;
use openmls::prelude::tls_codec::Serialize as _;
use openmls::prelude::{
    LeafNode, LeafNodeIndex, MlsMessageBodyIn, MlsMessageIn, ProcessedMessageContent, ProposalStore, ProposalType,
    ProtocolMessage, PublicGroup, RatchetTreeIn, StagedCommit,
};
use openmls_memory_storage::MemoryStorage;
use openmls_rust_crypto::RustCrypto;
use wire::mls::{group_id, member_leaf, member_of};
use wire::{ErrorCode, MemberId, ThreadId, WireError};

fn invalid(message: impl Into<String>) -> WireError {
    WireError::new(ErrorCode::Invalid, message)
}

/// The refusal of a message or commit for another epoch than the group's.
pub fn stale(epoch: u64) -> WireError {
    let mut error =
        WireError::new(ErrorCode::StaleEpoch, format!("the group is at epoch {epoch}; process the newer commits"));
    error.epoch = Some(epoch);
    error
}

fn load_storage(state: &[u8]) -> Result<MemoryStorage, WireError> {
    let storage = MemoryStorage::default();
    wire::mls::import_storage(state, &storage)
        .map_err(|e| WireError::new(ErrorCode::Internal, format!("stored group state: {e}")))?;
    Ok(storage)
}

fn save_storage(storage: &MemoryStorage) -> Vec<u8> {
    wire::mls::export_storage(storage)
}

fn members_of(group: &PublicGroup) -> Vec<MemberId> {
    group.members().filter_map(|m| member_of(&m.credential).map(|(member, _)| member)).collect()
}

/// Builds the public state of a new group from its creator's GroupInfo and
/// ratchet tree. The group must be this thread's, at epoch 0, with the caller
/// as its only member. Returns the state to store.
pub fn init(
    identities: &Verifier,
    thread: ThreadId,
    caller: &MemberId,
    group_info: &[u8],
    ratchet_tree: &[u8],
) -> Result<Vec<u8>, WireError> {
    let info = match MlsMessageIn::tls_deserialize_exact(group_info)
        .map_err(|e| invalid(format!("group info: {e}")))?
        .extract()
    {
        MlsMessageBodyIn::GroupInfo(info) => info,
        _ => return Err(invalid("group_info is not an MLS GroupInfo")),
    };
    let tree = RatchetTreeIn::tls_deserialize_exact(ratchet_tree).map_err(|e| invalid(format!("ratchet tree: {e}")))?;
    let storage = MemoryStorage::default();
    let (group, _) = PublicGroup::from_external(&RustCrypto::default(), &storage, tree, info, ProposalStore::new())
        .map_err(|e| invalid(format!("group does not verify: {e:?}")))?;
    if group.group_id() != &group_id(thread) {
        return Err(invalid("the group id must be the thread id"));
    }
    if group.group_context().epoch().as_u64() != 0 || members_of(&group) != [caller.clone()] {
        return Err(invalid("a new group must be at epoch 0 with its creator as the only member"));
    }
    let creator = group.leaf(LeafNodeIndex::new(0)).ok_or_else(|| invalid("the group has no first leaf"))?;
    bound(identities, None, creator)?;
    Ok(save_storage(&storage))
}

/// Refuses a leaf that is not bound to the certificate of the identity it
/// names; `old` is the leaf it replaces, if any (see [`Verifier::verify_replacement`]).
fn bound(identities: &Verifier, old: Option<&LeafNode>, leaf: &LeafNode) -> Result<(), WireError> {
    identities
        .verify_replacement(old, leaf)
        .map(drop)
        .map_err(|e| WireError::new(ErrorCode::Forbidden, format!("denied by rule leaf-unbound: {e}")))
}

/// The proposals a commit may carry. PSK, ReInit, ExternalInit and
/// GroupContextExtensions would let one member re-key the group with secrets
/// others cannot check, restart it, join it past the membership table or
/// change its rules; Ketenhub has no use for them, so none is allowed.
const ALLOWED_PROPOSALS: [ProposalType; 3] = [ProposalType::Add, ProposalType::Remove, ProposalType::Update];

/// The leaves a commit brings in, each with the leaf it replaces (none for an
/// Add), whose bindings must verify, and the SHA-256 of each KeyPackage it
/// adds, as uploaded.
struct NewLeaves {
    leaves: Vec<(LeafNode, Option<LeafNode>)>,
    packages: Vec<[u8; 32]>,
}

/// Checks the proposal types of a commit and collects the leaves it brings
/// in, from `group` before the commit and the `committer`'s leaf.
fn new_leaves(
    group: &PublicGroup,
    staged: &StagedCommit,
    committer: Option<LeafNodeIndex>,
) -> Result<NewLeaves, WireError> {
    if let Some(other) =
        staged.queued_proposals().map(|p| p.proposal().proposal_type()).find(|t| !ALLOWED_PROPOSALS.contains(t))
    {
        return Err(WireError::new(
            ErrorCode::Forbidden,
            format!(
                "denied by rule proposal-not-allowed: a {other:?} proposal; commits may add, remove and update only"
            ),
        ));
    }
    let before = |index: Option<LeafNodeIndex>| index.and_then(|i| group.leaf(i)).cloned();
    let mut leaves: Vec<(LeafNode, Option<LeafNode>)> = staged
        .update_proposals()
        .map(|u| (u.update_proposal().leaf_node().clone(), before(member_leaf(u.sender()))))
        .collect();
    leaves.extend(staged.update_path_leaf_node().map(|leaf| (leaf.clone(), before(committer))));
    let mut packages = Vec::new();
    for add in staged.add_proposals() {
        let package = add.add_proposal().key_package();
        leaves.push((package.leaf_node().clone(), None));
        let bytes = package.tls_serialize_detached().map_err(|e| invalid(format!("a KeyPackage: {e}")))?;
        packages.push(key_package_digest(&bytes));
    }
    Ok(NewLeaves { leaves, packages })
}

/// The digest by which the hub remembers a KeyPackage it handed out.
pub fn key_package_digest(bytes: &[u8]) -> [u8; 32] {
    wire::merkle::sha256(&[bytes])
}

fn credential_member(credential: &openmls::prelude::Credential) -> Result<MemberId, WireError> {
    member_of(credential).map(|(member, _)| member).ok_or_else(|| invalid("a proposal names no Ketenhub identity"))
}

/// Loads a thread's group from its stored public state, with the store that
/// holds it (openmls writes changes back into it).
fn load_group(state: &[u8], thread: ThreadId) -> Result<(MemoryStorage, PublicGroup), WireError> {
    let storage = load_storage(state)?;
    let group = PublicGroup::load(&storage, &group_id(thread))
        .map_err(|e| WireError::new(ErrorCode::Internal, format!("stored group: {e:?}")))?
        .ok_or_else(|| invalid("the thread has no MLS group"))?;
    Ok((storage, group))
}

/// The epoch of a stored group state.
pub fn epoch(state: &[u8], thread: ThreadId) -> Result<u64, WireError> {
    Ok(load_group(state, thread)?.1.group_context().epoch().as_u64())
}

/// The identities with at least one device (leaf) in a stored group.
pub fn devices_of(state: &[u8], thread: ThreadId) -> Result<Vec<MemberId>, WireError> {
    Ok(members_of(&load_group(state, thread)?.1))
}

/// What an accepted commit does.
#[derive(Debug)]
pub struct CheckedCommit {
    /// The group's public state after the commit.
    pub state: Vec<u8>,
    /// The epoch after the commit.
    pub epoch: u64,
    /// The members it adds.
    pub added: Vec<MemberId>,
    /// The SHA-256 of each KeyPackage it adds.
    pub added_packages: Vec<[u8; 32]>,
    /// The identities whose devices (leaves) it removes, once each.
    pub removes_devices_of: Vec<MemberId>,
    /// Those of them with no device left in the group after it: their
    /// membership ends with the commit.
    pub removed: Vec<MemberId>,
}

/// Verifies a commit against the stored public state and applies it to that
/// state; the caller stores the result only if its own checks pass too.
pub fn check_commit(
    identities: &Verifier,
    state: &[u8],
    thread: ThreadId,
    caller: &MemberId,
    commit: &[u8],
) -> Result<CheckedCommit, WireError> {
    let (storage, mut group) = load_group(state, thread)?;
    let epoch = group.group_context().epoch().as_u64();
    let message = MlsMessageIn::tls_deserialize_exact(commit)
        .map_err(|e| invalid(format!("not an MLS message: {e}")))?
        .try_into_protocol_message()
        .map_err(|e| invalid(format!("not an MLS protocol message: {e:?}")))?;
    if !matches!(message, ProtocolMessage::PublicMessage(_)) {
        return Err(invalid("commits must be MLS public messages"));
    }
    if message.epoch().as_u64() != epoch {
        return Err(stale(epoch));
    }
    let processed = group
        .process_message(&RustCrypto::default(), message)
        .map_err(|e| invalid(format!("commit does not verify: {e:?}")))?;
    let committer = member_leaf(processed.sender());
    match member_of(processed.credential()) {
        Some((sender, _)) if &sender == caller => {}
        _ => {
            return Err(WireError::new(
                ErrorCode::Forbidden,
                "denied by rule commit-sender-mismatch: the commit's sender is not this connection's identity",
            ))
        }
    }
    let ProcessedMessageContent::StagedCommitMessage(staged) = processed.into_content() else {
        return Err(invalid("not a commit"));
    };
    let NewLeaves { leaves: new, packages: added_packages } = new_leaves(&group, &staged, committer)?;
    let added = staged
        .add_proposals()
        .map(|add| credential_member(add.add_proposal().key_package().leaf_node().credential()))
        .collect::<Result<Vec<_>, _>>()?;
    let removed_leaves: Vec<u32> = staged.remove_proposals().map(|r| r.remove_proposal().removed().u32()).collect();
    let credentials_before: std::collections::HashMap<u32, openmls::prelude::Credential> =
        group.members().map(|m| (m.index.u32(), m.credential)).collect();
    let mut removes_devices_of = staged
        .remove_proposals()
        .map(|remove| {
            let leaf =
                group.leaf(remove.remove_proposal().removed()).ok_or_else(|| invalid("removes an empty leaf"))?;
            credential_member(leaf.credential())
        })
        .collect::<Result<Vec<_>, _>>()?;
    removes_devices_of.sort();
    removes_devices_of.dedup();
    group
        .merge_commit(&storage, *staged)
        .map_err(|e| WireError::new(ErrorCode::Internal, format!("merging the commit: {e:?}")))?;
    // A leaf keeps the identity it had: an update path or an Update proposal
    // that renames a device would let a member pass for another (the owner,
    // say, whom nobody may remove) or slip in someone who is not a member.
    for leaf in group.members() {
        // The whole credential, not only the member it names: clients compare
        // credentials, and a leaf that passed here but not there would wedge them.
        let kept = match credentials_before.get(&leaf.index.u32()) {
            Some(before) if !removed_leaves.contains(&leaf.index.u32()) => before == &leaf.credential,
            _ => member_of(&leaf.credential).is_some_and(|(m, _)| added.contains(&m)),
        };
        if !kept {
            return Err(WireError::new(
                ErrorCode::Forbidden,
                "denied by rule leaf-keeps-identity: a commit may not give a device another identity",
            ));
        }
    }
    // After the identity check, so a renamed leaf is refused as such rather than as unbound.
    for (leaf, old) in &new {
        bound(identities, old.as_ref(), leaf)?;
    }
    let remaining = members_of(&group);
    let removed = removes_devices_of.iter().filter(|m| !remaining.contains(m)).cloned().collect();
    let epoch = group.group_context().epoch().as_u64();
    Ok(CheckedCommit { state: save_storage(&storage), epoch, added, added_packages, removes_devices_of, removed })
}
