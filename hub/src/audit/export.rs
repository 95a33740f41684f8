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
