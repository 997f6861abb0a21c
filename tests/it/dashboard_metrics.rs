//! Every metric the Grafana dashboard and the Prometheus alert rules use is
//! exported by a running worker after ordinary traffic (success, retry, DLQ,
//! a replay and a publish through the API), and the scrape-time backlog gauges
//! match Redis.

use crate::util::api::Api;
use crate::util::*;
use serde_json::json;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

const TY: &str = "shipments.sent";
const TOKEN: &str = "dashboard-token-1f4e6a8c0b";

/// `event_worker_[a-z_]+` names in a text, `_bucket`/`_sum`/`_count` stripped
/// to the family name.
fn metric_families(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let prefix = "event_worker_";
    let mut rest = text;
    while let Some(i) = rest.find(prefix) {
        let tail = &rest[i..];
        let end = tail
            .char_indices()
            .skip(prefix.len())
            .find(|(_, c)| !(c.is_ascii_lowercase() || *c == '_'))
            .map(|(j, _)| j)
            .unwrap_or(tail.len());
        let mut name = tail[..end].trim_end_matches('_');
        for suffix in ["_bucket", "_sum", "_count"] {
            if let Some(base) = name.strip_suffix(suffix) {
                name = base;
                break;
            }
        }
        if name.len() > prefix.len() {
            out.insert(name.to_string());
        }
        rest = &tail[end..];
    }
    out
}

/// Families used by `grafana/dashboards/*.json` and `grafana/alerts/*.yml`, with
/// the files that use each.
fn grafana_families() -> BTreeMap<String, BTreeSet<String>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("grafana");
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (dir, ext) in [("dashboards", "json"), ("alerts", "yml")] {
        let entries =
            std::fs::read_dir(root.join(dir)).unwrap_or_else(|e| panic!("grafana/{dir}: {e}"));
        for entry in entries {
            let path = entry.unwrap().path();
            if path.extension().and_then(|e| e.to_str()) != Some(ext) {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            let file = format!(
                "grafana/{dir}/{}",
                path.file_name().unwrap().to_string_lossy()
            );
            for f in metric_families(&text) {
                out.entry(f).or_default().insert(file.clone());
            }
        }
    }
    out
}

#[test]
fn family_names_strip_histogram_suffixes() {
    let f = metric_families(
        r#"rate(event_worker_handler_duration_seconds_bucket{env="x"}[5m]) event_worker_events_total event_worker_x_count"#,
    );
    assert_eq!(
        f,
        [
            "event_worker_handler_duration_seconds",
            "event_worker_events_total",
            "event_worker_x"
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    );
}

#[test]
fn every_metric_used_by_grafana_is_exported() {
    let used = grafana_families();
    assert!(
        used.len() >= 10,
        "found only {} metric names in grafana/: {used:?}",
        used.len()
    );
    let env = "dashboard";
    let redis = RedisServer::start();
    let _dump = redis.dump_on_panic(env);
    let sink = HttpSink::start();
    sink.script("retry-1", vec![Action::status(503), Action::ok()]);
    sink.script("dead-1", vec![Action::status(400), Action::ok()]);
    let mut cfg = WorkerConfig::new(env, &redis.url())
        .route(Route::http(&[TY], &sink.url()))
        .api_token(TOKEN);
    // Push on, for the "Push to apps" row: every event goes to `all`; only the API-published
    // one has `data.via` (the others skip that rule).
    cfg.extra = format!(
        "[push]\ndevice_scan_interval = \"200ms\"\n[[push.channels]]\ntypes = [\"{TY}\"]\n\
         channel = \"all\"\n[[push.channels]]\ntypes = [\"{TY}\"]\nchannel = \"via:{{data.via}}\"\n"
    );
    // The outbox on, for the "Outbox" row (its series start at 0).
    let outbox = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    cfg.extra += &format!(
        "[outbox]\nenabled = true\ndir = {:?}\n",
        outbox.path().join("ob").display().to_string()
    );
    let mut worker = WorkerProcess::start("w1", cfg.clone());
    worker.wait_ready(Duration::from_secs(15));
    // One SSE subscriber of `all` for the traffic below (kept open, never read).
    let mut subscriber = std::net::TcpStream::connect(cfg.api_addr()).unwrap();
    std::io::Write::write_all(
        &mut subscriber,
        format!(
            "GET /api/events/stream?channel=all HTTP/1.1\r\nhost: x\r\n\
             authorization: Bearer {TOKEN}\r\n\r\n"
        )
        .as_bytes(),
    )
    .unwrap();
    for id in ["ok-1", "retry-1", "dead-1"] {
        publish(&redis, env, TY, id);
    }
    let api = Api::new(&cfg.api_addr(), Some(TOKEN));
    let r = api.post(
        "/api/events/publish",
        &json!({"type": TY, "data": {"via": "api"}, "id": "api-1"}),
    );
    assert_eq!(r.status, 202, "{}", r.body);
    let again = api.post(
        "/api/events/publish",
        &json!({"type": TY, "data": {"via": "api"}, "id": "api-1"}),
    );
    assert_eq!(again.json()["duplicate"], json!(true), "{}", again.body);
    wait_until("traffic settled", Duration::from_secs(15), || {
        sink.success_counts().len() == 3
            && redis.xlen(&dlq_key(env)) == 1
            && drained(&redis, env, "group", &[TY])
    });
    let r = api.post("/api/events/dlq/replay", &json!({"all": true}));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["replayed"], json!(1), "{}", r.body);
    wait_until("replay handled", Duration::from_secs(10), || {
        sink.success_counts().len() == 4 && drained(&redis, env, "group", &[TY])
    });
    std::thread::sleep(Duration::from_millis(1100)); // past the 1 s backlog cache

    let text = worker.metrics();
    let samples = parse_metrics(&text);
    let exported: BTreeSet<String> = samples
        .iter()
        .flat_map(|s| metric_families(&s.name))
        .collect();
    let missing: Vec<String> = used
        .iter()
        .filter(|(f, _)| !exported.contains(*f))
        .map(|(f, files)| {
            format!(
                "{f} (used in {})",
                files.iter().cloned().collect::<Vec<_>>().join(", ")
            )
        })
        .collect();
    // Every exported family the dashboards use carries env=<env>.
    let without_env: Vec<&String> = used
        .keys()
        .filter(|f| exported.contains(*f))
        .filter(|f| {
            !samples.iter().any(|s| {
                metric_families(&s.name).contains(*f)
                    && s.labels.get("env").map(String::as_str) == Some(env)
            })
        })
        .collect();
    assert!(
        missing.is_empty() && without_env.is_empty(),
        "after success, retry, DLQ, API replay and API publish traffic:\n\
         used by grafana/ but not exported: {missing:#?}\n\
         exported without env=\"{env}\": {without_env:?}\n\
         exported families: {exported:?}\n--- /metrics ---\n{text}"
    );
    // A few values the dashboard shows, against Redis and the ledger.
    let base = [("env", env), ("group", "group"), ("type", TY)];
    assert_eq!(
        sum(
            &samples,
            "event_worker_published_total",
            &[("env", env), ("type", TY)]
        ),
        1.0
    );
    assert_eq!(sum(&samples, "event_worker_dlq_replayed_total", &base), 1.0);
    assert_eq!(
        sum(&samples, "event_worker_dlq_depth", &[("env", env)]),
        0.0
    );
    assert_eq!(sum(&samples, "event_worker_stream_lag", &base), 0.0);
    assert_eq!(sum(&samples, "event_worker_pending", &base), 0.0);
    assert_eq!(
        sum(
            &samples,
            "event_worker_retry_depth",
            &[("env", env), ("group", "group")]
        ),
        0.0
    );
    worker.assert_running();
    drop(subscriber);
}

