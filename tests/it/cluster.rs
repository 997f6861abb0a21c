//! Redis Cluster (README "Redis Cluster"; reliability matrix T32): a real local 3-master
//! cluster on loopback (`util/cluster.rs`), the worker on `redis-cluster://`.

use crate::util::cluster::Cluster;
use crate::util::worker::cli;
use crate::util::*;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// Publishes event `id` of type `ty` on the type stream's master.
pub(crate) fn publish_on(c: &Cluster, env: &str, ty: &str, id: &str) -> String {
    let data = format!(r#"{{"n":"{id}"}}"#);
    c.xadd(
        &stream_key(env, ty),
        &[("id", id), ("type", ty), ("data", &data)],
    )
}

/// `n` type names (`n` >= masters) whose streams spread over every master of `c`: the
/// first pick lands on each master in turn, the rest in name order (asserted).
pub(crate) fn spread_types(c: &Cluster, env: &str, n: usize) -> Vec<String> {
    let (mut types, mut on) = (Vec::new(), BTreeSet::new());
    for i in 0..1000 {
        let t = format!("t{i:02}.ev");
        let port = c.port_of(&stream_key(env, &t));
        if on.len() < c.masters && on.contains(&port) {
            continue;
        }
        on.insert(port);
        types.push(t);
        if types.len() == n {
            break;
        }
    }
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

/// With replicas: 3 masters and 3 replicas; `check` counts the replicas; a master killed
/// with -9 and started again (its nodes.conf kept) rejoins and the cluster is ok again.
#[test]
fn cluster_harness_replicas_kill_and_restart() {
    let mut c = Cluster::start_full(3, true, crate::util::Aof::None);
    let env = "rep";
    let cfg = WorkerConfig::new(env, &c.url()).route(Route::blackhole(&["x"]));
    let j = cli_json(&cfg, &["check"]);
    assert_eq!(
        (
            j["cluster"]["masters"].clone(),
            j["cluster"]["replicas"].clone()
        ),
        (serde_json::json!(3), serde_json::json!(3)),
        "{j}"
    );
    let last = c.nodes.len() - 1;
    c.kill9(last);
    c.restart(last);
    c.wait_ok(Duration::from_secs(30));
    assert_eq!(c.master_ports().len(), 3);
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
}

/// Runs a `--json` CLI command that must succeed; its stdout as JSON.
pub(crate) fn cli_json(cfg: &WorkerConfig, args: &[&str]) -> serde_json::Value {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let out = cli(cfg, &all);
    assert_eq!(out.code, Some(0), "{all:?}: {}\n{}", out.stdout, out.stderr);
    serde_json::from_str(out.stdout.trim())
        .unwrap_or_else(|e| panic!("{all:?}: not JSON ({e}): {}", out.stdout))
}

/// A type whose stream lives on another master than the DLQ (so its moves to the DLQ cross
/// slots).
pub(crate) fn type_off_dlq(c: &Cluster, env: &str) -> String {
    let dlq = c.port_of(&dlq_key(env));
    (0..100)
        .map(|i| format!("w{i}.ev"))
        .find(|t| c.port_of(&stream_key(env, t)) != dlq)
        .unwrap()
}

/// Every id delivered with success, how many times.
pub(crate) fn successes(sink: &HttpSink) -> BTreeMap<String, usize> {
    sink.success_counts().into_iter().collect()
}

/// Nothing pending for `group` on `streams` and the redeliver stream, no retry waiting.
pub(crate) fn cluster_drained(c: &Cluster, env: &str, group: &str, streams: &[String]) -> bool {
    let redeliver = redeliver_key(env, group);
    streams
        .iter()
        .chain(std::iter::once(&redeliver))
        .all(|k| c.pending(k, group) == 0)
        && c.zcard(&retry_key(env, group)) == 0
}

/// Event ids of the retry members claimed for forwarding now. A forwarder killed between its
/// XADD to the redeliver stream and the member's removal forwards the member again once the
/// claim expires (README "Redis Cluster": one duplicate per crash): one more delivery, and for
/// an event failing every attempt one more DLQ entry, of an event that was pending nowhere.
fn claimed_retries(c: &Cluster, env: &str, group: &str) -> BTreeSet<String> {
    let retry = retry_key(env, group);
    let claims: BTreeSet<String> = c
        .scan_keys(&format!("{retry}:forwarding:*"))
        .iter()
        .filter_map(|k| k.rsplit(':').next().map(str::to_string))
        .collect();
    let node = c.node_of(&retry);
    let crate::util::resp::Value::Array(members) = node.cmd(&["ZRANGE", &retry, "0", "-1"]) else {
        return BTreeSet::new();
    };
    let sha1 = |m: &str| {
        node.cmd(&["EVAL", "return redis.sha1hex(ARGV[1])", "0", m])
            .as_str()
            .unwrap_or_default()
    };
    members
        .iter()
        .filter_map(|m| m.as_str())
        .filter(|m| claims.contains(&sha1(m)))
        .filter_map(|m| {
            let fields: Vec<String> = serde_json::from_str(&m).ok()?;
            let at = fields.iter().step_by(2).position(|k| k == "id")?;
            fields.get(at * 2 + 1).cloned()
        })
        .collect()
}

/// DLQ entries by event id.
pub(crate) fn dlq_ids(c: &Cluster, env: &str) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for e in c.xrange(&dlq_key(env)) {
        *m.entry(e.get("id").unwrap_or("?").to_string()).or_insert(0) += 1;
    }
    m
}

/// T32 conservation on a 3-master cluster: 3,000 events over 50 types spread over every
/// master, 10% failing once (retry set, forwarder, redeliver stream), 1% refused with 400
/// (DLQ straight from the type stream), 1% failing every attempt (DLQ from the redeliver
/// stream), two workers and a kill -9 of one mid-run, then a DLQ replay through the CLI.
/// Lost 0; every duplicate delivery is of an event the killed worker held (its pending
/// entries at the kill, and the retry members claimed for forwarding then: the documented
/// bound); the DLQ holds each dead event, more than once only for those.
#[test]
fn t32_cluster_conservation_with_kill9_and_replay() {
    let c = Cluster::start(3);
    let env = "cons";
    let (group, total) = ("group", 3000usize);
    let types = spread_types(&c, env, 50);
    let slots: BTreeSet<u32> = [
        dlq_key(env),
        retry_key(env, group),
        redeliver_key(env, group),
    ]
    .iter()
    .map(|k| c.keyslot(k))
    .collect();
    assert_eq!(
        slots.len(),
        3,
        "DLQ, retry set and redeliver stream share a slot"
    );
    let streams: Vec<String> = types.iter().map(|t| stream_key(env, t)).collect();
    let sink = HttpSink::start();
    let (mut transient, mut refused, mut failing) =
        (BTreeSet::new(), BTreeSet::new(), BTreeSet::new());
    let ids: Vec<String> = (0..total).map(|i| format!("c{i:04}")).collect();
    for (i, id) in ids.iter().enumerate() {
        if i % 10 == 3 {
            sink.script(id, vec![Action::status(500), Action::ok()]);
            transient.insert(id.clone());
        } else if i % 100 == 7 {
            sink.script(id, vec![Action::status(400)]);
            refused.insert(id.clone());
        } else if i % 100 == 9 {
            sink.script(id, vec![Action::status(500)]);
            failing.insert(id.clone());
        }
    }
    let dead: BTreeSet<String> = refused.union(&failing).cloned().collect();
    let config = |name: &str| {
        let mut cfg = WorkerConfig::new(env, &c.url()).route(Route::http(&["*"], &sink.url()));
        cfg.consumer = Some(name.into());
        cfg.concurrency = 8;
        cfg.visibility_timeout = "60s".into();
        cfg
    };
    let mut w1 = WorkerProcess::start("w1", config("w1"));
    let mut w2 = WorkerProcess::start("w2", config("w2"));
    w1.wait_ready(Duration::from_secs(20));
    w2.wait_ready(Duration::from_secs(20));
    // Publish on each stream's own master (one connection per master).
    let node: Vec<&crate::util::RedisServer> = streams.iter().map(|k| c.node_of(k)).collect();
    let mut ix = 0;
    let mut publish_batch = |n: usize| {
        for _ in 0..n {
            let id = &ids[ix];
            let t = ix % types.len();
            let data = format!(r#"{{"n":"{id}"}}"#);
            node[t].xadd(
                &streams[t],
                &[("id", id), ("type", &types[t]), ("data", &data)],
            );
            ix += 1;
        }
    };
    publish_batch(1500);
    wait_until("500 events delivered", Duration::from_secs(30), || {
        sink.success_counts().len() >= 500
    });
    wait_until("w1 holds pending entries", Duration::from_secs(10), || {
        streams
            .iter()
            .any(|k| c.node_of(k).xpending_consumers(k, group).contains_key("w1"))
    });
    w1.kill9();
    let mut orphans: BTreeSet<String> = BTreeSet::new();
    for k in streams
        .iter()
        .chain(std::iter::once(&redeliver_key(env, group)))
    {
        let n = c.node_of(k);
        let held: BTreeSet<String> = n
            .xpending_detail(k, group)
            .into_iter()
            .filter(|(_, consumer, _, _)| consumer == "w1")
            .map(|(entry, _, _, _)| entry)
            .collect();
        for e in n.xrange(k) {
            if held.contains(&e.entry_id) {
                orphans.insert(e.get("id").unwrap_or("?").to_string());
            }
        }
    }
    orphans.extend(claimed_retries(&c, env, group));
    assert!(
        !orphans.is_empty(),
        "inconclusive: w1 held nothing at the kill"
    );
    publish_batch(1500);
    let alive: BTreeSet<String> = ids.iter().filter(|i| !dead.contains(*i)).cloned().collect();
    let done = try_wait_until(Duration::from_secs(60), || {
        successes(&sink).len() == alive.len()
            && c.xlen(&dlq_key(env)) >= dead.len() as i64
            && cluster_drained(&c, env, group, &streams)
    });
    assert!(
        done,
        "not drained: {} of {} delivered, DLQ {} of {}\n{}\n{}",
        successes(&sink).len(),
        alive.len(),
        c.xlen(&dlq_key(env)),
        dead.len(),
        w2.output(),
        c.dump_env(env).chars().take(20_000).collect::<String>()
    );
    let in_dlq = dlq_ids(&c, env);
    let dlq_set: BTreeSet<String> = in_dlq.keys().cloned().collect();
    assert_eq!(dlq_set, dead, "the DLQ holds exactly the dead events");
    let dlq_dups: Vec<_> = in_dlq.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        dlq_dups.iter().all(|(id, _)| orphans.contains(*id)),
        "DLQ duplicates of events the killed worker did not hold: {dlq_dups:?}"
    );
    let stats = cli_json(&w2.config, &["dlq", "stats"]);
    assert_eq!(
        stats["total"],
        serde_json::json!(in_dlq.values().sum::<usize>()),
        "{stats}"
    );
    assert_eq!(
        stats["by_reason"]["permanent_error"].as_u64().unwrap_or(0)
            + stats["by_reason"]["max_attempts_exceeded"]
                .as_u64()
                .unwrap_or(0),
        in_dlq.values().sum::<usize>() as u64,
        "{stats}"
    );
    // Replay: the dead events now succeed.
    for id in &dead {
        sink.script(id, vec![Action::ok()]);
    }
    let r = cli_json(&w2.config, &["dlq", "replay", "--all"]);
    assert_eq!(
        r["replayed"],
        serde_json::json!(in_dlq.values().sum::<usize>()),
        "{r}"
    );
    let done = try_wait_until(Duration::from_secs(30), || {
        successes(&sink).len() == total && cluster_drained(&c, env, group, &streams)
    });
    assert!(
        done,
        "replayed events not delivered: {}\n{}",
        successes(&sink).len(),
        w2.output()
    );
    assert_eq!(c.xlen(&dlq_key(env)), 0);
    let stats = cli_json(&w2.config, &["dlq", "stats"]);
    assert_eq!(stats["total"], serde_json::json!(0), "{stats}");
    // Lost 0; duplicates only of what the killed worker held.
    let got = successes(&sink);
    let lost: Vec<&String> = ids.iter().filter(|i| !got.contains_key(*i)).collect();
    assert!(lost.is_empty(), "lost {lost:?}");
    let dups: BTreeMap<&String, &usize> = got.iter().filter(|(_, n)| **n > 1).collect();
    // The documented bound: what the killed worker held, plus one delivery per move cut
    // between its halves. The only move whose cut is not visible as a pending entry is the
    // forwarder's (retry set -> redeliver stream: the XADD done, the removal not): the
    // members w1 was forwarding at the kill (at most one forward batch, 500) are forwarded
    // again once its claim expires. Those are events that went through the retry set.
    let forward_cut: Vec<&&String> = dups.keys().filter(|id| !orphans.contains(**id)).collect();
    assert!(
        dups.values().all(|n| **n == 2)
            && forward_cut.iter().all(|id| transient.contains(**id))
            && forward_cut.len() <= 500,
        "duplicates beyond the bound (w1 held {} events: {orphans:?}; transient events may be \
         forwarded twice after a cut forward): {dups:?}",
        orphans.len()
    );
    eprintln!(
        "T32: {total} events, {} transient, {} dead, w1 held {} at the kill, {} duplicated ({} by a cut forward)",
        transient.len(),
        dead.len(),
        orphans.len(),
        dups.len(),
        forward_cut.len()
    );
}
