//! Witnessing the hub's audit log: the SDK of a privacy officer (or of a
//! `system` identity that opts in) keeps the last signed tree head it verified
//! and accepts a new one only with a consistency proof from it.
//!
//! A hub operator who deletes or rewrites audit entries must then either keep
//! signing heads over the altered log, which no consistency proof joins to the
//! head a witness holds, or stop signing, which the witness sees as a head that
//! no longer grows. The witness checks, in this order (see `docs/audit.md`):
//!
//! 1. the head's Ed25519 signature under the configured audit public key (or the
//!    key a verified rotation head handed over to);
//! 2. that its size is not below the witnessed head's ([`AuditError::Rollback`]);
//! 3. the RFC 9162 consistency proof from the witnessed head
//!    ([`AuditError::Inconsistent`]);
//! 4. for each queried entry: its hash over its record, and its inclusion proof
//!    in the new head ([`AuditError::Inclusion`]).
//!
//! Only then is the new head stored, as one JSON line in `STATE_DIR/audit-head.json`
//! (the `tree_head` line of an audit export, so `hub audit verify --witness`
//! reads the file as it is). Heads are public, signed data, so the file is
//! written owner-only but not encrypted.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use wire::audit::{AuditEntry, KeyRotation, Proof, SignedTreeHead};
use wire::merkle;

/// The file in the state directory that holds the last verified head.
pub const HEAD_FILE: &str = "audit-head.json";
/// The file in the state directory that holds the audit key a rotation handed over to.
const KEY_FILE: &str = "audit-key.hex";

/// Why the SDK does not accept what the hub sent about its audit log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuditError {
    /// Entries came without a signed head to prove them against.
    #[error("the hub sent audit entries without a signed tree head")]
    Unsigned,
    /// A head's signature is not valid under the audit key.
    #[error("the audit tree head of size {size} is not signed by the audit key (forged, or another hub)")]
    Forged {
        /// The head's size.
        size: u64,
    },
    /// The hub's head is smaller than one it signed before: entries were deleted.
    #[error("the hub's audit log shrank from {witnessed} entries (witnessed) to {offered}: entries were deleted")]
    Rollback {
        /// The size of the head this SDK holds.
        witnessed: u64,
        /// The size of the head the hub sent.
        offered: u64,
    },
    /// No valid consistency proof joins the witnessed head to the new one: the log was rewritten.
    #[error("the audit log of {to} entries is not an extension of the witnessed one of {from}: it was rewritten")]
    Inconsistent {
        /// The witnessed head's size.
        from: u64,
        /// The new head's size.
        to: u64,
    },
    /// An entry's hash does not match its content, or its inclusion proof fails.
    #[error("audit entry {seq} is not in the signed log (changed, or its inclusion proof fails)")]
    Inclusion {
        /// The entry.
        seq: u64,
    },
    /// The witnessed head could not be read or written.
    #[error("witnessed audit head: {0}")]
    State(String),
}

/// A `tree_head` line, as audit exports and the witness file write it. Hashes and signatures are lowercase
/// hex; the rotation fields are present only on a key rotation's head.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeadJson {
    #[serde(rename = "type")]
    kind: String,
    size: u64,
    root: String,
    at_ms: u64,
    time: String,
    signature: String,
    #[serde(rename = "rotation.old_key", default, skip_serializing_if = "Option::is_none")]
    old_key: Option<String>,
    #[serde(rename = "rotation.new_key", default, skip_serializing_if = "Option::is_none")]
    new_key: Option<String>,
    #[serde(rename = "rotation.new_signature", default, skip_serializing_if = "Option::is_none")]
    new_signature: Option<String>,
}

impl HeadJson {
    /// The line of a head.
    pub fn from_head(head: &SignedTreeHead) -> Self {
        let hex = wire::hex::encode;
        Self {
            kind: "tree_head".to_owned(),
            size: head.size,
            root: hex(&head.root),
            at_ms: head.at_ms,
            time: wire::calendar::format_ms(head.at_ms),
            signature: hex(&head.signature),
            old_key: head.rotation.as_ref().map(|r| hex(&r.old_key)),
            new_key: head.rotation.as_ref().map(|r| hex(&r.new_key)),
            new_signature: head.rotation.as_ref().map(|r| hex(&r.new_signature)),
        }
    }

    /// The head of a line; on failure the field and what is wrong with it. (Whether `time` agrees with
    /// `at_ms` is for the caller: the export reader compares the whole line with the one it would write.)
    pub fn into_head(self) -> Result<SignedTreeHead, (&'static str, String)> {
        let hash = |field: &'static str, text: &str| {
            wire::hex::decode32(text).ok_or_else(|| (field, format!("expected 64 hex digits, got {text:?}")))
        };
        let bytes = |field: &'static str, text: &str| {
            wire::hex::decode(text).ok_or_else(|| (field, format!("expected hex digits, got {text:?}")))
        };
        let rotation = match (self.old_key, self.new_key, self.new_signature) {
            (None, None, None) => None,
            (Some(old), Some(new), Some(signature)) => Some(KeyRotation {
                old_key: hash("rotation.old_key", &old)?,
                new_key: hash("rotation.new_key", &new)?,
                new_signature: bytes("rotation.new_signature", &signature)?,
            }),
            _ => return Err(("rotation", "the rotation fields must be all present or all absent".to_owned())),
        };
        Ok(SignedTreeHead {
            size: self.size,
            root: hash("root", &self.root)?,
            at_ms: self.at_ms,
            signature: bytes("signature", &self.signature)?,
            rotation,
        })
    }
}

