//! Redis Cluster support of the [`Store`] (README "Redis Cluster"): the hash slot of a key,
//! reads grouped by slot (paced by `consume::cluster_reads`), the topology (masters,
//! replicas, slot coverage) and SCAN on every master. The moves across slots are in
//! `redis::moves_split`.

use std::time::Duration;

use fred::prelude::*;
use fred::types::config::Server;
use fred::types::scripts::Script;
use fred::types::{ClusterHash, CustomCommand, Value};

use crate::redis::error::{RedisErrorKind, StoreError};
use crate::redis::store::{Entry, Reader, Store};
use crate::redis::streams::text;

/// The Redis Cluster hash slot of `key` (hash tags included).
pub fn slot(key: &str) -> u16 {
    fred::util::redis_keyslot(key.as_bytes())
}

/// `streams` grouped by hash slot, each group in the order of its first stream.
pub fn group_by_slot(streams: &[String]) -> Vec<Vec<String>> {
    let mut groups: Vec<(u16, Vec<String>)> = Vec::new();
    for s in streams {
        let sl = slot(s);
        match groups.iter_mut().find(|(g, _)| *g == sl) {
            Some((_, v)) => v.push(s.clone()),
            None => groups.push((sl, vec![s.clone()])),
        }
    }
    groups.into_iter().map(|(_, v)| v).collect()
}

/// The DLQ scripts as `redis::dlq` builds them: the shared counts head, then the script.
macro_rules! counted {
    ($file:literal) => {
        concat!(
            include_str!("scripts/dlq_counts.lua"),
            include_str!(concat!("scripts/", $file))
        )
    };
}

/// Every script sent with EVALSHA (all but the migration template, which is built per
/// migration), as its callers send it (same text, same SHA-1).
const SCRIPTS: [&str; 21] = [
    include_str!("scripts/append_history.lua"),
    include_str!("scripts/dlq_stats.lua"),
    include_str!("scripts/forward_due.lua"),
    include_str!("scripts/move_to_retry.lua"),
    include_str!("scripts/publish_once.lua"),
    include_str!("scripts/push_append.lua"),
    include_str!("scripts/push_device_ack.lua"),
    include_str!("scripts/push_device_index.lua"),
    include_str!("scripts/push_resume.lua"),
    include_str!("scripts/split_dest_retry.lua"),
    include_str!("scripts/split_forward_done.lua"),
    include_str!("scripts/split_forward_take.lua"),
    include_str!("scripts/split_source_ack.lua"),
    counted!("move_to_stream.lua"),
    counted!("retry_to_dlq.lua"),
    counted!("split_dest_stream.lua"),
    counted!("replay.lua"),
    counted!("dlq_purge.lua"),
    counted!("dlq_trim.lua"),
    counted!("dlq_count_step.lua"),
    counted!("dlq_scan.lua"),
];

/// The longest [`Store::preload_scripts`] waits for the masters.
const PRELOAD_WAIT: Duration = Duration::from_secs(5);

/// One master of the cluster: its address, its replicas and its slot ranges.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Master {
    /// `host:port`.
    pub addr: String,
    /// `host:port` of each replica.
    pub replicas: Vec<String>,
    /// Slot ranges it serves, inclusive.
    pub ranges: Vec<(u16, u16)>,
}

impl Master {
    /// Whether this master serves `slot`.
    pub fn serves(&self, slot: u16) -> bool {
        self.ranges.iter().any(|(a, b)| (*a..=*b).contains(&slot))
    }

    /// How many slots it serves.
    pub fn slot_count(&self) -> u32 {
        self.ranges.iter().map(|(a, b)| u32::from(b - a) + 1).sum()
    }
}

/// The cluster as `CLUSTER SLOTS` describes it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Topology {
    /// Masters sorted by address.
    pub masters: Vec<Master>,
}

impl Topology {
    /// Slots served by some master (16384 when the cluster covers every slot).
    pub fn slots_covered(&self) -> u32 {
        self.masters.iter().map(Master::slot_count).sum()
    }

    /// The master serving `key`'s slot.
    pub fn master_of(&self, key: &str) -> Option<&Master> {
        let s = slot(key);
        self.masters.iter().find(|m| m.serves(s))
    }
}

/// `host:port` of one `CLUSTER SLOTS` node entry `[host, port, id, ...]`.
fn node_addr(node: &Value) -> Option<String> {
    let parts = node.clone().into_array();
    let host = text(parts.first()?)?;
    let port = parts.get(1)?.as_u64()?;
    Some(format!("{host}:{port}"))
}

