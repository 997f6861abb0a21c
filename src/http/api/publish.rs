//! `POST /api/events/publish` (operator token or an app token granting the type, rate-limited): appends one event to its type stream,
//! counts it and records it in the history.
//!
//! The body is the event as a flat JSON object: `type` and `data`, the optional attributes
//! of the wire format, and extension attributes as further top-level string fields. `data`
//! is kept as the producer wrote it (numbers keep their precision) and its nesting depth is
//! checked by a scan, so deep `data` gets a 400 that names the depth.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::de::{self, Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::json;
use serde_json::value::RawValue;

use crate::http::api::extract::{Fields, JsonBody, RateLimited};
use crate::http::api::{ApiError, bounded};
use crate::model::attributes::{self, FieldKind};
use crate::model::envelope::truncate;
use crate::ops::dlq::DlqError;
use crate::ops::publish::{self, NewEvent, PublishError};
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

/// 202 with the new entry's id, event id and stream.
pub async fn publish_event(
    auth: crate::http::app_auth::PublishAuth,
    _: RateLimited,
    JsonBody(b): JsonBody<PublishBody>,
) -> Result<Response, ApiError> {
    let worker = auth.worker.clone();
    let event = new_event(b)?;
    auth.check_publish(&event.event_type)?;
    let correlation = event.correlation_id.clone();
    bounded(async {
        match publish::publish(&worker.store, &worker.keys, event).await {
            Ok(p) => {
                let t = p.stream.rsplit(':').next().unwrap_or_default().to_string();
                worker
                    .metrics
                    .published_total
                    .with_label_values(&[&worker.env, worker.type_label(&t)])
                    .inc();
                worker.history.record(Record::new(
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
