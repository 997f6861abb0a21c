//! The opt-in WAIT for replicas (`[redis] wait_replicas`, `wait_timeout`; README "Redis
//! Cluster", "Replication window"): a publish answers how many replicas have the event
//! (`"replicas"`, `"replicated"`) and counts the unreplicated ones; a move across cluster slots
//! (and a DLQ replay across slots) keeps its source until the destination is replicated.

use crate::cluster::{cli_json, type_off_dlq};
use crate::util::api::Api;
use crate::util::cluster::Cluster;
use crate::util::worker::cli;
use crate::util::*;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

const TOKEN: &str = "replication-wait-token-0123456789";
const WAIT: &str = "[redis]\nwait_replicas = 1\nwait_timeout = \"100ms\"\n";

/// The single-node test's WAIT: 1 s, so that a replica in sync acknowledges in time on a
/// machine loaded by the whole suite (100 ms missed it there twice).
const WAIT_1S: &str = "[redis]\nwait_replicas = 1\nwait_timeout = \"1s\"\n";

/// A replica of the server on `port`, once its master lists it online.
fn replica_of(port: u16) -> RedisServer {
    let args = vec!["--replicaof".into(), "127.0.0.1".into(), port.to_string()];
    RedisServer::start_with_args(Aof::None, None, args)
}

/// Whether the master on `master` lists `n` online replicas.
fn online_replicas(master: &RedisServer, n: usize) -> bool {
    let info = master.try_cmd(&["INFO", "replication"]).ok();
    let info = info.and_then(|v| v.as_str()).unwrap_or_default();
    info.contains(&format!("connected_slaves:{n}")) && info.matches("state=online").count() == n
}

/// POSTs one event; (status, body, how long the answer took).
fn post(api: &Api, ty: &str, id: &str) -> (u16, Value, Duration) {
    let t = Instant::now();
    let r = api.post(
        "/api/events/publish",
        &json!({"type": ty, "data": {"n": id}, "id": id}),
    );
    (r.status, r.json(), t.elapsed())
}

fn unreplicated(s: &Scenario, ty: &str) -> f64 {
    let m = parse_metrics(&s.workers[0].metrics());
    let labels = [("env", s.env.as_str()), ("type", ty)];
    sum(&m, "event_worker_publish_unreplicated_total", &labels)
}

