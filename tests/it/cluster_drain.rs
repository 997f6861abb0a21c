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
