//! The frames exchanged over a connection.
//!
//! A client sends [`ClientFrame`]s; the hub sends [`HubFrame`]s. Requests carry
//! a client-chosen [`RequestId`] that the matching [`HubFrame::Reply`] repeats,
//! so a client may pipeline many requests. Thread entries arrive unasked as
//! [`HubFrame::Event`], in per-thread sequence order, from the member's cursor.
//! Every request is idempotent, so a client that lost its connection may send
//! it again after reconnecting.

use std::fmt;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{Identity, MemberId, Oin, WireError};

/// A client-chosen number that pairs a reply with its request.
pub type RequestId = u64;

/// A case thread's id: random, assigned by the hub, carrying no personal data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ThreadId(pub Uuid);

impl ThreadId {
    /// A fresh random thread id.
    pub fn random() -> Self {
        Self(Uuid::new_v4())
    }

    /// The inbox thread of organisation `oin`: the same id at every hub and in
    /// every client, derived from the OIN (SHA-256 of a label and the OIN, as a
    /// version-8 UUID), so that a client knows its organisation's inbox
    /// without asking. Only its members learn that it exists.
    pub fn inbox_of(oin: &Oin) -> Self {
        let digest =
            ring::digest::digest(&ring::digest::SHA256, format!("ketenhub-inbox-v1\0{}", oin.as_str()).as_bytes());
        let mut bytes = [0u8; 16];
        bytes.copy_from_slice(&digest.as_ref()[..16]);
        Self(uuid::Builder::from_custom_bytes(bytes).into_uuid())
    }
}

impl fmt::Display for ThreadId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Which of an identity's devices a connection is: named by the client in its
/// WebSocket request (`/?device=ID`), 1 to 64 characters of `[A-Za-z0-9_-]`.
/// Each device has its own delivery cursor. The empty id is the identity's
/// default device, for a client that names none.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct DeviceId(String);

impl DeviceId {
    /// The longest device id.
    pub const MAX_LEN: usize = 64;

    /// The id as sent.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether this is the identity's default device (no id named).
    pub fn is_default(&self) -> bool {
        self.0.is_empty()
    }
}

impl TryFrom<String> for DeviceId {
    type Error = String;
    fn try_from(value: String) -> Result<Self, String> {
        let allowed = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-';
        if value.len() <= Self::MAX_LEN && value.chars().all(allowed) {
            Ok(Self(value))
        } else {
            Err(format!("a device id is at most {} characters of [A-Za-z0-9_-]", Self::MAX_LEN))
        }
    }
}

impl From<DeviceId> for String {
    fn from(id: DeviceId) -> Self {
        id.0
    }
}

impl fmt::Display for DeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.is_default() { "(default)" } else { &self.0 })
    }
}

/// A message id: a UUIDv7 chosen by the sender, used to de-duplicate resends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct MessageId(pub Uuid);

impl MessageId {
    /// A fresh, time-ordered message id.
    pub fn new() -> Self {
        Self(Uuid::now_v7())
    }
}

impl Default for MessageId {
    fn default() -> Self {
        Self::new()
    }
}

/// An attachment blob's id: random, chosen by the uploader.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct BlobId(pub Uuid);

impl BlobId {
    /// A fresh random blob id.
    pub fn random() -> Self {
        Self(Uuid::new_v4())
    }
}

impl fmt::Display for BlobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A frame from a client to the hub.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientFrame {
    /// A request that the hub answers with a [`HubFrame::Reply`] carrying the same id.
    Request {
        /// Pairs the reply with this request.
        id: RequestId,
        /// What is asked.
        request: Request,
    },
    /// The client has processed every entry of `thread` up to and including
    /// `seq`; the hub resumes delivery after it on the next connection. No reply.
    Ack {
        /// The thread the cursor belongs to.
        thread: ThreadId,
        /// The highest sequence number processed.
        seq: u64,
    },
}

