//! Builds the handler of a configured route. The `match` on [`HandlerKind`] has no
//! catch-all arm: a kind added to the configuration without a handler here does not
//! compile, instead of silently acknowledging every event.

use std::sync::Arc;

use super::batch::{BATCH_CONTENT_TYPE, BatchHandler};
use super::blackhole::BlackholeHandler;
use super::client::{self, Client, Endpoint};
use super::handler::Handler;
use super::http::{HeaderError, HttpHandler};
use crate::config::{HandlerKind, RouteConfig};

/// Why a route's handler could not be built.
#[derive(Debug, thiserror::Error)]
pub(crate) enum HandlerBuildError {
    /// The shared HTTP client could not be built (TLS backend); no https route can use it.
    #[error("http client: {0}")]
    Client(String),
    /// A header of route `index` cannot be sent.
    #[error("routes[{index}].headers: {source}")]
    Headers {
        /// Index of the route in `[[routes]]`.
        index: usize,
        /// Which header.
        source: HeaderError,
    },
    /// The signing secret of a route cannot be read (its variable is unset or too short);
    /// the message names the route's key and the variable, never a value.
    #[error("{0}")]
    SigningSecret(String),
    /// An `http` route without a URL (validation refuses it; a `Config` built in code may not).
    #[error("routes[{index}].url: required for the http handler")]
    MissingUrl {
        /// Index of the route in `[[routes]]`.
        index: usize,
    },
    /// The URL of route `index` cannot be used by the HTTP client (hyper's reason; the URL
    /// itself is not repeated: it may carry a token).
    #[error("routes[{index}].url: cannot be used for requests ({reason})")]
    BadUrl {
        /// Index of the route in `[[routes]]`.
        index: usize,
        /// Why.
        reason: String,
    },
}

/// Builds route handlers: an `http://` route gets its own connection pool, `https://` routes
/// share one HTTP client (its connection pool). The client is built only when an https route
/// needs it (loading the system's CA roots takes a few milliseconds of every start otherwise).
#[derive(Default)]
pub(crate) struct HandlerFactory {
    client: Option<Client>,
}

/// Whether the handler [`HandlerFactory::build`] makes for `route` keeps the route's timeout
/// itself (batched http: one deadline per batch), so its runs need no timer each.
pub(crate) fn self_timed(route: &RouteConfig) -> bool {
    route.handler == HandlerKind::Http && route.batch.is_some()
}

impl HandlerFactory {
    /// The handler of route `index`.
    ///
    /// # Errors
    /// [`HandlerBuildError`]; [`HandlerBuildError::Client`] concerns every http route.
    pub(crate) fn build(
        &mut self,
        index: usize,
        route: &RouteConfig,
    ) -> Result<Arc<dyn Handler>, HandlerBuildError> {
        match route.handler {
            HandlerKind::Http => {
                let url = route
                    .url
                    .clone()
                    .ok_or(HandlerBuildError::MissingUrl { index })?;
                // Read here, where the handler is built, not when the file is loaded.
                let secret = route
                    .resolve_signing_secret(index, &|var| std::env::var(var).ok())
                    .map_err(HandlerBuildError::SigningSecret)?;
                let target = client::target(&url)
                    .map_err(|reason| HandlerBuildError::BadUrl { index, reason })?;
                let secret = secret.as_ref().map(|s| s.expose());
                let headers_error = |source| HandlerBuildError::Headers { index, source };
                let transport = client::transport(&target.uri, || self.client())?;
                if let Some(batch) = route.batch {
                    let endpoint = Endpoint::new(
                        transport,
                        target,
                        &route.headers,
                        secret,
                        BATCH_CONTENT_TYPE,
                    )
                    .map_err(headers_error)?;
                    return Ok(Arc::new(BatchHandler::new(endpoint, batch, route.timeout)));
                }
                let handler = HttpHandler::new(transport, target, &route.headers, secret)
                    .map_err(headers_error)?;
                Ok(Arc::new(handler))
            }
            HandlerKind::Blackhole => Ok(Arc::new(BlackholeHandler)),
        }
    }

    /// The shared client, built on first use.
    fn client(&mut self) -> Result<Client, HandlerBuildError> {
        if let Some(c) = &self.client {
            return Ok(c.clone());
        }
        let c = client::build_client().map_err(HandlerBuildError::Client)?;
        self.client = Some(c.clone());
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn route(handler: HandlerKind, url: Option<&str>, headers: &[(&str, &str)]) -> RouteConfig {
        RouteConfig {
            name: None,
            types: vec!["a.b".into()],
            handler,
            url: url.map(|u| url::Url::parse(u).unwrap()),
            timeout: Duration::from_secs(1),
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            signing_secret: None,
            signing_secret_env: None,
            batch: None,
        }
    }

    #[test]
    fn only_a_batched_http_route_is_self_timed() {
        let mut batched = route(HandlerKind::Http, Some("http://h/"), &[]);
        assert!(!self_timed(&batched));
        batched.batch = Some(crate::config::BatchConfig {
            max_events: 10,
            max_wait: Duration::ZERO,
        });
        assert!(self_timed(&batched));
        let mut blackhole = route(HandlerKind::Blackhole, None, &[]);
        blackhole.batch = batched.batch;
        assert!(!self_timed(&blackhole));
    }

    #[test]
    fn every_kind_builds_and_bad_routes_name_their_key() {
        let mut f = HandlerFactory::default();
        for kind in HandlerKind::ALL {
            let url = (*kind == HandlerKind::Http).then_some("http://127.0.0.1:9/x");
            assert!(f.build(0, &route(*kind, url, &[])).is_ok(), "{kind:?}");
        }
        let e = f
            .build(3, &route(HandlerKind::Http, None, &[]))
            .err()
            .unwrap();
        assert_eq!(
            e.to_string(),
            "routes[3].url: required for the http handler"
        );
        let bad = route(HandlerKind::Http, Some("http://h/"), &[("bad name", "v")]);
        let e = f.build(2, &bad).err().unwrap();
        assert_eq!(
            e.to_string(),
            "routes[2].headers: invalid header name `bad name`"
        );
        // The signing secret is read here, where the handler is built.
        let mut signed = route(HandlerKind::Http, Some("http://h/"), &[]);
        signed.signing_secret_env = Some("EVENT_WORKER_TEST_UNSET_SECRET_7F3A".into());
        let e = f.build(4, &signed).err().unwrap();
        assert_eq!(
            e.to_string(),
            "routes[4].signing_secret_env: environment variable \
             EVENT_WORKER_TEST_UNSET_SECRET_7F3A is not set"
        );
        let bad = route(HandlerKind::Http, Some("http://h/"), &[("x-k", "a\nb")]);
        let e = f.build(1, &bad).err().unwrap();
        assert_eq!(
            e.to_string(),
            "routes[1].headers: invalid value for header `x-k`"
        );
    }
}
