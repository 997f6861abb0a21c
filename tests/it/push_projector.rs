//! One projector per env (README "Push to apps"): with several instances, only the holder of
//! the lease `events:<env>:push:projector` projects, so a channel's history keeps stream
//! order; when the holder dies, another takes over and starts with what the dead one had read
//! and not acknowledged, so nothing is lost, repeated or reordered.

use std::time::{Duration, Instant};

use crate::push_util::{channel_ids, publish, push_config};
use crate::util::{RedisServer, Route, WorkerConfig, WorkerProcess};

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

/// A daemon whose own route takes `other.*` only, so every XACK on `booking.created` is
/// the projector's; `user:{data.user}` for `booking.*`.
fn projector_only(redis: &RedisServer, env: &str) -> WorkerProcess {
    let mut cfg = WorkerConfig::new(env, &redis.url()).route(Route::blackhole(&["other.*"]));
    cfg.extra = "[push]\n[[push.channels]]\ntypes = [\"booking.*\"]\n\
                 channel = \"user:{data.user}\"\n"
        .to_string();
    let mut w = WorkerProcess::start("w1", cfg);
    w.wait_ready(WAIT);
    w
}

/// Publishes `n` events in one pipelined burst, event `i` for user `users[i % len]`; returns
/// each user's ids in stream order.
fn burst(redis: &RedisServer, env: &str, n: usize, users: &[String]) -> Vec<Vec<String>> {
    let key = format!("events:{env}:booking.created");
    let mut conn = redis.conn();
    let mut per_user = vec![Vec::new(); users.len()];
    for i in 0..n {
        let (u, id) = (i % users.len(), format!("e{i:05}"));
        let data = format!(r#"{{"user":"{}","n":{i}}}"#, users[u]);
        let args = [
            "XADD",
            &key,
            "*",
            "id",
            &id,
            "type",
            "booking.created",
            "data",
            &data,
        ];
        conn.send(&args).unwrap();
        per_user[u].push(id);
    }
    for _ in 0..n {
        conn.read_value().unwrap();
    }
    per_user
}

/// `calls` of `cmdstat_<name>` in `INFO commandstats`.
fn calls(redis: &RedisServer, name: &str) -> u64 {
    let info = redis.cmd(&["INFO", "commandstats"]).as_str().unwrap();
    let prefix = format!("cmdstat_{name}:calls=");
    info.lines()
        .find_map(|l| l.strip_prefix(prefix.as_str()))
        .and_then(|rest| rest.split(',').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// Waits up to `wait` until every channel of `users` holds its expected count.
fn wait_all(
    redis: &RedisServer,
    env: &str,
    users: &[String],
    want: &[Vec<String>],
    wait: Duration,
) {
    let deadline = Instant::now() + wait;
    while Instant::now() < deadline {
        let done = users
            .iter()
            .zip(want)
            .all(|(u, w)| channel_ids(redis, env, &format!("user:{u}")).len() >= w.len());
        if done {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn t101_push_projector_appends_a_burst_in_batches_in_stream_order_per_channel() {
    let redis = RedisServer::start();
    let _dump = redis.dump_on_panic("t101");
    let env = "t101";
    let users: Vec<String> = (0..20).map(|u| format!("u{u}")).collect();
    let n = 2000;
    // The burst is in the stream before the daemon starts: the projector reads it flat out.
    let want = burst(&redis, env, n, &users);
    let (xack0, evalsha0) = (calls(&redis, "xack"), calls(&redis, "evalsha"));
    let started = Instant::now();
    let w = projector_only(&redis, env);
    wait_all(&redis, env, &users, &want, Duration::from_secs(30));
    let took = started.elapsed();
    for (u, w) in users.iter().zip(&want) {
        assert_eq!(
            &channel_ids(&redis, env, &format!("user:{u}")),
            w,
            "user:{u} holds its events once each, in stream order"
        );
    }
    let xacks = calls(&redis, "xack") - xack0;
    let scripts = calls(&redis, "evalsha") - evalsha0;
    eprintln!("t101: {n} events projected in {took:?}: {xacks} XACK, {scripts} EVALSHA");
    assert!(
        xacks as usize <= n / 10,
        "the projector acknowledged {n} events with {xacks} XACK calls (batches expected)\n{}",
        w.logs()
    );
    assert!(
        (scripts as usize) < n / 2,
        "{scripts} script calls for {n} events on 20 channels (one per channel and batch expected)"
    );
    let m = w.metrics();
    let line = format!("event_worker_push_appended_total{{env=\"{env}\",result=\"appended\"}} {n}");
    assert!(m.contains(&line), "{line} in\n{m}");
}

#[test]
fn t102_push_a_failing_channel_holds_its_later_events_while_the_others_go_on() {
    let redis = RedisServer::start();
    let _dump = redis.dump_on_panic("t102");
    let env = "t102";
    let users: Vec<String> = ["a", "b", "bad"].iter().map(|u| u.to_string()).collect();
    // The channel's meta key holds a string: its appends fail with WRONGTYPE.
    let meta = format!("events:{env}:push:{{user:bad}}:meta");
    redis.cmd(&["SET", meta.as_str(), "not a hash"]);
    let want = burst(&redis, env, 300, &users);
    let w = projector_only(&redis, env);
    let deadline = Instant::now() + WAIT;
    while channel_ids(&redis, env, "user:b").len() < 5 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    // The other channels of the batch (a read of up to 256, split over the type stream and
    // the redeliver stream) were appended; nothing of the failing one, whose events are
    // retried in place. (One event at a time, a and b would hold 1 each; how many a batch
    // holds depends on how much the first read returns, so at least 5.)
    let (a, b) = (
        channel_ids(&redis, env, "user:a"),
        channel_ids(&redis, env, "user:b"),
    );
    assert!(
        a.len() >= 5 && b.len() >= 5,
        "a {} b {}\n{}",
        a.len(),
        b.len(),
        w.logs()
    );
    assert_eq!(a[..], want[0][..a.len()], "user:a in stream order");
    assert_eq!(b[..], want[1][..b.len()], "user:b in stream order");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(channel_ids(&redis, env, "user:bad"), Vec::<String>::new());
    let logs = w.logs();
    assert!(
        logs.contains(
            "push: appending to a channel failed; retrying in place (its later events wait)"
        ) && logs.contains("WRONGTYPE"),
        "{logs}"
    );
    // Repaired: the held events go in first, in order, then the rest of the stream.
    redis.cmd(&["DEL", meta.as_str()]);
    wait_all(&redis, env, &users, &want, Duration::from_secs(15));
    for (u, w) in users.iter().zip(&want) {
        assert_eq!(
            &channel_ids(&redis, env, &format!("user:{u}")),
            w,
            "user:{u}: every event once, in stream order"
        );
    }
}
