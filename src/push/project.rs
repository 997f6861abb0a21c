//! The projector: a built-in [`Handler`] that appends each consumed event to the channels
//! its rules name. It runs in an internal consumer group of its own (`push.group`, default
//! `push`) hosted by the daemon beside the worker (see `worker::projector`), so an event is
//! projected when that group reads it, independently of the apps' handlers: projection
//! neither waits for them nor repeats when a second app group consumes the same type. The
//! worker machinery gives it batched reads, retries (a Redis error is retried), the DLQ,
//! reclaim and heartbeats; the append script's dedup makes every redelivery append nothing.
//!
//! Batching: the worker reads up to [`BATCH`] events at a time and calls the handler for
//! them in stream order, one read batch after the other (its ordered dispatch). The handler
//! only queues each event (synchronously, so the queue keeps that order) and waits for its
//! result; one appender task takes everything queued, groups it by channel (keeping the
//! order) and makes one append script call per channel, all channels' calls pipelined on one
//! connection, then one `ZADD` of the channel index. A failed call is retried in place for
//! up to [`INLINE_RETRY`] (the events from the failing one on were not appended, so nothing
//! later overtakes them on that channel) before its events go to the retry set.

use std::collections::HashMap;

use tokio::sync::{mpsc, oneshot};

use crate::config::Config;
use crate::deliver::handler::{BoxFuture, Handler, Outcome};
use crate::metrics::Metrics;
use crate::model::envelope::{Event, field};
use crate::model::keys::Keys;
use crate::push::rules::Rules;
use crate::redis::push::PushStore;
use crate::redis::store::{Store, StoreError};

/// Events the projector reads and handles at a time (its `concurrency`).
pub const BATCH: usize = 256;

/// Most events one appender pass takes (a read of several streams can return [`BATCH`] from
/// each).
const MAX_PASS: usize = 4 * BATCH;

/// How long a failed append is retried in place (the events of its channel from it on wait,
/// so the channel keeps stream order); past it, the worker's retry takes over.
pub const INLINE_RETRY: std::time::Duration = std::time::Duration::from_secs(30);

/// One event waiting to be appended.
struct Request {
    id: String,
    channels: Vec<String>,
    message: String,
    done: oneshot::Sender<Result<(), String>>,
}

/// The projecting handler.
pub struct Projector {
    rules: Rules,
    queue: mpsc::UnboundedSender<Request>,
    metrics: Metrics,
    env: String,
}

impl Projector {
    /// A projector for `rules`, with its appender task (which connects to Redis with
    /// `config` at the first event and ends when the projector is dropped).
    pub fn start(rules: Rules, config: Config, metrics: Metrics) -> Projector {
        let (queue, rx) = mpsc::unbounded_channel();
        let env = config.env.clone();
        let appender = Appender {
            rx,
            store: None,
            config,
            metrics: metrics.clone(),
        };
        tokio::spawn(appender.run());
        Projector {
            rules,
            queue,
            metrics,
            env,
        }
    }
}

impl Handler for Projector {
    fn handle<'a>(&'a self, event: &'a Event) -> BoxFuture<'a, Outcome> {
        // Queued here, not in the future: the calls come in stream order, and so does the queue.
        let (channels, skipped) = self.rules.channels(event);
        if skipped > 0 {
            self.metrics
                .push_rules_skipped_total
                .with_label_values(&[&self.env])
                .inc_by(skipped);
        }
        if channels.is_empty() {
            return Box::pin(async { Outcome::Success });
        }
        let (done, result) = oneshot::channel();
        let request = Request {
            id: event.id.to_string(),
            channels,
            message: message(event),
            done,
        };
        // A send fails only when the appender is gone: the reply then fails as well.
        let _ = self.queue.send(request);
        Box::pin(async move {
            match result.await {
                Ok(Ok(())) => Outcome::Success,
                Ok(Err(e)) => Outcome::retry(e),
                Err(_) => Outcome::retry("push: the projector stopped before appending the event"),
            }
        })
    }
}

/// The task that appends what the handler queued, one pass at a time.
struct Appender {
    rx: mpsc::UnboundedReceiver<Request>,
    store: Option<PushStore>,
    config: Config,
    metrics: Metrics,
}

impl Appender {
    /// Appends pass after pass until the projector is dropped.
    async fn run(mut self) {
        while let Some(first) = self.rx.recv().await {
            let mut pass = vec![first];
            // The rest of the read batch is queued in the same poll of its task.
            tokio::task::yield_now().await;
            while pass.len() < MAX_PASS {
                match self.rx.try_recv() {
                    Ok(r) => pass.push(r),
                    Err(_) => break,
                }
            }
            let results = self.append_pass(&pass).await;
            for (request, result) in pass.into_iter().zip(results) {
                let _ = request.done.send(result);
            }
        }
    }

