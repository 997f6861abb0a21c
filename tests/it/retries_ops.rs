//! The retry-set operations and the instances view (issue 16): `GET /api/events/retries`
//! lists a real worker's retry set in due order with exact fields and pages; `retry-now`
//! runs one entry at once, exactly once even when the scheduler and several requests race
//! for it; `dead-letter` moves exactly one entry to the DLQ with reason `operator` and exact
//! DLQ counts; an unknown handle is a 404 JSON; `GET /api/events/instances` lists two live
//! workers with pending counts equal to XPENDING's. The CLI commands answer alike.

use crate::util::api::{Api, encode};
use crate::util::worker::cli;
use crate::util::*;
use serde_json::{Value, json};
use std::time::Duration;

const TY: &str = "orders.placed";
const TY2: &str = "orders.shipped";
const TOKEN: &str = "retries-ops-token-4b1e6c0d9a";

/// A 500 with `Retry-After: 600`: the retry waits 10 minutes in the set.
fn fail_for_long() -> Action {
    Action {
        retry_after: Some(600),
        ..Action::status(500)
    }
}

/// The SHA-1 of `text`, as Redis computes it.
fn sha1(redis: &RedisServer, text: &str) -> String {
    let v = redis.cmd(&["EVAL", "return redis.sha1hex(ARGV[1])", "0", text]);
    v.as_str().unwrap().to_string()
}

