//! CBOR encoding and decoding of frames.
//!
//! Decoding never panics on peer input: every failure becomes a [`DecodeError`]
//! that the receiver turns into a typed error frame.

use serde::{de::DeserializeOwned, Serialize};

/// Why a received frame could not be decoded.
#[derive(Debug, thiserror::Error)]
#[error("malformed frame: {0}")]
pub struct DecodeError(String);

/// Encodes a frame as CBOR.
pub fn encode<T: Serialize>(frame: &T) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    // Writing into a Vec cannot fail, and every frame type serialises.
    ciborium::into_writer(frame, &mut out).expect("CBOR encoding into a Vec is infallible");
    out
}

/// Decodes a CBOR frame, refusing trailing bytes.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, DecodeError> {
    let mut reader = bytes;
    let value = ciborium::from_reader(&mut reader).map_err(|e| DecodeError(e.to_string()))?;
    if !reader.is_empty() {
        return Err(DecodeError(format!("{} trailing bytes after the frame", reader.len())));
    }
    Ok(value)
}
