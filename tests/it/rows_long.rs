//! Long-tier versions of rows whose PR-tier tests are scaled down: T01 at the
//! matrix's size (3 x 10,000 via the API) and T08 (10 kills at random 2-5 s
//! intervals over 20,000 events, stable and fresh consumer names). Run with
//! `scripts/test-long.sh`.

use crate::util::api::Api;
use crate::util::checker::{self, CheckOpts, ledger};
use crate::util::faults::kill9_loop;
use crate::util::*;
use rand::Rng;
use serde_json::json;
use std::time::{Duration, Instant};

const TOKEN: &str = "rows-long-token-0123456789";

#[test]
#[ignore = "long tier: 30,000 API publishes (~1-2 min on 2 cores)"]
fn t01_conservation_happy_path_30k_via_api() {
    let env = "t01long";
    let types = ["orders.created", "orders.paid", "users.signed_up"];
    let redis = RedisServer::start();
    let _dump = redis.dump_on_panic(env);
    let sink = HttpSink::start();
    let mut cfg = WorkerConfig::new(env, &redis.url())
        .route(Route::http(&["orders.*"], &sink.url()))
        .route(Route::http(&["users.signed_up"], &sink.url()))
        .api_token(TOKEN);
    cfg.concurrency = 16;
    cfg.api_extra = "rate_limit = 0\n".into();
    let mut w = WorkerProcess::start("w1", cfg.clone());
    w.wait_ready(Duration::from_secs(15));
    let l = ledger();
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
    checker::must_conserve(
        "T01",
        &l,
        &sink,
        &redis,
        env,
        "group",
        &types,
        Duration::from_secs(120),
    );
    std::thread::sleep(Duration::from_millis(500));
    let rep = checker::check(
        &l.lock().unwrap(),
        &sink,
        &redis,
        env,
        &CheckOpts::default(),
    );
    rep.assert_ok("T01", 0, "");
    assert_eq!(rep.acked, 3 * per_type);
    rep.assert_metrics("T01", &[parse_metrics(&w.metrics())], env, Some(0));
    eprintln!(
        "[T01 long] 30,000 published via the API in {published_in:?}, all handled once after {:?}",
        t0.elapsed()
    );
}

fn kill_loop_case(env: &str, consumer: Option<&str>) {
    let ty = "loop.event";
    let redis = RedisServer::start();
    let _dump = redis.dump_on_panic(env);
    let sink = HttpSink::start();
    sink.set_default(Action::delayed(200, Duration::from_millis(5)));
    let concurrency = 8usize;
    let mut cfg = WorkerConfig::new(env, &redis.url()).route(Route::http(&[ty], &sink.url()));
    cfg.concurrency = concurrency as u32;
    cfg.consumer = consumer.map(str::to_string);
    cfg.max_deliveries = 20;
    // A short block: with fewer free slots than streams the reader blocks
    // read_block on the empty redeliver stream (rows_worker::t04b), which would
    // make this a throughput test.
    cfg.read_block = "20ms".into();
    let l = ledger();
    // 20,000 events: 14,000 as a backlog before the start, 6,000 during the kills.
    for i in 0..14_000 {
        checker::publish_logged(&redis, env, ty, &format!("b-{i:05}"), &l);
    }
    let mut w = WorkerProcess::start("w", cfg);
    w.wait_ready(Duration::from_secs(15));
    let publisher =
        checker::spawn_publisher(&redis, env, ty, "k", 6000, Duration::from_millis(5), &l);
    let kills = 10;
    let mut rng = rand::thread_rng();
    let mut kill_times = Vec::new();
    for _ in 0..kills {
        let gap = Duration::from_millis(rng.gen_range(2000..5000));
        kill_times.extend(kill9_loop(&mut w, 1, gap));
    }
    publisher.join().unwrap();
    let rep = checker::conserved_report(
        "T08",
        &l,
        &sink,
        &redis,
        env,
        "group",
        &[ty],
        Duration::from_secs(120),
        Duration::from_millis(500),
    );
    // dup <= K * (C + B); the read COUNT never exceeds the free slots (B <= C).
    let bound = kills * 2 * concurrency;
    rep.assert_ok("T08", bound, "");
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
