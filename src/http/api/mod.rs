//! The operator API under `/api/events/`: health (open), history, publish, the DLQ,
//! retry-set and instances endpoints (Bearer token from `EVENTS_API_TOKEN`, compared in constant time; without a
//! token configured they answer 503 and say why). Inputs are validated before any Redis
//! call; errors are JSON `{"error": "..."}` with a 4xx/5xx status and never echo secrets.
//!
//! One file per area; the request checks every token endpoint shares are extractors
//! ([`extract::Authorized`], [`extract::RateLimited`], [`extract::JsonBody`]), run in that
//! order, so a request is refused for its token before its rate and for its rate before its
//! body.

use std::time::Duration;

use axum::extract::rejection::QueryRejection;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;

use crate::http::state::ApiState;
use crate::ops::dlq::DlqError;

pub(crate) mod dlq;
pub(crate) mod extract;
pub(crate) mod health;
pub(crate) mod history;
pub(crate) mod publish;
pub(crate) mod retries;

/// The `/api/events/*` routes; with `[apps]` on, publish answers CORS for the allowed
/// origins ([`crate::http::app_auth::AppVerifier::cors`]).
pub fn routes(apps: Option<&crate::http::app_auth::AppVerifier>) -> Router<ApiState> {
    let mut publish = post(publish::publish_event);
    let mut publish_batch = post(publish::publish_batch);
    if let Some(apps) = apps {
        publish = publish.layer(apps.cors());
        publish_batch = publish_batch.layer(apps.cors());
    }
    Router::new()
        .route("/api/events/health", get(health::health))
        .route("/api/events/history", get(history::list))
        .route("/api/events/publish", publish)
        .route("/api/events/publish/batch", publish_batch)
        .route("/api/events/dlq", get(dlq::list))
        .route("/api/events/dlq/stats", get(dlq::stats))
        .route("/api/events/dlq/replay", post(dlq::replay))
        .route("/api/events/dlq/purge", post(dlq::purge))
        .route("/api/events/dlq/{id}", get(dlq::show))
        .route("/api/events/retries", get(retries::list))
        .route("/api/events/retries/retry-now", post(retries::retry_now))
        .route(
            "/api/events/retries/dead-letter",
            post(retries::dead_letter),
        )
        .route("/api/events/instances", get(retries::instances))
}

/// An API error: a status and a message safe to show.
#[derive(Debug)]
pub struct ApiError(pub StatusCode, pub String);

impl ApiError {
    /// 400 with `msg`.
    pub fn bad(msg: impl Into<String>) -> Self {
        ApiError(StatusCode::BAD_REQUEST, msg.into())
    }

    /// 503 with `msg`.
    pub fn unavailable(msg: impl Into<String>) -> Self {
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
                ApiError::unavailable(format!("{e}; try again"))
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
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs `fut` within [`REQUEST_TIMEOUT`], else 503.
pub async fn bounded<T>(fut: impl Future<Output = Result<T, ApiError>>) -> Result<T, ApiError> {
    tokio::time::timeout(REQUEST_TIMEOUT, fut)
        .await
        .unwrap_or_else(|_| {
            Err(ApiError::unavailable(
                "the request took too long (Redis slow or unreachable)",
            ))
        })
}
