//! Default and bounds of every integer and duration key, in one table (README "Configuration"'s
//! contract); validation checks each key against its rule here.

use std::time::Duration;

use super::parse::{DurationRule, IntRule};

const fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

const fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

const fn int(default: i64, min: i64, max: i64) -> IntRule {
    IntRule { default, min, max }
}

const fn duration(default: Duration, min: Duration) -> DurationRule {
    DurationRule { default, min }
}

/// Seven days, the default of `history.max_age` and `stream_retention`.
const WEEK: Duration = secs(7 * 86400);

/// `concurrency`.
pub(super) const CONCURRENCY: IntRule = int(64, 1, 100_000);
/// `worker_threads` when set: the daemon's runtime threads; 0 is one per CPU core the process
/// may use. When absent it is 1, or 0 when push serves apps (`config::validate`).
pub(super) const WORKER_THREADS: IntRule = int(0, 0, 256);
/// `prefetch` when absent: this many entries held per handler slot (256 at the default
/// `concurrency`).
pub(super) const PREFETCH_PER_SLOT: usize = 4;
/// Largest `prefetch`.
pub(super) const PREFETCH_MAX: i64 = 1_000_000;
/// `visibility_timeout` (its 1 s minimum is checked with `heartbeat_ttl`, for a better message).
pub(super) const VISIBILITY_TIMEOUT: DurationRule = duration(secs(60), ms(0));
/// Shortest `visibility_timeout`: live consumers refresh their entries in flight every
/// third of it (or of `heartbeat_ttl`, if shorter), and need a margin for slow Redis replies.
pub(super) const MIN_VISIBILITY_TIMEOUT: Duration = secs(1);
/// `max_deliveries`.
pub(super) const MAX_DELIVERIES: IntRule = int(10, 1, 1_000_000);
/// `shutdown_timeout`.
pub(super) const SHUTDOWN_TIMEOUT: DurationRule = duration(secs(30), ms(0));
/// `heartbeat_ttl`.
pub(super) const HEARTBEAT_TTL: DurationRule = duration(secs(10), ms(300));
/// `reclaim_interval`.
pub(super) const RECLAIM_INTERVAL: DurationRule = duration(secs(1), ms(10));
/// `read_block`.
pub(super) const READ_BLOCK: DurationRule = duration(secs(1), ms(10));
/// `discovery_interval`.
pub(super) const DISCOVERY_INTERVAL: DurationRule = duration(secs(5), ms(10));
/// `scheduler_interval`.
pub(super) const SCHEDULER_INTERVAL: DurationRule = duration(ms(100), ms(1));
/// `no_route_grace` (0: an unrouted event is dead-lettered at once).
pub(super) const NO_ROUTE_GRACE: DurationRule = duration(secs(600), ms(0));

/// `retry.max_attempts`.
pub(super) const RETRY_MAX_ATTEMPTS: IntRule = int(5, 1, 1000);
/// `retry.initial_backoff`.
pub(super) const RETRY_INITIAL_BACKOFF: DurationRule = duration(ms(200), ms(1));
/// `retry.max_backoff`.
pub(super) const RETRY_MAX_BACKOFF: DurationRule = duration(secs(300), ms(1));
/// `retry.multiplier` when absent.
pub(super) const RETRY_MULTIPLIER: f64 = 2.0;
/// `retry.jitter` when absent.
pub(super) const RETRY_JITTER: f64 = 0.2;

/// `breaker.failure_threshold`.
pub(super) const BREAKER_FAILURE_THRESHOLD: IntRule = int(5, 1, 1_000_000);
/// `breaker.open_for`.
pub(super) const BREAKER_OPEN_FOR: DurationRule = duration(secs(30), ms(1));
/// `breaker.failure_rate` when absent.
pub(super) const BREAKER_FAILURE_RATE: f64 = 0.5;
/// `breaker.window` (at least 1 s: the rate is kept per millisecond over whole seconds).
pub(super) const BREAKER_WINDOW: DurationRule = duration(secs(30), secs(1));
/// `breaker.min_calls`.
pub(super) const BREAKER_MIN_CALLS: IntRule = int(20, 1, 1_000_000);

/// `history.max_len`.
pub(super) const HISTORY_MAX_LEN: IntRule = int(100_000, 1, i64::MAX);
/// `history.max_age`.
pub(super) const HISTORY_MAX_AGE: DurationRule = duration(WEEK, ms(1000));

/// `dlq_max_len` (no default: absent means never trimmed).
pub(super) const DLQ_MAX_LEN: IntRule = int(0, 1, i64::MAX);
/// `dlq_max_age` (no default: absent means never trimmed).
pub(super) const DLQ_MAX_AGE: DurationRule = duration(Duration::ZERO, secs(60));
/// `stream_retention` (`off` turns it off).
pub(super) const STREAM_RETENTION: DurationRule = duration(WEEK, secs(60));
/// `retention_interval`: how often the retention policies are applied.
pub(super) const RETENTION_INTERVAL: DurationRule = duration(secs(30), secs(1));

/// `api.listen`.
pub(super) const API_LISTEN: &str = "127.0.0.1:9464";
/// `api.rate_limit`.
pub(super) const API_RATE_LIMIT: IntRule = int(500, 0, 1_000_000);
/// `api.header_timeout`.
pub(super) const API_HEADER_TIMEOUT: DurationRule = duration(secs(10), ms(100));
/// `api.body_timeout`.
pub(super) const API_BODY_TIMEOUT: DurationRule = duration(secs(30), ms(100));

/// `routes[].timeout`.
pub(super) const ROUTE_TIMEOUT: DurationRule = duration(secs(10), ms(1));
/// `routes[].batch.max_events`.
pub(super) const BATCH_MAX_EVENTS: IntRule = int(100, 1, 1000);
/// `routes[].batch.max_wait`.
pub(super) const BATCH_MAX_WAIT: DurationRule = duration(ms(0), ms(0));
