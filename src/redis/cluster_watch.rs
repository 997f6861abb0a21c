//! What changed in a Redis Cluster while the worker ran (README "Redis Cluster", "Operator
//! view"): the pinger reads the topology every second; [`TopologyWatch`] counts the changes
//! (a master replaced by its replica after a failover, slots moved by a resharding, replicas
//! added or gone) and words the last one; [`failed_nodes`] lists the nodes `CLUSTER NODES`
//! marks failed.

use std::collections::{BTreeMap, BTreeSet};

use crate::model::time::{now_ms, rfc3339};
use crate::redis::cluster::Topology;

/// The topology changes seen since start, for health's `redis.cluster`.
#[derive(Debug, Default)]
pub struct TopologyWatch {
    /// The topology last accepted (the first one read is the baseline, not a change).
    current: Option<Topology>,
    /// A different topology read once: accepted when the next read agrees, so that two
    /// nodes briefly disagreeing (the gossip of a failover) is not counted as changes.
    candidate: Option<Topology>,
    /// Changes accepted since start.
    changes: u64,
    /// When the last change was seen (epoch ms) and what it was.
    last: Option<(u64, String)>,
}

impl TopologyWatch {
    /// Records one read of the topology; the words of the change when it is one.
    pub fn observe(&mut self, t: Topology) -> Option<String> {
        let Some(current) = &self.current else {
            self.current = Some(t);
            return None;
        };
        if *current == t {
            self.candidate = None;
            return None;
        }
        if self.candidate.as_ref() != Some(&t) {
            self.candidate = Some(t);
            return None;
        }
        let what = describe(current, &t);
        self.current = Some(t);
        self.candidate = None;
        self.changes += 1;
        self.last = Some((now_ms(), what.clone()));
        Some(what)
    }

    /// How many changes were seen since start.
    pub fn changes(&self) -> u64 {
        self.changes
    }

    /// Adds `topology_changes` and `last_topology_change` (`at`, `what`; null before the first
    /// change) to health's `redis.cluster` facts.
    pub fn annotate(&self, facts: &mut serde_json::Value) {
        facts["topology_changes"] = self.changes.into();
        facts["last_topology_change"] = match &self.last {
            Some((at, what)) => serde_json::json!({"at": rfc3339(*at), "what": what}),
            None => serde_json::Value::Null,
        };
    }
}

/// The master serving each slot.
fn owners(t: &Topology) -> Vec<Option<&str>> {
    let mut owner = vec![None; 16384];
    for m in &t.masters {
        for (a, b) in &m.ranges {
            for s in *a..=*b {
                if let Some(o) = owner.get_mut(usize::from(s)) {
                    *o = Some(m.addr.as_str());
                }
            }
        }
    }
    owner
}

/// `(replica, master)` pairs of `t`.
fn replicas(t: &Topology) -> BTreeSet<(&str, &str)> {
    t.masters
        .iter()
        .flat_map(|m| m.replicas.iter().map(|r| (r.as_str(), m.addr.as_str())))
        .collect()
}

/// What differs from `old` to `new`, in words: `master A replaced by B (N slots)` when a
/// master is gone and B serves its slots (a failover), `N slots moved from A to B`, `N slots no
/// longer served (were on A)`, `replica R of M added`, `replica R of M gone`; `; `-separated.
pub fn describe(old: &Topology, new: &Topology) -> String {
    let (before, after) = (owners(old), owners(new));
    let mut moved: BTreeMap<(Option<&str>, Option<&str>), u32> = BTreeMap::new();
    for (a, b) in before.iter().zip(&after) {
        if a != b {
            *moved.entry((*a, *b)).or_insert(0) += 1;
        }
    }
    let is_master = |t: &Topology, addr: &str| t.masters.iter().any(|m| m.addr == addr);
    let mut parts: Vec<String> = moved
        .into_iter()
        .map(|(pair, n)| match pair {
            (Some(a), Some(b)) if !is_master(new, a) => {
                format!("master {a} replaced by {b} ({n} slots)")
            }
            (Some(a), Some(b)) => format!("{n} slots moved from {a} to {b}"),
            (Some(a), None) => format!("{n} slots no longer served (were on {a})"),
            (None, Some(b)) => format!("{n} slots now served by {b}"),
            (None, None) => String::new(),
        })
        .collect();
    let (was, now) = (replicas(old), replicas(new));
    for (r, m) in now.difference(&was) {
        parts.push(format!("replica {r} of {m} added"));
    }
    for (r, m) in was.difference(&now) {
        // A replica promoted to master is told by "replaced by".
        if !is_master(new, r) {
            parts.push(format!("replica {r} of {m} gone"));
        }
    }
    if parts.is_empty() {
        parts.push("masters or replicas listed differently".to_string());
    }
    parts.join("; ")
}

