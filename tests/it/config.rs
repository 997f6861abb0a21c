//! Configuration: bad config of several kinds exits 2 at start naming the
//! key, before touching Redis; `check` and `publish` behave as documented.

use crate::util::worker::run_once;
use crate::util::*;
use std::net::TcpListener;
use std::time::Duration;

const PASSWORD: &str = "Cn4ry-s3cret-pw";

/// A valid base config whose Redis URL points at a listener that must never
/// be connected to; with a password that must never be printed.
fn base(listener: &TcpListener) -> String {
    let url = format!(
        "redis://worker:{PASSWORD}@127.0.0.1:{}",
        listener.local_addr().unwrap().port()
    );
    WorkerConfig::new("cfgtest", &url)
        .route(Route::http(
            &["orders.created"],
            "http://127.0.0.1:9/events",
        ))
        .to_toml()
}

fn replace(toml: &str, from: &str, to: &str) -> String {
    assert!(toml.contains(from), "base config lacks {from:?}:\n{toml}");
    toml.replacen(from, to, 1)
}

fn assert_no_connection(listener: &TcpListener, case: &str) {
    listener.set_nonblocking(true).unwrap();
    match listener.accept() {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
        Ok(_) => panic!("{case}: the daemon connected to Redis before rejecting its config"),
        Err(e) => panic!("{case}: accept: {e}"),
    }
}

fn run_with_config(toml: &str, sub: &[&str], envs: &[(&str, &str)]) -> worker::Output {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, toml).unwrap();
    let path = path.to_str().unwrap().to_string();
    let mut args = vec!["--config", path.as_str()];
    args.extend_from_slice(sub);
    run_once(&args, envs, Duration::from_secs(10))
}

#[test]
fn bad_config_exits_2_naming_the_key_before_connecting() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let ok = base(&listener);
    let route_url = "url = \"http://127.0.0.1:9/events\"\n";
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "concurrency zero",
            replace(&ok, "concurrency = 4\n", "concurrency = 0\n"),
            "concurrency",
        ),
        (
            "concurrency wrong type",
            replace(&ok, "concurrency = 4\n", "concurrency = \"lots\"\n"),
            "concurrency",
        ),
        (
            "max_attempts zero",
            replace(&ok, "max_attempts = 3\n", "max_attempts = 0\n"),
            "retry.max_attempts",
        ),
        (
            "initial_backoff not a duration",
            replace(
                &ok,
                "initial_backoff = \"50ms\"\n",
                "initial_backoff = \"soon\"\n",
            ),
            "retry.initial_backoff",
        ),
        (
            "visibility_timeout not a duration",
            replace(
                &ok,
                "visibility_timeout = \"30s\"\n",
                "visibility_timeout = \"forever\"\n",
            ),
            "visibility_timeout",
        ),
        (
            "open_for not a duration",
            replace(&ok, "open_for = \"30s\"\n", "open_for = \"-5s\"\n"),
            "breaker.open_for",
        ),
        (
            "route url not a url",
            replace(&ok, route_url, "url = \"not a url\"\n"),
            "routes[0].url",
        ),
        (
            "http route without url",
            replace(&ok, route_url, ""),
            "routes[0].url",
        ),
        (
            "unknown handler",
            replace(&ok, "handler = \"http\"\n", "handler = \"ftp\"\n"),
            "routes[0].handler",
        ),
        (
            "reserved type",
            replace(&ok, "types = [\"orders.created\"]\n", "types = [\"dlq\"]\n"),
            "routes[0].types",
        ),
        (
            "invalid type",
            replace(
                &ok,
                "types = [\"orders.created\"]\n",
                "types = [\"Orders Created\"]\n",
            ),
            "routes[0].types",
        ),
        (
            "invalid env",
            replace(&ok, "env = \"cfgtest\"\n", "env = \"Prod_Env!\"\n"),
            "env",
        ),
        (
            "api listen not an address",
            replace(
                &ok,
                "listen = \"127.0.0.1:",
                "listen = \"nowhere\"\n# was \"127.0.0.1:",
            ),
            "api.listen",
        ),
    ];
    let mut failures = Vec::new();
    for (case, toml, key) in &cases {
        for sub in [&["run"][..], &["check"][..]] {
            let out = run_with_config(toml, sub, &[]);
            let all = format!("{}{}", out.stdout, out.stderr);
            let label = format!("{case} ({})", sub[0]);
            if out.code != Some(2) {
                failures.push(format!(
                    "{label}: exit {:?} (want 2) after {:?}; stderr: {}",
                    out.code,
                    out.elapsed,
                    out.stderr.trim()
                ));
            } else if !out.stderr.contains(key) {
                failures.push(format!(
                    "{label}: stderr does not name `{key}`: {}",
                    out.stderr.trim()
                ));
            }
            if all.contains(PASSWORD) {
                failures.push(format!("{label}: the Redis password was printed: {all}"));
            }
            assert_no_connection(&listener, &label);
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} bad-config runs misbehaved:\n{}",
        failures.len(),
        cases.len() * 2,
        failures.join("\n")
    );
}

