//! Isolation: two consumer groups on one stream never see each other's
//! retries or redeliveries; two environments on one Redis never touch each
//! other's keys.

use crate::util::resp::{Value, is_test_client};
use crate::util::*;
use std::collections::BTreeMap;
use std::time::Duration;

const TY: &str = "orders.created";

#[test]
fn t02_two_groups_on_one_stream_retries_stay_in_their_group() {
    let env = "groups";
    let mut s = Scenario::new(env)
        .types(&[TY])
        .config(|c| {
            c.max_attempts = 3;
            c.initial_backoff = "100ms".into();
        })
        .workers(0)
        .start();
    let mail_sink = HttpSink::start();
    let billing_sink = &s.sink;
    for i in 0..3 {
        billing_sink.script(
            &format!("e-retry-{i}"),
            vec![Action::status(503), Action::status(503), Action::ok()],
        );
    }
    billing_sink.script("e-dlq", vec![Action::status(400)]);
    billing_sink.script("e-exhaust", vec![Action::status(503)]);
    s.group_worker("billing", "b1", None);
    s.group_worker("mail", "m1", Some(mail_sink.url()));
    let (redis, billing_sink) = (&s.redis, &s.sink);
    let [billing, mail] = &mut s.workers[..] else {
        unreachable!()
    };

    let mut ids: Vec<String> = (0..10).map(|i| format!("e-ok-{i}")).collect();
    ids.extend((0..3).map(|i| format!("e-retry-{i}")));
    ids.push("e-dlq".into());
    ids.push("e-exhaust".into());
    for id in &ids {
        publish(redis, env, TY, id);
    }
    // Watch the mail group's retry keys while billing retries.
    let mut billing_retry_seen = false;
    let done = try_wait_until(Duration::from_secs(20), || {
        assert_eq!(
            redis.zcard(&retry_key(env, "mail")),
            0,
            "a billing retry showed up in the mail group's retry set"
        );
        assert_eq!(
            redis.xlen(&redeliver_key(env, "mail")),
            0,
            "a billing retry showed up in the mail group's redeliver stream"
        );
        billing_retry_seen |= redis.zcard(&retry_key(env, "billing")) > 0;
        billing_sink.success_counts().len() == 13
            && mail_sink.success_counts().len() == ids.len()
            && redis.xlen(&dlq_key(env)) == 2
            && drained(redis, env, "billing", &[TY])
            && drained(redis, env, "mail", &[TY])
    });
    assert!(
        done,
        "not drained\n{}\n{}",
        billing_sink.ledger_dump(),
        mail_sink.ledger_dump()
    );
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        billing_retry_seen,
        "billing's retries never went through its retry set"
    );

    // mail: every event exactly once, first attempt only.
    let mail_dump = mail_sink.ledger_dump();
    for id in &ids {
        let reqs = mail_sink.requests_for(id);
        assert_eq!(reqs.len(), 1, "mail deliveries of {id}\n{mail_dump}");
        assert_eq!(
            reqs[0].attempt,
            Some(0),
            "mail saw a retry of {id}\n{mail_dump}"
        );
    }
    assert_eq!(mail_sink.request_count(), ids.len(), "{mail_dump}");
    // billing: exact counts.
    let billing_dump = billing_sink.ledger_dump();
    let counts = billing_sink.request_counts();
    for id in &ids {
        let want = if id.starts_with("e-retry") || id == "e-exhaust" {
            3
        } else {
            1
        };
        assert_eq!(
            counts.get(id),
            Some(&want),
            "billing deliveries of {id}\n{billing_dump}"
        );
    }
    // DLQ: exactly the two billing failures, tagged with the billing group.
    let dlq: BTreeMap<String, (String, String)> = dlq_entries(redis, env)
        .into_iter()
        .map(|e| {
            (
                e.get("id").unwrap_or_default().to_string(),
                (
                    e.get("dlq_reason").unwrap_or_default().to_string(),
                    e.get("dlq_group").unwrap_or_default().to_string(),
                ),
            )
        })
        .collect();
    let want: BTreeMap<String, (String, String)> = [
        ("e-dlq", "permanent_error"),
        ("e-exhaust", "max_attempts_exceeded"),
    ]
    .into_iter()
    .map(|(id, r)| (id.to_string(), (r.to_string(), "billing".to_string())))
    .collect();
    assert_eq!(dlq, want, "DLQ (id -> reason, group)");
    assert_eq!(redis.xlen(&dlq_key(env)), 2);
    let mut groups = redis.xinfo_group_names(&stream_key(env, TY));
    groups.sort();
    assert_eq!(groups, vec!["billing".to_string(), "mail".to_string()]);
    assert_eq!(redis.zcard(&retry_key(env, "mail")), 0);
    assert_eq!(redis.xlen(&redeliver_key(env, "mail")), 0);
    billing.assert_running();
    mail.assert_running();
}

