//! Batched HTTP delivery (a route's `batch = { max_events, max_wait }`): one POST of
//! `application/cloudevents-batch+json` (a JSON array of the CloudEvents the per-event mode
//! would send) carries several events, and the answer gives a result per event:
//!
//! ```json
//! {"results":[{"id":"e-1","status":"ok"},
//!             {"id":"e-2","status":"permanent","error":"unknown customer c-9"},
//!             {"id":"e-3","status":"retry","error":"inventory busy","retry_after":5}]}
//! ```
//!
//! The handler is still called once per event (the worker's decide, breaker and settle steps
//! are unchanged); each call adds its event to the batch being collected and waits for its own
//! result. The first event of a batch leads it: it lets the other events of the same poll pass
//! join (one `yield`), waits up to `max_wait` more, then sends the batch on its own task; a
//! batch that reaches `max_events` is sent at once by the event that filled it. If the leader's
//! run is dropped (shutdown), its batch is sent anyway. The route's `timeout` is kept per
//! batch, not per event: the answer is awaited until the first event's start plus the
//! timeout (the others started later), then every event of the batch is retried.
//!
//! Each event's [`Outcome`]: `ok` is success, `retry` retryable (with `retry_after` seconds
//! honoured), `permanent` dead-letters; an event without a result, a result status other than
//! those three, or a 2xx answer whose body is not such an object is retried. A non-2xx answer
//! or a transport error applies to every event of the batch, as in the per-event mode.

use std::borrow::Cow;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Deserialize;
use tokio::sync::oneshot;

use super::client::{self, ERROR_BODY_BYTES, Endpoint};
use super::handler::{BoxFuture, Handler, Outcome};
use crate::config::BatchConfig;
use crate::model::envelope::{Event, truncate};
use crate::model::text::Text;

/// Content type of a batch request.
pub const BATCH_CONTENT_TYPE: &str = "application/cloudevents-batch+json";

/// Most bytes of a batch answer read (a larger answer counts as invalid: all retried).
const MAX_ANSWER_BYTES: usize = 1024 * 1024;

/// Delivers events of an `http` route in batches; see the module documentation.
pub struct BatchHandler {
    shared: Arc<Shared>,
}

/// What the handler's calls and the send tasks share.
struct Shared {
    endpoint: Endpoint,
    config: BatchConfig,
    /// The route's timeout: a batch is answered within it from its first event's start (the
    /// events' runs have no timer of their own; the route is self-timed).
    timeout: Duration,
    pending: Mutex<Pending>,
}

/// The batch being collected.
#[derive(Default)]
struct Pending {
    /// Bumped each time a batch is taken, so a leader knows whether its batch left.
    generation: u64,
    /// `[` and the events so far, separated by commas.
    body: Vec<u8>,
    /// Each event's id and where its result goes, in body order.
    waiters: Vec<(Text, oneshot::Sender<Outcome>)>,
    /// When the first event joined (its run started then; the others' later).
    opened: Option<Instant>,
}

/// A batch on its way.
struct Batch {
    body: Vec<u8>,
    waiters: Vec<(Text, oneshot::Sender<Outcome>)>,
    /// When its first event's run started: the request must be answered by then plus the
    /// route's timeout, so every event's run ends within the timeout.
    opened: Instant,
}

impl Pending {
    /// Adds `event` (its CloudEvent straight into the body) whose result goes to `tx`;
    /// true when it is the first of its batch.
    fn add(&mut self, event: &Event, tx: oneshot::Sender<Outcome>) -> bool {
        let first = self.waiters.is_empty();
        if first {
            self.opened = Some(Instant::now());
        }
        self.body.push(if first { b'[' } else { b',' });
        event.write_decoded_cloudevent_json(&mut self.body);
        self.waiters.push((event.id.clone(), tx));
        first
    }

