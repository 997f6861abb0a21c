//! Processing one entry: decode, check the delivery count, ask the breaker, run the handler,
//! and settle the outcome (ack, retry set, or DLQ) durably before the permit is released.

use std::panic::AssertUnwindSafe;
use std::time::{Duration, Instant};

use futures::FutureExt;
use tracing::{debug, info, warn};

use crate::deliver::breaker::Admission;
use crate::deliver::handler::Outcome;
use crate::model::envelope::{self, Event, field, truncate};
use crate::model::time::{entry_id_ms, now_ms, rfc3339};
use crate::redis::store::{Entry, StoreError};
use crate::settle::history::{Record, kind};
use crate::worker::shared::Shared;

/// Logs at `$level` with the event's id, type, group, attempt and correlation id.
macro_rules! event_log {
    ($level:ident, $event:expr, $shared:expr, $($rest:tt)*) => {
        tracing::$level!(
            id = %$event.id,
            r#type = %$event.event_type,
            group = $shared.group(),
            attempt = $event.attempt,
            correlation_id = $event.correlation_id().unwrap_or(""),
            $($rest)*
        )
    };
}

/// DLQ reasons.
pub mod reason {
    /// The handler said the event can never succeed (HTTP 4xx other than 408/429).
    pub const PERMANENT: &str = "permanent_error";
    /// Retryable failures used up `retry.max_attempts`.
    pub const MAX_ATTEMPTS: &str = "max_attempts_exceeded";
    /// The entry breaks the wire format.
    pub const MALFORMED: &str = "malformed";
    /// Delivered more than `max_deliveries` times (it keeps killing workers).
    pub const MAX_DELIVERIES: &str = "max_deliveries_exceeded";
}

/// Longest `dlq_error` kept.
const MAX_ERROR_LEN: usize = 1000;

/// Where a handled entry goes, and the history record to write once it is there.
struct Decision {
    settlement: Settlement,
    record: Option<Record>,
}

/// Where a handled entry goes.
enum Settlement {
    Ack,
    Retry {
        fields: Vec<(String, String)>,
        due_ms: u64,
    },
    DeadLetter {
        fields: Vec<(String, String)>,
    },
}

/// What became of one entry.
pub struct Handled {
    /// Stream key of the entry.
    pub stream: String,
    /// Entry id.
    pub id: String,
    /// What is left to do.
    pub step: Step,
    /// The `processed` record to write once a success is acknowledged.
    pub record: Option<Record>,
}

/// What is left to do for a handled entry.
pub enum Step {
    /// The handler succeeded: acknowledge the entry (the batch does it, together with the
    /// others), then write the record to the history.
    Ack,
    /// Retried or dead-lettered durably (or given up after Redis errors, so it stays
    /// pending); nothing is left to do.
    Settled,
}

/// Decides `entry` (decode, delivery count, breaker, handler) and settles every outcome
/// but success, which the caller acknowledges in a batch. The caller registered the entry
/// in `in_flight` and holds its permit.
pub async fn handle(shared: &Shared, mut entry: Entry) -> Handled {
    let decision = decide(shared, &mut entry).await;
    let (step, record) = match decision.settlement {
        Settlement::Ack => (Step::Ack, decision.record),
        settlement => {
            // Boxed: the settle future is large and rarely needed; inline it would make every
            // event's future that large.
            if Box::pin(settle(shared, &entry, &settlement)).await
                && let Some(record) = decision.record
            {
                shared.history.record(record);
            }
            (Step::Settled, None)
        }
    };
    Handled {
        stream: entry.stream,
        id: entry.id,
        step,
        record,
    }
}

