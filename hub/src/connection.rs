//! One client connection: frames in, frames out, within the limits.
//!
//! A connection has three parts. The reader (this task) decodes frames,
//! enforces the rate limit and the idle timeout, applies requests in order and
//! waits for their durability concurrently. The writer task owns the socket's
//! sending half: it sends replies and deliveries in batches, pings the client,
//! and drops a client that stops reading. The delivery pump (see `delivery`)
//! feeds the writer with thread entries. Nothing a peer sends can panic the hub
//! or reach another connection: every bad frame becomes a typed error frame or
//! a close with a reason.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use futures_util::stream::{FuturesUnordered, SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio::time::{interval, sleep_until, timeout, Instant, MissedTickBehavior};
use tokio_rustls::server::TlsStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::WebSocketStream;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};
use wire::{ClientFrame, ErrorCode, Hello, HubFrame, SessionLimits, WireError, PROTOCOL_VERSION};

use crate::delivery::{self, Farewell};
use crate::outbox::{Outbox, Queued, Reserved};
use crate::ratelimit::TokenBucket;
use crate::session::{Caller, Hub};
use certs::revocation::CertRefusal;
use wire::audit::{AuditAction, AuditOutcome};

/// A WebSocket over a server-side TLS stream.
pub type WsStream = WebSocketStream<TlsStream<TcpStream>>;

type Sink = SplitSink<WsStream, Message>;

/// Frames the writer sends in one batch before flushing.
const WRITE_BATCH: usize = 64;

/// How a connection ends from the hub's side.
struct Closing {
    code: CloseCode,
    reason: String,
    /// An error frame written just before the close, however much is queued:
    /// a farewell saying why.
    error: Option<Vec<u8>>,
}

impl Closing {
    fn new(code: CloseCode, reason: impl Into<String>) -> Self {
        Self { code, reason: reason.into(), error: None }
    }

    /// A policy close after an error frame that says why.
    fn refusal(error: WireError, reason: impl Into<String>) -> Self {
        Self { error: Some(wire::encode(&HubFrame::Error { error })), ..Self::new(CloseCode::Policy, reason) }
    }

    /// The close of a connection the hub stops ([`Farewell`]): its error frame, if any, then close 1008.
    fn farewell(farewell: Farewell) -> Self {
        match farewell.error {
            Some(error) => Self::refusal(error, farewell.close),
            None => Self::new(CloseCode::Policy, farewell.close),
        }
    }

    /// The error frame, if any, then the close.
    fn messages(self) -> impl Iterator<Item = Message> {
        let close = Message::Close(Some(CloseFrame { code: self.code, reason: self.reason.into() }));
        self.error.map(|bytes| Message::Binary(bytes.into())).into_iter().chain([close])
    }
}

fn error_frame(code: ErrorCode, message: impl Into<String>) -> HubFrame {
    HubFrame::Error { error: WireError::new(code, message) }
}

fn hello(hub: &Hub, caller: &Caller) -> HubFrame {
    HubFrame::Hello(Hello {
        protocol: PROTOCOL_VERSION,
        identity: caller.identity.clone(),
        limits: SessionLimits {
            max_frame_bytes: hub.limits.max_frame_bytes as u64,
            frames_per_second: hub.limits.frames_per_second,
            frames_burst: hub.limits.frames_burst,
            idle_timeout_ms: hub.limits.idle_timeout_ms,
            max_blob_bytes: hub.limits.max_blob_bytes,
            max_hub_frame_bytes: wire::max_hub_frame_bytes(hub.limits.max_frame_bytes as u64),
        },
    })
}

/// An admitted connection, opened: registered for delivery, its writer and
/// delivery pump running, its Hello queued.
pub struct Session {
    registration: delivery::Registration,
    mailbox: Arc<delivery::Mailbox>,
    stream: SplitStream<WsStream>,
    outbox: Outbox,
    close: oneshot::Sender<Closing>,
    writer: tokio::task::JoinHandle<Sink>,
    pump: Option<tokio::task::JoinHandle<()>>,
    broken: CancellationToken,
}