    /// Redis, connected at the first pass (and again after a failed connect).
    async fn store(&mut self) -> Result<&PushStore, StoreError> {
        if self.store.is_none() {
            let store = Store::connect(&self.config, &self.config.consumer).await?;
            let keys = Keys::new(&self.config.env);
            self.store = Some(PushStore::new(store, keys, &self.config.push));
        }
        Ok(self.store.as_ref().expect("connected above"))
    }

    /// Appends `pass`: one script call per channel (its events in queue order), all at once,
    /// then one `ZADD` of the index. One result per request.
    async fn append_pass(&mut self, pass: &[Request]) -> Vec<Result<(), String>> {
        let env = self.config.env.clone();
        let metrics = self.metrics.clone();
        let store = match self.store().await {
            Ok(s) => s,
            Err(e) => return pass.iter().map(|_| Err(format!("push: {e}"))).collect(),
        };
        let mut order: Vec<&str> = Vec::new();
        let mut by_channel: HashMap<&str, Vec<usize>> = HashMap::new();
        for (i, r) in pass.iter().enumerate() {
            for c in &r.channels {
                let list = by_channel.entry(c.as_str()).or_insert_with(|| {
                    order.push(c.as_str());
                    Vec::new()
                });
                list.push(i);
            }
        }
        let calls = order.iter().map(|&c| {
            let events: Vec<(&str, &str)> = by_channel[c]
                .iter()
                .map(|&i| (pass[i].id.as_str(), pass[i].message.as_str()))
                .collect();
            async move { append_retrying(store, c, &events).await }
        });
        let outcomes = futures::future::join_all(calls).await;
        let mut results: Vec<Result<(), String>> = pass.iter().map(|_| Ok(())).collect();
        let mut touched = Vec::new();
        let (mut appended, mut duplicate) = (0u64, 0u64);
        for (&c, outcome) in order.iter().zip(outcomes) {
            match outcome {
                Ok(done) => {
                    let n = done.iter().filter(|a| a.appended).count() as u64;
                    (appended, duplicate) = (appended + n, duplicate + done.len() as u64 - n);
                    if n > 0 {
                        touched.push(c.to_string());
                    }
                }
                Err(e) => {
                    for &i in &by_channel[c] {
                        if results[i].is_ok() {
                            results[i] = Err(format!("push: {e}"));
                        }
                    }
                }
            }
        }
        let counter = |result: &str| {
            metrics
                .push_appended_total
                .with_label_values(&[&env, result])
        };
        counter("appended").inc_by(appended);
        counter("duplicate").inc_by(duplicate);
        if let Err(e) = store.keep_budget(&touched).await {
            for (i, r) in pass.iter().enumerate() {
                if results[i].is_ok() && r.channels.iter().any(|c| touched.contains(c)) {
                    results[i] = Err(format!("push: {e}"));
                }
            }
        }
        results
    }
}

/// Appends `events` to `channel`, retrying Redis errors in place (100 ms doubling to 2 s)
/// for [`INLINE_RETRY`]; a retry appends again only what is not there yet (the dedup).
async fn append_retrying(
    store: &PushStore,
    channel: &str,
    events: &[(&str, &str)],
) -> Result<Vec<crate::redis::push::Appended>, StoreError> {
    let give_up = tokio::time::Instant::now() + INLINE_RETRY;
    let mut pause = std::time::Duration::from_millis(100);
    loop {
        match store.append_many(channel, events).await {
            Err(e) if tokio::time::Instant::now() + pause < give_up => {
                tracing::warn!(channel, events = events.len(), error = %e, "push: appending to a channel failed; retrying in place (its later events wait)");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(std::time::Duration::from_secs(2));
            }
            other => return other,
        }
    }
}

/// The JSON apps receive for `event`: id, type, source, time, subject (when set) and data
/// (JSON as is; other text as a string).
pub fn message(event: &Event) -> String {
    let mut m = serde_json::Map::new();
    m.insert("id".into(), event.id.as_str().into());
    m.insert("type".into(), event.event_type.as_str().into());
    for name in [field::SOURCE, field::TIME, field::SUBJECT] {
        if let Some(v) = event.field(name) {
            m.insert(name.into(), v.into());
        }
    }
    let data = serde_json::from_str::<serde_json::Value>(&event.data)
        .unwrap_or_else(|_| event.data.as_str().into());
    m.insert("data".into(), data);
    serde_json::Value::Object(m).to_string()
}
