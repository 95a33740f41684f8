//! The `hub` command line: `serve` runs a hub, `demo` tells the story.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
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
    /// A certificate revocation list (PEM); may be repeated.
    #[arg(long)]
    crl: Vec<PathBuf>,
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
        Ok(config)
    }
}

fn init_logging(default: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let config = args.config()?;
    let server = Server::bind(&config).await?;
    println!("listening on {}", server.local_addr());
    let shutdown = crate::shutdown::on_signals();
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
    let result = match cli.command {
        Command::Serve(args) => {
            init_logging("info");
            runtime.block_on(serve(args))
        }
        Command::Audit { command } => {
            init_logging("warn");
            return match crate::audit::command::run(command) {
                Ok(code) => code,
                Err(e) => {
                    eprintln!("hub audit: {e:#}");
                    ExitCode::from(2)
                }
            };
        }
        Command::Demo { data } => {
            init_logging("warn");
            runtime.block_on(crate::demo::run(data))
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hub: {e:#}");
            ExitCode::FAILURE
        }
    }
}
