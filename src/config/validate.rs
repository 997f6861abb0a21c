//! Validation: turns a [`RawConfig`] into a [`Config`], applying defaults and checking
//! every key, one function per section; errors are collected, not returned at the first.

use std::net::SocketAddr;
use std::time::Duration;

use super::connection;
use super::defaults as d;
use super::error::ConfigError;
use super::parse::Checker;
use super::raw::{RawApi, RawBreaker, RawConfig, RawHistory, RawRetry};
use super::route::validate_route;
use super::types::{
    ApiConfig, BreakerConfig, Config, HistoryConfig, ProcessedRecords, RetryConfig,
};
use crate::model::secret::Secret;

/// Validates `raw`; `lookup` reads the environment (fallbacks, secrets).
///
/// # Errors
/// [`ConfigError`] with one message per bad key.
pub(super) fn validate(
    raw: RawConfig,
    lookup: &impl Fn(&str) -> Option<String>,
) -> Result<Config, ConfigError> {
    let mut c = Checker::default();
    let env = connection::env_name(&mut c, &raw, lookup);
    let mut warnings = Vec::new();
    let redis_url = connection::redis_url(&mut c, &raw, lookup, &mut warnings);
    connection::check_tls_files(&mut c, &raw);
    let (group, consumer) = connection::identity(&mut c, &raw);
    let t = timings(&mut c, &raw);
    let retry = retry(&mut c, &raw.retry);
    let breaker = breaker(&mut c, &raw.breaker);
    let no_route_grace = c.duration(
        "no_route_grace",
        raw.no_route_grace.as_deref(),
        d::NO_ROUTE_GRACE,
    );
    let history = history(&mut c, &raw.history);
    let retention = retention(&mut c, &raw);
    let api = api(&mut c, &raw.api, lookup);
    let health = super::health::health(&mut c, &raw.health);
    let push = super::push::push(&mut c, &raw.push);
    let publish = super::publish::publish(&mut c, &raw.publish);
    let redis = super::replication::redis(&mut c, &raw.redis);
    if push.projects() && push.group == group {
        c.push(format!(
            "push.group: `{group}` is the worker's own group; name another"
        ));
    }
    let outbox = super::outbox::outbox(&mut c, &raw.outbox, &env, lookup);
    let apps = super::apps::apps(&mut c, &raw.apps, lookup);
    let routes = raw
        .routes
        .into_iter()
        .enumerate()
        .map(|(i, r)| validate_route(&mut c, i, r))
        .collect();
    // A missing URL always comes with its error, so this returns every error or none.
    let Some(redis_url) = redis_url.filter(|_| c.errors.is_empty()) else {
        return Err(ConfigError(c.errors));
    };
    Ok(Config {
        env,
        redis_url,
        tls_ca_file: raw.tls_ca_file,
        tls_cert_file: raw.tls_cert_file,
        tls_key_file: raw.tls_key_file,
        warnings,
        group,
        consumer,
        concurrency: t.concurrency,
        prefetch: t.prefetch,
        worker_threads: t.worker_threads.unwrap_or(runtime_threads(&push)),
        visibility_timeout: t.visibility_timeout,
        max_deliveries: t.max_deliveries,
        shutdown_timeout: t.shutdown_timeout,
        heartbeat_ttl: t.heartbeat_ttl,
        reclaim_interval: t.reclaim_interval,
        read_block: t.read_block,
        discovery_interval: t.discovery_interval,
        scheduler_interval: t.scheduler_interval,
        no_route_grace,
        retry,
        breaker,
        history,
        dlq_max_len: retention.dlq_max_len,
        dlq_max_age: retention.dlq_max_age,
        stream_retention: retention.stream_retention,
        retention_interval: retention.interval,
        api,
        health,
        push,
        publish,
        redis,
        outbox,
        apps,
        routes,
    })
}

/// `worker_threads` when the file does not set it: one runtime thread for a daemon that
/// consumes and serves the API (its pipeline is one chain of tasks; a second thread only adds
/// wake-ups between threads: BENCHMARKS.md measured 30% less worker CPU per event on the http
/// route), one per core (0) when push serves app connections (`[[push.channels]]` or
/// `push.listen`), whose fan-out to many connections uses every core.
fn runtime_threads(push: &super::PushConfig) -> usize {
    if push.projects() || push.listen.is_some() {
        0
    } else {
        1
    }
}

/// The top-level sizing and timing keys.
struct Timings {
    concurrency: usize,
    prefetch: usize,
    worker_threads: Option<usize>,
    visibility_timeout: Duration,
    max_deliveries: u64,
    shutdown_timeout: Duration,
    heartbeat_ttl: Duration,
    reclaim_interval: Duration,
    read_block: Duration,
    discovery_interval: Duration,
    scheduler_interval: Duration,
}

