//! The HTTP clients of `http` routes and one route's target, the [`Endpoint`].
//!
//! An `http://` route holds its own pool of HTTP/1.1 keep-alive connections
//! (`deliver::conn_pool`: no task per request or per connection, connect timeout 5 s, idle
//! connections closed after 60 s). `https://` routes share hyper-util's pooled client (HTTP/1.1
//! keep-alive; HTTP/2 when the server offers it), rustls with the platform's certificate
//! verifier, the same connect and idle timeouts. Neither follows redirects. An [`Endpoint`]
//! parses its URL into a URI and builds its header map once; each request clones them
//! (reference counts and two small copies) and sends a body already serialised into one
//! buffer. Transport errors and statuses map to an [`Outcome`] as documented on
//! `deliver::http::HttpHandler`.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::future::Either;
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Incoming};
use hyper::header::{
    ACCEPT, AUTHORIZATION, CONTENT_TYPE, HOST, HeaderMap, HeaderName, HeaderValue, RETRY_AFTER,
    USER_AGENT,
};
use hyper::{Method, Request, StatusCode, Uri};
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use super::conn_pool::{self, Answer, ConnPool};
use super::handler::Outcome;
use crate::model::envelope::truncate;

/// The shared client of every `https://` route (one connection pool per target host).
pub(crate) type Client =
    hyper_util::client::legacy::Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// Header carrying the body signature: `t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">`.
pub const SIGNATURE_HEADER: &str = "x-event-signature";

/// The `user-agent` of every request.
const USER_AGENT_VALUE: &str = concat!("event-worker/", env!("CARGO_PKG_VERSION"));

/// Most bytes of a response body kept in an error message.
pub(crate) const ERROR_BODY_BYTES: usize = 200;

/// How long reading a response body may pause before the rest is abandoned.
const BODY_PAUSE: Duration = Duration::from_millis(500);

/// Why an `http` route's extra headers cannot be sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    /// Not a valid header name.
    #[error("invalid header name `{0}`")]
    Name(String),
    /// Not a valid header value (the value is not repeated: it may be a credential).
    #[error("invalid value for header `{0}`")]
    Value(String),
}

/// A client suited to delivery: keep-alive pool, no redirects, certificate checks on.
///
/// # Errors
/// When the TLS backend or the platform's certificate verifier cannot be initialised.
pub(crate) fn build_client() -> Result<Client, String> {
    use rustls_platform_verifier::BuilderVerifierExt;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .and_then(|b| b.with_platform_verifier())
        .map_err(|e| format!("TLS setup: {e}"))?
        .with_no_client_auth();
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(conn_pool::CONNECT_TIMEOUT));
    let https = HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .enable_http2()
        .wrap_connector(http);
    Ok(
        hyper_util::client::legacy::Client::builder(TokioExecutor::new())
            .pool_idle_timeout(conn_pool::IDLE_TIMEOUT)
            .pool_timer(TokioTimer::new())
            .build(https),
    )
}

/// The signature header value for `body` at `timestamp` (unix seconds) with `key`.
pub fn signature(key: &aws_lc_rs::hmac::Key, timestamp: u64, body: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let t = timestamp.to_string();
    let mut ctx = aws_lc_rs::hmac::Context::with_key(key);
    ctx.update(t.as_bytes());
    ctx.update(b".");
    ctx.update(body);
    let tag = ctx.sign();
    let mut out = String::with_capacity(t.len() + 6 + 2 * tag.as_ref().len());
    out.push_str("t=");
    out.push_str(&t);
    out.push_str(",v1=");
    for b in tag.as_ref() {
        out.push(char::from(HEX[usize::from(b >> 4)]));
        out.push(char::from(HEX[usize::from(b & 15)]));
    }
    out
}

/// How a route's requests travel.
pub(crate) enum Transport {
    /// The route's own connections (`http://`); requests carry an origin-form URI and `Host`.
    Pool(ConnPool),
    /// The shared client (`https://`; boxed: it is much larger than a pool handle).
    Shared(Box<Client>),
}