/// Everything observable about the non-heartbeat keys of an env.
fn snapshot(redis: &RedisServer, env: &str) -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    for key in redis.scan_keys(&format!("events:{env}:*")) {
        if key.contains(":heartbeat:") {
            continue;
        }
        let t = redis.cmd(&["TYPE", &key]).as_str().unwrap_or_default();
        let v = match t.as_str() {
            "stream" => {
                let groups = match redis.cmd(&["XINFO", "GROUPS", &key]) {
                    Value::Array(g) => format!("{g:?}"),
                    other => format!("{other:?}"),
                };
                let pending: Vec<_> = redis
                    .xinfo_group_names(&key)
                    .iter()
                    .map(|g| redis.xpending_detail(&key, g))
                    .map(|p| {
                        p.into_iter()
                            .map(|(id, c, _idle, n)| (id, c, n))
                            .collect::<Vec<_>>()
                    })
                    .collect();
                format!(
                    "entries={:?} groups={groups} pending={pending:?}",
                    redis
                        .xrange(&key)
                        .iter()
                        .map(|e| (e.entry_id.clone(), e.fields.clone()))
                        .collect::<Vec<_>>()
                )
            }
            "zset" => format!("{:?}", redis.zrange_withscores(&key)),
            "hash" => format!("{:?}", redis.cmd(&["HGETALL", &key])),
            "string" => format!("{:?}", redis.cmd(&["GET", &key])),
            other => format!("type {other}"),
        };
        m.insert(key, format!("{t}: {v}"));
    }
    m
}

