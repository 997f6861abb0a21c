//! The heartbeater is responsible for this consumer's liveness key
//! `events:<env>:heartbeat:<group>:<consumer>` (refreshed every third of `heartbeat_ttl`),
//! and for keeping the idle time of entries still being handled low, so the
//! visibility-timeout backstop never steals work from a live but slow handler.

use std::sync::Arc;
use std::time::Duration;

use prometheus::IntCounter;
use tracing::warn;

use crate::consume::in_flight::InFlight;
use crate::model::time::{now_ms, rfc3339};
use crate::redis::store::{Store, StoreError};
use crate::worker::role::{self, Role};

/// The heartbeat role and what it touches.
pub struct Heartbeat {
    /// Redis.
    pub store: Store,
    /// `events:<env>:heartbeat:<group>:<consumer>`.
    pub key: String,
    /// Time to live of the key (`heartbeat_ttl`).
    pub ttl: Duration,
    /// The group, for XCLAIM of long runners.
    pub group: String,
    /// This consumer.
    pub consumer: String,
    /// `visibility_timeout`: entries in flight longer than a third of it are touched.
    pub visibility_timeout: Duration,
    /// Entries this consumer is handling.
    pub in_flight: Arc<InFlight>,
    /// `redis_errors_total{op="heartbeat"}`.
    pub errors: IntCounter,
}

impl Heartbeat {
    /// Writes the heartbeat key once.
    ///
    /// # Errors
    /// Redis errors.
    pub async fn beat(&self) -> Result<(), StoreError> {
        let value = format!(
            "{{\"pid\":{},\"version\":\"{}\",\"at\":\"{}\"}}",
            std::process::id(),
            env!("CARGO_PKG_VERSION"),
            rfc3339(now_ms())
        );
        self.store.set_heartbeat(&self.key, &value, self.ttl).await
    }

    async fn touch_long_runners(&self) -> Result<(), StoreError> {
        let threshold = self.visibility_timeout / 3;
        let by_stream = self
            .in_flight
            .older_than(threshold.max(Duration::from_millis(100)));
        for (stream, ids) in by_stream {
            for chunk in ids.chunks(500) {
                self.store
                    .touch(&stream, &self.group, &self.consumer, chunk)
                    .await?;
            }
        }
        Ok(())
    }
}

impl Role for Heartbeat {
    fn schedule(&self) -> tokio::time::Interval {
        role::delayed(self.ttl / 3)
    }

    /// Beats, then refreshes long runners; the caller deletes the key after a clean stop.
    async fn tick(&mut self) {
        if let Err(e) = self.beat().await {
            self.errors.inc();
            warn!(error = %e, "heartbeat failed");
        }
        if let Err(e) = self.touch_long_runners().await {
            warn!(error = %e, "refreshing idle time of long-running entries failed");
        }
    }
}
