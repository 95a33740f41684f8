//! The SDK's errors: one enum, each variant something a caller can act on.

use wire::{ErrorCode, WireError};

/// What went wrong in a call to the SDK.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// The builder was given an incomplete or invalid configuration.
    #[error("invalid client configuration: {0}")]
    Config(String),
    /// The hub could not be reached (TCP connect failed or timed out).
    #[error("cannot reach the hub: {0}")]
    Unreachable(String),
    /// The hub refused the connection: certificate not accepted, or closed
    /// during the handshake with a reason.
    #[error("the hub refused the connection: {0}")]
    Refused(String),
    /// The hub answered the request with a typed error.
    #[error("the hub refused the request: {0}")]
    Hub(WireError),
    /// No answer within the request timeout (the request may still take effect;
    /// every request is idempotent, so it is safe to repeat).
    #[error("no answer from the hub within the request timeout")]
    Timeout,
    /// The caller asked for something the SDK will not send (an empty history
    /// share, or one that holds another).
    #[error("invalid request: {0}")]
    Invalid(String),
    /// The hub sent something this SDK does not understand.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// An MLS device the hub presented (a member's KeyPackage) is not bound to
    /// the certificate of the identity it names, under the identity CA: the
    /// hub, or whoever controls it, offered a key of its own. Nothing was
    /// encrypted to it.
    #[error("refused a device that is not bound to its certificate: {0}")]
    Unbound(certs::binding::BindingError),
    /// The device's MLS state could not be read, written or used.
    #[error("device state: {0}")]
    Device(String),
    /// The device state is encrypted and the key given with
    /// [`crate::ClientBuilder::state_key`] does not open it, or none was given.
    #[error("device state: {0}")]
    StateKey(String),
    /// An attachment could not be uploaded or fetched.
    #[error("attachment: {0}")]
    Attachment(crate::attachment::AttachmentError),
    /// A handover packet is incomplete or inconsistent; every problem is listed.
    #[error("handover packet:\n{0}")]
    Packet(crate::packet::PacketErrors),
    /// What the hub sent about its audit log does not verify (see [`crate::witness`]).
    #[error("audit log: {0}")]
    Audit(crate::witness::AuditError),
    /// The client has been closed.
    #[error("the client is closed")]
    Closed,
}

impl Error {
    /// The hub's error code, when the hub refused the request.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            Self::Hub(e) => Some(e.code),
            _ => None,
        }
    }

    /// True when the thread does not exist or the caller may not see it.
    pub fn is_not_found(&self) -> bool {
        self.code() == Some(ErrorCode::NotFound)
    }
}
