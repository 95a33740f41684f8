//! Offline verification of an audit log, from an export file or a store,
//! against the audit public key and, optionally, heads witnessed elsewhere.
//!
//! The rules, in the order they are checked (`docs/audit.md` states them for
//! implementers in other languages):
//!
//! 1. The first entry is seq 1, or the export opens with a `tree_prefix` of
//!    `first - 1` entries and the log holds a signed retention entry saying
//!    "audit entries below seq `first` pruned" ([`VerifyError::TruncatedStart`]).
//! 2. Entries are gap-free and in order ([`VerifyError::Deleted`],
//!    [`VerifyError::Reordered`], [`VerifyError::Inserted`]); each hash matches
//!    its content ([`VerifyError::Changed`]) and names its predecessor
//!    ([`VerifyError::BrokenLink`]).
//! 3. Every head, from the export or witnessed, is signed by the audit key (or
//!    a key a rotation head signed by it hands over to: [`VerifyError::ForgedHead`]),
//!    and its root is the tree's root at its size ([`VerifyError::RootMismatch`],
//!    [`VerifyError::WitnessMismatch`]). A head larger than the export means
//!    entries after the export's end are gone ([`VerifyError::TruncatedEnd`]).
//! 4. A signed head covers the export's last entry ([`VerifyError::Unsigned`]).
//!
//! Store verification reads the entries' raw bytes and hashes records without
//! decoding them, with reading and record hashing on a second thread, which is
//! what makes it several times faster than decoding each entry.

use std::collections::{BTreeMap, HashSet};

use wire::audit::{AuditAction, AuditRecord, SignedTreeHead};
use wire::merkle::{self, CompactRange, Hash};

use super::chain::ExportLine;

/// What a verification checked.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Verified {
    /// Full entries.
    pub entries: u64,
    /// Omitted entries.
    pub omitted: u64,
    /// Signed heads of the log checked against its tree.
    pub checkpoints: u64,
    /// Witnessed heads checked against its tree.
    pub witnessed: u64,
    /// The last entry's sequence number, full or omitted; 0 for an export without entries.
    pub last_seq: u64,
    /// The entries retention pruned before the first one (0 for a complete log).
    pub pruned: u64,
}

/// Why a log failed verification; each kind names what was done to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// An entry is missing and appears nowhere else.
    #[error("entry {seq} is missing: deleted")]
    Deleted {
        /// The missing entry.
        seq: u64,
    },
    /// An entry is not where it belongs but appears elsewhere.
    #[error("entry {seq} is out of place: entries were reordered")]
    Reordered {
        /// The entry that should have come.
        seq: u64,
    },
    /// A line repeats or goes back to an earlier sequence number.
    #[error("expected entry {seq} but found a repeated or earlier one: an entry was inserted")]
    Inserted {
        /// The sequence number that should have come.
        seq: u64,
    },
    /// An entry's content no longer matches its hash.
    #[error("entry {seq} was changed: its content does not match its hash")]
    Changed {
        /// The changed entry.
        seq: u64,
    },
    /// An entry does not name the hash of the entry before it.
    #[error("entry {seq} does not link to the entry before it (changed, replaced or inserted)")]
    BrokenLink {
        /// The entry whose link is broken.
        seq: u64,
    },
    /// A head's signature is not valid under the audit key.
    #[error("the tree head over {seq} entries has an invalid signature: forged, or signed by another key")]
    ForgedHead {
        /// The head's size.
        seq: u64,
    },
    /// A validly signed head of the log has another root than the entries give.
    #[error("the signed tree head over {seq} entries has another root than the log: entries were rewritten")]
    RootMismatch {
        /// The head's size.
        seq: u64,
    },
    /// A witnessed head has another root than the entries give.
    #[error("the witnessed tree head over {seq} entries has another root than the log: the log was rewritten since")]
    WitnessMismatch {
        /// The head's size.
        seq: u64,
    },
    /// The log starts after seq 1 without a signed record of pruning up to there.
    #[error("the log starts at entry {seq} but no signed retention entry pruned the entries before it: truncated at the start")]
    TruncatedStart {
        /// The first entry present.
        seq: u64,
    },
    /// A signed head covers entries after the last one present.
    #[error("a signed tree head covers {head} entries but the log ends at entry {seq}: truncated at the end")]
    TruncatedEnd {
        /// The last entry present.
        seq: u64,
        /// The size of the head.
        head: u64,
    },
    /// No signed head covers the last entry.
    #[error(
        "no signed tree head covers entry {seq}, the last one: the end of the log is unsigned (truncated, or unsealed)"
    )]
    Unsigned {
        /// The last entry present.
        seq: u64,
    },
}

