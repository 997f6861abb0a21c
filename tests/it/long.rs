//! Long-tier versions of rows whose PR-tier tests are scaled down: T01 at the
//! matrix's size (3 x 10,000 via the API), T08 (10 kills at random 2-5 s
//! intervals over 20,000 events, stable and fresh consumer names), and the T53
//! soak (`SOAK_ROUNDS` rounds of steady load and one fault each, with resource
//! plateaus asserted). Run with `scripts/test-long.sh`.

use crate::util::api::Api;
use crate::util::checker::{self, CheckOpts, ledger};
use crate::util::faults::{
    ClientKillStorm, DebugSleep, KillTarget, Proxy, client_pause, kill9_loop,
};
use crate::util::*;
use rand::Rng;
use serde_json::json;
use std::time::{Duration, Instant};

const TOKEN: &str = "rows-long-token-0123456789";

#[test]
#[ignore = "long tier: 30,000 API publishes (~1-2 min on 2 cores)"]
fn t01_conservation_happy_path_30k_via_api() {
    let types = ["orders.created", "orders.paid", "users.signed_up"];
    let s = Scenario::new("T01")
        .env("t01long")
        .types(&types)
        .routes(|_, url| {
            vec![
                Route::http(&["orders.*"], url),
                Route::http(&["users.signed_up"], url),
            ]
        })
        .token(TOKEN)
        .config(|c| {
            c.concurrency = 16;
            c.api_extra = "rate_limit = 0\n".into();
        })
        .start();
    let (cfg, l) = (&s.cfg, &s.ledger);
    let per_type = 10_000;
    let t0 = Instant::now();
    let threads: Vec<_> = types
        .iter()
        .map(|ty| {
            let (addr, ty, l) = (cfg.api_addr(), ty.to_string(), l.clone());
            std::thread::spawn(move || {
                let api = Api::new(&addr, Some(TOKEN));
                for i in 0..per_type {
                    let id = format!("{ty}-{i:05}");
                    l.lock().unwrap().attempt(&id);
                    let r = api.post(
                        "/api/events/publish",
                        &json!({"type": ty, "data": {"i": i}, "id": id}),
                    );
                    if r.status == 202 {
                        l.lock().unwrap().ack(&id);
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let published_in = t0.elapsed();
    let rep = s.conserved(Close {
        timeout: Duration::from_secs(120),
        settle: Duration::from_millis(500),
        ..Close::default()
    });
    assert_eq!(rep.acked, 3 * per_type);
    eprintln!(
        "[T01 long] 30,000 published via the API in {published_in:?}, all handled once after {:?}",
        t0.elapsed()
    );
}

fn kill_loop_case(env: &str, consumer: Option<&str>) {
    let concurrency = 8usize;
    let consumer_name = consumer.map(str::to_string);
    let mut s = Scenario::new("T08")
        .env(env)
        .types(&["loop.event"])
        .sink(Action::delayed(200, Duration::from_millis(5)))
        .config(move |c| {
            c.concurrency = concurrency as u32;
            c.consumer = consumer_name;
            c.max_deliveries = 20;
            // A short block: with fewer free slots than streams the reader blocks
            // read_block on the empty redeliver stream (worker_lifecycle::t04b), which
            // would make this a throughput test.
            c.read_block = "20ms".into();
        })
        .workers(0)
        .start();
    // 20,000 events: 14,000 as a backlog before the start, 6,000 during the kills.
    for i in 0..14_000 {
        s.publish(&format!("b-{i:05}"));
    }
    s.add_worker();
    s.w().wait_ready(Duration::from_secs(15));
    let publisher = s.publisher("k", 6000, Duration::from_millis(5));
    let kills = 10;
    let mut rng = rand::thread_rng();
    let mut kill_times = Vec::new();
    for _ in 0..kills {
        let gap = Duration::from_millis(rng.gen_range(2000..5000));
        kill_times.extend(kill9_loop(s.w(), 1, gap));
    }
    publisher.join().unwrap();
    // dup <= K * (C + B); the read COUNT never exceeds the free slots (B <= C).
    let bound = kills * 2 * concurrency;
    let rep = s.conserved(Close {
        timeout: Duration::from_secs(120),
        settle: Duration::from_millis(500),
        dup_bound: bound,
        metrics: false,
        ..Close::default()
    });
    assert_eq!(kill_times.len(), kills);
    eprintln!(
        "[T08 long] consumer {consumer:?}: {kills} kills, {} acked, dups {} (bound {bound})",
        rep.acked, rep.duplicated
    );
}

#[test]
#[ignore = "long tier: 10 kill -9 at random 2-5 s intervals over 20,000 events (~1-2 min)"]
fn t08_kill9_loop_conservation_stable_name() {
    kill_loop_case("t08stable", Some("w1"));
}

#[test]
#[ignore = "long tier: 10 kill -9 at random 2-5 s intervals over 20,000 events (~1-2 min)"]
fn t08_kill9_loop_conservation_new_name_each_start() {
    kill_loop_case("t08fresh", None);
}

/// Rounds of the T53 soak: `SOAK_ROUNDS` (default and minimum 8, two cycles of the four
/// faults; at most 300, about 75 minutes).
fn soak_rounds() -> usize {
    std::env::var("SOAK_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(8usize)
        .clamp(8, 300)
}

/// What T53 samples at the end of each round.
#[derive(Debug, Clone, Copy, Default)]
struct SoakSample {
    /// Daemon RSS (`VmRSS`), KiB.
    rss_kib: u64,
    /// Daemon open file descriptors.
    fds: usize,
    /// Redis `used_memory`, bytes.
    used_memory: i64,
    /// `MEMORY USAGE` of the type stream (trimmed by `stream_retention`, bounded apart).
    stream_bytes: i64,
    /// Sample lines of the daemon's `/metrics`.
    series: usize,
    /// `XINFO CONSUMERS` of the group on the type stream.
    consumers: usize,
    /// Pending entries of the group (type stream + redeliver stream).
    pending: i64,
    /// Members of the retry set.
    retry: i64,
    /// Entries of the history stream.
    history: i64,
    /// Entries of the type stream.
    stream_len: i64,
}

impl SoakSample {
    fn line(&self) -> String {
        format!(
            "rss {:.1} MiB, fds {}, used_memory {:.2} MiB (type stream {:.0} KiB, {} entries), \
             series {}, consumers {}, pending {}, retry {}, history {}",
            self.rss_kib as f64 / 1024.0,
            self.fds,
            self.used_memory as f64 / 1048576.0,
            self.stream_bytes as f64 / 1024.0,
            self.stream_len,
            self.series,
            self.consumers,
            self.pending,
            self.retry,
            self.history
        )
    }
}

fn soak_sample(redis: &RedisServer, w: &WorkerProcess, env: &str, ty: &str) -> SoakSample {
    let key = stream_key(env, ty);
    let consumers = redis
        .try_cmd(&["XINFO", "CONSUMERS", &key, "group"])
        .map(|v| v.items().len())
        .unwrap_or(0);
    let pending = pending_total(redis, &[key.clone(), redeliver_key(env, "group")], "group");
    SoakSample {
        rss_kib: rss_kib(w.pid()),
        fds: fd_count(w.pid()),
        used_memory: info_field(redis, "memory", "used_memory").unwrap_or(0),
        stream_bytes: redis
            .cmd(&["MEMORY", "USAGE", &key, "SAMPLES", "0"])
            .as_int()
            .unwrap_or(0),
        series: w
            .metrics()
            .lines()
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .count(),
        consumers,
        pending,
        retry: redis.zcard(&retry_key(env, "group")),
        history: redis.xlen(&format!("events:{env}:history")),
        stream_len: redis.xlen(&key),
    }
}

/// One fault of groups B-D, by round: a CLIENT KILL storm (T17), kill -9 of the second
/// daemon and its restart under a new consumer name (T08/T09/T12), proxy latency then an
/// RST of every connection (T20/T22), CLIENT PAUSE ALL then DEBUG SLEEP (T18/T19).
fn soak_fault(round: usize, redis: &RedisServer, proxy: &Proxy, w2: &mut WorkerProcess) -> String {
    match round % 4 {
        0 => {
            let storm = ClientKillStorm::start(
                redis,
                KillTarget::TypeNormal,
                Duration::from_millis(500),
                Duration::from_secs(3),
            );
            let (rounds, killed) = storm.join();
            format!("CLIENT KILL storm ({rounds} rounds, {killed} clients)")
        }
        1 => {
            w2.kill9();
            std::thread::sleep(Duration::from_secs(1));
            w2.restart();
            "kill -9 of w2, restarted with a new name".to_string()
        }
        2 => {
            proxy.latency(Duration::from_millis(100), Duration::from_millis(50));
            std::thread::sleep(Duration::from_secs(4));
            proxy.pass();
            let n = proxy.rst_all();
            format!("latency 100±50 ms for 4 s, then RST of {n} connections")
        }
        _ => {
            client_pause(redis, 2000, "ALL");
            std::thread::sleep(Duration::from_millis(2500));
            let r = DebugSleep::start(redis, 2.0).join();
            format!("CLIENT PAUSE 2000 ALL, then DEBUG SLEEP 2 ({r:?})")
        }
    }
}

/// docs/reliability-matrix.md T53: one daemon under steady load (about 50 events/s, a few retried and
/// dead-lettered ones per round) through a proxy, with a second daemon in the group, for
/// `SOAK_ROUNDS` rounds of about 15 s with one fault each. Sampled at the end of every round;
/// the second half's maxima must stay within a tolerance of the first half's: daemon RSS
/// (+10 MiB), open FDs (+4), metric series (+0), Redis `used_memory` without the type stream
/// (+1 MiB; the type stream is bounded apart by `stream_retention`), consumers (+1). Every
/// sample: pending <= 4 C, retry set <= 20, history <= max_len + 100, type stream <= what
/// `stream_retention` lets stay. Then nothing lost.
#[test]
#[ignore = "long tier: T53 soak, SOAK_ROUNDS rounds of ~15 s (default 8, ~2.5 min)"]
fn t53_soak_bounded_memory() {
    let env = "t53";
    let ty = "soak.event";
    let rounds = soak_rounds();
    let concurrency = 8usize;
    let (history_max, retention_s, rate) = (2000i64, 60i64, 50i64);
    let redis = RedisServer::start();
    let proxy = Proxy::start(redis.port);
    let sink = HttpSink::start();
    let mut cfg = WorkerConfig::new(env, &format!("redis://127.0.0.1:{}", proxy.port()))
        .route(Route::http(&[ty], &sink.url()));
    cfg.concurrency = concurrency as u32;
    cfg.max_deliveries = 50;
    cfg.top_level = format!("stream_retention = \"{retention_s}s\"\n");
    cfg.extra = format!("[history]\nmax_len = {history_max}\n");
    let mut w = WorkerProcess::start("w1", cfg.clone());
    let mut cfg2 = cfg.clone();
    cfg2.consumer = None;
    cfg2.api_port = free_port();
    let mut w2 = WorkerProcess::start("w2", cfg2);
    w.wait_ready(Duration::from_secs(15));
    w2.wait_ready(Duration::from_secs(15));
    let l = ledger();
    let mut expect_dead = std::collections::BTreeSet::new();
    let mut samples: Vec<SoakSample> = Vec::new();
    let t0 = Instant::now();
    for round in 0..rounds {
        for k in 0..3 {
            let id = format!("retried-{round:03}-{k}");
            sink.script(
                &id,
                vec![Action::status(500), Action::status(500), Action::ok()],
            );
            checker::publish_logged(&redis, env, ty, &id, &l);
        }
        let dead = format!("dead-{round:03}");
        sink.script(&dead, vec![Action::status(400)]);
        checker::publish_logged(&redis, env, ty, &dead, &l);
        expect_dead.insert(dead);
        let per_round = (rate * 12) as usize;
        let publisher = checker::spawn_publisher(
            &redis,
            env,
            ty,
            &format!("r{round:03}"),
            per_round,
            Duration::from_millis((1000 / rate) as u64),
            &l,
        );
        std::thread::sleep(Duration::from_secs(2));
        let fault = soak_fault(round, &redis, &proxy, &mut w2);
        publisher.join().unwrap();
        std::thread::sleep(Duration::from_secs(1));
        w.assert_running();
        let s = soak_sample(&redis, &w, env, ty);
        eprintln!(
            "[T53] round {round} at {:.0?} ({fault}): {}",
            t0.elapsed(),
            s.line()
        );
        samples.push(s);
    }
    checker::must_conserve(
        "T53",
        &l,
        &sink,
        &redis,
        env,
        "group",
        &[ty],
        Duration::from_secs(120),
    );
    std::thread::sleep(Duration::from_millis(500));
    let opts = CheckOpts {
        expect_dead,
        ..CheckOpts::default()
    };
    let rep = checker::check(&l.lock().unwrap(), &sink, &redis, env, &opts);
    let (first, second) = samples.split_at(rounds / 2);
    let max =
        |half: &[SoakSample], f: &dyn Fn(&SoakSample) -> i64| half.iter().map(f).max().unwrap_or(0);
    type Figure<'a> = &'a dyn Fn(&SoakSample) -> i64;
    let checks: [(&str, Figure, i64); 5] = [
        ("daemon RSS (KiB)", &|s| s.rss_kib as i64, 10 * 1024),
        ("daemon FDs", &|s| s.fds as i64, 4),
        ("metric series", &|s| s.series as i64, 0),
        (
            "used_memory without the type stream",
            &|s| s.used_memory - s.stream_bytes,
            1 << 20,
        ),
        ("consumers", &|s| s.consumers as i64, 1),
    ];
    let mut problems = Vec::new();
    for (what, f, tolerance) in checks {
        let (a, b) = (max(first, f), max(second, f));
        eprintln!("[T53] {what}: first-half max {a}, second-half max {b} (tolerance +{tolerance})");
        if b > a + tolerance {
            problems.push(format!("{what}: {a} -> {b} (> +{tolerance})"));
        }
    }
    let stream_cap = rate * (retention_s + 30 + 30) + 200;
    for (i, s) in samples.iter().enumerate() {
        for (what, got, cap) in [
            ("pending", s.pending, 4 * concurrency as i64),
            ("retry set", s.retry, 20),
            ("history", s.history, history_max + 100),
            ("type stream entries", s.stream_len, stream_cap),
        ] {
            if got > cap {
                problems.push(format!("round {i}: {what} {got} > {cap}"));
            }
        }
    }
    eprintln!(
        "[T53] {rounds} rounds in {:.0?}; {}",
        t0.elapsed(),
        rep.summary()
    );
    rep.assert_ok("T53", rounds * 2 * concurrency, "");
    assert!(
        problems.is_empty(),
        "[T53] not bounded:\n{}",
        problems.join("\n")
    );
    w.assert_running();
}