/// `concurrency`, `max_deliveries` and the top-level timeouts and intervals.
fn timings(c: &mut Checker, raw: &RawConfig) -> Timings {
    let concurrency = c.int("concurrency", raw.concurrency, d::CONCURRENCY) as usize;
    let prefetch = prefetch(c, raw.prefetch, concurrency);
    // Absent: decided once `[push]` is known (see `runtime_threads`).
    let worker_threads = raw
        .worker_threads
        .map(|n| c.int("worker_threads", Some(n), d::WORKER_THREADS) as usize);
    let visibility_timeout = c.duration(
        "visibility_timeout",
        raw.visibility_timeout.as_deref(),
        d::VISIBILITY_TIMEOUT,
    );
    let max_deliveries = c.int("max_deliveries", raw.max_deliveries, d::MAX_DELIVERIES) as u64;
    let shutdown_timeout = c.duration(
        "shutdown_timeout",
        raw.shutdown_timeout.as_deref(),
        d::SHUTDOWN_TIMEOUT,
    );
    let heartbeat_ttl = c.duration(
        "heartbeat_ttl",
        raw.heartbeat_ttl.as_deref(),
        d::HEARTBEAT_TTL,
    );
    let reclaim_interval = c.duration(
        "reclaim_interval",
        raw.reclaim_interval.as_deref(),
        d::RECLAIM_INTERVAL,
    );
    let read_block = c.duration("read_block", raw.read_block.as_deref(), d::READ_BLOCK);
    let discovery_interval = c.duration(
        "discovery_interval",
        raw.discovery_interval.as_deref(),
        d::DISCOVERY_INTERVAL,
    );
    let scheduler_interval = c.duration(
        "scheduler_interval",
        raw.scheduler_interval.as_deref(),
        d::SCHEDULER_INTERVAL,
    );
    check_visibility(c, raw, visibility_timeout);
    Timings {
        concurrency,
        prefetch,
        worker_threads,
        visibility_timeout,
        max_deliveries,
        shutdown_timeout,
        heartbeat_ttl,
        reclaim_interval,
        read_block,
        discovery_interval,
        scheduler_interval,
    }
}

/// Refuses a `visibility_timeout` too short for live consumers to keep their slow entries:
/// they refresh them every third of it (or of `heartbeat_ttl`, if shorter), and another
/// consumer may claim any entry idle for `visibility_timeout`.
fn check_visibility(c: &mut Checker, raw: &RawConfig, visibility_timeout: Duration) {
    if raw.visibility_timeout.is_none() || visibility_timeout >= d::MIN_VISIBILITY_TIMEOUT {
        return;
    }
    let text = raw.visibility_timeout.as_deref().unwrap_or_default();
    c.push(format!(
        "visibility_timeout: \"{text}\" is too short: a live consumer refreshes the entries it \
         is handling every third of visibility_timeout or heartbeat_ttl (the shorter), and \
         another consumer claims any entry idle that long, so slow handlers would run twice; \
         set visibility_timeout = \"1s\" or more (crashed consumers are still taken over \
         after heartbeat_ttl)"
    ));
}

/// `[retry]`, with the multiplier and jitter ranges and `initial <= max`.
fn retry(c: &mut Checker, raw: &RawRetry) -> RetryConfig {
    let retry = RetryConfig {
        max_attempts: c.int(
            "retry.max_attempts",
            raw.max_attempts,
            d::RETRY_MAX_ATTEMPTS,
        ) as u32,
        initial_backoff: c.duration(
            "retry.initial_backoff",
            raw.initial_backoff.as_deref(),
            d::RETRY_INITIAL_BACKOFF,
        ),
        multiplier: raw.multiplier.unwrap_or(d::RETRY_MULTIPLIER),
        max_backoff: c.duration(
            "retry.max_backoff",
            raw.max_backoff.as_deref(),
            d::RETRY_MAX_BACKOFF,
        ),
        jitter: raw.jitter.unwrap_or(d::RETRY_JITTER),
    };
    if !(1.0..=100.0).contains(&retry.multiplier) {
        c.push(format!(
            "retry.multiplier: {} must be between 1 and 100",
            retry.multiplier
        ));
    }
    if !(0.0..1.0).contains(&retry.jitter) {
        c.push(format!("retry.jitter: {} must be in [0, 1)", retry.jitter));
    }
    if retry.initial_backoff > retry.max_backoff {
        c.push("retry.initial_backoff: must not exceed retry.max_backoff".to_string());
    }
    retry
}

/// `[breaker]`, with the failure rate in (0, 1].
fn breaker(c: &mut Checker, raw: &RawBreaker) -> BreakerConfig {
    let failure_rate = raw.failure_rate.unwrap_or(d::BREAKER_FAILURE_RATE);
    if !(failure_rate > 0.0 && failure_rate <= 1.0) {
        c.push(format!(
            "breaker.failure_rate: {failure_rate} must be above 0 and at most 1 (a share of calls, e.g. 0.5 for half)"
        ));
    }
    BreakerConfig {
        failure_threshold: c.int(
            "breaker.failure_threshold",
            raw.failure_threshold,
            d::BREAKER_FAILURE_THRESHOLD,
        ) as u32,
        open_for: c.duration(
            "breaker.open_for",
            raw.open_for.as_deref(),
            d::BREAKER_OPEN_FOR,
        ),
        failure_rate: if failure_rate > 0.0 && failure_rate <= 1.0 {
            failure_rate
        } else {
            d::BREAKER_FAILURE_RATE
        },
        window: c.duration("breaker.window", raw.window.as_deref(), d::BREAKER_WINDOW),
        min_calls: c.int("breaker.min_calls", raw.min_calls, d::BREAKER_MIN_CALLS) as u32,
    }
}

