//! The console's request checks, as extractors: [`Console`] (the console is on, a valid
//! session cookie, else a redirect to the login form; the worker connected) and
//! [`PostForm`] (a same-origin form POST carrying the session's CSRF token, else 403;
//! within `api.rate_limit` like the API's actions, else 429).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};

use crate::console::message;
use crate::console::session::{self, SessionKey};
use crate::http::state::{ApiState, WorkerView};
use crate::model::time::now_ms;

/// The page shown on `/ui` when no operator token is configured.
pub const OFF: &str = "The console is off: no operator token is configured. Set \
EVENTS_API_TOKEN (the same token as the HTTP API) and restart the worker.";

/// The 403 text of a POST that is cross-origin or lacks its CSRF token.
pub const FORGED: &str = "Refused: this form did not come from this console (another origin, \
or a stale form without a valid CSRF token). Reload the page and try again.";

/// The session key; `None` when the console is off (no operator token).
pub fn key(state: &ApiState) -> Option<SessionKey> {
    state.token.as_ref().map(SessionKey::from_token)
}

/// The 404 "console is off" page.
pub fn off() -> Response {
    message(StatusCode::NOT_FOUND, "Console off", OFF)
}

/// A request with a valid session, and the worker it may act on.
pub struct Console {
    /// The worker view.
    pub worker: Arc<WorkerView>,
    /// The CSRF token to put in this session's forms.
    pub csrf: String,
}

/// The session cookie's value when the console is on and the session is valid.
pub enum SessionCheck {
    /// Valid: the cookie value and the key.
    Valid(String, SessionKey),
    /// No valid session: the answer to give (404 off, or a redirect to login).
    Refused(Response),
}

/// Checks the session of `parts`: the console off gives 404, no or a bad session a 303 to
/// `/ui/login?next=<this path>`.
pub fn check(parts: &Parts, state: &ApiState) -> SessionCheck {
    let Some(key) = key(state) else {
        return SessionCheck::Refused(off());
    };
    match session::cookie(&parts.headers) {
        Some(v) if key.valid(v, now_ms()) => SessionCheck::Valid(v.to_string(), key),
        _ => {
            let next = parts
                .uri
                .path_and_query()
                .map(|p| p.as_str())
                .unwrap_or("/ui");
            let to = format!("/ui/login?next={}", url_encode(next));
            SessionCheck::Refused(Redirect::to(&to).into_response())
        }
    }
}

impl FromRequestParts<ApiState> for Console {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &ApiState) -> Result<Self, Response> {
        let (value, key) = match check(parts, state) {
            SessionCheck::Valid(v, k) => (v, k),
            SessionCheck::Refused(r) => return Err(r),
        };
        let worker = crate::http::api::extract::connected_worker(state).map_err(|e| {
            message(
                StatusCode::SERVICE_UNAVAILABLE,
                "Not connected",
                &format!("{}; this page reloads when you refresh it", e.1),
            )
        })?;
        Ok(Console {
            worker,
            csrf: key.csrf(&value),
        })
    }
}

/// A checked form POST: a valid session, same origin, the session's CSRF token; its fields.
pub struct PostForm {
    /// The session and worker.
    pub console: Console,
    /// The form's fields in order (repeated names kept).
    pub fields: Vec<(String, String)>,
}

impl PostForm {
    /// The first value of `name`, trimmed; `None` when absent or empty.
    pub fn get(&self, name: &str) -> Option<String> {
        field(&self.fields, name)
    }

    /// Every non-empty value of `name`.
    pub fn all(&self, name: &str) -> Vec<String> {
        self.fields
            .iter()
            .filter(|(k, v)| k == name && !v.trim().is_empty())
            .map(|(_, v)| v.trim().to_string())
            .collect()
    }
}

/// The first non-empty value of `name` in `fields`, trimmed.
pub fn field(fields: &[(String, String)], name: &str) -> Option<String> {
    fields
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.trim().to_string())
        .filter(|v| !v.is_empty())
}

/// 403 with [`FORGED`].
pub fn forged() -> Response {
    message(StatusCode::FORBIDDEN, "Refused", FORGED)
}

/// Parses an `application/x-www-form-urlencoded` body.
pub fn parse_form(body: &[u8]) -> Vec<(String, String)> {
    url::form_urlencoded::parse(body).into_owned().collect()
}

impl FromRequest<ApiState> for PostForm {
    type Rejection = Response;

    async fn from_request(request: Request, state: &ApiState) -> Result<Self, Response> {
        let (mut parts, body) = request.into_parts();
        if !session::same_origin(&parts.headers) {
            return Err(forged());
        }
        let console = Console::from_request_parts(&mut parts, state).await?;
        let body = Bytes::from_request(Request::from_parts(parts.clone(), body), state)
            .await
            .map_err(IntoResponse::into_response)?;
        let fields = parse_form(&body);
        let (SessionCheck::Valid(value, key), Some(token)) =
            (check(&parts, state), field(&fields, "csrf"))
        else {
            return Err(forged());
        };
        if !key.csrf_ok(&value, &token) {
            return Err(forged());
        }
        if !state.limiter.try_take() {
            return Err(message(
                StatusCode::TOO_MANY_REQUESTS,
                "Slow down",
                "too many actions at once (api.rate_limit); wait a second and try again",
            ));
        }
        Ok(PostForm { console, fields })
    }
}

/// Percent-encodes `s` for a query value.
pub fn url_encode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// Whether `next` is a console path to return to after login (no other site).
pub fn safe_next(next: &str) -> bool {
    next.starts_with("/ui") && !next.starts_with("//") && !next.contains('\\')
}

/// `true` when the request headers name a form POST (for the login form's own check).
pub fn is_same_origin(headers: &HeaderMap) -> bool {
    session::same_origin(headers) && headers.contains_key(header::HOST)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn login_returns_only_to_console_paths() {
        assert!(safe_next("/ui/dlq?type=a.b"));
        for bad in [
            "//evil.example/ui",
            "https://evil.example/ui",
            "/api/events/dlq",
            "/ui\\x",
        ] {
            assert!(!safe_next(bad), "{bad}");
        }
    }

    #[test]
    fn forms_keep_repeated_fields_and_decode_them() {
        let f = parse_form(b"ids=1-0&ids=2-0&grep=a+b%26c&csrf=");
        let form_ids: Vec<&str> = f
            .iter()
            .filter(|(k, _)| k == "ids")
            .map(|(_, v)| v.as_str())
            .collect();
        assert_eq!(form_ids, ["1-0", "2-0"]);
        assert_eq!(field(&f, "grep").as_deref(), Some("a b&c"));
        assert_eq!(field(&f, "csrf"), None, "an empty value is no value");
    }
}
