//! Push over WebSocket, and the position checker: across ~20 random disconnects and a
//! kill -9 of the daemon while it projects, a two-channel client gets every message once,
//! in channel order (by position and by event id).

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use futures::SinkExt;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use crate::push_resume::connect;
use crate::push_util::{
    channel_ids, publish, push_config, start, ws_next, ws_subscribe, xadd_booking,
};
use crate::util::{RedisServer, wait_until};

const WAIT: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t83_push_websocket_subscribes_two_channels_and_resumes_with_since() {
    let redis = RedisServer::start();
    let env = "t83";
    let w = start(push_config(&redis, env, ""));
    let addr = w.config.api_addr();
    let (_warm, _) = {
        let mut tries = 0;
        loop {
            let (ws, first) = ws_subscribe(&addr, &["user:1"], None).await;
            if first["type"] == "resume" || tries > 100 {
                break (ws, first);
            }
            tries += 1;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    let (mut ws, first) = ws_subscribe(&addr, &["user:1", "user:2"], None).await;
    assert_eq!(first["type"], "resume");
    assert_eq!(first["recovered"], true);
    publish(&redis, env, "1", "a1", 0);
    publish(&redis, env, "2", "b1", 0);
    let mut last = String::new();
    let mut got = Vec::new();
    for _ in 0..2 {
        let m = ws_next(&mut ws).await;
        assert_eq!(m["type"], "message");
        got.push(m["event"]["id"].as_str().unwrap().to_string());
        last = m["id"].as_str().unwrap().to_string();
    }
    // Order is per channel: the projector appends a batch's channels concurrently, so live
    // messages of two channels may arrive in either order.
    got.sort();
    assert_eq!(got, ["a1", "b1"]);
    ws.send(Message::text(r#"{"type":"ping"}"#)).await.unwrap();
    assert_eq!(ws_next(&mut ws).await, json!({"type": "pong"}));
    drop(ws);
    for i in 2..=4 {
        publish(&redis, env, "1", &format!("a{i}"), 0);
    }
    publish(&redis, env, "2", "b2", 0);
    let key = format!("events:{env}:push:{{user:2}}");
    wait_until("b2 projected", WAIT, || redis.xlen(&key) == 2);
    let (mut ws, first) = ws_subscribe(&addr, &["user:1", "user:2"], Some(&last)).await;
    assert_eq!(
        first["channels"],
        json!({"user:1": {"recovered": true, "missed": 3}, "user:2": {"recovered": true, "missed": 1}})
    );
    let mut got = Vec::new();
    for _ in 0..4 {
        got.push(
            ws_next(&mut ws).await["event"]["id"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    assert_eq!(got, ["a2", "a3", "a4", "b2"], "each channel in order");
    publish(&redis, env, "2", "b3", 0);
    assert_eq!(ws_next(&mut ws).await["event"]["id"], "b3", "then live");
    let (mut bad, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/api/events/ws"))
        .await
        .unwrap();
    bad.send(Message::text(r#"{"type":"subscribe","channels":["a b"]}"#))
        .await
        .unwrap();
    let e = ws_next(&mut bad).await;
    assert_eq!(e["type"], "error");
    assert!(
        e["error"]
            .as_str()
            .unwrap()
            .contains("channel `a b` is not a valid name"),
        "{e}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t84_push_checker_no_gap_no_duplicate_across_disconnects_and_a_kill9() {
    let redis = RedisServer::start();
    let env = "t84";
    let mut w = start(push_config(&redis, env, ""));
    let addr = w.config.api_addr();
    let n = 300;
    let url = redis.url();
    let publisher = {
        let env = env.to_string();
        let port: u16 = url
            .rsplit(':')
            .next()
            .unwrap()
            .trim_end_matches('/')
            .parse()
            .unwrap();
        std::thread::spawn(move || {
            let mut conn = crate::util::resp::Conn::connect(port).unwrap();
            for i in 0..n {
                let user = if i % 3 == 0 { "2" } else { "1" };
                xadd_booking(&mut conn, &env, user, &format!("e{i:04}"));
                std::thread::sleep(Duration::from_millis(15));
            }
        })
    };
    let channels = ["user:1", "user:2"];
    let mut last: Option<String> = None;
    let mut got: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    let started = Instant::now();
    for cycle in 0..20 {
        if cycle == 8 {
            w.kill9();
            w.restart();
        }
        let mut sse = connect(&addr, &channels, last.as_deref()).await;
        let first = sse.next(WAIT).await.expect("resume");
        assert_eq!(
            first.json()["recovered"],
            true,
            "cycle {cycle}: {}",
            first.data
        );
        last = Some(first.id.clone());
        let read_for = Duration::from_millis(50 + rand::random::<u64>() % 250);
        let until = tokio::time::Instant::now() + read_for;
        while let Ok(Some(e)) = tokio::time::timeout_at(until, sse.next(WAIT)).await {
            let m = e.json();
            let c = m["channel"].as_str().unwrap().to_string();
            let p = m["position"].as_str().unwrap().to_string();
            got.entry(c).or_default().push((p, e.event_id()));
            last = Some(e.id.clone());
        }
    }
    publisher.join().unwrap();
    let keys = channels.map(|c| format!("events:{env}:push:{{{c}}}"));
    wait_until("all projected", Duration::from_secs(20), || {
        keys.iter().map(|k| redis.xlen(k)).sum::<i64>() == n as i64
    });
    let total =
        |g: &BTreeMap<String, Vec<(String, String)>>| g.values().map(Vec::len).sum::<usize>();
    let mut sse = connect(&addr, &channels, last.as_deref()).await;
    let first = sse.next(WAIT).await.unwrap();
    assert_eq!(first.json()["recovered"], true);
    while total(&got) < n {
        let e = sse.next(WAIT).await.expect("the rest");
        let m = e.json();
        let c = m["channel"].as_str().unwrap().to_string();
        got.entry(c)
            .or_default()
            .push((m["position"].as_str().unwrap().to_string(), e.event_id()));
    }
    let mut ids = HashSet::new();
    for (c, key) in channels.iter().zip(&keys) {
        let expected: Vec<String> = redis
            .xrange(key)
            .iter()
            .map(|e| e.get("id").unwrap().to_string())
            .collect();
        let seen: Vec<String> = got[*c].iter().map(|(_, id)| id.clone()).collect();
        assert_eq!(seen, expected, "{c}: every message once, in channel order");
        let positions: HashSet<&String> = got[*c].iter().map(|(p, _)| p).collect();
        assert_eq!(positions.len(), expected.len(), "{c}: no position twice");
        ids.extend(seen);
    }
    assert_eq!(ids.len(), n, "every event id once over both channels");
    eprintln!("checker done in {:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t85_push_hub_catches_up_after_its_pubsub_connection_is_killed() {
    let redis = RedisServer::start();
    let env = "t85";
    let w = start(push_config(&redis, env, ""));
    let addr = w.config.api_addr();
    let mut sse = connect(&addr, &["user:1"], None).await;
    sse.next(WAIT).await.expect("resume");
    let n = 200;
    let port: u16 = redis.url().rsplit(':').next().unwrap().parse().unwrap();
    let env_name = env.to_string();
    let publisher = std::thread::spawn(move || {
        let mut conn = crate::util::resp::Conn::connect(port).unwrap();
        for i in 0..n {
            xadd_booking(&mut conn, &env_name, "1", &format!("e{i:04}"));
            std::thread::sleep(Duration::from_millis(5));
            if i % 50 == 25 {
                // The hub's pub/sub connection dies; messages published meanwhile are lost
                // to pub/sub and must come from the history.
                conn.cmd(&["CLIENT", "KILL", "TYPE", "pubsub"]).unwrap();
            }
        }
    });
    let got = sse.messages(n, WAIT).await;
    publisher.join().unwrap();
    let expected = channel_ids(&redis, env, "user:1");
    let seen: Vec<String> = got.iter().map(|e| e.event_id()).collect();
    assert_eq!(
        seen, expected,
        "one connection, 4 pub/sub drops: no gap, no duplicate"
    );
    let more = sse.next(Duration::from_millis(500)).await;
    assert!(more.is_none(), "nothing more: {more:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t86_push_listener_serves_only_push_and_the_token_guards_it() {
    let redis = RedisServer::start();
    let env = "t86";
    let push_port = crate::util::free_port();
    let token = "push-test-token-0123456789";
    let cfg =
        push_config(&redis, env, &format!("listen = \"127.0.0.1:{push_port}\"")).api_token(token);
    let w = start(cfg);
    assert!(
        !w.output().contains("push is open"),
        "with the operator token configured push is not open"
    );
    let push_addr = format!("127.0.0.1:{push_port}");
    let client = reqwest::Client::new();
    for path in ["/metrics", "/api/events/dlq", "/api/events/health"] {
        let r = client
            .get(format!("http://{push_addr}{path}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404, "{path} is not served on push.listen");
    }
    let url = format!("http://{push_addr}/api/events/stream?channel=user:1");
    let r = client.get(&url).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        json!({"error": "missing or wrong bearer token"})
    );
    let r = client
        .get(format!(
            "http://{push_addr}/api/events/stream?channel=a%20b"
        ))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let body: Value = r.json().await.unwrap();
    assert_eq!(
        body["error"],
        "channel `a b` is not a valid name (1-200 characters, no spaces, braces or *)"
    );
    let mut resp = None;
    for _ in 0..100 {
        let r = client.get(&url).bearer_auth(token).send().await.unwrap();
        if r.status() == 200 {
            resp = Some(r);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut resp = resp.expect("SSE on push.listen with the token");
    let first = tokio::time::timeout(WAIT, resp.chunk())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(String::from_utf8_lossy(&first).contains("event: resume"));
    let health = client
        .get(format!("http://{}/api/events/health", w.config.api_addr()))
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap();
    assert_eq!(
        health["push"],
        json!({"hub_connected": true, "projector": "active", "listen": push_addr, "clients": 1, "channels": 1})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t87_push_a_resume_costs_one_redis_command_whatever_the_channels() {
    let redis = RedisServer::start();
    let env = "t87";
    let w = start(push_config(&redis, env, ""));
    let addr = w.config.api_addr();
    let users: Vec<String> = (0..8).map(|i| i.to_string()).collect();
    let channels: Vec<String> = users.iter().map(|u| format!("user:{u}")).collect();
    let refs: Vec<&str> = channels.iter().map(String::as_str).collect();
    let mut sse = connect(&addr, &refs, None).await;
    let id = sse.next(WAIT).await.unwrap().id;
    drop(sse);
    for u in &users {
        for i in 0..2 {
            publish(&redis, env, u, &format!("{u}-{i}"), 0);
        }
    }
    wait_until("projected", WAIT, || {
        users
            .iter()
            .all(|u| redis.xlen(&format!("events:{env}:push:{{user:{u}}}")) == 2)
    });
    let list = redis.cmd(&["CLIENT", "LIST"]);
    let list = list.as_str().unwrap_or_default().to_string();
    let push_client = list
        .lines()
        .find(|l| l.contains("name=event-worker:w1:push:cmd"))
        .and_then(|l| l.split_whitespace().find_map(|f| f.strip_prefix("addr=")))
        .expect("the push connection")
        .to_string();
    let monitor = crate::util::Monitor::start(&redis);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut sse = connect(&addr, &refs, Some(&id)).await;
    let first = sse.next(WAIT).await.unwrap();
    assert_eq!(first.json()["missed"], 16, "{}", first.data);
    sse.messages(16, WAIT).await;
    // The monitor's reader may lag on a busy machine: wait until it has the resume's command,
    // then a moment for anything the resume sent after it.
    assert!(
        monitor.wait_seen(&format!("{push_client}]"), WAIT),
        "no command of the push connection recorded"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let lines = monitor.stop();
    let by_push: Vec<String> = lines
        .iter()
        .filter(|l| l.client == push_client)
        .map(|l| l.args.first().cloned().unwrap_or_default())
        .collect();
    assert_eq!(by_push, ["EVALSHA"], "one script call resumes 8 channels");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t88_push_two_instances_each_serve_every_message_and_a_client_moves_between_them() {
    let redis = RedisServer::start();
    let env = "t88";
    let cfg1 = push_config(&redis, env, "");
    let mut cfg2 = push_config(&redis, env, "");
    cfg2.consumer = Some("w2".into());
    let w1 = start(cfg1);
    let w2 = crate::util::WorkerProcess::start("w2", cfg2);
    let mut w2 = w2;
    w2.wait_ready(WAIT);
    let (a1, a2) = (w1.config.api_addr(), w2.config.api_addr());
    let mut on1 = connect(&a1, &["user:1"], None).await;
    let mut on2 = connect(&a2, &["user:1"], None).await;
    on1.next(WAIT).await.unwrap();
    on2.next(WAIT).await.unwrap();
    for i in 0..20 {
        publish(&redis, env, "1", &format!("e{i:02}"), 0);
    }
    let key = format!("events:{env}:push:{{user:1}}");
    let got1 = on1.messages(20, WAIT).await;
    let got2 = on2.messages(20, WAIT).await;
    let expected: Vec<String> = redis
        .xrange(&key)
        .iter()
        .map(|e| e.get("id").unwrap().to_string())
        .collect();
    assert_eq!(
        expected.len(),
        20,
        "two projectors in one group: each event appended once"
    );
    let ids = |g: &[crate::push_util::Ev]| g.iter().map(|e| e.event_id()).collect::<Vec<_>>();
    assert_eq!(ids(&got1), expected, "instance 1 serves every message");
    assert_eq!(ids(&got2), expected, "instance 2 serves every message");
    // The client on instance 1 moves to instance 2 with its id.
    let last = got1[9].id.clone();
    drop(on1);
    let mut moved = connect(&a2, &["user:1"], Some(&last)).await;
    let first = moved.next(WAIT).await.unwrap();
    assert_eq!(
        first.json()["channels"]["user:1"],
        json!({"recovered": true, "missed": 10})
    );
    assert_eq!(
        ids(&moved.messages(10, WAIT).await),
        expected[10..].to_vec()
    );
}
