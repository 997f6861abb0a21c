//! Downstream outage: the sink answers 503. The breaker opens after the
//! threshold, the worker stops hammering the sink (threshold + probes), no
//! event burns its attempts into the DLQ, and all are delivered after recovery.

use crate::util::*;
use std::time::{Duration, Instant};

const TY: &str = "booking.created";

#[test]
fn t27_downstream_outage_opens_breaker_no_dlq_all_delivered_after_recovery() {
    let env = "breaker";
    let threshold = 3u32;
    let concurrency = 2u32;
    let open_for = Duration::from_secs(1);
    let mut s = Scenario::new(env)
        .types(&[TY])
        .sink(Action::status(503))
        .config(move |c| {
            c.failure_threshold = threshold;
            c.open_for = "1s".into();
            c.concurrency = concurrency;
            c.max_attempts = 6;
            c.initial_backoff = "50ms".into();
            c.max_backoff = "200ms".into();
        })
        .start();
    let (redis, sink, worker) = (&s.redis, &s.sink, &mut s.workers[0]);
    let total = 30;
    let ids: Vec<String> = (0..total).map(|i| format!("br-{i:02}")).collect();
    for id in &ids {
        publish(redis, env, TY, id);
    }
    wait_until("the outage is noticed", Duration::from_secs(10), || {
        sink.request_count() >= 1
    });
    let outage_start = Instant::now();
    let outage = Duration::from_millis(3500);
    let mut max_state = 0.0f64;
    while outage_start.elapsed() < outage {
        worker.assert_running();
        if let Some((200, body)) = worker.get("/metrics") {
            for s in samples(
                &parse_metrics(&body),
                "event_worker_breaker_state",
                &[("env", env)],
            ) {
                assert!(
                    s.labels.contains_key("handler"),
                    "breaker_state without handler label: {:?}",
                    s.labels
                );
                max_state = max_state.max(s.value);
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let during = sink.request_count();
    let dlq_during = redis.xlen(&dlq_key(env));
    sink.set_default(Action::ok());
    let recovered_at = sink.now();

    eprintln!("breaker: {during} sink requests during the outage, max breaker_state {max_state}");
    let probes = (outage.as_millis() / open_for.as_millis()) as usize + 2;
    let bound = threshold as usize + concurrency as usize + probes;
    let dump = sink.ledger_dump();
    assert!(
        during <= bound,
        "{during} requests during a {outage:?} outage; expected <= threshold {threshold} + concurrency {concurrency} + probes {probes}\n{dump}"
    );
    assert_eq!(
        max_state, 2.0,
        "event_worker_breaker_state never showed 2 (open) during the outage"
    );
    assert_eq!(dlq_during, 0, "events reached the DLQ during the outage");

    wait_until(
        "all delivered after recovery",
        Duration::from_secs(15),
        || sink.success_counts().len() == total,
    );
    wait_until("drained", Duration::from_secs(10), || {
        drained(redis, env, "group", &[TY])
    });
    std::thread::sleep(Duration::from_millis(500));
    let dump = sink.ledger_dump();
    let successes = sink.success_counts();
    for id in &ids {
        assert_eq!(successes.get(id), Some(&1), "successes of {id}\n{dump}");
    }
    assert_eq!(
        redis.xlen(&dlq_key(env)),
        0,
        "no event may be dead-lettered because of an outage"
    );
    // Refusals by the open breaker do not consume attempts: the attempt field
    // of each success equals the number of real handler failures before it.
    for id in &ids {
        let reqs = sink.requests_for(id);
        let failures = reqs.iter().filter(|r| !r.is_success()).count() as u64;
        let last = reqs.last().unwrap();
        assert_eq!(
            last.attempt,
            Some(failures),
            "{id}: attempt field of the success vs {failures} earlier failures\n{dump}"
        );
    }
    let after: Vec<_> = sink
        .ledger()
        .into_iter()
        .filter(|r| r.received >= recovered_at)
        .collect();
    assert!(
        after.iter().all(|r| r.is_success()),
        "failures after recovery\n{dump}"
    );
    wait_until("breaker closed again", Duration::from_secs(5), || {
        let m = parse_metrics(&worker.metrics());
        let s = samples(&m, "event_worker_breaker_state", &[("env", env)]);
        !s.is_empty() && s.iter().all(|s| s.value == 0.0)
    });
    assert_drained(redis, env, "group", &[TY]);
    worker.assert_running();
}

/// The `[breaker]` defaults (README): `failure_threshold = 5`, `open_for = "30s"`, the
/// failure-rate keys left out.
fn breaker_defaults(c: &mut WorkerConfig) {
    c.failure_threshold = 5;
    c.open_for = "30s".into();
}

/// The highest `event_worker_breaker_state` and the sum of
/// `event_worker_breaker_rejected_total` of `env`.
fn breaker_metrics(worker: &WorkerProcess, env: &str) -> (f64, f64) {
    let m = parse_metrics(&worker.metrics());
    let state = samples(&m, "event_worker_breaker_state", &[("env", env)])
        .iter()
        .map(|s| s.value)
        .fold(0.0, f64::max);
    let rejected = sum(&m, "event_worker_breaker_rejected_total", &[("env", env)]);
    (state, rejected)
}

#[test]
fn breaker_stays_closed_for_five_poison_events_among_55_successes() {
    let env = "brpoison";
    let s = Scenario::new(env)
        .types(&[TY])
        .sink(Action::ok())
        .config(|c| {
            breaker_defaults(c);
            // The retry defaults too: 5 attempts, 200 ms doubling, 20 % jitter.
            c.max_attempts = 5;
            c.initial_backoff = "200ms".into();
            c.max_backoff = "300s".into();
            c.jitter = 0.2;
        })
        .start();
    let bad: Vec<String> = (0..5).map(|i| format!("bad-{i}")).collect();
    for id in &bad {
        s.sink.script(id, vec![Action::status(500)]);
    }
    let mut good = Vec::new();
    let start = Instant::now();
    for i in 0..60 {
        let id = if i % 12 == 11 {
            bad[i / 12].clone()
        } else {
            format!("ok-{i:02}")
        };
        publish(&s.redis, env, TY, &id);
        if !id.starts_with("bad") {
            good.push(id);
        }
    }
    let (redis, sink, worker) = (&s.redis, &s.sink, &s.workers[0]);
    wait_until("the 55 successes", Duration::from_secs(5), || {
        sink.success_counts().len() == 55
    });
    let successes_took = start.elapsed();
    let mut max_state = 0.0f64;
    wait_until(
        "the 5 poison events in the DLQ",
        Duration::from_secs(15),
        || {
            max_state = max_state.max(breaker_metrics(worker, env).0);
            redis.xlen(&dlq_key(env)) == 5
        },
    );
    let (state, rejected) = breaker_metrics(worker, env);
    let dump = sink.ledger_dump();
    assert_eq!(
        (max_state.max(state), rejected),
        (0.0, 0.0),
        "breaker state / rejected calls with 5 poison events among 55 successes\n{dump}"
    );
    let counts = sink.success_counts();
    for id in &good {
        assert_eq!(counts.get(id), Some(&1), "successes of {id}\n{dump}");
    }
    for id in &bad {
        assert_eq!(
            sink.requests_for(id).len(),
            5,
            "handler runs of {id}\n{dump}"
        );
    }
    eprintln!("breaker: 55 successes in {successes_took:?}, 5 poison events dead-lettered");
}

#[test]
fn breaker_opens_after_five_calls_when_the_endpoint_fails_everything() {
    let env = "broutage";
    let s = Scenario::new(env)
        .types(&[TY])
        .sink(Action::status(500))
        .config(|c| {
            breaker_defaults(c);
            c.concurrency = 1;
            c.initial_backoff = "200ms".into();
        })
        .start();
    for i in 0..20 {
        publish(&s.redis, env, TY, &format!("out-{i:02}"));
    }
    let (sink, worker) = (&s.sink, &s.workers[0]);
    wait_until("the breaker opens", Duration::from_secs(5), || {
        breaker_metrics(worker, env).0 == 2.0
    });
    let at_open = sink.request_count();
    std::thread::sleep(Duration::from_millis(700));
    let dump = sink.ledger_dump();
    assert_eq!(
        (at_open, sink.request_count()),
        (5, 5),
        "sink calls when the breaker opened / 700 ms later (as before: 5 consecutive failures)\n{dump}"
    );
    assert_eq!(s.redis.xlen(&dlq_key(env)), 0);
}
