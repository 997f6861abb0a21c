//! RELIABILITY.md rows G and H not covered elsewhere: T37 huge entries, T38
//! wrong key types, T39 duplicate event ids, T45 rate limit, T46 history limits.

use crate::util::api::Api;
use crate::util::checker::{self, CheckOpts, ledger, publish_logged};
use crate::util::*;
use serde_json::json;
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

const TOKEN: &str = "rows-input-token-0123456789";

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

#[test]
fn t37_huge_entry_bounded() {
    let env = "t37";
    let ty = "big.thing";
    let redis = RedisServer::start();
    let _dump = redis.dump_on_panic(env);
    let sink = HttpSink::start();
    let cfg = WorkerConfig::new(env, &redis.url()).route(Route::http(&[ty], &sink.url()));
    let mut w = WorkerProcess::start("w1", cfg);
    w.wait_ready(Duration::from_secs(15));
    let rss_before = rss_kib(w.pid());
    let l = ledger();
    let key = stream_key(env, ty);
    for i in 0..10 {
        publish_logged(&redis, env, ty, &format!("n-{i:02}"), &l);
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
        publish_logged(&redis, env, ty, &format!("n-{i:02}"), &l);
    }
    checker::must_conserve(
        "T37",
        &l,
        &sink,
        &redis,
        env,
        "group",
        &[ty],
        Duration::from_secs(20),
    );
    let rss_after = rss_kib(w.pid());
    let opts = CheckOpts {
        expect_dead: ["huge".to_string(), "wide".to_string()].into(),
        ..CheckOpts::default()
    };
    let rep = checker::check(&l.lock().unwrap(), &sink, &redis, env, &opts);
    rep.assert_ok("T37", 0, "");
    rep.assert_metrics("T37", &[parse_metrics(&w.metrics())], env, Some(0));
    let dlq = dlq_by_id(&redis, env);
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
    w.assert_running();
}

#[test]
fn t38_wrong_key_types() {
    let env = "t38";
    let (broken, ok) = ("wt.broken", "wt.ok");
    let redis = RedisServer::start();
    let _dump = redis.dump_on_panic(env);
    let sink = HttpSink::start();
    let broken_key = stream_key(env, broken);
    let history = format!("events:{env}:history");
    redis.cmd(&["SET", &broken_key, "x"]);
    redis.cmd(&["SET", &history, "not-a-stream"]);
    let monitor = Monitor::start(&redis);
    let cfg = WorkerConfig::new(env, &redis.url())
        .route(Route::http(&[broken], &sink.url()))
        .route(Route::http(&[ok], &sink.url()));
    let mut w = WorkerProcess::start("w1", cfg.clone());
    let l = ledger();
    let t0 = Instant::now();
    for i in 0..30 {
        publish_logged(&redis, env, ok, &format!("ok-{i:02}"), &l);
    }
    checker::must_conserve(
        "T38",
        &l,
        &sink,
        &redis,
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
    let dlq = dlq_entries(&redis, env);
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
    let rep = checker::check(
        &l.lock().unwrap(),
        &sink,
        &redis,
        env,
        &CheckOpts::default(),
    );
    // The garbage members carry no id the checker knows.
    assert!(
        rep.lost.is_empty() && rep.both.is_empty(),
        "{}",
        rep.summary()
    );
    w.assert_running();
}

#[test]
fn t39_duplicate_event_id_publish() {
    let env = "t39";
    let ty = "dup.id";
    let redis = RedisServer::start();
    let _dump = redis.dump_on_panic(env);
    let sink = HttpSink::start();
    let cfg = WorkerConfig::new(env, &redis.url())
        .route(Route::http(&[ty], &sink.url()))
        .api_token(TOKEN);
    let mut w = WorkerProcess::start("w1", cfg.clone());
    w.wait_ready(Duration::from_secs(15));
    let api = Api::new(&cfg.api_addr(), Some(TOKEN));
    let l = ledger();
    let mut entries = Vec::new();
    for _ in 0..2 {
        let r = api.post(
            "/api/events/publish",
            &json!({"type": ty, "data": {"x": 1}, "id": "same-id"}),
        );
        assert_eq!(r.status, 202, "{}", r.body);
        entries.push(r.body);
        l.lock().unwrap().ack("same-id");
    }
    checker::must_conserve(
        "T39",
        &l,
        &sink,
        &redis,
        env,
        "group",
        &[ty],
        Duration::from_secs(10),
    );
    wait_until("two deliveries", Duration::from_secs(10), || {
        sink.requests_for("same-id").len() == 2
    });
    std::thread::sleep(Duration::from_millis(300));
    let rep = checker::check(
        &l.lock().unwrap(),
        &sink,
        &redis,
        env,
        &CheckOpts::default(),
    );
    // Documented: no publish-side idempotency window; two entries, two deliveries,
    // same `id` (handlers dedupe on it).
    rep.assert_ok("T39", 1, "");
    assert_eq!(rep.duplicated, 1);
    assert_eq!(redis.xlen(&stream_key(env, ty)), 2);
    assert_ne!(
        entries[0], entries[1],
        "two distinct entry ids: {entries:?}"
    );
    rep.assert_metrics("T39", &[parse_metrics(&w.metrics())], env, Some(0));
    eprintln!("[T39] same id published twice: 2 entries {entries:?}, 2 deliveries");
}

#[test]
fn t45_rate_limit_and_fast_health() {
    let env = "t45";
    let ty = "rl.event";
    let redis = RedisServer::start();
    let _dump = redis.dump_on_panic(env);
    let sink = HttpSink::start();
    let mut cfg = WorkerConfig::new(env, &redis.url())
        .route(Route::http(&[ty], &sink.url()))
        .api_token(TOKEN);
    cfg.api_extra = "rate_limit = 5\n".into();
    let mut w = WorkerProcess::start("w1", cfg.clone());
    w.wait_ready(Duration::from_secs(15));
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
    let l = ledger();
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
    let rep = checker::conserved_report(
        "T45",
        &l,
        &sink,
        &redis,
        env,
        "group",
        &[ty],
        Duration::from_secs(10),
        Duration::from_millis(300),
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

#[test]
fn t46_history_limits() {
    let env = "t46";
    let ty = "hist.event";
    let redis = RedisServer::start();
    let _dump = redis.dump_on_panic(env);
    let sink = HttpSink::start();
    let cfg = WorkerConfig::new(env, &redis.url())
        .route(Route::http(&[ty], &sink.url()))
        .api_token(TOKEN);
    let mut w = WorkerProcess::start("w1", cfg.clone());
    w.wait_ready(Duration::from_secs(15));
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
    let api = Api::new(&cfg.api_addr(), Some(TOKEN));
    let monitor = Monitor::start(&redis);
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
    w.assert_running();
}
