//! `GET /api/events/ws`: push over WebSocket, JSON text frames. The client sends
//! `{"type":"subscribe","channels":[...],"since":"<id>"}` once (`since` optional: the `id` of
//! the last message it processed); the server answers `{"type":"resume",...}` (the resume
//! reply and `id`), then `{"type":"message","channel","position","id","event"}` frames.
//! `{"type":"ping"}` is answered `{"type":"pong"}`; the server also sends WebSocket pings
//! every `push.heartbeat`. A slow client gets `{"type":"end","reason":"slow_client","id"}`
//! and a close frame (code 4000); at the app token's expiry, `"reason":"token_expired"` and
//! code 4401 (reconnect with a new token); errors are `{"type":"error","error"}` and a close (4400,
//! 4401, 4403 or 4503).

use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::{SinkExt, StreamExt};
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use serde_json::json;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};

use crate::http::api::ApiError;
use crate::http::event_stream::LeanUpgrade;
use crate::http::state::ApiState;
use crate::push::http::{authorize_until, check_origin, message_json, parse_since};
use crate::push::position;
use crate::push::session::{Frame, Session};

/// Longest a frame may take to send before the client is dropped.
const SEND_TIMEOUT: Duration = Duration::from_secs(5);

/// Read buffer of a connection: clients send only small subscribe and ping frames (the
/// default, 128 KiB per connection, was most of an idle connection's memory; it grows for a
/// larger frame).
const READ_BUFFER: usize = 256;

/// Largest message or frame a client may send (a subscribe frame is far smaller).
const MAX_CLIENT_MESSAGE: usize = 64 * 1024;

/// How long a client has to send its subscribe frame.
const SUBSCRIBE_TIMEOUT: Duration = Duration::from_secs(30);

/// The GUID of RFC 6455 section 1.3, appended to the client's key for the accept key.
const WS_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
enum ClientFrame {
    Subscribe {
        channels: Vec<String>,
        #[serde(default)]
        since: Option<String>,
        #[serde(default)]
        device: Option<String>,
    },
    Ping,
}

/// The upgrade: the handshake's checks and the Origin check, then `101 Switching Protocols`
/// and the connection on its own task. The socket comes from the lean listener when this is
/// the connection's first request (see [`crate::http::event_stream`]), else from hyper.
pub async fn upgrade(
    State(state): State<ApiState>,
    mut request: Request,
) -> Result<Response, ApiError> {
    let accept = accept_key(request.headers())?;
    check_origin(&state, request.headers())?;
    let headers = auth_headers(request.headers());
    // The lean listener's socket when it read this request, else hyper's upgrade.
    let lean = request.extensions_mut().remove::<LeanUpgrade>();
    let hyper_upgrade = hyper::upgrade::on(&mut request);
    tokio::spawn(async move {
        if let Some(lean) = lean {
            if let Some((io, read)) = lean.socket().await {
                let socket =
                    WebSocketStream::from_partially_read(io, read, Role::Server, Some(config()))
                        .await;
                run(socket, state, headers).await;
            }
        } else if let Ok(upgraded) = hyper_upgrade.await {
            let io = TokioIo::new(upgraded);
            let socket = WebSocketStream::from_raw_socket(io, Role::Server, Some(config())).await;
            run(socket, state, headers).await;
        }
    });
    let mut response = StatusCode::SWITCHING_PROTOCOLS.into_response();
    let h = response.headers_mut();
    h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
    Ok(response)
}

/// The connection's limits: small read buffer, no write buffering, bounded client messages.
fn config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(0)
        .max_message_size(Some(MAX_CLIENT_MESSAGE))
        .max_frame_size(Some(MAX_CLIENT_MESSAGE))
}

