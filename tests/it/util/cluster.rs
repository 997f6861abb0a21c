//! A real local Redis Cluster per test: N masters (and optionally one replica each), each a
//! [`RedisServer`] with `--cluster-enabled yes` on a free loopback port whose bus port
//! (port + 10000) is free too, joined by `redis-cli --cluster create`. Helpers find the node
//! that holds a key (CLUSTER KEYSLOT + the slots map) and run commands there.

use super::redis::{Aof, Entry, RedisServer, parse_entries};
use super::resp::{Conn, Value};
use super::try_wait_until;
use std::process::Command;
use std::time::Duration;

/// A running cluster; every node is killed on drop.
pub struct Cluster {
    /// Every node, masters first (in `redis-cli --cluster create` order).
    pub nodes: Vec<RedisServer>,
    /// How many of `nodes` were created as masters.
    pub masters: usize,
}

/// A loopback port `p` with `p` and its cluster bus port `p + 10000` both free.
fn free_cluster_port() -> u16 {
    for _ in 0..200 {
        let Ok(l) = std::net::TcpListener::bind("127.0.0.1:0") else {
            continue;
        };
        let p = l.local_addr().unwrap().port();
        if !(1024..55_000).contains(&p) {
            continue;
        }
        if std::net::TcpListener::bind(("127.0.0.1", p + 10_000)).is_ok() {
            return p;
        }
    }
    panic!("no free loopback port pair (p, p+10000) for a cluster node after 200 tries");
}

fn start_node(aof: Aof) -> RedisServer {
    let mut last = String::new();
    for _ in 0..10 {
        let args = [
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            "nodes.conf",
            "--cluster-node-timeout",
            "2000",
        ];
        let args = args.iter().map(|s| s.to_string()).collect();
        match RedisServer::try_start_on_with_args(free_cluster_port(), aof, args) {
            Ok(s) => return s,
            Err(e) => last = e,
        }
    }
    panic!("could not start a cluster node: {last}");
}

impl Cluster {
    /// `masters` masters without replicas, no persistence.
    pub fn start(masters: usize) -> Cluster {
        Cluster::start_full(masters, false, Aof::None)
    }

