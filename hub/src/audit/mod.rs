//! The audit log: one entry for every access, chained and signed.
//!
//! Entries are written by the writer thread (see `durability`) in the same
//! batch, and under the same flush, as the change they describe, so an action
//! is acknowledged only once its entry is durable, and an action whose entry
//! cannot be written is refused. Reads and denials get an entry of their own on
//! the same path before they are answered.
//!
//! [`chain`] holds the tamper evidence (SHA-256 chain, the RFC 9162 Merkle tree
//! over it, Ed25519 signed tree heads, the export format) and [`verify`] the
//! offline verification; this module holds what the hub does with it: the
//! [`Recorder`] in the writer thread, and the privacy officer's scoped queries
//! with their inclusion proofs.

pub mod chain;
pub mod command;
pub mod export;
pub mod verify;

use std::collections::HashSet;
use std::sync::Arc;

use serde::Deserialize;
use wire::audit::{AuditAction, AuditActor, AuditEntry, AuditFilter, AuditRecord};
use wire::{Identity, Oin, ThreadId};

use crate::store::{AuditIndex, Store, StoreError};
use chain::{AuditKey, Chain};

/// When the hub signs a tree head: after this many entries or this much time,
/// whichever comes first; and where its audit key is. Keys under `[audit]` in the hub's config.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CheckpointSettings {
    /// Entries between signed heads at most.
    pub every_entries: u64,
    /// Milliseconds between signed heads at most (while entries arrive).
    pub every_ms: u64,
    /// The audit signing key (PKCS#8 v2 Ed25519 in DER, mode 0600). Best kept outside the data directory,
    /// so that whoever can alter the log cannot also sign it; default `DATA/audit-key.pk8`.
    pub key: Option<std::path::PathBuf>,
}

impl Default for CheckpointSettings {
    fn default() -> Self {
        Self { every_entries: 1000, every_ms: 10_000, key: None }
    }
}

/// Audit entries read from the store per step when scanning.
const SCAN_STEP: usize = 4096;

/// Appends entries to the chain and signs checkpoints; lives in the writer thread.
pub struct Recorder {
    chain: Chain,
    key: Arc<AuditKey>,
    settings: CheckpointSettings,
}

impl std::fmt::Debug for Recorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recorder").field("head", &self.chain.head()).finish_non_exhaustive()
    }
}

impl Recorder {
    /// Continues the chain and tree stored in `store`.
    pub fn resume(store: &dyn Store, key: Arc<AuditKey>, settings: CheckpointSettings) -> Result<Self, StoreError> {
        let last = store.last_audit()?;
        let tree = tree_of(store, last.map_or(0, |(seq, _)| seq))?;
        Ok(Self { chain: Chain::resume(last, tree, crate::clock::now_ms()), key, settings })
    }

    /// The longest time between checkpoints while entries arrive.
    pub fn checkpoint_every_ms(&self) -> u64 {
        self.settings.every_ms
    }

    /// Appends a record to the chain and the store. On failure the chain does not advance.
    pub fn record(&mut self, store: &dyn Store, record: AuditRecord) -> Result<AuditEntry, StoreError> {
        let mut next = self.chain.clone();
        let sealed = next.append(record);
        store.append_audit(&sealed)?;
        self.chain = next;
        Ok(sealed.entry)
    }

    /// Signs and stores a checkpoint if one is due, or if `now` and any entry is unsigned.
    pub fn checkpoint_if_due(&mut self, store: &dyn Store, now_ms: u64, now: bool) -> Result<(), StoreError> {
        let every = if now { (1, 0) } else { (self.settings.every_entries, self.settings.every_ms) };
        if !self.chain.checkpoint_due(now_ms, every.0, every.1) {
            return Ok(());
        }
        let mut next = self.chain.clone();
        if let Some(checkpoint) = next.checkpoint(&self.key, now_ms) {
            store.put_checkpoint(&checkpoint)?;
            self.chain = next;
        }
        Ok(())
    }
}

