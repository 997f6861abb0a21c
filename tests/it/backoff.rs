//! Retry backoff: delays grow as configured and are never early; retries
//! waiting in the retry set survive a worker restart.

use crate::util::*;
use std::time::Duration;

const TY: &str = "jobs.run";

/// Gap between the answer to request `n` and the arrival of request `n + 1`.
fn gaps(reqs: &[sink::Request]) -> Vec<Duration> {
    reqs.windows(2)
        .map(|w| {
            let answered = w[0].answered.expect("previous request was answered");
            w[1].received.saturating_sub(answered)
        })
        .collect()
}

/// The retry delays the worker logged for `id`, by attempt (`retry scheduled ... delay_ms=N`).
fn scheduled_delays(logs: &str, id: &str) -> Vec<Duration> {
    let id_field = format!(" id={id} ");
    logs.lines()
        .filter(|l| l.contains("retry scheduled") && l.contains(&id_field))
        .filter_map(|l| l.split(" delay_ms=").nth(1))
        .filter_map(|rest| rest.split_whitespace().next()?.parse().ok())
        .map(Duration::from_millis)
        .collect()
}

#[test]
fn t25_backoff_delays_grow_as_configured_and_are_never_early() {
    let env = "backoff";
    let ids = ["b-0", "b-1", "b-2"];
    let mut s = Scenario::new(env)
        .types(&[TY])
        .config(move |c| {
            c.max_attempts = 5;
            c.initial_backoff = "200ms".into();
            c.multiplier = 2.0;
            c.max_backoff = "800ms".into();
            c.jitter = 0.2;
        })
        .start();
    let (redis, sink, worker) = (&s.redis, &s.sink, &mut s.workers[0]);
    for id in ids {
        sink.script(
            id,
            vec![
                Action::status(503),
                Action::status(503),
                Action::status(503),
                Action::status(503),
                Action::ok(),
            ],
        );
    }
    for id in ids {
        publish(redis, env, TY, id);
    }
    wait_until("all three succeed", Duration::from_secs(15), || {
        sink.success_counts().len() == ids.len()
    });
    wait_until("drained", Duration::from_secs(5), || {
        drained(redis, env, "group", &[TY])
    });
    let dump = sink.ledger_dump();
    let logs = worker.logs();
    let jitter = 0.2;
    let nominal = [200u64, 400, 800, 800];
    for id in ids {
        let reqs = sink.requests_for(id);
        assert_eq!(reqs.len(), 5, "requests for {id}\n{dump}");
        let attempts: Vec<_> = reqs.iter().map(|r| r.attempt).collect();
        assert_eq!(attempts, vec![Some(0), Some(1), Some(2), Some(3), Some(4)]);
        // The delays the worker drew (its log), then the gaps the sink saw.
        let drawn = scheduled_delays(&logs, id);
        let g = gaps(&reqs);
        eprintln!("{id}: drawn delays {drawn:?}, retry gaps {g:?}");
        assert_eq!(drawn.len(), 4, "{id}: four retries scheduled\n{logs}");
        for (n, ((delay, gap), nom)) in drawn.iter().zip(&g).zip(nominal).enumerate() {
            let (low, high) = (
                Duration::from_millis((nom as f64 * (1.0 - jitter)) as u64),
                Duration::from_millis((nom as f64 * (1.0 + jitter)).ceil() as u64),
            );
            assert!(
                *delay >= low && *delay <= high,
                "{id}: retry {n} drawn {delay:?} outside {low:?}..={high:?} (nominal {nom}ms)"
            );
            assert!(
                *gap + Duration::from_millis(2) >= *delay,
                "{id}: retry {n} came early: {gap:?} < drawn {delay:?}\n{dump}"
            );
            // Late only by scheduling: the 20 ms scheduler tick, a read, the delivery; the
            // slack covers a loaded 2-core box running the rest of the suite.
            assert!(
                *gap <= *delay + Duration::from_millis(1000),
                "{id}: retry {n} came late: {gap:?} > drawn {delay:?} + 1 s\n{dump}"
            );
        }
        // Uncapped delays grow (jitter ranges of 200/400/800ms do not overlap).
        assert!(
            drawn[1] > drawn[0] && drawn[2] > drawn[1],
            "{id}: delays do not grow: {drawn:?}"
        );
    }
    assert_eq!(redis.xlen(&dlq_key(env)), 0, "nothing may be dead-lettered");
    assert_drained(redis, env, "group", &[TY]);
    worker.assert_running();
}

