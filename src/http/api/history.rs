//! `GET /api/events/history` (token): lifecycle records filtered by type, correlation id
//! or event id, newest first.

use axum::Json;
use axum::extract::Query;
use axum::extract::rejection::QueryRejection;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use crate::http::api::extract::Authorized;
use crate::http::api::{ApiError, bounded};
use crate::ops::dlq::DlqError;
use crate::ops::history::{self, HistoryQuery};

/// Query parameters of the history endpoint.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HistoryParams {
    #[serde(rename = "type")]
    event_type: Option<String>,
    correlation_id: Option<String>,
    id: Option<String>,
    limit: Option<usize>,
}

/// The matching records.
pub async fn list(
    Authorized(worker): Authorized,
    params: Result<Query<HistoryParams>, QueryRejection>,
) -> Result<Response, ApiError> {
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
        let records = history::query(&worker.store, &worker.keys.history(), &q)
            .await
            .map_err(DlqError::Store)?;
        Ok(Json(json!({"records": records})).into_response())
    })
    .await
}
