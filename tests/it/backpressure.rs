//! Backpressure: at most `concurrency` events in flight, and a read asks only
//! for free slots (nothing is held delivered-but-idle beyond them). Successes
//! waiting for their XACK use a second pool of `concurrency` slots (README,
//! Backpressure), so at most `2 x concurrency` entries are pending at once.

use crate::util::*;
use std::time::Duration;

#[test]
fn in_flight_and_delivered_never_exceed_concurrency() {
    let env = "backpressure";
    let types = ["a.one", "a.two", "a.three"];
    let concurrency = 2;
    let mut s = Scenario::new(env)
        .types(&["a.*"])
        .sink(Action::delayed(200, Duration::from_millis(150)))
        .config(move |c| c.concurrency = concurrency)
        .workers(0)
        .start();
    for ty in types {
        for i in 0..10 {
            publish(&s.redis, env, ty, &format!("{ty}-{i}"));
        }
    }
    let keys: Vec<String> = types.iter().map(|t| stream_key(env, t)).collect();
    s.add_worker();
    let (redis, sink, worker) = (&s.redis, &s.sink, &mut s.workers[0]);
    let mut max_pending = 0;
    let done = try_wait_until(Duration::from_secs(25), || {
        let p = pending_total(redis, &keys, "group");
        max_pending = max_pending.max(p);
        sink.success_counts().len() == 30
    });
    assert!(done, "not all delivered\n{}", sink.ledger_dump());
    let max_in_flight = sink.max_concurrent();
    eprintln!("backpressure: max handler calls at once {max_in_flight}, max pending {max_pending}");
    assert!(
        max_in_flight <= concurrency as usize,
        "{max_in_flight} handler calls at once with concurrency {concurrency}"
    );
    assert!(
        max_pending <= 2 * concurrency as i64,
        "{max_pending} entries delivered to the consumer and unacknowledged at once, with concurrency {concurrency}: reads must ask only for free slots (plus at most {concurrency} successes awaiting their XACK)"
    );
    worker.assert_running();
}
