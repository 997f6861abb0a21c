//! Redis comes and goes: restarted with AOF under load (nothing lost), restarted
//! without persistence (group recreated at 0), retries survive a restart.

use crate::util::*;
use std::thread::JoinHandle;
use std::time::Duration;

const TY: &str = "stock.changed";

/// A worker (concurrency 4, a 20 ms sink) on a redis-server with `aof`, under a
/// background load of `total` events 10 ms apart (ids `p-<i>`); returns once the
/// sink saw 60 of them.
fn under_load(row: &str, env: &str, aof: Aof, total: usize) -> (Scenario, JoinHandle<()>) {
    let s = Scenario::new(row)
        .env(env)
        .types(&[TY])
        .redis(RedisServer::start_with(aof))
        .sink(Action::delayed(200, Duration::from_millis(20)))
        .config(|c| c.concurrency = 4)
        .start();
    let load = s.publisher("p", total, Duration::from_millis(10));
    s.wait_load(60);
    (s, load)
}

#[test]
fn t13_redis_kill9_with_aof_always_under_load_nothing_lost() {
    let env = "restartaof";
    let total = 300;
    let (mut s, pub_thread) = under_load("restart-aof", env, Aof::Always, total);
    s.redis.kill9();
    let not_ready = try_wait_until(Duration::from_secs(5), || {
        !matches!(s.workers[0].get("/readyz"), Some((200, _)))
    });
    std::thread::sleep(Duration::from_millis(1500));
    s.redis.start_again();
    pub_thread.join().unwrap();
    let (acked, attempted) = {
        let l = s.ledger.lock().unwrap();
        (l.acked.clone(), l.attempted.clone())
    };
    s.w().assert_running();
    let (redis, sink, worker) = (&s.redis, &s.sink, &mut s.workers[0]);
    assert!(not_ready, "/readyz kept answering 200 while Redis was down");
    let done = try_wait_until(Duration::from_secs(30), || {
        let ok = sink.success_counts();
        acked.iter().all(|id| ok.contains_key(id)) && drained(redis, env, "group", &[TY])
    });
    let successes = sink.success_counts();
    let lost: Vec<_> = acked
        .iter()
        .filter(|id| !successes.contains_key(*id))
        .collect();
    assert!(
        done && lost.is_empty(),
        "{} of {} acknowledged publishes never delivered: {lost:?}",
        lost.len(),
        acked.len()
    );
    std::thread::sleep(Duration::from_millis(500));
    let successes = sink.success_counts();
    let unexpected: Vec<_> = successes
        .keys()
        .filter(|id| !attempted.contains(*id))
        .collect();
    assert!(unexpected.is_empty(), "never published: {unexpected:?}");
    let dups: usize = successes.values().map(|n| n - 1).sum();
    eprintln!(
        "redis kill -9: {} acked publishes, {} attempted, {dups} duplicates",
        acked.len(),
        attempted.len()
    );
    assert!(
        dups <= 4,
        "{dups} duplicates after one Redis crash with concurrency 4\n{}",
        sink.ledger_dump()
    );
    assert_eq!(redis.xlen(&dlq_key(env)), 0, "nothing may be dead-lettered");
    assert!(
        acked.len() > total / 2,
        "too few publishes acknowledged: {}",
        acked.len()
    );
    assert_drained(redis, env, "group", &[TY]);
    worker.wait_ready(Duration::from_secs(10));
    let metrics = parse_metrics(&worker.metrics());
    assert_eq!(
        sum(&metrics, "event_worker_redis_up", &[("env", env)]),
        1.0,
        "event_worker_redis_up after recovery"
    );
}