/// What a client may ask of the hub.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// Creates a case thread with the caller as its first member. `client_ref`
    /// makes the request idempotent: the same caller with the same reference
    /// gets the same thread back.
    CreateThread {
        /// A random reference chosen by the client.
        client_ref: Uuid,
    },
    /// Opens a side thread of a case: a thread with its own MLS group, linked
    /// to the case for ownership, audit and the access report, in which a
    /// limited recipient (a school, a GP) receives only what is shared in it.
    /// Only the case's owner opens one; idempotent by `client_ref` as
    /// [`Request::CreateThread`].
    OpenSideThread {
        /// The case it belongs to.
        case: ThreadId,
        /// A random reference chosen by the client.
        client_ref: Uuid,
        /// What it is for (recorded in the audit log, shown to its members).
        purpose: String,
    },
    /// Adds a member to a thread the caller is a member of.
    AddMember {
        /// The thread.
        thread: ThreadId,
        /// Who to add.
        member: MemberId,
        /// Why they are needed on the case (recorded in the audit log).
        reason: String,
        /// The legal basis for sharing with them; must be allowed on the policy's
        /// route from the adder's kind of agency to theirs.
        legal_basis: String,
    },
    /// Appends a message to a thread. The reply comes only once it is durable.
    Send {
        /// The thread.
        thread: ThreadId,
        /// The sender's id for this message; a resend with the same id is not stored twice.
        message: MessageId,
        /// Opaque bytes (MLS ciphertext once end-to-end encryption is on).
        #[serde(with = "serde_bytes")]
        payload: Vec<u8>,
    },
    /// Lists the threads the caller is a member of.
    ListThreads,
    /// Lists the members of a thread the caller is a member of.
    ListMembers {
        /// The thread.
        thread: ThreadId,
    },
    /// How far each member of a thread the caller is a member of has
    /// received it, so that a sender sees who has a message.
    DeliveryStatus {
        /// The thread.
        thread: ThreadId,
    },
    /// Stores MLS KeyPackages (TLS-encoded) for the caller. Each must be valid
    /// and carry the caller's own credential; otherwise none is stored. An
    /// empty list only asks how many the hub holds.
    UploadKeyPackages {
        /// The KeyPackages.
        key_packages: Vec<serde_bytes::ByteBuf>,
    },
    /// Registers the MLS group of a thread the caller has just created: the
    /// group's public state, from which the hub checks every later commit.
    InitGroup {
        /// The thread; also the MLS group id (its 16 bytes).
        thread: ThreadId,
        /// The group's GroupInfo (an MLS message, TLS-encoded).
        #[serde(with = "serde_bytes")]
        group_info: Vec<u8>,
        /// The group's ratchet tree (TLS-encoded).
        #[serde(with = "serde_bytes")]
        ratchet_tree: Vec<u8>,
    },
    /// An MLS commit (a public message) to the thread's group, with the
    /// Welcome for the members it adds. The hub accepts one commit per epoch.
    Commit {
        /// The thread.
        thread: ThreadId,
        /// The commit (an MLS message, TLS-encoded).
        #[serde(with = "serde_bytes")]
        commit: Vec<u8>,
        /// The Welcome for added members, if the commit adds any.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        welcome: Option<serde_bytes::ByteBuf>,
        /// The GroupInfo of the epoch the commit leads to (an MLS message,
        /// TLS-encoded, with the `external_pub` extension), signed by the
        /// committer: what a device that lost the group rejoins from (see
        /// [`Request::Rejoin`]). Required; the hub checks it against the group.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        group_info: Option<serde_bytes::ByteBuf>,
    },
    /// The GroupInfo of the thread's current epoch and its ratchet tree, for
    /// a device of a member that is not (or no longer) in the MLS group:
    /// a new device, or one whose state was lost or fell behind.
    GroupInfo {
        /// The thread.
        thread: ThreadId,
    },
    /// An MLS external commit by which a device of the caller joins the
    /// thread's group again (rule `external-join`): it carries only the
    /// ExternalInit and, at most, the Removes of the caller's own devices, and
    /// its new leaf is bound to the caller's certificate.
    Rejoin {
        /// The thread; the caller must be its member.
        thread: ThreadId,
        /// The external commit (an MLS public message, TLS-encoded).
        #[serde(with = "serde_bytes")]
        commit: Vec<u8>,
        /// The GroupInfo of the epoch it leads to, as for [`Request::Commit`].
        #[serde(with = "serde_bytes")]
        group_info: Vec<u8>,
    },
    /// Takes one KeyPackage of `member`, who must be a member of `thread`, as
    /// the caller is, to add it to the thread's MLS group. Each KeyPackage is
    /// handed out once.
    ClaimKeyPackage {
        /// The thread the member will join.
        thread: ThreadId,
        /// Whose KeyPackage.
        member: MemberId,
    },
    /// Stores one chunk of an attachment's ciphertext. Chunks go in order from
    /// 0; the chunk marked `last` seals the blob. The hub cannot read them: the
    /// key travels only inside the MLS message that refers to the blob.
    PutBlobChunk {
        /// The thread whose members may fetch the blob.
        thread: ThreadId,
        /// The blob.
        blob: BlobId,
        /// The chunk's position, from 0.
        index: u32,
        /// True for the final chunk.
        last: bool,
        /// The encrypted chunk.
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
    },
    /// A `system` identity's request made for a worker of its own organisation,
    /// who is then the actor for membership, policy and audit.
    OnBehalfOf {
        /// The worker acted for; the hub refuses one outside the system's organisation.
        member: MemberId,
        /// The request.
        request: Box<Request>,
    },
    /// The owner offers the case to another organisation (warm handover).
    OfferHandover {
        /// The case.
        thread: ThreadId,
        /// What is offered: receiver, route, basis, reason, justification, deadline.
        offer: crate::handover::OfferRequest,
    },
    /// The receiving organisation accepts or declines an offer addressed to it.
    AnswerOffer {
        /// The case.
        thread: ThreadId,
        /// The offer's number.
        offer: u32,
        /// True to accept; false to decline.
        accept: bool,
        /// Why, when declining.
        reason: Option<String>,
    },
    /// The receiver who accepted completes the handover and becomes owner.
    CompleteHandover {
        /// The case.
        thread: ThreadId,
        /// The offer's number.
        offer: u32,
        /// Whether the family was told who their contact is now.
        family: crate::handover::FamilyTold,
    },
    /// The owner reports a clock's work done (for example the GI's first contact).
    ReportDone {
        /// The case.
        thread: ThreadId,
        /// Which clock.
        clock: crate::handover::ClockKind,
        /// Which one of that kind, by its due date: needed for an evaluation while several run.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        due_ms: Option<u64>,
    },
    /// A former owner in its background role leaves the case, with a reason. It
    /// stays able to read what it already has; the owner's device removes it
    /// from the MLS group.
    LeaveCase {
        /// The case.
        thread: ThreadId,
        /// Why it leaves.
        reason: String,
    },
    /// The offer's sender (or the owner) withdraws an offer nobody answered yet.
    WithdrawOffer {
        /// The case.
        thread: ThreadId,
        /// The offer's number.
        offer: u32,
        /// Why.
        reason: String,
    },
    /// Either side cancels an accepted offer before completion: the owner
    /// stays owner and the receiver leaves the case.
    CancelOffer {
        /// The case.
        thread: ThreadId,
        /// The offer's number.
        offer: u32,
        /// Why.
        reason: String,
    },
    /// A team lead of the owner's organisation takes the case over from an
    /// owner who is away, with a recorded reason.
    TakeOver {
        /// The case.
        thread: ThreadId,
        /// Why (sick, left the organisation, …).
        reason: String,
    },
    /// The owner brings a consultant (another organisation) or a co-worker (its
    /// own) onto the case until an end date, or changes the end date of one
    /// taking part. The member comes onto the membership table at once; the
    /// owner's device then adds its devices to the MLS group with `add_member`.
    AddParticipant {
        /// The case.
        thread: ThreadId,
        /// The participant, its role, end date and reason.
        participant: crate::handover::Participant,
        /// The legal basis for sharing with it, as for `add_member`.
        legal_basis: String,
    },
    /// The owner closes the case with an outcome code from the policy and a
    /// reason; every member is told, nobody writes in it until it is reopened.
    CloseCase {
        /// The case.
        thread: ThreadId,
        /// The outcome code (the policy's `[closing] outcomes`).
        outcome: String,
        /// Why.
        reason: String,
    },
    /// The owner, or a team lead of its organisation, reopens a closed case
    /// within the policy's reopening period.
    ReopenCase {
        /// The case.
        thread: ThreadId,
        /// Why (a new report, the family back in view).
        reason: String,
    },
    /// Records, before the member's device sends it, that message `message`
    /// re-shares the earlier entries `seqs` of the case (their content, end to
    /// end encrypted, as a history share). The hub audits the disclosure to
    /// every current member whose membership began after one of them.
    RecordHistoryShare {
        /// The case.
        thread: ThreadId,
        /// The id the history share will be sent under.
        message: MessageId,
        /// The earlier entries it re-shares.
        seqs: Vec<u64>,
    },
    /// Calls a case conference (jeugdbeschermingstafel) on a case the caller
    /// owns: each invitee takes part until `until_ms`, for its reason, on
    /// `legal_basis` (decided for each as an add).
    CallConference {
        /// The case.
        thread: ThreadId,
        /// What it is about.
        topic: String,
        /// When the invitees' participation ends.
        until_ms: u64,
        /// Who is invited, and why.
        invited: Vec<crate::handover::Invitation>,
        /// The legal basis for sharing the case with them.
        legal_basis: String,
    },
    /// Records a case conference's regie decision, on a case the caller owns.
    RecordDecision {
        /// The case.
        thread: ThreadId,
        /// The conference's number.
        conference: u32,
        /// What it decided.
        decision: crate::handover::RegieDecision,
    },
    /// Registers a court measure's period, or a new end date (an extension),
    /// on a case the caller owns or accepted: the renewal clock is due the
    /// policy's days before the end.
    SetMeasure {
        /// The case.
        thread: ThreadId,
        /// The period.
        measure: crate::handover::Measure,
    },
    /// Registers a plan evaluation date on a case the caller owns or accepted:
    /// a clock that escalates when it is not reported done by then.
    ScheduleEvaluation {
        /// The case.
        thread: ThreadId,
        /// When, ms since the Unix epoch.
        due_ms: u64,
    },
    /// The owner schedules a VT re-check (rappel), the policy's days out.
    ScheduleRappel {
        /// The case.
        thread: ThreadId,
    },
    /// The case's ownership: owner, offers, background roles and clocks (members only).
    GetOwnership {
        /// The case.
        thread: ThreadId,
    },
    /// Offers waiting for the caller's organisation; for a privacy officer, the
    /// offers to or from its organisation made without consent (the review queue).
    ListOffers,
    /// Marks audit entry `entry`, an offer or an add on a legal basis
    /// without consent within the caller's scope, as reviewed, with the
    /// privacy officer's note; the review is itself an audit entry.
    MarkReviewed {
        /// The reviewed entry's sequence number in the audit log.
        entry: u64,
        /// What the officer found.
        note: String,
    },
    /// Asks for audit entries within the caller's scope (privacy officers).
    AuditQuery {
        /// What to select.
        filter: crate::audit::AuditFilter,
        /// The size of the last signed tree head the caller verified (0 for none): the reply proves its head
        /// consistent with it.
        #[serde(default)]
        known_size: u64,
    },
    /// Asks for the chain figures over the cases in the caller's scope (privacy officers), for the
    /// period from `since_ms` up to `until_ms`; cells below `limits.min_figure_count` are suppressed.
    ChainFigures {
        /// The first moment counted, ms since the Unix epoch.
        since_ms: u64,
        /// The end of the period (not counted), ms since the Unix epoch.
        until_ms: u64,
    },
    /// Asks for the latest signed tree head of the audit log and its consistency proof from `known_size`
    /// (privacy officers and `system` identities, which witness the log).
    AuditHead {
        /// The size of the last signed tree head the caller verified (0 for none).
        known_size: u64,
    },
    /// Fetches one chunk of a sealed blob; only current members of its thread may.
    GetBlobChunk {
        /// The thread the blob was uploaded to: blobs are kept per thread.
        thread: ThreadId,
        /// The blob.
        blob: BlobId,
        /// The chunk's position, from 0.
        index: u32,
    },
}

