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
        let now = Instant::now();
        let refill = now.duration_since(self.last_refill).as_secs_f64() * self.bytes_per_second;
        self.available = (self.available + refill).min(self.bytes_per_second);
        self.last_refill = now;
        self.available -= bytes as f64;
        if self.available < 0.0 {
            std::thread::sleep(Duration::from_secs_f64(
                -self.available / self.bytes_per_second,
            ));
        }
    }
}
