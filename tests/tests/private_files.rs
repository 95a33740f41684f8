//! Nothing secret is readable by other users: after a real hub has stored a
//! case with an attachment, and a client has kept its device state, every
//! file of the hub's store and of the device state is 0600 in 0700
//! directories; and a client whose state is sealed with another key is
//! refused with a typed error.

use std::path::Path;

use ketenhub_sdk::{Error, StateKey};
use tests::DevHub;

/// Every file and directory under `dir` whose mode is wider than owner-only.
fn open_to_others(dir: &Path) -> Vec<String> {
    let mut wide = Vec::new();
    let mode = certs::private::mode_of(dir).unwrap();
    if mode != 0o700 {
        wide.push(format!("{} {mode:o}", dir.display()));
    }
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            wide.extend(open_to_others(&path));
        } else {
            let mode = certs::private::mode_of(&path).unwrap();
            if mode != 0o600 {
                wide.push(format!("{} {mode:o}", path.display()));
            }
        }
    }
    wide
}

#[cfg(unix)]
#[tokio::test]
async fn the_store_and_the_device_state_are_owner_only() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let state = dir.path().join("vt-state");
    let hub = DevHub::start(dir.path(), tests::limits()).await?;
    let vt = hub.client("vt-utrecht-caseworker").state_dir(&state).discard_events().connect().await?;
    let thread = vt.create_thread().await?;
    vt.send_text(thread, "Melding ontvangen").await?;
    let file = dir.path().join("verslag.pdf");
    tests::write_random_file(&file, 300_000, 5)?;
    vt.send_attachment(thread, &file, "application/pdf").await?;
    vt.close().await;
    let store = hub.data_dir().join("store");
    hub.stop().await?;
    assert!(store.join("attachments").is_dir());
    assert_eq!(open_to_others(&store), Vec::<String>::new(), "the store is readable by others");
    assert_eq!(open_to_others(&state), Vec::<String>::new(), "the device state is readable by others");
    Ok(())
}

#[tokio::test]
async fn a_sealed_device_state_needs_its_key() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let state = dir.path().join("lt-state");
    let hub = DevHub::start(dir.path(), tests::limits()).await?;
    let key = StateKey::new([3; 32]);
    let lt = hub.client("lt-woerden-caseworker").state_dir(&state).state_key(key.clone()).connect().await?;
    lt.close().await;
    let sealed = std::fs::read(state.join("mls-state.cbor"))?;
    assert!(!sealed.windows(b"sanne.bakker".len()).any(|w| w == b"sanne.bakker"), "the state is not sealed");
    let again = hub.client("lt-woerden-caseworker").state_dir(&state).state_key(key).connect().await?;
    again.close().await;
    for builder in [
        hub.client("lt-woerden-caseworker").state_dir(&state).state_key(StateKey::new([4; 32])),
        hub.client("lt-woerden-caseworker").state_dir(&state),
    ] {
        match builder.connect().await {
            Err(Error::StateKey(message)) => assert!(message.contains("state key"), "{message}"),
            Err(other) => panic!("expected a state-key error, got {other}"),
            Ok(_) => panic!("a sealed state opened without its key"),
        }
    }
    hub.stop().await
}