/// The audit key for the log in `store`, from `[audit] key` or `DATA/audit-key.pk8`: created only while the
/// log is empty, and otherwise required to be the key of the log's latest signed head (after `hub audit
/// rotate-key`, the new key it names). A deleted or replaced key thus stops the hub instead of silently
/// starting a log nobody can join to the old heads.
pub fn load_key(
    store: &dyn Store,
    settings: &CheckpointSettings,
    data: &std::path::Path,
) -> Result<AuditKey, chain::KeyError> {
    let path = settings.key.clone().unwrap_or_else(|| crate::server::audit_key_path(data));
    let store_error = |e: StoreError| chain::KeyError::Store(e.to_string());
    let Some((entries, _)) = store.last_audit().map_err(store_error)? else { return AuditKey::load_or_create(&path) };
    let key = match AuditKey::load(&path) {
        Err(chain::KeyError::Missing { path }) => return Err(chain::KeyError::MissingForLog { path, entries }),
        other => other?,
    };
    if let Some(head) = store.latest_head().map_err(store_error)? {
        let ours = match &head.rotation {
            Some(rotation) => rotation.new_key == key.public_key() && head.signed_by(&rotation.new_key),
            None => head.signed_by(&key.public_key()),
        };
        if !ours {
            return Err(chain::KeyError::NotTheLogs { path, key: key.public_key_hex(), size: head.size });
        }
    }
    Ok(key)
}

/// Signs the store's current tree head with both `old` and `next` (see [`wire::audit::KeyRotation`]) and
/// stores it: the head that hands the log over to the new key.
pub fn rotate(
    store: &dyn Store,
    old: &AuditKey,
    next: &AuditKey,
    now_ms: u64,
) -> Result<wire::audit::SignedTreeHead, StoreError> {
    let size = store.last_audit()?.map_or(0, |(seq, _)| seq);
    let head = old.sign_rotation(next, size, &tree_of(store, size)?.root(), now_ms);
    store.put_checkpoint(&head)?;
    Ok(head)
}

/// The stored tree's compact range at `size` entries.
pub fn tree_of(store: &dyn Store, size: u64) -> Result<wire::merkle::CompactRange, StoreError> {
    wire::merkle::CompactRange::load(size, node_source(store))
}

/// The stored tree's nodes, as the proof functions of `wire::merkle` read them; a missing node is a corrupt store.
pub fn node_source(store: &dyn Store) -> impl FnMut(u8, u64) -> Result<wire::merkle::Hash, StoreError> + '_ {
    move |level, index| {
        store.audit_node(level, index)?.ok_or_else(|| {
            StoreError::Corrupt(format!("audit tree node {level}/{index} is missing: the tree does not match the log"))
        })
    }
}

/// A record of `action` at this moment with every optional field empty.
pub fn blank_record(action: AuditAction, peer: Option<std::net::SocketAddr>) -> AuditRecord {
    AuditRecord {
        at_ms: crate::clock::now_ms(),
        actor: None,
        on_behalf_of: None,
        action,
        case: None,
        object: None,
        purpose: None,
        legal_basis: None,
        outcome: wire::audit::AuditOutcome::Allowed,
        rule: String::new(),
        peer: peer.map(|p| p.to_string()),
    }
}

/// A record of something the hub does on its own (a sweep, a reload), not on a request.
pub fn hub_record(action: AuditAction) -> AuditRecord {
    blank_record(action, None)
}

/// The actor fields of an identity.
pub fn actor(identity: &Identity, certificate: &str) -> AuditActor {
    AuditActor {
        oin: identity.oin.clone(),
        organisation: identity.organisation.clone(),
        kind: identity.kind,
        worker: identity.worker.clone(),
        role: identity.role,
        certificate: certificate.to_owned(),
    }
}

/// Every stored entry, in order, read in steps.
pub fn scan(store: &dyn Store, mut visit: impl FnMut(AuditEntry) -> bool) -> Result<(), StoreError> {
    let mut from = 1;
    loop {
        let batch = store.audit_entries(from, SCAN_STEP)?;
        let Some(last) = batch.last().map(|e| e.seq) else { return Ok(()) };
        for entry in batch {
            if !visit(entry) {
                return Ok(());
            }
        }
        from = last + 1;
    }
}

