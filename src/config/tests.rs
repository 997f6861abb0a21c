//! Unit tests of loading: defaults, fallbacks, overrides and error messages.

use std::time::Duration;

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
fn breaker_rate_keys_have_defaults_env_overrides_and_checks() {
    let c = load(MINIMAL, &[]).unwrap();
    assert_eq!(
        (
            c.breaker.failure_rate,
            c.breaker.window,
            c.breaker.min_calls
        ),
        (0.5, Duration::from_secs(30), 20)
    );
    let c = load(
        MINIMAL,
        &[
            ("EVENTS_BREAKER_FAILURE_RATE", "0.25"),
            ("EVENTS_BREAKER_WINDOW", "10s"),
            ("EVENTS_BREAKER_MIN_CALLS", "7"),
        ],
    )
    .unwrap();
    assert_eq!(
        (
            c.breaker.failure_rate,
            c.breaker.window,
            c.breaker.min_calls
        ),
        (0.25, Duration::from_secs(10), 7)
    );
    let text =
        format!("[breaker]\nfailure_rate = 1.5\nwindow = \"500ms\"\nmin_calls = 0\n{MINIMAL}");
    let e = load(&text, &[]).unwrap_err().to_string();
    for want in [
        "breaker.failure_rate: 1.5 must be above 0 and at most 1",
        "breaker.window: must be at least 1s",
        "breaker.min_calls: 0 is out of range (1..=1000000)",
    ] {
        assert!(e.contains(want), "{want} missing from {e}");
    }
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
fn handler_kinds_round_trip_and_unknown_ones_are_listed() {
    for kind in HandlerKind::ALL {
        assert_eq!(HandlerKind::from_name(kind.as_str()), Some(*kind));
    }
    let e = load("[[routes]]\ntypes=[\"a\"]\nhandler=\"ftp\"", &[])
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("routes[0].handler: unknown handler `ftp` (use http or blackhole)"),
        "{e}"
    );
    let c = load(MINIMAL, &[]).unwrap();
    assert_eq!(c.routes[0].handler_name(0), "route0-blackhole");
}
