//! The desk's own record of what it received, under `--state`.
//!
//! The SDK hands each thread entry to the application once and the hub
//! resumes after the acknowledged cursor, so a desk that only kept entries in
//! memory would show an empty thread after a restart. Every entry is written
//! here and flushed before it is acknowledged; the thread view reads from here
//! alone. Drafts of handover packets and the packets waiting for an offer's
//! acceptance live here too, because they outlive a browser tab.

use std::collections::BTreeMap;
use std::path::Path;

use ketenhub_sdk::{HandoverEvent, HandoverPacket, MemberId, Message, ThreadId};
use serde::{Deserialize, Serialize};

/// What the desk keeps of one thread entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Stored {
    /// A message, as decrypted.
    Message(Message),
    /// Someone joined the case.
    MemberAdded {
        /// Who joined.
        member: MemberId,
        /// Who brought them in.
        by: MemberId,
        /// When the desk received it, ms since the Unix epoch.
        at_ms: u64,
    },
    /// Someone's membership ended.
    MemberRemoved {
        /// Who.
        member: MemberId,
        /// By whom.
        by: MemberId,
        /// When the desk received it.
        at_ms: u64,
    },
    /// A step of the warm handover.
    Handover {
        /// Who took it.
        by: MemberId,
        /// What happened.
        event: HandoverEvent,
        /// When the desk received it.
        at_ms: u64,
    },
    /// A message this device could not read, and why.
    Unreadable {
        /// Who sent it.
        sender: MemberId,
        /// Why it could not be read.
        error: String,
        /// When the desk received it.
        at_ms: u64,
    },
}

/// One stored entry with its place in the thread.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// The thread.
    pub thread: ThreadId,
    /// Its sequence number in the thread.
    pub seq: u64,
    /// What it was.
    pub body: Stored,
}

/// A packet composed with an offer, sent once the receiver accepts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingPacket {
    /// The reason and legal basis the receiver is added to the MLS group with.
    pub reason: String,
    /// The legal basis code.
    pub legal_basis: String,
    /// The packet.
    pub packet: HandoverPacket,
}

/// Why the desk's store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database could not be opened, read or written.
    #[error("desk state: {0}")]
    Db(#[from] sled::Error),
    /// A record did not decode (a state written by another version).
    #[error("desk state record: {0}")]
    Decode(#[from] serde_json::Error),
}

/// The desk's store: sled, one tree per kind of record.
#[derive(Clone)]
pub struct DeskStore {
    entries: sled::Tree,
    drafts: sled::Tree,
    pending: sled::Tree,
    db: sled::Db,
}

fn entry_key(thread: ThreadId, seq: u64) -> Vec<u8> {
    let mut key = thread.0.as_bytes().to_vec();
    key.extend_from_slice(&seq.to_be_bytes());
    key
}

fn pending_key(thread: ThreadId, offer: u32) -> Vec<u8> {
    let mut key = thread.0.as_bytes().to_vec();
    key.extend_from_slice(&offer.to_be_bytes());
    key
}

impl DeskStore {
    /// Opens (or creates) the store in `dir`.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        let db = sled::open(dir)?;
        Ok(Self {
            entries: db.open_tree("entries")?,
            drafts: db.open_tree("drafts")?,
            pending: db.open_tree("pending")?,
            db,
        })
    }

    /// Keeps an entry and makes it durable; only then may it be acknowledged.
    pub async fn put(&self, entry: &Entry) -> Result<(), StoreError> {
        self.entries.insert(entry_key(entry.thread, entry.seq), serde_json::to_vec(entry)?)?;
        self.db.flush_async().await?;
        Ok(())
    }

    /// Every stored entry of `thread`, in order.
    pub fn thread(&self, thread: ThreadId) -> Result<Vec<Entry>, StoreError> {
        self.entries.scan_prefix(thread.0.as_bytes()).map(|item| Ok(serde_json::from_slice(&item?.1)?)).collect()
    }

    /// One stored entry.
    pub fn entry(&self, thread: ThreadId, seq: u64) -> Result<Option<Entry>, StoreError> {
        match self.entries.get(entry_key(thread, seq))? {
            Some(bytes) => Ok(Some(serde_json::from_slice(&bytes)?)),
            None => Ok(None),
        }
    }

    /// The packet form's saved values for a case.
    pub fn draft(&self, thread: ThreadId) -> Result<Option<BTreeMap<String, String>>, StoreError> {
        match self.drafts.get(thread.0.as_bytes())? {
            Some(bytes) => Ok(Some(serde_json::from_slice(&bytes)?)),
            None => Ok(None),
        }
    }

    /// Saves the packet form's values for a case.
    pub async fn save_draft(&self, thread: ThreadId, values: &BTreeMap<String, String>) -> Result<(), StoreError> {
        self.drafts.insert(thread.0.as_bytes(), serde_json::to_vec(values)?)?;
        self.db.flush_async().await?;
        Ok(())
    }

    /// Keeps the packet to send when `offer` is accepted.
    pub async fn put_pending(&self, thread: ThreadId, offer: u32, pending: &PendingPacket) -> Result<(), StoreError> {
        self.pending.insert(pending_key(thread, offer), serde_json::to_vec(pending)?)?;
        self.db.flush_async().await?;
        Ok(())
    }

    /// The packet waiting for `offer`'s acceptance.
    pub fn pending(&self, thread: ThreadId, offer: u32) -> Result<Option<PendingPacket>, StoreError> {
        match self.pending.get(pending_key(thread, offer))? {
            Some(bytes) => Ok(Some(serde_json::from_slice(&bytes)?)),
            None => Ok(None),
        }
    }

    /// Forgets a packet once it was sent.
    pub async fn sent_pending(&self, thread: ThreadId, offer: u32) -> Result<(), StoreError> {
        self.pending.remove(pending_key(thread, offer))?;
        self.db.flush_async().await?;
        Ok(())
    }
}
