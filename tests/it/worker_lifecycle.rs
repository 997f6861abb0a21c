//! docs/reliability-matrix.md rows A/B not covered elsewhere: T03 startup with a backlog
//! (and the BUSYGROUP restart path), T04 order with a single consumer, T09
//! takeover among three daemons without restarts, T12 consumer-name hygiene
//! (long tier).

use crate::util::checker::{CheckOpts, publish_logged};
use crate::util::*;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

const TY: &str = "orders.created";

#[test]
fn t03_startup_and_backlog() {
    let fresh = "orders.fresh";
    let mut s = Scenario::new("T03")
        .types(&[TY])
        .routes(move |_, url| vec![Route::http(&[TY], url), Route::http(&[fresh], url)])
        .config(|c| c.concurrency = 8)
        .workers(0)
        .start();
    let env = s.env.clone();
    let (env, redis) = (env.as_str(), &s.redis);
    assert!(!redis.exists(&stream_key(env, TY)));
    // 1000 events before the stream or the group exist, daemon down.
    for i in 0..1000 {
        assert!(s.publish(&format!("b-{i:04}")));
    }
    assert!(redis.xinfo_group_names(&stream_key(env, TY)).is_empty());
    let monitor = Monitor::start(redis);
    s.add_worker();
    let (redis, sink) = (&s.redis, &s.sink);
    let t0 = Instant::now();
    s.workers[0].wait_ready(Duration::from_secs(15));
    assert!(
        s.wait_conserved(Duration::from_secs(30)),
        "backlog not drained: {} of 1000 handled",
        sink.success_counts().len()
    );
    let backlog_secs = t0.elapsed().as_secs_f64();
    let first = s.check(&CheckOpts::default());
    first.assert_metrics(
        "T03 first start",
        &[parse_metrics(&s.workers[0].metrics())],
        env,
        Some(0),
    );
    // The exact route's stream did not exist: created with its group (MKSTREAM).
    assert!(redis.exists(&stream_key(env, fresh)), "MKSTREAM");
    assert_eq!(
        redis.xinfo_group_names(&stream_key(env, fresh)),
        vec!["group".to_string()]
    );
    // Restart: XGROUP CREATE answers BUSYGROUP, which is success.
    let w = &mut s.workers[0];
    w.graceful_restart();
    for i in 0..100 {
        s.publish(&format!("a-{i:04}"));
    }
    s.conserve(Duration::from_secs(20));
    let transcript = monitor.stop();
    let creates: Vec<_> = transcript
        .iter()
        .filter(|m| {
            m.args.len() > 2
                && m.args[0].eq_ignore_ascii_case("XGROUP")
                && m.args[1].eq_ignore_ascii_case("CREATE")
                && m.args[2] == stream_key(env, TY)
        })
        .map(|m| m.args.join(" "))
        .collect();
    assert!(
        creates.len() >= 2,
        "expected a create per start (the second answered BUSYGROUP): {creates:?}"
    );
    assert!(
        creates.iter().all(|c| c.ends_with(" 0 MKSTREAM")),
        "groups are created at 0 with MKSTREAM: {creates:?}"
    );
    let rep = s.check(&CheckOpts::default());
    rep.assert_ok("T03", 0, &s.sink.ledger_dump());
    assert_eq!(rep.ok_runs, 1100);
    // The second process counted only its 100.
    let w = &s.workers[0];
    let m = parse_metrics(&w.metrics());
    assert_eq!(
        sum(
            &m,
            "event_worker_events_total",
            &[("env", env), ("outcome", "success")]
        ),
        100.0
    );
    let err_lines: Vec<_> = w
        .output()
        .lines()
        .filter(|l| l.contains("BUSYGROUP"))
        .map(str::to_string)
        .collect();
    assert!(err_lines.is_empty(), "BUSYGROUP surfaced: {err_lines:?}");
    eprintln!("[T03] 1000-event backlog handled in {backlog_secs:.2}s (incl. start)");
}

