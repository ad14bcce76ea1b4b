//! Bounded retries with exponential back-off and full jitter, the same for every cloud.

use crate::storage::{Op, StorageError};
use std::sync::Mutex;
use std::time::Duration;

/// How often and how patiently to try again.
#[derive(Clone, Debug)]
pub struct RetryPolicy {
    /// Retries after the first attempt (`WALG_S3_MAX_RETRIES` and its cousins).
    pub max_retries: u32,
    /// Shortest back-off when throttled (`S3_MIN_THROTTLING_RETRY_DELAY`).
    pub min_throttle_delay: Duration,
    /// Longest back-off when throttled (`S3_MAX_THROTTLING_RETRY_DELAY`).
    pub max_throttle_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_retries: 15,
            min_throttle_delay: Duration::from_millis(500),
            max_throttle_delay: Duration::from_secs(300),
        }
    }
}

/// Runs attempts under a [`RetryPolicy`].
#[derive(Debug)]
pub struct Retrier {
    /// The policy.
    pub policy: RetryPolicy,
    jitter: Mutex<u64>,
}

impl Retrier {
    /// A retrier whose jitter is seeded from the clock and the process id, so that processes
    /// started together (an archiver's backlog) do not retry in step.
    pub fn new(policy: RetryPolicy) -> Retrier {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1)
            ^ u64::from(std::process::id()) << 32;
        Retrier {
            policy,
            jitter: Mutex::new(seed | 1),
        }
    }

    /// Runs `attempt` until it succeeds, fails permanently, or retries run out.
    pub fn run<T>(
        &self,
        op: Op,
        attempt: &mut dyn FnMut() -> Result<T, StorageError>,
    ) -> Result<T, StorageError> {
        let max = self.policy.max_retries;
        let mut n = 0u32;
        loop {
            match attempt() {
                Ok(v) => return Ok(v),
                Err(e) if e.is_retryable() && n < max => {
                    let delay = self.backoff(n, e.is_throttle());
                    crate::warn!(
                        "{e}; retry {} of {max} ({op}) in {} ms",
                        n + 1,
                        delay.as_millis()
                    );
                    std::thread::sleep(delay);
                    n += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Exponential back-off with full jitter: 100 ms doubling up to 5 s, or the throttling
    /// bounds when the server asked us to slow down.
    pub fn backoff(&self, attempt: u32, throttled: bool) -> Duration {
        let (base, cap) = if throttled {
            (
                self.policy.min_throttle_delay,
                self.policy.max_throttle_delay.min(Duration::from_secs(60)),
            )
        } else {
            (Duration::from_millis(100), Duration::from_secs(5))
        };
        let ceiling = base
            .saturating_mul(1u32 << attempt.min(16))
            .min(cap)
            .max(base);
        let r = {
            let mut s = self.jitter.lock().unwrap_or_else(|p| p.into_inner());
            *s ^= *s << 13;
            *s ^= *s >> 7;
            *s ^= *s << 17;
            *s
        };
        let span = ceiling.as_millis().saturating_sub(base.as_millis() / 2) as u64;
        Duration::from_millis(base.as_millis() as u64 / 2 + r % span.max(1))
    }
}