/// Parses a `CLUSTER SLOTS` reply.
pub fn parse_slots(reply: Value) -> Topology {
    let mut masters: Vec<Master> = Vec::new();
    for range in reply.into_array() {
        let parts = range.into_array();
        let (Some(a), Some(b)) = (
            parts.first().and_then(Value::as_u64),
            parts.get(1).and_then(Value::as_u64),
        ) else {
            continue;
        };
        let Some(addr) = parts.get(2).and_then(node_addr) else {
            continue;
        };
        let replicas: Vec<String> = parts.iter().skip(3).filter_map(node_addr).collect();
        let range = (a as u16, b as u16);
        match masters.iter_mut().find(|m| m.addr == addr) {
            Some(m) => {
                m.ranges.push(range);
                for r in replicas {
                    if !m.replicas.contains(&r) {
                        m.replicas.push(r);
                    }
                }
            }
            None => masters.push(Master {
                addr,
                replicas,
                ranges: vec![range],
            }),
        }
    }
    for m in &mut masters {
        m.ranges.sort();
        m.replicas.sort();
    }
    masters.sort_by(|a, b| a.addr.cmp(&b.addr));
    Topology { masters }
}

/// The health reason for cluster facts ([`Store::cluster_facts`]) that are not ok: a state
/// other than `ok`, or slots no master serves.
pub fn health_reason(facts: &serde_json::Value) -> Option<(&'static str, String)> {
    let state = facts["state"].as_str().unwrap_or("unknown");
    let covered = facts["slots_covered"].as_u64().unwrap_or(0);
    if state == "ok" && covered == 16384 {
        return None;
    }
    let why = facts["error"]
        .as_str()
        .map(|e| format!(" ({e})"))
        .unwrap_or_default();
    Some((
        "redis_cluster",
        format!(
            "Redis Cluster state is {state}{why}, {covered} of 16384 slots served: streams in \
             the other slots are not consumed until the cluster is repaired (CLUSTER INFO)"
        ),
    ))
}

/// Names the connections of `client` `name` (`CLIENT SETNAME`, visible in `CLIENT LIST`). On a
/// single node: its one connection. On a cluster fred keeps one connection per master and
/// routes a plain `CLIENT SETNAME` to one of them, so the name is sent to `server` (the node
/// fred just (re)connected to) or, without one, to every master `CLUSTER SLOTS` lists.
/// Best effort: a failure leaves the connection unnamed.
pub(super) async fn name_connections(
    client: &Client,
    name: &str,
    server: Option<fred::types::config::Server>,
    cluster: bool,
) {
    let setname = || CustomCommand::new_static("CLIENT", ClusterHash::Random, false);
    let args = vec!["SETNAME".to_string(), name.to_string()];
    if !cluster {
        let _: Result<Value, _> = client.custom(setname(), args).await;
        return;
    }
    let servers = match server {
        Some(s) => vec![s],
        None => {
            let slots: Result<Value, _> = client
                .custom(
                    CustomCommand::new_static("CLUSTER", ClusterHash::Random, false),
                    vec!["SLOTS"],
                )
                .await;
            let masters = slots.map(|r| parse_slots(r).masters).unwrap_or_default();
            masters
                .iter()
                .filter_map(|m| {
                    let (host, port) = m.addr.rsplit_once(':')?;
                    Some((host, port.parse::<u16>().ok()?).into())
                })
                .collect()
        }
    };
    for s in servers {
        let _: Result<Value, _> = client
            .with_cluster_node(s)
            .custom(setname(), args.clone())
            .await;
    }
}

/// After fred (re)connected `client` to `server`: loads every script there (`SCRIPT LOAD`, at
/// most [`PRELOAD_WAIT`]). A restarted node has no script, and fred's load on first use goes to
/// every master and waits for all of them (see [`Store::preload_scripts`]): one frozen master
/// would then hold up every script call of the worker. Best effort, like the preload.
pub(super) async fn preload_scripts_on(client: &Client, server: Server, cluster: bool) {
    let node = if cluster {
        client.with_cluster_node(server)
    } else {
        client.with_options(&Options::default())
    };
    let load = async {
        for lua in SCRIPTS {
            let command = CustomCommand::new_static("SCRIPT", ClusterHash::Random, false);
            let loaded: Result<Value, _> = node.custom(command, vec!["LOAD", lua]).await;
            if let Err(e) = loaded {
                tracing::debug!(error = %e, "script not preloaded; loaded on first use");
                return;
            }
        }
    };
    let _ = tokio::time::timeout(PRELOAD_WAIT, load).await;
}

