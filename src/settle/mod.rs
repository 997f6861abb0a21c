//! Settling: the one owner of every outcome. The decision step (`consume::decide`) returns
//! a [`Decision`]; this module makes it durable and only then counts it and writes its
//! history record: successes are acknowledged in batches (`acks`, through the `acker`
//! task), retries and dead letters are moved by atomic scripts (`moves`), whose DLQ entries
//! follow `dlq_record`. History records go through `history`'s writer.

pub(crate) mod acker;
pub(crate) mod acks;
pub(crate) mod aggregate;
pub(crate) mod dlq_record;
pub(crate) mod history;
pub(crate) mod moves;

use std::sync::Arc;
use std::time::Duration;

use crate::consume::in_flight::InFlight;
use crate::consume::type_facts::TypeFacts;
use crate::model::secret::RedisUrl;
use crate::redis::store::Store;
use crate::settle::acker::Acker;
use crate::settle::dlq_record::Reason;
use crate::settle::history::HistorySink;
use crate::settle::history::Record;
use prometheus::{IntCounter, IntCounterVec};

/// A decided entry: what to do with it and the history record to write once that is
/// durable.
pub(crate) struct Decision {
    /// What to do.
    pub verdict: Verdict,
    /// Written once the verdict is durable. Boxed: it is large (about 230 bytes) and moves
    /// through every step from the decision to the history writer; a box moves as a pointer.
    pub record: Option<Box<Record>>,
}

/// What to do with a handled entry.
pub(crate) enum Verdict {
    /// The handler succeeded: acknowledge it (in a batch); counted as a success then.
    Ack {
        /// The type's metric handles.
        facts: Arc<TypeFacts>,
    },
    /// Move it to the retry set or the DLQ.
    Move(Move),
}

/// A move out of the stream.
pub(crate) enum Move {
    /// Schedule the next delivery.
    Retry(Retry),
    /// Dead-letter it.
    DeadLetter(DeadLetter),
}

/// A retry: the next delivery's fields, due `delay_ms` from now on Redis's clock.
pub(crate) struct Retry {
    /// The event's fields for its next delivery.
    pub fields: Vec<(String, String)>,
    /// How long until it is due (ms); the move adds it to Redis's `TIME`, never to this
    /// worker's clock, so workers whose clocks differ schedule alike.
    pub delay_ms: u64,
    /// The counter to increment once stored: the type's `events_total{outcome="retried"}`
    /// for a retry that used an attempt, `handed_on_total` for an event handed on for want
    /// of a route; `None` for a reschedule by an open breaker (`breaker_rejected_total`
    /// counted it when deciding).
    pub counted_in: Option<IntCounter>,
}

/// A dead letter and what its DLQ entry says.
pub(crate) struct DeadLetter {
    /// Why.
    pub reason: Reason,
    /// The last error (scrubbed and truncated when written).
    pub error: String,
    /// Handler runs used.
    pub attempts: u32,
    /// The stream the event was published to.
    pub origin_stream: String,
    /// The `type` metric label.
    pub type_label: String,
    /// The entry's fields as read.
    pub original: Vec<(String, String)>,
}

/// What settling needs: Redis, the acker, the history writer, the in-flight registry, the
/// keys moves write to, this consumer's names and the outcome counters. Built once by
/// `worker::run`; one per worker, shared by every batch.
pub(crate) struct Settler {
    /// Redis (retry and DLQ moves).
    pub store: Store,
    /// Batched acknowledgements.
    pub acker: Acker,
    /// Lifecycle records for `events:<env>:history`.
    pub history: HistorySink,
    /// Entries this consumer is handling now; settled ones are removed.
    pub in_flight: Arc<InFlight>,
    /// `events:<env>:redeliver:<group>` (its entries are deleted once settled).
    pub redeliver: String,
    /// `events:<env>:retry:<group>`.
    pub retry_key: String,
    /// `events:<env>:dlq`.
    pub dlq_key: String,
    /// The Redis URL, whose password is scrubbed from DLQ errors.
    pub redis_url: RedisUrl,
    /// The group.
    pub group: String,
    /// This consumer's name.
    pub consumer: String,
    /// The env label.
    pub env: String,
    /// `events_total`.
    pub events_total: IntCounterVec,
    /// `dead_lettered_total`.
    pub dead_lettered_total: IntCounterVec,
    /// `redis_errors_total{op="settle"}`.
    pub errors: IntCounter,
}

/// Counts a failed settlement and waits `backoff` before the next try, doubling it up to
/// 5 s.
pub(crate) async fn pause_after_error(settler: &Settler, backoff: &mut Duration) {
    settler.errors.inc();
    tokio::time::sleep(*backoff).await;
    *backoff = (*backoff * 2).min(Duration::from_secs(5));
}
