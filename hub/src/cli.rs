//! The `hub` command line: `serve` runs a hub, `demo` tells the story,
//! `audit` inspects a stopped hub's audit log, `report chain` prints the chain's figures.
//!
//! The log goes to stderr without ever blocking the hub: a supervisor that
//! stops reading the hub's stderr (a full pipe) must not stop the hub. Lines
//! pass through a bounded queue that one thread writes out; when it is full,
//! new lines are dropped and counted, and the count is logged at shutdown.

use std::io::{IsTerminal, Write as _};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tracing_appender::non_blocking::{ErrorCounter, NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::EnvFilter;

use crate::config::Config;
use crate::server::Server;

#[derive(Parser)]
#[command(name = "hub", version, about = "Ketenhub: secure case handovers for the Dutch youth-protection chain")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Runs a hub until SIGTERM or ctrl-c.
    Serve(ServeArgs),
    /// Exports, verifies and reports on the audit log.
    Audit {
        #[command(subcommand)]
        command: crate::audit::command::AuditCommand,
    },
    /// Reports the chain's figures from a stopped hub's data.
    Report {
        #[command(subcommand)]
        command: crate::chain_figures::ReportCommand,
    },
    /// Runs the demonstration story on loopback with a fresh dev PKI, then exits.
    Demo {
        /// Keep the hub's PKI and data in this directory instead of a temporary one.
        #[arg(long)]
        data: Option<PathBuf>,
    },
}

#[derive(clap::Args)]
struct ServeArgs {
    /// A TOML configuration file (see deploy/hub.toml); flags override it.
    #[arg(long)]
    config: Option<PathBuf>,
    /// The address to listen on.
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// The data directory.
    #[arg(long)]
    data: Option<PathBuf>,
    /// The need-to-know policy file (TOML); reloaded on SIGHUP.
    #[arg(long)]
    policy: Option<PathBuf>,
    /// The chain CA file (PEM) whose client certificates are trusted.
    #[arg(long)]
    ca: Option<PathBuf>,
    /// The hub's certificate chain (PEM).
    #[arg(long)]
    cert: Option<PathBuf>,
    /// The hub's private key (PEM).
    #[arg(long)]
    key: Option<PathBuf>,
    /// A certificate revocation list (PEM); may be repeated. Reread on SIGHUP
    /// and every tls.crl_reload_seconds.
    #[arg(long)]
    crl: Vec<PathBuf>,
    /// The audit signing key (PKCS#8 Ed25519, mode 0600); default DATA/audit-key.pk8.
    #[arg(long)]
    audit_key: Option<PathBuf>,
}

impl ServeArgs {
    fn config(self) -> anyhow::Result<Config> {
        let mut config = match &self.config {
            Some(path) => Config::from_file(path)?,
            None => Config::default(),
        };
        config.listen = self.listen.or(config.listen);
        config.data = self.data.or(config.data);
        config.policy = self.policy.or(config.policy);
        config.tls.ca = self.ca.or(config.tls.ca);
        config.tls.cert = self.cert.or(config.tls.cert);
        config.tls.key = self.key.or(config.tls.key);
        config.tls.crl.extend(self.crl);
        config.audit.key = self.audit_key.or(config.audit.key);
        Ok(config)
    }
}

/// How many log lines may wait for stderr before new ones are dropped, unless
/// `HUB_LOG_BUFFER_LINES` says otherwise.
const LOG_BUFFER_LINES: usize = 8192;

/// The non-blocking log writer's guard and its count of dropped lines.
struct Logging {
    guard: WorkerGuard,
    dropped: ErrorCounter,
    /// Whether to say the count when it is 0 too (a long-running hub's log).
    always_report: bool,
}

impl Logging {
    /// Flushes what is queued, then says how many lines were dropped. The
    /// guard waits a bounded time, and the count is written by a thread of its
    /// own, also waited for a bounded time: through the queue it could itself
    /// be dropped, and a stderr nobody reads must not hold up the exit.
    fn finish(self) {
        drop(self.guard);
        let dropped = self.dropped.dropped_lines();
        let line = match dropped {
            0 if !self.always_report => return,
            0 => "hub: log lines dropped: 0".to_owned(),
            n => format!("hub: stderr was not read fast enough; log lines dropped: {n}"),
        };
        let (done, written) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = writeln!(std::io::stderr(), "{line}");
            let _ = done.send(());
        });
        let _ = written.recv_timeout(std::time::Duration::from_secs(1));
    }
}

fn log_buffer_lines() -> anyhow::Result<usize> {
    match std::env::var("HUB_LOG_BUFFER_LINES") {
        Err(std::env::VarError::NotPresent) => Ok(LOG_BUFFER_LINES),
        Err(e) => anyhow::bail!("HUB_LOG_BUFFER_LINES: {e}"),
        Ok(text) => match text.trim().parse::<usize>() {
            Ok(lines) if lines > 0 => Ok(lines),
            _ => anyhow::bail!("HUB_LOG_BUFFER_LINES must be a positive number of lines, not {text:?}"),
        },
    }
}

fn init_logging(default: &str, always_report: bool) -> anyhow::Result<Option<Logging>> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let (writer, guard) = NonBlockingBuilder::default()
        .lossy(true)
        .buffered_lines_limit(log_buffer_lines()?)
        .thread_name("hub-log")
        .finish(std::io::stderr());
    let dropped = writer.error_counter();
    let installed = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
    // Already installed (the hub embedded in a program that logs itself).
    Ok(installed.ok().map(|()| Logging { guard, dropped, always_report }))
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let config = args.config()?;
    let server = Server::bind(&config).await?;
    crate::stages::report_if_asked();
    // Before the announcement: whoever waits for it may signal at once.
    let shutdown = crate::shutdown::on_signals();
    println!("listening on {}", server.local_addr());
    server.run(shutdown).await?;
    Ok(())
}

/// Parses the command line and runs it; the `hub` binary's `main`.
pub fn main() -> ExitCode {
    run(Cli::parse())
}

/// Runs the `hub` command line given as `args` (the first item is the program
/// name), for programs that embed the hub, such as the benchmark.
pub fn main_from(args: impl IntoIterator<Item = std::ffi::OsString>) -> ExitCode {
    match Cli::try_parse_from(args) {
        Ok(cli) => run(cli),
        Err(e) => {
            let _ = e.print();
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> ExitCode {
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("hub: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let serving = matches!(cli.command, Command::Serve(_));
    let logging = match init_logging(if serving { "info" } else { "warn" }, serving) {
        Ok(logging) => logging,
        Err(e) => {
            eprintln!("hub: {e:#}");
            return ExitCode::from(2);
        }
    };
    let code = match cli.command {
        Command::Serve(args) => exit_code(runtime.block_on(serve(args))),
        Command::Audit { command } => match crate::audit::command::run(command) {
            Ok(code) => code,
            Err(e) => {
                eprintln!("hub audit: {e:#}");
                ExitCode::from(2)
            }
        },
        Command::Report { command } => match crate::chain_figures::run(command) {
            Ok(code) => code,
            Err(e) => {
                eprintln!("hub report: {e:#}");
                ExitCode::from(2)
            }
        },
        Command::Demo { data } => exit_code(runtime.block_on(crate::demo::run(data))),
    };
    if let Some(logging) = logging {
        logging.finish();
    }
    code
}

fn exit_code(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hub: {e:#}");
            ExitCode::FAILURE
        }
    }
}
