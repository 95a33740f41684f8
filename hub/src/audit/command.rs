//! `hub audit`: export, verify and report on an audit log from the command line.
//!
//! These read the store directly, so they run against a stopped hub's data
//! directory (or a copy of it); the store allows one process at a time. Exit codes:
//! 0 intact; for a verification failure, which names the kind of tampering and
//! the sequence number, 10 changed, 11 deleted, 12 inserted, 13 reordered,
//! 14 forged head, 15 rewritten (a head's root does not match), 16 truncated at
//! the start, 17 truncated at the end or unsigned end (see
//! [`VerifyError::exit_code`]); 2 a usage or I/O error, including a directory
//! that holds no hub store (which they refuse without creating anything).

use std::fs::File;
use std::io::{BufReader, BufWriter};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use wire::audit::{AuditFilter, SignedTreeHead};
use wire::ThreadId;

use super::chain::AuditKey;
use super::export;
use super::verify::{Verified, VerifyError};
use crate::store::{KvStore, Store};

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
    /// Checks the chain, the Merkle tree and the signed tree heads of an export file or a data directory.
    Verify {
        /// An export file.
        #[arg(long, conflicts_with = "data")]
        file: Option<PathBuf>,
        /// The hub's audit public key (hex), as printed by `hub audit pubkey`: kept apart from the data it
        /// checks, since a key taken from the same directory proves nothing about it.
        #[arg(long)]
        pubkey: PathBuf,
        /// A hub's data directory.
        #[arg(long)]
        data: Option<PathBuf>,
        /// Heads witnessed elsewhere (`tree_head` lines: an SDK's `audit-head.json`, or an earlier export);
        /// repeatable. Each must match the log, and none may be beyond its end.
        #[arg(long)]
        witness: Vec<PathBuf>,
    },
    /// Hands the log over to a new audit key: signs the current tree head with both keys (the new key is
    /// created, 0600, and must not exist yet). Then point the hub's `[audit] key` at the new file.
    RotateKey {
        /// The hub's data directory.
        #[arg(long)]
        data: PathBuf,
        /// The current audit key (default: DATA/audit-key.pk8).
        #[arg(long)]
        key: Option<PathBuf>,
        /// Where to create the new key.
        #[arg(long)]
        new_key: PathBuf,
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
        /// The hub's data directory (its key at the default place, DATA/audit-key.pk8).
        #[arg(long, required_unless_present = "key")]
        data: Option<PathBuf>,
        /// The audit key file.
        #[arg(long)]
        key: Option<PathBuf>,
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
        KvStore::exists(&store),
        "no hub store in {} (expected {}): give the data directory of a hub (`hub serve --data`)",
        data.display(),
        store.display()
    );
    Ok(())
}

/// The store of a stopped hub's data directory, refusing a directory that holds none.
pub(crate) fn open_store(data: &Path) -> anyhow::Result<KvStore> {
    require_hub_data(data)?;
    KvStore::open(&data.join("store"))
        .with_context(|| format!("cannot open the store in {} (is the hub still running?)", data.display()))
}

fn load_key(data: Option<&Path>, key: Option<&Path>) -> anyhow::Result<AuditKey> {
    let path = match (key, data) {
        (Some(key), _) => key.to_owned(),
        (None, Some(data)) => {
            require_hub_data(data)?;
            crate::server::audit_key_path(data)
        }
        (None, None) => anyhow::bail!("give --key or --data"),
    };
    Ok(AuditKey::load(&path)?)
}

fn read_pubkey(path: &Path) -> anyhow::Result<Vec<u8>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
    Ok(AuditKey::parse_public_key(&text)?)
}

fn read_witnessed(files: &[PathBuf]) -> anyhow::Result<Vec<SignedTreeHead>> {
    let mut heads = Vec::new();
    for file in files {
        let reader = BufReader::new(File::open(file).with_context(|| format!("open {}", file.display()))?);
        heads.extend(export::read_witness(reader).with_context(|| format!("witness file {}", file.display()))?);
    }
    Ok(heads)
}

fn report_verification(result: Result<Verified, VerifyError>) -> ExitCode {
    match result {
        Ok(verified) => {
            println!(
                "audit log intact: {} entries ({} omitted, {} pruned before), {} signed heads, {} witnessed heads, up to seq {}",
                verified.entries,
                verified.omitted,
                verified.pruned,
                verified.checkpoints,
                verified.witnessed,
                verified.last_seq
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            println!("audit log BROKEN at seq {} [{}]: {e}", e.seq(), e.kind());
            ExitCode::from(e.exit_code())
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
        AuditCommand::Verify { file: Some(file), pubkey, witness, .. } => {
            let key = read_pubkey(&pubkey)?;
            let witnessed = read_witnessed(&witness)?;
            let reader = BufReader::new(File::open(&file).with_context(|| format!("open {}", file.display()))?);
            Ok(report_verification(export::verify_file(reader, &key, witnessed)?))
        }
        AuditCommand::Verify { data: Some(data), pubkey, witness, .. } => {
            // The store first: a directory without a hub is the clearer answer.
            let store = open_store(&data)?;
            let key = read_pubkey(&pubkey)?;
            let witnessed = read_witnessed(&witness)?;
            Ok(report_verification(export::verify_store(&store, &key, witnessed)?))
        }
        AuditCommand::Verify { .. } => anyhow::bail!("give --file or --data, with --pubkey"),
        AuditCommand::RotateKey { data, key, new_key } => {
            let old = load_key(Some(&data), key.as_deref())?;
            let store = open_store(&data)?;
            let next = AuditKey::create(&new_key)?;
            let head = super::rotate(&store, &old, &next, crate::clock::now_ms())?;
            store.flush()?;
            println!(
                "audit key rotated at {} entries: {} -> {} (set [audit] key = {:?})",
                head.size,
                old.public_key_hex(),
                next.public_key_hex(),
                new_key.display().to_string()
            );
            Ok(ExitCode::SUCCESS)
        }
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
        AuditCommand::Pubkey { data, key } => {
            println!("{}", load_key(data.as_deref(), key.as_deref())?.public_key_hex());
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