#[test]
fn t04_order_single_consumer() {
    let mut s = Scenario::new("T04")
        .types(&[TY])
        .config(|c| {
            c.concurrency = 1;
            // With one free slot the reader alternates between the type stream and the
            // (empty) redeliver stream, blocking read_block on the latter each time
            // (see t04b below); a short block keeps this ordering test fast.
            c.read_block = "50ms".into();
        })
        .workers(0)
        .start();
    // Half before the start (backlog), half while running.
    for i in 0..150 {
        s.publish(&format!("o-{i:04}"));
    }
    s.add_worker();
    s.w().wait_ready(Duration::from_secs(15));
    for i in 150..300 {
        s.publish(&format!("o-{i:04}"));
    }
    let rep = s.report(
        Duration::from_secs(30),
        Duration::ZERO,
        &CheckOpts::default(),
    );
    let order: Vec<String> = s.sink.ledger().into_iter().map(|r| r.id).collect();
    let published = s.ledger.lock().unwrap().order.clone();
    assert_eq!(
        order, published,
        "handler order differs from XADD order with concurrency 1"
    );
    assert_eq!(s.sink.max_concurrent(), 1);
    rep.assert_ok("T04", 0, "");
    s.assert_metrics(&rep, Some(0));
}

/// Companion of T04 (a finding): with `concurrency = 1` a backlog must drain at
/// handler speed. The reader plans one stream per free slot "in turn" over the
/// type stream and the redeliver stream, and each read BLOCKs `read_block`, so
/// every other read waits on the empty redeliver stream: ~1 event per
/// `read_block` (1 s with the default config).
#[test]
fn t04b_single_consumer_backlog_throughput() {
    let mut s = Scenario::new("T04b")
        .types(&[TY])
        .config(|c| {
            c.concurrency = 1;
            c.read_block = "1s".into(); // the README's default
        })
        .workers(0)
        .start();
    for i in 0..100 {
        s.publish(&format!("q-{i:04}"));
    }
    s.add_worker();
    s.w().wait_ready(Duration::from_secs(15));
    let t0 = Instant::now();
    let sink = &s.sink;
    let done = s.wait_conserved(Duration::from_secs(15));
    let handled = sink.success_counts().len();
    let secs = t0.elapsed().as_secs_f64();
    eprintln!(
        "[T04b] concurrency 1, read_block 1s: {handled} of 100 backlog events in {secs:.1}s ({:.1}/s)",
        handled as f64 / secs
    );
    assert!(
        done,
        "a 100-event backlog with an instant handler took more than 15 s at concurrency 1 \
         ({handled} handled): the reader blocks read_block on the empty redeliver stream \
         between two entries (src/consumer.rs plan_read/run)"
    );
}

