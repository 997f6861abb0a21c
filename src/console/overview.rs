//! The overview page and its live JSON (`/ui/overview.json`, polled by the page): the same
//! figures as `GET /api/events/health` (read by calling its handler, not over the network)
//! (with each type's `read`: entries given to the group by all instances) plus this
//! instance's handled and failed counts per type from the metric registry (the page turns
//! two polls into rates).

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use prometheus::core::Collector;
use serde::Serialize;
use serde_json::Value;

use crate::console::guard::Console;
use crate::console::{ConsoleError, render};
use crate::http::state::{ApiState, WorkerView};

/// One consumed type's row.
#[derive(Serialize)]
pub struct TypeRow {
    /// Event type.
    pub event_type: String,
    /// Entries not yet delivered to the group ("?" when Redis cannot tell).
    pub lag: String,
    /// Delivered, not acknowledged.
    pub pending: u64,
    /// Entries given to the group by all its instances ("?" when Redis cannot tell).
    pub read: String,
    /// Events handled with success by this instance since it started.
    pub handled: u64,
    /// Events that failed (retried or dead-lettered) on this instance since it started.
    pub failed: u64,
}

/// A live instance (heartbeat).
#[derive(Serialize)]
pub struct InstanceRow {
    /// Its group.
    pub group: String,
    /// Its consumer name.
    pub consumer: String,
}

/// Everything the overview shows.
#[derive(Serialize)]
pub struct Overview {
    /// `ok`, `degraded` or `unavailable`.
    pub status: String,
    /// Env, group, consumer of this instance.
    pub env: String,
    /// The group.
    pub group: String,
    /// This consumer.
    pub consumer: String,
    /// Per type backlog and counts.
    pub streams: Vec<TypeRow>,
    /// Retry-set depth.
    pub retry_depth: String,
    /// DLQ depth.
    pub dlq_depth: String,
    /// Breakers: route and state.
    pub breakers: Vec<(String, String)>,
    /// Live instances.
    pub instances: Vec<InstanceRow>,
    /// Health warnings.
    pub warnings: Vec<String>,
    /// When read (RFC 3339, UTC).
    pub at: String,
}

impl Overview {
    /// The figures as `data-k` keys of the page (what the script updates in place).
    fn values(&self) -> BTreeMap<String, String> {
        let mut m = BTreeMap::new();
        m.insert("status".into(), self.status.clone());
        m.insert("retry_depth".into(), self.retry_depth.clone());
        m.insert("dlq_depth".into(), self.dlq_depth.clone());
        m.insert("instances".into(), self.instances.len().to_string());
        m.insert("at".into(), self.at.clone());
        for s in &self.streams {
            let t = &s.event_type;
            m.insert(format!("lag:{t}"), s.lag.clone());
            m.insert(format!("pending:{t}"), s.pending.to_string());
            m.insert(format!("read:{t}"), s.read.clone());
            m.insert(format!("handled:{t}"), s.handled.to_string());
            m.insert(format!("failed:{t}"), s.failed.to_string());
        }
        for (name, state) in &self.breakers {
            m.insert(format!("breaker:{name}"), state.clone());
        }
        m
    }
}

/// The overview page.
#[derive(askama::Template)]
#[template(path = "console/overview.html")]
struct OverviewPage {
    nav: &'static str,
    csrf: String,
    o: Overview,
}

/// GET /ui: the overview.
pub async fn page(State(state): State<ApiState>, c: Console) -> Result<Response, ConsoleError> {
    let o = read(&state, &c.worker).await?;
    Ok(render(
        StatusCode::OK,
        &OverviewPage {
            nav: "overview",
            csrf: c.csrf,
            o,
        },
    ))
}

/// GET /ui/overview.json: `{values: {key: text}, warnings: [...], instances: [...]}`.
pub async fn json(State(state): State<ApiState>, c: Console) -> Result<Response, ConsoleError> {
    let o = read(&state, &c.worker).await?;
    let body = serde_json::json!({
        "values": o.values(),
        "warnings": o.warnings,
        "instances": o.instances,
    });
    Ok(Json(body).into_response())
}

/// Reads the health report (the API's handler) and the per-type counts.
async fn read(state: &ApiState, worker: &WorkerView) -> Result<Overview, ConsoleError> {
    let h = crate::http::api::health::report(state)
        .await
        .map_err(ConsoleError::from)?;
    let counts = outcome_counts(worker);
    let text = |v: &Value| match v {
        Value::Null => "?".to_string(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let streams = h["streams"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| {
            let t = text(&s["type"]);
            let label = worker.type_label(&t).to_string();
            let (handled, failed) = counts.get(&label).copied().unwrap_or((0, 0));
            TypeRow {
                lag: text(&s["lag"]),
                pending: s["pending"].as_u64().unwrap_or(0),
                read: text(&s["read"]),
                handled,
                failed,
                event_type: t,
            }
        })
        .collect();
    let list = |k: &str| h[k].as_array().cloned().unwrap_or_default();
    Ok(Overview {
        status: text(&h["status"]),
        env: worker.env.clone(),
        group: worker.group.clone(),
        consumer: worker.consumer.clone(),
        streams,
        retry_depth: text(&h["retry_depth"]),
        dlq_depth: text(&h["dlq_depth"]),
        breakers: list("breakers")
            .iter()
            .map(|b| (text(&b["handler"]), text(&b["state"])))
            .collect(),
        instances: list("instances")
            .iter()
            .map(|i| InstanceRow {
                group: text(&i["group"]),
                consumer: text(&i["consumer"]),
            })
            .collect(),
        warnings: list("warnings").iter().map(text).collect(),
        at: crate::model::time::rfc3339(crate::model::time::now_ms()),
    })
}

/// Per type label: (success, retried + dead_lettered) of this instance's group.
fn outcome_counts(worker: &WorkerView) -> BTreeMap<String, (u64, u64)> {
    let mut out: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    for family in worker.metrics.events_total.collect() {
        for m in family.get_metric() {
            let label = |name: &str| {
                m.get_label()
                    .iter()
                    .find(|l| l.name() == name)
                    .map(|l| l.value().to_string())
                    .unwrap_or_default()
            };
            if label("env") != worker.env || label("group") != worker.group {
                continue;
            }
            let n = m.get_counter().get_value() as u64;
            let row = out.entry(label("type")).or_default();
            match label("outcome").as_str() {
                "success" => row.0 += n,
                _ => row.1 += n,
            }
        }
    }
    out
}
