//! Configuration: the TOML file of DESIGN.md's contract, environment overrides, and
//! validation that reports every problem at once, each naming its key.
//!
//! Precedence, highest first: `EVENTS_<SECTION>_<KEY>` variables, the file, then the
//! fallbacks the design names (`APP_ENV`/`NODE_ENV` for `env`, `REDIS_URL`/`KV_URL` for
//! `redis_url`), then defaults. Routes can only come from the file.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::model::keys;
use crate::model::secret::{RedisUrl, Secret};

/// A configuration problem, or several; the message names each key.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {}", .0.join("; "))]
pub struct ConfigError(pub Vec<String>);

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
    /// `[api]`.
    pub api: ApiConfig,
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
    /// Consecutive retryable failures that open it (default 5).
    pub failure_threshold: u32,
    /// How long it stays open before a half-open probe (default 30 s).
    pub open_for: Duration,
}

/// `[history]`: caps of the audit trail.
#[derive(Debug, Clone, PartialEq)]
pub struct HistoryConfig {
    /// Most records kept (default 100000).
    pub max_len: u64,
    /// Oldest record kept (default 7 days).
    pub max_age: Duration,
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

/// Which handler a route uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HandlerKind {
    /// POST the event as CloudEvents JSON.
    Http,
    /// Succeed at once.
    Blackhole,
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
    /// HMAC-SHA256 key for the `X-Event-Signature` header, read from the environment
    /// variable named by `signing_secret_env` (secrets stay out of the file).
    pub signing_secret: Option<Secret>,
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
        match self.handler {
            HandlerKind::Http => format!("route{index}-http"),
            HandlerKind::Blackhole => format!("route{index}-blackhole"),
        }
    }
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    env: Option<String>,
    redis_url: Option<String>,
    tls_ca_file: Option<PathBuf>,
    tls_cert_file: Option<PathBuf>,
    tls_key_file: Option<PathBuf>,
    redis_password_file: Option<PathBuf>,
    group: Option<String>,
    consumer: Option<String>,
    concurrency: Option<i64>,
    visibility_timeout: Option<String>,
    max_deliveries: Option<i64>,
    shutdown_timeout: Option<String>,
    heartbeat_ttl: Option<String>,
    reclaim_interval: Option<String>,
    read_block: Option<String>,
    discovery_interval: Option<String>,
    scheduler_interval: Option<String>,
    dlq_max_len: Option<i64>,
    dlq_max_age: Option<String>,
    stream_retention: Option<String>,
    #[serde(default)]
    retry: RawRetry,
    #[serde(default)]
    breaker: RawBreaker,
    #[serde(default)]
    history: RawHistory,
    #[serde(default)]
    api: RawApi,
    #[serde(default)]
    routes: Vec<RawRoute>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawRetry {
    max_attempts: Option<i64>,
    initial_backoff: Option<String>,
    multiplier: Option<f64>,
    max_backoff: Option<String>,
    jitter: Option<f64>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawBreaker {
    failure_threshold: Option<i64>,
    open_for: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawHistory {
    max_len: Option<i64>,
    max_age: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawApi {
    listen: Option<String>,
    rate_limit: Option<i64>,
    header_timeout: Option<String>,
    body_timeout: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoute {
    name: Option<String>,
    types: Vec<String>,
    handler: String,
    url: Option<String>,
    timeout: Option<String>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    signing_secret_env: Option<String>,
}

/// How an environment variable's text becomes a TOML value.
#[derive(Clone, Copy)]
enum Kind {
    Str,
    Int,
    Float,
}

/// Every key an `EVENTS_<SECTION>_<KEY>` variable may set.
const ENV_KEYS: &[(Option<&str>, &str, Kind)] = &[
    (None, "env", Kind::Str),
    (None, "redis_url", Kind::Str),
    (None, "tls_ca_file", Kind::Str),
    (None, "tls_cert_file", Kind::Str),
    (None, "tls_key_file", Kind::Str),
    (None, "redis_password_file", Kind::Str),
    (None, "group", Kind::Str),
    (None, "consumer", Kind::Str),
    (None, "concurrency", Kind::Int),
    (None, "visibility_timeout", Kind::Str),
    (None, "max_deliveries", Kind::Int),
    (None, "shutdown_timeout", Kind::Str),
    (None, "heartbeat_ttl", Kind::Str),
    (None, "reclaim_interval", Kind::Str),
    (None, "read_block", Kind::Str),
    (None, "discovery_interval", Kind::Str),
    (None, "scheduler_interval", Kind::Str),
    (None, "dlq_max_len", Kind::Int),
    (None, "dlq_max_age", Kind::Str),
    (None, "stream_retention", Kind::Str),
    (Some("retry"), "max_attempts", Kind::Int),
    (Some("retry"), "initial_backoff", Kind::Str),
    (Some("retry"), "multiplier", Kind::Float),
    (Some("retry"), "max_backoff", Kind::Str),
    (Some("retry"), "jitter", Kind::Float),
    (Some("breaker"), "failure_threshold", Kind::Int),
    (Some("breaker"), "open_for", Kind::Str),
    (Some("history"), "max_len", Kind::Int),
    (Some("history"), "max_age", Kind::Str),
    (Some("api"), "listen", Kind::Str),
    (Some("api"), "rate_limit", Kind::Int),
    (Some("api"), "header_timeout", Kind::Str),
    (Some("api"), "body_timeout", Kind::Str),
];

/// Name of the variable that overrides `section.key`.
pub fn env_var_name(section: Option<&str>, key: &str) -> String {
    match section {
        Some(s) => format!("EVENTS_{}_{}", s.to_uppercase(), key.to_uppercase()),
        None => format!("EVENTS_{}", key.to_uppercase()),
    }
}

impl Config {
    /// Checks that at least one route exists (the daemon needs one; a library user may add
    /// routes in code instead).
    ///
    /// # Errors
    /// [`ConfigError`] naming `routes`.
    pub fn require_routes(&self) -> Result<(), ConfigError> {
        if self.routes.is_empty() {
            return Err(ConfigError(vec![
                "routes: at least one [[routes]] entry is needed".to_string(),
            ]));
        }
        Ok(())
    }

    /// Loads the file (if any), applies the process environment and validates.
    ///
    /// # Errors
    /// [`ConfigError`] naming every bad key.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        let text = match path {
            Some(p) => std::fs::read_to_string(p)
                .map_err(|e| ConfigError(vec![format!("config file {}: {e}", p.display())]))?,
            None => String::new(),
        };
        Self::from_toml_and_env(&text, |name| std::env::var(name).ok())
    }

    /// Parses `text` and applies variables from `lookup` (injectable for tests).
    ///
    /// # Errors
    /// [`ConfigError`] naming every bad key.
    pub fn from_toml_and_env(
        text: &str,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let mut table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
            ConfigError(vec![format!("config file: {}", e.message())])
        })?;
        let mut errors = Vec::new();
        for (section, key, kind) in ENV_KEYS {
            let var = env_var_name(*section, key);
            let Some(raw) = lookup(&var) else { continue };
            let value = match kind {
                Kind::Str => Ok(toml::Value::String(raw)),
                Kind::Int => raw
                    .trim()
                    .parse()
                    .map(toml::Value::Integer)
                    .map_err(|_| "an integer"),
                Kind::Float => raw
                    .trim()
                    .parse()
                    .map(toml::Value::Float)
                    .map_err(|_| "a number"),
            };
            match value {
                Ok(v) => {
                    let target = match section {
                        Some(s) => table
                            .entry(s.to_string())
                            .or_insert_with(|| toml::Value::Table(Default::default()))
                            .as_table_mut(),
                        None => Some(&mut table),
                    };
                    match target {
                        Some(t) => {
                            t.insert(key.to_string(), v);
                        }
                        None => errors.push(format!("{}: is not a table", section.unwrap_or(""))),
                    }
                }
                Err(what) => errors.push(format!("{var}: expected {what}")),
            }
        }
        if !errors.is_empty() {
            return Err(ConfigError(errors));
        }
        let raw: RawConfig =
            serde_path_to_error::deserialize(toml::Value::Table(table)).map_err(|e| {
                let path = e.path().to_string();
                let inner = e.into_inner().to_string();
                let inner = inner.lines().last().unwrap_or_default().to_string();
                if path == "." || path.is_empty() {
                    ConfigError(vec![format!("config file: {inner}")])
                } else {
                    ConfigError(vec![format!("{path}: {inner}")])
                }
            })?;
        validate(raw, &lookup)
    }
}

