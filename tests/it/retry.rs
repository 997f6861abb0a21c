//! docs/reliability-matrix.md rows E not covered elsewhere: T28 handler timeout (HTTP) and
//! panics (the library embedded in-process), T31 retention never trims what a
//! group has not acknowledged.

use crate::util::checker::CheckOpts;
use crate::util::*;
use event_worker::{Config, Event, Outcome, WorkerBuilder, handler_fn};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

#[test]
fn t28_handler_timeout_retries_then_dlq() {
    let timeout = Duration::from_millis(300);
    let mut s = Scenario::new("T28")
        .types(&["slow.op"])
        .route_timeout("300ms")
        .config(|c| c.max_attempts = 3)
        .workers(0)
        .start();
    // Longer than the route's timeout, and a 200 at the end: a late success
    // must not count (the daemon gave up on the run).
    for i in 0..3 {
        s.sink.script(
            &format!("slow-{i}"),
            vec![Action::delayed(200, Duration::from_millis(1500))],
        );
    }
    s.add_worker();
    s.w().wait_ready(Duration::from_secs(15));
    let mut dead = std::collections::BTreeSet::new();
    for i in 0..3 {
        let id = format!("slow-{i}");
        s.publish(&id);
        dead.insert(id);
    }
    for i in 0..20 {
        s.publish(&format!("fast-{i:02}"));
    }
    let opts = CheckOpts {
        handler_timeout: Some(timeout),
        expect_dead: dead.clone(),
        ..CheckOpts::default()
    };
    // Let the abandoned runs answer, then check nothing changed.
    let rep = s.conserved(Close {
        timeout: Duration::from_secs(20),
        settle: Duration::from_millis(1800),
        opts,
        sink_dump: true,
        retried: Some(2 * 3),
        ..Close::default()
    });
    let (sink, redis, env) = (&s.sink, &s.redis, s.env.as_str());
    let dlq = dlq_by_id(redis, env);
    for id in &dead {
        let e = &dlq[id][0];
        assert_eq!(e.get("dlq_reason"), Some("max_attempts_exceeded"), "{e:?}");
        assert_eq!(e.get("dlq_attempts"), Some("3"), "{e:?}");
        assert!(
            e.get("dlq_error").unwrap_or("").contains("timed out"),
            "{e:?}"
        );
        assert_eq!(sink.requests_for(id).len(), 3, "runs of {id}");
    }
    assert_eq!(rep.dlq_reasons.get("max_attempts_exceeded"), Some(&3));
    s.w().assert_running();
}

/// Runs the library in-process (its own runtime thread) until `stop`.
fn run_embedded(
    cfg: &WorkerConfig,
    builder: impl FnOnce(Config) -> WorkerBuilder + Send + 'static,
    stop: CancellationToken,
) -> std::thread::JoinHandle<Result<(), String>> {
    let toml = cfg.to_toml();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let config = Config::from_toml_and_env(&toml, |_| None).map_err(|e| format!("{e:?}"))?;
        rt.block_on(builder(config).run(stop))
            .map_err(|e| e.to_string())
    })
}

