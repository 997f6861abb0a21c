//! The validated configuration: [`Config`] and its sections, as the rest of the crate
//! reads them (defaults applied, every value checked).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::model::secret::{RedisUrl, Secret};

/// The validated configuration of one worker instance.
#[derive(Debug, Clone)]
pub struct Config {
    /// Environment name; every key starts with `events:<env>:`.
    pub env: String,
    /// Redis to connect to (password hidden when printed).
    pub redis_url: RedisUrl,
    /// Extra CA (PEM) trusted for `rediss://`, on top of the system roots.
    pub tls_ca_file: Option<PathBuf>,
    /// Client certificate (PEM) for servers with `tls-auth-clients yes`.
    pub tls_cert_file: Option<PathBuf>,
    /// Private key (PEM) of `tls_cert_file`.
    pub tls_key_file: Option<PathBuf>,
    /// Things worth a warning at start (e.g. a world-readable password file).
    pub warnings: Vec<String>,
    /// Consumer group, i.e. the subscribing service.
    pub group: String,
    /// This instance's consumer name (default `hostname-pid`).
    pub consumer: String,
    /// Events in flight per instance (default 64).
    pub concurrency: usize,
    /// Entries held per instance, in flight plus read and waiting for a handler slot
    /// (default 4 x `concurrency`, at least `concurrency`).
    pub prefetch: usize,
    /// Threads of the daemon's async runtime (`event-worker run` and the other commands);
    /// 0 is one per CPU core the process may use. When the file does not set it: 1, or 0 when
    /// push serves apps (`[[push.channels]]` or `push.listen`). Not used by an embedding
    /// application, whose runtime runs the worker.
    pub worker_threads: usize,
    /// Entries pending this long are reclaimed by another consumer (default 60 s).
    pub visibility_timeout: Duration,
    /// Deliveries after which an entry goes to the DLQ without running the handler (default 10).
    pub max_deliveries: u64,
    /// Time in-flight work gets to finish after SIGTERM (default 30 s).
    pub shutdown_timeout: Duration,
    /// Lifetime of the heartbeat key; refreshed every third of it (default 10 s).
    pub heartbeat_ttl: Duration,
    /// How often pending lists are checked for dead consumers' entries (default 1 s).
    pub reclaim_interval: Duration,
    /// How long one XREADGROUP blocks (default 1 s).
    pub read_block: Duration,
    /// How often route globs are matched against existing streams (default 5 s).
    pub discovery_interval: Duration,
    /// How often due retries are moved to the redeliver stream (default 100 ms).
    pub scheduler_interval: Duration,
    /// How long an event whose type no route of the consumer reading it serves is handed on
    /// (back to the retry set, no attempt used) before it is dead-lettered as `no_route`
    /// (default 10 min; covers a rolling deploy that adds a route).
    pub no_route_grace: Duration,
    /// `[retry]`.
    pub retry: RetryConfig,
    /// `[breaker]`.
    pub breaker: BreakerConfig,
    /// `[history]`.
    pub history: HistoryConfig,
    /// DLQ retention by count: trim to this many entries, counting every trimmed one
    /// (default: none; the DLQ is never trimmed silently).
    pub dlq_max_len: Option<u64>,
    /// DLQ retention by age (default: none).
    pub dlq_max_age: Option<Duration>,
    /// Type streams keep acknowledged entries at least this long, then trim them; entries
    /// some group has not acknowledged (or not received) are never trimmed. `off` disables
    /// trimming (default 7 days).
    pub stream_retention: Option<Duration>,
    /// How often `stream_retention`, `dlq_max_len` and `dlq_max_age` are applied (default
    /// 30 s, at least 1 s).
    pub retention_interval: Duration,
    /// `[api]`.
    pub api: ApiConfig,
    /// `[health]`: the thresholds of a `degraded` health status.
    pub health: super::HealthConfig,
    /// `[outbox]`: the durable local outbox publishes fall back to.
    pub outbox: super::OutboxConfig,
    /// `[push]`: real-time push to apps (channels, history, listener).
    pub push: super::PushConfig,
    /// `[publish]`: the idempotent publish's id guard and the batch bounds.
    pub publish: super::PublishConfig,
    /// `[redis]`: the opt-in WAIT for replicas after publishes and moves across slots.
    pub redis: super::RedisConfig,
    /// `[apps]`: app tokens (JWT grants) and allowed browser origins.
    pub apps: super::AppsConfig,
    /// `[[routes]]`, in file order; the first route whose pattern matches a type serves it.
    pub routes: Vec<RouteConfig>,
}

/// `[retry]`: exponential backoff between handler runs.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryConfig {
    /// Total handler runs, the first included (default 5).
    pub max_attempts: u32,
    /// Delay before the first retry (default 200 ms).
    pub initial_backoff: Duration,
    /// Growth factor per retry (default 2.0).
    pub multiplier: f64,
    /// Largest delay (default 5 min).
    pub max_backoff: Duration,
    /// Random +/- fraction applied to each delay (default 0.2).
    pub jitter: f64,
}