#[test]
fn t02_two_envs_on_one_redis_never_touch_each_other() {
    let redis = RedisServer::start();
    let _dump_a = redis.dump_on_panic("alpha");
    let _dump_b = redis.dump_on_panic("beta");
    let sink_a = HttpSink::start();
    let sink_b = HttpSink::start();
    for (env, sink) in [("alpha", &sink_a), ("beta", &sink_b)] {
        sink.script(
            &format!("{env}-retry-1"),
            vec![Action::status(503), Action::ok()],
        );
        sink.script(&format!("{env}-perm-1"), vec![Action::status(400)]);
    }
    let mk = |env: &str, sink: &HttpSink| {
        let mut cfg =
            WorkerConfig::new(env, &redis.url()).route(Route::http(&["orders.*"], &sink.url()));
        cfg.consumer = Some(format!("{env}-1"));
        cfg
    };
    let publish_batch = |env: &str| {
        for id in ["ok-1", "ok-2", "ok-3", "retry-1", "perm-1"] {
            publish(&redis, env, TY, &format!("{env}-{id}"));
        }
        publish(&redis, env, "orders.paid", &format!("{env}-paid-1"));
        let bad = format!("{env}-bad-1");
        redis.xadd(&stream_key(env, TY), &[("id", &bad), ("data", "{}")]);
    };
    let wait_env = |env: &str, sink: &HttpSink| {
        wait_until(
            &format!("env {env} drained"),
            Duration::from_secs(20),
            || {
                sink.success_counts().len() == 5
                    && redis.xlen(&dlq_key(env)) == 2
                    && drained(&redis, env, "group", &[TY, "orders.paid"])
            },
        );
    };

    // Phase 1: beta works alone, then stops; one more beta event waits.
    publish_batch("beta");
    let mut beta = WorkerProcess::start("beta", mk("beta", &sink_b));
    wait_env("beta", &sink_b);
    beta.sigterm();
    assert_eq!(
        beta.wait_exit(Duration::from_secs(8))
            .and_then(|s| s.code()),
        Some(0)
    );
    publish(&redis, "beta", TY, "beta-late");
    let before = snapshot(&redis, "beta");
    assert!(before.len() >= 3, "beta snapshot too small: {before:#?}");

    // Phase 2: alpha works under MONITOR.
    let monitor = Monitor::start(&redis);
    publish_batch("alpha");
    let mut alpha = WorkerProcess::start("alpha", mk("alpha", &sink_a));
    wait_env("alpha", &sink_a);
    std::thread::sleep(Duration::from_millis(1200)); // a discovery round or two
    alpha.sigterm();
    assert_eq!(
        alpha
            .wait_exit(Duration::from_secs(8))
            .and_then(|s| s.code()),
        Some(0)
    );
    let transcript = monitor.stop();
    let after = snapshot(&redis, "beta");

    let worker_lines: Vec<_> = transcript
        .iter()
        .filter(|l| !is_test_client(&l.client))
        .collect();
    assert!(
        worker_lines.iter().any(|l| l
            .args
            .first()
            .is_some_and(|c| c.eq_ignore_ascii_case("XREADGROUP"))),
        "MONITOR saw no XREADGROUP from the alpha worker ({} lines)",
        transcript.len()
    );
    let violations: Vec<&str> = worker_lines
        .iter()
        .filter(|l| {
            // Script bodies (EVAL, SCRIPT LOAD) are code, not key names.
            let cmd = l
                .args
                .first()
                .map(|c| c.to_ascii_uppercase())
                .unwrap_or_default();
            let skip = match cmd.as_str() {
                "EVAL" | "EVAL_RO" | "SCRIPT" | "FUNCTION" => 2,
                _ => 1,
            };
            l.args.iter().skip(skip).any(|a| {
                (a.starts_with("events:") && !a.starts_with("events:alpha:"))
                    || a.contains("events:beta")
            }) || l.args.first().is_some_and(|c| {
                ["FLUSHALL", "FLUSHDB", "KEYS"]
                    .iter()
                    .any(|bad| c.eq_ignore_ascii_case(bad))
            })
        })
        .map(|l| l.raw.as_str())
        .collect();
    assert!(
        violations.is_empty(),
        "the alpha worker touched keys outside events:alpha:*:\n{}",
        violations.join("\n")
    );
    assert_eq!(before, after, "beta's keys changed while only alpha ran");
    assert!(
        sink_a.ledger().iter().all(|r| r.id.starts_with("alpha-")),
        "alpha delivered events that are not its own\n{}",
        sink_a.ledger_dump()
    );
    assert_eq!(sink_b.requests_for("beta-late").len(), 0);

    // Phase 3: beta picks up its own waiting event, exactly once.
    beta.restart();
    wait_until("beta-late delivered", Duration::from_secs(15), || {
        sink_b.success_counts().contains_key("beta-late")
    });
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(sink_b.requests_for("beta-late").len(), 1);
    assert!(
        sink_b.ledger().iter().all(|r| r.id.starts_with("beta-")),
        "beta delivered events that are not its own\n{}",
        sink_b.ledger_dump()
    );
    assert_eq!(sink_a.requests_for("beta-late").len(), 0);
    assert_eq!(
        sink_b.success_counts().values().sum::<usize>(),
        6,
        "{}",
        sink_b.ledger_dump()
    );
    assert_eq!(
        sink_a.success_counts().values().sum::<usize>(),
        5,
        "{}",
        sink_a.ledger_dump()
    );
    beta.assert_running();
}