#[test]
fn backlog_gauges_are_read_at_scrape_time() {
    let env = "backlog";
    // Slow handler: 2 in flight hold the rest back (`prefetch = 2`: nothing read
    // beyond the handler slots); one event waits in retry.
    let mut sc = Scenario::new(env)
        .types(&[TY])
        .sink(Action::delayed(200, Duration::from_secs(4)))
        .config(|c| {
            c.concurrency = 2;
            c.top_level = "prefetch = 2\n".into();
            c.initial_backoff = "10s".into();
            c.max_backoff = "10s".into();
        })
        .start();
    let (redis, sink, worker) = (&sc.redis, &sc.sink, &mut sc.workers[0]);
    sink.script("slow-retry", vec![Action::status(503), Action::ok()]);
    publish(redis, env, TY, "slow-retry");
    wait_until(
        "slow-retry in the retry set",
        Duration::from_secs(10),
        || redis.zcard(&retry_key(env, "group")) == 1,
    );
    for i in 0..6 {
        publish(redis, env, TY, &format!("slow-{i}"));
    }
    // Two old entries in the DLQ, written directly.
    for i in 0..2 {
        let id = format!("dead-{i}");
        redis.xadd(
            &dlq_key(env),
            &[
                ("id", id.as_str()),
                ("type", TY),
                ("data", "{}"),
                ("dlq_reason", "permanent_error"),
                ("dlq_group", "group"),
            ],
        );
    }
    wait_until("2 in flight", Duration::from_secs(10), || {
        sink.in_progress() == 2
    });
    std::thread::sleep(Duration::from_millis(200));
    let m = parse_metrics(&worker.metrics());
    let base = [("env", env), ("group", "group"), ("type", TY)];
    let lag = sum(&m, "event_worker_stream_lag", &base);
    let pending = sum(&m, "event_worker_pending", &base);
    assert_eq!(
        sum(
            &m,
            "event_worker_retry_depth",
            &[("env", env), ("group", "group")]
        ),
        1.0
    );
    assert_eq!(sum(&m, "event_worker_dlq_depth", &[("env", env)]), 2.0);
    assert_eq!(pending, 2.0, "two entries delivered and not acknowledged");
    assert_eq!(lag, 4.0, "six published, two delivered");
    worker.assert_running();
}