impl Store {
    /// On a cluster, loads every script on every master once (`SCRIPT LOAD`, at most
    /// [`PRELOAD_WAIT`]; a failure only leaves the script to be loaded on first use). fred
    /// loads a script on first use (`NOSCRIPT`) on every master at once, after waiting for
    /// every in-flight reply of the client: while one master does not answer (frozen, failing
    /// over), that load held up every command of the worker, for every master, until it
    /// answered (e.g. a publish to a healthy master fell back to the outbox).
    pub(super) async fn preload_scripts(&self) {
        if !self.cluster {
            return;
        }
        let load = async {
            for lua in SCRIPTS {
                if let Err(e) = Script::from_lua(lua).load(&self.cmd).await {
                    tracing::debug!(error = %e, "script not preloaded; loaded on first use");
                }
            }
        };
        let _ = tokio::time::timeout(PRELOAD_WAIT, load).await;
    }

    /// Whether this store talks to a Redis Cluster.
    pub fn is_cluster(&self) -> bool {
        self.cluster
    }

    /// Whether `a` and `b` can be touched by one script: always on a single node, on a
    /// cluster when they hash to one slot.
    pub fn same_slot(&self, a: &str, b: &str) -> bool {
        !self.cluster || slot(a) == slot(b)
    }

    /// The cluster's masters, replicas and slot ranges (`CLUSTER SLOTS`).
    ///
    /// # Errors
    /// Redis errors (on a single node: the command is refused).
    pub async fn topology(&self) -> Result<Topology, StoreError> {
        Ok(parse_slots(self.cluster_command("SLOTS").await?))
    }

    /// `CLUSTER <sub>` on the node fred picks.
    async fn cluster_command(&self, sub: &'static str) -> Result<Value, StoreError> {
        self.cmd
            .custom(
                CustomCommand::new_static("CLUSTER", ClusterHash::Random, false),
                vec![sub],
            )
            .await
            .map_err(|e| self.error(format!("CLUSTER {sub}"), e))
    }

    /// `CLUSTER INFO`'s `cluster_state` (`ok` or `fail`) as the node fred picks sees it.
    ///
    /// # Errors
    /// Redis errors.
    pub async fn cluster_state(&self) -> Result<String, StoreError> {
        let reply = self.cluster_command("INFO").await?;
        let info = text(&reply).unwrap_or_default();
        Ok(info
            .lines()
            .find_map(|l| l.strip_prefix("cluster_state:"))
            .unwrap_or("unknown")
            .trim()
            .to_string())
    }

    /// What health reports as `redis.cluster`: `state` (`ok`, `fail`, or `unknown` with the
    /// `error`), `masters`, `replicas`, `slots_covered` (of 16384) and `failed_nodes` (see
    /// `cluster_watch::failed_nodes`; left out when `CLUSTER NODES` is refused).
    pub async fn cluster_facts(&self) -> serde_json::Value {
        self.cluster_snapshot().await.0
    }

    /// [`Store::cluster_facts`] and the topology they were read from (`None` when it could
    /// not be read).
    pub async fn cluster_snapshot(&self) -> (serde_json::Value, Option<Topology>) {
        let (state, topology, nodes) = tokio::join!(
            self.cluster_state(),
            self.topology(),
            self.cluster_command("NODES")
        );
        match (state, topology) {
            (Ok(state), Ok(t)) => {
                let mut facts = serde_json::json!({
                    "state": state,
                    "masters": t.masters.len(),
                    "replicas": t.masters.iter().map(|m| m.replicas.len()).sum::<usize>(),
                    "slots_covered": t.slots_covered(),
                });
                if let Some(nodes) = nodes.ok().as_ref().and_then(text) {
                    facts["failed_nodes"] = super::cluster_watch::failed_nodes(&nodes).into();
                }
                (facts, Some(t))
            }
            (Err(e), _) | (_, Err(e)) => (
                serde_json::json!({"state": "unknown", "error": e.to_string()}),
                None,
            ),
        }
    }

    /// What to SCAN: on a cluster one slot of each master (SCAN is routed by that slot, so
    /// a master that gave its slots away meanwhile is never addressed by name: the slot's
    /// new owner answers); `None` on a single node.
    pub(super) async fn scan_targets(&self) -> Result<Option<Vec<u16>>, StoreError> {
        if !self.cluster {
            return Ok(None);
        }
        let topology = self.topology().await?;
        let slots = topology
            .masters
            .iter()
            .filter_map(|m| m.ranges.first().map(|(a, _)| *a))
            .collect();
        Ok(Some(slots))
    }

