//! The history writer: an audit trail of lifecycle records in `events:<env>:history` (published,
//! processed, retried, dead_lettered, replayed, purged, retried_now), capped by `[history].max_len`
//! (MAXLEN ~ on every append) and `max_age` (MINID ~ trims every minute).
//!
//! Records from the hot path go through a bounded channel to one writer task that appends
//! them in pipelined batches; when the channel is full a record is dropped and counted in
//! `event_worker_history_dropped_total` (the history is an audit trail, not the source of
//! truth: the event itself is never affected). Reading it back is `ops::history`.

use std::borrow::Cow;
use std::time::Duration;

use serde::Serialize;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::config::{HistoryConfig, ProcessedRecords};
use crate::metrics::Metrics;
use crate::model::text::Text;
use crate::model::time::{now_ms, rfc3339};
use crate::redis::store::{Entry, Store, StoreError};
use crate::settle::aggregate;

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
    /// Made due now from the retry set by an operator (`retries retry-now`).
    pub const RETRIED_NOW: &str = "retried_now";
    /// Queued in the local outbox because Redis did not take the publish (README "Outbox").
    pub const QUEUED: &str = "queued";
    /// Published from the local outbox once Redis was back.
    pub const DRAINED: &str = "drained";
}

/// One lifecycle record.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Record {
    /// Stream entry id of the record (empty before it is written).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub entry_id: String,
    /// One of [`kind`] (borrowed when the record is made here, so the hot path does not
    /// copy the constant).
    pub kind: Cow<'static, str>,
    /// Event id.
    pub id: Text,
    /// Event type.
    #[serde(rename = "type")]
    pub event_type: Text,
    /// Consumer group (empty for published).
    #[serde(skip_serializing_if = "str::is_empty")]
    pub group: Text,
    /// Correlation id, if any.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub correlation_id: String,
    /// Handler runs so far, this record's step included: 1 on the `processed` or `retried`
    /// record of a first delivery, a dead letter's `dlq_attempts` on its `dead_lettered`
    /// record (and on `purged`), 0 on `published` and `replayed` (a replay starts the count
    /// again, as the event's wire `attempt` restarts at 0). The wire `attempt` of a delivery
    /// is the runs before it, so a record's `attempt` is the delivery's plus one when the
    /// handler ran.
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
    /// A record of `kind` for an event, stamped now. The id, type and group are taken as they
    /// are given (the worker shares its event's and its own [`Text`]s: no copy).
    pub fn new(
        kind: &'static str,
        id: impl Into<Text>,
        event_type: impl Into<Text>,
        group: impl Into<Text>,
        correlation_id: Option<&str>,
        attempt: u32,
        detail: impl Into<String>,
    ) -> Self {
        // The same fields as a `processed` record's, with this kind and detail.
        let (id, event_type, group) = (id.into(), event_type.into(), group.into());
        Record {
            kind: Cow::Borrowed(kind),
            detail: detail.into(),
            ..Self::processed(id, event_type, group, correlation_id, attempt, now_ms())
        }
    }

    /// The `processed` record of an event handled at `at_ms` (the caller's clock read).
    pub fn processed(
        id: Text,
        event_type: Text,
        group: Text,
        correlation_id: Option<&str>,
        attempt: u32,
        at_ms: u64,
    ) -> Self {
        Record {
            entry_id: String::new(),
            kind: Cow::Borrowed(kind::PROCESSED),
            id,
            event_type,
            group,
            correlation_id: correlation_id.unwrap_or_default().to_string(),
            attempt,
            detail: String::new(),
            at: String::new(),
            at_ms,
        }
    }

    /// The record as the append script takes it: `[kind, id, type, attempt, at_ms, group,
    /// correlationid, detail]`, all strings; the script names the fields (the time as `at_ms`,
    /// epoch milliseconds) and leaves empty optional ones out.
    pub(super) fn write_packed(&self, out: &mut Pack) {
        out.array(8);
        out.str(&self.kind);
        out.str(&self.id);
        out.str(&self.event_type);
        out.str(&self.attempt.to_string());
        out.str(&self.at_ms.to_string());
        out.str(&self.group);
        out.str(&self.correlation_id);
        out.str(&self.detail);
    }

    /// A record as read back from the history stream.
    pub(crate) fn from_entry(e: &Entry) -> Self {
        let get = |k: &str| {
            crate::model::envelope::lookup(&e.fields, k)
                .unwrap_or_default()
                .to_string()
        };
        let at_ms = get("at_ms")
            .parse()
            .ok()
            .or_else(|| crate::model::time::entry_id_ms(&e.id))
            .unwrap_or(0);
        Record {
            entry_id: e.id.to_string(),
            kind: Cow::Owned(get("kind")),
            id: get("id").into(),
            event_type: get("type").into(),
            group: get("group").into(),
            correlation_id: get("correlationid"),
            attempt: get("attempt").parse().unwrap_or(0),
            detail: get("detail"),
            at: rfc3339(at_ms),
            at_ms,
        }
    }
}

