//! Who may publish through `POST /api/events/publish`: the operator API token (unchanged
//! meaning: any type) or, with `[apps]` on, an app token whose `publish` grant covers the
//! event's type ([`PublishAuth`]).

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};

use super::{AppAuthError, AppGrant};
use crate::http::api::ApiError;
use crate::http::api::extract::{Authorized, connected_worker, is_operator};
use crate::http::state::{ApiState, WorkerView};

/// Who is publishing.
#[derive(Debug, Clone)]
pub enum Publisher {
    /// The operator API token (`EVENTS_API_TOKEN`): every type.
    Operator,
    /// An app token: the types its `publish` grant covers.
    App(AppGrant),
}

/// A publish request's credentials, checked, and the worker it publishes through.
///
/// Without `[apps]` this is exactly [`Authorized`]. With it, the operator token is tried
/// first, then an app token ([`super::AppVerifier::verify_request`], with the CSRF check
/// for a cookie): 401 (JSON, `WWW-Authenticate`) when neither holds; an app token's
/// subject past `apps.rate_limit` is 429 (its own bucket, not the operator's).
pub struct PublishAuth {
    /// The worker view.
    pub worker: Arc<WorkerView>,
    /// Who is publishing.
    pub publisher: Publisher,
}

impl PublishAuth {
    /// Whether this publisher may publish `event_type`.
    ///
    /// # Errors
    /// 403 naming the type when an app token's grant does not cover it.
    pub fn check_publish(&self, event_type: &str) -> Result<(), ApiError> {
        match &self.publisher {
            Publisher::Operator => Ok(()),
            Publisher::App(grant) => grant.check_publish(event_type).map_err(ApiError::from),
        }
    }
}

impl FromRequestParts<ApiState> for PublishAuth {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &ApiState) -> Result<Self, Response> {
        let Some(apps) = &state.apps else {
            let Authorized(worker) = Authorized::from_request_parts(parts, state).await?;
            return Ok(PublishAuth {
                worker,
                publisher: Publisher::Operator,
            });
        };
        let publisher = match &state.token {
            Some(token) if is_operator(token, &parts.headers) => Publisher::Operator,
            _ => {
                let grant = apps
                    .verify_request(&parts.method, &parts.headers)
                    .map_err(AppAuthError::into_response)?;
                apps.take(&grant).map_err(AppAuthError::into_response)?;
                Publisher::App(grant)
            }
        };
        let worker = connected_worker(state).map_err(IntoResponse::into_response)?;
        Ok(PublishAuth { worker, publisher })
    }
}
