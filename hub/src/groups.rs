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
    Credential, LeafNode, LeafNodeIndex, MlsMessageBodyIn, MlsMessageIn, ProcessedMessageContent, ProposalStore,
    ProposalType, ProtocolMessage, PublicGroup, RatchetTreeIn, Sender, StagedCommit,
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

/// Proposals one commit may carry: more than any honest commit needs (adding
/// or removing a thread's members), few enough that the binding checks of a
/// commit's leaves cannot hold the writer thread up for long.
pub const MAX_PROPOSALS: usize = 128;

/// Which request a commit came in: a member's own commit, or the external
/// commit by which a device of a member joins again (`Request::Rejoin`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommitKind {
    /// A commit by a device in the group.
    Member,
    /// An external commit by a device of the caller that is not in the group.
    Rejoin,
}

impl CommitKind {
    /// The proposals a commit of this kind may carry. PSK, ReInit and
    /// GroupContextExtensions would let one member re-key the group with
    /// secrets others cannot check, restart it or change its rules; Ketenhub
    /// has no use for them. ExternalInit is what a rejoin is made of, and a
    /// rejoin may also remove devices (only the caller's own: see
    /// [`check_commit`]), but add or update nothing.
    fn allows(self, proposal: ProposalType) -> bool {
        match self {
            Self::Member => matches!(proposal, ProposalType::Add | ProposalType::Remove | ProposalType::Update),
            Self::Rejoin => matches!(proposal, ProposalType::ExternalInit | ProposalType::Remove),
        }
    }
}

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
    kind: CommitKind,
) -> Result<NewLeaves, WireError> {
    if let Some(other) = staged.queued_proposals().map(|p| p.proposal().proposal_type()).find(|t| !kind.allows(*t)) {
        let allowed = match kind {
            CommitKind::Member => "commits may add, remove and update only",
            CommitKind::Rejoin => "a rejoin carries its ExternalInit and removes only",
        };
        return Err(WireError::new(
            ErrorCode::Forbidden,
            format!("denied by rule proposal-not-allowed: a {other:?} proposal; {allowed}"),
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

fn credential_member(credential: &Credential) -> Result<MemberId, WireError> {
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
    /// membership ends with it.
    pub removed: Vec<MemberId>,
    /// The most devices (leaves) any one identity has in the group after it.
    pub most_devices: usize,
}

/// Parses a commit and checks that it is a public message for the group's
/// current epoch.
fn commit_message(group: &PublicGroup, commit: &[u8]) -> Result<ProtocolMessage, WireError> {
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
    Ok(message)
}

/// Refuses a commit whose sender is not the caller, or is of the wrong kind: a
/// member commits from its leaf, a rejoining device as a new member.
fn check_sender(
    sender: &Sender,
    credential: &Credential,
    caller: &MemberId,
    kind: CommitKind,
) -> Result<(), WireError> {
    let expected = match kind {
        CommitKind::Member => matches!(sender, Sender::Member(_)),
        CommitKind::Rejoin => matches!(sender, Sender::NewMemberCommit),
    };
    if !expected {
        let what = match kind {
            CommitKind::Member => "a commit must come from a device in the group; a device outside it rejoins",
            CommitKind::Rejoin => "a rejoin must be an external commit",
        };
        return Err(invalid(what));
    }
    match member_of(credential) {
        Some((sender, _)) if &sender == caller => Ok(()),
        _ => Err(WireError::new(
            ErrorCode::Forbidden,
            "denied by rule commit-sender-mismatch: the commit's sender is not this connection's identity",
        )),
    }
}

/// Verifies a commit against the stored public state and applies it to that
/// state; the caller stores the result only if its own checks pass too.
pub fn check_commit(
    identities: &Verifier,
    state: &[u8],
    thread: ThreadId,
    caller: &MemberId,
    commit: &[u8],
    kind: CommitKind,
) -> Result<CheckedCommit, WireError> {
    let (storage, mut group) = load_group(state, thread)?;
    let message = commit_message(&group, commit)?;
    let processed = group
        .process_message(&RustCrypto::default(), message)
        .map_err(|e| invalid(format!("commit does not verify: {e:?}")))?;
    check_sender(processed.sender(), processed.credential(), caller, kind)?;
    let committer = member_leaf(processed.sender());
    // A rejoining device's leaf takes the credential its certificate names (checked just above).
    let joiner = (kind == CommitKind::Rejoin).then(|| processed.credential().clone());
    let ProcessedMessageContent::StagedCommitMessage(staged) = processed.into_content() else {
        return Err(invalid("not a commit"));
    };
    if staged.queued_proposals().count() > MAX_PROPOSALS {
        return Err(invalid(format!("a commit carries at most {MAX_PROPOSALS} proposals")));
    }
    let NewLeaves { leaves: new, packages: added_packages } = new_leaves(&group, &staged, committer, kind)?;
    let added = staged
        .add_proposals()
        .map(|add| credential_member(add.add_proposal().key_package().leaf_node().credential()))
        .collect::<Result<Vec<_>, _>>()?;
    let removed_leaves: Vec<u32> = staged.remove_proposals().map(|r| r.remove_proposal().removed().u32()).collect();
    let credentials_before: std::collections::HashMap<u32, Credential> =
        group.members().map(|m| (m.index.u32(), m.credential)).collect();
    if let Some(joiner) = &joiner {
        // As every client checks too: a rejoin is for an identity already in the group, and replaces
        // its own devices, never anyone else's.
        let in_group = credentials_before.values().any(|c| c == joiner);
        if !in_group || removed_leaves.iter().any(|leaf| credentials_before.get(leaf) != Some(joiner)) {
            return Err(WireError::new(
                ErrorCode::Forbidden,
                "denied by rule external-join: a rejoin is for an identity with a device in the group, and may remove only that identity's devices",
            ));
        }
    }
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
            _ => {
                joiner.as_ref() == Some(&leaf.credential)
                    || member_of(&leaf.credential).is_some_and(|(m, _)| added.contains(&m))
            }
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
    let most_devices = most_devices(&remaining);
    let epoch = group.group_context().epoch().as_u64();
    let state = save_storage(&storage);
    Ok(CheckedCommit { state, epoch, added, added_packages, removes_devices_of, removed, most_devices })
}

/// The largest number of times one member occurs in `members` (one entry per leaf).
fn most_devices(members: &[MemberId]) -> usize {
    let mut counts = std::collections::HashMap::new();
    for member in members {
        *counts.entry(member).or_insert(0usize) += 1;
    }
    counts.into_values().max().unwrap_or(0)
}

/// Checks the GroupInfo a committer uploads for the epoch its commit leads to
/// (`state`, after the commit): signed by a leaf of that tree, for exactly that
/// group context and confirmation tag, with the `external_pub` a rejoining
/// device needs, and with no ratchet tree but the group's own. The hub cannot
/// check that `external_pub` is the epoch's real key (it has no secrets); a
/// device that rejoins through a false one is merely not followed by the
/// others, and rejoins again from the next honest committer's GroupInfo.
pub fn check_group_info(state: &[u8], thread: ThreadId, group_info: &[u8]) -> Result<(), WireError> {
    let (_, group) = load_group(state, thread)?;
    let refused = |why: String| invalid(format!("group_info: {why}"));
    let info = match MlsMessageIn::tls_deserialize_exact(group_info).map_err(|e| refused(e.to_string()))?.extract() {
        MlsMessageBodyIn::GroupInfo(info) => info,
        _ => return Err(refused("not an MLS GroupInfo".into())),
    };
    let tree = group.export_ratchet_tree().tls_serialize_detached().map_err(|e| refused(e.to_string()))?;
    if let Some(carried) = info.extensions().ratchet_tree() {
        let carried = carried.ratchet_tree().tls_serialize_detached().map_err(|e| refused(e.to_string()))?;
        if carried != tree {
            return Err(refused("it carries another ratchet tree than the group's".into()));
        }
    }
    if info.extensions().external_pub().is_none() {
        return Err(refused("it lacks the external_pub extension a rejoining device needs".into()));
    }
    let tree = RatchetTreeIn::tls_deserialize_exact(&tree).map_err(|e| refused(e.to_string()))?;
    let (verified, _) =
        PublicGroup::from_external(&RustCrypto::default(), &MemoryStorage::default(), tree, info, ProposalStore::new())
            .map_err(|e| refused(format!("does not verify against the group: {e:?}")))?;
    if verified.group_context() != group.group_context() || verified.confirmation_tag() != group.confirmation_tag() {
        return Err(refused("it is not the GroupInfo of the epoch the commit leads to".into()));
    }
    Ok(())
}

/// The GroupInfo a device rejoins from, as `Reply::GroupInfo` carries it: the
/// group's epoch and ratchet tree from its public `state`.
pub fn epoch_and_tree(state: &[u8], thread: ThreadId) -> Result<(u64, Vec<u8>), WireError> {
    let (_, group) = load_group(state, thread)?;
    let tree = group
        .export_ratchet_tree()
        .tls_serialize_detached()
        .map_err(|e| WireError::new(ErrorCode::Internal, format!("exporting the ratchet tree: {e}")))?;
    Ok((group.group_context().epoch().as_u64(), tree))
}
