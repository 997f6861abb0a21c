//! A real HTTP sink (axum on `127.0.0.1:0`) that plays the application's
//! webhook. Each event id has a behaviour script (one action per request for
//! that id, the last one repeating), and every request lands in a ledger that
//! outlives the worker processes (so crash tests can count deliveries).
//!
//! A batch request (`application/cloudevents-batch+json`, a JSON array of CloudEvents) is
//! taken apart: each event gets its own ledger entry and action, and the answer is `200`
//! with `{"results":[...]}` (`ok` for a 2xx action, `retry` for 408/429/5xx with its
//! `retry_after`, `permanent` with error `sink` otherwise), unless
//! [`HttpSink::set_batch_answer`] says what to answer instead. [`HttpSink::batch_sizes`]
//! lists the number of events of each batch request.
//!
//! [`HttpSink::connections`] counts the TCP connections the sink accepted, and
//! [`HttpSink::set_close_connections`] makes it close each connection after its answer
//! (`Connection: close`), as a server that does not keep connections alive.

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What the sink does with one request.
#[derive(Debug, Clone)]
pub struct Action {
    /// Sleep before answering.
    pub delay: Duration,
    /// HTTP status to answer.
    pub status: u16,
    /// `Retry-After` header value in seconds.
    pub retry_after: Option<u64>,
    /// SIGKILL the current worker process (see [`HttpSink::set_kill_target`]) instead of answering.
    pub kill_worker: bool,
    /// `Location` header value (for 3xx answers).
    pub location: Option<String>,
}

impl Action {
    pub fn status(status: u16) -> Action {
        Action {
            delay: Duration::ZERO,
            status,
            retry_after: None,
            kill_worker: false,
            location: None,
        }
    }
    pub fn ok() -> Action {
        Action::status(200)
    }
    pub fn delayed(status: u16, delay: Duration) -> Action {
        Action {
            delay,
            ..Action::status(status)
        }
    }
    pub fn kill_worker() -> Action {
        Action {
            kill_worker: true,
            ..Action::status(500)
        }
    }
}

/// How a request ended at the sink.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Still sleeping / not answered yet.
    InProgress,
    /// Answered with this status.
    Answered(u16),
    /// The sink killed the worker process.
    KilledWorker,
    /// Part of a batch answered with the body set by [`HttpSink::set_batch_answer`].
    BatchAnswer(u16),
}

/// One request as the sink saw it.
#[derive(Debug, Clone)]
pub struct Request {
    /// `id` of the CloudEvent body (`"<unparsable>"` if the body was not a JSON object with an id).
    pub id: String,
    /// `attempt` field of the body.
    pub attempt: Option<u64>,
    /// 0-based index of this request among the requests for the same id.
    pub nth: usize,
    /// Time since the sink started when the request arrived.
    pub received: Duration,
    /// Time since the sink started when the answer was sent.
    pub answered: Option<Duration>,
    pub outcome: Outcome,
    pub path: String,
    pub content_type: String,
    pub headers: HashMap<String, String>,
    pub body: serde_json::Value,
    /// The body bytes as received (for signature checks).
    pub raw: Vec<u8>,
}

impl Request {
    /// Answered with a 2xx status.
    pub fn is_success(&self) -> bool {
        matches!(self.outcome, Outcome::Answered(s) if (200..300).contains(&s))
    }
}

#[derive(Default)]
struct Inner {
    scripts: HashMap<String, Vec<Action>>,
    default: Option<Action>,
    ledger: Vec<Request>,
    per_id: HashMap<String, usize>,
    /// Status and body answered to every batch request instead of the per-event results.
    batch_answer: Option<(u16, String)>,
    /// Events per batch request, in arrival order.
    batch_sizes: Vec<usize>,
}

struct Shared {
    inner: Mutex<Inner>,
    kill_pid: AtomicU32,
    /// TCP connections accepted.
    accepted: AtomicUsize,
    /// Answer with `Connection: close`.
    close_connections: AtomicBool,
    start: Instant,
    /// Unix time of `start`, to compare with Redis MONITOR timestamps.
    start_unix: f64,
}

/// The sink server. Dropping it stops the server.
pub struct HttpSink {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    rt: Option<tokio::runtime::Runtime>,
}

impl HttpSink {
    /// Starts a sink answering 200 to everything unless scripted otherwise.
    pub fn start() -> HttpSink {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("tokio runtime for the sink");
        let shared = Arc::new(Shared {
            inner: Mutex::new(Inner {
                default: Some(Action::ok()),
                ..Inner::default()
            }),
            kill_pid: AtomicU32::new(0),
            accepted: AtomicUsize::new(0),
            close_connections: AtomicBool::new(false),
            start: Instant::now(),
            start_unix: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs_f64(),
        });
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind sink");
        std_listener.set_nonblocking(true).unwrap();
        let addr = std_listener.local_addr().unwrap();
        let app = Router::new()
            .fallback(handle)
            .with_state(Arc::clone(&shared));
        let counted = Arc::clone(&shared);
        rt.spawn(async move {
            let listener = tokio::net::TcpListener::from_std(std_listener).unwrap();
            let listener = CountingListener {
                inner: listener,
                shared: counted,
            };
            axum::serve(listener, app).await.unwrap();
        });
        HttpSink {
            addr,
            shared,
            rt: Some(rt),
        }
    }

