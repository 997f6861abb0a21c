//! Slow handlers on live consumers are never stolen, whatever `visibility_timeout` and
//! `heartbeat_ttl` are (T61): two daemons in one group, handlers lasting three times
//! `visibility_timeout`, for several combinations of the two keys run side by side.

use crate::util::*;
use std::time::{Duration, Instant};

const TY: &str = "orders.slow";

/// One combination and what became of it.
struct Outcome {
    /// `visibility_timeout` / `heartbeat_ttl` as configured.
    label: String,
    /// Events whose handler ran more than once (id and runs).
    twice: Vec<(String, usize)>,
    /// `event_worker_reclaimed_total` summed over both daemons.
    reclaimed: f64,
    /// Events published.
    events: usize,
}

/// Runs `events` slow events through two daemons with `visibility` and `ttl`.
fn combo(row: &'static str, visibility: &'static str, ttl: &'static str) -> Outcome {
    let vt = Duration::from_millis(match visibility {
        "1s" => 1000,
        "2s" => 2000,
        "3s" => 3000,
        other => panic!("no millis for {other}"),
    });
    let events = 6;
    let mut s = Scenario::new(row)
        .types(&[TY])
        .route_timeout("30s")
        .sink(Action::delayed(200, vt * 3))
        .workers(2)
        .config(move |c| {
            // Free permits on both daemons: either could claim the other's entries.
            c.concurrency = 8;
            c.visibility_timeout = visibility.into();
            c.heartbeat_ttl = ttl.into();
            c.reclaim_interval = "100ms".into();
        })
        .start();
    let env = s.env.clone();
    let ids: Vec<String> = (0..events).map(|i| format!("slow-{i}")).collect();
    for id in &ids {
        publish(&s.redis, &env, TY, id);
    }
    wait_until(
        "every slow event handled",
        vt * 3 + Duration::from_secs(10),
        || {
            ids.iter()
                .all(|id| s.sink.success_counts().contains_key(id))
        },
    );
    wait_until("drained", Duration::from_secs(10), || {
        drained(&s.redis, &env, "group", &[TY])
    });
    let twice = ids
        .iter()
        .map(|id| (id.clone(), s.sink.requests_for(id).len()))
        .filter(|(_, n)| *n != 1)
        .collect();
    let reclaimed = s
        .workers
        .iter()
        .map(|w| {
            sum(
                &parse_metrics(&w.metrics()),
                "event_worker_reclaimed_total",
                &[("env", env.as_str())],
            )
        })
        .sum();
    for w in &mut s.workers {
        w.assert_running();
    }
    Outcome {
        label: format!("visibility_timeout {visibility}, heartbeat_ttl {ttl}"),
        twice,
        reclaimed,
        events,
    }
}

#[test]
fn t61_slow_handlers_are_never_stolen_whatever_visibility_timeout_and_heartbeat_ttl() {
    let started = Instant::now();
    // (row, visibility_timeout, heartbeat_ttl): 10s is the default heartbeat_ttl.
    let combos = [
        ("T61a", "2s", "10s"),
        ("T61b", "2s", "30s"),
        ("T61c", "1s", "10s"),
        ("T61d", "3s", "1s"),
    ];
    let threads: Vec<_> = combos
        .into_iter()
        .map(|(row, vt, ttl)| std::thread::spawn(move || combo(row, vt, ttl)))
        .collect();
    let outcomes: Vec<Outcome> = threads
        .into_iter()
        .map(|t| t.join().expect("a combination failed to run"))
        .collect();
    let table: Vec<String> = outcomes
        .iter()
        .map(|o| {
            format!(
                "{}: {} of {} ran more than once {:?}, reclaimed {}",
                o.label,
                o.twice.len(),
                o.events,
                o.twice,
                o.reclaimed
            )
        })
        .collect();
    eprintln!("[T61] {:?}\n  {}", started.elapsed(), table.join("\n  "));
    for o in &outcomes {
        assert!(
            o.twice.is_empty() && o.reclaimed == 0.0,
            "a live consumer's slow work was claimed by the other one:\n  {}",
            table.join("\n  ")
        );
    }
}
