//! The publish fallback (README "Outbox"): with `outbox.enabled`, a publish answers within
//! `outbox.fallback_after` whether or not Redis answers (202 `"queued": "outbox"`), the
//! daemon drains its outbox once Redis is back, each event reaches its stream exactly once
//! and in order, a full outbox answers 503 with Retry-After, the CLI queues in `<dir>/cli`,
//! and a kill -9 after a 202 loses nothing.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::util::api::Api;
use crate::util::worker::cli;
use crate::util::*;
use serde_json::{Value, json};

const TOKEN: &str = "outbox-publish-token-0123456789";

/// A directory for an outbox (not under /tmp, which the config refuses).
fn outbox_dir() -> (tempfile::TempDir, PathBuf) {
    let t = tempfile::Builder::new()
        .prefix("outbox-")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .unwrap();
    let dir = t.path().join("ob");
    (t, dir)
}

/// A ready worker for `ty` with the outbox in `dir` and extra `[outbox]` keys.
fn scenario(row: &str, ty: &str, dir: &std::path::Path, extra: &str) -> Scenario {
    let table = format!(
        "[outbox]\nenabled = true\ndir = {:?}\n{extra}",
        dir.display().to_string()
    );
    Scenario::new(row)
        .types(&[ty])
        .token(TOKEN)
        .config(move |c| c.extra = table)
        .start()
}

/// POSTs `body` to the single publish and returns (status, JSON, seconds taken).
fn post(api: &Api, body: &Value) -> (u16, Value, f64) {
    let t = Instant::now();
    let r = api.post("/api/events/publish", body);
    (r.status, r.json(), t.elapsed().as_secs_f64())
}

/// The ids of the entries of `ty`'s stream, in stream order.
fn stream_ids(s: &Scenario, ty: &str) -> Vec<String> {
    s.redis
        .xrange(&stream_key(&s.env, ty))
        .iter()
        .map(|e| e.get("id").unwrap_or_default().to_string())
        .collect()
}

/// `event_worker_<name>` with `labels` on the first worker.
fn metric(s: &Scenario, name: &str, labels: &[(&str, &str)]) -> f64 {
    sum(&parse_metrics(&s.workers[0].metrics()), name, labels)
}

