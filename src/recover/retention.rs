//! Retention. The DLQ is trimmed only by the explicit policy (`dlq_max_len`,
//! `dlq_max_age`), exactly, in chunks that read what they remove (so the DLQ counts stay
//! exact), so every trimmed entry is counted in `event_worker_dlq_trimmed_total` and
//! logged; without a policy it is never trimmed.
//! Type streams are trimmed (`stream_retention`) only below what every group of the
//! stream has acknowledged and below each group's oldest pending entry, so trimming never
//! removes an event some group still has to process. A pass repeats the trim in chunks of
//! [`TRIM_CHUNK`] entries until nothing more is below that bound (at most [`MAX_CHUNKS`]
//! chunks per stream), so retention keeps up with any sustained publish rate up to
//! `MAX_CHUNKS * TRIM_CHUNK / retention_interval` (333,000 events/s at the default 30 s);
//! one approximate trim alone stops at Redis's default limit of 10,000 entries.

use std::time::Duration;

use prometheus::{IntCounter, IntCounterVec};
use tracing::warn;

use crate::config::Config;
use crate::consume::streams::StreamSet;
use crate::model::time::now_ms;
use crate::redis::store::{Store, StoreError};
use crate::worker::role::Role;

/// Entries one `XTRIM MINID ~ .. LIMIT` call may remove: Redis's own default limit for an
/// approximate trim (100 nodes of 100 entries), so no single command holds Redis longer
/// than Redis's own trims do (about 1 ms for 10,000 entries of 300 bytes), however large
/// the backlog; other clients' commands run between the calls.
pub const TRIM_CHUNK: u64 = 10_000;
/// Trim calls per stream per pass: up to 10 million entries; what is left waits for the
/// next pass (and is logged).
pub const MAX_CHUNKS: u32 = 1_000;

