//! Shared harness for Ketenhub's integration tests and benchmark.
//!
//! Tests run real hubs: either in-process through [`hub::devhub::DevHub`] or as
//! a separate operating-system process through [`HubProcess`], which the fault
//! tests kill with SIGKILL. Both use a real dev PKI, real TLS on loopback and a
//! real store on disk.
#![forbid(unsafe_code)]

pub mod bench;
pub mod faulty;
pub mod forged;
pub mod relay;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use anyhow::{bail, Context};
use futures_util::StreamExt;
use hub::config::Limits;
use ketenhub_sdk::{ClientBuilder, Event, EventStream};

pub use hub::devhub::{client_for, DevHub};

/// The binder of `SLUG.crt`/`SLUG.key` in `pki_dir`: what makes a device's leaves its own.
pub fn binder(pki_dir: &Path, slug: &str) -> anyhow::Result<certs::binding::Binder> {
    let cert = std::fs::read(pki_dir.join(format!("{slug}.crt")))?;
    let key = std::fs::read(pki_dir.join(format!("{slug}.key")))?;
    Ok(certs::binding::Binder::from_pem(&cert, &key)?)
}

/// The identity CA of `pki_dir`, as devices check leaves against it.
pub fn identities(pki_dir: &Path) -> anyhow::Result<std::sync::Arc<certs::binding::Verifier>> {
    let ca = std::fs::read(pki_dir.join("ca.crt"))?;
    Ok(std::sync::Arc::new(certs::binding::Verifier::from_pem(&ca)?))
}

/// A device of `slug` made with the SDK, outside any client, with its state in `state_dir`.
pub fn device(pki_dir: &Path, slug: &str, state_dir: Option<&Path>) -> anyhow::Result<ketenhub_sdk::device::Device> {
    Ok(ketenhub_sdk::device::Device::open(&binder(pki_dir, slug)?, identities(pki_dir)?, state_dir)?)
}

/// Limits for tests: the defaults, which is what production runs with.
pub fn limits() -> Limits {
    Limits::default()
}

/// A hub running as a child process (the real `hub serve` code path).
pub struct HubProcess {
    child: Child,
    addr: SocketAddr,
    dir: PathBuf,
}

impl HubProcess {
    /// Starts `hub serve` on `listen` with its PKI in `dir/pki` (written if
    /// missing), data in `dir/data`, logs in `dir/hub.log`, and `extra_config`
    /// as the TOML config file's contents.
    pub fn start(binary: &Path, dir: &Path, listen: &str, extra_config: &str) -> anyhow::Result<Self> {
        Self::spawn(Command::new(binary), dir, listen, extra_config)
    }

