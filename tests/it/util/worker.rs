//! The `event-worker` binary as a child process: config written into a
//! tempdir, stdout/stderr captured to files and printed when the test fails.

use super::{free_port, http_get, send_signal};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// Path of the binary under test.
pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_event-worker")
}

/// One `[[routes]]` table.
#[derive(Debug, Clone)]
pub struct Route {
    pub types: Vec<String>,
    pub handler: String,
    pub url: Option<String>,
    pub timeout: Option<String>,
    /// Extra request headers (`headers` table).
    pub headers: Vec<(String, String)>,
    /// `name` of the route.
    pub name: Option<String>,
    /// `signing_secret_env` of the route.
    pub signing_secret_env: Option<String>,
    /// The route's `batch` inline table, as TOML (`{ max_events = 10 }`).
    pub batch: Option<String>,
}

impl Route {
    pub fn http(types: &[&str], url: &str) -> Route {
        Route {
            types: types.iter().map(|s| s.to_string()).collect(),
            handler: "http".into(),
            url: Some(url.to_string()),
            timeout: Some("2s".into()),
            headers: Vec::new(),
            name: None,
            signing_secret_env: None,
            batch: None,
        }
    }
    pub fn blackhole(types: &[&str]) -> Route {
        Route {
            types: types.iter().map(|s| s.to_string()).collect(),
            handler: "blackhole".into(),
            url: None,
            timeout: None,
            headers: Vec::new(),
            name: None,
            signing_secret_env: None,
            batch: None,
        }
    }
}

/// The daemon config, with short test-friendly durations by default.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    pub env: String,
    pub redis_url: String,
    pub group: String,
    /// `None` leaves `consumer` out (daemon default: hostname-pid).
    pub consumer: Option<String>,
    pub concurrency: u32,
    pub visibility_timeout: String,
    pub max_deliveries: u32,
    pub shutdown_timeout: String,
    pub heartbeat_ttl: String,
    pub reclaim_interval: String,
    pub read_block: String,
    pub discovery_interval: String,
    pub scheduler_interval: String,
    pub max_attempts: u32,
    pub initial_backoff: String,
    pub multiplier: f64,
    pub max_backoff: String,
    pub jitter: f64,
    pub failure_threshold: u32,
    pub open_for: String,
    pub api_port: u16,
    pub routes: Vec<Route>,
    /// Raw TOML appended at the end (extra keys for special cases).
    pub extra: String,
    /// Raw TOML top-level keys (e.g. `dlq_max_len = 3`), written before the first table.
    pub top_level: String,
    /// Raw TOML keys of the `[api]` table (e.g. `rate_limit = 5`).
    pub api_extra: String,
    /// Environment variables of the process (e.g. `EVENTS_API_TOKEN`), set after
    /// the scrubbing of [`command`]; used by [`WorkerProcess`] and [`cli`].
    pub env_vars: Vec<(String, String)>,
}

impl WorkerConfig {
    /// Defaults for tests: consumer `w1`, concurrency 4, 3 attempts with a
    /// 50 ms initial backoff and no jitter, breaker that practically never opens.
    pub fn new(env: &str, redis_url: &str) -> WorkerConfig {
        WorkerConfig {
            env: env.to_string(),
            redis_url: redis_url.to_string(),
            group: "group".into(),
            consumer: Some("w1".into()),
            concurrency: 4,
            visibility_timeout: "30s".into(),
            max_deliveries: 5,
            shutdown_timeout: "5s".into(),
            heartbeat_ttl: "2s".into(),
            reclaim_interval: "200ms".into(),
            read_block: "200ms".into(),
            discovery_interval: "500ms".into(),
            scheduler_interval: "20ms".into(),
            max_attempts: 3,
            initial_backoff: "50ms".into(),
            multiplier: 2.0,
            max_backoff: "1s".into(),
            jitter: 0.0,
            failure_threshold: 1000,
            open_for: "30s".into(),
            api_port: free_port(),
            routes: Vec::new(),
            extra: String::new(),
            top_level: String::new(),
            api_extra: String::new(),
            env_vars: Vec::new(),
        }
    }