/// A frame from the hub to a client.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum HubFrame {
    /// The first frame on every accepted connection.
    Hello(Hello),
    /// The answer to the request with the same id.
    Reply {
        /// The request's id.
        id: RequestId,
        /// What came of it.
        result: Result<Reply, WireError>,
    },
    /// A thread entry, delivered in sequence order from the member's cursor.
    Event {
        /// The thread.
        thread: ThreadId,
        /// The entry.
        entry: Entry,
    },
    /// An error not tied to a request, such as a malformed frame.
    Error {
        /// What went wrong.
        error: WireError,
    },
}

/// What the hub tells a client when it accepts the connection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hello {
    /// The protocol version the hub speaks.
    pub protocol: u16,
    /// The identity the hub read from the client's certificate.
    pub identity: Identity,
    /// The limits that apply to this connection.
    pub limits: SessionLimits,
}

/// The limits a client must stay within, and the one the hub stays within.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionLimits {
    /// The largest frame the hub accepts, in bytes.
    pub max_frame_bytes: u64,
    /// The sustained number of frames per second a connection may send.
    pub frames_per_second: u32,
    /// How many frames a connection may send at once above the sustained rate.
    pub frames_burst: u32,
    /// How long a silent connection stays open, in milliseconds.
    pub idle_timeout_ms: u64,
    /// The largest attachment blob the hub stores, in bytes of ciphertext.
    pub max_blob_bytes: u64,
    /// The largest frame the hub sends, in bytes: a client reads frames up to
    /// this size. See [`max_hub_frame_bytes`].
    pub max_hub_frame_bytes: u64,
}