/// Parses a duration such as `250ms`, `30s`, `5m`, `2h`, `7d`.
///
/// # Errors
/// A message saying what was expected.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let n: f64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a duration (use e.g. 250ms, 30s, 5m, 2h, 7d)"))?;
    let secs = match unit.trim() {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        "d" => n * 86400.0,
        _ => return Err(format!("`{text}` has no unit (use ms, s, m, h or d)")),
    };
    if !secs.is_finite() || secs > 10.0 * 365.0 * 86400.0 {
        return Err(format!("`{text}` is too large"));
    }
    Ok(Duration::from_secs_f64(secs))
}

struct Checker {
    errors: Vec<String>,
}

impl Checker {
    fn duration(
        &mut self,
        key: &str,
        raw: Option<String>,
        default: Duration,
        min: Duration,
    ) -> Duration {
        match raw.map(|r| parse_duration(&r)) {
            None => default,
            Some(Ok(d)) if d >= min => d,
            Some(Ok(_)) => {
                self.errors.push(format!("{key}: must be at least {min:?}"));
                default
            }
            Some(Err(e)) => {
                self.errors.push(format!("{key}: {e}"));
                default
            }
        }
    }

    fn int(&mut self, key: &str, raw: Option<i64>, default: i64, min: i64, max: i64) -> i64 {
        match raw {
            None => default,
            Some(v) if (min..=max).contains(&v) => v,
            Some(v) => {
                self.errors
                    .push(format!("{key}: {v} is out of range ({min}..={max})"));
                default
            }
        }
    }
}