/// The `Sec-WebSocket-Accept` of a valid upgrade request (RFC 6455 4.2.1).
///
/// # Errors
/// 400 naming what is missing when the request is not a WebSocket upgrade.
fn accept_key(headers: &HeaderMap) -> Result<HeaderValue, ApiError> {
    let has_token = |name: header::HeaderName, token: &str| {
        headers.get_all(name).iter().any(|v| {
            v.to_str()
                .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
        })
    };
    if !has_token(header::CONNECTION, "upgrade") || !has_token(header::UPGRADE, "websocket") {
        return Err(ApiError::bad(
            "not a WebSocket upgrade: send `Connection: upgrade` and `Upgrade: websocket`",
        ));
    }
    if headers
        .get(header::SEC_WEBSOCKET_VERSION)
        .map(HeaderValue::as_bytes)
        != Some(b"13")
    {
        return Err(ApiError::bad("`Sec-WebSocket-Version: 13` is required"));
    }
    let Some(key) = headers.get(header::SEC_WEBSOCKET_KEY) else {
        return Err(ApiError::bad("`Sec-WebSocket-Key` is missing"));
    };
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY);
    ctx.update(key.as_bytes());
    ctx.update(WS_GUID.as_bytes());
    use base64::Engine;
    let accept = base64::engine::general_purpose::STANDARD.encode(ctx.finish());
    HeaderValue::from_str(&accept).map_err(|_| ApiError::bad("bad `Sec-WebSocket-Key`"))
}

/// Copies of the headers the subscribe's authorization reads (`Authorization`, `Cookie`,
/// `Origin`): the request's own header values share the connection's 8 KiB read buffer,
/// which holding them would keep alive for the connection's life.
fn auth_headers(headers: &HeaderMap) -> HeaderMap {
    use axum::http::{HeaderValue, header};
    let mut kept = HeaderMap::new();
    for name in [header::AUTHORIZATION, header::COOKIE, header::ORIGIN] {
        for value in headers.get_all(&name) {
            if let Ok(v) = HeaderValue::from_bytes(value.as_bytes()) {
                kept.append(name.clone(), v);
            }
        }
    }
    kept
}

/// A connection's socket, whichever listener path it came from.
trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

async fn send<S: Io>(socket: &mut WebSocketStream<S>, m: Message) -> bool {
    matches!(
        tokio::time::timeout(SEND_TIMEOUT, socket.send(m)).await,
        Ok(Ok(()))
    )
}

async fn fail<S: Io>(socket: &mut WebSocketStream<S>, e: ApiError) {
    let code = match e.0 {
        StatusCode::UNAUTHORIZED => 4401,
        StatusCode::FORBIDDEN => 4403,
        StatusCode::BAD_REQUEST => 4400,
        _ => 4503,
    };
    let body = json!({"type": "error", "error": e.1}).to_string();
    if send(socket, Message::Text(body.into())).await {
        let close = CloseFrame {
            code: code.into(),
            reason: "error".into(),
        };
        let _ = send(socket, Message::Close(Some(close))).await;
    }
}

/// Waits for the subscribe frame, authorizes it, opens the session and sends the resume
/// frame; `None` (after the error frame and close) when the connection cannot go on.
async fn open<S: Io>(
    socket: &mut WebSocketStream<S>,
    state: ApiState,
    headers: HeaderMap,
) -> Option<(Session, Duration)> {
    let opened = async {
        let (channels, since, device) = subscribe(socket).await?;
        let (svc, until) = authorize_until(&state, &axum::http::Method::GET, &headers, &channels)?;
        let since = parse_since(since.as_deref())?;
        let heartbeat = svc.config.heartbeat;
        Session::open(svc, channels, since, device, "ws")
            .await
            .map(|(s, reply)| ((s.until(until), reply), heartbeat))
    };
    let ((session, reply), heartbeat) = match opened.await {
        Ok(x) => x,
        Err(e) => {
            fail(socket, e).await;
            return None;
        }
    };
    let mut first = json!({"type": "resume", "id": position::encode(&session.positions)});
    if let (Some(f), serde_json::Value::Object(r)) = (first.as_object_mut(), reply) {
        f.extend(r);
    }
    send(socket, Message::Text(first.to_string().into()))
        .await
        .then_some((session, heartbeat))
}

/// Waits for the subscribe frame (answering pings).
type Subscribe = (Vec<String>, Option<String>, Option<String>);

