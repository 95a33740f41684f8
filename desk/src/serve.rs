//! Running one desk: connect to the hub, open the store, serve the pages.
//!
//! [`start`] is shared by `ketenhub-desk serve` (one desk until ctrl-c) and
//! the demo (several desks in one process), so both run exactly the same code.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use hub::policy::Policy;
use ketenhub_sdk::Client;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use crate::desk::Desk;
use crate::store::DeskStore;
use crate::web::{self, Web};

/// Everything a desk needs to start.
#[derive(Debug, Clone)]
pub struct DeskOptions {
    /// The hub's URL.
    pub hub: String,
    /// The chain CA.
    pub ca: PathBuf,
    /// This identity's certificate.
    pub cert: PathBuf,
    /// Its private key.
    pub key: PathBuf,
    /// The state directory.
    pub state: PathBuf,
    /// The hub's published policy.
    pub policy: PathBuf,
    /// The hub's audit public key file, for a privacy officer's desk.
    pub audit_key: Option<PathBuf>,
    /// Where to listen (loopback).
    pub listen: SocketAddr,
    /// Whether the packet form offers to fill in the example family (the demo only).
    pub examples: bool,
}

/// A desk that is serving.
pub struct RunningDesk {
    /// The desk.
    pub desk: Arc<Desk>,
    /// The address it serves on.
    pub addr: SocketAddr,
    /// The URL to open, with the access token.
    pub url: String,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
    events: tokio::task::JoinHandle<()>,
}

impl RunningDesk {
    /// Stops serving, closes the connection to the hub, and waits until every event received is kept;
    /// the state directory is free for another desk once this returns.
    pub async fn stop(self) {
        self.stop.cancel();
        let _ = self.task.await;
        self.desk.client.close().await;
        // The event stream ends with the client; a stream that does not end within the bound is left behind.
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), self.events).await;
    }
}

fn audit_key(path: &std::path::Path) -> anyhow::Result<[u8; 32]> {
    let text = std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("audit key {}: {e}", path.display()))?;
    let key = hub::audit::chain::AuditKey::parse_public_key(&text)?;
    key.try_into().map_err(|_| anyhow::anyhow!("audit key {}: not 32 bytes", path.display()))
}

/// Connects a desk to its hub and starts serving it.
pub async fn start(options: DeskOptions) -> anyhow::Result<RunningDesk> {
    let policy = Arc::new(Policy::load(&options.policy)?);
    std::fs::create_dir_all(&options.state)?;
    let files = options.state.join("files");
    std::fs::create_dir_all(&files)?;
    let mut builder = Client::builder()
        .url(&options.hub)
        .ca_file(&options.ca)
        .identity_files(&options.cert, &options.key)
        .state_dir(options.state.join("mls"));
    if let Some(path) = &options.audit_key {
        builder = builder.audit_public_key(audit_key(path)?);
    }
    let client = builder.connect().await?;
    let events = client.events().ok_or_else(|| anyhow::anyhow!("the client's events were already taken"))?;
    let (live, _) = broadcast::channel(1024);
    let desk = Arc::new(Desk {
        identity: client.identity().clone(),
        client,
        store: DeskStore::open(&options.state.join("desk"))?,
        policy,
        files,
        live,
        alarm: Mutex::new(None),
        examples: options.examples,
    });
    let events = desk.start(events);
    let listener = tokio::net::TcpListener::bind(options.listen).await?;
    let addr = listener.local_addr()?;
    let app = Web::new(desk.clone(), addr);
    let url = format!("http://{addr}/login?token={}", app.sessions.token());
    let stop = CancellationToken::new();
    let router = web::router(app);
    let until = stop.clone();
    let task = tokio::spawn(async move {
        axum::serve(listener, router).with_graceful_shutdown(async move { until.cancelled().await }).await
    });
    Ok(RunningDesk { desk, addr, url, stop, task, events })
}

/// `ketenhub-desk serve`: one desk until ctrl-c.
pub async fn run(options: DeskOptions) -> anyhow::Result<()> {
    let running = start(options).await?;
    println!("desk {} {}", running.desk.identity.worker, running.url);
    tokio::signal::ctrl_c().await?;
    running.stop().await;
    Ok(())
}
