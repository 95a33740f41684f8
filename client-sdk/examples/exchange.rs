//! Two agencies open a case thread and exchange messages through a running hub.
//!
//! ```text
//! cargo run -p certs -- dev --out pki
//! cargo run -p hub -- serve --listen 127.0.0.1:7443 --data data --ca pki/ca.crt --cert pki/hub.crt --key pki/hub.key
//! cargo run -p client-sdk --example exchange -- wss://localhost:7443 pki
//! ```

use std::path::Path;
use std::time::Duration;

use futures_util::StreamExt;
use ketenhub_sdk::{Client, Event, Grounds};

async fn connect(url: &str, pki: &Path, slug: &str) -> Result<Client, ketenhub_sdk::Error> {
    Client::builder()
        .url(url)
        .ca_file(pki.join("ca.crt"))
        .identity_files(pki.join(format!("{slug}.crt")), pki.join(format!("{slug}.key")))
        .connect()
        .await
}

/// Veilig Thuis opens a thread, adds the local team, and both write once.
/// Returns the texts the local team received.
pub async fn run(url: &str, pki: &Path) -> anyhow::Result<Vec<String>> {
    let vt = connect(url, pki, "vt-utrecht-caseworker").await?;
    let lt = connect(url, pki, "lt-woerden-caseworker").await?;
    let mut lt_events = lt.events().expect("events are taken once");

    let thread = vt.create_thread().await?;
    vt.add_member(thread, lt.member_id(), &Grounds::new("referral after a report", "consent")).await?;
    vt.send(thread, b"Graag overleg over een warme overdracht.".to_vec()).await?;
    lt.send(thread, b"Akkoord, wij plannen een huisbezoek.".to_vec()).await?;

    let mut received = Vec::new();
    while received.len() < 2 {
        let event = tokio::time::timeout(Duration::from_secs(10), lt_events.next()).await?;
        match event {
            Some(Event::Message(m)) => {
                let text = String::from_utf8_lossy(m.payload()).into_owned();
                println!("{} #{} from {}: {text}", m.thread, m.seq, m.sender);
                lt.ack(m.thread, m.seq).await?;
                received.push(text);
            }
            Some(_) => {}
            None => anyhow::bail!("event stream ended"),
        }
    }
    vt.close().await;
    lt.close().await;
    Ok(received)
}

#[allow(dead_code)]
#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let url = args.next().unwrap_or_else(|| "wss://localhost:7443".into());
    let pki = args.next().unwrap_or_else(|| "pki".into());
    run(&url, Path::new(&pki)).await?;
    Ok(())
}
