//! The ceiling for the benchmark: a bare relay.
//!
//! It does what the hub does on the wire and nothing else: the same TLS 1.3
//! configuration with client certificates (built by `hub::tls`), WebSocket, and
//! the same CBOR frames, so the same SDK clients can drive it. A `send` is
//! encoded once as an event and copied to every member's connection, then
//! answered at once. No storage, no durability, no policy, no cursors: the
//! difference between it and the hub is the price of those.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_tungstenite::tungstenite::{Bytes, Message};
use wire::{
    ClientFrame, Entry, EntryBody, ErrorCode, Hello, HubFrame, MemberId, MessageId, Reply, Request, SessionLimits,
    ThreadId, WireError,
};

#[derive(Default)]
struct State {
    threads: Mutex<HashMap<ThreadId, Vec<MemberId>>>,
    /// Per thread: the MLS epoch and the members added since the last commit
    /// (whom the next Welcome is for). The relay checks nothing.
    groups: Mutex<HashMap<ThreadId, (u64, Vec<MemberId>)>>,
    /// KeyPackages in memory, handed out once each, unverified.
    key_packages: Mutex<HashMap<MemberId, std::collections::VecDeque<serde_bytes::ByteBuf>>>,
    online: Mutex<HashMap<MemberId, Vec<mpsc::Sender<Bytes>>>>,
    seq: AtomicU64,
}

/// Serves the relay protocol on `listener` until the process ends.
pub async fn serve(listener: TcpListener, acceptor: TlsAcceptor) {
    let state = Arc::new(State::default());
    loop {
        let Ok((tcp, _)) = listener.accept().await else { continue };
        let (state, acceptor) = (state.clone(), acceptor.clone());
        tokio::spawn(async move {
            let _ = tcp.set_nodelay(true);
            let Ok(tls) = acceptor.accept(tcp).await else { return };
            let Some((identity, _, _)) = hub::tls::peer(tls.get_ref().1) else { return };
            let config = hub::server::websocket_config(4 << 20);
            let Ok(ws) = tokio_tungstenite::accept_async_with_config(tls, Some(config)).await else { return };
            connection(state, ws, identity).await;
        });
    }
}

async fn connection<S>(state: Arc<State>, ws: tokio_tungstenite::WebSocketStream<S>, identity: wire::Identity)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let me = identity.member_id();
    let (mut sink, mut stream) = ws.split();
    let (tx, mut rx) = mpsc::channel::<Bytes>(256);
    let hello = HubFrame::Hello(Hello {
        protocol: wire::PROTOCOL_VERSION,
        identity,
        limits: SessionLimits {
            max_frame_bytes: 4 << 20,
            frames_per_second: u32::MAX,
            frames_burst: u32::MAX,
            idle_timeout_ms: u64::MAX,
            max_blob_bytes: u64::MAX,
            max_hub_frame_bytes: wire::max_hub_frame_bytes(4 << 20),
        },
    });
    let _ = tx.send(wire::encode(&hello).into()).await;
    state.online.lock().unwrap().entry(me.clone()).or_default().push(tx.clone());
    let writer = tokio::spawn(async move {
        while let Some(first) = rx.recv().await {
            if sink.feed(Message::Binary(first)).await.is_err() {
                return;
            }
            while let Ok(more) = rx.try_recv() {
                if sink.feed(Message::Binary(more)).await.is_err() {
                    return;
                }
            }
            if sink.flush().await.is_err() {
                return;
            }
        }
    });
    while let Some(Ok(message)) = stream.next().await {
        let Message::Binary(bytes) = message else { continue };
        let Ok(ClientFrame::Request { id, request }) = wire::decode::<ClientFrame>(&bytes) else { continue };
        let result = handle(&state, &me, request).await;
        if tx.send(wire::encode(&HubFrame::Reply { id, result }).into()).await.is_err() {
            break;
        }
    }
    if let Some(senders) = state.online.lock().unwrap().get_mut(&me) {
        senders.retain(|s| !s.same_channel(&tx));
    }
    writer.abort();
}

