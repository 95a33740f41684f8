//! The command line: `ketenhub-desk serve` and `ketenhub-desk demo`.
//!
//! Options come from the command line, or from a TOML file given with
//! `--config` whose keys are the long option names; the command line wins.
//! Every bad input is a typed error printed in one line, never a panic.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use serde::Deserialize;

use crate::serve::DeskOptions;

/// The default address: loopback only, as the desk is for the person at this machine.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7480";

#[derive(Parser)]
#[command(name = "ketenhub-desk", about = "The Ketenhub desk for caseworkers and privacy officers")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serves one identity's desk.
    Serve(Box<ServeArgs>),
    /// Starts a development hub with desks for a VT, an LT and a GI caseworker and VT's privacy officer.
    Demo,
}

/// The options of `serve`; each may also come from `--config`.
#[derive(Parser, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ServeArgs {
    /// The hub's URL, `wss://host:port`.
    #[arg(long)]
    pub hub: Option<String>,
    /// The chain CA (PEM).
    #[arg(long)]
    pub ca: Option<PathBuf>,
    /// This identity's certificate (PEM).
    #[arg(long)]
    pub cert: Option<PathBuf>,
    /// This identity's private key (PEM).
    #[arg(long)]
    pub key: Option<PathBuf>,
    /// Where the desk keeps its MLS device state and what it received.
    #[arg(long)]
    pub state: Option<PathBuf>,
    /// The loopback address to serve on (default 127.0.0.1:7480).
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// The hub's published policy file: the routes, legal bases and organisations offered in forms.
    #[arg(long)]
    pub policy: Option<PathBuf>,
    /// A privacy officer's desk: the hub's audit public key (as `hub audit pubkey` prints it), to witness the log.
    #[arg(long)]
    pub audit_key: Option<PathBuf>,
    /// A TOML file with any of these options.
    #[arg(long)]
    #[serde(skip)]
    pub config: Option<PathBuf>,
}

/// Why the command line or the configuration is not usable.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// A required option is missing from both the command line and the configuration.
    #[error("--{0} is required (on the command line or in --config)")]
    Missing(&'static str),
    /// The configuration file could not be read or parsed.
    #[error("config {path}: {message}")]
    Config {
        /// The file.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// The desk would listen beyond this machine.
    #[error("--listen {0} is not a loopback address; the desk serves the person at this machine only")]
    NotLoopback(SocketAddr),
}

fn read_config(path: &Path) -> Result<ServeArgs, CliError> {
    let shown = path.display().to_string();
    let text =
        std::fs::read_to_string(path).map_err(|e| CliError::Config { path: shown.clone(), message: e.to_string() })?;
    toml::from_str(&text).map_err(|e| CliError::Config { path: shown, message: e.to_string() })
}

impl ServeArgs {
    /// The options, with the configuration file's values where the command line gave none.
    pub fn resolve(self) -> Result<DeskOptions, CliError> {
        let file = match &self.config {
            Some(path) => read_config(path)?,
            None => ServeArgs::default(),
        };
        let listen =
            self.listen.or(file.listen).unwrap_or_else(|| DEFAULT_LISTEN.parse().unwrap_or_else(|_| unreachable!()));
        if !listen.ip().is_loopback() {
            return Err(CliError::NotLoopback(listen));
        }
        Ok(DeskOptions {
            hub: self.hub.or(file.hub).ok_or(CliError::Missing("hub"))?,
            ca: self.ca.or(file.ca).ok_or(CliError::Missing("ca"))?,
            cert: self.cert.or(file.cert).ok_or(CliError::Missing("cert"))?,
            key: self.key.or(file.key).ok_or(CliError::Missing("key"))?,
            state: self.state.or(file.state).ok_or(CliError::Missing("state"))?,
            policy: self.policy.or(file.policy).ok_or(CliError::Missing("policy"))?,
            audit_key: self.audit_key.or(file.audit_key),
            listen,
            examples: false,
        })
    }
}

/// Runs the command line.
pub fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()))
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("ketenhub-desk: cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Serve(args) => crate::serve::run(args.resolve()?).await,
            Command::Demo => crate::demo::run().await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ketenhub-desk: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_wins_over_the_config_and_loopback_is_required() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let config = dir.path().join("desk.toml");
        std::fs::write(
            &config,
            "hub = \"wss://localhost:1\"\nca = \"ca.crt\"\ncert = \"c\"\nkey = \"k\"\nstate = \"s\"\npolicy = \"p\"\n",
        )
        .expect("written");
        let args =
            ServeArgs { hub: Some("wss://localhost:2".into()), config: Some(config.clone()), ..Default::default() };
        let options = args.resolve().expect("complete");
        assert_eq!(options.hub, "wss://localhost:2");
        assert_eq!(options.ca, PathBuf::from("ca.crt"));
        let remote = ServeArgs {
            listen: Some("0.0.0.0:80".parse().expect("an address")),
            config: Some(config),
            ..Default::default()
        };
        assert!(matches!(remote.resolve(), Err(CliError::NotLoopback(_))));
        assert!(matches!(ServeArgs::default().resolve(), Err(CliError::Missing("hub"))));
        std::fs::write(dir.path().join("bad.toml"), "hub = 1").expect("written");
        let bad = ServeArgs { config: Some(dir.path().join("bad.toml")), ..Default::default() };
        assert!(matches!(bad.resolve(), Err(CliError::Config { .. })));
    }
}
