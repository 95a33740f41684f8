//! `certs dev` creates every private key owner-only from the start: the real
//! binary is traced with strace, and each `.key` file must be created with
//! mode 0600 in the open call itself (narrowing it afterwards leaves a moment
//! in which another user can open it and keep the descriptor).

use std::path::Path;
use std::process::Command;

const CERTS: &str = env!("CARGO_BIN_EXE_certs");

#[cfg(unix)]
fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[cfg(unix)]
#[test]
fn private_keys_are_created_owner_only() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("pki");
    let trace = dir.path().join("trace.txt");
    let traced = Command::new("strace")
        .args(["-f", "-qq", "-e", "trace=open,openat,creat", "-o"])
        .arg(&trace)
        .arg(CERTS)
        .args(["dev", "--out"])
        .arg(&out)
        .status();
    let trace = match traced {
        Ok(status) => {
            assert!(status.success(), "certs dev failed under strace: {status}");
            std::fs::read_to_string(&trace).unwrap()
        }
        // Without strace the creation itself cannot be watched; the final
        // modes below are still checked.
        Err(e) => {
            eprintln!("strace is not available ({e}); checking the final modes only");
            assert!(Command::new(CERTS).args(["dev", "--out"]).arg(&out).status().unwrap().success());
            String::new()
        }
    };
    let mut keys = 0;
    for entry in std::fs::read_dir(&out).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if name.ends_with(".key") {
            keys += 1;
            assert_eq!(mode(&path), 0o600, "{name}");
            if !trace.is_empty() {
                let quoted = format!("{}\"", path.display());
                let creations: Vec<&str> =
                    trace.lines().filter(|l| l.contains(&quoted) && l.contains("O_CREAT")).collect();
                assert!(!creations.is_empty(), "no creation of {name} in the trace");
                for line in creations {
                    assert!(line.contains(", 0600)"), "{name} was created with a wider mode: {line}");
                }
            }
        }
    }
    assert!(keys >= 8, "only {keys} keys written");
}
