//! Validation of one `[[routes]]` entry: its types, handler kind, URL, timeout, signing
//! secret and name. Errors name the key as `routes[<index>].<key>`.

use super::defaults;
use super::parse::Checker;
use super::raw::RawRoute;
use super::types::{HandlerKind, RouteConfig};
use crate::model::keys;
use crate::model::secret::Secret;

/// Validates route `i`.
pub(super) fn validate_route(
    c: &mut Checker,
    i: usize,
    r: RawRoute,
    lookup: &impl Fn(&str) -> Option<String>,
) -> RouteConfig {
    let key = |k: &str| format!("routes[{i}].{k}");
    check_types(c, &key("types"), &r.types);
    let handler = handler_kind(c, &key("handler"), &r.handler);
    let url = url(c, &key("url"), handler, r.url.as_deref());
    let timeout = c.duration(
        &key("timeout"),
        r.timeout.as_deref(),
        defaults::ROUTE_TIMEOUT,
    );
    let signing_secret = r
        .signing_secret_env
        .as_deref()
        .and_then(|var| signing_secret(c, &key("signing_secret_env"), var, lookup));
    if let Some(n) = &r.name {
        check_name(c, &key("name"), n);
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

/// The signing secret from variable `var` (at least 16 characters).
fn signing_secret(
    c: &mut Checker,
    key: &str,
    var: &str,
    lookup: &impl Fn(&str) -> Option<String>,
) -> Option<Secret> {
    match lookup(var) {
        Some(v) if v.len() >= 16 => Some(Secret::new(v)),
        Some(_) => {
            c.push(format!(
                "{key}: the secret in ${var} must be at least 16 characters"
            ));
            None
        }
        None => {
            c.push(format!("{key}: environment variable {var} is not set"));
            None
        }
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
