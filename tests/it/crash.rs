//! Worker process faults: `kill -9` mid-flight (another live consumer takes
//! over through the heartbeat), and a poison event that kills the worker every
//! time it is handled (DLQ after `max_deliveries`).

use crate::util::*;
use std::collections::BTreeMap;
use std::time::Duration;

const TY: &str = "payments.captured";

#[test]
fn t09_kill9_mid_flight_another_consumer_takes_over_nothing_lost() {
    let env = "kill9";
    let mut s = Scenario::new(env)
        .types(&[TY])
        .sink(Action::delayed(200, Duration::from_millis(400)))
        .workers(2)
        .config(|c| {
            c.concurrency = 2;
            // Far beyond the test: only the heartbeat path can explain a prompt takeover.
            c.visibility_timeout = "60s".into();
            c.heartbeat_ttl = "2s".into();
            c.reclaim_interval = "200ms".into();
        })
        .start();
    let (redis, sink) = (&s.redis, &s.sink);
    let [w1, w2] = &mut s.workers[..] else {
        unreachable!()
    };
    let total = 30;
    let mut event_of: BTreeMap<String, String> = BTreeMap::new();
    for i in 0..total {
        let id = format!("k-{i:02}");
        let entry = publish(redis, env, TY, &id);
        event_of.insert(entry, id);
    }
    wait_until("6 events delivered", Duration::from_secs(15), || {
        sink.success_counts().len() >= 6
    });
    // Kill w1 at a moment it holds work (it may be between two reads otherwise).
    wait_until("w1 holds pending entries", Duration::from_secs(10), || {
        redis
            .xpending_detail(&stream_key(env, TY), "group")
            .iter()
            .any(|(_, consumer, _, _)| consumer == "w1")
    });
    w1.kill9();
    let kill_at = sink.now();
    let orphans: Vec<String> = redis
        .xpending_detail(&stream_key(env, TY), "group")
        .into_iter()
        .filter(|(_, consumer, _, _)| consumer == "w1")
        .map(|(entry, _, _, _)| event_of[&entry].clone())
        .collect();
    assert!(
        !orphans.is_empty(),
        "inconclusive: w1 held no pending entries when it was killed"
    );
    wait_until(
        "every event delivered after the kill",
        Duration::from_secs(20),
        || sink.success_counts().len() == total,
    );
    wait_until("drained", Duration::from_secs(10), || {
        drained(redis, env, "group", &[TY])
    });
    std::thread::sleep(Duration::from_millis(500));
    let dump = sink.ledger_dump();
    // Each orphan was delivered again after the kill, within heartbeat_ttl + slack.
    for id in &orphans {
        let after: Vec<_> = sink
            .requests_for(id)
            .into_iter()
            .filter(|r| r.received > kill_at)
            .collect();
        assert!(
            !after.is_empty(),
            "orphan {id} of the killed worker was not delivered again\n{dump}"
        );
        let delay = after[0].received - kill_at;
        eprintln!("orphan {id} delivered again {delay:?} after the kill");
        assert!(
            delay <= Duration::from_millis(4500),
            "orphan {id} taken over only {delay:?} after the kill (heartbeat_ttl 2s)\n{dump}"
        );
    }
    let successes = sink.success_counts();
    let dups: usize = successes.values().map(|n| n - 1).sum();
    assert_eq!(successes.len(), total, "lost events\n{dump}");
    assert!(
        dups <= 2,
        "{dups} duplicate successes, more than the killed worker's in-flight capacity (2)\n{dump}"
    );
    assert_eq!(redis.xlen(&dlq_key(env)), 0);
    assert_eq!(
        redis
            .xpending_consumers(&stream_key(env, TY), "group")
            .get("w1"),
        None,
        "nothing may stay pending on the dead consumer"
    );
    let metrics = parse_metrics(&w2.metrics());
    let reclaimed = sum(
        &metrics,
        "event_worker_reclaimed_total",
        &[("env", env), ("group", "group"), ("type", TY)],
    );
    assert!(
        reclaimed >= orphans.len() as f64,
        "event_worker_reclaimed_total{{env,group,type}} = {reclaimed}, expected >= {}",
        orphans.len()
    );
    w2.assert_running();
}

