//! The request checks of the token endpoints, as extractors: [`Authorized`] (the Bearer
//! token, compared in constant time, then the worker view), [`RateLimited`] (the mutating
//! endpoints' token bucket) and [`JsonBody`] (Content-Type, then the JSON body with every
//! unknown field named).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use subtle::ConstantTimeEq;

use crate::http::api::ApiError;
use crate::http::state::{ApiState, WorkerView};
use crate::model::secret::Secret;

/// A request with the right Bearer token, and the worker it may act on.
///
/// Refused with 503 when no token is configured (the endpoint is off), 401 when the token
/// is missing or wrong (with the `WWW-Authenticate` challenge of [`challenge`]), 503 when
/// the worker is not connected to Redis yet.
pub struct Authorized(pub Arc<WorkerView>);

impl FromRequestParts<ApiState> for Authorized {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &ApiState) -> Result<Self, Response> {
        authorize(state, &parts.headers)
            .map(Authorized)
            .map_err(|e| {
                let unauthorized = e.0 == StatusCode::UNAUTHORIZED;
                let mut response = e.into_response();
                if unauthorized {
                    response
                        .headers_mut()
                        .insert(header::WWW_AUTHENTICATE, challenge(&parts.headers));
                }
                response
            })
    }
}

/// The `WWW-Authenticate` value of a 401 (RFC 6750): `Bearer realm="event-worker"`, plus
/// `error="invalid_token"` when a Bearer token was sent and is wrong.
pub fn challenge(headers: &HeaderMap) -> header::HeaderValue {
    let sent_bearer = bearer_token(headers).is_some_and(|t| !t.is_empty());
    header::HeaderValue::from_static(if sent_bearer {
        r#"Bearer realm="event-worker", error="invalid_token""#
    } else {
        r#"Bearer realm="event-worker""#
    })
}

/// The token of an `Authorization: Bearer <token>` header, if there is one.
pub(crate) fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, t)| t.trim())
}

/// Checks the Bearer token, then returns the worker view.
fn authorize(state: &ApiState, headers: &HeaderMap) -> Result<Arc<WorkerView>, ApiError> {
    let Some(token) = &state.token else {
        return Err(ApiError::unavailable(
            "this endpoint is off: no API token is configured (set EVENTS_API_TOKEN)",
        ));
    };
    if !is_operator(token, headers) {
        return Err(ApiError(
            StatusCode::UNAUTHORIZED,
            "missing or wrong bearer token".into(),
        ));
    }
    connected_worker(state)
}

/// Whether the Bearer token of `headers` is the operator token (compared in constant time).
pub(crate) fn is_operator(token: &Secret, headers: &HeaderMap) -> bool {
    let given = bearer_token(headers).unwrap_or("");
    bool::from(given.as_bytes().ct_eq(token.expose().as_bytes()))
}

/// The worker view, or 503 saying why Redis is not connected yet.
pub(crate) fn connected_worker(state: &ApiState) -> Result<Arc<WorkerView>, ApiError> {
    state.worker().ok_or_else(|| {
        let why = state.health.redis_error.lock().ok().and_then(|e| e.clone());
        ApiError::unavailable(match why {
            Some(why) => format!("not connected to Redis yet: {why}"),
            None => "not connected to Redis yet".to_string(),
        })
    })
}

/// A mutating request within `api.rate_limit`; 429 (with `Retry-After: 1`) otherwise. Put
/// it after the extractor that authenticates: with `[apps]` on, a request without the
/// operator token was authenticated as an app and is limited per subject there.
pub struct RateLimited;

impl FromRequestParts<ApiState> for RateLimited {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &ApiState) -> Result<Self, ApiError> {
        // An app token's request (authenticated before this runs) counts against its
        // subject's own `apps.rate_limit` bucket instead.
        let operator = state
            .token
            .as_ref()
            .is_some_and(|t| is_operator(t, &parts.headers));
        if state.apps.is_some() && !operator {
            return Ok(RateLimited);
        }
        if state.limiter.try_take() {
            Ok(RateLimited)
        } else {
            Err(ApiError(
                StatusCode::TOO_MANY_REQUESTS,
                "too many requests; retry in a second".into(),
            ))
        }
    }
}

