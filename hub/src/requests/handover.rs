//! Handovers: offers and their answers, completion, leaving a case, the
//! deadlines that escalate, the offers waiting for someone, and the answer to a
//! leave that was already recorded.
//!
//! The state machine itself is a pure function in `wire::handover`, applied in
//! write order by the writer thread (see [`crate::handovers`]); what is left
//! here is what only the request knows: which step, when, and for whom.

use tokio::task::JoinHandle;
use wire::handover::{OfferRequest, OfferState};
use wire::{Identity, MemberId, Reply, Request, ThreadId, WireError};

use super::WriteKind;
use crate::durability::{Write, WriteError};
use crate::handovers::{self, HandoverOp};
use crate::policy::Policy;
use crate::session::{internal, not_durable, Caller, Hub};
use crate::store::Store;

impl Hub {
    pub(super) fn offer_handover(
        &self,
        thread: ThreadId,
        actor: &MemberId,
        policy: &Policy,
        offer: OfferRequest,
    ) -> Result<(WriteKind, Write), WireError> {
        // Every offer stays in the case's state, which every `ownership` reply carries.
        let ownership = self.store.ownership(thread).map_err(internal)?;
        let made = ownership.as_ref().map_or(0, |o| o.offers.len());
        let route = policy.route(&offer.route);
        let served = route.and_then(|r| {
            r.offerer_not_among.iter().find(|role| ownership.as_ref().is_some_and(|o| o.has_served_as(actor, **role)))
        });
        if let Some(role) = served {
            return Err(WireError::new(
                wire::ErrorCode::Forbidden,
                format!(
                    "denied by rule separation-of-duties: route {} is offered by someone who never took part in the case as {role:?}",
                    offer.route
                ),
            ));
        }
        if made >= self.limits.max_offers_per_case {
            let key = "limits.max_offers_per_case";
            return Err(crate::quotas::exceeded(key, self.limits.max_offers_per_case, "too many offers"));
        }
        let lead = policy.is_team_lead(actor);
        Ok(self.handover(thread, actor, HandoverOp::Offer { request: offer, lead }))
    }

    /// A team lead's direct takeover of a case whose owner is away.
    pub(super) fn take_over(
        &self,
        thread: ThreadId,
        actor: &MemberId,
        policy: &Policy,
        reason: String,
    ) -> (WriteKind, Write) {
        let lead = policy.is_team_lead(actor);
        self.handover(thread, actor, HandoverOp::TakeOver { reason, lead })
    }

    /// Whether `actor` leads a team of the organisation that owns `thread`: it
    /// may then take the case's handover steps without being on the case.
    pub(super) fn leads_owner(&self, policy: &Policy, thread: ThreadId, actor: &MemberId) -> Result<bool, WireError> {
        if !policy.is_team_lead(actor) {
            return Ok(false);
        }
        Ok(self.store.ownership(thread).map_err(internal)?.is_some_and(|o| o.owner.oin == actor.oin))
    }

    pub(super) fn handover(&self, thread: ThreadId, actor: &MemberId, op: HandoverOp) -> (WriteKind, Write) {
        let now_ms = self.clock.now_ms();
        (WriteKind::Handover, Write::Handover { thread, by: actor.clone(), op, rules: self.rules(), now_ms })
    }

    /// The policy's rules for handover steps, as the writer applies them.
    fn rules(&self) -> crate::handovers::Rules {
        let max_clocks = self.limits.max_clocks_per_case;
        crate::handovers::Rules { calendar: self.calendar.clone(), policy: self.policy.current(), max_clocks }
    }

    /// Fires handover deadlines due by the hub's clock; each escalation is
    /// recorded in the audit log before it is written to its thread.
    pub async fn fire_deadlines(&self) -> Result<(), WireError> {
        let write = Write::HandoverDeadlines { rules: self.rules(), now_ms: self.clock.now_ms() };
        let written = self.writes.submit(write, None).await.await.unwrap_or(Err(WriteError::Closed));
        written.map(drop).map_err(not_durable)
    }

    pub(super) fn ownership(&self, thread: ThreadId) -> Result<Reply, WireError> {
        match self.store.ownership(thread).map_err(internal)? {
            Some(ownership) => Ok(Reply::Ownership { ownership: Box::new(ownership) }),
            None => Err(WireError::thread_not_found()),
        }
    }

    pub(super) fn spawn_list_offers(&self, caller: &Caller, actor: MemberId) -> JoinHandle<Result<Reply, WireError>> {
        let (store, policy, identity) = (self.store.clone(), self.policy.current(), caller.identity.clone());
        tokio::task::spawn_blocking(move || list_offers(store.as_ref(), &policy, &identity, &actor))
    }

    /// The answer to a resent `leave_case` from a member who has left, or a
    /// resent `cancel_offer` from the receiver who cancelled and so left: the
    /// case's state as it stood when it left, so that the step reads as done
    /// without showing anything that happened after.
    pub(super) fn farewell(&self, actor: &Option<MemberId>, request: &Request, rule: &str) -> Option<Reply> {
        let (Some(actor), "not-a-member") = (actor, rule) else {
            return None;
        };
        let thread = match request {
            Request::LeaveCase { thread, .. } | Request::CancelOffer { thread, .. } => *thread,
            _ => return None,
        };
        let ownership = self.store.farewell(thread, actor).ok()??;
        let recorded = |ownership: &wire::handover::Ownership| match request {
            Request::LeaveCase { reason, .. } => ownership.left.iter().any(|(m, r)| m == actor && r == reason),
            Request::CancelOffer { offer, reason, .. } => ownership.offers.iter().any(|x| {
                x.id == *offer
                    && matches!(&x.state, OfferState::Cancelled { by, reason: r, .. } if by == actor && r == reason)
            }),
            _ => false,
        };
        recorded(&ownership).then(|| Reply::Ownership { ownership: Box::new(ownership) })
    }
}

/// Offers waiting for the actor's answer; for a privacy officer, the review
/// queue: offers to or from its organisation that share without consent.
fn list_offers(store: &dyn Store, policy: &Policy, identity: &Identity, actor: &MemberId) -> Result<Reply, WireError> {
    let offers = if identity.role == wire::Role::PrivacyOfficer {
        let oin = &identity.oin;
        let all = store.offers_of(oin).map_err(internal)?;
        all.into_iter()
            .flat_map(|(thread, o)| o.offers.into_iter().map(move |offer| (thread, offer)))
            .filter(|(_, offer)| {
                (offer.to == *oin || offer.from.oin == *oin) && handovers::needs_review(policy, &offer.legal_basis)
            })
            .collect()
    } else {
        handovers::waiting_for(store, actor).map_err(not_durable)?
    };
    Ok(Reply::Offers { offers })
}