#[test]
fn t160_paused_redis_queues_within_fallback_after_and_drains_once_in_order() {
    let ty = "ob.paused";
    let (_keep, dir) = outbox_dir();
    let s = scenario("T160", ty, &dir, "");
    let api = s.api(Some(TOKEN));
    let (status, first, _) = post(&api, &json!({"type": ty, "data": {}, "id": "p-0"}));
    assert_eq!(
        (status, &first["duplicate"]),
        (202, &json!(false)),
        "{first}"
    );
    let redis_pid = s.redis.pid();
    send_signal(redis_pid, "STOP");
    // Redis frozen: the first publish waits fallback_after (1 s) and is queued; its XADD
    // is already on the wire and lands late, when Redis thaws.
    let mut answers = Vec::new();
    for i in 1..=3 {
        let id = format!("p-{i}");
        answers.push(post(&api, &json!({"type": ty, "data": {"n": i}, "id": id})));
    }
    let batch = api.post(
        "/api/events/publish/batch",
        &json!({"events": [{"type": ty, "data": {}, "id": "p-4"}, {"type": ty, "data": {}}]}),
    );
    send_signal(redis_pid, "CONT");
    for (i, (status, body, secs)) in answers.iter().enumerate() {
        assert_eq!(*status, 202, "{body}");
        assert_eq!(body["queued"], "outbox", "{body}");
        assert_eq!(body["id"], format!("p-{}", i + 1));
        assert_eq!(body["stream"], stream_key(&s.env, ty).as_str());
        assert!(
            *secs < 1.8,
            "answered in {secs:.2}s, over fallback_after + margin"
        );
    }
    // The first waited for Redis; the next two queued behind it at once (order kept).
    assert!(answers[0].2 >= 0.9, "{:.2}s", answers[0].2);
    assert!(answers[1].2 < 0.5 && answers[2].2 < 0.5, "{answers:?}");
    assert_eq!(batch.status, 200, "{}", batch.body);
    let results = batch.json()["results"].as_array().unwrap().clone();
    assert_eq!(results.len(), 2);
    assert_eq!(results[0]["status"], "queued", "{results:?}");
    assert_eq!(results[0]["id"], "p-4");
    assert_eq!(results[1]["status"], "queued");
    let generated = results[1]["id"].as_str().unwrap().to_string();
    assert_eq!(generated.len(), 36, "a UUID was given: {generated}");
    let want = ["p-0", "p-1", "p-2", "p-3", "p-4", generated.as_str()];
    wait_until("the outbox drained", Duration::from_secs(15), || {
        stream_ids(&s, ty).len() >= want.len()
            && metric(&s, "event_worker_outbox_depth", &[]) == 0.0
    });
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(stream_ids(&s, ty), want, "each once, in publish order");
    wait_until("each handled", Duration::from_secs(10), || {
        want.iter().all(|id| !s.sink.requests_for(id).is_empty())
    });
    std::thread::sleep(Duration::from_millis(300));
    for id in want {
        assert_eq!(s.sink.requests_for(id).len(), 1, "{id} handled once");
    }
    let env = s.env.as_str();
    let appended = |reason| {
        metric(
            &s,
            "event_worker_outbox_appended_total",
            &[("env", env), ("reason", reason)],
        )
    };
    assert_eq!((appended("timeout"), appended("behind")), (1.0, 4.0));
    assert_eq!(
        metric(&s, "event_worker_outbox_drained_total", &[("env", env)]),
        5.0
    );
    // fsync = always: at least one fsync per queued event, and their time is counted.
    wait_until("the fsync counters", Duration::from_secs(3), || {
        metric(&s, "event_worker_outbox_fsyncs_total", &[("env", env)]) >= 5.0
    });
    let secs = metric(
        &s,
        "event_worker_outbox_fsync_seconds_total",
        &[("env", env)],
    );
    assert!(secs > 0.0 && secs < 5.0, "fsync seconds {secs}");
    assert_eq!(
        metric(
            &s,
            "event_worker_outbox_torn_records_total",
            &[("env", env)]
        ),
        0.0
    );
    // History: p-2 was queued and drained; p-1's XADD landed late when Redis thawed, so
    // its drain found it already there and wrote nothing (the id guard).
    let records = |id: &str| -> Vec<(String, String)> {
        let h = api.get(&format!("/api/events/history?id={id}&type={ty}"));
        h.json()["records"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                let field = |k: &str| r[k].as_str().unwrap_or_default().to_string();
                (field("kind"), field("detail"))
            })
            .collect()
    };
    let p2 = records("p-2");
    assert!(
        p2.contains(&("queued".into(), "queued in the outbox (behind)".into())),
        "{p2:?}"
    );
    assert!(
        p2.contains(&("drained".into(), "drained from the outbox".into())),
        "{p2:?}"
    );
    let p1 = records("p-1");
    assert!(
        p1.contains(&("queued".into(), "queued in the outbox (timeout)".into())),
        "{p1:?}"
    );
    assert!(
        p1.contains(&(
            "drained".into(),
            "drained from the outbox (already in the stream)".into()
        )),
        "the late XADD was kept once: {p1:?}"
    );
}