/// Appends `records` to the history stream `key` in one script call, which then trims the
/// stream with `MAXLEN ~ max_len`. The records travel as one MessagePack argument (an array
/// of records, each an array of its values) that the script unpacks, so a batch of hundreds
/// costs the client and Redis one argument instead of a dozen per record.
///
/// # Errors
/// Redis errors; nothing is appended then.
pub async fn append(
    store: &Store,
    key: &str,
    max_len: u64,
    records: &[Record],
) -> Result<(), StoreError> {
    if records.is_empty() {
        return Ok(());
    }
    store
        .append_history(key, max_len, pack(records).into_bytes())
        .await
}

/// Appends `records` as [`append`] does, the `processed` ones folded into aggregates when
/// `mode` says so; returns how many stream entries were appended.
///
/// # Errors
/// Redis errors; nothing is appended then.
async fn append_in(
    store: &Store,
    key: &str,
    max_len: u64,
    records: &[Record],
    mode: ProcessedRecords,
) -> Result<usize, StoreError> {
    if mode == ProcessedRecords::PerEvent || records.is_empty() {
        return append(store, key, max_len, records)
            .await
            .map(|_| records.len());
    }
    let mut out = Pack(Vec::with_capacity(records.len() * 80 + 64));
    let entries = aggregate::pack_aggregated(records, &mut out);
    store
        .append_history(key, max_len, out.into_bytes())
        .await
        .map(|_| entries)
}

/// `max_len` (events) as stream entries: in the aggregate mode an entry holds several
/// events, so the stream is trimmed to `max_len` times the entries per event written so
/// far (at least 1), which keeps about `max_len` events.
fn entries_for(max_len: u64, entries: u64, events: u64) -> u64 {
    if events == 0 || entries >= events {
        return max_len;
    }
    ((max_len as u128 * entries as u128) / events as u128).max(1) as u64
}

/// `records` as a MessagePack array of arrays of strings (see [`Record::write_packed`]).
fn pack(records: &[Record]) -> Pack {
    let mut out = Pack(Vec::with_capacity(records.len() * 160 + 8));
    out.array(records.len());
    for r in records {
        r.write_packed(&mut out);
    }
    out
}

/// A MessagePack writer for the two shapes the history needs: arrays and strings.
#[derive(Default)]
pub(crate) struct Pack(Vec<u8>);

impl Pack {
    /// An array header of `n` items.
    pub(crate) fn array(&mut self, n: usize) {
        if n < 16 {
            self.0.push(0x90 | n as u8);
        } else if n <= u16::MAX as usize {
            self.0.push(0xdc);
            self.0.extend_from_slice(&(n as u16).to_be_bytes());
        } else {
            self.0.push(0xdd);
            self.0.extend_from_slice(&(n as u32).to_be_bytes());
        }
    }

    /// A string.
    pub(crate) fn str(&mut self, s: &str) {
        let n = s.len();
        if n < 32 {
            self.0.push(0xa0 | n as u8);
        } else if n <= u8::MAX as usize {
            self.0.push(0xd9);
            self.0.push(n as u8);
        } else if n <= u16::MAX as usize {
            self.0.push(0xda);
            self.0.extend_from_slice(&(n as u16).to_be_bytes());
        } else {
            self.0.push(0xdb);
            self.0.extend_from_slice(&(n as u32).to_be_bytes());
        }
        self.0.extend_from_slice(s.as_bytes());
    }

