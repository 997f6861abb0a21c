//! How push connections are served (README "Push to apps", "Connections"): a connection whose
//! first request is `GET /api/events/stream` is answered by the lean SSE writer (chunked,
//! `connection: close`, no hyper buffers kept); its errors are whole JSON answers; an SSE
//! request later on a keep-alive connection is served by hyper and streams the same way. A
//! WebSocket upgrade as a connection's first request gets its socket from the lean listener
//! (a frame sent with the head is kept), a later one from hyper.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::push_util::{publish, push_config, start};
use crate::util::RedisServer;

const WAIT: Duration = Duration::from_secs(10);

/// A raw HTTP/1.1 connection that keeps what it read.
struct Raw {
    stream: TcpStream,
    read: String,
}

impl Raw {
    async fn connect(addr: &str) -> Raw {
        Raw {
            stream: TcpStream::connect(addr).await.unwrap(),
            read: String::new(),
        }
    }

    async fn get(&mut self, path: &str) {
        let req = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n");
        self.stream.write_all(req.as_bytes()).await.unwrap();
    }

    /// Reads until `needle` appears after byte `from` of what was read (bounded by [`WAIT`]);
    /// returns the offset just after it.
    async fn until(&mut self, from: usize, needle: &str) -> usize {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(at) = self.read[from..].find(needle) {
                return from + at + needle.len();
            }
            let mut buf = [0u8; 4096];
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, self.stream.read(&mut buf)).await {
                Ok(Ok(n)) if n > 0 => self.read += &String::from_utf8_lossy(&buf[..n]),
                other => panic!("no `{needle}` after {other:?}; read so far:\n{}", self.read),
            }
        }
    }

    /// Reads until the server closes (bounded by [`WAIT`]).
    async fn read_to_close(&mut self) {
        let mut rest = Vec::new();
        let read = tokio::time::timeout(WAIT, self.stream.read_to_end(&mut rest)).await;
        assert!(matches!(read, Ok(Ok(_))), "the server closes: {read:?}");
        self.read += &String::from_utf8_lossy(&rest);
    }
}