    /// `masters` masters, with one replica each when `replicas`; waits (at most 30 s) until
    /// every node says `cluster_state:ok` and sees all 16384 slots on the masters.
    pub fn start_full(masters: usize, replicas: bool, aof: Aof) -> Cluster {
        let total = if replicas { masters * 2 } else { masters };
        let nodes: Vec<RedisServer> = (0..total).map(|_| start_node(aof)).collect();
        let mut cmd = Command::new("redis-cli");
        cmd.arg("--cluster").arg("create");
        for n in &nodes {
            cmd.arg(format!("127.0.0.1:{}", n.port));
        }
        if replicas {
            cmd.args(["--cluster-replicas", "1"]);
        }
        cmd.arg("--cluster-yes");
        let out = cmd.output().expect("run redis-cli --cluster create");
        assert!(
            out.status.success(),
            "redis-cli --cluster create failed: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let cluster = Cluster { nodes, masters };
        cluster.wait_ok(Duration::from_secs(30));
        cluster
    }

    /// Waits until every running node reports `cluster_state:ok` and a full slot map whose
    /// masters all answer; panics with each node's CLUSTER INFO after `timeout`.
    pub fn wait_ok(&self, timeout: Duration) {
        let ok = try_wait_until(timeout, || {
            self.nodes.iter().all(|n| {
                let info = n
                    .try_cmd(&["CLUSTER", "INFO"])
                    .ok()
                    .and_then(|v| v.as_str());
                info.is_some_and(|i| i.contains("cluster_state:ok"))
            }) && self
                .slot_map()
                .iter()
                .map(|(a, b, _)| b - a + 1)
                .sum::<u32>()
                == 16384
                && self.replicas_listed() >= self.nodes.len() - self.masters
        });
        if !ok {
            let infos: Vec<String> = self
                .nodes
                .iter()
                .map(|n| {
                    let info = n.try_cmd(&["CLUSTER", "INFO"]).map(|v| v.as_str());
                    format!("node {}: {:?}\n{}", n.port, info, n.log_tail(10))
                })
                .collect();
            panic!(
                "cluster not ok after {timeout:?}:\n{}",
                infos.join("\n---\n")
            );
        }
    }

    /// `redis-cluster://127.0.0.1:<first node>`.
    pub fn url(&self) -> String {
        format!("redis-cluster://127.0.0.1:{}", self.nodes[0].port)
    }

    /// A node that answers (the first one running).
    fn any(&self) -> &RedisServer {
        self.nodes
            .iter()
            .find(|n| n.try_cmd(&["PING"]).is_ok())
            .expect("no cluster node answers PING")
    }

    /// CLUSTER SLOTS as `(first slot, last slot, master port)`, sorted.
    pub fn slot_map(&self) -> Vec<(u32, u32, u16)> {
        let Some(node) = self.nodes.iter().find(|n| n.try_cmd(&["PING"]).is_ok()) else {
            return Vec::new();
        };
        let mut out = node
            .try_cmd(&["CLUSTER", "SLOTS"])
            .map(|v| slot_ranges(&v))
            .unwrap_or_default();
        out.sort();
        out
    }

    /// Distinct replicas CLUSTER SLOTS lists (a replica appears once it synced).
    pub fn replicas_listed(&self) -> usize {
        let Some(node) = self.nodes.iter().find(|n| n.try_cmd(&["PING"]).is_ok()) else {
            return 0;
        };
        let mut ports: Vec<i64> = node
            .try_cmd(&["CLUSTER", "SLOTS"])
            .map(|v| v.items())
            .unwrap_or_default()
            .iter()
            .flat_map(|range| range.items().into_iter().skip(3))
            .filter_map(|n| n.items().get(1).and_then(Value::as_int))
            .collect();
        ports.sort();
        ports.dedup();
        ports.len()
    }

    /// The hash slot of `key` (CLUSTER KEYSLOT).
    pub fn keyslot(&self, key: &str) -> u32 {
        self.any()
            .cmd(&["CLUSTER", "KEYSLOT", key])
            .as_int()
            .expect("CLUSTER KEYSLOT") as u32
    }

    /// The port of the master that holds `key`.
    pub fn port_of(&self, key: &str) -> u16 {
        let slot = self.keyslot(key);
        self.slot_map()
            .into_iter()
            .find(|(a, b, _)| (*a..=*b).contains(&slot))
            .map(|(_, _, p)| p)
            .unwrap_or_else(|| panic!("no master serves slot {slot} of {key}"))
    }

    /// The master node that holds `key`.
    pub fn node_of(&self, key: &str) -> &RedisServer {
        let port = self.port_of(key);
        self.nodes
            .iter()
            .find(|n| n.port == port)
            .unwrap_or_else(|| panic!("node {port} is not one of this cluster's"))
    }

    /// The masters' ports, sorted.
    pub fn master_ports(&self) -> Vec<u16> {
        let mut p: Vec<u16> = self.slot_map().into_iter().map(|(_, _, p)| p).collect();
        p.sort();
        p.dedup();
        p
    }

    /// Runs a one-key command on the node that holds `args[1]`.
    pub fn cmd(&self, args: &[&str]) -> Value {
        self.node_of(args[1]).cmd(args)
    }

    /// XADD with `*` on the key's node.
    pub fn xadd(&self, key: &str, fields: &[(&str, &str)]) -> String {
        self.node_of(key).xadd(key, fields)
    }

    /// XLEN on the key's node.
    pub fn xlen(&self, key: &str) -> i64 {
        self.node_of(key).xlen(key)
    }

    /// XRANGE - + on the key's node.
    pub fn xrange(&self, key: &str) -> Vec<Entry> {
        parse_entries(&self.cmd(&["XRANGE", key, "-", "+"]))
    }

    /// ZCARD on the key's node.
    pub fn zcard(&self, key: &str) -> i64 {
        self.node_of(key).zcard(key)
    }

    /// Pending entries of `group` on `key` (0 when the group or key does not exist).
    pub fn pending(&self, key: &str, group: &str) -> i64 {
        self.node_of(key).xpending_count(key, group).unwrap_or(0)
    }

    /// Keys matching `pattern` on every master, sorted.
    pub fn scan_keys(&self, pattern: &str) -> Vec<String> {
        let masters = self.master_ports();
        let mut out: Vec<String> = self
            .nodes
            .iter()
            .filter(|n| masters.contains(&n.port))
            .flat_map(|n| n.scan_keys(pattern))
            .collect();
        out.sort();
        out
    }

    /// The node id of the node on `port` (CLUSTER MYID).
    pub fn node_id(&self, port: u16) -> String {
        let node = self
            .nodes
            .iter()
            .find(|n| n.port == port)
            .expect("a node of this cluster");
        node.cmd(&["CLUSTER", "MYID"])
            .as_str()
            .expect("CLUSTER MYID")
    }

    /// Starts `redis-cli --cluster reshard` moving `slots` slots from the master on `from` to
    /// the master on `to`; its output goes to `log`. The caller waits for the child.
    pub fn start_reshard(
        &self,
        from: u16,
        to: u16,
        slots: u32,
        log: &std::path::Path,
    ) -> std::process::Child {
        let out = std::fs::File::create(log).expect("reshard log");
        Command::new("redis-cli")
            .arg("--cluster")
            .arg("reshard")
            .arg(format!("127.0.0.1:{from}"))
            .args(["--cluster-from", &self.node_id(from)])
            .args(["--cluster-to", &self.node_id(to)])
            .args(["--cluster-slots", &slots.to_string()])
            .arg("--cluster-yes")
            .stdout(out.try_clone().expect("log"))
            .stderr(out)
            .spawn()
            .expect("start redis-cli --cluster reshard")
    }

    /// Runs one command for `key` as a cluster client does: on the node the slot map names,
    /// following `MOVED` (to the named node) and `ASK` (`ASKING` first) redirections and
    /// waiting out `TRYAGAIN`, at most 20 times; `conns` caches a connection per port.
    pub fn cmd_follow(
        &self,
        conns: &mut std::collections::HashMap<u16, Conn>,
        args: &[&str],
    ) -> Value {
        let mut port = self.port_of(args[1]);
        let mut asking = false;
        for _ in 0..20 {
            let conn = conns
                .entry(port)
                .or_insert_with(|| Conn::connect(port).expect("connect to a cluster node"));
            if asking {
                conn.cmd(&["ASKING"]).expect("ASKING");
            }
            let reply = conn.cmd(args).expect("cluster command");
            let Value::Err(e) = &reply else { return reply };
            let mut parts = e.split_whitespace();
            match (parts.next(), parts.nth(1)) {
                (Some("MOVED"), Some(addr)) => {
                    port = addr
                        .rsplit(':')
                        .next()
                        .and_then(|p| p.parse().ok())
                        .expect("MOVED port");
                    asking = false;
                }
                (Some("ASK"), Some(addr)) => {
                    port = addr
                        .rsplit(':')
                        .next()
                        .and_then(|p| p.parse().ok())
                        .expect("ASK port");
                    asking = true;
                }
                (Some("TRYAGAIN"), _) => std::thread::sleep(Duration::from_millis(20)),
                _ => return reply,
            }
        }
        panic!("{args:?}: more than 20 redirections");
    }

    /// Kills node `i` with SIGKILL.
    pub fn kill9(&mut self, i: usize) {
        self.nodes[i].kill9();
    }

    /// Starts node `i` again on its port with its data dir (and its nodes.conf).
    pub fn restart(&mut self, i: usize) {
        self.nodes[i].start_again();
    }

    /// Every `events:<env>:*` key on every master, for a failing test's output.
    pub fn dump_env(&self, env: &str) -> String {
        let masters = self.master_ports();
        self.nodes
            .iter()
            .filter(|n| masters.contains(&n.port))
            .map(|n| n.dump_env(env))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// `CLUSTER SLOTS` as (first slot, last slot, master port), in reply order.
pub fn slot_ranges(reply: &Value) -> Vec<(u32, u32, u16)> {
    reply
        .items()
        .iter()
        .filter_map(|range| {
            let r = range.items();
            let port = r.get(2)?.items().get(1)?.as_int()? as u16;
            Some((r[0].as_int()? as u32, r[1].as_int()? as u32, port))
        })
        .collect()
}
