//! The decision step for one entry: decode it, check its delivery count and route, ask the
//! breaker, run the handler, and return a [`Decision`] (ack, retry at a time, or dead-letter
//! with a [`Reason`]) with the history record to write. It changes nothing in Redis and
//! counts no outcome: `settle` executes the verdict and counts it once it is durable.
//!
//! An event this consumer has no route for (it came through the group's shared redeliver
//! stream or a reclaim, e.g. a retry scheduled by a newer instance during a rolling deploy)
//! is handed on: back to the retry set after about [`HAND_ON_DELAY`], its attempt unchanged,
//! with `unrouted_since` recording when a consumer first met it without a route. Only after
//! `no_route_grace` from then is it dead-lettered, as `no_route`.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::FutureExt;
use futures::future::Either;
use tracing::{debug, warn};

use crate::consume::backoff::RetryPolicy;
use crate::consume::type_facts::TypeFacts;
use crate::consume::type_facts::TypeFactsCache;
use crate::deliver::breaker::Admission;
use crate::deliver::handler::Outcome;
use crate::model::envelope::{self, Event, field, truncate};
use crate::model::keys::Keys;
use crate::model::text::Text;
use crate::model::time::{entry_id_ms, now_ms, rfc3339};
use crate::redis::store::Entry;
use crate::settle::dlq_record::Reason;
use crate::settle::history::{Record, kind};
use crate::settle::{DeadLetter, Decision, Move, Retry, Verdict};
use crate::worker::routes::Route;
use prometheus::{IntCounter, IntCounterVec};
use rand::Rng;

/// What deciding needs: key names, the routes, the retry policy, the type-facts cache and
/// the delivery limit. Built once by `worker::run`; one per worker, shared by every batch.
pub(crate) struct Decider {
    /// Key names of the env (type of a stream, stream of a type).
    pub keys: Keys,
    /// `events:<env>:redeliver:<group>`.
    pub redeliver: String,
    /// Routes in configuration order (code routes first).
    pub routes: Arc<[Route]>,
    /// Retry delays and attempts.
    pub retry: RetryPolicy,
    /// Deliveries past which an event is poison.
    pub max_deliveries: u64,
    /// Per-type label, route and metric handles.
    pub type_facts: TypeFactsCache,
    /// `breaker_rejected_total`.
    pub breaker_rejected: IntCounterVec,
    /// `fields_dropped_total`.
    pub fields_dropped: IntCounterVec,
    /// The env label.
    pub env: String,
    /// The group.
    pub group: Text,
    /// How long an unrouted event is handed on before it is dead-lettered as `no_route`.
    pub no_route_grace: Duration,
    /// `handed_on_total{env,group}`.
    pub handed_on: IntCounter,
}

/// Delay before an event handed on for want of a route is due again (plus up to a quarter
/// of it at random, so handed-on events spread over the group's consumers and reads).
pub const HAND_ON_DELAY: Duration = Duration::from_secs(1);

/// Logs at `$level` with the event's id, type, group, attempt and correlation id.
macro_rules! event_log {
    ($level:ident, $event:expr, $decider:expr, $($rest:tt)*) => {
        tracing::$level!(
            id = %$event.id,
            r#type = %$event.event_type,
            group = $decider.group.as_str(),
            attempt = $event.attempt,
            correlation_id = $event.correlation_id().unwrap_or(""),
            $($rest)*
        )
    };
}

/// A decision made at once, or the handler run that makes it.
pub(crate) enum Decided<'a> {
    /// Decided without running the handler (malformed, poison, no route, breaker open).
    Now(Decision),
    /// The handler runs; its outcome decides.
    Run(HandlerRun<'a>),
}

impl<'a> Decided<'a> {
    /// The decision, running the handler when it has to. (A plain `async fn` matching on
    /// `self` would hold the decision and the run's future side by side.)
    pub(crate) fn finish(self) -> impl Future<Output = Decision> + 'a {
        match self {
            Decided::Now(decision) => Either::Left(std::future::ready(decision)),
            Decided::Run(run) => Either::Right(run.run()),
        }
    }
}

