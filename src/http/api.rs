//! The operator API under `/api/events/`: health (open), history, publish and the DLQ
//! endpoints (Bearer token from `EVENTS_API_TOKEN`, compared in constant time; without a
//! token configured they answer 503 and say why). Inputs are validated before any Redis
//! call; errors are JSON `{"error": "..."}` with a 4xx/5xx status and never echo secrets.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::json;
use subtle::ConstantTimeEq;

use crate::deliver::breaker::BreakerState;
use crate::http::server::ApiState;
use crate::ops::coordination::{self, notice};
use crate::ops::dlq::{self, DlqError, DlqFilter, ReplayOptions, Selection};
use crate::ops::history::{self, HistoryQuery};
use crate::ops::publish::{self, NewEvent, PublishError};
use crate::settle::history::{Record, kind};
use crate::worker::shared::Shared;

/// The `/api/events/*` routes.
pub fn routes() -> Router<ApiState> {
    Router::new()
        .route("/api/events/health", get(health))
        .route("/api/events/history", get(history_list))
        .route("/api/events/publish", post(publish_event))
        .route("/api/events/dlq", get(dlq_list))
        .route("/api/events/dlq/stats", get(dlq_stats))
        .route("/api/events/dlq/replay", post(dlq_replay))
        .route("/api/events/dlq/purge", post(dlq_purge))
        .route("/api/events/dlq/{id}", get(dlq_show))
}

/// An API error: a status and a message safe to show.
#[derive(Debug)]
pub struct ApiError(StatusCode, String);

impl ApiError {
    fn bad(msg: impl Into<String>) -> Self {
        ApiError(StatusCode::BAD_REQUEST, msg.into())
    }
    fn unavailable(msg: impl Into<String>) -> Self {
        ApiError(StatusCode::SERVICE_UNAVAILABLE, msg.into())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.0, Json(json!({"error": self.1}))).into_response();
        if self.0 == StatusCode::TOO_MANY_REQUESTS {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
        }
        response
    }
}

impl From<DlqError> for ApiError {
    fn from(e: DlqError) -> Self {
        match e {
            DlqError::Invalid(m) => ApiError::bad(m),
            DlqError::Store(e) => {
                tracing::warn!(error = %e, "API request failed in Redis");
                ApiError::unavailable("Redis is unavailable; try again")
            }
        }
    }
}

impl From<QueryRejection> for ApiError {
    fn from(r: QueryRejection) -> Self {
        ApiError::bad(r.body_text())
    }
}

/// Longest any API request may take before it is answered with 503.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

async fn bounded<T>(fut: impl Future<Output = Result<T, ApiError>>) -> Result<T, ApiError> {
    tokio::time::timeout(REQUEST_TIMEOUT, fut)
        .await
        .unwrap_or_else(|_| {
            Err(ApiError::unavailable(
                "the request took too long (Redis slow or unreachable)",
            ))
        })
}

fn shared(state: &ApiState) -> Result<Arc<Shared>, ApiError> {
    state
        .shared
        .get()
        .cloned()
        .ok_or_else(|| ApiError::unavailable("not connected to Redis yet"))
}

/// Checks the Bearer token, then returns the shared state.
fn authorize(state: &ApiState, headers: &HeaderMap) -> Result<Arc<Shared>, ApiError> {
    let Some(token) = &state.token else {
        return Err(ApiError::unavailable(
            "this endpoint is off: no API token is configured (set EVENTS_API_TOKEN)",
        ));
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, t)| t.trim())
        .unwrap_or("");
    if !bool::from(given.as_bytes().ct_eq(token.expose().as_bytes())) {
        return Err(ApiError(
            StatusCode::UNAUTHORIZED,
            "missing or wrong bearer token".into(),
        ));
    }
    shared(state)
}

/// 429 when the mutating endpoints are over `api.rate_limit`.
fn rate_limit(state: &ApiState) -> Result<(), ApiError> {
    if state.limiter.try_take() {
        Ok(())
    } else {
        Err(ApiError(
            StatusCode::TOO_MANY_REQUESTS,
            "too many requests; retry in a second".into(),
        ))
    }
}

