//! Configuration messages from the real binary: where a file fails (file, line, column,
//! the quoted line), what is wrong in plain words, what to do without a file, misspelled
//! `EVENTS_*` variables, and operator commands that run without the webhook secrets.

use crate::util::worker::run_once;
use crate::util::*;
use std::time::Duration;

/// Writes `toml` to a file and runs `event-worker --config <file> ARGS` with `envs`;
/// returns the output and the file's path.
fn run_file(toml: &str, args: &[&str], envs: &[(&str, &str)]) -> (worker::Output, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("event-worker.toml");
    std::fs::write(&path, toml).unwrap();
    let path = path.to_str().unwrap().to_string();
    let mut all = vec!["--config", path.as_str()];
    all.extend_from_slice(args);
    (run_once(&all, envs, Duration::from_secs(10)), path)
}

/// A config without Redis access needed (every case fails before connecting).
const ROUTE: &str = "[[routes]]\ntypes = [\"orders.created\"]\nhandler = \"blackhole\"\n";

#[test]
fn config_errors_name_the_file_line_column_and_cause() {
    // (case, file text, expected stderr with {path} for the file)
    let cases = [
        (
            "TOML syntax error",
            format!("env = \"cfg\"\nconcurrency = = 4\n{ROUTE}"),
            "event-worker: invalid configuration: config file {path}, line 2, column 15: \
             invalid string; expected `\"`, `'`\n   |\n 2 | concurrency = = 4\n   |               ^\n",
        ),
        (
            "unknown key in a section",
            format!("[retry]\nmax_attempt = 3\n{ROUTE}"),
            "event-worker: invalid configuration: config file {path}, line 2, column 1: unknown \
             key `max_attempt` in [retry]; did you mean `max_attempts`?\n   |\n 2 | max_attempt = 3\n   \
             | ^^^^^^^^^^^\n",
        ),
        (
            "wrong type",
            format!("env = \"cfg\"\nconcurrency = \"16\"\n{ROUTE}"),
            "event-worker: invalid configuration: config file {path}, line 2, column 15: \
             concurrency: expected an integer, found a string\n   |\n 2 | concurrency = \"16\"\n   \
             |               ^^^^\n",
        ),
        (
            "bad duration",
            format!("[breaker]\nopen_for = \"5x\"\n{ROUTE}"),
            "event-worker: invalid configuration: breaker.open_for: `5x` has an unknown unit `x` \
             (use ms, s, m, h or d); e.g. open_for = \"30s\"\n",
        ),
    ];
    let mut failures = Vec::new();
    for (case, toml, want) in &cases {
        for sub in ["run", "check"] {
            let (out, path) = run_file(toml, &[sub], &[]);
            let want = want.replace("{path}", &path);
            if out.code != Some(2) || out.stderr != want {
                failures.push(format!(
                    "{case} ({sub}): exit {:?}\n  stderr: {:?}\n  want:   {want:?}",
                    out.code, out.stderr
                ));
            }
        }
    }
    // A value from a variable names the variable.
    let (out, _) = run_file(ROUTE, &["check"], &[("EVENTS_CONCURRENCY", "many")]);
    let want = "event-worker: invalid configuration: EVENTS_CONCURRENCY: expected an integer \
                such as 8\n";
    if out.code != Some(2) || out.stderr != want {
        failures.push(format!(
            "EVENTS_CONCURRENCY=many: exit {:?}\n  stderr: {:?}\n  want:   {want:?}",
            out.code, out.stderr
        ));
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn run_and_check_without_a_file_say_how_to_pass_one() {
    for sub in ["run", "check"] {
        let out = run_once(&[sub], &[], Duration::from_secs(10));
        assert_eq!(out.code, Some(2), "{sub}: {}", out.stderr);
        assert_eq!(
            out.stderr,
            "event-worker: no config file given: `run` and `check` read their [[routes]] from \
             one; pass --config path/to/event-worker.toml (or set EVENTS_CONFIG); other keys may \
             also come from EVENTS_* variables (see README \"Configuration\")\n",
            "{sub}"
        );
    }
}

/// The warning about `EVENTS_CONCURENCY` (its value is never shown).
const TYPO_WARNING: &str = "environment variable EVENTS_CONCURENCY is not one event-worker \
                            reads, so it is ignored; did you mean EVENTS_CONCURRENCY?";

#[test]
fn misspelled_variables_are_warned_about_by_check_and_run() {
    let redis = RedisServer::start();
    let value = "Typo-Value-Never-Shown";
    let toml = WorkerConfig::new("envtypo", &redis.url())
        .route(Route::blackhole(&["orders.created"]))
        .to_toml();
    let (out, _) = run_file(&toml, &["check"], &[("EVENTS_CONCURENCY", value)]);
    assert_eq!(out.code, Some(0), "check: {}", out.stderr);
    assert!(
        out.stdout
            .lines()
            .any(|l| l == format!("warning: {TYPO_WARNING}")),
        "check does not warn about the typo:\n{}",
        out.stdout
    );
    let (json, _) = run_file(&toml, &["--json", "check"], &[("EVENTS_CONCURENCY", value)]);
    let v: serde_json::Value = serde_json::from_str(json.stdout.trim()).unwrap();
    assert!(
        v["warnings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|w| w == TYPO_WARNING),
        "{v}"
    );

    let mut cfg =
        WorkerConfig::new("envtypo", &redis.url()).route(Route::blackhole(&["orders.created"]));
    cfg.env_vars
        .push(("EVENTS_CONCURENCY".to_string(), value.to_string()));
    let mut w = WorkerProcess::start("typo", cfg);
    w.wait_ready(Duration::from_secs(15));
    w.sigterm();
    let _ = w.wait_exit(Duration::from_secs(8));
    let logs = w.output();
    assert!(
        logs.lines()
            .any(|l| l.contains("WARN") && l.contains(TYPO_WARNING)),
        "run logs no WARN line about the typo:\n{logs}"
    );
    for text in [&out.stdout, &out.stderr, &json.stdout, &logs] {
        assert!(
            !text.contains(value),
            "the variable's value was shown: {text}"
        );
    }
}

#[test]
fn operator_commands_run_without_the_route_signing_secret() {
    let env = "nosecret";
    let redis = RedisServer::start();
    let mut route = Route::http(&["orders.created"], "http://127.0.0.1:9/events");
    route.signing_secret_env = Some("SINK_SECRET_FOR_IT".into());
    let toml = WorkerConfig::new(env, &redis.url()).route(route).to_toml();
    let missing =
        "routes[0].signing_secret_env: environment variable SINK_SECRET_FOR_IT is not set";
    let mut failures = Vec::new();
    for args in [
        &["publish", "orders.created", "{}"][..],
        &["dlq", "stats"][..],
        &["dlq", "list"][..],
        &["history"][..],
    ] {
        let (out, _) = run_file(&toml, args, &[]);
        if out.code != Some(0) {
            failures.push(format!("{args:?}: exit {:?}: {}", out.code, out.stderr));
        }
    }
    assert_eq!(redis.xlen(&stream_key(env, "orders.created")), 1);
    // check reports the missing secret and passes (it is the only problem).
    let (out, _) = run_file(&toml, &["check"], &[]);
    let warning = format!("warning: {missing}; `run` will refuse to start");
    if out.code != Some(0) || !out.stdout.lines().any(|l| l == warning) {
        failures.push(format!(
            "check: exit {:?}, stdout lacks {warning:?}:\n{}{}",
            out.code, out.stdout, out.stderr
        ));
    }
    // run still refuses, naming the route and the variable.
    let (out, _) = run_file(&toml, &["run"], &[]);
    let want = format!("event-worker: invalid configuration: {missing}\n");
    if out.code != Some(2) || out.stderr != want {
        failures.push(format!(
            "run: exit {:?}\n  stderr: {:?}\n  want:   {want:?}",
            out.code, out.stderr
        ));
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