#[test]
fn t25_pending_retries_survive_a_worker_restart() {
    let env = "retrysurvive";
    let ids: Vec<String> = (0..5).map(|i| format!("r-{i}")).collect();
    let mut s = Scenario::new(env)
        .types(&[TY])
        .config(move |c| {
            c.max_attempts = 3;
            c.initial_backoff = "3s".into();
            c.max_backoff = "10s".into();
            c.jitter = 0.0;
        })
        .start();
    let (redis, sink, worker) = (&s.redis, &s.sink, &mut s.workers[0]);
    for id in &ids {
        sink.script(id, vec![Action::status(503), Action::ok()]);
    }
    for id in &ids {
        publish(redis, env, TY, id);
    }
    wait_until(
        "5 failures answered, 5 retries scheduled, nothing pending",
        Duration::from_secs(10),
        || {
            sink.ledger()
                .iter()
                .filter(|r| r.outcome == Outcome::Answered(503))
                .count()
                == 5
                && redis.zcard(&retry_key(env, "group")) == 5
                && redis.xpending_count(&stream_key(env, TY), "group") == Some(0)
        },
    );
    let status = worker.kill9();
    assert!(status.code().is_none(), "killed by a signal: {status:?}");
    assert_eq!(
        redis.zcard(&retry_key(env, "group")),
        5,
        "the retry set survives the worker"
    );
    std::thread::sleep(Duration::from_millis(300));
    worker.restart();
    wait_until(
        "all 5 succeed after the restart",
        Duration::from_secs(15),
        || sink.success_counts().len() == 5,
    );
    std::thread::sleep(Duration::from_millis(500));
    let dump = sink.ledger_dump();
    for id in &ids {
        let reqs = sink.requests_for(id);
        assert_eq!(reqs.len(), 2, "requests for {id}\n{dump}");
        assert_eq!(reqs[1].attempt, Some(1), "{id}\n{dump}");
        let gap = gaps(&reqs)[0];
        assert!(
            gap >= Duration::from_millis(2998),
            "{id}: retried early across the restart: {gap:?} < 3s\n{dump}"
        );
        assert!(
            gap <= Duration::from_millis(6000),
            "{id}: retried late: {gap:?}\n{dump}"
        );
    }
    assert_eq!(redis.xlen(&dlq_key(env)), 0, "nothing may be dead-lettered");
    wait_until("drained", Duration::from_secs(5), || {
        drained(redis, env, "group", &[TY])
    });
    worker.assert_running();
}

#[test]
fn t25_retry_after_header_is_honoured() {
    let env = "retryafter";
    let with_retry_after = |status: u16, secs: u64| Action {
        retry_after: Some(secs),
        ..Action::status(status)
    };
    let mut s = Scenario::new(env)
        .types(&[TY])
        .config(move |c| {
            c.initial_backoff = "50ms".into();
            c.max_backoff = "10s".into();
        })
        .start();
    let (redis, sink, worker) = (&s.redis, &s.sink, &mut s.workers[0]);
    sink.script("ra-503", vec![with_retry_after(503, 2), Action::ok()]);
    sink.script("ra-429", vec![with_retry_after(429, 1), Action::ok()]);
    publish(redis, env, TY, "ra-503");
    publish(redis, env, TY, "ra-429");
    wait_until("both succeed", Duration::from_secs(10), || {
        sink.success_counts().len() == 2
    });
    let dump = sink.ledger_dump();
    for (id, secs) in [("ra-503", 2u64), ("ra-429", 1)] {
        let reqs = sink.requests_for(id);
        assert_eq!(reqs.len(), 2, "{id}\n{dump}");
        let gap = gaps(&reqs)[0];
        assert!(
            gap >= Duration::from_secs(secs) - Duration::from_millis(2),
            "{id}: Retry-After {secs}s not honoured, retried after {gap:?}\n{dump}"
        );
        assert!(
            gap <= Duration::from_secs(secs) + Duration::from_millis(1500),
            "{id}: retried after {gap:?} for Retry-After {secs}s\n{dump}"
        );
    }
    assert_drained(redis, env, "group", &[TY]);
    worker.assert_running();
}

#[test]
fn t26_three_instances_move_each_due_retry_exactly_once() {
    let env = "threemovers";
    let mut s = Scenario::new(env)
        .types(&[TY])
        .workers(3)
        .config(|c| {
            c.concurrency = 2;
            c.initial_backoff = "300ms".into();
            c.scheduler_interval = "10ms".into();
        })
        .start();
    let (redis, sink, workers) = (&s.redis, &s.sink, &mut s.workers);
    let ids: Vec<String> = (0..30).map(|i| format!("m-{i:02}")).collect();
    for id in &ids {
        sink.script(id, vec![Action::status(503), Action::ok()]);
    }
    for id in &ids {
        publish(redis, env, TY, id);
    }
    wait_until("all succeed", Duration::from_secs(15), || {
        sink.success_counts().len() == ids.len()
    });
    wait_until("drained", Duration::from_secs(5), || {
        drained(redis, env, "group", &[TY])
    });
    std::thread::sleep(Duration::from_millis(600));
    let dump = sink.ledger_dump();
    for id in &ids {
        let attempts: Vec<_> = sink.requests_for(id).iter().map(|r| r.attempt).collect();
        assert_eq!(
            attempts,
            vec![Some(0), Some(1)],
            "{id}: each due retry must be moved once\n{dump}"
        );
    }
    assert_eq!(redis.xlen(&dlq_key(env)), 0);
    for w in workers.iter_mut() {
        w.assert_running();
    }
}
