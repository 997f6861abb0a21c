//! Batched HTTP delivery (`batch = { ... }` on an http route): one request carries several
//! events as `application/cloudevents-batch+json`, the answer's per-event results decide each
//! event (one permanent failure dead-letters that event only, none is retried), an answer
//! without results retries every event of the batch until `max_attempts`, and the breaker
//! counts each event's failure as the per-event mode does; a batch not answered within the
//! route's timeout gives up on every event of it.

use crate::util::scenario::ScenarioBuilder;
use crate::util::*;
use std::time::Duration;

const TY: &str = "order.paid";

/// A scenario whose http route batches up to `max_events` events, waiting up to 300 ms
/// for more (so the events published in a burst share requests).
fn batched(env: &str, max_events: u32) -> ScenarioBuilder {
    Scenario::new(env).types(&[TY]).config(move |c| {
        c.concurrency = 8;
        for r in &mut c.routes {
            r.batch = Some(format!(
                "{{ max_events = {max_events}, max_wait = \"300ms\" }}"
            ));
        }
    })
}

#[test]
fn batch_with_one_permanent_failure_dead_letters_that_event_only() {
    let env = "batchperm";
    let s = batched(env, 8).start();
    s.sink.script("b-3", vec![Action::status(422)]);
    let ids: Vec<String> = (0..8).map(|i| format!("b-{i}")).collect();
    for id in &ids {
        publish(&s.redis, env, TY, id);
    }
    wait_until(
        "7 successes and 1 dead letter",
        Duration::from_secs(10),
        || s.sink.success_counts().len() == 7 && dlq_entries(&s.redis, env).len() == 1,
    );
    std::thread::sleep(Duration::from_millis(300));
    let dump = s.sink.ledger_dump();
    let dlq = dlq_entries(&s.redis, env);
    assert_eq!(
        (
            dlq.len(),
            dlq[0].get("id"),
            dlq[0].get("dlq_reason"),
            dlq[0].get("dlq_error")
        ),
        (
            1,
            Some("b-3"),
            Some("permanent_error"),
            Some("http batch result permanent: sink")
        ),
        "{dump}"
    );
    // Nothing was retried: one request per event, the failure included.
    let counts = s.sink.request_counts();
    for id in &ids {
        assert_eq!(counts.get(id), Some(&1), "requests for {id}\n{dump}");
    }
    let sizes = s.sink.batch_sizes();
    assert_eq!(
        sizes.iter().sum::<usize>(),
        8,
        "batch sizes {sizes:?}\n{dump}"
    );
    assert!(
        sizes.len() < 8,
        "events were not batched: sizes {sizes:?}\n{dump}"
    );
    let first = &s.sink.ledger()[0];
    assert_eq!(
        (first.content_type.as_str(), first.path.as_str()),
        ("application/cloudevents-batch+json", "/events")
    );
    assert_drained(&s.redis, env, "group", &[TY]);
}

#[test]
fn batch_answer_without_results_retries_every_event_then_dead_letters_them() {
    let env = "batchbad";
    let s = batched(env, 8).start();
    s.sink.set_batch_answer(200, "not json");
    let ids: Vec<String> = (0..4).map(|i| format!("m-{i}")).collect();
    for id in &ids {
        publish(&s.redis, env, TY, id);
    }
    wait_until("4 dead letters", Duration::from_secs(10), || {
        dlq_entries(&s.redis, env).len() == 4
    });
    let dump = s.sink.ledger_dump();
    let expect = "http batch: the answer (status 200) is not {\"results\":[...]} \
                  (expected ident at line 1 column 2); every event of the batch is retried";
    for e in dlq_entries(&s.redis, env) {
        assert_eq!(
            (e.get("dlq_reason"), e.get("dlq_error")),
            (Some("max_attempts_exceeded"), Some(expect)),
            "{:?}\n{dump}",
            e.get("id")
        );
    }
    // max_attempts = 3: every event was sent 3 times, never more.
    let counts = s.sink.request_counts();
    for id in &ids {
        assert_eq!(counts.get(id), Some(&3), "requests for {id}\n{dump}");
    }
    assert_drained(&s.redis, env, "group", &[TY]);
}

