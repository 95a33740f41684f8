//! Audit entries: what the hub records about every access, and what a privacy
//! officer receives when querying them, with the hashes, signed tree heads
//! and proofs that make the log checkable (see [`crate::merkle`]).
//!
//! The fields follow NEN 7513 (who, on whose behalf, organisation and role,
//! which case, what action, when, outcome, purpose, legal basis) so that an
//! entry answers a family's access request without any case content. The hub
//! chains entries by SHA-256 and signs checkpoints; see `hub::audit`.

use serde::{Deserialize, Serialize};

use crate::merkle::sha256;
use crate::{AgencyKind, MemberId, Oin, Role, ThreadId};

/// Who acted, as their certificate says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditActor {
    /// The organisation's OIN.
    pub oin: Oin,
    /// The organisation's name.
    pub organisation: String,
    /// The kind of agency.
    pub kind: AgencyKind,
    /// The worker or system id.
    pub worker: String,
    /// The role.
    pub role: Role,
    /// SHA-256 fingerprint of the certificate, hex.
    pub certificate: String,
}

/// What was done or attempted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuditAction {
    /// A connection was established.
    Connect,
    /// A TLS handshake was refused (no usable identity).
    HandshakeRefused,
    /// A case thread was created.
    CreateThread,
    /// A member was added to a case.
    AddMember,
    /// A member was removed from a case.
    RemoveMember,
    /// An MLS commit or group registration (key changes, no content).
    Commit,
    /// A message was sent.
    Send,
    /// Entries of a case were delivered to a member.
    Deliver,
    /// Members of a case were listed.
    ListMembers,
    /// The caller's cases were listed.
    ListThreads,
    /// An attachment chunk was stored.
    BlobPut,
    /// An attachment chunk was fetched.
    BlobFetch,
    /// MLS KeyPackages were uploaded or claimed.
    KeyPackage,
    /// The audit log was queried.
    AuditQuery,
    /// The policy was loaded or reloaded.
    PolicyReload,
    /// Content, blobs or old audit entries were deleted under the retention policy.
    Retention,
    /// A warm-handover step: offer, answer, completion, report, escalation.
    Handover,
    /// Earlier messages of a case re-shared, end to end encrypted, to members who joined later.
    ShareHistory,
    /// A privacy officer marked a share without consent as reviewed (the
    /// object names the entry, the purpose holds the officer's note).
    Review,
}

impl AuditAction {
    /// The snake_case name used in exports and reports.
    pub fn code(self) -> &'static str {
        match self {
            Self::Connect => "connect",
            Self::HandshakeRefused => "handshake_refused",
            Self::CreateThread => "create_thread",
            Self::AddMember => "add_member",
            Self::RemoveMember => "remove_member",
            Self::Commit => "commit",
            Self::Send => "send",
            Self::Deliver => "deliver",
            Self::ListMembers => "list_members",
            Self::ListThreads => "list_threads",
            Self::BlobPut => "blob_put",
            Self::BlobFetch => "blob_fetch",
            Self::KeyPackage => "key_package",
            Self::AuditQuery => "audit_query",
            Self::PolicyReload => "policy_reload",
            Self::Retention => "retention",
            Self::Handover => "handover",
            Self::ShareHistory => "share_history",
            Self::Review => "review",
        }
    }
}

/// Whether the action was allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuditOutcome {
    /// The policy allowed it and it took effect.
    Allowed,
    /// The policy refused it.
    Denied,
    /// It was allowed but failed (for example, invalid content).
    Failed,
}

/// One access, as recorded: everything except the chain fields.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// When, in milliseconds since the Unix epoch (hub time).
    pub at_ms: u64,
    /// Who acted; `None` when no identity was established (a refused handshake).
    pub actor: Option<AuditActor>,
    /// The worker a `system` identity acted for.
    pub on_behalf_of: Option<MemberId>,
    /// What was done.
    pub action: AuditAction,
    /// The case (thread) concerned, if any. Thread ids are random and carry no personal data.
    pub case: Option<ThreadId>,
    /// The object concerned within the case: a message id, a member, a blob, a seq range.
    pub object: Option<String>,
    /// The purpose or reason given.
    pub purpose: Option<String>,
    /// The legal basis given.
    pub legal_basis: Option<String>,
    /// The outcome.
    pub outcome: AuditOutcome,
    /// The policy rule that decided, or why it failed.
    pub rule: String,
    /// The peer's network address.
    pub peer: Option<String>,
}

