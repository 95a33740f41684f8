//! One desk's connection to the hub: the SDK client, the store, and the events between them.
//!
//! The web handlers never read the SDK's event stream themselves: one task
//! here takes each event, stores it, acknowledges it only once it is durable,
//! and tells the browsers through [`Live`]. It also takes the steps a device
//! must take on its own (the hub cannot add anyone to an MLS group): once an
//! offer with a packet is accepted, the sender's device adds the receiver and
//! sends the packet; once a former owner leaves, the owner's device removes it.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use hub::policy::Policy;
use ketenhub_sdk::packet::Date;
use ketenhub_sdk::{
    Attachment, Client, Content, Event, EventStream, Grounds, HandoverEvent, HandoverPacket, Identity, Message, Offer,
    Role, ThreadId,
};
use tokio::sync::broadcast;

use crate::store::{DeskStore, Entry, Stored};

/// How often the desk asks the hub for offers while a page is open: the hub
/// pushes no event to an organisation that is not yet on the case (see
/// `docs/handover.md`), and every ask is an entry in the audit log, so the
/// desk asks only while someone is looking.
pub const OFFER_POLL: Duration = Duration::from_secs(1);

/// What browsers are told, live.
#[derive(Debug, Clone)]
pub enum Live {
    /// A thread entry was stored.
    Entry(Box<Entry>),
    /// Something the pages show changed: ownership, offers, membership.
    Refresh,
}

/// A desk: the client, its store and its live channel.
pub struct Desk {
    /// The SDK client.
    pub client: Client,
    /// This desk's identity, from its certificate.
    pub identity: Identity,
    /// What the desk keeps.
    pub store: DeskStore,
    /// The hub's published policy: routes, legal bases and organisations to choose from.
    pub policy: Arc<Policy>,
    /// Where uploads wait and verified downloads are written.
    pub files: PathBuf,
    /// Live updates for the browsers.
    pub live: broadcast::Sender<Live>,
    /// The last failed audit witness check, if any.
    pub alarm: Mutex<Option<String>>,
    /// Whether the packet form offers the example family (the demo only).
    pub examples: bool,
}

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// The entry to keep for an event, if it is a thread entry.
fn stored(event: &Event) -> Option<Entry> {
    let at_ms = now_ms();
    let (thread, seq, body) = match event.clone() {
        Event::Message(m) => (m.thread, m.seq, Stored::Message(m)),
        Event::MemberAdded { thread, seq, member, by } => (thread, seq, Stored::MemberAdded { member, by, at_ms }),
        Event::MemberRemoved { thread, seq, member, by, .. } => {
            (thread, seq, Stored::MemberRemoved { member, by, at_ms })
        }
        Event::Handover { thread, seq, by, event } => (thread, seq, Stored::Handover { by, event, at_ms }),
        Event::Unreadable { thread, seq, sender, error } => {
            (thread, seq, Stored::Unreadable { sender, error: error.to_string(), at_ms })
        }
        _ => return None,
    };
    Some(Entry { thread, seq, body })
}

impl Desk {
    /// Whether this desk is a privacy officer's console.
    pub fn is_officer(&self) -> bool {
        self.identity.role == Role::PrivacyOfficer
    }

    /// Starts the tasks that keep the desk up to date; the handle ends once the client is closed and
    /// every event it delivered is kept.
    pub fn start(self: &Arc<Self>, events: EventStream) -> tokio::task::JoinHandle<()> {
        tokio::spawn(Self::poll_offers(Arc::downgrade(self)));
        tokio::spawn(self.clone().take_events(events))
    }

    async fn take_events(self: Arc<Self>, mut events: EventStream) {
        while let Some(event) = events.next().await {
            match stored(&event) {
                Some(entry) => self.keep(entry).await,
                None => {
                    if let Event::AuditAlarm(error) = &event {
                        *self.alarm.lock().unwrap_or_else(|p| p.into_inner()) = Some(error.to_string());
                    }
                    let _ = self.live.send(Live::Refresh);
                }
            }
        }
    }

    async fn keep(self: &Arc<Self>, entry: Entry) {
        if let Err(e) = self.store.put(&entry).await {
            // Not acknowledged: the hub delivers it again after a restart.
            tracing::error!("cannot keep entry {} of {}: {e}", entry.seq, entry.thread);
            return;
        }
        if self.client.ack(entry.thread, entry.seq).await.is_err() {
            tracing::warn!("the client closed before entry {} of {} was acknowledged", entry.seq, entry.thread);
        }
        if let Stored::Handover { event, .. } = &entry.body {
            self.react(entry.thread, event);
        }
        let refresh = !matches!(entry.body, Stored::Message(_) | Stored::Unreadable { .. });
        let _ = self.live.send(Live::Entry(Box::new(entry)));
        if refresh {
            let _ = self.live.send(Live::Refresh);
        }
    }

