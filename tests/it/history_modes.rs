//! `[history] processed`: successes recorded as one aggregate per append batch
//! (the default) or one record per event (`per_event`). In both modes
//! `history --id` and `GET /api/events/history?id=` answer the same record for a
//! handled event: kind `processed`, its group, handler runs, type and time.

use crate::util::worker::cli;
use crate::util::*;
use serde_json::{Value, json};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const TOKEN: &str = "history-modes-token-8d2e";
const TY: &str = "hist.mode";
const N: usize = 60;

/// The raw history's `processed` entries: (per-event ones, aggregates, events the
/// aggregates list).
fn processed(redis: &RedisServer, env: &str) -> (usize, usize, usize) {
    let (mut per_event, mut aggregates, mut listed) = (0, 0, 0);
    for e in redis.xrange(&format!("events:{env}:history")) {
        if e.get("kind") != Some("processed") {
            continue;
        }
        match e.get("events") {
            None => per_event += 1,
            Some(list) => {
                aggregates += 1;
                let v: Vec<Value> = serde_json::from_str(list).expect("events is JSON");
                assert_eq!(
                    e.get("count"),
                    Some(v.len().to_string().as_str()),
                    "count of {list}"
                );
                listed += v.len();
            }
        }
    }
    (per_event, aggregates, listed)
}

/// Drains `N` events with `history.processed = mode` (None: the default); returns
/// the raw counts of [`processed`] and the JSON answer of `history --id h-17`.
fn drain_with(env: &str, mode: Option<&str>) -> ((usize, usize, usize), Value) {
    let extra = mode
        .map(|m| format!("[history]\nprocessed = \"{m}\"\n"))
        .unwrap_or_default();
    let mut s = Scenario::new(env)
        .types(&[TY])
        .token(TOKEN)
        .config(move |c| c.extra = extra)
        .start();
    let t0 = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    for i in 0..N {
        s.publish(&format!("h-{i:02}"));
    }
    wait_until("every event handled", Duration::from_secs(10), || {
        s.sink.success_counts().len() == N
    });
    let mut counts = (0, 0, 0);
    wait_until("every success recorded", Duration::from_secs(10), || {
        counts = processed(&s.redis, env);
        counts.0 + counts.2 == N
    });
    let out = cli(&s.cfg, &["--json", "history", "--id", "h-17"]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let answer: Value = serde_json::from_str(out.stdout.trim()).unwrap();
    let api = s.api(Some(TOKEN)).get("/api/events/history?id=h-17");
    assert_eq!(api.status, 200, "{}", api.body);
    assert_eq!(api.json(), answer, "the API and the CLI differ");
    let records = answer["records"].as_array().unwrap();
    assert_eq!(records.len(), 1, "{answer}");
    let r = &records[0];
    let at = r["at"].as_str().unwrap();
    let mut shape = r.clone();
    shape.as_object_mut().unwrap().remove("at");
    shape.as_object_mut().unwrap().remove("entry_id");
    assert_eq!(
        shape,
        json!({"kind": "processed", "id": "h-17", "type": TY, "group": "group", "attempt": 1}),
        "{answer}"
    );
    // RFC 3339 in ms, UTC, stamped during this run.
    let year = 1970 + t0.as_secs() / 31_556_952;
    assert!(
        at.len() == 24 && at.ends_with('Z') && at.starts_with(&year.to_string()),
        "at = {at}"
    );
    s.w().assert_running();
    (counts, answer)
}

#[test]
fn successes_are_aggregated_by_default_and_history_id_still_finds_them() {
    let ((per_event, aggregates, listed), _) = drain_with("histagg", None);
    assert_eq!(
        (per_event, listed),
        (0, N),
        "by default every success is listed in an aggregate, none has its own record"
    );
    assert!(
        (1..N).contains(&aggregates),
        "{aggregates} aggregate entries for {N} successes"
    );
}

#[test]
fn per_event_mode_writes_one_processed_record_per_success() {
    let ((per_event, aggregates, _), _) = drain_with("histper", Some("per_event"));
    assert_eq!((per_event, aggregates), (N, 0));
}
