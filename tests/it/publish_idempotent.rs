//! Idempotent publish (docs/reliability-matrix.md T39, T90–T93): a publish with its own `id`
//! is written once per (type, id) within `[publish] dedup_window` and the newest
//! `dedup_max_ids` ids of the type, through the API (single and batch), the CLI and under
//! concurrent repeats; a repeat answers `duplicate` and the handler runs once.

use crate::util::api::Api;
use crate::util::worker::cli;
use crate::util::*;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::time::Duration;

const TOKEN: &str = "publish-once-token-0123456789";

/// A ready worker routing `ty` to the sink, with the API token and `[publish]` keys `publish`
/// (no `[publish]` table when empty: the defaults).
fn scenario(row: &str, ty: &str, publish: &'static str) -> Scenario {
    Scenario::new(row)
        .types(&[ty])
        .token(TOKEN)
        .config(move |c| {
            if !publish.is_empty() {
                c.extra = format!("[publish]\n{publish}");
            }
        })
        .start()
}

/// The id guard key of `ty`.
fn guard_key(env: &str, ty: &str) -> String {
    format!("events:{env}:dedup:{{{}}}", stream_key(env, ty))
}

/// `event_worker_<name>{env,type}` on the first worker.
fn counter(s: &Scenario, name: &str, ty: &str) -> f64 {
    let m = parse_metrics(&s.workers[0].metrics());
    sum(&m, name, &[("env", &s.env), ("type", ty)])
}

/// POSTs one event with `id` and returns (status, JSON body).
fn post(api: &Api, ty: &str, id: &str) -> (u16, Value) {
    let r = api.post(
        "/api/events/publish",
        &json!({"type": ty, "data": {"id": id}, "id": id}),
    );
    (r.status, r.json())
}

#[test]
fn t90_concurrent_repeats_append_once_and_the_handler_runs_once() {
    let ty = "once.concurrent";
    let s = scenario("T90", ty, "");
    let (env, addr) = (s.env.clone(), s.cfg.api_addr());
    let ids: Vec<String> = (0..5).map(|i| format!("c-{i}")).collect();
    // 20 parallel POSTs of each of 5 ids, all at once.
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(100));
    let threads: Vec<_> = (0..100)
        .map(|n| {
            let (id, addr, barrier) = (ids[n % 5].clone(), addr.clone(), barrier.clone());
            std::thread::spawn(move || {
                let api = Api::new(&addr, Some(TOKEN));
                barrier.wait();
                post(&api, "once.concurrent", &id)
            })
        })
        .collect();
    let mut answers: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for t in threads {
        let (status, body) = t.join().unwrap();
        assert_eq!(status, 202, "{body}");
        let id = body["id"].as_str().unwrap().to_string();
        answers.entry(id).or_default().push(body);
    }
    let entries = s.redis.xrange(&stream_key(&env, ty));
    assert_eq!(entries.len(), 5, "one entry per id");
    for id in &ids {
        let bodies = &answers[id];
        assert_eq!(bodies.len(), 20, "{id}");
        let new: Vec<&Value> = bodies.iter().filter(|b| b["duplicate"] == false).collect();
        assert_eq!(new.len(), 1, "{id}: exactly one publish is new: {bodies:?}");
        let entry = entries.iter().find(|e| e.get("id") == Some(id)).unwrap();
        for b in bodies {
            assert_eq!(b["entry_id"], entry.entry_id.as_str(), "{id}: {b}");
            assert_eq!(b["stream"], stream_key(&env, ty).as_str());
        }
    }
    wait_until("each id handled", Duration::from_secs(10), || {
        ids.iter().all(|id| !s.sink.requests_for(id).is_empty())
    });
    // A late retry, after the handler ran: still a duplicate, nothing written.
    let api = s.api(Some(TOKEN));
    let (status, late) = post(&api, ty, "c-0");
    assert_eq!((status, &late["duplicate"]), (202, &json!(true)), "{late}");
    std::thread::sleep(Duration::from_millis(500));
    for id in &ids {
        assert_eq!(s.sink.requests_for(id).len(), 1, "{id} handled once");
    }
    assert_eq!(s.redis.xlen(&stream_key(&env, ty)), 5);
    assert_eq!(s.redis.zcard(&guard_key(&env, ty)), 5);
    assert_eq!(counter(&s, "event_worker_published_total", ty), 5.0);
    assert_eq!(
        counter(&s, "event_worker_publish_duplicates_total", ty),
        96.0
    );
    // Without an id the server makes one: two publishes, two entries, no guard entry.
    for _ in 0..2 {
        let r = api.post("/api/events/publish", &json!({"type": ty, "data": {}}));
        assert_eq!((r.status, &r.json()["duplicate"]), (202, &json!(false)));
    }
    assert_eq!(s.redis.xlen(&stream_key(&env, ty)), 7);
    assert_eq!(s.redis.zcard(&guard_key(&env, ty)), 5);
}

