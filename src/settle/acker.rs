//! The acker task: acknowledges handled entries in batches. `settle::acks` hands it the
//! `(stream, id)` pairs of a batch's successes and waits for the answer; it sends one XACK
//! (plus one XDEL for the redeliver stream) per stream for everything that queued up
//! meanwhile, on a single node all in one write on the acknowledging connection
//! (`Store::ack_streams`). Under load this turns N acknowledgements into a handful of
//! commands; when idle, a lone ack goes at once.

use rustc_hash::FxHashMap;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::model::text::Text;
use crate::redis::store::{RedisErrorKind, Store, StoreError};

/// Most requests taken per flush.
const BATCH: usize = 256;

/// One entry to acknowledge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AckItem {
    /// Stream key.
    pub stream: Text,
    /// Entry id.
    pub id: Text,
    /// Also XDEL it (entries of the redeliver stream).
    pub delete: bool,
}

struct Request {
    items: Vec<AckItem>,
    done: oneshot::Sender<(Vec<AckItem>, Result<(), StoreError>)>,
}

/// Queues acknowledgements for the acker task; cheap to clone.
#[derive(Clone)]
pub struct Acker {
    tx: mpsc::Sender<Request>,
}

impl Acker {
    /// The acker for `group` and its task's future: it runs until `stop` and then drains its
    /// queue. The caller spawns it (the lifecycle's acker stage).
    pub fn start(
        store: Store,
        group: String,
        stop: CancellationToken,
    ) -> (Acker, impl Future<Output = ()> + Send + 'static) {
        let (tx, rx) = mpsc::channel(BATCH * 4);
        (Acker { tx }, run(store, group, rx, stop))
    }

    /// Acknowledges every item (each stream's ids in one XACK, together with whatever
    /// other callers queued meanwhile); resolves once Redis answered for all of them, and
    /// hands the items back (for a retry) unless the acker stopped.
    ///
    /// # Errors
    /// The first Redis error among the streams of `items`, or a stopped acker. Items of
    /// other streams may have been acknowledged; acknowledging again is harmless.
    pub async fn ack_many(
        &self,
        items: Vec<AckItem>,
    ) -> (Option<Vec<AckItem>>, Result<(), StoreError>) {
        let Some(first) = items.first() else {
            return (Some(items), Ok(()));
        };
        // Named only if it fails (a shared handle to the stream name until then).
        let stream = first.stream.clone();
        let stopped = || {
            StoreError::new(
                format!("XACK {stream}"),
                RedisErrorKind::Other,
                "the acker has stopped",
            )
        };
        let (done, answer) = oneshot::channel();
        if self.tx.send(Request { items, done }).await.is_err() {
            return (None, Err(stopped()));
        }
        match answer.await {
            Ok((items, result)) => (Some(items), result),
            Err(_) => (None, Err(stopped())),
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

/// Sends one XACK (and XDEL) per stream for every queued item, then answers each request
/// with the first error among its streams.
async fn flush(store: &Store, group: &str, buf: &mut Vec<Request>) {
    // (stream, delete) -> (ids, indexes of the requests they came from)
    type Group<'a> = (Vec<&'a Text>, Vec<usize>);
    let mut by_key: FxHashMap<(&str, bool), Group> = FxHashMap::default();
    for (r, request) in buf.iter().enumerate() {
        for item in &request.items {
            let (ids, requests) = by_key.entry((&*item.stream, item.delete)).or_default();
            ids.push(&item.id);
            if requests.last() != Some(&r) {
                requests.push(r);
            }
        }
    }
    let keyed: Vec<((&str, bool), Group)> = by_key.into_iter().collect();
    let batches: Vec<(&str, &[&Text], bool)> = keyed
        .iter()
        .map(|((stream, delete), (ids, _))| (*stream, ids.as_slice(), *delete))
        .collect();
    let results = store.ack_streams(group, &batches).await;
    let mut answers: Vec<Result<(), StoreError>> = (0..buf.len()).map(|_| Ok(())).collect();
    for ((_, (_, requests)), result) in keyed.iter().zip(results) {
        if let Err(e) = result {
            for &r in requests {
                if answers[r].is_ok() {
                    answers[r] = Err(e.clone());
                }
            }
        }
    }
    for (request, answer) in buf.drain(..).zip(answers) {
        let _ = request.done.send((request.items, answer));
    }
}