/// The room a hub frame has beyond the client payload it carries: an event or
/// a blob chunk wraps at most one client frame's bytes in well under this.
pub const HUB_FRAME_OVERHEAD_BYTES: u64 = 64 << 10;

/// The least `max_hub_frame_bytes` a hub announces: the SDK's default read
/// limit, room for replies that list many items (audit entries, offers).
pub const MIN_HUB_FRAME_BYTES: u64 = 4 << 20;

/// The largest hub frame for a hub accepting client frames of up to
/// `max_frame_bytes`: every event and blob chunk fits, since each carries at
/// most one client frame's payload; a reply that would not fit is answered
/// `frame_too_large` instead.
pub fn max_hub_frame_bytes(max_frame_bytes: u64) -> u64 {
    max_frame_bytes.saturating_add(HUB_FRAME_OVERHEAD_BYTES).max(MIN_HUB_FRAME_BYTES)
}

/// A successful answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Reply {
    /// The thread exists and the caller is its first member.
    ThreadCreated {
        /// The hub-assigned thread id.
        thread: ThreadId,
    },
    /// The member is on the thread; `seq` is the entry that recorded it.
    MemberAdded {
        /// The sequence number of the membership entry.
        seq: u64,
    },
    /// The review of audit entry `entry` is in the audit log.
    Reviewed {
        /// The reviewed entry.
        entry: u64,
        /// The case it is about.
        case: ThreadId,
    },
    /// A history share's disclosure is in the audit log: the members it discloses to.
    HistoryShareRecorded {
        /// The current members who did not hold every entry it re-shares.
        recipients: Vec<MemberId>,
    },
    /// The message is durable at `seq`.
    Sent {
        /// The sequence number the hub assigned.
        seq: u64,
        /// True when this message id had been stored before; nothing new was stored.
        duplicate: bool,
    },
    /// The caller's threads.
    Threads {
        /// One summary per thread.
        threads: Vec<ThreadSummary>,
    },
    /// A thread's members.
    Members {
        /// The members, in no particular order.
        members: Vec<MemberId>,
    },
    /// How far each current member of a thread has received it.
    Delivery {
        /// One per member, in no particular order.
        members: Vec<MemberDelivery>,
    },
    /// How many KeyPackages of the caller the hub holds after an upload.
    KeyPackagesStored {
        /// The number held.
        stock: u64,
    },
    /// The thread's MLS group is registered at `epoch` (0).
    GroupReady {
        /// The group's epoch.
        epoch: u64,
    },
    /// The commit was accepted: the group is now at `epoch`, and the commit is
    /// the thread entry `seq`.
    CommitAccepted {
        /// The new epoch.
        epoch: u64,
        /// The commit's entry.
        seq: u64,
    },
    /// The GroupInfo of the thread's current epoch, as its last committer
    /// signed it, and the group's ratchet tree as the hub holds it.
    GroupInfo {
        /// The epoch.
        epoch: u64,
        /// The GroupInfo (an MLS message, TLS-encoded).
        group_info: serde_bytes::ByteBuf,
        /// The ratchet tree (TLS-encoded).
        ratchet_tree: serde_bytes::ByteBuf,
    },
    /// A claimed KeyPackage (TLS-encoded).
    KeyPackage {
        /// The KeyPackage.
        key_package: serde_bytes::ByteBuf,
    },
    /// A blob chunk is stored durably (or was already).
    BlobChunkStored {
        /// The blob.
        blob: BlobId,
        /// The chunk's position.
        index: u32,
        /// True when the chunk was already stored and nothing new was written.
        duplicate: bool,
    },
    /// A case's ownership after the request.
    Ownership {
        /// The state.
        ownership: Box<crate::handover::Ownership>,
    },
    /// Offers, each with its case.
    Offers {
        /// The offers.
        offers: Vec<(ThreadId, crate::handover::Offer)>,
    },
    /// Audit entries, oldest first.
    AuditEntries {
        /// The entries, each covered by `head`.
        entries: Vec<crate::audit::AuditEntry>,
        /// True when more entries matched than were returned (or matched but are newer than `head`).
        truncated: bool,
        /// The latest signed tree head; `None` while the hub has signed none. (Boxed: replies stay small.)
        head: Option<Box<crate::audit::SignedTreeHead>>,
        /// The inclusion proof of each entry (same order) in the tree of `head`.
        proofs: Vec<crate::audit::Proof>,
        /// The consistency proof from the tree of the request's `known_size` to `head`.
        consistency: crate::audit::Proof,
    },
    /// The chain figures asked for. (Boxed: replies stay small.)
    ChainFigures {
        /// The figures.
        report: Box<crate::figures::ChainReport>,
    },
    /// The latest signed tree head.
    AuditHead {
        /// The head.
        head: Box<crate::audit::SignedTreeHead>,
        /// The consistency proof from the tree of the request's `known_size` to `head`.
        consistency: crate::audit::Proof,
    },
    /// One chunk of a blob.
    BlobChunk {
        /// The blob.
        blob: BlobId,
        /// The chunk's position.
        index: u32,
        /// True for the final chunk.
        last: bool,
        /// The encrypted chunk.
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
    },
}

