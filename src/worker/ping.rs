//! The pinger: pings Redis every second for `event_worker_redis_up`, /readyz and the health's
//! `redis_error`, and logs when Redis stops answering (with the cause in plain words, again at
//! most once a minute while it lasts) and when it answers again.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use prometheus::IntGauge;
use tracing::{error, info, warn};

use crate::metrics::Metrics;
use crate::redis::cluster_watch::TopologyWatch;
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
    /// On a cluster: the topology changes seen since start (health's `topology_changes`).
    pub watch: TopologyWatch,
    /// The per-node and cluster metrics (`event_worker_redis_node_errors_total`,
    /// `event_worker_redis_cluster_*`) and the env label.
    pub metrics: (Metrics, String),
}

impl Role for Pinger {
    fn schedule(&self) -> tokio::time::Interval {
        tokio::time::interval(Duration::from_secs(1))
    }

    async fn tick(&mut self) {
        let result = self.store.ping(Duration::from_secs(2)).await;
        self.count_node_errors();
        // Starts at 0 (and stays 0 on a single node), for the dashboard.
        let (metrics, env) = &self.metrics;
        metrics
            .redis_cluster_topology_changes_total
            .with_label_values(&[env]);
        if self.store.is_cluster() {
            let facts = self.cluster_facts().await;
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

impl Pinger {
    /// `redis.cluster` for health: the facts, the changes seen, the cluster gauges updated; a
    /// warning logged once per topology change.
    async fn cluster_facts(&mut self) -> serde_json::Value {
        let (mut facts, topology) = self.store.cluster_snapshot().await;
        let (metrics, env) = &self.metrics;
        if let Some(t) = topology {
            metrics
                .redis_cluster_masters
                .with_label_values(&[env])
                .set(t.masters.len() as i64);
            if let Some(what) = self.watch.observe(t) {
                metrics
                    .redis_cluster_topology_changes_total
                    .with_label_values(&[env])
                    .inc();
                warn!(
                    "Redis Cluster topology changed: {what} (change {} since start; \
                     /api/events/health shows redis.cluster)",
                    self.watch.changes()
                );
            }
        }
        self.watch.annotate(&mut facts);
        facts
    }

    /// Brings `event_worker_redis_node_errors_total` up to the errors the store counted per
    /// node and kind.
    fn count_node_errors(&self) {
        let (metrics, env) = &self.metrics;
        for (node, kind, n) in self.store.node_errors() {
            let c = metrics
                .redis_node_errors_total
                .with_label_values(&[env, &node, kind]);
            c.inc_by(n.saturating_sub(c.get()));
        }
    }
}
