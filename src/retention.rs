//! DLQ retention: trims `events:<env>:dlq` only by the explicit policy (`dlq_max_len`,
//! `dlq_max_age`), exactly, so every trimmed entry is counted in
//! `event_worker_dlq_trimmed_total` and logged. Without a policy the DLQ is never trimmed.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::shared::Shared;
use crate::store::StoreError;
use crate::timeutil::now_ms;

/// How often the policy is applied.
const EVERY: Duration = Duration::from_secs(30);

/// Applies the policy once; returns how many entries were trimmed.
///
/// # Errors
/// Redis errors.
pub async fn trim_once(shared: &Shared) -> Result<u64, StoreError> {
    let dlq = shared.keys.dlq();
    let mut trimmed = 0;
    if let Some(max_len) = shared.cfg.dlq_max_len {
        trimmed += shared
            .store
            .xtrim(&dlq, "MAXLEN", &max_len.to_string(), false)
            .await?;
    }
    if let Some(max_age) = shared.cfg.dlq_max_age {
        let cutoff = now_ms().saturating_sub(max_age.as_millis() as u64);
        trimmed += shared
            .store
            .xtrim(&dlq, "MINID", &format!("{cutoff}-0"), false)
            .await?;
    }
    if trimmed > 0 {
        shared
            .metrics
            .dlq_trimmed_total
            .with_label_values(&[shared.env()])
            .inc_by(trimmed);
        warn!(
            trimmed,
            "DLQ entries removed by the retention policy (dlq_max_len / dlq_max_age)"
        );
    }
    Ok(trimmed)
}

/// Runs until `stop` when a policy is configured.
pub async fn run(shared: Arc<Shared>, stop: CancellationToken) {
    if shared.cfg.dlq_max_len.is_none() && shared.cfg.dlq_max_age.is_none() {
        return;
    }
    let mut tick = tokio::time::interval(EVERY);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.cancelled() => return,
        }
        if let Err(e) = trim_once(&shared).await {
            warn!(error = %e, "DLQ retention pass failed");
        }
    }
}
