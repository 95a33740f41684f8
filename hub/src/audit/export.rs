//! Exports of the audit log for inspectors, and their verification.
//!
//! An export is JSON Lines in the format of [`super::chain`]: a pruned log's
//! tree prefix first, then every entry in order, each signed tree head after
//! the entry it ends with. A filtered export (one
//! case, a time range) keeps the chain whole by writing the entries it leaves
//! out as `omitted` lines that carry only their sequence number, link and record
//! digest, so an inspector verifies every link without seeing other cases.

use std::collections::HashMap;
use std::io::{BufRead, Write};

use wire::audit::{AuditAction, AuditFilter, SignedTreeHead};

use super::chain::{self, ExportLine};
use super::verify::{Verified, Verifier, VerifyError};
use crate::store::{Store, StoreError};

/// Why an export or a verification could not be done (not: the chain is broken).
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Reading or writing the file failed.
    #[error("file: {0}")]
    Io(#[from] std::io::Error),
    /// A line of the file is not an export line.
    #[error("line {line}: {reason}")]
    Parse {
        /// The line number, from 1.
        line: usize,
        /// What is wrong with it.
        reason: String,
    },
}

/// What an export wrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Exported {
    /// Entries written in full.
    pub entries: u64,
    /// Entries written as `omitted`.
    pub omitted: u64,
    /// Signed tree heads written.
    pub checkpoints: u64,
}

fn heads_by_size(store: &dyn Store) -> Result<HashMap<u64, Vec<SignedTreeHead>>, StoreError> {
    let mut by_size: HashMap<u64, Vec<SignedTreeHead>> = HashMap::new();
    for head in store.checkpoints()? {
        by_size.entry(head.size).or_default().push(head);
    }
    Ok(by_size)
}

/// Every line of the store's log, in export order, entries not matching `filter` as omitted lines. A pruned
/// log opens with its tree prefix; retention entries are always written in full, since a verifier needs the
/// one that records the prune (they name no case and no person).
fn lines(
    store: &dyn Store,
    filter: &AuditFilter,
    mut visit: impl FnMut(ExportLine) -> Result<(), ExportError>,
) -> Result<(), ExportError> {
    let mut heads = heads_by_size(store)?;
    let first = store.audit_entries(1, 1)?.first().map(|e| e.seq);
    if let Some(first) = first.filter(|first| *first > 1) {
        let prefix = super::tree_of(store, first - 1)?;
        visit(ExportLine::Prefix { size: prefix.size(), peaks: prefix.peaks() })?;
        for head in heads.remove(&prefix.size()).unwrap_or_default() {
            visit(ExportLine::Head(head))?;
        }
    }
    let mut failure = None;
    super::scan(store, |entry| {
        let seq = entry.seq;
        let line = if super::matches(&entry, filter) || entry.record.action == AuditAction::Retention {
            ExportLine::Entry(entry)
        } else {
            ExportLine::Omitted { seq, prev_hash: entry.prev_hash, digest: chain::record_digest(&entry.record) }
        };
        let mut result = visit(line);
        for head in heads.remove(&seq).unwrap_or_default() {
            result = result.and_then(|()| visit(ExportLine::Head(head)));
        }
        failure = result.err();
        failure.is_none()
    })?;
    failure.map_or(Ok(()), Err)
}

/// Writes the log as JSON Lines to `out`.
pub fn export(store: &dyn Store, filter: &AuditFilter, out: &mut impl Write) -> Result<Exported, ExportError> {
    let mut exported = Exported::default();
    lines(store, filter, |line| {
        match &line {
            ExportLine::Entry(_) => exported.entries += 1,
            ExportLine::Omitted { .. } => exported.omitted += 1,
            ExportLine::Head(_) => exported.checkpoints += 1,
            ExportLine::Prefix { .. } => {}
        }
        writeln!(out, "{}", chain::to_json_line(&line))?;
        Ok(())
    })?;
    out.flush()?;
    Ok(exported)
}

/// Verifies the log held in a store against `public_key` and `witnessed` heads, reading entries without
/// decoding them (see [`Store::audit_links`]).
pub fn verify_store(
    store: &dyn Store,
    public_key: &[u8],
    witnessed: Vec<SignedTreeHead>,
) -> Result<Result<Verified, VerifyError>, ExportError> {
    let mut verifier = match Verifier::new(public_key, store.checkpoints()?, witnessed, None) {
        Ok(verifier) => verifier,
        Err(e) => return Ok(Err(e)),
    };
    let first = store.audit_entries(1, 1)?.first().map(|e| e.seq);
    if let Some(first) = first.filter(|first| *first > 1) {
        verifier.prefix(super::tree_of(store, first - 1)?);
        if let Err(e) = verifier.check_prefix() {
            return Ok(Err(e));
        }
    }
    let mut failure = None;
    store.audit_links(&mut |link, record| {
        let checked = verifier.entry(&link, record.as_ref());
        verifier.count(true);
        failure = checked.err();
        failure.is_none()
    })?;
    Ok(match failure {
        Some(e) => Err(e),
        None => verifier.finish(),
    })
}

