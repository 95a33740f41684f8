//! The Ketenhub wire protocol, shared by the hub and the client SDK.
//!
//! Every WebSocket binary message is one CBOR-encoded frame: a [`ClientFrame`]
//! from a client or a [`HubFrame`] from the hub. `PROTOCOL.md` at the root of
//! the repository describes the same encoding in CDDL for implementers in other
//! languages; this crate is the reference. Keeping both sides on one set of
//! types means the hub and the SDK cannot drift apart.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod audit;
pub mod calendar;
pub mod codec;
pub mod error;
pub mod figures;
pub mod frame;
pub mod handover;
pub mod hex;
pub mod identity;
pub mod merkle;
pub mod mls;

pub use codec::{decode, decode_frame, encode, DecodeError};
pub use error::{ErrorCode, WireError};
pub use frame::*;
pub use identity::{AgencyKind, Identity, IdentityError, MemberId, Oin, Role};

/// The protocol version this crate speaks; the hub announces it in [`Hello`].
pub const PROTOCOL_VERSION: u16 = 1;
