//! The retry moves are idempotent when their second step is refused (the worker's user
//! loses a command for a while, an ACL change): Redis keeps the first step of a script
//! whose later command fails, so without a guard every retry of the move repeats it.
//! T71: forwarding a due retry whose ZREM is refused (the XADD to the redeliver stream is
//! kept). T72: scheduling a retry whose XACK is refused (the ZADD is kept, and the member
//! is forwarded and delivered before the move is retried).

use crate::util::*;
use std::time::Duration;

const TY: &str = "orders.retried";

/// Waits until the handler has been delivered `id` once and answers after `hold`, then
/// takes `command` from the worker's user (the `default` user) while the move runs,
/// for about 2 s; returns how many requests for `id` the sink had by the time the command
/// was given back.
fn refuse_for_a_while(s: &mut Scenario, id: &str, command: &str) -> usize {
    wait_until("the handler runs", Duration::from_secs(15), || {
        s.sink.in_progress() == 1
    });
    s.redis
        .cmd(&["ACL", "SETUSER", "default", &format!("-{command}")]);
    wait_until(
        &format!("a {command} refused inside a move"),
        Duration::from_secs(10),
        // Inside a script the refusal reads "The user executing the script can't run this
        // command", not NOPERM.
        || s.workers[0].output().contains("can't run this command"),
    );
    std::thread::sleep(Duration::from_secs(2));
    let during = s.sink.requests_for(id).len();
    s.redis
        .cmd(&["ACL", "SETUSER", "default", &format!("+{command}")]);
    during
}

#[test]
fn t71_a_refused_zrem_does_not_forward_a_retry_twice() {
    let mut s = Scenario::new("T71")
        .types(&[TY])
        .config(|c| c.initial_backoff = "200ms".into())
        .start();
    s.sink.script(
        "retry-z",
        vec![
            Action::delayed(500, Duration::from_millis(600)),
            Action::ok(),
        ],
    );
    s.publish("retry-z");
    let during = refuse_for_a_while(&mut s, "retry-z", "zrem");
    let retry = retry_key(&s.env, "group");
    wait_until("delivered and drained", Duration::from_secs(20), || {
        drained(&s.redis, &s.env, "group", &[TY]) && s.redis.zcard(&retry) == 0
    });
    std::thread::sleep(Duration::from_millis(500));
    let deliveries = s.sink.requests_for("retry-z").len();
    assert_eq!(
        (during, deliveries),
        (2, 2),
        "the retry delivered once (after the failed first delivery) while ZREM was refused \
         and after\n{}\n{}",
        s.sink.ledger_dump(),
        s.w().logs()
    );
    let guards = s.redis.scan_keys("events:t71:retry:group:forwarded:*");
    assert!(
        guards.is_empty(),
        "guards removed once forwarded: {guards:?}"
    );
    let m = parse_metrics(&s.w().metrics());
    assert_eq!(
        sum(&m, "event_worker_retries_forwarded_total", &[]),
        1.0,
        "one forward counted"
    );
}

#[test]
fn t72_a_refused_xack_does_not_schedule_a_retry_twice() {
    let mut s = Scenario::new("T72")
        .types(&[TY])
        .config(|c| c.initial_backoff = "50ms".into())
        .start();
    s.sink.script(
        "retry-x",
        vec![
            Action::delayed(500, Duration::from_millis(600)),
            Action::ok(),
        ],
    );
    s.publish("retry-x");
    refuse_for_a_while(&mut s, "retry-x", "xack");
    let retry = retry_key(&s.env, "group");
    wait_until("delivered and drained", Duration::from_secs(30), || {
        drained(&s.redis, &s.env, "group", &[TY]) && s.redis.zcard(&retry) == 0
    });
    std::thread::sleep(Duration::from_millis(500));
    let deliveries = s.sink.requests_for("retry-x").len();
    assert_eq!(
        deliveries,
        2,
        "the first delivery and one retry, however often the move met the refused XACK\n{}\n{}",
        s.sink.ledger_dump(),
        s.w().logs()
    );
    let guards = s.redis.scan_keys("events:t72:retry:group:moved:*");
    assert!(
        guards.is_empty(),
        "guards removed once acknowledged: {guards:?}"
    );
}

