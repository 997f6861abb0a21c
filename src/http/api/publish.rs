//! `POST /api/events/publish` (operator token or an app token granting the type, rate-limited): appends one event to its type stream,
//! counts it and records it in the history. `POST /api/events/publish/batch`: the same for
//! `{"events": [...]}`, in order, with one result per event (partial success).
//!
//! The body is the event as a flat JSON object: `type` and `data`, the optional attributes
//! of the wire format, and extension attributes as further top-level string fields. `data`
//! is kept as the producer wrote it (numbers keep their precision) and its nesting depth is
//! checked by a scan, so deep `data` gets a 400 that names the depth.
//!
//! An event with its own `id` is published once per (type, id) within `[publish]
//! dedup_window`: a repeat answers `"duplicate": true` with the original entry id and writes
//! nothing (see `ops::publish`).
//!
//! With `outbox.enabled` both go through [`crate::outbox::Outbox`]: an event Redis does not
//! take within `outbox.fallback_after` is queued locally and answered 202 `{"queued":
//! "outbox"}` (a batch element `"status": "queued"`); when the outbox refuses it too, 503 with
//! `Retry-After` and a message naming the directory.

use axum::Json;
use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::de::{self, Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::json;
use serde_json::value::RawValue;

use crate::config::PublishConfig;
use crate::http::api::extract::{Fields, JsonBody, RateLimited, json_body_with};
use crate::http::api::publish_offline;
use crate::http::api::{ApiError, bounded};
use crate::http::app_auth::publish::Target;
use crate::http::state::WorkerView;
use crate::model::attributes::{self, FieldKind};
use crate::model::envelope::truncate;
use crate::ops::dlq::DlqError;
use crate::ops::publish::{self, NewEvent, PublishError, Published};
use crate::outbox::fallback;
use crate::outbox::{OutboxError, Outcome, SubmitError};
use crate::settle::history::{Record, kind};

/// The optional attributes a publish body may set: the known ones besides `type` and `data`.
fn optional_attributes() -> impl Iterator<Item = &'static str> {
    attributes::KNOWN
        .iter()
        .copied()
        .filter(|n| !matches!(*n, "type" | "data"))
}

/// The publish body: `type`, `data` and every other top-level field, in body order.
#[derive(Debug)]
pub struct PublishBody {
    event_type: String,
    data: Box<RawValue>,
    rest: Vec<(String, serde_json::Value)>,
}

impl Fields for PublishBody {
    /// Empty: the handler names unknown fields itself, since extension names are open.
    const FIELDS: &'static [&'static str] = &[];
}

impl<'de> Deserialize<'de> for PublishBody {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(BodyVisitor)
    }
}

struct BodyVisitor;

impl<'de> Visitor<'de> for BodyVisitor {
    type Value = PublishBody;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON object with `type` and `data`")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<PublishBody, A::Error> {
        let (mut event_type, mut data) = (None, None);
        let mut rest: Vec<(String, serde_json::Value)> = Vec::new();
        while let Some(key) = map.next_key::<String>()? {
            let repeated = match key.as_str() {
                "type" => event_type.replace(map.next_value::<String>()?).is_some(),
                "data" => data.replace(map.next_value::<Box<RawValue>>()?).is_some(),
                _ => {
                    let value = map.next_value()?;
                    let seen = rest.iter().any(|(k, _)| *k == key);
                    rest.push((key.clone(), value));
                    seen
                }
            };
            if repeated {
                return Err(de::Error::custom(format!(
                    "field `{}` appears more than once",
                    truncate(&key, 64)
                )));
            }
        }
        Ok(PublishBody {
            event_type: event_type.ok_or_else(|| de::Error::missing_field("type"))?,
            data: data.ok_or_else(|| de::Error::missing_field("data"))?,
            rest,
        })
    }
}

