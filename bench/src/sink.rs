//! A minimal HTTP/1.1 keep-alive sink on 127.0.0.1:`--port`: every POST gets `200` with an
//! empty body at once. It notes the arrival time of each request (when its head is parsed,
//! i.e. when the worker's handler has started sending it) and, when the body carries
//! `"sent_ns":N`, the publish-to-arrival latency. `GET /stats` answers
//! `count=.. n=.. p50_us=.. p99_us=.. max_us=..`; `POST /reset` clears. A batch request
//! (`application/cloudevents-batch+json`, event-worker's batched delivery) counts each of its
//! events and is answered `{"results":[{"id":..,"status":"ok"},...]}`; it parses the array,
//! borrowing each event's `id` and `data` and skipping its other attributes.

use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response};
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::util::{Opts, find_sent_ns, latency_line, now_ns};

#[derive(Default)]
struct State {
    count: AtomicU64,
    lat: Mutex<Vec<u64>>,
}

pub fn main(opts: &Opts) -> Result<(), String> {
    let port = opts.num("port", 0)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port as u16))
            .await
            .map_err(|e| format!("bind 127.0.0.1:{port}: {e}"))?;
        let state = Arc::new(State::default());
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .map_err(|e| e.to_string())?;
        loop {
            let (stream, _) = tokio::select! {
                a = listener.accept() => a.map_err(|e| e.to_string())?,
                _ = term.recv() => return Ok(()),
            };
            let _ = stream.set_nodelay(true);
            let state = state.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req| handle(state.clone(), req));
                let _ = http1::Builder::new()
                    .keep_alive(true)
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    })
}

async fn handle(
    state: Arc<State>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let arrived = now_ns();
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let batch = req
        .headers()
        .get(hyper::header::CONTENT_TYPE)
        .is_some_and(|v| {
            v.as_bytes()
                .starts_with(b"application/cloudevents-batch+json")
        });
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let reply = match (method, path.as_str()) {
        (Method::GET, "/stats") => {
            let lat = state.lat.lock().map(|v| v.clone()).unwrap_or_default();
            let count = state.count.load(Ordering::Relaxed);
            format!("count={count} {}\n", latency_line(lat))
        }
        (Method::POST, "/reset") => {
            state.count.store(0, Ordering::Relaxed);
            if let Ok(mut v) = state.lat.lock() {
                v.clear();
            }
            String::new()
        }
        _ if batch => batch_results(&state, arrived, &body),
        _ => {
            state.count.fetch_add(1, Ordering::Relaxed);
            if let Some(sent) = find_sent_ns(&body)
                && let Ok(mut v) = state.lat.lock()
            {
                v.push(arrived.saturating_sub(sent));
            }
            String::new()
        }
    };
    Ok(Response::new(Full::new(Bytes::from(reply))))
}

/// One event of a batch request: what the sink reads of it (its other attributes are skipped,
/// not built; an app would parse what it needs the same way).
#[derive(Deserialize)]
struct BatchEvent<'a> {
    /// The id, as it is written in the request (a JSON string).
    #[serde(borrow)]
    id: &'a RawValue,
    /// The payload, unparsed (`sent_ns` is found in its bytes).
    #[serde(borrow, default)]
    data: Option<&'a RawValue>,
}

/// Counts the events of a batch request (and their latency) and answers each one `ok`.
fn batch_results(state: &State, arrived: u64, body: &[u8]) -> String {
    let events: Vec<BatchEvent<'_>> = serde_json::from_slice(body).unwrap_or_default();
    state
        .count
        .fetch_add(events.len() as u64, Ordering::Relaxed);
    let mut out = String::with_capacity(16 + events.len() * 48);
    out.push_str("{\"results\":[");
    // Allocated only when the events carry a send time (latency runs, not drains).
    let mut lat = Vec::new();
    for (i, e) in events.iter().enumerate() {
        if let Some(sent) = e.data.and_then(|d| find_sent_ns(d.get().as_bytes())) {
            lat.push(arrived.saturating_sub(sent));
        }
        if i > 0 {
            out.push(',');
        }
        out.push_str("{\"id\":");
        out.push_str(e.id.get());
        out.push_str(",\"status\":\"ok\"}");
    }
    out.push_str("]}");
    if !lat.is_empty()
        && let Ok(mut v) = state.lat.lock()
    {
        v.extend(lat);
    }
    out
}
