//! The conservation checker (a port of Jepsen's `total-queue`; docs/reliability-matrix.md "Method").
//!
//! Three ledgers, all owned by the test process so they survive `kill -9` of
//! the daemon:
//!
//! * **P** ([`Published`]): ids whose publish was *acknowledged* (XADD returned an
//!   entry id, or the API answered 2xx) and every id *attempted* (acknowledged or
//!   not: timed out, cut, refused).
//! * **H** (handled): the [`HttpSink`] request ledger; a 2xx answer is a
//!   successful handler run (optionally only when it answered within the route's
//!   timeout, since the daemon gives up on slower runs).
//! * **D** (dead-lettered): `XRANGE events:<env>:dlq - +`, parsed by `id`.
//!
//! [`check`] computes `lost = P_ack - (H_ok ∪ D)`, `unexpected = (H ∪ D) - attempts`,
//! `both = H_ok ∩ D`, `dlq_dup`, `duplicated = Σ max(0, ok(id) - 1)` and
//! `recovered = (H ∪ D) ∩ (attempts - P_ack)`; [`Report::assert_ok`] asserts the
//! row's bounds, [`Report::assert_metrics`] that the daemon's
//! `event_worker_events_total` equals the ledgers (for processes that were not
//! killed, whose counters therefore saw every outcome).

use super::{HttpSink, RedisServer, Sample, dlq_by_id, stream_key, sum};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The publisher ledger P (shareable with publisher threads).
#[derive(Default, Debug, Clone)]
pub struct Published {
    /// Ids whose publish was acknowledged.
    pub acked: BTreeSet<String>,
    /// Every id a publish was attempted for (acknowledged ones included).
    pub attempted: BTreeSet<String>,
    /// Unix time at which each acknowledged publish returned.
    pub acked_at: BTreeMap<String, f64>,
    /// Publish order of the acknowledged ids.
    pub order: Vec<String>,
}

/// A shared publisher ledger.
pub type Ledger = Arc<Mutex<Published>>;

/// A new empty shared ledger.
pub fn ledger() -> Ledger {
    Arc::new(Mutex::new(Published::default()))
}

impl Published {
    /// Records an attempt (before the call).
    pub fn attempt(&mut self, id: &str) {
        self.attempted.insert(id.to_string());
    }
    /// Records an acknowledged publish (after the call returned success).
    pub fn ack(&mut self, id: &str) {
        self.attempted.insert(id.to_string());
        if self.acked.insert(id.to_string()) {
            self.order.push(id.to_string());
        }
        self.acked_at.insert(id.to_string(), super::unix_now());
    }
}

/// Publishes one well-formed event with a direct XADD and records it in the ledger.
pub fn publish_logged(redis: &RedisServer, env: &str, ty: &str, id: &str, ledger: &Ledger) -> bool {
    ledger.lock().unwrap().attempt(id);
    let data = format!(r#"{{"n":"{id}"}}"#);
    let ok = redis
        .try_xadd(
            &stream_key(env, ty),
            &[("id", id), ("type", ty), ("data", &data)],
        )
        .is_ok();
    if ok {
        ledger.lock().unwrap().ack(id);
    }
    ok
}

/// Options of one check.
#[derive(Debug, Clone, Default)]
pub struct CheckOpts {
    /// A 2xx run counts as handled only if the sink answered within this time
    /// (the daemon abandons slower runs and counts them as retryable failures).
    pub handler_timeout: Option<Duration>,
    /// Ids expected to end in the DLQ (everything else must be handled).
    pub expect_dead: BTreeSet<String>,
    /// Ids allowed to be lost (e.g. the AOF `everysec` window); reported anyway.
    pub loss_allowed: BTreeSet<String>,
}

/// What the checker found.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub acked: usize,
    pub attempted: usize,
    /// Ids with at least one successful handler run.
    pub handled: usize,
    /// Successful handler runs in total (duplicates included).
    pub ok_runs: usize,
    /// Handler runs that were not successes (failures, timeouts, in progress).
    pub failed_runs: usize,
    /// DLQ records (with an `id`).
    pub dead: usize,
    pub lost: Vec<String>,
    pub lost_allowed: Vec<String>,
    pub unexpected: Vec<String>,
    pub both: Vec<String>,
    pub dlq_dup: Vec<String>,
    /// Σ max(0, ok(id) - 1).
    pub duplicated: usize,
    pub duplicated_ids: Vec<String>,
    pub recovered: Vec<String>,
    /// DLQ ids that were expected to be handled / handled ids expected in the DLQ.
    pub misplaced: Vec<String>,
    /// DLQ reasons by count.
    pub dlq_reasons: BTreeMap<String, usize>,
}

