//! The operator console in the browser, `/ui` on the API listener: server-rendered pages
//! (askama templates under `templates/console/`, escaped by default) with a little
//! JavaScript (`static/console.js`, embedded), behind the operator token.
//!
//! Off (404 with a page saying why) unless `EVENTS_API_TOKEN` is set. A login form exchanges
//! the token for a signed, expiring session cookie ([`session`]); every POST carries the
//! session's CSRF token and must be same-origin; every answer carries a strict CSP. The
//! pages call the same operations as the HTTP API ([`crate::ops`]), never the API over the
//! network. Parts: `session` (cookie, CSRF), `guard` (the request checks), `login`,
//! `overview`, `dlq` (list, entry), `dlq_actions` (replay, purge), `history`, `retries`
//! (retry now, dead-letter now), `instances`, `assets`.

mod assets;
mod dlq;
mod dlq_actions;
mod guard;
mod history;
mod instances;
mod login;
mod overview;
mod retries;
pub(crate) mod session;

use axum::Router;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};

use crate::http::state::ApiState;

/// The `Content-Security-Policy` of every console answer: nothing inline, nothing external.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// The `/ui` routes, with the security headers on every answer.
pub fn routes() -> Router<ApiState> {
    Router::new()
        .route("/ui", get(overview::page))
        .route("/ui/", get(overview::page))
        .route("/ui/overview.json", get(overview::json))
        .route("/ui/login", get(login::form).post(login::submit))
        .route("/ui/logout", post(login::logout))
        .route("/ui/dlq", get(dlq::list))
        .route("/ui/dlq/entry/{id}", get(dlq::entry))
        .route("/ui/dlq/replay", post(dlq_actions::replay))
        .route("/ui/dlq/purge", post(dlq_actions::purge))
        .route("/ui/history", get(history::page))
        .route("/ui/retries", get(retries::page))
        .route("/ui/retries/retry-now", post(retries::retry_now))
        .route("/ui/retries/dead-letter", post(retries::dead_letter))
        .route("/ui/instances", get(instances::page))
        .route("/ui/static/console.css", get(assets::css))
        .route("/ui/static/console.js", get(assets::js))
        .layer(axum::middleware::from_fn(security_headers))
}

/// Adds the CSP, `nosniff`, `Referrer-Policy: same-origin` and `Cache-Control: no-store`.
async fn security_headers(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let mut response = next.run(request).await;
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

/// A rendered page, or 500 naming the template failure.
pub(crate) fn render<T: askama::Template>(status: StatusCode, page: &T) -> Response {
    match page.render() {
        Ok(html) => (status, Html(html)).into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "console page could not be rendered");
            message(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Error",
                "the page could not be rendered; see the worker log",
            )
        }
    }
}

/// The plain message page (errors, refusals, the console being off).
#[derive(askama::Template)]
#[template(path = "console/message.html")]
struct Message<'a> {
    title: &'a str,
    text: &'a str,
}

/// A message page with `status`.
pub(crate) fn message(status: StatusCode, title: &str, text: &str) -> Response {
    match askama::Template::render(&Message { title, text }) {
        Ok(html) => (status, Html(html)).into_response(),
        Err(_) => (status, text.to_string()).into_response(),
    }
}

/// A console failure shown as a message page: a status and a text safe to show.
#[derive(Debug)]
pub(crate) struct ConsoleError(pub StatusCode, pub String);

impl IntoResponse for ConsoleError {
    fn into_response(self) -> Response {
        let title = if self.0.is_client_error() {
            "Not done"
        } else {
            "Unavailable"
        };
        message(self.0, title, &self.1)
    }
}

impl From<crate::ops::dlq::DlqError> for ConsoleError {
    fn from(e: crate::ops::dlq::DlqError) -> Self {
        let api = crate::http::api::ApiError::from(e);
        ConsoleError(api.0, api.1)
    }
}

impl From<crate::http::api::ApiError> for ConsoleError {
    fn from(e: crate::http::api::ApiError) -> Self {
        ConsoleError(e.0, e.1)
    }
}
