//! `docs/privacy.md` lists every kind of record the hub keeps. This walks the
//! store of a hub that has run the whole demo and fails on any kind of record,
//! or any file, that the page does not list.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

/// The one-byte tags of the store table in `docs/privacy.md`: its rows begin "| `X` |".
fn documented_tags() -> anyhow::Result<BTreeSet<u8>> {
    let page = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/privacy.md"))?;
    let tags: BTreeSet<u8> = page
        .lines()
        .filter_map(|line| line.strip_prefix("| `")?.split_once("` |").map(|(tag, _)| tag.to_owned()))
        .filter(|tag| tag.len() == 1)
        .map(|tag| tag.as_bytes()[0])
        .collect();
    anyhow::ensure!(tags.len() > 10, "the store table of docs/privacy.md was not found");
    Ok(tags)
}

/// Every file below `dir`, relative to it.
fn files(dir: &Path, base: &Path, out: &mut Vec<String>) -> anyhow::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            files(&path, base, out)?;
        } else {
            out.push(path.strip_prefix(base)?.display().to_string());
        }
    }
    Ok(())
}

#[test]
fn every_kind_of_record_after_the_demo_is_documented() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut demo = Command::new(env!("CARGO_BIN_EXE_ketenhub-hub"));
    let output = tests::output_within(demo.arg("demo").arg("--data").arg(dir.path()), tests::RUN_LIMIT)?;
    anyhow::ensure!(output.status.success(), "demo failed: {}", String::from_utf8_lossy(&output.stderr));
    let data = dir.path().join("data");

    let documented = documented_tags()?;
    let db = tests::store_engine(&data.join("store"))?;
    let mut found = BTreeSet::new();
    for item in db.scan_prefix(b"") {
        let (key, _) = item?;
        found.insert(key[0]);
    }
    let undocumented: Vec<char> = found.difference(&documented).map(|t| *t as char).collect();
    assert!(undocumented.is_empty(), "records with tags {undocumented:?} are not in docs/privacy.md");
    assert!(found.len() >= 10, "the demo left too few kinds of record to check: {found:?}");

    // Files: the engine's own, attachment chunks, and the audit key; nothing else.
    let mut all = Vec::new();
    files(&data, &data, &mut all)?;
    let unlisted: Vec<&String> =
        all.iter().filter(|f| !(f.starts_with("store/") || f.as_str() == "audit-key.pk8")).collect();
    assert!(unlisted.is_empty(), "files the page does not list: {unlisted:?}");
    Ok(())
}
