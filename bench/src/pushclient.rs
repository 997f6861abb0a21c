//! The push clients of the `push` scenario: Server-Sent Events over a hyper HTTP/1 connection
//! (with a small line parser) and WebSocket over tokio-tungstenite. Each client subscribes to
//! its own `user:<n>` channel and one `shared:<room>` channel, keeps the last `id` it got (to
//! resume with), checks that the `seq` of each channel only grows (a repeat is a duplicate), and
//! records publish-to-client latencies from the `sent_ns` the publisher put in the event.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Message;

use crate::util::{find_sent_ns, now_ns};

/// Figures shared by every client task.
#[derive(Default)]
pub struct Stats {
    /// Latency window (ns since the epoch of the publish time): [from, to).
    pub win_from: AtomicU64,
    pub win_to: AtomicU64,
    /// Latencies (ns) of messages published inside the window.
    pub lat: Mutex<Vec<u64>>,
    /// Messages received (each counted once, duplicates included) with `seq` >= `count_from`.
    pub received: AtomicU64,
    pub count_from: AtomicU64,
    /// Messages received a second time (same seq) by a client.
    pub dups: AtomicU64,
    /// Messages that came after one with a higher seq on the same channel (publishers XADD
    /// concurrently during the bursts, so this is not an error by itself).
    pub reordered: AtomicU64,
    /// Open connections (resume reply received).
    pub connected: AtomicU64,
    /// `end` events / frames (the server cut the client), and other failures.
    pub ends: AtomicU64,
    pub errors: Mutex<Vec<String>>,
    /// Reconnect storm: first seq of the burst published while the clients were down; a
    /// client has caught up when it got a message >= it on both channels.
    pub catch_from: AtomicU64,
    /// Times (ns since the epoch) at which each client caught up.
    pub caught: Mutex<Vec<u64>>,
}

impl Stats {
    fn error(&self, e: String) {
        let mut errs = self.errors.lock().unwrap_or_else(|p| p.into_inner());
        if errs.len() < 20 {
            errs.push(e);
        }
    }
}

/// A client: what it subscribes to, and what it keeps across reconnects.
pub struct Client {
    pub ws: bool,
    pub channels: Vec<String>,
    /// The `id` to resume from.
    pub last_id: Option<String>,
    last_user: u64,
    last_shared: u64,
    seen: std::collections::HashSet<u64>,
    caught_user: bool,
    caught_shared: bool,
    caught_round: u64,
}

impl Client {
    pub fn new(ws: bool, user: &str, room: u64) -> Client {
        Client {
            ws,
            channels: vec![format!("user:{user}"), format!("shared:{room}")],
            last_id: None,
            last_user: 0,
            last_shared: 0,
            seen: Default::default(),
            caught_user: false,
            caught_shared: false,
            caught_round: 0,
        }
    }

