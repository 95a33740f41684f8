//! Organisation inboxes: offers and escalations that reach an organisation,
//! not only a worker on the case.
//!
//! An offer to an organisation that names no worker is seen by nobody on the
//! case, and an escalation reaches the owner in the case thread but not the
//! organisation's case system or its team leads. So each organisation has an
//! inbox: a thread the hub alone writes in ([`wire::ThreadId::inbox_of`] its
//! OIN), whose members are the workers the policy names for it (`systems`,
//! `team_leads`, `on_call`). A handover step appends its notices there in the
//! same write as the step itself (see [`crate::handovers`]), and the delivery
//! that serves every thread pushes them to the members online and keeps them,
//! from each member's cursor, for those offline. Its members receive only what
//! was added after they joined; the membership follows the policy at start and
//! on every reload.

use wire::audit::{AuditAction, AuditRecord};
use wire::{Entry, MemberId, Oin, ThreadId};

use crate::durability::{Auditor, WriteError};
use crate::store::Store;

/// The rule recorded for inbox memberships the policy starts or ends.
const RULE: &str = "inbox-by-policy";

/// Makes each organisation's inbox hold exactly `members`: adds who is
/// missing, ends the membership of who is no longer named, each audited.
/// Returns the entries appended, for delivery.
pub fn sync(
    store: &dyn Store,
    members: &[(Oin, Vec<MemberId>)],
    at_ms: u64,
    audit: &mut Auditor<'_>,
) -> Result<Vec<(ThreadId, Entry)>, WriteError> {
    let mut appended = Vec::new();
    for (oin, wanted) in members {
        let inbox = store.ensure_inbox(oin, at_ms)?;
        let writer = MemberId { oin: oin.clone(), worker: crate::store::INBOX_WRITER.to_owned() };
        let current = store.members(inbox)?;
        for member in wanted.iter().filter(|m| !current.contains(m)) {
            audit.record(AuditRecord {
                case: Some(inbox),
                object: Some(member.to_string()),
                rule: RULE.into(),
                ..crate::audit::hub_record(AuditAction::AddMember)
            })?;
            appended.extend(store.add_member(inbox, &writer, member, at_ms)?.entry.map(|e| (inbox, e)));
        }
        let gone: Vec<MemberId> = current.into_iter().filter(|m| !wanted.contains(m)).collect();
        for member in &gone {
            audit.removal(inbox, member, RULE)?;
        }
        appended.extend(store.remove_members(inbox, &writer, &gone, at_ms)?.into_iter().map(|e| (inbox, e)));
    }
    Ok(appended)
}
