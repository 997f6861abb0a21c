//! A real Prometheus (Debian package `prometheus`, installed by
//! scripts/ensure-deps.sh) scrapes a running worker: a query returns the
//! worker's `event_worker_events_total` series, and the alert rules of
//! grafana/alerts load and evaluate against it without errors.

use crate::util::api::{Api, encode};
use crate::util::*;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const TY: &str = "invoices.sent";

fn prometheus_binary() -> PathBuf {
    if let Ok(p) = std::env::var("PROMETHEUS") {
        return PathBuf::from(p);
    }
    for dir in std::env::var("PATH").unwrap_or_default().split(':') {
        let p = Path::new(dir).join("prometheus");
        if p.is_file() {
            return p;
        }
    }
    let p = PathBuf::from("/usr/bin/prometheus");
    assert!(
        p.is_file(),
        "prometheus not found (PATH, /usr/bin): install the Debian package with scripts/ensure-deps.sh"
    );
    p
}

/// The prometheus child, killed (SIGKILL) and reaped on drop; its log printed
/// when the test fails.
struct Prometheus {
    child: Option<Child>,
    dir: tempfile::TempDir,
    port: u16,
}

impl Prometheus {
    fn start(target: &str) -> Prometheus {
        let dir = tempfile::tempdir().unwrap();
        let rules =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("grafana/alerts/event-worker.rules.yml");
        let config = format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
             rule_files:\n  - {rules:?}\n\
             scrape_configs:\n  - job_name: event-worker\n    static_configs:\n      - targets: [\"{target}\"]\n",
        );
        std::fs::write(dir.path().join("prometheus.yml"), config).unwrap();
        let port = free_port();
        let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
        let child = Command::new(prometheus_binary())
            .arg(format!(
                "--config.file={}",
                dir.path().join("prometheus.yml").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("spawn prometheus");
        Prometheus {
            child: Some(child),
            dir,
            port,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default()
    }

    fn assert_running(&mut self) {
        if let Some(c) = self.child.as_mut()
            && let Ok(Some(status)) = c.try_wait()
        {
            panic!("prometheus exited ({status}):\n{}", self.log());
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = self.log();
            let lines: Vec<&str> = log.lines().collect();
            eprintln!(
                "--- prometheus log ---\n{}",
                lines[lines.len().saturating_sub(40)..].join("\n")
            );
        }
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

#[test]
fn real_prometheus_scrapes_the_worker_and_evaluates_the_alert_rules() {
    let env = "promscrape";
    let mut sc = Scenario::new(env).types(&[TY]).start();
    let (redis, sink, cfg) = (&sc.redis, &sc.sink, sc.cfg.clone());
    let worker = &mut sc.workers[0];
    for i in 0..3 {
        publish(redis, env, TY, &format!("p-{i}"));
    }
    wait_until("3 handled", Duration::from_secs(10), || {
        sink.success_counts().len() == 3
    });

    let mut prom = Prometheus::start(&cfg.api_addr());
    let api = Api::new(&format!("127.0.0.1:{}", prom.port), None);
    let query = |q: &str| -> Option<Value> {
        let r = api
            .try_send(
                "GET",
                &format!("/api/v1/query?query={}", encode(q)),
                &[],
                None,
            )
            .ok()?;
        (r.status == 200).then(|| r.json())
    };
    let start = Instant::now();
    let mut result = Vec::new();
    while start.elapsed() < Duration::from_secs(45) {
        prom.assert_running();
        if let Some(v) = query("event_worker_events_total{outcome=\"success\"}")
            && let Some(r) = v["data"]["result"].as_array()
            && !r.is_empty()
        {
            result = r.clone();
            break;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    assert!(
        !result.is_empty(),
        "no event_worker_events_total series in Prometheus after {:?}",
        start.elapsed()
    );
    let series = &result[0];
    let labels = &series["metric"];
    assert_eq!(labels["__name__"], "event_worker_events_total", "{series}");
    assert_eq!(labels["job"], "event-worker", "{series}");
    assert_eq!(labels["env"], env, "{series}");
    assert_eq!(labels["group"], "group", "{series}");
    assert_eq!(labels["type"], TY, "{series}");
    assert_eq!(labels["outcome"], "success", "{series}");
    assert_eq!(series["value"][1], "3", "{series}");
    let up = query("up{job=\"event-worker\"}").expect("query up");
    assert_eq!(up["data"]["result"][0]["value"][1], "1", "{up}");

    // The alert rules loaded and evaluated against the real series without errors.
    let mut rules_seen = Vec::new();
    let evaluated = try_wait_until(Duration::from_secs(20), || {
        let Ok(r) = api.try_send("GET", "/api/v1/rules", &[], None) else {
            return false;
        };
        let v: Value = serde_json::from_str(&r.body).unwrap_or(Value::Null);
        rules_seen = v["data"]["groups"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
            .collect();
        !rules_seen.is_empty() && rules_seen.iter().all(|r| r["health"] != "unknown")
    });
    assert!(evaluated, "rules not evaluated: {rules_seen:#?}");
    let bad: Vec<String> = rules_seen
        .iter()
        .filter(|r| r["health"] != "ok")
        .map(|r| format!("{}: {} {}", r["name"], r["health"], r["lastError"]))
        .collect();
    assert!(bad.is_empty(), "alert rules failing in Prometheus: {bad:?}");
    let firing: Vec<String> = rules_seen
        .iter()
        .filter(|r| r["state"] == "firing")
        .map(|r| r["name"].to_string())
        .collect();
    assert!(
        firing.is_empty(),
        "alerts firing on a healthy worker: {firing:?}"
    );
    worker.assert_running();
}