/// One route's target: the URI and headers built once, the optional signing key.
pub(crate) struct Endpoint {
    transport: Transport,
    uri: Uri,
    /// With a pooled route's `Host` header last (the shared client sets its own).
    headers: HeaderMap,
    signer: Option<aws_lc_rs::hmac::Key>,
}

impl Endpoint {
    /// The target `uri` with the route's extra `headers` and `content_type`.
    ///
    /// # Errors
    /// [`HeaderError`] when a header name or value is invalid.
    pub(crate) fn new(
        transport: Transport,
        target: Target,
        headers: &[(String, String)],
        signing_secret: Option<&str>,
        content_type: &'static str,
    ) -> Result<Self, HeaderError> {
        let mut map = HeaderMap::with_capacity(headers.len() + 4);
        for (k, v) in headers {
            let name =
                HeaderName::from_bytes(k.as_bytes()).map_err(|_| HeaderError::Name(k.clone()))?;
            let value = HeaderValue::from_str(v).map_err(|_| HeaderError::Value(k.clone()))?;
            map.insert(name, value);
        }
        // The route's own Authorization header wins over the URL's credentials.
        if let Some(auth) = target.basic_auth
            && !map.contains_key(AUTHORIZATION)
        {
            map.insert(AUTHORIZATION, auth);
        }
        map.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
        if !map.contains_key(ACCEPT) {
            map.insert(ACCEPT, HeaderValue::from_static("*/*"));
        }
        if !map.contains_key(USER_AGENT) {
            map.insert(USER_AGENT, HeaderValue::from_static(USER_AGENT_VALUE));
        }
        let signer = signing_secret
            .map(|s| aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, s.as_bytes()));
        let uri = match &transport {
            Transport::Pool(_) => {
                let (path, host) = origin_form(&target.uri, &map);
                if let Some(host) = host {
                    map.insert(HOST, host);
                }
                path
            }
            Transport::Shared(_) => target.uri,
        };
        Ok(Endpoint {
            transport,
            uri,
            headers: map,
            signer,
        })
    }

    /// POSTs `body` (signed when the route has a secret, with `traceparent` when given) and
    /// reads the answer: its body up to `limit` bytes for a 2xx status, up to
    /// [`ERROR_BODY_BYTES`] otherwise (a larger or slow body is abandoned, and its connection
    /// closed instead of reused).
    ///
    /// # Errors
    /// The retryable [`Outcome`] of a transport error (connection failed, timed out, ...).
    ///
    /// The request is built when this is called; the future holds only the exchange (which
    /// keeps the future of every request small).
    pub(crate) fn exchange(
        &self,
        body: Vec<u8>,
        traceparent: Option<&str>,
        limit: usize,
    ) -> impl Future<Output = Result<Answer, Outcome>> + '_ {
        let request = self.request(body, traceparent);
        match &self.transport {
            Transport::Pool(pool) => Either::Left(pool.send(request, limit, ERROR_BODY_BYTES)),
            // Boxed: it would make the pooled route's future larger.
            Transport::Shared(client) => {
                Either::Right(Box::pin(shared_exchange(client, request, limit)))
            }
        }
    }

    /// The POST of `body`, signed when the route has a secret, with `traceparent` when given.
    fn request(&self, body: Vec<u8>, traceparent: Option<&str>) -> Request<Full<Bytes>> {
        let mut headers = self.headers.clone();
        if let Some(key) = &self.signer {
            let now = crate::model::time::now_ms() / 1000;
            if let Ok(v) = HeaderValue::try_from(signature(key, now, &body)) {
                headers.insert(SIGNATURE_HEADER, v);
            }
        }
        if let Some(tp) = traceparent.and_then(|t| HeaderValue::from_str(t).ok()) {
            headers.insert("traceparent", tp);
        }
        let mut request = Request::new(Full::new(Bytes::from(body)));
        *request.method_mut() = Method::POST;
        *request.uri_mut() = self.uri.clone();
        *request.headers_mut() = headers;
        request
    }
}

