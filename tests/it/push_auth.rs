//! Who may subscribe to what (README "App tokens", "Push to apps"): with `[apps]` on, the
//! push endpoints take the operator token or an app token whose `channels` grant covers
//! every requested channel (header or cookie), WebSocket upgrades check `Origin`, every
//! refusal has its exact answer, and the tokens never reach the logs.

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{self, Message};

use crate::push_util::{Sse, publish, push_config, start};
use crate::util::{RedisServer, WorkerConfig};

/// The HS256 secret of these tests (a test value).
pub const SECRET: &str = "it-push-hs256-secret-not-real-0123456789abc";
const OPERATOR: &str = "op3rator-push-c4nary-5519ee";
const ALLOWED: &str = "http://127.0.0.1:3000";
const WAIT: Duration = Duration::from_secs(10);

/// An HS256 app token for user 42 granting `channels`, expiring `exp_in` seconds from now
/// (negative: already expired).
pub fn token(channels: &[&str], exp_in: i64) -> String {
    let exp = jsonwebtoken::get_current_timestamp() as i64 + exp_in;
    let claims = json!({"sub": "42", "exp": exp, "channels": channels});
    let key = EncodingKey::from_secret(SECRET.as_bytes()).unwrap();
    jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &key).unwrap()
}

/// The push config with `[apps]` (HS256, cookie `ew_token`, `origins` allowed).
pub fn apps_config(redis: &RedisServer, env: &str, origins: &[String]) -> WorkerConfig {
    let mut cfg = push_config(redis, env, "");
    cfg.extra += &format!(
        "[apps]\njwt_secret_env = \"APP_JWT_SECRET\"\ncookie_name = \"ew_token\"\n\
         allowed_origins = {origins:?}\n"
    );
    cfg.env_vars.push(("APP_JWT_SECRET".into(), SECRET.into()));
    cfg
}

/// Sends `GET /api/events/stream?channel=..` with `headers`.
async fn stream_request(
    addr: &str,
    channels: &[&str],
    headers: &[(&str, &str)],
) -> reqwest::Response {
    let q: Vec<String> = channels.iter().map(|c| format!("channel={c}")).collect();
    let mut req =
        reqwest::Client::new().get(format!("http://{addr}/api/events/stream?{}", q.join("&")));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    req.send().await.expect("the SSE request")
}

/// `GET /api/events/stream?channel=..` with `headers`: the SSE stream or (status, JSON).
async fn sse(addr: &str, channels: &[&str], headers: &[(&str, &str)]) -> Result<Sse, (u16, Value)> {
    let resp = stream_request(addr, channels, headers).await;
    if resp.status() == 200 {
        return Ok(Sse::from_response(resp));
    }
    let status = resp.status().as_u16();
    Err((status, resp.json().await.unwrap_or(Value::Null)))
}

/// The refusal of an SSE request (panics when it was accepted); a 401 must carry the
/// `WWW-Authenticate` challenge (`error="invalid_token"` when a Bearer token was sent).
async fn refused(addr: &str, channels: &[&str], headers: &[(&str, &str)]) -> (u16, Value) {
    let resp = stream_request(addr, channels, headers).await;
    let status = resp.status().as_u16();
    assert_ne!(
        status, 200,
        "SSE {channels:?} with {headers:?} was accepted"
    );
    let challenge = resp
        .headers()
        .get("www-authenticate")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    if status == 401 {
        let bearer = headers.iter().any(|(k, _)| *k == "authorization");
        let want = if bearer {
            r#"Bearer realm="event-worker", error="invalid_token""#
        } else {
            r#"Bearer realm="event-worker""#
        };
        assert_eq!(challenge.as_deref(), Some(want), "the challenge of a 401");
    }
    (status, resp.json().await.unwrap_or(Value::Null))
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A WebSocket upgrade with `headers`: the socket, or the refusal (status, body).
async fn ws(addr: &str, headers: &[(&str, &str)]) -> Result<Ws, (u16, String)> {
    let mut req = format!("ws://{addr}/api/events/ws")
        .into_client_request()
        .unwrap();
    for (k, v) in headers {
        let name = tungstenite::http::HeaderName::from_bytes(k.as_bytes()).unwrap();
        let value = tungstenite::http::HeaderValue::from_str(v).unwrap();
        req.headers_mut().insert(name, value);
    }
    match tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(req)).await {
        Ok(Ok((s, _))) => Ok(s),
        Ok(Err(tungstenite::Error::Http(r))) => {
            let body = r
                .body()
                .as_ref()
                .map(|b| String::from_utf8_lossy(b).into_owned());
            Err((r.status().as_u16(), body.unwrap_or_default()))
        }
        other => panic!("WebSocket upgrade: {other:?}"),
    }
}

