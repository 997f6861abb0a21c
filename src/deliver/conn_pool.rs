//! One `http://` route's own pool of HTTP/1.1 keep-alive connections, driven by the requests
//! that use them.
//!
//! Each connection is a `hyper::client::conn::http1` pair (a `SendRequest` and its
//! `Connection`) on a `TcpStream` with `TCP_NODELAY`. No task runs a connection: the handler
//! run that holds one polls its `Connection` together with its own request and answer, so a
//! request is written and its answer read on the task that runs the handler (the worker polls
//! the handler runs of one read batch on one task), without a hop to another task or thread.
//! An idle connection sits in the route's pool (a short list behind a mutex, most recently used
//! first) unpolled; before it is used again it is polled once, which finds a connection the
//! server closed meanwhile (it is dropped and the next one taken, or a new one made).
//!
//! - A run takes an idle connection or makes one (connect within 5 s); it gives it back only
//!   after reading the whole answer, with the connection ready for the next request. A run that
//!   ends otherwise (its route's `timeout` dropped it, the answer body was too large or paused
//!   for 500 ms, a transport error, `Connection: close`) drops its connection, which closes it.
//!   A connection is therefore never reused in the middle of an exchange.
//! - There are never more connections than the route's handler runs that were in flight at
//!   the same time (at most the worker's `concurrency`): a new one is made only when none is
//!   idle.
//! - Connections idle for 60 s are closed by a small task of the pool that sleeps until the
//!   oldest idle connection's deadline (it ends with the pool).
//! - A request that hyper did not write because the connection it took had closed (a server
//!   closing an idle keep-alive connection races the request) is sent again once on a new
//!   connection: nothing of it reached the server.

use std::future::Future;
use std::pin::{Pin, pin};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Incoming};
use hyper::client::conn::http1::{self, SendRequest};
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::handler::Outcome;

/// How long making a connection (name lookup included) may take.
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a connection may stay idle in the pool before it is closed.
pub(crate) const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// How long reading an answer's body may pause before the rest is abandoned.
const BODY_PAUSE: Duration = Duration::from_millis(500);

type Driver = http1::Connection<TokioIo<TcpStream>, Full<Bytes>>;

/// One HTTP/1.1 connection: the request side and the connection's state machine (`None` once
/// it has ended; boxed, so that a connection moves in and out of the pool and the futures of
/// the requests that hold it stay small).
struct Conn {
    sender: SendRequest<Full<Bytes>>,
    driver: Option<Pin<Box<Driver>>>,
}

/// An idle connection and when it was given back.
struct Idle {
    conn: Conn,
    since: Instant,
}

/// A route's connections to one `host:port`; see the module documentation.
pub(crate) struct ConnPool {
    inner: Arc<Inner>,
}

struct Inner {
    /// Host name or address to connect to (an IPv6 address without its brackets).
    host: String,
    port: u16,
    idle_timeout: Duration,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Idle connections, the most recently given back last.
    idle: Vec<Idle>,
    /// Whether the task closing idle connections runs.
    sweeping: bool,
}

/// A complete answer: status, headers and (the start of) the body.
pub(crate) struct Answer {
    /// The status.
    pub status: StatusCode,
    /// The headers (a pooled route keeps none of a 2xx answer).
    pub headers: hyper::HeaderMap,
    /// The body, up to the limit given (a little more when the last frame crosses it).
    pub body: Vec<u8>,
}

impl ConnPool {
    /// A pool of connections to `host:port`, closed after `idle_timeout` idle.
    pub(crate) fn new(host: &str, port: u16, idle_timeout: Duration) -> Self {
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        ConnPool {
            inner: Arc::new(Inner {
                host,
                port,
                idle_timeout,
                state: Mutex::new(State::default()),
            }),
        }
    }

    /// Sends `request` (origin-form URI, `Host` header set) and reads its answer: the body up
    /// to `limit` bytes for a 2xx answer, up to `error_limit` otherwise.
    ///
    /// # Errors
    /// The retryable [`Outcome`] of a transport error: `http: connection failed (...)` naming
    /// `host:port` and the cause, or `http: <hyper's reason>`.
    pub(crate) async fn send(
        &self,
        request: Request<Full<Bytes>>,
        limit: usize,
        error_limit: usize,
    ) -> Result<Answer, Outcome> {
        let (mut conn, reused) = self.checkout().await?;
        let response = match conn.request(request).await {
            Ok(r) => r,
            // Boxed: the rare path keeps the future of every request small.
            Err(e) => {
                let (new, r) = Box::pin(self.send_again(e, reused)).await?;
                conn = new;
                r
            }
        };
        let (head, body) = response.into_parts();
        let status = head.status;
        // A 2xx answer's head is dropped before the connection reads again: its header values
        // share hyper's read buffer, which would otherwise be reallocated (8 KiB) for each read.
        let (limit, headers) = if status.is_success() {
            drop(head);
            (limit, hyper::HeaderMap::new())
        } else {
            (error_limit, head.headers)
        };
        // An empty body (the usual success answer) needs no read; a body to read is read on
        // a boxed future, which keeps the future of every request small.
        let (body, complete) = if body.is_end_stream() {
            (Vec::new(), true)
        } else {
            Box::pin(conn.read_body(body, limit)).await
        };
        if complete && conn.ready() {
            self.inner.give_back(conn);
        }
        Ok(Answer {
            status,
            headers,
            body,
        })
    }

