//! `GET /api/events/health` (open, no token): identity, Redis reachability and latency,
//! breakers, in-flight count, backlog, live instances and warnings.

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::deliver::breaker::BreakerState;
use crate::http::api::ApiError;
use crate::http::state::{ApiState, WorkerView};

/// The health report; 503 while starting or when Redis does not answer.
pub async fn health(State(state): State<ApiState>) -> Result<Response, ApiError> {
    let Some(worker) = state.worker() else {
        return Ok((
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "starting", "redis": {"reachable": false}})),
        )
            .into_response());
    };
    let ping = worker.store.ping(Duration::from_secs(2)).await;
    let breakers: Vec<_> = worker
        .breakers
        .iter()
        .map(|b| {
            let s = match b.state() {
                BreakerState::Closed => "closed",
                BreakerState::HalfOpen => "half_open",
                BreakerState::Open => "open",
            };
            json!({"handler": b.name(), "state": s})
        })
        .collect();
    let base = json!({
        "env": worker.env,
        "group": worker.group,
        "consumer": worker.consumer,
        "breakers": breakers,
        "in_flight": worker.in_flight.len(),
    });
    let Ok(latency) = ping else {
        let mut body = base;
        body["status"] = "unavailable".into();
        body["redis"] = json!({"reachable": false});
        return Ok((StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response());
    };
    // Independent reads, sent together: the endpoint answers in about one round trip more
    // than the PING, whatever the number of reads.
    let (backlog, policy, instances) = tokio::join!(
        state.backlog.get(&worker.backlog, Duration::from_secs(2)),
        worker.store.maxmemory_policy(),
        live_instances(&worker),
    );
    let backlog = backlog.ok();
    let mut warnings = warnings(policy.as_deref(), latency);
    if let Ok(issues) = state.health.discovery.lock() {
        warnings.extend(issues.warnings());
    }
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

/// Warnings about Redis itself: its eviction policy and a slow PING.
fn warnings(policy: Option<&str>, latency: Duration) -> Vec<String> {
    let mut warnings = Vec::new();
    match policy {
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
    warnings
}

/// Live consumers of this env, from their heartbeat keys.
async fn live_instances(worker: &WorkerView) -> Vec<serde_json::Value> {
    let prefix = format!("{}heartbeat:", worker.keys.prefix());
    let keys = worker
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
        let info = worker
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