impl VerifyError {
    /// The sequence number at which the log fails.
    pub fn seq(&self) -> u64 {
        match *self {
            Self::Deleted { seq }
            | Self::Reordered { seq }
            | Self::Inserted { seq }
            | Self::Changed { seq }
            | Self::BrokenLink { seq }
            | Self::ForgedHead { seq }
            | Self::RootMismatch { seq }
            | Self::WitnessMismatch { seq }
            | Self::TruncatedStart { seq }
            | Self::TruncatedEnd { seq, .. }
            | Self::Unsigned { seq } => seq,
        }
    }

    /// A one-word name for the kind of tampering, printed by `hub audit verify`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Deleted { .. } => "deleted",
            Self::Reordered { .. } => "reordered",
            Self::Inserted { .. } => "inserted",
            Self::Changed { .. } | Self::BrokenLink { .. } => "changed",
            Self::ForgedHead { .. } => "forged-head",
            Self::RootMismatch { .. } => "rewritten",
            Self::WitnessMismatch { .. } => "diverged-from-witness",
            Self::TruncatedStart { .. } => "truncated-start",
            Self::TruncatedEnd { .. } => "truncated-end",
            Self::Unsigned { .. } => "unsigned-end",
        }
    }

    /// The exit code of `hub audit verify` for this kind (1 stays "some failure" for scripts that test for it).
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Changed { .. } | Self::BrokenLink { .. } => 10,
            Self::Deleted { .. } => 11,
            Self::Inserted { .. } => 12,
            Self::Reordered { .. } => 13,
            Self::ForgedHead { .. } => 14,
            Self::RootMismatch { .. } | Self::WitnessMismatch { .. } => 15,
            Self::TruncatedStart { .. } => 16,
            Self::TruncatedEnd { .. } | Self::Unsigned { .. } => 17,
        }
    }
}

/// One entry as the verifier needs it: its place, its links, and the hashes computed from it. Computing
/// them in [`Link::new`] lets a store's readers do the hashing on their own threads.
#[derive(Debug, Clone, Copy)]
pub struct Link {
    /// The entry's seq.
    pub seq: u64,
    /// The hash it names as its predecessor's.
    pub prev_hash: Hash,
    /// The hash it carries, if a full entry (an omitted line carries none).
    pub hash: Option<Hash>,
    /// Its hash as computed from seq, predecessor and record digest.
    pub computed: Hash,
    /// Its leaf hash in the Merkle tree (over `computed`).
    pub leaf: Hash,
}

impl Link {
    /// The link of an entry with `seq`, `prev_hash`, the hash it carries, and its record's digest.
    pub fn new(seq: u64, prev_hash: Hash, hash: Option<Hash>, digest: &Hash) -> Self {
        let computed = wire::audit::link_hash(seq, &prev_hash, digest);
        Self { seq, prev_hash, hash, computed, leaf: merkle::leaf_hash(&computed) }
    }
}

/// The retention entry that records a prune: `audit entries below seq N pruned under audit_years Y`.
pub const PRUNED_PREFIX: &str = "audit entries below seq ";

/// The `N` of a retention record that records a prune, if `record` is one.
pub fn pruned_below(record: &AuditRecord) -> Option<u64> {
    if record.action != AuditAction::Retention {
        return None;
    }
    let text = record.object.as_deref()?.strip_prefix(PRUNED_PREFIX)?;
    text.split(' ').next()?.parse().ok()
}

/// Whose head a verifier checks: the log's own, or one a witness kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    Log,
    Witness,
}