/// Parses a JSON body: 415 without a JSON content type, 400 naming the problem, and every
/// field of a JSON object body not in `allowed` (when `allowed` is not empty).
fn json_body_with<T: DeserializeOwned>(
    headers: &HeaderMap,
    body: &Bytes,
    allowed: &[&str],
) -> Result<T, ApiError> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !ct.starts_with("application/json") {
        return Err(ApiError(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "send Content-Type: application/json".into(),
        ));
    }
    if !allowed.is_empty()
        && let Ok(serde_json::Value::Object(map)) =
            serde_json::from_slice::<serde_json::Value>(body)
    {
        let unknown: Vec<&str> = map
            .keys()
            .map(String::as_str)
            .filter(|k| !allowed.contains(k))
            .collect();
        if !unknown.is_empty() {
            return Err(ApiError::bad(format!(
                "unknown field(s) {}; expected some of {}",
                unknown
                    .iter()
                    .map(|k| format!("`{}`", crate::model::envelope::truncate(k, 64)))
                    .collect::<Vec<_>>()
                    .join(", "),
                allowed.join(", ")
            )));
        }
    }
    serde_json::from_slice(body).map_err(|e| ApiError::bad(format!("invalid JSON body: {e}")))
}

async fn health(State(state): State<ApiState>) -> Result<Response, ApiError> {
    let Ok(shared) = shared(&state) else {
        return Ok((
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "starting", "redis": {"reachable": false}})),
        )
            .into_response());
    };
    let ping = shared.store.ping(Duration::from_secs(2)).await;
    let breakers: Vec<_> = shared
        .routes
        .iter()
        .map(|r| {
            let s = match r.breaker.state() {
                BreakerState::Closed => "closed",
                BreakerState::HalfOpen => "half_open",
                BreakerState::Open => "open",
            };
            json!({"handler": r.breaker.name(), "state": s})
        })
        .collect();
    let base = json!({
        "env": shared.env(),
        "group": shared.group(),
        "consumer": shared.consumer(),
        "breakers": breakers,
        "in_flight": shared.in_flight.len(),
    });
    let Ok(latency) = ping else {
        let mut body = base;
        body["status"] = "unavailable".into();
        body["redis"] = json!({"reachable": false});
        return Ok((StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response());
    };
    let backlog = state
        .backlog
        .get(&shared, Duration::from_secs(2))
        .await
        .ok();
    let mut warnings = Vec::new();
    let policy = shared.store.maxmemory_policy().await;
    match policy.as_deref() {
        Some("noeviction") => {}
        Some(p) => warnings.push(format!(
            "maxmemory-policy is {p}, not noeviction: eviction can silently delete events"
        )),
        None => warnings.push(
            "maxmemory-policy unknown (CONFIG not allowed); make sure it is noeviction".to_string(),
        ),
    }
    if latency > Duration::from_millis(500) {
        warnings.push(format!(
            "Redis is slow: PING took {} ms",
            latency.as_millis()
        ));
    }
    if let Ok(issues) = state.health.discovery.lock() {
        warnings.extend(issues.warnings());
    }
    let instances = live_instances(&shared).await;
    let mut body = base;
    body["status"] = if warnings.is_empty() {
        "ok"
    } else {
        "degraded"
    }
    .into();
    body["redis"] = json!({"reachable": true, "latency_ms": latency.as_secs_f64() * 1000.0, "maxmemory_policy": policy});
    body["warnings"] = json!(warnings);
    body["instances"] = json!(instances);
    if let Some(b) = backlog {
        body["streams"] = json!(b.streams);
        body["retry_depth"] = json!(b.retry_depth);
        body["redeliver_pending"] = json!(b.redeliver_pending);
        body["dlq_depth"] = json!(b.dlq_depth);
    }
    Ok(Json(body).into_response())
}

