//! docs/reliability-matrix.md rows C not covered elsewhere: T16b eviction, T17 CLIENT KILL
//! storm, T18 CLIENT PAUSE ALL / WRITE, T19 DEBUG SLEEP stall.

use crate::util::api::Api;
use crate::util::checker::CheckOpts;
use crate::util::faults::{ClientKillStorm, DebugSleep, KillTarget, client_pause};
use crate::util::worker::cli;
use crate::util::*;
use serde_json::json;
use std::time::{Duration, Instant};

const TY: &str = "stock.moved";
const TOKEN: &str = "rows-redis-token-0123456789";

#[test]
fn t16b_eviction_allkeys_lru_is_reported() {
    let mut s = Scenario::new("T16b")
        .types(&[TY])
        .sink(Action::delayed(200, Duration::from_millis(5)))
        .start();
    let (env, redis, cfg) = (s.env.clone(), &s.redis, &s.cfg);
    let anon = s.api(None);
    let used: i64 = info_field(redis, "memory", "used_memory").unwrap_or(0);
    let cap = used + 2 * 1024 * 1024;
    redis.cmd(&["CONFIG", "SET", "maxmemory", &cap.to_string()]);
    redis.cmd(&["CONFIG", "SET", "maxmemory-policy", "allkeys-lru"]);
    let degraded = try_wait_until(Duration::from_secs(5), || {
        anon.get("/api/events/health").json()["status"] == json!("degraded")
    });
    let h = anon.get("/api/events/health").json();
    assert!(degraded, "health not degraded under allkeys-lru: {h}");
    assert!(
        h["warnings"].to_string().contains("maxmemory"),
        "no maxmemory warning: {h}"
    );
    let out = cli(cfg, &["check"]);
    let text = format!("{}{}", out.stdout, out.stderr);
    assert!(
        text.contains("maxmemory-policy") || text.contains("maxmemory"),
        "check does not warn about the policy: {text}"
    );
    // Fill memory: the run is expected to lose data (documents why noeviction is mandatory).
    let l = &s.ledger;
    let blob = "x".repeat(2048);
    for i in 0..3000 {
        let id = format!("ev-{i:05}");
        l.lock().unwrap().attempt(&id);
        let data = format!(r#"{{"pad":"{blob}"}}"#);
        if redis
            .try_xadd(
                &stream_key(&env, TY),
                &[("id", &id), ("type", TY), ("data", &data)],
            )
            .is_ok()
        {
            l.lock().unwrap().ack(&id);
        }
    }
    std::thread::sleep(Duration::from_secs(3));
    let evicted = info_field(redis, "stats", "evicted_keys").unwrap_or(0);
    let rep = s.check(&CheckOpts::default());
    eprintln!(
        "[T16b] maxmemory {cap} allkeys-lru: evicted_keys={evicted}; {}",
        rep.summary()
    );
    assert!(
        evicted > 0,
        "nothing was evicted; the row did not exercise eviction"
    );
    s.w().assert_running();
    s.redis
        .cmd(&["CONFIG", "SET", "maxmemory-policy", "noeviction"]);
    s.redis.cmd(&["CONFIG", "SET", "maxmemory", "0"]);
}

#[test]
fn t17_client_kill_storm() {
    // Concurrency 8: a backlog drains at about `free slots / read_block` (see
    // worker_lifecycle::t04b), so the load stays below what 8 slots sustain.
    let concurrency = 8;
    let mut s = Scenario::new("T17")
        .types(&[TY])
        .setup(|r| {
            r.cmd(&[
                "ACL",
                "SETUSER",
                "worker",
                "on",
                ">wpass-17",
                "~*",
                "&*",
                "+@all",
            ]);
        })
        .url(|r, _| format!("redis://worker:wpass-17@127.0.0.1:{}", r.port))
        .sink(Action::delayed(200, Duration::from_millis(10)))
        .config(move |c| c.concurrency = concurrency)
        .start();
    let publisher = s.publisher("ks", 450, Duration::from_millis(20));
    s.wait_load(30);
    let storm_secs = 8;
    let storm = ClientKillStorm::start(
        &s.redis,
        KillTarget::User("worker".into()),
        Duration::from_millis(500),
        Duration::from_secs(storm_secs),
    );
    let (rounds, killed) = storm.join();
    let storm_end = s.sink.now();
    // Recovery: first successful handler run after the storm.
    let recovery = s.sink.recovery_after(
        "a success after the storm",
        storm_end,
        Duration::from_secs(15),
    );
    publisher.join().unwrap();
    // Per cut: the events in flight plus the successes awaiting their XACK (README, Limits).
    let bound = rounds * 2 * concurrency as usize;
    let rep = s.conserved(Close {
        dup_bound: bound,
        ..Close::default()
    });
    eprintln!(
        "[T17] {rounds} CLIENT KILL rounds over {storm_secs}s killed {killed} connections; \
         recovery {recovery:?}; dups {} (bound {bound})",
        rep.duplicated
    );
    s.w().assert_running();
    assert!(
        killed >= rounds / 2,
        "the storm killed too little: {killed}"
    );
    assert!(
        recovery <= Duration::from_secs(1),
        "throughput back only {recovery:?} after the storm (row bound 1 s)"
    );
}

#[test]
fn t18_client_pause_all_and_write() {
    let mut s = Scenario::new("T18")
        .types(&[TY])
        .sink(Action::delayed(200, Duration::from_millis(10)))
        .token(TOKEN)
        .start();
    let publisher = s.publisher("pz", 500, Duration::from_millis(20));
    s.wait_load(20);
    let mut api_results = Vec::new();
    for mode in ["ALL", "WRITE"] {
        client_pause(&s.redis, 5000, mode);
        let paused_at = Instant::now();
        // Publishes through the API while paused (each in its own thread).
        let handles: Vec<_> = (0..3)
            .map(|k| {
                let addr = s.cfg.api_addr();
                let id = format!("api-{mode}-{k}");
                std::thread::spawn(move || {
                    let api = Api::new(&addr, Some(TOKEN));
                    let t = Instant::now();
                    let r = api.post(
                        "/api/events/publish",
                        &json!({"type": TY, "data": {"k": k}, "id": id}),
                    );
                    (id, r.status, t.elapsed(), r.body)
                })
            })
            .collect();
        for h in handles {
            let (id, status, took, body) = h.join().unwrap();
            {
                let mut led = s.ledger.lock().unwrap();
                led.attempt(&id);
                if (200..300).contains(&status) {
                    led.ack(&id);
                }
            }
            assert!(
                (200..300).contains(&status) || status == 503,
                "publish during CLIENT PAUSE {mode}: {status} {body}"
            );
            assert!(
                took <= Duration::from_secs(31),
                "publish took {took:?} (deadline 30 s)"
            );
            api_results.push(format!("{mode}:{id}:{status}:{:.2}s", took.as_secs_f64()));
        }
        let left = Duration::from_millis(5200).saturating_sub(paused_at.elapsed());
        std::thread::sleep(left);
        s.w().assert_running();
    }
    publisher.join().unwrap();
    s.conserve(Duration::from_secs(30));
    std::thread::sleep(Duration::from_millis(300));
    // Never 2xx without an XADD: every acknowledged API id is in the stream.
    let in_stream: std::collections::BTreeSet<String> = s
        .redis
        .xrange(&stream_key(&s.env, TY))
        .iter()
        .filter_map(|e| e.get("id").map(str::to_string))
        .collect();
    for id in s
        .ledger
        .lock()
        .unwrap()
        .acked
        .iter()
        .filter(|i| i.starts_with("api-"))
    {
        assert!(in_stream.contains(id), "API said 2xx for {id} but no entry");
    }
    let rep = s.check(&CheckOpts::default());
    rep.assert_ok("T18", 0, "");
    s.assert_metrics(&rep, Some(0));
    eprintln!("[T18] API publishes during pauses: {api_results:?}");
}

#[test]
fn t19_debug_sleep_stall() {
    let concurrency = 4;
    let mut s = Scenario::new("T19")
        .types(&[TY])
        .sink(Action::delayed(200, Duration::from_millis(10)))
        .config(move |c| c.concurrency = concurrency)
        .start();
    let anon = s.api(None);
    let publisher = s.publisher("ds", 600, Duration::from_millis(20));
    s.wait_load(20);
    let sleep = DebugSleep::start(&s.redis, 10.0);
    std::thread::sleep(Duration::from_secs(4));
    let t = Instant::now();
    let during = anon.send("GET", "/api/events/health", &[], None);
    let health_took = t.elapsed();
    let r = sleep.join();
    let stall_end = s.sink.now();
    assert!(
        matches!(r, Ok(ref v) if v.as_str().as_deref() == Some("OK")),
        "{r:?}"
    );
    let recovery = s.sink.recovery_after(
        "a success after the stall",
        stall_end,
        Duration::from_secs(20),
    );
    publisher.join().unwrap();
    s.conserved(Close {
        dup_bound: concurrency as usize,
        ..Close::default()
    });
    eprintln!(
        "[T19] health during a 10 s DEBUG SLEEP: {} in {health_took:?}: {}; recovery after the stall {recovery:?}",
        during.status, during.body
    );
    s.w().assert_running();
    let status = serde_json::from_str::<serde_json::Value>(&during.body)
        .map(|v| v["status"].clone())
        .unwrap_or_default();
    assert!(
        status != json!("ok"),
        "health said ok while Redis was stalled: {}",
        during.body
    );
    assert!(
        health_took < Duration::from_secs(5),
        "health took {health_took:?} while Redis was stalled"
    );
}

/// T60: Redis out of memory (`maxmemory` reached under `noeviction`) with two workers and
/// events in flight: health turns `degraded` with `redis_refuses_writes`, `/readyz` stays
/// ready, the refused writes are counted by cause, both heartbeats stay alive and no entry
/// is claimed from a live consumer; once memory is raised everything drains, nothing lost,
/// and health is `ok` again.
#[test]
fn t60_out_of_memory_is_degraded_without_takeovers() {
    let mut s = Scenario::new("T60")
        .types(&[TY])
        .workers(2)
        .sink(Action::delayed(200, Duration::from_millis(1000)))
        .config(|c| c.concurrency = 2)
        .start();
    let env = s.env.clone();
    let addrs: Vec<String> = s.workers.iter().map(|w| w.config.api_addr()).collect();
    let anon = s.api(None);
    for i in 0..24 {
        assert!(s.publish(&format!("oom-{i:02}")));
    }
    s.wait_load(2);
    // maxmemory just above the memory in use, a filler key grown in 64 KiB steps until Redis
    // refuses it, then maxmemory 256 KiB under the memory now in use (so freed client buffers
    // cannot lift the refusal): every write that could grow memory is refused with OOM.
    let used = info_field(&s.redis, "memory", "used_memory").unwrap_or(0);
    s.redis.cmd(&[
        "CONFIG",
        "SET",
        "maxmemory",
        &(used + 256 * 1024).to_string(),
    ]);
    let chunk = "x".repeat(64 * 1024);
    let full = (0..64).any(|_| {
        let r = s.redis.try_cmd(&["APPEND", "t60:filler", &chunk]);
        format!("{r:?}").contains("OOM command not allowed")
    });
    assert!(full, "the filler never reached maxmemory");
    let used = info_field(&s.redis, "memory", "used_memory").unwrap_or(0);
    s.redis.cmd(&[
        "CONFIG",
        "SET",
        "maxmemory",
        &(used - 256 * 1024).to_string(),
    ]);
    let probe = s.redis.try_cmd(&["SET", "t60:probe", "1"]);
    assert!(
        format!("{probe:?}").contains("OOM command not allowed"),
        "the filler did not fill memory: {probe:?}"
    );
    let oom_at = Instant::now();
    let (mut degraded, mut heartbeats, mut ready) = (None, Vec::new(), Vec::new());
    let (mut refusing, mut statuses) = (Vec::new(), Vec::new());
    while oom_at.elapsed() < Duration::from_secs(5) {
        let h = anon.get("/api/events/health").json();
        if degraded.is_none() && h["status"] == json!("degraded") {
            degraded = Some((oom_at.elapsed(), h.clone()));
        }
        let probe = s.redis.try_cmd(&["SET", "t60:probe", "1"]);
        refusing.push(format!("{probe:?}").contains("OOM command not allowed"));
        statuses.push(h["status"].as_str().unwrap_or("").to_string());
        let beats = s
            .redis
            .scan_keys(&format!("events:{env}:heartbeat:*"))
            .len();
        heartbeats.push(beats);
        for addr in &addrs {
            ready.push(http_get(addr, "/readyz").map_or(0, |(code, _)| code));
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    let scrape = parse_metrics(&s.w().metrics());
    s.redis.cmd(&["CONFIG", "SET", "maxmemory", "0"]);
    eprintln!(
        "[T60] during OOM: health {statuses:?}; heartbeat keys {heartbeats:?}; /readyz {ready:?}"
    );
    let (took, h) = degraded.expect("health never said degraded while Redis refused writes");
    let reasons = h["reasons"].as_array().unwrap();
    let reason = reasons
        .iter()
        .find(|r| r["code"] == json!("redis_refuses_writes"))
        .unwrap_or_else(|| panic!("no redis_refuses_writes reason: {h}"));
    let message = reason["message"].as_str().unwrap();
    assert!(
        message.starts_with(
            "Redis refuses writes: OOM (used memory reached maxmemory, maxmemory-policy \
             noeviction), last "
        ) && message.ends_with(
            "ms ago: raise maxmemory (CONFIG SET maxmemory) or free memory (trim the DLQ and \
             the streams); processing waits and resumes by itself"
        ),
        "{message}"
    );
    assert!(
        took < Duration::from_secs(3),
        "degraded only after {took:?}"
    );
    assert!(ready.iter().all(|c| *c == 200), "/readyz answers {ready:?}");
    assert!(
        heartbeats.iter().all(|n| *n == 2),
        "live heartbeat keys during OOM: {heartbeats:?}"
    );
    assert!(
        refusing.iter().all(|r| *r),
        "writes were not refused throughout: {refusing:?}"
    );
    let first = statuses.iter().position(|s| s == "degraded").unwrap_or(0);
    assert!(
        statuses[first..].iter().all(|s| s == "degraded"),
        "health during OOM: {statuses:?}"
    );
    let refused = |cause| {
        sum(
            &scrape,
            "event_worker_redis_refused_writes_total",
            &[("cause", cause)],
        )
    };
    assert!(refused("oom") > 0.0, "no refused write counted");
    assert_eq!(
        samples(
            &scrape,
            "event_worker_redis_refused_writes_total",
            &[("cause", "readonly")]
        )
        .len(),
        1
    );
    let rep = s.conserved(Close::default());
    let reclaimed: f64 = s
        .scrapes()
        .iter()
        .map(|m| sum(m, "event_worker_reclaimed_total", &[]))
        .sum();
    assert_eq!(reclaimed, 0.0, "entries claimed from a live consumer");
    wait_until("health ok after OOM", Duration::from_secs(8), || {
        anon.get("/api/events/health").json()["status"] == json!("ok")
    });
    eprintln!(
        "[T60] degraded after {took:?}; refused oom {}; heartbeats {heartbeats:?}; {}",
        refused("oom"),
        rep.summary()
    );
}