#[test]
fn t91_batch_results_are_per_event_and_exact() {
    let ty = "once.batch";
    let s = scenario("T91", ty, "batch_max_events = 8\nbatch_max_bytes = 4096\n");
    let (env, api) = (s.env.clone(), s.api(Some(TOKEN)));
    let (status, first) = post(&api, ty, "b-old");
    assert_eq!((status, &first["duplicate"]), (202, &json!(false)));
    let ev = |id: &str| json!({"type": ty, "data": {"id": id}, "id": id});
    let batch = json!({"events": [
        ev("b-1"),
        {"type": "Bad Type", "data": {}, "id": "b-bad"},
        ev("b-old"),
        ev("b-2"),
        ev("b-2"),
        {"type": ty, "data": {}, "id": "b-worker", "attempt": "3"},
        42,
        {"type": ty, "id": "b-nodata"},
    ]});
    let r = api.post("/api/events/publish/batch", &batch);
    assert_eq!(r.status, 200, "{}", r.body);
    let entries = s.redis.xrange(&stream_key(&env, ty));
    let entry_of = |id: &str| {
        let e = entries.iter().find(|e| e.get("id") == Some(id)).unwrap();
        json!(e.entry_id)
    };
    let stream = json!(stream_key(&env, ty));
    let want = json!({"results": [
        {"id": "b-1", "status": "published", "entry_id": entry_of("b-1"), "stream": stream},
        {"id": "b-bad", "status": "invalid", "error": "type `Bad Type` is not a valid event type ([a-z0-9_-] parts separated by dots; not a reserved word)"},
        {"id": "b-old", "status": "duplicate", "entry_id": first["entry_id"], "stream": stream},
        {"id": "b-2", "status": "published", "entry_id": entry_of("b-2"), "stream": stream},
        {"id": "b-2", "status": "duplicate", "entry_id": entry_of("b-2"), "stream": stream},
        {"id": "b-worker", "status": "invalid", "error": "field(s) `attempt` are written by the worker and cannot be published"},
        {"id": null, "status": "invalid", "error": "invalid event: invalid type: integer `42`, expected a JSON object with `type` and `data` at line 1 column 2"},
        {"id": "b-nodata", "status": "invalid", "error": "invalid event: missing field `data` at line 1 column 37"},
    ]});
    assert_eq!(r.json(), want, "{}", r.body);
    assert_eq!(entries.len(), 3, "b-old, b-1, b-2: {entries:?}");
    // Resending the whole batch writes nothing new.
    let again = api.post("/api/events/publish/batch", &batch).json();
    let statuses: Vec<&str> = again["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["status"].as_str().unwrap())
        .collect();
    assert_eq!(
        statuses,
        [
            "duplicate",
            "invalid",
            "duplicate",
            "duplicate",
            "duplicate",
            "invalid",
            "invalid",
            "invalid"
        ]
    );
    wait_until("handled", Duration::from_secs(10), || {
        ["b-old", "b-1", "b-2"]
            .iter()
            .all(|id| !s.sink.requests_for(id).is_empty())
    });
    std::thread::sleep(Duration::from_millis(300));
    for id in ["b-old", "b-1", "b-2"] {
        assert_eq!(s.sink.requests_for(id).len(), 1, "{id} handled once");
    }
    assert_eq!(s.redis.xlen(&stream_key(&env, ty)), 3);
    assert_eq!(
        counter(&s, "event_worker_publish_duplicates_total", ty),
        6.0
    );
    // Bounds: 9 events (limit 8) and 5,000 bytes (limit 4,096) get 413; none empty gets 400.
    let nine: Vec<Value> = (0..9).map(|i| ev(&format!("n-{i}"))).collect();
    let r = api.post("/api/events/publish/batch", &json!({ "events": nine }));
    assert_eq!(r.status, 413);
    assert_eq!(
        r.json()["error"],
        "batch of 9 events, over the 8 limit (publish.batch_max_events); split it"
    );
    let pad = "x".repeat(5000);
    let big = json!({"events": [{"type": ty, "data": {"pad": pad}, "id": "big"}]});
    let r = api.post("/api/events/publish/batch", &big);
    assert_eq!(r.status, 413);
    let size = big.to_string().len();
    assert_eq!(
        r.json()["error"],
        format!(
            "batch body of {size} bytes, over the 4096 limit (publish.batch_max_bytes); send fewer events per batch"
        )
    );
    let r = api.post("/api/events/publish/batch", &json!({"events": []}));
    assert_eq!(
        (r.status, r.json()["error"].as_str()),
        (400, Some("`events` is empty; send 1 to 8 events"))
    );
    let r = api.post("/api/events/publish/batch", &json!({"evts": []}));
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(s.redis.xlen(&stream_key(&env, ty)), 3, "nothing written");
}

#[test]
fn t92a_past_the_window_an_id_is_new_again() {
    let ty = "once.window";
    let s = scenario("T92a", ty, "dedup_window = \"2s\"\n");
    let (env, api) = (s.env.clone(), s.api(Some(TOKEN)));
    let dup = |id: &str| {
        let (status, b) = post(&api, ty, id);
        assert_eq!(status, 202, "{b}");
        b["duplicate"].as_bool().unwrap()
    };
    assert!(!dup("w-1"));
    assert!(dup("w-1"), "a repeat within the window");
    let guard = guard_key(&env, ty);
    let ttl = s.redis.cmd(&["PTTL", &guard]).as_int().unwrap();
    assert!((1..=2000).contains(&ttl), "guard TTL {ttl} ms");
    std::thread::sleep(Duration::from_millis(2100));
    assert!(!s.redis.exists(&guard), "the guard outlived its window");
    assert!(!dup("w-1"), "past the window the id is new again");
    assert_eq!(s.redis.xlen(&stream_key(&env, ty)), 2);
}

#[test]
fn t92b_the_guard_keeps_the_newest_ids_up_to_its_count() {
    let ty = "once.count";
    let s = scenario("T92b", ty, "dedup_max_ids = 3\n");
    let (env, api) = (s.env.clone(), s.api(Some(TOKEN)));
    let dup = |id: &str| {
        let (status, b) = post(&api, ty, id);
        assert_eq!(status, 202, "{b}");
        b["duplicate"].as_bool().unwrap()
    };
    // 4 ids with room for 3: the oldest (c-1) is forgotten, c-4 is not.
    for id in ["c-1", "c-2", "c-3", "c-4"] {
        assert!(!dup(id), "{id}");
    }
    let kept: Vec<String> = s
        .redis
        .zrange_withscores(&guard_key(&env, ty))
        .into_iter()
        .map(|(m, _)| m)
        .collect();
    assert_eq!(kept, ["c-2", "c-3", "c-4"]);
    assert!(dup("c-4"));
    assert!(dup("c-2"));
    assert!(!dup("c-1"), "dropped by the count bound: new again");
    assert_eq!(s.redis.xlen(&stream_key(&env, ty)), 5);
    // The original entry trimmed away (as `stream_retention` does): still a duplicate,
    // with no entry id to name.
    s.redis
        .cmd(&["XTRIM", &stream_key(&env, ty), "MAXLEN", "0"]);
    let (status, b) = post(&api, ty, "c-4");
    assert_eq!(status, 202);
    assert_eq!(
        b,
        json!({"duplicate": true, "entry_id": null, "id": "c-4", "stream": stream_key(&env, ty)})
    );
    assert_eq!(s.redis.xlen(&stream_key(&env, ty)), 0);
}

#[test]
fn t93_cli_publish_with_an_id_is_idempotent() {
    let ty = "once.cli";
    let s = scenario("T93", ty, "");
    let env = s.env.clone();
    let args = ["publish", ty, r#"{"via":"cli"}"#, "--id", "cli-1"];
    let first = cli(&s.cfg, &args);
    assert_eq!(first.code, Some(0), "{}", first.stderr);
    let entry = first.stdout.trim().to_string();
    let again = cli(&s.cfg, &args);
    assert_eq!(again.code, Some(0), "{}", again.stderr);
    assert_eq!(again.stdout.trim(), entry, "the original entry id");
    assert_eq!(
        again.stderr.trim(),
        format!(
            "duplicate: id cli-1 was already published to events:{env}:{ty} within the dedup window (1d) as entry {entry}; nothing written"
        )
    );
    let mut json_args = vec!["--json"];
    json_args.extend_from_slice(&args);
    let out = cli(&s.cfg, &json_args);
    let body: Value = serde_json::from_str(out.stdout.trim()).unwrap();
    assert_eq!(
        body,
        json!({"entry_id": entry, "id": "cli-1", "stream": stream_key(&env, ty), "duplicate": true})
    );
    assert_eq!(s.redis.xlen(&stream_key(&env, ty)), 1);
    wait_until("handled", Duration::from_secs(10), || {
        !s.sink.requests_for("cli-1").is_empty()
    });
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(s.sink.requests_for("cli-1").len(), 1);
}
