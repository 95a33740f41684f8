//! The client handle and the task that drives its connection.
//!
//! [`Client`] is a cheap, cloneable handle. Behind it one driver task owns the
//! WebSocket: it writes requests, matches replies to them, turns thread entries
//! into [`Event`]s, and when the connection drops it reconnects with backoff,
//! sends again every request still waiting for an answer (all requests are
//! idempotent), and lets the hub resume delivery from the cursor. Entries the
//! application has already seen are dropped by sequence number, so each one
//! reaches the application once while the process lives.
//!
//! Reading is saved per burst, not per entry: the device state is written once
//! the connection has been quiet for a moment, or every [`SAVE_BURST`] entries,
//! and the application's acknowledgements go to the hub only after that write.
//! So nothing acknowledged is ever lost, and a process that dies mid-burst
//! sees the messages since its last write again after a restart (as it sees
//! every message it had not acknowledged); `Message::seq` tells them apart.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::sync::{mpsc, oneshot};
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tracing::{debug, warn};
use uuid::Uuid;
use wire::{
    ClientFrame, EntryBody, ErrorCode, HubFrame, Identity, MemberDelivery, MemberId, MessageId, Reply, Request,
    ThreadId, ThreadSummary, WireError,
};

use wire::handover::{
    ClockKind, FamilyTold, Invitation, Measure, Offer, OfferRequest, Ownership, Participant, ParticipantRole,
    RegieDecision,
};

use crate::builder::Settings;
use crate::content::Content;
use crate::device::{DecryptError, Device, DeviceError, Processed, Rejoin};
use crate::dial::{dial, WsStream};
use crate::event::{Event, EventStream, Message};
use crate::{ClientBuilder, Error};
use certs::binding::{BindingError, Bound, SafetyNumber};

/// Why someone is brought into a case: a reason and a legal basis, both
/// recorded in the hub's audit log. The basis must be allowed on the policy's
/// route between the two kinds of agency (for example `consent` from VT to LT).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grounds {
    /// Why they are needed, in a sentence.
    pub reason: String,
    /// The legal basis code from the policy, for example `consent`.
    pub legal_basis: String,
}

impl Grounds {
    /// Grounds with a reason and a legal basis code.
    pub fn new(reason: impl Into<String>, legal_basis: impl Into<String>) -> Self {
        Self { reason: reason.into(), legal_basis: legal_basis.into() }
    }
}

/// One answer to an audit query: the entries, oldest first, and whether more matched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditPage {
    /// The entries, each verified when the client witnesses the log.
    pub entries: Vec<wire::audit::AuditEntry>,
    /// Whether more entries matched than were returned: ask again after the last one's seq.
    pub truncated: bool,
    /// The size of the signed head the entries are proven against (0 without one): no entry lies beyond it.
    pub head_size: u64,
}

/// The answer to a send: where the message landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sent {
    /// The message id (chosen by the SDK unless given).
    pub id: MessageId,
    /// The sequence number the hub assigned.
    pub seq: u64,
    /// True when the hub already had this message id (a resend).
    pub duplicate: bool,
}

/// Where the answer to a submitted request arrives.
pub(crate) type Answer = oneshot::Receiver<Result<Reply, Error>>;

enum Command {
    Request { request: Request, reply: oneshot::Sender<Result<Reply, Error>> },
    Shutdown { done: oneshot::Sender<()> },
}

/// The device, shared by the API (which creates commits and encrypts) and the
/// driver (which processes incoming entries).
type SharedDevice = Arc<std::sync::Mutex<Device>>;

/// Plaintexts of this client's own recent messages, by id: MLS cannot decrypt
/// one's own messages, so their echo is shown from here.
type OwnMessages = Arc<std::sync::Mutex<HashMap<MessageId, Content>>>;

/// Acknowledgements the application gave that wait for the device state to be
/// saved, highest seq per thread. They bypass the request queue: an event loop
/// that acknowledges what it read must never wait for a driver that is itself
/// waiting for that loop to take the next event.
#[derive(Default)]
struct Acks {
    unsent: std::sync::Mutex<HashMap<ThreadId, u64>>,
    given: tokio::sync::Notify,
}

impl Acks {
    fn give(&self, thread: ThreadId, seq: u64) {
        let mut unsent = self.unsent.lock().unwrap_or_else(|p| p.into_inner());
        let highest = unsent.entry(thread).or_default();
        *highest = (*highest).max(seq);
        drop(unsent);
        self.given.notify_one();
    }

    fn any(&self) -> bool {
        !self.unsent.lock().unwrap_or_else(|p| p.into_inner()).is_empty()
    }

    fn take(&self) -> HashMap<ThreadId, u64> {
        std::mem::take(&mut *self.unsent.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

/// Own plaintexts kept for their echo, at most.
const OWN_MESSAGES: usize = 4096;

/// Attempts at claiming a KeyPackage of a member that has none at the hub yet.
const CLAIM_ATTEMPTS: usize = 10;

/// Attempts at a commit when others' commits keep winning the epoch.
const COMMIT_ATTEMPTS: usize = 8;

fn lock_device(device: &SharedDevice) -> std::sync::MutexGuard<'_, Device> {
    device.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn device_error(e: impl std::fmt::Display) -> Error {
    Error::Device(e.to_string())
}

fn unbound_or_device(e: DeviceError) -> Error {
    match e {
        DeviceError::Unbound(why) => Error::Unbound(why),
        other => device_error(other),
    }
}

struct Inner {
    commands: mpsc::Sender<Command>,
    acks: Arc<Acks>,
    /// Stops the connection when closing politely takes too long.
    driver: tokio::task::AbortHandle,
    identity: Identity,
    device: SharedDevice,
    own: OwnMessages,
    key_package_stock: u64,
    events: Mutex<Option<mpsc::Receiver<Event>>>,
    request_timeout: Duration,
    /// The audit log's witness, for privacy officers and opted-in systems given the audit key.
    witness: Option<Arc<crate::witness::Witness>>,
    /// Where a failed witness check is reported as an event, besides the failing call.
    alarms: mpsc::WeakSender<Event>,
}

/// A connection to the hub, shared by cloning.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
    /// For a `system` identity: the worker of its organisation it acts for.
    on_behalf_of: Option<MemberId>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client").field("identity", &self.inner.identity).finish_non_exhaustive()
    }
}

impl Client {
    /// Starts configuring a client.
    pub fn builder() -> ClientBuilder {
        ClientBuilder::default()
    }

    /// For an agency's case system (a `system` identity): a handle on the same
    /// connection whose requests act for `worker` of the system's own
    /// organisation. The hub checks the organisation and records both in the
    /// audit log. MLS content is still this device's: the worker's own device
    /// reads and writes messages.
    pub fn on_behalf_of(&self, worker: &str) -> Client {
        let member = MemberId { oin: self.inner.identity.oin.clone(), worker: worker.to_owned() };
        Client { inner: self.inner.clone(), on_behalf_of: Some(member) }
    }

