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
    let e = load(
        MINIMAL,
        &[("REDIS_URL", "http://:placeholder-password@h:1")],
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("redis_url") && !e.contains("placeholder-password"),
        "{e}"
    );
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

/// The error of `text` read as the file `/etc/ew.toml`.
fn file_error(text: &str) -> String {
    let source = diagnose::Source {
        file: Some(std::path::Path::new("/etc/ew.toml")),
        text,
    };
    Config::from_source(source, |_| None)
        .unwrap_err()
        .to_string()
}

#[test]
fn syntax_errors_give_the_file_line_column_and_the_line() {
    assert_eq!(
        file_error("env = \"a\"\nconcurrency = = 4\n"),
        "invalid configuration: config file /etc/ew.toml, line 2, column 15: invalid string; \
         expected `\"`, `'`\n   |\n 2 | concurrency = = 4\n   |               ^"
    );
    assert_eq!(
        file_error("group = \"g\"\nenv = \"prod\n"),
        "invalid configuration: config file /etc/ew.toml, line 2, column 12: invalid basic string \
         (is its closing `\"` missing?)\n   |\n 2 | env = \"prod\n   |            ^"
    );
}

#[test]
fn quoted_lines_never_show_a_password_or_a_header_value() {
    let e = file_error("redis_url = \"redis://u:placeholder-password@h:6379\n");
    assert!(
        e.contains("redis_url = \"redis://u:***@h:6379") && !e.contains("placeholder-password"),
        "{e}"
    );
    let e = file_error(
        "[[routes]]\ntypes=[\"a\"]\nhandler=\"http\"\nurl=\"http://h/\"\n[routes.headers]\nAuthorization = \"Bearer tok3n\n",
    );
    assert!(
        e.contains("Authorization = \"***") && !e.contains("tok3n"),
        "{e}"
    );
}

#[test]
fn unknown_keys_suggest_the_closest_valid_key() {
    assert_eq!(
        file_error("[retry]\nmax_attempt = 3\n"),
        "invalid configuration: config file /etc/ew.toml, line 2, column 1: unknown key \
         `max_attempt` in [retry]; did you mean `max_attempts`?\n   |\n 2 | max_attempt = 3\n   | ^^^^^^^^^^^"
    );
    let e = load(&format!("concurency = 3\n{MINIMAL}"), &[])
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("invalid configuration: config file, line 1, column 1: unknown key `concurency` at the top level; did you mean `concurrency`?\n"),
        "{e}"
    );
    let e = load(
        "[[routes]]\ntypes=[\"a\"]\nhandler=\"blackhole\"\nurll=\"x\"",
        &[],
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("unknown key `urll` in a [[routes]] entry (routes[0]); did you mean `url`?"),
        "{e}"
    );
    // Nothing close: the valid keys, straight from the struct.
    let e = load("[history]\ncolour = 1\n", &[])
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("unknown key `colour` in [history]; valid keys: max_len, max_age, processed\n"),
        "{e}"
    );
}

#[test]
fn type_errors_say_what_was_expected_and_found() {
    assert_eq!(
        file_error("concurrency = \"16\"\n"),
        "invalid configuration: config file /etc/ew.toml, line 1, column 15: concurrency: \
         expected an integer, found a string\n   |\n 1 | concurrency = \"16\"\n   |               ^^^^"
    );
    let e = load("[retry]\njitter = \"x\"\n", &[])
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("retry.jitter: expected a number, found a string"),
        "{e}"
    );
    let e = load("[[routes]]\ntypes = \"a\"\nhandler = \"blackhole\"\n", &[])
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("routes[0].types: expected a list such as [\"a.b\"], found a string"),
        "{e}"
    );
}

#[test]
fn bad_values_name_the_key_and_a_valid_example() {
    let e = load(
        &format!("[retry]\ninitial_backoff = \"5x\"\n{MINIMAL}"),
        &[],
    )
    .unwrap_err()
    .to_string();
    assert_eq!(
        e,
        "invalid configuration: retry.initial_backoff: `5x` has an unknown unit `x` (use ms, s, \
         m, h or d); e.g. initial_backoff = \"200ms\""
    );
}

