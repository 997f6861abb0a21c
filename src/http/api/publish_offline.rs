//! Publishing before the worker's first connection to Redis, with `outbox.enabled`: the
//! daemon started while Redis is down still takes publishes. Every event is queued in the
//! outbox (reason `unreachable`) and answered 202 `{"queued": "outbox"}` (a batch element
//! `"status": "queued"`); the drain publishes them once Redis answers.

use axum::Json;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::http::api::ApiError;
use crate::http::api::publish::{outbox_refused, refused_message};
use crate::http::state::Offline;
use crate::ops::publish::NewEvent;
use crate::outbox::SubmitError;
use crate::outbox::fallback::{self, Reason};

/// Queues one event: 202 queued, 400 when it is invalid, 503 with `Retry-After` when the
/// outbox refuses it (the same answer as a connected publish the outbox refused).
pub async fn queue_event(offline: &Offline, event: NewEvent) -> Response {
    match offline.outbox.queue(event, Reason::Unreachable).await {
        Ok(q) => (
            StatusCode::ACCEPTED,
            Json(json!({"queued": "outbox", "id": q.id, "stream": q.stream})),
        )
            .into_response(),
        Err(SubmitError::Publish(e)) => ApiError::bad(e.to_string()).into_response(),
        Err(SubmitError::Outbox(e)) => outbox_refused(&e),
    }
}

/// Queues a batch's events in order; `parsed` holds each element's event or its `invalid`
/// or `forbidden` result. 200 with one result per element, or 503 (with `Retry-After`) when
/// the outbox refused one: it and the rest are `failed` (resend them with the same ids).
pub async fn queue_batch(
    offline: &Offline,
    parsed: Vec<Result<NewEvent, serde_json::Value>>,
) -> Response {
    let mut results = Vec::with_capacity(parsed.len());
    let mut retry_after = None;
    for item in parsed {
        let event = match item {
            Err(result) => {
                results.push(result);
                continue;
            }
            Ok(event) => event,
        };
        let id = event.id.clone();
        let result = match retry_after {
            Some(_) => {
                json!({"id": id, "status": "failed", "error": "not attempted; resend it with the same id"})
            }
            None => match offline.outbox.queue(event, Reason::Unreachable).await {
                Ok(q) => {
                    json!({"id": q.id, "status": "queued", "queued": "outbox", "stream": q.stream})
                }
                Err(SubmitError::Publish(e)) => {
                    json!({"id": id, "status": "invalid", "error": e.to_string()})
                }
                Err(SubmitError::Outbox(e)) => {
                    retry_after = Some(fallback::retry_after(&e));
                    json!({"id": id, "status": "failed", "error": format!("{}; resend it with the same id", refused_message(&e))})
                }
            },
        };
        results.push(result);
    }
    let status = match retry_after {
        Some(_) => StatusCode::SERVICE_UNAVAILABLE,
        None => StatusCode::OK,
    };
    let mut response = (status, Json(json!({ "results": results }))).into_response();
    if let Some(secs) = retry_after {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, secs.into());
    }
    response
}
