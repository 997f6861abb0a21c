//! `EVENTS_<SECTION>_<KEY>` overrides: the table of every key a variable may set, and how
//! a variable's text becomes a TOML value written over the file's.
//!
//! The table is written by hand; `tests::every_key_has_its_variable` walks the keys of
//! `RawConfig` and fails when a key has no row or a row names no key. Any other `EVENTS_*`
//! variable is a typo unless [`OTHER_VARS`] lists it: [`unknown_variables`] warns about it,
//! naming the closest real variable (never its value, which may be a secret).

use super::error::ConfigError;

/// How an environment variable's text becomes a TOML value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Str,
    Int,
    Float,
    /// Comma-separated strings (`a,b`), an array of strings.
    List,
    /// `true`/`false` (or `1`/`0`).
    Bool,
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
    (None, "prefetch", Kind::Int),
    (None, "worker_threads", Kind::Int),
    (None, "visibility_timeout", Kind::Str),
    (None, "max_deliveries", Kind::Int),
    (None, "shutdown_timeout", Kind::Str),
    (None, "heartbeat_ttl", Kind::Str),
    (None, "reclaim_interval", Kind::Str),
    (None, "read_block", Kind::Str),
    (None, "discovery_interval", Kind::Str),
    (None, "scheduler_interval", Kind::Str),
    (None, "no_route_grace", Kind::Str),
    (None, "dlq_max_len", Kind::Int),
    (None, "dlq_max_age", Kind::Str),
    (None, "stream_retention", Kind::Str),
    (None, "retention_interval", Kind::Str),
    (Some("retry"), "max_attempts", Kind::Int),
    (Some("retry"), "initial_backoff", Kind::Str),
    (Some("retry"), "multiplier", Kind::Float),
    (Some("retry"), "max_backoff", Kind::Str),
    (Some("retry"), "jitter", Kind::Float),
    (Some("breaker"), "failure_threshold", Kind::Int),
    (Some("breaker"), "open_for", Kind::Str),
    (Some("breaker"), "failure_rate", Kind::Float),
    (Some("breaker"), "window", Kind::Str),
    (Some("breaker"), "min_calls", Kind::Int),
    (Some("history"), "max_len", Kind::Int),
    (Some("history"), "max_age", Kind::Str),
    (Some("history"), "processed", Kind::Str),
    (Some("api"), "listen", Kind::Str),
    (Some("api"), "rate_limit", Kind::Int),
    (Some("api"), "header_timeout", Kind::Str),
    (Some("api"), "body_timeout", Kind::Str),
    (Some("health"), "window", Kind::Str),
    (Some("health"), "dlq_growth", Kind::Int),
    (Some("health"), "retry_depth", Kind::Int),
    (Some("health"), "lag", Kind::Int),
    (Some("health"), "scan_interval", Kind::Str),
    (Some("apps"), "jwt_secret_env", Kind::Str),
    (Some("apps"), "jwt_public_key_file", Kind::Str),
    (Some("apps"), "issuer", Kind::Str),
    (Some("apps"), "audience", Kind::Str),
    (Some("apps"), "leeway", Kind::Str),
    (Some("apps"), "cookie_name", Kind::Str),
    (Some("apps"), "allowed_origins", Kind::List),
    (Some("apps"), "rate_limit", Kind::Int),
    (Some("publish"), "dedup_window", Kind::Str),
    (Some("publish"), "dedup_max_ids", Kind::Int),
    (Some("publish"), "batch_max_events", Kind::Int),
    (Some("publish"), "batch_max_bytes", Kind::Int),
    (Some("redis"), "wait_replicas", Kind::Int),
    (Some("redis"), "wait_timeout", Kind::Str),
    (Some("push"), "listen", Kind::Str),
    (Some("push"), "group", Kind::Str),
    (Some("push"), "history_max_len", Kind::Int),
    (Some("push"), "history_max_age", Kind::Str),
    (Some("push"), "max_channels", Kind::Int),
    (Some("push"), "replay_max", Kind::Int),
    (Some("push"), "client_buffer", Kind::Int),
    (Some("push"), "heartbeat", Kind::Str),
    (Some("push"), "device_ttl", Kind::Str),
    (Some("push"), "max_devices", Kind::Int),
    (Some("push"), "device_scan_interval", Kind::Str),
    (Some("outbox"), "enabled", Kind::Bool),
    (Some("outbox"), "dir", Kind::Str),
    (Some("outbox"), "max_bytes", Kind::Int),
    (Some("outbox"), "fsync", Kind::Str),
    (Some("outbox"), "segment_bytes", Kind::Int),
    (Some("outbox"), "fallback_after", Kind::Str),
    (Some("outbox"), "drain_rate", Kind::Int),
    (Some("outbox"), "max_age", Kind::Str),
];