async fn decide(shared: &Shared, entry: &mut Entry) -> Decision {
    let from_redeliver = entry.stream == shared.redeliver;
    let stream_type = if from_redeliver {
        None
    } else {
        shared.keys.type_of_stream(&entry.stream)
    };
    let event = match envelope::decode_or_return(std::mem::take(&mut entry.fields), stream_type) {
        Ok(e) => e,
        Err((malformed, fields)) => {
            entry.fields = fields;
            let entry = &*entry;
            let label = stream_type.map_or("other", |t| shared.type_label(t));
            warn!(stream = %entry.stream, entry_id = %entry.id, group = shared.group(), error = %malformed, "malformed entry dead-lettered");
            let attempts = envelope::lookup(&entry.fields, field::ATTEMPT)
                .and_then(|a| a.parse().ok())
                .unwrap_or(0u32);
            let id = envelope::lookup(&entry.fields, field::ID).unwrap_or_default();
            let settlement = dead_letter(
                shared,
                entry,
                label,
                &entry.fields,
                entry.stream.clone(),
                reason::MALFORMED,
                &malformed.0,
                attempts,
            );
            let record = Record::new(
                kind::DEAD_LETTERED,
                &truncate(id, 256),
                label,
                shared.group(),
                None,
                attempts,
                reason::MALFORMED,
            );
            return Decision {
                settlement,
                record: Some(record),
            };
        }
    };
    let entry = &*entry;
    let facts = shared.type_facts(&event.event_type);
    let label = facts.label.as_str();
    let origin_stream = shared.keys.stream(&event.event_type);
    // A debug-level span: handler code logging at debug sees the event context; the lines
    // this module logs at info and above carry the fields themselves (cheaper per event).
    let span = tracing::debug_span!("event", id = %event.id, r#type = %event.event_type, group = shared.group(), attempt = event.attempt, correlation_id = event.correlation_id().unwrap_or(""));
    let _enter = span.enter();
    let record = |kind: &str, attempt: u32, detail: &str| {
        Some(Record::new(
            kind,
            &event.id,
            &event.event_type,
            shared.group(),
            event.correlation_id(),
            attempt,
            detail,
        ))
    };
    let dead = |settlement: Settlement, attempts: u32, why: &str| Decision {
        settlement,
        record: record(kind::DEAD_LETTERED, attempts, why),
    };
    if entry.deliveries > shared.cfg.max_deliveries {
        let error = format!(
            "delivered {} times (max_deliveries = {}); the handler was not run again",
            entry.deliveries, shared.cfg.max_deliveries
        );
        event_log!(
            warn,
            event,
            shared,
            deliveries = entry.deliveries,
            "poison event dead-lettered"
        );
        let s = dead_letter(
            shared,
            entry,
            label,
            &event.fields,
            origin_stream,
            reason::MAX_DELIVERIES,
            &error,
            event.attempt,
        );
        return dead(s, event.attempt, reason::MAX_DELIVERIES);
    }
    let Some(route_index) = facts.route else {
        let error = format!("no route serves type `{}`", event.event_type);
        event_log!(warn, event, shared, "{error}; dead-lettered");
        let s = dead_letter(
            shared,
            entry,
            label,
            &event.fields,
            origin_stream,
            reason::PERMANENT,
            &error,
            event.attempt,
        );
        return dead(s, event.attempt, reason::PERMANENT);
    };
    let route = &shared.routes[route_index];
    let admission = route.breaker.admit();
    if let Admission::Rejected(wait) = admission {
        shared
            .metrics
            .breaker_rejected_total
            .with_label_values(&[shared.env(), route.breaker.name()])
            .inc();
        debug!(
            wait_ms = wait.as_millis() as u64,
            "breaker open; rescheduled without using an attempt"
        );
        let settlement = Settlement::Retry {
            fields: retry_fields(&event, entry, event.attempt),
            due_ms: now_ms() + wait.as_millis() as u64,
        };
        return Decision {
            settlement,
            record: None,
        };
    }
    drop(_enter);
    let started = Instant::now();
    // A panic in `handle` itself (before it returns its future) or inside the future both
    // count as retryable failures.
    let run = async {
        match std::panic::catch_unwind(AssertUnwindSafe(|| route.handler.handle(&event))) {
            Ok(future) => AssertUnwindSafe(future).catch_unwind().await,
            Err(panic) => Err(panic),
        }
    };
    let outcome = match tokio::time::timeout(route.timeout, run)
        .instrument_in(&span)
        .await
    {
        Ok(Ok(outcome)) => outcome,
        Ok(Err(_panic)) => Outcome::retry("handler panicked"),
        Err(_) => Outcome::retry(format!("handler timed out after {:?}", route.timeout)),
    };
    let _enter = span.enter();
    facts
        .handler_duration
        .observe(started.elapsed().as_secs_f64());
    route
        .breaker
        .record(admission, matches!(outcome, Outcome::Retry { .. }));
    let runs = event.attempt + 1;
    match outcome {
        Outcome::Success => {
            facts.success.inc();
            let origin =
                envelope::lookup(&event.fields, field::ORIGIN_ENTRY_ID).unwrap_or(&entry.id);
            if let Some(ms) = entry_id_ms(origin) {
                let secs = now_ms().saturating_sub(ms) as f64 / 1000.0;
                facts.end_to_end.observe(secs);
            }
            debug!("handled");
            Decision {
                settlement: Settlement::Ack,
                record: record(kind::PROCESSED, event.attempt, ""),
            }
        }
        Outcome::Retry { error, retry_after } if runs < shared.retry.max_attempts() => {
            let delay = shared.retry.delay_honouring(runs, retry_after);
            event_log!(info, event, shared, error = %error, delay_ms = delay.as_millis() as u64, "handler failed; retry scheduled");
            facts.retried.inc();
            let settlement = Settlement::Retry {
                fields: retry_fields(&event, entry, runs),
                due_ms: now_ms() + delay.as_millis() as u64,
            };
            Decision {
                settlement,
                record: record(
                    kind::RETRIED,
                    event.attempt,
                    &format!(
                        "retry in {}ms: {}",
                        delay.as_millis(),
                        truncate(&error, 200)
                    ),
                ),
            }
        }
        Outcome::Retry { error, .. } => {
            event_log!(warn, event, shared, error = %error, "handler failed; attempts used up, dead-lettered");
            let s = dead_letter(
                shared,
                entry,
                label,
                &event.fields,
                origin_stream,
                reason::MAX_ATTEMPTS,
                &error,
                runs,
            );
            dead(s, event.attempt, reason::MAX_ATTEMPTS)
        }
        Outcome::Permanent { error } => {
            event_log!(warn, event, shared, error = %error, "handler failed permanently; dead-lettered");
            let s = dead_letter(
                shared,
                entry,
                label,
                &event.fields,
                origin_stream,
                reason::PERMANENT,
                &error,
                runs,
            );
            dead(s, event.attempt, reason::PERMANENT)
        }
    }
}

/// Small helper so a future runs inside a span without holding the guard across awaits.
trait InstrumentIn: Sized {
    fn instrument_in(self, span: &tracing::Span) -> tracing::instrument::Instrumented<Self>;
}

impl<F: std::future::Future> InstrumentIn for F {
    fn instrument_in(self, span: &tracing::Span) -> tracing::instrument::Instrumented<Self> {
        tracing::Instrument::instrument(self, span.clone())
    }
}

/// The event's fields for its next delivery: `attempt` set, `origin_entry_id` kept.
fn retry_fields(event: &Event, entry: &Entry, attempt: u32) -> Vec<(String, String)> {
    let origin = envelope::lookup(&event.fields, field::ORIGIN_ENTRY_ID)
        .unwrap_or(&entry.id)
        .to_string();
    let mut fields: Vec<(String, String)> = event
        .fields
        .iter()
        .filter(|(k, _)| k != field::ATTEMPT && k != field::ORIGIN_ENTRY_ID)
        .cloned()
        .collect();
    fields.push((field::ATTEMPT.to_string(), attempt.to_string()));
    fields.push((field::ORIGIN_ENTRY_ID.to_string(), origin));
    fields
}

#[allow(clippy::too_many_arguments)]
fn dead_letter(
    shared: &Shared,
    entry: &Entry,
    type_label: &str,
    original: &[(String, String)],
    origin_stream: String,
    why: &str,
    error: &str,
    attempts: u32,
) -> Settlement {
    shared
        .metrics
        .events_total
        .with_label_values(&[shared.env(), shared.group(), type_label, "dead_lettered"])
        .inc();
    shared
        .metrics
        .dead_lettered_total
        .with_label_values(&[shared.env(), shared.group(), type_label, why])
        .inc();
    let origin_id = envelope::lookup(original, field::ORIGIN_ENTRY_ID)
        .unwrap_or(&entry.id)
        .to_string();
    let (kept, omitted) = envelope::bounded_copy(original);
    let mut fields: Vec<(String, String)> = kept
        .into_iter()
        .filter(|(k, _)| !k.starts_with("dlq_"))
        .collect();
    if let Some(note) = omitted {
        fields.push(("dlq_omitted".to_string(), note));
    }
    let scrubbed = shared.cfg.redis_url.scrub(error);
    for (k, v) in [
        ("dlq_reason", why.to_string()),
        ("dlq_error", truncate(&scrubbed, MAX_ERROR_LEN)),
        ("dlq_attempts", attempts.to_string()),
        ("dlq_group", shared.group().to_string()),
        ("dlq_stream", origin_stream),
        ("dlq_entry_id", origin_id),
        ("dlq_failed_at", rfc3339(now_ms())),
        ("dlq_consumer", shared.consumer().to_string()),
    ] {
        fields.push((k.to_string(), v));
    }
    Settlement::DeadLetter { fields }
}

/// Makes the settlement durable, retrying Redis failures with backoff for a while; returns
/// whether this consumer settled it. If it still fails, the entry stays pending and is
/// redelivered later (at-least-once).
async fn settle(shared: &Shared, entry: &Entry, settlement: &Settlement) -> bool {
    let delete = entry.stream == shared.redeliver;
    let mut backoff = Duration::from_millis(50);
    for attempt in 0..10 {
        let result: Result<bool, StoreError> = match settlement {
            // Successes are acknowledged in batches by the caller (see `batch`).
            Settlement::Ack => Ok(true),
            Settlement::Retry { fields, due_ms } => {
                let member = serde_json::to_string(
                    &fields.iter().flat_map(|(k, v)| [k, v]).collect::<Vec<_>>(),
                )
                .unwrap_or_default();
                shared
                    .store
                    .move_to_retry(
                        &shared.keys.retry(shared.group()),
                        &entry.stream,
                        shared.group(),
                        &entry.id,
                        shared.consumer(),
                        delete,
                        *due_ms,
                        &member,
                    )
                    .await
            }
            Settlement::DeadLetter { fields } => shared
                .store
                .move_to_stream(
                    &shared.keys.dlq(),
                    &entry.stream,
                    shared.group(),
                    &entry.id,
                    shared.consumer(),
                    delete,
                    fields,
                )
                .await
                .map(|id| id.is_some()),
        };
        match result {
            Ok(true) => return true,
            Ok(false) => {
                info!(stream = %entry.stream, entry_id = %entry.id, "entry no longer pending on this consumer (claimed elsewhere); left to its new owner");
                return false;
            }
            Err(e) => {
                warn!(stream = %entry.stream, entry_id = %entry.id, attempt, error = %e, "could not record the outcome; retrying");
                pause_after_settle_error(shared, &mut backoff).await;
            }
        }
    }
    warn!(stream = %entry.stream, entry_id = %entry.id, "outcome not recorded; the entry stays pending and will be delivered again");
    false
}

/// Counts a failed settlement and waits `backoff` before the next try, doubling it up to
/// 5 s.
pub(crate) async fn pause_after_settle_error(shared: &Shared, backoff: &mut Duration) {
    shared
        .metrics
        .redis_errors_total
        .with_label_values(&[shared.env(), "settle"])
        .inc();
    tokio::time::sleep(*backoff).await;
    *backoff = (*backoff * 2).min(Duration::from_secs(5));
}
