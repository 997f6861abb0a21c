//! Redis Cluster (README "Redis Cluster"): the retry forwarder across slots (one pipeline of
//! XADDs per batch), and the outbox drain on a cluster.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::util::cluster::Cluster;
use crate::util::*;

/// Adds `n` retry members `["id","m0000","type",ty,"data",...]` due long ago to the retry
/// set of `group` (one ZADD on its master).
fn add_due_members(c: &Cluster, env: &str, group: &str, ty: &str, n: usize) -> Vec<String> {
    let retry = retry_key(env, group);
    let ids: Vec<String> = (0..n).map(|i| format!("m{i:04}")).collect();
    let members: Vec<String> = ids
        .iter()
        .map(|id| {
            let data = format!(r#"{{"n":"{id}"}}"#);
            serde_json::json!(["id", id, "type", ty, "data", data]).to_string()
        })
        .collect();
    let mut args = vec!["ZADD".to_string(), retry];
    for m in &members {
        args.push("1000".into());
        args.push(m.clone());
    }
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    c.cmd(&refs);
    ids
}

/// Starts a worker on `c` with `route`, adds `n` due retry members, and returns the worker
/// and how long the retry set took to empty (polled every 2 ms).
fn forward(
    c: &Cluster,
    env: &str,
    route: Route,
    n: usize,
) -> (WorkerProcess, Duration, Vec<String>) {
    let group = "group";
    let (retry, redeliver) = (retry_key(env, group), redeliver_key(env, group));
    assert_ne!(c.keyslot(&retry), c.keyslot(&redeliver), "the split path");
    let cfg = WorkerConfig::new(env, &c.url()).route(route);
    let mut w = WorkerProcess::start("w1", cfg);
    w.wait_ready(Duration::from_secs(20));
    let start = Instant::now();
    let ids = add_due_members(c, env, group, "f.ev", n);
    let deadline = start + Duration::from_secs(30);
    while c.zcard(&retry) > 0 {
        assert!(
            Instant::now() < deadline,
            "retry set not emptied\n{}",
            w.output()
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    (w, start.elapsed(), ids)
}

/// 200 due retry members on a 3-master cluster (retry set and redeliver stream in different
/// slots): the forwarder claims them, adds them to the redeliver stream in one pipeline per
/// batch and removes them: each is delivered exactly once, the set is empty, no claim is
/// left and `retries_forwarded_total` counts 200.
#[test]
fn cluster_forwarder_forwards_200_due_members_each_once() {
    let c = Cluster::start(3);
    let env = "cfwd";
    let sink = HttpSink::start();
    let (w, took, ids) = forward(&c, env, Route::http(&["*"], &sink.url()), 200);
    eprintln!("forwarded 200 members in {took:?}");
    wait_until("200 delivered", Duration::from_secs(20), || {
        sink.success_counts().len() == 200
    });
    std::thread::sleep(Duration::from_millis(300));
    let counts: BTreeMap<String, usize> = sink.success_counts().into_iter().collect();
    let want: BTreeMap<String, usize> = ids.into_iter().map(|id| (id, 1)).collect();
    assert_eq!(counts, want, "{}", w.output());
    let claims: Vec<String> = c
        .scan_keys(&format!("events:{env}:*"))
        .into_iter()
        .filter(|k| k.contains(":forwarding:"))
        .collect();
    assert!(claims.is_empty(), "claims left: {claims:?}");
    let m = parse_metrics(&w.metrics());
    let forwarded: f64 = samples(&m, "event_worker_retries_forwarded_total", &[("env", env)])
        .iter()
        .map(|s| s.value)
        .sum();
    assert_eq!(forwarded, 200.0);
    w.sigterm();
}

/// The largest query buffer (`qbuf`, bytes received and not yet run) of a client of `node`.
fn max_qbuf(node: &RedisServer) -> i64 {
    let list = node.cmd(&["CLIENT", "LIST"]).as_str().unwrap_or_default();
    list.split_whitespace()
        .filter_map(|f| f.strip_prefix("qbuf="))
        .filter_map(|v| v.parse().ok())
        .max()
        .unwrap_or(0)
}

/// The forwarder's XADDs of a batch are one pipeline: while the redeliver stream's master
/// holds writes (`CLIENT PAUSE ... WRITE`), the forwarder has sent all 200 XADDs of its
/// batch without waiting for a reply (they wait in its query buffer: over 10,000 bytes), where
/// one round trip per XADD sent one (about 100 bytes). Once writes resume, the retry set
/// empties (each member reaching the stream once: the 200-member test above).
#[test]
fn cluster_forwarder_sends_a_batch_of_xadds_without_waiting_for_replies() {
    let c = Cluster::start(3);
    let group = "group";
    let env = (0..100)
        .map(|i| format!("cfp{i}"))
        .find(|e| c.port_of(&retry_key(e, group)) != c.port_of(&redeliver_key(e, group)))
        .expect("an env whose retry set and redeliver stream are on two masters");
    let (retry, redeliver) = (retry_key(&env, group), redeliver_key(&env, group));
    let cfg = WorkerConfig::new(&env, &c.url()).route(Route::blackhole(&["*"]));
    let mut w = WorkerProcess::start("w1", cfg);
    w.wait_ready(Duration::from_secs(20));
    let node = c.node_of(&redeliver);
    node.cmd(&["CLIENT", "PAUSE", "3000", "WRITE"]);
    add_due_members(&c, &env, group, "f.ev", 200);
    let mut held = 0;
    for _ in 0..100 {
        held = max_qbuf(node);
        if held > 10_000 {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    node.cmd(&["CLIENT", "UNPAUSE"]);
    assert!(held > 10_000, "the largest query buffer held {held} bytes");
    wait_until("the retry set emptied", Duration::from_secs(20), || {
        c.zcard(&retry) == 0
    });
    w.kill9();
}

/// Measurement (long tier): how long the forwarder takes to empty a retry set of 2,000 due
/// members on a cluster (printed; README "Redis Cluster" gives the figures).
#[test]
#[ignore]
fn cluster_forwarder_2000_members_timing() {
    let c = Cluster::start(3);
    let env = "cfwd2k";
    let (w, took, _) = forward(&c, env, Route::blackhole(&["*"]), 2000);
    println!("forwarded 2000 members in {took:?}");
    assert_eq!(c.zcard(&retry_key(env, "group")), 0);
    w.sigterm();
}

const TOKEN: &str = "cluster-outbox-token-0123456789";

/// Two types of `env`: the first on a master that does not hold the history stream, the
/// second on another master than the first.
fn outbox_types(c: &Cluster, env: &str) -> (String, String) {
    let history = c.port_of(&format!("events:{env}:history"));
    let mut first: Option<(String, u16)> = None;
    for i in 0..200 {
        let ty = format!("ob{i}.ev");
        let port = c.port_of(&stream_key(env, &ty));
        match &first {
            None if port != history => first = Some((ty, port)),
            Some((a, p)) if port != *p => return (a.clone(), ty),
            _ => {}
        }
    }
    panic!("no two types on different masters");
}

/// POSTs one event to the single publish; (status, JSON).
fn post(api: &crate::util::api::Api, ty: &str, id: &str) -> (u16, serde_json::Value) {
    let r = api.post(
        "/api/events/publish",
        &serde_json::json!({"type": ty, "data": {"n": id}, "id": id}),
    );
    (r.status, r.json())
}

/// The `id` fields of a stream's entries, in stream order.
fn ids_of(c: &Cluster, key: &str) -> Vec<String> {
    c.xrange(key)
        .iter()
        .map(|e| e.get("id").unwrap_or_default().to_string())
        .collect()
}

/// The outbox on a cluster: the master of type A's stream is frozen (SIGSTOP, shorter than
/// the cluster's node timeout); publishes of A wait `fallback_after` (300 ms), then are
/// queued (202 `"queued": "outbox"`, the next ones behind the first) while type B, on
/// another master, is published directly. Once the master thaws, the drain puts each queued
/// event into A's stream exactly once, in publish order, and each is handled once. Before
/// the scripts were preloaded on every master, `b-1` fell back too (reason `timeout`): the
/// first use of a script during the freeze made fred load it on every master after draining
/// every connection, which waited for the frozen one.
#[test]
fn cluster_outbox_queues_while_a_master_is_frozen_and_drains_each_once_in_order() {
    let c = Cluster::start(3);
    let env = "cob";
    let (a, b) = outbox_types(&c, env);
    let keep = tempfile::Builder::new()
        .prefix("outbox-")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .unwrap();
    let dir = keep.path().join("ob");
    let sink = HttpSink::start();
    let mut cfg = WorkerConfig::new(env, &c.url())
        .route(Route::http(&["*"], &sink.url()))
        .api_token(TOKEN);
    cfg.extra = format!(
        "[outbox]\nenabled = true\ndir = {:?}\nfallback_after = \"300ms\"\n",
        dir.display().to_string()
    );
    let mut w = WorkerProcess::start("w1", cfg.clone());
    w.wait_ready(Duration::from_secs(20));
    let api = crate::util::api::Api::new(&cfg.api_addr(), Some(TOKEN));
    let (status, body) = post(&api, &a, "a-0");
    assert_eq!(
        (status, body["queued"].clone()),
        (202, serde_json::Value::Null),
        "{body}"
    );
    let frozen = c.node_of(&stream_key(env, &a)).pid();
    send_signal(frozen, "STOP");
    let queued: Vec<_> = (1..=3).map(|i| post(&api, &a, &format!("a-{i}"))).collect();
    let direct = post(&api, &b, "b-1");

    send_signal(frozen, "CONT");

    for (i, (status, body)) in queued.iter().enumerate() {
        assert_eq!(
            (*status, body["queued"].as_str()),
            (202, Some("outbox")),
            "{body}"
        );
        assert_eq!(body["id"], format!("a-{}", i + 1));
    }
    assert_eq!(
        (direct.0, direct.1["queued"].clone()),
        (202, serde_json::Value::Null),
        "{}",
        direct.1
    );
    let want = ["a-0", "a-1", "a-2", "a-3"];
    let key = stream_key(env, &a);
    wait_until("the outbox drained", Duration::from_secs(15), || {
        ids_of(&c, &key).len() >= want.len()
    });
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        ids_of(&c, &key),
        want,
        "each once, in publish order\n{}",
        w.output()
    );
    assert_eq!(ids_of(&c, &stream_key(env, &b)), ["b-1"]);
    wait_until("each handled", Duration::from_secs(10), || {
        sink.success_counts().len() == 5
    });
    std::thread::sleep(Duration::from_millis(300));
    let counts: BTreeMap<String, usize> = sink.success_counts().into_iter().collect();
    let mut all: Vec<&str> = want.to_vec();
    all.push("b-1");
    let expect: BTreeMap<String, usize> = all.iter().map(|id| (id.to_string(), 1)).collect();
    assert_eq!(counts, expect);
    let depth = sum(
        &parse_metrics(&w.metrics()),
        "event_worker_outbox_depth",
        &[],
    );
    assert_eq!(depth, 0.0);
    assert!(!w.output().contains("CROSSSLOT"), "{}", w.output());
    w.sigterm();
}

/// Dead-letters 1,000 events of `env` (the sink refuses them with 400) through a worker on
/// `url`, stops it, then times `dlq replay --all` (the CLI process, start to exit).
fn replay_1000(
    url: &str,
    env: &str,
    publish: &dyn Fn(&str),
    dlq_len: &dyn Fn() -> i64,
) -> Duration {
    let sink = HttpSink::start();
    sink.set_default(Action::status(400));
    let cfg = WorkerConfig::new(env, url).route(Route::http(&["*"], &sink.url()));
    let mut w = WorkerProcess::start("w1", cfg.clone());
    w.wait_ready(Duration::from_secs(20));
    for i in 0..1000 {
        publish(&format!("r{i:04}"));
    }
    wait_until("1,000 dead-lettered", Duration::from_secs(120), || {
        dlq_len() == 1000
    });
    w.sigterm();
    w.wait_exit(Duration::from_secs(10));
    let start = Instant::now();
    let out = crate::util::worker::cli(&cfg, &["dlq", "replay", "--all"]);
    let took = start.elapsed();
    assert_eq!(out.code, Some(0), "{}\n{}", out.stdout, out.stderr);
    assert!(
        out.stdout.contains("replayed 1000 of 1000"),
        "{}",
        out.stdout
    );
    assert_eq!(dlq_len(), 0);
    took
}

/// Measurement (long tier): `dlq replay --all` of 1,000 entries on a 3-master cluster (DLQ
/// and redeliver stream in different slots: 4 round trips per entry) and on a single node
/// (one script per entry); printed, README "Redis Cluster" gives the figures.
#[test]
#[ignore]
fn cluster_dlq_replay_1000_entries_timing() {
    let c = Cluster::start(3);
    let ty = "rp.ev";
    let cluster = replay_1000(
        &c.url(),
        "crp",
        &|id| {
            crate::cluster::publish_on(&c, "crp", ty, id);
        },
        &|| c.xlen(&dlq_key("crp")),
    );
    let redis = RedisServer::start();
    let key = stream_key("srp", ty);
    let single = replay_1000(
        &redis.url(),
        "srp",
        &|id| {
            let data = format!(r#"{{"n":"{id}"}}"#);
            redis.xadd(&key, &[("id", id), ("type", ty), ("data", &data)]);
        },
        &|| redis.xlen(&dlq_key("srp")),
    );
    println!("dlq replay of 1000 entries: cluster {cluster:?}, single node {single:?}");
}