/// `EVENTS_*` variables read outside [`ENV_KEYS`] (`--config`, the log filter, the API token).
const OTHER_VARS: &[&str] = &["EVENTS_CONFIG", "EVENTS_LOG", "EVENTS_API_TOKEN"];

/// Keys of the file that deliberately have no `EVENTS_*` variable: routes and push channel
/// rules are arrays of tables, which one variable cannot express (`section.key` for a key
/// inside a section).
#[cfg(test)]
const FILE_ONLY_KEYS: &[&str] = &["routes", "push.channels"];

/// Name of the variable that overrides `section.key`.
fn env_var_name(section: Option<&str>, key: &str) -> String {
    match section {
        Some(s) => format!("EVENTS_{}_{}", s.to_uppercase(), key.to_uppercase()),
        None => format!("EVENTS_{}", key.to_uppercase()),
    }
}

/// The TOML value of a variable's text, or what was expected.
fn value_of(kind: Kind, raw: String) -> Result<toml::Value, &'static str> {
    match kind {
        Kind::Str => Ok(toml::Value::String(raw)),
        Kind::Int => raw
            .trim()
            .parse()
            .map(toml::Value::Integer)
            .map_err(|_| "an integer such as 8"),
        Kind::Float => raw
            .trim()
            .parse()
            .map(toml::Value::Float)
            .map_err(|_| "a number such as 0.5"),
        Kind::List => Ok(toml::Value::Array(
            raw.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| toml::Value::String(s.to_string()))
                .collect(),
        )),
        Kind::Bool => match raw.trim() {
            "true" | "1" => Ok(toml::Value::Boolean(true)),
            "false" | "0" => Ok(toml::Value::Boolean(false)),
            _ => Err("true or false"),
        },
    }
}

/// Writes every set `EVENTS_*` variable (read through `lookup`) over `table`; returns each
/// key set this way (`retry.max_attempts`) with its variable, so errors can name both.
///
/// # Errors
/// [`ConfigError`] naming each variable whose text is not of its key's type, or a section
/// the file holds as something other than a table.
pub(super) fn apply_overrides(
    table: &mut toml::Table,
    lookup: &impl Fn(&str) -> Option<String>,
) -> Result<Vec<(String, String)>, ConfigError> {
    let mut errors = Vec::new();
    let mut applied = Vec::new();
    for (section, key, kind) in ENV_KEYS {
        let var = env_var_name(*section, key);
        let Some(raw) = lookup(&var) else { continue };
        let value = match value_of(*kind, raw) {
            Ok(v) => v,
            Err(what) => {
                errors.push(format!("{var}: expected {what}"));
                continue;
            }
        };
        let target = match section {
            Some(s) => table
                .entry(s.to_string())
                .or_insert_with(|| toml::Value::Table(Default::default()))
                .as_table_mut(),
            None => Some(&mut *table),
        };
        match target {
            Some(t) => {
                t.insert(key.to_string(), value);
                let path = section.map_or(key.to_string(), |s| format!("{s}.{key}"));
                applied.push((path, var));
            }
            None => errors.push(format!(
                "{var}: the file's `{}` is not a table, so {var} cannot set a key in it",
                section.unwrap_or("")
            )),
        }
    }
    if errors.is_empty() {
        Ok(applied)
    } else {
        Err(ConfigError(errors))
    }
}

/// Adds "(set by EVENTS_X)" to each error about a key a variable set (`applied` as
/// [`apply_overrides`] returns it), so the operator looks in the environment, not the file.
pub(super) fn name_variables(errors: Vec<String>, applied: &[(String, String)]) -> Vec<String> {
    errors
        .into_iter()
        .map(|e| {
            let key = e.split(':').next().unwrap_or_default();
            match applied.iter().find(|(path, _)| path == key) {
                Some((_, var)) => format!("{e} (set by {var})"),
                None => e,
            }
        })
        .collect()
}

/// Every `EVENTS_*` variable event-worker reads.
fn known_variables() -> Vec<String> {
    ENV_KEYS
        .iter()
        .map(|(s, k, _)| env_var_name(*s, k))
        .chain(OTHER_VARS.iter().map(|v| v.to_string()))
        .collect()
}