/// `prefetch`: entries held (in flight plus read and waiting), at least `concurrency`;
/// default [`d::PREFETCH_PER_SLOT`] x `concurrency`, except 1 with `concurrency = 1`, which
/// keeps entry order (entries of two read batches waiting for the one slot could interleave).
fn prefetch(c: &mut Checker, raw: Option<i64>, concurrency: usize) -> usize {
    let per_slot = if concurrency == 1 {
        1
    } else {
        d::PREFETCH_PER_SLOT
    };
    let default = concurrency.saturating_mul(per_slot) as i64;
    let Some(v) = raw else {
        return default.min(d::PREFETCH_MAX) as usize;
    };
    if !(1..=d::PREFETCH_MAX).contains(&v) {
        c.push(format!(
            "prefetch: {v} is out of range (1..={})",
            d::PREFETCH_MAX
        ));
    } else if (v as usize) < concurrency {
        c.push(format!(
            "prefetch: {v} is below concurrency ({concurrency}); it counts the events in \
             flight too, so set it to at least {concurrency} (or leave it out: {default})"
        ));
    }
    v.max(concurrency as i64) as usize
}

/// `[history]`.
fn history(c: &mut Checker, raw: &RawHistory) -> HistoryConfig {
    let processed = match raw.processed.as_deref() {
        None | Some("aggregate") => ProcessedRecords::Aggregate,
        Some("per_event") => ProcessedRecords::PerEvent,
        Some(other) => {
            c.push(format!(
                "history.processed: `{other}` is neither `aggregate` (one record per batch of \
                 successes) nor `per_event` (one record per success)"
            ));
            ProcessedRecords::Aggregate
        }
    };
    HistoryConfig {
        max_len: c.int("history.max_len", raw.max_len, d::HISTORY_MAX_LEN) as u64,
        max_age: c.duration(
            "history.max_age",
            raw.max_age.as_deref(),
            d::HISTORY_MAX_AGE,
        ),
        processed,
    }
}

/// The retention keys of the top level.
struct Retention {
    dlq_max_len: Option<u64>,
    dlq_max_age: Option<Duration>,
    stream_retention: Option<Duration>,
    interval: Duration,
}

/// `dlq_max_len`, `dlq_max_age` (both off when absent), `stream_retention` (`off`) and
/// `retention_interval`.
fn retention(c: &mut Checker, raw: &RawConfig) -> Retention {
    let dlq_max_len = raw
        .dlq_max_len
        .map(|v| c.int("dlq_max_len", Some(v), d::DLQ_MAX_LEN) as u64);
    let dlq_max_age = raw
        .dlq_max_age
        .as_deref()
        .map(|v| c.duration("dlq_max_age", Some(v), d::DLQ_MAX_AGE));
    let stream_retention = match raw.stream_retention.as_deref() {
        Some("off") => None,
        other => Some(c.duration("stream_retention", other, d::STREAM_RETENTION)),
    };
    let interval = c.duration(
        "retention_interval",
        raw.retention_interval.as_deref(),
        d::RETENTION_INTERVAL,
    );
    Retention {
        dlq_max_len,
        dlq_max_age,
        stream_retention,
        interval,
    }
}

/// `[api]`, plus the token from `EVENTS_API_TOKEN` (at least 16 characters).
fn api(c: &mut Checker, raw: &RawApi, lookup: &impl Fn(&str) -> Option<String>) -> ApiConfig {
    let listen_text = raw.listen.as_deref().unwrap_or(d::API_LISTEN);
    let listen = listen_text.parse().unwrap_or_else(|_| {
        c.push(format!(
            "api.listen: `{listen_text}` is not an address such as 127.0.0.1:9464"
        ));
        SocketAddr::from(([127, 0, 0, 1], 9464))
    });
    let rate_limit = c.int("api.rate_limit", raw.rate_limit, d::API_RATE_LIMIT) as u32;
    let header_timeout = c.duration(
        "api.header_timeout",
        raw.header_timeout.as_deref(),
        d::API_HEADER_TIMEOUT,
    );
    let body_timeout = c.duration(
        "api.body_timeout",
        raw.body_timeout.as_deref(),
        d::API_BODY_TIMEOUT,
    );
    let token = lookup("EVENTS_API_TOKEN")
        .filter(|t| !t.is_empty())
        .map(Secret::new);
    if token.as_ref().is_some_and(|t| t.expose().len() < 16) {
        c.push("EVENTS_API_TOKEN: must be at least 16 characters".to_string());
    }
    ApiConfig {
        listen,
        token,
        rate_limit,
        header_timeout,
        body_timeout,
    }
}