/// Registers an authenticated connection and starts its writer and delivery
/// pump; `None` once it is refused (too many connections of the identity, a
/// certificate no longer good, an identity the policy no longer admits).
pub async fn open(hub: &Arc<Hub>, ws: WsStream, caller: &Caller) -> Option<Session> {
    let record = hub.delivery_record(caller);
    let member = caller.member.clone();
    let registration = match hub.registry.register(member, caller.identity.clone(), caller.certificate.clone(), record)
    {
        Ok(registration) => registration,
        Err(e) => {
            warn!(peer = %caller.peer, identity = %caller.identity, "refused: {e}");
            let (code, reason) = e.code_and_reason();
            refuse(hub, ws, WireError::new(code, e.to_string()), reason).await;
            return None;
        }
    };
    let mailbox = registration.mailbox();
    // Registered first, checked second: a reload of the policy or the CRLs
    // either ran its revocation after this registration (and saw it) or was
    // in force for these checks, so no connection slips between the two.
    if let Err(refusal) = hub.certificates.check(&caller.certificate) {
        warn!(peer = %caller.peer, identity = %caller.identity, "refused connection: {refusal}");
        let why = format!("{}: {refusal}", refusal.rule());
        let _ = hub.audit_connection(Some(caller), caller.peer, AuditAction::Connect, AuditOutcome::Denied, &why).await;
        refuse_certificate(hub, ws, &refusal).await;
        return None;
    }
    let policy = hub.policy.current();
    if let Err(denied) = policy.admits(&caller.identity) {
        warn!(peer = %caller.peer, identity = %caller.identity, rule = %denied.rule, "refused connection: the policy no longer admits it");
        let error = WireError::new(ErrorCode::Forbidden, format!("denied by rule {}: {}", denied.rule, denied.reason));
        refuse(hub, ws, error, "the connection is not admitted").await;
        return None;
    }
    let (sink, stream) = ws.split();
    let limits = &hub.limits;
    let (outbox, frames_rx) =
        Outbox::new(limits.outbound_queue_frames, limits.outbound_queue_bytes, hub.outbound.clone());
    // A oneshot, not a channel: an mpsc allocates room for 32 messages at once, for every connection.
    let (close, close_rx) = oneshot::channel();
    let broken = CancellationToken::new();
    // Nothing else is queued yet, so the Hello is always the first frame.
    outbox.send(wire::encode(&hello(hub, caller)).into()).await.ok()?;
    let writer =
        tokio::spawn(write_loop(sink, frames_rx, close_rx, mailbox.clone(), hub.clone(), broken.clone(), caller.peer));
    // A certificate whose role may not read (an admin's, say) gets no case entries,
    // even when its worker id is a member's.
    let reads = policy.role_allows(caller.identity.role, crate::policy::Action::Read).allowed;
    let pump = reads.then(|| {
        let pumping = delivery::pump(
            hub.store.clone(),
            hub.registry.clone(),
            (caller.member.clone(), caller.device.clone()),
            mailbox.clone(),
            outbox.clone(),
            hub.delivery_log(caller),
        );
        let broken = broken.clone();
        tokio::spawn(async move {
            if let Err(delivery::PumpStopped::Store(e)) = pumping.await {
                tracing::error!(error = %e, "delivery stopped; closing the connection");
            }
            broken.cancel();
        })
    });
    Some(Session { registration, mailbox, stream, outbox, close, writer, pump, broken })
}

/// Serves an opened connection until it closes, the hub shuts down, or a
/// limit ends it.
pub async fn serve(hub: Arc<Hub>, session: Session, caller: &Caller, shutdown: CancellationToken) {
    let Session { registration, mailbox, mut stream, outbox, close, writer, pump, broken } = session;
    let closing = Reader::new(&hub, caller, &mailbox, outbox).run(&mut stream, &shutdown, &broken).await;
    // The pump sends nothing more from here; it records what it sent and ends.
    mailbox.close();
    match closing {
        Some(closing) => {
            // A client cut off for its frames is worth an operator's eye; the
            // ordinary ends are in the debug log with the connections.
            if closing.code == CloseCode::Policy {
                warn!(peer = %caller.peer, identity = %caller.identity, reason = %closing.reason, "closing connection");
            } else {
                debug!(peer = %caller.peer, reason = %closing.reason, "closing connection");
            }
            let _ = close.send(closing);
        }
        None => drop(close),
    }
    let sink = writer.await;
    if let Some(mut pump) = pump {
        // A pump waiting for the hub's share of outbound bytes would wait for
        // other connections: it gets a moment, then its unsent records are given up.
        let stopping = Box::pin(tokio::time::timeout(PUMP_GRACE, &mut pump));
        if stopping.await.is_err() {
            warn!(peer = %caller.peer, "the delivery pump did not stop in time; recording its deliveries for it");
            pump.abort();
        }
    }
    // What an aborted pump left unrecorded (nothing, when it ended by itself).
    let log = hub.delivery_log(caller);
    let recording = Box::pin(log.record_left(&mailbox));
    recording.await;
    // Before the linger: a client reconnecting at once is not refused for a socket on its way out.
    drop(registration);
    if let Ok(sink) = sink {
        linger(stream, sink, hub.limits.linger_bytes).await;
    }
}

