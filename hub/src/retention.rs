//! Retention: the hub forgets content once every member has it.
//!
//! The agencies' own case systems are the archive; the hub keeps a message's
//! content only to deliver it. A sweep replaces the content of messages that
//! every current member has acknowledged and that are older than the policy's
//! `content_days` with an `expired` entry (sequence numbers stay, so cursors and
//! the audit trail keep their meaning), deletes attachment blobs on the same
//! terms, and deletes audit entries older than `audit_years`, oldest first.
//!
//! A blob counts as received once every member's cursor is past the thread's
//! last entry at the moment the blob was sealed: the message that names it
//! comes after that. Whether each member actually fetched it is not known to
//! the hub. An upload that was never sealed is deleted once it is that old.
//!
//! The sweep runs on the writer thread (see `durability`), so it never races a
//! write, and takes `now` as a parameter so that tests can move time.

use std::collections::HashMap;

use wire::calendar::DAY_MS;
use wire::ThreadId;

use wire::audit::{AuditAction, AuditRecord};

use crate::devices::DeviceLimits;
use crate::durability::{Auditor, WriteError};
use crate::policy::Retention;
use crate::store::{Store, StoreError};

/// What a sweep deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Swept {
    /// Messages whose content was deleted.
    pub messages: u64,
    /// Blobs deleted.
    pub blobs: u64,
    /// Audit entries deleted.
    pub audit_entries: u64,
}

/// The lowest cursor among the thread's current members (each member's as
/// `devices::received` counts its devices): every entry up to it has been
/// received by all of them. A thread without members (an archived case) is
/// waited on by nobody: all of it counts as received.
fn received_by_all(store: &dyn Store, thread: ThreadId, now_ms: u64, devices: DeviceLimits) -> Result<u64, StoreError> {
    let mut lowest = u64::MAX;
    for member in store.members(thread)? {
        lowest = lowest.min(crate::devices::received(store, &member, thread, now_ms, devices)?);
    }
    Ok(if lowest == u64::MAX { store.last_seq(thread)? } else { lowest })
}

/// Deletes what the retention periods allow at `now_ms`. The audit log says
/// what the sweep is about to delete (its cutoffs) before it deletes anything,
/// and how much it deleted after.
pub fn sweep(
    store: &dyn Store,
    retention: &Retention,
    devices: DeviceLimits,
    now_ms: u64,
    audit: &mut Auditor<'_>,
) -> Result<Swept, WriteError> {
    let content_cutoff = now_ms.saturating_sub(u64::from(retention.content_days) * DAY_MS);
    // A year of 365.25 days, so that leap years never shorten the period.
    let audit_cutoff = now_ms.saturating_sub(u64::from(retention.audit_years) * 36_525 * DAY_MS / 100);
    audit.record(AuditRecord {
        object: Some(format!(
            "content received by every member and stored before {content_cutoff} ms; audit entries before {audit_cutoff} ms"
        )),
        rule: "retention-policy; sweep begins".into(),
        ..crate::audit::hub_record(AuditAction::Retention)
    })?;
    let (swept, pruned_below) = delete(store, (content_cutoff, audit_cutoff), now_ms, devices)?;
    if pruned_below > 0 {
        // The signed record a verifier needs to tell this pruning from a deletion (see `audit::verify`).
        audit.record(AuditRecord {
            object: Some(format!(
                "{}{pruned_below} pruned under audit_years {}",
                crate::audit::verify::PRUNED_PREFIX,
                retention.audit_years
            )),
            rule: "retention-policy; audit entries pruned".into(),
            ..crate::audit::hub_record(AuditAction::Retention)
        })?;
    }
    if swept != Swept::default() {
        audit.record(AuditRecord {
            object: Some(format!(
                "{} messages, {} blobs, {} audit entries",
                swept.messages, swept.blobs, swept.audit_entries
            )),
            rule: "retention-policy; sweep done".into(),
            ..crate::audit::hub_record(AuditAction::Retention)
        })?;
    }
    Ok(swept)
}

/// Deletes what is due; returns what, and the seq below which audit entries are now pruned (0 for none).
fn delete(
    store: &dyn Store,
    (content_cutoff, audit_cutoff): (u64, u64),
    now_ms: u64,
    devices: DeviceLimits,
) -> Result<(Swept, u64), StoreError> {
    let mut swept = Swept::default();
    let mut received = HashMap::new();
    for thread in store.threads()? {
        let by_all = received_by_all(store, thread, now_ms, devices)?;
        received.insert(thread, by_all);
        if by_all > 0 {
            swept.messages += store.expire_messages(thread, by_all, content_cutoff)?;
        }
    }
    for (blob, record) in store.blobs()? {
        let old = record.created_at_ms < content_cutoff;
        // An upload never finished is abandoned once it is as old as content may get.
        let done = !record.sealed || received.get(&record.thread).is_some_and(|by_all| *by_all > record.sealed_seq);
        if old && done {
            store.delete_blob(record.thread, blob)?;
            swept.blobs += 1;
        }
    }
    let (pruned, below) = store.prune_audit(audit_cutoff)?;
    swept.audit_entries = pruned;
    Ok((swept, below))
}
