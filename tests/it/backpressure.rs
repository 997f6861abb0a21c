//! Backpressure: at most `concurrency` events in flight, and a read asks only
//! for free slots (nothing is held delivered-but-idle beyond them). Successes
//! waiting for their XACK use a second pool of `concurrency` slots (README,
//! Backpressure), so at most `2 x concurrency` entries are pending at once.

use crate::util::*;
use std::time::Duration;

#[test]
fn in_flight_and_delivered_never_exceed_concurrency() {
    let env = "backpressure";
    let redis = RedisServer::start();
    let _dump = redis.dump_on_panic(env);
    let sink = HttpSink::start();
    sink.set_default(Action::delayed(200, Duration::from_millis(150)));
    let types = ["a.one", "a.two", "a.three"];
    let concurrency = 2;
    let mut cfg = WorkerConfig::new(env, &redis.url()).route(Route::http(&["a.*"], &sink.url()));
    cfg.concurrency = concurrency;
    for ty in types {
        for i in 0..10 {
            publish(&redis, env, ty, &format!("{ty}-{i}"));
        }
    }
    let keys: Vec<String> = types.iter().map(|t| stream_key(env, t)).collect();
    let mut worker = WorkerProcess::start("w1", cfg);
    let mut max_pending = 0;
    let done = try_wait_until(Duration::from_secs(25), || {
        let p = pending_total(&redis, &keys, "group");
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