/// Reads and drops what the client still sends, until it ends the
/// connection, [`LINGER`] has passed or it read `bytes`
/// (`limits.linger_bytes`). Closing a socket with unread input makes TCP
/// reset it, and a reset discards what the client had not read yet: the
/// farewell of a client that pipelines requests, or the `frame_too_large`
/// of one still sending its oversized frame. Read below the WebSocket layer,
/// which reads nothing more after an error. It first ends its own side (TLS
/// close_notify, then a TCP half-close), so that a client waiting for the
/// hub to close goes at once; it reads through TLS's own buffer, with none of
/// its own.
async fn linger(stream: SplitStream<WsStream>, sink: Sink, bytes: usize) {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
    let Ok(mut ws) = stream.reunite(sink) else { return };
    let tls = ws.get_mut();
    let draining = async {
        let _ = tls.shutdown().await;
        let mut left = bytes;
        while left > 0 {
            let read = match tls.fill_buf().await {
                Ok([]) | Err(_) => break,
                Ok(read) => read.len(),
            };
            tls.consume(read);
            left = left.saturating_sub(read);
        }
    };
    let _ = timeout(LINGER, draining).await;
}

/// How long a closed connection waits for its client to end it too.
const LINGER: std::time::Duration = std::time::Duration::from_secs(2);

/// How long a closing connection's pump may take to record its deliveries.
const PUMP_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// Refuses an authenticated connection: an error frame saying why, then a
/// policy close.
pub async fn refuse(hub: &Hub, mut ws: WsStream, error: WireError, reason: &str) {
    let _ = timeout(hub.limits.write_timeout(), say(&mut ws, Closing::refusal(error, reason))).await;
}

/// Writes a closing's frames, whatever else waits.
async fn say<S: futures_util::Sink<Message, Error = WsError> + Unpin>(
    ws: &mut S,
    closing: Closing,
) -> Result<(), WsError> {
    for message in closing.messages() {
        ws.feed(message).await?;
    }
    ws.flush().await
}

/// Refuses a connection whose certificate is no longer good (a resumed
/// session's, say): a `forbidden` error frame naming the rule, then close 1008.
pub async fn refuse_certificate(hub: &Hub, ws: WsStream, refusal: &CertRefusal) {
    refuse(hub, ws, delivery::certificate_denied(refusal), refusal.rule()).await
}

/// The reading half's state.
struct Reader<'a> {
    hub: &'a Arc<Hub>,
    caller: &'a Caller,
    mailbox: &'a delivery::Mailbox,
    out: Outbox,
    bucket: TokenBucket,
    strikes: u32,
}

/// A request's reply once it is durable, with the room reserved for it.
async fn settled(
    hub: Arc<Hub>,
    id: u64,
    outcome: crate::requests::Outcome,
    reserved: Option<Reserved>,
) -> (u64, Result<wire::Reply, WireError>, Option<Reserved>) {
    (id, hub.settle(outcome).await, reserved)
}

/// Whether a request's reply may be as large as a frame (a blob chunk, a
/// listing): its bytes are reserved before the request is applied.
fn large_reply(request: &wire::Request) -> bool {
    use wire::Request as R;
    match request {
        R::GetBlobChunk { .. }
        | R::AuditQuery { .. }
        | R::GetOwnership { .. }
        | R::ListOffers
        | R::ListThreads
        | R::ListMembers { .. }
        // Handover steps answer with the case's whole ownership state.
        | R::OfferHandover { .. }
        | R::AnswerOffer { .. }
        | R::CompleteHandover { .. }
        | R::ReportDone { .. }
        | R::ScheduleRappel { .. }
        | R::WithdrawOffer { .. }
        | R::CancelOffer { .. }
        | R::TakeOver { .. }
        | R::AddParticipant { .. }
        | R::CloseCase { .. }
        | R::ReopenCase { .. }
        | R::LeaveCase { .. } => true,
        R::OnBehalfOf { request, .. } => large_reply(request),
        _ => false,
    }
}

