//! Threads and who is on them: a thread created, a member added, a message
//! sent, the threads and members listed, and a cursor acknowledged.
//!
//! These are the requests every case uses, whatever its handover state; the
//! membership they rely on is checked before they arrive here, except for an
//! acknowledgement, which a former member may still send for its interval.

use uuid::Uuid;
use wire::{ErrorCode, MemberId, MessageId, Reply, ThreadId, ThreadSummary, WireError};

use super::WriteKind;
use crate::durability::{Admission, Write};
use crate::policy::Action;
use crate::session::{internal, Caller, Hub};
use crate::store::StoreError;

impl Hub {
    pub(super) fn create_thread(
        &self,
        caller: &Caller,
        actor: MemberId,
        client_ref: Uuid,
    ) -> Result<(WriteKind, Write), WireError> {
        // Counted for the certificate's identity, so a system cannot spread them over workers it names.
        self.quotas.create_thread(&self.limits, &caller.member, self.clock.now_ms())?;
        Ok((WriteKind::CreateThread, Write::CreateThread { creator: actor, client_ref }))
    }

    /// `admission`: the rule that allowed it, which the writer checks again.
    pub(super) fn add_member(
        &self,
        thread: ThreadId,
        actor: MemberId,
        member: MemberId,
        admission: Admission,
    ) -> (WriteKind, Write) {
        let max_members = self.limits.max_members_per_thread;
        (WriteKind::AddMember, Write::AddMember { thread, by: actor, member, max_members, admission })
    }

    /// A side thread of `case`, opened by its owner (checked in write order).
    pub(super) fn open_side_thread(
        &self,
        caller: &Caller,
        actor: MemberId,
        side: wire::SideThread,
        client_ref: Uuid,
    ) -> Result<(WriteKind, Write), WireError> {
        self.quotas.create_thread(&self.limits, &caller.member, self.clock.now_ms())?;
        let max_sides = self.limits.max_side_threads_per_case;
        Ok((WriteKind::CreateThread, Write::OpenSideThread { creator: actor, client_ref, side, max_sides }))
    }

    /// The members a history share of `seqs` discloses to: everyone on the case
    /// now, but the sharer, whose current membership began after one of them.
    pub(super) fn history_share(&self, thread: ThreadId, actor: &MemberId, seqs: &[u64]) -> Result<Reply, WireError> {
        let max = self.limits.max_history_share_items;
        if seqs.is_empty() {
            return Err(WireError::new(ErrorCode::Invalid, "a history share names at least one earlier entry"));
        }
        if seqs.len() > max {
            return Err(crate::quotas::exceeded(
                "limits.max_history_share_items",
                max,
                "a history share names that many entries at most",
            ));
        }
        let last = self.store.last_seq(thread).map_err(internal)?;
        if seqs.iter().any(|s| *s == 0 || *s > last) {
            return Err(WireError::new(ErrorCode::Invalid, format!("a history share names entries 1 to {last}")));
        }
        let earliest = seqs.iter().copied().min().unwrap_or_default();
        let mut recipients = Vec::new();
        for member in self.store.members(thread).map_err(internal)?.into_iter().filter(|m| m != actor) {
            let joined = self
                .store
                .intervals(thread, &member)
                .map_err(internal)?
                .iter()
                .filter(|i| i.until.is_none())
                .map(|i| i.from)
                .max();
            if joined.is_some_and(|from| from > earliest) {
                recipients.push(member);
            }
        }
        Ok(Reply::HistoryShareRecorded { recipients })
    }

    pub(super) fn send(
        &self,
        thread: ThreadId,
        actor: MemberId,
        message: MessageId,
        payload: Vec<u8>,
    ) -> Result<(WriteKind, Write), WireError> {
        let epoch =
            wire::mls::check_private_message(&payload, thread).map_err(|e| WireError::new(ErrorCode::Invalid, e))?;
        Ok((WriteKind::Send, Write::Append { thread, sender: actor, id: message, payload, epoch }))
    }

    /// The actor's threads, with the cursors of this connection's device (a
    /// system acting for a worker sees the worker's default device's).
    pub(super) fn list_threads(&self, caller: &Caller, actor: &MemberId) -> Result<Reply, WireError> {
        let device = if actor == &caller.member { caller.device.clone() } else { wire::DeviceId::default() };
        let summary = |thread| -> Result<ThreadSummary, StoreError> {
            Ok(ThreadSummary {
                thread,
                last_seq: self.store.last_seq(thread)?,
                cursor: self.store.cursor(actor, &device, thread)?,
                side: self.store.side(thread)?,
                inbox: self.store.is_inbox(thread)?,
            })
        };
        let threads = self.store.threads_of(actor).and_then(|t| t.into_iter().map(summary).collect());
        Ok(Reply::Threads { threads: threads.map_err(internal)? })
    }

    pub(super) fn list_members(&self, thread: ThreadId) -> Result<Reply, WireError> {
        Ok(Reply::Members { members: self.store.members(thread).map_err(internal)? })
    }

    /// How far each current member has received `thread`: cursors the hub
    /// keeps anyway, shown to the members so a sender sees who has a message.
    pub(super) fn delivery_status(&self, thread: ThreadId) -> Result<Reply, WireError> {
        let now_ms = self.clock.now_ms();
        let of =
            |member: MemberId| crate::devices::delivery(&*self.store, &member, thread, now_ms, self.limits.devices());
        let members = self.store.members(thread).and_then(|all| all.into_iter().map(of).collect());
        Ok(Reply::Delivery { members: members.map_err(internal)? })
    }

    /// Records that the caller processed `thread` up to `seq`. The cursor
    /// becomes durable with the next flush; losing it in a crash only means
    /// entries are delivered again.
    pub async fn ack(&self, caller: &Caller, thread: ThreadId, seq: u64) -> Result<(), WireError> {
        // A cursor is shared by the identity's connections: only a certificate
        // that may read moves it (not an admin's with the same worker id).
        let policy = self.policy.current();
        let reads = policy.role_allows(caller.identity.role, Action::Read);
        // A case system acts for its workers, but reads its organisation's inbox as itself.
        let acts = policy.actor(&caller.identity, None).is_ok() || self.store.is_inbox(thread).map_err(internal)?;
        if !acts || !reads.allowed {
            return Err(WireError::thread_not_found());
        }
        if !self.is_member(thread, &caller.member)? {
            // A former member acknowledges the rest of its interval, and nothing past it.
            let intervals = self.store.intervals(thread, &caller.member).map_err(internal)?;
            if !intervals.iter().any(|i| i.until.is_some_and(|until| seq <= until)) {
                return Err(WireError::thread_not_found());
            }
        }
        let last = self.store.last_seq(thread).map_err(internal)?;
        if seq > last {
            return Err(WireError::new(ErrorCode::Invalid, format!("ack for seq {seq} beyond the last entry {last}")));
        }
        let cursor = Write::Cursor { member: caller.member.clone(), device: caller.device.clone(), thread, seq };
        self.writes.submit_unanswered(cursor, None).await;
        Ok(())
    }
}
