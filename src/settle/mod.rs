//! Settling: the one owner of every outcome. The decision step (`consume::decide`) returns
//! a [`Decision`]; this module makes it durable and only then counts it and writes its
//! history record: successes are acknowledged in batches (`acks`, through the `acker`
//! task), retries and dead letters are moved by atomic scripts (`moves`), whose DLQ entries
//! follow `dlq_record`. History records go through `history`'s writer.

pub(crate) mod acker;
pub(crate) mod acks;
pub(crate) mod dlq_record;
pub(crate) mod history;
pub(crate) mod moves;

use std::sync::Arc;
use std::time::Duration;

use crate::consume::type_facts::TypeFacts;
use crate::settle::dlq_record::Reason;
use crate::settle::history::Record;
use crate::worker::shared::Shared;

/// A decided entry: what to do with it and the history record to write once that is
/// durable.
pub(crate) struct Decision {
    /// What to do.
    pub verdict: Verdict,
    /// Written once the verdict is durable.
    pub record: Option<Record>,
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

/// A retry: the next delivery's fields, due at `due_ms`.
pub(crate) struct Retry {
    /// The event's fields for its next delivery.
    pub fields: Vec<(String, String)>,
    /// When it is due (epoch ms).
    pub due_ms: u64,
    /// Counted as `retried` in this type's metrics once stored; `None` for a reschedule
    /// that uses no attempt (open breaker).
    pub counted_in: Option<Arc<TypeFacts>>,
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

/// Counts a failed settlement and waits `backoff` before the next try, doubling it up to
/// 5 s.
pub(crate) async fn pause_after_error(shared: &Shared, backoff: &mut Duration) {
    shared
        .metrics
        .redis_errors_total
        .with_label_values(&[shared.env(), "settle"])
        .inc();
    tokio::time::sleep(*backoff).await;
    *backoff = (*backoff * 2).min(Duration::from_secs(5));
}
