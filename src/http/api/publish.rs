//! `POST /api/events/publish` (token, rate-limited): appends one event to its type stream,
//! counts it and records it in the history.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use crate::http::api::extract::{Authorized, Fields, JsonBody, RateLimited};
use crate::http::api::{ApiError, bounded};
use crate::ops::dlq::DlqError;
use crate::ops::publish::{self, NewEvent, PublishError};
use crate::settle::history::{Record, kind};

/// The publish body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublishBody {
    #[serde(rename = "type")]
    event_type: String,
    data: serde_json::Value,
    id: Option<String>,
    correlationid: Option<String>,
}

impl Fields for PublishBody {
    const FIELDS: &'static [&'static str] = &["type", "data", "id", "correlationid"];
}

/// 202 with the new entry's id, event id and stream.
pub async fn publish_event(
    Authorized(worker): Authorized,
    _: RateLimited,
    JsonBody(b): JsonBody<PublishBody>,
) -> Result<Response, ApiError> {
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
