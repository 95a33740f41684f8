//! The `hub` command line as an operator or an inspector meets it: the real
//! binary, its help text, its refusal of a directory that holds no hub, and
//! what `hub demo --data` says about where it keeps its files.

use std::path::Path;
use std::process::{Command, Output};

const HUB: &str = env!("CARGO_BIN_EXE_ketenhub-hub");

fn hub(args: &[&str]) -> anyhow::Result<Output> {
    tests::output_within(Command::new(HUB).args(args), tests::RUN_LIMIT)
}

fn text(output: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr))
}

/// The description `hub --help` gives a subcommand, by name.
fn described(help: &str, command: &str) -> Option<String> {
    help.lines().find_map(|line| {
        let rest = line.trim_start().strip_prefix(command)?;
        rest.starts_with(' ').then(|| rest.trim().to_owned())
    })
}

#[test]
fn the_help_describes_every_command_as_itself() -> anyhow::Result<()> {
    let output = hub(&["--help"])?;
    assert!(output.status.success());
    let help = String::from_utf8_lossy(&output.stdout).into_owned();
    let audit = described(&help, "audit").unwrap_or_default();
    let demo = described(&help, "demo").unwrap_or_default();
    let serve = described(&help, "serve").unwrap_or_default();
    assert!(audit.to_lowercase().contains("audit log"), "audit is described as {audit:?} in:\n{help}");
    assert!(demo.to_lowercase().contains("demonstration"), "demo is described as {demo:?} in:\n{help}");
    assert!(serve.to_lowercase().contains("runs a hub"), "serve is described as {serve:?} in:\n{help}");
    Ok(())
}

/// Every path under `dir`, sorted, to compare before and after.
fn tree(dir: &Path) -> Vec<String> {
    let mut paths: Vec<String> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .flat_map(|entry| {
            let path = entry.path();
            let mut below = if path.is_dir() { tree(&path) } else { Vec::new() };
            below.push(path.display().to_string());
            below
        })
        .collect();
    paths.sort();
    paths
}

#[test]
fn audit_commands_refuse_a_directory_without_a_hub_and_create_nothing() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty)?;
    let missing = dir.path().join("missing");
    let out = dir.path().join("export.jsonl");
    let case = uuid::Uuid::new_v4().to_string();
    for data in [&empty, &missing] {
        let data_arg = data.to_str().expect("a UTF-8 path");
        let out_arg = out.to_str().expect("a UTF-8 path");
        let commands: [&[&str]; 3] = [
            &["audit", "export", "--data", data_arg, "--out", out_arg],
            &["audit", "verify", "--data", data_arg, "--pubkey", out_arg],
            &["audit", "report", "--data", data_arg, "--case", &case],
        ];
        for args in commands {
            let before = tree(dir.path());
            let output = hub(args)?;
            let said = text(&output);
            assert!(!output.status.success(), "{args:?} succeeded on a directory without a hub:\n{said}");
            assert!(said.contains("no hub store"), "{args:?} gave no clear reason:\n{said}");
            assert!(!said.contains("0 entries"), "{args:?} claimed an empty log:\n{said}");
            assert_eq!(tree(dir.path()), before, "{args:?} changed the directory");
        }
    }
    assert!(!missing.exists());
    assert!(!out.exists(), "an export file was written for a directory without a hub");
    Ok(())
}

#[test]
fn the_demo_says_where_it_keeps_its_store() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let output = hub(&["demo", "--data", dir.path().to_str().expect("a UTF-8 path")])?;
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(output.status.success(), "demo failed:\n{}", text(&output));
    let line = stdout.lines().find(|l| l.contains("listening on")).expect("a listening line");
    let store = dir.path().join("data");
    assert!(store.join("store").is_dir(), "the store is not where this test expects it");
    assert!(line.contains(&format!("store in {}", store.display())), "the demo misplaces its store: {line}");
    // The audit command finds the store the demo named.
    let store_arg = store.to_str().expect("a UTF-8 path");
    let pubkey = hub(&["audit", "pubkey", "--data", store_arg])?;
    let key_file = dir.path().join("audit.pub");
    std::fs::write(&key_file, String::from_utf8_lossy(&pubkey.stdout).trim())?;
    let verify = hub(&["audit", "verify", "--data", store_arg, "--pubkey", key_file.to_str().expect("a UTF-8 path")])?;
    assert!(verify.status.success(), "{}", text(&verify));
    Ok(())
}