#[test]
fn t09_dead_worker_takeover_three_daemons() {
    let (ttl, reclaim) = (Duration::from_secs(2), Duration::from_millis(200));
    let mut s = Scenario::new("T09")
        .types(&[TY])
        .sink(Action::delayed(200, Duration::from_millis(300)))
        .workers(3)
        .config(|c| {
            c.concurrency = 3;
            // Orphans are w1's entries in flight: nothing read ahead of its handler slots.
            c.top_level = "prefetch = 3\n".into();
            c.visibility_timeout = "120s".into();
            c.heartbeat_ttl = "2s".into();
            c.reclaim_interval = "200ms".into();
        })
        .start();
    let (env, redis, l) = (s.env.clone(), &s.redis, &s.ledger);
    let env = env.as_str();
    let mut event_of: BTreeMap<String, String> = BTreeMap::new();
    for i in 0..90 {
        let id = format!("t-{i:03}");
        l.lock().unwrap().attempt(&id);
        let entry = publish(redis, env, TY, &id);
        l.lock().unwrap().ack(&id);
        event_of.insert(entry, id);
    }
    wait_until("w1 holds pending entries", Duration::from_secs(10), || {
        redis
            .xpending_detail(&stream_key(env, TY), "group")
            .iter()
            .filter(|p| p.1 == "w1")
            .count()
            >= 2
    });
    let mut victim = s.workers.remove(0);
    victim.kill9();
    let (redis, sink) = (&s.redis, &s.sink);
    let kill_at = sink.now();
    let orphans: Vec<String> = redis
        .xpending_detail(&stream_key(env, TY), "group")
        .into_iter()
        .filter(|p| p.1 == "w1")
        .map(|p| event_of[&p.0].clone())
        .collect();
    assert!(!orphans.is_empty());
    s.conserve(Duration::from_secs(40));
    let bound = ttl + reclaim + Duration::from_millis(1500);
    let mut worst = Duration::ZERO;
    for id in &orphans {
        let again = sink
            .requests_for(id)
            .into_iter()
            .find(|r| r.received > kill_at)
            .unwrap_or_else(|| panic!("orphan {id} never delivered again"));
        let delay = again.received - kill_at;
        worst = worst.max(delay);
        assert!(
            delay <= bound,
            "orphan {id} taken over after {delay:?} > heartbeat_ttl + reclaim_interval + slack = {bound:?}"
        );
    }
    let rep = s.check(&CheckOpts::default());
    // Duplicates: at most what w1 had in flight (its concurrency).
    rep.assert_ok("T09", 3, &sink.ledger_dump());
    let reclaimed: f64 = s
        .scrapes()
        .iter()
        .map(|m| sum(m, "event_worker_reclaimed_total", &[("env", env)]))
        .sum();
    assert!(
        reclaimed >= orphans.len() as f64,
        "reclaimed_total {reclaimed}"
    );
    // The survivors were never restarted: the takeover is periodic, not at startup.
    for w in s.workers.iter_mut() {
        w.assert_running();
        assert_eq!(w.starts(), 1, "{} was restarted", w.name);
    }
    eprintln!(
        "[T09] {} orphans of the killed daemon, worst takeover {worst:?} (bound {bound:?}), dups {}",
        orphans.len(),
        rep.duplicated
    );
}

/// XINFO CONSUMERS: (name, pending, idle ms).
fn consumers(redis: &RedisServer, key: &str, group: &str) -> Vec<(String, i64, i64)> {
    use crate::util::resp::Value;
    redis
        .cmd(&["XINFO", "CONSUMERS", key, group])
        .items()
        .iter()
        .map(|c| {
            let f = c.items();
            let get = |n: &str| {
                f.chunks(2)
                    .find(|p| p.first().and_then(Value::as_str).as_deref() == Some(n))
                    .and_then(|p| p.get(1).cloned())
                    .unwrap_or(Value::Nil)
            };
            (
                get("name").as_str().unwrap_or_default(),
                get("pending").as_int().unwrap_or(-1),
                get("idle").as_int().unwrap_or(-1),
            )
        })
        .collect()
}

