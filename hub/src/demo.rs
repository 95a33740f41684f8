//! `hub demo`: Ketenhub's story in one command, on loopback.
//!
//! It starts a hub with a fresh dev PKI in a temporary directory (or `--data`),
//! connects SDK clients of different agencies, and prints a timeline a person
//! can follow. It exits non-zero if anything in the story does not happen as it
//! should, so the test suite runs it as a check.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use ketenhub_sdk::{Client, Event, EventStream, Grounds, ThreadId};

use crate::config::Limits;
use crate::devhub::DevHub;

/// Prints timeline lines with the time since the demo started.
struct Timeline {
    start: Instant,
}

impl Timeline {
    fn say(&self, who: &str, what: impl AsRef<str>) {
        let t = self.start.elapsed().as_secs_f64();
        println!("[{t:7.3}s] {who:<28} {}", what.as_ref());
    }
}

fn who(client: &Client) -> String {
    let id = client.identity();
    format!("{} ({})", id.organisation, id.worker)
}

/// The next message in `thread` from someone other than `me`.
async fn next_message(
    events: &mut EventStream,
    thread: ThreadId,
    me: &Client,
) -> anyhow::Result<ketenhub_sdk::Message> {
    let me = me.member_id();
    let wait = async {
        while let Some(event) = events.next().await {
            if let Event::Message(message) = event {
                if message.thread == thread && message.sender != me {
                    return Ok(message);
                }
            }
        }
        anyhow::bail!("event stream ended")
    };
    tokio::time::timeout(Duration::from_secs(10), wait).await?
}

/// Runs the demo story; `data` keeps the hub's files in a chosen directory.
pub async fn run(data: Option<PathBuf>) -> anyhow::Result<()> {
    let temp = tempfile::tempdir()?;
    let dir = data.unwrap_or_else(|| temp.path().to_owned());
    let line = Timeline { start: Instant::now() };
    let hub = DevHub::start(&dir, Limits::default()).await?;
    line.say("hub", format!("listening on {} (dev PKI and sled store in {})", hub.addr(), dir.display()));

    let vt = hub.client("vt-utrecht-caseworker").connect().await?;
    let lt = hub.client("lt-woerden-caseworker").connect().await?;
    let outsider = hub.client("lt-oudewater-caseworker").connect().await?;
    for client in [&vt, &lt, &outsider] {
        line.say(&who(client), format!("connected with mTLS as {}", client.identity()));
    }
    let mut vt_events = vt.events().expect("fresh client");
    let mut lt_events = lt.events().expect("fresh client");

    let thread = vt.create_thread().await?;
    line.say(&who(&vt), format!("opened case thread {thread}"));
    vt.add_member(thread, lt.member_id(), &Grounds::new("referral after triage of a report", "consent")).await?;
    line.say(&who(&vt), format!("added {} to the thread", lt.member_id()));

    let sent = vt.send(thread, b"Melding na triage: graag overleg over warme overdracht.".to_vec()).await?;
    line.say(&who(&vt), format!("sent a message; durable at seq {}", sent.seq));
    let got = next_message(&mut lt_events, thread, &lt).await?;
    line.say(&who(&lt), format!("received seq {}: {:?}", got.seq, String::from_utf8_lossy(got.payload())));
    lt.ack(thread, got.seq).await?;

    let reply = lt.send(thread, b"Ontvangen. Wij plannen een gezamenlijk huisbezoek.".to_vec()).await?;
    line.say(&who(&lt), format!("replied; durable at seq {}", reply.seq));
    let got = next_message(&mut vt_events, thread, &vt).await?;
    line.say(&who(&vt), format!("received seq {}: {:?}", got.seq, String::from_utf8_lossy(got.payload())));
    vt.ack(thread, got.seq).await?;

    match outsider.members(thread).await {
        Err(e) if e.is_not_found() => line.say(
            &who(&outsider),
            format!("tried to read the thread: refused ({e}), same as for a thread that does not exist"),
        ),
        other => anyhow::bail!("an outsider could see the thread: {other:?}"),
    }

    let officer = hub.client("vt-utrecht-privacy").discard_events().connect().await?;
    line.say(&who(&officer), "prints the family's access report (GDPR art. 15):");
    for row in officer.access_report(thread).await?.lines().filter(|l| !l.is_empty()) {
        println!("           {row}");
    }

    for client in [vt, lt, outsider, officer] {
        client.close().await;
    }
    let verified = hub.stop_and_verify_audit().await?;
    line.say("hub", "stopped cleanly; every message was acknowledged only after it was on disk");
    match verified {
        Ok(v) => {
            line.say(
                "audit",
                format!("chain verified: {} entries, {} signed checkpoints, intact", v.entries, v.checkpoints),
            );
            Ok(())
        }
        Err(e) => {
            line.say("audit", format!("chain verification FAILED at seq {}: {e}", e.seq()));
            anyhow::bail!("the audit chain does not verify")
        }
    }
}
