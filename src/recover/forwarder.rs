//! The scheduler is responsible for due retries: every `scheduler_interval` it moves the
//! group's due members of `events:<env>:retry:<group>` to `events:<env>:redeliver:<group>`
//! with one Lua script, so any number of instances can run it without double-moving. "Due" is
//! read on Redis's clock inside the script (the clock the retries were scheduled on), so a
//! worker whose own clock is off forwards nothing early or late.

use std::time::{Duration, Instant};

use prometheus::IntCounter;
use tracing::warn;

use crate::redis::store::Store;
use crate::worker::role::{self, Role};

/// Members moved per script call; a larger backlog is moved in several calls.
const BATCH: usize = 500;

/// The scheduler role and what it touches.
pub struct Forwarder {
    /// Redis.
    pub store: Store,
    /// `events:<env>:retry:<group>`.
    pub retry_key: String,
    /// `events:<env>:redeliver:<group>`.
    pub redeliver: String,
    /// `scheduler_interval`.
    pub interval: Duration,
    /// `retries_forwarded_total{env,group}`.
    pub forwarded: IntCounter,
    /// `redis_errors_total{op="schedule"}`.
    pub errors: IntCounter,
    /// When a failure was last logged (failures are logged at most every 10 s).
    pub last_error_log: Option<Instant>,
}

impl Role for Forwarder {
    fn schedule(&self) -> tokio::time::Interval {
        role::delayed(self.interval)
    }

    /// Moves every due member, [`BATCH`] at a time (at most 100 calls per pass).
    async fn tick(&mut self) {
        for _ in 0..100 {
            match self
                .store
                .forward_due(&self.retry_key, &self.redeliver, BATCH)
                .await
            {
                Ok(moved) => {
                    if moved > 0 {
                        self.forwarded.inc_by(moved);
                    }
                    if moved < BATCH as u64 {
                        break;
                    }
                }
                Err(e) => {
                    self.errors.inc();
                    if self
                        .last_error_log
                        .is_none_or(|t| t.elapsed() > Duration::from_secs(10))
                    {
                        warn!(error = %e, "moving due retries failed; will try again");
                        self.last_error_log = Some(Instant::now());
                    }
                    break;
                }
            }
        }
    }
}