/// Checks a log entry by entry in order; see the module documentation for the rules.
pub struct Verifier {
    heads: BTreeMap<u64, Vec<(SignedTreeHead, Source)>>,
    tree: CompactRange,
    first: Option<u64>,
    last: Option<(u64, Hash)>,
    covered_last: bool,
    pruned_below: HashSet<u64>,
    present: Option<HashSet<u64>>,
    verified: Verified,
}

/// Every key the given one vouches for through rotation heads (each signed by both its keys), and itself.
fn accepted_keys(key: [u8; 32], heads: &[&SignedTreeHead]) -> Vec<[u8; 32]> {
    let mut keys = vec![key];
    loop {
        let before = keys.len();
        for head in heads {
            if let Some(rotation) = &head.rotation {
                let linked = keys.contains(&rotation.old_key) || keys.contains(&rotation.new_key);
                if linked && head.signed_by(&rotation.old_key) {
                    for k in [rotation.old_key, rotation.new_key] {
                        if !keys.contains(&k) {
                            keys.push(k);
                        }
                    }
                }
            }
        }
        if keys.len() == before {
            return keys;
        }
    }
}

impl Verifier {
    /// A verifier for a log whose heads are `log_heads`, and with `witnessed` heads kept elsewhere, all
    /// checked against `public_key` (32 raw bytes). `present`, when given, is every seq the input holds, so
    /// that a missing entry found later is told apart as reordered.
    pub fn new(
        public_key: &[u8],
        log_heads: Vec<SignedTreeHead>,
        witnessed: Vec<SignedTreeHead>,
        present: Option<HashSet<u64>>,
    ) -> Result<Self, VerifyError> {
        let key: [u8; 32] = public_key.try_into().map_err(|_| VerifyError::ForgedHead { seq: 0 })?;
        let all: Vec<&SignedTreeHead> = log_heads.iter().chain(&witnessed).collect();
        let keys = accepted_keys(key, &all);
        let mut heads: BTreeMap<u64, Vec<(SignedTreeHead, Source)>> = BTreeMap::new();
        let tagged =
            log_heads.into_iter().map(|h| (h, Source::Log)).chain(witnessed.into_iter().map(|h| (h, Source::Witness)));
        for (head, source) in tagged {
            if !keys.iter().any(|k| head.signed_by(k)) {
                return Err(VerifyError::ForgedHead { seq: head.size });
            }
            heads.entry(head.size).or_default().push((head, source));
        }
        Ok(Self {
            heads,
            tree: CompactRange::new(),
            first: None,
            last: None,
            covered_last: false,
            pruned_below: HashSet::new(),
            present,
            verified: Verified::default(),
        })
    }

    /// The tree of the entries retention pruned, before the first entry.
    pub fn prefix(&mut self, prefix: CompactRange) {
        if self.first.is_none() {
            self.verified.pruned = prefix.size();
            self.tree = prefix;
        }
    }

    /// Checks the heads over exactly the pruned entries, once the prefix is known.
    pub fn check_prefix(&mut self) -> Result<(), VerifyError> {
        match self.verified.pruned {
            0 => Ok(()),
            size => self.check_heads_at(size),
        }
    }

    /// The next entry (`record` when it is a full entry and the caller decoded it, for retention records).
    pub fn entry(&mut self, link: &Link, record: Option<&AuditRecord>) -> Result<(), VerifyError> {
        let seq = link.seq;
        let expected = match self.last {
            Some((last, _)) => last.checked_add(1).ok_or(VerifyError::Inserted { seq })?,
            None => {
                // The first entry must follow the prefix (or be seq 1); pruning is checked at the end.
                let expected = self.tree.size() + 1;
                if seq != expected {
                    return Err(VerifyError::TruncatedStart { seq });
                }
                self.first = Some(seq);
                expected
            }
        };
        if seq > expected {
            let elsewhere = self.present.as_ref().is_some_and(|present| present.contains(&expected));
            return Err(if elsewhere {
                VerifyError::Reordered { seq: expected }
            } else {
                VerifyError::Deleted { seq: expected }
            });
        }
        if seq < expected {
            return Err(VerifyError::Inserted { seq: expected });
        }
        let computed = link.computed;
        if link.hash.is_some_and(|hash| hash != computed) {
            return Err(VerifyError::Changed { seq });
        }
        let linked = match self.last {
            Some((_, before)) => link.prev_hash == before,
            // After a prefix the predecessor is pruned; its place in the tree is what the heads check.
            None => seq != 1 || link.prev_hash == [0; 32],
        };
        if !linked {
            return Err(VerifyError::BrokenLink { seq });
        }
        self.tree.append_with(link.leaf, |_| {});
        self.last = Some((seq, computed));
        if let Some(below) = record.and_then(pruned_below) {
            self.pruned_below.insert(below);
        }
        self.check_heads_at(seq)
    }

