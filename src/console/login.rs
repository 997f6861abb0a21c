//! The login form (the operator token exchanged for a session cookie) and logout.

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;
use subtle::ConstantTimeEq;

use crate::console::guard::{self, PostForm, field, forged, parse_form, safe_next};
use crate::console::session::{over_https, set_cookie};
use crate::console::{message, render};
use crate::http::state::ApiState;
use crate::model::time::now_ms;

/// The login page.
#[derive(askama::Template)]
#[template(path = "console/login.html")]
struct LoginPage {
    next: String,
    error: Option<&'static str>,
}

/// `?next=` of the login form.
#[derive(Deserialize)]
pub struct NextParam {
    next: Option<String>,
}

fn next_of(next: Option<String>) -> String {
    next.filter(|n| safe_next(n))
        .unwrap_or_else(|| "/ui".into())
}

/// GET /ui/login: the form (404 when the console is off).
pub async fn form(State(state): State<ApiState>, Query(p): Query<NextParam>) -> Response {
    if guard::key(&state).is_none() {
        return guard::off();
    }
    let page = LoginPage {
        next: next_of(p.next),
        error: None,
    };
    render(StatusCode::OK, &page)
}

/// POST /ui/login: same-origin only; the right token sets the session cookie and goes to
/// `next`; a wrong one shows the form again with 401. Rate-limited like the API's actions.
pub async fn submit(State(state): State<ApiState>, headers: HeaderMap, body: Bytes) -> Response {
    let Some(key) = guard::key(&state) else {
        return guard::off();
    };
    if !guard::is_same_origin(&headers) {
        return forged();
    }
    if !state.limiter.try_take() {
        return message(
            StatusCode::TOO_MANY_REQUESTS,
            "Slow down",
            "too many attempts; wait a second and try again",
        );
    }
    let fields = parse_form(&body);
    let next = next_of(field(&fields, "next"));
    let given = field(&fields, "token").unwrap_or_default();
    let right = state
        .token
        .as_ref()
        .is_some_and(|t| bool::from(given.as_bytes().ct_eq(t.expose().as_bytes())));
    if !right {
        let page = LoginPage {
            next,
            error: Some("That is not the operator token (EVENTS_API_TOKEN). Try again."),
        };
        return render(StatusCode::UNAUTHORIZED, &page);
    }
    let value = key.issue(now_ms());
    let mut response = Redirect::to(&next).into_response();
    if let Ok(v) = HeaderValue::from_str(&set_cookie(Some(&value), over_https(&headers))) {
        response.headers_mut().insert(header::SET_COOKIE, v);
    }
    response
}

/// POST /ui/logout: clears the cookie (the session's own CSRF token required).
pub async fn logout(headers: HeaderMap, _form: PostForm) -> Response {
    let mut response = Redirect::to("/ui/login").into_response();
    if let Ok(v) = HeaderValue::from_str(&set_cookie(None, over_https(&headers))) {
        response.headers_mut().insert(header::SET_COOKIE, v);
    }
    response
}