/// Single node: with no replica the WAIT times out (`replicated: false`, counted); with a
/// replica in sync the answer is `replicated: true`; with the replica frozen (SIGSTOP) the
/// answer comes within the timeout plus a margin, `replicated: false`. Batch and CLI say the
/// same; without `[redis]` the answers carry no replication fields.
#[test]
fn wait_publish_single_node_answers_replication() {
    let ty = "wait.single";
    let s = Scenario::new("WAIT1")
        .types(&[ty])
        .token(TOKEN)
        .config(|c| c.extra = WAIT_1S.into())
        .start();
    let api = s.api(Some(TOKEN));
    let (status, body, took) = post(&api, ty, "n-1");
    assert_eq!(status, 202, "{body}");
    assert_eq!(
        (&body["replicas"], &body["replicated"]),
        (&json!(0), &json!(false)),
        "{body}"
    );
    assert_eq!(body["duplicate"], json!(false));
    assert!(
        took >= Duration::from_secs(1),
        "answered before the WAIT timeout: {took:?}"
    );
    assert_eq!(unreplicated(&s, ty), 1.0);
    // The event is on the master all the same.
    assert_eq!(s.redis.xlen(&stream_key(&s.env, ty)), 1);

    // `check` says the asked replicas are missing, and stops saying so once one is there.
    let warning = "warning: redis.wait_replicas = 1, but fewer replicas are connected (this \
                   node has 0): every publish there waits redis.wait_timeout (1s) and \
                   answers \"replicated\": false, and moves across slots are retried until a \
                   replica has them; add replicas or lower redis.wait_replicas";
    let out = cli(&s.cfg, &["check"]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(out.stdout.lines().any(|l| l == warning), "{}", out.stdout);

    let replica = replica_of(s.redis.port);
    wait_until("replica online", Duration::from_secs(10), || {
        online_replicas(&s.redis, 1)
    });
    // Online is listed before the replica acknowledges anything: under a loaded machine the
    // next publish's WAIT could then miss it. Wait until it acknowledges the master's
    // offset (the WAIT covers everything written before the PING on the same connection).
    wait_until("replica acknowledging", Duration::from_secs(10), || {
        s.redis.cmd(&["PING"]);
        format!("{:?}", s.redis.cmd(&["WAIT", "1", "1000"])).contains("Int(1)")
    });
    let out = cli(&s.cfg, &["check"]);
    assert!(
        !out.stdout.contains("redis.wait_replicas"),
        "{}",
        out.stdout
    );
    let (status, body, _) = post(&api, ty, "r-1");
    assert_eq!(status, 202, "{body}");
    assert_eq!(
        (&body["replicas"], &body["replicated"]),
        (&json!(1), &json!(true)),
        "{body}"
    );
    // A duplicate wrote nothing: no WAIT, no replication fields.
    let (_, dup, _) = post(&api, ty, "r-1");
    assert_eq!(dup["duplicate"], json!(true));
    assert!(dup.get("replicated").is_none(), "{dup}");
    let batch = api.post(
        "/api/events/publish/batch",
        &json!({"events": [{"type": ty, "data": {}, "id": "b-1"}, {"type": ty, "data": {}}]}),
    );
    let results = batch.json()["results"].clone();
    for r in results.as_array().unwrap() {
        assert_eq!(
            (&r["status"], &r["replicated"], &r["replicas"]),
            (&json!("published"), &json!(true), &json!(1)),
            "{results}"
        );
    }
    let mut cfg = s.cfg.clone();
    let j = cli_json(&cfg, &["publish", ty, "{}", "--id", "cli-1"]);
    assert_eq!(
        (&j["replicas"], &j["replicated"]),
        (&json!(1), &json!(true)),
        "{j}"
    );

    send_signal(replica.pid(), "STOP");
    let (status, body, took) = post(&api, ty, "p-1");
    send_signal(replica.pid(), "CONT");
    assert_eq!(status, 202, "{body}");
    assert_eq!(
        (&body["replicas"], &body["replicated"]),
        (&json!(0), &json!(false)),
        "{body}"
    );
    assert!(
        (Duration::from_secs(1)..Duration::from_millis(2500)).contains(&took),
        "answered in {took:?}, not within the 1s timeout plus a margin"
    );
    assert_eq!(unreplicated(&s, ty), 2.0);

    cfg.extra.clear();
    let j = cli_json(&cfg, &["publish", ty, "{}"]);
    assert!(
        j.get("replicated").is_none() && j["duplicate"] == json!(false),
        "{j}"
    );
}

/// The replica of the cluster master on `port` (from each node's INFO replication).
fn replica_in(c: &Cluster, port: u16) -> &RedisServer {
    c.nodes[c.masters..]
        .iter()
        .find(|n| {
            let info = n
                .try_cmd(&["INFO", "replication"])
                .ok()
                .and_then(|v| v.as_str());
            info.is_some_and(|i| i.contains(&format!("master_port:{port}")))
        })
        .unwrap_or_else(|| panic!("no replica of 127.0.0.1:{port}"))
}

/// Cluster with replicas: a CLI publish answers `replicated: true`, and `false` (in time)
/// with the stream master's replica frozen. A dead-lettered event while the DLQ master's
/// replica is frozen: the DLQ entry is written, the source stays pending (counted in
/// `event_worker_moves_unreplicated_total`); once the replica is back, the move completes
/// with exactly one DLQ entry.
#[test]
fn wait_cluster_publish_and_dlq_move_keep_the_source_until_replicated() {
    let c = Cluster::start_full(3, true, Aof::None);
    let env = "wcl";
    let ty = type_off_dlq(&c, env);
    let stream = stream_key(env, &ty);
    let sink = HttpSink::start();
    let mut cfg = WorkerConfig::new(env, &c.url()).route(Route::http(&[&ty], &sink.url()));
    cfg.extra = WAIT.into();
    let j = cli_json(&cfg, &["publish", &ty, "{}", "--id", "ok-1"]);
    assert_eq!(
        (&j["replicas"], &j["replicated"]),
        (&json!(1), &json!(true)),
        "{j}"
    );
    let stream_replica = replica_in(&c, c.port_of(&stream)).pid();
    send_signal(stream_replica, "STOP");
    let t = Instant::now();
    let j = cli_json(&cfg, &["publish", &ty, "{}", "--id", "late-1"]);
    let took = t.elapsed();
    send_signal(stream_replica, "CONT");
    assert_eq!(
        (&j["replicas"], &j["replicated"]),
        (&json!(0), &json!(false)),
        "{j}"
    );
    assert!(took < Duration::from_secs(5), "CLI publish took {took:?}");

    sink.script("dead-1", vec![Action::status(400), Action::ok()]);
    let dlq_replica = replica_in(&c, c.port_of(&dlq_key(env))).pid();
    let mut w = WorkerProcess::start("w1", cfg.clone());
    w.wait_ready(Duration::from_secs(20));
    wait_until("ok-1 and late-1 handled", Duration::from_secs(10), || {
        sink.success_counts().len() == 2
    });
    send_signal(dlq_replica, "STOP");
    cli_json(&cfg, &["publish", &ty, "{}", "--id", "dead-1"]);
    let moves = |w: &WorkerProcess| {
        let m = parse_metrics(&w.metrics());
        sum(&m, "event_worker_moves_unreplicated_total", &[("env", env)])
    };
    let held = try_wait_until(Duration::from_secs(10), || moves(&w) >= 2.0);
    let (dlq_len, pending) = (c.xlen(&dlq_key(env)), c.pending(&stream, &cfg.group));
    send_signal(dlq_replica, "CONT");
    assert!(held, "no unreplicated move counted\n{}", w.output());
    assert_eq!(
        (dlq_len, pending),
        (1, 1),
        "destination written, source kept"
    );
    assert!(
        w.output().contains("was written, but 0 of 1 replica(s) acknowledged it within 100ms (redis.wait_replicas, redis.wait_timeout); the source is kept and the move is tried again"),
        "{}",
        w.output()
    );
    wait_until("the move completes", Duration::from_secs(15), || {
        c.pending(&stream, &cfg.group) == 0
    });
    assert_eq!(c.xlen(&dlq_key(env)), 1, "one DLQ entry");
    assert_eq!(sink.requests_for("dead-1").len(), 1, "handled once");

    // A replay while the redeliver stream's replica is frozen: written, not replicated, so
    // the DLQ entry is kept and the replay fails; the one written is delivered (a duplicate
    // at worst), and a second replay completes.
    let rd_replica = replica_in(&c, c.port_of(&redeliver_key(env, &cfg.group))).pid();
    send_signal(rd_replica, "STOP");
    let out = cli(&cfg, &["dlq", "replay", "--all"]);
    send_signal(rd_replica, "CONT");
    assert_ne!(out.code, Some(0), "{}\n{}", out.stdout, out.stderr);
    assert!(
        out.stderr.contains("was written, but 0 of 1 replica(s) acknowledged it within 100ms (redis.wait_replicas, redis.wait_timeout); the DLQ entry is kept; replay it again (a duplicate at worst)"),
        "{}\n{}",
        out.stdout,
        out.stderr
    );
    assert_eq!(c.xlen(&dlq_key(env)), 1, "the DLQ entry is kept");
    let out = cli(&cfg, &["dlq", "replay", "--all"]);
    assert_eq!(out.code, Some(0), "{}\n{}", out.stdout, out.stderr);
    assert_eq!(c.xlen(&dlq_key(env)), 0);
    wait_until(
        "dead-1 delivered after both replays",
        Duration::from_secs(10),
        || sink.success_counts().get("dead-1") == Some(&2),
    );

    // A retry while the retry set's replica is frozen: kept pending until replicated, then
    // retried, forwarded (waited too) and delivered once.
    sink.script("retry-1", vec![Action::status(500), Action::ok()]);
    let retry_replica = replica_in(&c, c.port_of(&retry_key(env, &cfg.group))).pid();
    let counted = moves(&w);
    send_signal(retry_replica, "STOP");
    cli_json(&cfg, &["publish", &ty, "{}", "--id", "retry-1"]);
    let held = try_wait_until(Duration::from_secs(10), || moves(&w) >= counted + 2.0);
    let pending = c.pending(&stream, &cfg.group);
    send_signal(retry_replica, "CONT");
    assert!(
        held && pending == 1,
        "retry move not held ({pending} pending)\n{}",
        w.output()
    );
    wait_until("retry-1 delivered", Duration::from_secs(15), || {
        sink.success_counts().get("retry-1") == Some(&1)
    });
    wait_until(
        "nothing pending or waiting",
        Duration::from_secs(10),
        || crate::cluster::cluster_drained(&c, env, &cfg.group, std::slice::from_ref(&stream)),
    );
}

/// The replication window across a real failover, with a replica cut off from its master
/// (frozen with SIGSTOP and its link closed: a replica infinitely behind): publishes made
/// while the replica had them answer `replicated: true`, those made while it was cut off
/// answer `false` (and are counted); the master is killed with -9 and the replica promoted. Exactly the events answered
/// `false` are gone from the promoted master; every event answered `true` is there. The worker
/// publishes to the promoted master afterwards without a restart.
#[test]
fn wait_failover_with_a_lagging_replica_loses_only_publishes_answered_unreplicated() {
    let mut c = Cluster::start_full(3, true, Aof::None);
    let env = "wfo";
    let ty = "lag.ev";
    let key = stream_key(env, ty);
    let mut cfg = WorkerConfig::new(env, &c.url())
        .route(Route::blackhole(&["other.ev"]))
        .api_token(TOKEN);
    cfg.extra = WAIT.into();
    let mut w = WorkerProcess::start("w1", cfg);
    w.wait_ready(Duration::from_secs(20));
    let api = Api::new(&w.config.api_addr(), Some(TOKEN));
    let publish = |id: &str| {
        let (status, body, _) = post(&api, ty, id);
        assert_eq!(status, 202, "{id}: {body}");
        body["replicated"]
            .as_bool()
            .expect("replicated in the answer")
    };
    let replicated: Vec<String> = (0..5).map(|i| format!("kept-{i}")).collect();
    for id in &replicated {
        assert!(publish(id), "{id}: the replica is in sync");
    }
    let master = c.port_of(&key);
    let replica = replica_in(&c, master).pid();
    // Cut off: frozen, and its link closed on the master's side (a frozen replica alone still
    // gets the writes into its socket buffer, and has them once resumed).
    send_signal(replica, "STOP");
    c.nodes
        .iter()
        .find(|n| n.port == master)
        .unwrap()
        .cmd(&["CLIENT", "KILL", "TYPE", "replica"]);
    let lagging: Vec<String> = (0..5).map(|i| format!("lagging-{i}")).collect();
    let answers: Vec<bool> = lagging.iter().map(|id| publish(id)).collect();
    assert_eq!(
        answers, [false; 5],
        "the replica lags: answered unreplicated"
    );
    assert_eq!(unreplicated_in(&w, env), 5.0);
    let index = c.nodes.iter().position(|n| n.port == master).unwrap();
    c.kill9(index);
    send_signal(replica, "CONT");
    wait_until(
        "the lagging replica promoted",
        Duration::from_secs(30),
        || c.slot_map().iter().all(|(_, _, p)| *p != master),
    );
    let survivors: Vec<String> = c
        .xrange(&key)
        .iter()
        .filter_map(|e| e.get("id").map(str::to_string))
        .collect();
    assert_eq!(
        survivors, replicated,
        "every event answered replicated: true survives, none answered false does"
    );
    let after = try_wait_until(Duration::from_secs(15), || {
        post(&api, ty, "after-failover").0 == 202
    });
    assert!(after, "no publish after the failover\n{}", w.output());
    assert!(
        c.xrange(&key)
            .iter()
            .any(|e| e.get("id") == Some("after-failover")),
        "published to the promoted master"
    );
}

/// `event_worker_publish_unreplicated_total{env}` of worker `w`, every type label together (a
/// type without a route counts under `other`).
fn unreplicated_in(w: &WorkerProcess, env: &str) -> f64 {
    let m = parse_metrics(&w.metrics());
    sum(
        &m,
        "event_worker_publish_unreplicated_total",
        &[("env", env)],
    )
}

/// The forwarder's WAIT on a cluster: a due retry forwarded (retry set to redeliver stream,
/// across slots) while the redeliver stream's replica is frozen is written but unreplicated,
/// so its member stays claimed (counted, logged) and is forwarded again once the claim
/// expires: delivered twice in all (the documented duplicate), the retry set and every
/// pending list empty at the end.
#[test]
fn wait_cluster_forward_unreplicated_keeps_the_member_claimed_and_forwards_it_again() {
    let c = Cluster::start_full(3, true, Aof::None);
    let env = "wfw";
    let ty = "fw.ev";
    let stream = stream_key(env, ty);
    let sink = HttpSink::start();
    sink.script(
        "fwd-1",
        vec![Action::status(500), Action::ok(), Action::ok()],
    );
    let mut cfg = WorkerConfig::new(env, &c.url()).route(Route::http(&[ty], &sink.url()));
    cfg.extra = WAIT.into();
    cfg.initial_backoff = "1500ms".into();
    cfg.max_backoff = "2s".into();
    let mut w = WorkerProcess::start("w1", cfg.clone());
    w.wait_ready(Duration::from_secs(20));
    let retry = retry_key(env, &cfg.group);
    let redeliver = redeliver_key(env, &cfg.group);
    crate::cluster::publish_on(&c, env, ty, "fwd-1");
    wait_until("fwd-1 in the retry set", Duration::from_secs(10), || {
        c.zcard(&retry) == 1
    });
    let replica = replica_in(&c, c.port_of(&redeliver)).pid();
    let before = moves_unreplicated(&w, env);
    send_signal(replica, "STOP");
    let held = try_wait_until(Duration::from_secs(10), || {
        moves_unreplicated(&w, env) > before
    });
    let (in_set, delivered) = (c.zcard(&retry), sink.success_counts().get("fwd-1").copied());
    send_signal(replica, "CONT");
    assert!(held, "no unreplicated forward counted\n{}", w.output());
    assert_eq!(in_set, 1, "the member stays in the retry set, claimed");
    let line = format!(
        "the forward of 1 due retries to {redeliver} was written, but 0 of 1 replica(s) \
         acknowledged it within 100ms (redis.wait_replicas, redis.wait_timeout); the due \
         retries stay claimed and are forwarded again after the claim expires (a duplicate at \
         worst)"
    );
    assert!(w.output().contains(&line), "{}", w.output());
    wait_until(
        "forwarded again after the claim",
        Duration::from_secs(20),
        || {
            c.zcard(&retry) == 0
                && sink.success_counts().get("fwd-1") == Some(&2)
                && crate::cluster::cluster_drained(
                    &c,
                    env,
                    &cfg.group,
                    std::slice::from_ref(&stream),
                )
        },
    );
    eprintln!("forward held: delivered {delivered:?} while the member was claimed");
}

/// `event_worker_moves_unreplicated_total{env}` of worker `w`.
fn moves_unreplicated(w: &WorkerProcess, env: &str) -> f64 {
    let m = parse_metrics(&w.metrics());
    sum(&m, "event_worker_moves_unreplicated_total", &[("env", env)])
}

/// `retries dead-letter` on a cluster (retry set to DLQ, across slots) while the DLQ master's
/// replica is frozen: the DLQ entry is written but unreplicated, so the member stays in the
/// retry set and the command fails saying so; once the replica is back, the same command
/// completes the move without a second DLQ entry (its guard), counted once.
#[test]
fn wait_cluster_retries_dead_letter_keeps_the_member_until_the_dlq_is_replicated() {
    let c = Cluster::start_full(3, true, Aof::None);
    let env = "wrd";
    let ty = "rd.ev";
    let sink = HttpSink::start();
    sink.script("rd-1", vec![Action::status(500)]);
    let mut cfg = WorkerConfig::new(env, &c.url()).route(Route::http(&[ty], &sink.url()));
    cfg.extra = WAIT.into();
    cfg.initial_backoff = "60s".into();
    cfg.max_backoff = "60s".into();
    let mut w = WorkerProcess::start("w1", cfg.clone());
    w.wait_ready(Duration::from_secs(20));
    let (retry, dlq) = (retry_key(env, &cfg.group), dlq_key(env));
    crate::cluster::publish_on(&c, env, ty, "rd-1");
    wait_until("rd-1 in the retry set", Duration::from_secs(10), || {
        c.zcard(&retry) == 1
    });
    let page = cli_json(&cfg, &["retries", "list", "--group", &cfg.group]);
    let handle = page["entries"][0]["handle"]
        .as_str()
        .expect("a handle")
        .to_string();
    let dead_letter = || {
        cli(
            &cfg,
            &["retries", "dead-letter", "--group", &cfg.group, &handle],
        )
    };
    let replica = replica_in(&c, c.port_of(&dlq)).pid();
    send_signal(replica, "STOP");
    let out = dead_letter();
    let (dlq_len, in_set) = (c.xlen(&dlq), c.zcard(&retry));
    send_signal(replica, "CONT");
    assert_ne!(out.code, Some(0), "{}\n{}", out.stdout, out.stderr);
    let message = format!(
        "the dead-lettering of a retry of {retry} to {dlq} was written, but 0 of 1 replica(s) \
         acknowledged it within 100ms (redis.wait_replicas, redis.wait_timeout); the source is \
         kept and the move is tried again"
    );
    assert!(
        out.stderr.contains(&message),
        "{}\n{}",
        out.stdout,
        out.stderr
    );
    assert_eq!(
        (dlq_len, in_set),
        (1, 1),
        "the DLQ entry written, the member kept"
    );
    let out = dead_letter();
    assert_eq!(
        (out.code, out.stdout.as_str()),
        (Some(0), "dead-lettered: 1, not found: 0\n"),
        "{}",
        out.stderr
    );
    assert_eq!((c.xlen(&dlq), c.zcard(&retry)), (1, 0), "one DLQ entry");
    let stats = cli_json(&cfg, &["dlq", "stats"]);
    assert_eq!(stats["total"], json!(1), "{stats}");
}
