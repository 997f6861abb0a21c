//! Backlog figures read at scrape time (and for `/api/events/health`): per consumed type
//! the group's lag and pending count (XINFO GROUPS), the group's retry-set depth (ZCARD) and
//! the DLQ depth (XLEN). The cost is bounded: one XINFO per consumed stream, run
//! concurrently (fred pipelines them), at most once per [`MAX_AGE`] however often it is read.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use futures::future::join_all;
use serde::Serialize;

use crate::consume::streams::{MAX_TYPE_LABELS, StreamSet};
use crate::metrics::Metrics;
use crate::redis::store::{Store, StoreError};

/// Figures younger than this are served from the cache.
pub const MAX_AGE: Duration = Duration::from_secs(1);

/// Why no fresh backlog figures could be read.
#[derive(Debug, thiserror::Error)]
pub enum BacklogError {
    /// Redis did not answer within the caller's timeout.
    #[error("Redis did not answer in time")]
    Timeout,
    /// A Redis error.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Backlog of one consumed type.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct StreamBacklog {
    /// Event type.
    #[serde(rename = "type")]
    pub event_type: String,
    /// Entries not yet delivered to the group (`null` when Redis cannot tell).
    pub lag: Option<u64>,
    /// Delivered, not acknowledged.
    pub pending: u64,
    /// Entries delivered to the group so far by all its consumers (`entries-read`; two
    /// readings make the group's rate across instances; `null` when Redis cannot tell).
    pub read: Option<u64>,
}

/// The backlog of this worker's group.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Backlog {
    /// Per type stream.
    pub streams: Vec<StreamBacklog>,
    /// Pending entries of the group's redeliver stream.
    pub redeliver_pending: u64,
    /// Members of the group's retry set.
    pub retry_depth: u64,
    /// Entries in the DLQ.
    pub dlq_depth: u64,
}

/// What the backlog is read from and exported to: this worker's group, its keys and the
/// consumed streams.
#[derive(Clone)]
pub struct BacklogSource {
    /// Redis.
    pub store: Store,
    /// The consumed type streams.
    pub streams: StreamSet,
    /// The env label.
    pub env: String,
    /// The group.
    pub group: String,
    /// `events:<env>:redeliver:<group>`.
    pub redeliver: String,
    /// `events:<env>:retry:<group>`.
    pub retry: String,
    /// `events:<env>:dlq`.
    pub dlq: String,
    /// Where the gauges are set.
    pub metrics: Metrics,
}

impl BacklogSource {
    /// Reads the backlog from Redis.
    ///
    /// # Errors
    /// Redis errors.
    pub async fn read(&self) -> Result<Backlog, StoreError> {
        let streams = self.streams.snapshot();
        let infos = join_all(
            streams
                .iter()
                .map(|s| self.store.group_info(&s.key, &self.group)),
        )
        .await;
        let mut out = Backlog::default();
        for (s, info) in streams.iter().zip(infos) {
            let info = info?.unwrap_or_default();
            out.streams.push(StreamBacklog {
                event_type: s.event_type.clone(),
                lag: info.lag,
                pending: info.pending,
                read: info.entries_read,
            });
        }
        out.redeliver_pending = self
            .store
            .group_info(&self.redeliver, &self.group)
            .await?
            .map(|i| i.pending)
            .unwrap_or(0);
        out.retry_depth = self.store.zcard(&self.retry).await?;
        out.dlq_depth = self.store.xlen(&self.dlq).await?;
        Ok(out)
    }

    /// Sets the backlog gauges from `b`.
    pub fn export(&self, b: &Backlog) {
        let m = &self.metrics;
        let (env, group) = (self.env.as_str(), self.group.as_str());
        let cap = MAX_TYPE_LABELS;
        for s in b.streams.iter().take(cap) {
            let labels = [env, group, s.event_type.as_str()];
            if let Some(lag) = s.lag {
                m.stream_lag.with_label_values(&labels).set(lag as i64);
            }
            m.pending.with_label_values(&labels).set(s.pending as i64);
        }
        if b.streams.len() > cap {
            // Types past the label cap are summed under `other`.
            let rest = &b.streams[cap..];
            let labels = [env, group, "other"];
            let lag: u64 = rest.iter().filter_map(|s| s.lag).sum();
            m.stream_lag.with_label_values(&labels).set(lag as i64);
            m.pending
                .with_label_values(&labels)
                .set(rest.iter().map(|s| s.pending).sum::<u64>() as i64);
        }
        m.retry_depth
            .with_label_values(&[env, group])
            .set(b.retry_depth as i64);
        m.dlq_depth
            .with_label_values(&[env])
            .set(b.dlq_depth as i64);
    }
}

/// Caches [`BacklogSource::read`] for [`MAX_AGE`].
#[derive(Default)]
pub struct BacklogCache {
    last: Mutex<Option<(Instant, Backlog)>>,
}

impl BacklogCache {
    /// The cached backlog, refreshed when older than [`MAX_AGE`] (bounded by `timeout`).
    ///
    /// # Errors
    /// Redis errors or the timeout, when no fresh figures could be read.
    pub async fn get(
        &self,
        source: &BacklogSource,
        timeout: Duration,
    ) -> Result<Backlog, BacklogError> {
        if let Ok(guard) = self.last.lock()
            && let Some((at, b)) = guard.as_ref()
            && at.elapsed() < MAX_AGE
        {
            return Ok(b.clone());
        }
        let fresh = tokio::time::timeout(timeout, source.read())
            .await
            .map_err(|_| BacklogError::Timeout)??;
        if let Ok(mut guard) = self.last.lock() {
            *guard = Some((Instant::now(), fresh.clone()));
        }
        Ok(fresh)
    }
}