#[test]
fn t161_oom_queues_a_full_outbox_answers_503_and_nothing_queued_is_lost() {
    let ty = "ob.full";
    let (_keep, dir) = outbox_dir();
    let mut s = scenario("T161", ty, &dir, "max_bytes = 4096\nmax_age = \"1s\"\n");
    let api = s.api(Some(TOKEN));
    s.redis
        .cmd(&["CONFIG", "SET", "maxmemory-policy", "noeviction"]);
    s.redis.cmd(&["CONFIG", "SET", "maxmemory", "1"]);
    let data = "x".repeat(1500);
    let mut queued = Vec::new();
    let mut refused = None;
    for i in 0..4 {
        let id = format!("f-{i}");
        let (status, body, secs) = post(&api, &json!({"type": ty, "data": data, "id": id}));
        assert!(secs < 1.8, "{secs:.2}s");
        match status {
            202 => {
                assert_eq!(body["queued"], "outbox", "{body}");
                queued.push(id);
            }
            503 => {
                refused = Some(body);
                break;
            }
            other => panic!("{other}: {body}"),
        }
    }
    assert_eq!(queued, ["f-0", "f-1"], "two records fit in 4096 bytes");
    let refused = refused.expect("the third publish is refused");
    let message = refused["error"].as_str().unwrap();
    let expected = format!(
        "Redis did not take the event and the local outbox refused it too: outbox {} is full:",
        dir.display()
    );
    assert!(message.starts_with(&expected), "{message}");
    assert!(message.contains("nothing was dropped"), "{message}");
    let r = api.post(
        "/api/events/publish",
        &json!({"type": ty, "data": data, "id": "f-x"}),
    );
    assert_eq!((r.status, r.header("retry-after")), (503, Some("5")));
    let env = s.env.as_str();
    assert_eq!(
        metric(
            &s,
            "event_worker_outbox_appended_total",
            &[("env", env), ("reason", "oom")]
        ),
        1.0
    );
    assert_eq!(
        metric(
            &s,
            "event_worker_outbox_refused_total",
            &[("env", env), ("reason", "full")]
        ),
        2.0
    );
    // Health shows the outbox: degraded while it holds events, `outbox_holding` until the
    // oldest is over max_age, then `outbox_not_draining` instead.
    let codes = |h: &Value| -> Vec<String> {
        h["reasons"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|r| r["code"].as_str().map(str::to_string))
            .filter(|c| c.starts_with("outbox"))
            .collect()
    };
    let h = api.get("/api/events/health").json();
    let early = codes(&h);
    assert!(
        early == ["outbox_holding"] || early == ["outbox_not_draining"],
        "{h}"
    );
    assert_eq!(h["status"], "degraded", "{h}");
    wait_until("health degraded", Duration::from_secs(10), || {
        let h = api.get("/api/events/health").json();
        h["reasons"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["code"] == "outbox_not_draining")
    });
    let h = api.get("/api/events/health").json();
    let o = &h["outbox"];
    assert_eq!(
        (o["depth"].as_u64(), o["fsync"].as_str()),
        (Some(2), Some("always")),
        "{h}"
    );
    assert_eq!(
        (o["draining"].as_bool(), o["max_bytes"].as_u64()),
        (Some(false), Some(4096))
    );
    assert_eq!(o["dir"], dir.display().to_string());
    assert!(o["oldest_age_seconds"].as_f64().unwrap() > 1.0, "{o}");
    assert_eq!(h["status"], "degraded");
    s.redis.cmd(&["CONFIG", "SET", "maxmemory", "0"]);
    wait_until("the outbox drained", Duration::from_secs(15), || {
        stream_ids(&s, ty).len() >= 2
    });
    assert_eq!(stream_ids(&s, ty), ["f-0", "f-1"]);
    wait_until("health ok again", Duration::from_secs(10), || {
        api.get("/api/events/health").json()["outbox"]["depth"] == 0
    });
    // A second daemon on the same directory refuses to start, naming the first one's pid.
    let first_pid = s.workers[0].pid();
    let i = s.add_worker();
    let status = s.workers[i].wait_exit(Duration::from_secs(15));
    assert!(status.is_some_and(|st| !st.success()), "{status:?}");
    let stderr = s.workers[i].stderr();
    let refusal = format!(
        "outbox directory {} is in use by another process (pid {first_pid}); one directory \
         serves one process",
        dir.display()
    );
    assert!(stderr.contains(&refusal), "{stderr}");
    // `check` warns when outbox.dir is on tmpfs.
    let mut cfg = s.workers[0].config.clone();
    cfg.extra = "[outbox]\nenabled = true\ndir = \"/dev/shm/event-worker-t161/ob\"\n".into();
    let out = cli(&cfg, &["check"]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(
        out.stdout
            .contains("warning: outbox dir /dev/shm/event-worker-t161/ob is on tmpfs (memory"),
        "{}",
        out.stdout
    );
}

#[test]
fn t162_kill9_after_a_202_and_a_cli_publish_while_redis_is_down_drain_after_restart() {
    let ty = "ob.crash";
    let (_keep, dir) = outbox_dir();
    let mut s = scenario("T162", ty, &dir, "");
    let api = s.api(Some(TOKEN));
    s.redis.stop();
    let (status, body, secs) = post(&api, &json!({"type": ty, "data": {}, "id": "k-1"}));
    assert_eq!((status, &body["queued"]), (202, &json!("outbox")), "{body}");
    assert!(secs < 1.8, "{secs:.2}s");
    s.workers[0].kill9();
    // The CLI, with the daemon gone and Redis down, queues in <dir>/cli.
    let out = cli(
        &s.workers[0].config,
        &["publish", ty, "{}", "--id", "k-2", "--json"],
    );
    let stderr = &out.stderr;
    assert_eq!(out.code, Some(0), "{stderr}");
    let cli_dir = dir.join("cli");
    let note = format!(
        "queued: Redis did not take event k-2 (unreachable), so it waits in the local outbox {}",
        cli_dir.display()
    );
    assert!(stderr.contains(&note), "{stderr}");
    let printed: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(printed["queued"], "outbox");
    assert_eq!(printed["dir"], cli_dir.display().to_string());
    s.redis.start_again();
    s.workers[0].restart();
    s.workers[0].wait_ready(Duration::from_secs(15));
    wait_until("both drained", Duration::from_secs(15), || {
        stream_ids(&s, ty).len() >= 2
    });
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(stream_ids(&s, ty), ["k-1", "k-2"]);
    wait_until("each handled", Duration::from_secs(10), || {
        ["k-1", "k-2"]
            .iter()
            .all(|id| s.sink.requests_for(id).len() == 1)
    });
}

/// A daemon started while Redis is down takes publishes at once: single and batch are
/// queued in the outbox (`unreachable`) before its first connection, and drained in order,
/// each once, when Redis comes up.
#[test]
fn t165_a_daemon_started_while_redis_is_down_queues_publishes_and_drains_them() {
    let ty = "ob.early";
    let (_keep, dir) = outbox_dir();
    let mut s = scenario("T165", ty, &dir, "");
    s.redis.stop();
    s.workers[0].kill9();
    s.workers[0].restart();
    let api = s.api(Some(TOKEN));
    wait_until("the API listens", Duration::from_secs(15), || {
        s.workers[0]
            .get("/livez")
            .is_some_and(|(code, _)| code == 200)
    });
    let (status, body, secs) = post(&api, &json!({"type": ty, "data": {"n": 1}, "id": "o-1"}));
    assert_eq!(
        (status, &body),
        (
            202,
            &json!({"queued": "outbox", "id": "o-1", "stream": stream_key(&s.env, ty)})
        ),
        "before any connection to Redis"
    );
    assert!(secs < 0.5, "answered without waiting for Redis: {secs:.2}s");
    let batch = json!({"events": [
        {"type": ty, "data": {"n": 2}, "id": "o-2"},
        {"type": ty, "id": "o-bad"},
        {"type": ty, "data": {"n": 3}, "id": "o-3"},
    ]});
    let r = api.post("/api/events/publish/batch", &batch);
    let results = r.json()["results"].clone();
    let statuses: Vec<String> = results
        .as_array()
        .unwrap_or_else(|| panic!("{}", r.body))
        .iter()
        .map(|x| x["status"].as_str().unwrap_or("?").to_string())
        .collect();
    assert_eq!(
        (r.status, statuses),
        (
            200,
            vec!["queued".to_string(), "invalid".into(), "queued".into()]
        ),
        "{}",
        r.body
    );
    let wrong = Api::new(&s.cfg.api_addr(), Some("wrong-token"));
    let r = wrong.post(
        "/api/events/publish",
        &json!({"type": ty, "data": {}, "id": "o-x"}),
    );
    assert_eq!(r.status, 401, "the token is still checked: {}", r.body);
    s.redis.start_again();
    wait_until("drained", Duration::from_secs(20), || {
        stream_ids(&s, ty).len() >= 3
    });
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(stream_ids(&s, ty), ["o-1", "o-2", "o-3"]);
    wait_until("each handled once", Duration::from_secs(10), || {
        ["o-1", "o-2", "o-3"]
            .iter()
            .all(|id| s.sink.requests_for(id).len() == 1)
    });
}

/// Long tier, the scenario: Redis stopped; 1,000 publishes from 4 threads (one type
/// each); the daemon killed with -9 twice in the middle and started again while Redis is
/// still down (the outbox reopened, the publishes queued before the first connection); then
/// Redis started: every publish that got a 2xx is in its stream exactly once, in answer order
/// per type, and handled once.
#[test]
#[ignore = "long tier: scripts/test-long.sh"]
fn t166_redis_down_1000_publishes_from_4_threads_two_kill9s_then_each_drained_once() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};
    let types = ["ob.t0", "ob.t1", "ob.t2", "ob.t3"];
    let (_keep, dir) = outbox_dir();
    let mut s = Scenario::new("T166")
        .types(&types)
        .token(TOKEN)
        .config({
            let table = format!(
                "[outbox]\nenabled = true\ndir = {:?}\n",
                dir.display().to_string()
            );
            move |c| c.extra = table
        })
        .start();
    s.redis.stop();
    let answered = Arc::new(AtomicUsize::new(0));
    let acked: Arc<Mutex<Vec<Vec<String>>>> = Arc::new(Mutex::new(vec![Vec::new(); 4]));
    let threads: Vec<_> = (0..4)
        .map(|k| {
            let (answered, acked, addr) = (answered.clone(), acked.clone(), s.cfg.api_addr());
            std::thread::spawn(move || {
                let api = Api::new(&addr, Some(TOKEN));
                let ty = format!("ob.t{k}");
                let deadline = Instant::now() + Duration::from_secs(120);
                let mut n = 0;
                while n < 250 && Instant::now() < deadline {
                    let id = format!("t{k}-{n:03}");
                    let body = json!({"type": ty, "data": {"n": n}, "id": id});
                    let r = api.try_send(
                        "POST",
                        "/api/events/publish",
                        &[
                            ("content-type", "application/json"),
                            ("authorization", &format!("Bearer {TOKEN}")),
                        ],
                        Some(body.to_string().into_bytes()),
                    );
                    match r {
                        Ok(r) if r.status / 100 == 2 => {
                            acked.lock().unwrap()[k].push(id);
                            answered.fetch_add(1, Ordering::Relaxed);
                            n += 1;
                        }
                        _ => std::thread::sleep(Duration::from_millis(20)),
                    }
                }
            })
        })
        .collect();
    for at in [300, 600] {
        wait_until("publishes answered", Duration::from_secs(60), || {
            answered.load(Ordering::Relaxed) >= at
        });
        s.workers[0].kill9();
        s.workers[0].restart();
        wait_until("the API listens again", Duration::from_secs(20), || {
            s.workers[0]
                .get("/livez")
                .is_some_and(|(code, _)| code == 200)
        });
    }
    for t in threads {
        t.join().unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    assert_eq!(
        acked.iter().map(Vec::len).sum::<usize>(),
        1000,
        "every publish answered"
    );
    s.redis.start_again();
    wait_until(
        "every acknowledged publish drained",
        Duration::from_secs(120),
        || {
            types
                .iter()
                .enumerate()
                .all(|(k, ty)| stream_ids(&s, ty).len() >= acked[k].len())
        },
    );
    std::thread::sleep(Duration::from_millis(500));
    for (k, ty) in types.iter().enumerate() {
        assert_eq!(
            stream_ids(&s, ty),
            acked[k],
            "{ty}: each once, in answer order"
        );
    }
    wait_until("each handled once", Duration::from_secs(60), || {
        acked
            .iter()
            .flatten()
            .all(|id| s.sink.requests_for(id).len() == 1)
    });
    eprintln!("T166: 1000 acknowledged, lost 0, dups 0, out of order 0");
}

