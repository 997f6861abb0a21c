//! The history: an audit trail of lifecycle records in `events:<env>:history` (published,
//! processed, retried, dead_lettered, replayed, purged), capped by `[history].max_len`
//! (MAXLEN ~ on every append) and `max_age` (MINID ~ trims every minute).
//!
//! Records from the hot path go through a bounded channel to one writer task that appends
//! them in pipelined batches; when the channel is full a record is dropped and counted in
//! `event_worker_history_dropped_total` (the history is an audit trail, not the source of
//! truth: the event itself is never affected).

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::config::HistoryConfig;
use crate::metrics::Metrics;
use crate::store::{Entry, Store, StoreError};
use crate::timeutil::{now_ms, rfc3339};

/// Lifecycle record kinds.
pub mod kind {
    /// Appended by `publish` (CLI or API).
    pub const PUBLISHED: &str = "published";
    /// Handler succeeded.
    pub const PROCESSED: &str = "processed";
    /// Scheduled for a retry.
    pub const RETRIED: &str = "retried";
    /// Moved to the DLQ.
    pub const DEAD_LETTERED: &str = "dead_lettered";
    /// Replayed from the DLQ.
    pub const REPLAYED: &str = "replayed";
    /// Purged from the DLQ.
    pub const PURGED: &str = "purged";
}

/// One lifecycle record.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Record {
    /// Stream entry id of the record (empty before it is written).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub entry_id: String,
    /// One of [`kind`].
    pub kind: String,
    /// Event id.
    pub id: String,
    /// Event type.
    #[serde(rename = "type")]
    pub event_type: String,
    /// Consumer group (empty for published).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub group: String,
    /// Correlation id, if any.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub correlation_id: String,
    /// Handler runs before this record's step.
    pub attempt: u32,
    /// Outcome detail: DLQ reason, retry delay, who replayed or purged.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub detail: String,
    /// RFC 3339 time.
    pub at: String,
    /// The time in epoch milliseconds (what is stored; `at` is derived when reading).
    #[serde(skip)]
    pub at_ms: u64,
}

impl Record {
    /// A record of `kind` for an event, stamped now.
    pub fn new(
        kind: &str,
        id: &str,
        event_type: &str,
        group: &str,
        correlation_id: Option<&str>,
        attempt: u32,
        detail: impl Into<String>,
    ) -> Self {
        Record {
            entry_id: String::new(),
            kind: kind.to_string(),
            id: id.to_string(),
            event_type: event_type.to_string(),
            group: group.to_string(),
            correlation_id: correlation_id.unwrap_or_default().to_string(),
            attempt,
            detail: detail.into(),
            at: String::new(),
            at_ms: now_ms(),
        }
    }

    /// The record as stream fields (the time as `at_ms`, epoch milliseconds).
    pub fn to_fields(self) -> Vec<(String, String)> {
        let mut f = Vec::with_capacity(8);
        f.push(("kind".to_string(), self.kind));
        f.push(("id".to_string(), self.id));
        f.push(("type".to_string(), self.event_type));
        f.push(("attempt".to_string(), self.attempt.to_string()));
        f.push(("at_ms".to_string(), self.at_ms.to_string()));
        for (k, v) in [
            ("group", self.group),
            ("correlationid", self.correlation_id),
            ("detail", self.detail),
        ] {
            if !v.is_empty() {
                f.push((k.to_string(), v));
            }
        }
        f
    }

    fn from_entry(e: &Entry) -> Self {
        let get = |k: &str| {
            crate::envelope::lookup(&e.fields, k)
                .unwrap_or_default()
                .to_string()
        };
        let at_ms = get("at_ms")
            .parse()
            .ok()
            .or_else(|| crate::timeutil::entry_id_ms(&e.id))
            .unwrap_or(0);
        Record {
            entry_id: e.id.clone(),
            kind: get("kind"),
            id: get("id"),
            event_type: get("type"),
            group: get("group"),
            correlation_id: get("correlationid"),
            attempt: get("attempt").parse().unwrap_or(0),
            detail: get("detail"),
            at: rfc3339(at_ms),
            at_ms,
        }
    }
}

/// Sends records to the writer task; cheap to clone.
#[derive(Clone)]
pub struct HistorySink {
    tx: mpsc::Sender<Record>,
    metrics: Metrics,
    env: String,
}

impl HistorySink {
    /// Queues a record without waiting; counts it as dropped when the queue is full.
    pub fn record(&self, record: Record) {
        if self.tx.try_send(record).is_err() {
            self.metrics
                .history_dropped_total
                .with_label_values(&[&self.env])
                .inc();
        }
    }
}