fn validate(
    raw: RawConfig,
    lookup: &impl Fn(&str) -> Option<String>,
) -> Result<Config, ConfigError> {
    let mut c = Checker { errors: Vec::new() };
    let env = raw
        .env
        .or_else(|| lookup("APP_ENV"))
        .or_else(|| lookup("NODE_ENV"))
        .unwrap_or_else(|| "development".to_string());
    if !keys::is_valid_env(&env) {
        c.errors
            .push(format!("env: `{env}` must match [a-z0-9][a-z0-9-]*"));
    }
    let url_text = raw
        .redis_url
        .or_else(|| lookup("REDIS_URL"))
        .or_else(|| lookup("KV_URL"))
        .unwrap_or_else(|| "redis://127.0.0.1:6379".to_string());
    let mut redis_url = match RedisUrl::parse(&url_text) {
        Ok(u) => Some(u),
        Err(e) => {
            c.errors.push(format!("redis_url: {e}"));
            None
        }
    };
    let mut warnings = Vec::new();
    let password_file = raw
        .redis_password_file
        .or_else(|| lookup("REDIS_PASSWORD_FILE").map(PathBuf::from));
    if let (Some(path), Some(url)) = (&password_file, &redis_url) {
        match read_password_file(path, &mut warnings) {
            Ok(pw) => match url.with_password(&pw) {
                Ok(u) => redis_url = Some(u),
                Err(e) => c.errors.push(format!("redis_password_file: {e}")),
            },
            Err(e) => c.errors.push(format!("redis_password_file: {e}")),
        }
    }
    for (key, file) in [
        ("tls_cert_file", &raw.tls_cert_file),
        ("tls_key_file", &raw.tls_key_file),
    ] {
        if file.as_ref().is_some_and(|f| !f.is_file()) {
            c.errors.push(format!(
                "{key}: {} is not a readable file",
                file.as_ref()
                    .map(|f| f.display().to_string())
                    .unwrap_or_default()
            ));
        }
    }
    if raw.tls_cert_file.is_some() != raw.tls_key_file.is_some() {
        c.errors
            .push("tls_cert_file: tls_cert_file and tls_key_file go together".to_string());
    }
    if let Some(ca) = &raw.tls_ca_file
        && !ca.is_file()
    {
        c.errors.push(format!(
            "tls_ca_file: {} is not a readable file",
            ca.display()
        ));
    }
    let group = raw.group.unwrap_or_else(|| "default".to_string());
    if !keys::is_valid_name(&group) {
        c.errors
            .push(format!("group: `{group}` must match [A-Za-z0-9_.-]+"));
    }
    let consumer = raw.consumer.unwrap_or_else(default_consumer);
    if !keys::is_valid_name(&consumer) {
        c.errors
            .push(format!("consumer: `{consumer}` must match [A-Za-z0-9_.-]+"));
    }
    let ms = Duration::from_millis;
    let concurrency = c.int("concurrency", raw.concurrency, 64, 1, 100_000) as usize;
    let visibility_timeout = c.duration(
        "visibility_timeout",
        raw.visibility_timeout,
        Duration::from_secs(60),
        ms(100),
    );
    let max_deliveries = c.int("max_deliveries", raw.max_deliveries, 10, 1, 1_000_000) as u64;
    let shutdown_timeout = c.duration(
        "shutdown_timeout",
        raw.shutdown_timeout,
        Duration::from_secs(30),
        ms(0),
    );
    let heartbeat_ttl = c.duration(
        "heartbeat_ttl",
        raw.heartbeat_ttl,
        Duration::from_secs(10),
        ms(300),
    );
    let reclaim_interval = c.duration(
        "reclaim_interval",
        raw.reclaim_interval,
        Duration::from_secs(1),
        ms(10),
    );
    let read_block = c.duration("read_block", raw.read_block, Duration::from_secs(1), ms(10));
    let discovery_interval = c.duration(
        "discovery_interval",
        raw.discovery_interval,
        Duration::from_secs(5),
        ms(10),
    );
    let scheduler_interval =
        c.duration("scheduler_interval", raw.scheduler_interval, ms(100), ms(1));
    let retry = RetryConfig {
        max_attempts: c.int("retry.max_attempts", raw.retry.max_attempts, 5, 1, 1000) as u32,
        initial_backoff: c.duration(
            "retry.initial_backoff",
            raw.retry.initial_backoff,
            ms(200),
            ms(1),
        ),
        multiplier: raw.retry.multiplier.unwrap_or(2.0),
        max_backoff: c.duration(
            "retry.max_backoff",
            raw.retry.max_backoff,
            Duration::from_secs(300),
            ms(1),
        ),
        jitter: raw.retry.jitter.unwrap_or(0.2),
    };
    if !(1.0..=100.0).contains(&retry.multiplier) {
        c.errors.push(format!(
            "retry.multiplier: {} must be between 1 and 100",
            retry.multiplier
        ));
    }
    if !(0.0..1.0).contains(&retry.jitter) {
        c.errors
            .push(format!("retry.jitter: {} must be in [0, 1)", retry.jitter));
    }
    if retry.initial_backoff > retry.max_backoff {
        c.errors
            .push("retry.initial_backoff: must not exceed retry.max_backoff".to_string());
    }
    let breaker = BreakerConfig {
        failure_threshold: c.int(
            "breaker.failure_threshold",
            raw.breaker.failure_threshold,
            5,
            1,
            1_000_000,
        ) as u32,
        open_for: c.duration(
            "breaker.open_for",
            raw.breaker.open_for,
            Duration::from_secs(30),
            ms(1),
        ),
    };
    let history = HistoryConfig {
        max_len: c.int("history.max_len", raw.history.max_len, 100_000, 1, i64::MAX) as u64,
        max_age: c.duration(
            "history.max_age",
            raw.history.max_age,
            Duration::from_secs(7 * 86400),
            ms(1000),
        ),
    };
    let dlq_max_len = raw
        .dlq_max_len
        .map(|v| c.int("dlq_max_len", Some(v), 0, 1, i64::MAX) as u64);
    let dlq_max_age = raw.dlq_max_age.map(|v| {
        c.duration(
            "dlq_max_age",
            Some(v),
            Duration::ZERO,
            Duration::from_secs(60),
        )
    });
    let stream_retention = match raw.stream_retention.as_deref() {
        Some("off") => None,
        other => Some(c.duration(
            "stream_retention",
            other.map(str::to_string),
            Duration::from_secs(7 * 86400),
            Duration::from_secs(60),
        )),
    };
    let listen_text = raw
        .api
        .listen
        .unwrap_or_else(|| "127.0.0.1:9464".to_string());
    let listen = listen_text.parse().unwrap_or_else(|_| {
        c.errors.push(format!(
            "api.listen: `{listen_text}` is not an address such as 127.0.0.1:9464"
        ));
        SocketAddr::from(([127, 0, 0, 1], 9464))
    });
    let rate_limit = c.int("api.rate_limit", raw.api.rate_limit, 500, 0, 1_000_000) as u32;
    let header_timeout = c.duration(
        "api.header_timeout",
        raw.api.header_timeout,
        Duration::from_secs(10),
        ms(100),
    );
    let body_timeout = c.duration(
        "api.body_timeout",
        raw.api.body_timeout,
        Duration::from_secs(30),
        ms(100),
    );
    let token = lookup("EVENTS_API_TOKEN")
        .filter(|t| !t.is_empty())
        .map(Secret::new);
    if token.as_ref().is_some_and(|t| t.expose().len() < 16) {
        c.errors
            .push("EVENTS_API_TOKEN: must be at least 16 characters".to_string());
    }
    let routes = raw
        .routes
        .into_iter()
        .enumerate()
        .map(|(i, r)| validate_route(&mut c, i, r, lookup))
        .collect();
    if c.errors.is_empty() {
        Ok(Config {
            env,
            redis_url: redis_url.expect("checked above"),
            tls_ca_file: raw.tls_ca_file,
            tls_cert_file: raw.tls_cert_file,
            tls_key_file: raw.tls_key_file,
            warnings,
            group,
            consumer,
            concurrency,
            visibility_timeout,
            max_deliveries,
            shutdown_timeout,
            heartbeat_ttl,
            reclaim_interval,
            read_block,
            discovery_interval,
            scheduler_interval,
            retry,
            breaker,
            history,
            dlq_max_len,
            dlq_max_age,
            stream_retention,
            api: ApiConfig {
                listen,
                token,
                rate_limit,
                header_timeout,
                body_timeout,
            },
            routes,
        })
    } else {
        Err(ConfigError(c.errors))
    }
}