/// A recorded entry: the record with its place in the hash chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// Position in the hub's audit log, from 1, gap-free.
    pub seq: u64,
    /// SHA-256 of the previous entry (zeros for the first).
    #[serde(with = "serde_bytes")]
    pub prev_hash: [u8; 32],
    /// SHA-256 over this entry (see `hub::audit::chain`).
    #[serde(with = "serde_bytes")]
    pub hash: [u8; 32],
    /// What happened.
    pub record: AuditRecord,
}

/// Domain separation for entry hashes, so an entry hash can never be mistaken for any other SHA-256.
const ENTRY_DOMAIN: &[u8] = b"ketenhub-audit-entry-v1";
/// Domain separation for tree-head signatures, so the audit key signs nothing else by accident.
const HEAD_DOMAIN: &[u8] = b"ketenhub-audit-tree-head-v1";

/// The SHA-256 of a record's CBOR: what an omitted line carries instead of the record.
pub fn record_digest(record: &AuditRecord) -> [u8; 32] {
    encoded_record_digest(&crate::encode(record))
}

/// [`record_digest`] of a record already encoded as CBOR, for a writer that keeps the encoding it hashed.
pub fn encoded_record_digest(cbor: &[u8]) -> [u8; 32] {
    sha256(&[cbor])
}

/// An entry's hash from its place, its predecessor's hash and its record's digest:
/// `SHA-256("ketenhub-audit-entry-v1" || seq (u64 BE) || prev_hash || record_digest)`. Hashing a digest
/// rather than the record lets a filtered export leave a record out and still have every link checked; the
/// sequence number is hashed so that an entry cannot be moved with its hash intact.
pub fn link_hash(seq: u64, prev_hash: &[u8; 32], record_digest: &[u8; 32]) -> [u8; 32] {
    sha256(&[ENTRY_DOMAIN, &seq.to_be_bytes(), prev_hash, record_digest])
}

/// The hash an entry must carry: [`link_hash`] over its record's [`record_digest`].
pub fn entry_hash(seq: u64, prev_hash: &[u8; 32], record: &AuditRecord) -> [u8; 32] {
    link_hash(seq, prev_hash, &record_digest(record))
}

/// A signed tree head: the hub's audit key states that the Merkle tree over the first `size` entries has
/// root `root` (see [`crate::merkle`]). Each head is signed over [`SignedTreeHead::message`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedTreeHead {
    /// The number of entries covered (entries 1 to `size`).
    pub size: u64,
    /// The Merkle tree's root over them.
    #[serde(with = "serde_bytes")]
    pub root: [u8; 32],
    /// When it was signed, ms since the Unix epoch.
    pub at_ms: u64,
    /// Ed25519 signature by the audit key over [`SignedTreeHead::message`].
    #[serde(with = "serde_bytes")]
    pub signature: Vec<u8>,
    /// Present on the head `hub audit rotate-key` writes: the old key signs `signature`, the new one this.
    pub rotation: Option<KeyRotation>,
}

/// A change of audit key, carried by the head that makes it: both keys sign the same message, which names
/// both, so each vouches for the other.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyRotation {
    /// The key that signed the log until now (and `signature`).
    #[serde(with = "serde_bytes")]
    pub old_key: [u8; 32],
    /// The key that signs from this head on.
    #[serde(with = "serde_bytes")]
    pub new_key: [u8; 32],
    /// The new key's Ed25519 signature over the same message.
    #[serde(with = "serde_bytes")]
    pub new_signature: Vec<u8>,
}

impl SignedTreeHead {
    /// The signed bytes: `"ketenhub-audit-tree-head-v1" || size (u64 BE) || root || at_ms (u64 BE) || 0x00`,
    /// or with a rotation `... || 0x01 || old_key || new_key`.
    pub fn message(size: u64, root: &[u8; 32], at_ms: u64, rotation: Option<(&[u8; 32], &[u8; 32])>) -> Vec<u8> {
        let mut message = Vec::with_capacity(HEAD_DOMAIN.len() + 8 + 32 + 8 + 1 + 64);
        message.extend_from_slice(HEAD_DOMAIN);
        message.extend_from_slice(&size.to_be_bytes());
        message.extend_from_slice(root);
        message.extend_from_slice(&at_ms.to_be_bytes());
        match rotation {
            None => message.push(0),
            Some((old, new)) => {
                message.push(1);
                message.extend_from_slice(old);
                message.extend_from_slice(new);
            }
        }
        message
    }

    /// This head's signed bytes.
    pub fn signed_bytes(&self) -> Vec<u8> {
        let rotation = self.rotation.as_ref().map(|r| (&r.old_key, &r.new_key));
        Self::message(self.size, &self.root, self.at_ms, rotation)
    }

