//! `event-worker check`: validates the configuration, reaches Redis, and lists the streams
//! `run` would consume, with warnings an operator should act on.

use std::time::Duration;

use crate::config::Config;
use crate::model::keys::Keys;
use crate::recover::unconsumed::{self, Unconsumed};
use crate::redis::store::Store;

use super::terminal::outln;

/// Runs `event-worker check`: prints what it found (JSON with `--json`), fails when Redis is
/// unreachable.
pub async fn check(config: Config, json: bool) -> anyhow::Result<()> {
    let store = Store::connect(&config, "check").await?;
    let latency = store.ping(std::time::Duration::from_secs(5)).await?;
    let keys = Keys::new(&config.env);
    let policy = store.maxmemory_policy().await;
    let streams = streams_to_consume(&store, &keys, &config).await;
    let cluster = match store.is_cluster() {
        true => Some(ClusterView::read(&store).await),
        false => None,
    };
    // The replicas of each master, for the `redis.wait_replicas` warning.
    let replicas: Vec<(String, usize)> = match (config.redis.wait_replicas, &cluster) {
        (0, _) => Vec::new(),
        (_, Some(c)) => c
            .topology
            .masters
            .iter()
            .map(|m| (m.addr.clone(), m.replicas.len()))
            .collect(),
        (_, None) => store
            .connected_replicas()
            .await
            .map(|n| vec![("this node".to_string(), n)])
            .unwrap_or_default(),
    };
    let unconsumed = match &streams {
        Ok(s) => unconsumed_streams(&store, &keys, s).await,
        Err(_) => Ok(Vec::new()),
    };
    store.quit().await;
    let streams = streams?;
    let unconsumed = unconsumed?;
    let mut warnings = config.warnings.clone();
    // A missing signing secret stops `run`, not `check`: reported, exit 0 (README "check").
    warnings.extend(
        config
            .signing_secret_problems(&|var| std::env::var(var).ok())
            .into_iter()
            .map(|p| format!("{p}; `run` will refuse to start")),
    );
    warnings.extend(memory_policy_warning(policy.as_deref()));
    warnings.extend(crate::redis::replicas::wait_replicas_warning(
        &config.redis,
        &replicas,
    ));
    if let Some(c) = &cluster {
        warnings.extend(crate::redis::cluster::health_reason(&c.facts).map(|(_, m)| m));
    }
    if config.outbox.enabled {
        warnings.extend(crate::outbox::fs_warning_for(&config.outbox.dir));
    }
    let found = Found {
        latency,
        streams,
        policy,
        warnings,
        cluster,
    };
    if json {
        print_json(&config, &keys, &found, &unconsumed);
    } else {
        print_human(&config, &keys, &found);
        print_unconsumed(&unconsumed);
    }
    Ok(())
}

/// Streams under the env's prefix that nobody consumes (see `recover::unconsumed`), apart
/// from the ones `run` would consume.
async fn unconsumed_streams(
    store: &Store,
    keys: &Keys,
    streams: &[(String, usize)],
) -> anyhow::Result<Vec<Unconsumed>> {
    let followed = streams.iter().map(|(k, _)| k.clone()).collect();
    Ok(unconsumed::find(store, keys, &followed).await?)
}

/// The human lines of the unconsumed-streams report: at most `MAX_LISTED` streams, then
/// the totals.
fn print_unconsumed(found: &[Unconsumed]) {
    if found.is_empty() {
        return;
    }
    for u in found.iter().take(unconsumed::MAX_LISTED) {
        outln!("warning: {}", unconsumed::describe(u));
    }
    outln!(
        "warning: {} stream(s) with {} entries in all are not consumed by anyone{}",
        found.len(),
        found.iter().map(|u| u.entries).sum::<u64>(),
        if found.len() > unconsumed::MAX_LISTED {
            format!(" ({} listed)", unconsumed::MAX_LISTED)
        } else {
            String::new()
        }
    );
}

/// What `check` found in Redis.
struct Found {
    /// PING round trip.
    latency: Duration,
    /// Streams `run` would consume, with their route index.
    streams: Vec<(String, usize)>,
    /// `maxmemory-policy`, when CONFIG GET is allowed.
    policy: Option<String>,
    /// The configuration's warnings plus Redis'.
    warnings: Vec<String>,
    /// On a Redis Cluster: its state and topology.
    cluster: Option<ClusterView>,
}

/// What `check` shows of a Redis Cluster.
struct ClusterView {
    /// State, masters, replicas, slots covered (as health reports them).
    facts: serde_json::Value,
    /// The masters (empty when CLUSTER SLOTS failed).
    topology: crate::redis::cluster::Topology,
}

impl ClusterView {
    async fn read(store: &Store) -> ClusterView {
        ClusterView {
            facts: store.cluster_facts().await,
            topology: store.topology().await.unwrap_or_default(),
        }
    }

    /// `host:port` of the master holding `key`, or `no master` (uncovered slot).
    fn node_of(&self, key: &str) -> String {
        self.topology
            .master_of(key)
            .map_or_else(|| "no master".to_string(), |m| m.addr.clone())
    }