fn validate_route(
    c: &mut Checker,
    i: usize,
    r: RawRoute,
    lookup: &impl Fn(&str) -> Option<String>,
) -> RouteConfig {
    let key = |k: &str| format!("routes[{i}].{k}");
    if r.types.is_empty() {
        c.errors
            .push(format!("{}: must list at least one type", key("types")));
    }
    for t in &r.types {
        if !keys::is_valid_pattern(t) {
            c.errors.push(format!(
                "{}: `{t}` is not a valid type or glob ([a-z0-9_-] parts separated by dots, `*` for any; not a reserved word)",
                key("types")
            ));
        }
    }
    let handler = match r.handler.as_str() {
        "http" => HandlerKind::Http,
        "blackhole" => HandlerKind::Blackhole,
        other => {
            c.errors.push(format!(
                "{}: unknown handler `{other}` (use http or blackhole)",
                key("handler")
            ));
            HandlerKind::Blackhole
        }
    };
    let url = match (&handler, r.url) {
        (HandlerKind::Http, None) => {
            c.errors
                .push(format!("{}: required for the http handler", key("url")));
            None
        }
        (HandlerKind::Http, Some(u)) => match url::Url::parse(&u) {
            Ok(parsed)
                if matches!(parsed.scheme(), "http" | "https") && parsed.host_str().is_some() =>
            {
                Some(parsed)
            }
            _ => {
                c.errors.push(format!(
                    "{}: `{u}` is not an http:// or https:// URL",
                    key("url")
                ));
                None
            }
        },
        (_, Some(_)) => {
            c.errors
                .push(format!("{}: only the http handler takes a url", key("url")));
            None
        }
        (_, None) => None,
    };
    let timeout = c.duration(
        &key("timeout"),
        r.timeout,
        Duration::from_secs(10),
        Duration::from_millis(1),
    );
    let signing_secret = match &r.signing_secret_env {
        None => None,
        Some(var) => match lookup(var) {
            Some(v) if v.len() >= 16 => Some(Secret::new(v)),
            Some(_) => {
                c.errors.push(format!(
                    "{}: the secret in ${var} must be at least 16 characters",
                    key("signing_secret_env")
                ));
                None
            }
            None => {
                c.errors.push(format!(
                    "{}: environment variable {var} is not set",
                    key("signing_secret_env")
                ));
                None
            }
        },
    };
    if let Some(n) = &r.name {
        let ok = !n.is_empty()
            && n.len() <= 64
            && n.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':'));
        if !ok {
            c.errors.push(format!(
                "{}: `{}` must be 1-64 of [A-Za-z0-9_.:-]",
                key("name"),
                crate::model::envelope::truncate(n, 80)
            ));
        }
    }
    RouteConfig {
        name: r.name,
        types: r.types,
        handler,
        url,
        timeout,
        headers: r.headers.into_iter().collect(),
        signing_secret,
    }
}