/// Reads an export file's lines, or the `tree_head` lines of a witness file.
pub fn read_lines(file: impl BufRead) -> Result<Vec<ExportLine>, ExportError> {
    let mut all = Vec::new();
    for (number, line) in file.lines().enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let parsed =
            chain::from_json_line(&line).map_err(|e| ExportError::Parse { line: number + 1, reason: e.to_string() })?;
        all.push(parsed);
    }
    Ok(all)
}

/// The heads of a witness file (`tree_head` lines, as the SDK keeps in `audit-head.json` or an export holds).
pub fn read_witness(file: impl BufRead) -> Result<Vec<SignedTreeHead>, ExportError> {
    Ok(read_lines(file)?
        .into_iter()
        .filter_map(|line| match line {
            ExportLine::Head(head) => Some(head),
            _ => None,
        })
        .collect())
}

/// Verifies an export file against `public_key` and `witnessed` heads.
pub fn verify_file(
    file: impl BufRead,
    public_key: &[u8],
    witnessed: Vec<SignedTreeHead>,
) -> Result<Result<Verified, VerifyError>, ExportError> {
    Ok(super::verify::verify(read_lines(file)?, public_key, witnessed))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::chain::AuditKey;
    use crate::audit::{hub_record, CheckpointSettings, Recorder};
    use crate::store::KvStore;
    use std::sync::Arc;

    fn record(at_ms: u64) -> wire::audit::AuditRecord {
        wire::audit::AuditRecord { at_ms, ..hub_record(AuditAction::Connect) }
    }

    /// A store of 300 entries (heads every 50) whose first 120 were pruned, with or without the prune's record.
    fn pruned_store(dir: &std::path::Path, recorded: bool) -> (KvStore, [u8; 32]) {
        let store = KvStore::open(dir).unwrap();
        let key = AuditKey::generate().unwrap();
        let public = key.public_key();
        let settings = CheckpointSettings { every_entries: 50, every_ms: u64::MAX, key: None };
        let mut recorder = Recorder::resume(&store, Arc::new(key), settings).unwrap();
        for i in 1..=300 {
            recorder.record(&store, record(i)).unwrap();
            recorder.checkpoint_if_due(&store, i, false).unwrap();
        }
        let (pruned, below) = store.prune_audit(121).unwrap();
        assert_eq!((pruned, below), (120, 121));
        if recorded {
            let object = format!("{}{below} pruned under audit_years 5", super::super::verify::PRUNED_PREFIX);
            let prune = wire::audit::AuditRecord { object: Some(object), ..hub_record(AuditAction::Retention) };
            recorder.record(&store, prune).unwrap();
        }
        recorder.checkpoint_if_due(&store, 1_000, true).unwrap();
        (store, public)
    }

    fn export_lines(store: &KvStore) -> Vec<ExportLine> {
        let mut out = Vec::new();
        export(store, &AuditFilter::default(), &mut out).unwrap();
        read_lines(&out[..]).unwrap()
    }

    #[test]
    fn a_pruned_log_verifies_through_its_prefix_and_a_deleted_start_does_not() {
        let dir = tempfile::tempdir().unwrap();
        let (store, public) = pruned_store(dir.path(), true);
        let lines = export_lines(&store);
        assert!(matches!(lines[0], ExportLine::Prefix { size: 120, .. }), "{:?}", lines[0]);
        let verified = super::super::verify::verify(lines, &public, Vec::new()).unwrap();
        assert_eq!((verified.pruned, verified.entries, verified.last_seq), (120, 181, 301));
        assert_eq!(verify_store(&store, &public, Vec::new()).unwrap().unwrap().pruned, 120);

        let dir = tempfile::tempdir().unwrap();
        let (store, public) = pruned_store(dir.path(), false);
        let result = super::super::verify::verify(export_lines(&store), &public, Vec::new());
        assert_eq!(result, Err(VerifyError::TruncatedStart { seq: 121 }));
        let result = verify_store(&store, &public, Vec::new()).unwrap();
        assert_eq!(result, Err(VerifyError::TruncatedStart { seq: 121 }));
    }
}