    /// After a request that failed with `e`: when it was not written and its connection had
    /// been idle (the server had closed it), the request once more on a new connection.
    async fn send_again(
        &self,
        mut e: hyper::client::conn::TrySendError<Request<Full<Bytes>>>,
        reused: bool,
    ) -> Result<(Conn, hyper::Response<Incoming>), Outcome> {
        match e.take_message() {
            Some(request) if reused => {
                let mut conn = self.connect().await?;
                let response = conn
                    .request(request)
                    .await
                    .map_err(|e| failure(e.error()))?;
                Ok((conn, response))
            }
            _ => Err(failure(e.error())),
        }
    }

    /// The number of idle connections.
    #[cfg(test)]
    fn idle(&self) -> usize {
        self.inner.lock().idle.len()
    }

    /// An idle connection still open (and whether it was idle), or a new one.
    async fn checkout(&self) -> Result<(Conn, bool), Outcome> {
        loop {
            let idle = self.inner.lock().idle.pop();
            let Some(idle) = idle else {
                // Boxed: the rare path keeps the future of every request small.
                return Ok((Box::pin(self.connect()).await?, false));
            };
            let mut conn = idle.conn;
            if idle.since.elapsed() < self.inner.idle_timeout && conn.ready() {
                return Ok((conn, true));
            }
        }
    }

    /// A new connection (within [`CONNECT_TIMEOUT`]).
    async fn connect(&self) -> Result<Conn, Outcome> {
        let inner = &self.inner;
        let failed = |cause: &dyn std::fmt::Display| {
            Outcome::retry(format!(
                "http: connection failed ({}: {cause})",
                inner.address()
            ))
        };
        let connecting = async {
            let tcp = TcpStream::connect((inner.host.as_str(), inner.port)).await?;
            tcp.set_nodelay(true)?;
            Ok::<_, std::io::Error>(tcp)
        };
        let tcp = match tokio::time::timeout(CONNECT_TIMEOUT, connecting).await {
            Ok(Ok(tcp)) => tcp,
            Ok(Err(e)) => return Err(failed(&e)),
            Err(_) => {
                return Err(failed(&format_args!(
                    "no answer within {CONNECT_TIMEOUT:?}"
                )));
            }
        };
        let (sender, driver) = http1::handshake(TokioIo::new(tcp))
            .await
            .map_err(|e| failed(&e))?;
        self.inner.start_sweeper();
        Ok(Conn {
            sender,
            driver: Some(Box::pin(driver)),
        })
    }
}

impl Inner {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `host:port` as a user wrote it (brackets around an IPv6 address).
    fn address(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    fn give_back(&self, conn: Conn) {
        let since = Instant::now();
        self.lock().idle.push(Idle { conn, since });
    }

    /// Starts the task that closes idle connections, unless it runs.
    fn start_sweeper(self: &Arc<Self>) {
        {
            let mut state = self.lock();
            if state.sweeping {
                return;
            }
            state.sweeping = true;
        }
        let weak = Arc::downgrade(self);
        let idle_timeout = self.idle_timeout;
        tokio::spawn(sweep(weak, idle_timeout));
    }
}

/// Closes connections idle for `idle_timeout`, sleeping until the oldest one's deadline;
/// ends with the pool.
async fn sweep(pool: Weak<Inner>, idle_timeout: Duration) {
    let mut wake = tokio::time::Instant::now() + idle_timeout;
    loop {
        tokio::time::sleep_until(wake).await;
        let Some(pool) = pool.upgrade() else { return };
        let now = Instant::now();
        let expired: Vec<Idle> = {
            let mut state = pool.lock();
            let (old, young) = std::mem::take(&mut state.idle)
                .into_iter()
                .partition(|i| now.duration_since(i.since) >= idle_timeout);
            state.idle = young;
            old
        };
        // Closed outside the lock.
        drop(expired);
        let oldest = pool.lock().idle.first().map(|i| i.since);
        let next = oldest.map_or(now + idle_timeout, |since| since + idle_timeout);
        wake = tokio::time::Instant::from_std(next.max(now + Duration::from_millis(10)));
    }
}

pin_project_lite::pin_project! {
    /// [`Conn::drive`]'s future: `fut` polled while the connection is driven.
    struct Drive<'a, F> {
        driver: &'a mut Option<Pin<Box<Driver>>>,
        #[pin]
        fut: F,
    }
}