/// Runs the conservation check over the three ledgers.
pub fn check(
    published: &Published,
    sink: &HttpSink,
    redis: &RedisServer,
    env: &str,
    opts: &CheckOpts,
) -> Report {
    let mut ok: BTreeMap<String, usize> = BTreeMap::new();
    let mut seen: BTreeSet<String> = BTreeSet::new();
    let mut failed_runs = 0;
    for r in sink.ledger() {
        seen.insert(r.id.clone());
        let in_time = match (opts.handler_timeout, r.answered) {
            (Some(t), Some(a)) => a.saturating_sub(r.received) < t,
            _ => true,
        };
        if r.is_success() && in_time {
            *ok.entry(r.id.clone()).or_insert(0) += 1;
        } else {
            failed_runs += 1;
        }
    }
    let dlq = dlq_by_id(redis, env);
    let mut rep = Report {
        acked: published.acked.len(),
        attempted: published.attempted.len(),
        handled: ok.len(),
        ok_runs: ok.values().sum(),
        failed_runs,
        dead: dlq.values().map(Vec::len).sum(),
        ..Report::default()
    };
    for entries in dlq.values() {
        for e in entries {
            *rep.dlq_reasons
                .entry(e.get("dlq_reason").unwrap_or("?").to_string())
                .or_insert(0) += 1;
        }
    }
    for id in &published.acked {
        if !ok.contains_key(id) && !dlq.contains_key(id) {
            if opts.loss_allowed.contains(id) {
                rep.lost_allowed.push(id.clone());
            } else {
                rep.lost.push(id.clone());
            }
        }
    }
    for id in seen.iter().chain(dlq.keys()) {
        if !published.attempted.contains(id) && !rep.unexpected.contains(id) {
            rep.unexpected.push(id.clone());
        }
    }
    for id in ok.keys() {
        if dlq.contains_key(id) {
            rep.both.push(id.clone());
        }
        if opts.expect_dead.contains(id) {
            rep.misplaced
                .push(format!("{id} handled, expected in the DLQ"));
        }
    }
    for (id, entries) in &dlq {
        if entries.len() > 1 {
            rep.dlq_dup.push(id.clone());
        }
        if !opts.expect_dead.contains(id) {
            rep.misplaced.push(format!(
                "{id} dead-lettered ({}), expected handled",
                entries[0].get("dlq_reason").unwrap_or("?")
            ));
        }
    }
    for (id, n) in &ok {
        if *n > 1 {
            rep.duplicated += n - 1;
            rep.duplicated_ids.push(id.clone());
        }
    }
    for id in seen.iter().chain(dlq.keys()) {
        if published.attempted.contains(id)
            && !published.acked.contains(id)
            && !rep.recovered.contains(id)
        {
            rep.recovered.push(id.clone());
        }
    }
    rep
}

impl Report {
    /// One line of figures, for logs and the matrix doc.
    pub fn summary(&self) -> String {
        format!(
            "acked={} attempted={} handled={} ok_runs={} failed_runs={} dead={} lost={} \
             lost_in_window={} unexpected={} both={} dlq_dup={} duplicated={} recovered={} \
             dlq_reasons={:?}",
            self.acked,
            self.attempted,
            self.handled,
            self.ok_runs,
            self.failed_runs,
            self.dead,
            self.lost.len(),
            self.lost_allowed.len(),
            self.unexpected.len(),
            self.both.len(),
            self.dlq_dup.len(),
            self.duplicated,
            self.recovered.len(),
            self.dlq_reasons
        )
    }

