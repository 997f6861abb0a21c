//! Push to apps (README "Push to apps"): projection onto channels, SSE with exact resume,
//! `recovered:false` for each reason, dedup by event id, a slow client cut alone.

use std::time::Duration;

use serde_json::json;

use crate::push_util::{Sse, Stalled, channel_ids, get_json, publish, push_config, start};
use crate::util::{RedisServer, wait_until};

const WAIT: Duration = Duration::from_secs(10);

/// Connects, retrying while push is not connected yet (bounded).
pub async fn connect(addr: &str, channels: &[&str], last: Option<&str>) -> Sse {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        match Sse::connect(addr, channels, last).await {
            Ok(s) => return s,
            Err(e) if std::time::Instant::now() < deadline => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("SSE connect to {addr}: {e}"),
        }
    }
}

/// Waits until the channel history of `user` holds `n` entries.
fn wait_len(redis: &RedisServer, env: &str, user: &str, n: i64) {
    let key = format!("events:{env}:push:{{user:{user}}}");
    wait_until(&format!("{key} holds {n}"), WAIT, || redis.xlen(&key) == n);
}

/// Waits until the last entry of the channel history of `user` is event `id`.
fn wait_last(redis: &RedisServer, env: &str, user: &str, id: &str) {
    let key = format!("events:{env}:push:{{user:{user}}}");
    wait_until(&format!("{key} ends with {id}"), WAIT, || {
        redis.xrange(&key).last().and_then(|e| e.get("id")) == Some(id)
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t80_push_sse_resume_delivers_exactly_the_missed_then_live_and_dedups_by_id() {
    let redis = RedisServer::start();
    let env = "t80";
    let w = start(push_config(&redis, env, ""));
    let addr = w.config.api_addr();
    let mut sse = connect(&addr, &["user:1"], None).await;
    let first = sse.next(WAIT).await.expect("resume event");
    assert_eq!(first.event, "resume");
    assert_eq!(
        first.json(),
        json!({"recovered": true, "missed": 0, "channels": {"user:1": {"recovered": true, "missed": 0}}})
    );
    assert!(
        w.output()
            .contains("push is open: neither EVENTS_API_TOKEN nor [apps] app tokens"),
        "without a token or [apps], the start warns that push is open"
    );
    assert_eq!(sse.retry.as_deref(), Some("2000"));
    for i in 1..=3 {
        publish(&redis, env, "1", &format!("e{i}"), 0);
    }
    let got = sse.messages(3, WAIT).await;
    let ids: Vec<String> = got.iter().map(|e| e.event_id()).collect();
    assert_eq!(ids, ["e1", "e2", "e3"]);
    assert_eq!(got[0].json()["channel"], "user:1");
    assert_eq!(got[0].json()["event"]["data"]["n"], "e1");
    let last = got[2].id.clone();
    drop(sse);
    for i in 4..=8 {
        publish(&redis, env, "1", &format!("e{i}"), 0);
        publish(&redis, env, "2", &format!("other{i}"), 0);
    }
    wait_len(&redis, env, "1", 8);
    let mut sse = connect(&addr, &["user:1"], Some(&last)).await;
    let first = sse.next(WAIT).await.unwrap();
    assert_eq!(
        first.json()["channels"]["user:1"],
        json!({"recovered": true, "missed": 5})
    );
    let got = sse.messages(5, WAIT).await;
    let ids: Vec<String> = got.iter().map(|e| e.event_id()).collect();
    assert_eq!(ids, ["e4", "e5", "e6", "e7", "e8"]);
    publish(&redis, env, "1", "e9", 0);
    // The same event id again (a producer retry): projected once.
    publish(&redis, env, "1", "e9", 0);
    publish(&redis, env, "1", "e10", 0);
    let got = sse.messages(2, WAIT).await;
    let ids: Vec<String> = got.iter().map(|e| e.event_id()).collect();
    assert_eq!(ids, ["e9", "e10"]);
    wait_len(&redis, env, "1", 10);
    let more = sse.next(Duration::from_millis(1500)).await;
    assert!(more.is_none(), "nothing more: {more:?}");
    assert!(sse.comments >= 1, "heartbeat comments every push.heartbeat");
    let m = w.metrics();
    assert!(
        m.contains("event_worker_push_appended_total{env=\"t80\",result=\"duplicate\"} 1"),
        "{m}"
    );
    assert!(
        m.contains("event_worker_push_connections{env=\"t80\",transport=\"sse\"} 1"),
        "{m}"
    );
    assert!(
        m.contains(
            "event_worker_push_resumes_total{env=\"t80\",reason=\"none\",result=\"recovered\"} 1"
        ),
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t81_push_resume_says_recovered_false_for_each_reason_on_one_connection() {
    let redis = RedisServer::start();
    let env = "t81";
    let w = start(push_config(
        &redis,
        env,
        "history_max_len = 5\nreplay_max = 3",
    ));
    let addr = w.config.api_addr();
    for u in ["a", "b", "c", "d"] {
        publish(&redis, env, u, &format!("{u}0"), 0);
        wait_len(&redis, env, u, 1);
    }
    let chans = ["user:a", "user:b", "user:c", "user:d"];
    let query: Vec<String> = chans.iter().map(|c| format!("channel={c}")).collect();
    let pos = get_json(
        &addr,
        &format!("/api/events/stream/position?{}", query.join("&")),
    )
    .await;
    let id = pos["id"].as_str().unwrap().to_string();
    for (u, n) in [("a", 2), ("b", 4), ("c", 6)] {
        for i in 1..=n {
            publish(&redis, env, u, &format!("{u}{i}"), 0);
        }
        wait_last(&redis, env, u, &format!("{u}{n}"));
    }
    let meta = format!("events:{env}:push:{{user:d}}");
    redis.cmd(&[
        "DEL",
        &meta,
        &format!("{meta}:ids"),
        &format!("{meta}:meta"),
    ]);
    publish(&redis, env, "d", "d1", 0);
    wait_len(&redis, env, "d", 1);
    let mut sse = connect(&addr, &chans, Some(&id)).await;
    let first = sse.next(WAIT).await.unwrap();
    assert_eq!(
        first.json(),
        json!({"recovered": false, "reason": "over_cap", "missed": 2, "channels": {
            "user:a": {"recovered": true, "missed": 2},
            "user:b": {"recovered": false, "reason": "over_cap"},
            "user:c": {"recovered": false, "reason": "trimmed"},
            "user:d": {"recovered": false, "reason": "history_lost"},
        }})
    );
    let got = sse.messages(2, WAIT).await;
    let ids: Vec<String> = got.iter().map(|e| e.event_id()).collect();
    assert_eq!(
        ids,
        ["a1", "a2"],
        "only the recoverable channel replays; never a partial one"
    );
    publish(&redis, env, "c", "c7", 0);
    let got = sse.messages(1, WAIT).await;
    assert_eq!(got[0].event_id(), "c7", "live after the failed recovery");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t82_push_slow_client_is_cut_alone_and_catches_up_exactly() {
    let redis = RedisServer::start();
    let env = "t82";
    let extra = "client_buffer = 100\nhistory_max_len = 2000\nreplay_max = 2000";
    let w = start(push_config(&redis, env, extra));
    let addr = w.config.api_addr();
    let mut fast = connect(&addr, &["user:1"], None).await;
    fast.next(WAIT).await.unwrap();
    let slow = Stalled::connect(&addr, "user:1").await;
    wait_until("both connected", WAIT, || {
        w.metrics()
            .contains("event_worker_push_connections{env=\"t82\",transport=\"sse\"} 2")
    });
    let n = 600;
    // The reading client reports its progress, and the publisher stays at most `AHEAD`
    // messages in front of it (well within `client_buffer`): however slow the machine, the
    // reading client is never the one that falls behind, and the stalled one always is.
    const AHEAD: usize = 40;
    let (progress, mut received) = tokio::sync::watch::channel(0usize);
    let reader = tokio::spawn(async move {
        let started = std::time::Instant::now();
        let mut got = Vec::with_capacity(n);
        while got.len() < n {
            got.extend(fast.messages(1, Duration::from_secs(10)).await);
            progress.send_replace(got.len());
        }
        (got, started.elapsed())
    });
    let started = std::time::Instant::now();
    for i in 0..n {
        if i >= AHEAD {
            tokio::time::timeout(WAIT, received.wait_for(|&r| r + AHEAD >= i))
                .await
                .expect("the reading client keeps up when paced")
                .expect("the reader runs");
        }
        publish(&redis, env, "1", &format!("e{i:04}"), 16 * 1024);
    }
    let key = format!("events:{env}:push:{{user:1}}");
    wait_until("all projected", Duration::from_secs(20), || {
        redis.xlen(&key) == n as i64
    });
    let projected = started.elapsed();
    let (got, fast_took) = reader.await.unwrap();
    let order = channel_ids(&redis, env, "user:1");
    let seen: Vec<String> = got.iter().map(|e| e.event_id()).collect();
    assert_eq!(
        seen, order,
        "the fast client got every message in channel order"
    );
    eprintln!("projected in {projected:?}, fast client done in {fast_took:?}");
    let m = w.metrics();
    assert!(
        m.contains("event_worker_push_slow_disconnects_total{env=\"t82\"} 1"),
        "{m}"
    );
    // The stalled client reads what was sent, then the end event with its position.
    let events = slow.read_all(WAIT).await;
    let (end, messages) = events.split_last().expect("events");
    assert_eq!(end.event, "end", "{end:?}");
    assert_eq!(end.json()["reason"], "slow_client");
    let last = messages.last().map(|e| e.id.clone()).unwrap();
    assert_eq!(end.json()["id"].as_str().unwrap(), last);
    let mut seen: Vec<String> = messages[1..].iter().map(|e| e.event_id()).collect();
    assert!(seen.len() < n, "cut before the end: {}", seen.len());
    let mut again = connect(&addr, &["user:1"], Some(&last)).await;
    let first = again.next(WAIT).await.unwrap();
    let missed = n - seen.len();
    assert_eq!(
        first.json()["channels"]["user:1"],
        json!({"recovered": true, "missed": missed})
    );
    let rest = again.messages(missed, WAIT).await;
    seen.extend(rest.iter().map(|e| e.event_id()));
    assert_eq!(
        seen, order,
        "cut, then resumed: every message once, in order"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t89_push_device_ack_is_kept_and_the_resume_says_which_channels_were_trimmed_past_it() {
    let redis = RedisServer::start();
    let env = "t89";
    let w = start(push_config(
        &redis,
        env,
        "history_max_len = 3\ndevice_ttl = \"1h\"\ndevice_scan_interval = \"200ms\"",
    ));
    let addr = w.config.api_addr();
    let url = format!("http://{addr}/api/events/stream/ack");
    let client = reqwest::Client::new();
    let mut sse = connect(&addr, &["user:1", "user:2"], None).await;
    sse.next(WAIT).await.unwrap();
    publish(&redis, env, "1", "m1", 0);
    publish(&redis, env, "2", "n1", 0);
    let got = sse.messages(2, WAIT).await;
    let r = client
        .post(&url)
        .json(&json!({"device": "phone-1", "id": got[1].id}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.json::<serde_json::Value>().await.unwrap(),
        json!({"acknowledged": ["user:1", "user:2"]})
    );
    let key = format!("events:{env}:push:device:{{phone-1}}");
    let ttl = redis.cmd(&["PTTL", &key]).as_int().unwrap();
    assert!(
        (3_500_000..=3_600_000).contains(&ttl),
        "expires after device_ttl: {ttl}"
    );
    for i in 2..=4 {
        publish(&redis, env, "1", &format!("m{i}"), 0);
    }
    let got = sse.messages(3, WAIT).await;
    let id = got[2].id.clone();
    drop(sse);
    publish(&redis, env, "1", "m5", 0);
    wait_last(&redis, env, "1", "m5");
    let q = format!("http://{addr}/api/events/stream?channel=user:1&channel=user:2&device=phone-1");
    let mut r = client
        .get(&q)
        .header("Last-Event-ID", &id)
        .send()
        .await
        .unwrap();
    let first = tokio::time::timeout(WAIT, r.chunk())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let text = String::from_utf8_lossy(&first).to_string();
    let data = text.lines().find_map(|l| l.strip_prefix("data: ")).unwrap();
    let reply: serde_json::Value = serde_json::from_str(data).unwrap();
    assert_eq!(
        reply,
        json!({"recovered": true, "missed": 1, "channels": {
            "user:1": {"recovered": true, "missed": 1},
            "user:2": {"recovered": true, "missed": 0},
        }, "device": {"id": "phone-1", "trimmed": ["user:1"]}}),
        "the connection resumes exactly; the device's m1 position on user:1 was trimmed (m2 gone)"
    );
    wait_until("the device counted behind", WAIT, || {
        w.metrics()
            .contains("event_worker_push_devices_behind{env=\"t89\"} 1")
    });
    let m = w.metrics();
    let age: f64 = m
        .lines()
        .find_map(|l| l.strip_prefix("event_worker_push_oldest_unacked_age_seconds{env=\"t89\"} "))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{m}"));
    assert!(age > 0.0 && age < 60.0, "{age}");
    let r = client
        .post(&url)
        .json(&json!({"device": "a b", "id": id}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(
        r.json::<serde_json::Value>().await.unwrap()["error"],
        "device `a b` is not a valid id ([A-Za-z0-9_.-], 1-128 characters)"
    );
}

/// `push.max_devices`: past it, the least recently acknowledging devices are dropped (their
/// index entry and their positions), so device keys stay bounded whatever ids clients send.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t100_push_devices_beyond_max_devices_are_dropped_oldest_first() {
    let redis = RedisServer::start();
    let env = "t100";
    let w = start(push_config(&redis, env, "max_devices = 3"));
    let addr = w.config.api_addr();
    let mut sse = connect(&addr, &["user:1"], None).await;
    sse.next(WAIT).await.unwrap();
    publish(&redis, env, "1", "m1", 0);
    let id = sse.messages(1, WAIT).await[0].id.clone();
    let client = reqwest::Client::new();
    let url = format!("http://{addr}/api/events/stream/ack");
    for i in 0..5 {
        let r = client
            .post(&url)
            .json(&json!({"device": format!("phone-{i}"), "id": id}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let index: Vec<String> = redis
        .zrange_withscores(&format!("events:{env}:push:devices"))
        .into_iter()
        .map(|(d, _)| d)
        .collect();
    assert_eq!(
        index,
        ["phone-2", "phone-3", "phone-4"],
        "the 3 most recent"
    );
    for i in 0..5 {
        let key = format!("events:{env}:push:device:{{phone-{i}}}");
        assert_eq!(redis.exists(&key), i >= 2, "{key}");
    }
    // One acknowledgement is two Redis commands: the device hash's script and the index's.
    let monitor = crate::util::Monitor::start(&redis);
    let r = client
        .post(&url)
        .json(&json!({"device": "phone-4", "id": id}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    tokio::time::sleep(Duration::from_millis(300)).await; // MONITOR's lines arrive late
    let commands: Vec<String> = monitor
        .stop()
        .into_iter()
        .filter(|l| l.client != "lua" && !crate::util::resp::is_test_client(&l.client))
        .filter(|l| l.raw.contains("push:device"))
        .map(|l| l.raw)
        .collect();
    assert_eq!(commands.len(), 2, "{commands:#?}");
    assert!(
        commands.iter().all(|c| c.contains("\"EVALSHA\"")),
        "{commands:#?}"
    );
    let key = format!("events:{env}:push:device:{{phone-4}}");
    let bytes = redis
        .cmd(&["MEMORY", "USAGE", key.as_str()])
        .as_int()
        .unwrap();
    eprintln!("t100: one device with one channel: {bytes} bytes");
}