/// Names in `names`, back-quoted and comma-separated.
fn quoted(names: &[&str]) -> String {
    names
        .iter()
        .map(|k| format!("`{}`", truncate(k, 64)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The event the body describes, or a 400 naming every field that cannot be published.
fn new_event(b: PublishBody) -> Result<NewEvent, ApiError> {
    let mut kinds: [Vec<&str>; 3] = Default::default();
    for (k, _) in &b.rest {
        match attributes::classify(k) {
            FieldKind::Known if optional_attributes().any(|n| n == k) => {}
            FieldKind::Extension => {}
            FieldKind::Worker => kinds[1].push(k),
            FieldKind::Reserved => kinds[2].push(k),
            FieldKind::Known | FieldKind::Invalid => kinds[0].push(k),
        }
    }
    let [unknown, worker, reserved] = &kinds;
    if !worker.is_empty() {
        return Err(ApiError::bad(format!(
            "field(s) {} are written by the worker and cannot be published",
            quoted(worker)
        )));
    }
    if !reserved.is_empty() {
        return Err(ApiError::bad(format!(
            "field(s) {} are reserved names and cannot be extensions",
            quoted(reserved)
        )));
    }
    if !unknown.is_empty() {
        return Err(ApiError::bad(format!(
            "unknown field(s) {}; expected some of type, data, {}, or extension attributes (names of 1 to 20 characters of a-z and 0-9)",
            quoted(unknown),
            optional_attributes().collect::<Vec<_>>().join(", ")
        )));
    }
    let mut event = NewEvent {
        event_type: b.event_type,
        data: b.data.get().to_string(),
        source: Some("/api/events/publish".into()),
        ..NewEvent::default()
    };
    for (name, value) in b.rest {
        let serde_json::Value::String(value) = value else {
            return Err(ApiError::bad(format!(
                "{}: expected a string",
                truncate(&name, 64)
            )));
        };
        match name.as_str() {
            "id" => event.id = Some(value),
            "correlationid" => event.correlation_id = Some(value),
            "source" => event.source = Some(value),
            "time" => event.time = Some(value),
            "traceparent" => event.traceparent = Some(value),
            "datacontenttype" => event.datacontenttype = Some(value),
            "dataschema" => event.dataschema = Some(value),
            "subject" => event.subject = Some(value),
            "specversion" => attributes::check_value("specversion", &value)
                .map_err(|e| ApiError::bad(format!("specversion: {e}")))?,
            _ => event.extensions.push((name, value)),
        }
    }
    Ok(event)
}

/// Counts `p` (published or refused as a duplicate) and records a new one in the history.
fn record(worker: &WorkerView, p: &Published, correlation: Option<&str>) {
    let t = p.stream.rsplit(':').next().unwrap_or_default();
    let labels = [worker.env.as_str(), worker.type_label(t)];
    if p.duplicate {
        let m = &worker.metrics.publish_duplicates_total;
        m.with_label_values(&labels).inc();
        return;
    }
    worker
        .metrics
        .published_total
        .with_label_values(&labels)
        .inc();
    if p.replication.is_some_and(|r| !r.ok()) {
        let m = &worker.metrics.publish_unreplicated_total;
        m.with_label_values(&labels).inc();
    }
    worker.history.record(Record::new(
        kind::PUBLISHED,
        &p.id,
        t,
        "",
        correlation,
        0,
        "via API",
    ));
}

/// `answer` plus, with `[redis] wait_replicas` > 0 and a new entry, `"replicas"` (how many
/// acknowledged it within `wait_timeout`) and `"replicated"` (at least `wait_replicas` did).
/// The answer stays 2xx either way: the entry is on the master.
fn with_replication(mut answer: serde_json::Value, p: &Published) -> serde_json::Value {
    if let (Some(r), Some(map)) = (p.replication, answer.as_object_mut()) {
        map.insert("replicas".into(), r.acked.into());
        map.insert("replicated".into(), r.ok().into());
    }
    answer
}

/// The entry id of `p` as JSON: null for a duplicate whose original entry is gone.
fn entry_json(p: &Published) -> serde_json::Value {
    match p.entry_id.as_str() {
        "" => serde_json::Value::Null,
        e => e.into(),
    }
}

/// 202 with the entry id (for a repeat of an `id` within the dedup window: the original's,
/// and `"duplicate": true`), the event id and the stream.
pub async fn publish_event(
    auth: crate::http::app_auth::PublishAuth,
    _: RateLimited,
    JsonBody(b): JsonBody<PublishBody>,
) -> Result<Response, ApiError> {
    let event = new_event(b)?;
    auth.check_publish(&event.event_type)?;
    let worker = match &auth.target {
        Target::Connected(worker) => worker.clone(),
        Target::Offline(offline) => {
            return Ok(publish_offline::queue_event(offline, event).await);
        }
    };
    let correlation = event.correlation_id.clone();
    bounded(async {
        let result = match &worker.outbox {
            Some(outbox) => outbox.publish(&worker.store, &worker.publish, event).await,
            None => publish::publish(&worker.store, &worker.keys, &worker.publish, event)
                .await
                .map(Outcome::Published)
                .map_err(SubmitError::from),
        };
        match result {
            Ok(Outcome::Published(p)) => {
                record(&worker, &p, correlation.as_deref());
                Ok((
                    StatusCode::ACCEPTED,
                    Json(with_replication(
                        json!({"entry_id": entry_json(&p), "id": p.id, "stream": p.stream,
                        "duplicate": p.duplicate}),
                        &p,
                    )),
                )
                    .into_response())
            }
            Ok(Outcome::Queued(q)) => Ok((
                StatusCode::ACCEPTED,
                Json(json!({"queued": "outbox", "id": q.id, "stream": q.stream})),
            )
                .into_response()),
            Err(SubmitError::Publish(PublishError::Store(e))) => Err(DlqError::Store(e).into()),
            Err(SubmitError::Publish(e)) => Err(ApiError::bad(e.to_string())),
            Err(SubmitError::Outbox(e)) => Ok(outbox_refused(&e)),
        }
    })
    .await
}

/// The message of a publish neither Redis nor the outbox took.
pub(super) fn refused_message(e: &OutboxError) -> String {
    format!("Redis did not take the event and the local outbox refused it too: {e}")
}

/// 503 with `Retry-After` for a publish neither Redis nor the outbox took (nothing queued
/// was dropped; the message names the directory and the cause).
pub(super) fn outbox_refused(e: &OutboxError) -> Response {
    tracing::warn!(error = %e, "a publish was refused: Redis did not take it and the outbox refused it");
    let mut response = ApiError::unavailable(refused_message(e)).into_response();
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, fallback::retry_after(e).into());
    response
}

/// The batch body: `{"events": [event, ...]}`, each event as `POST /api/events/publish`
/// takes it (each one is read on its own, so one bad event does not refuse the others).
#[derive(Debug, serde::Deserialize)]
pub struct BatchBody {
    events: Vec<Box<RawValue>>,
}

impl Fields for BatchBody {
    const FIELDS: &'static [&'static str] = &["events"];
}

/// The `id` of a batch element that could not be read as an event, when it has a string one.
fn id_of(raw: &RawValue) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct IdOf {
        id: Option<serde_json::Value>,
    }
    match serde_json::from_str::<IdOf>(raw.get()).ok()?.id? {
        serde_json::Value::String(id) => Some(id),
        _ => None,
    }
}

