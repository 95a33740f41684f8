//! The audit log's hash chain, its signed checkpoints, and the export a privacy officer verifies.
//!
//! NEN 7513 asks that access logs cannot be altered unnoticed, also not by the hub's operator. So every
//! entry carries the SHA-256 of the entry before it ([`entry_hash`]), which makes deleting, inserting,
//! reordering or changing an entry visible to anyone who recomputes the chain. A chain alone does not
//! stop someone with write access from rebuilding it from the altered entry onwards; the hub therefore
//! signs the head of the chain at intervals with an Ed25519 key ([`AuditKey`]) whose public half is
//! published outside the hub. A rebuilt chain no longer matches the signed heads, and new signatures
//! need the private key.
//!
//! Exports are JSON Lines in the field names of the Dutch government standard Logboek
//! Dataverwerkingen (LDV), with a `nen7513.` extension for what NEN 7513 adds, so that existing LDV
//! tooling can read them ([`to_json_line`], [`from_json_line`]). A filtered export (one case, one
//! worker) replaces the entries it leaves out by their links and record digests
//! ([`ExportLine::Omitted`]), so every link stays checkable without revealing other cases; [`super::verify`] checks an export against the public key.

use std::fs;
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};

use ring::rand::{SecureRandom, SystemRandom};
use ring::signature::{Ed25519KeyPair, KeyPair};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use wire::audit::{AuditAction, AuditActor, AuditEntry, AuditOutcome, AuditRecord, KeyRotation, SignedTreeHead};
use wire::merkle::{self, CompactRange, Hash, Node};
use wire::{AgencyKind, MemberId, Oin, Role, ThreadId};

/// The software version written as the LDV `resource.version` of every exported entry.
pub const RESOURCE_VERSION: &str = "1";
/// The LDV `resource.name` of every exported entry.
const RESOURCE_NAME: &str = "ketenhub";
/// What kind of identifier `dpl.core.data_subject_id` holds: a case (thread) id, not a person.
const DATA_SUBJECT_ID_TYPE: &str = "ketenhub-case";

const TYPE_ENTRY: &str = "dataverwerking";
const TYPE_OMITTED: &str = "omitted";
const TYPE_HEAD: &str = "tree_head";
const TYPE_PREFIX: &str = "tree_prefix";

pub use wire::audit::{entry_hash, link_hash, record_digest};
pub use wire::calendar::format_ms as format_time;

/// An entry as [`Chain::append`] made it, for the store to keep in one write.
#[derive(Debug, Clone)]
pub struct Sealed {
    /// The entry.
    pub entry: AuditEntry,
    /// Its record's CBOR, exactly the bytes its hash covers: stored as they were hashed, so that the
    /// record is encoded once on the path of every message and verification need not re-encode it.
    pub record_cbor: Vec<u8>,
    /// The tree nodes its leaf completes (see `wire::merkle`).
    pub nodes: Vec<Node>,
}

/// The writing end of the audit log: hands out sequence numbers and links, grows the Merkle tree, and
/// decides when to sign a tree head.
///
/// It holds no entries itself; the caller stores each [`AuditEntry`] that [`Chain::append`] returns, in order,
/// together with the tree nodes it completes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chain {
    next_seq: u64,
    head: [u8; 32],
    tree: CompactRange,
    since_checkpoint: u64,
    last_checkpoint_ms: u64,
}

impl Chain {
    /// Continues a log whose last stored entry is `last` (its seq and hash) and whose tree is `tree` (of
    /// `last.seq` leaves); `None` and an empty tree start an empty log at seq 1.
    ///
    /// A resumed non-empty log counts its last entry as not yet signed: the store does not say whether
    /// the hub signed it before it stopped, and signing a head twice is harmless while leaving the tail before
    /// a crash unsigned is not. So one head becomes due `every_ms` after the restart even if nothing new
    /// is logged.
    pub fn resume(last: Option<(u64, [u8; 32])>, tree: CompactRange, now_ms: u64) -> Self {
        match last {
            Some((seq, hash)) => Self {
                next_seq: seq.saturating_add(1),
                head: hash,
                tree,
                since_checkpoint: 1,
                last_checkpoint_ms: now_ms,
            },
            None => Self { next_seq: 1, head: [0; 32], tree, since_checkpoint: 0, last_checkpoint_ms: now_ms },
        }
    }

    /// Places `record` at the end of the chain and the tree; returns the entry with what is stored with it.
    pub fn append(&mut self, record: AuditRecord) -> Sealed {
        let seq = self.next_seq;
        let prev_hash = self.head;
        let record_cbor = wire::encode(&record);
        let hash = link_hash(seq, &prev_hash, &wire::audit::encoded_record_digest(&record_cbor));
        let nodes = self.tree.append(merkle::leaf_hash(&hash));
        self.next_seq = seq.saturating_add(1);
        self.head = hash;
        self.since_checkpoint = self.since_checkpoint.saturating_add(1);
        Sealed { entry: AuditEntry { seq, prev_hash, hash, record }, record_cbor, nodes }
    }

    /// True when something was logged since the last head and either `every_entries` entries were or
    /// `every_ms` milliseconds have passed since it.
    pub fn checkpoint_due(&self, now_ms: u64, every_entries: u64, every_ms: u64) -> bool {
        self.since_checkpoint > 0
            && (self.since_checkpoint >= every_entries || now_ms.saturating_sub(self.last_checkpoint_ms) >= every_ms)
    }

    /// Signs the current tree head with `key`; `None` while the log is empty.
    pub fn checkpoint(&mut self, key: &AuditKey, now_ms: u64) -> Option<SignedTreeHead> {
        self.head()?;
        let head = key.sign_head(self.tree.size(), &self.tree.root(), now_ms);
        self.since_checkpoint = 0;
        self.last_checkpoint_ms = now_ms;
        Some(head)
    }

    /// The last entry's seq and hash; `None` while the log is empty.
    pub fn head(&self) -> Option<(u64, [u8; 32])> {
        (self.next_seq > 1).then(|| (self.next_seq - 1, self.head))
    }