impl<'a> Reader<'a> {
    fn new(hub: &'a Arc<Hub>, caller: &'a Caller, mailbox: &'a delivery::Mailbox, out: Outbox) -> Self {
        let bucket = TokenBucket::new(hub.limits.frames_per_second, hub.limits.frames_burst);
        Self { hub, caller, mailbox, out, bucket, strikes: 0 }
    }

    /// Runs until the connection should end; returns the close to send, if any.
    async fn run(
        mut self,
        stream: &mut futures_util::stream::SplitStream<WsStream>,
        shutdown: &CancellationToken,
        broken: &CancellationToken,
    ) -> Option<Closing> {
        let (limits, mailbox) = (&self.hub.limits, self.mailbox);
        let mut inflight = FuturesUnordered::new();
        // A request whose reply may be large waits here for room for that reply
        // before it is applied, and nothing more is read meanwhile: waiting in
        // this loop, rather than inside a branch, lets replies in progress go
        // out and free their room.
        let (out, large) = (self.out.clone(), self.largest_reply());
        let mut waiting: Option<(u64, wire::Request, Instant)> = None;
        let mut idle_deadline = Instant::now() + limits.idle_timeout();
        let expiry = crate::revocation::expired(&self.caller.certificate);
        tokio::pin!(expiry);
        let closing = loop {
            tokio::select! {
                biased;
                farewell = mailbox.revoked() => break Some(Closing::farewell(farewell)),
                refusal = &mut expiry => {
                    let farewell = Farewell::certificate(&refusal);
                    // As a revocation does: nothing more is delivered, nothing queued is written.
                    mailbox.revoke(farewell.clone());
                    let (caller, record) = (self.caller, self.hub.delivery_record(self.caller));
                    warn!(peer = %caller.peer, identity = %caller.identity, "closing connection: {refusal}");
                    // Closed whether or not the entry can be written: an expired certificate must not stay connected.
                    let auditing = Box::pin(self.hub.audit_all(vec![farewell.record(record)]));
                    let _ = auditing.await;
                    break Some(Closing::farewell(farewell));
                }
                _ = broken.cancelled() => break None,
                _ = shutdown.cancelled() => break Some(Closing::new(CloseCode::Away, "hub shutting down")),
                Some((id, result, reserved)) = inflight.next(), if !inflight.is_empty() => {
                    if self.reply(id, result, reserved).await.is_err() {
                        break None;
                    }
                }
                reserved = out.reserve(large), if waiting.is_some() => match (reserved, waiting.take()) {
                    (Ok(reserved), Some((id, request, arrived))) => {
                        let outcome = self.apply(request, arrived).await;
                        inflight.push(settled(self.hub.clone(), id, outcome, Some(reserved)));
                    }
                    _ => break None,
                },
                message = stream.next(), if waiting.is_none() && inflight.len() < limits.max_inflight_per_connection => {
                    let arrived = Instant::now();
                    idle_deadline = arrived + limits.idle_timeout();
                    match self.on_message(message).await {
                        Ok(Some((id, request))) if large_reply(&request) => waiting = Some((id, request, arrived)),
                        Ok(Some((id, request))) => {
                            let outcome = self.apply(request, arrived).await;
                            inflight.push(settled(self.hub.clone(), id, outcome, None));
                        }
                        Ok(None) => {}
                        Err(closing) => break closing,
                    }
                }
                _ = sleep_until(idle_deadline) => break Some(Closing::new(CloseCode::Away, "idle timeout")),
            }
        };
        // Requests already applied still get their answer when the client is
        // there to read it, unless its certificate is no longer good.
        if closing.is_some() && !mailbox.is_revoked() {
            while let Some((id, result, reserved)) = inflight.next().await {
                if self.reply(id, result, reserved).await.is_err() {
                    break;
                }
            }
        }
        closing
    }

    /// Applies a request. Its future is boxed: inline, the largest of all the
    /// requests' futures would be part of every open connection's state
    /// (several KiB each, idle or not), where a box costs one allocation per request.
    async fn apply(&self, request: wire::Request, arrived: Instant) -> crate::requests::Outcome {
        let applying = Box::pin(crate::stages::arrived(arrived.into_std(), self.hub.apply(self.caller, request)));
        applying.await
    }