    /// Adds a route.
    pub fn route(mut self, r: Route) -> WorkerConfig {
        self.routes.push(r);
        self
    }

    /// The config as TOML.
    pub fn to_toml(&self) -> String {
        let q = |s: &str| format!("{s:?}");
        let mut t = String::new();
        t += &format!("env = {}\n", q(&self.env));
        t += &format!("redis_url = {}\n", q(&self.redis_url));
        t += &format!("group = {}\n", q(&self.group));
        if let Some(c) = &self.consumer {
            t += &format!("consumer = {}\n", q(c));
        }
        t += &format!("concurrency = {}\n", self.concurrency);
        t += &format!("visibility_timeout = {}\n", q(&self.visibility_timeout));
        t += &format!("max_deliveries = {}\n", self.max_deliveries);
        t += &format!("shutdown_timeout = {}\n", q(&self.shutdown_timeout));
        t += &format!("heartbeat_ttl = {}\n", q(&self.heartbeat_ttl));
        t += &format!("reclaim_interval = {}\n", q(&self.reclaim_interval));
        t += &format!("read_block = {}\n", q(&self.read_block));
        t += &format!("discovery_interval = {}\n", q(&self.discovery_interval));
        t += &format!("scheduler_interval = {}\n", q(&self.scheduler_interval));
        t += &self.top_level;
        t += "\n[retry]\n";
        t += &format!("max_attempts = {}\n", self.max_attempts);
        t += &format!("initial_backoff = {}\n", q(&self.initial_backoff));
        t += &format!("multiplier = {:?}\n", self.multiplier);
        t += &format!("max_backoff = {}\n", q(&self.max_backoff));
        t += &format!("jitter = {:?}\n", self.jitter);
        t += "\n[breaker]\n";
        t += &format!("failure_threshold = {}\n", self.failure_threshold);
        t += &format!("open_for = {}\n", q(&self.open_for));
        t += "\n[api]\n";
        t += &format!("listen = \"127.0.0.1:{}\"\n", self.api_port);
        t += &self.api_extra;
        for r in &self.routes {
            t += "\n[[routes]]\n";
            let types: Vec<String> = r.types.iter().map(|s| q(s)).collect();
            t += &format!("types = [{}]\n", types.join(", "));
            t += &format!("handler = {}\n", q(&r.handler));
            if let Some(n) = &r.name {
                t += &format!("name = {}\n", q(n));
            }
            if let Some(e) = &r.signing_secret_env {
                t += &format!("signing_secret_env = {}\n", q(e));
            }
            if let Some(u) = &r.url {
                t += &format!("url = {}\n", q(u));
            }
            if let Some(to) = &r.timeout {
                t += &format!("timeout = {}\n", q(to));
            }
            if let Some(b) = &r.batch {
                t += &format!("batch = {b}\n");
            }
            if !r.headers.is_empty() {
                let kv: Vec<String> = r
                    .headers
                    .iter()
                    .map(|(k, v)| format!("{} = {}", q(k), q(v)))
                    .collect();
                t += &format!("headers = {{ {} }}\n", kv.join(", "));
            }
        }
        t += "\n";
        t += &self.extra;
        t
    }

    /// Sets `EVENTS_API_TOKEN` for the processes started with this config.
    pub fn api_token(mut self, token: &str) -> WorkerConfig {
        self.env_vars.retain(|(k, _)| k != "EVENTS_API_TOKEN");
        self.env_vars
            .push(("EVENTS_API_TOKEN".into(), token.to_string()));
        self
    }

    /// The api address `127.0.0.1:PORT`.
    pub fn api_addr(&self) -> String {
        format!("127.0.0.1:{}", self.api_port)
    }
}

/// Builds a `Command` for the binary with a scrubbed environment: no
/// `REDIS_URL`, `KV_URL`, `NODE_ENV`, `APP_ENV` or `EVENTS_*` from the test
/// runner leaks in.
pub fn command() -> Command {
    let mut cmd = Command::new(binary());
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy().to_string();
        if matches!(k.as_str(), "REDIS_URL" | "KV_URL" | "NODE_ENV" | "APP_ENV")
            || k.starts_with("EVENTS_")
        {
            cmd.env_remove(&k);
        }
    }
    if std::env::var_os("RUST_LOG").is_none() {
        cmd.env("RUST_LOG", "info");
    }
    cmd.stdin(Stdio::null());
    cmd
}

