//! Retention. The DLQ is trimmed only by the explicit policy (`dlq_max_len`,
//! `dlq_max_age`), exactly, so every trimmed entry is counted in
//! `event_worker_dlq_trimmed_total` and logged; without a policy it is never trimmed.
//! Type streams are trimmed (`stream_retention`) only below what every group of the
//! stream has acknowledged and below each group's oldest pending entry, so trimming never
//! removes an event some group still has to process.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::model::time::now_ms;
use crate::redis::store::StoreError;
use crate::worker::shared::Shared;

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

/// An entry id as `(ms, seq)` for comparisons; malformed ids sort first (trim nothing).
fn parse_id(id: &str) -> (u64, u64) {
    let (ms, seq) = id.split_once('-').unwrap_or((id, "0"));
    (ms.parse().unwrap_or(0), seq.parse().unwrap_or(0))
}

/// The id below which every group of a stream is done: the smallest of each group's oldest
/// pending entry (or, with nothing pending, its last delivered entry) and the age cutoff.
pub fn safe_trim_id(cutoff: &str, group_bounds: &[String]) -> String {
    group_bounds
        .iter()
        .map(String::as_str)
        .chain(std::iter::once(cutoff))
        .min_by_key(|id| parse_id(id))
        .unwrap_or("0-0")
        .to_string()
}

/// Trims acknowledged entries older than `stream_retention` from the consumed type
/// streams; returns how many were trimmed (MINID `~`, so a little less than allowed).
///
/// # Errors
/// Redis errors.
pub async fn trim_streams_once(shared: &Shared) -> Result<u64, StoreError> {
    let Some(keep) = shared.cfg.stream_retention else {
        return Ok(0);
    };
    let cutoff = format!("{}-0", now_ms().saturating_sub(keep.as_millis() as u64));
    let mut total = 0;
    for s in shared.streams().iter() {
        let groups = shared.store.groups(&s.key).await?;
        if groups.is_empty() {
            continue;
        }
        let mut bounds = Vec::new();
        for (name, info) in groups {
            match shared.store.oldest_pending(&s.key, &name).await? {
                Some(oldest) => bounds.push(oldest),
                None => bounds.push(info.last_delivered_id),
            }
        }
        let safe = safe_trim_id(&cutoff, &bounds);
        let trimmed = shared.store.xtrim(&s.key, "MINID", &safe, true).await?;
        if trimmed > 0 {
            shared
                .metrics
                .stream_trimmed_total
                .with_label_values(&[shared.env(), shared.type_label(&s.event_type)])
                .inc_by(trimmed);
            total += trimmed;
        }
    }
    Ok(total)
}

/// Runs until `stop` when a policy is configured.
pub async fn run(shared: Arc<Shared>, stop: CancellationToken) {
    let dlq_policy = shared.cfg.dlq_max_len.is_some() || shared.cfg.dlq_max_age.is_some();
    if !dlq_policy && shared.cfg.stream_retention.is_none() {
        return;
    }
    let mut tick = tokio::time::interval(EVERY);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.cancelled() => return,
        }
        if dlq_policy && let Err(e) = trim_once(&shared).await {
            warn!(error = %e, "DLQ retention pass failed");
        }
        if let Err(e) = trim_streams_once(&shared).await {
            warn!(error = %e, "stream retention pass failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::safe_trim_id;

    #[test]
    fn the_slowest_group_and_the_cutoff_bound_the_trim() {
        let b = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(safe_trim_id("100-0", &b(&["50-3", "70-0"])), "50-3");
        assert_eq!(safe_trim_id("10-0", &b(&["50-3", "70-0"])), "10-0");
        assert_eq!(safe_trim_id("100-0", &b(&["0-0", "70-0"])), "0-0");
        assert_eq!(safe_trim_id("100-0", &b(&["99-9", "99-10"])), "99-9");
    }
}