    /// Records an acknowledgement, boxed as [`Reader::apply`] is, after the
    /// record of the deliveries it acknowledges: this connection's, and those
    /// of the identity's other connections (one device may have two, one of
    /// them on its way out), whose cursor it may move too.
    async fn ack(&self, thread: wire::ThreadId, seq: u64) -> Result<(), WireError> {
        let log = || self.hub.delivery_log(self.caller);
        let acking = Box::pin(async move {
            for other in self.hub.registry.mailboxes_of(&self.caller.member) {
                if !std::ptr::eq(other.as_ref(), self.mailbox) {
                    other.before_ack(log, thread).await;
                }
            }
            self.mailbox.before_ack(log, thread).await;
            self.hub.ack(self.caller, thread, seq).await
        });
        acking.await
    }

    /// Handles one message; `Ok(Some(..))` is a request to apply.
    async fn on_message(
        &mut self,
        message: Option<Result<Message, WsError>>,
    ) -> Result<Option<(u64, wire::Request)>, Option<Closing>> {
        let bytes = match message {
            None | Some(Ok(Message::Close(_))) => return Err(None),
            Some(Ok(Message::Binary(bytes))) => bytes,
            Some(Ok(Message::Text(_))) => {
                return self.strike(None, "text frames are not accepted; send binary CBOR").await.map(|_| None)
            }
            Some(Ok(_)) => return Ok(None),
            Some(Err(WsError::Capacity(e))) => {
                info!(peer = %self.caller.peer, "oversized frame: {e}");
                let reason = format!("frame too large (limit {} bytes)", self.hub.limits.max_frame_bytes);
                let _ = self.send(error_frame(ErrorCode::FrameTooLarge, reason.clone())).await;
                return Err(Some(Closing::new(CloseCode::Size, reason)));
            }
            Some(Err(WsError::Protocol(e))) => {
                info!(peer = %self.caller.peer, "WebSocket protocol error: {e}");
                return Err(Some(Closing::new(CloseCode::Protocol, "WebSocket protocol error")));
            }
            Some(Err(e)) => {
                debug!(peer = %self.caller.peer, "connection error: {e}");
                return Err(None);
            }
        };
        let frame = match wire::decode_frame::<ClientFrame>(&bytes) {
            Ok(frame) => frame,
            Err(e) => return self.strike(e.request_id(), &e.to_string()).await.map(|_| None),
        };
        self.strikes = 0;
        if let Err(wait) = self.bucket.take() {
            let mut error = WireError::new(ErrorCode::RateLimited, "too many frames per second");
            error.retry_after_ms = Some(wait.as_millis() as u64 + 1);
            let frame = match frame {
                ClientFrame::Request { id, .. } => HubFrame::Reply { id, result: Err(error) },
                ClientFrame::Ack { .. } => HubFrame::Error { error },
            };
            return self.send(frame).await.map(|_| None);
        }
        match frame {
            ClientFrame::Request { id, request } => Ok(Some((id, request))),
            ClientFrame::Ack { thread, seq } => match self.ack(thread, seq).await {
                Ok(()) => Ok(None),
                Err(error) => self.send(HubFrame::Error { error }).await.map(|_| None),
            },
        }
    }

    /// Answers a malformed frame: a reply to its request id when one could be
    /// read, so that a pipelining client knows which request failed; an error
    /// frame otherwise.
    async fn strike(&mut self, id: Option<u64>, why: &str) -> Result<(), Option<Closing>> {
        self.strikes += 1;
        let error = WireError::new(ErrorCode::Malformed, why);
        let frame = match id {
            Some(id) => HubFrame::Reply { id, result: Err(error) },
            None => HubFrame::Error { error },
        };
        self.send(frame).await?;
        if self.strikes >= self.hub.limits.max_protocol_errors {
            return Err(Some(Closing::new(CloseCode::Policy, "too many malformed frames")));
        }
        Ok(())
    }

    /// Queues a frame for the writer. A reply that would exceed the announced
    /// `max_hub_frame_bytes` (a long audit answer, a case with very many
    /// offers) is answered `frame_too_large` instead, so the hub never sends a
    /// frame a conforming client would refuse to read.
    /// Sends a reply, in the bytes reserved for it when there are some.
    async fn reply(
        &self,
        id: u64,
        result: Result<wire::Reply, WireError>,
        reserved: Option<Reserved>,
    ) -> Result<(), Option<Closing>> {
        let bytes = self.encode(HubFrame::Reply { id, result }).into();
        // Boxed, as every queueing of the reader is: inline, each await on the
        // queue would add its future to every open connection's state.
        let queueing = match reserved {
            Some(reserved) => {
                Box::pin(self.out.send_reserved(bytes, reserved)) as Pin<Box<dyn Future<Output = _> + Send + '_>>
            }
            None => Box::pin(self.out.send(bytes)),
        };
        queueing.await.map_err(|_| None)
    }

