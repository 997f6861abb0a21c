//! docs/reliability-matrix.md T47 `metrics_cardinality`: a flood of random event types (and random ids)
//! under a `*` route must not grow the metric series past a fixed bound; types past the
//! label cap count as `other`, no label carries an id, a URL or error text, and every event
//! is still handled or dead-lettered exactly once.
//!
//! PR tier: 2,000 types (the most streams one worker follows, `discovery::MAX_STREAMS`),
//! arriving in 4 waves while the worker runs. Long tier: 10,000 types in 5 waves; the worker
//! follows the first 2,000 it discovers, keeps following exactly those, leaves the others
//! untouched and says so in `/api/events/health`.

use crate::util::api::Api;
use crate::util::checker::{self, CheckOpts, Ledger, ledger};
use crate::util::*;
/// The type label cap the README documents ("the first 200 consumed types get their own label").
const MAX_TYPE_LABELS: usize = 200;
use rand::Rng;
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

const TOKEN: &str = "rows-metrics-token-0123456789";

/// Most streams one worker follows (`discovery::MAX_STREAMS`).
const MAX_STREAMS: usize = 2000;

/// Most combinations of the labels besides env, group and type in one family: `outcome`
/// has 3 values, `reason` the fixed DLQ reasons.
const MAX_OTHER_COMBOS: usize = 8;

/// A random valid type: 1–3 dot-separated parts of `[a-z0-9_-]`, starting with `r` (so it
/// is never a reserved word), at most 35 characters.
fn random_type(rng: &mut impl Rng) -> String {
    const CHARS: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789_-";
    let mut t = String::from("r");
    for p in 0..rng.gen_range(1..=3) {
        if p > 0 {
            t.push('.');
        }
        for _ in 0..rng.gen_range(4..=10) {
            t.push(CHARS[rng.gen_range(0..CHARS.len())] as char);
        }
    }
    t
}

/// A random event id (32 hex digits), the kind of value a label must never carry.
fn random_id(rng: &mut impl Rng) -> String {
    format!("{:016x}{:016x}", rng.r#gen::<u64>(), rng.r#gen::<u64>())
}

/// How one planned event should end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    Handled,
    /// The sink answers 500 every time: retried, then `max_attempts_exceeded`.
    Retried,
    /// The sink answers 400: `permanent_error`.
    Permanent,
}

/// One planned event.
struct Planned {
    ty: String,
    id: String,
    fate: Fate,
    via_api: bool,
}

/// One random type per event; the first 10 fail for good, the next 10 permanently, and every
/// 4th goes through the API.
fn plan(n: usize, rng: &mut impl Rng) -> Vec<Planned> {
    let mut types = BTreeSet::new();
    for _ in 0..n * 10 {
        if types.len() == n {
            break;
        }
        types.insert(random_type(rng));
    }
    assert_eq!(types.len(), n, "could not draw {n} distinct types");
    let mut types: Vec<String> = types.into_iter().collect();
    for i in (1..types.len()).rev() {
        types.swap(i, rng.gen_range(0..=i));
    }
    types
        .into_iter()
        .enumerate()
        .map(|(i, ty)| Planned {
            ty,
            id: random_id(rng),
            fate: match i {
                0..10 => Fate::Retried,
                10..20 => Fate::Permanent,
                _ => Fate::Handled,
            },
            via_api: i % 4 == 3,
        })
        .collect()
}

/// Publishes the plan in `waves`, pausing between them so that discovery picks each wave up
/// while the worker runs (new types keep arriving after the label cap is full).
fn publish_waves(
    redis: &RedisServer,
    api: &Api,
    env: &str,
    events: &[Planned],
    waves: usize,
    l: &Ledger,
) {
    let per_wave = events.len().div_ceil(waves);
    for (w, wave) in events.chunks(per_wave).enumerate() {
        for e in wave {
            l.lock().unwrap().attempt(&e.id);
            let data = serde_json::json!({"url": "http://127.0.0.1:9/secret-path"});
            if e.via_api {
                let body = serde_json::json!({"type": e.ty, "data": data, "id": e.id});
                let r = api.post("/api/events/publish", &body);
                assert_eq!(r.status, 202, "publish {}: {}", e.ty, r.body);
            } else {
                let data = data.to_string();
                redis.xadd(
                    &stream_key(env, &e.ty),
                    &[("id", &e.id), ("type", &e.ty), ("data", &data)],
                );
            }
            l.lock().unwrap().ack(&e.id);
        }
        if w + 1 < waves {
            std::thread::sleep(Duration::from_millis(1200));
        }
    }
}

