//! The operator's DLQ surface, CLI (`dlq list|show|stats|replay|purge`,
//! `history`, `publish`) and HTTP API (`/api/events/dlq*`, `/history`,
//! `/publish`) side by side on one seeded DLQ: filters, paging, dry runs that
//! change nothing, purge refusals, replay by id / filter with canary and rate,
//! purge by id / filter / age / all, and the history records they leave.

use crate::util::api::{Api, encode};
use crate::util::worker::{Output, cli};
use crate::util::*;
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

const ORDERS: &str = "orders.created";
const USERS: &str = "users.signup";
const TOKEN: &str = "dlq-ops-token-4f1c2b7a9e";

/// Two groups on two types with a known DLQ of 7 entries:
///
/// | event | type | group | reason | error |
/// | old-1 | orders.created | billing | permanent_error | HTTP status 410: Gone for good (3 h ago) |
/// | old-2 | users.signup | mail | malformed | field `data` is missing (2 h ago) |
/// | p-1, p-2 | orders.created | billing | permanent_error | http status 400 |
/// | t-1 | orders.created | billing | max_attempts_exceeded | http status 503 |
/// | u-1 | users.signup | billing | permanent_error | http status 400 |
/// | m-1 | orders.created | mail | permanent_error | http status 400 |
///
/// The two old entries are written straight into the DLQ with entry ids hours
/// in the past (the age filters need them); the rest are real dead letters.
struct Seed {
    env: String,
    billing: WorkerProcess,
    mail: WorkerProcess,
    billing_sink: HttpSink,
    mail_sink: HttpSink,
    /// The billing worker's config (token included): what the CLI runs with.
    cfg: WorkerConfig,
    api: Api,
    /// Event id -> DLQ entry id at seeding time.
    entry: BTreeMap<String, String>,
    redis: RedisServer,
}

const REAL: [&str; 5] = ["p-1", "p-2", "t-1", "u-1", "m-1"];

fn seed(env: &str) -> Seed {
    seed_with(env, "")
}