    async fn send(&self, frame: HubFrame) -> Result<(), Option<Closing>> {
        let queueing = Box::pin(self.out.send(self.encode(frame).into()));
        queueing.await.map_err(|_| None)
    }

    /// The largest reply a request can get: the largest hub frame.
    fn largest_reply(&self) -> usize {
        wire::max_hub_frame_bytes(self.hub.limits.max_frame_bytes as u64) as usize
    }

    /// Encodes a frame; a reply over `max_hub_frame_bytes` becomes `frame_too_large`.
    fn encode(&self, frame: HubFrame) -> Vec<u8> {
        let mut bytes = wire::encode(&frame);
        let limit = wire::max_hub_frame_bytes(self.hub.limits.max_frame_bytes as u64);
        if let HubFrame::Reply { id, .. } = frame {
            if bytes.len() as u64 > limit {
                warn!(peer = %self.caller.peer, size = bytes.len(), "reply over max_hub_frame_bytes refused");
                let message = format!("the reply would be {} bytes, over max_hub_frame_bytes ({limit})", bytes.len());
                bytes = wire::encode(&HubFrame::Reply {
                    id,
                    result: Err(WireError::new(ErrorCode::FrameTooLarge, message)),
                });
            }
        }
        bytes
    }
}

/// Sends frames in batches, pings, and gives up on a client that stops
/// reading. Once the connection is revoked (its certificate revoked or
/// expired, its identity no longer admitted), no frame it has not begun to
/// write is written: it drops them and writes the farewell itself, whatever
/// the reader is doing (one waiting for room in the queue it just closed
/// would otherwise end without one).
async fn write_loop(
    mut sink: Sink,
    mut frames: mpsc::Receiver<Queued>,
    mut close: oneshot::Receiver<Closing>,
    mailbox: Arc<delivery::Mailbox>,
    hub: Arc<Hub>,
    broken: CancellationToken,
    peer: std::net::SocketAddr,
) -> Sink {
    let limits = &hub.limits;
    let mut ping = interval(limits.idle_timeout() / 3);
    ping.set_missed_tick_behavior(MissedTickBehavior::Delay);
    ping.tick().await;
    let mut frames_open = true;
    loop {
        // Queued frames go before the close, so replies to applied requests are not cut off.
        let first = tokio::select! {
            biased;
            farewell = mailbox.revoked() => {
                frames.close();
                // Until every sender that had room has put its frame: each holds bytes of the budget.
                while frames.recv().await.is_some() {}
                let _ = timeout(limits.write_timeout(), say(&mut sink, Closing::farewell(farewell))).await;
                break;
            }
            frame = frames.recv(), if frames_open => match frame {
                Some(frame) => Some(frame),
                None => {
                    frames_open = false;
                    continue;
                }
            },
            closing = &mut close => {
                if let Ok(closing) = closing {
                    let _ = timeout(limits.write_timeout(), say(&mut sink, closing)).await;
                }
                break;
            }
            _ = ping.tick() => None,
        };
        // The frames' bytes stay reserved until the socket has them.
        let mut written = Vec::with_capacity(WRITE_BATCH);
        let sent = timeout(limits.write_timeout(), async {
            match first {
                Some(frame) => {
                    sink.feed(Message::Binary(frame.bytes.clone())).await?;
                    written.push(frame);
                }
                None => sink.feed(Message::Ping(Default::default())).await?,
            }
            while written.len() < WRITE_BATCH && !mailbox.is_revoked() {
                match frames.try_recv() {
                    Ok(frame) => {
                        sink.feed(Message::Binary(frame.bytes.clone())).await?;
                        written.push(frame);
                    }
                    Err(_) => break,
                }
            }
            sink.flush().await
        })
        .await;
        if matches!(sent, Ok(Ok(()))) {
            for published in written.iter().filter_map(|frame| frame.published) {
                crate::stages::record_time(crate::stages::Stage::Deliver, published.elapsed());
            }
        }
        drop(written);
        match sent {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                debug!("write failed: {e}");
                break;
            }
            Err(_) => {
                warn!(%peer, "client did not read for {} ms; disconnecting", limits.write_timeout_ms);
                break;
            }
        }
    }
    broken.cancel();
    let _ = timeout(limits.write_timeout(), sink.close()).await;
    sink
}