async fn handle(state: &State, me: &MemberId, request: Request) -> Result<Reply, WireError> {
    Ok(match request {
        Request::CreateThread { .. } | Request::OpenSideThread { .. } => {
            let thread = ThreadId::random();
            state.threads.lock().unwrap().insert(thread, vec![me.clone()]);
            Reply::ThreadCreated { thread }
        }
        Request::AddMember { thread, member, .. } => {
            state.threads.lock().unwrap().entry(thread).or_default().push(member.clone());
            state.groups.lock().unwrap().entry(thread).or_default().1.push(member);
            Reply::MemberAdded { seq: 0 }
        }
        Request::Send { thread, message, payload } => {
            let seq = forward(state, me, thread, message, EntryBody::Message { payload }).await;
            Reply::Sent { seq, duplicate: false }
        }
        Request::InitGroup { .. } => Reply::GroupReady { epoch: 0 },
        Request::Commit { thread, commit, welcome, .. } => {
            let (epoch, joiners) = {
                let mut groups = state.groups.lock().unwrap();
                let group = groups.entry(thread).or_default();
                group.0 += 1;
                (group.0, std::mem::take(&mut group.1))
            };
            let seq = forward(state, me, thread, MessageId::new(), EntryBody::Commit { epoch, commit }).await;
            if let Some(welcome) = welcome {
                let body = EntryBody::Welcome { to: joiners, welcome: welcome.into_vec() };
                forward(state, me, thread, MessageId::new(), body).await;
            }
            Reply::CommitAccepted { epoch, seq }
        }
        Request::ListThreads => Reply::Threads { threads: Vec::new() },
        Request::ListMembers { thread } => {
            Reply::Members { members: state.threads.lock().unwrap().get(&thread).cloned().unwrap_or_default() }
        }
        Request::UploadKeyPackages { key_packages } => {
            let mut all = state.key_packages.lock().unwrap();
            let mine = all.entry(me.clone()).or_default();
            mine.extend(key_packages);
            Reply::KeyPackagesStored { stock: mine.len() as u64 }
        }
        Request::ClaimKeyPackage { member, .. } => {
            let claimed = state.key_packages.lock().unwrap().get_mut(&member).and_then(|kps| kps.pop_front());
            match claimed {
                Some(key_package) => Reply::KeyPackage { key_package },
                None => return Err(WireError::new(ErrorCode::NoKeyPackage, "no KeyPackage")),
            }
        }
        // The attachment benchmark compares the hub with plain AES-GCM instead.
        Request::PutBlobChunk { .. } | Request::GetBlobChunk { .. } => {
            return Err(WireError::new(ErrorCode::Invalid, "the relay keeps no blobs"))
        }
        // Its devices never lose their groups in a benchmark.
        Request::GroupInfo { .. } | Request::Rejoin { .. } => {
            return Err(WireError::new(ErrorCode::Invalid, "the relay keeps no group state"))
        }
        Request::DeliveryStatus { .. } => return Err(WireError::new(ErrorCode::Invalid, "the relay keeps no cursors")),
        // The relay enforces no policy and keeps no audit log.
        Request::OnBehalfOf { request, .. } => return Box::pin(handle(state, me, *request)).await,
        Request::AuditQuery { .. }
        | Request::AuditHead { .. }
        | Request::MarkReviewed { .. }
        | Request::ChainFigures { .. } => {
            return Err(WireError::new(ErrorCode::Invalid, "the relay keeps no audit log"))
        }
        Request::OfferHandover { .. }
        | Request::AnswerOffer { .. }
        | Request::CompleteHandover { .. }
        | Request::ReportDone { .. }
        | Request::ScheduleRappel { .. }
        | Request::SetMeasure { .. }
        | Request::CallConference { .. }
        | Request::RecordDecision { .. }
        | Request::ScheduleEvaluation { .. }
        | Request::WithdrawOffer { .. }
        | Request::CancelOffer { .. }
        | Request::TakeOver { .. }
        | Request::AddParticipant { .. }
        | Request::CloseCase { .. }
        | Request::RecordHistoryShare { .. }
        | Request::ReopenCase { .. }
        | Request::LeaveCase { .. }
        | Request::GetOwnership { .. }
        | Request::ListOffers => return Err(WireError::new(ErrorCode::Invalid, "the relay keeps no handover state")),
    })
}

/// Encodes an entry once and copies it to every online member of the thread.
async fn forward(state: &State, me: &MemberId, thread: ThreadId, id: MessageId, body: EntryBody) -> u64 {
    let seq = state.seq.fetch_add(1, Ordering::Relaxed) + 1;
    let entry = Entry { seq, id, sender: me.clone(), at_ms: 0, body };
    let frame: Bytes = wire::encode(&HubFrame::Event { thread, entry }).into();
    for target in recipients(state, thread) {
        let _ = target.send(frame.clone()).await;
    }
    seq
}

fn recipients(state: &State, thread: ThreadId) -> Vec<mpsc::Sender<Bytes>> {
    let members = state.threads.lock().unwrap().get(&thread).cloned().unwrap_or_default();
    let online = state.online.lock().unwrap();
    members.iter().filter_map(|m| online.get(m)).flatten().cloned().collect()
}
