//! The push endpoints: `GET /api/events/stream` (Server-Sent Events),
//! `GET /api/events/ws` (WebSocket), `GET /api/events/stream/position` and the JavaScript
//! client `GET /api/events/client.js` (`src/push/client.js`). Who may
//! subscribe to what is decided in one place, [`authorize`]; the Origin check of WebSocket
//! upgrades is [`check_origin`].

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures::Stream;
use serde_json::json;

use crate::http::api::ApiError;
use crate::http::api::extract::is_operator;
use crate::http::state::ApiState;
use crate::push::position::{self, Positions};
use crate::push::service::PushService;
use crate::push::session::{Frame, Session, check_channels};

/// The push routes (on the API listener and on `push.listen`); with `[apps]` on, SSE, the
/// position, the ack and `client.js` answer CORS for its allowed origins.
pub fn routes(apps: Option<&crate::http::app_auth::AppVerifier>) -> Router<ApiState> {
    let router = Router::new()
        .route("/api/events/stream", get(stream))
        .route("/api/events/stream/position", get(position_of))
        .route("/api/events/stream/ack", axum::routing::post(ack))
        .route("/api/events/client.js", get(client_js))
        .layer(axum::middleware::from_fn(with_challenge));
    let router = match apps {
        Some(apps) => router.layer(apps.cors()),
        None => router,
    };
    router.route("/api/events/ws", get(crate::push::ws::upgrade))
}

/// The JavaScript client (`src/push/client.js`), served as it is.
pub const CLIENT_JS: &str = include_str!("client.js");

/// `GET /api/events/client.js`: the dependency-free ES module of README "JavaScript client".
/// Public (no token: it holds no secret), cached for 5 minutes.
async fn client_js() -> Response {
    use axum::http::header;
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=300"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        CLIENT_JS,
    )
        .into_response()
}

/// Adds the `WWW-Authenticate` challenge (RFC 6750, as the operator API and publish send
/// it) to a 401 of the push routes.
async fn with_challenge(request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let challenge = crate::http::api::extract::challenge(request.headers());
    let mut response = next.run(request).await;
    if response.status() == StatusCode::UNAUTHORIZED {
        let headers = response.headers_mut();
        if !headers.contains_key(axum::http::header::WWW_AUTHENTICATE) {
            headers.insert(axum::http::header::WWW_AUTHENTICATE, challenge);
        }
    }
    response
}

/// Whether the request may subscribe to `channels`: the one place the decision is made.
/// The operator API token (`EVENTS_API_TOKEN`) may subscribe to any channel. With `[apps]`
/// on, an app token (header or cookie; a cookie on a POST needs an allowed `Origin`, the CSRF
/// defence) may subscribe to the channels its `channels` grant covers, checked again on every
/// connection and resume. With neither configured, push is open (README "Push to apps").
/// Returns the push service.
///
/// # Errors
/// 400 for a bad channel list, 503 when push is off, 401 for a missing, expired or invalid
/// token, 403 for a channel outside the grant (naming it), 429 for an app token's subject
/// past `apps.rate_limit`.
pub fn authorize(
    state: &ApiState,
    method: &Method,
    headers: &HeaderMap,
    channels: &[String],
) -> Result<Arc<PushService>, ApiError> {
    authorize_until(state, method, headers, channels).map(|(svc, _)| svc)
}

/// [`authorize`], and when the grant stops being accepted: an app token's `exp` (plus
/// `apps.leeway`), at which a connection opened with it is closed (`token_expired`); `None`
/// for the operator token and for open push.
///
/// # Errors
/// As [`authorize`].
pub fn authorize_until(
    state: &ApiState,
    method: &Method,
    headers: &HeaderMap,
    channels: &[String],
) -> Result<(Arc<PushService>, Option<SystemTime>), ApiError> {
    check_channels(channels)?;
    let Some(svc) = state.push.clone() else {
        return Err(ApiError::unavailable(
            "push is off: no [[push.channels]] rule is configured",
        ));
    };
    if let Some(token) = &state.token
        && is_operator(token, headers)
    {
        return Ok((svc, None));
    }
    match (&state.apps, &state.token) {
        (Some(apps), _) => {
            let grant = apps.verify_request(method, headers)?;
            for channel in channels {
                grant.check_subscribe(channel)?;
            }
            apps.take(&grant)?;
            Ok((svc, Some(apps.valid_until(&grant))))
        }
        (None, Some(_)) => Err(ApiError(
            StatusCode::UNAUTHORIZED,
            "missing or wrong bearer token".into(),
        )),
        (None, None) => Ok((svc, None)),
    }
}

/// Whether a WebSocket upgrade's `Origin` is allowed: with `[apps]` on, only the origins of
/// `apps.allowed_origins` (a request without `Origin` is not from a browser and passes).
///
/// # Errors
/// 403 for an origin that is not allowed.
pub fn check_origin(state: &ApiState, headers: &HeaderMap) -> Result<(), ApiError> {
    match &state.apps {
        Some(apps) => apps.check_origin(headers).map_err(ApiError::from),
        None => Ok(()),
    }
}

/// The `channel=` values of a query string.
pub fn query_channels(query: Option<&str>) -> Vec<String> {
    query_values(query, "channel")
}