/// DLQ entries one retention script removes at most (it reads them first, to uncount them:
/// about 2 ms); a pass runs up to `10 * MAX_CHUNKS` of them (10 million entries).
pub const DLQ_TRIM_CHUNK: u64 = 1_000;

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
    /// `retention_interval`: the time between passes.
    pub interval: Duration,
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
            interval: cfg.retention_interval,
            streams,
            env: cfg.env.clone(),
            dlq_trimmed: metrics.dlq_trimmed_total.with_label_values(&[&cfg.env]),
            stream_trimmed: metrics.stream_trimmed_total.clone(),
        })
    }

    fn dlq_policy(&self) -> bool {
        self.dlq_max_len.is_some() || self.dlq_max_age.is_some()
    }

    /// Applies the DLQ policy once; returns how many entries were trimmed. Each chunk of at
    /// most [`DLQ_TRIM_CHUNK`] entries is one script that reads the entries it removes and
    /// uncounts them from the DLQ counts (see `redis::dlq`), so `dlq stats` stays exact.
    ///
    /// # Errors
    /// Redis errors (what was trimmed before is counted).
    pub async fn trim_once(&self) -> Result<u64, StoreError> {
        let mut trimmed = 0;
        let mut policies = Vec::new();
        if let Some(max_len) = self.dlq_max_len {
            policies.push((false, max_len.to_string()));
        }
        if let Some(max_age) = self.dlq_max_age {
            let cutoff = now_ms().saturating_sub(max_age.as_millis() as u64);
            policies.push((true, format!("{cutoff}-0")));
        }
        for (by_age, threshold) in policies {
            if let Err(e) = self.trim_dlq_by(by_age, &threshold, &mut trimmed).await {
                self.count_dlq_trimmed(trimmed);
                return Err(e);
            }
        }
        self.count_dlq_trimmed(trimmed);
        Ok(trimmed)
    }

    /// Trims the DLQ by one policy in chunks until a chunk removes less than a full one, at
    /// most `10 * MAX_CHUNKS` chunks per pass (then warns: the next pass goes on).
    async fn trim_dlq_by(
        &self,
        by_age: bool,
        threshold: &str,
        trimmed: &mut u64,
    ) -> Result<(), StoreError> {
        for _ in 0..MAX_CHUNKS * 10 {
            let n = self
                .store
                .dlq_trim_chunk(&self.dlq, by_age, threshold, DLQ_TRIM_CHUNK)
                .await?;
            *trimmed += n;
            if n < DLQ_TRIM_CHUNK {
                return Ok(());
            }
        }
        warn!(
            dlq = %self.dlq,
            "DLQ retention is behind: {trimmed} entries of {} removed in this pass and more are \
             past dlq_max_len / dlq_max_age; the next pass (after retention_interval) goes on",
            self.dlq
        );
        Ok(())
    }

    fn count_dlq_trimmed(&self, trimmed: u64) {
        if trimmed > 0 {
            self.dlq_trimmed.inc_by(trimmed);
            warn!(
                trimmed,
                "DLQ entries removed by the retention policy (dlq_max_len / dlq_max_age)"
            );
        }
    }

    /// Trims acknowledged entries older than `stream_retention` from the consumed type
    /// streams; returns how many were trimmed (whole nodes, `MINID ~`, so up to one node of
    /// 100 entries per stream below the bound stays).
    ///
    /// # Errors
    /// Redis errors (what was trimmed before is counted).
    pub async fn trim_streams_once(&self) -> Result<u64, StoreError> {
        let Some(keep) = self.stream_retention else {
            return Ok(0);
        };
        let cutoff = format!("{}-0", now_ms().saturating_sub(keep.as_millis() as u64));
        let mut total = 0;
        let streams = self.streams.snapshot();
        for s in streams.iter() {
            let Some(safe) = self.safe_bound(&s.key, &cutoff).await? else {
                continue;
            };
            let label = crate::consume::streams::label_among(&streams, &s.event_type);
            total += self.trim_below(&s.key, &safe, label).await?;
        }
        Ok(total)
    }

    /// The id below which `stream` may be trimmed (see [`safe_trim_id`]); `None` when the
    /// stream has no group (nothing is known to be processed).
    async fn safe_bound(&self, stream: &str, cutoff: &str) -> Result<Option<String>, StoreError> {
        let groups = self.store.groups(stream).await?;
        if groups.is_empty() {
            return Ok(None);
        }
        let mut bounds = Vec::new();
        for (name, info) in groups {
            match self.store.oldest_pending(stream, &name).await? {
                Some(oldest) => bounds.push(oldest),
                None => bounds.push(info.last_delivered_id),
            }
        }
        Ok(Some(safe_trim_id(cutoff, &bounds)))
    }

    /// Trims `stream` below `safe` in chunks of [`TRIM_CHUNK`] until a chunk removes nothing
    /// (a chunk may remove a little less than the limit while more is left, as nodes differ
    /// in size) or [`MAX_CHUNKS`] were used; counts each chunk under `label` as it goes.
    async fn trim_below(&self, stream: &str, safe: &str, label: &str) -> Result<u64, StoreError> {
        let mut trimmed = 0;
        for _ in 0..MAX_CHUNKS {
            let n = self
                .store
                .xtrim_minid_limited(stream, safe, TRIM_CHUNK)
                .await?;
            if n == 0 {
                return Ok(trimmed);
            }
            self.stream_trimmed
                .with_label_values(&[&self.env, label])
                .inc_by(n);
            trimmed += n;
        }
        warn!(
            stream,
            trimmed,
            "stream retention is behind: {trimmed} entries of {stream} trimmed in this pass and \
             more acknowledged entries are older than stream_retention; the next pass (after \
             retention_interval) goes on; shorten retention_interval if this repeats"
        );
        Ok(trimmed)
    }
}

impl Role for Retention {
    fn schedule(&self) -> tokio::time::Interval {
        crate::worker::role::delayed(self.interval)
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