/// Live consumers of this env, from their heartbeat keys.
async fn live_instances(shared: &Shared) -> Vec<serde_json::Value> {
    let prefix = format!("{}heartbeat:", shared.keys.prefix());
    let keys = shared
        .store
        .scan_keys(&format!("{prefix}*"), 1000)
        .await
        .unwrap_or_default();
    let mut out = Vec::new();
    for key in keys {
        let Some((group, consumer)) = key.strip_prefix(&prefix).and_then(|r| r.split_once(':'))
        else {
            continue;
        };
        let info = shared
            .store
            .get_string(&key)
            .await
            .ok()
            .flatten()
            .and_then(|v| serde_json::from_str::<serde_json::Value>(&v).ok());
        out.push(json!({"group": group, "consumer": consumer, "info": info}));
    }
    out
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HistoryParams {
    #[serde(rename = "type")]
    event_type: Option<String>,
    correlation_id: Option<String>,
    id: Option<String>,
    limit: Option<usize>,
}

async fn history_list(
    State(state): State<ApiState>,
    headers: HeaderMap,
    params: Result<Query<HistoryParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    let shared = authorize(&state, &headers)?;
    let Query(p) = params?;
    if let Some(t) = &p.event_type
        && !crate::model::keys::is_valid_type(t)
    {
        return Err(ApiError::bad("type: not a valid event type"));
    }
    for (name, v) in [("correlation_id", &p.correlation_id), ("id", &p.id)] {
        if v.as_ref().is_some_and(|v| v.len() > 256) {
            return Err(ApiError::bad(format!("{name}: at most 256 characters")));
        }
    }
    let q = HistoryQuery {
        event_type: p.event_type,
        correlation_id: p.correlation_id,
        id: p.id,
        limit: p.limit.unwrap_or(100),
    };
    bounded(async {
        let records = history::query(&shared.store, &shared.keys.history(), &q)
            .await
            .map_err(DlqError::Store)?;
        Ok(Json(json!({"records": records})).into_response())
    })
    .await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PublishBody {
    #[serde(rename = "type")]
    event_type: String,
    data: serde_json::Value,
    id: Option<String>,
    correlationid: Option<String>,
}

async fn publish_event(
    State(state): State<ApiState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let shared = authorize(&state, &headers)?;
    rate_limit(&state)?;
    let b: PublishBody = json_body_with(&headers, &body, &["type", "data", "id", "correlationid"])?;
    if b.correlationid.as_ref().is_some_and(|c| c.len() > 256) {
        return Err(ApiError::bad("correlationid: at most 256 characters"));
    }
    let event = NewEvent {
        event_type: b.event_type,
        data: b.data.to_string(),
        id: b.id,
        correlation_id: b.correlationid,
        source: Some("/api/events/publish".into()),
    };
    let correlation = event.correlation_id.clone();
    bounded(async {
        match publish::publish(&shared.store, &shared.keys, event).await {
            Ok(p) => {
                let t = p.stream.rsplit(':').next().unwrap_or_default().to_string();
                shared
                    .metrics
                    .published_total
                    .with_label_values(&[shared.env(), shared.type_label(&t)])
                    .inc();
                shared.history.record(Record::new(
                    kind::PUBLISHED,
                    &p.id,
                    &t,
                    "",
                    correlation.as_deref(),
                    0,
                    "via API",
                ));
                Ok((
                    StatusCode::ACCEPTED,
                    Json(json!({"entry_id": p.entry_id, "id": p.id, "stream": p.stream})),
                )
                    .into_response())
            }
            Err(PublishError::Store(e)) => Err(DlqError::Store(e).into()),
            Err(e) => Err(ApiError::bad(e.to_string())),
        }
    })
    .await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DlqListParams {
    #[serde(rename = "type")]
    event_type: Option<String>,
    reason: Option<String>,
    group: Option<String>,
    grep: Option<String>,
    since: Option<String>,
    limit: Option<usize>,
    before: Option<String>,
}

async fn dlq_list(
    State(state): State<ApiState>,
    headers: HeaderMap,
    params: Result<Query<DlqListParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    let shared = authorize(&state, &headers)?;
    let Query(p) = params?;
    let filter = DlqFilter {
        event_type: p.event_type,
        reason: p.reason,
        group: p.group,
        grep: p.grep,
        since: p.since,
        older_than: None,
    };
    bounded(async {
        let page = dlq::list(
            &shared.store,
            &shared.keys,
            &filter,
            p.limit.unwrap_or(50),
            p.before.as_deref(),
        )
        .await?;
        let entries: Vec<_> = page.entries.iter().map(|e| e.summary()).collect();
        Ok(Json(json!({"entries": entries, "next": page.next})).into_response())
    })
    .await
}

async fn dlq_stats(
    State(state): State<ApiState>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let shared = authorize(&state, &headers)?;
    bounded(async { Ok(Json(dlq::stats(&shared.store, &shared.keys).await?).into_response()) })
        .await
}

async fn dlq_show(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let shared = authorize(&state, &headers)?;
    bounded(async {
        match dlq::show(&shared.store, &shared.keys, &id).await? {
            Some(e) => Ok(Json(e.to_json()).into_response()),
            None => Err(ApiError(
                StatusCode::NOT_FOUND,
                "no DLQ entry with that id".into(),
            )),
        }
    })
    .await
}

/// The selection part of replay and purge bodies: ids, all, or filter fields. Unknown
/// fields are refused by [`json_body_with`] (serde's `deny_unknown_fields` does not mix
/// with `flatten`).
#[derive(Debug, Deserialize, Default)]
struct SelectBody {
    ids: Option<Vec<String>>,
    all: Option<bool>,
    #[serde(flatten)]
    filter: DlqFilter,
}

/// Field names of [`SelectBody`].
const SELECT_FIELDS: [&str; 8] = [
    "ids",
    "all",
    "type",
    "reason",
    "group",
    "grep",
    "since",
    "older_than",
];

impl SelectBody {
    fn selection(self) -> Result<Selection, ApiError> {
        selection(self.ids, self.all, self.filter)
    }
}

#[derive(Debug, Deserialize, Default)]
struct ReplayBody {
    #[serde(flatten)]
    select: SelectBody,
    dry_run: Option<bool>,
    rate: Option<f64>,
    canary: Option<usize>,
}

#[derive(Debug, Deserialize, Default)]
struct PurgeBody {
    #[serde(flatten)]
    select: SelectBody,
    dry_run: Option<bool>,
    confirm: Option<bool>,
}

/// Exactly one of ids, all, or a filter.
fn selection(
    ids: Option<Vec<String>>,
    all: Option<bool>,
    filter: DlqFilter,
) -> Result<Selection, ApiError> {
    let has_filter = filter != DlqFilter::default();
    match (ids, all.unwrap_or(false), has_filter) {
        (Some(ids), false, false) => {
            if ids.len() > 10_000 {
                return Err(ApiError::bad("ids: at most 10000 per request"));
            }
            Ok(Selection::Ids(ids))
        }
        (None, true, false) => Ok(Selection::All),
        (None, false, true) => Ok(Selection::Filter(filter)),
        (None, false, false) => Err(ApiError::bad(
            "select entries with \"ids\", \"all\": true, or filter fields (type, reason, group, grep, since, older_than)",
        )),
        _ => Err(ApiError::bad(
            "give only one of \"ids\", \"all\", or filter fields",
        )),
    }
}

async fn dlq_replay(
    State(state): State<ApiState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let shared = authorize(&state, &headers)?;
    rate_limit(&state)?;
    let allowed = [&SELECT_FIELDS[..], &["dry_run", "rate", "canary"]].concat();
    let b: ReplayBody = json_body_with(&headers, &body, &allowed)?;
    let sel = b.select.selection()?;
    if b.rate.is_some_and(|r| !(r > 0.0 && r <= 100_000.0)) {
        return Err(ApiError::bad(
            "rate: must be between 0 and 100000 per second",
        ));
    }
    let opts = ReplayOptions {
        dry_run: b.dry_run.unwrap_or(false),
        rate: b.rate,
        canary: b.canary,
        canary_timeout: Duration::from_secs(20),
        actor: "api".into(),
        history_max_len: shared.cfg.history.max_len,
    };
    let timeout = if opts.canary.is_some() || opts.rate.is_some() {
        Duration::from_secs(300)
    } else {
        REQUEST_TIMEOUT
    };
    let report = tokio::time::timeout(
        timeout,
        dlq::replay(&shared.store, &shared.keys, &sel, &opts),
    )
    .await
    .map_err(|_| {
        ApiError::unavailable("the replay took too long; it may have partly run (see the history)")
    })??;
    if !report.dry_run && report.replayed > 0 {
        for (gt, n) in &report.by_group_type {
            let (g, t) = gt.split_once('/').unwrap_or((gt, ""));
            shared
                .metrics
                .dlq_replayed_total
                .with_label_values(&[shared.env(), g, shared.type_label(t)])
                .inc_by(*n);
        }
        shared.notices.send(notice(
            coordination::kind::DLQ_REPLAYED,
            shared.env(),
            shared.group(),
            shared.consumer(),
            json!({"count": report.replayed, "by": "api"}),
        ));
    }
    Ok(Json(report).into_response())
}

async fn dlq_purge(
    State(state): State<ApiState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let shared = authorize(&state, &headers)?;
    rate_limit(&state)?;
    let allowed = [&SELECT_FIELDS[..], &["dry_run", "confirm"]].concat();
    let b: PurgeBody = json_body_with(&headers, &body, &allowed)?;
    let dry_run = b.dry_run.unwrap_or(false);
    if !dry_run && b.confirm != Some(true) {
        return Err(ApiError::bad(
            "purge deletes entries for good: send \"confirm\": true (or \"dry_run\": true to count first)",
        ));
    }
    let sel = b.select.selection()?;
    bounded(async {
        let report = dlq::purge(
            &shared.store,
            &shared.keys,
            &sel,
            dry_run,
            "api",
            shared.cfg.history.max_len,
        )
        .await?;
        if report.purged > 0 {
            shared
                .metrics
                .dlq_purged_total
                .with_label_values(&[shared.env()])
                .inc_by(report.purged);
            shared.notices.send(notice(
                coordination::kind::DLQ_PURGED,
                shared.env(),
                shared.group(),
                shared.consumer(),
                json!({"count": report.purged, "by": "api"}),
            ));
        }
        Ok(Json(report).into_response())
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn json_headers() -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static("application/json"),
        );
        h
    }

    #[test]
    fn bodies_name_unknown_fields_and_need_json() {
        let e = json_body_with::<PublishBody>(
            &json_headers(),
            &Bytes::from_static(b"{\"type\":\"a\",\"data\":1,\"x\":2,\"y\":3}"),
            &["type", "data"],
        )
        .unwrap_err();
        assert_eq!(e.0, StatusCode::BAD_REQUEST);
        assert!(e.1.contains("`x`") && e.1.contains("`y`"), "{}", e.1);
        let e = json_body_with::<PublishBody>(&HeaderMap::new(), &Bytes::from_static(b"{}"), &[])
            .unwrap_err();
        assert_eq!(e.0, StatusCode::UNSUPPORTED_MEDIA_TYPE);
        let deep = Bytes::from(format!(
            "{{\"type\":\"a\",\"data\":{}}}",
            "[".repeat(100_000)
        ));
        assert_eq!(
            json_body_with::<PublishBody>(&json_headers(), &deep, &[])
                .unwrap_err()
                .0,
            StatusCode::BAD_REQUEST
        );
    }

    #[test]
    fn a_selection_is_exactly_one_of_ids_all_or_a_filter() {
        let f = DlqFilter {
            reason: Some("malformed".into()),
            ..Default::default()
        };
        assert!(matches!(
            selection(Some(vec!["1-0".into()]), None, DlqFilter::default()),
            Ok(Selection::Ids(_))
        ));
        assert!(matches!(
            selection(None, Some(true), DlqFilter::default()),
            Ok(Selection::All)
        ));
        assert!(matches!(
            selection(None, None, f.clone()),
            Ok(Selection::Filter(_))
        ));
        assert!(selection(None, None, DlqFilter::default()).is_err());
        assert!(selection(Some(vec![]), Some(true), f).is_err());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(3000))]

        #[test]
        fn any_body_is_parsed_or_refused_never_a_panic(bytes in prop::collection::vec(any::<u8>(), 0..300), text in ".{0,200}") {
            let h = json_headers();
            for body in [Bytes::from(bytes.clone()), Bytes::from(text.clone())] {
                if let Err(e) = json_body_with::<PublishBody>(&h, &body, &[]) { prop_assert_eq!(e.0, StatusCode::BAD_REQUEST); }
                if let Err(e) = json_body_with::<ReplayBody>(&h, &body, &[]) { prop_assert_eq!(e.0, StatusCode::BAD_REQUEST); }
                if let Err(e) = json_body_with::<PurgeBody>(&h, &body, &[]) { prop_assert_eq!(e.0, StatusCode::BAD_REQUEST); }
            }
        }
    }
}