#[test]
#[ignore = "long tier: the dead-consumer cleanup only removes consumers idle >= 60 s, every 30 s (~100 s)"]
fn t12_consumer_name_hygiene() {
    let s = Scenario::new("T12")
        .types(&[TY])
        .config(|c| {
            c.consumer = None; // hostname-pid: a fresh name per start
            c.heartbeat_ttl = "2s".into();
            // The holder below never refreshes its idle time: keep the backstop away.
            c.visibility_timeout = "10m".into();
        })
        .workers(0)
        .start();
    let (env, redis, sink, l) = (s.env.as_str(), &s.redis, &s.sink, &s.ledger);
    let key = stream_key(env, TY);
    // A consumer that holds a pending entry and stays "alive" (heartbeat kept):
    // the cleanup must never delete it.
    redis.cmd(&["XGROUP", "CREATE", &key, "group", "0", "MKSTREAM"]);
    publish_logged(redis, env, TY, "held", l);
    let r = redis.read_as(&key, "group", "holder", 1);
    assert!(!r.items().is_empty());
    let hb = heartbeat_key(env, "group", "holder");
    redis.cmd(&["SET", &hb, "{}", "PX", "600000"]);
    let mut w = WorkerProcess::start("w", s.cfg.clone());
    let restarts = 15;
    for k in 0..restarts {
        w.wait_ready(Duration::from_secs(15));
        for i in 0..5 {
            publish_logged(redis, env, TY, &format!("r{k:02}-{i}"), l);
        }
        std::thread::sleep(Duration::from_millis(400));
        if k % 3 == 0 {
            w.kill9();
        } else {
            w.sigterm();
            let _ = w.wait_exit(Duration::from_secs(10));
        }
        w.restart();
    }
    w.wait_ready(Duration::from_secs(15));
    let live = crate::util::api::Api::new(&w.config.api_addr(), None)
        .get("/api/events/health")
        .json()["consumer"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    // Redis creates a consumer on its first delivery: give the live one work.
    for i in 0..5 {
        publish_logged(redis, env, TY, &format!("last-{i}"), l);
    }
    wait_until(
        "the last start handles its events",
        Duration::from_secs(10),
        || (0..5).all(|i| sink.success_counts().contains_key(&format!("last-{i}"))),
    );
    let peak = consumers(redis, &key, "group").len();
    eprintln!("[T12] consumers after {restarts} restarts: {peak} (live: {live})");
    // Watch the cleanup: the holder keeps its entry, the live consumer is never
    // removed, and every removed consumer had nothing pending.
    let monitor = Monitor::start(redis);
    let start = Instant::now();
    let mut last = Vec::new();
    let bounded = try_wait_until(Duration::from_secs(150), || {
        let cs = consumers(redis, &key, "group");
        let holder = cs.iter().find(|c| c.0 == "holder").cloned();
        assert_eq!(
            holder.map(|h| h.1),
            Some(1),
            "the consumer holding a pending entry was deleted or lost it: {cs:?}"
        );
        let names: Vec<&str> = cs.iter().map(|c| c.0.as_str()).collect();
        let done = names.len() == 2 && names.contains(&live.as_str());
        last = cs;
        done
    });
    std::thread::sleep(Duration::from_millis(500));
    let deleted: Vec<String> = monitor
        .stop()
        .iter()
        .filter(|m| {
            m.args.len() > 4
                && m.args[0].eq_ignore_ascii_case("XGROUP")
                && m.args[1].eq_ignore_ascii_case("DELCONSUMER")
        })
        .map(|m| m.args[4].clone())
        .collect();
    eprintln!(
        "[T12] consumers {peak} -> {} within {:?}; DELCONSUMER of {} consumers",
        last.len(),
        start.elapsed(),
        deleted.len()
    );
    assert!(
        !deleted.contains(&live) && !deleted.iter().any(|d| d == "holder"),
        "the cleanup removed a live consumer ({live}) or the holder: {deleted:?}"
    );
    assert!(
        bounded,
        "XINFO CONSUMERS did not settle on {{holder, {live}}} after {:?}: {last:?}",
        start.elapsed()
    );
    l.lock().unwrap().acked.remove("held");
    s.conserve_on(&[], Duration::from_secs(10));
    let rep = s.check(&CheckOpts::default());
    rep.assert_ok("T12", 5 * 4 * 5, "");
}

/// The `runtime_threads` of the daemon's "event-worker starting" log line.
fn runtime_threads(logs: &str) -> Option<usize> {
    let line = logs.lines().find(|l| l.contains("event-worker starting"))?;
    let at = line.find("runtime_threads")? + "runtime_threads".len();
    let digits: String = line[at..]
        .trim_start_matches(|c: char| !c.is_ascii_digit())
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

#[test]
fn worker_threads_sets_the_daemons_runtime_threads() {
    // Without push, the default is one thread.
    let mut s = Scenario::new("wthreads").types(&[TY]).start();
    assert!(s.publish("wt-1"));
    s.conserve(Duration::from_secs(15));
    assert_eq!(runtime_threads(&s.w().logs()), Some(1), "{}", s.w().logs());
    let mut s = Scenario::new("wthreads-env")
        .types(&[TY])
        .config(|c| {
            c.env_vars
                .push(("EVENTS_WORKER_THREADS".into(), "3".into()))
        })
        .start();
    assert!(s.publish("wt-2"));
    s.conserve(Duration::from_secs(15));
    assert_eq!(runtime_threads(&s.w().logs()), Some(3), "{}", s.w().logs());
}
