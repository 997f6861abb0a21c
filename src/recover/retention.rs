//! Retention. The DLQ is trimmed only by the explicit policy (`dlq_max_len`,
//! `dlq_max_age`), exactly, so every trimmed entry is counted in
//! `event_worker_dlq_trimmed_total` and logged; without a policy it is never trimmed.
//! Type streams are trimmed (`stream_retention`) only below what every group of the
//! stream has acknowledged and below each group's oldest pending entry, so trimming never
//! removes an event some group still has to process.

use std::time::Duration;

use prometheus::{IntCounter, IntCounterVec};
use tracing::warn;

use crate::config::Config;
use crate::consume::streams::StreamSet;
use crate::model::time::now_ms;
use crate::redis::store::{Store, StoreError};
use crate::worker::role::Role;

/// How often the policy is applied.
const EVERY: Duration = Duration::from_secs(30);

/// The retention role and what it touches.
pub struct Retention {
    /// Redis.
    pub store: Store,
    /// `events:<env>:dlq`.
    pub dlq: String,
    /// `dlq_max_len`.
    pub dlq_max_len: Option<u64>,
    /// `dlq_max_age`.
    pub dlq_max_age: Option<Duration>,
    /// `stream_retention`.
    pub stream_retention: Option<Duration>,
    /// The consumed type streams.
    pub streams: StreamSet,
    /// The env label.
    pub env: String,
    /// `dlq_trimmed_total{env}`.
    pub dlq_trimmed: IntCounter,
    /// `stream_trimmed_total{env,type}`.
    pub stream_trimmed: IntCounterVec,
}

impl Retention {
    /// The role for `cfg`, or `None` when no policy is configured (nothing to run).
    pub fn new(
        cfg: &Config,
        store: Store,
        keys: &crate::model::keys::Keys,
        streams: StreamSet,
        metrics: &crate::metrics::Metrics,
    ) -> Option<Retention> {
        let any = cfg.dlq_max_len.is_some()
            || cfg.dlq_max_age.is_some()
            || cfg.stream_retention.is_some();
        any.then(|| Retention {
            store,
            dlq: keys.dlq(),
            dlq_max_len: cfg.dlq_max_len,
            dlq_max_age: cfg.dlq_max_age,
            stream_retention: cfg.stream_retention,
            streams,
            env: cfg.env.clone(),
            dlq_trimmed: metrics.dlq_trimmed_total.with_label_values(&[&cfg.env]),
            stream_trimmed: metrics.stream_trimmed_total.clone(),
        })
    }

    fn dlq_policy(&self) -> bool {
        self.dlq_max_len.is_some() || self.dlq_max_age.is_some()
    }

    /// Applies the DLQ policy once; returns how many entries were trimmed.
    ///
    /// # Errors
    /// Redis errors.
    pub async fn trim_once(&self) -> Result<u64, StoreError> {
        let mut trimmed = 0;
        if let Some(max_len) = self.dlq_max_len {
            trimmed += self
                .store
                .xtrim(&self.dlq, "MAXLEN", &max_len.to_string(), false)
                .await?;
        }
        if let Some(max_age) = self.dlq_max_age {
            let cutoff = now_ms().saturating_sub(max_age.as_millis() as u64);
            trimmed += self
                .store
                .xtrim(&self.dlq, "MINID", &format!("{cutoff}-0"), false)
                .await?;
        }
        if trimmed > 0 {
            self.dlq_trimmed.inc_by(trimmed);
            warn!(
                trimmed,
                "DLQ entries removed by the retention policy (dlq_max_len / dlq_max_age)"
            );
        }
        Ok(trimmed)
    }

    /// Trims acknowledged entries older than `stream_retention` from the consumed type
    /// streams; returns how many were trimmed (MINID `~`, so a little less than allowed).
    ///
    /// # Errors
    /// Redis errors.
    pub async fn trim_streams_once(&self) -> Result<u64, StoreError> {
        let Some(keep) = self.stream_retention else {
            return Ok(0);
        };
        let cutoff = format!("{}-0", now_ms().saturating_sub(keep.as_millis() as u64));
        let mut total = 0;
        let streams = self.streams.snapshot();
        for s in streams.iter() {
            let groups = self.store.groups(&s.key).await?;
            if groups.is_empty() {
                continue;
            }
            let mut bounds = Vec::new();
            for (name, info) in groups {
                match self.store.oldest_pending(&s.key, &name).await? {
                    Some(oldest) => bounds.push(oldest),
                    None => bounds.push(info.last_delivered_id),
                }
            }
            let safe = safe_trim_id(&cutoff, &bounds);
            let trimmed = self.store.xtrim(&s.key, "MINID", &safe, true).await?;
            if trimmed > 0 {
                let label = crate::consume::streams::label_among(&streams, &s.event_type);
                self.stream_trimmed
                    .with_label_values(&[&self.env, label])
                    .inc_by(trimmed);
                total += trimmed;
            }
        }
        Ok(total)
    }
}

impl Role for Retention {
    fn schedule(&self) -> tokio::time::Interval {
        tokio::time::interval(EVERY)
    }

    async fn tick(&mut self) {
        if self.dlq_policy()
            && let Err(e) = self.trim_once().await
        {
            warn!(error = %e, "DLQ retention pass failed");
        }
        if let Err(e) = self.trim_streams_once().await {
            warn!(error = %e, "stream retention pass failed");
        }
    }
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
