//! Nothing acknowledged is lost in the SDK either: an application that is
//! handed messages and killed before it acknowledges them is handed them
//! again when it restarts, although MLS forward secrecy means the hub's copies
//! could never be decrypted a second time.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use anyhow::Context;
use tests::DevHub;

const WAIT: Duration = Duration::from_secs(30);

/// The receiver process and the lines it prints.
struct Receiver {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Receiver {
    fn start(hub: &DevHub, state: &std::path::Path, mode: &str) -> anyhow::Result<Self> {
        let mut child = Command::new(env!("CARGO_BIN_EXE_ketenhub-receiver"))
            .arg(hub.url())
            .arg(hub.pki_dir())
            .args(["lt-woerden-caseworker"])
            .arg(state)
            .arg(mode)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()?;
        let stdout = child.stdout.take().ok_or_else(|| anyhow::anyhow!("no stdout"))?;
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Ok(Self { child, lines })
    }

    /// The texts of the next `n` messages it prints.
    fn messages(&self, n: usize) -> anyhow::Result<Vec<String>> {
        let mut texts = Vec::new();
        while texts.len() < n {
            let line = self.lines.recv_timeout(WAIT)?;
            if let Some(rest) = line.strip_prefix("message ") {
                texts.push(rest.split_once(' ').map(|(_, t)| t.to_owned()).unwrap_or_default());
            }
        }
        Ok(texts)
    }

    /// Whether it prints no message within a short while.
    fn quiet(&self) -> bool {
        loop {
            match self.lines.recv_timeout(Duration::from_millis(800)) {
                Ok(line) if line.starts_with("message ") => return false,
                Ok(_) => continue,
                Err(_) => return true,
            }
        }
    }

    fn kill_9(mut self) -> anyhow::Result<()> {
        self.child.kill()?;
        self.child.wait()?;
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_handed_over_but_not_acknowledged_survive_the_applications_crash() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let hub = DevHub::start(dir.path(), tests::limits()).await?;
    let state = dir.path().join("lt-state");
    // The receiver joins once, so that its device is in the thread's group.
    let first = Receiver::start(&hub, &state, "no-ack")?;
    let vt = hub.client("vt-utrecht-caseworker").discard_events().connect().await?;
    let thread = vt.create_thread().await?;
    let lt = certs::dev::sample("lt-woerden-caseworker").map(|s| s.worker).unwrap_or_default();
    let lt = ketenhub_sdk::MemberId::new(certs::dev::LT_WOERDEN.oin, lt)?;
    tests::eventually(WAIT, || async { Ok(vt.add_member(thread, lt.clone(), &tests::consent()).await.is_ok()) })
        .await?;
    for text in ["een", "twee", "drie"] {
        vt.send_text(thread, text).await?;
    }
    assert_eq!(first.messages(3).context("the first run")?, ["een", "twee", "drie"]);
    // Killed before it acknowledged anything.
    first.kill_9()?;

    let second = Receiver::start(&hub, &state, "ack")?;
    let again = second.messages(3).context("what the application never acknowledged was lost")?;
    assert_eq!(again, ["een", "twee", "drie"]);
    // Acknowledged now: a third start is handed nothing again.
    std::thread::sleep(Duration::from_millis(300));
    second.kill_9()?;
    let third = Receiver::start(&hub, &state, "ack")?;
    assert!(third.quiet(), "acknowledged messages were handed over again");
    third.kill_9()?;
    hub.stop().await
}
