//! An application on the SDK, run as its own process by the SDK's crash tests:
//! it connects with a state directory and prints every message it is handed,
//! one line each (`message SEQ TEXT`), acknowledging each one only when asked
//! to. A test kills it with SIGKILL between receiving and acknowledging.
//!
//! ```text
//! ketenhub-receiver URL PKI_DIR SLUG STATE_DIR (ack|no-ack)
//! ```

use futures_util::StreamExt;
use ketenhub_sdk::{Client, Content, Event};

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let [_, url, pki, slug, state, mode] = args.as_slice() else {
        anyhow::bail!("usage: ketenhub-receiver URL PKI_DIR SLUG STATE_DIR (ack|no-ack)");
    };
    let pki = std::path::Path::new(pki);
    let client = Client::builder()
        .url(url)
        .ca_file(pki.join("ca.crt"))
        .identity_files(pki.join(format!("{slug}.crt")), pki.join(format!("{slug}.key")))
        .state_dir(state)
        .connect()
        .await?;
    println!("connected");
    let mut events = client.events().ok_or_else(|| anyhow::anyhow!("no event stream"))?;
    while let Some(event) = events.next().await {
        if let Event::Message(message) = event {
            let text = match &message.content {
                Content::Text { text } => text.clone(),
                other => format!("{other:?}"),
            };
            println!("message {} {text}", message.seq);
            if mode == "ack" {
                client.ack(message.thread, message.seq).await?;
                println!("acknowledged {}", message.seq);
            }
        }
    }
    Ok(())
}
