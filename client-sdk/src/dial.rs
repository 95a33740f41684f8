//! Opening one connection: TCP, TLS with the client certificate, WebSocket,
//! and the hub's greeting.
//!
//! With TLS 1.3 the hub judges the client certificate after the client
//! considers the handshake done, so a refusal surfaces as a TLS alert while the
//! WebSocket upgrade is read. Waiting for the hub's `hello` frame is therefore
//! the only way to know the connection was accepted.

use futures_util::StreamExt;
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::WebSocketStream;
use wire::{Hello, HubFrame};

use crate::builder::Settings;
use crate::Error;

/// A WebSocket over a client-side TLS stream.
pub(crate) type WsStream = WebSocketStream<TlsStream<TcpStream>>;

fn refused_or_unreachable(e: std::io::Error) -> Error {
    let tls_refusal = e.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>()).is_some();
    if tls_refusal || matches!(e.kind(), std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::UnexpectedEof) {
        Error::Refused(e.to_string())
    } else {
        Error::Unreachable(e.to_string())
    }
}

fn ws_error(e: WsError) -> Error {
    match e {
        WsError::Io(io) => refused_or_unreachable(io),
        WsError::Tls(tls) => Error::Refused(tls.to_string()),
        WsError::ConnectionClosed | WsError::AlreadyClosed => Error::Refused("connection closed by the hub".into()),
        other => Error::Protocol(other.to_string()),
    }
}

/// Connects and returns the stream with the hub's greeting.
pub(crate) async fn dial(settings: &Settings) -> Result<(WsStream, Hello), Error> {
    timeout(settings.connect_timeout, dial_unbounded(settings))
        .await
        .unwrap_or_else(|_| Err(Error::Unreachable("connection attempt timed out".into())))
}

async fn dial_unbounded(settings: &Settings) -> Result<(WsStream, Hello), Error> {
    let tcp = TcpStream::connect((settings.host.as_str(), settings.port))
        .await
        .map_err(|e| Error::Unreachable(format!("{}:{}: {e}", settings.host, settings.port)))?;
    let _ = tcp.set_nodelay(true);
    let tls = TlsConnector::from(settings.tls.clone())
        .connect(settings.server_name.clone(), tcp)
        .await
        .map_err(refused_or_unreachable)?;
    let config = WebSocketConfig::default()
        .max_message_size(Some(settings.max_frame_bytes))
        .max_frame_size(Some(settings.max_frame_bytes));
    let (mut ws, _) = tokio_tungstenite::client_async_with_config(settings.url.as_str(), tls, Some(config))
        .await
        .map_err(ws_error)?;
    loop {
        return match ws.next().await {
            None => Err(Error::Refused("connection closed before the hub's greeting".into())),
            Some(Err(e)) => Err(ws_error(e)),
            Some(Ok(Message::Binary(bytes))) => match see_and_decode(settings, &bytes) {
                Ok(HubFrame::Hello(hello)) => Ok((ws, hello)),
                Ok(HubFrame::Error { error }) => Err(Error::Hub(error)),
                Ok(other) => Err(Error::Protocol(format!("expected hello, got {other:?}"))),
                Err(e) => Err(Error::Protocol(e.to_string())),
            },
            Some(Ok(Message::Close(frame))) => {
                Err(Error::Refused(frame.map(|f| f.reason.to_string()).unwrap_or_else(|| "closed".into())))
            }
            Some(Ok(_)) => continue,
        };
    }
}

fn see_and_decode(settings: &Settings, bytes: &[u8]) -> Result<HubFrame, wire::DecodeError> {
    if let Some(tap) = &settings.frame_tap {
        tap.see(crate::raw::Direction::Received, bytes);
    }
    wire::decode::<HubFrame>(bytes)
}
