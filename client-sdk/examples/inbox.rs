//! Lists an identity's threads and prints what arrives, acknowledging each
//! entry, until `seconds` have passed.
//!
//! ```text
//! cargo run -p client-sdk --example inbox -- wss://localhost:7443 pki lt-woerden-caseworker 30
//! ```

use std::path::Path;
use std::time::Duration;

use futures_util::StreamExt;
use ketenhub_sdk::{Client, Event};

/// Prints the identity's threads and the events that arrive within `listen`.
/// Returns the number of thread entries seen.
pub async fn run(url: &str, pki: &Path, slug: &str, listen: Duration) -> anyhow::Result<usize> {
    let client = Client::builder()
        .url(url)
        .ca_file(pki.join("ca.crt"))
        .identity_files(pki.join(format!("{slug}.crt")), pki.join(format!("{slug}.key")))
        .connect()
        .await?;
    println!("connected as {}", client.identity());
    for summary in client.threads().await? {
        println!("thread {}: {} entries, read up to {}", summary.thread, summary.last_seq, summary.cursor);
    }
    let mut events = client.events().expect("events are taken once");
    let mut seen = 0;
    let deadline = tokio::time::sleep(listen);
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            _ = &mut deadline => break,
            event = events.next() => match event {
                None => break,
                Some(event) => {
                    println!("{event:?}");
                    if let Some((thread, seq)) = event.position() {
                        seen += 1;
                        client.ack(thread, seq).await?;
                    }
                    if let Event::Disconnected { reason } = event {
                        eprintln!("disconnected ({reason}); the SDK reconnects by itself");
                    }
                }
            }
        }
    }
    client.close().await;
    Ok(seen)
}

#[allow(dead_code)]
#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let url = args.next().unwrap_or_else(|| "wss://localhost:7443".into());
    let pki = args.next().unwrap_or_else(|| "pki".into());
    let slug = args.next().unwrap_or_else(|| "lt-woerden-caseworker".into());
    let seconds: u64 = args.next().map(|s| s.parse()).transpose()?.unwrap_or(30);
    run(&url, Path::new(&pki), &slug, Duration::from_secs(seconds)).await?;
    Ok(())
}