    /// Like [`HubProcess::start`], with `command` as the program that takes
    /// `serve` and its flags (the benchmark runs itself as the hub).
    pub fn spawn(command: Command, dir: &Path, listen: &str, extra_config: &str) -> anyhow::Result<Self> {
        let log_path = dir.join("hub.log");
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&log_path)?;
        Self::spawn_with_stderr(command, dir, listen, extra_config, log.into())
            .with_context(|| format!("log:\n{}", std::fs::read_to_string(&log_path).unwrap_or_default()))
    }

    /// Like [`HubProcess::spawn`], with the hub's stderr going to `stderr`
    /// instead of `dir/hub.log` (a pipe, to test a log nobody reads).
    pub fn spawn_with_stderr(
        mut command: Command,
        dir: &Path,
        listen: &str,
        extra_config: &str,
        stderr: Stdio,
    ) -> anyhow::Result<Self> {
        let config = hub::devhub::dev_config(dir, limits())?;
        let config_file = dir.join("hub.toml");
        std::fs::write(&config_file, extra_config)?;
        let tls = &config.tls;
        command
            .arg("serve")
            .arg("--config")
            .arg(&config_file)
            .args(["--listen", listen])
            .arg("--data")
            .arg(config.data.as_ref().context("data dir")?)
            .arg("--policy")
            .arg(config.policy.as_ref().context("policy")?)
            .arg("--ca")
            .arg(tls.ca.as_ref().context("ca")?)
            .arg("--cert")
            .arg(tls.cert.as_ref().context("cert")?)
            .arg("--key")
            .arg(tls.key.as_ref().context("key")?)
            .arg("--crl")
            .arg(&tls.crl[0]);
        // A level the caller chose stays.
        if !command.get_envs().any(|(name, _)| name == "RUST_LOG") {
            command.env("RUST_LOG", "info");
        }
        let (child, addr) = spawn_listening_with_stderr(command, stderr)?;
        Ok(Self { child, addr, dir: dir.to_owned() })
    }

    /// The read end of the hub's stderr, when it was started with a pipe.
    pub fn take_stderr(&mut self) -> Option<std::process::ChildStderr> {
        self.child.stderr.take()
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The address the hub listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The hub's URL.
    pub fn url(&self) -> String {
        format!("wss://localhost:{}", self.addr.port())
    }

    /// A client builder for a PKI identity.
    pub fn client(&self, slug: &str) -> ClientBuilder {
        client_for(&self.url(), &self.dir.join("pki"), slug)
    }

    /// Everything the hub has logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("hub.log")).unwrap_or_default()
    }

    /// Kills the hub with SIGKILL: no shutdown code runs.
    pub fn kill_9(&mut self) -> anyhow::Result<()> {
        self.child.kill()?;
        self.child.wait()?;
        Ok(())
    }

    /// Sends SIGTERM and waits for the hub to exit.
    pub fn terminate(&mut self) -> anyhow::Result<ExitStatus> {
        let status = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status()?;
        if !status.success() {
            bail!("kill -TERM failed");
        }
        Ok(self.child.wait()?)
    }
}

impl Drop for HubProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `command` with stderr appended to `log` and waits until it prints
/// `listening on ADDR` on stdout.
pub fn spawn_listening(command: Command, log: &Path) -> anyhow::Result<(Child, SocketAddr)> {
    let log_file = std::fs::OpenOptions::new().create(true).append(true).open(log)?;
    spawn_listening_with_stderr(command, log_file.into())
        .with_context(|| format!("log:\n{}", std::fs::read_to_string(log).unwrap_or_default()))
}

/// Starts `command` with the given stderr and waits until it prints
/// `listening on ADDR` on stdout.
pub fn spawn_listening_with_stderr(mut command: Command, stderr: Stdio) -> anyhow::Result<(Child, SocketAddr)> {
    let mut child = command.stdout(Stdio::piped()).stderr(stderr).spawn().context("spawn")?;
    let stdout = child.stdout.take().context("stdout")?;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(addr) = line.strip_prefix("listening on ") {
                let _ = tx.send(addr.trim().to_owned());
            }
        }
    });
    match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(addr) => Ok((child, addr.parse()?)),
        Err(_) => {
            let _ = child.kill();
            bail!("process did not report listening on stdout");
        }
    }
}

/// The key-value engine of the stopped hub's store in `store`, for tests that
/// read or rewrite its records as someone with access to the files could.
/// Refuses a directory without a store, so that a test never tampers with a new, empty one.
pub fn store_engine(store: &Path) -> anyhow::Result<hub::store::engine::Engine> {
    anyhow::ensure!(hub::store::engine::existing(store).is_some(), "no store in {}", store.display());
    Ok(hub::store::engine::Engine::open(store, &Default::default())?)
}

/// How long a test lets a real binary run to its end (the demo, a smoke run of
/// the benchmark) before [`output_within`] calls it hung: they take seconds.
pub const RUN_LIMIT: Duration = Duration::from_secs(600);

