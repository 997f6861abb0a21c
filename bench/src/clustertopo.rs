//! The Redis topologies of the `cluster` scenario (`crate::cluster`): one node, or masters
//! joined with `redis-cli --cluster create` (as the test harness does), each node with a plain
//! control connection; the slot map, per-node INFO snapshots, preloading helpers.

use std::process::Command;
use std::time::{Duration, Instant};

use fred::prelude::*;
use fred::types::Value;

use crate::cluster::{Ctx, ENV, GROUP};
use crate::push::{cmd, connect};
use crate::util::{Proc, free_port};

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
    /// `INFO commandstats` summed over the nodes: command -> (calls, usec).
    pub cmdstats: std::collections::BTreeMap<String, (u64, u64)>,
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

pub async fn node(ctx: &Ctx, name: &str, port: u16, extra: &[String]) -> Result<Node, String> {
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

pub async fn start_single(ctx: &Ctx) -> Result<Topo, String> {
    let port = free_port()?;
    let n = node(ctx, "single", port, &[]).await?;
    Ok(Topo {
        label: "1 node",
        nodes: vec![n],
        slots: vec![(0, 16383, 0)],
        url: format!("redis://127.0.0.1:{port}"),
    })
}

pub async fn start_cluster(ctx: &Ctx, masters: usize) -> Result<Topo, String> {
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
    pub fn owner(&self, key: &str) -> usize {
        let slot = fred::util::redis_keyslot(key.as_bytes());
        self.slots
            .iter()
            .find(|(a, b, _)| (*a..=*b).contains(&slot))
            .map(|s| s.2)
            .unwrap_or(0)
    }

    pub async fn snap(&self) -> Result<Snap, String> {
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
                if let Some((name, (calls, usec))) = crate::orch::cmdstat(line) {
                    let sum = s.cmdstats.entry(name).or_default();
                    *sum = (sum.0 + calls, sum.1 + usec);
                }
            }
            s.cpu_s.push(cpu);
            s.cmds.push(cmds);
        }
        Ok(s)
    }

    pub async fn flush(&self) -> Result<(), String> {
        for n in &self.nodes {
            let _: Value = n
                .ctl
                .custom(cmd("FLUSHALL"), vec!["SYNC"])
                .await
                .map_err(|e| format!("FLUSHALL: {e}"))?;
        }
        Ok(())
    }

    pub fn keys(&self, types: u64) -> Vec<(String, String, usize)> {
        (0..types)
            .map(|i| {
                let t = format!("cb.t{i:02}");
                let key = format!("events:{ENV}:{t}");
                let owner = self.owner(&key);
                (t, key, owner)
            })
            .collect()
    }

    pub async fn group(&self, key: &str, owner: usize, at: &str) -> Result<(), String> {
        let args = vec!["CREATE", key, GROUP, at, "MKSTREAM"];
        let _: Value = self.nodes[owner]
            .ctl
            .custom(cmd("XGROUP"), args)
            .await
            .map_err(|e| format!("XGROUP CREATE {key}: {e}"))?;
        Ok(())
    }
}
