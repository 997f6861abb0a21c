//! What scripts read from the API and the CLI, exactly: DLQ counters are JSON numbers; the
//! DLQ's attempts and history's `attempt` are the same count of handler runs; dlq stats
//! label `oldest`/`newest` (`{"id", "time"}`, `id=... time=...`); a replay stopped by a
//! failed canary answers 409 with its report (a good one 200); a 401 carries the
//! `WWW-Authenticate: Bearer` challenge; an unknown path is a JSON 404.

use crate::util::api::Resp;
use crate::util::worker::cli;
use crate::util::*;
use serde_json::{Value, json};
use std::time::Duration;

const TY: &str = "bookings.created";
const TOKEN: &str = "consistency-token-3f9a7c21e8";

/// `(kind, attempt)` of the history records of event `id` (API, newest first).
fn history(api: &crate::util::api::Api, id: &str) -> Vec<(String, Value)> {
    let h = api.get(&format!("/api/events/history?id={id}"));
    assert_eq!(h.status, 200, "{}", h.body);
    h.json()["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["kind"].as_str().unwrap().to_string(),
                r["attempt"].clone(),
            )
        })
        .collect()
}

fn pairs(want: &[(&str, u64)]) -> Vec<(String, Value)> {
    want.iter()
        .map(|(k, n)| (k.to_string(), json!(n)))
        .collect()
}

/// Whether `t` looks like `2026-11-26T14:55:43.827Z`.
fn is_rfc3339_ms(t: &str) -> bool {
    let b = t.as_bytes();
    b.len() == 24
        && b.iter().enumerate().all(|(i, c)| match i {
            4 | 7 => *c == b'-',
            10 => *c == b'T',
            13 | 16 => *c == b':',
            19 => *c == b'.',
            23 => *c == b'Z',
            _ => c.is_ascii_digit(),
        })
}

fn header_and_error(r: &Resp) -> (Option<&str>, Value) {
    (r.header("www-authenticate"), r.json())
}

