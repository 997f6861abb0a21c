//! DLQ replay through the HTTP API (T29): each replayed event is handled
//! exactly once more, only by the group that failed it (whichever instance
//! serves the request), and concurrent replays of the same entries (API on two
//! instances plus the CLI) never enqueue an entry twice.

use crate::util::api::Api;
use crate::util::resp::is_test_client;
use crate::util::worker::cli;
use crate::util::*;
use serde_json::{Value, json};
use std::time::Duration;

const TY: &str = "payments.captured";
const TOKEN: &str = "replay-api-token-7c3d91f0ab";

#[test]
fn t29_api_replay_exactly_once_to_the_failed_group_under_concurrent_replays() {
    let env = "replayapi";
    let mut s = Scenario::new(env)
        .types(&[TY])
        .token(TOKEN)
        .workers(0)
        .start();
    let ids: Vec<String> = (0..6).map(|i| format!("x-{i}")).collect();
    for id in &ids {
        s.sink.script(id, vec![Action::status(400), Action::ok()]);
    }
    let mail_sink = s.billing_and_mail();
    let (redis, billing_sink) = (&s.redis, &s.sink);
    let [billing, mail] = &mut s.workers[..] else {
        unreachable!()
    };
    let (billing_cfg, mail_cfg) = (billing.config.clone(), mail.config.clone());
    for id in &ids {
        publish(redis, env, TY, id);
    }
    wait_until("6 dead letters, mail done", Duration::from_secs(15), || {
        redis.xlen(&dlq_key(env)) == 6
            && mail_sink.success_counts().len() == 6
            && drained(redis, env, "mail", &[TY])
            && drained(redis, env, "billing", &[TY])
    });
    let dlq = dlq_by_id(redis, env);
    let entry = |id: &str| dlq[id][0].entry_id.clone();
    // The API of both instances: a billing entry replayed through the mail
    // worker's API must still go to billing.
    let via_billing = Api::new(&billing_cfg.api_addr(), Some(TOKEN));
    let via_mail = Api::new(&mail_cfg.api_addr(), Some(TOKEN));
    let monitor = Monitor::start(redis);

    // Round 1: the same three ids, three times at once (two APIs and the CLI).
    let first: Vec<String> = ids[..3].iter().map(|id| entry(id)).collect();
    let body = json!({ "ids": first });
    let (a, b, c) = std::thread::scope(|sc| {
        let a = sc.spawn(|| via_billing.post("/api/events/dlq/replay", &body));
        let b = sc.spawn(|| via_mail.post("/api/events/dlq/replay", &body));
        let c = sc.spawn(|| {
            let mut args = vec!["--json", "dlq", "replay"];
            for e in &first {
                args.push("--id");
                args.push(e);
            }
            cli(&billing_cfg, &args)
        });
        (a.join().unwrap(), b.join().unwrap(), c.join().unwrap())
    });
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(b.status, 200, "{}", b.body);
    assert_eq!(c.code, Some(0), "{}", c.stderr);
    let c_json: Value = serde_json::from_str(c.stdout.trim()).unwrap();
    let replayed = |v: &Value| v["replayed"].as_u64().unwrap();
    let api_replayed_1 = replayed(&a.json()) + replayed(&b.json());
    assert_eq!(
        api_replayed_1 + replayed(&c_json),
        3,
        "three concurrent replays of 3 ids replayed {} + {} + {}",
        a.body,
        b.body,
        c.stdout
    );

    // Round 2: replay everything, twice at once, through both instances.
    let all = json!({"all": true});
    let (a, b) = std::thread::scope(|sc| {
        let a = sc.spawn(|| via_billing.post("/api/events/dlq/replay", &all));
        let b = sc.spawn(|| via_mail.post("/api/events/dlq/replay", &all));
        (a.join().unwrap(), b.join().unwrap())
    });
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(b.status, 200, "{}", b.body);
    let api_replayed_2 = replayed(&a.json()) + replayed(&b.json());
    assert_eq!(
        api_replayed_2, 3,
        "two concurrent replay-all: {} / {}",
        a.body, b.body
    );
    for r in [&a, &b] {
        let v = r.json();
        assert!(
            v["by_group_type"]
                .as_object()
                .unwrap()
                .keys()
                .all(|k| k == &format!("billing/{TY}")),
            "replays are billing's only: {v}"
        );
    }

    wait_until("every id handled again", Duration::from_secs(15), || {
        billing_sink.success_counts().len() == 6
    });
    wait_until("drained", Duration::from_secs(10), || {
        drained(redis, env, "billing", &[TY]) && drained(redis, env, "mail", &[TY])
    });
    std::thread::sleep(Duration::from_millis(700));
    let transcript = monitor.stop();

    let dump = format!(
        "{}\n{}",
        billing_sink.ledger_dump(),
        mail_sink.ledger_dump()
    );
    for id in &ids {
        let attempts: Vec<_> = billing_sink
            .requests_for(id)
            .iter()
            .map(|r| r.attempt)
            .collect();
        assert_eq!(
            attempts,
            vec![Some(0), Some(0)],
            "{id}: the original delivery and exactly one replay, attempt 0\n{dump}"
        );
        assert_eq!(
            mail_sink.requests_for(id).len(),
            1,
            "{id}: a billing replay reached the mail group\n{dump}"
        );
    }
    assert_eq!(
        redis.xlen(&dlq_key(env)),
        0,
        "replayed entries leave the DLQ"
    );
    assert_eq!(
        redis.xlen(&redeliver_key(env, "mail")),
        0,
        "nothing went to mail's redeliver stream"
    );
    // Redis's own record: 6 re-adds to billing's redeliver stream, none to
    // mail's, 6 deletions from the DLQ.
    let worker = |l: &&crate::util::redis::MonitorLine| !is_test_client(&l.client);
    let count = |cmd: &str, key: &str| {
        transcript
            .iter()
            .filter(worker)
            .filter(|l| {
                l.args.first().is_some_and(|c| c.eq_ignore_ascii_case(cmd))
                    && l.args.get(1).map(String::as_str) == Some(key)
            })
            .count()
    };
    assert_eq!(
        count("XADD", &redeliver_key(env, "billing")),
        6,
        "XADDs to billing's redeliver stream"
    );
    assert_eq!(count("XADD", &redeliver_key(env, "mail")), 0);
    assert_eq!(count("XDEL", &dlq_key(env)), 6, "XDELs on the DLQ");
    // The instance that served an API replay counts it.
    let replayed_metric = |w: &WorkerProcess| {
        sum(
            &parse_metrics(&w.metrics()),
            "event_worker_dlq_replayed_total",
            &[("env", env), ("group", "billing"), ("type", TY)],
        )
    };
    assert_eq!(
        replayed_metric(billing) + replayed_metric(mail),
        (api_replayed_1 + api_replayed_2) as f64,
        "event_worker_dlq_replayed_total over both instances vs the API replays"
    );
    billing.assert_running();
    mail.assert_running();
}
