//! `GET /api/events/health` (open, no token): identity, Redis reachability and latency,
//! breakers, in-flight count, backlog, live instances, streams nobody consumes, and the
//! status with its named reasons.
//!
//! Status: `unavailable` (HTTP 503) when Redis does not answer, before the worker first
//! connected included, with `redis.error`; `degraded` (HTTP 200) when any reason holds;
//! else `ok`. Each reason is `{"code", "message"}` in `reasons`; `warnings` lists the same
//! messages as plain strings (kept for older readers). The codes and the `[health]`
//! thresholds they use are listed in README "Operating it".

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::config::HealthConfig;
use crate::deliver::breaker::BreakerState;
use crate::http::api::ApiError;
use crate::http::state::{ApiState, WorkerView};
use crate::ops::backlog::Backlog;
use crate::recover::unconsumed;
use crate::redis::refusals;
use crate::worker::health::Health;
use crate::worker::sampler::Sample;

/// One reason for a status other than `ok`: a stable code and a message naming the thing.
type Reason = (&'static str, String);

/// The health report: 503 when `unavailable`, else 200.
pub async fn health(State(state): State<ApiState>) -> Result<Response, ApiError> {
    let body = report(&state).await?;
    let code = if body["status"] == "unavailable" {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    Ok((code, Json(body)).into_response())
}

/// The health report's body (the console's overview reads it too).
pub async fn report(state: &ApiState) -> Result<serde_json::Value, ApiError> {
    let Some(worker) = state.worker() else {
        return Ok(not_started(&state.health));
    };
    let ping = worker.store.ping(Duration::from_secs(2)).await;
    let breakers: Vec<_> = worker
        .breakers
        .iter()
        .map(|b| json!({"handler": b.name(), "state": state_word(b.state())}))
        .collect();
    let mut body = json!({
        "env": worker.env,
        "group": worker.group,
        "consumer": worker.consumer,
        "breakers": breakers,
        "in_flight": worker.in_flight.len(),
    });
    if let Some(push) = &state.push {
        body["push"] = push.health();
    }
    let outbox = worker
        .outbox
        .as_ref()
        .map(|o| o.health(worker.outbox_max_age));
    if let Some((report, _)) = &outbox {
        body["outbox"] = report.clone();
    }
    let latency = match ping {
        Ok(latency) => latency,
        Err(e) => {
            let error = redis_error(&state.health).unwrap_or_else(|| e.to_string());
            body["redis"] = json!({"reachable": false, "error": error});
            let reason = (
                "redis_unreachable",
                format!("Redis does not answer: {error}"),
            );
            return Ok(with_status(body, "unavailable", &[reason]));
        }
    };
    // Independent reads, sent together: the endpoint answers in about one round trip more
    // than the PING, whatever the number of reads.
    let (backlog, policy, instances) = tokio::join!(
        state.backlog.get(&worker.backlog, Duration::from_secs(2)),
        worker.store.maxmemory_policy(),
        live_instances(&worker),
    );
    let backlog = backlog.ok();
    let issues = state
        .health
        .discovery
        .lock()
        .map(|i| i.clone())
        .unwrap_or_default();
    let mut reasons = redis_reasons(policy.as_deref(), latency);
    if let Some((cause, age)) = state.health.refusals.recent(refusals::RECENT) {
        reasons.push(("redis_refuses_writes", cause.message(age)));
    }
    reasons.extend(issues.reasons());
    if !state.health.consuming.load(Ordering::Relaxed) {
        reasons.push((
            "not_consuming",
            "not consuming: start-up (consumer groups, first discovery) still runs, or the \
             worker is stopping"
                .to_string(),
        ));
    }
    reasons.extend(breaker_reasons(&worker));
    reasons.extend(outbox.into_iter().flat_map(|(_, r)| r));
    if let Some(b) = &backlog {
        reasons.extend(backlog_reasons(&state.health, b));
    }
    body["redis"] = json!({"reachable": true, "latency_ms": latency.as_secs_f64() * 1000.0, "maxmemory_policy": policy});
    if let Some(c) = state.health.cluster.lock().ok().and_then(|c| c.clone()) {
        reasons.extend(crate::redis::cluster::health_reason(&c));
        reasons.extend(crate::redis::cluster_watch::failed_reason(&c));
        body["redis"]["cluster"] = c;
    }
    body["instances"] = json!(instances);
    body["unconsumed"] = unconsumed::report(&issues.unconsumed);
    if let Some(b) = backlog {
        body["streams"] = json!(b.streams);
        body["retry_depth"] = json!(b.retry_depth);
        body["redeliver_pending"] = json!(b.redeliver_pending);
        body["dlq_depth"] = json!(b.dlq_depth);
    }
    let status = if reasons.is_empty() { "ok" } else { "degraded" };
    Ok(with_status(body, status, &reasons))
}

/// Before the worker is connected: `unavailable` while Redis does not answer yet, else
/// `degraded` (start-up is still running).
fn not_started(health: &Health) -> serde_json::Value {
    if health.redis_up.load(Ordering::Relaxed) {
        let body = json!({"redis": {"reachable": true}});
        return with_status(body, "degraded", &[starting()]);
    }
    let error = redis_error(health).unwrap_or_else(|| {
        "no connection yet; the worker keeps trying (see its log for the address)".to_string()
    });
    let body = json!({"redis": {"reachable": false, "error": error}});
    let reason = (
        "redis_unreachable",
        format!("the worker could not connect to Redis yet: {error}"),
    );
    with_status(body, "unavailable", &[reason])
}

/// `body` with `status`, `reasons` and `warnings`.
fn with_status(mut body: serde_json::Value, status: &str, reasons: &[Reason]) -> serde_json::Value {
    body["status"] = status.into();
    body["reasons"] = reasons
        .iter()
        .map(|(code, message)| json!({"code": code, "message": message}))
        .collect();
    body["warnings"] = reasons.iter().map(|(_, m)| m.as_str()).collect();
    body
}

/// The last connection error the worker recorded, if any.
fn redis_error(health: &Health) -> Option<String> {
    health.redis_error.lock().ok().and_then(|e| e.clone())
}

fn starting() -> Reason {
    (
        "starting",
        "start-up is still running (migrations); not consuming yet".to_string(),
    )
}

fn state_word(s: BreakerState) -> &'static str {
    match s {
        BreakerState::Closed => "closed",
        BreakerState::HalfOpen => "half_open",
        BreakerState::Open => "open",
    }
}

/// `breaker_open` for each breaker not closed.
fn breaker_reasons(worker: &WorkerView) -> Vec<Reason> {
    worker
        .breakers
        .iter()
        .filter_map(|b| {
            let what = match b.state() {
                BreakerState::Closed => return None,
                BreakerState::Open => "is open",
                BreakerState::HalfOpen => "is half-open (probing after being open)",
            };
            Some((
                "breaker_open",
                format!(
                    "breaker of route {} {what}: its events wait in the retry set; check the \
                     endpoint",
                    b.name()
                ),
            ))
        })
        .collect()
}

/// `retry_depth`, `dlq_growth` and `lag_growing`, judging `b` (read now) against the
/// sampler's baseline.
fn backlog_reasons(health: &Health, b: &Backlog) -> Vec<Reason> {
    let now = Sample::of(b, Instant::now());
    let base = health
        .samples
        .lock()
        .ok()
        .and_then(|s| s.baseline(now.at, health.thresholds.window));
    judge(&health.thresholds, now, base)
}

/// The backlog reasons of `now` against `base` (the sample a window ago, if any).
fn judge(t: &HealthConfig, now: Sample, base: Option<Sample>) -> Vec<Reason> {
    let mut out = Vec::new();
    if now.retry_depth >= t.retry_depth {
        out.push((
            "retry_depth",
            format!(
                "{} events wait in the retry set (health.retry_depth = {}): a handler keeps \
                 failing; see the breakers and `event-worker dlq stats`",
                now.retry_depth, t.retry_depth
            ),
        ));
    }
    let Some(base) = base else { return out };
    let since = secs(now.at.saturating_duration_since(base.at));
    let grew = now.dlq_depth.saturating_sub(base.dlq_depth);
    if grew >= t.dlq_growth {
        out.push((
            "dlq_growth",
            format!(
                "the DLQ grew by {grew} entries in the last {since} (health.dlq_growth = {} per \
                 {}); see `event-worker dlq list`",
                t.dlq_growth,
                secs(t.window)
            ),
        ));
    }
    if now.lag >= t.lag && now.lag > base.lag {
        out.push((
            "lag_growing",
            format!(
                "the group's lag grew from {} to {} entries in the last {since} (health.lag = \
                 {}): consumers fall behind; add instances or concurrency",
                base.lag, now.lag, t.lag
            ),
        ));
    }
    out
}

/// `d` as whole seconds, e.g. `300s`.
fn secs(d: Duration) -> String {
    format!("{}s", d.as_secs())
}

/// Reasons about Redis itself: its eviction policy and a slow PING.
fn redis_reasons(policy: Option<&str>, latency: Duration) -> Vec<Reason> {
    let mut out = Vec::new();
    match policy {
        Some("noeviction") => {}
        Some(p) => out.push((
            "maxmemory_policy",
            format!("maxmemory-policy is {p}, not noeviction: eviction can silently delete events"),
        )),
        None => out.push((
            "maxmemory_policy",
            "maxmemory-policy unknown (CONFIG not allowed); make sure it is noeviction".to_string(),
        )),
    }
    if latency > Duration::from_millis(500) {
        out.push((
            "redis_slow",
            format!("Redis is slow: PING took {} ms", latency.as_millis()),
        ));
    }
    out
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

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(at: Instant, dlq: u64, retry: u64, lag: u64) -> Sample {
        Sample {
            at,
            dlq_depth: dlq,
            retry_depth: retry,
            lag,
        }
    }

    fn codes(r: &[Reason]) -> Vec<&str> {
        r.iter().map(|(c, _)| *c).collect()
    }

    #[test]
    fn a_trickle_stays_ok_and_each_threshold_names_itself() {
        let t = HealthConfig::default();
        let t0 = Instant::now();
        let later = t0 + Duration::from_secs(300);
        let base = Some(sample(t0, 100, 0, 0));
        // 9 dead letters in a window, 999 retries, a large but shrinking lag: ok.
        let r = judge(
            &t,
            sample(later, 109, 999, 20_000),
            Some(sample(t0, 100, 0, 30_000)),
        );
        assert!(r.is_empty(), "{r:?}");
        let r = judge(&t, sample(later, 110, 1000, 10_000), base);
        assert_eq!(codes(&r), ["retry_depth", "dlq_growth", "lag_growing"]);
        assert_eq!(
            r[1].1,
            "the DLQ grew by 10 entries in the last 300s (health.dlq_growth = 10 per 300s); see \
             `event-worker dlq list`"
        );
        assert_eq!(
            r[0].1,
            "1000 events wait in the retry set (health.retry_depth = 1000): a handler keeps \
             failing; see the breakers and `event-worker dlq stats`"
        );
        assert!(
            r[2].1
                .starts_with("the group's lag grew from 0 to 10000 entries")
        );
        // No sample yet: only the current retry depth can be judged.
        assert_eq!(
            codes(&judge(&t, sample(later, 500, 5, 50_000), None)),
            [""; 0]
        );
    }

    #[test]
    fn redis_reasons_keep_the_old_warning_texts() {
        assert!(redis_reasons(Some("noeviction"), Duration::from_millis(1)).is_empty());
        let r = redis_reasons(Some("allkeys-lru"), Duration::from_millis(600));
        assert_eq!(codes(&r), ["maxmemory_policy", "redis_slow"]);
        assert_eq!(
            r[0].1,
            "maxmemory-policy is allkeys-lru, not noeviction: eviction can silently delete events"
        );
    }
}
