//! The `push` scenario (opt-in: `bench/run.sh --sections push`): one release event-worker whose
//! `[[push.channels]]` rules project `user.*` events onto `user:{data.userId}` and `shared.*`
//! onto `shared:{data.room}` (10 rooms), and SSE + WebSocket clients in this process.
//!
//! Phases, on one worker: idle memory per connection; a steady window (990 user events/s and
//! 10 shared events/s, latency publish-to-client, CPU of the worker and of Redis); the same
//! window with 100 extra clients that stop reading (then a burst on their channel until they
//! are cut as slow); a reconnect storm (every client drops, events are published while they are
//! down, all resume at once: time until all caught up, Redis commands per resume); at the end
//! every message published is checked to have reached every subscriber exactly once.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use fred::prelude::*;
use fred::types::{ClusterHash, CustomCommand};
use tokio::sync::watch;

use crate::pushclient::{self, Client as PushClient, Ended, Stats};
use crate::util::{Opts, Proc, free_port, http, machine_busy_s, now_ns, proc_cpu_s};

pub const ENV: &str = "pushbench";
pub const ROOMS: u64 = 10;
pub const STALLED: usize = 100;

/// Targets of issue 12.
pub const TARGET_P99_MS: f64 = 20.0;
pub const TARGET_KB_PER_CONN: f64 = 10.0;
pub const TARGET_CMDS_PER_RESUME: f64 = 4.0;

/// Redis figures at one moment: CPU seconds (`INFO cpu`).
pub struct RedisSnap {
    pub cpu_s: f64,
}

/// The figures of one measured window.
pub struct Window {
    pub secs: f64,
    pub lat: Vec<u64>,
    pub worker_cpu_s: f64,
    pub redis_cpu_s: f64,
    pub self_cpu_s: f64,
    pub foreign_cpu_s: f64,
    /// Entries of `user.updated` the push group had not read yet, at the window's start and end.
    pub push_lag: (u64, u64),
}

impl Window {
    pub fn pct(&self, p: f64) -> f64 {
        crate::util::percentile(&self.lat, p) as f64 / 1e6
    }
    pub fn max_ms(&self) -> f64 {
        self.lat.last().copied().unwrap_or(0) as f64 / 1e6
    }
}

pub struct Run {
    pub port: u16,
    pub ctl: Client,
    pub api: u16,
    pub worker: Proc,
    pub stats: Arc<Stats>,
    pub n_clients: usize,
    /// Clients per room (the recipients of a shared event).
    pub per_room: Vec<u64>,
    pub seq: Arc<AtomicU64>,
    pub expected: Arc<AtomicU64>,
    pub publishing: Arc<AtomicBool>,
}

pub fn cmd(name: &'static str) -> CustomCommand {
    CustomCommand::new_static(name, ClusterHash::Random, false)
}

pub async fn connect(port: u16) -> Result<Client, String> {
    let config =
        Config::from_url(&format!("redis://127.0.0.1:{port}")).map_err(|e| e.to_string())?;
    let client = Builder::from_config(config)
        .with_performance_config(|p| p.default_command_timeout = Duration::from_secs(60))
        .build()
        .map_err(|e| e.to_string())?;
    client
        .init()
        .await
        .map_err(|e| format!("redis :{port}: {e}"))?;
    Ok(client)
}

pub async fn redis_snap(ctl: &Client) -> Result<RedisSnap, String> {
    let v: Value = ctl
        .custom(cmd("INFO"), vec!["cpu"])
        .await
        .map_err(|e| format!("INFO: {e}"))?;
    let body = v.as_str_lossy().map(|s| s.into_owned()).unwrap_or_default();
    let mut snap = RedisSnap { cpu_s: 0.0 };
    for line in body.lines().map(str::trim) {
        if let Some(v) = line
            .strip_prefix("used_cpu_sys:")
            .or(line.strip_prefix("used_cpu_user:"))
        {
            snap.cpu_s += v.parse::<f64>().unwrap_or(0.0);
        }
    }
    Ok(snap)
}

/// The sum of a metric's series in the worker's `/metrics`.
pub fn metric(api: u16, name: &str) -> Result<f64, String> {
    let (_, body) = http(api, "GET", "/metrics")?;
    Ok(body
        .lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum())
}

pub fn rss_kb(pid: u32) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    text.lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Raises this process's open-file limit to its hard limit (children inherit it).
pub fn raise_nofile() -> u64 {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit write/read the struct we own.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut r);
        r.rlim_cur = r.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &r);
    }
    r.rlim_cur
}

/// An event's `data`: routing field, `seq`, publish time, padding to about 160 bytes.
fn event_data(field: &str, value: &str, seq: u64) -> String {
    let head = format!(
        r#"{{"{field}":"{value}","seq":{seq},"sent_ns":{:019},"pad":""#,
        now_ns()
    );
    format!(
        "{head}{}\"}}",
        "x".repeat(160usize.saturating_sub(head.len() + 2))
    )
}

