//! The pinger: pings Redis every second for `event_worker_redis_up`, /readyz and the health's
//! `redis_error`, and logs when Redis stops answering (with the cause in plain words, again at
//! most once a minute while it lasts) and when it answers again.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use prometheus::IntGauge;
use tracing::{error, info};

use crate::redis::store::{RedisErrorKind, Store};
use crate::worker::health::Health;
use crate::worker::role::Role;
use crate::worker::run::{RepeatedError, set_redis_error};

/// The ping role and what it touches.
pub struct Pinger {
    /// Redis.
    pub store: Store,
    /// `redis_up{env}`.
    pub gauge: IntGauge,
    /// Where `redis_up` (for /readyz) and `redis_error` are kept.
    pub health: Arc<Health>,
    /// When the current failure was last logged.
    pub said: RepeatedError,
}

impl Role for Pinger {
    fn schedule(&self) -> tokio::time::Interval {
        tokio::time::interval(Duration::from_secs(1))
    }

    async fn tick(&mut self) {
        let result = self.store.ping(Duration::from_secs(2)).await;
        if self.store.is_cluster() {
            let facts = self.store.cluster_facts().await;
            *self
                .health
                .cluster
                .lock()
                .unwrap_or_else(|p| p.into_inner()) = Some(facts);
        }
        let up = result.is_ok();
        self.gauge.set(i64::from(up));
        self.health.redis_up.store(up, Ordering::Relaxed);
        match result {
            Ok(_) => {
                set_redis_error(&self.health, None);
                if self.said.failing() {
                    info!("Redis answers again");
                    self.said.clear();
                }
            }
            Err(ping) => {
                // fred's last connection error says why (refused, unresolvable, password); a
                // ping timeout while reconnecting does not replace a known cause.
                let known = self.health.redis_error.lock().ok().and_then(|e| e.clone());
                let text = match (self.store.connection_error(), known) {
                    (Some(e), _) => e.to_string(),
                    (None, Some(known)) if ping.kind == RedisErrorKind::Timeout => known,
                    (None, _) => ping.to_string(),
                };
                // Down is one incident however its cause is worded: logged once a minute.
                if self.said.should_log("") {
                    error!("Redis stopped answering: {text}");
                }
                set_redis_error(&self.health, Some(text));
            }
        }
    }
}
