//! The push service of one instance: its configuration, the [`Hub`], and the Redis side once
//! connected. [`PushService::start`] connects (retrying until stopped) and runs the hub.

use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::config::{Config, PushConfig};
use crate::metrics::Metrics;
use crate::model::keys::Keys;
use crate::push::hub::Hub;
use crate::push::store::PushStore;
use crate::redis::store::Store;

/// Push on this instance.
pub struct PushService {
    /// `[push]`.
    pub config: PushConfig,
    /// The hub.
    pub hub: Arc<Hub>,
    /// Redis, once connected.
    pub store: OnceLock<PushStore>,
    /// Metric handles.
    pub metrics: Metrics,
    /// The env label.
    pub env: String,
    /// Fires when the instance stops: every push connection ends.
    pub stop: CancellationToken,
    /// The address of `push.listen` once bound.
    pub listener: OnceLock<std::net::SocketAddr>,
}

impl PushService {
    /// The Redis side of push, once connected.
    ///
    /// # Errors
    /// 503 (retry) until the first connection is made.
    pub fn connected_store(&self) -> Result<&PushStore, crate::http::api::ApiError> {
        self.store.get().ok_or_else(|| {
            crate::http::api::ApiError::unavailable("push is not connected to Redis yet; retry")
        })
    }

    /// Starts push for `cfg`: connects in the background (retrying every 1 s until `stop`),
    /// then runs the hub's read loop.
    pub fn start(cfg: &Config, metrics: &Metrics, stop: CancellationToken) -> Arc<PushService> {
        let env = cfg.env.clone();
        let cut = metrics
            .push_slow_disconnects_total
            .with_label_values(&[&env]);
        cut.inc_by(0);
        let hub = Arc::new(Hub::new(
            cfg.push.client_buffer,
            Box::new(move || cut.inc()),
        ));
        for t in ["sse", "ws"] {
            metrics
                .push_connections
                .with_label_values(&[&env, t])
                .set(0);
        }
        let service = Arc::new(PushService {
            config: cfg.push.clone(),
            hub,
            store: OnceLock::new(),
            metrics: metrics.clone(),
            env,
            stop: stop.clone(),
            listener: OnceLock::new(),
        });
        let (cfg, svc) = (cfg.clone(), service.clone());
        tokio::spawn(async move {
            let store = loop {
                let name = format!("{}:push", cfg.consumer);
                tokio::select! {
                    r = Store::connect(&cfg, &name) => match r {
                        Ok(s) => break s,
                        Err(e) => tracing::debug!(error = %e, "push: connecting to Redis"),
                    },
                    () = stop.cancelled() => return,
                }
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_secs(1)) => {}
                    () = stop.cancelled() => return,
                }
            };
            let store = PushStore::new(store, Keys::new(&cfg.env), &cfg.push);
            let _ = svc.store.set(store.clone());
            tokio::spawn(sample_devices(
                svc.clone(),
                store.clone(),
                cfg.push.device_scan_interval,
            ));
            svc.hub
                .clone()
                .run(store.clone(), cfg.push.replay_max, stop)
                .await;
            store.store.quit().await;
        });
        service
    }

    /// Push's part of health: the listener, whether the hub is subscribed, and whether this
    /// instance projects (`active`) or stands by (another holds the projector lease, or no
    /// rule projects).
    pub fn health(&self) -> serde_json::Value {
        let (clients, channels) = self.hub.counts();
        serde_json::json!({
            "hub_connected": self.hub.connected.load(Ordering::Relaxed),
            "projector": if self.metrics.push_projector_active.with_label_values(&[&self.env]).get() == 1 {
                "active"
            } else {
                "standby"
            },
            "listen": self.listener.get().map(|a| a.to_string()),
            "clients": clients,
            "channels": channels,
        })
    }
}

/// Samples the devices every `interval` (see [`PushStore::sample_devices`]) into the
/// devices-behind and oldest-unacknowledged gauges, until the instance stops.
async fn sample_devices(svc: Arc<PushService>, store: PushStore, interval: Duration) {
    let behind = svc
        .metrics
        .push_devices_behind
        .with_label_values(&[&svc.env]);
    let oldest = svc
        .metrics
        .push_oldest_unacked_age_seconds
        .with_label_values(&[&svc.env]);
    let mut tick = crate::worker::role::delayed(interval);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = svc.stop.cancelled() => return,
        }
        match store.sample_devices().await {
            Ok((b, age)) => {
                behind.set(b);
                oldest.set(age);
            }
            Err(e) => tracing::debug!(error = %e, "push: sampling devices"),
        }
    }
}
