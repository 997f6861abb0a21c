//! Coordination notices on the pub/sub channel `events:<env>:coordination`: JSON messages
//! when an instance starts or stops, a breaker opens or closes, a DLQ replay or purge runs.
//! Notices are informative (pub/sub is fire-and-forget); no correctness depends on them.

use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::debug;

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
