//! In-process router tests: the HTTP 4xx table, through `router(state).oneshot(request)`.
//! Requests refused before any Redis call run without Redis; the others get a real
//! `redis-server` on a free loopback port (no mocks).

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use tower::ServiceExt;

use crate::config::Config;
use crate::http::server::router;
use crate::http::state::{ApiState, RateLimiter, WorkerView};
use crate::metrics::Metrics;
use crate::model::keys::Keys;
use crate::model::secret::Secret;
use crate::ops::backlog::{BacklogCache, BacklogSource};
use crate::ops::coordination::Notices;
use crate::redis::store::Store;
use crate::test_redis::Redis;
use crate::worker::health::Health;

const TOKEN: &str = "0123456789abcdef0123456789abcdef";

/// An API state with the token set and no worker connected yet.
fn state() -> ApiState {
    ApiState {
        metrics: Metrics::new(),
        health: Arc::new(Health::default()),
        ready_window: Duration::from_secs(5),
        worker: Arc::new(OnceLock::new()),
        token: Some(Secret::new(TOKEN)),
        apps: None,
        backlog: Arc::new(BacklogCache::default()),
        limiter: Arc::new(RateLimiter::new(0)),
        header_timeout: Duration::from_secs(5),
        body_timeout: Duration::from_secs(5),
        push: None,
        offline: None,
    }
}

/// An API state whose worker view is connected to `redis`.
async fn connected(redis: &Redis) -> ApiState {
    let toml = format!(
        "group = \"g\"\nredis_url = \"redis://127.0.0.1:{}\"\n",
        redis.port
    );
    let cfg = Config::from_toml_and_env(&toml, |_| None).expect("a valid config");
    let store = Store::connect(&cfg, "router-test")
        .await
        .expect("connected");
    let keys = Keys::new(&cfg.env);
    let metrics = Metrics::new();
    let writer = crate::settle::history::HistoryWriter {
        store: store.clone(),
        key: keys.history(),
        config: cfg.history.clone(),
        metrics: metrics.clone(),
        env: cfg.env.clone(),
    };
    let (history, writer_task) = writer.start(tokio_util::sync::CancellationToken::new());
    tokio::spawn(writer_task);
    let streams = crate::consume::streams::StreamSet::default();
    let view = WorkerView {
        backlog: BacklogSource {
            store: store.clone(),
            streams: streams.clone(),
            env: cfg.env.clone(),
            group: cfg.group.clone(),
            redeliver: keys.redeliver(&cfg.group),
            retry: keys.retry(&cfg.group),
            dlq: keys.dlq(),
            metrics: metrics.clone(),
        },
        store,
        env: cfg.env.clone(),
        group: cfg.group.clone(),
        consumer: cfg.consumer.clone(),
        breakers: Vec::new(),
        in_flight: Default::default(),
        streams,
        history,
        notices: Notices::channel().0,
        history_max_len: cfg.history.max_len,
        publish: cfg.publish.clone(),
        metrics,
        outbox: None,
        outbox_max_age: cfg.outbox.max_age,
        keys,
    };
    let state = state();
    let _ = state.worker.set(Arc::new(view));
    state
}

/// Sends one request; returns the status and the body as JSON (`null` when not JSON).
async fn send(state: &ApiState, request: Request<Body>) -> (StatusCode, serde_json::Value) {
    let response = router(state.clone())
        .oneshot(request)
        .await
        .expect("infallible");
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .expect("a body");
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null),
    )
}

fn get(path: &str, token: Option<&str>) -> Request<Body> {
    let mut r = Request::get(path);
    if let Some(t) = token {
        r = r.header(header::AUTHORIZATION, format!("Bearer {t}"));
    }
    r.body(Body::empty()).expect("a request")
}

fn post(path: &str, content_type: &str, body: impl Into<Body>) -> Request<Body> {
    Request::post(path)
        .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
        .header(header::CONTENT_TYPE, content_type)
        .body(body.into())
        .expect("a request")
}

/// The `error` message of a JSON error body.
fn error(body: &serde_json::Value) -> &str {
    body["error"]
        .as_str()
        .unwrap_or_else(|| panic!("not a JSON error: {body}"))
}

#[tokio::test]
async fn a_missing_or_wrong_token_is_401_before_anything_else() {
    let s = state();
    for token in [None, Some("wrong"), Some(&TOKEN[1..])] {
        let (status, body) = send(&s, get("/api/events/dlq/stats", token)).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{token:?}");
        assert_eq!(error(&body), "missing or wrong bearer token");
    }
    let unauthorized = Request::post("/api/events/publish")
        .header(header::CONTENT_TYPE, "text/plain")
        .body(Body::from("not json"))
        .expect("a request");
    let (status, _) = send(&s, unauthorized).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, body) = send(&s, get("/api/events/dlq/stats", Some(TOKEN))).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(error(&body), "not connected to Redis yet");
}

