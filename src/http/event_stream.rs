//! Lean connections for Server-Sent Events. A push client holds its connection open for
//! hours, idle most of the time; served by hyper, each such connection keeps hyper's 8 KiB
//! read buffer and 8 KiB header write buffer for its whole life, most of its memory.
//!
//! So the listener reads a connection's first request head itself (into a small buffer,
//! bounded in size and by `api.header_timeout`). When it is `GET /api/events/stream` over
//! HTTP/1.1, the request goes through the same router (authorization, CORS, errors: nothing
//! differs), and the response is written here: the head, then the body as chunks, with
//! `Connection: close` (the connection ends with the response). Any other request, and anything
//! this module does not recognise, is handed to hyper with the bytes already read, so the
//! operator API, publish and WebSocket upgrades are served exactly as before.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, HttpBody};
use axum::http::{Request, Response};
use bytes::{Buf, Bytes};
use http_body_util::BodyExt;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

/// The path served here.
const STREAM_PATH: &str = "/api/events/stream";

/// Largest request head read here; a longer one goes to hyper (which answers 431).
const MAX_HEAD: usize = 16 * 1024;

/// Most header lines parsed here; more go to hyper.
const MAX_HEADERS: usize = 64;

/// The WebSocket path served here when it is a connection's first request.
const WS_PATH: &str = "/api/events/ws";

/// An upgraded connection's socket and the bytes its client sent after the request head.
pub type Handed = (TcpStream, Vec<u8>);

/// What the first request of a connection turned out to be.
pub enum First {
    /// An SSE request or a WebSocket upgrade: serve it with [`serve`].
    Lean(Box<Lean>),
    /// Anything else: hand the connection to hyper, which reads the bytes read so far first.
    Other(Rewind),
    /// The client closed, or sent nothing within the timeout.
    Gone,
}

/// A connection whose first request is served here.
pub struct Lean {
    io: TcpStream,
    request: Request<Body>,
    /// The bytes after the request head (a WebSocket client's first frames).
    rest: Vec<u8>,
    /// Where the socket goes when the router answers a WebSocket upgrade with 101.
    upgrade: Option<oneshot::Sender<Handed>>,
}

/// A WebSocket upgrade received by the lean listener, in the request's extensions: the
/// handler takes it (instead of hyper's upgrade) and receives the socket once the 101 is
/// written.
#[derive(Clone)]
pub struct LeanUpgrade(Arc<Mutex<Option<oneshot::Receiver<Handed>>>>);

impl LeanUpgrade {
    /// The socket and the bytes the client sent after its request head; `None` when the
    /// upgrade was not completed.
    pub async fn socket(self) -> Option<Handed> {
        let receiver = self.0.lock().ok()?.take()?;
        receiver.await.ok()
    }
}

/// Reads the first request head of `io` (at most [`MAX_HEAD`] bytes, within `timeout`) and
/// says whether it is served here.
pub async fn read_first(mut io: TcpStream, timeout: Duration) -> First {
    let mut head = Vec::new();
    let read = tokio::time::timeout(timeout, async {
        while head.len() < MAX_HEAD {
            head.reserve(1024);
            match io.read_buf(&mut head).await {
                Ok(0) | Err(_) => return false,
                Ok(_) if ends_head(&head) => return true,
                Ok(_) => {}
            }
        }
        true
    })
    .await;
    match read {
        // Closed, or no whole head within the header timeout: dropped, as hyper drops a
        // client past its header timeout (slowloris).
        Ok(false) | Err(_) => First::Gone,
        // A complete head, or one too long (hyper answers that one 431).
        Ok(true) => match lean_request(&head) {
            Some((request, used, upgrade)) => First::Lean(Box::new(Lean {
                io,
                request,
                rest: head[used..].to_vec(),
                upgrade,
            })),
            None => First::Other(Rewind::new(head, io)),
        },
    }
}

/// Whether `head` holds a whole request head.
fn ends_head(head: &[u8]) -> bool {
    head.windows(4).any(|w| w == b"\r\n\r\n")
}

/// A parsed `GET /api/events/stream` (no body, no upgrade) or `GET /api/events/ws` upgrade
/// request over HTTP/1.1, the length of its head and, for the upgrade, the socket's sender;
/// `None` for anything else.
fn lean_request(head: &[u8]) -> Option<(Request<Body>, usize, Option<oneshot::Sender<Handed>>)> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut headers);
    let httparse::Status::Complete(used) = parsed.parse(head).ok()? else {
        return None;
    };
    let path = parsed.path?;
    if parsed.method? != "GET" || parsed.version? != 1 {
        return None;
    }
    let websocket = match path.split('?').next() {
        Some(STREAM_PATH) => false,
        Some(WS_PATH) => true,
        _ => return None,
    };
    let mut request = Request::builder().method("GET").uri(path);
    for h in parsed.headers.iter() {
        let is = |n: &str| h.name.eq_ignore_ascii_case(n);
        if is("content-length") || is("transfer-encoding") || is("expect") {
            return None;
        }
        if is("upgrade") && !websocket {
            return None;
        }
        request = request.header(h.name, h.value);
    }
    let mut upgrade = None;
    if websocket {
        let (tx, rx) = oneshot::channel();
        upgrade = Some(tx);
        request = request.extension(LeanUpgrade(Arc::new(Mutex::new(Some(rx)))));
    }
    Some((request.body(Body::empty()).ok()?, used, upgrade))
}

