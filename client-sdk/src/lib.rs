//! The Ketenhub client SDK.
//!
//! An agency's case system or a caseworker's desk connects to the hub through
//! this crate. It speaks the wire protocol over mutually authenticated TLS 1.3,
//! keeps the connection alive (reconnecting and resuming from the cursor when it
//! drops), retries requests that were in flight, and hands the application each
//! thread entry exactly once, in order.
//!
//! ```no_run
//! use futures_util::StreamExt;
//! use ketenhub_sdk::{Client, Event};
//!
//! # async fn example() -> Result<(), ketenhub_sdk::Error> {
//! let client = Client::builder()
//!     .url("wss://localhost:7443")
//!     .ca_file("pki/ca.crt")
//!     .identity_files("pki/vt-utrecht-caseworker.crt", "pki/vt-utrecht-caseworker.key")
//!     .connect()
//!     .await?;
//! let thread = client.create_thread().await?;
//! client.send_text(thread, "Melding ontvangen; wie neemt contact op met moeder?").await?;
//! let mut events = client.events().expect("events are taken once");
//! while let Some(event) = events.next().await {
//!     if let Event::Message(message) = event {
//!         println!("{}: {:?}", message.sender, message.content);
//!         client.ack(message.thread, message.seq).await?;
//!     }
//! }
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod attachment;
mod builder;
mod client;
pub mod content;
pub mod device;
mod dial;
mod error;
mod event;
pub mod family;
pub mod packet;
pub mod raw;
pub mod report;
pub mod witness;

pub use attachment::{Attachment, AttachmentError, Fetched};
pub use builder::ClientBuilder;
pub use certs::binding::{BindingError, Bound, SafetyNumber};
pub use client::{AuditPage, Client, Grounds, Sent};
pub use content::{Content, HistoryShare, SharedItem};
pub use device::{DecryptError, StateKey};
pub use error::Error;
pub use event::{Event, EventStream, Message};
pub use packet::HandoverPacket;
pub use wire::audit::{AuditAction, AuditEntry, AuditFilter, AuditOutcome};
pub use wire::figures::ChainReport;
pub use wire::handover::{
    ClockKind, Conference, Escalation, FamilyTold, HandoverEvent, Invitation, Measure, Notice, Offer, OfferRequest,
    OfferState, Ownership, Participant, ParticipantRole, RegieDecision,
};
pub use wire::{
    AgencyKind, ErrorCode, Identity, MemberDelivery, MemberId, MessageId, Role, SideThread, ThreadId, ThreadSummary,
    WireError,
};
pub use witness::AuditError;