/// Runs the worker under a bounded supervisor loop until `poison` is in the
/// DLQ; returns the number of times the worker was killed.
fn supervise_until_poison_dead_lettered(
    redis: &RedisServer,
    env: &str,
    sink: &HttpSink,
    worker: &mut WorkerProcess,
    max_restarts: usize,
) -> usize {
    for kills in 0..=max_restarts {
        sink.set_kill_target(worker.pid());
        let mut exited = false;
        let poisoned = try_wait_until(Duration::from_secs(15), || {
            if !worker.is_running() {
                exited = true;
                return true;
            }
            dlq_by_id(redis, env).contains_key("poison")
        });
        assert!(poisoned, "neither a crash nor a dead letter within 15s");
        if !exited {
            return kills;
        }
        worker.restart();
    }
    panic!("still crash-looping after {max_restarts} restarts");
}

fn poison_case(env: &str, consumer: Option<&str>) {
    let max_deliveries = 3;
    let consumer = consumer.map(str::to_string);
    let mut s = Scenario::new(env)
        .types(&[TY])
        .config(move |c| {
            c.consumer = consumer;
            c.concurrency = 1;
            c.max_deliveries = max_deliveries;
            c.heartbeat_ttl = "2s".into();
        })
        .workers(0)
        .start();
    s.sink.script("poison", vec![Action::kill_worker()]);
    publish(&s.redis, env, TY, "poison");
    let ids: Vec<String> = (0..10).map(|i| format!("ok-{i}")).collect();
    for id in &ids {
        publish(&s.redis, env, TY, id);
    }
    s.add_worker();
    let (redis, sink, worker) = (&s.redis, &s.sink, &mut s.workers[0]);
    let kills = supervise_until_poison_dead_lettered(redis, env, sink, worker, 8);
    wait_until(
        "the other events delivered",
        Duration::from_secs(15),
        || sink.success_counts().len() == ids.len(),
    );
    wait_until("drained", Duration::from_secs(10), || {
        drained(redis, env, "group", &[TY])
    });
    // No crash loop afterwards.
    std::thread::sleep(Duration::from_millis(1000));
    worker.assert_running();
    let dump = sink.ledger_dump();
    assert_eq!(
        sink.requests_for("poison").len(),
        max_deliveries as usize,
        "the handler runs exactly max_deliveries times; the next delivery goes to the DLQ\n{dump}"
    );
    assert_eq!(kills, max_deliveries as usize, "worker crashes");
    let dlq = dlq_entries(redis, env);
    assert_eq!(dlq.len(), 1, "DLQ: {dlq:?}");
    assert_eq!(dlq[0].get("id"), Some("poison"));
    assert_eq!(dlq[0].get("dlq_reason"), Some("max_deliveries_exceeded"));
    assert_eq!(dlq[0].get("dlq_group"), Some("group"));
    for id in &ids {
        assert_eq!(
            sink.success_counts().get(id),
            Some(&1),
            "deliveries of {id}\n{dump}"
        );
    }
}

#[test]
fn t11_poison_event_killing_the_worker_ends_in_dlq_stable_consumer_name() {
    poison_case("poison", Some("w1"));
}

#[test]
fn t11_poison_event_killing_the_worker_ends_in_dlq_new_consumer_name_each_start() {
    poison_case("poisonnew", None);
}

#[test]
fn t08_repeated_kill9_with_supervisor_restarts_loses_nothing() {
    let env = "kill9loop";
    let concurrency = 4usize;
    let mut s = Scenario::new(env)
        .types(&[TY])
        .sink(Action::delayed(200, Duration::from_millis(15)))
        .config(move |c| {
            c.concurrency = concurrency as u32;
            c.max_deliveries = 10;
        })
        .workers(0)
        .start();
    let total = 400;
    let ids: Vec<String> = (0..total).map(|i| format!("l-{i:03}")).collect();
    for id in &ids {
        publish(&s.redis, env, TY, id);
    }
    s.add_worker();
    let (redis, sink, worker) = (&s.redis, &s.sink, &mut s.workers[0]);
    // Kill at fixed, irregular points of progress, restart at once.
    let kill_points = [30, 90, 150, 220, 300];
    for (k, at) in kill_points.iter().enumerate() {
        wait_until(
            &format!("{at} events delivered before kill {k}"),
            Duration::from_secs(20),
            || sink.success_counts().len() >= *at,
        );
        worker.assert_running();
        std::thread::sleep(Duration::from_millis(7 * k as u64));
        worker.kill9();
        worker.restart();
    }
    wait_until("every event delivered", Duration::from_secs(30), || {
        sink.success_counts().len() == total
    });
    wait_until("drained", Duration::from_secs(10), || {
        drained(redis, env, "group", &[TY])
    });
    std::thread::sleep(Duration::from_millis(500));
    let successes = sink.success_counts();
    let dups: usize = successes.values().map(|n| n - 1).sum();
    // Per kill: the events in flight plus the successes awaiting their XACK (README, Limits).
    let bound = kill_points.len() * 2 * concurrency;
    assert!(
        dups <= bound,
        "{dups} duplicates after {} kills with concurrency {concurrency} (bound {bound})\n{}",
        kill_points.len(),
        sink.ledger_dump()
    );
    for id in &ids {
        assert!(successes.contains_key(id), "lost {id}");
    }
    assert_eq!(successes.len(), total, "unexpected ids");
    assert_eq!(redis.xlen(&dlq_key(env)), 0, "nothing may be dead-lettered");
    let mut published = crate::util::checker::Published::default();
    for id in &ids {
        published.ack(id);
    }
    crate::util::checker::check(&published, sink, redis, env, &Default::default())
        .assert_ok("T08", bound, "");
    eprintln!(
        "kill9 loop: {dups} duplicates over {} kills",
        kill_points.len()
    );
    worker.assert_running();
}

