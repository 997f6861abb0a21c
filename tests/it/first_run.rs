//! The README's first run (issue 10, point 12): `scripts/run-local.sh` starts a local Redis
//! whose data lives outside `target/`, says how to stop it, runs the worker on
//! `examples/local.toml`, and an event published with the same binary is consumed.
//! The script's overrides point it at a free port, a temp state dir and the debug binary.

use crate::util::resp::Conn;
use crate::util::worker::binary;
use crate::util::*;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Stops what the script started, even when the test fails: the worker, then the Redis.
struct Cleanup {
    child: Option<Child>,
    redis_port: u16,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if let Ok(mut c) = Conn::connect_auth(self.redis_port, None) {
            let _ = c.cmd(&["SHUTDOWN", "NOSAVE"]);
        }
    }
}

/// The script or binary with the test runner's `EVENTS_*` and Redis variables removed.
fn clean(mut cmd: Command) -> Command {
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy().to_string();
        if k.starts_with("EVENTS_")
            || matches!(k.as_str(), "REDIS_URL" | "KV_URL" | "NODE_ENV" | "APP_ENV")
        {
            cmd.env_remove(&k);
        }
    }
    cmd
}

#[test]
fn run_local_keeps_redis_data_outside_target_says_how_to_stop_it_and_consumes() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let state = tempfile::tempdir().unwrap();
    let logs = tempfile::tempdir().unwrap();
    let (port, api) = (free_port(), format!("127.0.0.1:{}", free_port()));
    let stderr_path = logs.path().join("stderr");
    let mut script = clean(Command::new(root.join("scripts/run-local.sh")));
    script
        .env("EVENT_WORKER_REDIS_PORT", port.to_string())
        .env("EVENT_WORKER_STATE_DIR", state.path())
        .env("EVENT_WORKER_BIN", binary())
        .env("EVENTS_API_LISTEN", &api)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&stderr_path).unwrap());
    let mut guard = Cleanup {
        child: Some(script.spawn().expect("run scripts/run-local.sh")),
        redis_port: port,
    };
    let said = || std::fs::read_to_string(&stderr_path).unwrap_or_default();
    wait_until("the worker consumes", Duration::from_secs(20), || {
        said().contains("consuming")
    });
    let data = state.path().join("redis");
    let text = said();
    assert!(
        text.contains(&format!(
            "started redis-server on 127.0.0.1:{port} (data in {})",
            data.display()
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!("stop it with: redis-cli -p {port} shutdown")),
        "no stop hint:\n{text}"
    );
    let mut conn = Conn::connect_auth(port, None).unwrap();
    let dir = conn.cmd(&["CONFIG", "GET", "dir"]).unwrap();
    let dir = format!("{dir:?}");
    assert!(dir.contains(&data.display().to_string()), "redis dir {dir}");
    assert!(!dir.contains("/target/"), "redis data under target/: {dir}");
    // The README's publish example, with the same binary.
    let out = clean(Command::new(binary()))
        .current_dir(root)
        .env("EVENTS_REDIS_URL", format!("redis://127.0.0.1:{port}"))
        .args([
            "--config",
            "examples/local.toml",
            "publish",
            "demo.hello",
            r#"{"hi":1}"#,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "publish: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let consumed = || {
        http_get(&api, "/metrics").is_some_and(|(_, body)| {
            sum(
                &parse_metrics(&body),
                "event_worker_events_total",
                &[("type", "demo.hello"), ("outcome", "success")],
            ) == 1.0
        })
    };
    wait_until(
        "the published event is consumed",
        Duration::from_secs(10),
        consumed,
    );
    // Ctrl-C stops the daemon (the script execs it).
    let child = guard.child.as_mut().unwrap();
    send_signal(child.id(), "INT");
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "still running after SIGINT"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(
        status.success(),
        "exit after SIGINT: {status:?}\n{}",
        said()
    );
    guard.child = None;
    // The stop hint works; the data stays where promised.
    let stop = Command::new("redis-cli")
        .args(["-p", &port.to_string(), "shutdown"])
        .output()
        .unwrap();
    assert!(stop.status.success(), "{stop:?}");
    wait_until("redis stopped", Duration::from_secs(10), || {
        Conn::connect_auth(port, None).is_err()
    });
    assert!(
        data.join("redis.log").exists(),
        "no redis.log in {}",
        data.display()
    );
}
