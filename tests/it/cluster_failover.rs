//! Redis Cluster failover (README "Redis Cluster"; reliability matrix T34): connections named
//! on every master, a master killed with -9 and its replica promoted while the worker runs
//! (recovery without a restart, health and metrics saying what happened), and in the long
//! tier the same under load with the losses of the replication window counted.

use crate::cluster::{publish_on, spread_types};
use crate::util::cluster::Cluster;
use crate::util::faults::client_names;
use crate::util::*;
use std::time::{Duration, Instant};

/// The worker's health as JSON.
fn health(w: &WorkerProcess) -> serde_json::Value {
    let (code, body) = w.get("/api/events/health").expect("health answers");
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).expect("health is JSON")
}

/// The worker's metrics.
fn metrics(w: &WorkerProcess) -> Vec<Sample> {
    let (_, body) = w.get("/metrics").expect("metrics answer");
    parse_metrics(&body)
}

/// Index in `c.nodes` of the node on `port`.
fn index_of(c: &Cluster, port: u16) -> usize {
    c.nodes
        .iter()
        .position(|n| n.port == port)
        .expect("a node of this cluster")
}

/// How many slots the master on `port` serves.
fn slots_of(c: &Cluster, port: u16) -> u32 {
    c.slot_map()
        .iter()
        .filter(|(_, _, p)| *p == port)
        .map(|(a, b, _)| b - a + 1)
        .sum()
}

/// Both connections of consumer `name` (`event-worker:<name>:cmd` and `:reader`) are named
/// on the node.
fn named_on(node: &RedisServer, name: &str) -> bool {
    let names = client_names(node);
    ["cmd", "reader"]
        .iter()
        .all(|role| names.contains(&format!("event-worker:{name}:{role}")))
}

/// `CLIENT LIST` on every master shows the worker's two connections by name. Before, the name
/// was sent as one command that fred routed to a single master: the others listed the
/// worker's connections without a name.
#[test]
fn cluster_connections_are_named_on_every_master() {
    let c = Cluster::start(3);
    let env = "nm";
    let mut cfg = WorkerConfig::new(env, &c.url()).route(Route::blackhole(&["x.y"]));
    cfg.consumer = Some("named-w1".into());
    let mut w = WorkerProcess::start("w1", cfg);
    w.wait_ready(Duration::from_secs(20));
    for port in c.master_ports() {
        let node = &c.nodes[index_of(&c, port)];
        assert!(
            named_on(node, "named-w1"),
            "master 127.0.0.1:{port}: client names {:?}",
            client_names(node)
        );
    }
}

/// T34 (recovery, no load): 3 masters + 3 replicas; the master holding a type stream is
/// killed with -9 and its replica promoted. Without a restart the worker consumes a new event
/// of that type from the promoted master; health counts the change and words it, lists the
/// dead node as failed (reason `redis_cluster_node_failed`); the log has one warning line;
/// the promoted master shows the worker's named connections; the metrics count the dead
/// node's connection errors. Before, health showed only state/masters/replicas/slots (all
/// back to normal after the promotion: nothing said a failover happened).
#[test]
fn t34_cluster_failover_recovers_and_health_says_so() {
    let mut c = Cluster::start_full(3, true, Aof::None);
    let env = "fo";
    let types = spread_types(&c, env, 3);
    let key = stream_key(env, &types[0]);
    let sink = HttpSink::start();
    let mut cfg = WorkerConfig::new(env, &c.url()).route(Route::http(&["*"], &sink.url()));
    cfg.consumer = Some("fo-w1".into());
    let mut w = WorkerProcess::start("w1", cfg);
    w.wait_ready(Duration::from_secs(20));
    publish_on(&c, env, &types[0], "before");
    wait_until("the first event delivered", Duration::from_secs(10), || {
        sink.success_counts().contains_key("before")
    });
    let h = health(&w);
    assert_eq!(h["redis"]["cluster"]["topology_changes"], 0, "{h}");
    assert_eq!(
        h["redis"]["cluster"]["failed_nodes"],
        serde_json::json!([]),
        "{h}"
    );
    let old = c.port_of(&key);
    let slots = slots_of(&c, old);
    let killed_at = Instant::now();
    c.kill9(index_of(&c, old));
    wait_until("a replica promoted", Duration::from_secs(20), || {
        c.slot_map().iter().all(|(_, _, p)| *p != old) && slots_of(&c, c.port_of(&key)) > 0
    });
    let new = c.port_of(&key);
    let promoted_after = killed_at.elapsed();
    publish_on(&c, env, &types[0], "after");
    publish_on(&c, env, &types[1], "other");
    let ok = try_wait_until(Duration::from_secs(30), || {
        let s = sink.success_counts();
        s.contains_key("after") && s.contains_key("other")
    });
    assert!(
        ok,
        "not consumed after the failover: {:?}\n{}",
        sink.success_counts(),
        w.output()
    );
    let recovered_after = killed_at.elapsed();
    let what = format!("master 127.0.0.1:{old} replaced by 127.0.0.1:{new} ({slots} slots)");
    let mut h = serde_json::Value::Null;
    let said = try_wait_until(Duration::from_secs(10), || {
        h = health(&w);
        h["redis"]["cluster"]["topology_changes"] == 1
            && h["redis"]["cluster"]["failed_nodes"]
                .as_array()
                .map(Vec::len)
                == Some(1)
    });
    assert!(said, "health does not say it: {h}\n{}", w.output());
    let cl = &h["redis"]["cluster"];
    assert_eq!(cl["last_topology_change"]["what"], what.as_str(), "{h}");
    assert!(
        cl["last_topology_change"]["at"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z')),
        "{h}"
    );
    assert_eq!(
        cl["failed_nodes"],
        serde_json::json!([{"node": format!("127.0.0.1:{old}"), "role": "master", "state": "fail"}]),
        "{h}"
    );
    assert_eq!(
        (cl["state"].as_str(), cl["masters"].as_u64()),
        (Some("ok"), Some(3)),
        "{h}"
    );
    let message = format!(
        "Redis Cluster node(s) marked failed: 127.0.0.1:{old} (master, fail); a failed \
         master's replica takes over its slots, and until the node is back its slots have no \
         replica: restart it (it rejoins as a replica) or remove it (CLUSTER FORGET on every \
         node)"
    );
    assert_eq!(h["status"], "degraded", "{h}");
    assert_eq!(
        h["reasons"],
        serde_json::json!([{"code": "redis_cluster_node_failed", "message": message}]),
        "{h}"
    );
    let log = w.output();
    let line = format!("Redis Cluster topology changed: {what} (change 1 since start;");
    assert_eq!(log.matches(&line).count(), 1, "{log}");
    let new_node = &c.nodes[index_of(&c, new)];
    assert!(
        named_on(new_node, "fo-w1"),
        "promoted master: client names {:?}",
        client_names(new_node)
    );
    let m = metrics(&w);
    let node = format!("127.0.0.1:{old}");
    let errors = sum(
        &m,
        "event_worker_redis_node_errors_total",
        &[("env", env), ("node", &node), ("kind", "connection")],
    );
    assert!(errors >= 1.0, "no connection errors counted for {node}");
    assert_eq!(
        sum(&m, "event_worker_redis_cluster_masters", &[("env", env)]),
        3.0
    );
    assert_eq!(
        sum(
            &m,
            "event_worker_redis_cluster_topology_changes_total",
            &[("env", env)]
        ),
        1.0
    );
    eprintln!(
        "T34 recovery: promoted after {promoted_after:?}, consumed again after {recovered_after:?}, \
         {errors} connection errors on {node}"
    );
}
