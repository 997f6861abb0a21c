//! The `cluster` scenario (opt-in: `bench/run.sh --sections cluster`): one Redis node against a
//! 3-master Redis Cluster on the same machine, and the cost of the opt-in WAIT.
//!
//! Every Redis here is started by this process (under `--workdir`, `--save '' --appendonly
//! no`, 127.0.0.1), like the test harness does: the cluster with `--cluster-enabled yes` and
//! `redis-cli --cluster create ... --cluster-yes`. Rows, interleaved and repeated:
//! - drain: `--events` (200000) preloaded over `--types` (50) type streams (256-byte data), the
//!   consumer groups created at 0, one release event-worker (blackhole route) timed from its
//!   start until every stream's group has read all and has nothing pending; Redis CPU
//!   (`INFO cpu`) and commands (`INFO stats`) per node before and after;
//! - latency: `--rate` (2000) events/s over the same types for `--secs` (20) s to an http route
//!   (the `ew-bench sink`), publish (XADD sent) to handler start, and the CPU per node;
//! - wait: a master and one replica (`--replicaof`); `--publishes` (20000) through `POST
//!   /api/events/publish` from 8 connections with `[redis] wait_replicas` 0 and 1.
//!
//! The topologies: `crate::clustertopo`; the wait rows: `crate::clusterwait`; the tables:
//! `crate::clusterrep`.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use fred::prelude::*;
use fred::types::Value;

use crate::clustertopo::{Topo, start_cluster, start_single};
use crate::clusterwait::wait_rows;
use crate::orch::{PRELOAD, drain_data_template, latency_data};
use crate::push::cmd;
use crate::util::{Opts, Proc, free_port, http, kv, now_ns, proc_cpu_s};

pub const ENV: &str = "cbench";
pub const GROUP: &str = "cbench";

/// One drain or latency run.
pub struct Run {
    pub topo: &'static str,
    pub rep: u64,
    pub secs: f64,
    pub events: u64,
    pub worker_cpu_s: f64,
    /// Per node: Redis CPU seconds, commands, events on its streams.
    pub node_cpu_s: Vec<f64>,
    pub node_cmds: Vec<u64>,
    pub node_events: Vec<u64>,
    /// `INFO commandstats` over all nodes, after - before: command -> (calls, usec).
    pub cmdstats: std::collections::BTreeMap<String, (u64, u64)>,
    /// Latency runs: p50, p99, max (µs) and events received.
    pub lat: Option<(u64, u64, u64, u64)>,
}

pub struct Ctx {
    pub worker: String,
    pub ewbench: String,
    pub logdir: PathBuf,
    pub workdir: PathBuf,
}

pub fn main(opts: &Opts) -> Result<(), String> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(run(opts))
}

