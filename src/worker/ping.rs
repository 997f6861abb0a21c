//! The pinger: pings Redis every second for `event_worker_redis_up` and /readyz, and logs
//! when Redis stops or starts answering.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use prometheus::IntGauge;
use tracing::{info, warn};

use crate::redis::store::Store;
use crate::worker::health::Health;
use crate::worker::role::Role;

/// The ping role and what it touches.
pub struct Pinger {
    /// Redis.
    pub store: Store,
    /// `redis_up{env}`.
    pub gauge: IntGauge,
    /// Where `redis_up` is kept for /readyz.
    pub health: Arc<Health>,
}

impl Role for Pinger {
    fn schedule(&self) -> tokio::time::Interval {
        tokio::time::interval(Duration::from_secs(1))
    }

    async fn tick(&mut self) {
        let up = self.store.ping(Duration::from_secs(2)).await.is_ok();
        self.gauge.set(i64::from(up));
        let was = self.health.redis_up.swap(up, Ordering::Relaxed);
        if was && !up {
            warn!("Redis stopped answering pings");
        } else if !was && up {
            info!("Redis answers again");
        }
    }
}
