//! T70: retries are scheduled and forwarded on one clock, Redis's (`TIME` inside the move
//! and forward scripts), whatever the workers' own clocks say. Two workers of one group run
//! under libfaketime, one 30 s slow and one 30 s fast; the fast one leaves before its
//! retries are due, so the slow one alone forwards them.

use crate::util::scenario::READY;
use crate::util::*;
use std::time::{Duration, Instant};

const TY: &str = "skew.checked";
/// The one backoff of the test (`initial_backoff`, no jitter).
const BACKOFF: Duration = Duration::from_secs(3);
/// `scheduler_interval`.
const INTERVAL: Duration = Duration::from_millis(100);
const EVENTS: usize = 12;

/// The preload library of Debian's `faketime` package (installed by scripts/ensure-deps.sh):
/// `/usr/lib/<arch triplet>/faketime/libfaketime.so.1`.
fn libfaketime() -> String {
    let found = std::fs::read_dir("/usr/lib").ok().and_then(|dirs| {
        dirs.flatten()
            .map(|d| d.path().join("faketime/libfaketime.so.1"))
            .find(|p| p.exists())
    });
    match found {
        Some(p) => p.display().to_string(),
        None => panic!(
            "/usr/lib/<arch>/faketime/libfaketime.so.1 is missing: run scripts/ensure-deps.sh \
             (installs Debian's faketime package)"
        ),
    }
}

/// A worker config `name` whose process sees the wall clock shifted by `offset`
/// (libfaketime syntax, e.g. `-30s`); its monotonic clock stays real.
fn skewed(cfg: &WorkerConfig, name: &str, offset: &str) -> WorkerConfig {
    let lib = libfaketime();
    let mut c = cfg.clone();
    c.consumer = Some(name.to_string());
    c.api_port = free_port();
    for (k, v) in [
        ("LD_PRELOAD", lib.as_str()),
        ("FAKETIME", offset),
        ("FAKETIME_DONT_FAKE_MONOTONIC", "1"),
    ] {
        c.env_vars.push((k.to_string(), v.to_string()));
    }
    c
}

/// The time of day (seconds) of the worker's first log line (`2026-12-04T22:35:51.123Z ...`),
/// as its own clock gave it.
fn log_clock_secs(output: &str) -> Option<i64> {
    let line = output.lines().find(|l| l.starts_with("20"))?;
    let mut parts = line.get(11..19)?.split(':').map(|p| p.parse::<i64>().ok());
    Some(parts.next()?? * 3600 + parts.next()?? * 60 + parts.next()??)
}

#[test]
fn t70_retries_follow_redis_clock_with_workers_skewed_both_ways() {
    let s = Scenario::new("T70")
        .types(&[TY])
        .workers(0)
        .config(|c| {
            c.initial_backoff = "3s".into();
            c.max_backoff = "3s".into();
            c.scheduler_interval = "100ms".into();
            c.max_attempts = 3;
        })
        .start();
    let mut slow = WorkerProcess::start("slow", skewed(&s.cfg, "slow", "-30s"));
    let mut fast = WorkerProcess::start("fast", skewed(&s.cfg, "fast", "+30s"));
    slow.wait_ready(READY);
    fast.wait_ready(READY);
    let ids: Vec<String> = (0..EVENTS).map(|i| format!("skew-{i}")).collect();
    for id in &ids {
        s.sink.script(id, vec![Action::status(500), Action::ok()]);
    }
    for id in &ids {
        s.publish(id);
        std::thread::sleep(Duration::from_millis(40));
    }
    let retried = |w: &WorkerProcess| {
        let m = parse_metrics(&w.metrics());
        sum(&m, "event_worker_events_total", &[("outcome", "retried")]) as usize
    };
    wait_until(
        "every event failed once and was scheduled",
        Duration::from_secs(10),
        || retried(&slow) + retried(&fast) == EVENTS,
    );
    let (by_slow, by_fast) = (retried(&slow), retried(&fast));
    let first_fail = ids
        .iter()
        .filter_map(|id| s.sink.requests_for(id).first().map(|r| r.received))
        .min()
        .unwrap();
    // The fast worker leaves before any retry is due: its retries are the slow one's to
    // forward.
    fast.sigterm();
    let code = fast
        .wait_exit(Duration::from_secs(10))
        .and_then(|c| c.code());
    let left_at = s.sink.now();
    let clocks = (
        log_clock_secs(&slow.output()),
        log_clock_secs(&fast.output()),
    );
    assert_eq!(code, Some(0), "{}", fast.logs());
    let apart = clocks
        .0
        .zip(clocks.1)
        .map(|(a, b)| (b - a).rem_euclid(86_400));
    assert!(
        apart.is_some_and(|d| (55..=65).contains(&d)),
        "the workers' clocks must be 60 s apart (libfaketime), their first log lines say {clocks:?}"
    );
    assert!(
        by_slow > 0 && by_fast > 0 && left_at < first_fail + BACKOFF - Duration::from_millis(500),
        "each worker must schedule some retries and the fast one leave before any is due: \
         slow {by_slow}, fast {by_fast}, left {:?} after the first failure",
        left_at - first_fail
    );
    let started = Instant::now();
    let deadline = BACKOFF + INTERVAL + Duration::from_secs(3);
    try_wait_until(deadline, || {
        ids.iter().all(|id| s.sink.requests_for(id).len() >= 2)
    });
    let (mut early, mut late, mut gaps) = (0, 0, Vec::new());
    for id in &ids {
        let r = s.sink.requests_for(id);
        match r.get(1) {
            Some(second) => {
                let gap = second.received - r[0].received;
                early += usize::from(gap + Duration::from_millis(100) < BACKOFF);
                late += usize::from(gap > BACKOFF + INTERVAL + Duration::from_secs(1));
                gaps.push(format!("{id} {}ms", gap.as_millis()));
            }
            None => {
                late += 1;
                gaps.push(format!(
                    "{id} not retried {:?} after the fast worker left",
                    started.elapsed()
                ));
            }
        }
    }
    eprintln!(
        "[T70] backoff {BACKOFF:?}: {early} early, {late} late of {EVENTS} (slow scheduled \
         {by_slow}, fast {by_fast}; log clocks {clocks:?}): {gaps:?}"
    );
    assert_eq!(
        (early, late),
        (0, 0),
        "retries forwarded early (more than 100 ms before their {BACKOFF:?} backoff) or late \
         (more than scheduler_interval + 1 s after): {gaps:?}\n{}",
        slow.logs()
    );
    wait_until("drained", Duration::from_secs(10), || {
        drained(&s.redis, &s.env, "group", &[TY])
    });
    let counts = s.sink.request_counts();
    assert!(
        ids.iter().all(|id| counts.get(id) == Some(&2)),
        "each event delivered exactly twice: {counts:?}"
    );
}