#[test]
fn t28_library_handler_panics_are_retryable_failures() {
    let env = "t28lib";
    let ty = "lib.op";
    let redis = RedisServer::start();
    let _dump = redis.dump_on_panic(env);
    let mut cfg = WorkerConfig::new(env, &redis.url());
    cfg.max_attempts = 3;
    cfg.visibility_timeout = "60s".into();
    let runs: Arc<Mutex<Vec<(String, u32)>>> = Arc::new(Mutex::new(Vec::new()));
    let stop = CancellationToken::new();
    let handle = {
        let runs = Arc::clone(&runs);
        run_embedded(
            &cfg,
            move |config| {
                WorkerBuilder::new(config).route(
                    &[ty],
                    handler_fn(move |event: Event| {
                        runs.lock()
                            .unwrap()
                            .push((event.id.to_string(), event.attempt));
                        // A panic while building the future (before any .await) ...
                        if event.id.starts_with("psync") {
                            panic!("test panic (sync) for {}", event.id);
                        }
                        async move {
                            // ... and one inside it.
                            if event.id.starts_with("pasync") {
                                panic!("test panic (async) for {}", event.id);
                            }
                            Outcome::Success
                        }
                    }),
                )
            },
            stop.clone(),
        )
    };
    let api = cfg.api_addr();
    wait_until("embedded worker ready", Duration::from_secs(15), || {
        matches!(http_get(&api, "/readyz"), Some((200, _)))
    });
    let count = |id: &str| runs.lock().unwrap().iter().filter(|r| r.0 == id).count();
    let ok_ids: Vec<String> = (0..10).map(|i| format!("ok-{i}")).collect();
    for id in ["pasync-1", "pasync-2"] {
        publish(&redis, env, ty, id);
    }
    for id in &ok_ids[..5] {
        publish(&redis, env, ty, id);
    }
    // Panics inside the future: retry, then DLQ after max_attempts.
    wait_until(
        "async panics dead-lettered",
        Duration::from_secs(15),
        || {
            let d = dlq_by_id(&redis, env);
            d.contains_key("pasync-1") && d.contains_key("pasync-2")
        },
    );
    let d = dlq_by_id(&redis, env);
    for id in ["pasync-1", "pasync-2"] {
        let e = &d[id][0];
        assert_eq!(e.get("dlq_reason"), Some("max_attempts_exceeded"), "{e:?}");
        assert!(
            e.get("dlq_error").unwrap_or("").contains("panicked"),
            "{e:?}"
        );
        assert_eq!(count(id), 3, "handler runs of {id}");
    }
    // A panic raised while the handler builds its future (Handler::handle
    // itself panicking) must count the same way.
    publish(&redis, env, ty, "psync-1");
    for id in &ok_ids[5..] {
        publish(&redis, env, ty, id);
    }
    let sync_dead = try_wait_until(Duration::from_secs(15), || {
        dlq_by_id(&redis, env).contains_key("psync-1")
    });
    // The worker survived: every ok id handled exactly once.
    let all_ok = try_wait_until(Duration::from_secs(10), || {
        ok_ids.iter().all(|id| count(id) == 1)
    });
    let sync_runs = count("psync-1");
    let pending = redis.xpending_count(&stream_key(env, ty), "group");
    let metrics = http_get(&api, "/metrics").map(|r| r.1).unwrap_or_default();
    stop.cancel();
    let result = handle.join();
    eprintln!(
        "[T28lib] sync panic: runs {sync_runs}, dead-lettered {sync_dead}, pending {pending:?}; \
         worker result {result:?}"
    );
    assert!(
        all_ok,
        "ok events not all handled once: {:?}",
        runs.lock().unwrap()
    );
    let m = parse_metrics(&metrics);
    assert_eq!(
        sum(
            &m,
            "event_worker_events_total",
            &[("env", env), ("outcome", "retried")]
        ),
        4.0 + if sync_dead { 2.0 } else { 0.0 },
        "retried = 2 per panicking id"
    );
    assert!(
        matches!(result, Ok(Ok(()))),
        "the embedded worker did not stop cleanly: {result:?}"
    );
    assert!(
        sync_dead && sync_runs == 3,
        "a handler that panics in Handler::handle (before returning its future) is not \
         treated as a retryable failure: {sync_runs} runs, in DLQ: {sync_dead}, still pending: \
         {pending:?} (src/process.rs decide(): catch_unwind wraps the future, not the \
         handle() call)"
    );
}