/// Decides `entry`. Takes its fields (a dead letter carries them in its verdict).
///
/// Everything before the handler runs is done here, synchronously, so the future that
/// waits for the handler holds only what the run needs: an `async fn` doing both would
/// also keep room for the decoded event twice (once before it moved into the run), and a
/// larger future costs a slower allocation per event.
pub(crate) fn decide<'a>(decider: &'a Decider, entry: &'a mut Entry) -> Decided<'a> {
    let stream_type = if entry.stream == decider.redeliver {
        None
    } else {
        decider.keys.type_of_stream(&entry.stream)
    };
    match envelope::decode_or_return(std::mem::take(&mut entry.fields), stream_type) {
        Ok(event) => {
            if stream_type.is_some() && event.attempt == 0 {
                count_dropped_fields(decider, &event);
            }
            decide_event(decider, entry, event)
        }
        Err((malformed, fields)) => {
            let label = stream_type.map_or("other", |t| decider.type_facts.label(t));
            warn!(stream = %entry.stream, entry_id = %entry.id, group = decider.group.as_str(), error = %malformed, "malformed entry dead-lettered");
            let attempts = envelope::lookup(&fields, field::ATTEMPT)
                .and_then(|a| a.parse().ok())
                .unwrap_or(0u32);
            let id = truncate(
                envelope::lookup(&fields, field::ID).unwrap_or_default(),
                256,
            );
            let record = Record::new(
                kind::DEAD_LETTERED,
                &id,
                label,
                decider.group.clone(),
                None,
                attempts,
                Reason::Malformed.as_str(),
            );
            let origin_stream = entry.stream.to_string();
            let verdict = dead_letter(
                Reason::Malformed,
                malformed.0,
                attempts,
                label,
                origin_stream,
                envelope::owned_fields(&fields),
            );
            Decided::Now(Decision {
                verdict,
                record: Some(Box::new(record)),
            })
        }
    }
}