/// Every value of `name` in a query string.
pub fn query_values(query: Option<&str>, name: &str) -> Vec<String> {
    url::form_urlencoded::parse(query.unwrap_or("").as_bytes())
        .filter(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
        .collect()
}

/// The positions of a `Last-Event-ID` or `since` value.
///
/// # Errors
/// 400 when it is not one this server gave out.
pub fn parse_since(text: Option<&str>) -> Result<Positions, ApiError> {
    match text.map(str::trim).filter(|t| !t.is_empty()) {
        None => Ok(Positions::new()),
        Some(t) => position::decode(t).ok_or_else(|| {
            ApiError::bad(
                "the position (Last-Event-ID or since) is not one this server gave out; \
                 reconnect without it and reload the state",
            )
        }),
    }
}

/// `GET /api/events/stream?channel=a&channel=b[&since=<id>]`: Server-Sent Events.
async fn stream(
    State(state): State<ApiState>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let channels = query_channels(query.as_deref());
    let (svc, until) = authorize_until(&state, &Method::GET, &headers, &channels)?;
    let last_id = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let since = last_id.or_else(|| query_values(query.as_deref(), "since").pop());
    let since = parse_since(since.as_deref())?;
    let heartbeat = svc.config.heartbeat;
    let device = query_values(query.as_deref(), "device").pop();
    let (session, reply) = Session::open(svc, channels, since, device, "sse").await?;
    let session = session.until(until);
    let first = SseEvent::default()
        .event("resume")
        .id(position::encode(&session.positions))
        .retry(Duration::from_secs(2))
        .data(reply.to_string());
    let keep = KeepAlive::new().interval(heartbeat).text("ping");
    Ok(Sse::new(sse_events(first, session))
        .keep_alive(keep)
        .into_response())
}

/// The event stream of a session: `first`, then one event per frame.
fn sse_events(
    first: SseEvent,
    session: Session,
) -> impl Stream<Item = Result<SseEvent, std::convert::Infallible>> {
    futures::stream::unfold(
        (Some(first), Some(session)),
        |(first, session)| async move {
            if let Some(f) = first {
                return Some((Ok(f), (None, session)));
            }
            let mut session = session?;
            let event = match session.next().await? {
                Frame::Message {
                    channel,
                    position,
                    message,
                } => SseEvent::default()
                    .id(position::encode(&session.positions))
                    .data(message_json(&channel, &position.to_string(), &message)),
                Frame::End { reason } => {
                    let id = position::encode(&session.positions);
                    let data = json!({"reason": reason, "id": id}).to_string();
                    return Some((
                        Ok(SseEvent::default().event("end").data(data)),
                        (None, None),
                    ));
                }
            };
            Some((Ok(event), (None, Some(session))))
        },
    )
}

/// A message as apps receive it: `{"channel", "position", "event"}`.
pub fn message_json(channel: &str, position: &str, message: &str) -> String {
    let channel = serde_json::to_string(channel).unwrap_or_default();
    format!(r#"{{"channel":{channel},"position":"{position}","event":{message}}}"#)
}

/// `GET /api/events/stream/position?channel=...`: the current position of each channel
/// (read it, load the state, then subscribe from it: no page-load gap).
async fn position_of(
    State(state): State<ApiState>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let channels = query_channels(query.as_deref());
    let svc = authorize(&state, &Method::GET, &headers, &channels)?;
    let store = svc.connected_store()?;
    let asked: Vec<_> = channels.iter().map(|c| (c.clone(), None)).collect();
    let resumed = store
        .resume(&asked, 0)
        .await
        .map_err(|e| ApiError::unavailable(format!("{e}; retry")))?;
    let positions: Positions = channels
        .into_iter()
        .zip(resumed)
        .map(|(c, r)| (c, r.position))
        .collect();
    let each: serde_json::Map<_, _> = positions
        .iter()
        .map(|(c, p)| (c.clone(), p.to_string().into()))
        .collect();
    Ok(axum::Json(json!({"positions": each, "id": position::encode(&positions)})).into_response())
}

/// The body of `POST /api/events/stream/ack`.
#[derive(serde::Deserialize)]
pub struct AckBody {
    /// The device id (`[A-Za-z0-9_.-]{1,128}`).
    device: String,
    /// The `id` of the last message the device processed (its positions).
    id: String,
}

impl crate::http::api::extract::Fields for AckBody {
    const FIELDS: &'static [&'static str] = &["device", "id"];
}

/// `POST /api/events/stream/ack` `{"device", "id"}`: keeps the device's processed position
/// of every channel in `id`. 200 `{"acknowledged": [channels]}`.
async fn ack(
    State(state): State<ApiState>,
    headers: HeaderMap,
    crate::http::api::extract::JsonBody(body): crate::http::api::extract::JsonBody<AckBody>,
) -> Result<Response, ApiError> {
    use crate::push::device::{MAX_DEVICE_CHANNELS, is_valid_device};
    if !is_valid_device(&body.device) {
        return Err(ApiError::bad(format!(
            "device `{}` is not a valid id ([A-Za-z0-9_.-], 1-128 characters)",
            body.device
        )));
    }
    let positions = parse_since(Some(&body.id))?;
    let channels: Vec<String> = positions.keys().cloned().collect();
    let svc = authorize(&state, &Method::POST, &headers, &channels)?;
    let store = svc.connected_store()?;
    let kept = store
        .ack(&body.device, &positions)
        .await
        .map_err(|e| ApiError::unavailable(format!("{e}; retry")))?;
    if kept {
        let _ = store.index_device(&body.device).await;
    }
    if !kept {
        return Err(ApiError::bad(format!(
            "device `{}` would hold more than {MAX_DEVICE_CHANNELS} channels; nothing kept",
            body.device
        )));
    }
    Ok(axum::Json(json!({"acknowledged": channels})).into_response())
}