#[test]
fn api_and_cli_answers_scripts_rely_on() {
    let s = Scenario::new("apiconsist")
        .types(&[TY])
        .token(TOKEN)
        .start();
    let _dump = s.redis.dump_on_panic(&s.env);
    // dead-1 fails 3 times (max_attempts = 3), perm-1 once (400 is permanent).
    s.sink.script("dead-1", vec![Action::status(500)]);
    s.sink.script("perm-1", vec![Action::status(400)]);
    s.publish("dead-1");
    wait_until("dead-1 dead-lettered", Duration::from_secs(15), || {
        dlq_by_id(&s.redis, &s.env).contains_key("dead-1")
    });
    s.publish("perm-1");
    wait_until("perm-1 dead-lettered", Duration::from_secs(15), || {
        dlq_by_id(&s.redis, &s.env).contains_key("perm-1")
    });
    let dlq = dlq_by_id(&s.redis, &s.env);
    let (dead, perm) = (
        dlq["dead-1"][0].entry_id.clone(),
        dlq["perm-1"][0].entry_id.clone(),
    );
    let api = s.api(Some(TOKEN));

    // ---- DLQ counters are JSON numbers (list, show).
    let list = api.get("/api/events/dlq");
    assert_eq!(list.status, 200, "{}", list.body);
    let attempts: Vec<(Value, Value)> = list.json()["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["id"].clone(), e["attempts"].clone()))
        .collect();
    assert_eq!(
        attempts,
        [(json!("perm-1"), json!(1)), (json!("dead-1"), json!(3))],
        "{}",
        list.body
    );
    let shown = api.get(&format!("/api/events/dlq/{dead}")).json();
    assert_eq!(shown["fields"]["dlq_attempts"], json!(3), "{shown}");
    assert_eq!(shown["fields"]["attempt"], json!(2), "{shown}");

    // ---- history's attempt is the DLQ's count of handler runs (API and CLI).
    let dead_history = pairs(&[("dead_lettered", 3), ("retried", 2), ("retried", 1)]);
    wait_until("dead-1's history", Duration::from_secs(10), || {
        history(&api, "dead-1").len() == 3
    });
    assert_eq!(history(&api, "dead-1"), dead_history);
    wait_until("perm-1's history", Duration::from_secs(10), || {
        history(&api, "perm-1").len() == 1
    });
    assert_eq!(history(&api, "perm-1"), pairs(&[("dead_lettered", 1)]));
    let out = cli(&s.cfg, &["history", "--id", "dead-1"]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let first = out.stdout.lines().next().unwrap_or_default();
    assert!(
        first.contains("dead_lettered") && first.contains(" attempt=3 "),
        "{}",
        out.stdout
    );
    let out = cli(&s.cfg, &["dlq", "list"]);
    let row: Vec<&str> = out
        .stdout
        .lines()
        .find(|l| l.starts_with(&dead))
        .unwrap_or_else(|| panic!("no row of {dead}: {}", out.stdout))
        .split_whitespace()
        .collect();
    // ENTRY_ID FAILED_AT TYPE GROUP REASON ATT ID ERROR...
    assert_eq!(row[5..7], ["3", "dead-1"], "{}", out.stdout);

    // ---- dlq stats: labelled oldest and newest (API, CLI JSON and text).
    let stats = api.get("/api/events/dlq/stats").json();
    for (end, id) in [("oldest", &dead), ("newest", &perm)] {
        let keys: Vec<&String> = stats[end].as_object().unwrap().keys().collect();
        assert_eq!(keys, ["id", "time"], "{stats}");
        assert_eq!(stats[end]["id"], json!(id), "{stats}");
        assert!(
            is_rfc3339_ms(stats[end]["time"].as_str().unwrap()),
            "{stats}"
        );
    }
    let out = cli(&s.cfg, &["--json", "dlq", "stats"]);
    assert_eq!(serde_json::from_str::<Value>(&out.stdout).unwrap(), stats);
    let out = cli(&s.cfg, &["dlq", "stats"]);
    for end in ["oldest", "newest"] {
        let line = format!(
            "{end}: id={} time={}",
            stats[end]["id"].as_str().unwrap(),
            stats[end]["time"].as_str().unwrap()
        );
        assert!(
            out.stdout.lines().any(|l| l == line),
            "{line}\n{}",
            out.stdout
        );
    }

    // ---- a replay stopped by its canary is 409 with the report; a good one 200.
    let r = api.post(
        "/api/events/dlq/replay",
        &json!({"ids": [perm], "canary": 1}),
    );
    assert_eq!(r.status, 409, "{}", r.body);
    let report = r.json();
    assert_eq!(
        report["stopped"],
        json!(
            "canary event perm-1 failed again (permanent_error: http status 400: sink); the rest was not replayed"
        ),
        "{report}"
    );
    assert_eq!(
        (report["matched"].clone(), report["replayed"].clone()),
        (json!(1), json!(1))
    );
    s.sink.script("dead-1", vec![Action::ok()]);
    let r = api.post("/api/events/dlq/replay", &json!({"ids": [dead]}));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["replayed"], json!(1), "{}", r.body);
    // The replay starts the count again; the successful run is the first of the new round.
    wait_until("dead-1 processed", Duration::from_secs(10), || {
        history(&api, "dead-1").len() == 5
    });
    let mut want = pairs(&[("processed", 1), ("replayed", 0)]);
    want.extend(dead_history);
    assert_eq!(history(&api, "dead-1"), want);

    // ---- 401 with the Bearer challenge; an unknown path is a JSON 404.
    let unauthorized = json!({"error": "missing or wrong bearer token"});
    let none = s.api(None).get("/api/events/dlq");
    assert_eq!(none.status, 401);
    assert_eq!(
        header_and_error(&none),
        (Some(r#"Bearer realm="event-worker""#), unauthorized.clone())
    );
    let wrong = s.api(Some("wrong-token-0000000000")).get("/api/events/dlq");
    assert_eq!(wrong.status, 401);
    assert_eq!(
        header_and_error(&wrong),
        (
            Some(r#"Bearer realm="event-worker", error="invalid_token""#),
            unauthorized
        )
    );
    let missing = api.get("/api/events/nope");
    assert_eq!(missing.status, 404);
    assert_eq!(missing.header("content-type"), Some("application/json"));
    assert_eq!(missing.json(), json!({"error": "no such path"}));
}
