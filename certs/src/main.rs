//! `certs`: writes a development PKI for Ketenhub.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "certs", about = "Ketenhub certificate tools")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Writes a fresh development PKI (CA, hub, sample identities and bad certificates) into a directory.
    Dev {
        /// The directory to write into; created if missing.
        #[arg(long)]
        out: PathBuf,
    },
}

fn main() -> ExitCode {
    let Command::Dev { out } = Cli::parse().command;
    match certs::dev::DevPki::generate().and_then(|pki| pki.write_to(&out)) {
        Ok(()) => {
            println!("wrote a development PKI to {}", out.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("certs: {}", error_chain(&e));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes, as one line.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(e) = cause {
        text.push_str(&format!(": {e}"));
        cause = e.source();
    }
    text
}