    /// The device's own part of a handover step, off the event task so that events keep flowing meanwhile.
    fn react(self: &Arc<Self>, thread: ThreadId, event: &HandoverEvent) {
        let desk = self.clone();
        match event.clone() {
            HandoverEvent::Accepted { offer, by } => {
                tokio::spawn(async move {
                    if let Err(e) = desk.share_packet(thread, offer, by).await {
                        tracing::error!("cannot share the packet of offer {offer} in {thread}: {e}");
                    }
                });
            }
            // Regie moved: the new owner cannot join the case's side threads by itself.
            HandoverEvent::Completed { .. } | HandoverEvent::TakenOver { .. } => {
                tokio::spawn(async move {
                    if let Err(e) = desk.client.follow_owner(thread).await {
                        tracing::error!("cannot bring the new owner of {thread} into its side threads: {e}");
                    }
                });
            }
            HandoverEvent::Left { member, .. } => {
                tokio::spawn(async move {
                    let Ok(ownership) = desk.client.ownership(thread).await else { return };
                    if ownership.owner != desk.client.member_id() {
                        return;
                    }
                    if ownership.removal_due.contains(&member) {
                        if let Err(e) = desk.client.remove_member(thread, member.clone()).await {
                            tracing::error!("cannot remove a member who left {thread}: {e}");
                        }
                    }
                    // The hub ended its side-thread memberships too; their groups still hold its devices.
                    for side in desk.side_threads(thread).await {
                        if let Err(e) = desk.client.remove_member(side, member.clone()).await {
                            tracing::error!("cannot remove a member who left {thread} from side thread {side}: {e}");
                        }
                    }
                });
            }
            _ => {}
        }
    }

    /// A reassignment carries no packet: once the colleague accepts, the owner's desk brings its
    /// device into the case's group on the offer's own grounds, so that it reads the case.
    async fn admit_colleague(&self, thread: ThreadId, offer: u32, by: ketenhub_sdk::MemberId) -> anyhow::Result<()> {
        let ownership = self.client.ownership(thread).await?;
        let Some(made) = ownership.offers.iter().find(|o| o.id == offer) else { return Ok(()) };
        let mine = ownership.owner == self.client.member_id() && made.route == wire::handover::REASSIGNMENT_ROUTE;
        if !mine {
            tracing::debug!("offer {offer} of {thread} was accepted; no packet waits for it here");
            return Ok(());
        }
        let grounds = Grounds::new(made.reason.clone(), made.legal_basis.clone());
        self.client.add_member(thread, by, &grounds).await?;
        Ok(())
    }

    /// The side threads of `case` this desk is on.
    async fn side_threads(&self, case: ThreadId) -> Vec<ThreadId> {
        let threads = self.client.threads().await.unwrap_or_default();
        threads.into_iter().filter(|t| t.side.as_ref().is_some_and(|s| s.case == case)).map(|t| t.thread).collect()
    }

    async fn share_packet(&self, thread: ThreadId, offer: u32, by: ketenhub_sdk::MemberId) -> anyhow::Result<()> {
        let Some(pending) = self.store.pending(thread, offer)? else {
            return self.admit_colleague(thread, offer, by).await;
        };
        tracing::debug!("offer {offer} of {thread} was accepted; adding the receiver and sending the packet");
        let grounds = Grounds::new(pending.reason, pending.legal_basis);
        self.client.add_member(thread, by, &grounds).await?;
        // The receiver cannot read what was sent before it joined: the packet's attachments are shared
        // again (their keys travel in MLS), so that it can fetch and verify each one.
        for attachment in self.attachments_named(thread, &pending.packet)? {
            self.client.send_content(thread, Content::Attachment(attachment)).await?;
        }
        self.client.send_packet(thread, pending.packet, Date::from_unix_ms(now_ms())).await?;
        self.store.sent_pending(thread, offer).await?;
        tracing::debug!("the packet of offer {offer} of {thread} was sent");
        Ok(())
    }

    fn attachments_named(&self, thread: ThreadId, packet: &HandoverPacket) -> anyhow::Result<Vec<Attachment>> {
        let mut found = Vec::new();
        for entry in self.store.thread(thread)? {
            if let Stored::Message(Message { content: Content::Attachment(a), .. }) = entry.body {
                if packet.attachments.iter().any(|r| r.names(&a))
                    && !found.iter().any(|f: &Attachment| f.blob == a.blob)
                {
                    found.push(a);
                }
            }
        }
        Ok(found)
    }

    /// Holds the desk weakly, so that polling ends when the desk is dropped.
    async fn poll_offers(desk: std::sync::Weak<Self>) {
        let mut seen: Option<Vec<(ThreadId, Offer)>> = None;
        loop {
            tokio::time::sleep(OFFER_POLL).await;
            let Some(desk) = desk.upgrade() else { return };
            if desk.live.receiver_count() == 0 {
                seen = None;
                continue;
            }
            match desk.client.pending_offers().await {
                Ok(offers) => {
                    if seen.as_ref().is_some_and(|s| *s != offers) {
                        let _ = desk.live.send(Live::Refresh);
                    }
                    seen = Some(offers);
                }
                Err(ketenhub_sdk::Error::Closed) => return,
                Err(e) => tracing::debug!("cannot list offers: {e}"),
            }
            tokio::time::sleep(OFFER_POLL).await;
        }
    }
}
