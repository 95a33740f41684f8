//! Wall-clock time for entries.
//!
//! Entries carry the hub's time in milliseconds since the Unix epoch. One
//! function keeps the conversion, and its failure mode, in one place.

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch; a clock before 1970 reads as 0.
pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}