    /// XREADGROUP on a cluster: one read per slot group of `groups` (each group's streams in
    /// one slot), at most `count` entries per stream, none blocking, all sent at once on the
    /// reader connection (fred pipelines them per master: one write per master, the masters
    /// answer in parallel). A blocked command would hold its master's connection (and every
    /// read queued behind it on that master) until its BLOCK ends, so a cluster read never
    /// blocks: the consumer paces its polls instead (`consume::cluster_reads`). Any error fails
    /// the whole read (entries read by the others are pending on this consumer; the reader
    /// takes them back at once, as after a read cut off in flight).
    ///
    /// # Errors
    /// Redis errors, NOGROUP included.
    pub async fn read_slot_groups(
        &self,
        group: &str,
        consumer: &str,
        groups: &[Vec<String>],
        count: usize,
    ) -> Result<Vec<Entry>, StoreError> {
        let Reader::Cluster(reader) = &self.reader else {
            return Err(StoreError::new(
                "XREADGROUP",
                RedisErrorKind::Config,
                "slot-grouped reads need a cluster connection",
            ));
        };
        let reads = groups
            .iter()
            .map(|g| self.read_group_one(reader, group, consumer, g, count));
        let mut entries = Vec::new();
        let mut failed = None;
        for (r, g) in futures::future::join_all(reads)
            .await
            .into_iter()
            .zip(groups)
        {
            match r {
                Ok(read) => entries.extend(read),
                Err(e) => {
                    self.count_read_error(g.first().map_or(0, |s| slot(s)));
                    failed = failed.or(Some(e));
                }
            }
        }
        failed.map_or(Ok(entries), Err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_follow_hash_tags() {
        assert_eq!(slot("foo"), 12182);
        assert_eq!(slot("a:{events:e:x}"), slot("events:e:x"));
        let g = group_by_slot(&["a{1}".into(), "b{2}".into(), "c{1}".into()]);
        assert_eq!(g, vec![vec!["a{1}", "c{1}"], vec!["b{2}"]]);
    }

    #[test]
    fn every_script_file_is_preloaded_as_its_callers_send_it() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/src/redis/scripts");
        let head = include_str!("scripts/dlq_counts.lua");
        let mut files: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|f| f != "dlq_counts.lua" && f != "apply_migration.lua")
            .collect();
        files.sort();
        assert_eq!(files.len(), SCRIPTS.len(), "{files:?}");
        for f in files {
            let text = std::fs::read_to_string(format!("{dir}/{f}")).unwrap();
            let counted = format!("{head}{text}");
            assert!(
                SCRIPTS.iter().any(|s| *s == text || *s == counted),
                "{f} is not preloaded"
            );
        }
        for sent in [
            crate::redis::dlq::MOVE_TO_STREAM,
            crate::redis::dlq::RETRY_TO_DLQ,
            crate::redis::dlq::SPLIT_DEST_STREAM,
        ] {
            assert!(SCRIPTS.contains(&sent));
        }
    }

    #[test]
    fn cluster_slots_reply_is_parsed_per_master() {
        let node = |h: &str, p: i64| Value::Array(vec![h.into(), p.into(), "id".into()]);
        let range = |a: i64, b: i64, m: Value, r: Vec<Value>| {
            let mut v = vec![a.into(), b.into(), m];
            v.extend(r);
            Value::Array(v)
        };
        let reply = Value::Array(vec![
            range(
                0,
                5460,
                node("127.0.0.1", 7000),
                vec![node("127.0.0.1", 7003)],
            ),
            range(5461, 10922, node("127.0.0.1", 7001), vec![]),
            range(10923, 16383, node("127.0.0.1", 7000), vec![]),
        ]);
        let t = parse_slots(reply);
        assert_eq!(t.masters.len(), 2);
        assert_eq!(t.masters[0].addr, "127.0.0.1:7000");
        assert_eq!(t.masters[0].replicas, vec!["127.0.0.1:7003"]);
        assert_eq!(t.masters[0].slot_count(), 5461 + 5461);
        assert_eq!(t.slots_covered(), 16384);
        assert_eq!(t.master_of("foo").unwrap().addr, "127.0.0.1:7000");
    }
}