/// Long tier: 10 rounds of Redis frozen while one client publishes through the API, the
/// daemon killed with -9 in the middle of the publishes and again in the middle of the
/// drain (`drain_rate = 200`); at the end every publish that got a 202 is in its stream
/// exactly once, in the order of the answers, and no id is there twice.
#[test]
#[ignore = "long tier: scripts/test-long.sh"]
fn t163_kill9_loop_while_publishes_fall_back_and_drain_loses_nothing() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};
    let ty = "ob.loop";
    let (_keep, dir) = outbox_dir();
    let mut s = scenario("T163", ty, &dir, "drain_rate = 200\n");
    let acked: Arc<Mutex<Vec<String>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let publisher = {
        let (acked, stop, addr) = (acked.clone(), stop.clone(), s.cfg.api_addr());
        std::thread::spawn(move || {
            let api = Api::new(&addr, Some(TOKEN));
            for n in 0..100_000 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let id = format!("l-{n}");
                let body = json!({"type": ty, "data": {"n": n}, "id": id});
                match api.try_send(
                    "POST",
                    "/api/events/publish",
                    &[
                        ("content-type", "application/json"),
                        ("authorization", &format!("Bearer {TOKEN}")),
                    ],
                    Some(body.to_string().into_bytes()),
                ) {
                    Ok(r) if r.status == 202 => acked.lock().unwrap().push(id),
                    _ => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        })
    };
    for round in 0..10u64 {
        let redis_pid = s.redis.pid();
        send_signal(redis_pid, "STOP");
        std::thread::sleep(Duration::from_millis(1500 + 97 * round));
        s.workers[0].kill9();
        send_signal(redis_pid, "CONT");
        s.workers[0].restart();
        s.workers[0].wait_ready(Duration::from_secs(20));
        // Kill it again part way through the drain.
        std::thread::sleep(Duration::from_millis(200 + 53 * round));
        s.workers[0].kill9();
        s.workers[0].restart();
        s.workers[0].wait_ready(Duration::from_secs(20));
    }
    stop.store(true, Ordering::Relaxed);
    publisher.join().unwrap();
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() > 100, "only {} publishes answered", acked.len());
    wait_until(
        "every acknowledged publish drained",
        Duration::from_secs(120),
        || {
            let ids = stream_ids(&s, ty);
            acked.iter().all(|id| ids.contains(id))
        },
    );
    let ids = stream_ids(&s, ty);
    let mut seen = std::collections::HashMap::new();
    for (at, id) in ids.iter().enumerate() {
        assert!(
            seen.insert(id.clone(), at).is_none(),
            "{id} is in the stream twice"
        );
    }
    let positions: Vec<usize> = acked.iter().map(|id| seen[id]).collect();
    let out_of_order = positions.windows(2).filter(|w| w[0] > w[1]).count();
    eprintln!(
        "T163: {} acknowledged, {} in the stream, lost 0, dups 0, out of order {out_of_order}",
        acked.len(),
        ids.len()
    );
    assert_eq!(out_of_order, 0, "per-type order of the answers is kept");
}