/// [`seed`] with `extra` TOML appended to both workers' configs.
fn seed_with(env: &str, extra: &str) -> Seed {
    let redis = RedisServer::start();
    let now_ms = (unix_now() * 1000.0) as u64;
    let old = |id: &str, ty: &str, group: &str, reason: &str, error: &str, ago_h: u64| {
        let at = now_ms - ago_h * 3_600_000;
        let data = format!(r#"{{"n":"{id}"}}"#);
        let stream = stream_key(env, ty);
        let origin = format!("{}-0", at - 1000);
        let fields = [
            ("id", id),
            ("type", ty),
            ("data", data.as_str()),
            ("dlq_reason", reason),
            ("dlq_error", error),
            ("dlq_attempts", "1"),
            ("dlq_group", group),
            ("dlq_stream", stream.as_str()),
            ("dlq_entry_id", origin.as_str()),
            ("dlq_failed_at", "2020-01-01T00:00:00.000Z"),
            ("dlq_consumer", "gone-1"),
        ];
        let mut args = vec!["XADD".to_string(), dlq_key(env), format!("{at}-0")];
        for (k, v) in fields {
            args.push(k.into());
            args.push(v.into());
        }
        redis.cmd(&args);
    };
    old(
        "old-1",
        ORDERS,
        "billing",
        "permanent_error",
        "HTTP status 410: Gone for good",
        3,
    );
    old(
        "old-2",
        USERS,
        "mail",
        "malformed",
        "field `data` is missing",
        2,
    );

    let billing_sink = HttpSink::start();
    let mail_sink = HttpSink::start();
    // Rejected at first; accepted after "the fix" unless noted.
    billing_sink.script("p-1", vec![Action::status(400), Action::ok()]);
    billing_sink.script("p-2", vec![Action::status(400)]); // never fixed
    billing_sink.script(
        "t-1",
        vec![
            Action::status(503),
            Action::status(503),
            Action::status(503),
            Action::ok(),
        ],
    );
    billing_sink.script("u-1", vec![Action::status(400), Action::ok()]);
    mail_sink.script("m-1", vec![Action::status(400), Action::ok()]);
    let mk = |group: &str, sink: &HttpSink| {
        let mut cfg = WorkerConfig::new(env, &redis.url())
            .route(Route::http(&[ORDERS, USERS], &sink.url()))
            .api_token(TOKEN);
        cfg.group = group.into();
        cfg.consumer = Some(format!("{group}-1"));
        cfg.max_attempts = 3;
        cfg.extra = extra.to_string();
        cfg
    };
    let cfg = mk("billing", &billing_sink);
    let mut billing = WorkerProcess::start("billing", cfg.clone());
    let mut mail = WorkerProcess::start("mail", mk("mail", &mail_sink));
    billing.wait_ready(Duration::from_secs(15));
    mail.wait_ready(Duration::from_secs(15));
    for id in ["p-1", "p-2", "t-1", "m-1"] {
        publish(&redis, env, ORDERS, id);
    }
    publish(&redis, env, USERS, "u-1");
    let settled = try_wait_until(Duration::from_secs(20), || {
        redis.xlen(&dlq_key(env)) == 7
            && mail_sink.success_counts().len() == 4
            && billing_sink.success_counts().len() == 1
            && drained(&redis, env, "billing", &[ORDERS, USERS])
            && drained(&redis, env, "mail", &[ORDERS, USERS])
    });
    if !settled {
        eprintln!("{}", redis.dump_env(env));
        panic!(
            "seed did not settle\n{}\n{}",
            billing_sink.ledger_dump(),
            mail_sink.ledger_dump()
        );
    }
    let entry = dlq_entries(&redis, env)
        .into_iter()
        .map(|e| (e.get("id").unwrap().to_string(), e.entry_id.clone()))
        .collect::<BTreeMap<_, _>>();
    assert_eq!(entry.len(), 7, "one DLQ entry per event: {entry:?}");
    let api = Api::new(&cfg.api_addr(), Some(TOKEN));
    Seed {
        env: env.to_string(),
        billing,
        mail,
        billing_sink,
        mail_sink,
        cfg,
        api,
        entry,
        redis,
    }
}

impl Seed {
    fn cli(&self, args: &[&str]) -> Output {
        cli(&self.cfg, args)
    }

    /// Runs a `--json` CLI command that must succeed; its stdout as JSON.
    fn cli_json(&self, args: &[&str]) -> Value {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        let out = self.cli(&all);
        assert_eq!(
            out.code,
            Some(0),
            "event-worker {all:?} failed\nstdout: {}\nstderr: {}",
            out.stdout,
            out.stderr
        );
        serde_json::from_str(out.stdout.trim()).unwrap_or_else(|e| {
            panic!(
                "event-worker {all:?}: stdout is not JSON ({e}): {:?}",
                out.stdout
            )
        })
    }

    /// A CLI command that must fail with a one-line reason; returns stderr.
    fn cli_refused(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(
            out.code.is_some_and(|c| c != 0),
            "event-worker {args:?} should fail, got {:?}\nstdout: {}\nstderr: {}",
            out.code,
            out.stdout,
            out.stderr
        );
        assert!(
            !out.stderr.trim().is_empty(),
            "event-worker {args:?} failed without saying why"
        );
        out.stderr
    }

    fn api_ok(&self, path: &str) -> Value {
        let r = self.api.get(path);
        assert_eq!(r.status, 200, "GET {path}: {}", r.body);
        r.json()
    }

    fn api_post_ok(&self, path: &str, body: Value) -> Value {
        let r = self.api.post(path, &body);
        assert_eq!(r.status, 200, "POST {path} {body}: {}", r.body);
        r.json()
    }

    /// DLQ entry ids, newest first (the ground truth, from Redis).
    fn newest_first(&self) -> Vec<String> {
        let mut ids: Vec<String> = dlq_entries(&self.redis, &self.env)
            .into_iter()
            .map(|e| e.entry_id)
            .collect();
        ids.reverse();
        ids
    }

    fn dlq_event_ids(&self) -> BTreeSet<String> {
        dlq_entries(&self.redis, &self.env)
            .iter()
            .filter_map(|e| e.get("id").map(str::to_string))
            .collect()
    }
}

/// `entries[].id` of a list answer.
fn event_ids(v: &Value) -> Vec<String> {
    v["entries"]
        .as_array()
        .unwrap_or_else(|| panic!("no entries array in {v}"))
        .iter()
        .map(|e| e["id"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// `entries[].entry_id` of a list answer.
fn entry_ids(v: &Value) -> Vec<String> {
    v["entries"]
        .as_array()
        .unwrap_or_else(|| panic!("no entries array in {v}"))
        .iter()
        .map(|e| e["entry_id"].as_str().unwrap_or_default().to_string())
        .collect()
}

fn set(ids: &[&str]) -> BTreeSet<String> {
    ids.iter().map(|s| s.to_string()).collect()
}

/// Everything the dry runs and refusals must leave untouched, byte for byte:
/// the DLQ (DUMP and entries), each group's redeliver stream (entries and
/// XINFO STREAM: length, last id, entries-added, ...) and retry set, and the history.
fn snapshot(redis: &RedisServer, env: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let dlq = dlq_key(env);
    out.push((
        format!("DUMP {dlq}"),
        format!("{:?}", redis.cmd(&["DUMP", &dlq])),
    ));
    out.push((format!("XRANGE {dlq}"), format!("{:?}", redis.xrange(&dlq))));
    for g in ["billing", "mail"] {
        let rk = redeliver_key(env, g);
        out.push((format!("XRANGE {rk}"), format!("{:?}", redis.xrange(&rk))));
        out.push((
            format!("XINFO STREAM {rk}"),
            format!("{:?}", redis.cmd(&["XINFO", "STREAM", &rk])),
        ));
        let zk = retry_key(env, g);
        out.push((
            format!("ZRANGE {zk}"),
            format!("{:?}", redis.zrange_withscores(&zk)),
        ));
    }
    let hk = format!("events:{env}:history");
    out.push((format!("XRANGE {hk}"), format!("{:?}", redis.xrange(&hk))));
    out
}

#[test]
fn dlq_list_filters_paging_show_and_stats_cli_and_api_agree() {
    let s = seed("dlqread");
    let _dump = s.redis.dump_on_panic(&s.env);
    let mut problems: Vec<String> = Vec::new();

    // ---- list: everything, newest first, CLI == API == Redis.
    let all = s.cli_json(&["dlq", "list"]);
    assert_eq!(entry_ids(&all), s.newest_first(), "dlq list order: {all}");
    assert!(all["next"].is_null(), "one page holds all 7: {all}");
    for e in all["entries"].as_array().unwrap() {
        let id = e["id"].as_str().unwrap();
        let redis_entry = dlq_entries(&s.redis, &s.env)
            .into_iter()
            .find(|x| x.get("id") == Some(id))
            .unwrap();
        for (json_key, field) in [
            ("entry_id", None),
            ("type", Some("type")),
            ("group", Some("dlq_group")),
            ("reason", Some("dlq_reason")),
            ("attempts", Some("dlq_attempts")),
            ("failed_at", Some("dlq_failed_at")),
            ("error", Some("dlq_error")),
        ] {
            let want = match field {
                Some(f) => redis_entry.get(f).unwrap_or_default().to_string(),
                None => redis_entry.entry_id.clone(),
            };
            // Counters are JSON numbers (`"attempts": 3`), the rest text.
            let want = match json_key {
                "attempts" => json!(want.parse::<u64>().unwrap()),
                _ => json!(want),
            };
            assert_eq!(e[json_key], want, "{id}: list field {json_key}");
        }
    }
    let api_all = s.api_ok("/api/events/dlq");
    assert_eq!(
        api_all, all,
        "GET /api/events/dlq differs from dlq list --json"
    );

    // ---- filters (each alone, then combined), CLI == API.
    let cases: Vec<(Vec<&str>, String, BTreeSet<String>)> = vec![
        (
            vec!["--type", USERS],
            format!("type={USERS}"),
            set(&["u-1", "old-2"]),
        ),
        (
            vec!["--reason", "max_attempts_exceeded"],
            "reason=max_attempts_exceeded".into(),
            set(&["t-1"]),
        ),
        (
            vec!["--reason", "malformed"],
            "reason=malformed".into(),
            set(&["old-2"]),
        ),
        (
            vec!["--group", "mail"],
            "group=mail".into(),
            set(&["m-1", "old-2"]),
        ),
        (vec!["--grep", "503"], "grep=503".into(), set(&["t-1"])),
        (vec!["--grep", "GONE"], "grep=GONE".into(), set(&["old-1"])),
        (vec!["--since", "1h"], "since=1h".into(), set(&REAL)),
        (
            vec![
                "--type",
                ORDERS,
                "--group",
                "billing",
                "--reason",
                "permanent_error",
            ],
            format!("type={ORDERS}&group=billing&reason=permanent_error"),
            set(&["p-1", "p-2", "old-1"]),
        ),
        (
            vec!["--type", ORDERS, "--group", "billing", "--since", "1h"],
            format!("type={ORDERS}&group=billing&since=1h"),
            set(&["p-1", "p-2", "t-1"]),
        ),
        (
            vec!["--grep", "status 400", "--group", "mail"],
            format!("grep={}&group=mail", encode("status 400")),
            set(&["m-1"]),
        ),
    ];
    for (args, query, want) in &cases {
        let mut a = vec!["dlq", "list"];
        a.extend_from_slice(args);
        let got = s.cli_json(&a);
        let ids: BTreeSet<String> = event_ids(&got).into_iter().collect();
        assert_eq!(&ids, want, "dlq list {args:?}");
        let order = entry_ids(&got);
        let mut sorted = order.clone();
        sorted.sort_by_key(|id| {
            let (ms, seq) = id.split_once('-').unwrap();
            std::cmp::Reverse((ms.parse::<u64>().unwrap(), seq.parse::<u64>().unwrap()))
        });
        assert_eq!(order, sorted, "dlq list {args:?}: not newest first");
        let api = s.api_ok(&format!("/api/events/dlq?{query}"));
        assert_eq!(api, got, "GET /api/events/dlq?{query} differs from the CLI");
    }

    // ---- paging: --limit 3 and --before NEXT walk every entry once, newest first.
    let walk_cli = |extra: &[&str], limit: &str| -> (Vec<String>, Vec<usize>) {
        let (mut seen, mut sizes) = (Vec::new(), Vec::new());
        let mut before: Option<String> = None;
        for _ in 0..20 {
            let mut a = vec!["dlq", "list", "--limit", limit];
            a.extend_from_slice(extra);
            if let Some(b) = &before {
                a.push("--before");
                a.push(b);
            }
            let page = s.cli_json(&a);
            let ids = entry_ids(&page);
            sizes.push(ids.len());
            seen.extend(ids);
            match page["next"].as_str() {
                Some(n) => before = Some(n.to_string()),
                None => return (seen, sizes),
            }
        }
        panic!("paging did not end after 20 pages");
    };
    let (seen, sizes) = walk_cli(&[], "3");
    assert_eq!(seen, s.newest_first(), "paged walk (limit 3)");
    if sizes != vec![3, 3, 1] {
        problems.push(format!(
            "dlq list --limit 3 page sizes {sizes:?}, want [3, 3, 1]"
        ));
    }
    let (seen, _) = walk_cli(&["--group", "billing"], "2");
    let billing_newest: Vec<String> = s
        .newest_first()
        .into_iter()
        .filter(|id| {
            let ev = s.entry.iter().find(|(_, e)| *e == id).unwrap().0;
            ["p-1", "p-2", "t-1", "u-1", "old-1"].contains(&ev.as_str())
        })
        .collect();
    assert_eq!(seen, billing_newest, "paged walk --group billing --limit 2");
    // The same walk over HTTP.
    let mut api_seen = Vec::new();
    let mut path = "/api/events/dlq?limit=3".to_string();
    for i in 0..20 {
        let page = s.api_ok(&path);
        api_seen.extend(entry_ids(&page));
        match page["next"].as_str() {
            Some(n) => path = format!("/api/events/dlq?limit=3&before={n}"),
            None => break,
        }
        assert!(i < 19, "API paging did not end");
    }
    assert_eq!(api_seen, s.newest_first(), "API paged walk (limit 3)");
    // A page that ends exactly at the oldest entry has no `next` ("None at the end").
    let exact = s.cli_json(&["dlq", "list", "--limit", "7"]);
    if !exact["next"].is_null() {
        let after = s.cli_json(&["dlq", "list", "--before", exact["next"].as_str().unwrap()]);
        problems.push(format!(
            "dlq list --limit 7 over exactly 7 entries returns next={} (the page after it has {} entries); README/doc: next is null at the end",
            exact["next"],
            entry_ids(&after).len()
        ));
    }

    // ---- human table.
    let out = s.cli(&["dlq", "list"]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(out.stdout.contains("ENTRY_ID"), "{}", out.stdout);
    for id in s.entry.keys() {
        assert!(
            out.stdout.contains(id.as_str()),
            "{id} not in\n{}",
            out.stdout
        );
    }

    // ---- show: CLI == API, every field of the entry.
    let p1 = &s.entry["p-1"];
    let shown = s.cli_json(&["dlq", "show", p1]);
    assert_eq!(shown["entry_id"], json!(p1));
    let f = &shown["fields"];
    assert_eq!(f["id"], json!("p-1"));
    assert_eq!(f["type"], json!(ORDERS));
    assert_eq!(f["data"], json!(r#"{"n":"p-1"}"#));
    assert_eq!(f["dlq_reason"], json!("permanent_error"));
    assert_eq!(f["dlq_group"], json!("billing"));
    assert_eq!(f["dlq_consumer"], json!("billing-1"));
    assert_eq!(f["dlq_attempts"], json!(1));
    assert_eq!(f["dlq_stream"], json!(stream_key(&s.env, ORDERS)));
    assert!(
        f["dlq_error"].as_str().is_some_and(|e| e.contains("400")),
        "dlq_error of p-1: {f}"
    );
    for k in ["dlq_entry_id", "dlq_failed_at"] {
        assert!(
            f[k].as_str().is_some_and(|v| !v.is_empty()),
            "{k} missing: {f}"
        );
    }
    assert_eq!(
        s.api_ok(&format!("/api/events/dlq/{p1}")),
        shown,
        "GET /api/events/dlq/{{id}} differs from dlq show --json"
    );
    let out = s.cli(&["dlq", "show", p1]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(
        out.stdout.contains("dlq_reason: permanent_error"),
        "{}",
        out.stdout
    );
    s.cli_refused(&["dlq", "show", "1-0"]);
    assert_eq!(s.api.get("/api/events/dlq/1-0").status, 404);
    s.cli_refused(&["dlq", "show", "../x"]);
    assert_eq!(s.api.get("/api/events/dlq/..%2Fx").status, 400);

    // ---- stats.
    let stats = s.cli_json(&["dlq", "stats"]);
    assert_eq!(stats["total"], json!(7), "{stats}");
    assert_eq!(
        stats["by_reason"],
        json!({"permanent_error": 5, "max_attempts_exceeded": 1, "malformed": 1}),
        "{stats}"
    );
    assert_eq!(stats["by_type"], json!({ORDERS: 5, USERS: 2}), "{stats}");
    assert_eq!(
        stats["by_group"],
        json!({"billing": 5, "mail": 2}),
        "{stats}"
    );
    assert_eq!(stats["oldest"]["id"], json!(s.entry["old-1"]), "{stats}");
    assert_eq!(stats["newest"]["id"], json!(s.newest_first()[0]), "{stats}");
    for end in ["oldest", "newest"] {
        let keys: Vec<&String> = stats[end].as_object().unwrap().keys().collect();
        assert_eq!(keys, ["id", "time"], "{stats}");
        assert!(
            stats[end]["time"].as_str().unwrap().ends_with('Z'),
            "{stats}"
        );
    }
    assert_eq!(stats["complete"], json!(true));
    assert_eq!(
        s.api_ok("/api/events/dlq/stats"),
        stats,
        "GET /api/events/dlq/stats differs from dlq stats --json"
    );
    let out = s.cli(&["dlq", "stats"]);
    assert!(out.stdout.contains("total: 7"), "{}", out.stdout);

    // ---- invalid arguments: refused, CLI non-zero, API 400.
    for args in [
        vec!["dlq", "list", "--type", "dlq"],
        vec!["dlq", "list", "--before", "*"],
        vec!["dlq", "list", "--since", "soon"],
        vec!["dlq", "list", "--group", "../x"],
    ] {
        s.cli_refused(&args);
    }
    for q in ["type=dlq", "before=*", "since=soon", "group=..%2Fx"] {
        let r = s.api.get(&format!("/api/events/dlq?{q}"));
        assert_eq!(r.status, 400, "GET /api/events/dlq?{q}: {}", r.body);
    }
    assert_eq!(s.redis.xlen(&dlq_key(&s.env)), 7, "reads changed the DLQ");
    assert!(problems.is_empty(), "deviations:\n{}", problems.join("\n"));
}

#[test]
fn t30_dlq_dry_runs_and_refused_purges_change_nothing() {
    let s = seed("dlqdry");
    let _dump = s.redis.dump_on_panic(&s.env);
    let before = snapshot(&s.redis, &s.env);
    let billing_requests = s.billing_sink.request_count();
    let mail_requests = s.mail_sink.request_count();

    // Replay dry runs: count and sample, nothing else.
    let r = s.cli_json(&["dlq", "replay", "--all", "--dry-run"]);
    assert_eq!(r["dry_run"], json!(true), "{r}");
    assert_eq!(r["matched"], json!(7), "{r}");
    assert_eq!(r["replayed"], json!(0), "{r}");
    let sample: BTreeSet<String> = r["sample"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(sample, s.entry.keys().cloned().collect(), "sample: {r}");
    let r = s.cli_json(&["dlq", "replay", "--type", ORDERS, "--dry-run"]);
    assert_eq!(r["matched"], json!(5), "--type {ORDERS}: {r}");
    let r = s.cli_json(&[
        "dlq",
        "replay",
        "--id",
        &s.entry["p-1"],
        "--id",
        &s.entry["u-1"],
        "--dry-run",
    ]);
    assert_eq!(r["matched"], json!(2), "--id x2: {r}");
    let r = s.cli_json(&["dlq", "replay", "--older-than", "1h", "--dry-run"]);
    assert_eq!(r["matched"], json!(2), "--older-than 1h: {r}");
    let out = s.cli(&["dlq", "replay", "--group", "mail", "--dry-run"]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(
        out.stdout.contains("dry run: 2 entries would be replayed"),
        "{}",
        out.stdout
    );
    for (body, want) in [
        (json!({"all": true, "dry_run": true}), 7),
        (json!({"group": "mail", "dry_run": true}), 2),
        (json!({"reason": "permanent_error", "dry_run": true}), 5),
        (json!({"grep": "gone", "dry_run": true}), 1),
        (json!({"since": "1h", "dry_run": true}), 5),
        (json!({"older_than": "1h", "dry_run": true}), 2),
        (json!({"ids": [s.entry["t-1"]], "dry_run": true}), 1),
    ] {
        let r = s.api_post_ok("/api/events/dlq/replay", body.clone());
        assert_eq!(r["dry_run"], json!(true), "{body}: {r}");
        assert_eq!(r["matched"], json!(want), "{body}: {r}");
        assert_eq!(r["replayed"], json!(0), "{body}: {r}");
    }

    // Purge dry runs (no --yes / confirm needed to count).
    let r = s.cli_json(&["dlq", "purge", "--all", "--dry-run"]);
    assert_eq!(
        (
            r["matched"].clone(),
            r["purged"].clone(),
            r["dry_run"].clone()
        ),
        (json!(7), json!(0), json!(true)),
        "{r}"
    );
    let r = s.cli_json(&["dlq", "purge", "--older-than", "1h", "--dry-run"]);
    assert_eq!(r["matched"], json!(2), "{r}");
    let r = s.api_post_ok(
        "/api/events/dlq/purge",
        json!({"type": USERS, "dry_run": true}),
    );
    assert_eq!(
        (r["matched"].clone(), r["purged"].clone()),
        (json!(2), json!(0)),
        "{r}"
    );

    // Refusals: purge without --yes / confirm, ambiguous or empty selections.
    let why = s.cli_refused(&["dlq", "purge", "--all"]);
    assert!(
        why.contains("--yes"),
        "purge refusal should name --yes: {why}"
    );
    s.cli_refused(&["dlq", "purge", "--id", &s.entry["p-1"]]);
    s.cli_refused(&["dlq", "purge", "--older-than", "1h"]);
    s.cli_refused(&["dlq", "replay"]);
    s.cli_refused(&["dlq", "replay", "--all", "--id", &s.entry["p-1"]]);
    s.cli_refused(&["dlq", "replay", "--all", "--rate", "0"]);
    for body in [
        json!({"all": true}),
        json!({"all": true, "confirm": false}),
        json!({"ids": [s.entry["p-1"]]}),
        json!({"older_than": "1h"}),
    ] {
        let r = s.api.post("/api/events/dlq/purge", &body);
        assert_eq!(r.status, 400, "purge {body} without confirm: {}", r.body);
        assert!(
            r.body.contains("confirm"),
            "purge refusal should name confirm: {}",
            r.body
        );
    }
    for body in [
        json!({}),
        json!({"all": true, "ids": [s.entry["p-1"]]}),
        json!({"all": true, "type": ORDERS}),
        json!({"ids": []}),
        json!({"all": true, "rate": 0}),
    ] {
        let r = s.api.post("/api/events/dlq/replay", &body);
        assert_eq!(r.status, 400, "replay {body}: {}", r.body);
    }

    std::thread::sleep(Duration::from_millis(700));
    let after = snapshot(&s.redis, &s.env);
    for ((k, b), (_, a)) in before.iter().zip(after.iter()) {
        assert_eq!(b, a, "{k} changed during dry runs / refused requests");
    }
    assert_eq!(s.billing_sink.request_count(), billing_requests);
    assert_eq!(s.mail_sink.request_count(), mail_requests);
    let mut billing = s.billing;
    let mut mail = s.mail;
    billing.assert_running();
    mail.assert_running();
}

/// History records of one event id (CLI `history --id`), oldest first.
fn history_of(s: &Seed, id: &str) -> Vec<Value> {
    let v = s.cli_json(&["history", "--id", id]);
    let mut recs = v["records"].as_array().cloned().unwrap_or_default();
    recs.reverse();
    recs
}

/// Waits until the history stream holds `n` records of `kind` for event `id`
/// in `group` (the workers write theirs asynchronously).
fn wait_history(s: &Seed, id: &str, kind: &str, group: &str, n: usize) {
    wait_until(
        &format!("{n} {kind} history record(s) of {id} in {group}"),
        Duration::from_secs(10),
        || {
            history_rows(&s.redis, &s.env)
                .iter()
                .filter(|r| r.id == id && r.kind == kind && r.group == group)
                .count()
                >= n
        },
    );
}

/// One record of the raw history stream, as its fields name it.
struct Row {
    id: String,
    kind: String,
    group: String,
    correlation_id: String,
}

/// Every record of the history stream, read straight from Redis, whichever
/// `history.processed` mode wrote it: an aggregate of successes (`events`, a
/// JSON list of `[id, type, runs, at_ms, correlation id]`) is one row per event.
fn history_rows(redis: &RedisServer, env: &str) -> Vec<Row> {
    let mut rows = Vec::new();
    for e in redis.xrange(&format!("events:{env}:history")) {
        let field = |k: &str| e.get(k).unwrap_or_default().to_string();
        let Some(events) = e.get("events") else {
            rows.push(Row {
                id: field("id"),
                kind: field("kind"),
                group: field("group"),
                correlation_id: field("correlationid"),
            });
            continue;
        };
        let list: Vec<Value> = serde_json::from_str(events).expect("events is a JSON list");
        for item in list {
            rows.push(Row {
                id: item[0].as_str().unwrap().to_string(),
                kind: field("kind"),
                group: field("group"),
                correlation_id: item[4].as_str().unwrap().to_string(),
            });
        }
    }
    rows
}

fn kinds(recs: &[Value]) -> Vec<String> {
    recs.iter()
        .map(|r| r["kind"].as_str().unwrap_or_default().to_string())
        .collect()
}

#[test]
fn t29_dlq_replay_canary_purge_and_their_history() {
    let redis = replay_canary_purge_and_their_history(seed("dlqmut"));
    let (per_event, aggregates) = processed_entries(&redis, "dlqmut");
    assert!(
        per_event == 0 && aggregates > 0,
        "the default history.processed is aggregate: {per_event} per-event and {aggregates} aggregate processed entries"
    );
}

/// T29 with one `processed` record per success (`history.processed = "per_event"`;
/// the default aggregates them): the same answers from the history.
#[test]
fn t29_with_per_event_processed_records() {
    let s = seed_with("dlqmutpe", "[history]\nprocessed = \"per_event\"\n");
    let redis = replay_canary_purge_and_their_history(s);
    let (per_event, aggregates) = processed_entries(&redis, "dlqmutpe");
    assert!(
        per_event > 0 && aggregates == 0,
        "per_event mode: {per_event} per-event and {aggregates} aggregate processed entries"
    );
}

/// Replays, a canary stop, purges and the history they leave, on a seeded DLQ;
/// returns the Redis server for checks of the raw history.
fn replay_canary_purge_and_their_history(s: Seed) -> RedisServer {
    let _dump = s.redis.dump_on_panic(&s.env);
    let env = s.env.clone();

    // ---- replay one id (CLI): back to billing only, attempt 0, once.
    let r = s.cli_json(&["dlq", "replay", "--id", &s.entry["p-1"]]);
    assert_eq!(
        (
            r["matched"].clone(),
            r["replayed"].clone(),
            r["missing"].clone()
        ),
        (json!(1), json!(1), json!(0)),
        "{r}"
    );
    assert_eq!(r["by_group_type"], json!({format!("billing/{ORDERS}"): 1}));
    wait_until("p-1 handled again", Duration::from_secs(10), || {
        s.billing_sink.success_counts().get("p-1") == Some(&1)
    });
    // The same entry again: gone, nothing enqueued.
    let r = s.cli_json(&["dlq", "replay", "--id", &s.entry["p-1"]]);
    assert_eq!(
        (r["matched"].clone(), r["replayed"].clone()),
        (json!(0), json!(0)),
        "a second replay of a replayed entry: {r}"
    );
    wait_history(&s, "p-1", "processed", "billing", 1);
    let h = history_of(&s, "p-1");
    let k = kinds(&h);
    let pos = |kind: &str| k.iter().position(|x| x == kind);
    assert!(
        matches!((pos("dead_lettered"), pos("replayed"), k.iter().rposition(|x| x == "processed")),
            (Some(d), Some(r), Some(p)) if d < r && r < p),
        "history of p-1 should be dead_lettered < replayed < processed: {h:#?}"
    );
    let rec = &h[pos("replayed").unwrap()];
    assert_eq!(rec["group"], json!("billing"), "{rec}");
    assert_eq!(rec["type"], json!(ORDERS), "{rec}");
    let detail = rec["detail"].as_str().unwrap_or_default();
    assert!(
        detail.contains("cli") && detail.contains(s.entry["p-1"].as_str()),
        "replayed record should say by whom and from which DLQ entry: {rec}"
    );

    // ---- replay one id (API) of the mail group's failure.
    let r = s.api_post_ok("/api/events/dlq/replay", json!({"ids": [s.entry["m-1"]]}));
    assert_eq!(r["replayed"], json!(1), "{r}");
    wait_until("m-1 handled again", Duration::from_secs(10), || {
        s.mail_sink.success_counts().get("m-1") == Some(&1)
    });
    wait_history(&s, "m-1", "processed", "mail", 1);
    let h = s.api_ok("/api/events/history?id=m-1");
    let replayed: Vec<&Value> = h["records"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["kind"] == "replayed")
        .collect();
    assert_eq!(replayed.len(), 1, "{h}");
    assert_eq!(replayed[0]["group"], json!("mail"));
    assert!(
        replayed[0]["detail"]
            .as_str()
            .is_some_and(|d| d.contains("api")),
        "{h}"
    );

    // ---- canary stop: p-2 still fails, so u-1 must not be replayed.
    let p2_origin = dlq_by_id(&s.redis, &env)["p-2"][0]
        .get("dlq_entry_id")
        .unwrap()
        .to_string();
    let out = s.cli(&[
        "dlq",
        "replay",
        "--id",
        &s.entry["p-2"],
        "--id",
        &s.entry["u-1"],
        "--canary",
        "1",
        "--canary-timeout",
        "10s",
    ]);
    assert!(
        out.code.is_some_and(|c| c != 0),
        "a failed canary must exit non-zero: {:?}\n{}\n{}",
        out.code,
        out.stdout,
        out.stderr
    );
    assert!(
        out.stderr
            .contains("replay stopped: canary event p-2 failed again"),
        "stderr: {}",
        out.stderr
    );
    let dlq = dlq_by_id(&s.redis, &env);
    assert_eq!(
        dlq.get("u-1").map(|v| v[0].entry_id.clone()),
        Some(s.entry["u-1"].clone()),
        "u-1 must still be in the DLQ under its old entry id"
    );
    assert_eq!(
        dlq.get("p-2").map(Vec::len),
        Some(1),
        "p-2 back once: {dlq:?}"
    );
    assert_ne!(
        dlq["p-2"][0].entry_id, s.entry["p-2"],
        "p-2 is a new DLQ entry"
    );
    // T29: the replayed event keeps its provenance and counts its replays.
    assert_eq!(
        dlq["p-2"][0].get("replay_count"),
        Some("1"),
        "{:?}",
        dlq["p-2"]
    );
    assert_eq!(
        dlq["p-2"][0].get("dlq_entry_id"),
        Some(p2_origin.as_str()),
        "the original stream entry id survives the replay: {:?}",
        dlq["p-2"]
    );
    assert_eq!(dlq["p-2"][0].get("data"), Some(r#"{"n":"p-2"}"#));
    assert_eq!(
        s.billing_sink.requests_for("u-1").len(),
        1,
        "u-1 was delivered although the canary failed\n{}",
        s.billing_sink.ledger_dump()
    );
    assert_eq!(s.billing_sink.requests_for("p-2").len(), 2);
    assert!(!kinds(&history_of(&s, "u-1")).contains(&"replayed".to_string()));

    // ---- canary that succeeds (API): the rest follows.
    let r = s.api_post_ok(
        "/api/events/dlq/replay",
        json!({"ids": [s.entry["u-1"], s.entry["t-1"]], "canary": 1}),
    );
    assert!(r["stopped"].is_null(), "canary u-1 succeeds: {r}");
    assert_eq!(r["replayed"], json!(2), "{r}");
    wait_until("u-1 and t-1 handled", Duration::from_secs(15), || {
        let c = s.billing_sink.success_counts();
        c.get("u-1") == Some(&1) && c.get("t-1") == Some(&1)
    });

    // ---- purge by id (CLI), by filter (group), by age, with history records.
    let p2 = dlq_by_id(&s.redis, &env)["p-2"][0].entry_id.clone();
    let r = s.cli_json(&["dlq", "purge", "--id", &p2, "--yes"]);
    assert_eq!(
        (r["matched"].clone(), r["purged"].clone()),
        (json!(1), json!(1)),
        "{r}"
    );
    let r = s.cli_json(&["dlq", "purge", "--id", &p2, "--yes"]);
    assert_eq!(r["purged"], json!(0), "purging a purged id: {r}");
    let r = s.cli_json(&["dlq", "purge", "--group", "mail", "--yes"]);
    assert_eq!(r["purged"], json!(1), "only old-2 is left of mail: {r}");
    let r = s.cli_json(&["dlq", "purge", "--older-than", "1h", "--yes"]);
    assert_eq!(
        r["purged"],
        json!(1),
        "only old-1 is older than 1h now: {r}"
    );
    assert_eq!(s.redis.xlen(&dlq_key(&env)), 0, "{:?}", s.dlq_event_ids());
    for (id, entry) in [
        ("p-2", p2.clone()),
        ("old-2", s.entry["old-2"].clone()),
        ("old-1", s.entry["old-1"].clone()),
    ] {
        let h = history_of(&s, id);
        let purged: Vec<&Value> = h.iter().filter(|r| r["kind"] == "purged").collect();
        assert_eq!(purged.len(), 1, "one purged record for {id}: {h:#?}");
        let d = purged[0]["detail"].as_str().unwrap_or_default();
        assert!(
            d.contains("cli") && d.contains(&entry),
            "purged record of {id}: {}",
            purged[0]
        );
    }

    // ---- publish (API and CLI) with a correlation id; purge --all via the API.
    s.billing_sink.script("z-1", vec![Action::status(400)]);
    s.billing_sink.script("z-2", vec![Action::status(400)]);
    let r = s.api.post(
        "/api/events/publish",
        &json!({"type": ORDERS, "data": {"z": 1}, "id": "z-1", "correlationid": "corr-z"}),
    );
    assert_eq!(r.status, 202, "{}", r.body);
    let p = r.json();
    assert_eq!(p["id"], json!("z-1"));
    assert_eq!(p["stream"], json!(stream_key(&env, ORDERS)));
    let entry_id = p["entry_id"].as_str().unwrap().to_string();
    let in_stream = s
        .redis
        .xrange(&stream_key(&env, ORDERS))
        .into_iter()
        .find(|e| e.entry_id == entry_id)
        .expect("the 202's entry id is in the stream");
    assert_eq!(in_stream.get("id"), Some("z-1"));
    assert_eq!(in_stream.get("correlationid"), Some("corr-z"));
    assert_eq!(in_stream.get("data"), Some(r#"{"z":1}"#));
    let out = s.cli(&[
        "publish",
        ORDERS,
        r#"{"z":2}"#,
        "--id",
        "z-2",
        "--correlation-id",
        "corr-z",
    ]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    wait_until("z-1 and z-2 dead-lettered", Duration::from_secs(10), || {
        s.redis.xlen(&dlq_key(&env)) == 2
    });
    let r = s.api_post_ok(
        "/api/events/dlq/purge",
        json!({"all": true, "confirm": true}),
    );
    assert_eq!(
        (
            r["matched"].clone(),
            r["purged"].clone(),
            r["dry_run"].clone()
        ),
        (json!(2), json!(2), json!(false)),
        "{r}"
    );
    assert_eq!(s.redis.xlen(&dlq_key(&env)), 0);
    // Records are written asynchronously by three processes: wait for all 8.
    wait_until("8 corr-z history records", Duration::from_secs(10), || {
        history_rows(&s.redis, &env)
            .iter()
            .filter(|r| r.correlation_id == "corr-z")
            .count()
            == 8
    });
    let h = s.cli_json(&["history", "--correlation-id", "corr-z"]);
    let recs = h["records"].as_array().unwrap();
    // Per id, oldest first: (kind, group). The mail group handles z-* fine.
    let mut by_id: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    for r in recs.iter().rev() {
        assert_eq!(r["correlation_id"], json!("corr-z"), "{r}");
        by_id
            .entry(r["id"].as_str().unwrap().to_string())
            .or_default()
            .push((
                r["kind"].as_str().unwrap().to_string(),
                r["group"].as_str().unwrap_or_default().to_string(),
            ));
    }
    for id in ["z-1", "z-2"] {
        let got = by_id.get(id).cloned().unwrap_or_default();
        let mut sorted = got.clone();
        sorted.sort();
        let pair = |k: &str, g: &str| (k.to_string(), g.to_string());
        assert_eq!(
            sorted,
            vec![
                pair("dead_lettered", "billing"),
                pair("processed", "mail"),
                pair("published", ""),
                pair("purged", "billing"),
            ],
            "history of {id} by correlation id: {h}"
        );
    }
    assert_eq!(by_id.len(), 2, "only z-1 and z-2 carry corr-z: {h}");
    let api_h = s.api_ok("/api/events/history?correlation_id=corr-z");
    assert_eq!(api_h, h, "GET /api/events/history differs from the CLI");
    let typed = s.cli_json(&["history", "--type", USERS, "--limit", "1000"]);
    assert!(
        typed["records"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["type"] == USERS),
        "history --type {USERS}: {typed}"
    );
    let limited = s.cli_json(&["history", "--limit", "2"]);
    assert_eq!(limited["records"].as_array().unwrap().len(), 2);

    // CLI purge --all --yes, on a fresh dead letter published through the API.
    s.billing_sink.script("z-3", vec![Action::status(400)]);
    let r = s.api.post(
        "/api/events/publish",
        &json!({"type": USERS, "data": [1, 2], "id": "z-3"}),
    );
    assert_eq!(r.status, 202, "{}", r.body);
    wait_until("z-3 dead-lettered", Duration::from_secs(10), || {
        s.redis.xlen(&dlq_key(&env)) == 1
    });
    let r = s.cli_json(&["dlq", "purge", "--all", "--yes"]);
    assert_eq!(
        (r["matched"].clone(), r["purged"].clone()),
        (json!(1), json!(1)),
        "{r}"
    );
    assert_eq!(s.redis.xlen(&dlq_key(&env)), 0);
    assert!(kinds(&history_of(&s, "z-3")).contains(&"purged".to_string()));

    // The CLI refuses bad publishes before writing anything.
    for args in [
        ["publish", "dlq", "{}"],
        ["publish", "a:b", "{}"],
        ["publish", "{x}", "{}"],
        ["publish", ORDERS, "not json"],
    ] {
        s.cli_refused(&args);
    }
    for key in ["a:b", "{x}"] {
        assert!(!s.redis.exists(&format!("events:{env}:{key}")));
    }
    // A huge history limit is clamped, not an error (T46).
    let r = s.api.get("/api/events/history?limit=10000000");
    assert_eq!(r.status, 200, "{}", r.body);
    let n = r.json()["records"].as_array().map(Vec::len).unwrap_or(0);
    assert!((1..=1000).contains(&n), "{n} records");

    // Nobody outside billing saw billing's replays; mail saw m-1 twice only.
    for id in ["p-1", "p-2", "t-1", "u-1"] {
        assert_eq!(
            s.mail_sink.requests_for(id).len(),
            1,
            "{id} reached mail again"
        );
    }
    assert_eq!(s.billing_sink.requests_for("m-1").len(), 1);
    let mut billing = s.billing;
    let mut mail = s.mail;
    billing.assert_running();
    mail.assert_running();
    drop(_dump);
    s.redis
}

/// The `processed` entries of the raw history stream: (per-event ones, aggregates).
fn processed_entries(redis: &RedisServer, env: &str) -> (usize, usize) {
    let all = redis.xrange(&format!("events:{env}:history"));
    let processed = all.iter().filter(|e| e.get("kind") == Some("processed"));
    let aggregates = processed
        .clone()
        .filter(|e| e.get("events").is_some())
        .count();
    (processed.count() - aggregates, aggregates)
}

#[test]
fn t29_dlq_replay_rate_limit_cli_and_api() {
    let env = "dlqrate";
    let mut sc = Scenario::new(env).types(&[ORDERS]).token(TOKEN).start();
    let (redis, sink, cfg) = (&sc.redis, &sc.sink, sc.cfg.clone());
    let worker = &mut sc.workers[0];
    let ids: Vec<String> = (0..14).map(|i| format!("rt-{i:02}")).collect();
    for id in &ids {
        sink.script(id, vec![Action::status(400), Action::ok()]);
    }
    for id in &ids[..10] {
        publish(redis, env, ORDERS, id);
    }
    wait_until("10 dead letters", Duration::from_secs(15), || {
        redis.xlen(&dlq_key(env)) == 10
    });
    let start = Instant::now();
    let out = cli(&cfg, &["--json", "dlq", "replay", "--all", "--rate", "5"]);
    let took = start.elapsed();
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let r: Value = serde_json::from_str(out.stdout.trim()).unwrap();
    assert_eq!(r["replayed"], json!(10), "{r}");
    assert!(
        took >= Duration::from_millis(1750),
        "10 replays at --rate 5 took {took:?}; want >= 1.8 s"
    );
    assert!(took < Duration::from_secs(15), "took {took:?}");
    wait_until("10 replays handled", Duration::from_secs(10), || {
        sink.success_counts().len() == 10
    });
    // Spacing seen by the handler: first to last replay >= 9 intervals (minus slack).
    let replays: Vec<Duration> = sink
        .ledger()
        .iter()
        .filter(|r| r.is_success())
        .map(|r| r.received)
        .collect();
    let spread = *replays.iter().max().unwrap() - *replays.iter().min().unwrap();
    assert!(
        spread >= Duration::from_millis(1500),
        "replays reached the handler within {spread:?}; --rate 5 spreads 10 over ~1.8 s\n{}",
        sink.ledger_dump()
    );

    // Over HTTP: 4 entries at 5/s take >= 0.6 s.
    for id in &ids[10..] {
        publish(redis, env, ORDERS, id);
    }
    wait_until("4 more dead letters", Duration::from_secs(15), || {
        redis.xlen(&dlq_key(env)) == 4
    });
    let api = Api::new(&cfg.api_addr(), Some(TOKEN));
    let start = Instant::now();
    let r = api.post("/api/events/dlq/replay", &json!({"all": true, "rate": 5}));
    let took = start.elapsed();
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["replayed"], json!(4), "{}", r.body);
    assert!(
        took >= Duration::from_millis(550),
        "4 replays at rate 5 over HTTP took {took:?}; want >= 0.6 s"
    );
    wait_until("all 14 handled twice", Duration::from_secs(10), || {
        sink.success_counts().len() == 14
    });
    std::thread::sleep(Duration::from_millis(300));
    for id in &ids {
        assert_eq!(
            sink.requests_for(id).len(),
            2,
            "{id}\n{}",
            sink.ledger_dump()
        );
    }
    assert_eq!(
        sum(
            &parse_metrics(&worker.metrics()),
            "event_worker_dlq_replayed_total",
            &[("env", env), ("group", "group"), ("type", ORDERS)]
        ),
        4.0,
        "dlq_replayed_total counts the API replays (the CLI is another process)"
    );
    worker.assert_running();
}