/// Runs `command` to its end like [`Command::output`], but for at most
/// `limit`: a process that hangs is stopped, with every process it started (its
/// own process group), and the error shows what it wrote to stderr, so that a
/// hang fails its test instead of holding up the whole run.
pub fn output_within(command: &mut Command, limit: Duration) -> anyhow::Result<std::process::Output> {
    use std::os::unix::process::CommandExt;
    let dir = tempfile::tempdir()?;
    let (out, err) = (dir.path().join("stdout"), dir.path().join("stderr"));
    let mut child = command
        .stdout(Stdio::from(std::fs::File::create(&out)?))
        .stderr(Stdio::from(std::fs::File::create(&err)?))
        .process_group(0)
        .spawn()?;
    let started = std::time::Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if started.elapsed() > limit {
            // The group is the child's own (process_group(0)); never ours, whose id this cannot be.
            let group = i32::try_from(child.id()).ok().and_then(rustix::process::Pid::from_raw);
            match group.filter(|g| g.as_raw_nonzero().get() > 1) {
                Some(group) => rustix::process::kill_process_group(group, rustix::process::Signal::KILL)?,
                None => child.kill()?,
            }
            child.wait()?;
            let stderr = std::fs::read_to_string(&err).unwrap_or_default();
            bail!("{command:?} did not finish in {limit:?}; it wrote to stderr:\n{stderr}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    Ok(std::process::Output { status, stdout: std::fs::read(&out)?, stderr: std::fs::read(&err)? })
}

/// A client of the sample identity `slug` connected to `hub`, with its event stream.
pub async fn connect(hub: &DevHub, slug: &str) -> anyhow::Result<(ketenhub_sdk::Client, EventStream)> {
    let client = hub.client(slug).connect().await?;
    let events = client.events().context("a client's events are taken once")?;
    Ok((client, events))
}

/// Waits for the next event that satisfies `want`, up to `limit`.
pub async fn next_event(
    events: &mut EventStream,
    limit: Duration,
    mut want: impl FnMut(&Event) -> bool,
) -> anyhow::Result<Event> {
    let wait = async {
        while let Some(event) = events.next().await {
            if want(&event) {
                return Ok(event);
            }
        }
        bail!("event stream ended")
    };
    tokio::time::timeout(limit, wait).await.context("timed out waiting for an event")?
}

/// Collects `count` application messages (ignoring other events), up to `limit`.
pub async fn messages(
    events: &mut EventStream,
    count: usize,
    limit: Duration,
) -> anyhow::Result<Vec<ketenhub_sdk::Message>> {
    let mut out = Vec::with_capacity(count);
    let wait = async {
        while out.len() < count {
            match events.next().await {
                Some(Event::Message(m)) => out.push(m),
                Some(_) => {}
                None => bail!("event stream ended"),
            }
        }
        Ok(())
    };
    match tokio::time::timeout(limit, wait).await {
        Ok(result) => result.map(|_| out),
        Err(_) => bail!("timed out after {} of {count} messages", out.len()),
    }
}

/// The files under `dir` (recursively) whose bytes contain `needle`.
pub fn files_containing(dir: &Path, needle: &[u8]) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            found.extend(files_containing(&path, needle));
        } else if let Ok(bytes) = std::fs::read(&path) {
            if bytes.windows(needle.len()).any(|w| w == needle) {
                found.push(path.display().to_string());
            }
        }
    }
    found
}

/// Writes `len` pseudo-random bytes to `path`, a megabyte at a time.
pub fn write_random_file(path: &Path, len: usize, seed: u64) -> anyhow::Result<()> {
    let mut file = std::io::BufWriter::new(std::fs::File::create(path)?);
    let mut state = seed | 1;
    let mut block = vec![0u8; 1 << 20];
    let mut left = len;
    while left > 0 {
        for byte in block.iter_mut() {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            *byte = state as u8;
        }
        let n = left.min(block.len());
        std::io::Write::write_all(&mut file, &block[..n])?;
        left -= n;
    }
    std::io::Write::flush(&mut file)?;
    Ok(())
}