#[tokio::test]
async fn without_a_configured_token_the_token_endpoints_are_off() {
    let mut s = state();
    s.token = None;
    let (status, body) = send(&s, get("/api/events/history", Some(TOKEN))).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(error(&body).contains("EVENTS_API_TOKEN"), "{body}");
}

#[tokio::test]
async fn a_body_over_1_mib_is_413_json() {
    let s = state();
    let big = vec![b'x'; crate::http::server::MAX_BODY + 1];
    let (status, body) = send(&s, post("/api/events/publish", "application/json", big)).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(error(&body), "request body over the 1 MiB limit");
}

#[tokio::test]
async fn unknown_paths_and_other_verbs_answer_json() {
    let s = state();
    let (status, body) = send(&s, get("/api/events/nope", Some(TOKEN))).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(error(&body), "no such path");
    let delete = Request::delete("/api/events/dlq")
        .body(Body::empty())
        .expect("a request");
    let (status, body) = send(&s, delete).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(error(&body), "method not allowed on this path");
    let (status, _) = send(&s, post("/api/events/health", "application/json", "{}")).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
}

#[tokio::test]
async fn bodies_and_inputs_are_checked_before_any_redis_call() {
    let redis = Redis::start();
    let s = connected(&redis).await;
    let publish = |ct: &str, body: &'static str| post("/api/events/publish", ct, body);

    let (status, body) = send(&s, publish("text/plain", "{}")).await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(error(&body), "send Content-Type: application/json");

    let (status, body) = send(&s, publish("application/json", "{\"type\":")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(error(&body).starts_with("invalid JSON body: "), "{body}");

    let (status, body) = send(
        &s,
        publish(
            "application/json",
            "{\"type\":\"a.b\",\"data\":1,\"X\":\"1\",\"y_y\":\"2\"}",
        ),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        error(&body),
        "unknown field(s) `X`, `y_y`; expected some of type, data, id, source, time, specversion, datacontenttype, dataschema, subject, correlationid, traceparent, or extension attributes (names of 1 to 20 characters of a-z and 0-9)"
    );

    let replay = post(
        "/api/events/dlq/replay",
        "application/json",
        "{\"al\":true}",
    );
    let (status, body) = send(&s, replay).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(error(&body).starts_with("unknown field(s) `al`; expected some of ids, all,"));

    let (status, body) = send(&s, get("/api/events/history?type=no%20spaces", Some(TOKEN))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(error(&body), "type: not a valid event type");

    let (status, body) = send(&s, get("/api/events/dlq/not-an-id", Some(TOKEN))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        error(&body),
        "id: not a stream entry id such as 1700000000000-0"
    );

    let (status, body) = send(&s, get("/api/events/dlq?bogus=1", Some(TOKEN))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(error(&body).contains("bogus"), "{body}");

    let purge = post(
        "/api/events/dlq/purge",
        "application/json",
        "{\"all\":true}",
    );
    let (status, body) = send(&s, purge).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        error(&body).starts_with("purge deletes entries for good"),
        "{body}"
    );

    // The control: a valid request reaches Redis.
    let (status, body) = send(&s, get("/api/events/dlq/1-0", Some(TOKEN))).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(error(&body), "no DLQ entry with that id");
}

#[tokio::test]
async fn a_401_carries_the_bearer_challenge() {
    let s = state();
    let challenge = |request: Request<Body>| {
        let s = s.clone();
        async move {
            let response = router(s).oneshot(request).await.expect("infallible");
            assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
            response
                .headers()
                .get(header::WWW_AUTHENTICATE)
                .map(|v| v.to_str().expect("ASCII").to_string())
        }
    };
    let missing = Some(r#"Bearer realm="event-worker""#.to_string());
    let invalid = Some(r#"Bearer realm="event-worker", error="invalid_token""#.to_string());
    assert_eq!(challenge(get("/api/events/dlq", None)).await, missing);
    let basic = Request::get("/api/events/history")
        .header(header::AUTHORIZATION, "Basic dXNlcjpwYXNz")
        .body(Body::empty())
        .expect("a request");
    assert_eq!(challenge(basic).await, missing);
    assert_eq!(
        challenge(get("/api/events/dlq", Some("wrong"))).await,
        invalid
    );
    let publish = post("/api/events/publish", "application/json", "{}");
    let (mut parts, body) = publish.into_parts();
    parts.headers.insert(
        header::AUTHORIZATION,
        header::HeaderValue::from_static("Bearer wrong-token-0000000000"),
    );
    assert_eq!(challenge(Request::from_parts(parts, body)).await, invalid);
}
