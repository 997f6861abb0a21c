//! The backlog sampler: every `health.window / 20` (at least 250 ms, at most 15 s) it reads
//! the group's backlog (DLQ depth, retry depth, total lag) into a small ring buffer kept in
//! [`crate::worker::health::Health`]. `/api/events/health` compares its own fresh reading
//! with the baseline the ring holds for `health.window` ago ([`Samples::baseline`]) to tell
//! "the DLQ grew" and "the lag grows" from a steady state.
//!
//! The ring holds [`CAPACITY`] samples, so it always covers more than one window; before a
//! whole window has passed (just after start) the oldest sample is the baseline, so growth
//! is measured since the start and a DLQ that was already full at start is not an alarm.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::debug;

use crate::ops::backlog::{Backlog, BacklogSource};
use crate::worker::health::Health;
use crate::worker::role::{self, Role};

/// Samples kept: 20 per window, plus room so the one a window old is always there.
pub const CAPACITY: usize = 32;

/// One backlog reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sample {
    /// When it was read.
    pub at: Instant,
    /// Entries in the DLQ.
    pub dlq_depth: u64,
    /// Members of the group's retry set.
    pub retry_depth: u64,
    /// The group's lag summed over its type streams (streams whose lag Redis cannot tell
    /// count 0).
    pub lag: u64,
}

impl Sample {
    /// The figures of `b`, read at `at`.
    pub fn of(b: &Backlog, at: Instant) -> Sample {
        Sample {
            at,
            dlq_depth: b.dlq_depth,
            retry_depth: b.retry_depth,
            lag: b.streams.iter().filter_map(|s| s.lag).sum(),
        }
    }
}

/// The ring buffer of samples, oldest first.
#[derive(Debug, Default)]
pub struct Samples {
    ring: VecDeque<Sample>,
}

impl Samples {
    /// Adds `s`, dropping the oldest past [`CAPACITY`].
    pub fn push(&mut self, s: Sample) {
        if self.ring.len() >= CAPACITY {
            self.ring.pop_front();
        }
        self.ring.push_back(s);
    }

    /// What `now` is compared with: the newest sample at least `window` old, else the oldest
    /// one (less than a window of history so far); `None` before the first sample.
    pub fn baseline(&self, now: Instant, window: Duration) -> Option<Sample> {
        self.ring
            .iter()
            .rev()
            .find(|s| now.saturating_duration_since(s.at) >= window)
            .or_else(|| self.ring.front())
            .copied()
    }
}

/// The sampling period for `window`: a twentieth of it, between 250 ms and 15 s.
pub fn period(window: Duration) -> Duration {
    (window / 20).clamp(Duration::from_millis(250), Duration::from_secs(15))
}

/// The sampler role.
pub struct Sampler {
    /// Where the backlog is read.
    pub source: BacklogSource,
    /// Where the samples are kept (and the window read).
    pub health: Arc<Health>,
}

impl Role for Sampler {
    fn schedule(&self) -> tokio::time::Interval {
        role::delayed(period(self.health.thresholds.window))
    }

    async fn tick(&mut self) {
        let read = tokio::time::timeout(Duration::from_secs(5), self.source.read()).await;
        match read {
            Ok(Ok(b)) => {
                if let Ok(mut s) = self.health.samples.lock() {
                    s.push(Sample::of(&b, Instant::now()));
                }
            }
            Ok(Err(e)) => debug!(error = %e, "backlog sample not taken"),
            Err(_) => debug!("backlog sample not taken: Redis did not answer in 5 s"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(base: Instant, secs: u64, dlq: u64) -> Sample {
        Sample {
            at: base + Duration::from_secs(secs),
            dlq_depth: dlq,
            retry_depth: 0,
            lag: 0,
        }
    }

    #[test]
    fn the_baseline_is_a_window_old_or_the_oldest() {
        let t0 = Instant::now();
        let mut s = Samples::default();
        assert_eq!(s.baseline(t0, Duration::from_secs(60)), None);
        for i in 0..10 {
            s.push(at(t0, i * 10, i));
        }
        let w = Duration::from_secs(60);
        // Samples at 0..90 s; at 95 s the newest one at least 60 s old is the one at 30 s.
        let now = t0 + Duration::from_secs(95);
        assert_eq!(s.baseline(now, w).map(|b| b.dlq_depth), Some(3));
        // Less than a window of history: the oldest.
        let now = t0 + Duration::from_secs(20);
        assert_eq!(s.baseline(now, w).map(|b| b.dlq_depth), Some(0));
        for i in 10..100 {
            s.push(at(t0, i * 10, i));
        }
        assert_eq!(s.ring.len(), CAPACITY);
    }

    #[test]
    fn the_period_is_bounded() {
        assert_eq!(period(Duration::from_secs(300)), Duration::from_secs(15));
        assert_eq!(period(Duration::from_secs(1)), Duration::from_millis(250));
        assert_eq!(period(Duration::from_secs(3600)), Duration::from_secs(15));
        assert_eq!(period(Duration::from_secs(60)), Duration::from_secs(3));
    }
}