async fn run(opts: &Opts) -> Result<(), String> {
    let quick = opts.flag("quick");
    let events = opts.num("events", if quick { 50_000 } else { 200_000 })?;
    let types = opts.num("types", 50)?;
    let rate = opts.num("rate", 2000)?;
    let secs = opts.num("secs", if quick { 5 } else { 20 })?;
    let reps = opts.num("reps", if quick { 1 } else { 3 })?;
    let publishes = opts.num("publishes", if quick { 2000 } else { 20_000 })?;
    let ctx = Ctx {
        worker: opts.str("worker")?.to_string(),
        ewbench: opts.str("self")?.to_string(),
        logdir: PathBuf::from(opts.str("logdir")?),
        workdir: PathBuf::from(opts.str("workdir")?),
    };
    std::fs::create_dir_all(&ctx.logdir).map_err(|e| e.to_string())?;
    std::fs::create_dir_all(&ctx.workdir).map_err(|e| e.to_string())?;
    let single = start_single(&ctx).await?;
    let cluster = start_cluster(&ctx, 3).await?;
    let (mut drains, mut lats) = (Vec::new(), Vec::new());
    for rep in 1..=reps {
        let order: [&Topo; 2] = if rep % 2 == 1 {
            [&single, &cluster]
        } else {
            [&cluster, &single]
        };
        for topo in order {
            eprintln!("== cluster: rep {rep}, drain, {}", topo.label);
            let d = drain(&ctx, topo, events, types, rep).await?;
            eprintln!(
                "   {:.2}s, {:.0} events/s",
                d.secs,
                d.events as f64 / d.secs
            );
            drains.push(d);
        }
        for topo in order {
            eprintln!("== cluster: rep {rep}, latency {rate}/s, {}", topo.label);
            let l = latency(&ctx, topo, rate, secs, types, rep).await?;
            let (p50, p99, _, n) = l.lat.unwrap_or_default();
            eprintln!("   p50 {p50} µs, p99 {p99} µs, {n} received");
            lats.push(l);
        }
    }
    let mut idles = Vec::new();
    let idle_secs = if quick { 3 } else { 5 };
    for rep in 1..=reps {
        for topo in [&single, &cluster] {
            for n in [types, IDLE_MANY] {
                eprintln!("== cluster: rep {rep}, idle, {n} types, {}", topo.label);
                idles.push(idle(&ctx, topo, n, idle_secs, rep).await?);
            }
        }
    }
    drop(single);
    drop(cluster);
    let waits = wait_rows(&ctx, publishes, reps).await?;
    let mut md = crate::clusterrep::markdown(&drains, &lats, &waits, events, types, rate, secs);
    crate::clusterrep::idle_table(&idles, idle_secs, &mut md);
    let out = PathBuf::from(opts.str("out")?);
    std::fs::write(&out, &md).map_err(|e| format!("{}: {e}", out.display()))?;
    eprintln!("{md}");
    Ok(())
}

/// The larger type count of the idle rows.
const IDLE_MANY: u64 = 2000;

/// An idle worker's cost: `types` streams with their groups at `$`, nothing published.
pub struct IdleRun {
    pub topo: &'static str,
    pub types: u64,
    pub secs: f64,
    /// Per node: Redis CPU seconds and commands.
    pub node_cpu_s: Vec<f64>,
    pub node_cmds: Vec<u64>,
    /// `INFO commandstats` over all nodes, after - before.
    pub cmdstats: std::collections::BTreeMap<String, (u64, u64)>,
}

/// One idle row: the worker (blackhole route) ready, 2 s to settle, then `secs` s measured.
async fn idle(ctx: &Ctx, topo: &Topo, types: u64, secs: u64, rep: u64) -> Result<IdleRun, String> {
    topo.flush().await?;
    for (_, key, owner) in &topo.keys(types) {
        topo.group(key, *owner, "$").await?;
    }
    let name = format!("idle-{}-{types}-{rep}", topo.nodes.len());
    let (mut w, api) = start_worker(ctx, topo, None, &name)?;
    wait_ready(api, &mut w).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = topo.snap().await?;
    let t0 = Instant::now();
    tokio::time::sleep(Duration::from_secs(secs)).await;
    let after = topo.snap().await?;
    let secs = t0.elapsed().as_secs_f64();
    w.stop();
    Ok(IdleRun {
        topo: topo.label,
        types,
        secs,
        node_cpu_s: delta(&before.cpu_s, &after.cpu_s),
        node_cmds: delta(&before.cmds, &after.cmds),
        cmdstats: cmd_delta(&before, &after),
    })
}

