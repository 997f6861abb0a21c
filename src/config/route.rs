//! Validation of one `[[routes]]` entry: its types, handler kind, URL, timeout, signing
//! secret's variable and name. Errors name the key as `routes[<index>].<key>`.
//!
//! The secret itself is read later, where a handler is built
//! ([`RouteConfig::resolve_signing_secret`]), never during loading: operator commands
//! (`dlq`, `history`, `publish`, `check`) deliver nothing and must not need it.

use super::defaults;
use super::error::ConfigError;
use super::parse::Checker;
use super::raw::{RawBatch, RawRoute};
use super::types::{BatchConfig, Config, HandlerKind, RouteConfig};
use crate::model::keys;
use crate::model::secret::Secret;

/// Validates route `i`.
pub(super) fn validate_route(c: &mut Checker, i: usize, r: RawRoute) -> RouteConfig {
    let key = |k: &str| format!("routes[{i}].{k}");
    check_types(c, &key("types"), &r.types);
    let handler = handler_kind(c, &key("handler"), &r.handler);
    let url = url(c, &key("url"), handler, r.url.as_deref());
    let timeout = c.duration(
        &key("timeout"),
        r.timeout.as_deref(),
        defaults::ROUTE_TIMEOUT,
    );
    if let Some(var) = &r.signing_secret_env
        && (var.is_empty() || var.contains(['=', '\0']))
    {
        c.push(format!(
            "{}: `{var}` is not an environment variable name (e.g. WEBHOOK_SECRET)",
            key("signing_secret_env")
        ));
    }
    if let Some(n) = &r.name {
        check_name(c, &key("name"), n);
    }
    let batch = r
        .batch
        .map(|b| batch(c, &key("batch"), handler, timeout, b));
    RouteConfig {
        name: r.name,
        types: r.types,
        handler,
        url,
        timeout,
        headers: r.headers.into_iter().collect(),
        signing_secret: None,
        signing_secret_env: r.signing_secret_env,
        batch,
    }
}

/// The `batch` table: http routes only; `max_wait` shorter than the route's `timeout`.
fn batch(
    c: &mut Checker,
    key: &str,
    handler: HandlerKind,
    timeout: std::time::Duration,
    b: RawBatch,
) -> BatchConfig {
    if handler != HandlerKind::Http {
        c.push(format!(
            "{key}: only the http handler delivers in batches (remove `batch` or use handler = \"http\")"
        ));
    }
    let max_events = c.int(
        &format!("{key}.max_events"),
        b.max_events,
        defaults::BATCH_MAX_EVENTS,
    );
    let wait_key = format!("{key}.max_wait");
    let max_wait = c.duration(&wait_key, b.max_wait.as_deref(), defaults::BATCH_MAX_WAIT);
    if max_wait >= timeout {
        c.push(format!(
            "{wait_key}: {} must be shorter than the route's timeout ({})",
            super::parse::format_duration(max_wait),
            super::parse::format_duration(timeout)
        ));
    }
    BatchConfig {
        max_events: usize::try_from(max_events).unwrap_or(1),
        max_wait,
    }
}

/// At least one type, each a valid type or glob.
fn check_types(c: &mut Checker, key: &str, types: &[String]) {
    if types.is_empty() {
        c.push(format!("{key}: must list at least one type"));
    }
    for t in types {
        if !keys::is_valid_pattern(t) {
            c.push(format!(
                "{key}: `{t}` is not a valid type or glob ([a-z0-9_-] parts separated by dots, `*` for any; not a reserved word)"
            ));
        }
    }
}

/// The handler kind named `name` (blackhole after an error, while errors are collected).
fn handler_kind(c: &mut Checker, key: &str, name: &str) -> HandlerKind {
    HandlerKind::from_name(name).unwrap_or_else(|| {
        let known: Vec<_> = HandlerKind::ALL.iter().map(|k| k.as_str()).collect();
        c.push(format!(
            "{key}: unknown handler `{name}` (use {})",
            known.join(" or ")
        ));
        HandlerKind::Blackhole
    })
}

/// The URL: required (http or https, with a host) for `http`, refused for the others.
fn url(c: &mut Checker, key: &str, handler: HandlerKind, url: Option<&str>) -> Option<url::Url> {
    match (handler, url) {
        (HandlerKind::Http, None) => {
            c.push(format!("{key}: required for the http handler"));
            None
        }
        (HandlerKind::Http, Some(u)) => match url::Url::parse(u) {
            Ok(parsed)
                if matches!(parsed.scheme(), "http" | "https") && parsed.host_str().is_some() =>
            {
                Some(parsed)
            }
            _ => {
                c.push(format!("{key}: `{u}` is not an http:// or https:// URL"));
                None
            }
        },
        (HandlerKind::Blackhole, Some(_)) => {
            c.push(format!("{key}: only the http handler takes a url"));
            None
        }
        (HandlerKind::Blackhole, None) => None,
    }
}

