//! Redis Cluster (README "Redis Cluster"; reliability matrix T32): a real local 3-master
//! cluster on loopback (`util/cluster.rs`), the worker on `redis-cluster://`.

use crate::util::cluster::Cluster;
use crate::util::worker::cli;
use crate::util::*;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// Publishes event `id` of type `ty` on the type stream's master.
fn publish_on(c: &Cluster, env: &str, ty: &str, id: &str) -> String {
    let data = format!(r#"{{"n":"{id}"}}"#);
    c.xadd(
        &stream_key(env, ty),
        &[("id", id), ("type", ty), ("data", &data)],
    )
}

/// `n` type names whose streams spread over every master of `c` (asserted).
fn spread_types(c: &Cluster, env: &str, n: usize) -> Vec<String> {
    let types: Vec<String> = (0..n).map(|i| format!("t{i:02}.ev")).collect();
    let on: BTreeSet<u16> = types
        .iter()
        .map(|t| c.port_of(&stream_key(env, t)))
        .collect();
    assert_eq!(
        on.len(),
        c.masters,
        "types {types:?} do not cover every master"
    );
    types
}

/// The harness itself: 3 masters cover 16384 slots, keys land on their own masters.
#[test]
fn cluster_harness_starts_three_masters() {
    let c = Cluster::start(3);
    let map = c.slot_map();
    assert_eq!(map.iter().map(|(a, b, _)| b - a + 1).sum::<u32>(), 16384);
    assert_eq!(c.master_ports().len(), 3);
    let key = stream_key("h", "a.b");
    publish_on(&c, "h", "a.b", "e1");
    assert_eq!(c.xlen(&key), 1);
    assert!(c.url().starts_with("redis-cluster://127.0.0.1:"));
}

/// 20 events over 5 types on 3 masters, one worker: every event delivered once, nothing
/// pending, no error in the log. Before the cluster support, `run` consumed nothing
/// (`XREADGROUP: ... Too many failed write attempts`).
#[test]
fn t32_cluster_worker_consumes_every_master() {
    let c = Cluster::start(3);
    let env = "cl1";
    let types = spread_types(&c, env, 5);
    let sink = HttpSink::start();
    let refs: Vec<&str> = types.iter().map(String::as_str).collect();
    let cfg = WorkerConfig::new(env, &c.url()).route(Route::http(&["*"], &sink.url()));
    let mut w = WorkerProcess::start("w1", cfg);
    w.wait_ready(Duration::from_secs(20));
    let mut ids = BTreeSet::new();
    for i in 0..20 {
        let id = format!("e{i:02}");
        publish_on(&c, env, refs[i % 5], &id);
        ids.insert(id);
    }
    let ok = try_wait_until(Duration::from_secs(20), || {
        sink.success_counts().len() == ids.len()
    });
    assert!(ok, "delivered {:?}\n{}", sink.success_counts(), w.output());
    let counts = sink.success_counts();
    let got: BTreeSet<String> = counts.keys().cloned().collect();
    assert_eq!(got, ids);
    assert!(counts.values().all(|n| *n == 1), "{counts:?}");
    let _ = (BTreeMap::<u8, u8>::new(), cli);
}
