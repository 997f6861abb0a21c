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

use axum::extract::State;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use crate::http::api::ApiError;
use crate::http::state::ApiState;
use crate::push::http::{authorize_until, check_origin, message_json, parse_since};
use crate::push::position;
use crate::push::session::{Frame, Session};

/// Longest a frame may take to send before the client is dropped.
const SEND_TIMEOUT: Duration = Duration::from_secs(5);

/// Read buffer of a connection: clients send only small subscribe and ping frames (the
/// default, 128 KiB per connection, was most of an idle connection's memory; 1 KiB keeps
/// it in a shared page).
const READ_BUFFER: usize = 1024;

/// Largest message or frame a client may send (a subscribe frame is far smaller).
const MAX_CLIENT_MESSAGE: usize = 64 * 1024;

/// How long a client has to send its subscribe frame.
const SUBSCRIBE_TIMEOUT: Duration = Duration::from_secs(30);

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

/// The upgrade: the Origin check, then the connection.
pub async fn upgrade(
    State(state): State<ApiState>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    check_origin(&state, &headers)?;
    Ok(ws
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(0)
        .max_message_size(MAX_CLIENT_MESSAGE)
        .max_frame_size(MAX_CLIENT_MESSAGE)
        .on_upgrade(move |socket| run(socket, state, auth_headers(&headers)))
        .into_response())
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

async fn send(socket: &mut WebSocket, m: Message) -> bool {
    matches!(
        tokio::time::timeout(SEND_TIMEOUT, socket.send(m)).await,
        Ok(Ok(()))
    )
}

async fn fail(mut socket: WebSocket, e: ApiError) {
    let code = match e.0 {
        StatusCode::UNAUTHORIZED => 4401,
        StatusCode::FORBIDDEN => 4403,
        StatusCode::BAD_REQUEST => 4400,
        _ => 4503,
    };
    let body = json!({"type": "error", "error": e.1}).to_string();
    if send(&mut socket, Message::Text(body.into())).await {
        let close = CloseFrame {
            code,
            reason: "error".into(),
        };
        let _ = send(&mut socket, Message::Close(Some(close))).await;
    }
}

/// Waits for the subscribe frame (answering pings).
type Subscribe = (Vec<String>, Option<String>, Option<String>);

async fn subscribe(socket: &mut WebSocket) -> Result<Subscribe, ApiError> {
    loop {
        let m = match tokio::time::timeout(SUBSCRIBE_TIMEOUT, socket.recv()).await {
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

async fn run(mut socket: WebSocket, state: ApiState, headers: HeaderMap) {
    let opened = async {
        let (channels, since, device) = subscribe(&mut socket).await?;
        let (svc, until) = authorize_until(&state, &axum::http::Method::GET, &headers, &channels)?;
        let since = parse_since(since.as_deref())?;
        let heartbeat = svc.config.heartbeat;
        Session::open(svc, channels, since, device, "ws")
            .await
            .map(|(s, reply)| ((s.until(until), reply), heartbeat))
    };
    let ((mut session, reply), heartbeat) = match opened.await {
        Ok(x) => x,
        Err(e) => return fail(socket, e).await,
    };
    let mut first = json!({"type": "resume", "id": position::encode(&session.positions)});
    if let (Some(f), serde_json::Value::Object(r)) = (first.as_object_mut(), reply) {
        f.extend(r);
    }
    if !send(&mut socket, Message::Text(first.to_string().into())).await {
        return;
    }
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
                    let close = CloseFrame { code, reason: reason.into() };
                    let _ = send(&mut socket, Message::Close(Some(close))).await;
                    return;
                }
            }
            m = socket.recv() => match m {
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
        code: 1001,
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