async fn subscribe<S: Io>(socket: &mut WebSocketStream<S>) -> Result<Subscribe, ApiError> {
    loop {
        let m = match tokio::time::timeout(SUBSCRIBE_TIMEOUT, socket.next()).await {
            Ok(Some(Ok(m))) => m,
            _ => return Err(ApiError::bad("no subscribe frame received in time")),
        };
        let Message::Text(t) = m else { continue };
        match serde_json::from_str::<ClientFrame>(t.as_str()) {
            Ok(ClientFrame::Subscribe {
                channels,
                since,
                device,
            }) => return Ok((channels, since, device)),
            Ok(ClientFrame::Ping) => {
                let _ = send(socket, Message::Text(r#"{"type":"pong"}"#.into())).await;
            }
            Err(e) => return Err(ApiError::bad(format!("bad frame: {e}"))),
        }
    }
}

async fn run<S: Io>(mut socket: WebSocketStream<S>, state: ApiState, headers: HeaderMap) {
    // Boxed, owning the state and the headers: opening (the subscribe wait, the resume script
    // call, the resume frame) is the largest state of this future, and an idle connection
    // would otherwise carry its size, and what it holds, for its whole life.
    let Some((mut session, heartbeat)) = Box::pin(open(&mut socket, state, headers)).await else {
        return;
    };
    let mut beat = tokio::time::interval(heartbeat);
    beat.tick().await;
    loop {
        tokio::select! {
            frame = session.next() => {
                let Some(frame) = frame else { break };
                let (text, end) = frame_text(&session, frame);
                if !send(&mut socket, Message::Text(text.into())).await {
                    return;
                }
                if let Some(reason) = end {
                    let code = if reason == "token_expired" { 4401 } else { 4000 };
                    let close = CloseFrame { code: code.into(), reason: reason.into() };
                    let _ = send(&mut socket, Message::Close(Some(close))).await;
                    return;
                }
            }
            m = socket.next() => match m {
                Some(Ok(Message::Text(t))) => {
                    if matches!(serde_json::from_str(t.as_str()), Ok(ClientFrame::Ping))
                        && !send(&mut socket, Message::Text(r#"{"type":"pong"}"#.into())).await
                    {
                        return;
                    }
                }
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                Some(Ok(_)) => {}
            },
            _ = beat.tick() => {
                if !send(&mut socket, Message::Ping(Default::default())).await {
                    return;
                }
            }
        }
    }
    let close = CloseFrame {
        code: 1001.into(),
        reason: "server stopping".into(),
    };
    let _ = send(&mut socket, Message::Close(Some(close))).await;
}

/// A frame's JSON text, and the end reason when it ends the connection.
fn frame_text(session: &Session, frame: Frame) -> (String, Option<&'static str>) {
    let id = position::encode(&session.positions);
    match frame {
        Frame::Message {
            channel,
            position,
            message,
        } => {
            let body = message_json(&channel, &position.to_string(), &message);
            let text = format!(r#"{{"type":"message","id":"{id}",{}"#, &body[1..]);
            (text, None)
        }
        Frame::End { reason } => (
            json!({"type": "end", "reason": reason, "id": id}).to_string(),
            Some(reason),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_accept_key_is_the_one_of_rfc_6455() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, Upgrade"),
        );
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        h.insert(
            header::SEC_WEBSOCKET_VERSION,
            HeaderValue::from_static("13"),
        );
        h.insert(
            header::SEC_WEBSOCKET_KEY,
            HeaderValue::from_static("dGhlIHNhbXBsZSBub25jZQ=="),
        );
        assert_eq!(accept_key(&h).unwrap(), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
        h.remove(header::SEC_WEBSOCKET_KEY);
        assert!(accept_key(&h).unwrap_err().1.contains("Sec-WebSocket-Key"));
        h.insert(header::UPGRADE, HeaderValue::from_static("h2c"));
        assert!(accept_key(&h).unwrap_err().1.contains("Upgrade: websocket"));
    }
}