/// Capacity of the record queue.
const QUEUE: usize = 10_000;
/// Most records per append.
const BATCH: usize = 500;
/// How long the writer waits for more records before appending a partial batch.
const LINGER: Duration = Duration::from_millis(5);

/// Starts the writer; it runs until `stop` fires and the queue is drained.
pub fn start(
    store: Store,
    key: String,
    config: HistoryConfig,
    metrics: Metrics,
    env: &str,
    stop: CancellationToken,
) -> (HistorySink, tokio::task::JoinHandle<()>) {
    let (tx, rx) = mpsc::channel(QUEUE);
    let sink = HistorySink {
        tx,
        metrics: metrics.clone(),
        env: env.to_string(),
    };
    let task = tokio::spawn(writer(
        store,
        key,
        config,
        metrics,
        env.to_string(),
        rx,
        stop,
    ));
    (sink, task)
}

async fn writer(
    store: Store,
    key: String,
    config: HistoryConfig,
    metrics: Metrics,
    env: String,
    mut rx: mpsc::Receiver<Record>,
    stop: CancellationToken,
) {
    let mut trim = tokio::time::interval(Duration::from_secs(60));
    let mut buf: Vec<Record> = Vec::with_capacity(BATCH);
    loop {
        tokio::select! {
            n = rx.recv_many(&mut buf, BATCH) => {
                if n == 0 {
                    return;
                }
                // Linger briefly so a busy worker appends hundreds of records per call.
                let linger = tokio::time::sleep(LINGER);
                tokio::pin!(linger);
                while buf.len() < BATCH {
                    let room = BATCH - buf.len();
                    tokio::select! {
                        more = rx.recv_many(&mut buf, room) => if more == 0 { break },
                        _ = &mut linger => break,
                    }
                }
                let records: Vec<Vec<(String, String)>> = buf.drain(..).map(|r| r.to_fields()).collect();
                let count = records.len();
                if let Err(e) = store.append_history(&key, config.max_len, records).await {
                    metrics.history_dropped_total.with_label_values(&[&env]).inc_by(count as u64);
                    warn!(error = %e, count, "history records could not be written");
                }
            }
            _ = trim.tick() => {
                let cutoff = now_ms().saturating_sub(config.max_age.as_millis() as u64);
                if let Err(e) = store.xtrim(&key, "MINID", &format!("{cutoff}-0"), true).await {
                    warn!(error = %e, "trimming the history by age failed");
                }
            }
            _ = stop.cancelled() => {
                rx.close();
                while let Some(r) = rx.recv().await {
                    buf.push(r);
                }
                while !buf.is_empty() {
                    let n = buf.len().min(BATCH);
                    let records = buf.drain(..n).map(|r| r.to_fields()).collect();
                    let _ = store.append_history(&key, config.max_len, records).await;
                }
                return;
            }
        }
    }
}

/// What to look for in the history.
#[derive(Debug, Clone, Default)]
pub struct HistoryQuery {
    /// Only this event type.
    pub event_type: Option<String>,
    /// Only this correlation id.
    pub correlation_id: Option<String>,
    /// Only this event id.
    pub id: Option<String>,
    /// Most records returned (clamped to 1..=1000).
    pub limit: usize,
}

/// Records scanned at most per query, so a query's cost is bounded.
pub const MAX_SCAN: usize = 50_000;

/// Matching records, newest first.
///
/// # Errors
/// Redis errors.
pub async fn query(store: &Store, key: &str, q: &HistoryQuery) -> Result<Vec<Record>, StoreError> {
    let limit = q.limit.clamp(1, 1000);
    let mut out = Vec::new();
    let mut end = "+".to_string();
    let mut scanned = 0;
    while scanned < MAX_SCAN && out.len() < limit {
        let page = store.xrevrange(key, &end, "-", 1000).await?;
        if page.is_empty() {
            break;
        }
        scanned += page.len();
        end = format!("({}", page.last().map(|e| e.id.as_str()).unwrap_or("0-0"));
        for e in &page {
            let r = Record::from_entry(e);
            let keep = q.event_type.as_ref().is_none_or(|t| *t == r.event_type)
                && q.correlation_id
                    .as_ref()
                    .is_none_or(|c| *c == r.correlation_id)
                && q.id.as_ref().is_none_or(|i| *i == r.id);
            if keep {
                out.push(r);
                if out.len() >= limit {
                    break;
                }
            }
        }
        if page.len() < 1000 {
            break;
        }
    }
    Ok(out)
}

/// Shared handle for roles that write history.
pub type SharedSink = Arc<HistorySink>;