/// Writes the worker config for `topo` (route: blackhole, or http to `sink`); starts it.
fn start_worker(
    ctx: &Ctx,
    topo: &Topo,
    sink: Option<u16>,
    name: &str,
) -> Result<(Proc, u16), String> {
    let api = free_port()?;
    let route = match sink {
        None => "handler = \"blackhole\"".to_string(),
        Some(p) => format!("handler = \"http\"\nurl = \"http://127.0.0.1:{p}/hook\""),
    };
    let config = format!(
        "env = \"{ENV}\"\nredis_url = \"{}\"\ngroup = \"{GROUP}\"\n\n[api]\nlisten = \"127.0.0.1:{api}\"\n\n\
         [[routes]]\ntypes = [\"cb.*\"]\n{route}\n",
        topo.url
    );
    let path = ctx.logdir.join(format!("cluster-{name}.toml"));
    std::fs::write(&path, config).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut c = Command::new(&ctx.worker);
    c.env_clear().env("RUST_LOG", "warn");
    if let Ok(p) = std::env::var("PATH") {
        c.env("PATH", p);
    }
    c.arg("--config").arg(&path).arg("run");
    let log = ctx.logdir.join(format!("cluster-{name}.log"));
    Ok((
        Proc::spawn(&format!("event-worker ({name})"), &mut c, &log, false)?,
        api,
    ))
}

/// Whether `key`'s group has read `n` entries and has none pending.
async fn stream_done(topo: &Topo, key: &str, owner: usize, n: u64) -> Result<bool, String> {
    let v: Value = topo.nodes[owner]
        .ctl
        .custom(cmd("XINFO"), vec!["GROUPS", key])
        .await
        .map_err(|e| format!("XINFO GROUPS {key}: {e}"))?;
    for g in v.into_array() {
        let f = g.into_array();
        let get = |name: &str| {
            f.chunks(2)
                .find(|c| c[0].as_str().is_some_and(|s| s == name))
                .and_then(|c| c.get(1).and_then(Value::as_i64))
        };
        if get("entries-read").unwrap_or(0) as u64 >= n && get("pending") == Some(0) {
            return Ok(true);
        }
    }
    Ok(false)
}

