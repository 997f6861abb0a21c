//! Handlers: the [`Handler`] trait a library user implements (or [`handler_fn`] for a
//! closure), the [`Outcome`] it returns, and the two built-in handlers of the daemon,
//! [`HttpHandler`] and [`BlackholeHandler`].

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue, RETRY_AFTER};

use crate::model::envelope::{Event, truncate};

/// A boxed future, as handlers return.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What happened to one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Done: the event is acknowledged.
    Success,
    /// Failed, may work later: retried with backoff while attempts remain.
    Retry {
        /// Why (kept, truncated, in the DLQ if attempts run out). Never put secrets here.
        error: String,
        /// Earliest time to try again, if the handler knows (HTTP `Retry-After`).
        retry_after: Option<Duration>,
    },
    /// Will never work: dead-lettered at once with reason `permanent_error`.
    Permanent {
        /// Why.
        error: String,
    },
}

impl Outcome {
    /// A retryable failure without a retry hint.
    pub fn retry(error: impl Into<String>) -> Self {
        Outcome::Retry {
            error: error.into(),
            retry_after: None,
        }
    }

    /// A permanent failure.
    pub fn permanent(error: impl Into<String>) -> Self {
        Outcome::Permanent {
            error: error.into(),
        }
    }
}

/// Handles events of the types its route serves.
///
/// Handlers must be idempotent on [`Event::id`]: delivery is at-least-once.
///
/// The futures of one read batch are polled by one task (see `batch`), so a handler that
/// blocks or burns CPU holds up the rest of its batch: move such work to
/// `tokio::task::spawn_blocking`.
pub trait Handler: Send + Sync + 'static {
    /// Handles one event. A panic counts as a retryable failure; the route's `timeout`
    /// bounds the run (past it the future is dropped and the run counts as retryable).
    fn handle<'a>(&'a self, event: &'a Event) -> BoxFuture<'a, Outcome>;
}

/// A [`Handler`] made from an async closure; see [`handler_fn`].
pub struct FnHandler<F>(F);

/// Wraps `f(event) -> impl Future<Output = Outcome>` as a [`Handler`].
pub fn handler_fn<F, Fut>(f: F) -> FnHandler<F>
where
    F: Fn(Event) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Outcome> + Send + 'static,
{
    FnHandler(f)
}

impl<F, Fut> Handler for FnHandler<F>
where
    F: Fn(Event) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Outcome> + Send + 'static,
{
    fn handle<'a>(&'a self, event: &'a Event) -> BoxFuture<'a, Outcome> {
        Box::pin((self.0)(event.clone()))
    }
}

/// Acknowledges every event at once (draining, benchmarks).
pub struct BlackholeHandler;

impl Handler for BlackholeHandler {
    fn handle<'a>(&'a self, _event: &'a Event) -> BoxFuture<'a, Outcome> {
        Box::pin(async { Outcome::Success })
    }
}

/// POSTs each event as CloudEvents structured JSON to a URL.
///
/// 2xx is success; 408, 429, 5xx, timeouts and connection errors are retryable (with
/// `Retry-After` in seconds honoured); any other status is permanent. Redirects are not
/// followed (a redirect is a misconfiguration, reported as permanent).
pub struct HttpHandler {
    client: reqwest::Client,
    url: url::Url,
    headers: HeaderMap,
    signer: Option<aws_lc_rs::hmac::Key>,
}

/// Header carrying the body signature: `t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">`.
pub const SIGNATURE_HEADER: &str = "x-event-signature";

/// The signature header value for `body` at `timestamp` (unix seconds) with `key`.
pub fn signature(key: &aws_lc_rs::hmac::Key, timestamp: u64, body: &[u8]) -> String {
    let mut ctx = aws_lc_rs::hmac::Context::with_key(key);
    ctx.update(timestamp.to_string().as_bytes());
    ctx.update(b".");
    ctx.update(body);
    let tag = ctx.sign();
    let hex: String = tag.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("t={timestamp},v1={hex}")
}

/// Most bytes of a response body kept in an error message.
const ERROR_BODY_BYTES: usize = 200;