/// The next text frame as JSON, and the close code if the server closed right after.
async fn next_text(s: &mut Ws) -> Value {
    loop {
        match tokio::time::timeout(WAIT, s.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => return serde_json::from_str(t.as_str()).unwrap(),
            Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => {}
            other => panic!("expected a text frame, got {other:?}"),
        }
    }
}

/// The close code the server ends with.
async fn close_code(s: &mut Ws) -> u16 {
    loop {
        match tokio::time::timeout(WAIT, s.next()).await {
            Ok(Some(Ok(Message::Close(Some(f))))) => return f.code.into(),
            Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => {}
            other => panic!("expected a close frame, got {other:?}"),
        }
    }
}

async fn subscribe(s: &mut Ws, channels: &[&str]) {
    let frame = json!({"type": "subscribe", "channels": channels}).to_string();
    s.send(Message::text(frame)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t94_push_auth_app_token_grants_its_channels_only_and_ws_checks_origin() {
    let redis = RedisServer::start();
    let env = "t94";
    let mut cfg = apps_config(&redis, env, &[ALLOWED.to_string()]).api_token(OPERATOR);
    cfg.env_vars.push(("EVENTS_LOG".into(), "trace".into()));
    let w = start(cfg);
    let addr = w.config.api_addr();
    let good = token(&["user:42"], 600);
    let bearer = format!("Bearer {good}");
    let auth = [("authorization", bearer.as_str())];
    let not_granted = json!({"error": "the app token does not grant channel `user:43`"});

    // The granted channel: 200, the resume event, then its messages.
    let mut s = match sse(&addr, &["user:42"], &auth).await {
        Ok(s) => s,
        Err(e) => panic!("SSE user:42 with the app token: {e:?}"),
    };
    assert_eq!(s.next(WAIT).await.expect("resume").event, "resume");
    publish(&redis, env, "42", "a1", 0);
    assert_eq!(s.messages(1, WAIT).await[0].event_id(), "a1");

    // Another channel, alone or with a granted one: 403 naming it.
    for chans in [&["user:43"][..], &["user:42", "user:43"][..]] {
        assert_eq!(
            refused(&addr, chans, &auth).await,
            (403, not_granted.clone())
        );
    }
    let pos = reqwest::Client::new()
        .get(format!(
            "http://{addr}/api/events/stream/position?channel=user:43"
        ))
        .header("authorization", &bearer)
        .send()
        .await
        .unwrap();
    assert_eq!(pos.status(), 403);
    assert_eq!(pos.json::<Value>().await.unwrap(), not_granted);
    // No token, an expired one, one signed with another key: 401.
    let missing = "missing app token: send it as `Authorization: Bearer <token>` or in the \
                   cookie `ew_token`";
    assert_eq!(
        refused(&addr, &["user:42"], &[]).await,
        (401, json!({"error": missing}))
    );
    let expired = format!("Bearer {}", token(&["user:42"], -3600));
    assert_eq!(
        refused(&addr, &["user:42"], &[("authorization", &expired)]).await,
        (
            401,
            json!({"error": "the app token has expired; get a new one from the app's backend"})
        )
    );
    // Signed with another key: 401; a valid token without this channel in its grant: 403.
    let key = EncodingKey::from_secret(b"another-secret-of-the-same-length-0123456789").unwrap();
    let claims = json!({"sub": "42", "exp": jsonwebtoken::get_current_timestamp() + 600,
        "channels": ["user:42"]});
    let forged = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &key).unwrap();
    let forged = format!("Bearer {forged}");
    let invalid = "the app token is not valid: its signature does not match [apps]'s key";
    assert_eq!(
        refused(&addr, &["user:42"], &[("authorization", &forged)]).await,
        (401, json!({"error": invalid}))
    );
    let none = format!("Bearer {}", token(&[], 600));
    let (status, body) = refused(&addr, &["user:42"], &[("authorization", &none)]).await;
    assert_eq!(
        (status, body),
        (
            403,
            json!({"error": "the app token does not grant channel `user:42`"})
        )
    );
    // The operator token: any channel.
    let op = format!("Bearer {OPERATOR}");
    let mut s = sse(&addr, &["user:43", "user:7"], &[("authorization", &op)])
        .await
        .expect("the operator token subscribes to any channel");
    assert_eq!(s.next(WAIT).await.unwrap().event, "resume");
    // The cookie on a GET (what EventSource withCredentials sends), with CORS for the origin.
    let cookie = format!("ew_token={good}");
    let q = format!("http://{addr}/api/events/stream?channel=user:42");
    let r = reqwest::Client::new()
        .get(&q)
        .header("cookie", &cookie)
        .header("origin", ALLOWED)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let h = |k: &str| {
        r.headers()
            .get(k)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    assert_eq!(h("access-control-allow-origin").as_deref(), Some(ALLOWED));
    assert_eq!(
        h("access-control-allow-credentials").as_deref(),
        Some("true")
    );
    drop(r);

    ws_cases(&addr, &redis, env, &good).await;

    let logs = w.output();
    for (what, secret) in [
        ("the app token", good.as_str()),
        ("the operator token", OPERATOR),
    ] {
        assert!(
            !logs.contains(secret),
            "the logs (EVENTS_LOG=trace) contain {what}"
        );
    }
    assert!(
        !logs.contains(&good[good.len() - 20..]),
        "the token's signature is in the logs"
    );
}

/// The WebSocket half of T94: Origin check at the upgrade, grant check at subscribe.
async fn ws_cases(addr: &str, redis: &RedisServer, env: &str, good: &str) {
    let bearer = format!("Bearer {good}");
    let evil = "http://127.0.0.1:4999";
    let r = ws(addr, &[("origin", evil), ("authorization", &bearer)]).await;
    let Err((403, body)) = r else {
        panic!(
            "an upgrade from {evil} was not refused 403: {:?}",
            r.map(|_| ())
        )
    };
    let err = format!("origin `{evil}` is not in apps.allowed_origins");
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap(),
        json!({"error": err})
    );

    let allowed = [("origin", ALLOWED), ("authorization", bearer.as_str())];
    let mut s = ws(addr, &allowed)
        .await
        .expect("the allowed origin upgrades");
    subscribe(&mut s, &["user:42"]).await;
    let first = next_text(&mut s).await;
    assert_eq!(first["type"], "resume", "{first}");
    publish(redis, env, "42", "a2", 0);
    let m = next_text(&mut s).await;
    assert_eq!(
        (m["type"].as_str(), m["event"]["id"].as_str()),
        (Some("message"), Some("a2"))
    );

    // Subscribing outside the grant: an error frame naming the channel, close 4403.
    let mut s = ws(addr, &allowed).await.expect("upgrade");
    subscribe(&mut s, &["user:42", "user:43"]).await;
    let e = next_text(&mut s).await;
    assert_eq!(
        e,
        json!({"type": "error", "error": "the app token does not grant channel `user:43`"})
    );
    assert_eq!(close_code(&mut s).await, 4403);
    // The cookie works for the upgrade too; no token at all: 4401.
    let cookie = format!("ew_token={good}");
    let mut s = ws(addr, &[("origin", ALLOWED), ("cookie", &cookie)])
        .await
        .unwrap();
    subscribe(&mut s, &["user:42"]).await;
    assert_eq!(next_text(&mut s).await["type"], "resume");
    let mut s = ws(addr, &[("origin", ALLOWED)]).await.unwrap();
    subscribe(&mut s, &["user:42"]).await;
    let e = next_text(&mut s).await;
    assert!(
        e["error"]
            .as_str()
            .unwrap_or("")
            .starts_with("missing app token"),
        "{e}"
    );
    assert_eq!(close_code(&mut s).await, 4401);
}

/// The app token of a connection expires while it is open: SSE gets `event: end`
/// `{"reason":"token_expired","id"}` and the stream ends, WebSocket gets the `end` frame and
/// close 4401; resuming from that `id` with a new token misses nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t98_push_connection_closed_at_app_token_expiry_and_resumes_with_new_token() {
    let redis = RedisServer::start();
    let env = "t98";
    let mut cfg = apps_config(&redis, env, &[ALLOWED.to_string()]);
    cfg.extra = cfg.extra.replace("[apps]\n", "[apps]\nleeway = \"0s\"\n");
    let w = start(cfg);
    let addr = w.config.api_addr();

    let short = format!("Bearer {}", token(&["user:42"], 3));
    let opened = std::time::Instant::now();
    let mut s = sse(addr.as_str(), &["user:42"], &[("authorization", &short)])
        .await
        .expect("a valid token connects");
    assert_eq!(
        s.next(WAIT).await.map(|e| e.event).as_deref(),
        Some("resume")
    );
    publish(&redis, env, "42", "x1", 0);
    let m = s.messages(1, WAIT).await.remove(0);
    assert_eq!(m.event_id(), "x1");
    let end = s
        .next(WAIT)
        .await
        .expect("an end event at the token's expiry");
    let waited = opened.elapsed();
    assert_eq!(end.event, "end", "{end:?}");
    assert_eq!(
        end.json(),
        json!({"reason": "token_expired", "id": m.id}),
        "the end names the reason and the position to resume from"
    );
    assert!(
        waited >= Duration::from_secs(1) && waited <= Duration::from_secs(5),
        "closed {waited:?} after opening, with a token valid for 2-3 s"
    );
    assert!(s.next(WAIT).await.is_none(), "the stream ends after `end`");

    // Missed while reconnecting; a new token resumes exactly after the end's id.
    publish(&redis, env, "42", "x2", 0);
    let fresh = format!("Bearer {}", token(&["user:42"], 600));
    let resp = stream_request(
        addr.as_str(),
        &["user:42"],
        &[("authorization", &fresh), ("last-event-id", &m.id)],
    )
    .await;
    let mut s = Sse::from_response(resp);
    let resume = s.next(WAIT).await.expect("resume");
    assert_eq!(resume.json()["recovered"], true, "{resume:?}");
    assert_eq!(resume.json()["missed"], 1, "{resume:?}");
    assert_eq!(s.messages(1, WAIT).await[0].event_id(), "x2");

    // WebSocket: the end frame, then close 4401.
    let short = format!("Bearer {}", token(&["user:42"], 3));
    let mut ws_conn = ws(
        addr.as_str(),
        &[("origin", ALLOWED), ("authorization", &short)],
    )
    .await
    .expect("upgrade");
    subscribe(&mut ws_conn, &["user:42"]).await;
    let first = next_text(&mut ws_conn).await;
    assert_eq!(first["type"], "resume", "{first}");
    let end = next_text(&mut ws_conn).await;
    assert_eq!(
        (end["type"].as_str(), end["reason"].as_str(), &end["id"]),
        (Some("end"), Some("token_expired"), &first["id"]),
        "{end}"
    );
    assert_eq!(close_code(&mut ws_conn).await, 4401);
}
