//! A large DLQ (T66-T68): `dlq stats` reads counts kept by the scripts that add, replay,
//! purge and trim DLQ entries (a constant number of commands, exact past 100,000 entries);
//! the counts of an existing DLQ are built in bounded steps (at startup, `migrate`, `dlq
//! recount`); a filtered `dlq list` scans on until its first page has matches; a replay whose
//! XDEL is refused does not add the event again when retried. T68 (long tier) runs the same
//! at 1,000,000 entries with timings.

use crate::util::api::Api;
use crate::util::redis::parse_entries;
use crate::util::worker::cli;
use crate::util::*;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

const TY: &str = "orders.created";
const PAY: &str = "pay.captured";
const TOKEN: &str = "dlq-scale-test-token";

/// What seed entry `i` (1-based) holds: the `pay` oldest are `pay.captured`, every third is
/// `malformed`, even ones failed in `billing`, odd ones in `mail`.
fn seeded(i: usize, pay: usize) -> [String; 3] {
    let ty = if i <= pay { PAY } else { TY };
    let reason = if i.is_multiple_of(3) {
        "malformed"
    } else {
        "permanent_error"
    };
    let group = if i.is_multiple_of(2) {
        "billing"
    } else {
        "mail"
    };
    [ty.into(), reason.into(), group.into()]
}

/// The id of seed entry `i`: one per millisecond, ending 10 s before `base_ms`.
fn seed_id(base_ms: u64, n: usize, i: usize) -> String {
    format!("{}-0", base_ms - 10_000 - (n - i) as u64)
}

