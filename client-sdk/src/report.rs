//! The access report for a family: who saw and did what in their case.
//!
//! A family's access request (GDPR article 15) asks which organisations and
//! which people accessed their data, when, in what role, for what purpose and
//! on what legal basis. The hub's audit entries hold exactly that and no case
//! content, so the report is built from them alone: by a privacy officer through
//! [`crate::Client::access_report`], or by the hub's operator with
//! `hub audit report`. One function formats it for both.

use std::collections::BTreeMap;
use std::fmt::Write;

use wire::audit::{AuditAction, AuditEntry, AuditOutcome};
use wire::ThreadId;

mod for_family;

pub use for_family::{family_html, family_html_linked, Glossary};

/// A time as `YYYY-MM-DD HH:MM UTC`.
pub fn date_time(at_ms: u64) -> String {
    wire::calendar::format_minutes(at_ms)
}

fn action_text(action: AuditAction) -> &'static str {
    match action {
        AuditAction::CreateThread => "opened the case",
        AuditAction::AddMember => "brought someone into the case",
        AuditAction::RemoveMember => "removed someone from the case",
        AuditAction::Commit => "changed the case's encryption keys",
        AuditAction::Send => "wrote in the case",
        AuditAction::Deliver => "received the case's messages",
        AuditAction::ListMembers => "looked up who is on the case",
        AuditAction::BlobPut => "attached a document",
        AuditAction::BlobFetch => "opened a document",
        AuditAction::KeyPackage => "prepared encryption keys",
        AuditAction::AuditQuery => "queried the audit log",
        AuditAction::Connect | AuditAction::ListThreads => "used the hub",
        AuditAction::HandshakeRefused => "was refused at connection",
        AuditAction::PolicyReload => "changed the hub's policy",
        AuditAction::Retention => "deleted content past its retention period",
        AuditAction::Handover => "took a handover step",
        AuditAction::ShareHistory => "shared earlier messages with members who joined later",
        AuditAction::Review => "reviewed a share made without the family's consent",
    }
}

/// A share without the family's consent, as a privacy officer's review queue holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReviewItem {
    /// The offer or add that shared.
    pub share: AuditEntry,
    /// Its reviews by the officer's own organisation, oldest first.
    pub reviews: Vec<AuditEntry>,
}

/// The review queue from audit entries (oldest first): every allowed offer
/// or add on a basis `without_consent` names, with the reviews people of
/// `organisation` (an OIN) gave it. Another organisation's review of the same
/// share does not count as ours, nor does a refused attempt.
pub fn review_queue(
    entries: &[AuditEntry],
    organisation: &wire::Oin,
    without_consent: impl Fn(&str) -> bool,
) -> Vec<ReviewItem> {
    let mut reviews: BTreeMap<u64, Vec<AuditEntry>> = BTreeMap::new();
    // A refused or failed attempt at a review is in the log too, and reviews nothing.
    let ours = |e: &&AuditEntry| {
        e.record.outcome == AuditOutcome::Allowed && e.record.actor.as_ref().is_some_and(|a| &a.oin == organisation)
    };
    for entry in entries.iter().filter(ours) {
        if let Some(reviewed) = wire::audit::reviewed_entry(&entry.record) {
            reviews.entry(reviewed).or_default().push(entry.clone());
        }
    }
    shares_without_consent(entries, without_consent)
        .into_iter()
        .map(|share| ReviewItem { share: share.clone(), reviews: reviews.remove(&share.seq).unwrap_or_default() })
        .collect()
}

/// The offers and adds on a basis `without_consent` names that took effect: a share whose action
/// then failed (an offer the case's state refused) shared nothing.
pub fn shares_without_consent(entries: &[AuditEntry], without_consent: impl Fn(&str) -> bool) -> Vec<&AuditEntry> {
    let mut failures: BTreeMap<u64, Vec<&AuditEntry>> = BTreeMap::new();
    for entry in entries {
        if let Some(undone) = wire::audit::undone_entry(&entry.record) {
            failures.entry(undone).or_default().push(entry);
        }
    }
    let took_effect = |share: &&AuditEntry| {
        !failures.get(&share.seq).is_some_and(|f| f.iter().any(|f| wire::audit::undoes(f, share)))
    };
    entries
        .iter()
        .filter(|e| wire::audit::is_share_without_consent(&e.record, &without_consent))
        .filter(took_effect)
        .collect()
}