#[test]
fn t164_library_submit_queues_when_redis_is_frozen_and_the_publisher_drains() {
    use event_worker::{Config, NewEvent, PublishOutcome, Publisher, QueueReason};
    let ty = "ob.lib";
    let (_keep, dir) = outbox_dir();
    let redis = RedisServer::start();
    let toml = format!(
        "env = \"t164\"\nredis_url = {:?}\n[outbox]\nenabled = true\ndir = {:?}\n",
        redis.url(),
        dir.display().to_string()
    );
    let config = Config::from_toml_and_env(&toml, |_| None).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let event = |id: &str| NewEvent {
        event_type: ty.into(),
        data: "{}".into(),
        id: Some(id.into()),
        ..Default::default()
    };
    let publisher = rt.block_on(Publisher::connect(&config)).unwrap();
    match rt.block_on(publisher.submit(event("lib-1"))).unwrap() {
        PublishOutcome::Published(p) => assert!(!p.duplicate),
        other => panic!("{other:?}"),
    }
    send_signal(redis.pid(), "STOP");
    let t = Instant::now();
    let outcome = rt.block_on(publisher.submit(event("lib-2")));
    let secs = t.elapsed().as_secs_f64();
    send_signal(redis.pid(), "CONT");
    match outcome.unwrap() {
        PublishOutcome::Queued(q) => {
            assert_eq!((q.id.as_str(), q.reason), ("lib-2", QueueReason::Timeout));
            assert_eq!(q.dir, dir);
        }
        other => panic!("{other:?}"),
    }
    assert!((0.9..1.8).contains(&secs), "{secs:.2}s");
    wait_until("the publisher drained", Duration::from_secs(10), || {
        redis.xlen(&stream_key("t164", ty)) >= 2
    });
    let ids: Vec<String> = redis
        .xrange(&stream_key("t164", ty))
        .iter()
        .map(|e| e.get("id").unwrap_or_default().to_string())
        .collect();
    assert_eq!(ids, ["lib-1", "lib-2"]);
    rt.block_on(publisher.close());
}

