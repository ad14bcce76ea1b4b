//! WAL-G's rate limits (`WALG_DISK_RATE_LIMIT`, `WALG_NETWORK_RATE_LIMIT`): a token bucket
//! shared by every thread that moves the limited bytes.
//!
//! A backup of a busy primary must not take the disk or the uplink from PostgreSQL. Like
//! WAL-G's, the bucket holds one second of the rate plus 64 KiB, and a read that takes more
//! than the bucket holds runs into debt that the next reads wait off, so the average over
//! any stretch longer than a second is the rate, however large the reads. `--turbo` turns
//! the limits off, as in WAL-G.

use std::io::{self, Read};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A shared budget of bytes per second.
#[derive(Debug)]
pub struct RateLimit {
    rate: f64,
    burst: f64,
    state: Mutex<(f64, Instant)>,
}

impl RateLimit {
    /// A bucket of `bytes_per_second`, full at the start.
    pub fn new(bytes_per_second: u64) -> RateLimit {
        let rate = bytes_per_second.max(1) as f64;
        let burst = rate + 65536.0;
        RateLimit {
            rate,
            burst,
            state: Mutex::new((burst, Instant::now())),
        }
    }

    /// Takes `n` bytes' worth, waiting while the bucket is in debt.
    pub fn take(&self, n: usize) {
        let wait = {
            let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
            let now = Instant::now();
            let refill = now.duration_since(s.1).as_secs_f64() * self.rate;
            s.0 = (s.0 + refill).min(self.burst) - n as f64;
            s.1 = now;
            if s.0 < 0.0 { -s.0 / self.rate } else { 0.0 }
        };
        if wait > 0.0 {
            std::thread::sleep(Duration::from_secs_f64(wait));
        }
    }
}

/// A reader whose bytes are paid from a [`RateLimit`] (when there is one).
pub struct Limited<'a, R> {
    inner: R,
    limit: Option<&'a RateLimit>,
}

impl<'a, R: Read> Limited<'a, R> {
    /// Wraps `inner`; `None` means no limit.
    pub fn new(inner: R, limit: Option<&'a RateLimit>) -> Self {
        Limited { inner, limit }
    }
}

impl<R: Read> Read for Limited<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Some(l) = self.limit {
            l.take(n);
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_the_average_rate() {
        // 2 MiB at 4 MiB/s: the first 4 MiB + 64 KiB are the bucket, so read 6 MiB and
        // expect about half a second for what the bucket did not hold.
        let limit = RateLimit::new(4 << 20);
        let data = vec![0u8; 6 << 20];
        let start = Instant::now();
        let mut r = Limited::new(&data[..], Some(&limit));
        let mut buf = vec![0u8; 256 << 10];
        while r.read(&mut buf).unwrap() > 0 {}
        let secs = start.elapsed().as_secs_f64();
        let expected = ((6 << 20) as f64 - (4 << 20) as f64 - 65536.0) / (4 << 20) as f64;
        assert!(
            secs > expected * 0.8 && secs < expected * 1.5 + 0.2,
            "{secs} vs {expected}"
        );
    }
}
