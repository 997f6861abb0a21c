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
//! Results: `crate::clusterrep`.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use fred::prelude::*;
use fred::types::Value;

use crate::orch::{PRELOAD, drain_data_template, latency_data};
use crate::push::{cmd, connect};
use crate::util::{Opts, Proc, free_port, http, kv, now_ns, proc_cpu_s};

pub const ENV: &str = "cbench";
pub const GROUP: &str = "cbench";

/// One redis-server of a topology and its control connection (plain, to that node only).
pub struct Node {
    pub port: u16,
    pub _proc: Proc,
    pub ctl: Client,
}

/// One node, or a cluster of masters.
pub struct Topo {
    pub label: &'static str,
    pub nodes: Vec<Node>,
    /// (first slot, last slot, node index).
    pub slots: Vec<(u16, u16, usize)>,
    pub url: String,
}

/// Per-node counters at one moment.
#[derive(Clone, Default)]
pub struct Snap {
    pub cpu_s: Vec<f64>,
    pub cmds: Vec<u64>,
}

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
    /// Latency runs: p50, p99, max (µs) and events received.
    pub lat: Option<(u64, u64, u64, u64)>,
}

/// One wait row: the publish latencies (ns), seconds, non-202 answers, unreplicated.
pub struct WaitRun {
    pub wait: bool,
    pub lat_ns: Vec<u64>,
    pub secs: f64,
    pub errors: u64,
    pub unreplicated: u64,
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
    drop(single);
    drop(cluster);
    let waits = wait_rows(&ctx, publishes, reps).await?;
    let md = crate::clusterrep::markdown(&drains, &lats, &waits, events, types, rate, secs);
    let out = PathBuf::from(opts.str("out")?);
    std::fs::write(&out, &md).map_err(|e| format!("{}: {e}", out.display()))?;
    eprintln!("{md}");
    Ok(())
}

/// A loopback port `p` with `p + 10000` (its cluster bus port) free too.
fn free_pair() -> Result<u16, String> {
    for _ in 0..200 {
        let p = free_port()?;
        if std::net::TcpListener::bind(("127.0.0.1", p + 10_000)).is_ok() {
            return Ok(p);
        }
    }
    Err("no free port pair (p, p+10000)".into())
}

fn start_redis(ctx: &Ctx, name: &str, port: u16, extra: &[String]) -> Result<Proc, String> {
    let dir = ctx.workdir.join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let mut c = Command::new("redis-server");
    c.args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
        .arg("--dir")
        .arg(&dir)
        .args(extra);
    Proc::spawn(
        &format!("redis-server ({name})"),
        &mut c,
        &ctx.logdir.join(format!("redis-{name}.log")),
        false,
    )
}

