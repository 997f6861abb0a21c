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