#[test]
fn t167_library_publisher_started_while_redis_is_down_queues_then_connects_and_drains() {
    use event_worker::{Config, NewEvent, PublishOutcome, Publisher, QueueReason, RedisErrorKind};
    let ty = "ob.early";
    let (_keep, dir) = outbox_dir();
    let port = free_port();
    let toml = |outbox: bool| {
        format!(
            "env = \"t167\"\nredis_url = \"redis://127.0.0.1:{port}\"\n[outbox]\nenabled = {outbox}\ndir = {:?}\n",
            dir.display().to_string()
        )
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    // Without the outbox a publisher still needs Redis to start.
    let plain = Config::from_toml_and_env(&toml(false), |_| None).unwrap();
    let refused = rt
        .block_on(Publisher::connect(&plain))
        .err()
        .expect("no Redis, no outbox");
    assert!(
        refused.to_string().contains(&format!("127.0.0.1:{port}")),
        "{refused}"
    );

    let config = Config::from_toml_and_env(&toml(true), |_| None).unwrap();
    let t = Instant::now();
    let publisher = rt.block_on(Publisher::connect(&config)).unwrap();
    assert!(
        t.elapsed() < Duration::from_millis(1500),
        "{:?}",
        t.elapsed()
    );
    assert!(!publisher.is_connected());
    let event = |id: &str| NewEvent {
        event_type: ty.into(),
        data: "{}".into(),
        id: Some(id.into()),
        ..Default::default()
    };
    for id in ["early-1", "early-2", "early-3"] {
        let t = Instant::now();
        match rt.block_on(publisher.submit(event(id))).unwrap() {
            PublishOutcome::Queued(q) => {
                assert_eq!((q.id.as_str(), q.reason), (id, QueueReason::Unreachable));
            }
            other => panic!("{other:?}"),
        }
        assert!(
            t.elapsed() < Duration::from_millis(500),
            "{:?}",
            t.elapsed()
        );
    }
    // `publish` never queues: it says why it cannot publish yet.
    match rt.block_on(publisher.publish(event("direct"))) {
        Err(event_worker::PublishError::Store(e)) => {
            assert_eq!(e.kind, RedisErrorKind::Connection, "{e}");
        }
        other => panic!("{other:?}"),
    }
    let redis = RedisServer::start_on(port, Aof::Always);
    wait_until("the publisher connected", Duration::from_secs(15), || {
        publisher.is_connected()
    });
    wait_until("the queued events drained", Duration::from_secs(10), || {
        redis.xlen(&stream_key("t167", ty)) >= 3
    });
    // Published at once, or queued behind the drain's last batch while it is acknowledged
    // (the order rule): either way once, after the others.
    match rt.block_on(publisher.submit(event("early-4"))).unwrap() {
        PublishOutcome::Published(p) => assert!(!p.duplicate),
        PublishOutcome::Queued(q) => assert_eq!(q.reason, QueueReason::Behind),
    }
    wait_until("early-4 is in the stream", Duration::from_secs(10), || {
        redis.xlen(&stream_key("t167", ty)) >= 4
    });
    let ids: Vec<String> = redis
        .xrange(&stream_key("t167", ty))
        .iter()
        .map(|e| e.get("id").unwrap_or_default().to_string())
        .collect();
    assert_eq!(ids, ["early-1", "early-2", "early-3", "early-4"]);
    rt.block_on(publisher.close());
}