#[test]
fn t10_slow_handler_on_a_live_consumer_is_never_stolen() {
    let env = "nosteal";
    let mut s = Scenario::new(env)
        .types(&[TY])
        .route_timeout("10s")
        // Each handler run lasts 3x the heartbeat TTL.
        .sink(Action::delayed(200, Duration::from_millis(3000)))
        .workers(2)
        .config(|c| {
            c.concurrency = 2;
            c.heartbeat_ttl = "1s".into();
            c.reclaim_interval = "100ms".into();
            c.visibility_timeout = "30s".into();
        })
        .start();
    let (redis, sink) = (&s.redis, &s.sink);
    let [w1, w2] = &mut s.workers[..] else {
        unreachable!()
    };
    let ids: Vec<String> = (0..4).map(|i| format!("slow-{i}")).collect();
    for id in &ids {
        publish(redis, env, TY, id);
    }
    wait_until("all 4 done", Duration::from_secs(15), || {
        sink.success_counts().len() == 4
    });
    std::thread::sleep(Duration::from_millis(1500));
    let dump = sink.ledger_dump();
    for id in &ids {
        assert_eq!(
            sink.requests_for(id).len(),
            1,
            "{id} was delivered again while a live consumer was still handling it\n{dump}"
        );
    }
    assert_drained(redis, env, "group", &[TY]);
    w1.assert_running();
    w2.assert_running();
}

/// Entries left pending on this consumer's name by a previous run, on more streams than the
/// worker asks at once (64), are all taken back at start, each handled once, long before the
/// visibility-timeout backstop (60 s) could.
#[test]
fn leftovers_of_every_stream_are_taken_back_at_start() {
    let env = "leftovers";
    let types: Vec<String> = (0..70).map(|i| format!("left.t{i:02}")).collect();
    let type_refs: Vec<&str> = types.iter().map(String::as_str).collect();
    let mut s = Scenario::new(env)
        .types(&type_refs)
        .config(|c| {
            c.consumer = Some("w1".into());
            c.visibility_timeout = "60s".into();
        })
        .workers(0)
        .start();
    for ty in &types {
        publish(&s.redis, env, ty, &format!("left-{ty}"));
        let key = stream_key(env, ty);
        s.redis
            .cmd(&["XGROUP", "CREATE", &key, "group", "0", "MKSTREAM"]);
        // The previous run of `w1` read it and died before acknowledging.
        s.redis.read_as(&key, "group", "w1", 10);
    }
    let pending: usize = types
        .iter()
        .map(|ty| s.redis.xpending_detail(&stream_key(env, ty), "group").len())
        .sum();
    assert_eq!(pending, types.len(), "one entry pending on w1 per stream");
    s.add_worker();
    wait_until("every leftover handled", Duration::from_secs(20), || {
        s.sink.success_counts().len() == types.len()
    });
    wait_until("drained", Duration::from_secs(10), || {
        drained(&s.redis, env, "group", &type_refs)
    });
    let dump = s.sink.ledger_dump();
    for ty in &types {
        assert_eq!(
            s.sink.success_counts().get(&format!("left-{ty}")),
            Some(&1),
            "deliveries of left-{ty}\n{dump}"
        );
    }
}
