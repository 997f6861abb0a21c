//! What the HTTP side may see of the worker: [`ApiState`] (listener settings, health facts,
//! metrics, the operator token) and, once the worker is connected to Redis, a read-only
//! [`WorkerView`] with exactly what the endpoints read or use (no access to the consume
//! path's shared state).

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use crate::consume::in_flight::InFlight;
use crate::consume::streams::StreamSet;
use crate::deliver::breaker::Breaker;
use crate::metrics::Metrics;
use crate::model::keys::Keys;
use crate::model::secret::Secret;
use crate::ops::backlog::{BacklogCache, BacklogSource};
use crate::ops::coordination::Notices;
use crate::redis::store::Store;
use crate::settle::history::HistorySink;
use crate::worker::health::Health;

/// What the handlers read.
#[derive(Clone)]
pub struct ApiState {
    /// Metric registry.
    pub metrics: Metrics,
    /// Health facts.
    pub health: Arc<Health>,
    /// How recent the last read must be for /readyz.
    pub ready_window: Duration,
    /// The worker as the endpoints see it, once it is connected to Redis.
    pub worker: Arc<OnceLock<Arc<WorkerView>>>,
    /// Bearer token of the token endpoints (`EVENTS_API_TOKEN`); they are off without it.
    pub token: Option<Secret>,
    /// App tokens and origins (`[apps]`); `None` when app tokens are off.
    pub apps: Option<Arc<crate::http::app_auth::AppVerifier>>,
    /// Scrape-time backlog cache.
    pub backlog: Arc<BacklogCache>,
    /// Token bucket of the mutating endpoints.
    pub limiter: Arc<RateLimiter>,
    /// Longest time a client may take to send a request header (`api.header_timeout`).
    pub header_timeout: Duration,
    /// Longest time a client may take to send a request body (`api.body_timeout`).
    pub body_timeout: Duration,
    /// Push to apps, when `[push]` turns it on.
    pub push: Option<Arc<crate::push::service::PushService>>,
    /// With `outbox.enabled`: where publishes go before the first connection to Redis.
    pub offline: Option<Arc<Offline>>,
}

/// What publishing needs before the worker has connected to Redis: the outbox (every
/// publish is queued, reason `unreachable`, and drained once connected) and `[publish]`'s
/// batch bounds.
pub struct Offline {
    /// The local outbox.
    pub outbox: Arc<crate::outbox::Outbox>,
    /// `[publish]`.
    pub publish: crate::config::PublishConfig,
}

impl ApiState {
    /// The worker view, when the worker is connected.
    pub fn worker(&self) -> Option<Arc<WorkerView>> {
        self.worker.get().cloned()
    }
}

/// The worker as the endpoints see it: identity, Redis and key names for the operator
/// operations, breaker and in-flight facts for health, the backlog source, and the sinks
/// the operator endpoints report to (history, notices, metrics).
pub struct WorkerView {
    /// Redis.
    pub store: Store,
    /// Key names of the env.
    pub keys: Keys,
    /// The env label.
    pub env: String,
    /// The group.
    pub group: String,
    /// This consumer.
    pub consumer: String,
    /// The routes' breakers, in route order.
    pub breakers: Vec<Arc<Breaker>>,
    /// Entries this consumer is handling.
    pub in_flight: Arc<InFlight>,
    /// The consumed type streams (for metric labels).
    pub streams: StreamSet,
    /// Lifecycle records of operator actions.
    pub history: HistorySink,
    /// Coordination notices of operator actions.
    pub notices: Notices,
    /// `history.max_len` (replay and purge append history records).
    pub history_max_len: u64,
    /// `[publish]`: the id guard's bounds and the batch bounds.
    pub publish: crate::config::PublishConfig,
    /// Where the backlog figures come from.
    pub backlog: BacklogSource,
    /// Metric handles.
    pub metrics: Metrics,
    /// The local outbox publishes fall back to, when `outbox.enabled` (README "Outbox").
    pub outbox: Option<Arc<crate::outbox::Outbox>>,
    /// `outbox.max_age`: health is `degraded` past it.
    pub outbox_max_age: Duration,
}

impl WorkerView {
    /// The `type` metric label of `event_type`.
    pub fn type_label<'a>(&self, event_type: &'a str) -> &'a str {
        self.streams.type_label(event_type)
    }
}

/// A token bucket: `rate` requests per second, bursts up to `rate`.
pub struct RateLimiter {
    rate: f64,
    state: std::sync::Mutex<Bucket>,
}

impl RateLimiter {
    /// A bucket of `rate` per second; 0 never limits.
    pub fn new(rate: u32) -> Self {
        RateLimiter {
            rate: f64::from(rate),
            state: std::sync::Mutex::new(Bucket::full(f64::from(rate))),
        }
    }

    /// Takes one token; false when none is left.
    pub fn try_take(&self) -> bool {
        if self.rate <= 0.0 {
            return true;
        }
        let Ok(mut bucket) = self.state.lock() else {
            return true;
        };
        bucket.take(self.rate, std::time::Instant::now())
    }
}

/// A token bucket of burst `rate`, refilled at `rate` per second.
#[derive(Debug, Clone, Copy)]
pub struct Bucket {
    tokens: f64,
    at: std::time::Instant,
}

impl Bucket {
    /// A full bucket of `rate` tokens.
    pub fn full(rate: f64) -> Bucket {
        Bucket {
            tokens: rate,
            at: std::time::Instant::now(),
        }
    }

    /// Its tokens at `now` (refilled, at most `rate`).
    pub fn tokens(&self, rate: f64, now: std::time::Instant) -> f64 {
        (self.tokens + now.duration_since(self.at).as_secs_f64() * rate).min(rate)
    }

    /// Takes one token at `now`; false when none is left.
    pub fn take(&mut self, rate: f64, now: std::time::Instant) -> bool {
        self.tokens = self.tokens(rate, now);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::RateLimiter;

    #[test]
    fn the_bucket_allows_a_burst_then_refuses() {
        let l = RateLimiter::new(5);
        let allowed = (0..20).filter(|_| l.try_take()).count();
        assert!((5..=6).contains(&allowed), "{allowed}");
        assert!((0..100).all(|_| RateLimiter::new(0).try_take()));
    }
}