/// Ids of a page's entries.
fn ids(page: &Value) -> Vec<String> {
    page["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_string())
        .collect()
}

/// The handle of entry `id` on `page`.
fn handle(page: &Value, id: &str) -> String {
    page["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["id"] == id)
        .unwrap_or_else(|| panic!("{id} not on {page}"))["handle"]
        .as_str()
        .unwrap()
        .to_string()
}

#[test]
fn retry_sets_list_in_due_order_retry_now_runs_one_and_dead_letter_moves_one() {
    let env = "retriesops";
    let s = Scenario::new(env)
        .types(&[TY, TY2])
        .token(TOKEN)
        .config(|c| c.max_backoff = "1h".into())
        .start();
    let redis = &s.redis;
    let retry = retry_key(env, "group");
    for id in ["a1", "a2", "b1", "a3"] {
        s.sink.script(id, vec![fail_for_long(), Action::ok()]);
    }
    for (n, (ty, id)) in [(TY, "a1"), (TY, "a2"), (TY2, "b1"), (TY, "a3")]
        .into_iter()
        .enumerate()
    {
        publish(redis, env, ty, id);
        wait_until(
            &format!("{id} in the retry set"),
            Duration::from_secs(10),
            || redis.zcard(&retry) == n as i64 + 1,
        );
    }
    // A member of another group's set at a2's due time: listed after a2 (group order).
    let members = redis.zrange_withscores(&retry);
    let a2_due = members[1].1 as u64;
    let m1 = json!([
        "id",
        "m1",
        "type",
        TY,
        "data",
        "{}",
        "correlationid",
        "c-7",
        "attempt",
        "2",
        "origin_entry_id",
        "1-0"
    ])
    .to_string();
    redis.cmd(&["ZADD", &retry_key(env, "mail"), &a2_due.to_string(), &m1]);

    let api = s.api(Some(TOKEN));
    assert_eq!(s.api(None).get("/api/events/retries").status, 401);
    let r = api.get("/api/events/retries");
    assert_eq!(r.status, 200, "{}", r.body);
    let page = r.json();
    assert_eq!(ids(&page), ["a1", "a2", "m1", "b1", "a3"], "{page}");
    assert_eq!(page["depth"], json!({"group": 4, "mail": 1}));
    assert_eq!(page["next_cursor"], Value::Null);
    let listed: Vec<&Value> = page["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["group"] == "group")
        .collect();
    for (e, (member, score)) in listed.iter().zip(&members) {
        let due = *score as u64;
        let ty = if e["id"] == "b1" { TY2 } else { TY };
        let want = json!({
            "group": "group", "type": ty, "id": e["id"], "attempt": 1, "due_ms": due,
            "due": e["due"], "last_error": "retry in 600000ms: http status 500: sink",
            "handle": format!("{due}-{}", sha1(redis, member)),
        });
        assert_eq!(**e, want);
        assert!(e["due"].as_str().unwrap().ends_with('Z'), "{e}");
    }
    assert_eq!(
        page["entries"][2],
        json!({"group": "mail", "type": TY, "id": "m1", "attempt": 2, "due_ms": a2_due,
            "due": page["entries"][1]["due"], "correlation_id": "c-7",
            "handle": format!("{a2_due}-{}", sha1(redis, &m1))})
    );

    // Pages of two, across groups at one due time; filters by type and group.
    let p1 = api.get("/api/events/retries?limit=2").json();
    assert_eq!(ids(&p1), ["a1", "a2"]);
    let c1 = p1["next_cursor"].as_str().unwrap().to_string();
    let p2 = api
        .get(&format!(
            "/api/events/retries?limit=2&cursor={}",
            encode(&c1)
        ))
        .json();
    assert_eq!(ids(&p2), ["m1", "b1"]);
    let c2 = p2["next_cursor"].as_str().unwrap().to_string();
    let p3 = api
        .get(&format!(
            "/api/events/retries?limit=2&cursor={}",
            encode(&c2)
        ))
        .json();
    assert_eq!(
        (ids(&p3), &p3["next_cursor"]),
        (vec!["a3".to_string()], &Value::Null)
    );
    let by_type = api.get(&format!("/api/events/retries?type={TY2}")).json();
    assert_eq!(ids(&by_type), ["b1"]);
    let by_group = api.get("/api/events/retries?group=mail").json();
    assert_eq!(
        (ids(&by_group), &by_group["depth"]),
        (vec!["m1".to_string()], &json!({"mail": 1}))
    );

    // retry-now: a2 runs at once, once; the others stay where they are.
    let a2 = handle(&page, "a2");
    let body = json!({"group": "group", "handle": a2});
    let r = api.post("/api/events/retries/retry-now", &body);
    assert_eq!(
        (r.status, r.json()),
        (200, json!({"done": 1, "not_found": 0}))
    );
    wait_until("a2 ran again", Duration::from_secs(10), || {
        s.sink.success_counts().get("a2") == Some(&1)
    });
    std::thread::sleep(Duration::from_millis(300));
    let counts = s.sink.request_counts();
    let count = |id: &str| counts.get(id).copied().unwrap_or(0);
    assert_eq!(
        [count("a1"), count("a2"), count("b1"), count("a3")],
        [1, 2, 1, 1]
    );
    assert_eq!(redis.zcard(&retry), 3);
    let again = api.post("/api/events/retries/retry-now", &body);
    assert_eq!(
        (again.status, again.json()),
        (
            404,
            json!({"error": "no entry with that handle in the retry set of group `group` \
                (forwarded, retried or dead-lettered meanwhile); list it again with GET \
                /api/events/retries", "done": 0, "not_found": 1})
        )
    );
    let bad = api.post(
        "/api/events/retries/retry-now",
        &json!({"group": "group", "handles": [handle(&page, "a1"), "nope"]}),
    );
    assert_eq!(
        (bad.status, bad.json()),
        (
            400,
            json!({"error": "handle `nope`: must be <due ms>-<sha1> as `retries list` shows it"})
        )
    );
    assert_eq!(
        redis.zcard(&retry),
        3,
        "a malformed handle refuses the whole request"
    );

    // dead-letter: a3 to the DLQ with reason operator; counts exact.
    let a3 = json!({"group": "group", "handles": [handle(&page, "a3")], "note": "bad data"});
    let r = api.post("/api/events/retries/dead-letter", &a3);
    assert_eq!(
        (r.status, r.json()),
        (200, json!({"done": 1, "not_found": 0}))
    );
    let dlq = dlq_entries(redis, env);
    assert_eq!(dlq.len(), 1);
    let field = |k: &str| dlq[0].get(k).map(str::to_string);
    for (k, v) in [
        ("id", "a3"),
        ("type", TY),
        ("attempt", "1"),
        ("dlq_reason", "operator"),
        (
            "dlq_error",
            "dead-lettered from the retry set by api: bad data",
        ),
        ("dlq_attempts", "1"),
        ("dlq_group", "group"),
        ("dlq_stream", &stream_key(env, TY)),
        ("dlq_consumer", "api"),
    ] {
        assert_eq!(field(k).as_deref(), Some(v), "{k}");
    }
    let stats = api.get("/api/events/dlq/stats").json();
    assert_eq!(
        (
            &stats["total"],
            &stats["by_reason"],
            &stats["by_type"],
            &stats["by_group"],
            &stats["complete"]
        ),
        (
            &json!(1),
            &json!({"operator": 1}),
            &json!({TY: 1}),
            &json!({"group": 1}),
            &json!(true)
        ),
        "{stats}"
    );
    assert_eq!(api.post("/api/events/retries/dead-letter", &a3).status, 404);
    assert_eq!(redis.xlen(&dlq_key(env)), 1);
    assert_eq!(redis.zcard(&retry), 2);

    // The history records both actions.
    let hist = |id: &str| api.get(&format!("/api/events/history?id={id}")).json();
    let a2_kinds: Vec<Value> = hist("a2")["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| json!([r["kind"], r["detail"]]))
        .collect();
    let retried_now = a2_kinds.iter().find(|k| k[0] == "retried_now").unwrap();
    assert_eq!(
        retried_now[1],
        json!(format!(
            "by api; was due {}",
            page["entries"][1]["due"].as_str().unwrap()
        ))
    );
    let a3_records = hist("a3");
    let dead = a3_records["records"][0].clone();
    assert_eq!(
        (&dead["kind"], &dead["detail"], &dead["attempt"]),
        (
            &json!("dead_lettered"),
            &json!("operator: dead-lettered from the retry set by api: bad data"),
            &json!(1)
        )
    );

    // The CLI: list, dead-letter b1, then retry-now of the same handle is not found.
    let out = cli(&s.cfg, &["--json", "retries", "list", "--group", "group"]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let listed: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(ids(&listed), ["a1", "b1"]);
    let b1 = handle(&listed, "b1");
    let out = cli(&s.cfg, &["retries", "dead-letter", "--group", "group", &b1]);
    assert_eq!(
        (out.code, out.stdout.as_str()),
        (Some(0), "dead-lettered: 1, not found: 0\n"),
        "{}",
        out.stderr
    );
    let out = cli(&s.cfg, &["retries", "retry-now", "--group", "group", &b1]);
    assert_eq!(out.code, Some(1));
    assert!(
        out.stderr.contains(
            "no entry with that handle in the retry set of group `group` (forwarded, retried or \
             dead-lettered meanwhile); list it again with `event-worker retries list --group group`"
        ),
        "{}",
        out.stderr
    );
    let stats = api.get("/api/events/dlq/stats").json();
    assert_eq!(
        (&stats["total"], &stats["by_reason"]),
        (&json!(2), &json!({"operator": 2}))
    );
}

/// Four clients (connected beforehand) post retry-now for `id` together from `lead`
/// before its due time until 300 ms after it, while the scheduler (every 20 ms) forwards
/// the member once it is due. Returns how many requests moved it and how many were sent.
fn race_retry_now(s: &Scenario, clients: &[Api], id: &str, lead: f64) -> (u64, u64) {
    let retry = retry_key(&s.env, "group");
    s.sink.script(id, vec![Action::status(500), Action::ok()]);
    publish(&s.redis, &s.env, TY, id);
    wait_until(
        &format!("{id} in the retry set"),
        Duration::from_secs(10),
        || s.redis.zcard(&retry) == 1,
    );
    let page = clients[0].get("/api/events/retries").json();
    let due = page["entries"][0]["due_ms"].as_u64().unwrap() as f64 / 1000.0;
    let body = json!({"group": "group", "handle": handle(&page, id)});
    let wait = due - lead - unix_now();
    if wait > 0.0 {
        std::thread::sleep(Duration::from_secs_f64(wait));
    }
    let barrier = std::sync::Barrier::new(clients.len());
    std::thread::scope(|sc| {
        let threads: Vec<_> = clients
            .iter()
            .map(|api| {
                let (body, barrier) = (&body, &barrier);
                sc.spawn(move || {
                    let (mut done, mut posts) = (0, 0);
                    barrier.wait();
                    while posts < 100 && (posts == 0 || unix_now() < due + 0.3) {
                        let r = api.post("/api/events/retries/retry-now", body);
                        assert!(matches!(r.status, 200 | 404), "{} {}", r.status, r.body);
                        done += r.json()["done"].as_u64().unwrap();
                        posts += 1;
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    (done, posts)
                })
            })
            .collect();
        threads
            .into_iter()
            .map(|t| t.join().unwrap())
            .fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1))
    })
}

#[test]
fn retry_now_racing_the_scheduler_and_itself_runs_the_event_once() {
    let env = "retryrace";
    let s = Scenario::new(env)
        .types(&[TY])
        .token(TOKEN)
        .config(|c| {
            c.initial_backoff = "1500ms".into();
            c.max_backoff = "10s".into();
        })
        .start();
    let clients: Vec<Api> = (0..4)
        .map(|_| Api::new(&s.cfg.api_addr(), Some(TOKEN)))
        .collect();
    for c in &clients {
        assert_eq!(c.get("/api/events/health").status, 200);
    }
    // r1: the requests start well before the due time (they race each other); r2: at the
    // due time (they race the scheduler too). Each is moved once and run once more.
    let mut forwarded_before = 0.0;
    for (id, lead) in [("r1", 0.3), ("r2", 0.0)] {
        let (done, posts) = race_retry_now(&s, &clients, id, lead);
        wait_until(&format!("{id} handled"), Duration::from_secs(10), || {
            s.sink.success_counts().contains_key(id)
        });
        std::thread::sleep(Duration::from_millis(300));
        let forwarded = sum(
            &parse_metrics(&s.workers[0].metrics()),
            "event_worker_retries_forwarded_total",
            &[],
        ) - forwarded_before;
        forwarded_before += forwarded;
        eprintln!("{id}: {posts} retry-now requests, {done} moved it, the scheduler {forwarded}");
        assert_eq!(s.sink.requests_for(id).len(), 2, "{}", s.sink.ledger_dump());
        assert_eq!(done as f64 + forwarded, 1.0, "{id} moved once");
        assert_eq!(s.redis.xlen(&redeliver_key(env, "group")), 0, "settled");
    }
}

#[test]
fn instances_list_two_live_workers_with_their_pending_entries() {
    let env = "instancesops";
    let s = Scenario::new(env)
        .types(&[TY])
        .token(TOKEN)
        .workers(2)
        .route_timeout("20s")
        .sink(Action::delayed(200, Duration::from_secs(4)))
        // Either worker may read all six (reads race): each can hold them all at once.
        .config(|c| c.concurrency = 8)
        .start();
    for i in 0..6 {
        publish(&s.redis, env, TY, &format!("p{i}"));
    }
    wait_until("six held by the handlers", Duration::from_secs(10), || {
        s.sink.in_progress() == 6
    });
    let r = s.api(Some(TOKEN)).get("/api/events/instances");
    assert_eq!(r.status, 200, "{}", r.body);
    let streams = [stream_key(env, TY), redeliver_key(env, "group")];
    let xpending: Vec<_> = streams
        .iter()
        .map(|k| s.redis.xpending_consumers(k, "group"))
        .collect();
    let list = r.json()["instances"].as_array().unwrap().clone();
    let host = hostname::get().unwrap().into_string().unwrap();
    let names: Vec<&str> = list
        .iter()
        .map(|i| i["consumer"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["w1", "w2"], "{list:?}");
    let mut total = 0;
    for (i, w) in list.iter().zip(&s.workers) {
        let name = i["consumer"].as_str().unwrap();
        // Per stream as XPENDING counts it: the type stream, and the redeliver stream
        // once a consumer has read it.
        let got: Vec<Value> = i["streams"]
            .as_array()
            .unwrap()
            .iter()
            .map(|st| json!([st["stream"], st["pending"]]))
            .collect();
        let want: Vec<Value> = streams
            .iter()
            .zip(&xpending)
            .filter(|(k, _)| *k == &streams[0] || got.iter().any(|g| g[0] == **k))
            .map(|(k, p)| json!([k, p.get(name).copied().unwrap_or(0)]))
            .collect();
        assert_eq!(got, want, "{i}");
        let pending: i64 = xpending
            .iter()
            .map(|p| p.get(name).copied().unwrap_or(0))
            .sum();
        total += pending;
        assert_eq!(
            (
                &i["group"],
                &i["live"],
                &i["host"],
                &i["pid"],
                &i["version"],
                &i["pending"]
            ),
            (
                &json!("group"),
                &json!(true),
                &json!(host),
                &json!(w.pid()),
                &json!(env!("CARGO_PKG_VERSION")),
                &json!(pending)
            ),
            "{i}"
        );
        assert!(
            i["started"].as_str().unwrap() <= i["last_beat"].as_str().unwrap(),
            "{i}"
        );
    }
    assert_eq!(total, 6, "{xpending:?}");
    let out = cli(&s.cfg, &["instances"]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(
        out.stdout.starts_with(&format!(
            "w1 group=group live host={host} pid={} version=",
            s.workers[0].pid()
        )),
        "{}",
        out.stdout
    );
}