    pub(crate) async fn connect(mut settings: Settings) -> Result<Self, Error> {
        let binder = match &settings.binder {
            Ok(binder) => binder,
            // The hub's refusal (no certificate, say) says more than the missing binder.
            Err(e) => return Err(dial(&settings).await.err().unwrap_or_else(|| Error::Config(e.clone()))),
        };
        let (dir, key) = (settings.state_dir.as_deref(), settings.state_key.as_ref());
        let device = Device::open_sealed(binder, settings.verifier.clone(), dir, key).map_err(|e| match e {
            DeviceError::WrongKey(_) | DeviceError::KeyRequired(_) => Error::StateKey(e.to_string()),
            other => Error::Device(other.to_string()),
        })?;
        let identity = binder.identity().member_id();
        // Every connection of this device, reconnections too, names it: the hub keeps its cursors apart.
        settings.url = with_device(&settings.url, &device.device_id());
        let (ws, hello) = dial(&settings).await?;
        if identity != hello.identity.member_id() {
            return Err(Error::Protocol(format!(
                "the hub greets this client as {}, but its certificate is {identity}'s",
                hello.identity.member_id(),
            )));
        }
        let key_package_stock = settings.key_package_stock;
        let device: SharedDevice = Arc::new(std::sync::Mutex::new(device));
        let own: OwnMessages = Arc::default();
        let (commands, command_rx) = mpsc::channel(256);
        let (event_tx, event_rx) = mpsc::channel(settings.event_buffer);
        let request_timeout = settings.request_timeout;
        let member = hello.identity.member_id();
        let witnesses = settings.witness_any_role || hello.identity.role == wire::Role::PrivacyOfficer;
        let witness = match settings.witness_key.filter(|_| witnesses) {
            Some(key) => {
                Some(Arc::new(crate::witness::Witness::open(key, settings.state_dir.as_deref()).map_err(Error::Audit)?))
            }
            None => None,
        };
        // Weak, so that the stream ends when the driver stops (see `EventStream`).
        let alarms = event_tx.downgrade();
        let (rejoins, rejoin_rx) = mpsc::channel(REJOIN_QUEUE);
        let acks = Arc::new(Acks::default());
        let channels = Channels { commands: command_rx, events: event_tx, acks: acks.clone(), rejoins };
        let driver = Driver::new(settings, channels, device.clone(), own.clone(), member);
        let driver = tokio::spawn(driver.run(ws)).abort_handle();
        let client = Self {
            inner: Arc::new(Inner {
                commands,
                acks,
                driver,
                identity: hello.identity,
                device,
                own,
                key_package_stock,
                events: Mutex::new(Some(event_rx)),
                request_timeout,
                witness,
                alarms,
            }),
            on_behalf_of: None,
        };
        if client.inner.witness.is_some() {
            // Checked at once, so that a log truncated while this client was away is found without waiting
            // for the next query; a failure arrives as an event (and again at the next call).
            let witnessing = client.clone();
            tokio::spawn(async move {
                if let Err(e) = witnessing.witness_audit().await {
                    warn!("audit witness check after connecting failed: {e}");
                }
            });
        }
        // Privacy officers and operators are never added to a case: they need no KeyPackages and join no group.
        if matches!(client.identity().role, wire::Role::Caseworker | wire::Role::System) {
            // In the background: a backlog of events may fill the event buffer
            // before the application has taken the stream, and replies queue behind events.
            let topping_up = client.clone();
            tokio::spawn(async move {
                if let Err(e) = topping_up.top_up_key_packages().await {
                    warn!("could not top up KeyPackages at the hub: {e}");
                }
            });
            tokio::spawn(rejoin_in_background(Arc::downgrade(&client.inner), rejoin_rx));
        }
        Ok(client)
    }

    /// Uploads fresh KeyPackages until the hub holds the configured stock; the
    /// SDK starts this when it connects. Returns the stock.
    pub async fn top_up_key_packages(&self) -> Result<u64, Error> {
        let stock = self.upload_key_packages(Vec::new()).await?;
        let missing = self.inner.key_package_stock.saturating_sub(stock) as usize;
        if missing == 0 {
            return Ok(stock);
        }
        let packages = self.device().key_packages(missing).map_err(|e| Error::Device(e.to_string()))?;
        self.upload_key_packages(packages).await
    }

    fn device(&self) -> std::sync::MutexGuard<'_, Device> {
        lock_device(&self.inner.device)
    }

    /// Uploads KeyPackages (TLS-encoded); returns how many the hub now holds
    /// for this identity. An empty list only asks.
    pub async fn upload_key_packages(&self, packages: Vec<Vec<u8>>) -> Result<u64, Error> {
        let key_packages = packages.into_iter().map(serde_bytes::ByteBuf::from).collect();
        match self.request(Request::UploadKeyPackages { key_packages }).await? {
            Reply::KeyPackagesStored { stock } => Ok(stock),
            other => Err(unexpected(other)),
        }
    }

    /// Claims one KeyPackage of `member`, a member of `thread`, to add its
    /// device to the thread's MLS group.
    pub async fn claim_key_package(&self, thread: ThreadId, member: MemberId) -> Result<Vec<u8>, Error> {
        match self.request(Request::ClaimKeyPackage { thread, member }).await? {
            Reply::KeyPackage { key_package } => Ok(key_package.into_vec()),
            other => Err(unexpected(other)),
        }
    }

    /// The identity the hub read from this client's certificate.
    pub fn identity(&self) -> &Identity {
        &self.inner.identity
    }

    /// This client's member id, as other members address it.
    pub fn member_id(&self) -> MemberId {
        self.inner.identity.member_id()
    }

    /// This device's id at the hub (see [`Device::device_id`]).
    pub fn device_id(&self) -> wire::DeviceId {
        self.device().device_id()
    }

    /// The epoch of the thread's MLS group on this device, or `None` when this
    /// device is not (yet) in the group.
    pub fn epoch(&self, thread: ThreadId) -> Option<u64> {
        self.device().epoch(thread)
    }

    /// The stream of events. It can be taken once; later calls return `None`.
    ///
    /// Events arrive on the same connection as replies, in order: while the
    /// event buffer is full the SDK stops reading, and replies wait too. Take the
    /// stream and keep consuming it, or build the client with
    /// [`ClientBuilder::discard_events`].
    pub fn events(&self) -> Option<EventStream> {
        let receiver = self.inner.events.lock().unwrap_or_else(|p| p.into_inner()).take()?;
        Some(EventStream { receiver })
    }

    pub(crate) async fn request(&self, request: Request) -> Result<Reply, Error> {
        let pending = self.submit(request).await?;
        self.answer(pending).await
    }

    /// Queues a request for the connection; requests submitted one after
    /// another reach the hub in that order. Await the answer with [`Self::answer`].
    pub(crate) async fn submit(&self, request: Request) -> Result<Answer, Error> {
        let request = match &self.on_behalf_of {
            Some(member) => Request::OnBehalfOf { member: member.clone(), request: Box::new(request) },
            None => request,
        };
        let (reply, answer) = oneshot::channel();
        self.inner.commands.send(Command::Request { request, reply }).await.map_err(|_| Error::Closed)?;
        Ok(answer)
    }

    /// The answer to a submitted request, within the request timeout.
    pub(crate) async fn answer(&self, pending: Answer) -> Result<Reply, Error> {
        timeout(self.inner.request_timeout, pending).await.map_err(|_| Error::Timeout)?.map_err(|_| Error::Closed)?
    }

    /// Creates a case thread with this client as its first member, and the
    /// thread's MLS group.
    pub async fn create_thread(&self) -> Result<ThreadId, Error> {
        self.open_thread(Request::CreateThread { client_ref: Uuid::new_v4() }).await
    }

    /// Opens a side thread of `case`, which this client owns, for `purpose`:
    /// a thread with its own MLS group in which a limited recipient (a school,
    /// a GP) is added with [`Client::add_member`] and receives only what is
    /// sent there. The case's audit entries and access report include it.
    pub async fn open_side_thread(&self, case: ThreadId, purpose: &str) -> Result<ThreadId, Error> {
        let request = Request::OpenSideThread { case, client_ref: Uuid::new_v4(), purpose: purpose.to_owned() };
        self.open_thread(request).await
    }

    /// Brings the case's owner into every side thread of `case` this client
    /// is on and the owner is not: what a former owner's device does once
    /// regie moved (a completed handover, a takeover), because the new owner
    /// cannot join a group by itself and the limited recipient may not know
    /// of the move. Returns the side threads it brought the owner into.
    pub async fn follow_owner(&self, case: ThreadId) -> Result<Vec<ThreadId>, Error> {
        let owner = self.ownership(case).await?.owner;
        let grounds = Grounds::new("regie over the case moved to its new owner", wire::handover::FOLLOWS_OWNER_BASIS);
        let mut brought = Vec::new();
        for summary in self.threads().await? {
            let of_case = summary.side.as_ref().is_some_and(|s| s.case == case);
            if of_case && owner != self.member_id() && !self.device().has_member(summary.thread, &owner) {
                self.add_member(summary.thread, owner.clone(), &grounds).await?;
                brought.push(summary.thread);
            }
        }
        Ok(brought)
    }

    /// Creates a thread by `request` and then its MLS group.
    async fn open_thread(&self, request: Request) -> Result<ThreadId, Error> {
        let thread = match self.request(request).await? {
            Reply::ThreadCreated { thread } => thread,
            other => return Err(unexpected(other)),
        };
        let (group_info, ratchet_tree) = self.device().create_group(thread).map_err(device_error)?;
        match self.request(Request::InitGroup { thread, group_info, ratchet_tree }).await {
            Ok(Reply::GroupReady { .. }) => Ok(thread),
            // A resend after a reconnect finds the group registered by the first attempt.
            Err(Error::Hub(e)) if e.code == ErrorCode::Conflict => Ok(thread),
            Ok(other) => Err(unexpected(other)),
            Err(e) => Err(e),
        }
    }

