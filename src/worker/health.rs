//! Liveness and readiness facts ([`Health`]): set by the reader, the pinger, discovery, the
//! backlog sampler and the lifecycle; read by `/livez`, `/readyz` and `/api/events/health`.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use crate::config::HealthConfig;
use crate::model::time::now_ms;
use crate::worker::sampler::Samples;

/// Liveness and readiness facts for /livez, /readyz and health output.
#[derive(Default)]
pub struct Health {
    /// Last ping succeeded.
    pub redis_up: AtomicBool,
    /// Time (epoch ms) the consumer last completed a read.
    pub last_read_ms: AtomicU64,
    /// The worker finished its start-up (migrations, groups) and consumes.
    pub consuming: AtomicBool,
    /// `[health]`: the thresholds of the `degraded` reasons.
    pub thresholds: HealthConfig,
    /// Backlog samples (see `worker::sampler`), the baseline of growth reasons.
    pub samples: std::sync::Mutex<Samples>,
    /// Keys discovery could not consume (not streams, or past the stream cap), shown as
    /// warnings by `/api/events/health`.
    pub discovery: std::sync::Mutex<crate::recover::discovery::Issues>,
    /// The last Redis connection error in plain words; `None` once Redis answers.
    pub redis_error: std::sync::Mutex<Option<String>>,
    /// On a Redis Cluster, the last `redis.cluster` facts (state, masters, replicas, slots
    /// covered) the pinger read; `None` on a single node.
    pub cluster: std::sync::Mutex<Option<serde_json::Value>>,
    /// Writes Redis refused (OOM, READONLY, ...), recorded by the worker's `Store`.
    pub refusals: std::sync::Arc<crate::redis::refusals::Refusals>,
}

impl Health {
    /// Health facts judged against `thresholds`.
    pub fn new(thresholds: HealthConfig) -> Self {
        Health {
            thresholds,
            ..Default::default()
        }
    }

    /// Ready: Redis answers and the consumer has read within `window`, or Redis refused a
    /// write within `window` (OOM and the like stall every instance alike: taking this one out
    /// of service would not help).
    pub fn ready(&self, window: Duration) -> bool {
        self.redis_up.load(Ordering::Relaxed)
            && self.consuming.load(Ordering::Relaxed)
            && (now_ms().saturating_sub(self.last_read_ms.load(Ordering::Relaxed))
                <= window.as_millis() as u64
                || self.refusals.recent(window).is_some())
    }
}
