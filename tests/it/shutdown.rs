//! Graceful shutdown on SIGTERM: stop reading, finish in-flight work within
//! `shutdown_timeout`, exit 0; nothing lost, no duplicates.

use crate::util::resp::is_test_client;
use crate::util::*;
use std::time::{Duration, Instant};

const TY: &str = "mail.send";

#[test]
fn t06_sigterm_mid_stream_exits_zero_in_time_nothing_lost_no_duplicates() {
    let mut s = Scenario::new("sigterm")
        .types(&[TY])
        .sink(Action::delayed(200, Duration::from_millis(50)))
        .config(|c| {
            c.concurrency = 4;
            c.shutdown_timeout = "5s".into();
        })
        .workers(0)
        .start();
    let env = "sigterm";
    let total = 200;
    let ids: Vec<String> = (0..total).map(|i| format!("s-{i:03}")).collect();
    let mut event_of = std::collections::BTreeMap::new();
    for id in &ids {
        event_of.insert(publish(&s.redis, env, TY, id), id.clone());
    }
    let monitor = Monitor::start(&s.redis);
    s.add_worker();
    let (redis, sink, worker) = (&s.redis, &s.sink, &mut s.workers[0]);
    wait_until("40 events delivered", Duration::from_secs(15), || {
        sink.success_counts().len() >= 40
    });
    worker.assert_running();
    let term_at = sink.now();
    let term_wall = unix_now();
    let started = Instant::now();
    worker.sigterm();
    let status = worker.wait_exit(Duration::from_millis(6500));
    let took = started.elapsed();
    let status = status.unwrap_or_else(|| panic!("no exit within shutdown_timeout + 1.5s"));
    assert_eq!(
        status.code(),
        Some(0),
        "exit status after SIGTERM: {status:?}"
    );
    let transcript = monitor.stop();
    // The worker stops reading once it has seen the signal: on a loaded machine that can be
    // later than the test sent it, so count from its own log line when that is later.
    let seen = log_time_of(&worker.stderr(), "signal received; shutting down")
        .unwrap_or_else(|| panic!("no signal log line\n{}", worker.logs()));
    assert!(
        seen > term_wall - 1.0 && seen < term_wall + 6.5,
        "{seen} vs {term_wall}"
    );
    let from = seen.max(term_wall);
    let reads_after: Vec<String> = transcript
        .iter()
        .filter(|l| !is_test_client(&l.client) && l.ts > from + 0.02)
        .filter(|l| {
            l.args
                .first()
                .is_some_and(|c| c.eq_ignore_ascii_case("XREADGROUP"))
        })
        .map(|l| format!("+{:.3}s {}", l.ts - term_wall, l.raw))
        .collect();
    assert!(
        transcript
            .iter()
            .any(|l| l.ts < term_wall && l.raw.contains("XREADGROUP")),
        "MONITOR saw no reads before SIGTERM"
    );
    let dump = sink.ledger_dump();
    assert!(
        reads_after.is_empty(),
        "XREADGROUP issued after SIGTERM (the worker must stop reading):\n{}\n{dump}",
        reads_after.join("\n")
    );
    let ledger = sink.ledger();
    let late: Vec<_> = ledger
        .iter()
        .filter(|r| r.received > term_at + Duration::from_millis(150))
        .map(|r| r.id.clone())
        .collect();
    assert!(
        late.is_empty(),
        "requests started after SIGTERM (took {took:?}): {late:?}\n{dump}"
    );
    assert_eq!(
        sink.in_progress(),
        0,
        "in-flight requests were abandoned instead of finished\n{dump}"
    );
    let delivered = sink.success_counts().len();
    assert!(
        delivered < total,
        "SIGTERM came too late to test anything ({delivered} delivered)"
    );
    // Entries fetched but not started may stay pending ("handed back"), but
    // nothing whose handler succeeded may stay unacknowledged: that would be
    // delivered again after the restart.
    let successes = sink.success_counts();
    let unacked_done: Vec<String> = redis
        .xpending_detail(&stream_key(env, TY), "group")
        .into_iter()
        .map(|(entry, ..)| event_of[&entry].clone())
        .filter(|id| successes.contains_key(id))
        .collect();
    assert!(
        unacked_done.is_empty(),
        "handled successfully but left unacknowledged at exit: {unacked_done:?}\n{dump}"
    );

    worker.restart();
    wait_until(
        "all events delivered after restart",
        Duration::from_secs(20),
        || sink.success_counts().len() == total,
    );
    std::thread::sleep(Duration::from_millis(500));
    let dump = sink.ledger_dump();
    let requests = sink.request_counts();
    for id in &ids {
        assert_eq!(requests.get(id), Some(&1), "deliveries of {id}\n{dump}");
    }
    assert_eq!(requests.len(), total, "unexpected ids\n{dump}");
    assert_eq!(redis.xlen(&dlq_key(env)), 0);
    assert_drained(redis, env, "group", &[TY]);

    // An idle worker stops promptly too.
    let started = Instant::now();
    worker.sigterm();
    let status = worker
        .wait_exit(Duration::from_secs(6))
        .expect("idle worker exits on SIGTERM");
    assert_eq!(status.code(), Some(0), "idle exit: {status:?}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "idle shutdown took {:?}",
        started.elapsed()
    );
}