/// A thread as seen by one member.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ThreadSummary {
    /// The thread.
    pub thread: ThreadId,
    /// The highest sequence number stored in it.
    pub last_seq: u64,
    /// The member's acknowledged cursor.
    pub cursor: u64,
    /// Set for a side thread: the case it belongs to and what it is for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub side: Option<SideThread>,
    /// Set for the caller's organisation's inbox (see [`ThreadId::inbox_of`]).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub inbox: bool,
}

/// How far one member has received a thread: the entries up to `any_device`
/// were acknowledged by at least one of its devices, those up to
/// `every_device` by each device seen within the idle period.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberDelivery {
    /// The member.
    pub member: MemberId,
    /// The highest entry any of its devices acknowledged.
    pub any_device: u64,
    /// The highest entry every recently seen device acknowledged.
    pub every_device: u64,
}

/// What links a side thread to its case.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SideThread {
    /// The case (thread) it belongs to.
    pub case: ThreadId,
    /// What it is for.
    pub purpose: String,
}

/// One entry of a thread's log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// The hub-assigned, gap-free sequence number within the thread, from 1.
    pub seq: u64,
    /// The id the sender chose (membership entries get one from the hub).
    pub id: MessageId,
    /// Who caused the entry.
    pub sender: MemberId,
    /// When the hub stored it, in milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// What happened.
    pub body: EntryBody,
}