    /// Counts a full or an omitted entry.
    pub fn count(&mut self, full: bool) {
        if full {
            self.verified.entries += 1;
        } else {
            self.verified.omitted += 1;
        }
    }

    fn check_heads_at(&mut self, size: u64) -> Result<(), VerifyError> {
        let Some(heads) = self.heads.remove(&size) else {
            self.covered_last = false;
            return Ok(());
        };
        let root = self.tree.root();
        self.covered_last = false;
        for (head, source) in heads {
            if head.root != root {
                return Err(match source {
                    Source::Log => VerifyError::RootMismatch { seq: size },
                    Source::Witness => VerifyError::WitnessMismatch { seq: size },
                });
            }
            match source {
                Source::Log => {
                    self.verified.checkpoints += 1;
                    self.covered_last = true;
                }
                Source::Witness => {
                    self.verified.witnessed += 1;
                    self.covered_last = true;
                }
            }
        }
        Ok(())
    }

    /// The end of the log: checks the rules that need all of it.
    pub fn finish(mut self) -> Result<Verified, VerifyError> {
        let prefix = self.verified.pruned;
        if let Some(first) = self.first.filter(|first| *first > 1) {
            if !self.pruned_below.contains(&first) {
                return Err(VerifyError::TruncatedStart { seq: first });
            }
        }
        let last = self.last.map_or(prefix, |(seq, _)| seq);
        // Heads below the prefix cover pruned entries only; heads above the end cover entries that are gone.
        if let Some((&size, _)) = self.heads.range(last + 1..).next() {
            return Err(VerifyError::TruncatedEnd { seq: last, head: size });
        }
        if last > 0 && !self.covered_last {
            return Err(VerifyError::Unsigned { seq: last });
        }
        self.verified.last_seq = self.last.map_or(0, |(seq, _)| seq);
        Ok(self.verified)
    }
}

/// Checks export lines (in file order) and witnessed heads against the audit public key.
pub fn verify(
    lines: Vec<ExportLine>,
    public_key: &[u8],
    witnessed: Vec<SignedTreeHead>,
) -> Result<Verified, VerifyError> {
    let mut heads = Vec::new();
    let mut present = HashSet::new();
    for line in &lines {
        match line {
            ExportLine::Head(head) => heads.push(head.clone()),
            ExportLine::Entry(entry) => {
                present.insert(entry.seq);
            }
            ExportLine::Omitted { seq, .. } => {
                present.insert(*seq);
            }
            ExportLine::Prefix { .. } => {}
        }
    }
    let mut verifier = Verifier::new(public_key, heads, witnessed, Some(present))?;
    for line in lines {
        match line {
            ExportLine::Entry(entry) => {
                let digest = wire::audit::record_digest(&entry.record);
                let link = Link::new(entry.seq, entry.prev_hash, Some(entry.hash), &digest);
                verifier.entry(&link, Some(&entry.record))?;
                verifier.count(true);
            }
            ExportLine::Omitted { seq, prev_hash, digest } => {
                verifier.entry(&Link::new(seq, prev_hash, None, &digest), None)?;
                verifier.count(false);
            }
            ExportLine::Prefix { size, peaks } => {
                // The parser checked the number of peaks; a mismatch here is an export edited after parsing.
                if let Some(prefix) = CompactRange::from_peaks(size, &peaks) {
                    verifier.prefix(prefix);
                    verifier.check_prefix()?;
                }
            }
            ExportLine::Head(_) => {}
        }
    }
    verifier.finish()
}
