//! Quotas: bounds on what one identity can make the hub store or compute.
//!
//! Limits on frames and connections bound a connection; these bound an
//! identity across its connections: how many threads it opens per day, how
//! often it uploads KeyPackages (each upload is verified, which costs the hub
//! far more than it costs the client), how long the free text it makes the hub
//! keep for years may be, and how many members a thread may hold. Counters
//! live in memory: they bound abuse, and keep no record of anyone's activity
//! beyond the current day or minute.

use std::collections::HashMap;
use std::sync::Mutex;

use wire::calendar::DAY_MS;
use wire::{ErrorCode, MemberId, Request, WireError};

use crate::config::Limits;
use crate::locks::lock;
use crate::ratelimit::TokenBucket;

/// The refusal of a request over a quota: names the config key and its value.
pub fn exceeded(key: &str, value: impl std::fmt::Display, what: &str) -> WireError {
    WireError::new(ErrorCode::LimitExceeded, format!("{what}: {key} is {value}"))
}

/// The in-memory counters behind the per-identity quotas.
#[derive(Debug, Default)]
pub struct Quotas {
    /// Threads created per identity on the current UTC day.
    created: Mutex<(u64, HashMap<MemberId, u32>)>,
    /// KeyPackage uploads per identity.
    uploads: Mutex<HashMap<MemberId, TokenBucket>>,
}

impl Quotas {
    /// Counts a thread creation by `member` at `now_ms`, or refuses it.
    pub fn create_thread(&self, limits: &Limits, member: &MemberId, now_ms: u64) -> Result<(), WireError> {
        let mut created = lock(&self.created);
        let today = now_ms / DAY_MS;
        if created.0 != today {
            *created = (today, HashMap::new());
        }
        let count = created.1.entry(member.clone()).or_default();
        if *count >= limits.max_threads_per_identity_per_day {
            let key = "limits.max_threads_per_identity_per_day";
            return Err(exceeded(key, limits.max_threads_per_identity_per_day, "too many new threads today"));
        }
        *count += 1;
        Ok(())
    }

    /// Counts a KeyPackage upload by `member`, or refuses it.
    pub fn upload_key_packages(&self, limits: &Limits, member: &MemberId) -> Result<(), WireError> {
        let per_minute = limits.key_package_uploads_per_minute;
        let mut uploads = lock(&self.uploads);
        let bucket = uploads.entry(member.clone()).or_insert_with(|| TokenBucket::per_minute(per_minute));
        bucket.take().map_err(|_| exceeded("limits.key_package_uploads_per_minute", per_minute, "too many uploads"))
    }
}

/// The free text of a request that the hub keeps (in the audit log, in the
/// case's handover state), each with what it is.
fn free_text(request: &Request) -> Vec<&str> {
    match request {
        Request::AddMember { reason, legal_basis, .. } => vec![reason, legal_basis],
        Request::AddParticipant { participant, legal_basis, .. } => vec![&participant.reason, legal_basis],
        Request::OfferHandover { offer, .. } => {
            let mut texts = vec![offer.reason.as_str(), offer.legal_basis.as_str(), offer.route.as_str()];
            texts.extend(offer.justification.as_deref());
            texts
        }
        Request::AnswerOffer { reason, .. } => reason.iter().map(String::as_str).collect(),
        Request::CompleteHandover { family: wire::handover::FamilyTold::No { reason }, .. } => vec![reason],
        Request::LeaveCase { reason, .. }
        | Request::WithdrawOffer { reason, .. }
        | Request::CancelOffer { reason, .. }
        | Request::TakeOver { reason, .. }
        | Request::ReopenCase { reason, .. } => vec![reason],
        Request::CloseCase { outcome, reason, .. } => vec![outcome, reason],
        Request::OpenSideThread { purpose, .. } => vec![purpose],
        Request::MarkReviewed { note, .. } => vec![note],
        Request::CallConference { topic, invited, legal_basis, .. } => {
            let mut texts = vec![topic.as_str(), legal_basis.as_str()];
            texts.extend(invited.iter().map(|i| i.reason.as_str()));
            texts
        }
        Request::RecordDecision { decision, .. } => vec![&decision.reason],
        Request::OnBehalfOf { request, .. } => free_text(request),
        _ => Vec::new(),
    }
}

/// Refuses a request whose free text is longer than `limits.max_text_bytes`.
pub fn check_text(limits: &Limits, request: &Request) -> Result<(), WireError> {
    match free_text(request).into_iter().find(|t| t.len() > limits.max_text_bytes) {
        Some(_) => Err(exceeded("limits.max_text_bytes", limits.max_text_bytes, "a text is too long")),
        None => Ok(()),
    }
}
