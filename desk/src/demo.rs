//! `ketenhub-desk demo`: a development hub and the desks of one family's chain, on loopback.
//!
//! It starts a hub the way `hub demo` does (the hub crate's `DevHub`: a fresh
//! dev PKI, the example policy, sled in a temporary directory), then a desk
//! for each of VT's caseworker, LT Woerden's caseworker, GI SAVE's caseworker,
//! VT's privacy officer and, to show that a case stays invisible outside it,
//! LT Oudewater's caseworker. It seeds one family's case at the stage where
//! Veilig Thuis has taken the report, written in the thread and drafted the
//! handover packet, prints `desk SLUG URL` per desk and `ready`, and runs
//! until ctrl-c.

use std::path::Path;

use hub::config::Limits;
use hub::devhub::DevHub;
use ketenhub_sdk::packet::{Date, HandoverPacket};

use crate::serve::{start, DeskOptions, RunningDesk};
use crate::web::packet_form;

/// The desks of the demo, by dev PKI slug.
pub const DESKS: [&str; 5] = [
    "vt-utrecht-caseworker",
    "lt-woerden-caseworker",
    "gi-save-caseworker",
    "vt-utrecht-privacy",
    "lt-oudewater-caseworker",
];

/// The example family's packet as the form's values, for VT's offer to LT Woerden.
pub fn example_draft(today: Date) -> packet_form::Values {
    let packet = HandoverPacket::example(today);
    let mut values = packet_form::values(&packet);
    values.insert("receiver_oin".into(), packet.receiver.organisation.oin.to_string());
    values.insert("route_basis".into(), format!("{}|{}", packet.route, packet.lawful_basis.code));
    values.insert("deadline".into(), today.add_days(2).to_string());
    values
}

async fn desk_for(hub: &DevHub, dir: &Path, slug: &str) -> anyhow::Result<RunningDesk> {
    let pki = hub.pki_dir();
    let officer = slug.ends_with("-privacy");
    let audit_key = if officer {
        let key = hub::audit::chain::AuditKey::load(&hub::server::audit_key_path(hub.data_dir()))?;
        let path = dir.join("audit.pub");
        std::fs::write(&path, key.public_key_hex())?;
        Some(path)
    } else {
        None
    };
    start(DeskOptions {
        hub: hub.url(),
        ca: pki.join("ca.crt"),
        cert: pki.join(format!("{slug}.crt")),
        key: pki.join(format!("{slug}.key")),
        state: dir.join("desks").join(slug),
        policy: dir.join("policy.toml"),
        audit_key,
        listen: "127.0.0.1:0".parse()?,
        examples: true,
    })
    .await
}

/// Seeds the family's case: a report in the thread and a drafted packet, nothing offered yet.
async fn seed(vt: &RunningDesk) -> anyhow::Result<()> {
    let client = &vt.desk.client;
    let case = client.create_thread().await?;
    client.send_text(case, "Melding van de basisschool: zorgen over de veiligheid van Sem (9) en Noor (6).").await?;
    client
        .send_text(
            case,
            "Huisbezoek gedaan met moeder; veiligheidsplan opgesteld. Overdracht aan het lokaal team voorbereid.",
        )
        .await?;
    let today = Date::from_unix_ms(hub::clock::now_ms());
    vt.desk.store.save_draft(case, &example_draft(today)).await?;
    Ok(())
}

/// Runs the demo until ctrl-c.
pub async fn run() -> anyhow::Result<()> {
    let temp = tempfile::tempdir()?;
    let hub = DevHub::start(temp.path(), Limits::default()).await?;
    eprintln!("hub {} (dev PKI and data in {})", hub.url(), temp.path().display());
    let mut desks = Vec::new();
    for slug in DESKS {
        desks.push((slug, desk_for(&hub, temp.path(), slug).await?));
    }
    seed(&desks[0].1).await?;
    for (slug, desk) in &desks {
        println!("desk {slug} {}", desk.url);
    }
    println!("ready");
    tokio::signal::ctrl_c().await?;
    for (_, desk) in desks {
        desk.stop().await;
    }
    hub.stop().await
}
