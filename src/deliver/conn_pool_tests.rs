//! The pool against a real HTTP/1.1 server on loopback (a small `TcpListener` loop that can
//! close a connection after its answer, or never answer): reuse, a connection the server
//! closed, a request that stops being answered, idle close, connect errors, large bodies.

use std::future::{Future, poll_fn};
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::Context;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::*;

/// What the server does with each request.
#[derive(Clone, Copy, PartialEq)]
enum Mode {
    /// `200` with body `ok`, keep-alive.
    KeepAlive,
    /// `200` with body `ok`, then closes the connection (no `Connection: close`).
    CloseAfterAnswer,
    /// Never answers the first request of the first connection; keep-alive otherwise.
    HangFirst,
    /// `200` with a chunked body of 3000 bytes.
    Large,
    /// `204`, no body, keep-alive (the usual webhook answer).
    Empty,
}

/// Counts of what the server saw.
#[derive(Default)]
struct Seen {
    accepted: AtomicUsize,
    requests: AtomicUsize,
    /// Connections the client closed (the server read end of file).
    closed_by_client: AtomicUsize,
}

async fn server(mode: Mode) -> (u16, Arc<Seen>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = Arc::new(Seen::default());
    let counts = Arc::clone(&seen);
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let n = counts.accepted.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(serve(tcp, mode, n == 0, Arc::clone(&counts)));
        }
    });
    (port, seen)
}

