//! Stream retention at high rates (T63, issue 11 point 7): one approximate `XTRIM` removes
//! at most 10,000 entries (Redis's default `LIMIT` for `~`), so a pass that trimmed once
//! fell behind above ~333 events/s at the 30 s interval. A pass now trims in chunks until
//! nothing acknowledged and older than `stream_retention` is left (but for the one stream
//! node `~` keeps), never below a group's oldest pending entry or last delivered entry.
//!
//! The entries are written with ids 30 minutes in the past (one per millisecond), so they
//! are older than `stream_retention = "1m"` as soon as every group is done with them.

use crate::util::*;
use std::time::{Duration, Instant};

const TY: &str = "ret.fast";
/// Entries written before the worker starts.
const BACKLOG: u64 = 60_000;
/// The sustained run: batches of `BATCH` every `GAP` for `BATCHES` batches (2,000/s, 5 s).
const BATCH: u64 = 100;
const GAP: Duration = Duration::from_millis(50);
const BATCHES: u64 = 100;

/// Adds `n` entries `p-<from>`.. with ids `<base + i>-0` in one script call.
const ADD: &str = "local base, from, n = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]) \
    for i = from, from + n - 1 do \
      redis.call('XADD', KEYS[1], (base + i) .. '-0', 'id', 'p-' .. i, 'type', ARGV[4], \
                 'data', '{}') \
    end return n";

fn add(redis: &RedisServer, key: &str, base: u64, from: u64, n: u64) {
    let (b, f, n) = (base.to_string(), from.to_string(), n.to_string());
    redis.cmd(&["EVAL", ADD, "1", key, &b, &f, &n, TY]);
}

fn trimmed(w: &WorkerProcess, env: &str) -> f64 {
    sum(
        &parse_metrics(&w.metrics()),
        "event_worker_stream_trimmed_total",
        &[("env", env), ("type", TY)],
    )
}

fn first_id(redis: &RedisServer, key: &str) -> Option<String> {
    let r = redis.cmd(&["XRANGE", key, "-", "+", "COUNT", "1"]);
    crate::util::redis::parse_entries(&r)
        .first()
        .and_then(|e| e.get("id").map(str::to_string))
}

/// How many entries are below what the group is done with (its oldest pending entry, or
/// with nothing pending its last delivered one): what the next pass may trim. Entry `i` has
/// id `<base + i>-0`, so this is a difference of ids.
fn behind(redis: &RedisServer, key: &str) -> u64 {
    let pending = redis.cmd(&["XPENDING", key, "group"]).items();
    let bound = match pending.get(1).and_then(|v| v.as_str()) {
        Some(oldest) => oldest,
        None => group_field(redis, key, "last-delivered-id"),
    };
    let first = redis.cmd(&["XRANGE", key, "-", "+", "COUNT", "1"]).items();
    let first = first
        .first()
        .and_then(|e| e.items().first().and_then(|v| v.as_str()));
    let ms = |id: &str| id.split('-').next().and_then(|m| m.parse::<u64>().ok());
    match (first.as_deref().and_then(ms), ms(&bound)) {
        (Some(f), Some(b)) => b.saturating_sub(f),
        _ => 0,
    }
}

/// A field of the worker's group in XINFO GROUPS.
fn group_field(redis: &RedisServer, key: &str, field: &str) -> String {
    for g in redis.cmd(&["XINFO", "GROUPS", key]).items() {
        let f = g.items();
        let get = |name: &str| {
            f.chunks(2)
                .find(|p| p[0].as_str().as_deref() == Some(name))
                .and_then(|p| p.get(1).and_then(|v| v.as_str()))
        };
        if get("name").as_deref() == Some("group") {
            return get(field).unwrap_or_default();
        }
    }
    String::new()
}

/// Waits up to `timeout` for XLEN `want`; returns what it saw last.
fn wait_len(redis: &RedisServer, key: &str, want: i64, timeout: Duration) -> i64 {
    let mut len = -1;
    try_wait_until(timeout, || {
        len = redis.xlen(key);
        len == want
    });
    len
}