/// The events of a batch, each read and checked on its own: the event, or the result of an
/// `invalid` one.
/// An app token's event whose type its grant does not cover is `forbidden`.
fn batch_events(
    b: BatchBody,
    auth: &crate::http::app_auth::PublishAuth,
) -> Vec<Result<NewEvent, serde_json::Value>> {
    b.events
        .into_iter()
        .map(|raw| {
            let invalid =
                |error: String| json!({"id": id_of(&raw), "status": "invalid", "error": error});
            let body = serde_json::from_str::<PublishBody>(raw.get())
                .map_err(|e| invalid(format!("invalid event: {e}")))?;
            let event = new_event(body).map_err(|e| invalid(e.1))?;
            auth.check_publish(&event.event_type)
                .map_err(|e| json!({"id": event.id, "status": "forbidden", "error": e.1}))?;
            Ok(event)
        })
        .collect()
}

/// Refuses a batch body over `[publish] batch_max_bytes` (413), naming the bound.
fn check_batch_bytes(limits: &PublishConfig, bytes: usize) -> Result<(), ApiError> {
    let max = limits.batch_max_bytes;
    if bytes > max {
        return Err(ApiError(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "batch body of {bytes} bytes, over the {max} limit (publish.batch_max_bytes); send fewer events per batch"
            ),
        ));
    }
    Ok(())
}

/// Refuses a batch over `[publish] batch_max_events` (413) or empty (400), naming the bound.
fn check_batch_events(limits: &PublishConfig, events: usize) -> Result<(), ApiError> {
    if events > limits.batch_max_events {
        return Err(ApiError(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "batch of {events} events, over the {} limit (publish.batch_max_events); split it",
                limits.batch_max_events
            ),
        ));
    }
    if events == 0 {
        return Err(ApiError::bad(format!(
            "`events` is empty; send 1 to {} events",
            limits.batch_max_events
        )));
    }
    Ok(())
}