/// The nodes a `CLUSTER NODES` reply marks failed (`fail`: the cluster agreed it is down;
/// `fail?`: the answering node cannot reach it), as `{"node", "role", "state"}` with role
/// `master` or `replica` and state `fail` or `pfail`.
pub fn failed_nodes(reply: &str) -> Vec<serde_json::Value> {
    let mut out = Vec::new();
    for line in reply.lines() {
        let mut fields = line.split_whitespace();
        let (Some(_id), Some(addr), Some(flags)) = (fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        let flags: Vec<&str> = flags.split(',').collect();
        let state = if flags.contains(&"fail") {
            "fail"
        } else if flags.contains(&"fail?") {
            "pfail"
        } else {
            continue;
        };
        let role = if flags.contains(&"master") {
            "master"
        } else {
            "replica"
        };
        // `ip:port@cport[,hostname]`
        let node = addr.split(['@', ',']).next().unwrap_or(addr);
        out.push(serde_json::json!({"node": node, "role": role, "state": state}));
    }
    out.sort_by(|a, b| a["node"].as_str().cmp(&b["node"].as_str()));
    out
}

/// The health reason while a node is marked failed: `redis_cluster_node_failed`, naming the
/// nodes and what to do.
pub fn failed_reason(facts: &serde_json::Value) -> Option<(&'static str, String)> {
    let failed = facts["failed_nodes"].as_array()?;
    if failed.is_empty() {
        return None;
    }
    let names: Vec<String> = failed
        .iter()
        .map(|n| {
            format!(
                "{} ({}, {})",
                n["node"].as_str().unwrap_or("?"),
                n["role"].as_str().unwrap_or("?"),
                n["state"].as_str().unwrap_or("?")
            )
        })
        .collect();
    Some((
        "redis_cluster_node_failed",
        format!(
            "Redis Cluster node(s) marked failed: {}; a failed master's replica takes over \
             its slots, and until the node is back its slots have no replica: restart it (it \
             rejoins as a replica) or remove it (CLUSTER FORGET on every node)",
            names.join(", ")
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::redis::cluster::Master;

    fn master(addr: &str, replicas: &[&str], ranges: &[(u16, u16)]) -> Master {
        Master {
            addr: addr.into(),
            replicas: replicas.iter().map(|r| r.to_string()).collect(),
            ranges: ranges.to_vec(),
        }
    }

    fn three(first: Master) -> Topology {
        Topology {
            masters: vec![
                first,
                master("h:2", &["h:5"], &[(5461, 10922)]),
                master("h:3", &["h:6"], &[(10923, 16383)]),
            ],
        }
    }

    #[test]
    fn a_failover_is_one_change_once_two_reads_agree() {
        let before = three(master("h:1", &["h:4"], &[(0, 5460)]));
        let after = three(master("h:4", &[], &[(0, 5460)]));
        let mut w = TopologyWatch::default();
        assert_eq!(w.observe(before.clone()), None);
        assert_eq!(w.observe(before.clone()), None);
        assert_eq!(
            w.observe(after.clone()),
            None,
            "one read is not yet a change"
        );
        assert_eq!(
            w.observe(after.clone()).as_deref(),
            Some("master h:1 replaced by h:4 (5461 slots)")
        );
        assert_eq!(w.observe(after.clone()), None);
        let back = three(master("h:4", &["h:1"], &[(0, 5460)]));
        w.observe(back.clone());
        assert_eq!(w.observe(back).as_deref(), Some("replica h:1 of h:4 added"));
        assert_eq!(w.changes(), 2);
        let mut facts = serde_json::json!({});
        w.annotate(&mut facts);
        assert_eq!(facts["topology_changes"], 2);
        assert_eq!(
            facts["last_topology_change"]["what"],
            "replica h:1 of h:4 added"
        );
    }

    #[test]
    fn a_flapping_read_is_no_change() {
        let a = three(master("h:1", &["h:4"], &[(0, 5460)]));
        let b = three(master("h:4", &[], &[(0, 5460)]));
        let mut w = TopologyWatch::default();
        for t in [&a, &b, &a, &b, &a] {
            assert_eq!(w.observe(t.clone()), None);
        }
        assert_eq!(w.changes(), 0);
    }

    #[test]
    fn resharding_is_worded_as_slots_moved() {
        let old = three(master("h:1", &[], &[(0, 5460)]));
        let mut new = three(master("h:1", &[], &[(100, 5460)]));
        new.masters[1].ranges.insert(0, (0, 99));
        assert_eq!(describe(&old, &new), "100 slots moved from h:1 to h:2");
    }

    #[test]
    fn cluster_nodes_failed_flags_are_listed() {
        let reply = "a1 127.0.0.1:7001@17001 master,fail - 0 0 1 disconnected\n\
                     b2 127.0.0.1:7004@17004,host myself,master - 0 0 7 connected 0-5460\n\
                     c3 127.0.0.1:7005@17005 slave,fail? b2 0 0 7 connected\n";
        let f = failed_nodes(reply);
        assert_eq!(
            serde_json::Value::from(f.clone()),
            serde_json::json!([
                {"node": "127.0.0.1:7001", "role": "master", "state": "fail"},
                {"node": "127.0.0.1:7005", "role": "replica", "state": "pfail"}
            ])
        );
        let (code, message) = failed_reason(&serde_json::json!({"failed_nodes": f})).unwrap();
        assert_eq!(code, "redis_cluster_node_failed");
        assert!(
            message.starts_with(
                "Redis Cluster node(s) marked failed: 127.0.0.1:7001 (master, fail), \
                 127.0.0.1:7005 (replica, pfail);"
            ),
            "{message}"
        );
    }
}
