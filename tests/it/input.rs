//! docs/reliability-matrix.md rows G and H not covered elsewhere: T37 huge entries, T38
//! wrong key types (and their health warnings), T39 duplicate event ids, T45 rate limit and
//! slowloris, T46 history limits.

use crate::util::api::Api;
use crate::util::checker::{self, CheckOpts, publish_logged};
use crate::util::*;
use serde_json::json;
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

const TOKEN: &str = "rows-input-token-0123456789";

#[test]
fn t37_huge_entry_bounded() {
    let ty = "big.thing";
    let mut s = Scenario::new("T37").types(&[ty]).start();
    let (env, redis, sink, l) = (s.env.as_str(), &s.redis, &s.sink, &s.ledger);
    let rss_before = rss_kib(s.workers[0].pid());
    let key = stream_key(env, ty);
    for i in 0..10 {
        s.publish(&format!("n-{i:02}"));
    }
    // 10 MiB of data (limit 1 MiB).
    let big = format!(r#"{{"pad":"{}"}}"#, "x".repeat(10 * 1024 * 1024));
    l.lock().unwrap().ack("huge");
    redis.xadd(&key, &[("id", "huge"), ("type", ty), ("data", &big)]);
    // 300 fields (limit 256).
    let mut wide: Vec<(String, String)> = vec![
        ("id".into(), "wide".into()),
        ("type".into(), ty.into()),
        ("data".into(), "{}".into()),
    ];
    for k in 0..297 {
        wide.push((format!("junk{k}"), format!("v{k}")));
    }
    let wide_ref: Vec<(&str, &str)> = wide.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
    l.lock().unwrap().ack("wide");
    redis.xadd(&key, &wide_ref);
    for i in 10..20 {
        s.publish(&format!("n-{i:02}"));
    }
    s.conserve(Duration::from_secs(20));
    let rss_after = rss_kib(s.workers[0].pid());
    let opts = CheckOpts {
        expect_dead: ["huge".to_string(), "wide".to_string()].into(),
        ..CheckOpts::default()
    };
    let rep = s.check(&opts);
    rep.assert_ok("T37", 0, "");
    s.assert_metrics(&rep, Some(0));
    let dlq = dlq_by_id(redis, env);
    for id in ["huge", "wide"] {
        let e = &dlq[id][0];
        assert_eq!(e.get("dlq_reason"), Some("malformed"), "{id}");
        let size: usize = e.fields.iter().map(|(k, v)| k.len() + v.len()).sum();
        assert!(size < 128 * 1024, "DLQ record of {id} is {size} bytes");
        assert!(
            e.get("dlq_omitted").is_some(),
            "{id}: no dlq_omitted note: {:?}",
            e.fields.keys().collect::<Vec<_>>()
        );
        eprintln!(
            "[T37] {id}: DLQ record {size} bytes, {} fields, dlq_omitted={:?}, dlq_error={:?}",
            e.fields.len(),
            e.get("dlq_omitted"),
            e.get("dlq_error")
        );
    }
    assert!(dlq["huge"][0].get("data").is_none(), "the 10 MiB copy");
    assert!(sink.requests_for("huge").is_empty() && sink.requests_for("wide").is_empty());
    eprintln!("[T37] daemon RSS {rss_before} KiB -> {rss_after} KiB");
    assert!(
        rss_after < 256 * 1024,
        "daemon RSS {rss_after} KiB after a 10 MiB entry"
    );
    s.w().assert_running();
}

#[test]
fn t38_wrong_key_types() {
    let env = "t38";
    let (broken, ok) = ("wt.broken", "wt.ok");
    let mut s = Scenario::new("T38")
        .types(&[broken, ok])
        .routes(|tys, url| tys.iter().map(|t| Route::http(&[t], url)).collect())
        .workers(0)
        .start();
    let broken_key = stream_key(env, broken);
    let history = format!("events:{env}:history");
    s.redis.cmd(&["SET", &broken_key, "x"]);
    s.redis.cmd(&["SET", &history, "not-a-stream"]);
    let monitor = Monitor::start(&s.redis);
    s.add_worker();
    let (redis, sink, l, cfg) = (&s.redis, &s.sink, &s.ledger, &s.cfg);
    let w = &mut s.workers[0];
    let t0 = Instant::now();
    for i in 0..30 {
        publish_logged(redis, env, ok, &format!("ok-{i:02}"), l);
    }
    checker::must_conserve(
        "T38",
        l,
        sink,
        redis,
        env,
        "group",
        &[ok],
        Duration::from_secs(20),
    );
    let flowing = t0.elapsed();
    // Garbage members in the retry set, due now.
    let retry = retry_key(env, "group");
    let now_ms = format!("{}", (unix_now() * 1000.0) as u64);
    redis.cmd(&["ZADD", &retry, &now_ms, "garbage-member"]);
    redis.cmd(&["ZADD", &retry, &now_ms, r#"["id","half"]"#]);
    let dead = try_wait_until(Duration::from_secs(10), || {
        redis.zcard(&retry) == 0 && redis.xlen(&dlq_key(env)) >= 2
    });
    std::thread::sleep(Duration::from_millis(500));
    let dlq = dlq_entries(redis, env);
    let health = Api::new(&cfg.api_addr(), None)
        .get("/api/events/health")
        .json();
    let transcript = monitor.stop();
    eprintln!(
        "[T38] other stream flowing: 30 events in {flowing:?}; DLQ {:?}; health status {} warnings {}",
        dlq.iter()
            .map(|e| (e.get("dlq_reason"), e.get("dlq_error")))
            .collect::<Vec<_>>(),
        health["status"],
        health["warnings"]
    );
    assert!(dead, "garbage retry members not dead-lettered: {dlq:?}");
    let logs = w.output();
    assert!(
        logs.lines()
            .any(|l| l.contains("not a stream") && l.contains(&broken_key)),
        "the wrong-type key is not reported in the logs"
    );
    assert!(
        dlq.iter().all(|e| e.get("dlq_reason") == Some("malformed")),
        "{dlq:?}"
    );
    // Never deletes keys it did not create.
    assert_eq!(
        redis.cmd(&["GET", &broken_key]).as_str().as_deref(),
        Some("x")
    );
    assert_eq!(
        redis.cmd(&["GET", &history]).as_str().as_deref(),
        Some("not-a-stream")
    );
    let deletes: Vec<String> = transcript
        .iter()
        .filter(|m| !crate::util::resp::is_test_client(&m.client))
        .filter(|m| {
            m.args.first().is_some_and(|c| {
                ["DEL", "UNLINK", "RENAME", "FLUSHDB", "FLUSHALL"]
                    .iter()
                    .any(|d| c.eq_ignore_ascii_case(d))
            }) || (m.args.len() > 1
                && m.args[0].eq_ignore_ascii_case("XGROUP")
                && m.args[1].eq_ignore_ascii_case("DESTROY"))
        })
        .filter(|m| !m.args.iter().skip(1).all(|k| k.contains(":heartbeat:")))
        .map(|m| m.raw.clone())
        .collect();
    assert!(deletes.is_empty(), "deletes of foreign keys: {deletes:?}");
    let rep = checker::check(&l.lock().unwrap(), sink, redis, env, &CheckOpts::default());
    // The garbage members carry no id the checker knows.
    assert!(
        rep.lost.is_empty() && rep.both.is_empty(),
        "{}",
        rep.summary()
    );
    w.assert_running();
}

/// Warnings of `/api/events/health` (status, warnings).
fn health_warnings(api: &Api) -> (String, Vec<String>) {
    let h = api.get("/api/events/health").json();
    let warnings = h["warnings"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|w| w.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    (
        h["status"].as_str().unwrap_or_default().to_string(),
        warnings,
    )
}

#[test]
fn t38b_wrong_type_keys_are_health_warnings() {
    let (exact, globbed) = (stream_key("t38b", "wt.broken"), stream_key("t38b", "g.one"));
    let exact_key = exact.clone();
    let mut s = Scenario::new("T38b")
        .types(&["wt.broken", "g.*"])
        .routes(|tys, url| tys.iter().map(|t| Route::http(&[t], url)).collect())
        .setup(move |r| {
            r.cmd(&["SET", &exact_key, "x"]);
        })
        .start();
    let (env, redis, sink) = (s.env.as_str(), &s.redis, &s.sink);
    let (api, w) = (s.api(None), &s.workers[0]);
    // 1. A routed key that is a string from the start.
    let (status, warnings) = health_warnings(&api);
    eprintln!("[T38b] at start: {status} {warnings:?}");
    assert_eq!(status, "degraded");
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("not a stream") && w.contains(&exact)),
        "{warnings:?}"
    );
    assert!(
        !warnings.iter().any(|w| w.contains(&globbed)),
        "{warnings:?}"
    );
    // 2. A consumed stream replaced by a string while the worker reads it.
    publish(redis, env, "g.one", "g-1");
    wait_until("g-1 handled", Duration::from_secs(10), || {
        sink.success_counts().contains_key("g-1")
    });
    redis.cmd(&["DEL", &globbed]);
    redis.cmd(&["SET", &globbed, "y"]);
    let mut seen = Vec::new();
    let reported = try_wait_until(Duration::from_secs(10), || {
        seen = health_warnings(&api).1;
        seen.iter()
            .any(|w| w.contains(&globbed) && w.contains(&exact))
    });
    eprintln!("[T38b] after SET on a consumed stream: {seen:?}");
    assert!(
        reported,
        "the replaced stream is not named: {seen:?}\n{}",
        w.logs()
    );
    // 3. Fixed keys stop being reported.
    redis.cmd(&["DEL", &exact]);
    redis.cmd(&["DEL", &globbed]);
    let cleared = try_wait_until(Duration::from_secs(10), || {
        let (status, warnings) = health_warnings(&api);
        seen = warnings;
        status == "ok" && seen.is_empty()
    });
    assert!(cleared, "warnings after the keys were deleted: {seen:?}");
    publish(redis, env, "wt.broken", "b-1");
    wait_until(
        "b-1 handled once the key is a stream",
        Duration::from_secs(10),
        || sink.success_counts().contains_key("b-1"),
    );
    s.w().assert_running();
}

#[test]
fn t39_duplicate_event_id_publish() {
    let ty = "dup.id";
    let s = Scenario::new("T39").types(&[ty]).token(TOKEN).start();
    let (env, redis, sink, l) = (s.env.as_str(), &s.redis, &s.sink, &s.ledger);
    let api = s.api(Some(TOKEN));
    let mut answers = Vec::new();
    for _ in 0..2 {
        let r = api.post(
            "/api/events/publish",
            &json!({"type": ty, "data": {"x": 1}, "id": "same-id"}),
        );
        assert_eq!(r.status, 202, "{}", r.body);
        answers.push(r.json());
        l.lock().unwrap().ack("same-id");
    }
    s.conserve(Duration::from_secs(10));
    wait_until("one delivery", Duration::from_secs(10), || {
        sink.requests_for("same-id").len() == 1
    });
    std::thread::sleep(Duration::from_millis(300));
    let rep = s.check(&CheckOpts::default());
    // Documented: publishes with an `id` are idempotent within `[publish] dedup_window`
    // (24 h): the repeat answers `duplicate` with the original entry id and writes nothing.
    rep.assert_ok("T39", 0, "");
    assert_eq!(rep.duplicated, 0);
    assert_eq!(redis.xlen(&stream_key(env, ty)), 1);
    assert_eq!(sink.requests_for("same-id").len(), 1);
    let duplicate: Vec<&serde_json::Value> = answers.iter().map(|a| &a["duplicate"]).collect();
    assert_eq!(duplicate, [&json!(false), &json!(true)], "{answers:?}");
    assert_eq!(
        answers[0]["entry_id"], answers[1]["entry_id"],
        "the repeat names the original entry: {answers:?}"
    );
    s.assert_metrics(&rep, Some(0));
    eprintln!("[T39] same id published twice: 1 entry {answers:?}, 1 delivery");
}

/// A ready worker with one HTTP route for `ty`, the API token and `api_extra` in `[api]`.
fn api_scenario(row: &str, env: &str, ty: &str, api_extra: &'static str) -> Scenario {
    Scenario::new(row)
        .env(env)
        .types(&[ty])
        .token(TOKEN)
        .config(move |c| c.api_extra = api_extra.into())
        .start()
}

#[test]
fn t45_rate_limit_and_fast_health() {
    let env = "t45";
    let ty = "rl.event";
    let s = api_scenario("T45", env, ty, "rate_limit = 5\n");
    let (redis, cfg) = (&s.redis, &s.cfg);
    // Health probe in parallel with the burst.
    let prober = {
        let addr = cfg.api_addr();
        std::thread::spawn(move || {
            let api = Api::new(&addr, None);
            let mut times = Vec::new();
            for _ in 0..40 {
                let t = Instant::now();
                let r = api.get("/api/events/health");
                assert_eq!(r.status, 200, "{}", r.body);
                times.push(t.elapsed());
                std::thread::sleep(Duration::from_millis(10));
            }
            times
        })
    };
    let api = Api::new(&cfg.api_addr(), Some(TOKEN));
    let l = &s.ledger;
    let (mut accepted, mut limited) = (0, 0);
    let t0 = Instant::now();
    for i in 0..30 {
        let id = format!("rl-{i:02}");
        l.lock().unwrap().attempt(&id);
        let r = api.post(
            "/api/events/publish",
            &json!({"type": ty, "data": {"i": i}, "id": id}),
        );
        match r.status {
            202 => {
                accepted += 1;
                l.lock().unwrap().ack(&id);
            }
            429 => {
                limited += 1;
                let ra = r.header("retry-after").unwrap_or("");
                assert!(
                    ra.parse::<u64>().is_ok_and(|s| s >= 1),
                    "429 without a Retry-After: {:?}",
                    r.headers
                );
            }
            other => panic!("publish answered {other}: {}", r.body),
        }
    }
    let burst = t0.elapsed();
    let mut times = prober.join().unwrap();
    times.sort();
    let p99 = times[times.len() * 99 / 100 - 1];
    let max = *times.last().unwrap();
    let rep = s.report(
        Duration::from_secs(10),
        Duration::from_millis(300),
        &CheckOpts::default(),
    );
    rep.assert_ok("T45", 0, "");
    // Refused publishes never reached Redis.
    let in_stream: BTreeSet<String> = redis
        .xrange(&stream_key(env, ty))
        .iter()
        .filter_map(|e| e.get("id").map(str::to_string))
        .collect();
    assert_eq!(
        in_stream,
        l.lock().unwrap().acked,
        "only accepted ids in the stream"
    );
    eprintln!(
        "[T45] burst of 30 in {burst:?}: {accepted} accepted, {limited} refused with 429; \
         health p99 {p99:?} max {max:?}"
    );
    let allowed = 5 + (burst.as_secs_f64() * 5.0).ceil() as usize;
    assert!(limited > 0, "no 429 in a burst of 30 with rate_limit 5");
    assert!(accepted <= allowed, "{accepted} accepted > {allowed}");
    assert!(p99 < Duration::from_millis(100), "health p99 {p99:?}");
}

/// The second-worst and the worst of `times` (sorted in place; at least two).
fn second_worst_and_max(times: &mut [Duration]) -> (Duration, Duration) {
    times.sort();
    (times[times.len() - 2], times[times.len() - 1])
}

#[test]
fn t45_slowloris_header_and_body_timeouts() {
    use crate::util::slowloris::{SlowClient, drive};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let env = "t45s";
    let ty = "slow.event";
    let (header_timeout, body_timeout) = (Duration::from_secs(2), Duration::from_secs(2));
    let margin = Duration::from_millis(1500);
    let api_extra = "header_timeout = \"2s\"\nbody_timeout = \"2s\"\n";
    let mut s = api_scenario("T45", env, ty, api_extra);
    let (redis, cfg) = (&s.redis, &s.cfg);
    let w = &mut s.workers[0];
    let addr = cfg.api_addr();
    // Probes on fresh connections (/livez) and on a kept-alive one (health) meanwhile.
    let done = Arc::new(AtomicBool::new(false));
    let prober = {
        let (addr, done) = (addr.clone(), done.clone());
        std::thread::spawn(move || {
            let api = Api::new(&addr, None);
            let (mut livez, mut health) = (Vec::new(), Vec::new());
            for _ in 0..1000 {
                if done.load(Ordering::Relaxed) {
                    break;
                }
                let t = Instant::now();
                let r = http_get(&addr, "/livez");
                assert_eq!(r.map(|r| r.0), Some(200), "/livez during the slowloris");
                livez.push(t.elapsed());
                let t = Instant::now();
                let r = api.get("/api/events/health");
                assert_eq!(r.status, 200, "{}", r.body);
                health.push(t.elapsed());
                std::thread::sleep(Duration::from_millis(20));
            }
            (livez, health)
        })
    };
    // 100 connections that never finish their header, one byte a second.
    let mut head = b"GET /livez HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ".to_vec();
    head.extend(std::iter::repeat_n(b'a', 200));
    let mut clients: Vec<SlowClient> = (0..100)
        .map(|i| SlowClient::open(&format!("header-{i:03}"), &addr, &head, 0))
        .collect();
    // Complete headers, bodies trickling in: a publish with a length, a chunked publish,
    // and a GET with a body.
    let body = json!({"type": ty, "data": {"pad": "x".repeat(40)}, "id": "slow-body"}).to_string();
    let auth = format!("Authorization: Bearer {TOKEN}\r\nContent-Type: application/json\r\n");
    let with_len = |method_path: &str| {
        let h = format!(
            "{method_path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{auth}Content-Length: {}\r\n\r\n",
            body.len()
        );
        (format!("{h}{body}").into_bytes(), h.len())
    };
    let chunked = {
        let h = format!(
            "POST /api/events/publish HTTP/1.1\r\nHost: 127.0.0.1\r\n{auth}Transfer-Encoding: chunked\r\n\r\n"
        );
        let mut s = h.clone();
        for b in body.chars() {
            s += &format!("1\r\n{b}\r\n");
        }
        s += "0\r\n\r\n";
        (s.into_bytes(), h.len())
    };
    for (i, (script, burst)) in [
        with_len("POST /api/events/publish"),
        chunked,
        with_len("GET /api/events/health"),
    ]
    .into_iter()
    .enumerate()
    {
        clients.push(SlowClient::open(
            &format!("body-{i}"),
            &addr,
            &script,
            burst,
        ));
    }
    // A kept-alive connection that goes idle after one request.
    let idle = b"GET /livez HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
    clients.push(SlowClient::open("idle-keepalive", &addr, idle, idle.len()));
    let t0 = Instant::now();
    drive(
        &mut clients,
        Duration::from_secs(1),
        header_timeout.max(body_timeout) + margin + Duration::from_secs(1),
    );
    let slow_phase = t0.elapsed();
    done.store(true, Ordering::Relaxed);
    let (mut livez, mut health) = prober.join().unwrap();
    let (n_livez, n_health) = (livez.len(), health.len());
    // About 80 probes each in the 2 s phase: their "p99" would be the single worst probe, which
    // one scheduler hiccup on a loaded 2-core box decides. Starvation by the slow connections
    // slows many probes, so the bound is on the second worst (at most one probe over 100 ms)
    // and the worst may not pass 1 s.
    let (livez_2nd, livez_max) = second_worst_and_max(&mut livez);
    let (health_2nd, health_max) = second_worst_and_max(&mut health);
    let mut report = Vec::new();
    for c in &clients {
        let closed = c.closed_after.unwrap_or_else(|| {
            panic!(
                "{}: still open after {slow_phase:?} ({} bytes sent, answer {:?})\n{}",
                c.label,
                c.sent(),
                c.answer_text(),
                w.logs()
            )
        });
        let (timeout, status) = if c.label.starts_with("body-") {
            (body_timeout, Some("HTTP/1.1 408"))
        } else if c.label == "idle-keepalive" {
            (header_timeout, Some("HTTP/1.1 200"))
        } else {
            (header_timeout, None)
        };
        assert!(
            closed + Duration::from_millis(100) >= timeout && closed <= timeout + margin,
            "{}: closed after {closed:?}, timeout {timeout:?} (+{margin:?})",
            c.label
        );
        match status {
            Some(s) => assert!(
                c.answer_text().starts_with(s),
                "{}: answer {:?}",
                c.label,
                c.answer_text()
            ),
            None => assert!(
                c.answer.is_empty() || c.answer_text().starts_with("HTTP/1.1 408"),
                "{}: answer {:?}",
                c.label,
                c.answer_text()
            ),
        }
        if !c.label.starts_with("header-") {
            report.push(format!("{} closed after {closed:.2?}", c.label));
        }
    }
    let header_closed: Vec<Duration> = clients
        .iter()
        .filter(|c| c.label.starts_with("header-"))
        .filter_map(|c| c.closed_after)
        .collect();
    let (hmin, hmax) = (
        header_closed.iter().min().unwrap(),
        header_closed.iter().max().unwrap(),
    );
    eprintln!(
        "[T45] slowloris: 100 header-slow connections closed after {hmin:.2?}..{hmax:.2?} \
         (header_timeout {header_timeout:?}); {}; during it /livez 2nd worst {livez_2nd:.2?} \
         max {livez_max:.2?} ({n_livez} probes), health 2nd worst {health_2nd:.2?} max \
         {health_max:.2?} ({n_health} probes)",
        report.join(", ")
    );
    assert!(
        n_livez >= 20 && n_health >= 20,
        "{n_livez} / {n_health} probes"
    );
    for (what, second, max) in [
        ("/livez", livez_2nd, livez_max),
        ("health", health_2nd, health_max),
    ] {
        assert!(
            second < Duration::from_millis(100) && max < Duration::from_secs(1),
            "{what}: second worst probe {second:?}, worst {max:?}"
        );
    }
    // The trickled publishes were cut off before the handler: nothing reached Redis.
    assert_eq!(
        redis.xlen(&stream_key(env, ty)),
        0,
        "a trickled publish got through"
    );
    let api = Api::new(&addr, Some(TOKEN));
    let r = api.post(
        "/api/events/publish",
        &json!({"type": ty, "data": {}, "id": "after"}),
    );
    assert_eq!(r.status, 202, "{}", r.body);
    w.assert_running();
}

#[test]
fn t46_history_limits() {
    let ty = "hist.event";
    let mut s = Scenario::new("T46").types(&[ty]).token(TOKEN).start();
    let (env, redis) = (s.env.as_str(), &s.redis);
    // Seed more history records than the clamp (records are plain stream entries).
    let hkey = format!("events:{env}:history");
    for i in 0..1200 {
        redis.xadd(
            &hkey,
            &[
                ("at", "2026-11-26T00:00:00.000Z"),
                ("kind", "processed"),
                ("id", &format!("h-{i:04}")),
                ("type", ty),
                ("group", "group"),
                ("attempt", "0"),
            ],
        );
    }
    let api = s.api(Some(TOKEN));
    let monitor = Monitor::start(redis);
    let r = api.get("/api/events/history?limit=10000000");
    let transcript = monitor.stop();
    assert_eq!(r.status, 200, "{}", r.body);
    let n = r.json()["records"].as_array().map(Vec::len).unwrap_or(0);
    let counts: Vec<String> = transcript
        .iter()
        .filter(|m| !crate::util::resp::is_test_client(&m.client))
        .filter(|m| {
            m.args.first().is_some_and(|c| {
                c.eq_ignore_ascii_case("XRANGE") || c.eq_ignore_ascii_case("XREVRANGE")
            })
        })
        .map(|m| m.args.join(" "))
        .collect();
    eprintln!("[T46] limit=10000000 -> {n} records; reads {counts:?}");
    assert!(n <= 1000 && n > 0, "limit not clamped to 1000: {n} records");
    for c in &counts {
        let parts: Vec<&str> = c.split(' ').collect();
        let count = parts
            .iter()
            .position(|p| p.eq_ignore_ascii_case("COUNT"))
            .and_then(|i| parts.get(i + 1))
            .and_then(|v| v.parse::<u64>().ok());
        assert!(
            count.is_some_and(|c| c <= 1001),
            "range read without a bounded COUNT: {c}"
        );
    }
    for (q, want) in [
        ("?foo=1", 400),
        ("?limit=abc", 400),
        ("?limit=-1", 400),
        ("?type=a:b", 400),
        ("?limit=5", 200),
    ] {
        let r = api.get(&format!("/api/events/history{q}"));
        assert_eq!(r.status, want, "history{q}: {}", r.body);
    }
    let r = api.get("/api/events/dlq?limit=10000000");
    assert!(
        r.status == 200 || r.status == 400,
        "dlq limit=10000000: {} {}",
        r.status,
        r.body
    );
    s.w().assert_running();
}