impl Run {
    /// XADDs events (`user` true: `user.updated` for userId `to`; else `shared.note` for room
    /// `to`) concurrently; returns the last seq.
    pub async fn publish(&self, batch: &[(bool, String)]) -> Result<u64, String> {
        let mut futs = Vec::with_capacity(batch.len());
        let mut last = 0;
        for (user, to) in batch {
            let seq = self.seq.fetch_add(1, Ordering::Relaxed);
            last = seq;
            let (key, typ, field) = if *user {
                ("events:pushbench:user.updated", "user.updated", "userId")
            } else {
                ("events:pushbench:shared.note", "shared.note", "room")
            };
            let fields = vec![
                ("id", format!("e-{seq}")),
                ("type", typ.to_string()),
                ("data", event_data(field, to, seq)),
            ];
            let c = self.ctl.clone();
            futs.push(async move {
                c.xadd::<Value, _, _, _, _>(key, false, None, "*", fields)
                    .await
            });
        }
        for r in futures::future::join_all(futs).await {
            r.map_err(|e| format!("publish: {e}"))?;
        }
        Ok(last)
    }

    /// Recipients among the counted clients of an event to `to`.
    pub fn recipients(&self, user: bool, to: &str) -> u64 {
        match (user, to.parse::<usize>()) {
            (true, Ok(n)) if n < self.n_clients => 1,
            (false, Ok(room)) => self.per_room.get(room).copied().unwrap_or(0),
            _ => 0,
        }
    }