#[test]
fn t07_sigterm_past_shutdown_timeout_leaves_unfinished_work_pending() {
    let env = "sigtermslow";
    let mut s = Scenario::new(env)
        .types(&[TY])
        .route_timeout("30s")
        .config(|c| {
            c.concurrency = 4;
            c.shutdown_timeout = "1s".into();
        })
        .workers(0)
        .start();
    let sink = &s.sink;
    let ids: Vec<String> = (0..4).map(|i| format!("slow-{i}")).collect();
    for id in &ids {
        // The first delivery hangs far past shutdown_timeout (and never counts as success).
        sink.script(
            id,
            vec![Action::delayed(503, Duration::from_secs(20)), Action::ok()],
        );
    }
    s.add_worker();
    let (redis, sink, worker) = (&s.redis, &s.sink, &mut s.workers[0]);
    for id in &ids {
        publish(redis, env, TY, id);
    }
    wait_until("4 requests in flight", Duration::from_secs(15), || {
        sink.in_progress() == 4
    });
    let started = Instant::now();
    worker.sigterm();
    let status = worker
        .wait_exit(Duration::from_secs(4))
        .expect("exit within shutdown_timeout (1s) + slack");
    let took = started.elapsed();
    assert_eq!(status.code(), Some(0), "exit status: {status:?}");
    assert!(
        took <= Duration::from_millis(2500),
        "shutdown took {took:?} with shutdown_timeout 1s"
    );
    let pending = redis.xpending_count(&stream_key(env, TY), "group");
    assert_eq!(
        pending,
        Some(4),
        "unfinished work stays pending for reclaim (not acked, not lost)"
    );
    assert_eq!(redis.xlen(&dlq_key(env)), 0);

    worker.restart();
    wait_until(
        "all 4 delivered after restart",
        Duration::from_secs(15),
        || sink.success_counts().len() == 4,
    );
    std::thread::sleep(Duration::from_millis(300));
    let dump = sink.ledger_dump();
    for id in &ids {
        assert_eq!(
            sink.success_counts().get(id),
            Some(&1),
            "successes of {id}\n{dump}"
        );
        assert_eq!(sink.requests_for(id).len(), 2, "requests of {id}\n{dump}");
    }
    assert_eq!(redis.xlen(&dlq_key(env)), 0);
    assert_drained(redis, env, "group", &[TY]);
    worker.assert_running();
}

#[test]
fn t06_sigint_is_graceful_too() {
    let env = "sigint";
    let mut s = Scenario::new(env)
        .types(&[TY])
        .config(|c| c.shutdown_timeout = "5s".into())
        .workers(0)
        .start();
    s.sink.script(
        "int-0",
        vec![Action::delayed(200, Duration::from_millis(800))],
    );
    s.add_worker();
    let (redis, sink, worker) = (&s.redis, &s.sink, &mut s.workers[0]);
    worker.wait_ready(Duration::from_secs(15));
    publish(redis, env, TY, "int-0");
    wait_until("request in flight", Duration::from_secs(10), || {
        sink.in_progress() == 1
    });
    send_signal(worker.pid(), "INT");
    let status = worker
        .wait_exit(Duration::from_secs(6))
        .expect("exit after SIGINT");
    assert_eq!(
        status.code(),
        Some(0),
        "exit status after SIGINT: {status:?}"
    );
    assert_eq!(sink.success_counts().get("int-0"), Some(&1));
    assert_eq!(
        redis.xpending_count(&stream_key(env, TY), "group"),
        Some(0),
        "the in-flight event finished during shutdown must be acknowledged"
    );
}