async fn node(ctx: &Ctx, name: &str, port: u16, extra: &[String]) -> Result<Node, String> {
    let proc = start_redis(ctx, name, port, extra)?;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match connect(port).await {
            Ok(ctl) => {
                return Ok(Node {
                    port,
                    _proc: proc,
                    ctl,
                });
            }
            Err(e) if Instant::now() > deadline => return Err(e),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

async fn start_single(ctx: &Ctx) -> Result<Topo, String> {
    let port = free_port()?;
    let n = node(ctx, "single", port, &[]).await?;
    Ok(Topo {
        label: "1 node",
        nodes: vec![n],
        slots: vec![(0, 16383, 0)],
        url: format!("redis://127.0.0.1:{port}"),
    })
}

async fn start_cluster(ctx: &Ctx, masters: usize) -> Result<Topo, String> {
    let mut nodes = Vec::new();
    let args: Vec<String> = [
        "--cluster-enabled",
        "yes",
        "--cluster-config-file",
        "nodes.conf",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    for i in 0..masters {
        nodes.push(node(ctx, &format!("master{i}"), free_pair()?, &args).await?);
    }
    let mut create = Command::new("redis-cli");
    create.args(["--cluster", "create"]);
    for n in &nodes {
        create.arg(format!("127.0.0.1:{}", n.port));
    }
    let out = create
        .arg("--cluster-yes")
        .output()
        .map_err(|e| format!("redis-cli --cluster create: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "redis-cli --cluster create failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut ok = true;
        for n in &nodes {
            let v: Value = n
                .ctl
                .custom(cmd("CLUSTER"), vec!["INFO"])
                .await
                .map_err(|e| format!("CLUSTER INFO: {e}"))?;
            ok &= v
                .as_str_lossy()
                .is_some_and(|s| s.contains("cluster_state:ok"));
        }
        if ok {
            break;
        }
        if Instant::now() > deadline {
            return Err("the bench cluster is not ok after 30 s".into());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let slots = slot_map(&nodes).await?;
    let url = format!("redis-cluster://127.0.0.1:{}", nodes[0].port);
    Ok(Topo {
        label: "3-master cluster",
        nodes,
        slots,
        url,
    })
}

/// CLUSTER SLOTS of the first node as (first, last, node index).
async fn slot_map(nodes: &[Node]) -> Result<Vec<(u16, u16, usize)>, String> {
    let v: Value = nodes[0]
        .ctl
        .custom(cmd("CLUSTER"), vec!["SLOTS"])
        .await
        .map_err(|e| format!("CLUSTER SLOTS: {e}"))?;
    let mut map = Vec::new();
    for row in v.into_array() {
        let row = row.into_array();
        let (Some(a), Some(b)) = (row.first(), row.get(1)) else {
            continue;
        };
        let port = row
            .get(2)
            .map(|m| m.clone().into_array())
            .and_then(|m| m.get(1).and_then(Value::as_i64))
            .unwrap_or(0) as u16;
        let i = nodes.iter().position(|n| n.port == port);
        let i = i.ok_or_else(|| format!("CLUSTER SLOTS names unknown port {port}"))?;
        map.push((
            a.as_i64().unwrap_or(0) as u16,
            b.as_i64().unwrap_or(0) as u16,
            i,
        ));
    }
    Ok(map)
}

impl Topo {
    fn owner(&self, key: &str) -> usize {
        let slot = fred::util::redis_keyslot(key.as_bytes());
        self.slots
            .iter()
            .find(|(a, b, _)| (*a..=*b).contains(&slot))
            .map(|s| s.2)
            .unwrap_or(0)
    }

    async fn snap(&self) -> Result<Snap, String> {
        let mut s = Snap::default();
        for n in &self.nodes {
            let v: Value = n
                .ctl
                .custom(cmd("INFO"), vec!["ALL"])
                .await
                .map_err(|e| format!("INFO: {e}"))?;
            let body = v.as_str_lossy().map(|s| s.into_owned()).unwrap_or_default();
            let (mut cpu, mut cmds) = (0.0, 0);
            for line in body.lines().map(str::trim) {
                if let Some(v) = line
                    .strip_prefix("used_cpu_sys:")
                    .or(line.strip_prefix("used_cpu_user:"))
                {
                    cpu += v.parse::<f64>().unwrap_or(0.0);
                }
                if let Some(v) = line.strip_prefix("total_commands_processed:") {
                    cmds = v.parse().unwrap_or(0);
                }
            }
            s.cpu_s.push(cpu);
            s.cmds.push(cmds);
        }
        Ok(s)
    }

    async fn flush(&self) -> Result<(), String> {
        for n in &self.nodes {
            let _: Value = n
                .ctl
                .custom(cmd("FLUSHALL"), vec!["SYNC"])
                .await
                .map_err(|e| format!("FLUSHALL: {e}"))?;
        }
        Ok(())
    }

    fn keys(&self, types: u64) -> Vec<(String, String, usize)> {
        (0..types)
            .map(|i| {
                let t = format!("cb.t{i:02}");
                let key = format!("events:{ENV}:{t}");
                let owner = self.owner(&key);
                (t, key, owner)
            })
            .collect()
    }

    async fn group(&self, key: &str, owner: usize, at: &str) -> Result<(), String> {
        let args = vec!["CREATE", key, GROUP, at, "MKSTREAM"];
        let _: Value = self.nodes[owner]
            .ctl
            .custom(cmd("XGROUP"), args)
            .await
            .map_err(|e| format!("XGROUP CREATE {key}: {e}"))?;
        Ok(())
    }
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
        node_cpu_s: delta_f(&before.cpu_s, &after.cpu_s),
        node_cmds: after
            .cmds
            .iter()
            .zip(&before.cmds)
            .map(|(a, b)| a - b)
            .collect(),
        node_events,
        lat: None,
    })
}

fn delta_f(a: &[f64], b: &[f64]) -> Vec<f64> {
    b.iter().zip(a).map(|(b, a)| b - a).collect()
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

async fn wait_ready(api: u16, w: &mut Proc) -> Result<(), String> {
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
        node_cpu_s: delta_f(&before.cpu_s, &after.cpu_s),
        node_cmds: after
            .cmds
            .iter()
            .zip(&before.cmds)
            .map(|(a, b)| a - b)
            .collect(),
        node_events,
        lat: Some((g("p50_us"), g("p99_us"), g("max_us"), g("n"))),
    })
}

/// The WAIT rows: a master and a replica; one worker per row with the API, publishing with
/// `outbox::publish_all` (8 connections, a unique id each).
async fn wait_rows(ctx: &Ctx, publishes: u64, reps: u64) -> Result<Vec<WaitRun>, String> {
    let mport = free_port()?;
    let master = node(ctx, "wait-master", mport, &[]).await?;
    let rargs: Vec<String> = vec!["--replicaof".into(), "127.0.0.1".into(), mport.to_string()];
    let _replica = node(ctx, "wait-replica", free_port()?, &rargs).await?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let v: Value = master
            .ctl
            .custom(cmd("INFO"), vec!["replication"])
            .await
            .map_err(|e| format!("INFO: {e}"))?;
        if v.as_str_lossy().is_some_and(|s| s.contains("state=online")) {
            break;
        }
        if Instant::now() > deadline {
            return Err("the bench replica is not online after 30 s".into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut runs = Vec::new();
    for rep in 1..=reps {
        let order = if rep % 2 == 1 {
            [false, true]
        } else {
            [true, false]
        };
        for wait in order {
            let _: Value = master
                .ctl
                .custom(cmd("FLUSHALL"), vec!["SYNC"])
                .await
                .map_err(|e| format!("FLUSHALL: {e}"))?;
            eprintln!(
                "== cluster: rep {rep}, publish with wait_replicas {}",
                u8::from(wait)
            );
            let r = wait_run(ctx, mport, wait, rep, publishes).await?;
            runs.push(r);
        }
    }
    Ok(runs)
}

async fn wait_run(ctx: &Ctx, port: u16, wait: bool, rep: u64, n: u64) -> Result<WaitRun, String> {
    let api = free_port()?;
    let redis = if wait {
        "[redis]\nwait_replicas = 1\nwait_timeout = \"100ms\"\n\n"
    } else {
        ""
    };
    let config = format!(
        "env = \"{}\"\nredis_url = \"redis://127.0.0.1:{port}\"\ngroup = \"{GROUP}\"\n\n{redis}\
         [api]\nlisten = \"127.0.0.1:{api}\"\nrate_limit = 0\n\n\
         [[routes]]\ntypes = [\"other.type\"]\nhandler = \"blackhole\"\n",
        crate::outbox::ENV
    );
    let name = format!("wait{}-{rep}", u8::from(wait));
    let path = ctx.logdir.join(format!("cluster-{name}.toml"));
    std::fs::write(&path, config).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut c = Command::new(&ctx.worker);
    c.env_clear()
        .env("RUST_LOG", "warn")
        .env("EVENTS_API_TOKEN", crate::outbox::TOKEN);
    if let Ok(p) = std::env::var("PATH") {
        c.env("PATH", p);
    }
    c.arg("--config").arg(&path).arg("run");
    let log = ctx.logdir.join(format!("cluster-{name}.log"));
    let mut w = Proc::spawn(&format!("event-worker ({name})"), &mut c, &log, false)?;
    wait_ready(api, &mut w).await?;
    let _ = crate::outbox::publish_all(api, &format!("w{name}"), 16).await?;
    let t0 = Instant::now();
    let (samples, errors) = crate::outbox::publish_all(api, &name, n).await?;
    let secs = t0.elapsed().as_secs_f64();
    let unreplicated = crate::push::metric(api, "event_worker_publish_unreplicated_total")? as u64;
    w.stop();
    Ok(WaitRun {
        wait,
        lat_ns: samples.iter().map(|s| s.lat_ns).collect(),
        secs,
        errors,
        unreplicated,
    })
}