impl HttpHandler {
    /// A handler posting to `url` with extra `headers`, sharing `client` (its pool).
    ///
    /// # Errors
    /// When a header name or value is invalid.
    pub fn new(
        client: reqwest::Client,
        url: url::Url,
        headers: &[(String, String)],
        signing_secret: Option<&str>,
    ) -> Result<Self, String> {
        let mut map = HeaderMap::new();
        for (k, v) in headers {
            let name = HeaderName::from_bytes(k.as_bytes())
                .map_err(|_| format!("invalid header name `{k}`"))?;
            let value =
                HeaderValue::from_str(v).map_err(|_| format!("invalid value for header `{k}`"))?;
            map.insert(name, value);
        }
        let signer = signing_secret
            .map(|s| aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, s.as_bytes()));
        Ok(HttpHandler {
            client,
            url,
            headers: map,
            signer,
        })
    }

    /// A client suited to delivery: keep-alive pool, no redirects, certificate checks on.
    ///
    /// # Errors
    /// When the TLS backend cannot be initialised.
    pub fn default_client() -> Result<reqwest::Client, reqwest::Error> {
        reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .pool_idle_timeout(Duration::from_secs(60))
            .tcp_nodelay(true)
            .connect_timeout(Duration::from_secs(5))
            .user_agent(concat!("event-worker/", env!("CARGO_PKG_VERSION")))
            .build()
    }

    async fn post(&self, event: &Event) -> Outcome {
        let body = event.to_cloudevent_json();
        let mut request = self
            .client
            .post(self.url.clone())
            .headers(self.headers.clone())
            .header(CONTENT_TYPE, "application/cloudevents+json");
        if let Some(key) = &self.signer {
            let now = crate::model::time::now_ms() / 1000;
            request = request.header(SIGNATURE_HEADER, signature(key, now, &body));
        }
        let mut request = request.body(body);
        if let Some(tp) = event.field(crate::model::envelope::field::TRACEPARENT) {
            request = request.header("traceparent", tp);
        }
        let response = match request.send().await {
            Ok(r) => r,
            Err(e) if e.is_timeout() => return Outcome::retry("http: request timed out"),
            Err(e) if e.is_connect() => return Outcome::retry("http: connection failed"),
            Err(e) => return Outcome::retry(format!("http: {}", without_url(&e))),
        };
        let status = response.status();
        if status.is_success() {
            // Read the (usually empty) body so the connection goes back to the pool; a large
            // or slow body is abandoned instead (bounded in size and time).
            let _ = read_some(response).await;
            return Outcome::Success;
        }
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let body = read_some(response).await;
        let body = truncate(body.trim(), ERROR_BODY_BYTES);
        let error = if body.is_empty() {
            format!("http status {}", status.as_u16())
        } else {
            format!("http status {}: {body}", status.as_u16())
        };
        let code = status.as_u16();
        if code == 408 || code == 429 || status.is_server_error() {
            Outcome::Retry { error, retry_after }
        } else {
            Outcome::Permanent { error }
        }
    }
}

/// A reqwest error's text without the URL (it may carry credentials or tokens).
fn without_url(e: &reqwest::Error) -> String {
    let mut e2 = String::new();
    let mut source: Option<&dyn std::error::Error> = std::error::Error::source(e);
    while let Some(s) = source {
        e2 = s.to_string();
        source = s.source();
    }
    if e2.is_empty() {
        "request failed".to_string()
    } else {
        e2
    }
}

async fn read_some(mut response: reqwest::Response) -> String {
    let mut body = Vec::new();
    while body.len() < ERROR_BODY_BYTES {
        match tokio::time::timeout(Duration::from_millis(500), response.chunk()).await {
            Ok(Ok(Some(chunk))) => body.extend_from_slice(&chunk),
            _ => break,
        }
    }
    String::from_utf8_lossy(&body).into_owned()
}

impl Handler for HttpHandler {
    fn handle<'a>(&'a self, event: &'a Event) -> BoxFuture<'a, Outcome> {
        Box::pin(self.post(event))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_are_hmac_sha256_over_timestamp_and_body() {
        let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, b"key");
        // HMAC-SHA256("key", "The quick brown fox jumps over the lazy dog") with "1." prefix
        // differs from the RFC vector, so check the construction against the raw primitive.
        let expect = aws_lc_rs::hmac::sign(&key, b"1700000000.{\"a\":1}");
        let hex: String = expect.as_ref().iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            signature(&key, 1_700_000_000, b"{\"a\":1}"),
            format!("t=1700000000,v1={hex}")
        );
    }
}