    fn to_json(&self, streams: &[(String, usize)]) -> serde_json::Value {
        let masters: Vec<_> = self
            .topology
            .masters
            .iter()
            .map(|m| serde_json::json!({"addr": m.addr, "replicas": m.replicas, "slots": m.slot_count()}))
            .collect();
        let mut out = self.facts.clone();
        out["nodes"] = masters.into();
        out["streams"] = streams
            .iter()
            .map(|(k, _)| serde_json::json!({"stream": k, "node": self.node_of(k)}))
            .collect();
        out
    }

    fn print(&self) {
        let f = &self.facts;
        outln!(
            "redis cluster: state {}, {} master(s), {} replica(s), {} of 16384 slots covered",
            f["state"].as_str().unwrap_or("unknown"),
            self.topology.masters.len(),
            f["replicas"].as_u64().unwrap_or(0),
            f["slots_covered"].as_u64().unwrap_or(0)
        );
        for m in &self.topology.masters {
            let replicas = match m.replicas.is_empty() {
                true => "no replica".to_string(),
                false => format!("replicas {}", m.replicas.join(", ")),
            };
            outln!("  master {} ({} slots, {replicas})", m.addr, m.slot_count());
        }
    }
}

/// The streams `run` would consume now, with the index of the route serving each: exact route
/// types, then existing streams a glob matches.
async fn streams_to_consume(
    store: &Store,
    keys: &Keys,
    config: &Config,
) -> anyhow::Result<Vec<(String, usize)>> {
    let patterns: Vec<(usize, Vec<String>)> = config
        .routes
        .iter()
        .enumerate()
        .map(|(i, r)| (i, r.types.clone()))
        .collect();
    let mut streams: Vec<(String, usize)> = Vec::new();
    let existing = store
        .scan_streams(&format!("{}*", keys.prefix()), 10_000, &|_| true)
        .await?;
    for (i, route) in &patterns {
        for p in route {
            if !p.contains('*') {
                streams.push((keys.stream(p), *i));
            }
        }
    }
    for key in existing {
        if let Some(t) = keys.type_of_stream(&key)
            && let Some((i, _)) = patterns
                .iter()
                .find(|(_, ps)| ps.iter().any(|p| crate::model::keys::glob_matches(p, t)))
            && !streams.iter().any(|(k, _)| *k == key)
        {
            streams.push((key, *i));
        }
    }
    Ok(streams)
}

/// The warning `check` gives about Redis' `maxmemory-policy`, if any.
fn memory_policy_warning(policy: Option<&str>) -> Option<String> {
    match policy {
        Some("noeviction") => None,
        Some(p) => Some(format!(
            "maxmemory-policy is {p}, not noeviction: eviction can silently delete events"
        )),
        None => Some(
            "could not read maxmemory-policy (CONFIG not allowed); make sure it is noeviction"
                .to_string(),
        ),
    }
}

fn print_json(config: &Config, keys: &Keys, found: &Found, unconsumed: &[Unconsumed]) {
    let Found {
        latency,
        streams,
        policy,
        warnings,
        cluster,
    } = found;
    let routes: Vec<_> = config
        .routes
        .iter()
        .enumerate()
        .map(|(i, r)| serde_json::json!({"types": r.types, "handler": r.handler_name(i)}))
        .collect();
    let out = serde_json::json!({
        "ok": true,
        "env": config.env,
        "redis": config.redis_url.to_string(),
        "redis_latency_ms": latency.as_secs_f64() * 1000.0,
        "group": config.group,
        "consumer": config.consumer,
        "routes": routes,
        "streams": streams.iter().map(|(k, i)| serde_json::json!({"stream": k, "route": i})).collect::<Vec<_>>(),
        "redeliver": keys.redeliver(&config.group),
        "maxmemory_policy": policy,
        "warnings": warnings,
        "unconsumed": unconsumed::report(unconsumed),
    });
    let mut out = out;
    if let Some(c) = cluster {
        out["cluster"] = c.to_json(streams);
    }
    println!("{out}");
}

fn print_human(config: &Config, keys: &Keys, found: &Found) {
    let Found {
        latency,
        streams,
        warnings,
        cluster,
        ..
    } = found;
    outln!(
        "config ok: env={} group={} consumer={}",
        config.env,
        config.group,
        config.consumer
    );
    outln!(
        "redis ok: {} ({:.2} ms)",
        config.redis_url,
        latency.as_secs_f64() * 1000.0
    );
    if let Some(c) = cluster {
        c.print();
    }
    for (i, r) in config.routes.iter().enumerate() {
        outln!("route {i}: {} -> {}", r.types.join(", "), r.handler_name(i));
    }
    outln!(
        "would consume {} stream(s) plus {}:",
        streams.len(),
        keys.redeliver(&config.group)
    );
    for (k, i) in streams {
        match cluster {
            Some(c) => outln!("  {k} (route {i}) on {}", c.node_of(k)),
            None => outln!("  {k} (route {i})"),
        }
    }
    for w in warnings {
        outln!("warning: {w}");
    }
}
