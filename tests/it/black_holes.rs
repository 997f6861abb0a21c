//! Issue 10 points 5, 12 (last sentence) and 13 (counters): streams nobody will consume
//! are reported (health, `check`, gauges, one log line each); an event of a new type
//! published through the CLI or the API is consumed within a second under a glob route
//! although `discovery_interval` is 30 s; the dead-letter and outcome counters of a
//! followed type exist at 0 before the first event.

use crate::util::api::Api;
use crate::util::worker::cli;
use crate::util::*;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

const INVALID: &str = "events:bh:Booking.Created";
const NO_GROUP: &str = "events:bh:nobody.reads";

fn add(redis: &RedisServer, key: &str, n: usize) {
    for i in 0..n {
        redis.xadd(key, &[("id", &format!("x-{i}")), ("data", "{}")]);
    }
}

fn gauge(m: &str, name: &str, cause: &str) -> f64 {
    let all = parse_metrics(m);
    let found = samples(&all, name, &[("env", "bh"), ("cause", cause)]);
    assert_eq!(found.len(), 1, "{name}{{cause={cause}}}: {found:?}");
    found[0].value
}

fn health(api: &Api) -> Value {
    api.get("/api/events/health").json()
}

#[test]
fn unconsumed_streams_are_reported_in_health_check_metrics_and_the_log_once() {
    let s = Scenario::new("bh")
        .types(&["bh.routed"])
        .setup(|r| {
            add(r, INVALID, 3);
            add(r, NO_GROUP, 2);
            // Read by another service's group: not an alarm.
            add(r, "events:bh:other.svc", 1);
            r.cmd(&["XGROUP", "CREATE", "events:bh:other.svc", "other-svc", "0"]);
            // Empty, and the env's own keys: not reported.
            let id = r.xadd("events:bh:empty.one", &[("id", "e")]);
            r.cmd(&["XDEL", "events:bh:empty.one", &id]);
            add(r, "events:bh:outbox:group", 1);
            add(r, "events:bh:dlq", 1);
        })
        .config(|c| c.extra += "[health]\nscan_interval = \"200ms\"\n")
        .start();
    let api = s.api(None);
    let mut h = Value::Null;
    let seen = try_wait_until(Duration::from_secs(5), || {
        h = health(&api);
        h["unconsumed"]["total"] == json!(2)
    });
    assert!(seen, "{h}");
    assert_eq!(h["status"], json!("degraded"), "{h}");
    assert_eq!(
        h["reasons"],
        json!([{
            "code": "unconsumed_streams",
            "message": "2 stream(s) hold 5 entries nobody consumes: events:bh:Booking.Created \
                        (invalid_type, 3 entries), events:bh:nobody.reads (no_group, 2 entries); \
                        see `event-worker check`"
        }]),
        "{h}"
    );
    assert_eq!(
        h["unconsumed"],
        json!({"total": 2, "entries": 5, "streams": [
            {"stream": INVALID, "cause": "invalid_type", "entries": 3},
            {"stream": NO_GROUP, "cause": "no_group", "entries": 2},
        ]}),
        "{h}"
    );
    let m = s.workers[0].metrics();
    for (name, cause, want) in [
        ("event_worker_unconsumed_streams", "invalid_type", 1.0),
        ("event_worker_unconsumed_entries", "invalid_type", 3.0),
        ("event_worker_unconsumed_streams", "no_group", 1.0),
        ("event_worker_unconsumed_entries", "no_group", 2.0),
    ] {
        assert_eq!(gauge(&m, name, cause), want, "{name}{{cause={cause}}}");
    }

    let out = cli(&s.cfg, &["check"]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let lines: Vec<&str> = out.stdout.lines().collect();
    for want in [
        "warning: stream events:bh:Booking.Created holds 3 entries nobody consumes: its name is \
         not a valid event type ([a-z0-9_-] parts separated by dots), so no worker consumes or \
         dead-letters it; publish under a valid type and move or delete the stream",
        "warning: stream events:bh:nobody.reads holds 2 entries nobody consumes: no consumer \
         group reads it (no route of any service matches the type); add a route or delete the \
         stream",
        "warning: 2 stream(s) with 5 entries in all are not consumed by anyone",
    ] {
        assert!(
            lines.contains(&want),
            "missing {want:?} in:\n{}",
            out.stdout
        );
    }
    let out = cli(&s.cfg, &["--json", "check"]);
    let j: Value = serde_json::from_str(out.stdout.trim()).expect("check --json");
    assert_eq!(j["unconsumed"], h["unconsumed"], "{j}");

    // Several scans later, each stream was logged once.
    std::thread::sleep(Duration::from_millis(800));
    let logs = s.workers[0].output();
    for key in [INVALID, NO_GROUP] {
        let n = logs
            .lines()
            .filter(|l| l.contains("WARN") && l.contains(&format!("stream {key} holds")))
            .count();
        assert_eq!(n, 1, "{key} logged {n} times:\n{logs}");
    }

    // Deleted: the reason and the gauges go back to nothing.
    s.redis.cmd(&["DEL", INVALID, NO_GROUP]);
    wait_until("health ok again", Duration::from_secs(5), || {
        health(&api)["status"] == json!("ok")
    });
    let m = s.workers[0].metrics();
    for (name, cause) in [
        ("event_worker_unconsumed_streams", "invalid_type"),
        ("event_worker_unconsumed_entries", "no_group"),
    ] {
        assert_eq!(gauge(&m, name, cause), 0.0, "{name}{{cause={cause}}}");
    }
}

/// The reasons every `event_worker_dead_lettered_total` series of a type starts with.
const REASONS: [&str; 5] = [
    "permanent_error",
    "max_attempts_exceeded",
    "malformed",
    "max_deliveries_exceeded",
    "no_route",
];

/// Asserts the dead-letter and outcome counters of `ty` exist, at 0 for dead letters.
fn counters_start_at_zero(m: &str, ty: &str) {
    let all = parse_metrics(m);
    for reason in REASONS {
        let want = [
            ("env", "nt"),
            ("group", "group"),
            ("type", ty),
            ("reason", reason),
        ];
        let found = samples(&all, "event_worker_dead_lettered_total", &want);
        assert_eq!(
            found.iter().map(|s| s.value).collect::<Vec<_>>(),
            [0.0],
            "dead_lettered_total{{type={ty},reason={reason}}}"
        );
    }
    for outcome in ["success", "retried", "dead_lettered"] {
        let want = [
            ("env", "nt"),
            ("group", "group"),
            ("type", ty),
            ("outcome", outcome),
        ];
        let found = samples(&all, "event_worker_events_total", &want);
        assert_eq!(
            found.len(),
            1,
            "events_total{{type={ty},outcome={outcome}}}"
        );
    }
}

/// Waits at most 1 s for the sink to answer 2xx to `id`; returns how long it took.
fn consumed_within_a_second(sink: &HttpSink, id: &str) -> Duration {
    let t0 = Instant::now();
    let ok = try_wait_until(Duration::from_secs(1), || {
        sink.success_counts().contains_key(id)
    });
    let took = t0.elapsed();
    assert!(
        ok,
        "{id} not consumed within 1 s (discovery_interval is 30 s)"
    );
    took
}

#[test]
fn a_new_type_published_by_cli_or_api_is_consumed_within_a_second() {
    const TOKEN: &str = "new-type-token-0123456789";
    let s = Scenario::new("nt")
        .routes(|_, url| vec![Route::http(&["nt.exact", "nt.*"], url)])
        .config(|c| c.discovery_interval = "30s".into())
        .token(TOKEN)
        .start();
    // Before any event: the followed exact type's counters exist at 0.
    counters_start_at_zero(&s.workers[0].metrics(), "nt.exact");
    wait_until(
        "the worker listens for notices",
        Duration::from_secs(5),
        || {
            s.redis
                .cmd(&["PUBSUB", "NUMSUB", "events:nt:coordination"])
                .items()[1]
                .as_int()
                >= Some(1)
        },
    );

    let out = cli(
        &s.cfg,
        &["publish", "nt.cli", r#"{"a":1}"#, "--id", "cli-1"],
    );
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let cli_took = consumed_within_a_second(&s.sink, "cli-1");

    let api = Api::new(&s.cfg.api_addr(), Some(TOKEN));
    let r = api.post(
        "/api/events/publish",
        &json!({"type": "nt.api", "data": {"a": 2}, "id": "api-1"}),
    );
    assert_eq!(r.status, 202, "{}", r.body);
    let api_took = consumed_within_a_second(&s.sink, "api-1");
    eprintln!("new type consumed after: cli {cli_took:?}, api {api_took:?}");

    // A discovered type's counters start at 0 too (dead letters; it had one success).
    counters_start_at_zero(&s.workers[0].metrics(), "nt.cli");
}
