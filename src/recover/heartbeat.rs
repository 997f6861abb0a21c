//! The heartbeater is responsible for this consumer's liveness key
//! `events:<env>:heartbeat:<group>:<consumer>` (refreshed every third of `heartbeat_ttl`),
//! and for keeping the idle time of entries still being handled low, so the
//! visibility-timeout backstop never steals work from a live but slow handler.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::model::time::{now_ms, rfc3339};
use crate::redis::store::StoreError;
use crate::worker::shared::Shared;

/// Writes the heartbeat key once.
///
/// # Errors
/// Redis errors.
pub async fn beat(shared: &Shared) -> Result<(), StoreError> {
    let key = shared.keys.heartbeat(shared.group(), shared.consumer());
    let value = format!(
        "{{\"pid\":{},\"version\":\"{}\",\"at\":\"{}\"}}",
        std::process::id(),
        env!("CARGO_PKG_VERSION"),
        rfc3339(now_ms())
    );
    shared
        .store
        .set_heartbeat(&key, &value, shared.cfg.heartbeat_ttl)
        .await
}

/// Runs until `stop`; the caller deletes the key after a clean stop.
pub async fn run(shared: Arc<Shared>, stop: CancellationToken) {
    let mut tick = tokio::time::interval(shared.cfg.heartbeat_ttl / 3);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.cancelled() => return,
        }
        if let Err(e) = beat(&shared).await {
            shared
                .metrics
                .redis_errors_total
                .with_label_values(&[shared.env(), "heartbeat"])
                .inc();
            warn!(error = %e, "heartbeat failed");
        }
        if let Err(e) = touch_long_runners(&shared).await {
            warn!(error = %e, "refreshing idle time of long-running entries failed");
        }
    }
}

async fn touch_long_runners(shared: &Shared) -> Result<(), StoreError> {
    let threshold = shared.cfg.visibility_timeout / 3;
    let by_stream = shared
        .in_flight
        .older_than(threshold.max(Duration::from_millis(100)));
    for (stream, ids) in by_stream {
        for chunk in ids.chunks(500) {
            shared
                .store
                .touch(&stream, shared.group(), shared.consumer(), chunk)
                .await?;
        }
    }
    Ok(())
}
