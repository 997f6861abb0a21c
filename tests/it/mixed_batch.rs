//! A mixed batch: successes, transient failures, permanent failures,
//! always-failing events and malformed entries of every kind. Exact delivery
//! counts per event, the exact DLQ set with reasons, nothing left pending.

use crate::util::*;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

const TY: &str = "orders.created";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// Succeeds after this many requests (the last one answered 2xx).
    Success(usize),
    /// DLQ `permanent_error` after one request.
    Permanent,
    /// DLQ `max_attempts_exceeded` after `max_attempts` requests.
    Exhausted,
}

#[test]
fn t24_mixed_batch_exact_counts_and_exact_dlq() {
    let env = "mixed";
    let mut s = Scenario::new(env)
        .types(&[TY])
        .route_timeout("1s")
        .config(|c| c.max_attempts = 3)
        .workers(0)
        .start();
    let (redis, sink) = (&s.redis, &s.sink);

    let mut expected: BTreeMap<String, Expect> = BTreeMap::new();
    for i in 0..20 {
        expected.insert(format!("ok-{i:02}"), Expect::Success(1));
    }
    for i in 0..4 {
        let id = format!("tr-503-{i}");
        sink.script(
            &id,
            vec![Action::status(503), Action::status(503), Action::ok()],
        );
        expected.insert(id, Expect::Success(3));
    }
    sink.script(
        "tr-mixed-a",
        vec![Action::status(500), Action::status(429), Action::ok()],
    );
    sink.script(
        "tr-mixed-b",
        vec![
            Action::status(408),
            Action::status(502),
            Action::status(204),
        ],
    );
    expected.insert("tr-mixed-a".into(), Expect::Success(3));
    expected.insert("tr-mixed-b".into(), Expect::Success(3));
    // The first request outlives the route timeout (1s): retryable, then ok.
    // (Its late answer is a 503 so that it can never count as a success.)
    sink.script(
        "tr-timeout",
        vec![Action::delayed(503, Duration::from_secs(3)), Action::ok()],
    );
    expected.insert("tr-timeout".into(), Expect::Success(2));
    for (id, status) in [
        ("perm-400-a", 400),
        ("perm-400-b", 400),
        ("perm-404", 404),
        ("perm-422", 422),
    ] {
        sink.script(id, vec![Action::status(status)]);
        expected.insert(id.into(), Expect::Permanent);
    }
    for i in 0..3 {
        let id = format!("fail-{i}");
        sink.script(&id, vec![Action::status(503)]);
        expected.insert(id, Expect::Exhausted);
    }

    // Publish everything before the worker starts, plus malformed entries.
    let key = stream_key(env, TY);
    let mut entry_of: BTreeMap<String, String> = BTreeMap::new();
    for id in expected.keys() {
        entry_of.insert(id.clone(), publish(redis, env, TY, id));
    }
    // A valid event with every optional field set.
    let full_entry = redis.xadd(
        &key,
        &[
            ("id", "ok-full"),
            ("type", TY),
            (
                "data",
                r#"{"order":42,"items":["a","b"],"nested":{"x":null}}"#,
            ),
            ("source", "/api/orders"),
            ("time", "2026-11-26T10:00:00Z"),
            ("specversion", "1.0"),
            ("correlationid", "corr-42"),
            ("attempt", "0"),
        ],
    );
    expected.insert("ok-full".into(), Expect::Success(1));
    entry_of.insert("ok-full".into(), full_entry);

    let malformed: BTreeMap<&str, String> = [
        (
            "missing id",
            redis.xadd(&key, &[("type", TY), ("data", "{}")]),
        ),
        (
            "missing type",
            redis.xadd(&key, &[("id", "m-no-type"), ("data", "{}")]),
        ),
        (
            "missing data",
            redis.xadd(&key, &[("id", "m-no-data"), ("type", TY)]),
        ),
        (
            "data not json",
            redis.xadd(
                &key,
                &[("id", "m-bad-json"), ("type", TY), ("data", "{not json")],
            ),
        ),
        (
            "type mismatch",
            redis.xadd(
                &key,
                &[
                    ("id", "m-wrong-type"),
                    ("type", "orders.other"),
                    ("data", "{}"),
                ],
            ),
        ),
        (
            "attempt not a number",
            redis.xadd(
                &key,
                &[
                    ("id", "m-attempt-abc"),
                    ("type", TY),
                    ("data", "{}"),
                    ("attempt", "abc"),
                ],
            ),
        ),
        (
            "attempt negative",
            redis.xadd(
                &key,
                &[
                    ("id", "m-attempt-neg"),
                    ("type", TY),
                    ("data", "{}"),
                    ("attempt", "-1"),
                ],
            ),
        ),
    ]
    .into_iter()
    .collect();

    s.add_worker();
    let (redis, sink, worker) = (&s.redis, &s.sink, &mut s.workers[0]);

    let successes_expected = expected
        .values()
        .filter(|e| matches!(e, Expect::Success(_)))
        .count();
    let dlq_expected = expected.len() - successes_expected + malformed.len();
    let done = try_wait_until(Duration::from_secs(25), || {
        sink.success_counts().len() >= successes_expected
            && redis.xlen(&dlq_key(env)) >= dlq_expected as i64
            && drained(redis, env, "group", &[TY])
    });
    worker.assert_running();
    assert!(
        done,
        "batch did not drain in 25s: {} ids succeeded (want {successes_expected}), dlq has {} (want {dlq_expected})\n{}",
        sink.success_counts().len(),
        redis.xlen(&dlq_key(env)),
        sink.ledger_dump()
    );
    // Late duplicates would show up now.
    std::thread::sleep(Duration::from_millis(1000));
    worker.assert_running();

    let ledger = sink.ledger();
    let requests = sink.request_counts();
    let successes = sink.success_counts();
    let dlq = dlq_entries(redis, env);
    let dump = sink.ledger_dump();

    // No request for an id we did not publish as valid (malformed never reach the handler).
    for r in &ledger {
        assert!(
            expected.contains_key(&r.id),
            "unexpected request for id {:?} (malformed entries must not reach the handler)\n{dump}",
            r.id
        );
    }

    // Exact per-id request counts, attempt numbering and success counts.
    for (id, exp) in &expected {
        let reqs: Vec<_> = ledger.iter().filter(|r| &r.id == id).collect();
        let n = requests.get(id).copied().unwrap_or(0);
        let want = match exp {
            Expect::Success(n) => *n,
            Expect::Permanent => 1,
            Expect::Exhausted => 3,
        };
        assert_eq!(n, want, "requests for {id} ({exp:?})\n{dump}");
        let attempts: Vec<Option<u64>> = reqs.iter().map(|r| r.attempt).collect();
        let want_attempts: Vec<Option<u64>> = (0..want as u64).map(Some).collect();
        assert_eq!(attempts, want_attempts, "attempt fields for {id}\n{dump}");
        let ok = successes.get(id).copied().unwrap_or(0);
        match exp {
            Expect::Success(_) => assert_eq!(ok, 1, "successful deliveries of {id}\n{dump}"),
            _ => assert_eq!(ok, 0, "successful deliveries of {id}\n{dump}"),
        }
    }

    // The CloudEvents body of the fully specified event.
    let full = ledger.iter().find(|r| r.id == "ok-full").unwrap();
    assert!(
        full.content_type
            .starts_with("application/cloudevents+json"),
        "content-type {:?}",
        full.content_type
    );
    assert_eq!(full.body["specversion"], "1.0", "body {}", full.body);
    assert_eq!(full.body["type"], TY, "body {}", full.body);
    assert_eq!(full.body["source"], "/api/orders", "body {}", full.body);
    assert_eq!(full.body["correlationid"], "corr-42", "body {}", full.body);
    assert_eq!(
        full.body["data"],
        serde_json::json!({"order":42,"items":["a","b"],"nested":{"x":null}}),
        "data must be the JSON value, not a string: {}",
        full.body
    );
    assert!(full.body.get("time").is_some(), "body {}", full.body);
    let plain = ledger.iter().find(|r| r.id == "ok-00").unwrap();
    assert_eq!(plain.body["data"], serde_json::json!({"n":"ok-00"}));

    // The exact DLQ set: key = event id for valid events, entry id for malformed ones.
    let mut got: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for e in &dlq {
        let entry = e
            .get("dlq_entry_id")
            .unwrap_or("<no dlq_entry_id>")
            .to_string();
        let key = malformed
            .iter()
            .find(|(_, id)| **id == entry)
            .map(|(what, _)| format!("malformed:{what}"))
            .or_else(|| e.get("id").map(str::to_string))
            .unwrap_or_else(|| format!("<unknown {entry}>"));
        got.entry(key)
            .or_default()
            .push(e.get("dlq_reason").unwrap_or("<none>").to_string());
    }
    let mut want: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (id, exp) in &expected {
        match exp {
            Expect::Permanent => {
                want.insert(id.clone(), vec!["permanent_error".into()]);
            }
            Expect::Exhausted => {
                want.insert(id.clone(), vec!["max_attempts_exceeded".into()]);
            }
            Expect::Success(_) => {}
        }
    }
    for what in malformed.keys() {
        want.insert(format!("malformed:{what}"), vec!["malformed".into()]);
    }
    assert_eq!(got, want, "DLQ set (id -> reasons)");

    // DLQ provenance fields.
    for e in &dlq {
        for f in [
            "dlq_reason",
            "dlq_error",
            "dlq_attempts",
            "dlq_group",
            "dlq_stream",
            "dlq_entry_id",
            "dlq_failed_at",
            "dlq_consumer",
        ] {
            assert!(
                e.get(f).is_some_and(|v| !v.is_empty()),
                "DLQ entry {} lacks {f}: {:?}",
                e.entry_id,
                e.fields
            );
        }
        assert_eq!(e.get("dlq_group"), Some("group"), "{:?}", e.fields);
        assert_eq!(e.get("dlq_stream"), Some(key.as_str()), "{:?}", e.fields);
        assert_eq!(e.get("dlq_consumer"), Some("w1"), "{:?}", e.fields);
        if let Some(id) = e.get("id")
            && let Some(orig) = entry_of.get(id)
        {
            assert_eq!(
                e.get("dlq_entry_id"),
                Some(orig.as_str()),
                "dlq_entry_id of {id} must be the original stream entry id"
            );
            assert_eq!(e.get("type"), Some(TY), "{:?}", e.fields);
            assert_eq!(
                e.get("data"),
                Some(format!(r#"{{"n":"{id}"}}"#).as_str()),
                "original data kept: {:?}",
                e.fields
            );
            let attempts = match expected[id] {
                Expect::Permanent => "1",
                _ => "3",
            };
            assert_eq!(
                e.get("dlq_attempts"),
                Some(attempts),
                "dlq_attempts of {id}: {:?}",
                e.fields
            );
        }
    }
    // Original fields of malformed entries are kept too.
    let bad_json = dlq
        .iter()
        .find(|e| e.get("dlq_entry_id") == Some(malformed["data not json"].as_str()))
        .unwrap();
    assert_eq!(bad_json.get("data"), Some("{not json"));
    assert_eq!(bad_json.get("id"), Some("m-bad-json"));

    assert_drained(redis, env, "group", &[TY]);
    worker.assert_running();
}

#[test]
fn glob_route_picks_up_new_streams_and_ignores_unrouted_types() {
    let env = "glob";
    let mut s = Scenario::new(env).types(&["shop.*"]).workers(0).start();
    // One matching stream exists before the start, one appears later.
    publish(&s.redis, env, "shop.paid", "paid-0");
    s.add_worker();
    let (redis, sink, worker) = (&s.redis, &s.sink, &mut s.workers[0]);
    worker.wait_ready(Duration::from_secs(15));
    for i in 1..5 {
        publish(redis, env, "shop.paid", &format!("paid-{i}"));
    }
    for i in 0..5 {
        publish(redis, env, "shop.refunded", &format!("refund-{i}"));
        publish(redis, env, "audit.login", &format!("audit-{i}"));
    }
    wait_until("10 shop events delivered", Duration::from_secs(15), || {
        sink.success_counts().len() >= 10
    });
    std::thread::sleep(Duration::from_millis(700));
    let counts = sink.request_counts();
    let want: BTreeSet<String> = (0..5)
        .flat_map(|i| [format!("paid-{i}"), format!("refund-{i}")])
        .collect();
    assert_eq!(
        counts.keys().cloned().collect::<BTreeSet<_>>(),
        want,
        "{}",
        sink.ledger_dump()
    );
    assert!(counts.values().all(|n| *n == 1), "{}", sink.ledger_dump());
    let audit_groups = redis.xinfo_group_names(&stream_key(env, "audit.login"));
    assert!(
        audit_groups.is_empty(),
        "a type no route matches must not be read, but it has groups {audit_groups:?}"
    );
    assert_drained(redis, env, "group", &["shop.paid", "shop.refunded"]);
    worker.assert_running();
}

#[test]
fn t01_conservation_happy_path_three_types() {
    let env = "happy";
    let types = ["orders.created", "orders.paid", "users.signed_up"];
    let per_type = 300;
    let mut s = Scenario::new("T01")
        .env(env)
        .types(&types)
        .routes(|_, url| {
            vec![
                Route::http(&["orders.*"], url),
                Route::http(&["users.signed_up"], url),
            ]
        })
        .config(|c| c.concurrency = 8)
        .workers(0)
        .start();
    for ty in types {
        publish(&s.redis, env, ty, &format!("{ty}-warmup"));
    }
    s.add_worker();
    let (redis, sink, worker) = (&s.redis, &s.sink, &mut s.workers[0]);
    worker.wait_ready(Duration::from_secs(15));
    for i in 0..per_type {
        for ty in types {
            publish(redis, env, ty, &format!("{ty}-{i:04}"));
        }
    }
    let total = types.len() * (per_type + 1);
    wait_until("all delivered", Duration::from_secs(30), || {
        sink.success_counts().len() == total
    });
    wait_until("drained", Duration::from_secs(10), || {
        drained(redis, env, "group", &types)
    });
    std::thread::sleep(Duration::from_millis(500));
    let counts = sink.request_counts();
    assert_eq!(counts.len(), total);
    let dups: Vec<_> = counts.iter().filter(|(_, n)| **n != 1).collect();
    assert!(dups.is_empty(), "delivered more than once: {dups:?}");
    for r in sink.ledger() {
        let ty = r.body["type"].as_str().unwrap_or_default().to_string();
        assert!(r.id.starts_with(&ty), "{} delivered with type {ty}", r.id);
    }
    assert_eq!(redis.xlen(&dlq_key(env)), 0);
    // The conservation checker over the same run (row T01 of docs/reliability-matrix.md).
    let mut published = crate::util::checker::Published::default();
    for i in 0..per_type {
        for ty in types {
            published.ack(&format!("{ty}-{i:04}"));
        }
    }
    for ty in types {
        published.ack(&format!("{ty}-warmup"));
    }
    let rep = crate::util::checker::check(&published, sink, redis, env, &Default::default());
    rep.assert_ok("T01", 0, "");
    let m = parse_metrics(&worker.metrics());
    rep.assert_metrics("T01", std::slice::from_ref(&m), env, Some(0));
    for ty in types {
        assert_eq!(
            sum(
                &m,
                "event_worker_events_total",
                &[
                    ("env", env),
                    ("group", "group"),
                    ("type", ty),
                    ("outcome", "success")
                ]
            ),
            (per_type + 1) as f64,
            "events_total{{type={ty},outcome=success}}"
        );
    }
    worker.assert_running();
}

#[test]
fn route_headers_are_sent_and_blackhole_acks_without_calling_anything() {
    let env = "routes";
    let mut sc = Scenario::new(env)
        .types(&[TY])
        .routes(|_, url| {
            let mut http = Route::http(&[TY], url);
            http.headers = vec![
                ("x-api-key".into(), "k-123".into()),
                ("x-tenant".into(), "acme".into()),
            ];
            vec![http, Route::blackhole(&["audit.*"])]
        })
        .workers(0)
        .start();
    for i in 0..20 {
        publish(&sc.redis, env, "audit.login", &format!("audit-{i}"));
    }
    publish(&sc.redis, env, TY, "with-headers");
    sc.add_worker();
    let (redis, sink, worker) = (&sc.redis, &sc.sink, &mut sc.workers[0]);
    wait_until("delivered and drained", Duration::from_secs(15), || {
        sink.success_counts().len() == 1 && drained(redis, env, "group", &[TY, "audit.login"])
    });
    std::thread::sleep(Duration::from_millis(300));
    let reqs = sink.requests_for("with-headers");
    assert_eq!(sink.request_count(), 1, "{}", sink.ledger_dump());
    assert_eq!(
        reqs[0].headers.get("x-api-key").map(String::as_str),
        Some("k-123")
    );
    assert_eq!(
        reqs[0].headers.get("x-tenant").map(String::as_str),
        Some("acme")
    );
    assert_eq!(reqs[0].path, "/events");
    assert_eq!(
        redis.xinfo_group_names(&stream_key(env, "audit.login")),
        vec!["group".to_string()],
        "the blackhole route consumes its stream"
    );
    assert_eq!(redis.xlen(&dlq_key(env)), 0);
    worker.assert_running();
}

#[test]
fn t05_ack_only_after_the_handler_succeeded() {
    let env = "ackafter";
    let mut s = Scenario::new(env).types(&[TY]).workers(0).start();
    s.sink.script(
        "hold",
        vec![Action::delayed(200, Duration::from_millis(1500))],
    );
    let monitor = Monitor::start(&s.redis);
    s.add_worker();
    let (redis, sink, worker) = (&s.redis, &s.sink, &mut s.workers[0]);
    worker.wait_ready(Duration::from_secs(15));
    let entry = publish(redis, env, TY, "hold");
    wait_until("handler running", Duration::from_secs(10), || {
        sink.in_progress() == 1
    });
    let pending = redis.xpending_detail(&stream_key(env, TY), "group");
    assert_eq!(
        pending
            .iter()
            .map(|p| (p.0.as_str(), p.3))
            .collect::<Vec<_>>(),
        vec![(entry.as_str(), 1)],
        "while the handler runs the entry is pending with delivery count 1"
    );
    wait_until("handled and acked", Duration::from_secs(10), || {
        sink.success_counts().len() == 1 && drained(redis, env, "group", &[TY])
    });
    let transcript = monitor.stop();
    let answered = sink.unix_time(sink.requests_for("hold")[0].answered.unwrap());
    let noack: Vec<_> = transcript
        .iter()
        .filter(|l| l.args.iter().any(|a| a.eq_ignore_ascii_case("NOACK")))
        .map(|l| l.raw.clone())
        .collect();
    assert!(noack.is_empty(), "NOACK used: {noack:?}");
    let acks: Vec<_> = transcript
        .iter()
        .filter(|l| {
            l.args
                .first()
                .is_some_and(|c| c.eq_ignore_ascii_case("XACK"))
                && l.args.iter().any(|a| a == &entry)
        })
        .collect();
    assert_eq!(acks.len(), 1, "XACKs of the entry: {acks:?}");
    assert!(
        acks[0].ts >= answered - 0.005,
        "XACK at {:.3} precedes the handler's answer at {answered:.3}",
        acks[0].ts
    );
    worker.assert_running();
}