impl<F: Future> Future for Drive<'_, F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        let mut fut = this.fut;
        let Some(d) = this.driver.as_mut() else {
            // Nothing completes `fut` any more: its channel's other side is gone.
            return fut.poll(cx);
        };
        let mut quiet = Context::from_waker(Waker::noop());
        if let Poll::Ready(out) = fut.as_mut().poll(&mut quiet) {
            return Poll::Ready(out);
        }
        let ended = d.as_mut().poll(cx).is_ready();
        if let Poll::Ready(out) = fut.as_mut().poll(&mut quiet) {
            if ended {
                **this.driver = None;
            }
            return Poll::Ready(out);
        }
        if !ended {
            return Poll::Pending;
        }
        **this.driver = None;
        fut.poll(cx)
    }
}

impl Conn {
    /// Polls `fut` while driving the connection. When the connection ends, `fut` is polled
    /// again (hyper has handed it its result by then); if it still waits, the connection is
    /// dropped, which ends `fut` with hyper's error.
    ///
    /// While the connection lives, `fut` (hyper's answer or body channel) is completed only
    /// inside the connection's poll, so it is polled right before and after it without the
    /// run's waker: hyper handing it a result then wakes nobody, instead of waking the run
    /// from within its own poll (which the runtime would reschedule as a yield, possibly on
    /// the other thread). The run is woken by what the connection waits for (its socket).
    ///
    /// A future type of its own rather than an `async fn`: it holds `fut` once (an `async fn`
    /// would keep its argument and the pinned copy), which keeps every request's future small.
    fn drive<F: Future>(&mut self, fut: F) -> Drive<'_, F> {
        Drive {
            driver: &mut self.driver,
            fut,
        }
    }

    /// Sends `request`; on an error, the request when it was not written. (Handed to hyper
    /// at once, when called.)
    fn request(
        &mut self,
        request: Request<Full<Bytes>>,
    ) -> impl Future<
        Output = Result<
            hyper::Response<Incoming>,
            hyper::client::conn::TrySendError<Request<Full<Bytes>>>,
        >,
    > + '_ {
        let sending = self.sender.try_send_request(request);
        self.drive(sending)
    }

    /// Reads up to about `limit` bytes of `body`, each frame within 500 ms; whether the whole
    /// body was read.
    async fn read_body(&mut self, mut body: Incoming, limit: usize) -> (Vec<u8>, bool) {
        let mut out = Vec::new();
        // Until the body ends (`send` does not call this for an empty one, the usual answer).
        while !body.is_end_stream() {
            if out.len() >= limit {
                return (out, false);
            }
            // A body that came with the head is read without a timer.
            let mut next = pin!(self.drive(body.frame()));
            let next = match futures::poll!(next.as_mut()) {
                Poll::Ready(frame) => Ok(frame),
                Poll::Pending => tokio::time::timeout(BODY_PAUSE, next).await,
            };
            match next {
                Ok(Some(Ok(frame))) => {
                    if let Some(data) = frame.data_ref() {
                        out.extend_from_slice(data);
                    }
                }
                Ok(None) => break,
                _ => return (out, false),
            }
        }
        (out, true)
    }

    /// Whether the connection is open and ready for a request: polled once (which reads a
    /// close or an error the server sent meanwhile), never waiting, and without the run's
    /// waker (an idle connection wakes nobody; the request that takes it registers its own).
    fn ready(&mut self) -> bool {
        let Some(d) = self.driver.as_mut() else {
            return false;
        };
        let mut quiet = Context::from_waker(Waker::noop());
        if d.as_mut().poll(&mut quiet).is_ready() {
            self.driver = None;
            return false;
        }
        matches!(self.sender.poll_ready(&mut quiet), Poll::Ready(Ok(())))
    }
}

/// The retryable outcome of hyper's error `e`: `http: <innermost cause>` (it never holds the
/// URL).
fn failure(e: &hyper::Error) -> Outcome {
    let (innermost, timed_out) = super::client::innermost_cause(e);
    let innermost = innermost.unwrap_or_else(|| e.to_string());
    if timed_out {
        Outcome::retry("http: request timed out")
    } else {
        Outcome::retry(format!("http: {innermost}"))
    }
}

#[cfg(test)]
#[path = "conn_pool_tests.rs"]
mod tests;