/// The head of the response that starts at `from` (lower-cased), and where its body starts.
fn head_at(raw: &Raw, from: usize) -> (String, usize) {
    let end = from + raw.read[from..].find("\r\n\r\n").expect("a whole head") + 4;
    (raw.read[from..end].to_ascii_lowercase(), end)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t168_push_sse_is_served_lean_first_and_by_hyper_on_a_kept_alive_connection() {
    let redis = RedisServer::start();
    let env = "t168";
    let w = start(push_config(&redis, env, ""));
    let addr = w.config.api_addr();

    // First request of its connection: the lean writer.
    let mut lean = Raw::connect(&addr).await;
    lean.get("/api/events/stream?channel=user:1").await;
    let resumed = lean.until(0, "event: resume").await;
    let (head, _) = head_at(&lean, 0);
    assert!(head.starts_with("http/1.1 200 ok\r\n"), "{head}");
    for line in [
        "content-type: text/event-stream",
        "transfer-encoding: chunked",
        "connection: close",
    ] {
        assert!(head.contains(line), "`{line}` in\n{head}");
    }
    publish(&redis, env, "1", "lean-1", 0);
    let at = lean.until(resumed, "\"n\":\"lean-1\"").await;
    assert!(lean.read[resumed..at].contains("\ndata: "), "{}", lean.read);

    // Its errors are whole answers: status, JSON with its length, then the server closes.
    let mut bad = Raw::connect(&addr).await;
    bad.get("/api/events/stream").await;
    bad.read_to_close().await;
    let (head, body) = head_at(&bad, 0);
    assert!(head.starts_with("http/1.1 400 bad request\r\n"), "{head}");
    let json: serde_json::Value = serde_json::from_str(&bad.read[body..]).unwrap();
    assert!(
        json["error"].as_str().unwrap().contains("channel"),
        "{json}"
    );
    assert!(
        head.contains(&format!("content-length: {}", bad.read.len() - body)),
        "{head}"
    );

    // An SSE request after another on a kept-alive connection: hyper serves it, same stream.
    let mut kept = Raw::connect(&addr).await;
    kept.get("/livez").await;
    let ok = kept.until(0, "ok\n").await;
    let (head, _) = head_at(&kept, 0);
    assert!(!head.contains("connection: close"), "kept alive: {head}");
    kept.get("/api/events/stream?channel=user:1").await;
    let resumed = kept.until(ok, "event: resume").await;
    let (head, _) = head_at(&kept, ok);
    assert!(head.starts_with("http/1.1 200 ok\r\n"), "{head}");
    assert!(head.contains("content-type: text/event-stream"), "{head}");
    publish(&redis, env, "1", "kept-1", 0);
    kept.until(resumed, "\"n\":\"kept-1\"").await;
    // The lean connection got it too, once.
    lean.until(at, "\"n\":\"kept-1\"").await;
    assert_eq!(lean.read.matches("\"n\":\"lean-1\"").count(), 1);
}

/// A masked client text frame (RFC 6455 5.2; payload under 64 KiB).
fn client_text_frame(text: &str) -> Vec<u8> {
    let mask = [7u8, 1, 9, 3];
    let mut out = vec![0x81];
    let n = text.len();
    if n < 126 {
        out.push(0x80 | n as u8);
    } else {
        out.push(0x80 | 126);
        out.extend_from_slice(&(n as u16).to_be_bytes());
    }
    out.extend_from_slice(&mask);
    out.extend(text.bytes().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t169_push_websocket_upgrades_first_with_an_early_frame_and_on_a_kept_alive_connection() {
    let redis = RedisServer::start();
    let env = "t169";
    let w = start(push_config(&redis, env, ""));
    let addr = w.config.api_addr();
    let upgrade = format!(
        "GET /api/events/ws HTTP/1.1\r\nHost: {addr}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    );
    let subscribe = client_text_frame(r#"{"type":"subscribe","channels":["user:1"]}"#);

    // First request of its connection, with the subscribe frame in the same write as the head:
    // the frame read with the head is not lost.
    let mut first = Raw::connect(&addr).await;
    let mut bytes = upgrade.clone().into_bytes();
    bytes.extend_from_slice(&subscribe);
    first.stream.write_all(&bytes).await.unwrap();
    let body = first.until(0, "\r\n\r\n").await;
    let (head, _) = head_at(&first, 0);
    assert!(
        head.starts_with("http/1.1 101 switching protocols\r\n"),
        "{head}"
    );
    assert!(
        head.contains("sec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo="),
        "the RFC 6455 accept key: {head}"
    );
    first.until(body, "\"type\":\"resume\"").await;

    // The same upgrade after another request on a kept-alive connection: hyper upgrades it.
    let mut kept = Raw::connect(&addr).await;
    kept.get("/livez").await;
    let ok = kept.until(0, "ok\n").await;
    kept.stream.write_all(upgrade.as_bytes()).await.unwrap();
    let body = kept.until(ok, "\r\n\r\n").await;
    let (head, _) = head_at(&kept, ok);
    assert!(
        head.starts_with("http/1.1 101 switching protocols\r\n"),
        "{head}"
    );
    kept.stream.write_all(&subscribe).await.unwrap();
    kept.until(body, "\"type\":\"resume\"").await;

    publish(&redis, env, "1", "ws-1", 0);
    for (name, raw) in [("first", &mut first), ("kept", &mut kept)] {
        let from = raw.read.find("\"type\":\"resume\"").unwrap();
        raw.until(from, "\"n\":\"ws-1\"").await;
        assert_eq!(raw.read.matches("\"n\":\"ws-1\"").count(), 1, "{name}");
    }

    // Not an upgrade: 400 with a JSON message, on the lean path too.
    let mut bad = Raw::connect(&addr).await;
    bad.stream
        .write_all(b"GET /api/events/ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
        .await
        .unwrap();
    bad.read_to_close().await;
    let (head, body) = head_at(&bad, 0);
    assert!(head.starts_with("http/1.1 400 bad request\r\n"), "{head}");
    assert!(
        bad.read[body..].contains("Sec-WebSocket-Version"),
        "{}",
        bad.read
    );
}
