//! The single-node read connection of the worker's own (`src/redis/direct_conn.rs`, RESP2
//! with `src/redis/resp.rs`), where the fault suites do not already cover it (they cut,
//! kill and restart it: T17, T22a, T22e, T23 over TLS, T51 with an ACL user): a database
//! other than 0 (its SELECT), its name in `CLIENT LIST`, and replies larger than a socket
//! read (events of 20 KiB: a read of 64 is ~1.3 MB, read in many pieces). The acknowledging
//! connection likewise: open at start, its name, its database, XACK its last command. And every
//! connection of the worker to Redis (fred's and its own) sends TCP keepalive probes when idle.

use crate::util::faults::client_names;
use crate::util::resp::{Conn, Value};
use crate::util::*;
use std::time::Duration;

const TY: &str = "read.conn";

/// The lines of `CLIENT LIST` output of the worker's connections named `...<suffix>`.
fn named<'a>(listed: &'a str, suffix: &str) -> Vec<&'a str> {
    listed
        .lines()
        .filter(|l| l.contains(" name=event-worker:") && l.contains(suffix))
        .collect()
}

#[test]
fn the_read_connection_uses_the_urls_database_and_reads_replies_of_any_size() {
    let redis = RedisServer::start();
    let sink = HttpSink::start();
    let env = "readconn";
    let url = format!("redis://127.0.0.1:{}/3", redis.port);
    let cfg = WorkerConfig::new(env, &url).route(Route::http(&[TY], &sink.url()));
    let mut w = WorkerProcess::start("readconn", cfg);
    w.wait_ready(Duration::from_secs(15));

    let mut c = Conn::connect(redis.port).unwrap();
    let listed = c.cmd(&["CLIENT", "LIST"]).unwrap().as_str().unwrap();
    let reader = named(&listed, ":reader ");
    assert_eq!(reader.len(), 1, "one named read connection:\n{listed}");
    assert!(reader[0].contains(" db=3 "), "{}", reader[0]);
    // The acknowledging connection opens at start, before the first acknowledgement.
    let list = |c: &mut Conn| c.cmd(&["CLIENT", "LIST"]).unwrap().as_str().unwrap();
    wait_until(
        "the ack connection open before any event",
        Duration::from_secs(5),
        || named(&list(&mut c), ":ack ").len() == 1,
    );

    c.cmd(&["SELECT", "3"]).unwrap();
    let key = stream_key(env, TY);
    let n = 300;
    let filler = "x".repeat(20 * 1024);
    for i in 0..n {
        let (id, data) = (
            format!("big-{i:03}"),
            format!(r#"{{"i":{i},"pad":"{filler}"}}"#),
        );
        let added = c.cmd(&["XADD", &key, "*", "id", &id, "type", TY, "data", &data]);
        assert!(added.unwrap().as_str().is_some(), "XADD {id}");
    }
    wait_until("every event handled", Duration::from_secs(60), || {
        sink.success_counts().len() == n
    });
    std::thread::sleep(Duration::from_millis(300));
    let counts = sink.success_counts();
    let twice: Vec<_> = counts.iter().filter(|(_, c)| **c != 1).collect();
    assert!(twice.is_empty(), "handled more than once: {twice:?}");
    let want: std::collections::HashSet<_> = (0..n).map(|i| format!("big-{i:03}")).collect();
    let got: std::collections::HashSet<_> = counts.keys().cloned().collect();
    assert_eq!(
        got, want,
        "every event arrived whole (an unparsable body has no id)"
    );
    let pending = c.cmd(&["XPENDING", &key, "group"]).unwrap();
    let Value::Array(summary) = pending else {
        panic!("XPENDING: {pending:?}")
    };
    assert_eq!(summary[0].as_int(), Some(0), "nothing left pending");
    // The acknowledgements went on the acknowledging connection of its own, on database 3.
    let listed = list(&mut c);
    let acking = named(&listed, ":ack ");
    assert_eq!(acking.len(), 1, "one named ack connection:\n{listed}");
    assert!(
        acking[0].contains(" db=3 ") && acking[0].contains(" cmd=xack "),
        "{}",
        acking[0]
    );
    c.cmd(&["SELECT", "0"]).unwrap();
    let in_db0 = c.cmd(&["EXISTS", &key]).unwrap().as_int();
    assert_eq!(in_db0, Some(0), "nothing was written to database 0");
    w.assert_running();
}

/// Keepalive on every connection to Redis: `ss` shows a keepalive timer on each of the
/// worker's established connections to the server's port, the named three among them.
#[test]
fn every_redis_connection_of_the_worker_sends_keepalive_probes() {
    let redis = RedisServer::start();
    let sink = HttpSink::start();
    let url = format!("redis://127.0.0.1:{}", redis.port);
    let cfg = WorkerConfig::new("keepalive", &url).route(Route::http(&[TY], &sink.url()));
    let mut w = WorkerProcess::start("keepalive", cfg);
    w.wait_ready(Duration::from_secs(15));
    wait_until("the ack connection open", Duration::from_secs(5), || {
        client_names(&redis).iter().any(|n| n.ends_with(":ack"))
    });
    let names = client_names(&redis);
    for role in [":cmd", ":reader", ":ack"] {
        assert!(
            names.iter().any(|n| n.ends_with(role)),
            "no {role} connection: {names:?}"
        );
    }
    let filter = format!("( dport = :{} )", redis.port);
    let out = std::process::Command::new("ss")
        .args(["-tnopH", "state", "established", &filter])
        .output()
        .expect("ss (iproute2) runs");
    let listed = String::from_utf8_lossy(&out.stdout);
    let owner = format!("pid={},", w.pid());
    let connections: Vec<&str> = listed.lines().filter(|l| l.contains(&owner)).collect();
    assert!(
        connections.len() >= 3,
        "the worker's connections to Redis:\n{listed}"
    );
    for c in &connections {
        assert!(
            c.contains("timer:(keepalive,"),
            "no keepalive: {c}\n{listed}"
        );
    }
    w.assert_running();
}