/// One person who had access to a case, as the access report lists them.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Access {
    /// Their organisation's name.
    pub organisation: String,
    /// Their worker id.
    pub worker: String,
    /// Their role's code.
    pub role: String,
    /// Their first allowed action on the case, ms since the Unix epoch.
    pub first_ms: u64,
    /// Their last one.
    pub last_ms: u64,
    /// How many allowed actions.
    pub actions: usize,
}

/// Everyone who had access, from a case's audit entries: each person once, by organisation, worker and
/// role, counting only what was allowed (refused attempts are in the timeline, not here).
pub fn who_had_access(entries: &[AuditEntry]) -> Vec<Access> {
    let mut people: BTreeMap<(String, String, String), (u64, u64, usize)> = BTreeMap::new();
    for entry in entries.iter().filter(|e| e.record.outcome == AuditOutcome::Allowed) {
        if let Some(actor) = &entry.record.actor {
            let key = (actor.organisation.clone(), actor.worker.clone(), actor.role.code().to_owned());
            let at = entry.record.at_ms;
            let seen = people.entry(key).or_insert((at, at, 0));
            seen.1 = seen.1.max(at);
            seen.2 += 1;
        }
    }
    people
        .into_iter()
        .map(|((organisation, worker, role), (first_ms, last_ms, actions))| Access {
            organisation,
            worker,
            role,
            first_ms,
            last_ms,
            actions,
        })
        .collect()
}

/// What an entry did, and where when it was in a side thread of the case.
fn what(case: ThreadId, record: &wire::audit::AuditRecord) -> String {
    match record.case {
        Some(thread) if thread != case => format!("{} (side thread {})", action_text(record.action), short(thread)),
        _ => action_text(record.action).to_owned(),
    }
}

/// The first 8 hex digits of a thread id, as the desk shows cases.
fn short(thread: ThreadId) -> String {
    thread.0.simple().to_string()[..8].to_owned()
}

/// The access report for `case` as Markdown, from its audit entries (oldest first).
pub fn markdown(case: ThreadId, entries: &[AuditEntry]) -> String {
    let mut out = format!("# Access report for case {case}\n\n");
    let _ =
        writeln!(out, "Produced from the Ketenhub audit log ({} entries). It holds no case content.\n", entries.len());
    out.push_str(
        "## Who had access\n\n| organisation | person | role | first | last | actions |\n|---|---|---|---|---|---:|\n",
    );
    for a in who_had_access(entries) {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} |",
            a.organisation,
            a.worker,
            a.role,
            date_time(a.first_ms),
            date_time(a.last_ms),
            a.actions
        );
    }
    out.push_str("\n## Timeline, including refused attempts\n\n| when | organisation | person | role | what | legal basis | outcome |\n|---|---|---|---|---|---|---|\n");
    for entry in entries {
        let record = &entry.record;
        let (organisation, worker, role) = record
            .actor
            .as_ref()
            .map_or(("(unknown)", "", ""), |a| (a.organisation.as_str(), a.worker.as_str(), a.role.code()));
        let person = match &record.on_behalf_of {
            Some(member) => format!("{} (for {worker})", member.worker),
            None => worker.to_owned(),
        };
        let outcome = match record.outcome {
            AuditOutcome::Allowed => "allowed",
            AuditOutcome::Denied => "refused",
            AuditOutcome::Failed => "failed",
        };
        let _ = writeln!(
            out,
            "| {} | {organisation} | {person} | {role} | {} | {} | {outcome} |",
            date_time(record.at_ms),
            what(case, record),
            record.legal_basis.as_deref().unwrap_or("-"),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_civil() {
        assert_eq!(date_time(0), "1970-01-01 00:00 UTC");
        assert_eq!(date_time(1_700_000_000_123), "2023-11-14 22:13 UTC");
    }
}