/// A body type with the field names it accepts (every other top-level field is refused,
/// by name; serde's `deny_unknown_fields` does not mix with `flatten`).
pub trait Fields {
    /// The accepted top-level fields, in the order the error message lists them.
    const FIELDS: &'static [&'static str];
}

/// A JSON body of type `T`: 415 without a JSON content type, 400 naming every unknown
/// field, 400 `invalid JSON body: ...` otherwise.
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned + Fields> FromRequest<ApiState> for JsonBody<T> {
    type Rejection = Response;

    async fn from_request(request: Request, state: &ApiState) -> Result<Self, Response> {
        let headers = request.headers().clone();
        let body = Bytes::from_request(request, state)
            .await
            .map_err(IntoResponse::into_response)?;
        json_body_with(&headers, &body, T::FIELDS)
            .map(JsonBody)
            .map_err(IntoResponse::into_response)
    }
}

/// Parses a JSON body: 415 without a JSON content type, 400 naming the problem, and every
/// field of a JSON object body not in `allowed` (when `allowed` is not empty).
pub fn json_body_with<T: DeserializeOwned>(
    headers: &HeaderMap,
    body: &Bytes,
    allowed: &[&str],
) -> Result<T, ApiError> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !ct.starts_with("application/json") {
        return Err(ApiError(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "send Content-Type: application/json".into(),
        ));
    }
    if !allowed.is_empty()
        && let Ok(serde_json::Value::Object(map)) =
            serde_json::from_slice::<serde_json::Value>(body)
    {
        let unknown: Vec<&str> = map
            .keys()
            .map(String::as_str)
            .filter(|k| !allowed.contains(k))
            .collect();
        if !unknown.is_empty() {
            return Err(ApiError::bad(format!(
                "unknown field(s) {}; expected some of {}",
                unknown
                    .iter()
                    .map(|k| format!("`{}`", crate::model::envelope::truncate(k, 64)))
                    .collect::<Vec<_>>()
                    .join(", "),
                allowed.join(", ")
            )));
        }
    }
    serde_json::from_slice(body).map_err(|e| ApiError::bad(format!("invalid JSON body: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::api::dlq::{PurgeBody, ReplayBody};
    use crate::http::api::publish::PublishBody;
    use proptest::prelude::*;

    fn json_headers() -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static("application/json"),
        );
        h
    }

    #[test]
    fn bodies_name_unknown_fields_and_need_json() {
        let e = json_body_with::<PublishBody>(
            &json_headers(),
            &Bytes::from_static(b"{\"type\":\"a\",\"data\":1,\"x\":2,\"y\":3}"),
            &["type", "data"],
        )
        .unwrap_err();
        assert_eq!(e.0, StatusCode::BAD_REQUEST);
        assert!(e.1.contains("`x`") && e.1.contains("`y`"), "{}", e.1);
        let e = json_body_with::<PublishBody>(&HeaderMap::new(), &Bytes::from_static(b"{}"), &[])
            .unwrap_err();
        assert_eq!(e.0, StatusCode::UNSUPPORTED_MEDIA_TYPE);
        let deep = Bytes::from(format!(
            "{{\"type\":\"a\",\"data\":{}}}",
            "[".repeat(100_000)
        ));
        assert_eq!(
            json_body_with::<PublishBody>(&json_headers(), &deep, &[])
                .unwrap_err()
                .0,
            StatusCode::BAD_REQUEST
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(3000))]

        #[test]
        fn any_body_is_parsed_or_refused_never_a_panic(bytes in prop::collection::vec(any::<u8>(), 0..300), text in ".{0,200}") {
            let h = json_headers();
            for body in [Bytes::from(bytes.clone()), Bytes::from(text.clone())] {
                if let Err(e) = json_body_with::<PublishBody>(&h, &body, &[]) { prop_assert_eq!(e.0, StatusCode::BAD_REQUEST); }
                if let Err(e) = json_body_with::<ReplayBody>(&h, &body, &[]) { prop_assert_eq!(e.0, StatusCode::BAD_REQUEST); }
                if let Err(e) = json_body_with::<PurgeBody>(&h, &body, &[]) { prop_assert_eq!(e.0, StatusCode::BAD_REQUEST); }
            }
        }
    }
}