/// `POST /api/events/publish/batch`: the events in order, each idempotent by its `id` like a
/// single publish. 200 with `{"results": [...]}`, one per event in body order: `published`
/// or `duplicate` (with `entry_id` and `stream`), `invalid` or, for an app token whose grant
/// does not cover the type, `forbidden` (with `error`; the others are still published). After a Redis failure the rest are `failed` (with `error`; resend them
/// with the same ids) and the status is 503.
pub async fn publish_batch(
    auth: crate::http::app_auth::PublishAuth,
    _: RateLimited,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let limits = match &auth.target {
        Target::Connected(worker) => &worker.publish,
        Target::Offline(offline) => &offline.publish,
    };
    check_batch_bytes(limits, body.len())?;
    let b: BatchBody = json_body_with(&headers, &body, BatchBody::FIELDS)?;
    check_batch_events(limits, b.events.len())?;
    let parsed = batch_events(b, &auth);
    let worker = match &auth.target {
        Target::Connected(worker) => worker.clone(),
        Target::Offline(offline) => {
            return Ok(publish_offline::queue_batch(offline, parsed).await);
        }
    };
    let (mut valid, mut correlations) = (Vec::new(), Vec::new());
    for event in parsed.iter().filter_map(|p| p.as_ref().ok()) {
        correlations.push(event.correlation_id.clone());
        valid.push(event.clone());
    }
    bounded(async {
        let outcomes = match &worker.outbox {
            Some(outbox) => outbox.publish_batch(&worker.store, &worker.publish, valid).await,
            None => publish::publish_batch(&worker.store, &worker.keys, &worker.publish, valid)
                .await
                .into_iter()
                .map(|r| r.map(Outcome::Published).map_err(SubmitError::from))
                .collect(),
        };
        let mut outcomes = outcomes.into_iter().zip(correlations);
        let (mut failed, mut retry_after) = (false, None);
        let mut results = Vec::with_capacity(parsed.len());
        for item in parsed {
            let result = match item {
                Err(invalid) => invalid,
                Ok(event) => match outcomes.next() {
                    Some((Ok(Outcome::Published(p)), correlation)) => {
                        record(&worker, &p, correlation.as_deref());
                        let status = if p.duplicate { "duplicate" } else { "published" };
                        with_replication(json!({"id": p.id, "status": status, "entry_id": entry_json(&p),
                            "stream": p.stream}), &p)
                    }
                    Some((Ok(Outcome::Queued(q)), _)) => {
                        json!({"id": q.id, "status": "queued", "queued": "outbox", "stream": q.stream})
                    }
                    Some((Err(SubmitError::Publish(PublishError::Store(e))), _)) => {
                        failed = true;
                        json!({"id": event.id, "status": "failed", "error": format!("{e}; resend it with the same id")})
                    }
                    Some((Err(SubmitError::Outbox(e)), _)) => {
                        failed = true;
                        retry_after = Some(fallback::retry_after(&e));
                        json!({"id": event.id, "status": "failed", "error": format!("{}; resend it with the same id", refused_message(&e))})
                    }
                    Some((Err(SubmitError::Publish(e)), _)) => {
                        json!({"id": event.id, "status": "invalid", "error": e.to_string()})
                    }
                    None => json!({"id": event.id, "status": "failed", "error": "not attempted"}),
                },
            };
            results.push(result);
        }
        if failed {
            tracing::warn!("a publish batch failed in Redis part way; the rest were not attempted");
        }
        let status = match failed {
            true => StatusCode::SERVICE_UNAVAILABLE,
            false => StatusCode::OK,
        };
        let mut response = (status, Json(json!({ "results": results }))).into_response();
        if let Some(secs) = retry_after {
            response.headers_mut().insert(header::RETRY_AFTER, secs.into());
        }
        Ok(response)
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(json: &str) -> Result<NewEvent, String> {
        let b: PublishBody = serde_json::from_str(json).map_err(|e| e.to_string())?;
        new_event(b).map_err(|e| e.1)
    }

    #[test]
    fn attributes_and_extensions_are_accepted() {
        let e = body(
            r#"{"type":"a.b","data":{"n":12345678901234567890},"source":"/s","time":"2026-01-01T00:00:00Z",
                "specversion":"1.0","traceparent":"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                "datacontenttype":"application/json","tenant":"t-1"}"#,
        )
        .unwrap();
        assert_eq!(e.data, r#"{"n":12345678901234567890}"#);
        assert_eq!(e.source.as_deref(), Some("/s"));
        assert_eq!(
            e.extensions,
            vec![("tenant".to_string(), "t-1".to_string())]
        );
    }

    #[test]
    fn bad_names_are_named() {
        assert_eq!(
            body(r#"{"type":"a","data":1,"Tenant":"x","a_b":"y"}"#).unwrap_err(),
            "unknown field(s) `Tenant`, `a_b`; expected some of type, data, id, source, time, specversion, datacontenttype, dataschema, subject, correlationid, traceparent, or extension attributes (names of 1 to 20 characters of a-z and 0-9)"
        );
        assert_eq!(
            body(r#"{"type":"a","data":1,"attempt":"3","dlq_reason":"x"}"#).unwrap_err(),
            "field(s) `attempt`, `dlq_reason` are written by the worker and cannot be published"
        );
        assert_eq!(
            body(r#"{"type":"a","data":1,"tenant":7}"#).unwrap_err(),
            "tenant: expected a string"
        );
        assert!(
            body(r#"{"type":"a","data":1,"specversion":"0.3"}"#)
                .unwrap_err()
                .starts_with("specversion: `0.3` is not 1.0")
        );
        assert!(
            body(r#"{"type":"a","data":1,"x":1,"x":2}"#)
                .unwrap_err()
                .contains("`x` appears more than once")
        );
    }
}
