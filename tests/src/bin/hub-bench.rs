//! `hub-bench`: the hub against the bare relay, in one run.
//!
//! ```text
//! cargo run --release -p tests --bin hub-bench -- [--quick] [--json] [--rounds N] [--only PHASE]...
//! ```
//!
//! The binary also serves as the two servers under test, so that each runs in
//! a process of its own: `hub-bench hub serve ...` is the hub's CLI, and
//! `hub-bench relay --listen ADDR --pki DIR` is the relay.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use tests::bench::{self, Scale};

#[derive(Parser)]
#[command(name = "hub-bench", about = "Ketenhub benchmark: the hub against a bare TLS-WebSocket relay")]
struct Cli {
    /// A short run (under a minute) with smaller sizes.
    #[arg(long)]
    quick: bool,
    /// A seconds-long run that checks every phase works (the test suite runs it); its figures mean nothing.
    #[arg(long, conflicts_with = "quick")]
    smoke: bool,
    /// Also print the report as one JSON object on the last line.
    #[arg(long)]
    json: bool,
    /// Run only these phases (repeatable); all by default.
    #[arg(long, value_enum)]
    only: Vec<bench::Phase>,
    /// The offered load of the latency phase, in messages per second
    /// (default: half the hub's measured throughput).
    #[arg(long)]
    offered: Option<f64>,
    /// Run everything this many times, each round with fresh servers, and
    /// report each figure's median with its spread (min–max) over the rounds.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=50))]
    rounds: u32,
}

#[derive(Parser)]
struct RelayArgs {
    #[arg(long)]
    listen: std::net::SocketAddr,
    #[arg(long)]
    pki: PathBuf,
}

fn relay(args: RelayArgs) -> anyhow::Result<()> {
    let pki = &args.pki;
    let no_crls: [PathBuf; 0] = [];
    let tls = hub::tls::server_config(&pki.join("ca.crt"), &pki.join("hub.crt"), &pki.join("hub.key"), &no_crls)?;
    tokio::runtime::Runtime::new()?.block_on(async {
        let listener = tokio::net::TcpListener::bind(args.listen).await?;
        println!("listening on {}", listener.local_addr()?);
        tests::relay::serve(listener, tokio_rustls::TlsAcceptor::from(tls)).await;
        Ok(())
    })
}

fn main() -> ExitCode {
    let args: Vec<OsString> = std::env::args_os().collect();
    match args.get(1).and_then(|a| a.to_str()) {
        Some("hub") => return hub::cli::main_from(args[1..].iter().cloned()),
        Some("relay") => {
            return match relay(RelayArgs::parse_from(&args[1..])) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("relay: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        _ => {}
    }
    let cli = Cli::parse();
    let scale = match (cli.quick, cli.smoke) {
        (true, _) => Scale::quick(),
        (_, true) => Scale::smoke(),
        _ => Scale::full(),
    };
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    let started = std::time::Instant::now();
    let result = runtime.block_on(async {
        let mut rounds = Vec::new();
        for round in 1..=cli.rounds {
            let figures = bench::run(scale, &cli.only, cli.offered, |phase| {
                eprintln!("[{:6.1}s] round {round}/{}: {phase}", started.elapsed().as_secs_f64(), cli.rounds)
            })
            .await?;
            rounds.push(figures);
        }
        if cli.rounds == 1 {
            return Ok(rounds.remove(0));
        }
        bench::fold_rounds(rounds)
    });
    // Tasks a failed phase left behind must not keep the process from ending.
    runtime.shutdown_timeout(std::time::Duration::from_secs(5));
    match result {
        Ok(figures) => {
            println!("{}", bench::table(&figures));
            if cli.json {
                let report = serde_json::json!({ "quick": cli.quick, "smoke": cli.smoke, "figures": figures });
                println!("{report}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("hub-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}