/// Writes `n` DLQ entries directly (one script per 100,000), as an older worker left them,
/// with the ids of [`seed_id`].
fn seed(redis: &RedisServer, env: &str, n: usize, pay: usize, base_ms: u64) {
    let lua = "for i = tonumber(ARGV[1]), tonumber(ARGV[2]) do \
        local ty = (i <= tonumber(ARGV[3])) and 'pay.captured' or 'orders.created' \
        local reason = (i % 3 == 0) and 'malformed' or 'permanent_error' \
        local group = (i % 2 == 0) and 'billing' or 'mail' \
        local id = string.format('%d-0', tonumber(ARGV[4]) + i) \
        redis.call('XADD', KEYS[1], id, 'id', 'e' .. i, 'type', ty, 'data', '{}', \
          'dlq_reason', reason, 'dlq_group', group, 'dlq_error', 'HTTP status 400: Bad', \
          'dlq_attempts', '1') end";
    let first = (base_ms - 10_000 - n as u64).to_string();
    let mut from = 1;
    while from <= n {
        let to = (from + 99_999).min(n);
        let (a, b, p) = (from.to_string(), to.to_string(), pay.to_string());
        redis.cmd(&["EVAL", lua, "1", &dlq_key(env), &a, &b, &p, &first]);
        from = to + 1;
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// Expected stats counts of the entries `present` holds.
fn expected(present: &[(String, [String; 3])]) -> Value {
    let mut maps: [BTreeMap<String, u64>; 3] = Default::default();
    for (_, fields) in present {
        for (m, v) in maps.iter_mut().zip(fields) {
            *m.entry(v.clone()).or_default() += 1;
        }
    }
    json!({"total": present.len(), "by_type": maps[0], "by_reason": maps[1], "by_group": maps[2]})
}

/// The counts part of a stats answer, for comparison with [`expected`].
fn counts(stats: &Value) -> Value {
    json!({"total": stats["total"], "by_type": stats["by_type"],
           "by_reason": stats["by_reason"], "by_group": stats["by_group"]})
}

fn cli_json(cfg: &WorkerConfig, args: &[&str]) -> Value {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let out = cli(cfg, &all);
    assert_eq!(out.code, Some(0), "{args:?}: {}", out.stderr);
    serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{args:?}: {e}: {}", out.stdout))
}

/// T66: at 120,000 entries (past the old 100,000 scan cap) stats are exact and read in a
/// few commands, after the startup build, a dead letter, a replay, a purge, a retention
/// trim, a deleted counts hash (rebuilt by `migrate`) and a direct XADD (`dlq recount`); a
/// filtered list finds matches older than the newest 100,000.
#[test]
fn t66_dlq_stats_exact_past_100k_and_kept_by_every_add_and_removal() {
    const N: usize = 120_000;
    const PAYS: usize = 10_000;
    let env = "dlqscale";
    let t0 = Instant::now();
    let base = now_ms();
    let s = Scenario::new("t66")
        .env(env)
        .types(&[TY])
        .token(TOKEN)
        .setup(move |r| seed(r, env, N, PAYS, base))
        .start();
    let dlq = dlq_key(env);
    // A new client each time: the API closes idle connections.
    let api = || s.api(Some(TOKEN));
    let stats = || api().get("/api/events/dlq/stats").json();
    wait_until(
        "the startup step counted the DLQ",
        Duration::from_secs(30),
        || stats()["complete"] == json!(true),
    );
    eprintln!("t66: started and counted in {:?}", t0.elapsed());
    let mut want: Vec<(String, [String; 3])> = (1..=N)
        .map(|i| (seed_id(base, N, i), seeded(i, PAYS)))
        .collect();
    let by_seed: Vec<String> = want.iter().map(|(id, _)| id.clone()).collect();
    assert_eq!(s.redis.xlen(&dlq), N as i64);
    let st = stats();
    assert_eq!(counts(&st), expected(&want), "{st}");
    assert_eq!(st["by_type"], json!({PAY: 10_000, TY: 110_000}));
    assert_eq!(st["oldest"]["id"], json!(by_seed[0]));
    assert_eq!(st["newest"]["id"], json!(by_seed[N - 1]));
    assert_eq!(
        cli_json(&s.cfg, &["dlq", "stats"]),
        st,
        "CLI and API differ"
    );

    // O(1): the commands one stats request runs on the DLQ keys.
    let mon = Monitor::start(&s.redis);
    std::thread::sleep(Duration::from_millis(100));
    let t = Instant::now();
    let again = stats();
    let took = t.elapsed();
    std::thread::sleep(Duration::from_millis(100));
    let cmds: Vec<String> = mon
        .stop()
        .into_iter()
        .filter(|l| l.args.iter().skip(1).any(|a| a.starts_with(&dlq)))
        .map(|l| l.args[0].to_uppercase())
        .collect();
    assert_eq!(again, st);
    assert_eq!(
        cmds,
        ["EVALSHA", "XRANGE", "XREVRANGE", "XLEN", "HGETALL"],
        "stats must read a fixed set of commands, whatever the DLQ's length"
    );
    eprintln!("t66: stats of {N} entries in {took:?}");

    // A filtered list: the matches are the oldest 10,000, older than the newest 100,000.
    let t = Instant::now();
    let page = cli_json(&s.cfg, &["dlq", "list", "--type", PAY, "--limit", "5"]);
    let ids: Vec<&str> = page["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["entry_id"].as_str().unwrap())
        .collect();
    let newest_pays: Vec<&str> = by_seed[PAYS - 5..PAYS]
        .iter()
        .rev()
        .map(String::as_str)
        .collect();
    assert_eq!(ids, newest_pays, "{page}");
    assert_eq!(page["next"], json!(by_seed[PAYS - 5]), "{page}");
    let r = api().get(&format!("/api/events/dlq?type={PAY}&limit=5"));
    assert_eq!(r.json()["entries"], page["entries"], "{}", r.body);
    let dry = cli_json(&s.cfg, &["dlq", "replay", "--type", PAY, "--dry-run"]);
    assert_eq!(dry["matched"], json!(PAYS), "{dry}");
    let dry = cli_json(
        &s.cfg,
        &["dlq", "purge", "--reason", "malformed", "--dry-run"],
    );
    assert_eq!(dry["matched"], json!(N / 3), "{dry}");
    eprintln!("t66: filtered list and dry runs in {:?}", t.elapsed());

    // A dead letter (move_to_stream.lua), a replay, a purge: counted as they happen.
    let t = Instant::now();
    s.sink.script("perm-1", vec![Action::status(400)]);
    s.publish("perm-1");
    wait_until("dead-lettered", Duration::from_secs(15), || {
        s.redis.xlen(&dlq) == N as i64 + 1
    });
    let newest_pay = by_seed[PAYS - 1].clone();
    let replayed = cli_json(&s.cfg, &["dlq", "replay", "--id", &newest_pay]);
    assert_eq!(replayed["replayed"], json!(1), "{replayed}");
    let purged = cli_json(
        &s.cfg,
        &[
            "dlq",
            "purge",
            "--type",
            PAY,
            "--reason",
            "malformed",
            "--yes",
        ],
    );
    assert_eq!(purged["purged"], json!(PAYS / 3), "{purged}");
    let perm = s.redis.cmd(&["XREVRANGE", &dlq, "+", "-", "COUNT", "1"]);
    let perm_id = parse_entries(&perm)[0].entry_id.clone();
    want.push((
        perm_id,
        [TY.into(), "permanent_error".into(), "group".into()],
    ));
    want.retain(|(id, [ty, reason, _])| *id != newest_pay && !(ty == PAY && reason == "malformed"));
    assert_eq!(want.len(), N + 1 - 1 - PAYS / 3);
    assert_eq!(s.redis.xlen(&dlq), want.len() as i64);
    assert_eq!(counts(&stats()), expected(&want));
    assert_eq!(stats()["by_group"]["group"], json!(1));

    eprintln!("t66: dead letter, replay, purge in {:?}", t.elapsed());
    // A retention trim (the pass at startup of a worker with dlq_max_len).
    let t = Instant::now();
    let mut capped = s.cfg.clone();
    capped.top_level = "dlq_max_len = 100000\n".into();
    capped.consumer = Some("capped-1".into());
    capped.api_port = free_port();
    let mut w = WorkerProcess::start("capped", capped);
    w.wait_ready(Duration::from_secs(15));
    let trimmed = try_wait_until(Duration::from_secs(20), || s.redis.xlen(&dlq) == 100_000);
    assert!(trimmed, "not trimmed to 100000\n{}", w.output());
    w.sigterm();
    let _ = w.wait_exit(Duration::from_secs(10));
    let oldest_kept = want[want.len() - 100_000].0.clone();
    want.drain(..want.len() - 100_000);
    let oldest = s.redis.cmd(&["XRANGE", &dlq, "-", "+", "COUNT", "1"]);
    assert_eq!(
        parse_entries(&oldest)[0].entry_id,
        oldest_kept,
        "the oldest were trimmed"
    );
    let st = stats();
    assert_eq!(counts(&st), expected(&want), "{st}");
    assert_eq!(st["complete"], json!(true));

    eprintln!("t66: trim in {:?}", t.elapsed());
    // The counts deleted: incomplete, said so, until `migrate` rebuilt them.
    let hash = format!("{dlq}:counts:{{{dlq}}}");
    s.redis.cmd(&["DEL", &hash]);
    let st = stats();
    assert_eq!(st["complete"], json!(false));
    assert_eq!(
        st["note"],
        json!(
            "the counts of the existing DLQ are still being built (0 of 100000 entries counted, \
             up to entry (none yet)): every worker does it at startup in steps of 10000 entries; \
             `event-worker migrate` finishes it now"
        )
    );
    let out = cli(&s.cfg, &["dlq", "stats"]);
    assert!(
        out.stdout
            .contains("incomplete: the counts of the existing DLQ"),
        "{}",
        out.stdout
    );
    // Part of the count done (one step of 40,000, cursor at the 40,000th entry); meanwhile
    // a dead letter (above the cursor), and a purge of one entry below and one above it.
    let step = format!("{COUNTS_LUA}{STEP_LUA}");
    s.redis.cmd(&["EVAL", &step, "2", &dlq, &hash, "40000"]);
    let cursor = want[39_999].0.clone();
    assert_eq!(
        stats()["note"],
        json!(format!(
            "the counts of the existing DLQ are still being built (40000 of 100000 entries \
             counted, up to entry {cursor}): every worker does it at startup in steps of 10000 \
             entries; `event-worker migrate` finishes it now"
        ))
    );
    s.sink.script("perm-2", vec![Action::status(400)]);
    s.publish("perm-2");
    wait_until("dead-lettered", Duration::from_secs(15), || {
        s.redis.xlen(&dlq) == 100_001
    });
    let perm = s.redis.cmd(&["XREVRANGE", &dlq, "+", "-", "COUNT", "1"]);
    let perm_id = parse_entries(&perm)[0].entry_id.clone();
    want.push((
        perm_id,
        [TY.into(), "permanent_error".into(), "group".into()],
    ));
    let (below, above) = (want[0].0.clone(), want[50_000].0.clone());
    let purged = cli_json(
        &s.cfg,
        &["dlq", "purge", "--id", &below, "--id", &above, "--yes"],
    );
    assert_eq!(purged["purged"], json!(2), "{purged}");
    want.retain(|(id, _)| *id != below && *id != above);
    let t = Instant::now();
    let out = cli(&s.cfg, &["migrate"]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    eprintln!(
        "t66: counts of 100000 entries rebuilt by `migrate` in {:?}",
        t.elapsed()
    );
    let st = stats();
    assert_eq!(
        (counts(&st), &st["complete"]),
        (expected(&want), &json!(true))
    );

    // An entry added behind the scripts' back: the counts disagree, said so; recount.
    let stray = s.redis.xadd(
        &dlq,
        &[("id", "stray"), ("type", PAY), ("dlq_reason", "malformed")],
    );
    let st = stats();
    assert_eq!(st["complete"], json!(false));
    assert_eq!(
        st["note"],
        json!(format!(
            "the counts cover 99999 entries but {dlq} holds 100000: entries were added or \
             removed without the worker's scripts (a direct XADD/XDEL, an older worker \
             version, or a Redis user without +hget +hincrby +hdel); run `event-worker dlq \
             recount` to count them again"
        ))
    );
    let out = cli(&s.cfg, &["dlq", "recount"]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(
        out.stdout
            .starts_with("counted 100000 DLQ entries in 11 steps"),
        "{}",
        out.stdout
    );
    want.push((stray, [PAY.into(), "malformed".into(), String::new()]));
    let st = stats();
    assert_eq!(
        (counts(&st), &st["complete"]),
        (expected(&want), &json!(true))
    );
    assert_eq!(st["newest"]["id"], json!(want[want.len() - 1].0));
}

/// T67: a replay whose XDEL is refused (the CLI's user loses XDEL for a moment) leaves the
/// event once in the redeliver stream however often it is retried; the retry after the
/// permission is back completes it (DLQ entry gone, counted out, guard deleted).
#[test]
fn t67_a_refused_xdel_does_not_replay_twice() {
    let env = "replayguard";
    let redis = RedisServer::start();
    seed(&redis, env, 1, 0, now_ms());
    let cfg = WorkerConfig::new(env, &redis.url());
    assert_eq!(cli(&cfg, &["migrate"]).code, Some(0));
    let id = redis.xrange(&dlq_key(env))[0].entry_id.clone();
    let redeliver = redeliver_key(env, "mail");
    redis.cmd(&["ACL", "SETUSER", "default", "-xdel"]);
    for _ in 0..3 {
        let out = cli(&cfg, &["dlq", "replay", "--id", &id]);
        assert_ne!(out.code, Some(0), "{}", out.stdout);
        assert!(
            out.stderr.contains(&format!("replay {id}"))
                && out.stderr.contains("can't run this command"),
            "{}",
            out.stderr
        );
    }
    let during = redis.xlen(&redeliver);
    redis.cmd(&["ACL", "SETUSER", "default", "+xdel"]);
    let done = cli_json(&cfg, &["dlq", "replay", "--id", &id]);
    assert_eq!(done["replayed"], json!(1), "{done}");
    assert_eq!(
        (during, redis.xlen(&redeliver), redis.xlen(&dlq_key(env))),
        (1, 1, 0),
        "the event once in {redeliver} while XDEL was refused and after; the DLQ empty"
    );
    let events = redis.xrange(&redeliver);
    assert_eq!(events[0].get("id"), Some("e1"));
    assert_eq!(
        redis.scan_keys(&format!("{}:replayed:*", dlq_key(env))),
        Vec::<String>::new()
    );
    let st = cli_json(&cfg, &["dlq", "stats"]);
    assert_eq!(
        (counts(&st), &st["complete"]),
        (
            json!({"total": 0, "by_type": {}, "by_reason": {}, "by_group": {}}),
            &json!(true)
        ),
        "{st}"
    );
}

/// The counting step (`dlq_counts.lua` + `dlq_count_step.lua`), run directly for a partial
/// count.
const COUNTS_LUA: &str = include_str!("../../src/redis/scripts/dlq_counts.lua");
const STEP_LUA: &str = include_str!("../../src/redis/scripts/dlq_count_step.lua");
/// `src/redis/scripts/dlq_stats.lua`, run directly to time Redis's part.
const STATS_LUA: &str = include_str!("../../src/redis/scripts/dlq_stats.lua");

/// The median of five timings of `f`.
fn median_of_5(mut f: impl FnMut()) -> Duration {
    let mut times: Vec<Duration> = (0..5)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed()
        })
        .collect();
    times.sort();
    times[2]
}

/// T68 (long tier): 1,000,000 DLQ entries. The counts built by `migrate` (100 steps); stats
/// exact, API answer under 100 ms; a filtered list whose matches are the oldest 10,000, a
/// `show`, dry runs and a purge count within seconds; the Redis memory of the counts.
#[test]
#[ignore = "1,000,000 DLQ entries, 30-70 s; long tier"]
fn t68_dlq_of_a_million_entries_stats_exact_in_under_100ms() {
    const N: usize = 1_000_000;
    const PAYS: usize = 10_000;
    let env = "dlqmillion";
    let redis = RedisServer::start_with(Aof::None);
    let base = now_ms();
    let t = Instant::now();
    seed(&redis, env, N, PAYS, base);
    eprintln!("t68: {N} entries written in {:?}", t.elapsed());
    let dlq = dlq_key(env);
    let mut cfg = WorkerConfig::new(env, &redis.url())
        .route(Route::http(&[TY], "http://127.0.0.1:9/events"))
        .api_token(TOKEN);
    cfg.group = "group".into();
    let t = Instant::now();
    let out = cli(&cfg, &["migrate"]);
    let migrate = t.elapsed();
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    eprintln!("t68: counts built by `migrate` in {migrate:?}");
    assert!(migrate < Duration::from_secs(60), "{migrate:?}");
    let hash = format!("{dlq}:counts:{{{dlq}}}");
    let memory = redis.cmd(&["MEMORY", "USAGE", &hash]);
    eprintln!("t68: MEMORY USAGE of the counts hash: {memory:?} bytes");

    let mut w = WorkerProcess::start("w", cfg.clone());
    w.wait_ready(Duration::from_secs(30));
    let want: Vec<(String, [String; 3])> = (1..=N)
        .map(|i| (seed_id(base, N, i), seeded(i, PAYS)))
        .collect();
    let api = || Api::new(&cfg.api_addr(), Some(TOKEN));
    let mut st = Value::Null;
    // One client (kept alive), so the figure is the request's, not the client's setup.
    let client = api();
    let _ = client.get("/api/events/dlq/stats");
    let took = median_of_5(|| st = client.get("/api/events/dlq/stats").json());
    eprintln!("t68: API stats in {took:?} (median of 5)");
    let t = Instant::now();
    let raw = redis.cmd(&["EVAL", STATS_LUA, "2", &dlq, &hash]);
    eprintln!("t68: the stats script alone in {:?}: {raw:?}", t.elapsed());
    assert_eq!(counts(&st), expected(&want), "{st}");
    assert_eq!(
        (&st["complete"], &st["oldest"]["id"], &st["newest"]["id"]),
        (&json!(true), &json!(want[0].0), &json!(want[N - 1].0))
    );
    assert!(took < Duration::from_millis(100), "{took:?}");
    let t = Instant::now();
    assert_eq!(cli_json(&cfg, &["dlq", "stats"]), st);
    eprintln!("t68: CLI stats in {:?}", t.elapsed());

    let timed = |what: &str, args: &[&str], limit: Duration| -> Value {
        let t = Instant::now();
        let v = cli_json(&cfg, args);
        let took = t.elapsed();
        eprintln!("t68: {what} in {took:?}");
        assert!(took < limit, "{what}: {took:?}");
        v
    };
    let secs = Duration::from_secs;
    let page = timed("list (first page)", &["dlq", "list"], secs(5));
    assert_eq!(page["entries"][0]["entry_id"], json!(want[N - 1].0));
    let page = timed(
        "list --type pay.captured",
        &["dlq", "list", "--type", PAY],
        secs(20),
    );
    assert_eq!(page["entries"][0]["entry_id"], json!(want[PAYS - 1].0));
    assert_eq!(page["entries"].as_array().unwrap().len(), 50);
    let shown = timed("show", &["dlq", "show", &want[N / 2].0], secs(5));
    assert_eq!(shown["fields"]["id"], json!(format!("e{}", N / 2 + 1)));
    let dry = timed(
        "replay --type pay.captured --dry-run",
        &["dlq", "replay", "--type", PAY, "--dry-run"],
        secs(20),
    );
    assert_eq!(dry["matched"], json!(PAYS));
    let dry = timed(
        "replay --all --dry-run",
        &["dlq", "replay", "--all", "--dry-run"],
        secs(20),
    );
    assert_eq!(dry["matched"], json!(N));
    let dry = timed(
        "purge --reason malformed --dry-run",
        &["dlq", "purge", "--reason", "malformed", "--dry-run"],
        secs(20),
    );
    assert_eq!(dry["matched"], json!(N / 3));
    w.sigterm();
    let _ = w.wait_exit(Duration::from_secs(10));
}
