//! What the application receives: thread entries and connection changes.

use std::pin::Pin;
use std::task::{Context, Poll};

use futures_util::Stream;
use tokio::sync::mpsc;
use wire::{MemberId, MessageId, ThreadId};

/// An application message in a thread.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Message {
    /// The thread.
    pub thread: ThreadId,
    /// Its sequence number in the thread; acknowledge it with [`crate::Client::ack`].
    pub seq: u64,
    /// The id the sender chose.
    pub id: MessageId,
    /// Who sent it (as authenticated by the hub).
    pub sender: MemberId,
    /// When the hub stored it, in milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// The content as sent, decrypted and verified.
    pub content: crate::Content,
}

impl Message {
    /// The bytes of a bytes or text message (see [`crate::Content::as_bytes`]).
    pub fn payload(&self) -> &[u8] {
        self.content.as_bytes()
    }
}

/// Something that happened, delivered once and in order per thread.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The hub's audit log failed a witness check (a forged, shrunk or rewritten log, or an entry that is not
    /// in it); the same error is returned to the call that fetched it.
    AuditAlarm(crate::witness::AuditError),
    /// A message arrived.
    Message(Message),
    /// A member joined a thread (including this client, when it is added).
    MemberAdded {
        /// The thread.
        thread: ThreadId,
        /// The entry's sequence number.
        seq: u64,
        /// Who joined.
        member: MemberId,
        /// Who added them.
        by: MemberId,
    },
    /// A member was removed from a thread.
    MemberRemoved {
        /// The thread.
        thread: ThreadId,
        /// The entry's sequence number.
        seq: u64,
        /// Who was removed.
        member: MemberId,
        /// Who removed them.
        by: MemberId,
        /// True when this device's MLS group still holds the member's
        /// devices: the membership ended because the member left the case,
        /// and the case's owner now removes them with `Client::remove_member`.
        devices_remain: bool,
    },
    /// A step of the case's warm handover: an offer, an answer, a completion, an escalation.
    Handover {
        /// The thread.
        thread: ThreadId,
        /// The entry's sequence number.
        seq: u64,
        /// Who took the step (the hub itself for an escalation: the owner at the time).
        by: MemberId,
        /// What happened.
        event: wire::handover::HandoverEvent,
    },
    /// A notice in this identity's organisation inbox (for its system
    /// identities, team leads and on-call workers): an offer to the
    /// organisation, or an escalation in one of its cases.
    Notice {
        /// The inbox thread ([`wire::ThreadId::inbox_of`] the organisation).
        inbox: ThreadId,
        /// The entry's sequence number.
        seq: u64,
        /// The case it is about.
        case: ThreadId,
        /// What it says.
        notice: wire::handover::Notice,
    },
    /// This device joined the thread's MLS group and reads it from now on.
    Joined {
        /// The thread.
        thread: ThreadId,
    },
    /// This device could not follow the thread's MLS group: a commit it cannot
    /// process, or a Welcome it cannot join from. The SDK rejoins the group by
    /// itself ([`Event::Rejoined`]); messages sent meanwhile are unreadable here.
    /// Not so when it refused the entry for a leaf that is not bound to its
    /// certificate or for an external commit against the rules
    /// ([`crate::DecryptError::Unbound`], [`crate::DecryptError::RefusedRejoin`]):
    /// the hub's group then holds someone this device would not let in, and
    /// only the application decides to rejoin ([`crate::Client::rejoin`]).
    GroupLost {
        /// The thread.
        thread: ThreadId,
        /// The entry it could not use.
        seq: u64,
        /// Why.
        error: crate::device::DecryptError,
    },
    /// This device joined the thread's MLS group again by an external commit
    /// (a new device, a lost state, or after [`Event::GroupLost`]); it reads
    /// what is sent from `epoch` on, and nothing sent before.
    Rejoined {
        /// The thread.
        thread: ThreadId,
        /// The epoch it joined at.
        epoch: u64,
    },
    /// This device was removed from the thread's MLS group.
    Removed {
        /// The thread.
        thread: ThreadId,
    },
    /// A message that could not be read, and why; it is never shown as plaintext.
    Unreadable {
        /// The thread.
        thread: ThreadId,
        /// The entry's sequence number.
        seq: u64,
        /// Who sent it, as the hub authenticated them.
        sender: MemberId,
        /// Why it could not be read.
        error: crate::device::DecryptError,
    },
    /// The connection was (re-)established; delivery resumes from the cursor.
    Connected,
    /// The connection dropped; the SDK is reconnecting.
    Disconnected {
        /// Why, as far as the SDK knows.
        reason: String,
    },
}

impl Event {
    /// The thread and sequence number of a thread entry, for acknowledging it.
    pub fn position(&self) -> Option<(ThreadId, u64)> {
        match self {
            Self::Message(m) => Some((m.thread, m.seq)),
            Self::MemberAdded { thread, seq, .. }
            | Self::MemberRemoved { thread, seq, .. }
            | Self::Unreadable { thread, seq, .. }
            | Self::Handover { thread, seq, .. } => Some((*thread, *seq)),
            Self::Notice { inbox, seq, .. } => Some((*inbox, *seq)),
            Self::GroupLost { .. }
            | Self::Rejoined { .. }
            | Self::Joined { .. }
            | Self::Removed { .. }
            | Self::Connected
            | Self::Disconnected { .. }
            | Self::AuditAlarm(_) => None,
        }
    }
}

/// An async stream of [`Event`]s; ends when the client is closed.
#[derive(Debug)]
pub struct EventStream {
    pub(crate) receiver: mpsc::Receiver<Event>,
}

impl Stream for EventStream {
    type Item = Event;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Event>> {
        self.receiver.poll_recv(cx)
    }
}
