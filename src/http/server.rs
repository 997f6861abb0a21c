//! The HTTP listener (`[api].listen`): `/metrics` (Prometheus text, backlog gauges read at
//! scrape time), `/livez` (the process runs), `/readyz` (Redis answers and the consumer is
//! reading), and the operator API under `/api/events/` (see [`crate::http::api`]).
//!
//! No CORS headers are sent, except on the app-facing routes (publish) for the origins of
//! `apps.allowed_origins` (see [`crate::http::app_auth`]); bodies over 1 MiB get 413 at once, and the rest of such a
//! body is read and discarded (bounded) so every client reads that answer. Connections are served with
//! HTTP/1.1 only: a client that does not finish a request's header within
//! `api.header_timeout` is disconnected, one that does not finish its body within
//! `api.body_timeout` gets 408 and is disconnected (slowloris), and on stop the listener
//! waits at most [`SHUTDOWN_GRACE`] for open requests. A connection whose first request is
//! an SSE stream or a WebSocket upgrade is served without hyper's per-connection buffers
//! (see [`crate::http::event_stream`]).

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, HttpBody};
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use futures::StreamExt;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio_util::sync::CancellationToken;

use crate::http::event_stream::{self, First, Rewind};
use crate::http::state::ApiState;

/// Largest request body accepted.
pub const MAX_BODY: usize = 1024 * 1024;