    /// Asserts lost = unexpected = both = dlq_dup = misplaced = ∅ and
    /// duplicated ≤ `dup_bound`; prints the figures either way.
    pub fn assert_ok(&self, row: &str, dup_bound: usize, extra: &str) {
        eprintln!(
            "[{row}] checker: {} (dup bound {dup_bound})",
            self.summary()
        );
        let mut problems = Vec::new();
        let few = |v: &[String]| v.iter().take(20).cloned().collect::<Vec<_>>();
        if !self.lost.is_empty() {
            problems.push(format!("lost {}: {:?}", self.lost.len(), few(&self.lost)));
        }
        if !self.unexpected.is_empty() {
            problems.push(format!("unexpected: {:?}", few(&self.unexpected)));
        }
        if !self.both.is_empty() {
            problems.push(format!("handled AND dead-lettered: {:?}", few(&self.both)));
        }
        if !self.dlq_dup.is_empty() {
            problems.push(format!("several DLQ records: {:?}", few(&self.dlq_dup)));
        }
        if !self.misplaced.is_empty() {
            problems.push(format!("misplaced: {:?}", few(&self.misplaced)));
        }
        if self.duplicated > dup_bound {
            problems.push(format!(
                "{} duplicates > bound {dup_bound}: {:?}",
                self.duplicated,
                few(&self.duplicated_ids)
            ));
        }
        assert!(
            problems.is_empty(),
            "[{row}] conservation violated:\n{}\n{}\n{extra}",
            problems.join("\n"),
            self.summary()
        );
    }

    /// Asserts `event_worker_events_total{outcome=success}` = successful runs and
    /// `{outcome=dead_lettered}` = DLQ records (summed over the given scrapes of
    /// processes that were never killed and saw all the work), and, when given,
    /// `{outcome=retried}`.
    pub fn assert_metrics(
        &self,
        row: &str,
        scrapes: &[Vec<Sample>],
        env: &str,
        retried: Option<usize>,
    ) {
        let total = |outcome: &str| -> f64 {
            scrapes
                .iter()
                .map(|m| {
                    sum(
                        m,
                        "event_worker_events_total",
                        &[("env", env), ("outcome", outcome)],
                    )
                })
                .sum()
        };
        let (s, d, r) = (total("success"), total("dead_lettered"), total("retried"));
        eprintln!("[{row}] metrics: success={s} dead_lettered={d} retried={r}");
        assert_eq!(
            s, self.ok_runs as f64,
            "[{row}] events_total{{outcome=success}} != successful runs in the sink ledger"
        );
        assert_eq!(
            d, self.dead as f64,
            "[{row}] events_total{{outcome=dead_lettered}} != DLQ records"
        );
        if let Some(want) = retried {
            assert_eq!(r, want as f64, "[{row}] events_total{{outcome=retried}}");
        }
    }
}

/// Drain condition (the reliability matrix, "Method" phase 3): nothing pending on the type
/// streams and the redeliver stream, retry set empty, and no lag on any
/// type stream (`XINFO GROUPS` lag, Redis 7).
pub fn fully_drained(redis: &RedisServer, env: &str, group: &str, types: &[&str]) -> bool {
    if !super::drained(redis, env, group, types) {
        return false;
    }
    types
        .iter()
        .all(|t| group_lag(redis, &stream_key(env, t), group).unwrap_or(0) == 0)
}

/// `lag` of a group per `XINFO GROUPS` (`None` if the stream/group is missing).
pub fn group_lag(redis: &RedisServer, key: &str, group: &str) -> Option<i64> {
    use super::resp::Value;
    for g in redis.try_cmd(&["XINFO", "GROUPS", key]).ok()?.items() {
        let f = g.items();
        let get = |name: &str| {
            f.chunks(2)
                .find(|p| p.first().and_then(Value::as_str).as_deref() == Some(name))
                .and_then(|p| p.get(1).cloned())
        };
        if get("name").and_then(|v| v.as_str()).as_deref() == Some(group) {
            return get("lag").and_then(|v| v.as_int());
        }
    }
    None
}

/// Waits (bounded) until every acknowledged id is handled or dead-lettered and
/// the group is drained; returns whether it got there.
pub fn wait_conserved(
    ledger: &Ledger,
    sink: &HttpSink,
    redis: &RedisServer,
    env: &str,
    group: &str,
    types: &[&str],
    timeout: Duration,
) -> bool {
    super::try_wait_until(timeout, || {
        let acked = ledger.lock().unwrap().acked.clone();
        let ok = sink.success_counts();
        let dead = dlq_by_id(redis, env);
        acked
            .iter()
            .all(|id| ok.contains_key(id) || dead.contains_key(id))
            && fully_drained(redis, env, group, types)
    })
}

