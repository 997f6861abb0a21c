//! Helpers of the push tests: a daemon with `[push]` rules, an SSE reader over reqwest
//! streaming, publishing events for a user channel.

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use crate::util::{RedisServer, Route, WorkerConfig, WorkerProcess};

/// The `[push]` section of the tests: `user:{data.user}` for `booking.*`, heartbeat 1 s,
/// plus `extra` keys.
pub fn push_config(redis: &RedisServer, env: &str, extra: &str) -> WorkerConfig {
    let mut cfg = WorkerConfig::new(env, &redis.url()).route(Route::blackhole(&["booking.*"]));
    cfg.extra = format!(
        "[push]\nheartbeat = \"1s\"\n{extra}\n[[push.channels]]\ntypes = [\"booking.*\"]\n\
         channel = \"user:{{data.user}}\"\n"
    );
    cfg
}

/// Starts the daemon and waits until it is ready and push is connected.
pub fn start(cfg: WorkerConfig) -> WorkerProcess {
    let mut w = WorkerProcess::start("w1", cfg);
    w.wait_ready(Duration::from_secs(15));
    w
}

/// Publishes event `id` for `user` (with `pad` bytes of padding in its data).
pub fn publish(redis: &RedisServer, env: &str, user: &str, id: &str, pad: usize) {
    let data = format!(
        r#"{{"user":"{user}","n":"{id}","pad":"{}"}}"#,
        "x".repeat(pad)
    );
    let key = format!("events:{env}:booking.created");
    redis.xadd(
        &key,
        &[("id", id), ("type", "booking.created"), ("data", &data)],
    );
}

/// The same as [`publish`] on a raw connection of the test's own (for publisher threads).
pub fn xadd_booking(conn: &mut crate::util::resp::Conn, env: &str, user: &str, id: &str) {
    let data = format!(r#"{{"user":"{user}","n":"{id}"}}"#);
    let key = format!("events:{env}:booking.created");
    let fields = [
        "XADD",
        &key,
        "*",
        "id",
        id,
        "type",
        "booking.created",
        "data",
        &data,
    ];
    conn.cmd(&fields).unwrap();
}

/// The event ids of a channel's history, in order.
pub fn channel_ids(redis: &RedisServer, env: &str, channel: &str) -> Vec<String> {
    redis
        .xrange(&format!("events:{env}:push:{{{channel}}}"))
        .iter()
        .map(|e| e.get("id").unwrap().to_string())
        .collect()
}

/// One SSE event.
#[derive(Debug, Clone, Default)]
pub struct Ev {
    pub event: String,
    pub id: String,
    pub data: String,
}

impl Ev {
    /// Applies one `field: value` line of an SSE block (`event`, `id`, `data`) and returns
    /// the field and value, so the caller can read the others (`retry`).
    pub fn read_line<'a>(&mut self, line: &'a str) -> (&'a str, &'a str) {
        let (k, v) = line.split_once(':').unwrap_or((line, ""));
        let v = v.strip_prefix(' ').unwrap_or(v);
        match k {
            "event" => self.event = v.to_string(),
            "id" => self.id = v.to_string(),
            "data" => self.data += v,
            _ => {}
        }
        (k, v)
    }

    /// The data as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.data).unwrap_or_else(|e| panic!("{e}: {}", self.data))
    }

    /// The event id of a message.
    pub fn event_id(&self) -> String {
        self.json()["event"]["id"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }
}

/// A Server-Sent Events connection.
pub struct Sse {
    resp: reqwest::Response,
    buf: String,
    /// Comments (heartbeats) seen.
    pub comments: usize,
    /// The `retry:` values seen.
    pub retry: Option<String>,
}

impl Sse {
    /// Connects to `/api/events/stream` of `addr` for `channels`, with `Last-Event-ID`.
    pub async fn connect(
        addr: &str,
        channels: &[&str],
        last_id: Option<&str>,
    ) -> Result<Sse, String> {
        let query: Vec<String> = channels.iter().map(|c| format!("channel={c}")).collect();
        let url = format!("http://{addr}/api/events/stream?{}", query.join("&"));
        let mut req = reqwest::Client::new().get(url);
        if let Some(id) = last_id {
            req = req.header("Last-Event-ID", id);
        }
        let resp = req.send().await.map_err(|e| e.to_string())?;
        if resp.status() != 200 {
            let status = resp.status();
            return Err(format!(
                "{status}: {}",
                resp.text().await.unwrap_or_default()
            ));
        }
        Ok(Sse {
            resp,
            buf: String::new(),
            comments: 0,
            retry: None,
        })
    }

