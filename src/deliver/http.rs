//! The HTTP handler: POSTs each event as CloudEvents structured JSON, optionally signed
//! (`X-Event-Signature`), and maps the response to an [`Outcome`].

use super::client::{self, ERROR_BODY_BYTES, Endpoint};
use super::handler::{BoxFuture, Handler, Outcome};
use crate::model::envelope::Event;

pub use super::client::HeaderError;

/// POSTs each event as CloudEvents structured JSON to a URL.
///
/// 2xx is success; 408, 429, 5xx, timeouts and connection errors are retryable (with
/// `Retry-After` in seconds honoured); any other status is permanent. Redirects are not
/// followed (a redirect is a misconfiguration, reported as permanent).
pub struct HttpHandler {
    endpoint: Endpoint,
}

impl HttpHandler {
    /// A handler posting to `target` with extra `headers` over `transport`.
    ///
    /// # Errors
    /// [`HeaderError`] when a header name or value is invalid.
    pub(crate) fn new(
        transport: client::Transport,
        target: client::Target,
        headers: &[(String, String)],
        signing_secret: Option<&str>,
    ) -> Result<Self, HeaderError> {
        let endpoint = Endpoint::new(
            transport,
            target,
            headers,
            signing_secret,
            "application/cloudevents+json",
        )?;
        Ok(HttpHandler { endpoint })
    }

    async fn post(&self, event: &Event) -> Outcome {
        let mut body = Vec::new();
        event.write_decoded_cloudevent_json(&mut body);
        // The (usually empty) answer body is read so the connection can be reused; a large or
        // slow body is abandoned instead (bounded in size and time).
        let answer = self
            .endpoint
            .exchange(body, event.traceparent(), ERROR_BODY_BYTES)
            .await;
        match answer {
            Ok(a) if a.status.is_success() => Outcome::Success,
            Ok(a) => client::status_failure(a.status, &a.headers, &a.body),
            Err(outcome) => outcome,
        }
    }
}

impl Handler for HttpHandler {
    fn handle<'a>(&'a self, event: &'a Event) -> BoxFuture<'a, Outcome> {
        Box::pin(self.post(event))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn an_http_requests_future_fits_the_allocators_fast_path() {
        fn size<'a, F, Fut>(_: F) -> usize
        where
            F: FnOnce(&'a super::HttpHandler, &'a crate::model::envelope::Event) -> Fut,
        {
            std::mem::size_of::<Fut>()
        }
        let bytes = size(super::HttpHandler::post);
        assert!(
            bytes <= crate::consume::batch::tests::TCACHE_MAX,
            "{bytes} bytes per request"
        );
    }
}