/// Reads one request's head and body; false at end of file.
async fn read_request(tcp: &mut TcpStream, buf: &mut Vec<u8>) -> bool {
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_lowercase();
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .map_or(0, |v| v.trim().parse().unwrap());
            if buf.len() >= end + 4 + length {
                buf.drain(..end + 4 + length);
                return true;
            }
        }
        let mut chunk = [0u8; 4096];
        match tcp.read(&mut chunk).await {
            Ok(0) | Err(_) => return false,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

async fn serve(mut tcp: TcpStream, mode: Mode, first: bool, seen: Arc<Seen>) {
    let mut buf = Vec::new();
    let mut nth = 0;
    while read_request(&mut tcp, &mut buf).await {
        seen.requests.fetch_add(1, Ordering::SeqCst);
        if mode == Mode::HangFirst && first && nth == 0 {
            // Holds the request unanswered; notes when the client gives up on the connection.
            let mut rest = [0u8; 64];
            while matches!(tcp.read(&mut rest).await, Ok(n) if n > 0) {}
            seen.closed_by_client.fetch_add(1, Ordering::SeqCst);
            return;
        }
        nth += 1;
        let answer = if mode == Mode::Large {
            format!(
                "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n{:x}\r\n{}\r\n0\r\n\r\n",
                3000,
                "x".repeat(3000)
            )
        } else if mode == Mode::Empty {
            "HTTP/1.1 204 No Content\r\n\r\n".to_string()
        } else {
            "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok".to_string()
        };
        if tcp.write_all(answer.as_bytes()).await.is_err() {
            return;
        }
        if mode == Mode::CloseAfterAnswer {
            return;
        }
    }
    seen.closed_by_client.fetch_add(1, Ordering::SeqCst);
}

fn request(port: u16) -> Request<Full<Bytes>> {
    Request::post("/hook")
        .header(hyper::header::HOST, format!("127.0.0.1:{port}"))
        .body(Full::new(Bytes::from_static(b"{\"a\":1}")))
        .unwrap()
}

async fn send_ok(pool: &ConnPool, port: u16) {
    let answer = pool
        .send(request(port), 200, 200)
        .await
        .map_err(|e| format!("{e:?}"));
    let answer = answer.unwrap();
    assert_eq!(
        (answer.status, answer.body.as_slice()),
        (StatusCode::OK, &b"ok"[..])
    );
}

/// Waits up to 2 s for `what`.
async fn eventually(what: &str, cond: impl Fn() -> bool) {
    for _ in 0..200 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("not within 2 s: {what}");
}

#[tokio::test]
async fn requests_reuse_connections_never_more_than_in_flight() {
    let (port, seen) = server(Mode::KeepAlive).await;
    let pool = ConnPool::new("127.0.0.1", port, IDLE_TIMEOUT);
    for _ in 0..20 {
        send_ok(&pool, port).await;
    }
    assert_eq!(
        seen.accepted.load(Ordering::SeqCst),
        1,
        "sequential requests"
    );
    for _ in 0..5 {
        futures::future::join_all((0..8).map(|_| send_ok(&pool, port))).await;
    }
    assert_eq!(seen.requests.load(Ordering::SeqCst), 60);
    let accepted = seen.accepted.load(Ordering::SeqCst);
    assert!(
        accepted <= 8,
        "{accepted} connections for 8 requests in flight"
    );
    assert_eq!(pool.idle(), accepted);
}

#[tokio::test]
async fn a_connection_the_server_closed_between_requests_is_replaced() {
    let (port, seen) = server(Mode::CloseAfterAnswer).await;
    let pool = ConnPool::new("127.0.0.1", port, IDLE_TIMEOUT);
    for _ in 0..5 {
        send_ok(&pool, port).await;
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    // Each request once, each on its own connection: nothing lost or sent twice.
    assert_eq!(
        (
            seen.requests.load(Ordering::SeqCst),
            seen.accepted.load(Ordering::SeqCst)
        ),
        (5, 5)
    );
}

#[tokio::test]
async fn a_request_left_unanswered_is_dropped_with_its_connection() {
    let (port, seen) = server(Mode::HangFirst).await;
    let pool = ConnPool::new("127.0.0.1", port, IDLE_TIMEOUT);
    // What the worker does past a route's timeout: drops the run.
    let run = tokio::time::timeout(
        Duration::from_millis(300),
        pool.send(request(port), 200, 200),
    );
    assert!(run.await.is_err(), "the unanswered request returned");
    assert_eq!(pool.idle(), 0);
    eventually("the server sees the connection closed", || {
        seen.closed_by_client.load(Ordering::SeqCst) == 1
    })
    .await;
    send_ok(&pool, port).await;
    assert_eq!(
        (
            seen.accepted.load(Ordering::SeqCst),
            seen.requests.load(Ordering::SeqCst)
        ),
        (2, 2)
    );
}

#[tokio::test]
async fn idle_connections_are_closed_after_the_idle_timeout() {
    let (port, seen) = server(Mode::KeepAlive).await;
    let pool = ConnPool::new("127.0.0.1", port, Duration::from_millis(300));
    send_ok(&pool, port).await;
    assert_eq!(pool.idle(), 1);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        seen.closed_by_client.load(Ordering::SeqCst),
        0,
        "closed too early"
    );
    eventually("the idle connection is closed", || {
        seen.closed_by_client.load(Ordering::SeqCst) == 1
    })
    .await;
    assert_eq!(pool.idle(), 0);
    // The pool still works: a new connection.
    send_ok(&pool, port).await;
    assert_eq!(seen.accepted.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_refused_connection_names_the_address_and_the_cause() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let pool = ConnPool::new("127.0.0.1", port, IDLE_TIMEOUT);
    let e = pool.send(request(port), 200, 200).await.err().unwrap();
    assert_eq!(
        e,
        Outcome::retry(format!(
            "http: connection failed (127.0.0.1:{port}: Connection refused (os error 111))"
        ))
    );
}

#[tokio::test]
async fn a_body_read_whole_keeps_the_connection_a_body_cut_closes_it() {
    let (port, seen) = server(Mode::Large).await;
    let pool = ConnPool::new("127.0.0.1", port, IDLE_TIMEOUT);
    let answer = pool.send(request(port), 5000, 200).await.ok().unwrap();
    assert_eq!(answer.body.len(), 3000);
    assert_eq!(pool.idle(), 1, "a chunked body read to its end");
    let answer = pool.send(request(port), 100, 100).await.ok().unwrap();
    assert!((100..=3000).contains(&answer.body.len()));
    assert_eq!(pool.idle(), 0, "a body cut at the limit");
    eventually("the cut connection is closed", || {
        seen.closed_by_client.load(Ordering::SeqCst) == 1
    })
    .await;
}

/// Counts the wake-ups of a future that happen while it is being polled (it waking itself).
struct Counting {
    inner: std::task::Waker,
    polling: std::sync::atomic::AtomicBool,
    self_wakes: AtomicUsize,
}

impl std::task::Wake for Counting {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }
    fn wake_by_ref(self: &Arc<Self>) {
        if self.polling.load(Ordering::SeqCst) {
            self.self_wakes.fetch_add(1, Ordering::SeqCst);
        }
        self.inner.wake_by_ref();
    }
}

/// `fut`'s output and how often it woke itself from within its own poll.
async fn self_wakes<F: Future>(fut: F) -> (F::Output, usize) {
    let mut fut = pin!(fut);
    let mut counting: Option<Arc<Counting>> = None;
    let out = poll_fn(|cx| {
        let c = counting.get_or_insert_with(|| {
            Arc::new(Counting {
                inner: cx.waker().clone(),
                polling: false.into(),
                self_wakes: AtomicUsize::new(0),
            })
        });
        let waker = std::task::Waker::from(Arc::clone(c));
        c.polling.store(true, Ordering::SeqCst);
        let out = fut.as_mut().poll(&mut Context::from_waker(&waker));
        c.polling.store(false, Ordering::SeqCst);
        out
    })
    .await;
    let n = counting.map_or(0, |c| c.self_wakes.load(Ordering::SeqCst));
    (out, n)
}

/// A request on a kept connection answered without a body (the usual webhook answer) never
/// wakes its own run. (An answer with a body still does once: reading it tells hyper's
/// connection, which waits for that with the run's waker, to go on.)
#[tokio::test]
async fn a_request_on_a_kept_connection_never_wakes_its_own_run() {
    let (port, seen) = server(Mode::Empty).await;
    let pool = ConnPool::new("127.0.0.1", port, IDLE_TIMEOUT);
    let mut wakes = Vec::new();
    for _ in 0..11 {
        let (answer, n) = self_wakes(pool.send(request(port), 200, 200)).await;
        let answer = answer.ok().map(|a| (a.status, a.body));
        assert_eq!(answer, Some((StatusCode::NO_CONTENT, vec![])));
        wakes.push(n);
    }
    // The first request made the connection.
    wakes.remove(0);
    // Each self-wake would be rescheduled by the runtime as a yield of the worker's task.
    assert_eq!(wakes, vec![0; 10]);
    assert_eq!(seen.accepted.load(Ordering::SeqCst), 1);
}