    /// The next event (comments counted and skipped), `None` at the end or after `wait`.
    pub async fn next(&mut self, wait: Duration) -> Option<Ev> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            if let Some(end) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..end + 2).collect();
                let mut ev = Ev::default();
                let mut comment = true;
                for line in block.lines() {
                    if line.is_empty() || line.starts_with(':') {
                        continue;
                    }
                    comment = false;
                    if let ("retry", v) = ev.read_line(line) {
                        self.retry = Some(v.to_string());
                    }
                }
                if comment || block.trim().is_empty() {
                    self.comments += 1;
                    continue;
                }
                if ev.event.is_empty() {
                    ev.event = "message".into();
                }
                return Some(ev);
            }
            let chunk = tokio::time::timeout_at(deadline, self.resp.chunk())
                .await
                .ok()?;
            match chunk {
                Ok(Some(bytes)) => self.buf += &String::from_utf8_lossy(&bytes),
                _ => return None,
            }
        }
    }

    /// The next `n` messages (panics naming what came instead).
    pub async fn messages(&mut self, n: usize, wait: Duration) -> Vec<Ev> {
        let mut out = Vec::new();
        while out.len() < n {
            match self.next(wait).await {
                Some(e) if e.event == "message" => out.push(e),
                other => panic!("expected {n} messages, got {} then {other:?}", out.len()),
            }
        }
        out
    }
}

/// GET `path` of `addr` as JSON.
pub async fn get_json(addr: &str, path: &str) -> serde_json::Value {
    let r = reqwest::get(format!("http://{addr}{path}")).await.unwrap();
    r.json().await.unwrap()
}

/// A raw SSE client with a 4 KiB receive buffer that reads nothing until asked: a stalled
/// phone.
pub struct Stalled {
    stream: tokio::net::TcpStream,
}

impl Stalled {
    /// Connects and sends the request for `channel`.
    pub async fn connect(addr: &str, channel: &str) -> Stalled {
        use tokio::io::AsyncWriteExt;
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        let mut stream = socket.connect(addr.parse().unwrap()).await.unwrap();
        let req =
            format!("GET /api/events/stream?channel={channel} HTTP/1.1\r\nHost: {addr}\r\n\r\n");
        stream.write_all(req.as_bytes()).await.unwrap();
        Stalled { stream }
    }

    /// Reads until the server closes (bounded by `wait`), decodes the chunked body and
    /// returns its events.
    pub async fn read_all(mut self, wait: Duration) -> Vec<Ev> {
        use tokio::io::AsyncReadExt;
        let mut raw = Vec::new();
        let _ = tokio::time::timeout(wait, self.stream.read_to_end(&mut raw)).await;
        let text = String::from_utf8_lossy(&raw).into_owned();
        let (_, mut rest) = text.split_once("\r\n\r\n").expect("a response head");
        let mut body = String::new();
        while let Some((size, after)) = rest.split_once("\r\n") {
            let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
            if n == 0 || after.len() < n {
                break;
            }
            body += &after[..n];
            rest = after[n..].strip_prefix("\r\n").unwrap_or(&after[n..]);
        }
        let mut events = Vec::new();
        for block in body.split("\n\n") {
            let mut ev = Ev::default();
            for line in block.lines().filter(|l| !l.starts_with(':')) {
                ev.read_line(line);
            }
            if ev.data.is_empty() {
                continue;
            }
            if ev.event.is_empty() {
                ev.event = "message".into();
            }
            events.push(ev);
        }
        events
    }
}

impl Sse {
    /// An SSE connection over a response the caller already checked (status 200).
    pub fn from_response(resp: reqwest::Response) -> Sse {
        Sse {
            resp,
            buf: String::new(),
            comments: 0,
            retry: None,
        }
    }
}

/// A test's WebSocket client connection.
pub type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// How long a WebSocket test waits for the next frame.
const WS_WAIT: Duration = Duration::from_secs(10);

/// Opens a WebSocket and subscribes; returns it and the resume frame.
pub async fn ws_subscribe<S: AsRef<str>>(
    addr: &str,
    channels: &[S],
    since: Option<&str>,
) -> (Ws, Value) {
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/api/events/ws"))
        .await
        .unwrap();
    let channels: Vec<&str> = channels.iter().map(AsRef::as_ref).collect();
    let mut sub = json!({"type": "subscribe", "channels": channels});
    if let Some(s) = since {
        sub["since"] = s.into();
    }
    ws.send(Message::text(sub.to_string())).await.unwrap();
    let first = ws_next(&mut ws).await;
    (ws, first)
}

/// The next JSON text frame (pings skipped).
pub async fn ws_next(ws: &mut Ws) -> Value {
    loop {
        let m = tokio::time::timeout(WS_WAIT, ws.next()).await;
        match m {
            Ok(Some(Ok(Message::Text(t)))) => return serde_json::from_str(t.as_str()).unwrap(),
            Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => {}
            other => panic!("expected a text frame, got {other:?}"),
        }
    }
}