    /// Adds a member to a thread, for the stated reason and on a legal basis the
    /// hub's policy allows between the two organisations: on the hub's membership table, then to the
    /// thread's MLS group with one of its KeyPackages. Returns the seq of the
    /// membership entry. From then on the member can read what is sent, and
    /// nothing sent before.
    pub async fn add_member(&self, thread: ThreadId, member: MemberId, grounds: &Grounds) -> Result<u64, Error> {
        let request = Request::AddMember {
            thread,
            member: member.clone(),
            reason: grounds.reason.clone(),
            legal_basis: grounds.legal_basis.clone(),
        };
        let seq = match self.request(request).await? {
            Reply::MemberAdded { seq } => seq,
            other => return Err(unexpected(other)),
        };
        for _ in 0..COMMIT_ATTEMPTS {
            if self.device().has_member(thread, &member) {
                return Ok(seq);
            }
            let key_package = self.claim_key_package_patiently(thread, &member).await?;
            let verified = wire::mls::verify_key_package(&key_package).map_err(|e| Error::Protocol(e.to_string()))?;
            if verified.member != member {
                return Err(Error::Protocol(format!(
                    "the hub handed out a KeyPackage of {} for {member}",
                    verified.member
                )));
            }
            let commit = self.device().add(thread, verified.key_package).map_err(unbound_or_device)?;
            if self.commit(thread, commit).await? {
                return Ok(seq);
            }
        }
        Err(Error::Hub(WireError::new(ErrorCode::StaleEpoch, "other commits kept winning; try again")))
    }

    /// Removes a member from the thread's MLS group, and with it from the hub's
    /// membership table. It can read nothing sent afterwards.
    pub async fn remove_member(&self, thread: ThreadId, member: MemberId) -> Result<(), Error> {
        for _ in 0..COMMIT_ATTEMPTS {
            if !self.device().has_member(thread, &member) {
                return Ok(());
            }
            let commit = self.device().remove(thread, &member).map_err(device_error)?;
            if self.commit(thread, commit).await? {
                return Ok(());
            }
        }
        Err(Error::Hub(WireError::new(ErrorCode::StaleEpoch, "other commits kept winning; try again")))
    }

    /// Claims a KeyPackage, waiting a little when the member has none at the
    /// hub yet: a device uploads its stock just after it connects.
    async fn claim_key_package_patiently(&self, thread: ThreadId, member: &MemberId) -> Result<Vec<u8>, Error> {
        let mut wait = Duration::from_millis(20);
        for _ in 0..CLAIM_ATTEMPTS {
            match self.claim_key_package(thread, member.clone()).await {
                Err(e) if e.code() == Some(ErrorCode::NoKeyPackage) => tokio::time::sleep(wait).await,
                other => return other,
            }
            wait = (wait * 2).min(Duration::from_millis(500));
        }
        self.claim_key_package(thread, member.clone()).await
    }

    /// Sends a commit. `Ok(true)` when the hub accepted it; `Ok(false)` when
    /// another commit took the epoch first: the pending commit is dropped once
    /// this device has caught up with the group, and the caller may retry.
    async fn commit(&self, thread: ThreadId, commit: crate::device::Commit) -> Result<bool, Error> {
        let request = Request::Commit {
            thread,
            commit: commit.commit,
            welcome: commit.welcome.map(serde_bytes::ByteBuf::from),
            group_info: Some(commit.group_info.into()),
        };
        match self.request(request).await {
            Ok(Reply::CommitAccepted { .. }) => {
                self.device().commit_accepted(thread).map_err(device_error)?;
                Ok(true)
            }
            Err(Error::Hub(e)) if e.code == ErrorCode::StaleEpoch => {
                // The winning commit arrives as an event; a resend of our own,
                // already accepted commit also ends here and merges on arrival.
                self.wait_for_epoch(thread, e.epoch.unwrap_or(0)).await?;
                self.device().commit_abandoned(thread).map_err(device_error)?;
                Ok(false)
            }
            Ok(other) => Err(unexpected(other)),
            Err(e) => {
                self.device().commit_abandoned(thread).map_err(device_error)?;
                Err(e)
            }
        }
    }

    /// Joins the thread's MLS group again by an external commit, from the
    /// GroupInfo the hub keeps (see [`Device::rejoin`]); returns the epoch
    /// joined. The SDK does this by itself for a device that is not in the
    /// group of a thread its identity is a member of (a new device, a lost
    /// state) and for one that cannot follow the group (a commit it cannot
    /// process), and reports it as [`Event::Rejoined`]. What was sent before
    /// is not readable on this device.
    pub async fn rejoin(&self, thread: ThreadId) -> Result<u64, Error> {
        match self.rejoin_at(thread, Rejoin::Always).await? {
            Some((epoch, _)) => Ok(epoch),
            None => Err(Error::Protocol("the device made no rejoin".into())),
        }
    }

    /// Rejoins when `mode` says so (see [`Rejoin`]); returns the epoch joined
    /// and the rejoin's entry.
    async fn rejoin_at(&self, thread: ThreadId, mode: Rejoin) -> Result<Option<(u64, u64)>, Error> {
        for _ in 0..COMMIT_ATTEMPTS {
            let (group_info, ratchet_tree) = match self.request(Request::GroupInfo { thread }).await? {
                Reply::GroupInfo { group_info, ratchet_tree, .. } => (group_info, ratchet_tree),
                other => return Err(unexpected(other)),
            };
            let made = self.device().rejoin(thread, (&group_info, &ratchet_tree), mode);
            let Some(made) = made.map_err(unbound_or_device)? else { return Ok(None) };
            let request = Request::Rejoin { thread, commit: made.commit, group_info: made.group_info };
            let answer = self.request(request).await;
            if !matches!(answer, Ok(Reply::CommitAccepted { .. })) {
                // Refused, or unknown after a lost connection: a later rejoin removes the leaf if it did land.
                self.device().forget(thread).map_err(device_error)?;
            }
            match answer {
                Ok(Reply::CommitAccepted { epoch, seq }) => return Ok(Some((epoch, seq))),
                Err(Error::Hub(e)) if e.code == ErrorCode::StaleEpoch => continue,
                Ok(other) => return Err(unexpected(other)),
                Err(e) => return Err(e),
            }
        }
        Err(Error::Hub(WireError::new(ErrorCode::StaleEpoch, "other commits kept winning; try again")))
    }