/// Counts the fields of `event` that HTTP handlers will not receive (first read from the
/// type stream only) and logs them once per type per process.
fn count_dropped_fields(decider: &Decider, event: &Event) {
    let dropped = event.dropped_fields();
    if dropped.is_empty() {
        return;
    }
    let label = decider.type_facts.label(&event.event_type);
    decider
        .fields_dropped
        .with_label_values(&[&decider.env, label])
        .inc_by(dropped.len() as u64);
    static LOGGED: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
    let mut logged = LOGGED
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if logged.len() < 1000 && !logged.iter().any(|t| *t == event.event_type) {
        logged.push(event.event_type.to_string());
        let names: Vec<String> = dropped
            .iter()
            .map(|k| format!("`{}`", truncate(k, 64)))
            .collect();
        warn!(r#type = %event.event_type, fields = %names.join(", "), "event fields not passed on to HTTP handlers (extension names are 1 to 20 characters of a-z and 0-9 and not reserved; traceparent must be W3C trace context); counted in event_worker_fields_dropped_total, logged once per type");
    }
}

/// A dead-letter verdict.
fn dead_letter(
    reason: Reason,
    error: String,
    attempts: u32,
    type_label: &str,
    origin_stream: String,
    original: Vec<(String, String)>,
) -> Verdict {
    Verdict::Move(Move::DeadLetter(DeadLetter {
        reason,
        error,
        attempts,
        origin_stream,
        type_label: type_label.to_string(),
        original,
    }))
}

/// The history record of `event` for a step of `kind`; `attempt` is the handler runs so far,
/// this step's included (a dead letter's is its `dlq_attempts`).
fn record(
    decider: &Decider,
    event: &Event,
    kind: &'static str,
    attempt: u32,
    detail: &str,
) -> Record {
    Record::new(
        kind,
        event.id.clone(),
        event.event_type.clone(),
        decider.group.clone(),
        event.correlation_id(),
        attempt,
        detail,
    )
}

/// Dead-letters `event` for `reason`: the verdict and its `dead_lettered` record.
fn dead(
    decider: &Decider,
    event: Event,
    facts: &TypeFacts,
    reason: Reason,
    error: String,
    attempts: u32,
) -> Decision {
    let record = record(
        decider,
        &event,
        kind::DEAD_LETTERED,
        attempts,
        reason.as_str(),
    );
    let origin_stream = decider.keys.stream(&event.event_type);
    let verdict = dead_letter(
        reason,
        error,
        attempts,
        &facts.label,
        origin_stream,
        envelope::owned_fields(&event.fields),
    );
    Decision {
        verdict,
        record: Some(Box::new(record)),
    }
}

/// Decides a decoded event: poison and unroutable events are dead-lettered, an open
/// breaker reschedules it, otherwise the handler's outcome decides.
fn decide_event<'a>(decider: &'a Decider, entry: &'a Entry, event: Event) -> Decided<'a> {
    let facts = decider.type_facts.get(&decider.routes, &event.event_type);
    // A debug-level span: handler code logging at debug sees the event context; the lines
    // this module logs at info and above carry the fields themselves (cheaper per event).
    let span = tracing::debug_span!("event", id = %event.id, r#type = %event.event_type, group = decider.group.as_str(), attempt = event.attempt, correlation_id = event.correlation_id().unwrap_or(""));
    let enter = span.enter();
    if entry.deliveries > decider.max_deliveries {
        let error = format!(
            "delivered {} times (max_deliveries = {}); the handler was not run again",
            entry.deliveries, decider.max_deliveries
        );
        event_log!(
            warn,
            event,
            decider,
            deliveries = entry.deliveries,
            "poison event dead-lettered"
        );
        let attempts = event.attempt;
        return Decided::Now(dead(
            decider,
            event,
            &facts,
            Reason::MaxDeliveriesExceeded,
            error,
            attempts,
        ));
    }
    let Some(route_index) = facts.route else {
        return Decided::Now(no_route(decider, entry, event, &facts));
    };
    let route = &decider.routes[route_index];
    let admission = route.breaker.admit();
    if let Admission::Rejected(wait) = admission {
        decider
            .breaker_rejected
            .with_label_values(&[&decider.env, route.breaker.name()])
            .inc();
        debug!(
            wait_ms = wait.as_millis() as u64,
            "breaker open; rescheduled without using an attempt"
        );
        let retry = Retry {
            fields: next_fields(&event, entry, event.attempt, None),
            delay_ms: wait.as_millis() as u64,
            counted_in: None,
        };
        return Decided::Now(Decision {
            verdict: Verdict::Move(Move::Retry(retry)),
            record: None,
        });
    }
    drop(enter);
    Decided::Run(HandlerRun {
        decider,
        entry,
        event,
        facts,
        route,
        admission,
        span,
    })
}

/// An event admitted to its route's handler: what running it and judging the outcome need.
pub(crate) struct HandlerRun<'a> {
    decider: &'a Decider,
    entry: &'a Entry,
    event: Event,
    facts: Arc<TypeFacts>,
    route: &'a Route,
    admission: Admission,
    span: tracing::Span,
}

impl HandlerRun<'_> {
    /// Runs the handler, records its time and the breaker's view, and judges the outcome.
    /// (An `async` block using `self` in place: an `async fn` would keep a second copy of
    /// its argument, and taking `self` apart would copy its parts.)
    #[expect(
        clippy::manual_async_fn,
        reason = "an async fn would store `self` twice"
    )]
    fn run(self) -> impl Future<Output = Decision> {
        async move {
            let started = Instant::now();
            let outcome = run_handler(self.route, &self.event, &self.span).await;
            let _enter = self.span.enter();
            self.facts
                .handler_duration
                .observe(started.elapsed().as_secs_f64());
            self.route.breaker.record(
                self.admission,
                matches!(outcome, Outcome::Retry { .. }),
                self.event.attempt == 0,
            );
            judge(self.decider, self.entry, self.event, self.facts, outcome)
        }
    }
}