#[test]
fn t31_trim_never_drops_pending() {
    let (ta, tb) = ("ret.a", "ret.b");
    let mut s = Scenario::new("T31")
        .types(&[ta, tb])
        // One entry per stream node: `XTRIM MINID ~` is then exact.
        .setup(|r| {
            r.cmd(&["CONFIG", "SET", "stream-node-max-entries", "1"]);
        })
        .config(|c| {
            c.visibility_timeout = "10m".into();
            c.top_level = "stream_retention = \"1m\"\n".into();
        })
        .workers(0)
        .start();
    let (env, redis, l) = (s.env.clone(), &s.redis, &s.ledger);
    let env = env.as_str();
    let (ka, kb) = (stream_key(env, ta), stream_key(env, tb));
    let old = (unix_now() * 1000.0) as u64 - 5 * 60 * 1000;
    let xadd_old = |key: &str, ty: &str, i: u64, id: &str| {
        let data = format!(r#"{{"n":"{id}"}}"#);
        let entry = format!("{}-0", old + i);
        redis.cmd(&["XADD", key, &entry, "id", id, "type", ty, "data", &data]);
        entry
    };
    // A: a0..a4 acknowledged (by the test), a5 pending on a live "holder",
    // a6..a9 left for the worker; all 5 minutes old. Plus two recent ones.
    redis.cmd(&["XGROUP", "CREATE", &ka, "group", "0", "MKSTREAM"]);
    for i in 0..6 {
        xadd_old(&ka, ta, i, &format!("a-{i}"));
    }
    let r = redis.read_as(&ka, "group", "tester", 5);
    for e in crate::util::redis::parse_entries(&r.items()[0].items()[1]) {
        redis.cmd(&["XACK", &ka, "group", &e.entry_id]);
    }
    redis.read_as(&ka, "group", "holder", 1);
    redis.cmd(&[
        "SET",
        &heartbeat_key(env, "group", "holder"),
        "{}",
        "PX",
        "600000",
    ]);
    for i in 6..10 {
        let id = format!("a-{i}");
        l.lock().unwrap().attempt(&id);
        xadd_old(&ka, ta, i, &id);
        l.lock().unwrap().ack(&id);
    }
    s.publish_to(ta, "a-new-1");
    s.publish_to(ta, "a-new-2");
    // B: a second group that never reads keeps everything.
    redis.cmd(&["XGROUP", "CREATE", &kb, "group", "0", "MKSTREAM"]);
    redis.cmd(&["XGROUP", "CREATE", &kb, "g2", "0"]);
    for i in 0..10 {
        let id = format!("b-{i}");
        l.lock().unwrap().attempt(&id);
        xadd_old(&kb, tb, i, &id);
        l.lock().unwrap().ack(&id);
    }
    s.add_worker();
    let (redis, sink, l) = (&s.redis, &s.sink, &s.ledger);
    let w = &mut s.workers[0];
    w.wait_ready(Duration::from_secs(15));
    wait_until("handled", Duration::from_secs(15), || {
        let ok = sink.success_counts();
        l.lock().unwrap().acked.iter().all(|id| ok.contains_key(id))
    });
    let trimmed = |w: &WorkerProcess, ty: &str| {
        sum(
            &parse_metrics(&w.metrics()),
            "event_worker_stream_trimmed_total",
            &[("env", env), ("type", ty)],
        )
    };
    let first = (trimmed(w, ta), trimmed(w, tb));
    // A restart runs the retention pass at start over the acknowledged state.
    w.graceful_restart();
    let done = try_wait_until(Duration::from_secs(5), || first.0 + trimmed(w, ta) >= 5.0);
    let second = (trimmed(w, ta), trimmed(w, tb));
    let left_a: Vec<String> = redis
        .xrange(&ka)
        .iter()
        .filter_map(|e| e.get("id").map(str::to_string))
        .collect();
    eprintln!(
        "[T31] trimmed_total A: {} + {}, B: {} + {}; A keeps {left_a:?}; XLEN B {}",
        first.0,
        second.0,
        first.1,
        second.1,
        redis.xlen(&kb)
    );
    assert!(done, "the acknowledged old entries of A were not trimmed");
    let want: Vec<String> = (5..10)
        .map(|i| format!("a-{i}"))
        .chain(["a-new-1".to_string(), "a-new-2".to_string()])
        .collect();
    assert_eq!(
        left_a, want,
        "A: trimmed exactly below the oldest pending entry (a-5, held by a live consumer)"
    );
    assert_eq!(first.0 + second.0, 5.0, "stream_trimmed_total{{type=A}}");
    assert_eq!(
        redis.xlen(&kb),
        10,
        "B: g2 has read nothing, nothing may go"
    );
    assert_eq!(first.1 + second.1, 0.0, "stream_trimmed_total{{type=B}}");
    assert_eq!(
        redis.xpending_consumers(&ka, "group").get("holder"),
        Some(&1),
        "the pending entry is intact"
    );
    let rep = s.check(&CheckOpts::default());
    rep.assert_ok("T31", 0, "");
}