    /// The bytes written.
    pub(crate) fn into_bytes(self) -> Vec<u8> {
        self.0
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
/// Most records per append. Redis runs the append script without serving anyone else, so
/// batches stay small enough (~0.2 ms of Redis time) not to stall the consumer's reads.
const BATCH: usize = 100;
/// Most records per append with aggregated successes: the successes of a batch cost the
/// script one `XADD` however many they are, so a batch can be larger and the writer keeps up
/// with a fast drain (at 100 per append it fell behind near 100k successes/s and dropped).
const AGGREGATE_BATCH: usize = 1000;
/// How long the writer waits for more records before appending a partial batch.
const LINGER: Duration = Duration::from_millis(5);

/// Where the history writer appends, and with what limits.
pub struct HistoryWriter {
    /// Redis.
    pub store: Store,
    /// `events:<env>:history`.
    pub key: String,
    /// `[history]`: length and age caps.
    pub config: HistoryConfig,
    /// For `history_dropped_total`.
    pub metrics: Metrics,
    /// The env label.
    pub env: String,
}

impl HistoryWriter {
    /// The sink the roles write records to, and the writer's future: it runs until `stop`
    /// fires and its queue is drained. The caller spawns it (the lifecycle's writers stage).
    pub fn start(
        self,
        stop: CancellationToken,
    ) -> (HistorySink, impl Future<Output = ()> + Send + 'static) {
        let (tx, rx) = mpsc::channel(QUEUE);
        let sink = HistorySink {
            tx,
            metrics: self.metrics.clone(),
            env: self.env.clone(),
        };
        (sink, self.run(rx, stop))
    }

    async fn run(self, mut rx: mpsc::Receiver<Record>, stop: CancellationToken) {
        let HistoryWriter {
            store,
            key,
            config,
            metrics,
            env,
        } = self;
        let mut trim = tokio::time::interval(Duration::from_secs(60));
        let mut buf: Vec<Record> = Vec::with_capacity(BATCH);
        let mode = config.processed;
        let batch = match mode {
            ProcessedRecords::PerEvent => BATCH,
            ProcessedRecords::Aggregate => AGGREGATE_BATCH,
        };
        // Stream entries and events written so far, for the trim length (`entries_for`).
        let (mut entries, mut events) = (0u64, 0u64);
        loop {
            tokio::select! {
                n = rx.recv_many(&mut buf, batch) => {
                    if n == 0 {
                        return;
                    }
                    // Linger briefly so a busy worker appends hundreds of records per call.
                    let linger = tokio::time::sleep(LINGER);
                    tokio::pin!(linger);
                    while buf.len() < batch {
                        let room = batch - buf.len();
                        tokio::select! {
                            more = rx.recv_many(&mut buf, room) => if more == 0 { break },
                            _ = &mut linger => break,
                        }
                    }
                    let count = buf.len();
                    let max_len = entries_for(config.max_len, entries, events);
                    let result = append_in(&store, &key, max_len, &buf, mode).await;
                    buf.clear();
                    match result {
                        Ok(n) => {
                            entries += n as u64;
                            events += count as u64;
                        }
                        Err(e) => {
                            metrics.history_dropped_total.with_label_values(&[&env]).inc_by(count as u64);
                            warn!(error = %e, count, "history records could not be written");
                        }
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
                    let max_len = entries_for(config.max_len, entries, events);
                    for chunk in buf.chunks(batch) {
                        let _ = append_in(&store, &key, max_len, chunk, mode).await;
                    }
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Reads one MessagePack string or array header: (is_array, length, header size).
    fn header(b: &[u8]) -> (bool, usize, usize) {
        match b[0] {
            0x90..=0x9f => (true, (b[0] & 0x0f) as usize, 1),
            0xdc => (true, u16::from_be_bytes([b[1], b[2]]) as usize, 3),
            0xa0..=0xbf => (false, (b[0] & 0x1f) as usize, 1),
            0xd9 => (false, b[1] as usize, 2),
            0xda => (false, u16::from_be_bytes([b[1], b[2]]) as usize, 3),
            0xdb => (
                false,
                u32::from_be_bytes([b[1], b[2], b[3], b[4]]) as usize,
                5,
            ),
            other => panic!("unexpected byte {other:#x}"),
        }
    }

    /// Decodes what `pack` writes: an array of arrays of strings.
    pub(crate) fn unpack(mut b: &[u8]) -> Vec<Vec<String>> {
        let (is_array, n, h) = header(b);
        assert!(is_array);
        b = &b[h..];
        let mut out = Vec::new();
        for _ in 0..n {
            let (is_array, m, h) = header(b);
            assert!(is_array);
            b = &b[h..];
            let mut record = Vec::new();
            for _ in 0..m {
                let (is_array, len, h) = header(b);
                assert!(!is_array);
                record.push(String::from_utf8(b[h..h + len].to_vec()).unwrap());
                b = &b[h + len..];
            }
            out.push(record);
        }
        assert!(b.is_empty(), "trailing bytes");
        out
    }

    #[test]
    fn packed_records_round_trip_with_every_string_length_class() {
        let mut records = Vec::new();
        for (i, len) in [0usize, 31, 32, 255, 256, 65_535, 65_536]
            .into_iter()
            .enumerate()
        {
            records.push(Record::new(
                kind::RETRIED,
                format!("id-{i}"),
                "order.created",
                if i % 2 == 0 { "g" } else { "" },
                (i == 3).then_some("corr-ü"),
                i as u32,
                "é".repeat(len / 2) + &"x".repeat(len % 2),
            ));
        }
        // 20 records take the array16 header.
        while records.len() < 20 {
            records.push(Record::new(kind::PROCESSED, "p", "t", "g", None, 0, ""));
        }
        let decoded = unpack(&pack(&records).into_bytes());
        assert_eq!(decoded.len(), records.len());
        for (r, d) in records.iter().zip(&decoded) {
            let expected = [
                r.kind.to_string(),
                r.id.to_string(),
                r.event_type.to_string(),
                r.attempt.to_string(),
                r.at_ms.to_string(),
                r.group.to_string(),
                r.correlation_id.clone(),
                r.detail.clone(),
            ];
            assert_eq!(d.as_slice(), expected.as_slice());
        }
    }

    #[test]
    fn the_trim_length_counts_events_not_entries() {
        assert_eq!(entries_for(100_000, 0, 0), 100_000);
        assert_eq!(entries_for(100_000, 50, 50), 100_000);
        assert_eq!(entries_for(100_000, 10, 1000), 1000);
        assert_eq!(entries_for(5, 1, 1000), 1);
        assert_eq!(entries_for(u64::MAX, 3, 4), u64::MAX / 4 * 3 + 2);
    }
}
