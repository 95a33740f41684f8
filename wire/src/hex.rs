//! Lowercase hexadecimal, as audit exports, public keys and the SDK's witnessed head write hashes.

use std::fmt::Write as _;

/// `bytes` as lowercase hex digits.
pub fn encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        // Writing to a String cannot fail.
        let _ = write!(out, "{byte:02x}");
    }
    out
}

/// The bytes of an even number of hex digits (either case); `None` for anything else.
pub fn decode(text: &str) -> Option<Vec<u8>> {
    fn nibble(digit: u8) -> Option<u8> {
        char::from(digit).to_digit(16).and_then(|n| u8::try_from(n).ok())
    }
    if !text.len().is_multiple_of(2) {
        return None;
    }
    text.as_bytes().chunks_exact(2).map(|pair| Some(nibble(pair[0])? << 4 | nibble(pair[1])?)).collect()
}

/// Exactly 32 bytes as 64 hex digits (a hash or an Ed25519 public key).
pub fn decode32(text: &str) -> Option<[u8; 32]> {
    decode(text).and_then(|bytes| <[u8; 32]>::try_from(bytes).ok())
}