/// The content of an entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum EntryBody {
    /// An application message: opaque bytes.
    Message {
        /// The payload as sent.
        #[serde(with = "serde_bytes")]
        payload: Vec<u8>,
    },
    /// A member was added to the thread.
    MemberAdded {
        /// The new member.
        member: MemberId,
    },
    /// A member was removed from the thread (by an MLS commit).
    MemberRemoved {
        /// The removed member.
        member: MemberId,
    },
    /// An MLS commit the hub accepted; the group is at `epoch` after it.
    Commit {
        /// The epoch the commit leads to.
        epoch: u64,
        /// The commit (an MLS message, TLS-encoded).
        #[serde(with = "serde_bytes")]
        commit: Vec<u8>,
    },
    /// A step of the case's warm handover (metadata only: no case content).
    Handover {
        /// What happened.
        event: crate::handover::HandoverEvent,
    },
    /// A notice in an organisation's inbox: an offer to it, or an escalation
    /// in one of its cases (metadata only, written by the hub alone).
    Notice {
        /// The case it is about.
        case: ThreadId,
        /// What it says.
        notice: crate::handover::Notice,
    },
    /// A message whose content the hub deleted under its retention policy,
    /// after every member had received it.
    Expired,
    /// An MLS Welcome, delivered only to the members it names.
    Welcome {
        /// Who may receive it.
        to: Vec<MemberId>,
        /// The Welcome (an MLS message, TLS-encoded).
        #[serde(with = "serde_bytes")]
        welcome: Vec<u8>,
    },
}