/// A warning for each name in `names` that starts with `EVENTS_` but is no variable
/// event-worker reads, naming the closest real one. Values are never read or shown.
pub(super) fn unknown_variables<'a>(names: impl Iterator<Item = &'a str>) -> Vec<String> {
    let known = known_variables();
    let mut unknown: Vec<&str> = names
        .filter(|n| n.starts_with("EVENTS_") && !known.iter().any(|k| k == n))
        .collect();
    unknown.sort_unstable();
    unknown.dedup();
    unknown
        .into_iter()
        .map(|name| {
            let suffixes = known.iter().filter_map(|k| k.strip_prefix("EVENTS_"));
            let typed = name.strip_prefix("EVENTS_").unwrap_or(name);
            let hint = match super::diagnose::closest(typed, suffixes) {
                Some(best) => format!("did you mean EVENTS_{best}?"),
                None => "see README \"Configuration\" for the EVENTS_* variables".to_string(),
            };
            format!("environment variable {name} is not one event-worker reads, so it is ignored; {hint}")
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::config::raw::RawConfig;

    /// Every leaf key of `RawConfig` as `(section, key)`, found by serializing the default
    /// (absent values serialize as `null`, so every field shows up), minus [`FILE_ONLY_KEYS`].
    fn raw_config_keys() -> BTreeSet<(Option<String>, String)> {
        let value = serde_json::to_value(RawConfig::default()).expect("serializable");
        let serde_json::Value::Object(top) = value else {
            panic!("RawConfig serializes as a map")
        };
        let mut keys = BTreeSet::new();
        for (key, value) in top {
            if FILE_ONLY_KEYS.contains(&key.as_str()) {
                continue;
            }
            match value {
                serde_json::Value::Object(section) => {
                    for inner in section.keys() {
                        if FILE_ONLY_KEYS.contains(&format!("{key}.{inner}").as_str()) {
                            continue;
                        }
                        keys.insert((Some(key.clone()), inner.clone()));
                    }
                }
                _ => {
                    keys.insert((None, key));
                }
            }
        }
        keys
    }

    fn table_keys() -> BTreeSet<(Option<String>, String)> {
        ENV_KEYS
            .iter()
            .map(|(s, k, _)| (s.map(str::to_string), k.to_string()))
            .collect()
    }

    #[test]
    fn every_key_has_its_variable() {
        let keys = raw_config_keys();
        let table = table_keys();
        let missing: Vec<_> = keys.difference(&table).collect();
        assert!(
            missing.is_empty(),
            "config keys without an EVENTS_* row in ENV_KEYS (add a row, or list the key in \
             FILE_ONLY_KEYS if a variable cannot express it): {missing:?}"
        );
        let unknown: Vec<_> = table.difference(&keys).collect();
        assert!(
            unknown.is_empty(),
            "ENV_KEYS rows naming no config key: {unknown:?}"
        );
        assert_eq!(table.len(), ENV_KEYS.len(), "ENV_KEYS has a duplicate row");
        for key in FILE_ONLY_KEYS {
            let raw = serde_json::to_value(RawConfig::default()).unwrap();
            let value = key.split('.').fold(&raw, |v, part| &v[part]);
            assert!(
                value.is_array(),
                "{key} is listed as file-only but is not an array of tables"
            );
        }
    }

    #[test]
    fn every_variable_parses_into_its_keys_type() {
        for (section, key, kind) in ENV_KEYS {
            let text = match kind {
                Kind::Str => "text",
                Kind::Int => "7",
                Kind::Float => "0.5",
                Kind::List => "a,b",
                Kind::Bool => "true",
            };
            let var = env_var_name(*section, key);
            let mut table = toml::Table::new();
            apply_overrides(&mut table, &|n: &str| (n == var).then(|| text.to_string()))
                .unwrap_or_else(|e| panic!("{var}: {e}"));
            if let Err(e) = RawConfig::from_table(table) {
                panic!("{var} is {kind:?} but its key has another type: {e}");
            }
        }
    }

    #[test]
    fn variable_names() {
        assert_eq!(env_var_name(None, "concurrency"), "EVENTS_CONCURRENCY");
        assert_eq!(
            env_var_name(Some("retry"), "max_attempts"),
            "EVENTS_RETRY_MAX_ATTEMPTS"
        );
    }
}
