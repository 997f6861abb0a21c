//! State shared by the consume path (reader, batch, decide, settle): configuration,
//! connections, metrics, routes, the permit pool that bounds in-flight work, and the set of
//! streams being consumed ([`StreamSet`], also handed to discovery, retention and HTTP).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::sync::Semaphore;

use crate::config::Config;
use crate::consume::backoff::RetryPolicy;
use crate::consume::in_flight::InFlight;
use crate::consume::type_facts::{TypeFacts, TypeFactsCache};
use crate::deliver::breaker::Breaker;
use crate::deliver::handler::Handler;
use crate::metrics::Metrics;
use crate::model::keys::{self, Keys};
use crate::model::time::now_ms;
use crate::ops::coordination::Notices;
use crate::redis::store::Store;
use crate::settle::acker::Acker;
use crate::settle::history::HistorySink;

/// One route: patterns, its handler and the handler's breaker.
pub struct Route {
    /// Exact types or globs.
    pub patterns: Vec<String>,
    /// The handler.
    pub handler: Arc<dyn Handler>,
    /// The handler's circuit breaker.
    pub breaker: Arc<Breaker>,
    /// Longest a run may take.
    pub timeout: Duration,
}

impl Route {
    /// Whether this route serves `event_type`.
    pub fn serves(&self, event_type: &str) -> bool {
        self.patterns
            .iter()
            .any(|p| keys::glob_matches(p, event_type))
    }
}

/// A type stream being consumed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TypeStream {
    /// `events:<env>:<type>`.
    pub key: String,
    /// The type.
    pub event_type: String,
    /// Index of the route serving it.
    pub route: usize,
}

/// Liveness and readiness facts for /livez, /readyz and health output.
#[derive(Default)]
pub struct Health {
    /// Last ping succeeded.
    pub redis_up: AtomicBool,
    /// Time (epoch ms) the consumer last completed a read.
    pub last_read_ms: AtomicU64,
    /// The worker finished its start-up (migrations, groups) and consumes.
    pub consuming: AtomicBool,
    /// Keys discovery could not consume (not streams, or past the stream cap), shown as
    /// warnings by `/api/events/health`.
    pub discovery: std::sync::Mutex<crate::recover::discovery::Issues>,
}

impl Health {
    /// Ready: Redis answers and the consumer has read within `window`.
    pub fn ready(&self, window: Duration) -> bool {
        self.redis_up.load(Ordering::Relaxed)
            && self.consuming.load(Ordering::Relaxed)
            && now_ms().saturating_sub(self.last_read_ms.load(Ordering::Relaxed))
                <= window.as_millis() as u64
    }
}

/// Most event types that get a metric label of their own; the rest count as `other`.
pub const MAX_TYPE_LABELS: usize = 200;

/// The `type` label of `event_type` given the consumed `streams` (see [`Shared::type_label`]).
pub fn label_among<'a>(streams: &[TypeStream], event_type: &'a str) -> &'a str {
    if streams
        .iter()
        .take(MAX_TYPE_LABELS)
        .any(|s| s.event_type == event_type)
    {
        event_type
    } else {
        "other"
    }
}

/// The set of type streams being consumed, shared by handle: discovery replaces it, the
/// reader, the HTTP view and retention read snapshots. Cheap to clone.
#[derive(Clone, Default)]
pub struct StreamSet(Arc<RwLock<Arc<Vec<TypeStream>>>>);

impl StreamSet {
    /// The current set.
    pub fn snapshot(&self) -> Arc<Vec<TypeStream>> {
        self.0.read().map(|s| s.clone()).unwrap_or_default()
    }

    /// Replaces the set.
    pub fn replace(&self, next: Vec<TypeStream>) {
        if let Ok(mut w) = self.0.write() {
            *w = Arc::new(next);
        }
    }

    /// The `type` metric label of `event_type` (see [`label_among`]).
    pub fn type_label<'a>(&self, event_type: &'a str) -> &'a str {
        label_among(&self.snapshot(), event_type)
    }
}

/// Everything the consume path (reader, batch, decide, settle) shares. The background roles
/// and the HTTP view get narrow handles instead (see `worker::run`).
pub struct Shared {
    /// Validated configuration.
    pub cfg: Config,
    /// Key names of the env.
    pub keys: Keys,
    /// Redis.
    pub store: Store,
    /// Metric handles.
    pub metrics: Metrics,
    /// Routes in configuration order (code routes first).
    pub routes: Vec<Route>,
    /// Retry delays.
    pub retry: RetryPolicy,
    /// `concurrency` permits; one is held per event from read until it is handled and its
    /// outcome settled (or handed over to `unacked`).
    pub permits: Arc<Semaphore>,
    /// `concurrency` more permits for successes whose XACK is in flight (see `batch`).
    pub unacked: Arc<Semaphore>,
    /// Entries this consumer is handling now, with their start time (for idle refresh).
    pub in_flight: Arc<InFlight>,
    /// Per-type label, route and metric handles.
    pub type_facts: TypeFactsCache,
    /// Type streams being consumed (discovery replaces the set; everyone else reads it).
    pub streams: StreamSet,
    /// `events:<env>:redeliver:<group>`.
    pub redeliver: String,
    /// Health facts.
    pub health: Arc<Health>,
    /// Lifecycle records for `events:<env>:history`.
    pub history: HistorySink,
    /// Coordination notices.
    pub notices: Notices,
    /// Batched acknowledgements.
    pub acker: Acker,
}

impl Shared {
    /// Index of the first route serving `event_type`.
    pub fn route_for(&self, event_type: &str) -> Option<usize> {
        self.routes.iter().position(|r| r.serves(event_type))
    }

    /// Snapshot of the consumed type streams.
    pub fn streams(&self) -> Arc<Vec<TypeStream>> {
        self.streams.snapshot()
    }

    /// Every stream key this worker reads: type streams, then the redeliver stream.
    pub fn all_stream_keys(&self) -> Vec<String> {
        let mut keys: Vec<String> = self.streams().iter().map(|s| s.key.clone()).collect();
        keys.push(self.redeliver.clone());
        keys
    }

    /// The `type` metric label for `event_type`: itself when it is one of the first
    /// [`MAX_TYPE_LABELS`] consumed types (exact route types come first), else `other`. This
    /// keeps every metric's series count bounded whatever producers write, even under a `*`
    /// route.
    pub fn type_label<'a>(&self, event_type: &'a str) -> &'a str {
        label_among(&self.streams(), event_type)
    }

    /// Facts about `event_type` (label, route, metric handles), cached.
    pub fn type_facts(&self, event_type: &str) -> Arc<TypeFacts> {
        self.type_facts.get(self, event_type)
    }

    /// The env label.
    pub fn env(&self) -> &str {
        &self.cfg.env
    }

    /// The group.
    pub fn group(&self) -> &str {
        &self.cfg.group
    }

    /// This consumer's name.
    pub fn consumer(&self) -> &str {
        &self.cfg.consumer
    }
}