/// Serves the connection's request through `app` and writes the response: a 101 hands the
/// socket to the WebSocket handler; a body of known length is written at once and the
/// connection closed; a stream (the SSE events) is written as chunks until it ends, the client
/// goes away or `stop`, then the connection is closed.
pub async fn serve(lean: Box<Lean>, app: Router, stop: CancellationToken) {
    let Lean {
        mut io,
        request,
        rest,
        upgrade,
    } = *lean;
    // Boxed: the handler's future (the resume script call) is far larger than the streaming
    // state, and this connection's future keeps the size of its largest state.
    let response: Response<Body> = match Box::pin(app.oneshot(request)).await {
        Ok(r) => r,
        Err(never) => match never {},
    };
    let (parts, mut body) = response.into_parts();
    if parts.status == axum::http::StatusCode::SWITCHING_PROTOCOLS
        && let Some(upgrade) = upgrade
    {
        if io
            .write_all(&response_head(&parts, Framing::Upgrade))
            .await
            .is_ok()
        {
            let _ = upgrade.send((io, rest));
        }
        return;
    }
    drop(rest);
    let length = body.size_hint().exact();
    let framing = length.map_or(Framing::Chunked, Framing::Length);
    let mut head = response_head(&parts, framing);
    if length.is_some() {
        if let Ok(Ok(all)) = tokio::time::timeout(WHOLE_BODY_TIMEOUT, body.collect()).await {
            head.extend_from_slice(&all.to_bytes());
            let _ = io.write_all(&head).await;
        }
        let _ = io.shutdown().await;
        return;
    }
    if io.write_all(&head).await.is_err() {
        return;
    }
    drop(head);
    let mut scratch = [0u8; 64];
    loop {
        tokio::select! {
            frame = body.frame() => match frame {
                Some(Ok(frame)) => {
                    let Ok(data) = frame.into_data() else { continue };
                    if !data.is_empty() && io.write_all(&chunk(&data)).await.is_err() {
                        return;
                    }
                }
                Some(Err(_)) | None => {
                    let _ = io.write_all(b"0\r\n\r\n").await;
                    break;
                }
            },
            // The client sends nothing more on this connection: a read ends only when it
            // closes (anything it does send is ignored).
            read = io.read(&mut scratch) => match read {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            },
            () = stop.cancelled() => break,
        }
    }
    let _ = io.shutdown().await;
}

/// How a response's body is framed.
#[derive(Clone, Copy)]
enum Framing {
    /// `content-length`, then `connection: close`.
    Length(u64),
    /// `transfer-encoding: chunked`, then `connection: close`.
    Chunked,
    /// A 101: the handler's own headers only.
    Upgrade,
}

/// How long a response of known length may take to produce its body.
const WHOLE_BODY_TIMEOUT: Duration = Duration::from_secs(30);

/// The status line and headers, framed as `framing` says.
fn response_head(parts: &axum::http::response::Parts, framing: Framing) -> Vec<u8> {
    use std::io::Write;
    let mut head = Vec::with_capacity(256);
    let status = parts.status;
    let _ = write!(
        head,
        "HTTP/1.1 {} {}\r\n",
        status.as_str(),
        status.canonical_reason().unwrap_or("")
    );
    let upgrade = matches!(framing, Framing::Upgrade);
    for (name, value) in &parts.headers {
        let framing_header = ["connection", "content-length", "transfer-encoding"]
            .iter()
            .any(|n| name.as_str() == *n);
        if framing_header && !upgrade {
            continue;
        }
        head.extend_from_slice(name.as_str().as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(value.as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    match framing {
        Framing::Length(n) => {
            let _ = write!(head, "content-length: {n}\r\nconnection: close\r\n");
        }
        Framing::Chunked => {
            head.extend_from_slice(b"transfer-encoding: chunked\r\nconnection: close\r\n");
        }
        Framing::Upgrade => {}
    }
    head.extend_from_slice(b"\r\n");
    head
}

/// `data` framed as one HTTP/1.1 chunk.
fn chunk(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut out = Vec::with_capacity(data.len() + 12);
    let _ = write!(out, "{:x}\r\n", data.len());
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
    out
}

/// A connection whose first bytes were already read: reads give those bytes first, then the
/// socket's; writes go to the socket.
pub struct Rewind {
    prefix: Bytes,
    inner: TcpStream,
}

impl Rewind {
    /// `prefix` (the bytes read so far), then `inner`.
    pub fn new(prefix: Vec<u8>, inner: TcpStream) -> Rewind {
        Rewind {
            prefix: Bytes::from(prefix),
            inner,
        }
    }
}

impl AsyncRead for Rewind {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.prefix.is_empty() {
            return Pin::new(&mut self.inner).poll_read(cx, buf);
        }
        let n = self.prefix.len().min(buf.remaining());
        buf.put_slice(&self.prefix[..n]);
        self.prefix.advance(n);
        if self.prefix.is_empty() {
            // Frees the head's buffer (an upgraded connection keeps this reader for life).
            self.prefix = Bytes::new();
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Rewind {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