/// Series of each metric family: its label sets without `le` (a histogram's `_bucket`,
/// `_sum` and `_count` are one family).
fn families(m: &[Sample]) -> BTreeMap<String, BTreeSet<Vec<(String, String)>>> {
    let histograms: BTreeSet<&str> = m
        .iter()
        .filter_map(|s| s.name.strip_suffix("_bucket"))
        .collect();
    let mut out: BTreeMap<String, BTreeSet<Vec<(String, String)>>> = BTreeMap::new();
    for s in m {
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suf| s.name.strip_suffix(suf).filter(|f| histograms.contains(f)))
            .unwrap_or(&s.name);
        let mut labels: Vec<(String, String)> = s
            .labels
            .iter()
            .filter(|(k, _)| k.as_str() != "le")
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        labels.sort();
        out.entry(family.to_string()).or_default().insert(labels);
    }
    out
}

/// What one flood measured.
struct Flood {
    /// Series per family.
    series: BTreeMap<String, usize>,
    /// Distinct `type` label values (besides `other`) over all families.
    labelled: usize,
    /// Events counted under `other` (all outcomes).
    other: f64,
    /// From the first publish to the last event handled or dead-lettered.
    drained_after: Duration,
    /// Streams the worker followed.
    followed: usize,
}

/// Runs the flood of `n` random types in `waves`; asserts T47 and returns the figures.
fn flood(row: &str, env: &str, n: usize, waves: usize, drain: Duration) -> Flood {
    let mut rng = rand::thread_rng();
    let redis = RedisServer::start();
    let sink = HttpSink::start();
    let events = plan(n, &mut rng);
    for e in &events {
        match e.fate {
            Fate::Retried => sink.script(&e.id, vec![Action::status(500)]),
            Fate::Permanent => sink.script(&e.id, vec![Action::status(400)]),
            _ => {}
        }
    }
    let mut cfg = WorkerConfig::new(env, &redis.url())
        .route(Route::http(&["*"], &sink.url()))
        .api_token(TOKEN);
    cfg.concurrency = 32;
    cfg.api_extra = "rate_limit = 0\n".into();
    let mut w = WorkerProcess::start("w1", cfg.clone());
    w.wait_ready(Duration::from_secs(15));
    let api = Api::new(&cfg.api_addr(), Some(TOKEN));
    let l = ledger();
    let t0 = Instant::now();
    publish_waves(&redis, &api, env, &events, waves, &l);
    let published = t0.elapsed();
    // The streams the worker follows: those with its group.
    let followed: BTreeSet<&str> = if n <= MAX_STREAMS {
        events.iter().map(|e| e.ty.as_str()).collect()
    } else {
        // Give discovery a round to settle on the last wave, then read which.
        std::thread::sleep(Duration::from_secs(2));
        events
            .iter()
            .filter(|e| !redis.xinfo_group_names(&stream_key(env, &e.ty)).is_empty())
            .map(|e| e.ty.as_str())
            .collect()
    };
    assert_eq!(
        followed.len(),
        n.min(MAX_STREAMS),
        "[{row}] streams followed (with the group)"
    );
    if n > MAX_STREAMS {
        let h = api.get("/api/events/health").json();
        let said = h["warnings"].as_array().is_some_and(|a| {
            a.iter()
                .any(|w| w.as_str().is_some_and(|w| w.contains("are not consumed")))
        });
        eprintln!("[{row}] health: {} {}", h["status"], h["warnings"]);
        assert!(
            said,
            "[{row}] health does not say streams are left out: {}",
            h["warnings"]
        );
    }
    let followed_events: Vec<&Planned> = events
        .iter()
        .filter(|e| followed.contains(e.ty.as_str()))
        .collect();
    let l_followed = ledger();
    for e in &followed_events {
        l_followed.lock().unwrap().ack(&e.id);
    }
    let types: Vec<&str> = followed.iter().copied().collect();
    checker::must_conserve(row, &l_followed, &sink, &redis, env, "group", &types, drain);
    let drained_after = t0.elapsed();
    eprintln!(
        "[{row}] published in {published:.1?}, drained {drained_after:.1?} after the first publish"
    );
    std::thread::sleep(Duration::from_millis(500));
    let opts = CheckOpts {
        expect_dead: followed_events
            .iter()
            .filter(|e| e.fate != Fate::Handled)
            .map(|e| e.id.clone())
            .collect(),
        ..CheckOpts::default()
    };
    let mut published_ledger = l_followed.lock().unwrap().clone();
    // Every event published is attempted (the unfollowed ones must never be handled).
    published_ledger.attempted = l.lock().unwrap().attempted.clone();
    let rep = checker::check(&published_ledger, &sink, &redis, env, &opts);
    rep.assert_ok(row, 0, "");
    let text = w.metrics();
    let m = parse_metrics(&text);
    rep.assert_metrics(row, std::slice::from_ref(&m), env, None);

    // 1. Series per family bounded; types past the cap are `other`.
    let fams = families(&m);
    let mut series = BTreeMap::new();
    let mut labelled_all: BTreeSet<String> = BTreeSet::new();
    for (family, sets) in &fams {
        let mut type_values = BTreeSet::new();
        let mut other_combos = BTreeSet::new();
        for set in sets {
            let mut rest = Vec::new();
            for (k, v) in set {
                match k.as_str() {
                    "type" => {
                        type_values.insert(v.clone());
                    }
                    "env" | "group" => {}
                    _ => rest.push((k.clone(), v.clone())),
                }
            }
            other_combos.insert(rest);
        }
        type_values.remove("other");
        labelled_all.extend(type_values.iter().cloned());
        assert!(
            type_values.len() <= MAX_TYPE_LABELS,
            "[{row}] {family}: {} type labels > {MAX_TYPE_LABELS}",
            type_values.len()
        );
        assert!(
            other_combos.len() <= MAX_OTHER_COMBOS,
            "[{row}] {family}: {} label combinations besides type: {other_combos:?}",
            other_combos.len()
        );
        assert!(
            sets.len() <= (MAX_TYPE_LABELS + 1) * MAX_OTHER_COMBOS,
            "[{row}] {family}: {} series",
            sets.len()
        );
        series.insert(family.clone(), sets.len());
    }
    assert!(
        labelled_all.len() <= MAX_TYPE_LABELS,
        "[{row}] {} distinct type labels over all families (cap {MAX_TYPE_LABELS}): the \
         labelled set moved while types arrived",
        labelled_all.len()
    );
    let total: usize = series.values().sum();

    // 2. Label values: short words only; never an id, a URL or error text.
    let ids: Vec<&str> = events.iter().map(|e| e.id.as_str()).collect();
    for s in &m {
        for (k, v) in &s.labels {
            let word = !v.is_empty()
                && v.len() <= 64
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"_.+-".contains(&b));
            assert!(word, "[{row}] {}{{{k}={v:?}}}: not a short word", s.name);
            assert!(
                !ids.iter().any(|id| v.contains(id)),
                "[{row}] {}{{{k}={v:?}}} carries an event id",
                s.name
            );
        }
    }

    // 3. Per type: a labelled type counts exactly its own event; `other` holds the rest.
    let ev = "event_worker_events_total";
    let fate_of: BTreeMap<&str, Fate> = followed_events
        .iter()
        .map(|e| (e.ty.as_str(), e.fate))
        .collect();
    for t in &labelled_all {
        let fate = fate_of
            .get(t.as_str())
            .unwrap_or_else(|| panic!("[{row}] label {t} is not a followed type"));
        let want_success = f64::from(*fate == Fate::Handled);
        let got = sum(&m, ev, &[("type", t), ("outcome", "success")]);
        let dead = sum(&m, ev, &[("type", t), ("outcome", "dead_lettered")]);
        assert_eq!(
            (got, dead),
            (want_success, 1.0 - want_success),
            "[{row}] events_total of labelled type {t} ({fate:?})"
        );
    }
    let finished = |t: &str| {
        sum(&m, ev, &[("type", t), ("outcome", "success")])
            + sum(&m, ev, &[("type", t), ("outcome", "dead_lettered")])
    };
    let other = finished("other");
    assert_eq!(
        other as usize + labelled_all.len(),
        followed_events.len(),
        "[{row}] other + labelled != events handled or dead-lettered"
    );
    assert!(
        other as usize >= followed_events.len() - MAX_TYPE_LABELS,
        "[{row}] only {other} events under `other`"
    );
    let api_published = events.iter().filter(|e| e.via_api).count();
    assert_eq!(
        sum(&m, "event_worker_published_total", &[("env", env)]),
        api_published as f64,
        "[{row}] published_total"
    );
    eprintln!(
        "[{row}] {n} random types ({} followed) in {waves} waves, published in {published:.1?}, \
         all handled or dead-lettered {drained_after:.1?} after the first publish; \
         {total} series in {} families (max per family {}), {} type labels + other; other \
         counted {other} events",
        followed.len(),
        series.len(),
        series.values().max().unwrap_or(&0),
        labelled_all.len(),
    );
    eprintln!("[{row}] series per family: {series:?}");
    w.assert_running();
    Flood {
        series,
        labelled: labelled_all.len(),
        other,
        drained_after,
        followed: followed.len(),
    }
}