/// The witness state: the audit key and the last verified head, in memory and (with a state directory) on disk.
#[derive(Debug)]
pub(crate) struct Witness {
    dir: Option<PathBuf>,
    state: Mutex<State>,
    /// Held from sending `known_size` to accepting the reply's head: the hub answers concurrent requests in
    /// any order, and an older head arriving after a newer one would look like a rollback.
    pub(crate) turn: tokio::sync::Mutex<()>,
}

#[derive(Debug, Clone)]
struct State {
    key: [u8; 32],
    head: Option<SignedTreeHead>,
}

fn state_error(what: &str, path: &Path, e: impl std::fmt::Display) -> AuditError {
    AuditError::State(format!("{what} {}: {e}", path.display()))
}

impl Witness {
    /// The witness for `key`, resuming the head (and a rotated key) kept in `dir`.
    pub(crate) fn open(key: [u8; 32], dir: Option<&Path>) -> Result<Self, AuditError> {
        let mut state = State { key, head: None };
        if let Some(dir) = dir {
            let path = dir.join(HEAD_FILE);
            match std::fs::read_to_string(&path) {
                Ok(text) => {
                    let json: HeadJson =
                        serde_json::from_str(text.trim()).map_err(|e| state_error("cannot read", &path, e))?;
                    let head = json
                        .into_head()
                        .map_err(|(field, e)| state_error("cannot read", &path, format!("{field}: {e}")))?;
                    state.head = Some(head);
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(state_error("cannot read", &path, e)),
            }
            let path = dir.join(KEY_FILE);
            match std::fs::read_to_string(&path) {
                Ok(text) => {
                    state.key = wire::hex::decode32(text.trim())
                        .ok_or_else(|| state_error("cannot read", &path, "not 64 hex digits"))?;
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(state_error("cannot read", &path, e)),
            }
        }
        Ok(Self { dir: dir.map(Path::to_owned), state: Mutex::new(state), turn: tokio::sync::Mutex::new(()) })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // Every update is one assignment after all checks, so a poisoned lock holds a consistent state.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The size of the last verified head (0 for none): what the SDK asks the hub to prove from.
    pub(crate) fn known_size(&self) -> u64 {
        self.lock().head.as_ref().map_or(0, |h| h.size)
    }

    /// The last verified head.
    pub(crate) fn head(&self) -> Option<SignedTreeHead> {
        self.lock().head.clone()
    }

    /// Checks `head` and its consistency proof from the witnessed head, then the entries' inclusion proofs
    /// in it, and only then makes it the witnessed head.
    pub(crate) fn accept(
        &self,
        head: &SignedTreeHead,
        consistency: &Proof,
        entries: &[AuditEntry],
        proofs: &[Proof],
    ) -> Result<(), AuditError> {
        let mut state = self.lock();
        if !head.signed_by(&state.key) {
            return Err(AuditError::Forged { size: head.size });
        }
        if let Some(old) = &state.head {
            if head.size < old.size {
                return Err(AuditError::Rollback { witnessed: old.size, offered: head.size });
            }
            if !merkle::verify_consistency(old.size, head.size, &old.root, &head.root, &consistency.hashes()) {
                return Err(AuditError::Inconsistent { from: old.size, to: head.size });
            }
        }
        check_inclusion(head, entries, proofs)?;
        let next_key = head.next_key(state.key);
        if let Some(dir) = &self.dir {
            let line =
                serde_json::to_string(&HeadJson::from_head(head)).map_err(|e| AuditError::State(e.to_string()))?;
            let path = dir.join(HEAD_FILE);
            certs::private::create_dir_all(dir).map_err(|e| state_error("cannot create", dir, e))?;
            write_replacing(&path, format!("{line}\n").as_bytes())?;
            if next_key != state.key {
                write_replacing(&dir.join(KEY_FILE), wire::hex::encode(&next_key).as_bytes())?;
            }
        }
        *state = State { key: next_key, head: Some(head.clone()) };
        Ok(())
    }
}

/// Writes a file owner-only through a temporary file and a rename, so a crash leaves the old head or the new.
fn write_replacing(path: &Path, bytes: &[u8]) -> Result<(), AuditError> {
    let temp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&temp);
    let written = certs::private::create_file(&temp).and_then(|mut file| {
        use std::io::Write as _;
        file.write_all(bytes)?;
        // Durable before the rename: a witnessed head lost in a crash would let a rollback pass.
        file.sync_all()
    });
    written.and_then(|()| std::fs::rename(&temp, path)).map_err(|e| state_error("cannot write", path, e))
}

/// Each entry's hash over its content, and its inclusion proof in `head`.
fn check_inclusion(head: &SignedTreeHead, entries: &[AuditEntry], proofs: &[Proof]) -> Result<(), AuditError> {
    if let Some(extra) = entries.get(proofs.len()) {
        return Err(AuditError::Inclusion { seq: extra.seq });
    }
    for (entry, proof) in entries.iter().zip(proofs) {
        let hash = wire::audit::entry_hash(entry.seq, &entry.prev_hash, &entry.record);
        let included = hash == entry.hash
            && entry.seq >= 1
            && merkle::verify_inclusion(
                entry.seq - 1,
                head.size,
                &merkle::leaf_hash(&hash),
                &proof.hashes(),
                &head.root,
            );
        if !included {
            return Err(AuditError::Inclusion { seq: entry.seq });
        }
    }
    Ok(())
}