/// Grounds for adding a member on the family's consent, the basis the example
/// policy allows on most routes.
pub fn consent() -> ketenhub_sdk::Grounds {
    ketenhub_sdk::Grounds::new("working together on the case (test)", "consent")
}

/// The example policy's usual offer: a referral from VT to the local team of
/// Woerden on the family's consent, open for answers until `deadline_ms`.
pub fn referral_to_lt(deadline_ms: u64) -> ketenhub_sdk::OfferRequest {
    ketenhub_sdk::OfferRequest {
        to: "00000001800000000002".parse().expect("the local team's OIN"),
        to_worker: None,
        route: "vt-lt-referral".into(),
        legal_basis: "consent".into(),
        reason: "support at home".into(),
        justification: None,
        deadline_ms,
    }
}

/// The `commit` request for a commit an SDK device made.
pub fn commit_request(thread: wire::ThreadId, made: ketenhub_sdk::device::Commit) -> wire::Request {
    wire::Request::Commit {
        thread,
        commit: made.commit,
        welcome: made.welcome.map(Into::into),
        group_info: Some(made.group_info.into()),
    }
}

/// Sends `request` on a raw connection and returns the hub's answer to it,
/// skipping events in between.
pub async fn raw_reply(
    raw: &mut ketenhub_sdk::raw::RawConnection,
    request: wire::Request,
) -> anyhow::Result<Result<wire::Reply, wire::WireError>> {
    use ketenhub_sdk::raw::RawIncoming;
    raw.send_frame(&wire::ClientFrame::Request { id: 1, request }).await?;
    loop {
        match tokio::time::timeout(Duration::from_secs(20), raw.next()).await?? {
            RawIncoming::Frame(wire::HubFrame::Reply { id: 1, result }) => return Ok(result),
            RawIncoming::Frame(_) => {}
            other => bail!("connection ended: {other:?}"),
        }
    }
}

/// Like [`raw_reply`], for a request that must be refused: the refusal.
pub async fn raw_refusal(
    raw: &mut ketenhub_sdk::raw::RawConnection,
    request: wire::Request,
) -> anyhow::Result<wire::WireError> {
    raw_reply(raw, request).await?.err().context("the request was allowed")
}

/// What refused a call: the policy rule for a policy denial (which must be
/// `forbidden`), otherwise the error code's name. Panics if the call succeeded.
pub fn refusal_rule(result: Result<impl std::fmt::Debug, ketenhub_sdk::Error>) -> String {
    match result {
        Err(ketenhub_sdk::Error::Hub(e)) => match e.message.strip_prefix("denied by rule ") {
            Some(rest) => {
                assert_eq!(e.code, ketenhub_sdk::ErrorCode::Forbidden, "a policy denial must be forbidden: {e:?}");
                rest.split(':').next().unwrap_or_default().to_owned()
            }
            None => format!("{:?}", e.code),
        },
        other => panic!("expected a refusal, got {other:?}"),
    }
}

/// Sends SIGHUP to process `pid` (a hub reloads its policy on it).
pub fn sighup(pid: u32) -> anyhow::Result<()> {
    let status = Command::new("kill").args(["-HUP", &pid.to_string()]).status()?;
    anyhow::ensure!(status.success(), "kill -HUP failed");
    Ok(())
}