    /// One message's data (`{"channel", "position", "event": {..}}`).
    fn on_message(&mut self, data: &[u8], stats: &Stats) {
        let now = now_ns();
        let Some(seq) = find_num(data, b"\"seq\":") else {
            return;
        };
        let shared = find(data, b"\"channel\":\"shared:").is_some();
        let last = if shared {
            &mut self.last_shared
        } else {
            &mut self.last_user
        };
        if !self.seen.insert(seq) {
            stats.dups.fetch_add(1, Ordering::Relaxed);
        } else if seq < *last {
            stats.reordered.fetch_add(1, Ordering::Relaxed);
        }
        *last = (*last).max(seq);
        if seq >= stats.count_from.load(Ordering::Relaxed) {
            stats.received.fetch_add(1, Ordering::Relaxed);
        }
        if let Some(sent) = find_sent_ns(data)
            && sent >= stats.win_from.load(Ordering::Relaxed)
            && sent < stats.win_to.load(Ordering::Relaxed)
        {
            let mut lat = stats.lat.lock().unwrap_or_else(|p| p.into_inner());
            lat.push(now.saturating_sub(sent));
        }
        let from = stats.catch_from.load(Ordering::Relaxed);
        if from > 0 {
            if self.caught_round != from {
                self.caught_round = from;
                self.caught_user = false;
                self.caught_shared = false;
            }
            let done_before = self.caught_user && self.caught_shared;
            if seq >= from {
                if shared {
                    self.caught_shared = true;
                } else {
                    self.caught_user = true;
                }
            }
            if !done_before && self.caught_user && self.caught_shared {
                let mut c = stats.caught.lock().unwrap_or_else(|p| p.into_inner());
                c.push(now);
            }
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// The number following `key` in `data`.
fn find_num(data: &[u8], key: &[u8]) -> Option<u64> {
    let at = find(data, key)? + key.len();
    let digits: Vec<u8> = data[at..]
        .iter()
        .copied()
        .take_while(u8::is_ascii_digit)
        .collect();
    std::str::from_utf8(&digits).ok()?.parse().ok()
}

/// The string following `"key":"` in `data`.
fn find_str(data: &[u8], key: &[u8]) -> Option<String> {
    let at = find(data, key)? + key.len();
    let end = data[at..].iter().position(|&b| b == b'"')?;
    Some(String::from_utf8_lossy(&data[at..at + end]).into_owned())
}

/// How a connection ended.
pub enum Ended {
    /// The generation changed (the scenario dropped every client).
    Dropped,
    /// The server closed the stream or cut the client, or an error.
    Closed,
}

/// Runs `client` until `gen` changes (returns `Dropped`) or the connection ends.
pub async fn run(
    client: &mut Client,
    port: u16,
    stats: &Stats,
    mut gen_rx: watch::Receiver<u64>,
) -> Ended {
    let r = if client.ws {
        run_ws(client, port, stats, &mut gen_rx).await
    } else {
        run_sse(client, port, stats, &mut gen_rx).await
    };
    match r {
        Ok(e) => e,
        Err(e) => {
            stats.error(e);
            Ended::Closed
        }
    }
}

async fn connect_tcp(port: u16, rcvbuf: Option<u32>) -> Result<TcpStream, String> {
    let sock = TcpSocket::new_v4().map_err(|e| e.to_string())?;
    if let Some(n) = rcvbuf {
        sock.set_recv_buffer_size(n).map_err(|e| e.to_string())?;
    }
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    tokio::time::timeout(Duration::from_secs(30), sock.connect(addr))
        .await
        .map_err(|_| format!("connect 127.0.0.1:{port}: timed out after 30s"))?
        .map_err(|e| format!("connect 127.0.0.1:{port}: {e}"))
}

type SseBody = hyper::body::Incoming;

/// Opens an SSE stream (`Last-Event-ID` = the client's last id).
async fn open_sse(
    port: u16,
    channels: &[String],
    last_id: Option<&str>,
    rcvbuf: Option<u32>,
) -> Result<SseBody, String> {
    let tcp = connect_tcp(port, rcvbuf).await?;
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let query: Vec<String> = channels.iter().map(|c| format!("channel={c}")).collect();
    let mut req = hyper::Request::get(format!("/api/events/stream?{}", query.join("&")))
        .header("host", format!("127.0.0.1:{port}"))
        .header("accept", "text/event-stream");
    if let Some(id) = last_id {
        req = req.header("last-event-id", id);
    }
    let req = req.body(Empty::<Bytes>::new()).map_err(|e| e.to_string())?;
    let resp = tokio::time::timeout(Duration::from_secs(60), send.send_request(req))
        .await
        .map_err(|_| "SSE request: no answer within 60s".to_string())?
        .map_err(|e| e.to_string())?;
    if resp.status() != 200 {
        let status = resp.status();
        let body = resp.into_body().collect().await.map(|b| b.to_bytes());
        let body = body.map(|b| String::from_utf8_lossy(&b).into_owned());
        return Err(format!("SSE {status}: {}", body.unwrap_or_default()));
    }
    Ok(resp.into_body())
}

async fn run_sse(
    client: &mut Client,
    port: u16,
    stats: &Stats,
    gen_rx: &mut watch::Receiver<u64>,
) -> Result<Ended, String> {
    let mut body = open_sse(port, &client.channels, client.last_id.as_deref(), None).await?;
    let mut buf: Vec<u8> = Vec::new();
    let mut connected = false;
    let ended = loop {
        let frame = tokio::select! {
            _ = gen_rx.changed() => break Ended::Dropped,
            f = body.frame() => f,
        };
        let Some(frame) = frame else {
            break Ended::Closed;
        };
        let frame = frame.map_err(|e| format!("SSE read: {e}"))?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        buf.extend_from_slice(&data);
        while let Some(end) = find(&buf, b"\n\n") {
            let block: Vec<u8> = buf.drain(..end + 2).collect();
            let (mut event, mut id, mut data) = (&b""[..], None, Vec::new());
            for line in block.split(|&b| b == b'\n') {
                if let Some(v) = line.strip_prefix(b"event: ") {
                    event = v;
                } else if let Some(v) = line.strip_prefix(b"id: ") {
                    id = Some(String::from_utf8_lossy(v).into_owned());
                } else if let Some(v) = line.strip_prefix(b"data: ") {
                    data.extend_from_slice(v);
                }
            }
            if id.is_some() {
                client.last_id = id;
            }
            match event {
                b"resume" => {
                    connected = true;
                    stats.connected.fetch_add(1, Ordering::Relaxed);
                }
                b"end" => {
                    stats.ends.fetch_add(1, Ordering::Relaxed);
                    if let Some(id) = find_str(&data, b"\"id\":\"") {
                        client.last_id = Some(id);
                    }
                }
                b"" if !data.is_empty() => client.on_message(&data, stats),
                _ => {}
            }
        }
    };
    if connected {
        stats.connected.fetch_sub(1, Ordering::Relaxed);
    }
    Ok(ended)
}

async fn run_ws(
    client: &mut Client,
    port: u16,
    stats: &Stats,
    gen_rx: &mut watch::Receiver<u64>,
) -> Result<Ended, String> {
    let tcp = connect_tcp(port, None).await?;
    let url = format!("ws://127.0.0.1:{port}/api/events/ws");
    let (mut ws, _) = tokio_tungstenite::client_async(url, tcp)
        .await
        .map_err(|e| format!("WebSocket upgrade: {e}"))?;
    let mut sub = serde_json::json!({"type": "subscribe", "channels": client.channels});
    if let Some(id) = &client.last_id {
        sub["since"] = id.clone().into();
    }
    ws.send(Message::text(sub.to_string()))
        .await
        .map_err(|e| format!("WebSocket subscribe: {e}"))?;
    let mut connected = false;
    let ended = loop {
        let msg = tokio::select! {
            _ = gen_rx.changed() => break Ended::Dropped,
            m = ws.next() => m,
        };
        let Some(msg) = msg else {
            break Ended::Closed;
        };
        let text = match msg.map_err(|e| format!("WebSocket read: {e}"))? {
            Message::Text(t) => t,
            Message::Close(_) => break Ended::Closed,
            _ => continue,
        };
        let data = text.as_bytes();
        if let Some(id) = find_str(data, b"\"id\":\"") {
            client.last_id = Some(id);
        }
        if data.starts_with(br#"{"type":"message""#) {
            client.on_message(data, stats);
        } else if find(data, br#""type":"resume""#).is_some() {
            connected = true;
            stats.connected.fetch_add(1, Ordering::Relaxed);
        } else if find(data, br#""type":"end""#).is_some() {
            stats.ends.fetch_add(1, Ordering::Relaxed);
        } else if find(data, br#""type":"error""#).is_some() {
            stats.error(format!("WebSocket error frame: {text}"));
        }
    };
    if connected {
        stats.connected.fetch_sub(1, Ordering::Relaxed);
    }
    let _ = ws.close(None).await;
    Ok(ended)
}

/// A stalled client: an SSE connection with a 4 KiB receive buffer that reads the resume reply
/// and then stops reading (the server's socket buffer and then its client buffer fill) until
/// `gen` changes. Returns whether it connected.
pub async fn stalled(
    channels: Vec<String>,
    port: u16,
    stats: &Stats,
    mut gen_rx: watch::Receiver<u64>,
) -> Result<(), String> {
    let mut body = open_sse(port, &channels, None, Some(4096)).await?;
    // The resume reply is the first frame.
    body.frame().await;
    stats.connected.fetch_add(1, Ordering::Relaxed);
    let _ = gen_rx.changed().await;
    stats.connected.fetch_sub(1, Ordering::Relaxed);
    drop(body);
    Ok(())
}