#[test]
fn errors_from_variables_name_the_variable() {
    let e = load(MINIMAL, &[("EVENTS_CONCURRENCY", "abc")])
        .unwrap_err()
        .to_string();
    assert_eq!(
        e,
        "invalid configuration: EVENTS_CONCURRENCY: expected an integer such as 8"
    );
    let e = load(MINIMAL, &[("EVENTS_CONCURRENCY", "0")])
        .unwrap_err()
        .to_string();
    assert_eq!(
        e,
        "invalid configuration: concurrency: 0 is out of range (1..=100000) (set by EVENTS_CONCURRENCY)"
    );
    let e = load(MINIMAL, &[("EVENTS_BREAKER_OPEN_FOR", "5x")])
        .unwrap_err()
        .to_string();
    assert!(
        e.ends_with("e.g. open_for = \"30s\" (set by EVENTS_BREAKER_OPEN_FOR)"),
        "{e}"
    );
}

#[test]
fn misspelled_variables_are_named_with_the_closest_real_one() {
    let names = [
        "EVENTS_CONCURENCY",
        "EVENTS_RETRY_MAXATTEMPTS",
        "EVENTS_ZZZ",
        "EVENTS_LOG",
        "EVENTS_API_TOKEN",
        "EVENTS_CONFIG",
        "EVENTS_ENV",
        "PATH",
    ];
    assert_eq!(
        env::unknown_variables(names.into_iter()),
        vec![
            "environment variable EVENTS_CONCURENCY is not one event-worker reads, so it is \
             ignored; did you mean EVENTS_CONCURRENCY?",
            "environment variable EVENTS_RETRY_MAXATTEMPTS is not one event-worker reads, so it \
             is ignored; did you mean EVENTS_RETRY_MAX_ATTEMPTS?",
            "environment variable EVENTS_ZZZ is not one event-worker reads, so it is ignored; \
             see README \"Configuration\" for the EVENTS_* variables",
        ]
    );
}

#[test]
fn signing_secrets_are_read_only_when_asked_for() {
    let text = "[[routes]]\ntypes=[\"a\"]\nhandler=\"http\"\nurl=\"http://h/\"\nsigning_secret_env=\"SINK_SECRET\"\n";
    // Loading does not need the variable (operator commands run without it).
    let mut c = load(text, &[]).unwrap();
    assert_eq!(
        c.routes[0].signing_secret_env.as_deref(),
        Some("SINK_SECRET")
    );
    assert!(c.routes[0].signing_secret.is_none());
    let missing = "routes[0].signing_secret_env: environment variable SINK_SECRET is not set";
    assert_eq!(
        c.signing_secret_problems(&|_| None),
        vec![missing.to_string()]
    );
    let e = c
        .resolve_signing_secrets(&|_| None)
        .unwrap_err()
        .to_string();
    assert_eq!(e, format!("invalid configuration: {missing}"));
    let short = |_: &str| Some("short".to_string());
    assert_eq!(
        c.signing_secret_problems(&short),
        vec!["routes[0].signing_secret_env: the secret in $SINK_SECRET must be at least 16 characters".to_string()]
    );
    let good = |n: &str| (n == "SINK_SECRET").then(|| "0123456789abcdef".to_string());
    assert!(c.signing_secret_problems(&good).is_empty());
    c.resolve_signing_secrets(&good).unwrap();
    assert_eq!(
        c.routes[0].signing_secret.as_ref().unwrap().expose(),
        "0123456789abcdef"
    );
}

#[test]
fn a_visibility_timeout_too_short_for_the_refreshes_is_refused_naming_both_keys() {
    let e = load(&format!("visibility_timeout = \"500ms\"\n{MINIMAL}"), &[])
        .unwrap_err()
        .to_string();
    assert!(
        e.contains(
            "visibility_timeout: \"500ms\" is too short: a live consumer refreshes the entries \
             it is handling every third of visibility_timeout or heartbeat_ttl (the shorter), \
             and another consumer claims any entry idle that long, so slow handlers would run \
             twice; set visibility_timeout = \"1s\" or more (crashed consumers are still taken \
             over after heartbeat_ttl)"
        ),
        "{e}"
    );
    for text in ["1s", "2s", "60s"] {
        let c = load(
            &format!("visibility_timeout = \"{text}\"\nheartbeat_ttl = \"30s\"\n{MINIMAL}"),
            &[],
        )
        .unwrap();
        assert!(c.warnings.is_empty(), "{text}: {:?}", c.warnings);
    }
}

