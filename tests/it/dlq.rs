//! DLQ replay: back to the failed group only, attempt 0, handled exactly once
//! more, removed from the DLQ exactly once (also under a concurrent double replay).

use crate::util::worker::cli;
use crate::util::*;
use std::time::Duration;

const TY: &str = "invoices.issued";

#[test]
fn t29_dlq_replay_goes_back_to_the_failed_group_exactly_once() {
    let env = "replay";
    let mut s = Scenario::new(env).types(&[TY]).workers(0).start();
    let ids = ["r-1", "r-2", "r-3"];
    for id in ids {
        // Rejected the first time, accepted after the operator fixed things.
        s.sink.script(id, vec![Action::status(400), Action::ok()]);
    }
    let mail_sink = s.billing_and_mail();
    let (redis, billing_sink) = (&s.redis, &s.sink);
    let [billing, mail] = &mut s.workers[..] else {
        unreachable!()
    };
    let billing_cfg = billing.config.clone();
    for id in ids {
        publish(redis, env, TY, id);
    }
    wait_until("3 dead letters, mail done", Duration::from_secs(15), || {
        redis.xlen(&dlq_key(env)) == 3 && mail_sink.success_counts().len() == 3
    });
    let dlq = dlq_entries(redis, env);
    let dlq_id_of = |id: &str| {
        dlq.iter()
            .find(|e| e.get("id") == Some(id))
            .map(|e| e.entry_id.clone())
            .unwrap()
    };

    // Dry run changes nothing.
    let out = cli(&billing_cfg, &["dlq", "replay", "--all", "--dry-run"]);
    assert_eq!(out.code, Some(0), "dry run: {}", out.stderr);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(redis.xlen(&dlq_key(env)), 3, "dry run removed entries");
    assert_eq!(
        billing_sink.request_count(),
        3,
        "dry run delivered something"
    );

    // One id.
    let out = cli(&billing_cfg, &["dlq", "replay", "--id", &dlq_id_of("r-1")]);
    assert_eq!(out.code, Some(0), "replay --id: {}", out.stderr);
    wait_until("r-1 handled again", Duration::from_secs(10), || {
        billing_sink.success_counts().contains_key("r-1")
    });
    assert_eq!(redis.xlen(&dlq_key(env)), 2);

    // Two concurrent replays of everything: each entry goes back once.
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(|| cli(&billing_cfg, &["dlq", "replay", "--all"]));
        let b = s.spawn(|| cli(&billing_cfg, &["dlq", "replay", "--all"]));
        (a.join().unwrap(), b.join().unwrap())
    });
    assert_eq!(a.code, Some(0), "replay --all (a): {}", a.stderr);
    assert_eq!(b.code, Some(0), "replay --all (b): {}", b.stderr);
    wait_until("all handled again", Duration::from_secs(10), || {
        billing_sink.success_counts().len() == 3
    });
    wait_until("drained", Duration::from_secs(10), || {
        drained(redis, env, "billing", &[TY]) && drained(redis, env, "mail", &[TY])
    });
    std::thread::sleep(Duration::from_millis(700));
    let dump = billing_sink.ledger_dump();
    for id in ids {
        let reqs = billing_sink.requests_for(id);
        let attempts: Vec<_> = reqs.iter().map(|r| r.attempt).collect();
        assert_eq!(
            attempts,
            vec![Some(0), Some(0)],
            "{id}: one original delivery and exactly one replay at attempt 0\n{dump}"
        );
        assert_eq!(
            mail_sink.requests_for(id).len(),
            1,
            "{id}: a billing replay reached the mail group"
        );
    }
    assert_eq!(
        redis.xlen(&dlq_key(env)),
        0,
        "replayed entries leave the DLQ"
    );
    billing.assert_running();
    mail.assert_running();
}
