//! Outcomes are counted once, when they are durable: a dead letter whose move keeps
//! failing before it runs leaves the entry pending; delivered again, it is dead-lettered
//! and counted by that delivery only.
//!
//! The move is refused by the server before the script starts (the worker's user loses
//! EVALSHA for a while: `NOPERM`). A paused server (CLIENT PAUSE WRITE) only holds the
//! script, which then runs when the pause ends, after the client gave up on it; and fred
//! replays a command on a cut connection up to three times, so neither reliably makes
//! every one of the ten tries fail before it runs.

use crate::util::*;
use std::time::Duration;

const TY: &str = "orders.created";

#[test]
fn a_dead_letter_whose_move_failed_is_counted_once_after_redelivery() {
    let env = "settlecount";
    let redis = RedisServer::start();
    let _dump = redis.dump_on_panic(env);
    let sink = HttpSink::start();
    // The first run answers late, so the move is refused from its first try.
    sink.script(
        "perm-0",
        vec![
            Action::delayed(400, Duration::from_millis(1500)),
            Action::status(400),
        ],
    );
    let mut cfg = WorkerConfig::new(env, &redis.url()).route(Route::http(&[TY], &sink.url()));
    cfg.visibility_timeout = "3s".into();
    let mut worker = WorkerProcess::start("w1", cfg);
    worker.wait_ready(Duration::from_secs(15));
    publish(&redis, env, TY, "perm-0");
    wait_until("the handler runs", Duration::from_secs(15), || {
        sink.in_progress() == 1
    });

    // Every try of the move (ten, about 21 s of backoff) is refused before it runs.
    redis.cmd(&["ACL", "SETUSER", "default", "-evalsha"]);
    wait_until(
        "the worker gives up the move",
        Duration::from_secs(60),
        || worker.output().contains("outcome not recorded"),
    );
    redis.cmd(&["ACL", "SETUSER", "default", "+evalsha"]);
    assert_eq!(
        redis.xlen(&dlq_key(env)),
        0,
        "the failed move must not have run"
    );

    // Pending and no longer in flight: the visibility-timeout backstop delivers it again.
    wait_until(
        "dead-lettered on redelivery",
        Duration::from_secs(30),
        || redis.xlen(&dlq_key(env)) == 1 && drained(&redis, env, "group", &[TY]),
    );
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        sink.requests_for("perm-0").len(),
        2,
        "{}",
        sink.ledger_dump()
    );
    let m = parse_metrics(&worker.metrics());
    let base = [("env", env), ("group", "group"), ("type", TY)];
    let dead = |extra: (&'static str, &'static str)| {
        let mut want = base.to_vec();
        want.push(extra);
        want
    };
    let dead_lettered = sum(
        &m,
        "event_worker_events_total",
        &dead(("outcome", "dead_lettered")),
    );
    let by_reason = sum(
        &m,
        "event_worker_dead_lettered_total",
        &dead(("reason", "permanent_error")),
    );
    assert_eq!(
        (dead_lettered, by_reason),
        (1.0, 1.0),
        "one dead letter, counted once\n{}",
        worker.logs()
    );
    assert_eq!(redis.xlen(&dlq_key(env)), 1);
}