    /// The Merkle tree so far.
    pub fn tree(&self) -> &CompactRange {
        &self.tree
    }
}

/// Why the audit key could not be loaded, created or parsed.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// Reading or writing the key file failed.
    #[error("audit key {}: {source}", path.display())]
    Io {
        /// The key file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The key file may be read by users other than its owner.
    #[error(
        "audit key {} is readable by group or others (mode {mode:o}); run `chmod 600 {}`",
        path.display(),
        path.display()
    )]
    Permissions {
        /// The key file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// There is no key file.
    #[error("no audit key at {}", path.display())]
    Missing {
        /// Where it should be.
        path: PathBuf,
    },
    /// The audit log has entries but its key is missing: a new key would sign a log it never saw.
    #[error("the audit log has {entries} entries but its key {} is missing; restore it (a new key is made only for an empty log)", path.display())]
    MissingForLog {
        /// Where the key should be.
        path: PathBuf,
        /// The log's entries.
        entries: u64,
    },
    /// The key is not the key that signed the log's latest head.
    #[error("the audit key {} ({key}) did not sign the log's latest head (over {size} entries); give the log's own key, or rotate with `hub audit rotate-key`", path.display())]
    NotTheLogs {
        /// The key file.
        path: PathBuf,
        /// Its public key, hex.
        key: String,
        /// The latest head's size.
        size: u64,
    },
    /// The store could not be read to check the key against the log.
    #[error("cannot check the audit key against the log: {0}")]
    Store(String),
    /// The key file or a public key is not what it should be.
    #[error("{0}")]
    Malformed(String),
    /// The system's random number generator failed while generating a key.
    #[error("could not generate an audit key: the system random number generator failed")]
    Random,
}

/// The hub's Ed25519 audit key, which signs checkpoints of the chain.
pub struct AuditKey {
    pair: Ed25519KeyPair,
}

impl std::fmt::Debug for AuditKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Only the public half: this may end up in logs.
        f.debug_struct("AuditKey").field("public_key", &self.public_key_hex()).finish()
    }
}

impl AuditKey {
    /// A fresh key held only in memory, for tests and development hubs whose log need not outlive them.
    pub fn generate() -> Result<Self, KeyError> {
        let document = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).map_err(|_| KeyError::Random)?;
        let pair = Ed25519KeyPair::from_pkcs8(document.as_ref())
            .map_err(|e| KeyError::Malformed(format!("freshly generated audit key rejected: {e}")))?;
        Ok(Self { pair })
    }

    /// Loads the key from the PKCS#8 (v2, DER) file at `path`, or creates one there if there is none.
    ///
    /// Only for a log that is still empty: a hub whose log has entries must use [`AuditKey::load`], so that a
    /// deleted key is never silently replaced by a new one (whose heads would then sign a log it never saw).
    pub fn load_or_create(path: &Path) -> Result<Self, KeyError> {
        match Self::load(path) {
            Err(KeyError::Missing { .. }) => Self::create(path),
            other => other,
        }
    }

    /// Loads the key from the PKCS#8 (v2, DER) file at `path`. A key file that group or others may read is
    /// refused rather than used, because anyone who can read it can forge heads.
    pub fn load(path: &Path) -> Result<Self, KeyError> {
        let io_error = |source| KeyError::Io { path: path.to_owned(), source };
        match fs::metadata(path) {
            Ok(metadata) => {
                check_private(path, &metadata)?;
                let document = fs::read(path).map_err(io_error)?;
                let pair = Ed25519KeyPair::from_pkcs8(&document).map_err(|e| {
                    KeyError::Malformed(format!(
                        "audit key {} is not a PKCS#8 v2 Ed25519 key in DER: {e}",
                        path.display()
                    ))
                })?;
                Ok(Self { pair })
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(KeyError::Missing { path: path.to_owned() }),
            Err(e) => Err(io_error(e)),
        }
    }

    /// Creates a new key file at `path` (refusing to overwrite one).
    ///
    /// The key is written to a temporary file in the same directory, created with mode 0600, and renamed into
    /// place, so a crash never leaves a truncated key behind.
    pub fn create(path: &Path) -> Result<Self, KeyError> {
        let io_error = |source| KeyError::Io { path: path.to_owned(), source };
        let rng = SystemRandom::new();
        let document = Ed25519KeyPair::generate_pkcs8(&rng).map_err(|_| KeyError::Random)?;
        let pair = Ed25519KeyPair::from_pkcs8(document.as_ref())
            .map_err(|e| KeyError::Malformed(format!("freshly generated audit key rejected: {e}")))?;

        let file_name = path
            .file_name()
            .ok_or_else(|| io_error(io::Error::new(io::ErrorKind::InvalidInput, "the path does not name a file")))?;
        let dir = match path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir.to_owned(),
            _ => PathBuf::from("."),
        };
        fs::create_dir_all(&dir).map_err(io_error)?;

        // A random suffix keeps a leftover temporary file from an earlier crash from blocking creation.
        let mut suffix = [0u8; 8];
        rng.fill(&mut suffix).map_err(|_| KeyError::Random)?;
        let temp = dir.join(format!(".{}.{}.tmp", file_name.to_string_lossy(), to_hex(&suffix)));
        let written = write_private(&temp, document.as_ref()).and_then(|()| fs::rename(&temp, path));
        if let Err(e) = written {
            // Best effort: the temporary file holds a key nobody will use.
            let _ = fs::remove_file(&temp);
            return Err(io_error(e));
        }
        sync_dir(&dir).map_err(io_error)?;
        Ok(Self { pair })
    }

    /// The Ed25519 public key, to publish so that exports can be verified.
    pub fn public_key(&self) -> [u8; 32] {
        let mut out = [0u8; 32];
        // Ed25519 public keys are 32 bytes by definition.
        out.copy_from_slice(self.pair.public_key().as_ref());
        out
    }

    /// The public key as 64 lowercase hex digits, the form [`AuditKey::parse_public_key`] reads.
    pub fn public_key_hex(&self) -> String {
        to_hex(&self.public_key())
    }

    /// Signs the tree head of `size` entries with root `root`.
    pub fn sign_head(&self, size: u64, root: &Hash, at_ms: u64) -> SignedTreeHead {
        let signature = self.pair.sign(&SignedTreeHead::message(size, root, at_ms, None)).as_ref().to_vec();
        SignedTreeHead { size, root: *root, at_ms, signature, rotation: None }
    }

    /// Signs the head that hands the log over from `self` to `next`: both keys sign one message naming both.
    pub fn sign_rotation(&self, next: &AuditKey, size: u64, root: &Hash, at_ms: u64) -> SignedTreeHead {
        let (old_key, new_key) = (self.public_key(), next.public_key());
        let message = SignedTreeHead::message(size, root, at_ms, Some((&old_key, &new_key)));
        SignedTreeHead {
            size,
            root: *root,
            at_ms,
            signature: self.pair.sign(&message).as_ref().to_vec(),
            rotation: Some(KeyRotation { old_key, new_key, new_signature: next.pair.sign(&message).as_ref().to_vec() }),
        }
    }

    /// Reads a public key given as 64 hex digits, ignoring surrounding whitespace.
    pub fn parse_public_key(text: &str) -> Result<Vec<u8>, KeyError> {
        let text = text.trim();
        match from_hex(text) {
            Some(key) if key.len() == 32 => Ok(key),
            _ => Err(KeyError::Malformed(format!(
                "an audit public key is 64 hex digits, got {:?}",
                text.chars().take(80).collect::<String>()
            ))),
        }
    }
}

