//! The configuration file as serde reads it: every key optional, unknown keys refused.
//! [`super::validate`] turns a [`RawConfig`] into a [`super::Config`].
//!
//! In tests these structs also serialize, so the `EVENTS_*` table can be checked against
//! every key they hold (see `env::tests`).

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

/// The whole file.
#[derive(Debug, Deserialize, Default)]
#[cfg_attr(test, derive(serde::Serialize))]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    pub env: Option<String>,
    pub redis_url: Option<String>,
    pub tls_ca_file: Option<PathBuf>,
    pub tls_cert_file: Option<PathBuf>,
    pub tls_key_file: Option<PathBuf>,
    pub redis_password_file: Option<PathBuf>,
    pub group: Option<String>,
    pub consumer: Option<String>,
    pub concurrency: Option<i64>,
    pub prefetch: Option<i64>,
    pub worker_threads: Option<i64>,
    pub visibility_timeout: Option<String>,
    pub max_deliveries: Option<i64>,
    pub shutdown_timeout: Option<String>,
    pub heartbeat_ttl: Option<String>,
    pub reclaim_interval: Option<String>,
    pub read_block: Option<String>,
    pub discovery_interval: Option<String>,
    pub scheduler_interval: Option<String>,
    pub no_route_grace: Option<String>,
    pub dlq_max_len: Option<i64>,
    pub dlq_max_age: Option<String>,
    pub stream_retention: Option<String>,
    pub retention_interval: Option<String>,
    #[serde(default)]
    pub retry: RawRetry,
    #[serde(default)]
    pub breaker: RawBreaker,
    #[serde(default)]
    pub history: RawHistory,
    #[serde(default)]
    pub api: RawApi,
    #[serde(default)]
    pub health: super::health::RawHealth,
    #[serde(default)]
    pub push: super::push::RawPush,
    #[serde(default)]
    pub publish: super::publish::RawPublish,
    #[serde(default)]
    pub redis: super::replication::RawRedis,
    #[serde(default)]
    pub outbox: super::outbox::RawOutbox,
    #[serde(default)]
    pub apps: super::apps::RawApps,
    #[serde(default)]
    pub routes: Vec<RawRoute>,
}

/// `[retry]`.
#[derive(Debug, Deserialize, Default)]
#[cfg_attr(test, derive(serde::Serialize))]
#[serde(deny_unknown_fields)]
pub(super) struct RawRetry {
    pub max_attempts: Option<i64>,
    pub initial_backoff: Option<String>,
    pub multiplier: Option<f64>,
    pub max_backoff: Option<String>,
    pub jitter: Option<f64>,
}

/// `[breaker]`.
#[derive(Debug, Deserialize, Default)]
#[cfg_attr(test, derive(serde::Serialize))]
#[serde(deny_unknown_fields)]
pub(super) struct RawBreaker {
    pub failure_threshold: Option<i64>,
    pub open_for: Option<String>,
    pub failure_rate: Option<f64>,
    pub window: Option<String>,
    pub min_calls: Option<i64>,
}

/// `[history]`.
#[derive(Debug, Deserialize, Default)]
#[cfg_attr(test, derive(serde::Serialize))]
#[serde(deny_unknown_fields)]
pub(super) struct RawHistory {
    pub max_len: Option<i64>,
    pub max_age: Option<String>,
    pub processed: Option<String>,
}

/// `[api]` (the token comes from `EVENTS_API_TOKEN` only, never from the file).
#[derive(Debug, Deserialize, Default)]
#[cfg_attr(test, derive(serde::Serialize))]
#[serde(deny_unknown_fields)]
pub(super) struct RawApi {
    pub listen: Option<String>,
    pub rate_limit: Option<i64>,
    pub header_timeout: Option<String>,
    pub body_timeout: Option<String>,
}

/// One `[[routes]]` entry (routes come from the file only; no `EVENTS_*` variable).
#[derive(Debug, Deserialize)]
#[cfg_attr(test, derive(serde::Serialize))]
#[serde(deny_unknown_fields)]
pub(super) struct RawRoute {
    pub name: Option<String>,
    pub types: Vec<String>,
    pub handler: String,
    pub url: Option<String>,
    pub timeout: Option<String>,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    pub signing_secret_env: Option<String>,
    pub batch: Option<RawBatch>,
}

/// A route's `batch = { max_events, max_wait }` (batched delivery of an `http` route).
#[derive(Debug, Deserialize)]
#[cfg_attr(test, derive(serde::Serialize))]
#[serde(deny_unknown_fields)]
pub(super) struct RawBatch {
    pub max_events: Option<i64>,
    pub max_wait: Option<String>,
}

/// A key serde refused: where (as `retry.max_attempts`, `routes[0].url`; empty at the top)
/// and serde's own text, which [`super::diagnose`] puts in plain words.
#[derive(Debug)]
pub(super) struct KeyError {
    /// The key's path.
    pub path: String,
    /// Serde's message (`unknown field ..., expected one of ...`, `invalid type: ...`).
    pub message: String,
}

impl std::fmt::Display for KeyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

impl RawConfig {
    /// Reads the file's table (environment overrides already applied).
    ///
    /// # Errors
    /// [`KeyError`] naming the unknown or mistyped key (`retry.max_attempts`).
    pub fn from_table(table: toml::Table) -> Result<RawConfig, KeyError> {
        serde_path_to_error::deserialize(toml::Value::Table(table)).map_err(|e| {
            let path = e.path().to_string();
            let path = if path == "." { String::new() } else { path };
            KeyError {
                path,
                message: e.into_inner().message().trim().to_string(),
            }
        })
    }
}
