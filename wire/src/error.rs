//! Typed errors that travel on the wire.
//!
//! The hub never answers with a bare string: each refusal carries an
//! [`ErrorCode`] a client can match on, and a human-readable message for logs.

use serde::{Deserialize, Serialize};

/// What went wrong, as a client should act on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The frame was not valid CBOR or not a known frame.
    Malformed,
    /// The frame was larger than the hub's maximum frame size.
    FrameTooLarge,
    /// The connection sent more frames per second than allowed; retry later.
    RateLimited,
    /// The thread (or other object) does not exist, or the caller may not see it.
    /// The two cases are deliberately indistinguishable.
    NotFound,
    /// The caller may see the object but not perform this action on it.
    Forbidden,
    /// The request was well-formed but its content is invalid.
    Invalid,
    /// The request conflicts with stored state (for example a reused message id).
    Conflict,
    /// A commit for an epoch the group has left; process the newer commits and retry.
    StaleEpoch,
    /// The member has no KeyPackage left at the hub; it must come online and upload more.
    NoKeyPackage,
    /// The attachment would exceed the hub's maximum blob size.
    BlobTooLarge,
    /// The identity already has the maximum number of open connections.
    TooManyConnections,
    /// A quota or size limit of the hub's configuration; the message names its
    /// config key and value. Nothing was stored.
    LimitExceeded,
    /// The hub is shutting down or cannot make the action durable; retry later.
    Unavailable,
    /// An internal fault; the action did not take effect.
    Internal,
}

/// An error frame body: a code, a message, and a retry hint where one applies.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{code:?}: {message}")]
pub struct WireError {
    /// The machine-readable kind.
    pub code: ErrorCode,
    /// A human-readable explanation; never contains case content.
    pub message: String,
    /// For [`ErrorCode::RateLimited`] and [`ErrorCode::Unavailable`]: when to retry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_ms: Option<u64>,
    /// For [`ErrorCode::StaleEpoch`]: the group's current epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<u64>,
}

impl WireError {
    /// Builds an error with a code and a message.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self { code, message: message.into(), retry_after_ms: None, epoch: None }
    }

    /// The uniform answer for a thread that does not exist or may not be seen.
    pub fn thread_not_found() -> Self {
        Self::new(ErrorCode::NotFound, "thread not found")
    }
}
