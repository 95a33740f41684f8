//! What `hub audit verify --file F --pubkey K` parses: the first line of the
//! input is the public key file, the rest the JSON Lines export, which
//! `hub::audit::export::verify_file` reads and checks. Neither may panic on any
//! file an inspector is handed; every line that parses must write back to a
//! line that parses to the same thing, since the reader insists that an export
//! is in its canonical form.
#![no_main]

use hub::audit::chain::{from_json_line, to_json_line, AuditKey};
use hub::audit::export::verify_file;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some(newline) = data.iter().position(|&b| b == b'\n') else {
        return;
    };
    let (key, export) = (&data[..newline], &data[newline + 1..]);
    let Ok(key) = std::str::from_utf8(key) else {
        return;
    };
    let Ok(key) = AuditKey::parse_public_key(key) else {
        return;
    };
    let _ = verify_file(export, &key, Vec::new());
    for line in export.split(|&b| b == b'\n') {
        let Ok(Ok(parsed)) = std::str::from_utf8(line).map(from_json_line) else {
            continue;
        };
        assert_eq!(from_json_line(&to_json_line(&parsed)).expect("a written line reads back"), parsed);
    }
});
