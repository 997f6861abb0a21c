//! Rolling deploys: two daemons of one group, the old one (v1) without a route the new one
//! (v2) adds. Retries of the new type go through the group's shared redeliver stream, so
//! v1 reads some of them: it must hand them on (back to the retry set, no attempt used)
//! instead of dead-lettering them, and dead-letter as `no_route` only after
//! `no_route_grace`.

use crate::util::*;
use std::time::{Duration, Instant};

const A: &str = "orders.placed";
const B: &str = "orders.refunded";

/// Starts consumer `name` of the scenario's group whose only route serves `types`; waits
/// until ready and returns its index.
fn start_version(s: &mut Scenario, name: &str, types: &[&str]) -> usize {
    let mut cfg = s.cfg.clone();
    cfg.consumer = Some(name.to_string());
    cfg.api_port = free_port();
    cfg.routes = vec![Route::http(types, &s.sink.url())];
    let mut w = WorkerProcess::start(name, cfg);
    w.wait_ready(scenario::READY);
    s.workers.push(w);
    s.workers.len() - 1
}

/// `event_worker_handed_on_total` of one worker's scrape.
fn handed_on(w: &WorkerProcess, env: &str) -> f64 {
    let m = parse_metrics(&w.metrics());
    sum(&m, "event_worker_handed_on_total", &[("env", env)])
}

#[test]
fn t62_rolling_deploy_unrouted_retries_are_handed_on_not_dead_lettered() {
    const N_A: usize = 10;
    const N_B: usize = 30;
    let mut s = Scenario::new("T62").types(&[A, B]).workers(0).start();
    let v1 = start_version(&mut s, "v1", &[A]);
    let v2 = start_version(&mut s, "v2", &[A, B]);
    // Every B event fails its first run, so its retry goes through the redeliver stream
    // that v1 reads too.
    let b_ids: Vec<String> = (0..N_B).map(|i| format!("b-{i:02}")).collect();
    for id in &b_ids {
        s.sink.script(id, vec![Action::status(503), Action::ok()]);
    }
    for i in 0..N_A {
        assert!(s.publish_to(A, &format!("a-{i:02}")));
    }
    for id in &b_ids {
        assert!(s.publish_to(B, id));
    }
    let started = Instant::now();
    // No DLQ entry (a `no_route` or `permanent_error` one fails the check as misplaced);
    // `retried` counts only the B events' one real retry each.
    let rep = s.conserved(Close {
        retried: Some(N_B),
        sink_dump: true,
        ..Close::default()
    });
    let drained_in = started.elapsed();
    assert_eq!(rep.dead, 0, "dead-lettered: {:?}", rep.dlq_reasons);
    assert_eq!(s.redis.xlen(&dlq_key(&s.env)), 0);
    let dump = s.sink.ledger_dump();
    // Attempts are not inflated by the hand-ons: each B event ran exactly twice, attempt 0
    // (503) then attempt 1 (200); each A event once.
    for id in &b_ids {
        let reqs = s.sink.requests_for(id);
        let attempts: Vec<Option<u64>> = reqs.iter().map(|r| r.attempt).collect();
        assert_eq!(attempts, [Some(0), Some(1)], "attempts of {id}\n{dump}");
        assert!(reqs[1].is_success(), "{id}\n{dump}");
        for r in &reqs {
            let body = r.body.as_object().expect("JSON object body");
            assert!(
                !body.contains_key("unrouted_since"),
                "the worker's unrouted_since reached the handler: {body:?}"
            );
        }
    }
    for i in 0..N_A {
        let id = format!("a-{i:02}");
        let attempts: Vec<Option<u64>> =
            s.sink.requests_for(&id).iter().map(|r| r.attempt).collect();
        assert_eq!(attempts, [Some(0)], "attempts of {id}\n{dump}");
    }
    // v1 really met B retries and handed them on; v2, which has the route, never did.
    let (on_v1, on_v2) = (
        handed_on(&s.workers[v1], &s.env),
        handed_on(&s.workers[v2], &s.env),
    );
    eprintln!(
        "[T62] {N_B} B retries through the redeliver stream: v1 handed on {on_v1}, \
         v2 {on_v2}; DLQ 0; drained {drained_in:.1?} after the last publish"
    );
    assert!(
        on_v1 >= 1.0,
        "v1 never read a B retry; the test proves nothing"
    );
    assert_eq!(on_v2, 0.0);
}

#[test]
fn t62_unrouted_retry_is_dead_lettered_as_no_route_after_the_grace() {
    let s = Scenario::new("T62b")
        .types(&[A])
        .config(|c| c.top_level += "no_route_grace = \"1s\"\n")
        .start();
    // A retry of type B that a v2 instance scheduled before it left: only v1 (no route
    // for B) is running.
    let env = s.env.clone();
    let put = Instant::now();
    s.redis.xadd(
        &redeliver_key(&env, "group"),
        &[
            ("id", "b-orphan"),
            ("type", B),
            ("data", "{}"),
            ("attempt", "1"),
            ("origin_entry_id", "1700000000000-0"),
        ],
    );
    wait_until(
        "the unrouted retry dead-lettered",
        Duration::from_secs(10),
        || s.redis.xlen(&dlq_key(&env)) == 1,
    );
    let took = put.elapsed();
    let dlq = dlq_entries(&s.redis, &env);
    let e = &dlq[0];
    assert_eq!(e.get("id"), Some("b-orphan"));
    assert_eq!(e.get("dlq_reason"), Some("no_route"));
    // No attempt used: the handler ran once before (v2), and still once.
    assert_eq!(e.get("attempt"), Some("1"));
    assert_eq!(e.get("dlq_attempts"), Some("1"));
    assert_eq!(e.get("dlq_entry_id"), Some("1700000000000-0"));
    let error = e.get("dlq_error").unwrap_or_default();
    let since = e.get("unrouted_since").expect("unrouted_since carried");
    assert!(since.parse::<u64>().is_ok(), "unrouted_since = {since}");
    let (head, tail) = (
        format!("no route serves type `{B}`: the consumers of group `group` that read it from "),
        " on had none for no_route_grace (1s); deploy a route for this type to every \
         instance of the group, then replay",
    );
    assert!(
        error.starts_with(&head) && error.ends_with(tail),
        "dlq_error = {error}"
    );
    assert!(
        took >= Duration::from_secs(1),
        "dead-lettered {took:?} after it was due, before the 1s grace"
    );
    let w = &s.workers[0];
    let m = parse_metrics(&w.metrics());
    let want = [("env", env.as_str()), ("reason", "no_route")];
    assert_eq!(sum(&m, "event_worker_dead_lettered_total", &want), 1.0);
    // Handed on exactly once (at the first read, due again 1-1.25 s later: past the grace).
    assert_eq!(handed_on(w, &env), 1.0);
    let retried = [("env", env.as_str()), ("outcome", "retried")];
    assert_eq!(sum(&m, "event_worker_events_total", &retried), 0.0);
    assert_eq!(s.sink.request_count(), 0);
    assert_drained(&s.redis, &env, "group", &[A]);
    eprintln!(
        "[T62b] unrouted retry dead-lettered as no_route {took:.2?} after it was due (grace 1s), handed on once"
    );
}