/// Sends `request` with the shared client and reads the answer as [`Endpoint::exchange`].
async fn shared_exchange(
    client: &Client,
    request: Request<Full<Bytes>>,
    limit: usize,
) -> Result<Answer, Outcome> {
    let response = client
        .request(request)
        .await
        .map_err(|e| transport_failure(&e))?;
    let (head, body) = response.into_parts();
    let limit = if head.status.is_success() {
        limit
    } else {
        ERROR_BODY_BYTES
    };
    Ok(Answer {
        status: head.status,
        headers: head.headers,
        body: read_body(body, limit).await,
    })
}

/// The origin-form URI (`/path?query`) of `uri` and the `Host` header a pooled route sends
/// (none when the route's own headers have one): the host, and the port unless it is 80.
fn origin_form(uri: &Uri, headers: &HeaderMap) -> (Uri, Option<HeaderValue>) {
    let path = uri
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .parse::<Uri>()
        .unwrap_or_else(|_| Uri::from_static("/"));
    if headers.contains_key(HOST) {
        return (path, None);
    }
    let host = uri.host().unwrap_or_default();
    let host = match uri.port_u16() {
        Some(port) if port != 80 => format!("{host}:{port}"),
        _ => host.to_string(),
    };
    (path, HeaderValue::try_from(host).ok())
}

/// The transport of a route to `uri`: its own connection pool for `http://`, `shared()` (the
/// shared client, built on first use) otherwise.
///
/// # Errors
/// `shared()`'s error.
pub(crate) fn transport<E>(
    uri: &Uri,
    shared: impl FnOnce() -> Result<Client, E>,
) -> Result<Transport, E> {
    if uri.scheme_str() == Some("http") {
        let host = uri.host().unwrap_or_default();
        let port = uri.port_u16().unwrap_or(80);
        return Ok(Transport::Pool(ConnPool::new(
            host,
            port,
            conn_pool::IDLE_TIMEOUT,
        )));
    }
    shared().map(|c| Transport::Shared(Box::new(c)))
}

/// A route's target for hyper: the URI of `url` without its user and password, and the
/// `Authorization: Basic` value they make (percent-decoded, as reqwest sent them before).
pub(crate) struct Target {
    /// The URI requests go to.
    pub uri: Uri,
    /// `Basic base64(user:password)` when the URL carries credentials (marked sensitive).
    pub basic_auth: Option<HeaderValue>,
}

/// The [`Target`] of `url`.
///
/// # Errors
/// hyper's reason, when it cannot read the URL (the URL itself is not repeated: it may
/// carry a token).
pub(crate) fn target(url: &url::Url) -> Result<Target, String> {
    use base64::Engine;
    let decode = |s: &str| {
        percent_encoding::percent_decode_str(s)
            .decode_utf8_lossy()
            .into_owned()
    };
    let mut url = url.clone();
    let mut basic_auth = None;
    if !url.username().is_empty() || url.password().is_some() {
        let user = decode(url.username());
        let password = url.password().map(decode).unwrap_or_default();
        let encoded =
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        let mut value = HeaderValue::try_from(format!("Basic {encoded}"))
            .map_err(|_| "its user or password cannot be sent".to_string())?;
        value.set_sensitive(true);
        basic_auth = Some(value);
        let _ = url.set_username("");
        let _ = url.set_password(None);
    }
    let uri = url.as_str().parse::<Uri>().map_err(|e| e.to_string())?;
    Ok(Target { uri, basic_auth })
}

/// The innermost source of `e` as text (`None` when it has none) and whether any source in
/// the chain is an I/O timeout.
pub(crate) fn innermost_cause(e: &dyn std::error::Error) -> (Option<String>, bool) {
    let (mut innermost, mut timed_out) = (None, false);
    let mut source = e.source();
    while let Some(s) = source {
        timed_out |= s
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut);
        innermost = Some(s.to_string());
        source = s.source();
    }
    (innermost, timed_out)
}

/// The retryable outcome of a transport error, without the URL (it may carry credentials
/// or tokens): `http: request timed out`, `http: connection failed`, or `http: <cause>`.
fn transport_failure(e: &hyper_util::client::legacy::Error) -> Outcome {
    let (innermost, timed_out) = innermost_cause(e);
    let innermost = innermost.unwrap_or_default();
    if timed_out {
        Outcome::retry("http: request timed out")
    } else if e.is_connect() {
        Outcome::retry("http: connection failed")
    } else if innermost.is_empty() {
        Outcome::retry("http: request failed")
    } else {
        Outcome::retry(format!("http: {innermost}"))
    }
}

