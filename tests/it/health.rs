//! `/api/events/health` (no token): every field present, no event data and no
//! secret (a canary Redis password and a canary API token appear in none of
//! health, metrics, logs, CLI output or Redis client names), live instances
//! from heartbeats, `degraded` on an evicting `maxmemory-policy`, 503 with
//! Redis stopped.

use crate::util::api::Api;
use crate::util::worker::cli;
use crate::util::*;
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::time::Duration;

const TY: &str = "bookings.created";
const PASSWORD: &str = "canary-redis-pw-5b2e8f0d1a";
const TOKEN: &str = "canary-api-token-c93a71e4b8";
const PAYLOAD: &str = "payload-canary-77f1e0";
const EVENT_ID: &str = "evt-canary-4d2a";
const CORRELATION: &str = "corr-canary-81b3";

fn secrets_in(text: &str, what: &str) -> Vec<String> {
    [
        ("the Redis password", PASSWORD),
        ("the API token", TOKEN),
        ("event data", PAYLOAD),
    ]
    .iter()
    .filter(|(_, s)| text.contains(s))
    .map(|(name, _)| format!("{what} contains {name}"))
    .collect()
}

fn consumers(health: &Value) -> BTreeSet<String> {
    health["instances"]
        .as_array()
        .unwrap_or_else(|| panic!("no instances array: {health}"))
        .iter()
        .map(|i| i["consumer"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// The health example in the README's 3 a.m. section (the first JSON block after "Is it healthy?").
fn readme_health_example() -> Value {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let from = readme
        .find("**Is it healthy?**")
        .expect("README has the health section");
    let block = &readme[from..];
    let start = block.find("```json\n").expect("a JSON example") + "```json\n".len();
    let end = start + block[start..].find("```").unwrap();
    serde_json::from_str(&block[start..end]).expect("the README's health example is JSON")
}

/// The key names of `v` and of its objects, as dotted paths (array items as `[]`).
fn key_paths(v: &Value, prefix: &str, out: &mut BTreeSet<String>) {
    match v {
        Value::Object(m) => {
            for (k, child) in m {
                let path = format!("{prefix}{k}");
                out.insert(path.clone());
                key_paths(child, &format!("{path}."), out);
            }
        }
        Value::Array(items) => {
            for item in items {
                key_paths(item, &format!("{prefix}[]."), out);
            }
        }
        _ => {}
    }
}

/// The README's example shows the fields a real answer has, and breakers named after routes
/// (never `blackhole:0` or a URL).
fn assert_readme_example_matches(real: &Value) {
    let example = readme_health_example();
    let (mut want, mut shown) = (BTreeSet::new(), BTreeSet::new());
    key_paths(real, "", &mut want);
    key_paths(&example, "", &mut shown);
    assert_eq!(
        shown, want,
        "README health example vs a real answer: {real}"
    );
    for b in example["breakers"]
        .as_array()
        .expect("breakers in the example")
    {
        let name = b["handler"].as_str().unwrap_or_default();
        assert!(
            !name.contains(':') && !name.contains('/'),
            "README shows breaker `{name}`: handlers are named after routes, never URLs"
        );
    }
}

#[test]
fn t48_health_has_no_secrets_or_event_data_lists_instances_and_503_without_redis() {
    let env = "health";
    let mut s = Scenario::new(env)
        .types(&[TY])
        .redis(RedisServer::start_with_password(PASSWORD))
        .token(TOKEN)
        .config(|c| c.env_vars.push(("EVENTS_LOG".into(), "debug".into())))
        .workers(2)
        .start();
    s.sink.script(EVENT_ID, vec![Action::status(400)]);
    let (redis, sink, cfg1) = (&mut s.redis, &s.sink, s.cfg.clone());
    let [w1, w2] = &mut s.workers[..] else {
        unreachable!()
    };
    let data = format!(r#"{{"card":"{PAYLOAD}"}}"#);
    redis.xadd(
        &stream_key(env, TY),
        &[
            ("id", EVENT_ID),
            ("type", TY),
            ("data", &data),
            ("correlationid", CORRELATION),
        ],
    );
    let authed = Api::new(&cfg1.api_addr(), Some(TOKEN));
    let r = authed.post(
        "/api/events/publish",
        &json!({"type": TY, "data": {"card": PAYLOAD}, "id": "evt-ok-1"}),
    );
    assert_eq!(r.status, 202, "{}", r.body);
    wait_until(
        "one dead letter, one success",
        Duration::from_secs(15),
        || {
            redis.xlen(&dlq_key(env)) == 1
                && sink.success_counts().len() == 1
                && drained(redis, env, "group", &[TY])
        },
    );
    let anon = Api::new(&cfg1.api_addr(), None);
    let mut problems = Vec::new();

    // ---- every field, no token needed.
    let r = anon.get("/api/events/health");
    assert_eq!(r.status, 200, "{}", r.body);
    let h = r.json();
    assert_eq!(h["status"], json!("ok"), "{h}");
    assert_eq!(h["env"], json!(env));
    assert_eq!(h["group"], json!("group"));
    assert_eq!(h["consumer"], json!("w1"));
    assert_eq!(h["redis"]["reachable"], json!(true), "{h}");
    assert!(
        h["redis"]["latency_ms"].as_f64().is_some_and(|l| l >= 0.0),
        "{h}"
    );
    assert_eq!(h["redis"]["maxmemory_policy"], json!("noeviction"), "{h}");
    assert_eq!(
        h["streams"],
        json!([{"type": TY, "lag": 0, "pending": 0, "read": 2}]),
        "{h}"
    );
    assert_eq!(h["retry_depth"], json!(0), "{h}");
    assert_eq!(h["redeliver_pending"], json!(0), "{h}");
    assert_eq!(h["dlq_depth"], json!(1), "{h}");
    let breakers = h["breakers"].as_array().expect("breakers");
    assert_eq!(breakers.len(), 1, "{h}");
    assert!(breakers[0]["handler"].is_string(), "{h}");
    assert_eq!(breakers[0]["state"], json!("closed"), "{h}");
    assert_eq!(h["warnings"], json!([]), "{h}");
    assert_eq!(
        consumers(&h),
        ["w1", "w2"].iter().map(|s| s.to_string()).collect(),
        "two live instances: {h}"
    );
    for i in h["instances"].as_array().unwrap() {
        assert_eq!(i["group"], json!("group"), "{i}");
        assert!(i.get("info").is_some(), "{i}");
    }
    assert_readme_example_matches(&h);
    let w2_health = Api::new(&w2.config.api_addr(), None)
        .get("/api/events/health")
        .json();
    assert_eq!(w2_health["consumer"], json!("w2"));

    // ---- no secret and no event data anywhere an operator or scraper looks.
    let body = r.body.clone();
    problems.extend(secrets_in(&body, "/api/events/health"));
    for (what, s) in [("event id", EVENT_ID), ("correlation id", CORRELATION)] {
        if body.contains(s) {
            problems.push(format!("/api/events/health contains the {what}"));
        }
    }
    for w in [&w1, &w2] {
        let m = w.metrics();
        problems.extend(secrets_in(&m, &format!("/metrics of {}", w.name)));
        if m.contains(EVENT_ID) || m.contains(CORRELATION) {
            problems.push(format!("/metrics of {} carries an event id", w.name));
        }
    }
    let clients = redis.cmd(&["CLIENT", "LIST"]).as_str().unwrap_or_default();
    problems.extend(secrets_in(&clients, "CLIENT LIST"));
    let out = cli(&cfg1, &["dlq", "list"]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    problems.extend(
        secrets_in(&out.stderr, "dlq list stderr")
            .into_iter()
            .filter(|p| !p.contains("event data")),
    );
    let out = cli(&cfg1, &["check"]);
    problems.extend(secrets_in(&out.stdout, "check stdout"));
    problems.extend(secrets_in(&out.stderr, "check stderr"));

    // ---- an evicting maxmemory-policy degrades health with a warning.
    redis.cmd(&["CONFIG", "SET", "maxmemory-policy", "allkeys-lru"]);
    let degraded = try_wait_until(Duration::from_secs(5), || {
        anon.get("/api/events/health").json()["status"] == json!("degraded")
    });
    let h = anon.get("/api/events/health").json();
    if !degraded
        || !h["warnings"].as_array().is_some_and(|w| {
            w.iter()
                .any(|w| w.as_str().unwrap_or("").contains("maxmemory"))
        })
    {
        problems.push(format!(
            "allkeys-lru: health not degraded with a warning: {h}"
        ));
    }
    redis.cmd(&["CONFIG", "SET", "maxmemory-policy", "noeviction"]);

    // ---- a gracefully stopped instance leaves the list.
    w2.sigterm();
    assert_eq!(
        w2.wait_exit(Duration::from_secs(10)).and_then(|s| s.code()),
        Some(0)
    );
    wait_until("w2 gone from instances", Duration::from_secs(10), || {
        consumers(&anon.get("/api/events/health").json()) == ["w1".to_string()].into()
    });

    // ---- Redis stopped: 503, still no secret.
    redis.stop();
    let mut last = None;
    let down = try_wait_until(Duration::from_secs(15), || {
        let r = anon.get("/api/events/health");
        let is_503 = r.status == 503;
        last = Some(r);
        is_503
    });
    let r = last.unwrap();
    assert!(down, "health with Redis stopped: {} {}", r.status, r.body);
    let h = r.json();
    assert_eq!(h["redis"]["reachable"], json!(false), "{h}");
    assert_eq!(h["status"], json!("unavailable"), "{h}");
    problems.extend(secrets_in(&r.body, "/api/events/health (Redis down)"));
    let out = cli(&cfg1, &["dlq", "stats"]);
    assert_ne!(out.code, Some(0), "dlq stats with Redis down");
    problems.extend(secrets_in(&out.stderr, "dlq stats error (Redis down)"));
    w1.assert_running();
    std::thread::sleep(Duration::from_millis(500));
    for w in [&w1, &w2] {
        let logs = w.output();
        problems.extend(
            secrets_in(&logs, &format!("logs of {}", w.name))
                .into_iter()
                .filter(|p| !p.contains("event data")),
        );
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// The `code`s of a health body's `reasons`.
fn reason_codes(h: &Value) -> BTreeSet<String> {
    h["reasons"]
        .as_array()
        .unwrap_or_else(|| panic!("no reasons array: {h}"))
        .iter()
        .map(|r| r["code"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// The message of the reason `code`.
fn reason(h: &Value, code: &str) -> String {
    h["reasons"]
        .as_array()
        .and_then(|a| a.iter().find(|r| r["code"] == json!(code)))
        .and_then(|r| r["message"].as_str())
        .unwrap_or_else(|| panic!("no reason {code}: {h}"))
        .to_string()
}

/// Issue 10 point 4: an incident (open breaker, retries piling up, the DLQ growing, the lag
/// growing) makes health `degraded` (HTTP 200) with one named reason per threshold of
/// `[health]`, where it used to say `ok`.
#[test]
fn t48b_health_is_degraded_with_a_named_reason_per_threshold() {
    let env = "hdeg";
    let (fail, slow) = ("h.fail", "h.slow");
    let s = Scenario::new(env)
        .types(&[fail, slow])
        .sink(Action::status(500))
        .routes(|_, url| {
            let mut f = Route::http(&["h.fail"], url);
            f.name = Some("fail-route".into());
            let mut s = Route::http(&["h.slow"], url);
            s.name = Some("slow-route".into());
            s.timeout = Some("10s".into());
            vec![f, s]
        })
        .config(|c| {
            c.concurrency = 1;
            c.failure_threshold = 3;
            c.open_for = "60s".into();
            c.initial_backoff = "20s".into();
            c.max_backoff = "30s".into();
            c.extra += "[health]\nwindow = \"20s\"\ndlq_growth = 3\nretry_depth = 3\nlag = 5\n";
        })
        .start();
    let api = s.api(None);
    let r = api.get("/api/events/health");
    assert_eq!(r.status, 200, "{}", r.body);
    let h = r.json();
    assert_eq!(h["status"], json!("ok"), "{h}");
    assert_eq!(h["reasons"], json!([]), "{h}");

    // Three malformed entries (dead-lettered at once), then four events the endpoint
    // refuses (the breaker opens after three and pauses the stream: three retries wait).
    let redis = &s.redis;
    for i in 0..3 {
        let id = format!("m-{i}");
        redis.xadd(
            &stream_key(env, fail),
            &[("id", &id), ("type", fail), ("data", "{broken")],
        );
    }
    for i in 0..4 {
        publish(redis, env, fail, &format!("f-{i}"));
    }
    wait_until(
        "retries, dead letters, open breaker",
        Duration::from_secs(10),
        || redis.zcard(&retry_key(env, "group")) >= 3 && redis.xlen(&dlq_key(env)) == 3,
    );
    // Slow events on one permit: the lag grows.
    for i in 0..12 {
        let id = format!("s-{i}");
        s.sink
            .script(&id, vec![Action::delayed(200, Duration::from_millis(1500))]);
        publish(redis, env, slow, &id);
    }
    let want: BTreeSet<String> = ["breaker_open", "retry_depth", "dlq_growth", "lag_growing"]
        .iter()
        .map(|c| c.to_string())
        .collect();
    let mut last = Value::Null;
    let all = try_wait_until(Duration::from_secs(10), || {
        last = api.get("/api/events/health").json();
        reason_codes(&last) == want
    });
    assert!(
        all,
        "reasons {:?}, want {want:?}: {last}",
        reason_codes(&last)
    );
    let r = api.get("/api/events/health");
    assert_eq!(r.status, 200, "degraded stays HTTP 200: {}", r.body);
    let h = r.json();
    assert_eq!(h["status"], json!("degraded"), "{h}");
    assert_eq!(reason_codes(&h), want, "{h}");
    assert_eq!(
        reason(&h, "breaker_open"),
        "breaker of route fail-route is open: its events wait in the retry set; check the endpoint"
    );
    assert_eq!(
        reason(&h, "retry_depth"),
        format!(
            "{} events wait in the retry set (health.retry_depth = 3): a handler keeps failing; \
             see the breakers and `event-worker dlq stats`",
            h["retry_depth"]
        )
    );
    let dlq = reason(&h, "dlq_growth");
    assert!(
        dlq.starts_with("the DLQ grew by 3 entries in the last ")
            && dlq.ends_with("s (health.dlq_growth = 3 per 20s); see `event-worker dlq list`"),
        "{dlq}"
    );
    let lag = reason(&h, "lag_growing");
    assert!(
        lag.starts_with("the group's lag grew from 0 to ")
            && lag
                .ends_with("(health.lag = 5): consumers fall behind; add instances or concurrency"),
        "{lag}"
    );
    let messages: Vec<Value> = h["reasons"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["message"].clone())
        .collect();
    assert_eq!(
        h["warnings"],
        json!(messages),
        "warnings repeat the reasons: {h}"
    );
}

/// Issue 10 point 4: with Redis unreachable from the start, health says `unavailable` with
/// HTTP 503 and the connection error (it used to say `starting`), then `ok` once Redis is up.
#[test]
fn t48c_health_is_unavailable_before_redis_ever_answered() {
    let port = free_port();
    let mut cfg = WorkerConfig::new("hstart", &format!("redis://127.0.0.1:{port}"));
    cfg.routes = vec![Route::blackhole(&["a.b"])];
    let mut w = WorkerProcess::start("w1", cfg.clone());
    let api = Api::new(&cfg.api_addr(), None);
    let mut last = None;
    let answered = try_wait_until(Duration::from_secs(10), || {
        let r = api.try_send("GET", "/api/events/health", &[], None).ok();
        let done = r.as_ref().is_some_and(|r| r.status == 503);
        last = r;
        done
    });
    let r = last.expect("health answered");
    assert!(answered, "{} {}", r.status, r.body);
    let h = r.json();
    assert_eq!(h["status"], json!("unavailable"), "{h}");
    assert_eq!(h["redis"]["reachable"], json!(false), "{h}");
    assert!(
        h["redis"]["error"].as_str().is_some_and(|e| !e.is_empty()),
        "{h}"
    );
    assert_eq!(
        reason_codes(&h),
        ["redis_unreachable".to_string()].into(),
        "{h}"
    );
    assert!(
        reason(&h, "redis_unreachable").starts_with("the worker could not connect to Redis yet: "),
        "{h}"
    );
    let _redis = RedisServer::start_on(port, Aof::None);
    wait_until(
        "health ok once Redis is up",
        Duration::from_secs(15),
        || {
            api.try_send("GET", "/api/events/health", &[], None)
                .is_ok_and(|r| r.status == 200 && r.json()["status"] == json!("ok"))
        },
    );
    w.assert_running();
}
