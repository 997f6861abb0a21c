//! Executing retry and dead-letter verdicts: one atomic script per move (retry set or DLQ,
//! see `redis::moves`), retried with backoff on Redis errors. Only a move that Redis
//! confirmed is counted (`events_total{outcome="retried"|"dead_lettered"}`,
//! `dead_lettered_total`) and recorded in the history, so an entry whose move failed and
//! that is delivered again is counted once, by the delivery that stores it.

use std::time::Duration;

use tracing::{info, warn};

use crate::model::envelope::{self, field};
use crate::model::time::now_ms;
use crate::redis::moves::{PendingSource, RetryMove, StreamMove};
use crate::redis::store::{Entry, StoreError};
use crate::settle::dlq_record::{self, Failure};
use crate::settle::history::Record;
use crate::settle::{DeadLetter, Move, Retry, Settler, pause_after_error};

/// Most tries at one move before leaving the entry pending.
const MOVE_ATTEMPTS: u32 = 10;

/// Makes `action` durable for `entry`, then counts it and writes `record`. If Redis keeps
/// failing, or the entry is no longer pending on this consumer, nothing is counted: the
/// entry is delivered again (or finished by its new owner), which settles it then.
pub(crate) async fn settle(settler: &Settler, entry: &Entry, action: Move, record: Option<Record>) {
    let stored = match &action {
        Move::Retry(r) => store_retry(settler, entry, r).await,
        Move::DeadLetter(d) => store_dead_letter(settler, entry, d).await,
    };
    if !stored {
        return;
    }
    match action {
        Move::Retry(r) => {
            if let Some(counter) = r.counted_in {
                counter.inc();
            }
        }
        Move::DeadLetter(d) => count_dead_letter(settler, &d),
    }
    if let Some(record) = record {
        settler.history.record(record);
    }
}

/// `events_total{outcome="dead_lettered"}` and `dead_lettered_total{reason}`.
fn count_dead_letter(settler: &Settler, d: &DeadLetter) {
    let (env, group, label) = (
        settler.env.as_str(),
        settler.group.as_str(),
        d.type_label.as_str(),
    );
    settler
        .events_total
        .with_label_values(&[env, group, label, "dead_lettered"])
        .inc();
    settler
        .dead_lettered_total
        .with_label_values(&[env, group, label, d.reason.as_str()])
        .inc();
}

/// Where `entry` is taken from by a move of this consumer.
fn source<'a>(settler: &'a Settler, entry: &'a Entry) -> PendingSource<'a> {
    PendingSource {
        stream: &entry.stream,
        group: &settler.group,
        entry_id: &entry.id,
        consumer: &settler.consumer,
        delete: entry.stream == settler.redeliver,
    }
}

async fn store_retry(settler: &Settler, entry: &Entry, r: &Retry) -> bool {
    // Built once: every try of the move sends the same member bytes (a retried move whose
    // XACK was refused adds nothing anyway: the script's guard, see `redis::moves`).
    let member = serde_json::to_string(
        &r.fields
            .iter()
            .flat_map(|(k, v)| [k, v])
            .collect::<Vec<_>>(),
    )
    .unwrap_or_default();
    let m = RetryMove {
        from: source(settler, entry),
        retry_key: &settler.retry_key,
        delay_ms: r.delay_ms,
        member: &member,
    };
    with_retries(settler, entry, || settler.store.move_to_retry(&m)).await
}

async fn store_dead_letter(settler: &Settler, entry: &Entry, d: &DeadLetter) -> bool {
    let origin_id = envelope::lookup(&d.original, field::ORIGIN_ENTRY_ID).unwrap_or(&entry.id);
    let scrubbed = settler.redis_url.scrub(&d.error);
    let fields = dlq_record::encode(
        &d.original,
        &Failure {
            reason: d.reason,
            error: &scrubbed,
            attempts: d.attempts,
            group: &settler.group,
            stream: &d.origin_stream,
            entry_id: origin_id,
            failed_at_ms: now_ms(),
            consumer: &settler.consumer,
        },
    );
    let m = StreamMove {
        from: source(settler, entry),
        dest: &settler.dlq_key,
        fields: &fields,
    };
    with_retries(settler, entry, || async {
        settler
            .store
            .move_to_stream(&m)
            .await
            .map(|id| id.is_some())
    })
    .await
}

/// Runs `attempt` until Redis answers, retrying errors with backoff up to
/// [`MOVE_ATTEMPTS`] times; returns whether the entry moved.
async fn with_retries<F, Fut>(settler: &Settler, entry: &Entry, mut attempt: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<bool, StoreError>>,
{
    let mut backoff = Duration::from_millis(50);
    for n in 0..MOVE_ATTEMPTS {
        match attempt().await {
            Ok(true) => return true,
            Ok(false) => {
                info!(stream = %entry.stream, entry_id = %entry.id, "entry no longer pending on this consumer (claimed elsewhere); left to its new owner");
                return false;
            }
            Err(e) => {
                warn!(stream = %entry.stream, entry_id = %entry.id, attempt = n, error = %e, "could not record the outcome; retrying");
                pause_after_error(settler, &mut backoff).await;
            }
        }
    }
    warn!(stream = %entry.stream, entry_id = %entry.id, "outcome not recorded; the entry stays pending and will be delivered again");
    false
}