/// Waits until `check` holds, re-evaluating it, for at most `wait`: for what
/// the hub does asynchronously (a SIGHUP, say).
pub async fn eventually<F, Fut>(wait: Duration, mut check: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<bool>>,
{
    let deadline = tokio::time::Instant::now() + wait;
    while !check().await? {
        anyhow::ensure!(tokio::time::Instant::now() < deadline, "condition not reached");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

/// Runs `BINARY audit ARGS` (the hub's `audit` command); returns the exit code and stdout then stderr.
pub fn hub_audit(binary: &str, args: &[&str]) -> anyhow::Result<(i32, String)> {
    let output = Command::new(binary).arg("audit").args(args).output()?;
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    Ok((output.status.code().unwrap_or(-1), format!("{stdout}{stderr}")))
}

/// A caseworker's send in one of 50 cases, the `i`th: the record audit tests fill logs with.
pub fn audit_record(i: u64) -> wire::audit::AuditRecord {
    use wire::audit::{AuditAction, AuditActor, AuditOutcome, AuditRecord};
    AuditRecord {
        at_ms: 1_700_000_000_000 + i,
        actor: Some(AuditActor {
            oin: "00000001800000000001".parse().expect("a valid OIN"),
            organisation: "Veilig Thuis Utrecht".into(),
            kind: wire::AgencyKind::VT,
            worker: format!("worker.{}", i % 7),
            role: wire::Role::Caseworker,
            certificate: "ab".repeat(32),
        }),
        on_behalf_of: None,
        action: AuditAction::Send,
        case: Some(wire::ThreadId(uuid::Uuid::from_u128(u128::from(i % 50)))),
        object: Some(format!("message {i}")),
        purpose: None,
        legal_basis: Some("consent".into()),
        outcome: AuditOutcome::Allowed,
        rule: "member-of-case".into(),
        peer: Some("127.0.0.1:4000".into()),
    }
}

/// A temporary path as the `&str` a command line takes.
pub fn path_arg(p: &Path) -> &str {
    p.to_str().expect("temporary paths are UTF-8")
}

/// Writes a log of `entries` records ([`audit_record`]) into the store in `data` as a hub would, with a signed
/// head every 1,000 entries, under a key created at the default place; returns its public key (hex).
pub fn write_audit_log(data: &Path, entries: u64) -> anyhow::Result<String> {
    use hub::audit::{chain::AuditKey, CheckpointSettings, Recorder};
    use hub::store::Store as _;
    let key = AuditKey::load_or_create(&hub::server::audit_key_path(data))?;
    let public = key.public_key_hex();
    let store = hub::store::KvStore::open(&data.join("store"))?;
    let settings = CheckpointSettings { every_entries: 1000, every_ms: u64::MAX, key: None };
    let mut recorder = Recorder::resume(&store, std::sync::Arc::new(key), settings)?;
    for i in 1..=entries {
        recorder.record(&store, audit_record(i))?;
        recorder.checkpoint_if_due(&store, 1_700_000_000_000 + i, false)?;
    }
    store.flush()?;
    Ok(public)
}

#[cfg(test)]
mod process_tests {
    use super::*;

    #[test]
    fn a_process_that_hangs_is_stopped_with_what_it_started_and_its_stderr_shown() -> anyhow::Result<()> {
        let marker = tempfile::tempdir()?;
        let pid_file = marker.path().join("child");
        let script = format!("echo started >&2; sleep 60 & echo $! > {}; wait", pid_file.display());
        let started = std::time::Instant::now();
        let error = output_within(Command::new("sh").args(["-c", &script]), Duration::from_secs(1)).unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(30), "not stopped at its limit");
        assert!(error.to_string().contains("did not finish") && error.to_string().contains("started"), "{error}");
        let child = std::fs::read_to_string(&pid_file)?.trim().to_owned();
        // Killed, it is gone or a zombie its new parent has not reaped yet. A
        // signalled process may still show as running for a moment before the
        // kernel has it exit, so it gets a few seconds.
        let state = || std::fs::read_to_string(format!("/proc/{child}/stat")).unwrap_or_default();
        let running = |state: &str| state.rsplit_once(") ").is_some_and(|(_, rest)| !rest.starts_with('Z'));
        let waited = std::time::Instant::now();
        while running(&state()) && waited.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(20));
        }
        let state = state();
        assert!(!running(&state), "the process it started still runs: {state}");
        let done = output_within(Command::new("sh").args(["-c", "echo done"]), Duration::from_secs(30))?;
        assert_eq!((done.status.success(), done.stdout), (true, b"done\n".to_vec()));
        Ok(())
    }
}
