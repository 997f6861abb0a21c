//! A Redis Cluster master restarted (its script cache empty) while the worker runs: the
//! worker loads its scripts there as it reconnects, and a script missing anyway is loaded on
//! that node only, so a frozen master elsewhere holds nothing up (README "Redis Cluster").

use crate::cluster::spread_types;
use crate::util::api::Api;
use crate::util::cluster::Cluster;
use crate::util::faults::client_names;
use crate::util::*;
use serde_json::json;
use std::time::{Duration, Instant};

const TOKEN: &str = "cluster-restart-token-0123456789";

/// Index in `c.nodes` of the node on `port`.
fn index_of(c: &Cluster, port: u16) -> usize {
    c.nodes.iter().position(|n| n.port == port).unwrap()
}

/// Whether the node has the script with this SHA1.
fn has_script(node: &RedisServer, sha: &str) -> bool {
    let reply = node.cmd(&["SCRIPT", "EXISTS", sha]);
    format!("{reply:?}").contains("Int(1)")
}

/// Master A is killed with -9 and restarted (no script cached). Once the worker has
/// reconnected to it, A has the worker's scripts without any of them having been run there.
/// Then A's cache is flushed and master B frozen: a publish of a type on A still answers 202
/// within a second (the missing publish script is loaded on A alone). Before, nothing loaded
/// the scripts on reconnect, and the publish's load went to every master and waited for B.
#[test]
fn cluster_restarted_master_gets_the_scripts_and_a_frozen_one_holds_nothing_up() {
    let mut c = Cluster::start(3);
    let env = "rst";
    let types = spread_types(&c, env, 3);
    let (a, b) = (
        c.port_of(&stream_key(env, &types[0])),
        c.port_of(&stream_key(env, &types[1])),
    );
    let mut cfg = WorkerConfig::new(env, &c.url())
        .route(Route::blackhole(&["*"]))
        .api_token(TOKEN);
    cfg.consumer = Some("rst-w1".into());
    let mut w = WorkerProcess::start("w1", cfg);
    w.wait_ready(Duration::from_secs(20));
    let history = include_str!("../../src/redis/scripts/append_history.lua");
    let sha = c.nodes[index_of(&c, b)].cmd(&["SCRIPT", "LOAD", history]);
    let sha = sha.as_str().expect("a SHA1").to_string();
    let ia = index_of(&c, a);
    c.kill9(ia);
    c.restart(ia);
    c.wait_ok(Duration::from_secs(30));
    wait_until(
        "the worker reconnected to the restarted master",
        Duration::from_secs(20),
        || client_names(&c.nodes[ia]).contains(&"event-worker:rst-w1:cmd".to_string()),
    );
    wait_until(
        "the scripts loaded on the restarted master",
        Duration::from_secs(5),
        || has_script(&c.nodes[ia], &sha),
    );

    c.nodes[ia].cmd(&["SCRIPT", "FLUSH"]);
    let api = Api::new(&w.config.api_addr(), Some(TOKEN));
    let frozen = c.nodes[index_of(&c, b)].pid();
    send_signal(frozen, "STOP");
    let t = Instant::now();
    let r = api.post(
        "/api/events/publish",
        &json!({"type": types[0], "data": {}, "id": "after-restart"}),
    );
    let took = t.elapsed();
    send_signal(frozen, "CONT");
    assert_eq!(r.status, 202, "{}", r.body);
    assert_eq!(r.json()["queued"], json!(null), "{}", r.body);
    assert!(
        took < Duration::from_secs(1),
        "the publish took {took:?} with another master frozen"
    );
}