impl EntryBody {
    /// Whether `member` may receive this entry: everything but a Welcome goes
    /// to every member; a Welcome only to those it names.
    pub fn is_for(&self, member: &MemberId) -> bool {
        match self {
            Self::Welcome { to, .. } => to.contains(member),
            _ => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{decode, decode_frame, encode, AgencyKind, ErrorCode, Role};

    fn member() -> MemberId {
        MemberId::new("00000001234567890000", "anna.devries").unwrap()
    }

    #[test]
    fn every_client_frame_round_trips() {
        let thread = ThreadId::random();
        let frames = vec![
            ClientFrame::Request { id: 1, request: Request::CreateThread { client_ref: Uuid::new_v4() } },
            ClientFrame::Request {
                id: 2,
                request: Request::AddMember {
                    thread,
                    member: member(),
                    reason: "referral".into(),
                    legal_basis: "consent".into(),
                },
            },
            ClientFrame::Request {
                id: 3,
                request: Request::Send { thread, message: MessageId::new(), payload: vec![0, 1, 2, 255] },
            },
            ClientFrame::Request { id: 4, request: Request::ListThreads },
            ClientFrame::Request { id: 5, request: Request::ListMembers { thread } },
            ClientFrame::Request {
                id: 6,
                request: Request::UploadKeyPackages { key_packages: vec![serde_bytes::ByteBuf::from(vec![1, 2])] },
            },
            ClientFrame::Request { id: 7, request: Request::ClaimKeyPackage { thread, member: member() } },
            ClientFrame::Request {
                id: 8,
                request: Request::PutBlobChunk {
                    thread,
                    blob: BlobId::random(),
                    index: 2,
                    last: true,
                    data: vec![1, 2, 3],
                },
            },
            ClientFrame::Request {
                id: 9,
                request: Request::GetBlobChunk { thread: ThreadId::random(), blob: BlobId::random(), index: 0 },
            },
            ClientFrame::Ack { thread, seq: 9 },
        ];
        for frame in frames {
            assert_eq!(decode_frame::<ClientFrame>(&encode(&frame)).unwrap(), frame);
        }
    }

    #[test]
    fn every_hub_frame_round_trips() {
        let thread = ThreadId::random();
        let identity = Identity {
            oin: "00000001234567890000".parse().unwrap(),
            organisation: "Veilig Thuis Utrecht".into(),
            kind: AgencyKind::VT,
            worker: "anna.devries".into(),
            role: Role::Caseworker,
        };
        let limits = SessionLimits {
            max_frame_bytes: 1 << 20,
            frames_per_second: 100,
            frames_burst: 200,
            idle_timeout_ms: 60_000,
            max_blob_bytes: 1 << 30,
            max_hub_frame_bytes: max_hub_frame_bytes(1 << 20),
        };
        let entry = Entry {
            seq: 7,
            id: MessageId::new(),
            sender: member(),
            at_ms: 1,
            body: EntryBody::Message { payload: vec![7; 1024] },
        };
        let frames = vec![
            HubFrame::Hello(Hello { protocol: crate::PROTOCOL_VERSION, identity, limits }),
            HubFrame::Reply { id: 1, result: Ok(Reply::Sent { seq: 3, duplicate: false }) },
            HubFrame::Reply { id: 2, result: Err(WireError::thread_not_found()) },
            HubFrame::Reply { id: 3, result: Ok(Reply::Members { members: vec![member()] }) },
            HubFrame::Reply { id: 4, result: Ok(Reply::KeyPackagesStored { stock: 5 }) },
            HubFrame::Reply { id: 5, result: Ok(Reply::KeyPackage { key_package: vec![9, 9].into() }) },
            HubFrame::Reply {
                id: 6,
                result: Ok(Reply::BlobChunkStored { blob: BlobId::random(), index: 1, duplicate: false }),
            },
            HubFrame::Reply {
                id: 7,
                result: Ok(Reply::BlobChunk { blob: BlobId::random(), index: 0, last: true, data: vec![4] }),
            },
            HubFrame::Event { thread, entry },
            HubFrame::Event {
                thread,
                entry: Entry {
                    seq: 1,
                    id: MessageId::new(),
                    sender: member(),
                    at_ms: 1,
                    body: EntryBody::MemberAdded { member: member() },
                },
            },
            HubFrame::Error { error: WireError::new(ErrorCode::Malformed, "bad") },
        ];
        for frame in frames {
            assert_eq!(decode_frame::<HubFrame>(&encode(&frame)).unwrap(), frame);
        }
    }

    #[test]
    fn garbage_and_trailing_bytes_are_typed_errors() {
        assert!(decode::<ClientFrame>(&[0xff, 0x00, 0x13]).is_err());
        assert!(decode::<ClientFrame>(&[]).is_err());
        let mut bytes = encode(&ClientFrame::Ack { thread: ThreadId::random(), seq: 1 });
        bytes.push(0);
        assert!(decode::<ClientFrame>(&bytes).is_err());
    }

    #[test]
    fn a_bad_oin_inside_a_frame_is_refused() {
        let frame = ClientFrame::Request {
            id: 1,
            request: Request::AddMember {
                thread: ThreadId::random(),
                member: member(),
                reason: String::new(),
                legal_basis: String::new(),
            },
        };
        let bytes = encode(&frame);
        let tampered = String::from_utf8_lossy(&bytes).replace("00000001234567890000", "0000000123456789000x");
        assert!(decode::<ClientFrame>(tampered.as_bytes()).is_err());
    }
}
