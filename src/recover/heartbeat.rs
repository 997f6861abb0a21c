//! The heartbeater is responsible for this consumer's liveness key
//! `events:<env>:heartbeat:<group>:<consumer>` and for keeping the idle time of entries
//! still being handled low, so the visibility-timeout backstop never steals work from a
//! live but slow handler. Both are refreshed every [`refresh_period`]: a third of the
//! shorter of `heartbeat_ttl` and `visibility_timeout`; entries in flight for half a period
//! are touched at each refresh, so none is idle for more than half of `visibility_timeout`
//! (plus a Redis round trip), whatever the two settings are.

use std::sync::Arc;
use std::time::Duration;

use prometheus::IntCounter;
use tracing::warn;

use crate::consume::in_flight::InFlight;
use crate::model::time::{now_ms, rfc3339};
use crate::redis::store::{Store, StoreError};
use crate::worker::role::{self, Role};

/// When this process first beat (epoch ms): the `started` of its heartbeats.
static STARTED_MS: std::sync::LazyLock<u64> = std::sync::LazyLock::new(now_ms);

/// Shortest period between two refreshes (heartbeat key and entries in flight).
pub const MIN_REFRESH: Duration = Duration::from_millis(100);

/// How often the heartbeat key and the idle time of entries in flight are refreshed: a
/// third of the shorter of `heartbeat_ttl` and `visibility_timeout`, at least
/// [`MIN_REFRESH`].
pub fn refresh_period(heartbeat_ttl: Duration, visibility_timeout: Duration) -> Duration {
    (heartbeat_ttl.min(visibility_timeout) / 3).max(MIN_REFRESH)
}

/// Age in flight from which an entry is touched at each refresh: half a [`refresh_period`],
/// at least [`MIN_REFRESH`]. The oldest idle time is then this plus one period, at most half
/// of `visibility_timeout` when that is 600 ms or more (config refuses less than 1 s).
pub fn touch_after(heartbeat_ttl: Duration, visibility_timeout: Duration) -> Duration {
    (refresh_period(heartbeat_ttl, visibility_timeout) / 2).max(MIN_REFRESH)
}

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
    /// `visibility_timeout`: with `ttl`, sets how often and from what age entries in
    /// flight are touched ([`refresh_period`], [`touch_after`]).
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
        let value = serde_json::json!({
            "pid": std::process::id(),
            "version": env!("CARGO_PKG_VERSION"),
            "at": rfc3339(now_ms()),
            "host": hostname::get().ok().and_then(|h| h.into_string().ok()),
            "started": rfc3339(*STARTED_MS),
        })
        .to_string();
        self.store.set_heartbeat(&self.key, &value, self.ttl).await
    }

    async fn touch_long_runners(&self) -> Result<(), StoreError> {
        let by_stream = self
            .in_flight
            .older_than(touch_after(self.ttl, self.visibility_timeout));
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
        role::delayed(refresh_period(self.ttl, self.visibility_timeout))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refresh_follows_the_shorter_of_ttl_and_visibility_timeout() {
        let s = Duration::from_secs;
        let ms = Duration::from_millis;
        let whole_ms = |d: Duration| d.as_millis();
        assert_eq!(whole_ms(refresh_period(s(10), s(60))), 3333);
        assert_eq!(whole_ms(refresh_period(s(10), s(2))), 666);
        assert_eq!(whole_ms(refresh_period(s(30), s(2))), 666);
        assert_eq!(refresh_period(s(3), s(10)), s(1));
        assert_eq!(refresh_period(ms(300), s(1)), MIN_REFRESH);
        assert_eq!(whole_ms(touch_after(s(10), s(2))), 333);
        assert_eq!(touch_after(ms(300), s(1)), MIN_REFRESH);
        // The oldest an entry in flight gets before a refresh touches it: old enough to
        // qualify, plus one period; that leaves at least half the timeout to spare.
        for (ttl, vt) in [(s(10), s(2)), (s(30), s(1)), (s(3), s(10)), (ms(300), s(1))] {
            let worst = touch_after(ttl, vt) + refresh_period(ttl, vt);
            assert!(worst * 2 <= vt + ms(2), "{ttl:?} {vt:?}: {worst:?}");
        }
    }
}
