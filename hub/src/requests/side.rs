//! Side threads: what a side thread of a case allows that its case does not,
//! and the reverse.
//!
//! A limited recipient (a school, a GP, the police) must not receive the whole
//! case, so it is never put on the case thread (rule `limited-recipient` in the
//! policy). The case's owner opens a side thread instead: a thread with its own
//! MLS group, linked to the case, in which only what the owner shares travels.
//! The side thread has no ownership state of its own. Its case's owner decides
//! who is on it, its case's closing closes it, and a former owner of the case
//! only reads in it. When regie moves, any member of the side thread, the
//! former owner included, brings the new owner in (`side-thread-follows-owner`).
//! Handover steps are taken on the case, never on a side thread.

use wire::{ErrorCode, MemberId, Request, ThreadId, WireError};

use crate::policy::Action;
use crate::session::{internal, Hub};

/// The rule that lets any member of a side thread bring in its case's owner.
pub(super) const FOLLOWS_OWNER: &str = "side-thread-follows-owner";

type Refusal = (WireError, &'static str);

fn forbidden(rule: &'static str, why: &str) -> Refusal {
    (WireError::new(ErrorCode::Forbidden, format!("denied by rule {rule}: {why}")), rule)
}

impl Hub {
    /// The side-thread rules for `request` in a side thread of `case`: a
    /// refusal, the rule that allows it outright, or None when the case's
    /// usual rules decide.
    pub(super) fn in_side_thread(
        &self,
        (side, case): (ThreadId, ThreadId),
        actor: &MemberId,
        (action, request): (Action, &Request),
    ) -> Result<Option<&'static str>, Refusal> {
        // Every handover step is the case's, and so are its ownership, participants and side threads.
        let case_step = matches!(
            request,
            Request::GetOwnership { .. }
                | Request::AddParticipant { .. }
                | Request::CallConference { .. }
                | Request::OpenSideThread { .. }
        );
        if action == Action::Handover || case_step {
            return Err(forbidden(
                "side-thread-no-handover",
                "a side thread has no handover of its own: its case is handed over, closed and reopened",
            ));
        }
        let member = match request {
            Request::AddMember { member, .. } | Request::ClaimKeyPackage { member, .. } => member,
            _ => return Ok(None),
        };
        let owner = self.case_owner(case)?;
        let store_failure = |e| (internal(e), "store-failure");
        // Only someone on the case knows that regie moved: a limited recipient learns nothing of the owner here.
        if member == &owner && actor != &owner && self.store.is_member(case, actor).map_err(store_failure)? {
            super::open_case(&*self.store, case).map_err(|e| (e, "case-closed"))?;
            match request {
                Request::AddMember { reason, .. } if reason.trim().is_empty() => {
                    return Err(forbidden("add-needs-reason", "adding a member needs a reason"));
                }
                // Once a device of the owner is in the group, its KeyPackages are not for the taking.
                Request::ClaimKeyPackage { .. } if self.owner_in_group(side, &owner)? => {
                    return Err(forbidden(FOLLOWS_OWNER, "the case's owner is in the side thread's group already"));
                }
                _ => {}
            }
            return Ok(Some(FOLLOWS_OWNER));
        }
        if actor != &owner {
            return Err(forbidden("side-thread-owner-adds", "in a side thread only the case's owner brings people in"));
        }
        Ok(None)
    }

    /// Refuses a side thread opened by anyone but the case's owner, or of a side thread.
    pub(super) fn owns_case(&self, case: ThreadId, actor: &MemberId) -> Result<(), Refusal> {
        if &self.case_owner(case)? != actor {
            return Err(forbidden("side-thread-by-owner", "only the case's owner opens a side thread"));
        }
        Ok(())
    }

    fn owner_in_group(&self, side: ThreadId, owner: &MemberId) -> Result<bool, Refusal> {
        let Some(state) = self.store.group_state(side).map_err(|e| (internal(e), "store-failure"))? else {
            return Ok(false);
        };
        let devices = crate::groups::devices_of(&state, side).map_err(|e| (e, "store-failure"))?;
        Ok(devices.contains(owner))
    }

    fn case_owner(&self, case: ThreadId) -> Result<MemberId, Refusal> {
        match self.store.ownership(case).map_err(|e| (internal(e), "store-failure"))? {
            Some(ownership) => Ok(ownership.owner),
            // A side thread has no side threads (refused before this, unless the thread was a case a moment ago).
            None => Err(forbidden("side-thread-by-owner", "only the case's owner opens a side thread")),
        }
    }
}
