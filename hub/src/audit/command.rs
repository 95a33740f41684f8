//! `hub audit`: export, verify and report on an audit log from the command line.
//!
//! These read the store directly, so they run against a stopped hub's data
//! directory (or a copy of it); sled allows one process at a time. Exit codes:
//! 0 intact, 1 a verification failure (naming the first bad sequence number),
//! 2 a usage or I/O error, including a directory that holds no hub store (which
//! they refuse without creating anything).

use std::fs::File;
use std::io::{BufReader, BufWriter};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use wire::audit::AuditFilter;
use wire::ThreadId;

use super::chain::{AuditKey, Verified, VerifyError};
use super::export;
use crate::store::SledStore;

/// The `hub audit` subcommands.
#[derive(clap::Subcommand)]
pub enum AuditCommand {
    /// Writes the log as JSON Lines (Logboek Dataverwerkingen field names), with its checkpoints.
    Export {
        /// The hub's data directory.
        #[arg(long)]
        data: PathBuf,
        /// Only this case's entries in full (others appear as omitted lines that keep the chain whole).
        #[arg(long)]
        case: Option<uuid::Uuid>,
        /// Only entries at or after this time (YYYY-MM-DD, or ms since the Unix epoch).
        #[arg(long)]
        since: Option<String>,
        /// Only entries before this time (YYYY-MM-DD, or ms since the Unix epoch).
        #[arg(long)]
        until: Option<String>,
        /// The output file.
        #[arg(long)]
        out: PathBuf,
    },
    /// Checks the chain and the checkpoint signatures of an export file or a data directory.
    Verify {
        /// An export file.
        #[arg(long, requires = "pubkey", conflicts_with = "data")]
        file: Option<PathBuf>,
        /// The hub's audit public key (hex), as printed by `hub audit pubkey`.
        #[arg(long)]
        pubkey: Option<PathBuf>,
        /// A hub's data directory (its own key is used).
        #[arg(long)]
        data: Option<PathBuf>,
    },
    /// Prints the access report for one case (GDPR article 15) as Markdown.
    Report {
        /// The hub's data directory.
        #[arg(long)]
        data: PathBuf,
        /// The case.
        #[arg(long)]
        case: uuid::Uuid,
    },
    /// Prints the hub's audit public key (hex).
    Pubkey {
        /// The hub's data directory.
        #[arg(long)]
        data: PathBuf,
    },
}

/// A time given as `YYYY-MM-DD` (midnight UTC) or as milliseconds since the epoch.
fn parse_time(text: &str) -> anyhow::Result<u64> {
    if let Ok(ms) = text.parse::<u64>() {
        return Ok(ms);
    }
    let days =
        crate::clock::parse_date(text).map_err(|e| anyhow::anyhow!("{e} (expected YYYY-MM-DD or milliseconds)"))?;
    Ok(days * 86_400_000)
}

/// Refuses a directory that holds no hub's data, before anything is opened:
/// opening would create an empty store there, and an empty store reports an
/// empty log, which an inspector would take for the truth.
fn require_hub_data(data: &Path) -> anyhow::Result<()> {
    let store = data.join("store");
    anyhow::ensure!(
        SledStore::exists(&store),
        "no hub store in {} (expected {}): give the data directory of a hub (`hub serve --data`)",
        data.display(),
        store.display()
    );
    Ok(())
}

fn open_store(data: &Path) -> anyhow::Result<SledStore> {
    require_hub_data(data)?;
    SledStore::open(&data.join("store"))
        .with_context(|| format!("cannot open the store in {} (is the hub still running?)", data.display()))
}

fn load_key(data: &Path) -> anyhow::Result<AuditKey> {
    require_hub_data(data)?;
    let path = crate::server::audit_key_path(data);
    anyhow::ensure!(path.exists(), "no audit key at {}", path.display());
    Ok(AuditKey::load_or_create(&path)?)
}

fn report_verification(result: Result<Verified, VerifyError>) -> ExitCode {
    match result {
        Ok(verified) => {
            println!(
                "audit chain intact: {} entries ({} omitted), {} checkpoints, up to seq {}",
                verified.entries, verified.omitted, verified.checkpoints, verified.last_seq
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            println!("audit chain BROKEN at seq {}: {e}", e.seq());
            ExitCode::from(1)
        }
    }
}

/// Runs a `hub audit` subcommand.
pub fn run(command: AuditCommand) -> anyhow::Result<ExitCode> {
    match command {
        AuditCommand::Export { data, case, since, until, out } => {
            let filter = AuditFilter {
                case: case.map(ThreadId),
                since_ms: since.as_deref().map(parse_time).transpose()?,
                until_ms: until.as_deref().map(parse_time).transpose()?,
                ..AuditFilter::default()
            };
            let store = open_store(&data)?;
            let mut file = BufWriter::new(File::create(&out).with_context(|| format!("create {}", out.display()))?);
            let exported = export::export(&store, &filter, &mut file)?;
            println!(
                "exported {} entries ({} omitted) and {} checkpoints to {}",
                exported.entries,
                exported.omitted,
                exported.checkpoints,
                out.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        AuditCommand::Verify { file: Some(file), pubkey: Some(pubkey), .. } => {
            let key_text = std::fs::read_to_string(&pubkey).with_context(|| format!("read {}", pubkey.display()))?;
            let key = AuditKey::parse_public_key(&key_text)?;
            let reader = BufReader::new(File::open(&file).with_context(|| format!("open {}", file.display()))?);
            Ok(report_verification(export::verify_file(reader, &key)?))
        }
        AuditCommand::Verify { data: Some(data), .. } => {
            let key = load_key(&data)?.public_key();
            Ok(report_verification(export::verify_store(&open_store(&data)?, &key)?))
        }
        AuditCommand::Verify { .. } => anyhow::bail!("give --file and --pubkey, or --data"),
        AuditCommand::Report { data, case } => {
            let store = open_store(&data)?;
            let filter = AuditFilter { case: Some(ThreadId(case)), ..AuditFilter::default() };
            let mut entries = Vec::new();
            super::scan(&store, |entry| {
                if super::matches(&entry, &filter) {
                    entries.push(entry);
                }
                true
            })?;
            print!("{}", ketenhub_sdk::report::markdown(ThreadId(case), &entries));
            Ok(ExitCode::SUCCESS)
        }
        AuditCommand::Pubkey { data } => {
            println!("{}", load_key(&data)?.public_key_hex());
            Ok(ExitCode::SUCCESS)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_parse_as_dates_or_milliseconds() {
        assert_eq!(parse_time("1970-01-02").unwrap(), 86_400_000);
        assert_eq!(parse_time("2023-11-14").unwrap(), 1_699_920_000_000);
        assert_eq!(parse_time("12345").unwrap(), 12_345);
        assert!(parse_time("2023-13-01").is_err());
        assert!(parse_time("yesterday").is_err());
    }
}