/// Whether an entry matches a filter (scope aside).
pub fn matches(entry: &AuditEntry, filter: &AuditFilter) -> bool {
    let record = &entry.record;
    filter.case.is_none_or(|case| record.case == Some(case))
        && filter.action.is_none_or(|action| record.action == action)
        && filter.after_seq.is_none_or(|after| entry.seq > after)
        && filter.since_ms.is_none_or(|since| record.at_ms >= since)
        && filter.until_ms.is_none_or(|until| record.at_ms < until)
        && filter.worker.as_ref().is_none_or(|worker| {
            record.actor.as_ref().is_some_and(|a| a.oin == worker.oin && a.worker == worker.worker)
                || record.on_behalf_of.as_ref() == Some(worker)
        })
}

/// What a privacy officer of `oin` may see that matches `filter`: entries about
/// `cases` (those the organisation's people are or were members of, from
/// [`Store::organisation_cases`]), and entries about no case whose actor is of
/// the organisation. Read through the store's audit indexes, so the cost grows
/// with the entries in scope, not with the log. Returns the entries (at most
/// the limit) and whether more matched. Only entries up to `covered` (the size of the head their proofs
/// are against) are returned.
pub fn query(
    store: &dyn Store,
    oin: &Oin,
    cases: &HashSet<ThreadId>,
    filter: &AuditFilter,
    (covered, most): (u64, usize),
) -> Result<(Vec<AuditEntry>, bool), StoreError> {
    let limit = filter.limit.map_or(most, |l| (l as usize).min(most));
    let mut seqs = std::collections::BTreeSet::new();
    let case_and_sides: HashSet<ThreadId>;
    let threads = match filter.case {
        // A case's side threads answer to it: its access report includes those in the officer's scope.
        Some(case) if cases.contains(&case) => {
            let sides = store.side_threads(case)?.into_iter().filter(|side| cases.contains(side));
            case_and_sides = std::iter::once(case).chain(sides).collect();
            &case_and_sides
        }
        Some(_) => {
            case_and_sides = HashSet::new();
            &case_and_sides
        }
        None => cases,
    };
    for thread in threads {
        seqs.extend(store.audit_index(AuditIndex::Case(*thread))?);
    }
    let own_organisation = filter.case.is_none();
    if own_organisation {
        seqs.extend(store.audit_index(AuditIndex::Organisation(oin))?);
    }
    // An index key may outlive a crash that lost its entry, and the seq then
    // holds another entry (see `Store::append_audit`): each entry is checked
    // against the scope it was looked up for.
    let in_scope = |entry: &AuditEntry| match entry.record.case {
        Some(case) => threads.contains(&case),
        None => own_organisation && indexed_organisations(&entry.record).any(|o| o == oin),
    };
    // Entries newer than the head come with the next one; the officer is told there may be more.
    let beyond = seqs.range(covered.saturating_add(1)..).next().is_some();
    // The indexes chose the case (and its side threads); the rest of the filter is matched below.
    let filter = &AuditFilter { case: None, ..filter.clone() };
    let mut found = Vec::new();
    let first = filter.after_seq.map_or(0, |after| after.saturating_add(1));
    for seq in seqs.into_iter().filter(|seq| (first..=covered).contains(seq)) {
        let Some(entry) = store.audit_entries(seq, 1)?.into_iter().next().filter(|e| e.seq == seq && in_scope(e))
        else {
            continue;
        };
        if matches(&entry, filter) {
            if found.len() == limit {
                return Ok((found, true));
            }
            found.push(entry);
        }
    }
    Ok((found, beyond))
}

/// The organisations an entry without a case is indexed under: its actor's and the one it acted for.
pub fn indexed_organisations(record: &AuditRecord) -> impl Iterator<Item = &Oin> {
    record.actor.iter().map(|a| &a.oin).chain(record.on_behalf_of.iter().map(|m| &m.oin))
}