#[test]
fn t15_redis_restart_without_persistence_group_recreated_at_zero() {
    let env = "restartempty";
    let mut redis = RedisServer::start_with(Aof::None);
    let sink = HttpSink::start();
    let cfg = WorkerConfig::new(env, &redis.url()).route(Route::http(&[TY], &sink.url()));
    let mut worker = WorkerProcess::start("w1", cfg);
    worker.wait_ready(Duration::from_secs(15));
    for i in 0..10 {
        publish(&redis, env, TY, &format!("before-{i}"));
    }
    wait_until("first batch delivered", Duration::from_secs(10), || {
        sink.success_counts().len() == 10
    });
    redis.stop();
    std::thread::sleep(Duration::from_millis(1000));
    redis.start_again();
    let _dump = redis.dump_on_panic(env);
    let stderr_lines_at_restart = worker.stderr().lines().count();
    // Published straight away: the stream and the group are both gone, so the
    // group must be recreated at 0 (not $) for these to be seen.
    for i in 0..10 {
        publish(&redis, env, TY, &format!("after-{i}"));
    }
    wait_until("second batch delivered", Duration::from_secs(20), || {
        sink.success_counts().len() == 20
    });
    std::thread::sleep(Duration::from_millis(3000));
    worker.assert_running();
    let successes = sink.success_counts();
    for i in 0..10 {
        assert_eq!(
            successes.get(&format!("after-{i}")),
            Some(&1),
            "after-{i}\n{}",
            sink.ledger_dump()
        );
    }
    assert_drained(&redis, env, "group", &[TY]);
    let new_lines = worker.stderr().lines().count() - stderr_lines_at_restart;
    assert!(
        new_lines < 300,
        "{new_lines} log lines within ~4s after the restart: a hot loop?\n{}",
        worker.logs()
    );
}

#[test]
fn t25_scheduled_retries_survive_a_redis_restart() {
    let env = "restartretry";
    let mut redis = RedisServer::start_with(Aof::Always);
    let sink = HttpSink::start();
    let ids = ["rr-0", "rr-1", "rr-2"];
    for id in ids {
        sink.script(id, vec![Action::status(503), Action::ok()]);
    }
    let mut cfg = WorkerConfig::new(env, &redis.url()).route(Route::http(&[TY], &sink.url()));
    cfg.initial_backoff = "2500ms".into();
    cfg.max_backoff = "10s".into();
    let mut worker = WorkerProcess::start("w1", cfg);
    worker.wait_ready(Duration::from_secs(15));
    for id in ids {
        publish(&redis, env, TY, id);
    }
    wait_until("3 retries scheduled", Duration::from_secs(10), || {
        redis.zcard(&retry_key(env, "group")) == 3
    });
    redis.stop();
    std::thread::sleep(Duration::from_millis(500));
    redis.start_again();
    let _dump = redis.dump_on_panic(env);
    assert_eq!(
        redis.zcard(&retry_key(env, "group")),
        3,
        "retry set after restart"
    );
    wait_until("all retried successfully", Duration::from_secs(15), || {
        sink.success_counts().len() == 3
    });
    std::thread::sleep(Duration::from_millis(300));
    let dump = sink.ledger_dump();
    for id in ids {
        let reqs = sink.requests_for(id);
        assert_eq!(reqs.len(), 2, "{id}\n{dump}");
        let gap = reqs[1].received - reqs[0].answered.unwrap();
        assert!(
            gap >= Duration::from_millis(2498),
            "{id} retried early: {gap:?}\n{dump}"
        );
    }
    assert_eq!(redis.xlen(&dlq_key(env)), 0);
    assert_drained(&redis, env, "group", &[TY]);
    worker.assert_running();
}