#[cfg(unix)]
fn check_private(path: &Path, metadata: &fs::Metadata) -> Result<(), KeyError> {
    use std::os::unix::fs::PermissionsExt;
    let mode = metadata.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(KeyError::Permissions { path: path.to_owned(), mode });
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_private(_path: &Path, _metadata: &fs::Metadata) -> Result<(), KeyError> {
    // Other platforms keep access in ACLs, which the installer sets.
    Ok(())
}

fn write_private(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        // Set at creation, so the key is never readable by others, not even briefly.
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

#[cfg(unix)]
fn sync_dir(dir: &Path) -> io::Result<()> {
    // Makes the rename itself durable: without it a crash may forget the new key after the hub used it.
    fs::File::open(dir)?.sync_all()
}

#[cfg(not(unix))]
fn sync_dir(_dir: &Path) -> io::Result<()> {
    Ok(())
}

/// One line of an audit export.
// Lines are read and checked one at a time, so the size of the entry variant costs nothing, while a box
// would burden every caller that builds or matches a line.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExportLine {
    /// An entry, in full.
    Entry(AuditEntry),
    /// An entry a filtered export leaves out: its place, its link and its record's digest, so that its hash
    /// is recomputed and the chain and tree are checked through it without the record.
    Omitted {
        /// The entry's sequence number.
        seq: u64,
        /// The hash of the entry before it.
        prev_hash: [u8; 32],
        /// The SHA-256 of its record (see [`record_digest`]).
        digest: [u8; 32],
    },
    /// A signed tree head, placed after the entry it ends with.
    Head(SignedTreeHead),
    /// The first line of an export of a pruned log: the tree over the entries retention deleted, as the
    /// perfect subtrees that make it up (largest first), so that heads over later sizes can still be checked.
    Prefix {
        /// The number of entries pruned (the first entry of the export is `size + 1`).
        size: u64,
        /// The peaks of their tree (see [`CompactRange`]).
        peaks: Vec<Hash>,
    },
}

/// Why a line of an export could not be read; the caller adds the line number.
#[derive(Debug, thiserror::Error)]
pub enum ParseError {
    /// The line is not JSON.
    #[error("not JSON: {0}")]
    Json(#[source] serde_json::Error),
    /// The line has no string `type` field.
    #[error("no \"type\" field; not a line of a Ketenhub audit export")]
    MissingType,
    /// The `type` field names no known kind of line.
    #[error("unknown line type {0:?} (expected dataverwerking, omitted, tree_head or tree_prefix)")]
    UnknownType(String),
    /// A field is missing or has the wrong type or value.
    #[error("malformed {kind} line: {source}")]
    Fields {
        /// The line's `type`.
        kind: &'static str,
        /// What serde found wrong.
        #[source]
        source: serde_json::Error,
    },
    /// A field has the right type but an impossible value.
    #[error("field {field}: {reason}")]
    Invalid {
        /// The field.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// A field disagrees with the rest of the line, is missing, or is unknown. Exports repeat some facts
    /// (times, the hash as trace id, the status); a line whose copies disagree was edited by hand.
    #[error("field {field} does not agree with the rest of the line (edited, or not written by Ketenhub)")]
    Inconsistent {
        /// The field, as a dotted path for nested attributes.
        field: String,
    },
}

/// An entry line: an LDV "dataverwerking" with NEN 7513 attributes and the chain fields.
#[derive(Serialize, Deserialize)]
struct EntryJson {
    #[serde(rename = "type")]
    kind: String,
    seq: u64,
    trace_id: String,
    span_id: String,
    name: AuditAction,
    start_time: String,
    end_time: String,
    status_code: String,
    // Describes the software that wrote the line, not the entry, so it is not checked on reading.
    resource: Value,
    attributes: AttributesJson,
    #[serde(rename = "ketenhub.prev_hash")]
    prev_hash: String,
    #[serde(rename = "ketenhub.hash")]
    hash: String,
    #[serde(rename = "ketenhub.at_ms")]
    at_ms: u64,
}

#[derive(Serialize, Deserialize)]
struct AttributesJson {
    #[serde(rename = "dpl.core.processing_activity_id")]
    processing_activity_id: AuditAction,
    #[serde(rename = "dpl.core.data_subject_id")]
    data_subject_id: Option<ThreadId>,
    #[serde(rename = "dpl.core.data_subject_id_type")]
    data_subject_id_type: String,
    #[serde(rename = "nen7513.actor.oin")]
    actor_oin: Option<Oin>,
    #[serde(rename = "nen7513.actor.organisation")]
    actor_organisation: Option<String>,
    #[serde(rename = "nen7513.actor.kind")]
    actor_kind: Option<AgencyKind>,
    #[serde(rename = "nen7513.actor.worker")]
    actor_worker: Option<String>,
    #[serde(rename = "nen7513.actor.role")]
    actor_role: Option<Role>,
    #[serde(rename = "nen7513.actor.certificate")]
    actor_certificate: Option<String>,
    #[serde(rename = "nen7513.on_behalf_of")]
    on_behalf_of: Option<String>,
    #[serde(rename = "nen7513.object_id")]
    object_id: Option<String>,
    #[serde(rename = "nen7513.purpose")]
    purpose: Option<String>,
    #[serde(rename = "nen7513.legal_basis")]
    legal_basis: Option<String>,
    #[serde(rename = "nen7513.outcome")]
    outcome: AuditOutcome,
    #[serde(rename = "nen7513.rule")]
    rule: String,
    #[serde(rename = "nen7513.peer_address")]
    peer_address: Option<String>,
}

#[derive(Serialize, Deserialize)]
struct OmittedJson {
    #[serde(rename = "type")]
    kind: String,
    seq: u64,
    #[serde(rename = "ketenhub.prev_hash")]
    prev_hash: String,
    #[serde(rename = "ketenhub.record_digest")]
    digest: String,
}

#[derive(Serialize, Deserialize)]
struct PrefixJson {
    #[serde(rename = "type")]
    kind: String,
    size: u64,
    peaks: Vec<String>,
}

impl EntryJson {
    fn from_entry(entry: &AuditEntry) -> Self {
        let record = &entry.record;
        let actor = record.actor.as_ref();
        let time = format_time(record.at_ms);
        Self {
            kind: TYPE_ENTRY.to_owned(),
            seq: entry.seq,
            // LDV links processings by W3C trace context; the entry hash is unique, so it serves as both ids.
            trace_id: to_hex(&entry.hash[..16]),
            span_id: to_hex(&entry.hash[16..24]),
            name: record.action,
            start_time: time.clone(),
            end_time: time,
            status_code: if record.outcome == AuditOutcome::Allowed { "OK" } else { "ERROR" }.to_owned(),
            resource: serde_json::json!({ "name": RESOURCE_NAME, "version": RESOURCE_VERSION }),
            attributes: AttributesJson {
                processing_activity_id: record.action,
                data_subject_id: record.case,
                data_subject_id_type: DATA_SUBJECT_ID_TYPE.to_owned(),
                actor_oin: actor.map(|a| a.oin.clone()),
                actor_organisation: actor.map(|a| a.organisation.clone()),
                actor_kind: actor.map(|a| a.kind),
                actor_worker: actor.map(|a| a.worker.clone()),
                actor_role: actor.map(|a| a.role),
                actor_certificate: actor.map(|a| a.certificate.clone()),
                on_behalf_of: record.on_behalf_of.as_ref().map(|m| format!("{}/{}", m.oin, m.worker)),
                object_id: record.object.clone(),
                purpose: record.purpose.clone(),
                legal_basis: record.legal_basis.clone(),
                outcome: record.outcome,
                rule: record.rule.clone(),
                peer_address: record.peer.clone(),
            },
            prev_hash: to_hex(&entry.prev_hash),
            hash: to_hex(&entry.hash),
            at_ms: record.at_ms,
        }
    }

    /// The entry this line describes; the repeated fields are checked afterwards, by writing the entry again.
    fn into_entry(self) -> Result<AuditEntry, ParseError> {
        let a = self.attributes;
        let actor = match (a.actor_oin, a.actor_organisation, a.actor_kind, a.actor_worker, a.actor_role) {
            (Some(oin), Some(organisation), Some(kind), Some(worker), Some(role)) => {
                let certificate = a.actor_certificate.ok_or_else(|| actor_incomplete("nen7513.actor.certificate"))?;
                Some(AuditActor { oin, organisation, kind, worker, role, certificate })
            }
            (None, None, None, None, None) if a.actor_certificate.is_none() => None,
            _ => return Err(actor_incomplete("nen7513.actor")),
        };
        let on_behalf_of = a.on_behalf_of.map(|text| parse_member(&text)).transpose()?;
        let record = AuditRecord {
            at_ms: self.at_ms,
            actor,
            on_behalf_of,
            action: self.name,
            case: a.data_subject_id,
            object: a.object_id,
            purpose: a.purpose,
            legal_basis: a.legal_basis,
            outcome: a.outcome,
            rule: a.rule,
            peer: a.peer_address,
        };
        Ok(AuditEntry {
            seq: self.seq,
            prev_hash: parse_hash("ketenhub.prev_hash", &self.prev_hash)?,
            hash: parse_hash("ketenhub.hash", &self.hash)?,
            record,
        })
    }
}

fn actor_incomplete(field: &'static str) -> ParseError {
    ParseError::Invalid { field, reason: "the nen7513.actor fields must be all present or all null".to_owned() }
}

fn parse_member(text: &str) -> Result<MemberId, ParseError> {
    let invalid = |reason: String| ParseError::Invalid { field: "nen7513.on_behalf_of", reason };
    // An OIN is digits only, so the first slash separates it from the worker id.
    let (oin, worker) =
        text.split_once('/').ok_or_else(|| invalid(format!("expected <oin>/<worker>, got {text:?}")))?;
    let oin = oin.parse::<Oin>().map_err(|e| invalid(e.to_string()))?;
    Ok(MemberId { oin, worker: worker.to_owned() })
}

fn parse_hash(field: &'static str, text: &str) -> Result<[u8; 32], ParseError> {
    wire::hex::decode32(text)
        .ok_or_else(|| ParseError::Invalid { field, reason: format!("expected 64 hex digits, got {text:?}") })
}

/// A line as written: the structs keep their fields in LDV's order, which a `Value` would sort.
#[derive(Serialize)]
#[serde(untagged)]
enum LineJson {
    Entry(Box<EntryJson>),
    Omitted(OmittedJson),
    Head(ketenhub_sdk::witness::HeadJson),
    Prefix(PrefixJson),
}

impl LineJson {
    fn from_line(line: &ExportLine) -> Self {
        match line {
            ExportLine::Entry(entry) => Self::Entry(Box::new(EntryJson::from_entry(entry))),
            ExportLine::Omitted { seq, prev_hash, digest } => Self::Omitted(OmittedJson {
                kind: TYPE_OMITTED.to_owned(),
                seq: *seq,
                prev_hash: to_hex(prev_hash),
                digest: to_hex(digest),
            }),
            ExportLine::Head(head) => Self::Head(ketenhub_sdk::witness::HeadJson::from_head(head)),
            ExportLine::Prefix { size, peaks } => Self::Prefix(PrefixJson {
                kind: TYPE_PREFIX.to_owned(),
                size: *size,
                peaks: peaks.iter().map(|p| to_hex(p)).collect(),
            }),
        }
    }
}

// The line structs have string keys and no custom serialisers, so serialising them cannot fail.
const SERIALISES: &str = "audit export lines always serialise";

/// Writes one line of an export as JSON, without the newline.
pub fn to_json_line(line: &ExportLine) -> String {
    serde_json::to_string(&LineJson::from_line(line)).expect(SERIALISES)
}

/// Reads one line of an export written by [`to_json_line`].
///
/// Fields that repeat others (the times, trace and span ids, status, activity id) must agree with them, and
/// unknown fields are refused: the verifier checks the hashed fields, and a reader must not be shown copies
/// that say something else.
pub fn from_json_line(text: &str) -> Result<ExportLine, ParseError> {
    let value: Value = serde_json::from_str(text).map_err(ParseError::Json)?;
    let kind = value.get("type").and_then(Value::as_str).ok_or(ParseError::MissingType)?;
    let line = match kind {
        TYPE_ENTRY => {
            let json: EntryJson = fields(TYPE_ENTRY, &value)?;
            ExportLine::Entry(json.into_entry()?)
        }
        TYPE_OMITTED => {
            let json: OmittedJson = fields(TYPE_OMITTED, &value)?;
            ExportLine::Omitted {
                seq: json.seq,
                prev_hash: parse_hash("ketenhub.prev_hash", &json.prev_hash)?,
                digest: parse_hash("ketenhub.record_digest", &json.digest)?,
            }
        }
        TYPE_HEAD => {
            let json: ketenhub_sdk::witness::HeadJson = fields(TYPE_HEAD, &value)?;
            ExportLine::Head(json.into_head().map_err(|(field, reason)| ParseError::Invalid { field, reason })?)
        }
        TYPE_PREFIX => {
            let json: PrefixJson = fields(TYPE_PREFIX, &value)?;
            let peaks = json.peaks.iter().map(|p| parse_hash("peaks", p)).collect::<Result<Vec<_>, _>>()?;
            if CompactRange::from_peaks(json.size, &peaks).is_none() {
                return Err(ParseError::Invalid {
                    field: "peaks",
                    reason: format!("a tree of {} entries has {} peaks", json.size, json.size.count_ones()),
                });
            }
            ExportLine::Prefix { size: json.size, peaks }
        }
        other => return Err(ParseError::UnknownType(other.to_owned())),
    };
    let canonical = serde_json::to_value(LineJson::from_line(&line)).expect(SERIALISES);
    if let Some(field) = first_difference(&value, &canonical, "") {
        return Err(ParseError::Inconsistent { field });
    }
    Ok(line)
}

fn fields<T: serde::de::DeserializeOwned>(kind: &'static str, value: &Value) -> Result<T, ParseError> {
    T::deserialize(value).map_err(|source| ParseError::Fields { kind, source })
}

/// The path of the first field where `actual` differs from `canonical`, ignoring the top-level `resource`'s
/// content; `None` when they agree.
fn first_difference(actual: &Value, canonical: &Value, path: &str) -> Option<String> {
    let (Value::Object(actual), Value::Object(canonical)) = (actual, canonical) else {
        return (actual != canonical).then(|| path.to_owned());
    };
    let join = |key: &str| if path.is_empty() { key.to_owned() } else { format!("{path}.{key}") };
    for (key, expected) in canonical {
        let Some(found) = actual.get(key) else { return Some(join(key)) };
        if path.is_empty() && key == "resource" {
            continue;
        }
        if let Some(difference) = first_difference(found, expected, &join(key)) {
            return Some(difference);
        }
    }
    actual.keys().find(|key| !canonical.contains_key(*key)).map(|key| join(key))
}

pub(crate) use wire::hex::{decode as from_hex, encode as to_hex};

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::verify::{verify, Verified, VerifyError};

    const START_MS: u64 = 1_700_000_000_000;

    fn oin(n: u32) -> Oin {
        format!("{n:020}").parse().unwrap()
    }

    /// A varied record: every few entries without actor, acting for someone, without a case, or denied.
    fn record(i: u64) -> AuditRecord {
        let actor = (i % 7 != 3).then(|| AuditActor {
            oin: oin(1234),
            organisation: "Veilig Thuis Utrecht".to_owned(),
            kind: AgencyKind::VT,
            worker: format!("worker-{}", i % 5),
            role: if i.is_multiple_of(4) { Role::System } else { Role::Caseworker },
            certificate: "ab".repeat(32),
        });
        AuditRecord {
            at_ms: START_MS + i * 1_000 + 123,
            actor,
            on_behalf_of: i.is_multiple_of(4).then(|| MemberId { oin: oin(1234), worker: "anna.devries".to_owned() }),
            action: if i.is_multiple_of(2) { AuditAction::Send } else { AuditAction::Deliver },
            case: (!i.is_multiple_of(5)).then(ThreadId::random),
            object: i.is_multiple_of(3).then(|| format!("message-{i}")),
            purpose: Some(format!("onderzoek {i}")),
            legal_basis: (i % 2 == 1).then(|| "Jeugdwet 7.1.1.1".to_owned()),
            outcome: match i % 10 {
                8 => AuditOutcome::Denied,
                9 => AuditOutcome::Failed,
                _ => AuditOutcome::Allowed,
            },
            rule: format!("rule-{}", i % 3),
            peer: (!i.is_multiple_of(6)).then(|| "192.0.2.7:54321".to_owned()),
        }
    }

    /// A log of `n` entries with a checkpoint after every `every` entries, as an export in file order.
    fn log(key: &AuditKey, n: u64, every: u64) -> Vec<ExportLine> {
        let mut chain = Chain::resume(None, CompactRange::new(), START_MS);
        let mut lines = Vec::new();
        for i in 1..=n {
            let now = START_MS + i * 1_000;
            lines.push(ExportLine::Entry(chain.append(record(i)).entry));
            if chain.checkpoint_due(now, every, u64::MAX) {
                lines.push(ExportLine::Head(chain.checkpoint(key, now).unwrap()));
            }
        }
        lines
    }

    fn position(lines: &[ExportLine], seq: u64) -> usize {
        lines.iter().position(|line| matches!(line, ExportLine::Entry(e) if e.seq == seq)).unwrap()
    }

    fn entry_mut(lines: &mut [ExportLine], seq: u64) -> &mut AuditEntry {
        let at = position(lines, seq);
        match &mut lines[at] {
            ExportLine::Entry(entry) => entry,
            _ => unreachable!(),
        }
    }

    fn checkpoint_mut(lines: &mut [ExportLine], seq: u64) -> &mut SignedTreeHead {
        lines
            .iter_mut()
            .find_map(|line| match line {
                ExportLine::Head(c) if c.size == seq => Some(c),
                _ => None,
            })
            .unwrap()
    }

    fn check(lines: &[ExportLine], key: &AuditKey) -> Result<Verified, VerifyError> {
        verify(lines.to_vec(), &key.public_key(), Vec::new())
    }

    #[test]
    fn appended_entries_link_to_each_other() {
        let mut chain = Chain::resume(None, CompactRange::new(), START_MS);
        assert_eq!(chain.head(), None);
        let first = chain.append(record(1)).entry;
        let second = chain.append(record(2)).entry;
        assert_eq!((first.seq, first.prev_hash), (1, [0; 32]));
        assert_eq!(first.hash, entry_hash(1, &[0; 32], &first.record));
        assert_eq!((second.seq, second.prev_hash), (2, first.hash));
        assert_eq!(second.hash, entry_hash(2, &first.hash, &second.record));
        assert_eq!(chain.head(), Some((2, second.hash)));

        let mut resumed = Chain::resume(chain.head(), chain.tree().clone(), START_MS);
        let third = resumed.append(record(3)).entry;
        assert_eq!((third.seq, third.prev_hash), (3, second.hash));
    }

    #[test]
    fn an_appended_entry_carries_the_encoding_its_hash_covers() {
        let mut chain = Chain::resume(None, CompactRange::new(), START_MS);
        let sealed = chain.append(record(1));
        assert_eq!(sealed.record_cbor, wire::encode(&sealed.entry.record));
        let digest = wire::audit::encoded_record_digest(&sealed.record_cbor);
        assert_eq!(sealed.entry.hash, link_hash(1, &[0; 32], &digest));
        assert_eq!(sealed.nodes.len(), 1, "a first leaf completes only itself");
    }

    #[test]
    fn checkpoints_fall_due_by_count_or_time_and_only_after_new_entries() {
        let key = AuditKey::generate().unwrap();
        let mut chain = Chain::resume(None, CompactRange::new(), START_MS);
        assert!(!chain.checkpoint_due(START_MS + 10_000, 1, 1));
        assert!(chain.checkpoint(&key, START_MS).is_none());

        chain.append(record(1));
        assert!(!chain.checkpoint_due(START_MS + 999, 2, 1_000));
        assert!(chain.checkpoint_due(START_MS + 1_000, 2, 1_000));
        chain.append(record(2));
        assert!(chain.checkpoint_due(START_MS + 1, 2, 1_000));

        let checkpoint = chain.checkpoint(&key, START_MS + 5).unwrap();
        assert_eq!((checkpoint.size, checkpoint.root), (2, chain.tree().root()));
        assert!(checkpoint.signed_by(&key.public_key()));
        assert!(!chain.checkpoint_due(START_MS + 100_000, 1, 1));

        // After a restart the tail may be unsigned, so one checkpoint falls due on time alone.
        let resumed = Chain::resume(chain.head(), chain.tree().clone(), START_MS);
        assert!(!resumed.checkpoint_due(START_MS + 999, 100, 1_000));
        assert!(resumed.checkpoint_due(START_MS + 1_000, 100, 1_000));
    }

    #[test]
    fn a_thousand_entries_verify_after_a_json_round_trip() {
        let key = AuditKey::generate().unwrap();
        let lines = log(&key, 1_000, 100);
        let text: Vec<String> = lines.iter().map(to_json_line).collect();
        let read: Vec<ExportLine> = text.iter().map(|line| from_json_line(line).unwrap()).collect();
        assert_eq!(read, lines);
        let verified = verify(read, &key.public_key(), Vec::new()).unwrap();
        assert_eq!(
            verified,
            Verified { entries: 1_000, omitted: 0, checkpoints: 10, witnessed: 0, last_seq: 1_000, pruned: 0 }
        );
        assert_eq!(verify(Vec::new(), &key.public_key(), Vec::new()).unwrap(), Verified::default());
    }

    #[test]
    fn a_changed_field_is_found_at_its_entry() {
        let key = AuditKey::generate().unwrap();
        let mut lines = log(&key, 300, 100);
        entry_mut(&mut lines, 150).record.purpose = Some("nieuwsgierigheid".to_owned());
        assert_eq!(check(&lines, &key), Err(VerifyError::Changed { seq: 150 }));
    }

    #[test]
    fn a_changed_entry_with_a_recomputed_hash_breaks_the_next_link() {
        let key = AuditKey::generate().unwrap();
        let mut lines = log(&key, 300, 100);
        let entry = entry_mut(&mut lines, 150);
        entry.record.purpose = None;
        entry.hash = entry_hash(entry.seq, &entry.prev_hash, &entry.record);
        assert_eq!(check(&lines, &key), Err(VerifyError::BrokenLink { seq: 151 }));
    }

    #[test]
    fn a_rewritten_tail_is_caught_by_the_next_checkpoint() {
        let key = AuditKey::generate().unwrap();
        let mut lines = log(&key, 300, 100);
        // Rebuild the chain from entry 150 on, as someone with write access but without the key could.
        let mut prev = entry_mut(&mut lines, 149).hash;
        for seq in 150..=300 {
            let entry = entry_mut(&mut lines, seq);
            if seq == 150 {
                entry.record.outcome = AuditOutcome::Denied;
            }
            entry.prev_hash = prev;
            entry.hash = entry_hash(seq, &prev, &entry.record);
            prev = entry.hash;
        }
        assert_eq!(check(&lines, &key), Err(VerifyError::RootMismatch { seq: 200 }));
    }

    #[test]
    fn a_deleted_entry_is_a_gap() {
        let key = AuditKey::generate().unwrap();
        let mut lines = log(&key, 300, 100);
        lines.remove(position(&lines, 150));
        assert_eq!(check(&lines, &key), Err(VerifyError::Deleted { seq: 150 }));
    }

    #[test]
    fn an_inserted_entry_is_out_of_order() {
        let key = AuditKey::generate().unwrap();
        let mut lines = log(&key, 300, 100);
        let mut forged = entry_mut(&mut lines, 150).clone();
        forged.record.rule = "allow-all".to_owned();
        lines.insert(position(&lines, 151), ExportLine::Entry(forged));
        assert_eq!(check(&lines, &key), Err(VerifyError::Inserted { seq: 151 }));
    }

    #[test]
    fn swapped_entries_fail_at_the_first_of_them() {
        let key = AuditKey::generate().unwrap();
        let mut lines = log(&key, 300, 100);
        let (a, b) = (position(&lines, 150), position(&lines, 151));
        lines.swap(a, b);
        let error = check(&lines, &key).unwrap_err();
        assert_eq!(error, VerifyError::Reordered { seq: 150 });
        assert_eq!(error.seq(), 150);
    }

    #[test]
    fn a_forged_checkpoint_signature_is_refused() {
        let key = AuditKey::generate().unwrap();
        let mut lines = log(&key, 300, 100);
        checkpoint_mut(&mut lines, 200).signature[10] ^= 1;
        assert_eq!(check(&lines, &key), Err(VerifyError::ForgedHead { seq: 200 }));

        // A valid signature by another key is a forgery too.
        let other = AuditKey::generate().unwrap();
        let lines = log(&key, 100, 100);
        assert_eq!(check(&lines, &other), Err(VerifyError::ForgedHead { seq: 100 }));
    }

    #[test]
    fn a_head_over_another_root_is_a_mismatch_and_one_beyond_the_end_a_truncation() {
        let key = AuditKey::generate().unwrap();
        let mut lines = log(&key, 300, 100);
        let checkpoint = checkpoint_mut(&mut lines, 200);
        *checkpoint = key.sign_head(200, &[7; 32], checkpoint.at_ms);
        assert_eq!(check(&lines, &key), Err(VerifyError::RootMismatch { seq: 200 }));

        // A head over more entries than the export holds: the newest entries were cut off.
        let mut lines = log(&key, 300, 100);
        lines.push(ExportLine::Head(key.sign_head(400, &[7; 32], 0)));
        assert_eq!(check(&lines, &key), Err(VerifyError::TruncatedEnd { seq: 300, head: 400 }));

        // And an export whose last entries no head covers is unsigned at the end.
        let mut lines = log(&key, 300, 100);
        lines.truncate(position(&lines, 250) + 1);
        assert_eq!(check(&lines, &key), Err(VerifyError::Unsigned { seq: 250 }));
    }

    /// Keeps entries whose seq is a multiple of 3 and omits the others, as an export for one case would.
    fn filtered(lines: &[ExportLine]) -> Vec<ExportLine> {
        lines
            .iter()
            .map(|line| match line {
                ExportLine::Entry(e) if !e.seq.is_multiple_of(3) => {
                    ExportLine::Omitted { seq: e.seq, prev_hash: e.prev_hash, digest: record_digest(&e.record) }
                }
                other => other.clone(),
            })
            .collect()
    }

    #[test]
    fn a_filtered_export_verifies_through_omitted_entries() {
        let key = AuditKey::generate().unwrap();
        let lines = filtered(&log(&key, 300, 100));
        let read: Vec<ExportLine> = lines.iter().map(|l| from_json_line(&to_json_line(l)).unwrap()).collect();
        assert_eq!(read, lines);
        let verified = verify(read, &key.public_key(), Vec::new()).unwrap();
        assert_eq!(
            verified,
            Verified { entries: 100, omitted: 200, checkpoints: 3, witnessed: 0, last_seq: 300, pruned: 0 }
        );

        // An export that starts later without a recorded prune is truncated at the start.
        let start = position(&log(&key, 300, 100), 120);
        assert_eq!(check(&lines[start..], &key), Err(VerifyError::TruncatedStart { seq: 120 }));
    }

    #[test]
    fn a_changed_entry_between_omitted_ones_is_found() {
        let key = AuditKey::generate().unwrap();
        let mut lines = filtered(&log(&key, 300, 100));
        entry_mut(&mut lines, 150).record.legal_basis = Some("Wet op de jeugdzorg".to_owned());
        assert_eq!(check(&lines, &key), Err(VerifyError::Changed { seq: 150 }));

        let mut lines = filtered(&log(&key, 300, 100));
        let at = lines.iter().position(|l| matches!(l, ExportLine::Omitted { seq: 149, .. })).unwrap();
        if let ExportLine::Omitted { digest, .. } = &mut lines[at] {
            digest[0] ^= 1;
        }
        assert_eq!(check(&lines, &key), Err(VerifyError::BrokenLink { seq: 150 }));
    }

    #[test]
    fn a_rehashed_entry_just_before_an_omitted_one_is_found() {
        let key = AuditKey::generate().unwrap();
        let mut lines = filtered(&log(&key, 300, 100));
        // Entry 147 is kept, 148 omitted: alter 147 and give it a matching hash.
        let entry = entry_mut(&mut lines, 147);
        entry.record.purpose = Some("rewritten".to_owned());
        entry.hash = entry_hash(147, &entry.prev_hash, &entry.record);
        assert_eq!(check(&lines, &key), Err(VerifyError::BrokenLink { seq: 148 }));
    }

    #[test]
    fn entry_lines_use_ldv_and_nen7513_names() {
        let mut chain = Chain::resume(None, CompactRange::new(), 0);
        let mut with_actor = record(4);
        with_actor.outcome = AuditOutcome::Denied;
        let entry = chain.append(with_actor).entry;
        let json: Value = serde_json::from_str(&to_json_line(&ExportLine::Entry(entry.clone()))).unwrap();
        assert_eq!(json["type"], "dataverwerking");
        assert_eq!(json["seq"], 1);
        assert_eq!(json["trace_id"], to_hex(&entry.hash[..16]));
        assert_eq!(json["span_id"], to_hex(&entry.hash[16..24]));
        assert_eq!(json["name"], "send");
        assert_eq!(json["start_time"], format_time(entry.record.at_ms));
        assert_eq!(json["status_code"], "ERROR");
        assert_eq!(json["resource"]["name"], "ketenhub");
        let attributes = &json["attributes"];
        assert_eq!(attributes["dpl.core.processing_activity_id"], "send");
        assert_eq!(attributes["dpl.core.data_subject_id"], entry.record.case.unwrap().to_string());
        assert_eq!(attributes["nen7513.actor.kind"], "VT");
        assert_eq!(attributes["nen7513.actor.role"], "system");
        assert_eq!(attributes["nen7513.on_behalf_of"], format!("{}/anna.devries", oin(1234)));
        assert_eq!(attributes["nen7513.outcome"], "denied");
        assert_eq!(json["ketenhub.prev_hash"], "0".repeat(64));

        let refused = chain.append(record(3)).entry;
        assert!(refused.record.actor.is_none());
        let json: Value = serde_json::from_str(&to_json_line(&ExportLine::Entry(refused))).unwrap();
        assert!(json["attributes"]["nen7513.actor.oin"].is_null());
        assert!(json["attributes"]["nen7513.actor.certificate"].is_null());
    }

    #[test]
    fn edited_or_malformed_lines_are_refused() {
        let key = AuditKey::generate().unwrap();
        let lines = log(&key, 100, 100);
        let entry: Value = serde_json::from_str(&to_json_line(&lines[0])).unwrap();
        let edit = |path: &[&str], new: Value| {
            let mut value = entry.clone();
            let mut slot = &mut value;
            for key in path {
                slot = &mut slot[*key];
            }
            *slot = new;
            from_json_line(&value.to_string())
        };
        let inconsistent = |result: Result<ExportLine, ParseError>, expected: &str| match result {
            Err(ParseError::Inconsistent { field }) => assert_eq!(field, expected),
            other => panic!("expected an inconsistency in {expected}, got {other:?}"),
        };
        inconsistent(edit(&["start_time"], "2001-01-01T00:00:00.000Z".into()), "start_time");
        inconsistent(edit(&["status_code"], "ERROR".into()), "status_code");
        inconsistent(
            edit(&["attributes", "dpl.core.processing_activity_id"], "connect".into()),
            "attributes.dpl.core.processing_activity_id",
        );
        inconsistent(edit(&["extra"], "x".into()), "extra");
        assert!(edit(&["resource", "version"], "2".into()).is_ok());
        assert!(matches!(edit(&["seq"], "one".into()), Err(ParseError::Fields { .. })));
        assert!(matches!(edit(&["ketenhub.hash"], "abc".into()), Err(ParseError::Invalid { .. })));
        assert!(matches!(edit(&["attributes", "nen7513.actor.oin"], Value::Null), Err(ParseError::Invalid { .. })));
        assert!(matches!(edit(&["type"], "other".into()), Err(ParseError::UnknownType(_))));
        assert!(matches!(from_json_line("{}"), Err(ParseError::MissingType)));
        assert!(matches!(from_json_line("not json"), Err(ParseError::Json(_))));
    }

    #[test]
    fn a_new_key_file_is_private_and_reloads_to_the_same_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys").join("audit.key");
        let created = AuditKey::load_or_create(&path).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        }
        let loaded = AuditKey::load_or_create(&path).unwrap();
        assert_eq!(loaded.public_key(), created.public_key());
        assert_eq!(fs::read_dir(path.parent().unwrap()).unwrap().count(), 1, "no temporary file is left");

        let hex = created.public_key_hex();
        assert_eq!(AuditKey::parse_public_key(&format!("  {hex}\n")).unwrap(), created.public_key());
        assert!(AuditKey::parse_public_key(&hex[..62]).is_err());
        assert!(AuditKey::parse_public_key(&"zz".repeat(32)).is_err());
    }

    #[cfg(unix)]
    #[test]
    fn a_key_file_readable_by_others_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.key");
        AuditKey::load_or_create(&path).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        let error = AuditKey::load_or_create(&path).unwrap_err();
        assert!(matches!(error, KeyError::Permissions { mode: 0o644, .. }), "{error:?}");
        assert!(error.to_string().contains("chmod 600"));
        assert!(error.to_string().contains("audit.key"));
    }

    #[test]
    fn a_malformed_key_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.key");
        write_private(&path, b"not a key").unwrap();
        assert!(matches!(AuditKey::load_or_create(&path), Err(KeyError::Malformed(_))));
    }

    #[test]
    fn times_are_formatted_in_utc() {
        assert_eq!(format_time(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(format_time(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
        assert_eq!(format_time(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(format_time(4_107_542_399_999), "2100-02-28T23:59:59.999Z");
        assert_eq!(format_time(1_798_761_599_001), "2026-12-31T23:59:59.001Z");
        // No panic at the end of the range: held to the last day the calendar represents.
        assert_eq!(format_time(u64::MAX), "9999-12-31T00:00:00.000Z");
    }
}