#[test]
fn retention_interval_defaults_to_30s_overrides_and_has_a_floor() {
    let c = load(MINIMAL, &[]).unwrap();
    assert_eq!(c.retention_interval, Duration::from_secs(30));
    let c = load(MINIMAL, &[("EVENTS_RETENTION_INTERVAL", "5s")]).unwrap();
    assert_eq!(c.retention_interval, Duration::from_secs(5));
    let text = format!("retention_interval = \"500ms\"\n{MINIMAL}");
    let e = load(&text, &[]).unwrap_err().to_string();
    assert!(e.contains("retention_interval: must be at least 1s"), "{e}");
}

#[test]
fn no_route_grace_defaults_to_ten_minutes_has_its_variable_and_accepts_zero() {
    let c = load(MINIMAL, &[]).unwrap();
    assert_eq!(c.no_route_grace, Duration::from_secs(600));
    let c = load(MINIMAL, &[("EVENTS_NO_ROUTE_GRACE", "30s")]).unwrap();
    assert_eq!(c.no_route_grace, Duration::from_secs(30));
    let c = load(&format!("no_route_grace = \"0s\"\n{MINIMAL}"), &[]).unwrap();
    assert_eq!(c.no_route_grace, Duration::ZERO);
    let e = load(&format!("no_route_grace = \"5x\"\n{MINIMAL}"), &[]).unwrap_err();
    assert!(
        e.to_string()
            .contains("no_route_grace: `5x` has an unknown unit `x` (use ms, s, m, h or d); e.g. no_route_grace = \"10m\""),
        "{e}"
    );
}

#[test]
fn history_processed_and_prefetch_have_defaults_overrides_and_checks() {
    let c = load(MINIMAL, &[]).unwrap();
    assert_eq!(
        (c.history.processed, c.prefetch),
        (ProcessedRecords::Aggregate, 256)
    );
    let c = load(
        &format!("concurrency = 8\n[history]\nprocessed = \"per_event\"\n{MINIMAL}"),
        &[],
    )
    .unwrap();
    assert_eq!(
        (c.history.processed, c.prefetch),
        (ProcessedRecords::PerEvent, 32)
    );
    let c = load(
        MINIMAL,
        &[
            ("EVENTS_PREFETCH", "64"),
            ("EVENTS_HISTORY_PROCESSED", "per_event"),
        ],
    )
    .unwrap();
    assert_eq!(
        (c.history.processed, c.prefetch),
        (ProcessedRecords::PerEvent, 64)
    );
    let e = load(
        &format!("prefetch = 10\n[history]\nprocessed = \"sampled\"\n{MINIMAL}"),
        &[],
    )
    .unwrap_err()
    .to_string();
    assert_eq!(
        e,
        "invalid configuration: prefetch: 10 is below concurrency (64); it counts the events in \
         flight too, so set it to at least 64 (or leave it out: 256); history.processed: \
         `sampled` is neither `aggregate` (one record per batch of successes) nor `per_event` \
         (one record per success)"
    );
}

#[test]
fn worker_threads_defaults_to_one_or_to_one_per_core_with_push_and_is_bounded() {
    assert_eq!(load(MINIMAL, &[]).unwrap().worker_threads, 1);
    let pushing =
        format!("{MINIMAL}\n[[push.channels]]\ntypes = [\"booking.*\"]\nchannel = \"bookings\"\n");
    assert_eq!(load(&pushing, &[]).unwrap().worker_threads, 0);
    let listening = format!("{MINIMAL}\n[push]\nlisten = \"127.0.0.1:0\"\n");
    assert_eq!(load(&listening, &[]).unwrap().worker_threads, 0);
    let c = load(&format!("worker_threads = 0\n{MINIMAL}"), &[]).unwrap();
    assert_eq!(c.worker_threads, 0, "an explicit 0 stays one per core");
    let c = load(&format!("worker_threads = 1\n{MINIMAL}"), &[]).unwrap();
    assert_eq!(c.worker_threads, 1);
    let c = load(MINIMAL, &[("EVENTS_WORKER_THREADS", "4")]).unwrap();
    assert_eq!(c.worker_threads, 4);
    let e = load(&format!("worker_threads = 300\n{MINIMAL}"), &[])
        .unwrap_err()
        .to_string();
    assert_eq!(
        e,
        "invalid configuration: worker_threads: 300 is out of range (0..=256)"
    );
}