/// Runs the route's handler on `event` within its timeout (a self-timed handler keeps it
/// itself: no timer per event). A panic in `handle` itself (before it returns its future)
/// or inside the future, and a timeout, are retryable failures.
async fn run_handler(route: &Route, event: &Event, span: &tracing::Span) -> Outcome {
    let run = async {
        match std::panic::catch_unwind(AssertUnwindSafe(|| route.handler.handle(event))) {
            Ok(future) => AssertUnwindSafe(future).catch_unwind().await,
            Err(panic) => Err(panic),
        }
    };
    let timed = match route.self_timed {
        true => Either::Left(run.map(Ok::<_, tokio::time::error::Elapsed>)),
        false => Either::Right(tokio::time::timeout(route.timeout, run)),
    };
    match timed.instrument_in(span).await {
        Ok(Ok(outcome)) => outcome,
        Ok(Err(_panic)) => Outcome::retry("handler panicked"),
        Err(_) => Outcome::retry(format!("handler timed out after {:?}", route.timeout)),
    }
}

/// The verdict on the handler's `outcome`: ack, retry while attempts remain, or dead-letter.
fn judge(
    decider: &Decider,
    entry: &Entry,
    mut event: Event,
    facts: Arc<TypeFacts>,
    outcome: Outcome,
) -> Decision {
    let runs = event.attempt + 1;
    match outcome {
        Outcome::Success => {
            let origin =
                envelope::lookup(&event.fields, field::ORIGIN_ENTRY_ID).unwrap_or(&entry.id);
            // One clock read for the end-to-end time and the record's stamp.
            let now = now_ms();
            if let Some(ms) = entry_id_ms(origin) {
                let secs = now.saturating_sub(ms) as f64 / 1000.0;
                facts.end_to_end.observe(secs);
            }
            debug!("handled");
            // The event ends here: its id and type move into the record instead of copies.
            let record = Record::processed(
                std::mem::take(&mut event.id),
                std::mem::take(&mut event.event_type),
                decider.group.clone(),
                envelope::lookup(&event.fields, field::CORRELATIONID),
                runs,
                now,
            );
            Decision {
                record: Some(Box::new(record)),
                verdict: Verdict::Ack { facts },
            }
        }
        Outcome::Retry { error, retry_after } if runs < decider.retry.max_attempts() => {
            let delay = decider.retry.delay_honouring(runs, retry_after);
            event_log!(info, event, decider, error = %error, delay_ms = delay.as_millis() as u64, "handler failed; retry scheduled");
            let detail = format!(
                "retry in {}ms: {}",
                delay.as_millis(),
                truncate(&error, 200)
            );
            let retry = Retry {
                fields: next_fields(&event, entry, runs, None),
                delay_ms: delay.as_millis() as u64,
                counted_in: Some(facts.retried.clone()),
            };
            Decision {
                record: Some(Box::new(record(
                    decider,
                    &event,
                    kind::RETRIED,
                    runs,
                    &detail,
                ))),
                verdict: Verdict::Move(Move::Retry(retry)),
            }
        }
        Outcome::Retry { error, .. } => {
            event_log!(warn, event, decider, error = %error, "handler failed; attempts used up, dead-lettered");
            dead(
                decider,
                event,
                &facts,
                Reason::MaxAttemptsExceeded,
                error,
                runs,
            )
        }
        Outcome::Permanent { error } => {
            event_log!(warn, event, decider, error = %error, "handler failed permanently; dead-lettered");
            dead(decider, event, &facts, Reason::PermanentError, error, runs)
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

/// An event no route of this consumer serves: handed on (back to the retry set, no attempt
/// used) until `no_route_grace` has passed since a consumer first met it without a route
/// (its `unrouted_since`), then dead-lettered as `no_route`.
fn no_route(decider: &Decider, entry: &Entry, event: Event, facts: &TypeFacts) -> Decision {
    let now = now_ms();
    // Another worker's clock may be ahead: a `since` in the future counts as now.
    let since =
        envelope::lookup(&event.fields, field::UNROUTED_SINCE).and_then(|s| s.parse::<u64>().ok());
    let grace = decider.no_route_grace;
    if now.saturating_sub(since.unwrap_or(now)) >= grace.as_millis() as u64 {
        let error = format!(
            "no route serves type `{}`: the consumers of group `{}` that read it from {} on \
             had none for no_route_grace ({}); deploy a route for this type to every \
             instance of the group, then replay",
            event.event_type,
            decider.group,
            rfc3339(since.unwrap_or(now)),
            crate::config::format_duration(grace),
        );
        event_log!(warn, event, decider, "{error}; dead-lettered");
        let attempts = event.attempt;
        return dead(decider, event, facts, Reason::NoRoute, error, attempts);
    }
    if since.is_none() {
        event_log!(info, event, decider, grace = %crate::config::format_duration(grace), "no route on this consumer serves the type; handed on to the group's other consumers (no attempt used), dead-lettered as no_route if none serves it within no_route_grace");
    } else {
        debug!("no route on this consumer serves the type; handed on again");
    }
    let jitter = rand::thread_rng().gen_range(0..=HAND_ON_DELAY.as_millis() as u64 / 4);
    let retry = Retry {
        fields: next_fields(&event, entry, event.attempt, Some(since.unwrap_or(now))),
        delay_ms: HAND_ON_DELAY.as_millis() as u64 + jitter,
        counted_in: Some(decider.handed_on.clone()),
    };
    Decision {
        verdict: Verdict::Move(Move::Retry(retry)),
        record: None,
    }
}

/// The event's fields for its next delivery: `attempt` set, `origin_entry_id` kept, and
/// `unrouted_since` set when handed on for want of a route (dropped otherwise: a consumer
/// with a route met it, so a later one without starts a new grace period).
fn next_fields(
    event: &Event,
    entry: &Entry,
    attempt: u32,
    unrouted_since: Option<u64>,
) -> Vec<(String, String)> {
    let origin = envelope::lookup(&event.fields, field::ORIGIN_ENTRY_ID)
        .unwrap_or(&entry.id)
        .to_string();
    let mut fields: Vec<(String, String)> = event
        .fields
        .iter()
        .filter(|(k, _)| {
            k != field::ATTEMPT && k != field::ORIGIN_ENTRY_ID && k != field::UNROUTED_SINCE
        })
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    fields.push((field::ATTEMPT.to_string(), attempt.to_string()));
    fields.push((field::ORIGIN_ENTRY_ID.to_string(), origin));
    if let Some(since) = unrouted_since {
        fields.push((field::UNROUTED_SINCE.to_string(), since.to_string()));
    }
    fields
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(fields: &[(&str, &str)]) -> (Event, Entry) {
        let fields: Vec<(Text, Text)> = fields
            .iter()
            .map(|(k, v)| ((*k).into(), (*v).into()))
            .collect();
        let entry = Entry {
            stream: "events:p:redeliver:g".into(),
            id: "9-0".into(),
            fields: Vec::new(),
            deliveries: 1,
        };
        (envelope::decode(fields, None).unwrap(), entry)
    }

    #[test]
    fn a_hand_on_keeps_the_attempt_and_the_first_unrouted_time_a_retry_drops_it() {
        let (e, entry) = event(&[
            ("id", "x"),
            ("type", "b"),
            ("data", "{}"),
            ("attempt", "1"),
            ("origin_entry_id", "1-0"),
            ("unrouted_since", "500"),
        ]);
        let handed = next_fields(&e, &entry, e.attempt, Some(500));
        assert_eq!(envelope::lookup(&handed, field::ATTEMPT), Some("1"));
        assert_eq!(
            envelope::lookup(&handed, field::ORIGIN_ENTRY_ID),
            Some("1-0")
        );
        assert_eq!(
            envelope::lookup(&handed, field::UNROUTED_SINCE),
            Some("500")
        );
        assert_eq!(
            handed
                .iter()
                .filter(|(k, _)| k == field::UNROUTED_SINCE)
                .count(),
            1
        );
        let retried = next_fields(&e, &entry, 2, None);
        assert_eq!(envelope::lookup(&retried, field::ATTEMPT), Some("2"));
        assert_eq!(envelope::lookup(&retried, field::UNROUTED_SINCE), None);
    }
}
