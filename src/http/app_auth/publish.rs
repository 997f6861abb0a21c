//! Who may publish through `POST /api/events/publish`: the operator API token (unchanged
//! meaning: any type) or, with `[apps]` on, an app token whose `publish` grant covers the
//! event's type ([`PublishAuth`]).

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};

use super::{AppAuthError, AppGrant};
use crate::http::api::ApiError;
use crate::http::api::extract::{Authorized, connected_worker, is_operator, refusal};
use crate::http::state::{ApiState, Offline, WorkerView};

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
    /// The worker view; with `outbox.enabled`, [`Target::Offline`] before the first
    /// connection to Redis.
    pub target: Target,
    /// Who is publishing.
    pub publisher: Publisher,
}

/// Where a publish goes.
#[derive(Clone)]
pub enum Target {
    /// Redis, through the connected worker (and its outbox, when enabled).
    Connected(Arc<WorkerView>),
    /// Not connected yet: straight to the outbox.
    Offline(Arc<Offline>),
}

/// The worker view, or the outbox before the first connection (else the 503 saying why
/// Redis is not connected yet).
fn target(state: &ApiState) -> Result<Target, ApiError> {
    match (connected_worker(state), &state.offline) {
        (Ok(worker), _) => Ok(Target::Connected(worker)),
        (Err(_), Some(offline)) => Ok(Target::Offline(offline.clone())),
        (Err(e), None) => Err(e),
    }
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
            if state.offline.is_some() && state.worker().is_none() {
                // The token is checked exactly as Authorized does; Redis is not needed.
                Authorized::check_token(state, &parts.headers)
                    .map_err(|e| refusal(e, &parts.headers))?;
                let target = target(state).map_err(IntoResponse::into_response)?;
                let publisher = Publisher::Operator;
                return Ok(PublishAuth { target, publisher });
            }
            let Authorized(worker) = Authorized::from_request_parts(parts, state).await?;
            return Ok(PublishAuth {
                target: Target::Connected(worker),
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
        let target = target(state).map_err(IntoResponse::into_response)?;
        Ok(PublishAuth { target, publisher })
    }
}