    async fn wait_for_epoch(&self, thread: ThreadId, epoch: u64) -> Result<(), Error> {
        let deadline = tokio::time::Instant::now() + self.inner.request_timeout;
        while self.device().epoch(thread).unwrap_or(0) < epoch {
            if tokio::time::Instant::now() > deadline {
                return Err(Error::Timeout);
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        Ok(())
    }

    /// Encrypts application-defined bytes for the thread's members and sends
    /// them; returns once the hub has stored the ciphertext durably.
    pub async fn send(&self, thread: ThreadId, data: impl Into<Vec<u8>>) -> Result<Sent, Error> {
        self.send_content(thread, Content::Bytes { data: data.into() }).await
    }

    /// The MLS ciphertext a [`Client::send`] of `data` would carry, without
    /// sending it: for a client that sends it itself over a
    /// [`RawConnection`](crate::raw::RawConnection), such as a load generator that
    /// measures the hub's routing without the cost of encryption. Each call
    /// uses up one generation of the device's sending ratchet, as a send does,
    /// so ciphertexts should be sent, and in the order they were made: the
    /// members' devices accept only a few out of order, and skip at most a
    /// thousand generations. A ciphertext is for the group's current epoch;
    /// after a commit the hub refuses it as `stale_epoch`, and unlike
    /// [`Client::send`] nothing encrypts it again.
    pub fn encrypt(&self, thread: ThreadId, data: impl Into<Vec<u8>>) -> Result<Vec<u8>, Error> {
        let plaintext = Content::Bytes { data: data.into() }.encode();
        self.device().encrypt(thread, &plaintext).map_err(device_error)
    }

    /// Sends a text message.
    pub async fn send_text(&self, thread: ThreadId, text: &str) -> Result<Sent, Error> {
        self.send_content(thread, Content::Text { text: text.to_owned() }).await
    }

    /// Sends any kind of content.
    pub async fn send_content(&self, thread: ThreadId, content: Content) -> Result<Sent, Error> {
        self.send_with_id(thread, MessageId::new(), content).await
    }

    /// Sends content under a given id. Sending the same id again stores nothing new.
    pub async fn send_with_id(&self, thread: ThreadId, id: MessageId, content: Content) -> Result<Sent, Error> {
        let plaintext = content.encode();
        {
            let mut own = self.inner.own.lock().unwrap_or_else(|p| p.into_inner());
            if own.len() >= OWN_MESSAGES {
                own.clear();
            }
            own.insert(id, content);
        }
        for _ in 0..COMMIT_ATTEMPTS {
            let payload = self.device().encrypt(thread, &plaintext).map_err(device_error)?;
            match self.request(Request::Send { thread, message: id, payload }).await {
                Ok(Reply::Sent { seq, duplicate }) => return Ok(Sent { id, seq, duplicate }),
                // Encrypted for an epoch the group has left (a member was added or
                // removed meanwhile): catch up and encrypt again for the current members.
                Err(Error::Hub(e)) if e.code == ErrorCode::StaleEpoch => {
                    self.wait_for_epoch(thread, e.epoch.unwrap_or(0)).await?;
                }
                Ok(other) => return Err(unexpected(other)),
                Err(e) => return Err(e),
            }
        }
        Err(Error::Hub(WireError::new(ErrorCode::StaleEpoch, "the group kept changing; try again")))
    }

    /// Re-shares earlier messages, on purpose, with the members who joined
    /// after them (MLS gives a new member no history): the hub first audits
    /// the disclosure (which entries, to whom, never their content), then the
    /// items travel end to end encrypted as one [`Content::HistoryShare`],
    /// in their original order. Every current member's device receives it, and
    /// the hub names as recipients those whose membership began after one of
    /// the items; they are returned with the send.
    pub async fn share_history(
        &self,
        thread: ThreadId,
        mut items: Vec<crate::content::SharedItem>,
    ) -> Result<(Sent, Vec<MemberId>), Error> {
        items.sort_by_key(|i| i.seq);
        items.dedup_by_key(|i| i.seq);
        if items.is_empty() || items.iter().any(|i| matches!(i.content, Content::HistoryShare(_))) {
            return Err(Error::Invalid(
                "a history share holds one or more earlier messages, and no other share".into(),
            ));
        }
        let message = MessageId::new();
        let seqs = items.iter().map(|i| i.seq).collect();
        let recipients = match self.request(Request::RecordHistoryShare { thread, message, seqs }).await? {
            Reply::HistoryShareRecorded { recipients } => recipients,
            other => return Err(unexpected(other)),
        };
        let sent =
            self.send_with_id(thread, message, Content::HistoryShare(crate::content::HistoryShare { items })).await?;
        Ok((sent, recipients))
    }

    /// Sends a handover packet after checking it is complete and consistent on
    /// `today`: an incomplete packet is refused with every missing or wrong field.
    pub async fn send_packet(
        &self,
        thread: ThreadId,
        packet: crate::packet::HandoverPacket,
        today: crate::packet::Date,
    ) -> Result<Sent, Error> {
        packet.validate(today).map_err(Error::Packet)?;
        self.send_content(thread, Content::HandoverPacket(Box::new(packet))).await
    }

    /// Confirms a packet's attachment: `attachment` (received in `thread`) is
    /// the one `reference` names, it decrypts, and its content has the named
    /// SHA-256; the verified file is written to `dest`.
    pub async fn confirm_attachment(
        &self,
        thread: ThreadId,
        reference: &crate::packet::AttachmentRef,
        attachment: &crate::Attachment,
        dest: impl AsRef<std::path::Path>,
    ) -> Result<crate::Fetched, Error> {
        if !reference.names(attachment) {
            return Err(crate::AttachmentError::HashMismatch.into());
        }
        self.fetch_attachment(thread, attachment, dest).await
    }

    /// Offers the case to another organisation (warm handover). This client's
    /// worker must own the case; it stays owner until the receiver completes.
    pub async fn offer_handover(&self, thread: ThreadId, offer: OfferRequest) -> Result<Ownership, Error> {
        self.ownership_request(Request::OfferHandover { thread, offer }).await
    }

    /// Accepts an offer addressed to this client's organisation: the worker joins
    /// the case's membership (the sender's device then adds it to the MLS group
    /// and sends the handover packet). The sender stays owner until completion.
    pub async fn accept_offer(&self, thread: ThreadId, offer: u32) -> Result<Ownership, Error> {
        self.ownership_request(Request::AnswerOffer { thread, offer, accept: true, reason: None }).await
    }

    /// Declines an offer, with a reason; the sender stays owner and is notified.
    pub async fn decline_offer(&self, thread: ThreadId, offer: u32, reason: &str) -> Result<Ownership, Error> {
        let request = Request::AnswerOffer { thread, offer, accept: false, reason: Some(reason.to_owned()) };
        self.ownership_request(request).await
    }

    /// Completes an accepted handover: this worker becomes owner. `family` says
    /// whether the family was told who their contact is now (or why not).
    pub async fn complete_handover(
        &self,
        thread: ThreadId,
        offer: u32,
        family: FamilyTold,
    ) -> Result<Ownership, Error> {
        self.ownership_request(Request::CompleteHandover { thread, offer, family }).await
    }

    /// Completes an accepted handover with what each family member was told, or why not, instead of one
    /// yes or no for the whole family. The records go into the case's thread first, end to end
    /// encrypted, then the completion tells the hub whether the family was told, referring to them:
    /// told when anyone was, and otherwise why not, pointing at the records' message. Returns the
    /// records' message and the case's ownership.
    pub async fn complete_informed(
        &self,
        thread: ThreadId,
        offer: u32,
        records: Vec<crate::packet::Informed>,
    ) -> Result<(Sent, Ownership), Error> {
        let incomplete = |why: &str| Error::Invalid(format!("the information records are incomplete: {why}"));
        if records.is_empty() {
            return Err(incomplete("none given"));
        }
        if let Some(record) = records.iter().find(|r| !crate::packet::Informed::is_complete(r)) {
            return Err(incomplete(&format!("the record of {:?} leaves a field empty", record.member)));
        }
        let told = records.iter().any(|r| r.outcome.was_told());
        let sent = self.send_content(thread, Content::Informed { offer, records }).await?;
        let family = if told {
            FamilyTold::Yes
        } else {
            FamilyTold::No { reason: format!("nobody could be told yet; why is recorded in message {}", sent.id) }
        };
        Ok((sent, self.complete_handover(thread, offer, family).await?))
    }

    /// Reports a clock's work done, for example the first face-to-face contact
    /// (by the owner, or by the receiver who accepted the case).
    pub async fn report_done(&self, thread: ThreadId, clock: ClockKind) -> Result<Ownership, Error> {
        self.ownership_request(Request::ReportDone { thread, clock, due_ms: None }).await
    }

    /// Reports the plan evaluation due at `due_ms` done: while several
    /// evaluations run, the hub needs to know which one.
    pub async fn report_evaluation_done(&self, thread: ThreadId, due_ms: u64) -> Result<Ownership, Error> {
        let clock = ClockKind::Evaluation;
        self.ownership_request(Request::ReportDone { thread, clock, due_ms: Some(due_ms) }).await
    }

    /// Leaves a case this worker handed over (from its background role), with a
    /// reason. The owner's device then removes it from the MLS group.
    pub async fn leave_case(&self, thread: ThreadId, reason: &str) -> Result<Ownership, Error> {
        self.ownership_request(Request::LeaveCase { thread, reason: reason.to_owned() }).await
    }

    /// Withdraws an offer nobody answered yet, with a reason, as its sender or
    /// the case's owner (a team lead withdraws the reassignment it offered).
    pub async fn withdraw_offer(&self, thread: ThreadId, offer: u32, reason: &str) -> Result<Ownership, Error> {
        self.ownership_request(Request::WithdrawOffer { thread, offer, reason: reason.to_owned() }).await
    }

    /// Cancels an accepted offer before completion, with a reason: as its
    /// sender, the case's owner, or the receiver who accepted it. The owner
    /// stays owner and the receiver leaves the case.
    pub async fn cancel_offer(&self, thread: ThreadId, offer: u32, reason: &str) -> Result<Ownership, Error> {
        self.ownership_request(Request::CancelOffer { thread, offer, reason: reason.to_owned() }).await
    }

    /// Takes a case of the caller's organisation over from an owner who is
    /// away, as a team lead (`team_leads` in the hub's policy), with the reason
    /// recorded and audited. The lead becomes owner at once; the former owner
    /// keeps a background role. A member of the case then adds the lead's
    /// device to the case's group with [`Client::add_member`].
    pub async fn take_over(&self, thread: ThreadId, reason: &str) -> Result<Ownership, Error> {
        self.ownership_request(Request::TakeOver { thread, reason: reason.to_owned() }).await
    }

    /// The owner brings `member` onto the case as a consultant (of another
    /// organisation) or co-worker (of its own) until `until_ms`, for the
    /// stated reason and legal basis, and adds its devices to the MLS group.
    /// Called again for someone taking part, it changes the end date. At the
    /// end date the hub ends the membership and this device is prompted
    /// ([`crate::Event::MemberRemoved`]) to remove its devices.
    pub async fn add_participant(
        &self,
        thread: ThreadId,
        member: MemberId,
        (role, until_ms): (ParticipantRole, u64),
        grounds: &Grounds,
    ) -> Result<Ownership, Error> {
        let participant = Participant { member: member.clone(), role, until_ms, reason: grounds.reason.clone() };
        let request = Request::AddParticipant { thread, participant, legal_basis: grounds.legal_basis.clone() };
        self.ownership_request(request).await?;
        self.add_member(thread, member, grounds).await?;
        self.ownership(thread).await
    }

    /// The owner closes the case with an outcome code from the policy and a
    /// reason: every member is told, clocks stop, and nobody writes in it until
    /// it is reopened. After the policy's reopening period the hub archives it
    /// and every membership ends.
    pub async fn close_case(&self, thread: ThreadId, outcome: &str, reason: &str) -> Result<Ownership, Error> {
        let request = Request::CloseCase { thread, outcome: outcome.to_owned(), reason: reason.to_owned() };
        self.ownership_request(request).await
    }

    /// The owner, or a team lead of its organisation, reopens a closed case
    /// within the policy's reopening period; the members are told and write again.
    pub async fn reopen_case(&self, thread: ThreadId, reason: &str) -> Result<Ownership, Error> {
        self.ownership_request(Request::ReopenCase { thread, reason: reason.to_owned() }).await
    }

    /// Calls a case conference (jeugdbeschermingstafel) on a case this client
    /// owns: each invitee takes part until `until_ms`, for its reason, on
    /// `legal_basis` (allowed for each as for an add). The invitees join the
    /// membership at once; this client's device then brings their devices into
    /// the group with [`Client::add_member`]. Returns the case's state.
    pub async fn call_conference(
        &self,
        thread: ThreadId,
        (topic, until_ms): (&str, u64),
        invited: Vec<Invitation>,
        legal_basis: &str,
    ) -> Result<Ownership, Error> {
        let topic = topic.to_owned();
        let request = Request::CallConference { thread, topic, until_ms, invited, legal_basis: legal_basis.to_owned() };
        self.ownership_request(request).await
    }

    /// Records a case conference's regie decision on a case this client owns
    /// (a fact; regie moves only by a completed handover). The minutes travel
    /// as [`Content::Minutes`] with [`Client::send_content`].
    pub async fn record_decision(
        &self,
        thread: ThreadId,
        conference: u32,
        decision: RegieDecision,
    ) -> Result<Ownership, Error> {
        self.ownership_request(Request::RecordDecision { thread, conference, decision }).await
    }

    /// Registers the court measure's period, or a new end date (an
    /// extension), on a case this client owns or accepted: the renewal clock is
    /// due the policy's days before the end. The hub sees the dates only.
    pub async fn set_measure(&self, thread: ThreadId, measure: Measure) -> Result<Ownership, Error> {
        self.ownership_request(Request::SetMeasure { thread, measure }).await
    }

    /// Registers a plan evaluation date (from the plan, which the hub never
    /// sees) on a case this client owns or accepted: a clock that escalates if
    /// it is not reported done (`report_done(thread, ClockKind::Evaluation)`,
    /// which stops the earliest one running) by then.
    pub async fn schedule_evaluation(&self, thread: ThreadId, due_ms: u64) -> Result<Ownership, Error> {
        self.ownership_request(Request::ScheduleEvaluation { thread, due_ms }).await
    }

    /// Schedules a VT re-check (rappel) the policy's `rappel_days` out; it escalates to the owner when due.
    pub async fn schedule_rappel(&self, thread: ThreadId) -> Result<Ownership, Error> {
        self.ownership_request(Request::ScheduleRappel { thread }).await
    }

    /// The case's ownership: owner, offers, background roles and clocks.
    pub async fn ownership(&self, thread: ThreadId) -> Result<Ownership, Error> {
        self.ownership_request(Request::GetOwnership { thread }).await
    }

    /// Offers waiting for this worker's organisation; for a privacy officer, the
    /// review queue of offers that share without consent.
    pub async fn pending_offers(&self) -> Result<Vec<(ThreadId, Offer)>, Error> {
        match self.request(Request::ListOffers).await? {
            Reply::Offers { offers } => Ok(offers),
            other => Err(unexpected(other)),
        }
    }

    async fn ownership_request(&self, request: Request) -> Result<Ownership, Error> {
        match self.request(request).await? {
            Reply::Ownership { ownership } => Ok(*ownership),
            other => Err(unexpected(other)),
        }
    }

    /// Every audit entry within this privacy officer's scope that matches `filter`: about cases its
    /// organisation is or was in, or by its own people. Entries carry no case content. A query outside
    /// the scope is refused, and recorded.
    ///
    /// The hub answers at most 10,000 entries at a time; this follows every truncated answer with
    /// the next page (`after_seq`), up to `filter.limit` entries in all when it is set, so nothing that
    /// matched is silently left out. Narrow the filter for a large scope; [`Client::audit_page`] reads one page.
    pub async fn audit_query(&self, filter: wire::audit::AuditFilter) -> Result<Vec<wire::audit::AuditEntry>, Error> {
        let wanted = filter.limit.map_or(usize::MAX, |l| l as usize);
        let mut all: Vec<wire::audit::AuditEntry> = Vec::new();
        let mut filter = filter;
        // The log as the first answer's head saw it: entries written since (this very query's own among
        // them, or a member's reads while it runs) wait for the next query, so that reading ends.
        let mut bound = None;
        loop {
            filter.limit = u32::try_from(wanted - all.len()).ok();
            let page = self.audit_page(filter.clone()).await?;
            let bound = *bound.get_or_insert(page.head_size);
            let after = filter.after_seq.unwrap_or(0);
            let ordered = page.entries.windows(2).all(|w| w[0].seq < w[1].seq);
            if !ordered || page.entries.first().is_some_and(|e| e.seq <= after) {
                return Err(Error::Protocol("the hub's audit page does not read on after the previous one".into()));
            }
            let Some(last) = page.entries.last().map(|e| e.seq) else { return Ok(all) };
            all.extend(page.entries.into_iter().filter(|e| e.seq <= bound));
            if !page.truncated || all.len() >= wanted || last >= bound {
                return Ok(all);
            }
            filter.after_seq = Some(last);
        }
    }

    /// The chain figures over the cases in this privacy officer's scope, from the first moment of `since`
    /// up to the first moment of `until` (UTC days): per organisation, region and route, with the cells
    /// below the hub's minimum count suppressed. See `wire::figures` for the definitions.
    pub async fn chain_figures(
        &self,
        since: crate::packet::Date,
        until: crate::packet::Date,
    ) -> Result<wire::figures::ChainReport, Error> {
        let request = Request::ChainFigures { since_ms: since.unix_ms(), until_ms: until.unix_ms() };
        match self.request(request).await? {
            Reply::ChainFigures { report } => Ok(*report),
            other => Err(unexpected(other)),
        }
    }

    /// One page of [`Client::audit_query`]: at most `filter.limit` entries (the hub caps it) after
    /// `filter.after_seq`, and whether more matched.
    ///
    /// A witnessing client (see [`crate::ClientBuilder::audit_public_key`]) checks the reply's signed head
    /// against the one it holds and every entry's inclusion proof, and fails with [`Error::Audit`] when
    /// they do not verify; the hub returns only entries its latest signed head covers.
    pub async fn audit_page(&self, filter: wire::audit::AuditFilter) -> Result<AuditPage, Error> {
        let _turn = match &self.inner.witness {
            Some(witness) => Some(witness.turn.lock().await),
            None => None,
        };
        let known_size = self.inner.witness.as_ref().map_or(0, |w| w.known_size());
        match self.request(Request::AuditQuery { filter, known_size }).await? {
            Reply::AuditEntries { entries, head, proofs, consistency, truncated } => {
                if let Some(witness) = &self.inner.witness {
                    let checked = match &head {
                        Some(head) => witness.accept(head, &consistency, &entries, &proofs),
                        None if entries.is_empty() => Ok(()),
                        None => Err(crate::witness::AuditError::Unsigned),
                    };
                    checked.map_err(|e| self.audit_alarm(e))?;
                }
                Ok(AuditPage { entries, truncated, head_size: head.as_ref().map_or(0, |h| h.size) })
            }
            other => Err(unexpected(other)),
        }
    }

    /// Fetches the hub's latest signed audit tree head with its consistency proof from the witnessed one,
    /// checks both, and keeps the head; returns it. Witnessing clients do this on connecting and with
    /// every [`Client::audit_query`]; call it to check more often.
    pub async fn witness_audit(&self) -> Result<wire::audit::SignedTreeHead, Error> {
        let witness = self.inner.witness.clone().ok_or_else(|| {
            Error::Config("this client does not witness the audit log (no audit_public_key, or not opted in)".into())
        })?;
        let _turn = witness.turn.lock().await;
        match self.request(Request::AuditHead { known_size: witness.known_size() }).await? {
            Reply::AuditHead { head, consistency } => {
                witness.accept(&head, &consistency, &[], &[]).map_err(|e| self.audit_alarm(e))?;
                Ok(*head)
            }
            other => Err(unexpected(other)),
        }
    }

    /// The last audit tree head this client verified, if it witnesses the log.
    pub fn witnessed_audit_head(&self) -> Option<wire::audit::SignedTreeHead> {
        self.inner.witness.as_ref().and_then(|w| w.head())
    }

    /// Reports a failed witness check as an event too, and turns it into the call's error.
    fn audit_alarm(&self, error: crate::witness::AuditError) -> Error {
        // An application that does not read events must not block the call; the error is returned anyway.
        self.alarm(Event::AuditAlarm(error.clone()));
        Error::Audit(error)
    }

    /// Marks audit entry `entry`, an offer or add without the family's consent
    /// in this privacy officer's scope, as reviewed with `note`. The review is
    /// an audit entry on the entry's case; [`crate::report::review_queue`]
    /// pairs them. Returns the case.
    pub async fn mark_reviewed(&self, entry: u64, note: impl Into<String>) -> Result<ThreadId, Error> {
        match self.request(Request::MarkReviewed { entry, note: note.into() }).await? {
            Reply::Reviewed { case, .. } => Ok(case),
            other => Err(unexpected(other)),
        }
    }

    /// The access report for one case (GDPR article 15), as Markdown.
    pub async fn access_report(&self, case: ThreadId) -> Result<String, Error> {
        let filter = wire::audit::AuditFilter { case: Some(case), ..Default::default() };
        Ok(crate::report::markdown(case, &self.audit_query(filter).await?))
    }

    /// The access report for one case as the family reads it: plain Dutch, per organisation and role,
    /// no worker named, every share without consent with its reason; one printable HTML page.
    /// `glossary` words the legal bases and names the organisations (a hub's policy gives it).
    pub async fn family_access_report(
        &self,
        case: ThreadId,
        glossary: &crate::report::Glossary,
    ) -> Result<String, Error> {
        let filter = wire::audit::AuditFilter { case: Some(case), ..Default::default() };
        Ok(crate::report::family_html(case, &self.audit_query(filter).await?, glossary))
    }

    /// The threads this client is a member of.
    pub async fn threads(&self) -> Result<Vec<ThreadSummary>, Error> {
        match self.request(Request::ListThreads).await? {
            Reply::Threads { threads } => Ok(threads),
            other => Err(unexpected(other)),
        }
    }

    /// The members of a thread.
    pub async fn members(&self, thread: ThreadId) -> Result<Vec<MemberId>, Error> {
        match self.request(Request::ListMembers { thread }).await? {
            Reply::Members { members } => Ok(members),
            other => Err(unexpected(other)),
        }
    }

    /// How far each current member of a thread has received it: a message
    /// with sequence number `seq` has reached a member's device when
    /// `any_device >= seq`. The cursors move when devices acknowledge.
    pub async fn delivery(&self, thread: ThreadId) -> Result<Vec<MemberDelivery>, Error> {
        match self.request(Request::DeliveryStatus { thread }).await? {
            Reply::Delivery { members } => Ok(members),
            other => Err(unexpected(other)),
        }
    }

    /// Every device in the thread's MLS group as this device sees it, with its
    /// verified binding (member, certificate fingerprint, safety number) or why
    /// it does not verify. Two caseworkers who read each other's safety number
    /// aloud (by phone, in person) and find it equal know that no one in the
    /// middle holds a key in the thread under either name; see `docs/mls.md`.
    pub fn devices(&self, thread: ThreadId) -> Vec<Result<Bound, BindingError>> {
        self.device().bindings(thread)
    }

    /// This device's own safety number, the one other members see for it.
    pub fn safety_number(&self) -> Result<SafetyNumber, Error> {
        self.device().safety_number().map_err(Error::Unbound)
    }

    /// Acknowledges every entry of `thread` up to `seq`: after a reconnect the
    /// hub resumes after it.
    ///
    /// It never waits for the connection, so an event loop may call it for
    /// every event it reads.
    pub async fn ack(&self, thread: ThreadId, seq: u64) -> Result<(), Error> {
        if self.inner.commands.is_closed() {
            return Err(Error::Closed);
        }
        lock_device(&self.inner.device).acknowledge(thread, seq);
        self.inner.acks.give(thread, seq);
        Ok(())
    }

    /// Closes the connection politely, waiting at most the request timeout
    /// for the hub to take what is queued; other clones of this client stop working.
    pub async fn close(&self) {
        let (done, closed) = oneshot::channel();
        let polite = async {
            if self.inner.commands.send(Command::Shutdown { done }).await.is_ok() {
                let _ = closed.await;
            }
        };
        if timeout(self.inner.request_timeout, polite).await.is_err() {
            warn!("the client did not close within the request timeout; its connection is dropped");
            self.inner.driver.abort();
        }
    }
}

/// `url` naming `device` in its query (any other query kept), with the path
/// `/` when it has none.
fn with_device(url: &str, device: &wire::DeviceId) -> String {
    let (base, query) = url.split_once('?').unwrap_or((url, ""));
    let slash = if base.trim_start_matches("wss://").contains('/') { "" } else { "/" };
    let others: Vec<&str> = query.split('&').filter(|p| !p.is_empty() && !p.starts_with("device=")).collect();
    let others: String = others.iter().map(|p| format!("{p}&")).collect();
    format!("{base}{slash}?{others}device={device}")
}

/// Threads waiting to be rejoined, at most; more are dropped until there is room.
const REJOIN_QUEUE: usize = 64;

/// Joins again the groups this device is missing: first every thread of the
/// identity's whose group holds a device of the identity's but none of this
/// device's (a new device, a lost state: see [`Device::rejoin`]), then each
/// thread the driver finds it cannot follow. Holds the client weakly, so that it never keeps one open.
async fn rejoin_in_background(client: std::sync::Weak<Inner>, mut lost: mpsc::Receiver<(ThreadId, u64)>) {
    let upgrade = |weak: &std::sync::Weak<Inner>| weak.upgrade().map(|inner| Client { inner, on_behalf_of: None });
    // Per thread, the entry of this device's last rejoin: what failed before it needs no second one.
    let mut rejoined: HashMap<ThreadId, u64> = HashMap::new();
    if let Some(client) = upgrade(&client) {
        match client.threads().await {
            Ok(threads) => {
                // An organisation inbox has no MLS group: the hub alone writes in it.
                for summary in threads.into_iter().filter(|s| !s.inbox) {
                    rejoined.extend(
                        client
                            .rejoin_and_tell(summary.thread, Rejoin::IfMissing)
                            .await
                            .map(|seq| (summary.thread, seq)),
                    );
                }
            }
            Err(e) => debug!("cannot list threads to find groups this device misses: {e}"),
        }
    }
    while let Some((thread, failed)) = lost.recv().await {
        let Some(client) = upgrade(&client) else { return };
        if rejoined.get(&thread).is_some_and(|seq| *seq > failed) {
            continue;
        }
        rejoined.extend(client.rejoin_and_tell(thread, Rejoin::Recover).await.map(|seq| (thread, seq)));
    }
}

impl Client {
    /// Reports an event from outside the driver, while the stream is open.
    fn alarm(&self, event: Event) {
        if let Some(events) = self.inner.alarms.upgrade() {
            let _ = events.try_send(event);
        }
    }

    /// Rejoins and reports it; returns the rejoin's entry.
    async fn rejoin_and_tell(&self, thread: ThreadId, mode: Rejoin) -> Option<u64> {
        match self.rejoin_at(thread, mode).await {
            Ok(Some((epoch, seq))) => {
                self.alarm(Event::Rejoined { thread, epoch });
                Some(seq)
            }
            Ok(None) => None,
            Err(e) => {
                warn!(%thread, "could not rejoin the thread's group: {e}");
                None
            }
        }
    }
}

fn unexpected(reply: Reply) -> Error {
    Error::Protocol(format!("unexpected reply {reply:?}"))
}

/// Frames queued for the writer task before the driver holds them back.
const OUTBOX: usize = 256;

/// Entries read, at most, before the device state is saved during a burst.
const SAVE_BURST: usize = 512;

/// How long the connection stays quiet before what was read is saved.
const SAVE_IDLE: Duration = Duration::from_millis(2);
/// The longest wait before a failed save (a full disk, say) is tried again;
/// the wait doubles from [`SAVE_IDLE`] at each failure.
const SAVE_RETRY_MAX: Duration = Duration::from_secs(1);
/// How long a polite close may take.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

type Sink = futures_util::stream::SplitSink<WsStream, WsMessage>;

/// Writes queued frames, flushing after each burst; closes when the queue closes.
async fn write_frames(mut sink: Sink, mut outbox: mpsc::Receiver<WsMessage>) -> Result<(), String> {
    while let Some(first) = outbox.recv().await {
        sink.feed(first).await.map_err(|e| e.to_string())?;
        while let Ok(more) = outbox.try_recv() {
            sink.feed(more).await.map_err(|e| e.to_string())?;
        }
        sink.flush().await.map_err(|e| e.to_string())?;
    }
    sink.close().await.map_err(|e| e.to_string())
}

/// A request waiting for its answer, kept encoded so it can be sent again.
struct Pending {
    frame: Vec<u8>,
    reply: oneshot::Sender<Result<Reply, Error>>,
}

/// How a session ended.
enum Stop {
    /// The application closed the client.
    Closed(Option<oneshot::Sender<()>>),
    /// The connection was lost.
    Lost(String),
}

/// Why a reconnection attempt did not connect.
enum Redial {
    /// The application closed the client (answer `done` when it waits).
    Stop(Option<oneshot::Sender<()>>),
    /// The hub could not be reached or the attempt failed: try again soon.
    Retry,
    /// The hub's policy refused this identity: try again only after a long pause.
    Refused(String),
}

struct Driver {
    settings: Settings,
    commands: mpsc::Receiver<Command>,
    events: mpsc::Sender<Event>,
    pending: BTreeMap<u64, Pending>,
    next_id: u64,
    acks: HashMap<ThreadId, u64>,
    /// Acknowledgements the application gave that wait for the device state to be saved.
    unsent_acks: Arc<Acks>,
    /// Entries read since the device state was last saved.
    unsaved: usize,
    /// How long to wait before saving: [`SAVE_IDLE`], longer after failures.
    save_wait: Duration,
    device: SharedDevice,
    own: OwnMessages,
    me: MemberId,
    /// Threads whose group this device must join again, with the entry it could not use.
    rejoins: mpsc::Sender<(ThreadId, u64)>,
}

/// What connects a driver to its client.
struct Channels {
    commands: mpsc::Receiver<Command>,
    events: mpsc::Sender<Event>,
    acks: Arc<Acks>,
    rejoins: mpsc::Sender<(ThreadId, u64)>,
}

impl Driver {
    fn new(settings: Settings, channels: Channels, device: SharedDevice, own: OwnMessages, me: MemberId) -> Self {
        let Channels { commands, events, acks, rejoins } = channels;
        Self {
            settings,
            commands,
            events,
            pending: BTreeMap::new(),
            next_id: 1,
            acks: HashMap::new(),
            unsent_acks: acks,
            unsaved: 0,
            save_wait: SAVE_IDLE,
            device,
            own,
            me,
            rejoins,
        }
    }

    async fn run(mut self, first: WsStream) {
        // What was handed over before a restart and never acknowledged comes first.
        let kept: Vec<Message> = lock_device(&self.device).unacknowledged().to_vec();
        for message in kept {
            self.emit(Event::Message(message)).await;
        }
        let mut connection = Some(first);
        let mut backoff = self.settings.backoff.0;
        loop {
            match connection.take() {
                Some(ws) => {
                    backoff = self.settings.backoff.0;
                    self.emit(Event::Connected).await;
                    match self.session(ws).await {
                        Stop::Closed(done) => {
                            if let Some(done) = done {
                                let _ = done.send(());
                            }
                            return;
                        }
                        Stop::Lost(reason) => {
                            debug!(%reason, "connection lost; reconnecting");
                            self.emit(Event::Disconnected { reason }).await;
                        }
                    }
                }
                None => match self.redial(backoff).await {
                    Ok(ws) => connection = Some(ws),
                    Err(Redial::Stop(done)) => {
                        if let Some(done) = done {
                            let _ = done.send(());
                        }
                        return;
                    }
                    Err(_) if self.commands.is_closed() => return,
                    Err(Redial::Retry) => backoff = (backoff * 2).min(self.settings.backoff.1),
                    Err(Redial::Refused(why)) => {
                        backoff = self.settings.refused_backoff;
                        let reason = format!("the hub refuses this identity ({why}); trying again in {backoff:?}");
                        warn!("{reason}");
                        self.emit(Event::Disconnected { reason }).await;
                    }
                },
            }
        }
    }

    /// Waits `backoff`, then dials, while still taking commands.
    async fn redial(&mut self, backoff: Duration) -> Result<WsStream, Redial> {
        let settings = self.settings.clone();
        let attempt = async move {
            tokio::time::sleep(backoff).await;
            dial(&settings).await
        };
        tokio::pin!(attempt);
        loop {
            tokio::select! {
                dialed = &mut attempt => return match dialed {
                    Ok((ws, _hello)) => Ok(ws),
                    Err(Error::Hub(e)) if e.code == ErrorCode::Forbidden => Err(Redial::Refused(e.message)),
                    Err(e) => {
                        debug!("reconnect failed: {e}");
                        Err(Redial::Retry)
                    }
                },
                command = self.commands.recv() => match command {
                    None => return Err(Redial::Stop(None)),
                    Some(Command::Shutdown { done }) => return Err(Redial::Stop(Some(done))),
                    Some(command) => {
                        self.queue(command);
                    }
                },
            }
        }
    }

    /// Records a command; returns the frame to send for it.
    fn queue(&mut self, command: Command) -> Option<Vec<u8>> {
        match command {
            Command::Request { request, reply } => {
                let id = self.next_id;
                self.next_id += 1;
                let frame = wire::encode(&ClientFrame::Request { id, request });
                self.pending.insert(id, Pending { frame: frame.clone(), reply });
                Some(frame)
            }
            Command::Shutdown { .. } => None,
        }
    }

    /// Runs one connection until it is lost or the client closes. Reading
    /// never waits for writing: a separate task writes, and frames to send wait
    /// in `backlog` while its queue is full, so that the hub and the SDK can never
    /// both be blocked writing to each other.
    async fn session(&mut self, ws: WsStream) -> Stop {
        // Callers that gave up no longer need an answer.
        self.pending.retain(|_, p| !p.reply.is_closed());
        let mut backlog: VecDeque<Vec<u8>> = self
            .acks
            .iter()
            .map(|(thread, seq)| wire::encode(&ClientFrame::Ack { thread: *thread, seq: *seq }))
            .chain(self.pending.values().map(|p| p.frame.clone()))
            .collect();
        let (sink, mut stream) = ws.split();
        let (outbox, outbox_rx) = mpsc::channel(OUTBOX);
        let mut writer = tokio::spawn(write_frames(sink, outbox_rx));
        let stop = loop {
            // Read once: the application gives acknowledgements from other threads, and
            // one given between two reads would leave both branches below off.
            let must_save = self.must_save();
            tokio::select! {
                biased;
                message = stream.next() => match message {
                    None => break Stop::Lost("connection closed".into()),
                    Some(Err(e)) => break Stop::Lost(e.to_string()),
                    Some(Ok(WsMessage::Binary(bytes))) => self.on_frame(&bytes).await,
                    Some(Ok(WsMessage::Close(frame))) => {
                        break Stop::Lost(frame.map(|f| f.reason.to_string()).unwrap_or_else(|| "closed by the hub".into()))
                    }
                    Some(Ok(_)) => {}
                },
                written = &mut writer => {
                    break Stop::Lost(written.map_or_else(|e| e.to_string(), |r| r.err().unwrap_or_default()));
                }
                permit = outbox.reserve(), if !backlog.is_empty() => match (permit, backlog.pop_front()) {
                    (Ok(permit), Some(frame)) => {
                        if let Some(tap) = &self.settings.frame_tap {
                            tap.see(crate::raw::Direction::Sent, &frame);
                        }
                        permit.send(WsMessage::Binary(frame.into()))
                    }
                    _ => break Stop::Lost("writer stopped".into()),
                },
                command = self.commands.recv(), if backlog.is_empty() => match command {
                    None => break Stop::Closed(None),
                    Some(Command::Shutdown { done }) => break Stop::Closed(Some(done)),
                    Some(command) => backlog.extend(self.queue(command)),
                },
                // Once the burst is over (nothing else ready for a moment), or every
                // SAVE_BURST entries while it lasts.
                () = tokio::time::sleep(self.save_wait), if must_save => backlog.extend(self.save()),
                // An acknowledgement given while nothing else happens starts the wait above.
                () = self.unsent_acks.given.notified(), if !must_save => {}
            }
            if self.unsaved >= SAVE_BURST {
                backlog.extend(self.save());
            }
        };
        let last_acks = self.save();
        match stop {
            Stop::Closed(_) => {
                for frame in last_acks {
                    let _ = outbox.send(WsMessage::Binary(frame.into())).await;
                }
                // Closing the queue makes the writer send a close frame and finish.
                drop(outbox);
                let _ = tokio::time::timeout(CLOSE_GRACE, &mut writer).await;
            }
            Stop::Lost(_) => writer.abort(),
        }
        stop
    }

    async fn on_frame(&mut self, bytes: &[u8]) {
        if let Some(tap) = &self.settings.frame_tap {
            tap.see(crate::raw::Direction::Received, bytes);
        }
        let frame = match wire::decode::<HubFrame>(bytes) {
            Ok(frame) => frame,
            Err(e) => {
                warn!("undecodable frame from the hub: {e}");
                return;
            }
        };
        match frame {
            HubFrame::Reply { id, result } => {
                if let Some(pending) = self.pending.remove(&id) {
                    let _ = pending.reply.send(result.map_err(Error::Hub));
                }
            }
            HubFrame::Event { thread, entry } => {
                let event = self.read_entry(thread, entry);
                if let Some(event) = event {
                    self.emit(event).await;
                }
            }
            HubFrame::Error { error } => warn!(code = ?error.code, "hub reported: {}", error.message),
            HubFrame::Hello(_) => {}
        }
    }

    /// Turns a thread entry into what the application sees, through the
    /// thread's MLS group; `None` for entries already seen or meant for MLS only.
    /// The device's new state is saved with the burst the entry came in (see `save`).
    fn read_entry(&mut self, thread: ThreadId, entry: wire::Entry) -> Option<Event> {
        self.unsaved += 1;
        // One lock for reading and keeping: a write in between (a send persists
        // at once) would otherwise store the entry as delivered without the
        // message, which forward secrecy then makes unreadable for good.
        let shared = self.device.clone();
        let mut device = lock_device(&shared);
        let event = self.interpret(&mut device, thread, entry)?;
        if let (Event::Message(message), true) = (&event, self.settings.keep_events) {
            device.keep(message.clone());
        }
        Some(event)
    }

    /// Whether something read or acknowledged waits to be saved.
    fn must_save(&self) -> bool {
        self.unsaved > 0 || self.unsent_acks.any()
    }

    /// Writes what reading changed to the device state in one write, and only
    /// then releases the acknowledgements it covers: the hub never moves a
    /// cursor past an entry whose effect on the device is not on disk, and a
    /// crash before the write leaves those entries to be delivered again.
    /// Returns the acknowledgement frames to send.
    fn save(&mut self) -> Vec<Vec<u8>> {
        self.unsaved = 0;
        // Taken before the write, so that the write covers the device's record of each.
        let given = self.unsent_acks.take();
        if let Err(e) = lock_device(&self.device).save() {
            warn!("cannot save the device state; acknowledgements wait: {e}");
            self.save_wait = (self.save_wait * 2).min(SAVE_RETRY_MAX);
            given.into_iter().for_each(|(thread, seq)| self.unsent_acks.give(thread, seq));
            return Vec::new();
        }
        self.save_wait = SAVE_IDLE;
        given
            .into_iter()
            .map(|(thread, seq)| {
                let acked = self.acks.entry(thread).or_default();
                *acked = (*acked).max(seq);
                wire::encode(&ClientFrame::Ack { thread, seq })
            })
            .collect()
    }

    /// What an entry means to the application, through the thread's MLS group.
    fn interpret(&mut self, device: &mut Device, thread: ThreadId, entry: wire::Entry) -> Option<Event> {
        if entry.seq <= device.delivered(thread) {
            return None;
        }
        device.mark_delivered(thread, entry.seq);
        let seq = entry.seq;
        // This device's own send, shown from its local copy (MLS cannot decrypt
        // one's own). Another device of the same worker sent the rest, and MLS
        // reads those like anyone's; an own send from before a restart is
        // recognised by MLS and skipped.
        let own_copy = match &entry.body {
            EntryBody::Message { .. } if entry.sender == self.me => {
                self.own.lock().unwrap_or_else(|p| p.into_inner()).remove(&entry.id)
            }
            _ => None,
        };
        match entry.body {
            EntryBody::Message { .. } if own_copy.is_some() => {
                let own = own_copy?;
                Some(Event::Message(Message {
                    thread,
                    seq,
                    id: entry.id,
                    sender: entry.sender,
                    at_ms: entry.at_ms,
                    content: own,
                }))
            }
            EntryBody::Message { payload } => Some(match device.process(thread, &payload) {
                Ok(Processed::Application { plaintext, sender }) if sender == entry.sender => {
                    match Content::decode(&plaintext) {
                        Ok(content) => {
                            Event::Message(Message { thread, seq, id: entry.id, sender, at_ms: entry.at_ms, content })
                        }
                        Err(reason) => {
                            Event::Unreadable { thread, seq, sender, error: DecryptError::Malformed(reason) }
                        }
                    }
                }
                Ok(Processed::Application { .. }) => Event::Unreadable {
                    thread,
                    seq,
                    sender: entry.sender,
                    error: DecryptError::CannotDecrypt("the MLS sender is not the connection that sent it".into()),
                },
                Ok(_) => return None,
                Err(error) => Event::Unreadable { thread, seq, sender: entry.sender, error },
            }),
            EntryBody::MemberAdded { member } => Some(Event::MemberAdded { thread, seq, member, by: entry.sender }),
            EntryBody::MemberRemoved { member } => {
                let devices_remain = device.has_member(thread, &member);
                Some(Event::MemberRemoved { thread, seq, member, by: entry.sender, devices_remain })
            }
            EntryBody::Commit { commit, .. } => match device.process(thread, &commit) {
                Ok(Processed::Commit { removed_self: true }) => Some(Event::Removed { thread }),
                Ok(_) => None,
                // The commit that adds this device arrives before its Welcome.
                Err(DecryptError::NotMember) => {
                    debug!(%thread, seq, "a commit from before this device joined");
                    None
                }
                Err(error) => {
                    warn!(%thread, seq, "cannot process a commit; rejoining: {error}");
                    self.lost(thread, seq, error)
                }
            },
            EntryBody::Welcome { to, welcome } if to.contains(&self.me) => match device.join(thread, &welcome) {
                Ok(true) => Some(Event::Joined { thread }),
                Ok(false) => None,
                // Also what another device of this worker sees when the Welcome is for this one's sibling.
                Err(error) => {
                    debug!(%thread, seq, "cannot join from a Welcome; rejoining: {error}");
                    self.lost(thread, seq, error)
                }
            },
            EntryBody::Handover { event } => Some(Event::Handover { thread, seq, by: entry.sender, event }),
            EntryBody::Notice { case, notice } => Some(Event::Notice { inbox: thread, seq, case, notice }),
            EntryBody::Welcome { .. } | EntryBody::Expired => None,
        }
    }

    /// Asks for the thread's group to be joined again (see `rejoin_in_background`),
    /// unless this device refused the entry for a leaf or a rejoin it does not
    /// believe: the hub's group then holds someone this device would not let in,
    /// and joining it again would hand them the case. That stays for the
    /// application to decide ([`Client::rejoin`]).
    fn lost(&self, thread: ThreadId, seq: u64, error: DecryptError) -> Option<Event> {
        if !matches!(error, DecryptError::Unbound(_) | DecryptError::RefusedRejoin(_)) {
            // A full queue already holds enough to do; a closed one means the client is closing.
            let _ = self.rejoins.try_send((thread, seq));
        }
        Some(Event::GroupLost { thread, seq, error })
    }

    async fn emit(&self, event: Event) {
        if self.settings.keep_events {
            // An application that dropped its stream no longer wants events.
            let _ = self.events.send(event).await;
        }
    }
}
