//! The acker is responsible for acknowledging handled entries in batches: processing tasks
//! hand it `(stream, id)` and wait for the answer; it sends one XACK (plus one XDEL for the
//! redeliver stream) per stream for everything that queued up meanwhile. Under load this
//! turns N acknowledgements into a handful of commands; when idle, a lone ack goes at once.

use std::collections::HashMap;

use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::store::{Store, StoreError};

/// Most acknowledgements per batch.
const BATCH: usize = 1024;

struct Request {
    stream: String,
    id: String,
    delete: bool,
    done: oneshot::Sender<Result<(), String>>,
}

/// Queues acknowledgements for the acker task; cheap to clone.
#[derive(Clone)]
pub struct Acker {
    tx: mpsc::Sender<Request>,
}

impl Acker {
    /// Starts the acker task for `group`; it runs until `stop` and then drains its queue.
    pub fn start(
        store: Store,
        group: String,
        stop: CancellationToken,
    ) -> (Acker, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(BATCH * 4);
        (Acker { tx }, tokio::spawn(run(store, group, rx, stop)))
    }

    /// Acknowledges `id` on `stream` (and deletes it when `delete`); resolves once Redis
    /// answered.
    ///
    /// # Errors
    /// The Redis error of the batch, or a stopped acker.
    pub async fn ack(&self, stream: &str, id: &str, delete: bool) -> Result<(), StoreError> {
        let (done, answer) = oneshot::channel();
        let request = Request {
            stream: stream.to_string(),
            id: id.to_string(),
            delete,
            done,
        };
        let stopped = || StoreError {
            op: format!("XACK {stream}"),
            message: "the acker has stopped".into(),
        };
        self.tx.send(request).await.map_err(|_| stopped())?;
        match answer.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(message)) => Err(StoreError {
                op: format!("XACK {stream}"),
                message,
            }),
            Err(_) => Err(stopped()),
        }
    }
}

async fn run(
    store: Store,
    group: String,
    mut rx: mpsc::Receiver<Request>,
    stop: CancellationToken,
) {
    let mut buf = Vec::with_capacity(BATCH);
    loop {
        let n = tokio::select! {
            n = rx.recv_many(&mut buf, BATCH) => n,
            _ = stop.cancelled() => {
                rx.close();
                while let Some(r) = rx.recv().await {
                    buf.push(r);
                }
                flush(&store, &group, &mut buf).await;
                return;
            }
        };
        if n == 0 {
            return;
        }
        flush(&store, &group, &mut buf).await;
    }
}

async fn flush(store: &Store, group: &str, buf: &mut Vec<Request>) {
    let mut by_key: HashMap<(String, bool), Vec<Request>> = HashMap::new();
    for r in buf.drain(..) {
        by_key
            .entry((r.stream.clone(), r.delete))
            .or_default()
            .push(r);
    }
    let batches = by_key
        .into_iter()
        .map(|((stream, delete), requests)| async move {
            let ids: Vec<&str> = requests.iter().map(|r| r.id.as_str()).collect();
            let result = store
                .ack(&stream, group, &ids, delete)
                .await
                .map_err(|e| e.to_string());
            for r in requests {
                let _ = r.done.send(result.clone());
            }
        });
    futures::future::join_all(batches).await;
}
