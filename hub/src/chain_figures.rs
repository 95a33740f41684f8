//! `hub report chain`, and the privacy officer's request for the same figures: the chain's figures
//! from the handover entries this hub holds ([`wire::figures`] defines them).
//!
//! The store is read one case at a time; only the figures' observations are kept, never the cases.
//! Organisations, regions and route clocks come from the policy, public holidays from the hub's
//! configuration, the minimum count of a cell from `limits.min_figure_count` (10 unless set).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use wire::figures::{ChainReport, Directory, OrganisationFacts, Settings, Tally, DEFAULT_MIN_COUNT};
use wire::frame::EntryBody;
use wire::handover::{Calendar, RouteClocks};
use wire::{Oin, ThreadId};

use crate::policy::Policy;
use crate::store::{Store, StoreError};

/// How many entries of a thread are read at a time: entries carry ciphertext up to the frame limit,
/// so a page is kept small.
const PAGE: usize = 64;

/// The policy as the figures see it.
struct PolicyDirectory<'a>(&'a Policy);

impl Directory for PolicyDirectory<'_> {
    fn organisation(&self, oin: &Oin) -> Option<OrganisationFacts> {
        self.0.organisation(oin).map(|o| OrganisationFacts {
            name: o.name.clone(),
            region: o.region.clone(),
            kind: o.kind,
        })
    }

    fn route_clocks(&self, route: &str) -> RouteClocks {
        self.0.route_clocks(route)
    }
}

/// The chain figures over `cases` (threads without handover entries, such as side threads, add nothing).
pub fn report(
    store: &dyn Store,
    policy: &Policy,
    settings: &Settings,
    cases: impl IntoIterator<Item = ThreadId>,
) -> Result<ChainReport, StoreError> {
    let directory = PolicyDirectory(policy);
    let mut tally = Tally::default();
    for case in cases {
        tally.add(&handover_events(store, case)?, &directory, settings);
    }
    Ok(tally.report(&directory, settings))
}

/// Every case of the hub, for the operator's report.
pub fn all_cases(store: &dyn Store) -> Result<Vec<ThreadId>, StoreError> {
    Ok(store.ownerships()?.into_iter().map(|(case, _)| case).collect())
}

/// A case's handover entries, with the hub's time of each.
fn handover_events(store: &dyn Store, case: ThreadId) -> Result<wire::figures::CaseEvents, StoreError> {
    let mut events = Vec::new();
    let mut after = 0;
    loop {
        let page = store.entries_after(case, after, PAGE)?;
        let Some(last) = page.last() else { break };
        after = last.seq;
        events.extend(page.into_iter().filter_map(|entry| match entry.body {
            EntryBody::Handover { event } => Some((entry.at_ms, event)),
            _ => None,
        }));
    }
    Ok(events)
}

/// The output formats.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Format {
    /// Markdown tables, for people.
    Md,
    /// One JSON document.
    Json,
    /// One line per value.
    Csv,
}

/// The `hub report` subcommands.
#[derive(clap::Subcommand)]
pub enum ReportCommand {
    /// Prints the chain figures for a period, per organisation, region and route, small cells suppressed.
    Chain {
        /// The hub's data directory (of a stopped hub, or a copy).
        #[arg(long)]
        data: PathBuf,
        /// The first day counted (YYYY-MM-DD).
        #[arg(long)]
        since: String,
        /// The day the period ends, not counted (YYYY-MM-DD); default: today.
        #[arg(long)]
        until: Option<String>,
        /// The output format.
        #[arg(long, value_enum, default_value = "md")]
        format: Format,
        /// The hub's configuration: its policy, public holidays and `limits.min_figure_count`.
        #[arg(long, required_unless_present = "policy")]
        config: Option<PathBuf>,
        /// The policy file, when no configuration is given or to use another.
        #[arg(long)]
        policy: Option<PathBuf>,
        /// The smallest count shown, overriding the configuration.
        #[arg(long)]
        min_count: Option<u64>,
    },
}

/// Runs a `hub report` subcommand.
pub fn run(command: ReportCommand) -> anyhow::Result<ExitCode> {
    let ReportCommand::Chain { data, since, until, format, config, policy, min_count } = command;
    let config = config.map(|path| crate::config::Config::from_file(&path)).transpose()?;
    let policy_path = policy
        .or_else(|| config.as_ref().and_then(|c| c.policy.clone()))
        .context("give --policy, or a --config that names one")?;
    let policy = Policy::load(&policy_path).with_context(|| format!("policy {}", policy_path.display()))?;
    let calendar = match &config {
        Some(config) => config.handover.calendar()?,
        None => Calendar::default(),
    };
    let min_count = min_count.or(config.as_ref().map(|c| c.limits.min_figure_count)).unwrap_or(DEFAULT_MIN_COUNT);
    anyhow::ensure!(min_count >= 1, "--min-count is at least 1");
    let day = |text: &str| -> anyhow::Result<u64> {
        let days = crate::clock::parse_date(text).map_err(|e| anyhow::anyhow!("{e} (expected YYYY-MM-DD)"))?;
        Ok(days * wire::calendar::DAY_MS)
    };
    let since_ms = day(&since)?;
    let until_ms = match until {
        Some(until) => day(&until)?,
        None => crate::clock::now_ms().div_ceil(wire::calendar::DAY_MS) * wire::calendar::DAY_MS,
    };
    anyhow::ensure!(since_ms < until_ms, "--since {since} is not before --until");
    let store = crate::audit::command::open_store(&data)?;
    let settings = Settings { since_ms, until_ms, min_count, calendar };
    let report = report(&store, &policy, &settings, all_cases(&store)?)?;
    match format {
        Format::Md => print!("{}", report.to_markdown()),
        Format::Csv => print!("{}", report.to_csv()),
        Format::Json => println!("{}", serde_json::to_string_pretty(&report)?),
    }
    Ok(ExitCode::SUCCESS)
}