#[test]
fn t47_metrics_cardinality_2k_random_types() {
    let f = flood("T47", "t47", 2000, 4, Duration::from_secs(60));
    assert_eq!(f.labelled, MAX_TYPE_LABELS);
    assert_eq!(f.followed, 2000);
    assert!(f.other > 0.0 && f.drained_after > Duration::ZERO && !f.series.is_empty());
}

/// 10,000 types: more than one worker follows. The worker keeps the first 2,000 it found,
/// never touches the rest (no group on them), and the bounds of the 2k test hold.
#[test]
#[ignore = "long tier: 10k random types (~1 min)"]
fn t47_metrics_cardinality_10k_random_types_long() {
    let f = flood("T47-long", "t47l", 10_000, 5, Duration::from_secs(120));
    assert_eq!(f.labelled, MAX_TYPE_LABELS);
    assert_eq!(f.followed, MAX_STREAMS);
}

/// Malformed entries (no `data`) in streams past the label cap count as `other` too: the
/// type of a malformed entry comes from its stream key, and must go through the same cap.
#[test]
fn t47_malformed_entries_past_the_label_cap_count_as_other() {
    let env = "t47m";
    let mut sc = Scenario::new("T47").env(env).types(&["*"]).start();
    let (redis, sink, w) = (&sc.redis, &sc.sink, &mut sc.workers[0]);
    // The first MAX_TYPE_LABELS types take every label.
    for i in 0..MAX_TYPE_LABELS {
        publish(redis, env, &format!("m.a{i:03}"), &format!("a-{i:03}"));
    }
    wait_until(
        "the labelled types handled",
        Duration::from_secs(20),
        || sink.success_counts().len() == MAX_TYPE_LABELS,
    );
    for i in 0..5 {
        let ty = format!("m.z{i}");
        redis.xadd(
            &stream_key(env, &ty),
            &[("id", &format!("z-{i}")), ("type", &ty)],
        );
        publish(redis, env, &format!("m.y{i}"), &format!("y-{i}"));
    }
    wait_until(
        "5 malformed dead-lettered, 5 more handled",
        Duration::from_secs(20),
        || redis.xlen(&dlq_key(env)) == 5 && sink.success_counts().len() == MAX_TYPE_LABELS + 5,
    );
    std::thread::sleep(Duration::from_millis(300));
    let m = parse_metrics(&w.metrics());
    let ev = "event_worker_events_total";
    let past_cap: BTreeSet<String> = samples(&m, ev, &[("env", env)])
        .iter()
        .chain(samples(&m, "event_worker_dead_lettered_total", &[("env", env)]).iter())
        .filter_map(|s| s.labels.get("type"))
        .filter(|t| t.starts_with("m.z") || t.starts_with("m.y"))
        .cloned()
        .collect();
    let other = |outcome: &str| sum(&m, ev, &[("type", "other"), ("outcome", outcome)]);
    let malformed_other = sum(
        &m,
        "event_worker_dead_lettered_total",
        &[("type", "other"), ("reason", "malformed")],
    );
    eprintln!(
        "[T47m] past the cap: own labels {past_cap:?}; other: success {}, dead_lettered {}, \
         dead_lettered_total{{reason=malformed}} {malformed_other}",
        other("success"),
        other("dead_lettered")
    );
    assert!(
        past_cap.is_empty(),
        "types past the label cap got labels of their own: {past_cap:?} (m.z* are malformed \
         entries, m.y* well-formed ones)"
    );
    assert_eq!((other("success"), other("dead_lettered")), (5.0, 5.0));
    assert_eq!(malformed_other, 5.0);
    w.assert_running();
}