    /// `http://127.0.0.1:PORT/events`
    pub fn url(&self) -> String {
        format!("http://{}/events", self.addr)
    }

    /// The actions for the requests of one event id; the last one repeats.
    pub fn script(&self, id: &str, actions: Vec<Action>) {
        assert!(!actions.is_empty());
        self.shared
            .inner
            .lock()
            .unwrap()
            .scripts
            .insert(id.to_string(), actions);
    }

    /// The action for ids without a script.
    pub fn set_default(&self, action: Action) {
        self.shared.inner.lock().unwrap().default = Some(action);
    }

    /// Answers every batch request with `status` and `body` instead of the per-event results.
    pub fn set_batch_answer(&self, status: u16, body: &str) {
        self.shared.inner.lock().unwrap().batch_answer = Some((status, body.to_string()));
    }

    /// Answers batch requests with the per-event results again.
    pub fn clear_batch_answer(&self) {
        self.shared.inner.lock().unwrap().batch_answer = None;
    }

    /// The number of events of each batch request so far, in arrival order.
    pub fn batch_sizes(&self) -> Vec<usize> {
        self.shared.inner.lock().unwrap().batch_sizes.clone()
    }

    /// The number of TCP connections accepted so far.
    pub fn connections(&self) -> usize {
        self.shared.accepted.load(Ordering::SeqCst)
    }

    /// Whether each answer closes its connection (`Connection: close`).
    pub fn set_close_connections(&self, close: bool) {
        self.shared.close_connections.store(close, Ordering::SeqCst);
    }

    /// The pid that a `kill_worker` action sends SIGKILL to.
    pub fn set_kill_target(&self, pid: u32) {
        self.shared.kill_pid.store(pid, Ordering::SeqCst);
    }

    /// Time since the sink started (the ledger's clock).
    pub fn now(&self) -> Duration {
        self.shared.start.elapsed()
    }

    /// Unix time (seconds) of a ledger time.
    pub fn unix_time(&self, d: Duration) -> f64 {
        self.shared.start_unix + d.as_secs_f64()
    }

    /// The largest number of requests that were in progress at the same time.
    pub fn max_concurrent(&self) -> usize {
        let now = self.now();
        let mut points: Vec<(Duration, i32)> = Vec::new();
        for r in self.ledger() {
            points.push((r.received, 1));
            points.push((r.answered.unwrap_or(now), -1));
        }
        // Ends sort before starts at the same instant.
        points.sort();
        let (mut cur, mut max) = (0i32, 0i32);
        for (_, d) in points {
            cur += d;
            max = max.max(cur);
        }
        max as usize
    }

    /// Waits up to `timeout` (panicking past it, naming `what`) for a successful run
    /// received after `since`, and returns how long after `since` the first one came: the
    /// recovery time of a fault that ended at `since`.
    pub fn recovery_after(&self, what: &str, since: Duration, timeout: Duration) -> Duration {
        let first = || {
            self.ledger()
                .iter()
                .filter(|r| r.is_success() && r.received > since)
                .map(|r| r.received)
                .min()
        };
        super::wait_until(what, timeout, || first().is_some());
        first().expect("a success after the fault") - since
    }

    /// A copy of the ledger.
    pub fn ledger(&self) -> Vec<Request> {
        self.shared.inner.lock().unwrap().ledger.clone()
    }

    /// Requests for one id, in arrival order.
    pub fn requests_for(&self, id: &str) -> Vec<Request> {
        self.ledger().into_iter().filter(|r| r.id == id).collect()
    }

    /// Number of requests received so far.
    pub fn request_count(&self) -> usize {
        self.shared.inner.lock().unwrap().ledger.len()
    }

    /// Number of 2xx answers per id.
    pub fn success_counts(&self) -> HashMap<String, usize> {
        let mut m = HashMap::new();
        for r in self.ledger() {
            if r.is_success() {
                *m.entry(r.id).or_insert(0) += 1;
            }
        }
        m
    }

    /// Number of requests per id.
    pub fn request_counts(&self) -> HashMap<String, usize> {
        let mut m = HashMap::new();
        for r in self.ledger() {
            *m.entry(r.id).or_insert(0) += 1;
        }
        m
    }

    /// Requests not answered yet.
    pub fn in_progress(&self) -> usize {
        self.ledger()
            .iter()
            .filter(|r| r.outcome == Outcome::InProgress)
            .count()
    }

    /// The ledger formatted for failure messages.
    pub fn ledger_dump(&self) -> String {
        let mut s = String::from("--- sink ledger ---\n");
        for r in self.ledger() {
            s.push_str(&format!(
                "{:>8.3}s id={} attempt={:?} nth={} outcome={:?} answered={:?}\n",
                r.received.as_secs_f64(),
                r.id,
                r.attempt,
                r.nth,
                r.outcome,
                r.answered.map(|a| a.as_secs_f64())
            ));
        }
        s
    }
}