#[test]
fn t73_a_user_refused_time_is_warned_and_retries_still_run() {
    let s = Scenario::new("T73")
        .types(&[TY])
        .config(|c| c.initial_backoff = "100ms".into())
        .start();
    s.sink
        .script("retry-t", vec![Action::status(500), Action::ok()]);
    s.redis.cmd(&["ACL", "SETUSER", "default", "-time"]);
    s.publish("retry-t");
    let want = format!(
        "the Redis ACL user lacks permission to run TIME (NOPERM) at 127.0.0.1:{}: grant it, \
         e.g. ACL SETUSER <user> +time (README \"Least-privilege Redis user\"); until then \
         retries are scheduled and forwarded on each worker's own clock",
        s.redis.port
    );
    let retry = retry_key(&s.env, "group");
    // An ACL written before TIME was needed must not dead-letter retries: they run on the
    // worker's clock, with a warning that says what to grant.
    wait_until(
        "delivered and drained without TIME",
        Duration::from_secs(20),
        || drained(&s.redis, &s.env, "group", &[TY]) && s.redis.zcard(&retry) == 0,
    );
    assert!(
        s.workers[0].output().contains(&want),
        "{}",
        s.workers[0].output()
    );
    assert_eq!(
        s.sink.requests_for("retry-t").len(),
        2,
        "{}",
        s.sink.ledger_dump()
    );
    assert_eq!(
        s.redis.xlen(&format!("events:{}:dlq", s.env)),
        0,
        "nothing dead-lettered"
    );
    s.redis.cmd(&["ACL", "SETUSER", "default", "+time"]);
}

/// The forward guard holds the member's score: the same member bytes added again while the
/// guard stands (a retry rescheduled at the same attempt, e.g. by an open breaker) are a new
/// retry and are forwarded, not taken for the one already forwarded.
#[test]
fn t74_a_member_added_again_after_a_refused_zrem_is_forwarded_again() {
    let s = Scenario::new("T74")
        .types(&[TY])
        .setup(|r| {
            r.cmd(&[
                "ACL",
                "SETUSER",
                "worker",
                "on",
                ">t74-pass",
                "~*",
                "&*",
                "+@all",
                "-zrem",
            ]);
        })
        .url(|r, _| format!("redis://worker:t74-pass@127.0.0.1:{}", r.port))
        .config(|c| c.initial_backoff = "100ms".into())
        .start();
    s.sink
        .script("again-1", vec![Action::status(500), Action::ok()]);
    s.publish("again-1");
    let retry = retry_key(&s.env, "group");
    let guards = || s.redis.scan_keys("events:t74:retry:group:forwarded:*");
    wait_until(
        "the retry forwarded, its ZREM refused, delivered",
        Duration::from_secs(10),
        || s.sink.success_counts().get("again-1") == Some(&1) && guards().len() == 1,
    );
    let members = s.redis.zrange_withscores(&retry);
    assert_eq!(
        members.len(),
        1,
        "the member stays (ZREM refused): {members:?}"
    );
    // The same bytes, scheduled again (due at once).
    s.redis.cmd(&["ZADD", &retry, "1", &members[0].0]);
    wait_until("the new retry delivered", Duration::from_secs(10), || {
        s.sink.requests_for("again-1").len() == 3
    });
    s.redis.cmd(&["ACL", "SETUSER", "worker", "+zrem"]);
    wait_until("removed and drained", Duration::from_secs(10), || {
        s.redis.zcard(&retry) == 0 && drained(&s.redis, &s.env, "group", &[TY])
    });
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        (s.sink.requests_for("again-1").len(), guards()),
        (3, Vec::<String>::new()),
        "the failure, the first retry and the retry added again; no guard left\n{}",
        s.sink.ledger_dump()
    );
}
