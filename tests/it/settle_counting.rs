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
    let mut s = Scenario::new("settle-count")
        .env("settlecount")
        .types(&[TY])
        .config(|c| c.visibility_timeout = "3s".into())
        .start();
    // The first run answers late, so the move is refused from its first try.
    s.sink.script(
        "perm-0",
        vec![
            Action::delayed(400, Duration::from_millis(1500)),
            Action::status(400),
        ],
    );
    s.publish("perm-0");
    wait_until("the handler runs", Duration::from_secs(15), || {
        s.sink.in_progress() == 1
    });

    // Every try of the move (ten, about 21 s of backoff) is refused before it runs.
    s.redis.cmd(&["ACL", "SETUSER", "default", "-evalsha"]);
    wait_until(
        "the worker gives up the move",
        Duration::from_secs(60),
        || s.workers[0].output().contains("outcome not recorded"),
    );
    s.redis.cmd(&["ACL", "SETUSER", "default", "+evalsha"]);
    let dlq = dlq_key(&s.env);
    assert_eq!(s.redis.xlen(&dlq), 0, "the failed move must not have run");

    // Pending and no longer in flight: the visibility-timeout backstop delivers it again.
    wait_until(
        "dead-lettered on redelivery",
        Duration::from_secs(30),
        || s.redis.xlen(&dlq) == 1 && drained(&s.redis, &s.env, "group", &[TY]),
    );
    std::thread::sleep(Duration::from_millis(500));
    let requests = s.sink.requests_for("perm-0").len();
    assert_eq!(requests, 2, "{}", s.sink.ledger_dump());
    let m = parse_metrics(&s.w().metrics());
    let counted = |name: &str, extra: (&str, &str)| {
        let want = [
            ("env", s.env.as_str()),
            ("group", "group"),
            ("type", TY),
            extra,
        ];
        sum(&m, name, &want)
    };
    let dead_lettered = counted("event_worker_events_total", ("outcome", "dead_lettered"));
    let by_reason = counted(
        "event_worker_dead_lettered_total",
        ("reason", "permanent_error"),
    );
    assert_eq!(
        (dead_lettered, by_reason),
        (1.0, 1.0),
        "one dead letter, counted once\n{}",
        s.w().logs()
    );
    assert_eq!(s.redis.xlen(&dlq), 1);
}

/// T65: a dead-letter move whose XACK is refused (the worker's user loses XACK for a while)
/// keeps its DLQ entry, and its retries add nothing: one DLQ entry, counted once, the guard
/// gone. Before the guard, every retry of the script added the entry again.
#[test]
fn t65_a_refused_xack_does_not_multiply_dlq_entries() {
    let mut s = Scenario::new("T65").env("t65").types(&[TY]).start();
    s.sink.script(
        "perm-x",
        vec![Action::delayed(400, Duration::from_millis(800))],
    );
    s.publish("perm-x");
    wait_until("the handler runs", Duration::from_secs(15), || {
        s.sink.in_progress() == 1
    });
    s.redis.cmd(&["ACL", "SETUSER", "default", "-xack"]);
    let dlq = dlq_key(&s.env);
    wait_until(
        "the move ran and its XACK was refused",
        Duration::from_secs(10),
        // Inside a script the refusal reads "The user executing the script can't run this
        // command", not NOPERM.
        || s.redis.xlen(&dlq) >= 1 && s.workers[0].logs().contains("can't run this command"),
    );
    // Several retries of the move meet the refusal (backoff 200 ms, 400 ms, ...).
    std::thread::sleep(Duration::from_secs(2));
    let during = s.redis.xlen(&dlq);
    s.redis.cmd(&["ACL", "SETUSER", "default", "+xack"]);
    wait_until("acknowledged", Duration::from_secs(20), || {
        drained(&s.redis, &s.env, "group", &[TY])
    });
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        (during, s.redis.xlen(&dlq)),
        (1, 1),
        "one DLQ entry while XACK was refused and after\n{}",
        s.w().logs()
    );
    let guards = s.redis.scan_keys("events:t65:dlq:moved:*");
    assert!(
        guards.is_empty(),
        "the move's guard is removed once it lands: {guards:?}"
    );
    let m = parse_metrics(&s.w().metrics());
    let want = [
        ("env", "t65"),
        ("group", "group"),
        ("type", TY),
        ("outcome", "dead_lettered"),
    ];
    assert_eq!(sum(&m, "event_worker_events_total", &want), 1.0);
    assert_eq!(
        s.sink.requests_for("perm-x").len(),
        1,
        "the handler ran once"
    );
}