/// A background publisher: `n` events `<prefix>-<i>` with direct XADDs (own
/// connection, reconnecting), `gap` apart; failures are attempts, not acks.
/// Bounded by `n` and by a 120 s wall clock.
pub fn spawn_publisher(
    redis: &RedisServer,
    env: &str,
    ty: &str,
    prefix: &str,
    n: usize,
    gap: Duration,
    ledger: &Ledger,
) -> std::thread::JoinHandle<()> {
    use super::resp::{Conn, Value};
    let (port, password) = (redis.port, redis.password().map(str::to_string));
    let (key, ty, prefix) = (stream_key(env, ty), ty.to_string(), prefix.to_string());
    let ledger = Arc::clone(ledger);
    std::thread::spawn(move || {
        let start = std::time::Instant::now();
        let mut conn: Option<Conn> = None;
        for i in 0..n {
            if start.elapsed() > Duration::from_secs(120) {
                return;
            }
            let id = format!("{prefix}-{i:05}");
            ledger.lock().unwrap().attempt(&id);
            if conn.is_none() {
                conn = Conn::connect_auth(port, password.as_deref()).ok();
            }
            let data = format!(r#"{{"i":{i}}}"#);
            let ok = match conn.as_mut() {
                Some(c) => matches!(
                    c.cmd(&["XADD", &key, "*", "id", &id, "type", &ty, "data", &data]),
                    Ok(Value::Str(_))
                ),
                None => false,
            };
            if ok {
                ledger.lock().unwrap().ack(&id);
            } else {
                conn = None;
                std::thread::sleep(Duration::from_millis(50));
            }
            if !gap.is_zero() {
                std::thread::sleep(gap);
            }
        }
    })
}

/// Like [`wait_conserved`], panicking with what is missing (ids, pending, lag, retry set).
#[allow(clippy::too_many_arguments)]
pub fn must_conserve(
    row: &str,
    ledger: &Ledger,
    sink: &HttpSink,
    redis: &RedisServer,
    env: &str,
    group: &str,
    types: &[&str],
    timeout: Duration,
) {
    if wait_conserved(ledger, sink, redis, env, group, types, timeout) {
        return;
    }
    let acked = ledger.lock().unwrap().acked.clone();
    let ok = sink.success_counts();
    let dead = dlq_by_id(redis, env);
    let missing: Vec<&String> = acked
        .iter()
        .filter(|id| !ok.contains_key(*id) && !dead.contains_key(*id))
        .collect();
    let mut state = String::new();
    for t in types {
        let k = stream_key(env, t);
        state += &format!(
            "{k}: xlen={} pending={:?} lag={:?}\n",
            redis.xlen(&k),
            redis.xpending_count(&k, group),
            group_lag(redis, &k, group)
        );
    }
    let rk = super::redeliver_key(env, group);
    state += &format!(
        "{rk}: pending={:?}; retry zcard={}\n",
        redis.xpending_count(&rk, group),
        redis.zcard(&super::retry_key(env, group))
    );
    for t in types {
        state += &format!(
            "pending detail {t}: {:?}\n",
            redis.xpending_detail(&stream_key(env, t), group)
        );
    }
    state += &format!(
        "CLIENT LIST:\n{}\n",
        redis
            .try_cmd(&["CLIENT", "LIST"])
            .ok()
            .and_then(|v| v.as_str())
            .unwrap_or_default()
    );
    panic!(
        "[{row}] not conserved/drained within {timeout:?}: {} of {} acknowledged ids neither handled \
         nor dead-lettered (first: {:?})\n{state}",
        missing.len(),
        acked.len(),
        missing.iter().take(10).collect::<Vec<_>>()
    );
}

/// [`must_conserve`], then a short `settle` (late metric updates, stray retries), then
/// [`check`] with `opts`: the closing step most rows share.
#[allow(clippy::too_many_arguments)]
pub fn conserved_report(
    row: &str,
    ledger: &Ledger,
    sink: &HttpSink,
    redis: &RedisServer,
    env: &str,
    group: &str,
    types: &[&str],
    timeout: Duration,
    settle: Duration,
    opts: &CheckOpts,
) -> Report {
    must_conserve(row, ledger, sink, redis, env, group, types, timeout);
    std::thread::sleep(settle);
    check(&ledger.lock().unwrap(), sink, redis, env, opts)
}