#[test]
fn batch_outage_opens_the_breaker_and_every_event_arrives_after_recovery() {
    let env = "batchbrk";
    let s = batched(env, 4)
        .config(|c| {
            c.failure_threshold = 5;
            c.open_for = "1s".into();
            c.max_attempts = 10;
        })
        .start();
    s.sink.set_batch_answer(503, "down");
    let ids: Vec<String> = (0..12).map(|i| format!("o-{i:02}")).collect();
    // Two batches' worth first (8 failures >= 5): batches already in flight when the breaker
    // opens are not recalled, so the events published after it opened tell whether it stops
    // new calls, whatever the machine's speed.
    for id in &ids[..8] {
        publish(&s.redis, env, TY, id);
    }
    let worker = &s.workers[0];
    let state = || {
        let m = parse_metrics(&worker.metrics());
        samples(&m, "event_worker_breaker_state", &[("env", env)])
            .iter()
            .map(|s| s.value)
            .fold(0.0, f64::max)
    };
    wait_until("the breaker opens", Duration::from_secs(10), || {
        state() == 2.0
    });
    let at_open = s.sink.request_count();
    for id in &ids[8..] {
        publish(&s.redis, env, TY, id);
    }
    std::thread::sleep(Duration::from_millis(500));
    let dump = s.sink.ledger_dump();
    assert_eq!(
        s.sink.request_count(),
        at_open,
        "the sink was called while the breaker was open\n{dump}"
    );
    assert!(
        at_open <= 8,
        "{at_open} event deliveries before the breaker opened (8 published)\n{dump}"
    );
    let counts = s.sink.request_counts();
    for id in &ids[8..] {
        assert_eq!(
            counts.get(id),
            None,
            "{id} was published while open\n{dump}"
        );
    }
    s.sink.clear_batch_answer();
    wait_until("every event delivered", Duration::from_secs(10), || {
        s.sink.success_counts().len() == 12
    });
    let dump = s.sink.ledger_dump();
    assert_eq!(dlq_entries(&s.redis, env).len(), 0, "{dump}");
    for (id, n) in s.sink.success_counts() {
        assert_eq!(n, 1, "successes of {id}\n{dump}");
    }
    assert_drained(&s.redis, env, "group", &[TY]);
}

#[test]
fn batch_not_answered_within_the_route_timeout_gives_up_on_every_event() {
    let env = "batchslow";
    let s = batched(env, 8)
        .config(|c| {
            c.max_attempts = 1;
            for r in &mut c.routes {
                r.timeout = Some("1s".into());
            }
        })
        .start();
    let ids: Vec<String> = (0..3).map(|i| format!("s-{i}")).collect();
    for id in &ids {
        s.sink
            .script(id, vec![Action::delayed(200, Duration::from_secs(4))]);
        publish(&s.redis, env, TY, id);
    }
    wait_until("3 dead letters", Duration::from_secs(10), || {
        dlq_entries(&s.redis, env).len() == 3
    });
    let seen = s.sink.now();
    let dump = s.sink.ledger_dump();
    let ledger = s.sink.ledger();
    // Given up before the sink answered: within the timeout of the batch's first event's
    // start (the batch waited up to `max_wait` = 300 ms for more before it was sent).
    let sizes = s.sink.batch_sizes();
    assert_eq!(
        sizes.iter().sum::<usize>(),
        3,
        "batch sizes {sizes:?}\n{dump}"
    );
    assert!(
        ledger.iter().all(|r| r.answered.is_none()),
        "the worker waited for the late answer\n{dump}"
    );
    for r in &ledger {
        let waited = seen - r.received;
        assert!(
            waited >= Duration::from_millis(650) && waited < Duration::from_millis(2500),
            "{} dead-lettered {waited:?} after its request arrived\n{dump}",
            r.id
        );
    }
    for e in dlq_entries(&s.redis, env) {
        assert_eq!(
            (e.get("dlq_reason"), e.get("dlq_error")),
            (
                Some("max_attempts_exceeded"),
                Some("http batch: no answer within 1s")
            ),
            "{:?}\n{dump}",
            e.get("id")
        );
    }
    assert_drained(&s.redis, env, "group", &[TY]);
}
