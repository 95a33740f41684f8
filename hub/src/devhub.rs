//! A complete development hub in one call: a fresh dev PKI on disk, a sled
//! store, and a server on a loopback port, all inside one directory.
//!
//! The demo, the integration tests and the benchmark all start hubs this way,
//! so there is one definition of "a hub for development" and it uses the same
//! code paths as `hub serve`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use certs::dev::DevPki;
use ketenhub_sdk::ClientBuilder;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::audit::chain::AuditKey;
use crate::audit::verify::{Verified, VerifyError};
use crate::clock::Clock;
use crate::config::{Config, Limits};
use crate::server::{ServeError, Server};
use crate::store::Store;
use std::sync::Arc;

/// A running in-process hub with its PKI.
pub struct DevHub {
    addr: SocketAddr,
    pki_dir: PathBuf,
    data_dir: PathBuf,
    hub: std::sync::Arc<crate::session::Hub>,
    shutdown: CancellationToken,
    task: Option<JoinHandle<Result<(), ServeError>>>,
}

/// The example policy, which names the dev PKI's sample organisations.
pub const DEV_POLICY: &str = include_str!("../../deploy/policy.toml");

/// Writes a dev PKI into `dir/pki` and the example policy into
/// `dir/policy.toml` (each unless already there), and returns a hub configuration that uses it
/// with `dir/data`, listening on an ephemeral loopback port.
pub fn dev_config(dir: &Path, limits: Limits) -> anyhow::Result<Config> {
    let pki_dir = dir.join("pki");
    if !pki_dir.join("ca.crt").exists() {
        DevPki::generate()?.write_to(&pki_dir)?;
    }
    let policy = dir.join("policy.toml");
    if !policy.exists() {
        std::fs::write(&policy, DEV_POLICY)?;
    }
    let mut config = Config {
        listen: Some("127.0.0.1:0".parse()?),
        data: Some(dir.join("data")),
        policy: Some(policy),
        limits,
        ..Config::default()
    };
    config.tls.ca = Some(pki_dir.join("ca.crt"));
    config.tls.cert = Some(pki_dir.join("hub.crt"));
    config.tls.key = Some(pki_dir.join("hub.key"));
    config.tls.crl = vec![pki_dir.join("ca.crl")];
    Ok(config)
}

impl DevHub {
    /// Starts a hub in `dir` (PKI in `dir/pki`, data in `dir/data`), reusing a
    /// PKI already there.
    pub async fn start(dir: &Path, limits: Limits) -> anyhow::Result<Self> {
        let config = dev_config(dir, limits)?;
        Self::serve(dir, Server::bind(&config).await?)
    }

    /// Starts a hub in `dir` on a store the caller opened (for fault injection).
    pub async fn start_with_store(dir: &Path, limits: Limits, store: Arc<dyn Store>) -> anyhow::Result<Self> {
        let config = dev_config(dir, limits)?;
        Self::serve(dir, Server::bind_with_store(&config, store, Clock::system()).await?)
    }

    /// Starts a hub in `dir` whose handover deadlines run on `clock`, checked every 20 ms.
    pub async fn start_with_clock(dir: &Path, limits: Limits, clock: Clock) -> anyhow::Result<Self> {
        let mut config = dev_config(dir, limits)?;
        config.handover.deadline_sweep_ms = 20;
        Self::serve(dir, Server::bind_with_clock(&config, clock).await?)
    }

    fn serve(dir: &Path, server: Server) -> anyhow::Result<Self> {
        let addr = server.local_addr();
        let shutdown = CancellationToken::new();
        let hub = server.hub();
        let task = tokio::spawn(server.run(shutdown.clone()));
        Ok(Self { addr, pki_dir: dir.join("pki"), data_dir: dir.join("data"), hub, shutdown, task: Some(task) })
    }

    /// The running hub's shared state (to reload its policy, say).
    pub fn hub(&self) -> std::sync::Arc<crate::session::Hub> {
        self.hub.clone()
    }

    /// The hub's store, as the hub itself reads it.
    pub fn store(&self) -> Arc<dyn Store> {
        self.hub.store.clone()
    }

    /// The hub's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The hub's URL.
    pub fn url(&self) -> String {
        format!("wss://localhost:{}", self.addr.port())
    }

    /// The directory holding the PKI files.
    pub fn pki_dir(&self) -> &Path {
        &self.pki_dir
    }

    /// The hub's data directory.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// A client builder for the certificate pair `SLUG.crt`/`SLUG.key` of the PKI.
    pub fn client(&self, slug: &str) -> ClientBuilder {
        client_for(&self.url(), &self.pki_dir, slug)
    }

    /// Stops the hub (which seals its audit log with a checkpoint) and
    /// verifies the log with the hub's public key, as `hub audit verify --data` does.
    pub async fn stop_and_verify_audit(self) -> anyhow::Result<Result<Verified, VerifyError>> {
        let store = self.hub.store.clone();
        let key = AuditKey::load(&crate::server::audit_key_path(&self.data_dir))?;
        self.stop().await?;
        Ok(crate::audit::export::verify_store(store.as_ref(), &key.public_key(), Vec::new())?)
    }

    /// Stops the hub gracefully and waits for it.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        if let Some(task) = self.task.take() {
            task.await??;
        }
        Ok(())
    }
}

impl Drop for DevHub {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// A client builder for `url` using the pair `SLUG.crt`/`SLUG.key` from `pki_dir`.
pub fn client_for(url: &str, pki_dir: &Path, slug: &str) -> ClientBuilder {
    ketenhub_sdk::Client::builder()
        .url(url)
        .ca_file(pki_dir.join("ca.crt"))
        .identity_files(pki_dir.join(format!("{slug}.crt")), pki_dir.join(format!("{slug}.key")))
}
