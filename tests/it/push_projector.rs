//! One projector per env (README "Push to apps"): with several instances, only the holder of
//! the lease `events:<env>:push:projector` projects, so a channel's history keeps stream
//! order; when the holder dies, another takes over and starts with what the dead one had read
//! and not acknowledged, so nothing is lost, repeated or reordered.

use std::time::{Duration, Instant};

use crate::push_util::{channel_ids, publish, push_config};
use crate::util::{RedisServer, WorkerProcess};

const WAIT: Duration = Duration::from_secs(15);

/// The holder of the projector lease, waiting up to [`WAIT`] for one.
fn holder(redis: &RedisServer, env: &str) -> String {
    let key = format!("events:{env}:push:projector");
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(h) = redis.cmd(&["GET", key.as_str()]).as_str() {
            return h;
        }
        assert!(
            Instant::now() < deadline,
            "no instance took the lease {key}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits up to `wait` for the channel to hold `n` messages; returns its ids.
fn wait_for(redis: &RedisServer, env: &str, n: usize, wait: Duration) -> Vec<String> {
    let deadline = Instant::now() + wait;
    loop {
        let ids = channel_ids(redis, env, "user:1");
        if ids.len() >= n || Instant::now() >= deadline {
            return ids;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Publishes `e<from>`..`e<to>` for user 1, in order; returns their ids.
fn publish_range(redis: &RedisServer, env: &str, from: usize, to: usize) -> Vec<String> {
    (from..to)
        .map(|i| {
            let id = format!("e{i:03}");
            publish(redis, env, "1", &id, 0);
            id
        })
        .collect()
}

#[test]
fn t99_push_one_projector_per_env_keeps_channel_order_across_instances_and_takeover() {
    let redis = RedisServer::start();
    let _dump = redis.dump_on_panic("t99");
    let env = "t99";
    let mut workers: Vec<WorkerProcess> = ["p1", "p2"]
        .iter()
        .map(|name| {
            let mut cfg = push_config(&redis, env, "");
            cfg.consumer = Some((*name).to_string());
            let mut w = WorkerProcess::start(name, cfg);
            w.wait_ready(WAIT);
            w
        })
        .collect();

    // Both instances run; the events go out as fast as one connection sends them.
    let mut expected = publish_range(&redis, env, 0, 200);
    let got = wait_for(&redis, env, 200, WAIT);
    assert_eq!(
        got, expected,
        "the channel keeps stream order with two instances"
    );
    let first = holder(&redis, env);
    let standby = if first == "p1" { "p2" } else { "p1" };
    let logs = |w: &WorkerProcess| {
        w.logs()
            .matches("this instance projects push channels")
            .count()
    };
    let leaders: Vec<usize> = workers.iter().map(logs).collect();
    assert_eq!(leaders.iter().sum::<usize>(), 1, "one leader: {leaders:?}");
    let states: Vec<String> = workers
        .iter()
        .map(|w| {
            let (_, body) = w.get("/api/events/health").expect("health answers");
            let health: serde_json::Value = serde_json::from_str(&body).unwrap();
            health["push"]["projector"]
                .as_str()
                .unwrap_or("?")
                .to_string()
        })
        .collect();
    let want = if first == "p1" {
        ["active", "standby"]
    } else {
        ["standby", "active"]
    };
    assert_eq!(states, want, "health says which instance projects");

    // The holder dies mid-stream (kill -9): the other takes over after the lease's 10 s and
    // projects the rest, the dead one's unacknowledged reads first.
    let idx = usize::from(first == "p2");
    let killed = Instant::now();
    expected.extend(publish_range(&redis, env, 200, 230));
    workers[idx].kill9();
    expected.extend(publish_range(&redis, env, 230, 300));
    let got = wait_for(&redis, env, 300, Duration::from_secs(30));
    let took = killed.elapsed();
    assert_eq!(
        got, expected,
        "after the takeover: every event once, in order"
    );
    assert_eq!(holder(&redis, env), standby, "the standby holds the lease");
    assert!(
        took < Duration::from_secs(16),
        "the standby took over in {took:?} (lease 10 s, tried every 2 s)"
    );
    eprintln!("t99: takeover and catch-up took {took:?}");
}
