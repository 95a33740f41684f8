//! Wall-clock time for entries and deadlines.
//!
//! Entries carry the hub's time in milliseconds since the Unix epoch. One
//! function keeps the conversion, and its failure mode, in one place. Handover
//! deadlines run on a [`Clock`] that tests can move forward, so that a test of
//! a five-working-day deadline takes milliseconds, not a week.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch; a clock before 1970 reads as 0.
pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// The time deadlines are measured against: the system clock plus an offset
/// that only tests set.
#[derive(Debug, Clone, Default)]
pub struct Clock {
    ahead_ms: Arc<AtomicU64>,
}

impl Clock {
    /// The system clock.
    pub fn system() -> Self {
        Self::default()
    }

    /// The current time, ms since the Unix epoch.
    pub fn now_ms(&self) -> u64 {
        now_ms() + self.ahead_ms.load(Ordering::SeqCst)
    }

    /// Moves this clock (and its clones) forward.
    pub fn advance(&self, ms: u64) {
        self.ahead_ms.fetch_add(ms, Ordering::SeqCst);
    }
}

/// A `YYYY-MM-DD` date as days since 1970-01-01.
pub fn parse_date(text: &str) -> Result<u64, String> {
    let parts: Vec<i64> =
        text.split('-').map(str::parse).collect::<Result<_, _>>().map_err(|_| format!("{text}: not YYYY-MM-DD"))?;
    let [y, m, d] = parts[..] else { return Err(format!("{text}: not YYYY-MM-DD")) };
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) || y < 1970 {
        return Err(format!("{text}: not a date"));
    }
    wire::calendar::days_from_civil(y, m, d).map(|days| days as u64).ok_or_else(|| format!("{text}: not a date"))
}