    /// Takes the batch collected so far (closing its JSON array).
    fn take(&mut self) -> Batch {
        self.generation += 1;
        let capacity = self.body.capacity();
        let mut body = std::mem::replace(&mut self.body, Vec::with_capacity(capacity));
        body.push(b']');
        Batch {
            body,
            waiters: std::mem::take(&mut self.waiters),
            opened: self.opened.take().unwrap_or_else(Instant::now),
        }
    }
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sends the batch of `generation` if it is still being collected.
    fn flush(self: &Arc<Self>, generation: u64) {
        let batch = {
            let mut p = self.lock();
            (p.generation == generation && !p.waiters.is_empty()).then(|| p.take())
        };
        if let Some(batch) = batch {
            self.spawn_send(batch);
        }
    }

    /// Sends `batch` on its own task (so no single event's run, when dropped, cancels it).
    fn spawn_send(self: &Arc<Self>, batch: Batch) {
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            let shared = Arc::clone(self);
            rt.spawn(async move { shared.send(batch).await });
        }
        // Without a runtime the waiters are dropped: their events are retried.
    }

    async fn send(&self, batch: Batch) {
        let deadline = tokio::time::Instant::from_std(batch.opened + self.timeout);
        let answer = tokio::time::timeout_at(deadline, self.exchange(batch.body)).await;
        let answer = answer.unwrap_or_else(|_| {
            Err(Outcome::retry(format!(
                "http batch: no answer within {:?}",
                self.timeout
            )))
        });
        // The results borrow their strings from the answer's body where they can.
        let results = match &answer {
            Ok((code, body)) => parse_results(*code, body),
            Err(all) => Err(all.clone()),
        };
        distribute(batch.waiters, results.as_deref());
    }

    /// POSTs `body`; the 2xx answer's status code and body, or the outcome of every event.
    async fn exchange(&self, body: Vec<u8>) -> Result<(u16, Vec<u8>), Outcome> {
        let answer = self
            .endpoint
            .exchange(body, None, MAX_ANSWER_BYTES + 1)
            .await?;
        if !answer.status.is_success() {
            return Err(client::status_failure(
                answer.status,
                &answer.headers,
                &answer.body,
            ));
        }
        Ok((answer.status.as_u16(), answer.body))
    }
}

/// One entry of the answer's `results` (strings borrowed from the body unless escaped).
#[derive(Debug, Deserialize)]
struct EventResult<'a> {
    #[serde(borrow)]
    id: Cow<'a, str>,
    #[serde(borrow)]
    status: Cow<'a, str>,
    #[serde(default, borrow)]
    error: Option<Cow<'a, str>>,
    #[serde(default)]
    retry_after: Option<u64>,
}

/// The answer's body: `{"results":[...]}` (other keys are ignored).
#[derive(Deserialize)]
struct Answer<'a> {
    #[serde(borrow)]
    results: Vec<EventResult<'a>>,
}

/// The results of a 2xx answer with status `code`, or the retry of every event when the
/// body is not a results object.
fn parse_results(code: u16, body: &[u8]) -> Result<Vec<EventResult<'_>>, Outcome> {
    if body.len() > MAX_ANSWER_BYTES {
        return Err(Outcome::retry(format!(
            "http batch: the answer (status {code}) is larger than {MAX_ANSWER_BYTES} bytes; \
             every event of the batch is retried"
        )));
    }
    serde_json::from_slice::<Answer>(body)
        .map(|a| a.results)
        .map_err(|e| {
            Outcome::retry(format!(
                "http batch: the answer (status {code}) is not {{\"results\":[...]}} ({e}); \
                 every event of the batch is retried"
            ))
        })
}

/// The outcome of one result.
fn outcome(r: &EventResult<'_>) -> Outcome {
    let error = |status: &str| match r.error.as_deref().map(str::trim) {
        Some(e) if !e.is_empty() => {
            format!(
                "http batch result {status}: {}",
                truncate(e, ERROR_BODY_BYTES)
            )
        }
        _ => format!("http batch result {status}"),
    };
    match &*r.status {
        "ok" => Outcome::Success,
        "retry" => Outcome::Retry {
            error: error("retry"),
            retry_after: r.retry_after.map(Duration::from_secs),
        },
        "permanent" => Outcome::Permanent {
            error: error("permanent"),
        },
        other => Outcome::retry(format!(
            "http batch: result status `{}` for event {} is not ok, retry or permanent",
            truncate(other, 40),
            truncate(&r.id, 100)
        )),
    }
}