#[test]
fn t14_redis_kill9_with_aof_everysec_loses_only_the_last_second() {
    let env = "restarteverysec";
    let (mut s, pub_thread) = under_load("restart-everysec", env, Aof::EverySec, 300);
    let kill_wall = unix_now();
    s.redis.kill9();
    std::thread::sleep(Duration::from_millis(1500));
    s.redis.start_again();
    pub_thread.join().unwrap();
    let (redis, sink) = (&s.redis, &s.sink);
    let published = s.ledger.lock().unwrap();
    // Drain: every acknowledged publish from well before the kill, and
    // everything published after the restart, gets delivered.
    let window = 2.0;
    let must_deliver: Vec<&String> = published
        .acked
        .iter()
        .filter(|id| {
            published.acked_at[*id] < kill_wall - window || published.acked_at[*id] > kill_wall
        })
        .collect();
    let done = try_wait_until(Duration::from_secs(30), || {
        let ok = sink.success_counts();
        must_deliver.iter().all(|id| ok.contains_key(*id)) && drained(redis, env, "group", &[TY])
    });
    let successes = sink.success_counts();
    let lost: Vec<_> = must_deliver
        .iter()
        .filter(|id| !successes.contains_key(**id))
        .collect();
    assert!(
        done && lost.is_empty(),
        "lost outside the AOF everysec window: {lost:?}"
    );
    let lost_in_window = published
        .acked
        .iter()
        .filter(|id| !successes.contains_key(*id))
        .count();
    // A duplicate may only come from an acknowledgement lost with the last second.
    let ledger_now = sink.ledger();
    let mut late_dups = Vec::new();
    for (id, n) in &successes {
        if *n > 1 {
            let first_ok = ledger_now
                .iter()
                .find(|r| &r.id == id && r.is_success())
                .and_then(|r| r.answered)
                .map(|d| sink.unix_time(d))
                .unwrap_or(0.0);
            if first_ok < kill_wall - window {
                late_dups.push(id.clone());
            }
        }
    }
    let dups: usize = successes.values().map(|n| n - 1).sum();
    eprintln!(
        "redis kill -9 (everysec): {} acked, {lost_in_window} lost inside the window, {dups} duplicates",
        published.acked.len()
    );
    assert!(
        late_dups.is_empty(),
        "duplicates of events first handled long before the crash: {late_dups:?}"
    );
    assert_eq!(redis.xlen(&dlq_key(env)), 0, "nothing may be dead-lettered");
    drop(published);
    s.w().assert_running();
}

#[test]
fn t16a_stream_deleted_mid_run_group_recreated_at_zero() {
    let env = "streamdel";
    let mut sc = Scenario::new(env).types(&[TY]).start();
    let (redis, sink, worker) = (&sc.redis, &sc.sink, &mut sc.workers[0]);
    for i in 0..5 {
        publish(redis, env, TY, &format!("first-{i}"));
    }
    wait_until("first batch", Duration::from_secs(10), || {
        sink.success_counts().len() == 5
    });
    assert_eq!(redis.cmd(&["DEL", &stream_key(env, TY)]).as_int(), Some(1));
    // Recreated by the producer without the group: the worker must recreate
    // the group at 0 so that these are not skipped.
    for i in 0..10 {
        publish(redis, env, TY, &format!("second-{i}"));
    }
    wait_until("second batch", Duration::from_secs(15), || {
        sink.success_counts().len() == 15
    });
    std::thread::sleep(Duration::from_millis(500));
    let counts = sink.request_counts();
    assert!(counts.values().all(|n| *n == 1), "{}", sink.ledger_dump());
    assert_drained(redis, env, "group", &[TY]);
    worker.assert_running();
}

#[test]
fn worker_started_before_redis_waits_then_consumes() {
    let env = "lateredis";
    let port = free_port();
    let sink = HttpSink::start();
    let cfg = WorkerConfig::new(env, &format!("redis://127.0.0.1:{port}"))
        .route(Route::http(&[TY], &sink.url()));
    let mut worker = WorkerProcess::start("w1", cfg);
    std::thread::sleep(Duration::from_millis(2500));
    worker.assert_running();
    assert_eq!(
        worker.get("/livez").map(|r| r.0),
        Some(200),
        "/livez while Redis is down"
    );
    assert!(
        !matches!(worker.get("/readyz"), Some((200, _))),
        "/readyz must not be 200 before Redis is reachable"
    );
    let redis = RedisServer::start_on(port, Aof::Always);
    let _dump = redis.dump_on_panic(env);
    worker.wait_ready(Duration::from_secs(15));
    for i in 0..5 {
        publish(&redis, env, TY, &format!("late-{i}"));
    }
    wait_until("delivered", Duration::from_secs(15), || {
        sink.success_counts().len() == 5
    });
    std::thread::sleep(Duration::from_millis(300));
    assert!(sink.request_counts().values().all(|n| *n == 1));
    assert_drained(&redis, env, "group", &[TY]);
    let lines = worker.stderr().lines().count();
    assert!(
        lines < 300,
        "{lines} log lines for 2.5s of unreachable Redis: rate-limit the errors\n{}",
        worker.logs()
    );
}
