//! Exports of the audit log for inspectors, and their verification.
//!
//! An export is JSON Lines in the format of [`super::chain`]: every entry in
//! order, each checkpoint after the entry it covers. A filtered export (one
//! case, a time range) keeps the chain whole by writing the entries it leaves
//! out as `omitted` lines that carry only their sequence number, link and record
//! digest, so an inspector verifies every link without seeing other cases.

use std::collections::HashMap;
use std::io::{BufRead, Write};

use wire::audit::{AuditCheckpoint, AuditFilter};

use super::chain::{self, ExportLine, Verified, VerifyError};
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
    /// Checkpoints written.
    pub checkpoints: u64,
}

fn checkpoints_by_seq(store: &dyn Store) -> Result<HashMap<u64, Vec<AuditCheckpoint>>, StoreError> {
    let mut by_seq: HashMap<u64, Vec<AuditCheckpoint>> = HashMap::new();
    for checkpoint in store.checkpoints()? {
        by_seq.entry(checkpoint.seq).or_default().push(checkpoint);
    }
    Ok(by_seq)
}

/// Every line of the store's log, in export order, entries not matching
/// `filter` as omitted lines.
fn lines(
    store: &dyn Store,
    filter: &AuditFilter,
    mut visit: impl FnMut(ExportLine) -> Result<(), ExportError>,
) -> Result<(), ExportError> {
    let mut checkpoints = checkpoints_by_seq(store)?;
    let mut failure = None;
    super::scan(store, |entry| {
        let seq = entry.seq;
        let line = if super::matches(&entry, filter) {
            ExportLine::Entry(entry)
        } else {
            ExportLine::Omitted { seq, prev_hash: entry.prev_hash, digest: chain::record_digest(&entry.record) }
        };
        let mut result = visit(line);
        for checkpoint in checkpoints.remove(&seq).unwrap_or_default() {
            result = result.and_then(|()| visit(ExportLine::Checkpoint(checkpoint)));
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
            ExportLine::Checkpoint(_) => exported.checkpoints += 1,
        }
        writeln!(out, "{}", chain::to_json_line(&line))?;
        Ok(())
    })?;
    out.flush()?;
    Ok(exported)
}

/// Verifies the log held in a store.
pub fn verify_store(store: &dyn Store, public_key: &[u8]) -> Result<Result<Verified, VerifyError>, ExportError> {
    let mut all = Vec::new();
    lines(store, &AuditFilter::default(), |line| {
        all.push(line);
        Ok(())
    })?;
    Ok(chain::verify(all, public_key))
}

/// Verifies an export file.
pub fn verify_file(file: impl BufRead, public_key: &[u8]) -> Result<Result<Verified, VerifyError>, ExportError> {
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
    Ok(chain::verify(all, public_key))
}