/// `[breaker]`: one circuit breaker per handler.
#[derive(Debug, Clone, PartialEq)]
pub struct BreakerConfig {
    /// Consecutive retryable failures of events' first handler runs that open it (default 5).
    pub failure_threshold: u32,
    /// How long it stays open before a half-open probe (default 30 s).
    pub open_for: Duration,
    /// Share of retryable failures over `window` that opens it (default 0.5).
    pub failure_rate: f64,
    /// The time window of `failure_rate` (default 30 s).
    pub window: Duration,
    /// Calls within `window` before `failure_rate` can open it (default 20).
    pub min_calls: u32,
}

/// `[history]`: caps of the audit trail.
#[derive(Debug, Clone, PartialEq)]
pub struct HistoryConfig {
    /// Most records kept (default 100000).
    pub max_len: u64,
    /// Oldest record kept (default 7 days).
    pub max_age: Duration,
    /// How successes are recorded (default [`ProcessedRecords::Aggregate`]).
    pub processed: ProcessedRecords,
}

/// `history.processed`: how handler successes are recorded in the history. Failures,
/// retries, dead letters and operator actions are always one record per event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProcessedRecords {
    /// One `processed` record per event (one `XADD` each).
    PerEvent,
    /// One record per append batch listing every success in it (id, type, handler runs,
    /// time, correlation id); the history queries expand it into per-event records.
    Aggregate,
}

/// `[api]`: the HTTP listener.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// Address for /metrics, /livez, /readyz, /api/events/* (default 127.0.0.1:9464).
    pub listen: SocketAddr,
    /// Bearer token from `EVENTS_API_TOKEN`; token endpoints are off without it.
    pub token: Option<Secret>,
    /// Most mutating requests (publish, replay, purge) per second, over all clients; more get
    /// 429 with `Retry-After` (default 500; 0 turns the limit off).
    pub rate_limit: u32,
    /// How long a client may take to send a request's header (default 10 s, at least
    /// 100 ms); slower connections, idle keep-alive ones included, are closed (slowloris).
    pub header_timeout: Duration,
    /// How long a client may take to send a request's body once its header is in (default
    /// 30 s, at least 100 ms); slower requests get 408 and the connection is closed.
    pub body_timeout: Duration,
}

/// Which handler a route uses; `deliver::factory` builds each kind with a `match` that has
/// no catch-all arm, so a kind added here without its handler does not compile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandlerKind {
    /// POST the event as CloudEvents JSON.
    Http,
    /// Succeed at once.
    Blackhole,
}

impl HandlerKind {
    /// Every kind, in the order the "unknown handler" message lists them.
    pub const ALL: &'static [HandlerKind] = &[HandlerKind::Http, HandlerKind::Blackhole];

    /// The name a route's `handler` key uses for this kind.
    pub fn as_str(self) -> &'static str {
        match self {
            HandlerKind::Http => "http",
            HandlerKind::Blackhole => "blackhole",
        }
    }

    /// The kind named `name` in a route's `handler` key, if any.
    pub fn from_name(name: &str) -> Option<HandlerKind> {
        Self::ALL.iter().copied().find(|k| k.as_str() == name)
    }
}

/// One `[[routes]]` entry.
#[derive(Debug, Clone)]
pub struct RouteConfig {
    /// Name used in metrics, health and logs (default `route<index>-<handler>`).
    pub name: Option<String>,
    /// Exact types or globs (`booking.*`).
    pub types: Vec<String>,
    /// The handler.
    pub handler: HandlerKind,
    /// Target of an `http` handler.
    pub url: Option<url::Url>,
    /// Longest a handler run may take (default 10 s); past it the run counts as retryable.
    pub timeout: Duration,
    /// Extra request headers of an `http` handler.
    pub headers: Vec<(String, String)>,
    /// HMAC-SHA256 key for the `X-Event-Signature` header, when given in code. From the
    /// file it stays `None` until a handler is built: see [`RouteConfig::signing_secret_env`].
    pub signing_secret: Option<Secret>,
    /// Environment variable holding the signing secret (the file's `signing_secret_env`;
    /// secrets stay out of the file). Read only where the route's handler is built (`run`),
    /// so commands that deliver nothing do not need it.
    pub signing_secret_env: Option<String>,
    /// Batched delivery of an `http` route (`batch = { ... }`); `None` posts each event alone.
    pub batch: Option<BatchConfig>,
}

/// Batched delivery of an `http` route: one POST of `application/cloudevents-batch+json`
/// carries up to `max_events` events, and the answer gives a result per event (README,
/// "Batched delivery").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchConfig {
    /// Most events in one request (1..=1000, default 100).
    pub max_events: usize,
    /// How long the first event of a batch may wait for more (default 0: a batch is what is
    /// ready together, e.g. one read's events).
    pub max_wait: Duration,
}

impl RouteConfig {
    /// A stable, bounded name for this route's handler (metrics label, breaker name).
    ///
    /// It is the route's `name`, else `route<index>-<handler>`; never the URL (a path or
    /// query may carry a token, and labels must not).
    pub fn handler_name(&self, index: usize) -> String {
        if let Some(n) = &self.name {
            return n.clone();
        }
        format!("route{index}-{}", self.handler.as_str())
    }
}
