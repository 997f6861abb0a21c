//! Coordination notices on `events:<env>:coordination` (pub/sub), observed by
//! a SUBSCRIBE connection: instance started and stopped, a breaker opening,
//! going half-open and closing, DLQ replays and purges (API and CLI); dry runs
//! announce nothing.

use crate::util::api::Api;
use crate::util::resp::Subscriber;
use crate::util::worker::cli;
use crate::util::*;
use serde_json::{Value, json};
use std::time::Duration;

const TY: &str = "tickets.opened";
const TOKEN: &str = "coordination-token-2d9e4b6f1a";

fn notices(sub: &Subscriber) -> Vec<Value> {
    sub.messages()
        .iter()
        .map(|m| {
            serde_json::from_str(m).unwrap_or_else(|e| panic!("notice is not JSON ({e}): {m}"))
        })
        .collect()
}

fn of_kind(sub: &Subscriber, kind: &str) -> Vec<Value> {
    notices(sub)
        .into_iter()
        .filter(|n| n["kind"] == kind)
        .collect()
}

fn wait_kind(sub: &Subscriber, kind: &str, n: usize) -> Vec<Value> {
    let ok = try_wait_until(Duration::from_secs(15), || of_kind(sub, kind).len() >= n);
    assert!(
        ok,
        "no {n} `{kind}` notice(s); got:\n{}",
        sub.messages().join("\n")
    );
    of_kind(sub, kind)
}

#[test]
fn coordination_notices_for_start_stop_breaker_replay_and_purge() {
    let env = "coord";
    let mut sc = Scenario::new(env)
        .types(&[TY])
        .token(TOKEN)
        .config(|c| {
            c.failure_threshold = 2;
            c.open_for = "500ms".into();
            c.concurrency = 2;
            c.max_attempts = 5;
        })
        .workers(0)
        .start();
    let sub = Subscriber::start(sc.redis.port, None, &format!("events:{env}:coordination"));
    for id in ["b-1", "b-2"] {
        sc.sink.script(id, vec![Action::status(503), Action::ok()]);
    }
    for id in ["d-1", "d-2", "d-3", "d-4"] {
        sc.sink.script(id, vec![Action::status(400)]);
    }
    sc.add_worker();
    let (redis, sink, cfg) = (&sc.redis, &sc.sink, &sc.cfg);
    let worker = &mut sc.workers[0];
    worker.wait_ready(Duration::from_secs(15));

    let started = wait_kind(&sub, "instance_started", 1);
    let s = &started[0];
    assert_eq!(s["env"], env, "{s}");
    assert_eq!(s["group"], "group", "{s}");
    assert_eq!(s["consumer"], "w1", "{s}");
    assert_eq!(s["pid"], json!(worker.pid()), "{s}");
    assert!(s["at"].is_string(), "{s}");

    // Breaker: two retryable failures open it; after 500 ms a probe succeeds.
    publish(redis, env, TY, "b-1");
    publish(redis, env, TY, "b-2");
    let opened = wait_kind(&sub, "breaker_opened", 1);
    assert!(opened[0]["handler"].is_string(), "{}", opened[0]);
    assert_eq!(opened[0]["env"], env);
    wait_kind(&sub, "breaker_half_open", 1);
    wait_kind(&sub, "breaker_closed", 1);
    wait_until("b-1, b-2 delivered", Duration::from_secs(10), || {
        sink.success_counts().len() == 2
    });
    let order: Vec<String> = notices(&sub)
        .iter()
        .filter_map(|n| n["kind"].as_str())
        .filter(|k| k.starts_with("breaker_"))
        .map(str::to_string)
        .collect();
    assert_eq!(
        order.first().map(String::as_str),
        Some("breaker_opened"),
        "{order:?}"
    );
    assert_eq!(
        order.last().map(String::as_str),
        Some("breaker_closed"),
        "{order:?}"
    );

    // DLQ: dry runs say nothing; replays and purges (API and CLI) are announced.
    for id in ["d-1", "d-2", "d-3", "d-4"] {
        publish(redis, env, TY, id);
    }
    wait_until("4 dead letters", Duration::from_secs(10), || {
        redis.xlen(&dlq_key(env)) == 4
    });
    let dlq = dlq_by_id(redis, env);
    let api = Api::new(&cfg.api_addr(), Some(TOKEN));
    let r = api.post(
        "/api/events/dlq/replay",
        &json!({"all": true, "dry_run": true}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let r = api.post(
        "/api/events/dlq/purge",
        &json!({"all": true, "dry_run": true}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let out = cli(cfg, &["dlq", "replay", "--all", "--dry-run"]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);

    let r = api.post(
        "/api/events/dlq/replay",
        &json!({"ids": [dlq["d-1"][0].entry_id]}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let n = wait_kind(&sub, "dlq_replayed", 1);
    assert_eq!(
        (n[0]["count"].clone(), n[0]["by"].clone()),
        (json!(1), json!("api")),
        "{}",
        n[0]
    );
    assert_eq!(n[0]["env"], env);
    let out = cli(cfg, &["dlq", "replay", "--id", &dlq["d-2"][0].entry_id]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let n = wait_kind(&sub, "dlq_replayed", 2);
    assert_eq!(
        (n[1]["count"].clone(), n[1]["by"].clone()),
        (json!(1), json!("cli")),
        "{}",
        n[1]
    );
    let out = cli(
        cfg,
        &["dlq", "purge", "--id", &dlq["d-3"][0].entry_id, "--yes"],
    );
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let n = wait_kind(&sub, "dlq_purged", 1);
    assert_eq!(
        (n[0]["count"].clone(), n[0]["by"].clone()),
        (json!(1), json!("cli")),
        "{}",
        n[0]
    );
    wait_until(
        "d-1, d-2 dead-lettered again",
        Duration::from_secs(10),
        || redis.xlen(&dlq_key(env)) == 3,
    );
    let r = api.post(
        "/api/events/dlq/purge",
        &json!({"all": true, "confirm": true}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let n = wait_kind(&sub, "dlq_purged", 2);
    assert_eq!(
        (n[1]["count"].clone(), n[1]["by"].clone()),
        (json!(3), json!("api")),
        "{}",
        n[1]
    );
    // Nothing extra from the dry runs.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        of_kind(&sub, "dlq_replayed").len(),
        2,
        "{:?}",
        sub.messages()
    );
    assert_eq!(of_kind(&sub, "dlq_purged").len(), 2, "{:?}", sub.messages());

    // Stop.
    worker.sigterm();
    assert_eq!(
        worker
            .wait_exit(Duration::from_secs(10))
            .and_then(|s| s.code()),
        Some(0)
    );
    let stopped = wait_kind(&sub, "instance_stopped", 1);
    assert_eq!(stopped[0]["consumer"], "w1", "{}", stopped[0]);
    assert_eq!(stopped[0]["env"], env);
    for n in notices(&sub) {
        assert_eq!(n["env"], env, "{n}");
        assert!(n["at"].is_string() && n["kind"].is_string(), "{n}");
    }
}