async fn drain(ctx: &Ctx, topo: &Topo, events: u64, types: u64, rep: u64) -> Result<Run, String> {
    topo.flush().await?;
    let keys = topo.keys(types);
    let per = events / types;
    let tmpl = drain_data_template();
    let mut node_events = vec![0u64; topo.nodes.len()];
    for (i, (t, key, owner)) in keys.iter().enumerate() {
        let start = (i as u64 * per).to_string();
        let args = vec![t.clone(), start, per.to_string(), tmpl.clone()];
        let _: Value = topo.nodes[*owner]
            .ctl
            .eval(PRELOAD, vec![key.as_str()], args)
            .await
            .map_err(|e| format!("preload {key}: {e}"))?;
        topo.group(key, *owner, "0").await?;
        node_events[*owner] += per;
    }
    let before = topo.snap().await?;
    let t0 = Instant::now();
    let name = format!("drain-{}-{rep}", topo.nodes.len());
    let (mut w, _) = start_worker(ctx, topo, None, &name)?;
    let mut left: Vec<&(String, String, usize)> = keys.iter().collect();
    let limit = Duration::from_secs(600);
    while !left.is_empty() {
        let mut still = Vec::new();
        for k in left {
            if !stream_done(topo, &k.1, k.2, per).await? {
                still.push(k);
            }
        }
        left = still;
        if left.is_empty() {
            break;
        }
        if !w.alive() || t0.elapsed() > limit {
            return Err(format!(
                "{} stopped or did not drain in 600 s (see its log)",
                w.name
            ));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let secs = t0.elapsed().as_secs_f64();
    let worker_cpu_s = proc_cpu_s(w.pid).unwrap_or(0.0);
    let after = topo.snap().await?;
    w.stop();
    Ok(Run {
        topo: topo.label,
        rep,
        secs,
        events: per * types,
        worker_cpu_s,
        node_cpu_s: delta(&before.cpu_s, &after.cpu_s),
        node_cmds: delta(&before.cmds, &after.cmds),
        node_events,
        cmdstats: cmd_delta(&before, &after),
        lat: None,
    })
}

/// Per node, `after - before` (CPU seconds or command counts).
fn delta<T: Copy + std::ops::Sub<Output = T>>(before: &[T], after: &[T]) -> Vec<T> {
    after.iter().zip(before).map(|(&a, &b)| a - b).collect()
}

/// Per command over all nodes, `after - before` of (calls, usec); commands not called left out.
fn cmd_delta(
    before: &crate::clustertopo::Snap,
    after: &crate::clustertopo::Snap,
) -> std::collections::BTreeMap<String, (u64, u64)> {
    after
        .cmdstats
        .iter()
        .filter_map(|(name, &(calls, usec))| {
            let (c0, u0) = before.cmdstats.get(name).copied().unwrap_or_default();
            (calls > c0).then(|| (name.clone(), (calls - c0, usec.saturating_sub(u0))))
        })
        .collect()
}

fn start_sink(ctx: &Ctx) -> Result<(Proc, u16), String> {
    let port = free_port()?;
    let mut c = Command::new(&ctx.ewbench);
    c.args(["sink", "--port", &port.to_string()]);
    let p = Proc::spawn("sink", &mut c, &ctx.logdir.join("cluster-sink.log"), false)?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while http(port, "GET", "/stats").is_err() {
        if Instant::now() > deadline {
            return Err(format!("the sink did not listen on {port}"));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok((p, port))
}

pub async fn wait_ready(api: u16, w: &mut Proc) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !matches!(http(api, "GET", "/readyz"), Ok((200, _))) {
        if !w.alive() || Instant::now() > deadline {
            return Err(format!("{} not ready within 60 s (see its log)", w.name));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

async fn latency(
    ctx: &Ctx,
    topo: &Topo,
    rate: u64,
    secs: u64,
    types: u64,
    rep: u64,
) -> Result<Run, String> {
    topo.flush().await?;
    let keys = topo.keys(types);
    for (_, key, owner) in &keys {
        topo.group(key, *owner, "$").await?;
    }
    let (_sink, sink_port) = start_sink(ctx)?;
    let name = format!("latency-{}-{rep}", topo.nodes.len());
    let (mut w, api) = start_worker(ctx, topo, Some(sink_port), &name)?;
    wait_ready(api, &mut w).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    http(sink_port, "POST", "/reset")?;
    let before = topo.snap().await?;
    let cpu0 = proc_cpu_s(w.pid).unwrap_or(0.0);
    let total = rate * secs;
    let mut node_events = vec![0u64; topo.nodes.len()];
    let (t0, mut sent) = (Instant::now(), 0u64);
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    while sent < total {
        tick.tick().await;
        let due = ((t0.elapsed().as_secs_f64() * rate as f64) as u64).min(total);
        let mut batch = Vec::new();
        while sent < due {
            let (t, key, owner) = &keys[(sent % types) as usize];
            node_events[*owner] += 1;
            let fields = vec![
                ("id", format!("0190a5c2-7b1e-7000-9000-{sent:012}")),
                ("type", t.clone()),
                ("data", latency_data(now_ns(), sent)),
            ];
            let c = topo.nodes[*owner].ctl.clone();
            let key = key.clone();
            batch.push(async move {
                c.xadd::<Value, _, _, _, _>(key, false, None, "*", fields)
                    .await
            });
            sent += 1;
        }
        for r in futures::future::join_all(batch).await {
            r.map_err(|e| format!("publish: {e}"))?;
        }
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut stats = kv("");
    while Instant::now() < deadline {
        stats = kv(&http(sink_port, "GET", "/stats")?.1);
        if stats.get("n").copied().unwrap_or(0) >= total {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let secs_run = t0.elapsed().as_secs_f64();
    let after = topo.snap().await?;
    let worker_cpu_s = proc_cpu_s(w.pid).unwrap_or(0.0) - cpu0;
    w.stop();
    let g = |k: &str| stats.get(k).copied().unwrap_or(0);
    Ok(Run {
        topo: topo.label,
        rep,
        secs: secs_run,
        events: total,
        worker_cpu_s,
        node_cpu_s: delta(&before.cpu_s, &after.cpu_s),
        node_cmds: delta(&before.cmds, &after.cmds),
        node_events,
        cmdstats: cmd_delta(&before, &after),
        lat: Some((g("p50_us"), g("p99_us"), g("max_us"), g("n"))),
    })
}