#[test]
fn bad_config_from_environment_and_broken_files() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let ok = base(&listener);
    let mut failures = Vec::new();
    type Case<'a> = (&'a str, String, Vec<(&'a str, &'a str)>, &'a str);
    let cases: Vec<Case> = vec![
        (
            "EVENTS_CONCURRENCY=0",
            ok.clone(),
            vec![("EVENTS_CONCURRENCY", "0")],
            "concurrency",
        ),
        (
            "EVENTS_RETRY_MAX_ATTEMPTS=0",
            ok.clone(),
            vec![("EVENTS_RETRY_MAX_ATTEMPTS", "0")],
            "max_attempts",
        ),
        (
            "EVENTS_ENV invalid (file has no env)",
            replace(&ok, "env = \"cfgtest\"\n", ""),
            vec![("EVENTS_ENV", "NOT VALID")],
            "env",
        ),
        (
            "TOML syntax error",
            replace(&ok, "concurrency = 4\n", "concurrency = = 4\n"),
            vec![],
            "",
        ),
    ];
    for (case, toml, envs, key) in &cases {
        let out = run_with_config(toml, &["run"], envs);
        let all = format!("{}{}", out.stdout, out.stderr);
        if out.code != Some(2) {
            failures.push(format!(
                "{case}: exit {:?} (want 2); stderr: {}",
                out.code,
                out.stderr.trim()
            ));
        } else if !out.stderr.to_lowercase().contains(key) {
            failures.push(format!(
                "{case}: stderr does not name `{key}`: {}",
                out.stderr.trim()
            ));
        }
        if all.contains(PASSWORD) {
            failures.push(format!("{case}: the Redis password was printed"));
        }
        assert_no_connection(&listener, case);
    }
    // A missing config file.
    let out = run_once(
        &["--config", "/nonexistent/event-worker.toml", "run"],
        &[],
        Duration::from_secs(10),
    );
    if out.code.is_none() || out.code == Some(0) {
        failures.push(format!("missing config file: exit {:?}", out.code));
    } else if !out.stderr.contains("/nonexistent/event-worker.toml") {
        failures.push(format!(
            "missing config file: stderr does not name the file: {}",
            out.stderr.trim()
        ));
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn check_fails_when_redis_is_unreachable_and_passes_when_it_is_up() {
    // Unreachable: a port nobody listens on.
    let dead_port = free_port();
    let url = format!("redis://worker:{PASSWORD}@127.0.0.1:{dead_port}");
    let toml = WorkerConfig::new("checkenv", &url)
        .route(Route::http(
            &["orders.created"],
            "http://127.0.0.1:9/events",
        ))
        .to_toml();
    let out = run_with_config(&toml, &["check"], &[]);
    assert!(
        out.code.is_some_and(|c| c != 0),
        "check with Redis down: exit {:?} after {:?}; stderr: {}",
        out.code,
        out.elapsed,
        out.stderr
    );
    assert!(
        !out.stderr.trim().is_empty(),
        "check with Redis down gave no reason"
    );
    assert!(
        !format!("{}{}", out.stdout, out.stderr).contains(PASSWORD),
        "password printed: {}",
        out.stderr
    );

    // Reachable.
    let redis = RedisServer::start();
    let toml = WorkerConfig::new("checkenv", &redis.url())
        .route(Route::http(
            &["orders.created"],
            "http://127.0.0.1:9/events",
        ))
        .to_toml();
    let out = run_with_config(&toml, &["check"], &[]);
    assert_eq!(
        out.code,
        Some(0),
        "check with Redis up; stdout: {}\nstderr: {}",
        out.stdout,
        out.stderr
    );
    assert!(
        format!("{}{}", out.stdout, out.stderr).contains("orders.created"),
        "check does not report what run would consume: {}",
        out.stdout
    );
    let out = run_with_config(&toml, &["--json", "check"], &[]);
    assert_eq!(out.code, Some(0), "check --json: {}", out.stderr);
    assert!(
        serde_json::from_str::<serde_json::Value>(out.stdout.trim()).is_ok(),
        "check --json did not print JSON: {:?}",
        out.stdout
    );
}

#[test]
fn publish_subcommand_appends_one_well_formed_event() {
    let env = "publishcli";
    let redis = RedisServer::start();
    let _dump = redis.dump_on_panic(env);
    let toml = WorkerConfig::new(env, &redis.url())
        .route(Route::blackhole(&["orders.created"]))
        .to_toml();
    let out = run_with_config(
        &toml,
        &[
            "publish",
            "orders.created",
            r#"{"order":7}"#,
            "--id",
            "cli-1",
            "--correlation-id",
            "corr-cli",
        ],
        &[],
    );
    assert_eq!(out.code, Some(0), "publish: {}", out.stderr);
    let entries = redis.xrange(&stream_key(env, "orders.created"));
    assert_eq!(entries.len(), 1, "{entries:?}");
    let e = &entries[0];
    assert!(
        out.stdout.contains(&e.entry_id),
        "publish must print the entry id {}: {:?}",
        e.entry_id,
        out.stdout
    );
    assert_eq!(e.get("id"), Some("cli-1"));
    assert_eq!(e.get("type"), Some("orders.created"));
    assert_eq!(e.get("correlationid"), Some("corr-cli"));
    let data: serde_json::Value = serde_json::from_str(e.get("data").unwrap()).unwrap();
    assert_eq!(data, serde_json::json!({"order": 7}));

    // Bad JSON and reserved types are refused without writing anything.
    let out = run_with_config(&toml, &["publish", "orders.created", "{nope"], &[]);
    assert!(out.code.is_some_and(|c| c != 0), "bad JSON accepted");
    let out = run_with_config(&toml, &["publish", "dlq", "{}"], &[]);
    assert!(out.code.is_some_and(|c| c != 0), "reserved type accepted");
    assert_eq!(redis.xlen(&stream_key(env, "orders.created")), 1);
    assert!(!redis.exists(&dlq_key(env)), "publish wrote to the DLQ key");
}

#[test]
fn migrate_applies_once_even_when_two_instances_race() {
    let env = "migr";
    let redis = RedisServer::start();
    let _dump = redis.dump_on_panic(env);
    let toml = WorkerConfig::new(env, &redis.url())
        .route(Route::blackhole(&["orders.created"]))
        .to_toml();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.toml");
    std::fs::write(&path, &toml).unwrap();
    let path = path.to_str().unwrap().to_string();
    let spawn = || {
        worker::command()
            .args(["--config", &path, "migrate"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (a, b) = (spawn(), spawn());
    let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    assert!(
        a.status.success() && b.status.success(),
        "concurrent migrate: {:?} {}\n{:?} {}",
        a.status,
        String::from_utf8_lossy(&a.stderr),
        b.status,
        String::from_utf8_lossy(&b.stderr)
    );
    let key = format!("events:{env}:migrations");
    let applied = redis.cmd(&["HGETALL", &key]);
    assert!(
        !applied.items().is_empty(),
        "no migration recorded in {key}"
    );
    let again = run_with_config(&toml, &["migrate"], &[]);
    assert_eq!(again.code, Some(0), "second migrate: {}", again.stderr);
    assert_eq!(
        redis.cmd(&["HGETALL", &key]),
        applied,
        "a second migrate changed the record"
    );
    let other: Vec<String> = redis
        .scan_keys("*")
        .into_iter()
        .filter(|k| !k.starts_with(&format!("events:{env}:")))
        .collect();
    assert!(other.is_empty(), "migrate wrote outside its env: {other:?}");
}

#[test]
fn redis_password_never_printed_by_a_running_worker() {
    let port = free_port();
    let url = format!("redis://worker:{PASSWORD}@127.0.0.1:{port}");
    let mut cfg = WorkerConfig::new("pwtest", &url).route(Route::http(
        &["orders.created"],
        "http://127.0.0.1:9/events",
    ));
    cfg.api_port = free_port();
    let mut worker = WorkerProcess::start("w1", cfg);
    std::thread::sleep(Duration::from_millis(2500));
    let mut seen = Vec::new();
    for path in ["/metrics", "/readyz", "/livez", "/api/events/health"] {
        if let Some((status, body)) = worker.get(path) {
            seen.push(format!("{path} {status}: {body}"));
        }
    }
    if worker.is_running() {
        worker.sigterm();
        let _ = worker.wait_exit(Duration::from_secs(8));
    }
    let logs = worker.output();
    let http = seen.join("\n");
    assert!(
        !logs.contains(PASSWORD),
        "the Redis password appears in the worker's output:\n{logs}"
    );
    assert!(
        !http.contains(PASSWORD),
        "the Redis password appears in HTTP answers:\n{http}"
    );
    assert!(
        !logs.contains("worker:") || logs.contains("***"),
        "the URL is shown without redaction:\n{logs}"
    );
}