/// How long the listener waits for open requests after `stop` before it drops them.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// The router.
pub fn router(state: ApiState) -> Router {
    let router = Router::new()
        .route("/metrics", get(metrics))
        .route("/livez", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .merge(crate::http::api::routes(state.apps.as_deref()))
        .merge(crate::push::http::routes(state.apps.as_deref()))
        .merge(crate::console::routes());
    with_common_layers(router, state)
}

/// The 404 fallback, the body limit and timeout, and JSON errors, shared by both listeners.
fn with_common_layers(router: Router<ApiState>, state: ApiState) -> Router {
    let body_timeout = state.body_timeout;
    router
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(axum::middleware::from_fn_with_state(
            body_timeout,
            body_in_time,
        ))
        .layer(axum::middleware::from_fn(json_errors))
        .with_state(state)
}

/// The router of `push.listen`: the push endpoints only (no `/metrics`, no operator API).
pub fn push_router(state: ApiState) -> Router {
    let router = Router::new()
        .route("/livez", get(|| async { "ok\n" }))
        .merge(crate::push::http::routes(state.apps.as_deref()));
    with_common_layers(router, state)
}

/// Most of a refused body read and discarded after its 413 (see [`refuse_too_large`]).
pub const DRAIN_MAX: usize = 16 * 1024 * 1024;

/// Longest a refused body is read after its 413 (or `api.body_timeout` when shorter).
pub const DRAIN_TIME: Duration = Duration::from_secs(5);

/// The 413 message.
const TOO_LARGE: &str = "request body over the 1 MiB limit";

/// Reads the whole request body (at most [`MAX_BODY`]) within `body_timeout` before the
/// handler runs, so a body that trickles in cannot hold a connection: 408 and the
/// connection is closed. A body over the limit, declared or counted, gets 413 (see
/// [`refuse_too_large`]).
async fn body_in_time(
    State(body_timeout): State<Duration>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let (parts, body) = request.into_parts();
    if body.size_hint().exact() == Some(0) {
        return next
            .run(axum::extract::Request::from_parts(parts, body))
            .await;
    }
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let mut chunks = body.into_data_stream();
    if declared.is_some_and(|n| n > MAX_BODY as u64) {
        return refuse_too_large(&parts.headers, chunks, body_timeout);
    }
    let read = async {
        let mut data = Vec::new();
        while let Some(chunk) = chunks.next().await {
            let chunk = chunk.map_err(|_| StatusCode::BAD_REQUEST)?;
            if data.len() + chunk.len() > MAX_BODY {
                return Err(StatusCode::PAYLOAD_TOO_LARGE);
            }
            data.extend_from_slice(&chunk);
        }
        Ok(data)
    };
    let status = match tokio::time::timeout(body_timeout, read).await {
        Ok(Ok(data)) => {
            let request = axum::extract::Request::from_parts(parts, Body::from(data));
            return next.run(request).await;
        }
        Ok(Err(StatusCode::PAYLOAD_TOO_LARGE)) => {
            return refuse_too_large(&parts.headers, chunks, body_timeout);
        }
        Ok(Err(status)) => status,
        Err(_) => StatusCode::REQUEST_TIMEOUT,
    };
    let message = match status {
        StatusCode::REQUEST_TIMEOUT => "request body not received in time",
        _ => "could not read the request body",
    };
    closing(json_error(status, message))
}

/// 413 for a body over [`MAX_BODY`], answered at once, and a lingering close: the rest of
/// the body is read and discarded in the background (at most [`DRAIN_MAX`] bytes, for at
/// most [`DRAIN_TIME`] or `body_timeout` when shorter) so that a client still uploading
/// (most do: Python's urllib and `requests`, Node's fetch) can finish writing and read the
/// answer instead of a reset connection (`Broken pipe`). A client that asked
/// `Expect: 100-continue` has sent no body: nothing is read and the connection closes.
fn refuse_too_large(
    headers: &axum::http::HeaderMap,
    rest: axum::body::BodyDataStream,
    body_timeout: Duration,
) -> axum::response::Response {
    let expects_continue = headers
        .get(header::EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    if !expects_continue {
        tokio::spawn(drain(rest, body_timeout.min(DRAIN_TIME)));
    }
    closing(json_error(StatusCode::PAYLOAD_TOO_LARGE, TOO_LARGE))
}

/// Reads and discards `rest` until it ends, more than [`DRAIN_MAX`] bytes were read, it
/// fails, or `time` passes; dropping it then lets the connection close. Returns the bytes
/// read.
async fn drain(mut rest: axum::body::BodyDataStream, time: Duration) -> usize {
    let mut read = 0usize;
    let discard = async {
        while let Some(Ok(chunk)) = rest.next().await {
            read += chunk.len();
            if read > DRAIN_MAX {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(time, discard).await;
    read
}

/// `response` with `Connection: close`.
fn closing(mut response: axum::response::Response) -> axum::response::Response {
    response.headers_mut().insert(
        header::CONNECTION,
        header::HeaderValue::from_static("close"),
    );
    response
}

/// Turns the framework's plain-text 405/413 answers into the API's JSON `{"error": ...}`
/// shape.
async fn json_errors(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let response = next.run(request).await;
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    match response.status() {
        StatusCode::PAYLOAD_TOO_LARGE if !is_json => {
            json_error(StatusCode::PAYLOAD_TOO_LARGE, TOO_LARGE)
        }
        StatusCode::METHOD_NOT_ALLOWED if !is_json => {
            let allow = response.headers().get(header::ALLOW).cloned();
            let mut r = json_error(
                StatusCode::METHOD_NOT_ALLOWED,
                "method not allowed on this path",
            );
            if let Some(a) = allow {
                r.headers_mut().insert(header::ALLOW, a);
            }
            r
        }
        _ => response,
    }
}

/// Unknown paths: 404 with the API's JSON error shape.
async fn not_found() -> axum::response::Response {
    json_error(StatusCode::NOT_FOUND, "no such path")
}

/// The API's `{"error": message}` answer.
pub(crate) fn json_error(status: StatusCode, message: &str) -> axum::response::Response {
    (status, axum::Json(serde_json::json!({"error": message}))).into_response()
}

async fn metrics(State(s): State<ApiState>) -> impl IntoResponse {
    if let Some(worker) = s.worker()
        && let Ok(b) = s.backlog.get(&worker.backlog, Duration::from_secs(2)).await
    {
        worker.backlog.export(&b);
    }
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        s.metrics.render(),
    )
}

async fn readyz(State(s): State<ApiState>) -> impl IntoResponse {
    if s.health.ready(s.ready_window) {
        (StatusCode::OK, "ready\n")
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: Redis unreachable or not consuming yet\n",
        )
    }
}

/// Binds `addr`; returns the bound address (port 0 picks one) and the future that serves
/// until `stop` (the caller runs it on its task tracker).
///
/// Each connection is HTTP/1.1 with `state.header_timeout` as its header read timeout
/// (idle keep-alive connections included). On `stop` the listener stops accepting, asks open
/// connections to finish their current request, and drops the ones still open after
/// [`SHUTDOWN_GRACE`].
///
/// # Errors
/// When the address cannot be bound.
pub async fn serve(
    addr: SocketAddr,
    state: ApiState,
    stop: CancellationToken,
) -> std::io::Result<(SocketAddr, impl Future<Output = ()> + Send + 'static)> {
    let header_timeout = state.header_timeout;
    serve_router(addr, router(state), header_timeout, stop).await
}

/// [`serve`] with `app` (the API router, or [`push_router`] for `push.listen`). Connections
/// may upgrade (WebSocket).
///
/// # Errors
/// When the address cannot be bound.
pub async fn serve_router(
    addr: SocketAddr,
    app: Router,
    header_timeout: Duration,
    stop: CancellationToken,
) -> std::io::Result<(SocketAddr, impl Future<Output = ()> + Send + 'static)> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let mut http1 = hyper::server::conn::http1::Builder::new();
    http1
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout);
    let task = async move {
        let mut connections = tokio::task::JoinSet::new();
        loop {
            tokio::select! {
                () = stop.cancelled() => break,
                Some(_) = connections.join_next(), if !connections.is_empty() => {}
                accepted = listener.accept() => match accepted {
                    Ok((io, _)) => {
                        let (app, http1, stop) = (app.clone(), http1.clone(), stop.clone());
                        connections.spawn(async move {
                            // Both boxed: the task keeps the size of its largest state for
                            // the connection's life (an idle SSE client holds it for hours).
                            match event_stream::read_first(io, header_timeout).await {
                                First::Lean(lean) => {
                                    Box::pin(event_stream::serve(lean, app, stop)).await;
                                }
                                First::Other(io) => Box::pin(serve_hyper(&http1, io, app, stop)).await,
                                First::Gone => {}
                            }
                        });
                    }
                    Err(e) => accept_failed(&e).await,
                },
            }
        }
        drop(listener);
        let drained = async { while connections.join_next().await.is_some() {} };
        let _ = tokio::time::timeout(SHUTDOWN_GRACE, drained).await;
    };
    Ok((bound, task))
}

/// Serves a connection with hyper (every request but a first SSE one), until it closes or
/// `stop` (then its current request may finish).
async fn serve_hyper(
    http1: &hyper::server::conn::http1::Builder,
    io: Rewind,
    app: Router,
    stop: CancellationToken,
) {
    let conn = http1
        .serve_connection(TokioIo::new(io), TowerToHyperService::new(app))
        .with_upgrades();
    let mut conn = std::pin::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => return,
        () = stop.cancelled() => {}
    }
    conn.as_mut().graceful_shutdown();
    let _ = conn.await;
}

/// A failed `accept`: the peer's own trouble is skipped; anything else (e.g. out of file
/// descriptors) is logged and the listener pauses a moment instead of spinning.
async fn accept_failed(e: &std::io::Error) {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if matches!(
        e.kind(),
        ConnectionAborted | ConnectionRefused | ConnectionReset
    ) {
        return;
    }
    tracing::warn!(error = %e, "the HTTP listener could not accept a connection; pausing 1 s");
    tokio::time::sleep(Duration::from_secs(1)).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Bytes;

    #[tokio::test]
    async fn a_refused_body_is_drained_within_its_bounds() {
        let chunk = Bytes::from(vec![b'a'; 64 * 1024]);
        let endless = futures::stream::repeat(chunk).map(Ok::<_, std::io::Error>);
        let read = drain(
            Body::from_stream(endless).into_data_stream(),
            Duration::from_secs(30),
        )
        .await;
        assert_eq!(
            read,
            DRAIN_MAX + 64 * 1024,
            "an endless body: read past 16 MiB, then stop"
        );
        let stalled = futures::stream::pending::<Result<Bytes, std::io::Error>>();
        let started = std::time::Instant::now();
        let read = drain(
            Body::from_stream(stalled).into_data_stream(),
            Duration::from_millis(200),
        )
        .await;
        assert_eq!(read, 0);
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(200) && took < Duration::from_secs(2),
            "{took:?}"
        );
    }
}
