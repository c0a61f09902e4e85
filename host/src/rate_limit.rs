//! A token bucket that holds a stream of bytes to `system.backups.write_limit` (compressed
//! bytes written by a backup, read by a restore), as Wings'
//! `juju/ratelimit` does: the rate per second is also the burst.

use std::time::{Duration, Instant};

/// Limits bytes per second by sleeping the calling (blocking) thread.
pub struct RateLimiter {
    bytes_per_second: f64,
    available: f64,
    last_refill: Instant,
}

impl RateLimiter {
    /// A limiter at `bytes_per_second`, starting with a full bucket.
    pub fn new(bytes_per_second: u64) -> Self {
        Self {
            bytes_per_second: bytes_per_second as f64,
            available: bytes_per_second as f64,
            last_refill: Instant::now(),
        }
    }

    /// Takes `bytes` from the bucket, sleeping until the rate allows it.
    pub fn take(&mut self, bytes: usize) {
        let wait = self.take_at(bytes, Instant::now());
        if !wait.is_zero() {
            std::thread::sleep(wait);
        }
    }

    /// Takes `bytes` from the bucket at `now` and returns how long the caller must wait
    /// before going on: the arithmetic of [`RateLimiter::take`], with the clock given.
    fn take_at(&mut self, bytes: usize, now: Instant) -> Duration {
        let refill = now.duration_since(self.last_refill).as_secs_f64() * self.bytes_per_second;
        self.available = (self.available + refill).min(self.bytes_per_second);
        self.last_refill = now;
        self.available -= bytes as f64;
        if self.available < 0.0 {
            Duration::from_secs_f64(-self.available / self.bytes_per_second)
        } else {
            Duration::ZERO
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RATE: u64 = 1_000_000;

    #[test]
    fn a_full_bucket_is_one_second_of_bytes_then_the_rate_holds() {
        let start = Instant::now();
        let mut limiter = RateLimiter::new(RATE);
        limiter.last_refill = start;
        // The first second's worth goes at once (the burst).
        assert_eq!(limiter.take_at(1_000_000, start), Duration::ZERO);
        // Half a second's worth more must wait half a second.
        assert_eq!(limiter.take_at(500_000, start), Duration::from_millis(500));
        // Keeping to the rate afterwards never waits longer than the debt.
        let later = start + Duration::from_millis(1500);
        assert_eq!(limiter.take_at(1_000_000, later), Duration::ZERO);
    }

    #[test]
    fn idle_time_refills_no_more_than_one_second_of_bytes() {
        let start = Instant::now();
        let mut limiter = RateLimiter::new(RATE);
        limiter.last_refill = start;
        assert_eq!(limiter.take_at(1_000_000, start), Duration::ZERO);
        // Ten idle seconds refill the bucket only to its size: 1.5 s of bytes wait 0.5 s.
        let wait = limiter.take_at(1_500_000, start + Duration::from_secs(10));
        assert_eq!(wait, Duration::from_millis(500));
    }
}
