//! Backpressure: at most `concurrency` handler runs at once, and a read asks only
//! for free `prefetch` slots (entries held: in flight plus read and waiting for a
//! handler slot). Successes waiting for their XACK use a second pool of
//! `concurrency` slots (README, Backpressure), so at most `prefetch + concurrency`
//! entries are pending at once.

use crate::util::*;
use std::time::Duration;

#[test]
fn in_flight_and_delivered_never_exceed_concurrency() {
    let env = "backpressure";
    let types = ["a.one", "a.two", "a.three"];
    let (concurrency, prefetch) = (2, 6);
    let mut s = Scenario::new(env)
        .types(&["a.*"])
        .sink(Action::delayed(200, Duration::from_millis(150)))
        .config(move |c| {
            c.concurrency = concurrency;
            c.top_level = format!("prefetch = {prefetch}\n");
        })
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
        max_pending <= (prefetch + concurrency) as i64,
        "{max_pending} entries delivered to the consumer and unacknowledged at once, with prefetch {prefetch}: reads must ask only for free prefetch slots (plus at most {concurrency} successes awaiting their XACK)"
    );
    worker.assert_running();
}

/// A read asks for the free `prefetch` slots, not only the free handler slots:
/// with `concurrency = 2` and `prefetch = 6`, the first read of one type stream
/// and the redeliver stream asks `COUNT 3` of each (6 over 2 streams; it was
/// `COUNT 1`, 2 free handler slots over 2 streams, before reads prefetched), and
/// still at most 2 handler runs happen at once.
#[test]
fn reads_prefetch_beyond_the_free_handler_slots() {
    let env = "prefetch";
    let mut s = Scenario::new(env)
        .types(&["p.one"])
        .sink(Action::delayed(200, Duration::from_millis(100)))
        .config(|c| {
            c.concurrency = 2;
            c.top_level = "prefetch = 6\n".into();
        })
        .workers(0)
        .start();
    for i in 0..12 {
        publish(&s.redis, env, "p.one", &format!("p-{i}"));
    }
    let monitor = Monitor::start(&s.redis);
    s.add_worker();
    let (redis, sink) = (&s.redis, &s.sink);
    let keys = [stream_key(env, "p.one")];
    let mut max_pending = 0;
    let done = try_wait_until(Duration::from_secs(15), || {
        max_pending = max_pending.max(pending_total(redis, &keys, "group"));
        sink.success_counts().len() == 12
    });
    let reads: Vec<String> = monitor
        .stop()
        .iter()
        .filter(|m| !crate::util::resp::is_test_client(&m.client))
        .filter(|m| {
            m.args
                .first()
                .is_some_and(|c| c.eq_ignore_ascii_case("XREADGROUP"))
        })
        .map(|m| m.args.join(" "))
        .collect();
    assert!(done, "not all delivered\n{}", sink.ledger_dump());
    let first = reads.first().cloned().unwrap_or_default();
    assert!(
        first.contains(" COUNT 3 "),
        "the first read should ask COUNT 3 of each of its 2 streams: {reads:#?}"
    );
    assert!(
        sink.max_concurrent() <= 2,
        "{} handler calls at once with concurrency 2",
        sink.max_concurrent()
    );
    assert!(
        max_pending > 2,
        "pending never exceeded the 2 handler slots: {max_pending}"
    );
    s.w().assert_running();
}

/// An event on a quiet type stream is not held behind the reads of a busy one: with
/// `q.busy` published every 3 ms and `q.quiet` once every ~60 ms, the quiet events reach
/// the handler within a few ms (median under 10 ms). A read that blocked on the busy stream
/// alone (left out the quiet one for its 50 ms recheck) held them ~25 ms on average.
#[test]
fn a_quiet_type_streams_event_is_not_held_behind_a_busy_stream() {
    let env = "quietlat";
    let s = Scenario::new(env).types(&["q.busy", "q.quiet"]).start();
    let busy = s.publisher("busy", 1000, Duration::from_millis(3));
    s.wait_load(20);
    let mut published = Vec::new();
    for i in 0..15 {
        std::thread::sleep(Duration::from_millis(57));
        let id = format!("quiet-{i}");
        let entry = publish(&s.redis, env, "q.quiet", &id);
        let ms: f64 = entry.split('-').next().unwrap().parse().unwrap();
        published.push((id, ms));
    }
    wait_until("quiet events delivered", Duration::from_secs(10), || {
        published
            .iter()
            .all(|(id, _)| s.sink.requests_for(id).iter().any(|r| r.is_success()))
    });
    let mut latencies: Vec<f64> = published
        .iter()
        .map(|(id, ms)| {
            let first = &s.sink.requests_for(id)[0];
            s.sink.unix_time(first.received) * 1000.0 - ms
        })
        .collect();
    latencies.sort_by(f64::total_cmp);
    let median = latencies[latencies.len() / 2];
    eprintln!("quiet stream latencies ms (XADD time to handler): {latencies:.1?}");
    assert!(
        median < 10.0,
        "median {median:.1} ms from XADD to handler for the quiet stream's events: {latencies:.1?}"
    );
    busy.join().unwrap();
}
