//! A token bucket that limits how many frames one connection may send.
//!
//! The bucket refills at the sustained rate and holds at most the burst, so a
//! client may catch up after a quiet spell but cannot flood the hub. Frames over
//! the limit are answered with a typed `rate_limited` error and not processed.

use std::time::{Duration, Instant};

/// A per-connection token bucket.
#[derive(Debug)]
pub struct TokenBucket {
    rate_per_sec: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket refilling at `rate_per_sec`, holding at most `burst`.
    pub fn new(rate_per_sec: u32, burst: u32) -> Self {
        Self { rate_per_sec: rate_per_sec as f64, burst: burst as f64, tokens: burst as f64, last: Instant::now() }
    }

    /// A full bucket of `per_minute` tokens, refilling over a minute.
    pub fn per_minute(per_minute: u32) -> Self {
        let burst = per_minute.max(1) as f64;
        Self { rate_per_sec: burst / 60.0, burst, tokens: burst, last: Instant::now() }
    }

    /// Takes one token at `now`, or says how long until one is available.
    pub fn take_at(&mut self, now: Instant) -> Result<(), Duration> {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate_per_sec).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - self.tokens) / self.rate_per_sec))
        }
    }

    /// Takes one token now.
    pub fn take(&mut self) -> Result<(), Duration> {
        self.take_at(Instant::now())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allows_the_burst_then_the_rate() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(10, 20);
        bucket.last = start;
        for _ in 0..20 {
            assert!(bucket.take_at(start).is_ok());
        }
        let wait = bucket.take_at(start).unwrap_err();
        assert!(wait > Duration::from_millis(90) && wait <= Duration::from_millis(100), "{wait:?}");
        assert!(bucket.take_at(start + Duration::from_millis(100)).is_ok());
        assert!(bucket.take_at(start + Duration::from_millis(100)).is_err());
    }

    #[test]
    fn never_holds_more_than_the_burst() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(10, 5);
        bucket.last = start;
        let later = start + Duration::from_secs(3600);
        for _ in 0..5 {
            assert!(bucket.take_at(later).is_ok());
        }
        assert!(bucket.take_at(later).is_err());
    }
}