/// The outcome of a non-2xx answer `status` with `headers` and (the start of) its `body`:
/// 408, 429 and 5xx are retryable (`Retry-After` in seconds honoured), any other status is
/// permanent. The error is `http status <code>[: <body, trimmed, at most 200 bytes>]`.
pub(crate) fn status_failure(status: StatusCode, headers: &HeaderMap, body: &[u8]) -> Outcome {
    let retry_after = headers
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    let body = String::from_utf8_lossy(body);
    let body = truncate(body.trim(), ERROR_BODY_BYTES);
    let code = status.as_u16();
    let error = if body.is_empty() {
        format!("http status {code}")
    } else {
        format!("http status {code}: {body}")
    };
    if code == 408 || code == 429 || status.is_server_error() {
        Outcome::Retry { error, retry_after }
    } else {
        Outcome::Permanent { error }
    }
}

/// Reads up to about `limit` bytes of `body`, each frame within 500 ms; the rest is
/// abandoned (the connection is then closed instead of going back to the pool).
async fn read_body(mut body: Incoming, limit: usize) -> Vec<u8> {
    let mut out = Vec::new();
    // An empty body (the usual success answer) needs no read and no timer.
    while out.len() < limit && !body.is_end_stream() {
        match tokio::time::timeout(BODY_PAUSE, body.frame()).await {
            Ok(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    out.extend_from_slice(data);
                }
            }
            _ => break,
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_are_hmac_sha256_over_timestamp_and_body() {
        let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, b"key");
        let expect = aws_lc_rs::hmac::sign(&key, b"1700000000.{\"a\":1}");
        let hex: String = expect.as_ref().iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            signature(&key, 1_700_000_000, b"{\"a\":1}"),
            format!("t=1700000000,v1={hex}")
        );
    }

    #[test]
    fn url_credentials_become_a_basic_authorization_header() {
        let url = url::Url::parse("https://us%40er:p%3Ass@hooks.example:8443/in?k=1").unwrap();
        let t = target(&url).unwrap();
        assert_eq!(t.uri.to_string(), "https://hooks.example:8443/in?k=1");
        let auth = t.basic_auth.unwrap();
        // base64("us@er:p:ss")
        assert_eq!(auth.to_str().unwrap(), "Basic dXNAZXI6cDpzcw==");
        assert!(auth.is_sensitive());
        let plain = target(&url::Url::parse("http://127.0.0.1:9/x").unwrap()).unwrap();
        assert_eq!(
            (plain.uri.to_string().as_str(), plain.basic_auth),
            ("http://127.0.0.1:9/x", None)
        );
    }

    #[test]
    fn statuses_map_to_outcomes() {
        let h = HeaderMap::new();
        let mut ra = HeaderMap::new();
        ra.insert(RETRY_AFTER, HeaderValue::from_static(" 7 "));
        assert_eq!(
            status_failure(StatusCode::SERVICE_UNAVAILABLE, &ra, b" busy \n"),
            Outcome::Retry {
                error: "http status 503: busy".into(),
                retry_after: Some(Duration::from_secs(7))
            }
        );
        assert_eq!(
            status_failure(StatusCode::TOO_MANY_REQUESTS, &h, b""),
            Outcome::retry("http status 429")
        );
        assert_eq!(
            status_failure(StatusCode::REQUEST_TIMEOUT, &h, b""),
            Outcome::retry("http status 408")
        );
        assert_eq!(
            status_failure(StatusCode::MOVED_PERMANENTLY, &h, b"moved"),
            Outcome::permanent("http status 301: moved")
        );
        assert_eq!(
            status_failure(StatusCode::NOT_FOUND, &h, &[b'x'; 300]),
            Outcome::permanent(format!("http status 404: {}…", "x".repeat(200)))
        );
    }
}