impl RouteConfig {
    /// The signing secret of route `index`: the one given in code, else the value of
    /// [`RouteConfig::signing_secret_env`] read through `lookup` (at least 16 characters).
    ///
    /// # Errors
    /// A message naming the route's key and the variable (never its value).
    pub fn resolve_signing_secret(
        &self,
        index: usize,
        lookup: &impl Fn(&str) -> Option<String>,
    ) -> Result<Option<Secret>, String> {
        if let Some(s) = &self.signing_secret {
            return Ok(Some(s.clone()));
        }
        let Some(var) = &self.signing_secret_env else {
            return Ok(None);
        };
        let key = format!("routes[{index}].signing_secret_env");
        match lookup(var) {
            Some(v) if v.len() >= 16 => Ok(Some(Secret::new(v))),
            Some(_) => Err(format!(
                "{key}: the secret in ${var} must be at least 16 characters"
            )),
            None => Err(format!("{key}: environment variable {var} is not set")),
        }
    }
}

impl Config {
    /// Reads every route's signing secret (see [`RouteConfig::resolve_signing_secret`]);
    /// `run` calls it before starting, so a missing secret stops it at once.
    ///
    /// # Errors
    /// [`ConfigError`] naming each route whose secret is missing or too short.
    pub fn resolve_signing_secrets(
        &mut self,
        lookup: &impl Fn(&str) -> Option<String>,
    ) -> Result<(), ConfigError> {
        let mut errors = Vec::new();
        for (i, route) in self.routes.iter_mut().enumerate() {
            match route.resolve_signing_secret(i, lookup) {
                Ok(secret) => route.signing_secret = secret,
                Err(e) => errors.push(e),
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(ConfigError(errors))
        }
    }

    /// What [`Config::resolve_signing_secrets`] would refuse, one message per route (for
    /// `check`, which reports them as warnings).
    pub fn signing_secret_problems(&self, lookup: &impl Fn(&str) -> Option<String>) -> Vec<String> {
        self.routes
            .iter()
            .enumerate()
            .filter_map(|(i, r)| r.resolve_signing_secret(i, lookup).err())
            .collect()
    }
}

/// A route name: 1-64 of `[A-Za-z0-9_.:-]` (it becomes a metric label).
fn check_name(c: &mut Checker, key: &str, name: &str) {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':'));
    if !ok {
        c.push(format!(
            "{key}: `{}` must be 1-64 of [A-Za-z0-9_.:-]",
            crate::model::envelope::truncate(name, 80)
        ));
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::{BatchConfig, Config};

    fn load(route: &str) -> Result<Config, String> {
        let text = format!("[[routes]]\ntypes = [\"a.b\"]\n{route}\n");
        Config::from_toml_and_env(&text, |_| None).map_err(|e| e.to_string())
    }

    #[test]
    fn batch_keys_default_check_and_name_themselves() {
        let c = load("handler = \"http\"\nurl = \"http://h/x\"\nbatch = {}").unwrap();
        let defaults = BatchConfig {
            max_events: 100,
            max_wait: Duration::ZERO,
        };
        assert_eq!(c.routes[0].batch, Some(defaults));
        let c = load(
            "handler = \"http\"\nurl = \"http://h/x\"\nbatch = { max_events = 7, max_wait = \"5ms\" }",
        )
        .unwrap();
        let set = BatchConfig {
            max_events: 7,
            max_wait: Duration::from_millis(5),
        };
        assert_eq!(c.routes[0].batch, Some(set));
        assert_eq!(
            load("handler = \"blackhole\"").unwrap().routes[0].batch,
            None
        );
        let e = load("handler = \"blackhole\"\nbatch = {}").unwrap_err();
        assert!(
            e.contains(
                "routes[0].batch: only the http handler delivers in batches \
                 (remove `batch` or use handler = \"http\")"
            ),
            "{e}"
        );
        let e = load(
            "handler = \"http\"\nurl = \"http://h/x\"\ntimeout = \"1s\"\n\
             batch = { max_events = 0, max_wait = \"2s\" }",
        )
        .unwrap_err();
        assert!(
            e.contains("routes[0].batch.max_events: 0 is out of range (1..=1000)"),
            "{e}"
        );
        assert!(
            e.contains(
                "routes[0].batch.max_wait: 2s must be shorter than the route's timeout (1s)"
            ),
            "{e}"
        );
    }
}