/// Output of a one-shot run of the binary.
#[derive(Debug)]
pub struct Output {
    /// `None` when the process had to be killed at the timeout.
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

/// Runs the binary with `args` (and extra env vars), kills it after `timeout`.
pub fn run_once(args: &[&str], envs: &[(&str, &str)], timeout: Duration) -> Output {
    let dir = tempfile::tempdir().unwrap();
    let out_path = dir.path().join("stdout");
    let err_path = dir.path().join("stderr");
    let mut cmd = command();
    cmd.args(args)
        .stdout(File::create(&out_path).unwrap())
        .stderr(File::create(&err_path).unwrap());
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let start = Instant::now();
    let mut child = cmd.spawn().expect("spawn event-worker");
    let mut timed_out = true;
    while start.elapsed() < timeout {
        if child.try_wait().unwrap().is_some() {
            timed_out = false;
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    if timed_out {
        let _ = child.kill();
    }
    let status = child.wait().expect("wait for event-worker");
    let code = if timed_out { None } else { status.code() };
    Output {
        code,
        stdout: std::fs::read_to_string(&out_path).unwrap_or_default(),
        stderr: std::fs::read_to_string(&err_path).unwrap_or_default(),
        elapsed: start.elapsed(),
    }
}

/// Runs `event-worker --config <cfg as TOML> ARGS...` once (with the config's
/// `env_vars`), killed after 60 s.
pub fn cli(cfg: &WorkerConfig, args: &[&str]) -> Output {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cli.toml");
    std::fs::write(&path, cfg.to_toml()).unwrap();
    let mut all = vec!["--config", path.to_str().unwrap()];
    all.extend_from_slice(args);
    let envs: Vec<(&str, &str)> = cfg
        .env_vars
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    run_once(&all, &envs, Duration::from_secs(60))
}

/// A running `event-worker --config FILE run`.
pub struct WorkerProcess {
    pub config: WorkerConfig,
    pub name: String,
    dir: tempfile::TempDir,
    child: Option<Child>,
    starts: u32,
    last_status: Option<ExitStatus>,
}

impl WorkerProcess {
    /// Writes the config and starts the daemon.
    pub fn start(name: &str, config: WorkerConfig) -> WorkerProcess {
        let dir = tempfile::tempdir().unwrap();
        let mut w = WorkerProcess {
            config,
            name: name.to_string(),
            dir,
            child: None,
            starts: 0,
            last_status: None,
        };
        w.spawn();
        w
    }

    fn config_path(&self) -> PathBuf {
        self.dir.path().join("worker.toml")
    }
    fn stdout_path(&self) -> PathBuf {
        self.dir.path().join("stdout.log")
    }
    fn stderr_path(&self) -> PathBuf {
        self.dir.path().join("stderr.log")
    }

    fn spawn(&mut self) {
        assert!(self.child.is_none(), "worker {} already running", self.name);
        std::fs::write(self.config_path(), self.config.to_toml()).unwrap();
        self.starts += 1;
        let open = |p: &Path, starts: u32| {
            let mut f = OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
                .unwrap();
            writeln!(f, "===== start #{starts} =====").unwrap();
            f
        };
        let mut cmd = command();
        cmd.arg("--config")
            .arg(self.config_path())
            .arg("run")
            .stdout(open(&self.stdout_path(), self.starts))
            .stderr(open(&self.stderr_path(), self.starts));
        for (k, v) in &self.config.env_vars {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("spawn event-worker run");
        self.child = Some(child);
        self.last_status = None;
    }

    /// Starts the daemon again (same config file, logs appended). The previous
    /// process must have exited.
    pub fn restart(&mut self) {
        if let Some(mut c) = self.child.take() {
            match c.try_wait().unwrap() {
                Some(status) => self.last_status = Some(status),
                None => {
                    self.child = Some(c);
                    panic!("restart of worker {}: still running", self.name);
                }
            }
        }
        self.spawn();
    }

    /// SIGTERM, asserts exit code 0 within 10 s, starts again and waits until ready.
    pub fn graceful_restart(&mut self) {
        self.sigterm();
        assert_eq!(
            self.wait_exit(Duration::from_secs(10))
                .and_then(|s| s.code()),
            Some(0),
            "exit code of worker {} after SIGTERM",
            self.name
        );
        self.restart();
        self.wait_ready(Duration::from_secs(15));
    }

    /// How many times the process was started.
    pub fn starts(&self) -> u32 {
        self.starts
    }

    /// Pid of the running process.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("worker not running").id()
    }

    /// Sends SIGTERM.
    pub fn sigterm(&self) {
        send_signal(self.pid(), "TERM");
    }

    /// Sends SIGKILL and reaps the process.
    pub fn kill9(&mut self) -> ExitStatus {
        send_signal(self.pid(), "KILL");
        self.wait_exit(Duration::from_secs(10))
            .expect("worker did not die after SIGKILL")
    }

    /// Waits up to `timeout` for the process to exit; `None` if it is still running.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let start = Instant::now();
        loop {
            if let Some(status) = self.try_exit() {
                return Some(status);
            }
            if start.elapsed() >= timeout {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The exit status if the process has exited (reaps it).
    pub fn try_exit(&mut self) -> Option<ExitStatus> {
        if let Some(c) = self.child.as_mut()
            && let Some(status) = c.try_wait().unwrap()
        {
            self.child = None;
            self.last_status = Some(status);
        }
        if self.child.is_none() {
            return self.last_status;
        }
        None
    }

    /// Whether the process is running.
    pub fn is_running(&mut self) -> bool {
        self.try_exit();
        self.child.is_some()
    }

    /// Asserts that the process is still running (with its logs if not).
    pub fn assert_running(&mut self) {
        if !self.is_running() {
            panic!(
                "worker {} exited unexpectedly ({:?})\n{}",
                self.name,
                self.last_status,
                self.logs()
            );
        }
    }

    /// GET on the api listener: (status, body); `None` if not reachable.
    pub fn get(&self, path: &str) -> Option<(u16, String)> {
        http_get(&self.config.api_addr(), path)
    }

    /// Waits until `/readyz` answers 200.
    pub fn wait_ready(&mut self, timeout: Duration) {
        let start = Instant::now();
        loop {
            self.assert_running();
            if let Some((200, _)) = self.get("/readyz") {
                return;
            }
            if start.elapsed() > timeout {
                panic!(
                    "worker {} not ready within {timeout:?}\n{}",
                    self.name,
                    self.logs()
                );
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// `/metrics` body (panics if unreachable).
    pub fn metrics(&self) -> String {
        let mut last = None;
        for _ in 0..20 {
            match self.get("/metrics") {
                Some((200, body)) => return body,
                other => last = other,
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("GET /metrics failed: {last:?}");
    }

    /// stdout and stderr (last 150 lines each).
    pub fn logs(&self) -> String {
        let tail = |p: PathBuf| {
            let t = std::fs::read_to_string(p).unwrap_or_default();
            let lines: Vec<&str> = t.lines().collect();
            lines[lines.len().saturating_sub(150)..].join("\n")
        };
        format!(
            "--- worker {} stdout ---\n{}\n--- worker {} stderr ---\n{}\n--- config ---\n{}",
            self.name,
            tail(self.stdout_path()),
            self.name,
            tail(self.stderr_path()),
            self.config.to_toml()
        )
    }

    /// Full stdout and stderr text of all starts (no config).
    pub fn output(&self) -> String {
        let read = |p: PathBuf| std::fs::read_to_string(p).unwrap_or_default();
        format!("{}{}", read(self.stdout_path()), read(self.stderr_path()))
    }

    /// Full stderr text of all starts.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.stderr_path()).unwrap_or_default()
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.logs());
        }
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