/// Sends each waiter its outcome: its result by id (in order when an id repeats), or the
/// outcome of the whole batch. Results in the batch's order (what handlers usually answer)
/// are matched by position, without an index.
fn distribute(
    waiters: Vec<(Text, oneshot::Sender<Outcome>)>,
    results: Result<&[EventResult<'_>], &Outcome>,
) {
    match results {
        Err(all) => {
            for (_, tx) in waiters {
                let _ = tx.send(all.clone());
            }
        }
        Ok(results)
            if results.len() == waiters.len()
                && results
                    .iter()
                    .zip(&waiters)
                    .all(|(r, (id, _))| *r.id == **id) =>
        {
            for (r, (_, tx)) in results.iter().zip(waiters) {
                let _ = tx.send(outcome(r));
            }
        }
        Ok(results) => {
            let mut by_id: HashMap<&str, VecDeque<&EventResult<'_>>> = HashMap::new();
            for r in results {
                by_id.entry(&r.id).or_default().push_back(r);
            }
            for (id, tx) in waiters {
                let outcome = match by_id.get_mut(id.as_str()).and_then(VecDeque::pop_front) {
                    Some(r) => outcome(r),
                    None => Outcome::retry(format!(
                        "http batch: the answer has no result for event {}",
                        truncate(&id, 100)
                    )),
                };
                let _ = tx.send(outcome);
            }
        }
    }
}

/// Sends the leader's batch when the leader's run ends before it did (dropped).
struct FlushOnDrop {
    shared: Arc<Shared>,
    generation: Option<u64>,
}

impl Drop for FlushOnDrop {
    fn drop(&mut self) {
        if let Some(g) = self.generation.take() {
            self.shared.flush(g);
        }
    }
}

impl BatchHandler {
    /// A handler batching events to `endpoint` (built with [`BATCH_CONTENT_TYPE`]).
    pub(crate) fn new(endpoint: Endpoint, config: BatchConfig, timeout: Duration) -> Self {
        BatchHandler {
            shared: Arc::new(Shared {
                endpoint,
                config,
                timeout,
                pending: Mutex::new(Pending::default()),
            }),
        }
    }

    async fn deliver(&self, event: &Event) -> Outcome {
        let shared = &self.shared;
        let (tx, mut rx) = oneshot::channel();
        let (lead, full) = {
            let mut p = shared.lock();
            let lead = p.add(event, tx).then_some(p.generation);
            let full = (p.waiters.len() >= shared.config.max_events).then(|| p.take());
            (lead, full)
        };
        if let Some(batch) = full {
            shared.spawn_send(batch);
        }
        if lead.is_some() {
            let mut guard = FlushOnDrop {
                shared: Arc::clone(shared),
                generation: lead,
            };
            // The other events of this poll pass (one read's batch) join first.
            tokio::task::yield_now().await;
            let wait = shared.config.max_wait;
            if !wait.is_zero() {
                tokio::select! {
                    r = &mut rx => {
                        guard.generation = None;
                        return r.unwrap_or_else(|_| lost());
                    }
                    () = tokio::time::sleep(wait) => {}
                }
            }
            drop(guard); // sends the batch if it is still being collected
        }
        rx.await.unwrap_or_else(|_| lost())
    }
}

/// The outcome of an event whose batch ended without a result for it.
fn lost() -> Outcome {
    Outcome::retry("http batch: the request ended without a result for this event")
}

impl Handler for BatchHandler {
    fn handle<'a>(&'a self, event: &'a Event) -> BoxFuture<'a, Outcome> {
        Box::pin(self.deliver(event))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn results(body: &str) -> Result<Vec<Outcome>, Outcome> {
        parse_results(200, body.as_bytes()).map(|r| r.iter().map(outcome).collect())
    }

    #[test]
    fn results_map_to_outcomes() {
        let got = results(
            r#"{"results":[{"id":"a","status":"ok","error":"ignored"},
            {"id":"b","status":"permanent","error":" unknown customer "},
            {"id":"c","status":"retry","retry_after":5},{"id":"d","status":"later"}],"x":1}"#,
        )
        .unwrap();
        assert_eq!(
            got,
            vec![
                Outcome::Success,
                Outcome::permanent("http batch result permanent: unknown customer"),
                Outcome::Retry {
                    error: "http batch result retry".into(),
                    retry_after: Some(Duration::from_secs(5))
                },
                Outcome::retry(
                    "http batch: result status `later` for event d is not ok, retry or permanent"
                ),
            ]
        );
        assert_eq!(
            results("ok").unwrap_err(),
            Outcome::retry(
                "http batch: the answer (status 200) is not {\"results\":[...]} \
                 (expected value at line 1 column 1); every event of the batch is retried"
            )
        );
    }

    #[test]
    fn a_batch_body_is_the_per_event_bodies_in_a_json_array() {
        let event = |id: &str, data: &str| Event {
            id: id.into(),
            event_type: "a.b".into(),
            data: data.into(),
            attempt: 1,
            fields: vec![
                ("id".into(), id.into()),
                ("tenant".into(), "acme".into()),
                ("data".into(), data.into()),
            ],
        };
        let (a, b) = (event("e-1", r#"{"x": [1, 2]}"#), event("e\\u{1}2", "7"));
        let mut p = Pending::default();
        assert!(p.add(&a, oneshot::channel().0));
        assert!(!p.add(&b, oneshot::channel().0));
        let batch = p.take();
        let mut expect = b"[".to_vec();
        expect.extend(a.to_cloudevent_json());
        expect.push(b',');
        expect.extend(b.to_cloudevent_json());
        expect.push(b']');
        assert_eq!(
            String::from_utf8(batch.body).unwrap(),
            String::from_utf8(expect).unwrap()
        );
        assert_eq!((p.generation, p.body.len(), p.waiters.len()), (1, 0, 0));
    }

    /// The outcome each of a batch of events with `ids` gets from `results`.
    fn distributed(ids: &[&str], results: Result<&[EventResult<'_>], &Outcome>) -> Vec<Outcome> {
        let (waiters, rxs): (Vec<_>, Vec<_>) = ids
            .iter()
            .map(|id| {
                let (tx, rx) = oneshot::channel();
                ((Text::from(*id), tx), rx)
            })
            .unzip();
        distribute(waiters, results);
        rxs.into_iter()
            .map(|mut rx| rx.try_recv().unwrap())
            .collect()
    }

    #[test]
    fn results_in_batch_order_and_out_of_order_give_the_same_outcomes() {
        let body_in_order = r#"{"results":[{"id":"a","status":"ok"},{"id":"b","status":"permanent"},{"id":"c","status":"ok"}]}"#;
        let body_shuffled = r#"{"results":[{"id":"c","status":"ok"},{"id":"a","status":"ok"},{"id":"b","status":"permanent"}]}"#;
        for body in [body_in_order, body_shuffled] {
            let results = parse_results(200, body.as_bytes()).unwrap();
            assert_eq!(
                distributed(&["a", "b", "c"], Ok(&results)),
                vec![
                    Outcome::Success,
                    Outcome::permanent("http batch result permanent"),
                    Outcome::Success,
                ],
                "{body}"
            );
        }
    }

    #[test]
    fn results_go_by_id_in_order_and_missing_ones_are_retried() {
        let r = |id: &'static str, status: &'static str| EventResult {
            id: id.into(),
            status: status.into(),
            error: None,
            retry_after: None,
        };
        let results = [r("y", "ok"), r("x", "permanent"), r("x", "ok")];
        assert_eq!(
            distributed(&["x", "y", "x", "z"], Ok(&results)),
            vec![
                Outcome::permanent("http batch result permanent"),
                Outcome::Success,
                Outcome::Success,
                Outcome::retry("http batch: the answer has no result for event z"),
            ]
        );
    }
}