#[test]
fn t63_retention_keeps_up_with_a_large_backlog_and_a_sustained_rate() {
    let mut s = Scenario::new("T63")
        .types(&[TY])
        .routes(|_, _| vec![Route::blackhole(&[TY])])
        .config(|c| {
            c.visibility_timeout = "10m".into();
            c.concurrency = 256;
            c.top_level = "stream_retention = \"1m\"\n".into();
        })
        .workers(0)
        .start();
    let env = s.env.clone();
    let env = env.as_str();
    let key = stream_key(env, TY);
    let redis = &s.redis;
    let base = (unix_now() * 1000.0) as u64 - 30 * 60 * 1000;
    let id = |i: u64| format!("{}-0", base + i);
    add(redis, &key, base, 0, BACKLOG);
    // The worker's group: everything delivered, all acknowledged but p-30000, which a live
    // "holder" still works on. A second group, "audit", has received up to p-44999.
    redis.cmd(&["XGROUP", "CREATE", &key, "group", &id(29_999)]);
    redis.read_as(&key, "group", "holder", 1);
    redis.cmd(&["XGROUP", "SETID", &key, "group", &id(BACKLOG - 1)]);
    redis.cmd(&["XGROUP", "CREATE", &key, "audit", &id(44_999)]);
    let holder = heartbeat_key(env, "group", "holder");
    redis.cmd(&["SET", &holder, "{}", "PX", "600000"]);

    // 1. The pass at start (default retention_interval, 30 s) trims all 30,000 entries below
    // the pending one, not 10,000 of them.
    let started = Instant::now();
    s.add_worker();
    let redis = &s.redis;
    s.workers[0].wait_ready(Duration::from_secs(15));
    let len = wait_len(redis, &key, 30_000, Duration::from_secs(5));
    eprintln!(
        "[T63] backlog {BACKLOG}, oldest pending p-30000: XLEN {len} after {:?}",
        started.elapsed()
    );
    assert_eq!(
        len, 30_000,
        "one retention pass leaves exactly the entries from the oldest pending one on"
    );
    assert_eq!(first_id(redis, &key).as_deref(), Some("p-30000"));
    let pending = redis.xpending_detail(&key, "group");
    assert_eq!(pending.len(), 1, "{pending:?}");
    assert_eq!(
        (pending[0].0.as_str(), pending[0].1.as_str()),
        (id(30_000).as_str(), "holder")
    );
    assert_eq!(
        trimmed(&s.workers[0], env),
        30_000.0,
        "stream_trimmed_total"
    );

    // 2. The holder acknowledges: now "audit" (received up to p-44999) bounds the trim; `~`
    // keeps p-44999's node (p-44900..p-44999).
    redis.cmd(&["XACK", &key, "group", &id(30_000)]);
    s.workers[0].graceful_restart();
    let len = wait_len(redis, &key, 15_100, Duration::from_secs(5));
    assert_eq!(
        len, 15_100,
        "trimmed up to the node of audit's last delivered entry"
    );
    assert_eq!(first_id(redis, &key).as_deref(), Some("p-44900"));
    assert_eq!(
        trimmed(&s.workers[0], env),
        14_900.0,
        "stream_trimmed_total"
    );
    s.workers[0].sigterm();
    let code = s.workers[0]
        .wait_exit(Duration::from_secs(10))
        .and_then(|e| e.code());
    assert_eq!(code, Some(0));

    // 3. Without "audit", a worker passing every second: down to the last node, then 2,000
    // events/s for 5 s: what the group is done with waits about one interval at most, every
    // event is handled once.
    redis.cmd(&["XGROUP", "DESTROY", &key, "audit"]);
    s.cfg.top_level += "retention_interval = \"1s\"\n";
    let w = s.add_worker();
    let redis = &s.redis;
    s.workers[w].wait_ready(Duration::from_secs(15));
    let len = wait_len(redis, &key, 100, Duration::from_secs(5));
    assert_eq!(
        len, 100,
        "everything acknowledged trimmed but the last node"
    );
    let t0 = Instant::now();
    let (mut max_len, mut max_behind) = (0, 0);
    for k in 0..BATCHES {
        if let Some(wait) = (GAP * k as u32).checked_sub(t0.elapsed()) {
            std::thread::sleep(wait);
        }
        add(redis, &key, base, BACKLOG + k * BATCH, BATCH);
        if k % 2 == 1 {
            let (len, behind) = (redis.xlen(&key), behind(redis, &key));
            max_len = max_len.max(len);
            max_behind = max_behind.max(behind);
        }
    }
    let took = t0.elapsed();
    let published = BATCH * BATCHES;
    let rate = published as f64 / took.as_secs_f64();
    let settled = try_wait_until(Duration::from_secs(4), || {
        drained(redis, env, "group", &[TY]) && redis.xlen(&key) <= 100
    });
    let len = redis.xlen(&key);
    let dlq = redis.xlen(&dlq_key(env));
    let total = trimmed(&s.workers[w], env);
    let handled = sum(
        &parse_metrics(&s.workers[w].metrics()),
        "event_worker_events_total",
        &[("env", env), ("type", TY), ("outcome", "success")],
    );
    eprintln!(
        "[T63] sustained: {published} in {took:?} ({rate:.0}/s), retention_interval 1s: XLEN \
         max {max_len}, after {len}; done with but not trimmed max {max_behind}; \
         stream_trimmed_total {total}; handled {handled}; DLQ {dlq}"
    );
    assert!(rate > 1_500.0, "the publisher kept its rate: {rate:.0}/s");
    assert!(
        max_behind <= 4_500,
        "what the group is done with is trimmed within about two retention_intervals of \
         events (2,000/s): max {max_behind} entries waiting"
    );
    assert!(
        max_len <= 8_000,
        "XLEN stays bounded (10,100 untrimmed): max {max_len}"
    );
    assert!(settled, "drained and trimmed to the last node: XLEN {len}");
    assert_eq!(dlq, 0, "nothing dead-lettered");
    assert_eq!(
        handled, published as f64,
        "every event handled once: none trimmed before it was delivered and acknowledged"
    );
    assert_eq!(
        total as i64 + len,
        15_100 + published as i64,
        "every entry trimmed is counted"
    );
}
