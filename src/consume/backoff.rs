//! The retry policy: how long to wait before retry number `n`.
//!
//! Delays come from the `backoff` crate's `ExponentialBackoff` (growth, jitter) and are then
//! capped at `max_backoff`. `backoff` is flagged unmaintained (RUSTSEC-2025-0012); it is used
//! only here, so swapping it for `backon` touches this file alone.

use std::time::Duration;

use backoff::ExponentialBackoffBuilder;
use backoff::backoff::Backoff;

use crate::config::RetryConfig;

/// Computes retry delays from `[retry]`.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    config: RetryConfig,
}

impl RetryPolicy {
    /// A policy for `config`.
    pub fn new(config: RetryConfig) -> Self {
        RetryPolicy { config }
    }

    /// Total handler runs allowed, the first included.
    pub fn max_attempts(&self) -> u32 {
        self.config.max_attempts
    }

    /// Delay before retry number `retry` (1 = the first retry, after the first failed run):
    /// `initial_backoff * multiplier^(retry-1)`, randomised by +/- `jitter`, at most
    /// `max_backoff`.
    pub fn delay(&self, retry: u32) -> Duration {
        let c = &self.config;
        let mut b = ExponentialBackoffBuilder::new()
            .with_initial_interval(c.initial_backoff)
            .with_multiplier(c.multiplier)
            .with_randomization_factor(c.jitter)
            .with_max_interval(c.max_backoff)
            .with_max_elapsed_time(None)
            .build();
        let mut delay = c.initial_backoff;
        for _ in 0..retry.clamp(1, 64) {
            delay = b.next_backoff().unwrap_or(c.max_backoff);
        }
        delay.min(c.max_backoff)
    }

    /// The delay to use when a handler also asked for `retry_after`: never earlier than the
    /// handler asked, nor than the backoff, and at most one hour.
    pub fn delay_honouring(&self, retry: u32, retry_after: Option<Duration>) -> Duration {
        let backoff = self.delay(retry);
        match retry_after {
            Some(after) => backoff.max(after.min(Duration::from_secs(3600))),
            None => backoff,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(jitter: f64) -> RetryPolicy {
        RetryPolicy::new(RetryConfig {
            max_attempts: 10,
            initial_backoff: Duration::from_millis(100),
            multiplier: 2.0,
            max_backoff: Duration::from_secs(1),
            jitter,
        })
    }

    #[test]
    fn delays_grow_exponentially_and_cap() {
        let p = policy(0.0);
        let ms: Vec<u128> = (1..=6).map(|n| p.delay(n).as_millis()).collect();
        assert_eq!(ms, vec![100, 200, 400, 800, 1000, 1000]);
    }

    #[test]
    fn jitter_stays_within_its_fraction_and_the_cap() {
        let p = policy(0.2);
        for _ in 0..200 {
            let d = p.delay(2).as_millis();
            assert!((160..=240).contains(&d), "{d}");
            assert!(p.delay(10) <= Duration::from_secs(1));
        }
    }

    #[test]
    fn retry_after_is_honoured_but_bounded() {
        let p = policy(0.0);
        assert_eq!(
            p.delay_honouring(1, Some(Duration::from_secs(5))),
            Duration::from_secs(5)
        );
        assert_eq!(
            p.delay_honouring(1, Some(Duration::from_millis(1))),
            Duration::from_millis(100)
        );
        assert_eq!(
            p.delay_honouring(1, Some(Duration::from_secs(99_999))),
            Duration::from_secs(3600)
        );
    }
}