impl Drop for HttpSink {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

/// The sink's listener, counting accepted connections.
struct CountingListener {
    inner: tokio::net::TcpListener,
    shared: Arc<Shared>,
}

impl axum::serve::Listener for CountingListener {
    type Io = tokio::net::TcpStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        let accepted = axum::serve::Listener::accept(&mut self.inner).await;
        self.shared.accepted.fetch_add(1, Ordering::SeqCst);
        accepted
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

/// Records one event of a request in the ledger; its ledger index and action.
fn record(
    shared: &Shared,
    path: &str,
    header_map: &HashMap<String, String>,
    json: serde_json::Value,
    raw: Vec<u8>,
) -> (usize, Action) {
    let id = json
        .get("id")
        .and_then(|v| v.as_str())
        .unwrap_or("<unparsable>")
        .to_string();
    let attempt = json.get("attempt").and_then(|v| v.as_u64());
    let mut inner = shared.inner.lock().unwrap();
    let nth = {
        let n = inner.per_id.entry(id.clone()).or_insert(0);
        *n += 1;
        *n - 1
    };
    let action = match inner.scripts.get(&id) {
        Some(actions) => actions[nth.min(actions.len() - 1)].clone(),
        None => inner.default.clone().unwrap_or_else(Action::ok),
    };
    inner.ledger.push(Request {
        id,
        attempt,
        nth,
        received: shared.start.elapsed(),
        answered: None,
        outcome: Outcome::InProgress,
        path: path.to_string(),
        content_type: header_map.get("content-type").cloned().unwrap_or_default(),
        headers: header_map.clone(),
        body: json,
        raw,
    });
    (inner.ledger.len() - 1, action)
}

/// A batch request: one ledger entry per event, then the per-event results (or the answer
/// set by [`HttpSink::set_batch_answer`]) after the longest delay of its actions.
async fn handle_batch(
    shared: Arc<Shared>,
    path: &str,
    header_map: HashMap<String, String>,
    body: &[u8],
) -> Response {
    let events: Vec<serde_json::Value> = serde_json::from_slice(body).unwrap_or_default();
    let mut taken = Vec::new();
    for e in events {
        let raw = serde_json::to_vec(&e).unwrap();
        taken.push(record(&shared, path, &header_map, e, raw));
    }
    let answer = {
        let mut inner = shared.inner.lock().unwrap();
        inner.batch_sizes.push(taken.len());
        inner.batch_answer.clone()
    };
    if let Some(delay) = taken.iter().map(|(_, a)| a.delay).max() {
        tokio::time::sleep(delay).await;
    }
    let mut results = Vec::new();
    {
        let mut inner = shared.inner.lock().unwrap();
        for (index, action) in &taken {
            let r = &mut inner.ledger[*index];
            r.answered = Some(shared.start.elapsed());
            r.outcome = match &answer {
                Some((status, _)) => Outcome::BatchAnswer(*status),
                None => Outcome::Answered(action.status),
            };
            let result = match action.status {
                200..=299 => serde_json::json!({"id": r.id, "status": "ok"}),
                408 | 429 | 500..=599 => {
                    serde_json::json!({"id": r.id, "status": "retry", "error": "sink", "retry_after": action.retry_after})
                }
                _ => serde_json::json!({"id": r.id, "status": "permanent", "error": "sink"}),
            };
            results.push(result);
        }
    }
    match answer {
        Some((status, body)) => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
            (status, body).into_response()
        }
        None => axum::Json(serde_json::json!({ "results": results })).into_response(),
    }
}

async fn handle(
    State(shared): State<Arc<Shared>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let header_map: HashMap<String, String> = headers
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_string(),
                v.to_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    let content_type = header_map.get("content-type").map(String::as_str);
    if content_type.is_some_and(|t| t.starts_with("application/cloudevents-batch+json")) {
        return handle_batch(shared, uri.path(), header_map, &body).await;
    }
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
    let (index, action) = record(&shared, uri.path(), &header_map, json, body.to_vec());
    if action.kill_worker {
        let pid = shared.kill_pid.load(Ordering::SeqCst);
        if pid != 0 {
            super::send_signal(pid, "KILL");
        }
        shared.inner.lock().unwrap().ledger[index].outcome = Outcome::KilledWorker;
        tokio::time::sleep(Duration::from_secs(5)).await;
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    }
    if !action.delay.is_zero() {
        tokio::time::sleep(action.delay).await;
    }
    {
        let mut inner = shared.inner.lock().unwrap();
        let r = &mut inner.ledger[index];
        r.outcome = Outcome::Answered(action.status);
        r.answered = Some(shared.start.elapsed());
    }
    let status = StatusCode::from_u16(action.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut resp = (status, "sink").into_response();
    if let Some(s) = action.retry_after {
        resp.headers_mut()
            .insert("retry-after", s.to_string().parse().unwrap());
    }
    if let Some(l) = &action.location {
        resp.headers_mut().insert("location", l.parse().unwrap());
    }
    if shared.close_connections.load(Ordering::SeqCst) {
        resp.headers_mut()
            .insert("connection", "close".parse().unwrap());
    }
    resp
}
