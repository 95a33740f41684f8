//! A raw frame connection, for conformance tests and protocol debugging.
//!
//! It does the TLS and WebSocket work of the SDK and waits for the hub's
//! greeting, then leaves every byte to the caller: no retries, no
//! de-duplication, no reconnect. Use [`crate::Client`] for real work.

use std::fmt;
use std::sync::Arc;

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message as WsMessage;
use wire::{ClientFrame, Hello, HubFrame};

use crate::dial::WsStream;
use crate::Error;

/// Which way a frame went, for a [`FrameTap`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// A client frame the SDK sent.
    Sent,
    /// A hub frame the SDK received (the `hello` included).
    Received,
}

/// Sees the bytes of every binary frame a [`crate::Client`] sends and
/// receives, as they are on the wire; set with
/// [`crate::ClientBuilder::frame_tap`]. Conformance tests check each against
/// `PROTOCOL.md`; the tap must be quick, as it runs on the connection's task.
#[derive(Clone)]
pub struct FrameTap(Arc<TapFn>);

type TapFn = dyn Fn(Direction, &[u8]) + Send + Sync;

impl FrameTap {
    /// A tap calling `see` with each frame.
    pub fn new(see: impl Fn(Direction, &[u8]) + Send + Sync + 'static) -> Self {
        Self(Arc::new(see))
    }

    pub(crate) fn see(&self, direction: Direction, bytes: &[u8]) {
        (self.0)(direction, bytes)
    }
}

impl fmt::Debug for FrameTap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("FrameTap")
    }
}

/// What arrived on a raw connection.
#[derive(Debug, Clone, PartialEq)]
pub enum RawIncoming {
    /// A decoded hub frame.
    Frame(HubFrame),
    /// The hub closed the connection with this close code and reason.
    Closed {
        /// The WebSocket close code (for example 1009 for a frame that is too large).
        code: u16,
        /// The reason the hub gave.
        reason: String,
    },
    /// The connection ended without a close frame.
    Ended,
}

/// A connection that sends and receives frames exactly as given.
pub struct RawConnection {
    ws: WsStream,
    hello: Hello,
}

impl RawConnection {
    pub(crate) fn new(ws: WsStream, hello: Hello) -> Self {
        Self { ws, hello }
    }

    /// The hub's greeting.
    pub fn hello(&self) -> &Hello {
        &self.hello
    }

    /// Sends arbitrary bytes as one binary WebSocket message.
    pub async fn send_bytes(&mut self, bytes: Vec<u8>) -> Result<(), Error> {
        self.ws.send(WsMessage::Binary(bytes.into())).await.map_err(|e| Error::Unreachable(e.to_string()))
    }

    /// Sends a text WebSocket message (which the hub does not accept).
    pub async fn send_text(&mut self, text: &str) -> Result<(), Error> {
        self.ws.send(WsMessage::Text(text.into())).await.map_err(|e| Error::Unreachable(e.to_string()))
    }

    /// Encodes and sends a frame.
    pub async fn send_frame(&mut self, frame: &ClientFrame) -> Result<(), Error> {
        self.send_bytes(wire::encode(frame)).await
    }

    /// Waits for the next frame or the end of the connection.
    pub async fn next(&mut self) -> Result<RawIncoming, Error> {
        loop {
            return match self.ws.next().await {
                None => Ok(RawIncoming::Ended),
                Some(Err(_)) => Ok(RawIncoming::Ended),
                Some(Ok(WsMessage::Binary(bytes))) => {
                    wire::decode(&bytes).map(RawIncoming::Frame).map_err(|e| Error::Protocol(e.to_string()))
                }
                Some(Ok(WsMessage::Close(frame))) => Ok(match frame {
                    Some(f) => RawIncoming::Closed { code: f.code.into(), reason: f.reason.to_string() },
                    None => RawIncoming::Closed { code: 1005, reason: String::new() },
                }),
                Some(Ok(_)) => continue,
            };
        }
    }
}
