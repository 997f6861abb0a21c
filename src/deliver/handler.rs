//! Handlers: the [`Handler`] trait a library user implements (or [`handler_fn`] for a
//! closure) and the [`Outcome`] it returns. The daemon's built-in handlers live in
//! `deliver::http` and `deliver::blackhole`; `deliver::factory` builds them from a route.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use crate::model::envelope::Event;

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