/// Reads a password file (first line, trimmed); warns when others may read it.
fn read_password_file(path: &Path, warnings: &mut Vec<String>) -> Result<String, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(meta) = std::fs::metadata(path)
            && meta.permissions().mode() & 0o077 != 0
        {
            warnings.push(format!(
                "redis_password_file {} is readable by group or others; chmod 600 it",
                path.display()
            ));
        }
    }
    let pw = text.lines().next().unwrap_or_default().trim().to_string();
    if pw.is_empty() {
        return Err(format!("{} is empty", path.display()));
    }
    let _ = &warnings;
    Ok(pw)
}

fn default_consumer() -> String {
    let host = hostname::get()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "worker".to_string());
    let clean: String = host
        .chars()
        .map(|ch| {
            if ch.is_ascii_alphanumeric() || ch == '-' || ch == '.' {
                ch
            } else {
                '-'
            }
        })
        .collect();
    format!("{clean}-{}", std::process::id())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
        [[routes]]
        types = ["booking.*"]
        handler = "blackhole"
    "#;

    fn load(text: &str, vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        Config::from_toml_and_env(text, |n| {
            vars.iter()
                .find(|(k, _)| *k == n)
                .map(|(_, v)| v.to_string())
        })
    }

    #[test]
    fn defaults_follow_the_contract() {
        let c = load(MINIMAL, &[]).unwrap();
        assert_eq!(c.env, "development");
        assert_eq!(c.concurrency, 64);
        assert_eq!(c.max_deliveries, 10);
        assert_eq!(c.retry.max_attempts, 5);
        assert_eq!(c.retry.initial_backoff, Duration::from_millis(200));
        assert_eq!(c.breaker.open_for, Duration::from_secs(30));
        assert_eq!(c.api.listen.to_string(), "127.0.0.1:9464");
        assert_eq!(c.redis_url.to_string(), "redis://127.0.0.1:6379");
    }

    #[test]
    fn env_and_url_fallbacks_and_overrides() {
        let c = load(
            MINIMAL,
            &[("NODE_ENV", "staging"), ("KV_URL", "rediss://:pw@h:6380")],
        )
        .unwrap();
        assert_eq!(c.env, "staging");
        assert!(c.redis_url.is_tls());
        let c = load(
            &format!("env = \"a\"\nconcurrency = 3\n{MINIMAL}"),
            &[
                ("EVENTS_ENV", "b"),
                ("APP_ENV", "c"),
                ("EVENTS_RETRY_MAX_ATTEMPTS", "9"),
            ],
        )
        .unwrap();
        assert_eq!(c.env, "b");
        assert_eq!(c.concurrency, 3);
        assert_eq!(c.retry.max_attempts, 9);
    }

    #[test]
    fn every_error_names_its_key() {
        let text = r#"
            env = "Bad Env"
            concurrency = 0
            visibility_timeout = "soon"
            [retry]
            jitter = 1.5
            [[routes]]
            types = ["dlq"]
            handler = "http"
        "#;
        let e = load(text, &[]).unwrap_err().to_string();
        for key in [
            "env:",
            "concurrency:",
            "visibility_timeout:",
            "retry.jitter:",
            "routes[0].types:",
            "routes[0].url:",
        ] {
            assert!(e.contains(key), "{key} missing from {e}");
        }
    }

    #[test]
    fn unknown_and_mistyped_keys_are_named() {
        let e = load(&format!("concurency = 3\n{MINIMAL}"), &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("concurency"), "{e}");
        let e = load(&format!("[retry]\nmax_attempts = \"x\"\n{MINIMAL}"), &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("retry.max_attempts"), "{e}");
        let e = load(MINIMAL, &[("EVENTS_CONCURRENCY", "many")])
            .unwrap_err()
            .to_string();
        assert!(e.contains("EVENTS_CONCURRENCY"), "{e}");
        let e = load(
            "[[routes]]\ntypes=[\"a\"]\nhandler=\"blackhole\"\nurll=\"x\"",
            &[],
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("routes[0]") && e.contains("urll"), "{e}");
    }

    #[test]
    fn bad_redis_url_never_echoes_the_password() {
        let e = load(MINIMAL, &[("REDIS_URL", "http://:hunter2hunter2@h:1")])
            .unwrap_err()
            .to_string();
        assert!(e.contains("redis_url") && !e.contains("hunter2"), "{e}");
    }

    #[test]
    fn api_timeouts_default_parse_override_and_name_bad_values() {
        let c = load(MINIMAL, &[]).unwrap();
        assert_eq!(c.api.header_timeout, Duration::from_secs(10));
        assert_eq!(c.api.body_timeout, Duration::from_secs(30));
        let text = format!("[api]\nheader_timeout = \"2s\"\nbody_timeout = \"1500ms\"\n{MINIMAL}");
        let c = load(&text, &[("EVENTS_API_HEADER_TIMEOUT", "750ms")]).unwrap();
        assert_eq!(c.api.header_timeout, Duration::from_millis(750));
        assert_eq!(c.api.body_timeout, Duration::from_millis(1500));
        let e = load(
            MINIMAL,
            &[
                ("EVENTS_API_HEADER_TIMEOUT", "soon"),
                ("EVENTS_API_BODY_TIMEOUT", "10ms"),
            ],
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("api.header_timeout") && e.contains("soon"),
            "{e}"
        );
        assert!(e.contains("api.body_timeout: must be at least"), "{e}");
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("5m").unwrap(), Duration::from_secs(300));
        assert_eq!(
            parse_duration("7d").unwrap(),
            Duration::from_secs(7 * 86400)
        );
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert!(parse_duration("5").is_err());
        assert!(parse_duration("fast").is_err());
    }
}
