//! Coordination notices on the pub/sub channel `events:<env>:coordination`: JSON messages
//! when an instance starts or stops, a breaker opens or closes, a DLQ replay or purge runs,
//! and when a process publishes a type for the first time ([`announce_type`]; a worker
//! that hears it runs discovery at once, see [`listen`], so a glob route consumes the new
//! type within a second instead of after `discovery_interval`).
//! Notices are informative (pub/sub is fire-and-forget); no correctness depends on them:
//! a missed notice only means discovery finds the type at its next pass.

use std::collections::HashSet;
use std::sync::{LazyLock, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use crate::model::keys::Keys;
use crate::model::time::{now_ms, rfc3339};
use crate::redis::store::Store;

/// Notice kinds.
pub mod kind {
    /// An instance started consuming.
    pub const STARTED: &str = "instance_started";
    /// An instance stopped.
    pub const STOPPED: &str = "instance_stopped";
    /// A breaker opened.
    pub const BREAKER_OPENED: &str = "breaker_opened";
    /// A breaker went half-open.
    pub const BREAKER_HALF_OPEN: &str = "breaker_half_open";
    /// A breaker closed.
    pub const BREAKER_CLOSED: &str = "breaker_closed";
    /// DLQ entries were replayed.
    pub const DLQ_REPLAYED: &str = "dlq_replayed";
    /// DLQ entries were purged.
    pub const DLQ_PURGED: &str = "dlq_purged";
    /// This process published an event of a type for the first time (`"type"` names it).
    pub const TYPE_PUBLISHED: &str = "type_published";
}

/// Stream keys this process announced; cleared when it reaches [`MAX_ANNOUNCED`] (then a
/// type may be announced again, which costs one PUBLISH and a discovery pass at most).
static ANNOUNCED: LazyLock<Mutex<HashSet<String>>> = LazyLock::new(Mutex::default);

/// Most stream keys remembered as announced.
const MAX_ANNOUNCED: usize = 10_000;

/// Announces `event_type` on the env's coordination channel the first time this process
/// publishes it (after its XADD succeeded), so running workers discover its stream at once.
/// A failed PUBLISH is only logged at debug (discovery finds the stream later anyway).
pub async fn announce_type(store: &Store, keys: &Keys, event_type: &str) {
    let stream = keys.stream(event_type);
    let first = match ANNOUNCED.lock() {
        Ok(mut set) => {
            if set.len() >= MAX_ANNOUNCED {
                set.clear();
            }
            set.insert(stream)
        }
        Err(_) => true,
    };
    if !first {
        return;
    }
    let message =
        json!({"kind": kind::TYPE_PUBLISHED, "type": event_type, "at": rfc3339(now_ms())});
    if let Err(e) = store
        .publish_notice(&keys.coordination(), &message.to_string())
        .await
    {
        debug!(error = %e, "new-type notice not published");
    }
}

/// The type a `type_published` notice names, if `message` is one.
pub fn published_type(message: &str) -> Option<String> {
    let v: Value = serde_json::from_str(message).ok()?;
    if v.get("kind")?.as_str()? != kind::TYPE_PUBLISHED {
        return None;
    }
    v.get("type")?.as_str().map(str::to_string)
}

/// Listens on `channel` until `stop` and calls `on_type` with the type of each
/// `type_published` notice. Subscribes on a connection of its own, retrying every few
/// seconds while Redis is unreachable.
pub async fn listen(
    store: Store,
    channel: String,
    on_type: impl Fn(&str) + Send + 'static,
    stop: CancellationToken,
) {
    let mut pause = Duration::from_millis(200);
    let mut sub = loop {
        let attempt = tokio::select! {
            s = store.subscribe(&channel) => s,
            () = stop.cancelled() => return,
        };
        match attempt {
            Ok(s) => break s,
            Err(e) => {
                debug!(error = %e, "coordination channel not subscribed; retrying");
                tokio::select! {
                    () = tokio::time::sleep(pause) => {}
                    () = stop.cancelled() => return,
                }
                pause = (pause * 2).min(Duration::from_secs(5));
            }
        }
    };
    loop {
        let message = tokio::select! {
            m = sub.recv() => m,
            () = stop.cancelled() => break,
        };
        let Some(message) = message else { break };
        if let Some(t) = published_type(&message) {
            on_type(&t);
        }
    }
    sub.close().await;
}

/// Builds a notice: `{"kind", "env", "group", "consumer", "at", ...extra}`.
pub fn notice(kind: &str, env: &str, group: &str, consumer: &str, extra: Value) -> String {
    let mut v = json!({"kind": kind, "env": env, "group": group, "consumer": consumer, "at": rfc3339(now_ms())});
    if let (Some(map), Value::Object(more)) = (v.as_object_mut(), extra) {
        map.extend(more);
    }
    v.to_string()
}

/// Queues notices for the publisher task; cheap to clone, never blocks.
#[derive(Clone)]
pub struct Notices {
    tx: mpsc::Sender<String>,
}

impl Notices {
    /// A queue and its receiving end.
    pub fn channel() -> (Notices, mpsc::Receiver<String>) {
        let (tx, rx) = mpsc::channel(256);
        (Notices { tx }, rx)
    }

    /// Queues a notice; dropped when the queue is full.
    pub fn send(&self, message: String) {
        let _ = self.tx.try_send(message);
    }
}

/// Publishes queued notices until `stop`, then flushes what is queued.
pub async fn run(
    store: Store,
    channel: String,
    mut rx: mpsc::Receiver<String>,
    stop: CancellationToken,
) {
    loop {
        let message = tokio::select! {
            m = rx.recv() => match m { Some(m) => m, None => return },
            _ = stop.cancelled() => break,
        };
        if let Err(e) = store.publish_notice(&channel, &message).await {
            debug!(error = %e, "coordination notice not published");
        }
    }
    while let Ok(m) = rx.try_recv() {
        let _ = store.publish_notice(&channel, &m).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_type_notices_name_a_type() {
        let n = json!({"kind": kind::TYPE_PUBLISHED, "type": "a.b"}).to_string();
        assert_eq!(published_type(&n).as_deref(), Some("a.b"));
        let other = notice(kind::STARTED, "e", "g", "c", json!({}));
        assert_eq!(published_type(&other), None);
        assert_eq!(published_type("not json"), None);
    }
}
