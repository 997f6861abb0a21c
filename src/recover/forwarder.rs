//! The scheduler is responsible for due retries: every `scheduler_interval` it moves the
//! group's due members of `events:<env>:retry:<group>` to `events:<env>:redeliver:<group>`
//! with one Lua script, so any number of instances can run it without double-moving.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::model::time::now_ms;
use crate::worker::shared::Shared;

/// Members moved per script call; a larger backlog is moved in several calls.
const BATCH: usize = 500;

/// Runs until `stop`.
pub async fn run(shared: Arc<Shared>, stop: CancellationToken) {
    let retry_key = shared.keys.retry(shared.group());
    let mut tick = tokio::time::interval(shared.cfg.scheduler_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_error_log: Option<Instant> = None;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.cancelled() => return,
        }
        for _ in 0..100 {
            match shared
                .store
                .forward_due(&retry_key, &shared.redeliver, now_ms(), BATCH)
                .await
            {
                Ok(moved) => {
                    if moved > 0 {
                        shared
                            .metrics
                            .retries_forwarded_total
                            .with_label_values(&[shared.env(), shared.group()])
                            .inc_by(moved);
                    }
                    if moved < BATCH as u64 {
                        break;
                    }
                }
                Err(e) => {
                    shared
                        .metrics
                        .redis_errors_total
                        .with_label_values(&[shared.env(), "schedule"])
                        .inc();
                    if last_error_log.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) {
                        warn!(error = %e, "moving due retries failed; will try again");
                        last_error_log = Some(Instant::now());
                    }
                    break;
                }
            }
        }
    }
}