    /// The steady load, until `publishing` is cleared: 990 user events/s round-robin over the
    /// clients' users and 10 shared events/s round-robin over the rooms.
    pub async fn publisher(self: Arc<Self>) -> Result<(), String> {
        let t0 = Instant::now();
        let (mut k, mut user, mut room) = (0u64, 0usize, 0u64);
        let mut tick = tokio::time::interval(Duration::from_millis(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        while self.publishing.load(Ordering::Relaxed) {
            tick.tick().await;
            let due = (t0.elapsed().as_secs_f64() * 1000.0) as u64;
            let mut batch = Vec::new();
            while k < due {
                if k % 100 == 99 {
                    batch.push((false, (room % ROOMS).to_string()));
                    room += 1;
                } else {
                    batch.push((true, (user % self.n_clients).to_string()));
                    user += 1;
                }
                k += 1;
            }
            let n: u64 = batch.iter().map(|(u, to)| self.recipients(*u, to)).sum();
            self.publish(&batch).await?;
            self.expected.fetch_add(n, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Measures one window of `secs` while the load runs.
    pub async fn window(&self, secs: f64) -> Result<Window, String> {
        let wpid = self.worker.pid;
        let cpu0 = proc_cpu_s(wpid).unwrap_or(0.0);
        let self0 = proc_cpu_s(std::process::id()).unwrap_or(0.0);
        let busy0 = machine_busy_s();
        let r0 = redis_snap(&self.ctl).await?;
        let lag0 = self.push_lag().await?;
        self.stats.lat.lock().unwrap().clear();
        self.stats.win_from.store(now_ns(), Ordering::Relaxed);
        self.stats.win_to.store(u64::MAX, Ordering::Relaxed);
        let t0 = Instant::now();
        tokio::time::sleep(Duration::from_secs_f64(secs)).await;
        self.stats.win_to.store(now_ns(), Ordering::Relaxed);
        let real = t0.elapsed().as_secs_f64();
        let cpu1 = proc_cpu_s(wpid).unwrap_or(0.0);
        let self1 = proc_cpu_s(std::process::id()).unwrap_or(0.0);
        let busy1 = machine_busy_s();
        let r1 = redis_snap(&self.ctl).await?;
        let lag1 = self.push_lag().await?;
        // Messages published at the end of the window are still on their way.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let mut lat = std::mem::take(&mut *self.stats.lat.lock().unwrap());
        lat.sort_unstable();
        let ours = (cpu1 - cpu0) + (self1 - self0) + (r1.cpu_s - r0.cpu_s);
        Ok(Window {
            secs: real,
            lat,
            worker_cpu_s: cpu1 - cpu0,
            redis_cpu_s: r1.cpu_s - r0.cpu_s,
            self_cpu_s: self1 - self0,
            foreign_cpu_s: ((busy1 - busy0) - ours).max(0.0),
            push_lag: (lag0, lag1),
        })
    }

    /// The `lag` of the push group on the `user.updated` stream (`XINFO GROUPS`).
    pub async fn push_lag(&self) -> Result<u64, String> {
        let v: Value = self
            .ctl
            .custom(
                cmd("XINFO"),
                vec!["GROUPS", "events:pushbench:user.updated"],
            )
            .await
            .map_err(|e| format!("XINFO GROUPS: {e}"))?;
        let groups: Vec<Value> = v.into_array();
        for g in groups {
            let fields: Vec<String> = g
                .into_array()
                .into_iter()
                .map(|f| f.as_str_lossy().map(|s| s.into_owned()).unwrap_or_default())
                .collect();
            let get = |k: &str| {
                fields
                    .iter()
                    .position(|f| f == k)
                    .and_then(|i| fields.get(i + 1))
            };
            if get("name").map(String::as_str) == Some("push") {
                return Ok(get("lag").and_then(|l| l.parse().ok()).unwrap_or(0));
            }
        }
        Ok(0)
    }

    /// Waits (bounded) until the event `e-<seq>` is in the channel's history.
    pub async fn wait_appended(&self, channel: &str, seq: u64) -> Result<(), String> {
        let key = format!("events:{ENV}:push:{{{channel}}}:ids");
        let deadline = Instant::now() + Duration::from_secs(180);
        loop {
            let v: Value = self
                .ctl
                .custom(cmd("ZSCORE"), vec![key.clone(), format!("e-{seq}")])
                .await
                .map_err(|e| format!("ZSCORE {key}: {e}"))?;
            if !v.is_null() {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "event e-{seq} not in {key} after 180s (the push group is behind)"
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Starts the worker with the push rules; returns it and its API port.
pub fn start_worker(bin: &str, port: u16, logdir: &std::path::Path) -> Result<(Proc, u16), String> {
    let api = free_port()?;
    let config = format!(
        "env = \"{ENV}\"\nredis_url = \"redis://127.0.0.1:{port}\"\ngroup = \"bench\"\n\n\
         [api]\nlisten = \"127.0.0.1:{api}\"\n\n\
         [[routes]]\ntypes = [\"user.*\", \"shared.*\"]\nhandler = \"blackhole\"\n\n\
         [push]\n\n\
         [[push.channels]]\ntypes = [\"user.*\"]\nchannel = \"user:{{data.userId}}\"\n\n\
         [[push.channels]]\ntypes = [\"shared.*\"]\nchannel = \"shared:{{data.room}}\"\n"
    );
    let path = logdir.join("push-worker.toml");
    std::fs::write(&path, config).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut c = std::process::Command::new(bin);
    c.env_clear();
    if let Ok(p) = std::env::var("PATH") {
        c.env("PATH", p);
    }
    c.env("RUST_LOG", "warn");
    c.arg("--config").arg(&path).arg("run");
    let p = Proc::spawn(
        "event-worker (push)",
        &mut c,
        &logdir.join("push-worker.log"),
        false,
    )?;
    Ok((p, api))
}

/// Waits until the worker answers health with push connected, then until an event of each
/// type is projected (the push group reads both streams).
pub async fn wait_ready(run: &Run) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let ok = http(run.api, "GET", "/api/events/health")
            .map(|(_, b)| b.contains("\"hub_connected\":true"))
            .unwrap_or(false);
        if ok {
            break;
        }
        if Instant::now() > deadline {
            return Err("the worker's health did not show push hub_connected within 60s".into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    loop {
        let u = run.publish(&[(true, "warm".into())]).await?;
        let s = run.publish(&[(false, "warm".into())]).await?;
        tokio::time::sleep(Duration::from_millis(300)).await;
        if run.wait_appended("user:warm", u).await.is_ok()
            && run.wait_appended("shared:warm", s).await.is_ok()
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err("the warm-up events were not projected within 60s".into());
        }
    }
}

/// Spawns a client task: runs the client, reconnecting after the server closes it (1 s later,
/// like `EventSource`), until `gen` changes; returns the client (its last id).
pub fn spawn_client(
    mut c: PushClient,
    port: u16,
    stats: Arc<Stats>,
    gen_rx: watch::Receiver<u64>,
) -> tokio::task::JoinHandle<PushClient> {
    tokio::spawn(async move {
        let gen0 = *gen_rx.borrow();
        loop {
            match pushclient::run(&mut c, port, &stats, gen_rx.clone()).await {
                Ended::Dropped => return c,
                Ended::Closed => {
                    if *gen_rx.borrow() != gen0 {
                        return c;
                    }
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    })
}

/// Waits (bounded) until `n` connections are open.
pub async fn wait_connected(stats: &Stats, n: u64, what: &str) -> Result<f64, String> {
    let t0 = Instant::now();
    while stats.connected.load(Ordering::Relaxed) < n {
        if t0.elapsed() > Duration::from_secs(180) {
            let errs = stats.errors.lock().unwrap().join("; ");
            return Err(format!(
                "{what}: {} of {n} connections open after 180s; errors: {errs}",
                stats.connected.load(Ordering::Relaxed)
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(t0.elapsed().as_secs_f64())
}

pub fn main(opts: &Opts) -> Result<(), String> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(crate::pushrun::run(opts))
}

/// A run's shared parts, with no client connected and the load stopped.
pub fn new_run(port: u16, ctl: Client, api: u16, worker: Proc, n_clients: usize) -> Run {
    let mut per_room = vec![0u64; ROOMS as usize];
    for i in 0..n_clients {
        per_room[i % ROOMS as usize] += 1;
    }
    Run {
        port,
        ctl,
        api,
        worker,
        stats: Arc::new(Stats::default()),
        n_clients,
        per_room,
        seq: Arc::new(AtomicU64::new(1)),
        expected: Arc::new(AtomicU64::new(0)),
        publishing: Arc::new(AtomicBool::new(false)),
    }
}