    /// True when the head is validly signed by `key` (32 raw Ed25519 bytes): a plain head by `key`, a
    /// rotation head by both of its keys, one of which is `key`.
    pub fn signed_by(&self, key: &[u8]) -> bool {
        use ring::signature::{UnparsedPublicKey, ED25519};
        let message = self.signed_bytes();
        let valid =
            |key: &[u8], signature: &[u8]| UnparsedPublicKey::new(&ED25519, key).verify(&message, signature).is_ok();
        match &self.rotation {
            None => valid(key, &self.signature),
            Some(rotation) => {
                (key == rotation.old_key || key == rotation.new_key)
                    && valid(&rotation.old_key, &self.signature)
                    && valid(&rotation.new_key, &rotation.new_signature)
            }
        }
    }

    /// The key that signs heads after this one: the rotation's new key, or `key` itself.
    pub fn next_key(&self, key: [u8; 32]) -> [u8; 32] {
        self.rotation.as_ref().map_or(key, |r| r.new_key)
    }
}

/// The inclusion proof of one entry in an `audit_entries` reply: the hashes of RFC 9162 `PATH`, leaf first.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Proof(pub Vec<serde_bytes::ByteArray<32>>);

impl Proof {
    /// From plain hashes.
    pub fn from_hashes(hashes: Vec<[u8; 32]>) -> Self {
        Self(hashes.into_iter().map(serde_bytes::ByteArray::new).collect())
    }

    /// As plain hashes.
    pub fn hashes(&self) -> Vec<[u8; 32]> {
        self.0.iter().map(|h| h.into_array()).collect()
    }
}

/// Whether `record` is a share a privacy officer reviews: an allowed offer or
/// add on a legal basis that `without_consent` says needs no consent.
pub fn is_share_without_consent(record: &AuditRecord, without_consent: impl Fn(&str) -> bool) -> bool {
    matches!(record.action, AuditAction::Handover | AuditAction::AddMember)
        && record.outcome == AuditOutcome::Allowed
        && record.legal_basis.as_deref().is_some_and(without_consent)
}

/// The rule of the entry the hub writes when an action it recorded as allowed (entry `entry`)
/// then failed to take effect: the allowed entry stays in the chain, and this one undoes it.
pub fn failure_rule(rule: &str, error: impl std::fmt::Display, entry: u64) -> String {
    format!("{rule}; failed: {error}; entry {entry} did not take effect")
}

/// Whether `later` is the hub's record that `entry`'s action failed to take effect (see
/// [`failure_rule`]): the same action by the same actor on the same object, written after it.
/// An allowed share that was undone this way shared nothing and needs no review.
pub fn undoes(later: &AuditEntry, entry: &AuditEntry) -> bool {
    let (a, b) = (&later.record, &entry.record);
    later.seq > entry.seq
        && undone_entry(a) == Some(entry.seq)
        && (a.action, &a.actor, &a.on_behalf_of, a.case, &a.object)
            == (b.action, &b.actor, &b.on_behalf_of, b.case, &b.object)
        && a.rule.starts_with(&format!("{}; failed: ", b.rule))
}

/// The entry a failed record says did not take effect (see [`failure_rule`]), unchecked: confirm with [`undoes`].
pub fn undone_entry(record: &AuditRecord) -> Option<u64> {
    let rest = record.rule.strip_suffix(" did not take effect").filter(|_| record.outcome == AuditOutcome::Failed)?;
    rest.rsplit_once("; entry ")?.1.parse().ok()
}

/// The object of a [`AuditAction::Review`] entry: it names the reviewed entry.
pub fn review_object(entry: u64) -> String {
    format!("review of entry {entry}")
}

/// The entry a [`AuditAction::Review`] record reviewed.
pub fn reviewed_entry(record: &AuditRecord) -> Option<u64> {
    let object = record.object.as_deref().filter(|_| record.action == AuditAction::Review)?;
    object.strip_prefix("review of entry ")?.parse().ok()
}

/// Which entries a privacy officer asks for; every filter narrows.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditFilter {
    /// Only entries about this case.
    pub case: Option<ThreadId>,
    /// Only entries whose actor, or the worker acted for, is this member.
    pub worker: Option<MemberId>,
    /// Only entries at or after this time (ms since the Unix epoch).
    pub since_ms: Option<u64>,
    /// Only entries before this time (ms since the Unix epoch).
    pub until_ms: Option<u64>,
    /// At most this many entries (the hub caps it).
    pub limit: Option<u32>,
    /// Only entries of this action.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<AuditAction>,
    /// Only entries after this seq: the last seq of the previous page, to read on where a
    /// truncated answer stopped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after_seq: Option<u64>,
}
