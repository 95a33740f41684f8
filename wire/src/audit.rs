//! Audit entries: what the hub records about every access, and what a privacy
//! officer receives when querying them.
//!
//! The fields follow NEN 7513 (who, on whose behalf, organisation and role,
//! which case, what action, when, outcome, purpose, legal basis) so that an
//! entry answers a family's access request without any case content. The hub
//! chains entries by SHA-256 and signs checkpoints; see `hub::audit`.

use serde::{Deserialize, Serialize};

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

/// A signed statement by the hub's audit key that the chain up to `seq` has head `head_hash`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditCheckpoint {
    /// The last entry covered.
    pub seq: u64,
    /// That entry's hash.
    #[serde(with = "serde_bytes")]
    pub head_hash: [u8; 32],
    /// When it was signed, ms since the Unix epoch.
    pub at_ms: u64,
    /// Ed25519 signature (see `hub::audit::chain`).
    #[serde(with = "serde_bytes")]
    pub signature: Vec<u8>,
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
}
