//! The orchestrator: runs every scenario against the redis-server that `run.sh` started,
//! interleaved and repeated, and writes the markdown results.
//!
//! A drain sample: FLUSHALL, preload the backlog (Lua, inside Redis), create the group at 0,
//! snapshot Redis (`INFO cpu stats commandstats`) and the machine's CPU, start the measured
//! process(es), then poll `XINFO GROUPS` every 2 ms until the group's last-delivered-id is
//! the stream's last entry and nothing is pending: that poll is the end of the drain (the last
//! XACK happened at most one poll interval before). At that moment the process's CPU
//! (`/proc/<pid>/stat` utime+stime) and peak RSS (`VmHWM`) and Redis' figures are read.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use fred::prelude::*;
use fred::types::{ClusterHash, CustomCommand};

use crate::report;

mod refs;
use crate::util::{
    Opts, Proc, free_port, http, kv, machine_busy_s, now_ns, proc_cpu_s, proc_hwm_kb,
};

pub const ENV: &str = "bench";
pub const TYPE: &str = "bench.drain";
pub const GROUP: &str = "bench";
const POLL: Duration = Duration::from_millis(2);

/// Backlogs up to this size are sampled [`SMALL_BACKLOG_SAMPLES`] times per repetition in the
/// backlog section (each drain takes well under a second).
pub const SMALL_BACKLOG: u64 = 100_000;
/// Samples per repetition of a small backlog.
pub const SMALL_BACKLOG_SAMPLES: usize = 3;

/// The `batch` key of the batched http route: up to 64 events (the default `concurrency`,
/// so one read's events) per request, no waiting for more.
pub const BATCH_ROUTE: &str = "batch = { max_events = 64 }";

/// The `batch` key of the diagnostic batched row: 32 events per request, so at the default
/// `concurrency` (64) two requests are in flight and the worker's work overlaps the sink's.
pub const BATCH_ROUTE_32: &str = "batch = { max_events = 32 }";

/// What is measured.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// The raw loop: connections, and whether one XACK names the whole batch.
    Raw { conns: u32, batch_ack: bool },
    /// event-worker with a blackhole route.
    EwBlackhole,
    /// event-worker with an http route to the local sink.
    EwHttp,
    /// event-worker with an http route to the local sink in batched delivery
    /// ([`BATCH_ROUTE`]).
    EwHttpBatch,
    /// Diagnostic: the batched http route with [`BATCH_ROUTE_32`].
    EwHttpBatch32,
    /// Diagnostic: blackhole with `read_block = "10ms"` (the smallest allowed), not the default.
    EwBlackholeBlock10,
    /// Diagnostic: blackhole with one `processed` history record per event
    /// (`[history] processed = "per_event"`), the rest default.
    EwBlackholePerEvent,
    /// Diagnostic: blackhole with the defaults before reads prefetched and successes were
    /// aggregated (`prefetch = 64`, `[history] processed = "per_event"`).
    EwBlackholePrev,
    /// Diagnostic: blackhole with `prefetch = 512` (twice the default at `concurrency = 64`).
    EwBlackholePrefetch512,
    /// Diagnostic: blackhole with `worker_threads = 0` (one runtime thread per core, the
    /// default before one thread).
    EwBlackholePerCore,
    /// Diagnostic: http to the local sink with `worker_threads = 0`.
    EwHttpPerCore,
    /// The `--base-worker` binary (an earlier commit, `--base-rev`): blackhole, or http to the
    /// local sink. Measured in the same run, interleaved, to compare two commits.
    EwBase { http: bool },
    /// The `--base-worker` binary's batched http route ([`BATCH_ROUTE`]).
    EwBaseBatch,
    /// The drain reference: 1 connection, COUNT 512, the batch's XACK pipelined with the next
    /// read (bench/src/raw/next.rs).
    RawNext,
    /// The http reference: the one-thread raw HTTP relay, 64 connections (bench/src/relay.rs).
    Relay,
    /// The peer: BullMQ, Worker concurrency 50 (bench/bullmq/drain.js; section `bullmq`).
    BullMq,
}

impl Kind {
    pub fn label(self) -> String {
        match self {
            Kind::Raw {
                conns: 1,
                batch_ack: false,
            } => "raw loop, 1 conn (pipelined XACK)".into(),
            Kind::Raw {
                conns: 1,
                batch_ack: true,
            } => "raw loop, 1 conn (one XACK per batch)".into(),
            Kind::Raw { conns, .. } => format!("raw loop, {conns} conns (pipelined XACK)"),
            Kind::EwBlackhole => "event-worker, blackhole".into(),
            Kind::EwHttp => "event-worker, http to local sink".into(),
            Kind::EwHttpBatch => "event-worker, http batch (max_events 64) to local sink".into(),
            Kind::EwHttpBatch32 => {
                "diagnostic: event-worker, http batch (max_events 32: two requests in flight) to local sink".into()
            }
            Kind::EwBlackholeBlock10 => {
                "diagnostic: event-worker, blackhole, read_block=10ms".into()
            }
            Kind::EwBlackholePerEvent => {
                "diagnostic: event-worker, blackhole, history.processed=per_event".into()
            }
            Kind::EwBlackholePrefetch512 => {
                "diagnostic: event-worker, blackhole, prefetch=512".into()
            }
            Kind::EwBlackholePrev => {
                "diagnostic: event-worker, blackhole, prefetch=64, history.processed=per_event (the previous defaults)".into()
            }
            Kind::EwBlackholePerCore => {
                "diagnostic: event-worker, blackhole, worker_threads=0 (one per core, the previous default)".into()
            }
            Kind::EwHttpPerCore => {
                "diagnostic: event-worker, http to local sink, worker_threads=0 (one per core, the previous default)".into()
            }
            Kind::EwBase { http: false } => "event-worker @base, blackhole".into(),
            Kind::EwBase { http: true } => "event-worker @base, http to local sink".into(),
            Kind::EwBaseBatch => {
                "event-worker @base, http batch (max_events 64) to local sink".into()
            }
            Kind::RawNext => "raw loop, 1 conn (batch XACK pipelined with the next read)".into(),
            Kind::Relay => "raw HTTP relay, 1 thread, 64 conns, to local sink".into(),
            Kind::BullMq => "BullMQ 6, Worker concurrency 50".into(),
        }
    }
    /// Whether the scenario delivers to the local HTTP sink.
    pub fn uses_sink(self) -> bool {
        matches!(
            self,
            Kind::EwHttp
                | Kind::EwHttpBatch
                | Kind::EwHttpBatch32
                | Kind::EwHttpPerCore
                | Kind::EwBase { http: true }
                | Kind::EwBaseBatch
                | Kind::Relay
        )
    }
    pub fn is_ew(self) -> bool {
        !matches!(
            self,
            Kind::Raw { .. } | Kind::RawNext | Kind::Relay | Kind::BullMq
        )
    }
}

/// One measurement.
#[derive(Clone, Debug, Default)]
pub struct Sample {
    pub section: String,
    pub label: String,
    pub rep: usize,
    pub procs: usize,
    pub backlog: u64,
    pub events: u64,
    pub wall_s: f64,
    pub first_s: f64,
    pub cpu_s: f64,
    pub rss_kb: u64,
    pub sink_cpu_s: f64,
    pub redis_cpu_s: f64,
    pub cmds: u64,
    /// Per command: (calls, microseconds of Redis time) during the sample.
    pub cmdstats: BTreeMap<String, (u64, u64)>,
    /// Duration of the window over which CPU was compared (foreign CPU).
    pub window_s: f64,
    pub foreign_cpu_s: f64,
    pub rate_target: u64,
    pub achieved_rate: f64,
    pub lat: BTreeMap<String, u64>,
    pub notes: Vec<String>,
}

impl Sample {
    pub fn rate(&self) -> f64 {
        self.events as f64 / self.wall_s.max(1e-9)
    }
    pub fn steady_rate(&self) -> f64 {
        self.events as f64 / (self.wall_s - self.first_s).max(1e-9)
    }
    pub fn per_event(&self, v: f64) -> f64 {
        v / (self.events.max(1) as f64)
    }
}

struct RedisSnap {
    cpu_s: f64,
    total_cmds: u64,
    cmdstats: BTreeMap<String, (u64, u64)>,
}

struct GroupState {
    pending: u64,
    last_delivered: String,
}

pub struct Bench {
    port: u16,
    redis_pid: u32,
    worker_bin: PathBuf,
    /// `--base-worker`: the binary of the commit compared against, if any.
    base_bin: Option<PathBuf>,
    self_bin: PathBuf,
    logdir: PathBuf,
    ctl: Client,
    stream: String,
    seq: usize,
    /// XINFO / INFO calls this process made since the last snapshot (subtracted from Redis' counts).
    own_cmds: BTreeMap<String, u64>,
}

fn cmd(name: &'static str) -> CustomCommand {
    CustomCommand::new_static(name, ClusterHash::Random, false)
}

fn text(v: &Value) -> String {
    v.as_str_lossy().map(|s| s.into_owned()).unwrap_or_default()
}

/// The drain events' `data`: 256 bytes of JSON; `%08d`/`%04d`/`%06d` filled in by the Lua preload.
pub fn drain_data_template() -> String {
    let head =
        r#"{"bookingId":"b-%08d","userId":"u-%04d","amount":"%06d","currency":"EUR","pad":""#;
    // Length once formatted: each %0Nd becomes N chars.
    let formatted = head
        .replace("%08d", "00000000")
        .replace("%04d", "0000")
        .replace("%06d", "000000");
    let pad = 256 - formatted.len() - 2;
    format!("{head}{}\"}}", "x".repeat(pad))
}

/// A latency event's `data`: 256 bytes of JSON carrying the publisher's send time.
pub fn latency_data(sent_ns: u64, i: u64) -> String {
    let head = format!(r#"{{"sent_ns":{sent_ns:019},"bookingId":"b-{i:08}","pad":""#);
    let pad = 256usize.saturating_sub(head.len() + 2);
    format!("{head}{}\"}}", "x".repeat(pad))
}

pub const PRELOAD: &str = r#"
local key, typ, start, n, tmpl = KEYS[1], ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4]
local last
for i = start, start + n - 1 do
  last = redis.call('XADD', key, '*',
    'id', string.format('0190a5c2-7b1e-7000-8000-%012d', i),
    'type', typ,
    'data', string.format(tmpl, i, i % 10000, i % 999999))
end
return last
"#;

impl Bench {
    async fn connect(port: u16) -> Result<Client, String> {
        let config =
            Config::from_url(&format!("redis://127.0.0.1:{port}")).map_err(|e| e.to_string())?;
        let client = Builder::from_config(config)
            .with_performance_config(|p| p.default_command_timeout = Duration::from_secs(120))
            .build()
            .map_err(|e| e.to_string())?;
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            match client.init().await {
                Ok(_) => return Ok(client),
                Err(e) if Instant::now() > deadline => {
                    return Err(format!("redis on port {port}: {e}"));
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }

    async fn call(&self, name: &'static str, args: Vec<Value>) -> Result<Value, String> {
        self.ctl
            .custom::<Value, _>(cmd(name), args)
            .await
            .map_err(|e| format!("redis {name}: {e}"))
    }

    async fn info(&mut self) -> Result<RedisSnap, String> {
        let v = self
            .call(
                "INFO",
                vec!["cpu".into(), "stats".into(), "commandstats".into()],
            )
            .await?;
        *self.own_cmds.entry("info".into()).or_default() += 1;
        let body = text(&v);
        let mut snap = RedisSnap {
            cpu_s: 0.0,
            total_cmds: 0,
            cmdstats: BTreeMap::new(),
        };
        for line in body.lines() {
            let line = line.trim();
            if let Some(v) = line
                .strip_prefix("used_cpu_sys:")
                .or(line.strip_prefix("used_cpu_user:"))
            {
                snap.cpu_s += v.parse::<f64>().unwrap_or(0.0);
            } else if let Some(v) = line.strip_prefix("total_commands_processed:") {
                snap.total_cmds = v.parse().unwrap_or(0);
            } else if let Some((name, calls_usec)) = cmdstat(line) {
                snap.cmdstats.insert(name, calls_usec);
            }
        }
        Ok(snap)
    }

    async fn group_state(&mut self) -> Result<GroupState, String> {
        let v = self
            .call("XINFO", vec!["GROUPS".into(), self.stream.as_str().into()])
            .await?;
        *self.own_cmds.entry("xinfo|groups".into()).or_default() += 1;
        for g in v.into_array() {
            let flat = g.into_array();
            let mut map = BTreeMap::new();
            for pair in flat.chunks(2) {
                if pair.len() == 2 {
                    map.insert(text(&pair[0]), pair[1].clone());
                }
            }
            if map.get("name").map(text).as_deref() == Some(GROUP) {
                return Ok(GroupState {
                    pending: map.get("pending").and_then(Value::as_u64).unwrap_or(0),
                    last_delivered: map.get("last-delivered-id").map(text).unwrap_or_default(),
                });
            }
        }
        Err(format!("group {GROUP} not found on {}", self.stream))
    }

    async fn reset(&mut self) -> Result<(), String> {
        self.call("FLUSHALL", vec!["SYNC".into()]).await?;
        Ok(())
    }

    /// Appends `n` drain events inside Redis; returns the last entry id.
    async fn preload(&mut self, n: u64) -> Result<String, String> {
        let tmpl = drain_data_template();
        let mut last = String::new();
        let mut start = 0u64;
        while start < n {
            let chunk = (n - start).min(20_000);
            let v: Value = self
                .ctl
                .eval(
                    PRELOAD,
                    vec![self.stream.as_str()],
                    vec![
                        TYPE.to_string(),
                        start.to_string(),
                        chunk.to_string(),
                        tmpl.clone(),
                    ],
                )
                .await
                .map_err(|e| format!("preload: {e}"))?;
            last = text(&v);
            start += chunk;
        }
        Ok(last)
    }

    async fn create_group(&mut self, at: &str) -> Result<(), String> {
        self.call(
            "XGROUP",
            vec![
                "CREATE".into(),
                self.stream.as_str().into(),
                GROUP.into(),
                at.into(),
                "MKSTREAM".into(),
            ],
        )
        .await?;
        Ok(())
    }

    fn log(&mut self, name: &str) -> PathBuf {
        self.seq += 1;
        self.logdir.join(format!("{:03}-{name}.log", self.seq))
    }

    fn start_sink(&mut self) -> Result<(Proc, u16), String> {
        let port = free_port()?;
        let log = self.log("sink");
        let mut c = Command::new(&self.self_bin);
        c.args(["sink", "--port", &port.to_string()]);
        let p = Proc::spawn("sink", &mut c, &log, false)?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while http(port, "GET", "/stats").is_err() {
            if Instant::now() > deadline {
                return Err(format!(
                    "the sink did not listen on {port} (log {})",
                    log.display()
                ));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok((p, port))
    }

    fn start_raw(&mut self, conns: u32, batch_ack: bool, latency: bool) -> Result<Proc, String> {
        let log = self.log("raw");
        let mut c = Command::new(&self.self_bin);
        c.args([
            "raw",
            "--port",
            &self.port.to_string(),
            "--stream",
            &self.stream,
            "--group",
            GROUP,
        ]);
        c.args([
            "--conns",
            &conns.to_string(),
            "--ack",
            if batch_ack { "batch" } else { "pipelined" },
        ]);
        if latency {
            c.arg("--latency");
        }
        Proc::spawn("raw", &mut c, &log, latency)
    }

    /// Starts one event-worker with the defaults plus a route; returns it and its API port.
    fn start_worker(
        &mut self,
        sink_port: Option<u16>,
        i: usize,
        extra: &str,
        base: bool,
        batch: Option<&str>,
    ) -> Result<(Proc, u16), String> {
        let api = free_port()?;
        let route = match sink_port {
            None => "handler = \"blackhole\"".to_string(),
            Some(p) => format!("handler = \"http\"\nurl = \"http://127.0.0.1:{p}/hook\""),
        };
        let route = match batch {
            Some(b) => format!("{route}\n{b}"),
            None => route,
        };
        // EW_BENCH_WORKER_EXTRA: top-level config lines added to every event-worker of the run
        // (an A/B of a setting across two runs, e.g. `worker_threads = 0`).
        let extra = match std::env::var("EW_BENCH_WORKER_EXTRA") {
            Ok(more) if !more.is_empty() => format!("{more}\n{extra}"),
            _ => extra.to_string(),
        };
        let config = format!(
            "# event-worker defaults, plus what a benchmark must set.\n\
             env = \"{ENV}\"\nredis_url = \"redis://127.0.0.1:{}\"\ngroup = \"{GROUP}\"\n{extra}\n\
             [api]\nlisten = \"127.0.0.1:{api}\"\n\n[[routes]]\ntypes = [\"{TYPE}\"]\n{route}\n",
            self.port
        );
        let path = self.logdir.join(format!("worker-{i}.toml"));
        std::fs::write(&path, config).map_err(|e| format!("{}: {e}", path.display()))?;
        let log = self.log(&format!("worker{i}"));
        let bin = match (&self.base_bin, base) {
            (Some(b), true) => b.clone(),
            _ => self.worker_bin.clone(),
        };
        let mut c = Command::new(&bin);
        c.env_clear();
        if let Ok(p) = std::env::var("PATH") {
            c.env("PATH", p);
        }
        c.arg("--config").arg(&path).arg("run");
        Ok((
            Proc::spawn(&format!("event-worker #{i}"), &mut c, &log, false)?,
            api,
        ))
    }

    fn start_measured(
        &mut self,
        kind: Kind,
        procs: usize,
        sink: Option<u16>,
        latency: bool,
    ) -> Result<(Vec<Proc>, Vec<u16>), String> {
        let mut ps = Vec::new();
        let mut apis = Vec::new();
        match kind {
            Kind::Raw { conns, batch_ack } => ps.push(self.start_raw(conns, batch_ack, latency)?),
            Kind::RawNext => ps.push(self.start_raw_next(latency)?),
            Kind::Relay => ps.push(self.start_relay(sink)?),
            Kind::BullMq => return Err("BullMQ runs through Bench::bullmq".into()),
            Kind::EwBlackhole
            | Kind::EwHttp
            | Kind::EwHttpBatch
            | Kind::EwHttpBatch32
            | Kind::EwBlackholeBlock10
            | Kind::EwBlackholePerEvent
            | Kind::EwBlackholePrev
            | Kind::EwBlackholePrefetch512
            | Kind::EwBlackholePerCore
            | Kind::EwHttpPerCore
            | Kind::EwBase { .. }
            | Kind::EwBaseBatch => {
                let extra = match kind {
                    Kind::EwBlackholeBlock10 => "read_block = \"10ms\"",
                    Kind::EwBlackholePerEvent => "[history]\nprocessed = \"per_event\"",
                    Kind::EwBlackholePrev => "prefetch = 64\n[history]\nprocessed = \"per_event\"",
                    Kind::EwBlackholePrefetch512 => "prefetch = 512",
                    Kind::EwBlackholePerCore | Kind::EwHttpPerCore => "worker_threads = 0",
                    _ => "",
                };
                for i in 0..procs {
                    let base = matches!(kind, Kind::EwBase { .. } | Kind::EwBaseBatch);
                    let batch = match kind {
                        Kind::EwHttpBatch | Kind::EwBaseBatch => Some(BATCH_ROUTE),
                        Kind::EwHttpBatch32 => Some(BATCH_ROUTE_32),
                        _ => None,
                    };
                    let (p, api) = self.start_worker(sink, i, extra, base, batch)?;
                    ps.push(p);
                    apis.push(api);
                }
            }
        }
        Ok((ps, apis))
    }

    /// Polls until `last_id` is delivered and nothing is pending; returns (first read, end) in s.
    async fn wait_drained(
        &mut self,
        last_id: &str,
        t0: Instant,
        timeout: Duration,
        procs: &mut [Proc],
    ) -> Result<(f64, f64), String> {
        let mut first: Option<f64> = None;
        let mut polls = 0u64;
        loop {
            let g = self.group_state().await?;
            let now = t0.elapsed();
            if first.is_none() && g.last_delivered != "0-0" && !g.last_delivered.is_empty() {
                first = Some(now.as_secs_f64());
            }
            if g.last_delivered == last_id && g.pending == 0 {
                return Ok((first.unwrap_or(0.0), now.as_secs_f64()));
            }
            if now > timeout {
                return Err(format!(
                    "not drained after {timeout:?} (last delivered {}, pending {})",
                    g.last_delivered, g.pending
                ));
            }
            polls += 1;
            if polls.is_multiple_of(50) {
                for p in procs.iter_mut() {
                    if !p.alive() {
                        return Err(format!("{} exited during the run", p.name));
                    }
                }
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Waits until `n` clients are parked in a blocking read (XREADGROUP BLOCK on the empty
    /// stream: Redis 7.0 registers a consumer only once it has been given an entry).
    async fn wait_blocked(&mut self, n: usize, procs: &mut [Proc]) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let v = self.call("INFO", vec!["clients".into()]).await?;
            let blocked: u64 = text(&v)
                .lines()
                .find_map(|l| {
                    l.trim()
                        .strip_prefix("blocked_clients:")
                        .and_then(|x| x.parse().ok())
                })
                .unwrap_or(0);
            if blocked >= n as u64 {
                return Ok(());
            }
            for p in procs.iter_mut() {
                if !p.alive() {
                    return Err(format!("{} exited before reading", p.name));
                }
            }
            if Instant::now() > deadline {
                return Err(format!("{n} consumer(s) did not start reading within 30 s"));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn own_delta(&mut self) -> BTreeMap<String, u64> {
        std::mem::take(&mut self.own_cmds)
    }

    fn finish_redis(
        &mut self,
        s: &mut Sample,
        before: &RedisSnap,
        after: &RedisSnap,
        extra_own: &[(&str, u64)],
    ) {
        let mut own = self.own_delta();
        for (k, v) in extra_own {
            *own.entry(k.to_string()).or_default() += v;
        }
        // The "after" INFO is not in its own output; the "before" one is.
        *own.entry("info".into()).or_default() -= 1;
        s.redis_cpu_s = after.cpu_s - before.cpu_s;
        let own_total: u64 = own.values().sum();
        s.cmds = (after.total_cmds - before.total_cmds).saturating_sub(own_total);
        for (name, &(calls, usec)) in &after.cmdstats {
            let (c0, u0) = before.cmdstats.get(name).copied().unwrap_or((0, 0));
            let all = calls.saturating_sub(c0);
            let d = all.saturating_sub(own.get(name).copied().unwrap_or(0));
            if d > 0 {
                // Our own calls of the same command take their share of its time away.
                let us = (usec.saturating_sub(u0) as f64 * d as f64 / all as f64) as u64;
                s.cmdstats.insert(name.clone(), (d, us));
            }
        }
    }

    async fn check_ew(&mut self, s: &mut Sample, apis: &[u16], expect_success: u64) {
        let mut success = 0.0;
        let mut dropped = 0.0;
        let mut redis_errors = 0.0;
        for &api in apis {
            match http(api, "GET", "/metrics") {
                Ok((200, body)) => {
                    for line in body.lines().filter(|l| !l.starts_with('#')) {
                        let Some((name, value)) = line.rsplit_once(' ') else {
                            continue;
                        };
                        let v: f64 = value.parse().unwrap_or(0.0);
                        if name.starts_with("event_worker_events_total{")
                            && name.contains("outcome=\"success\"")
                        {
                            success += v;
                        } else if name.starts_with("event_worker_history_dropped_total") {
                            dropped += v;
                        } else if name.starts_with("event_worker_redis_errors_total") {
                            redis_errors += v;
                        }
                    }
                }
                Ok((code, _)) => s.notes.push(format!("/metrics answered {code}")),
                Err(e) => s.notes.push(format!("/metrics: {e}")),
            }
        }
        if success as u64 != expect_success {
            s.notes.push(format!(
                "success count {success} != {expect_success} events"
            ));
        }
        if dropped > 0.0 {
            s.notes.push(format!("{dropped} history records dropped"));
        }
        if redis_errors > 0.0 {
            s.notes.push(format!("{redis_errors} redis errors"));
        }
        let dlq = self
            .call("XLEN", vec![format!("events:{ENV}:dlq").into()])
            .await
            .ok()
            .and_then(|v| v.as_u64())
            .unwrap_or(0);
        if dlq > 0 {
            s.notes.push(format!("{dlq} DLQ entries"));
        }
    }

    /// One drain of a `backlog` preloaded before the measured process(es) start.
    pub async fn drain(
        &mut self,
        section: &str,
        kind: Kind,
        procs: usize,
        backlog: u64,
        rep: usize,
        profile: Option<&Path>,
    ) -> Result<Sample, String> {
        if kind == Kind::BullMq {
            return self.bullmq(backlog, rep).await;
        }
        self.reset().await?;
        let last_id = self.preload(backlog).await?;
        self.create_group("0").await?;
        let mut sink = if kind.uses_sink() {
            Some(self.start_sink()?)
        } else {
            None
        };
        let sink_port = sink.as_ref().map(|s| s.1);
        let sink_cpu0 = sink
            .as_ref()
            .and_then(|s| proc_cpu_s(s.0.pid))
            .unwrap_or(0.0);
        self.own_delta();
        let before = self.info().await?;
        let busy0 = machine_busy_s();
        let self0 = proc_cpu_s(std::process::id()).unwrap_or(0.0);
        let redis0 = proc_cpu_s(self.redis_pid).unwrap_or(0.0);

        let t0 = Instant::now();
        let (mut ps, apis) = self.start_measured(kind, procs, sink_port, false)?;
        let mut perf = match profile {
            Some(out) => Some(start_perf(ps[0].pid, out, &self.logdir)?),
            None => None,
        };
        let timeout = Duration::from_secs(120 + backlog / 500);
        let waited = self.wait_drained(&last_id, t0, timeout, &mut ps).await;
        let cpu: f64 = ps.iter().filter_map(|p| proc_cpu_s(p.pid)).sum();
        let rss = ps
            .iter()
            .filter_map(|p| proc_hwm_kb(p.pid))
            .max()
            .unwrap_or(0);
        let sink_cpu = sink
            .as_ref()
            .and_then(|s| proc_cpu_s(s.0.pid))
            .unwrap_or(0.0)
            - sink_cpu0;
        let after = self.info().await?;
        let busy1 = machine_busy_s();
        let self1 = proc_cpu_s(std::process::id()).unwrap_or(0.0);
        let redis1 = proc_cpu_s(self.redis_pid).unwrap_or(0.0);
        if let Some(p) = perf.as_mut() {
            p.stop_with(libc::SIGINT, Duration::from_secs(120));
        }
        let (first_s, wall_s) = waited?;
        let mut s = Sample {
            section: section.into(),
            label: kind.label(),
            rep,
            procs,
            backlog,
            events: backlog,
            wall_s,
            first_s,
            cpu_s: cpu,
            rss_kb: rss,
            sink_cpu_s: sink_cpu,
            window_s: wall_s,
            ..Default::default()
        };
        self.finish_redis(&mut s, &before, &after, &[]);
        let ours = cpu + sink_cpu + (self1 - self0) + (redis1 - redis0);
        s.foreign_cpu_s = ((busy1 - busy0) - ours).max(0.0);
        if kind.is_ew() {
            self.check_ew(&mut s, &apis, backlog).await;
        }
        for p in ps.iter_mut() {
            p.stop();
        }
        if let Some((p, _)) = sink.as_mut() {
            p.stop();
        }
        Ok(s)
    }

    /// Publishes at `rate` events/s for `secs` to an idle consumer; latency publish -> handler.
    pub async fn latency(
        &mut self,
        kind: Kind,
        rate: u64,
        secs: f64,
        rep: usize,
    ) -> Result<Sample, String> {
        self.reset().await?;
        self.create_group("$").await?;
        let mut sink = if kind.uses_sink() {
            Some(self.start_sink()?)
        } else {
            None
        };
        let sink_port = sink.as_ref().map(|s| s.1);
        let (mut ps, apis) = self.start_measured(kind, 1, sink_port, true)?;
        self.wait_blocked(1, &mut ps).await?;
        tokio::time::sleep(Duration::from_millis(500)).await;
        if let Some(port) = sink_port {
            http(port, "POST", "/reset")?;
        }
        self.own_delta();
        let cpu0: f64 = ps.iter().filter_map(|p| proc_cpu_s(p.pid)).sum();
        let sink_cpu0 = sink
            .as_ref()
            .and_then(|s| proc_cpu_s(s.0.pid))
            .unwrap_or(0.0);
        let before = self.info().await?;
        let busy0 = machine_busy_s();
        let self0 = proc_cpu_s(std::process::id()).unwrap_or(0.0);
        let redis0 = proc_cpu_s(self.redis_pid).unwrap_or(0.0);

        let publisher = Bench::connect(self.port).await?;
        let total = (rate as f64 * secs).round() as u64;
        let t0 = Instant::now();
        let mut sent = 0u64;
        let mut last_id = String::new();
        let mut tick = tokio::time::interval(Duration::from_millis(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        while sent < total {
            tick.tick().await;
            let due = ((t0.elapsed().as_secs_f64() * rate as f64) as u64).min(total);
            let mut batch = Vec::new();
            while sent < due {
                let id = format!("0190a5c2-7b1e-7000-9000-{sent:012}");
                let data = latency_data(now_ns(), sent);
                let c = publisher.clone();
                let key = self.stream.clone();
                batch.push(async move {
                    c.xadd::<Value, _, _, _, _>(
                        key,
                        false,
                        None,
                        "*",
                        vec![("id", id), ("type", TYPE.to_string()), ("data", data)],
                    )
                    .await
                });
                sent += 1;
            }
            for r in futures::future::join_all(batch).await {
                last_id = text(&r.map_err(|e| format!("publish: {e}"))?);
            }
        }
        let publish_s = t0.elapsed().as_secs_f64();
        let t_pub_end = Instant::now();
        let _ = publisher.quit().await;
        let waited = self
            .wait_drained(
                &last_id,
                Instant::now(),
                Duration::from_secs(120 + total / 1000),
                &mut ps,
            )
            .await;
        let window_s = publish_s + t_pub_end.elapsed().as_secs_f64();
        let cpu1: f64 = ps.iter().filter_map(|p| proc_cpu_s(p.pid)).sum();
        let sink_cpu = sink
            .as_ref()
            .and_then(|s| proc_cpu_s(s.0.pid))
            .unwrap_or(0.0)
            - sink_cpu0;
        let after = self.info().await?;
        let busy1 = machine_busy_s();
        let self1 = proc_cpu_s(std::process::id()).unwrap_or(0.0);
        let redis1 = proc_cpu_s(self.redis_pid).unwrap_or(0.0);
        waited?;
        let mut s = Sample {
            section: "latency".into(),
            label: kind.label(),
            rep,
            procs: 1,
            events: total,
            wall_s: publish_s,
            cpu_s: cpu1 - cpu0,
            rss_kb: ps
                .iter()
                .filter_map(|p| proc_hwm_kb(p.pid))
                .max()
                .unwrap_or(0),
            rate_target: rate,
            achieved_rate: total as f64 / publish_s,
            sink_cpu_s: sink_cpu,
            window_s,
            ..Default::default()
        };
        let ours = (cpu1 - cpu0) + sink_cpu + (self1 - self0) + (redis1 - redis0);
        s.foreign_cpu_s = ((busy1 - busy0) - ours).max(0.0);
        self.finish_redis(&mut s, &before, &after, &[("xadd", total)]);
        s.lat = match sink_port {
            Some(port) => kv(&http(port, "GET", "/stats")?.1),
            None => {
                let out = ps[0].stop();
                kv(&out)
            }
        };
        if kind.is_ew() {
            self.check_ew(&mut s, &apis, total).await;
        }
        if s.lat.get("n").copied().unwrap_or(0) != total {
            s.notes.push(format!(
                "{} latencies for {total} events",
                s.lat.get("n").copied().unwrap_or(0)
            ));
        }
        for p in ps.iter_mut() {
            p.stop();
        }
        if let Some((p, _)) = sink.as_mut() {
            p.stop();
        }
        Ok(s)
    }
}

fn tables(
    samples: &[Sample],
    failures: &[String],
    backlog: u64,
    reps: usize,
    lat_secs: f64,
) -> String {
    let mut md = report::markdown(samples, backlog, reps, lat_secs);
    if !failures.is_empty() {
        md.push_str("\n### Samples that failed (left out of the tables)\n\n");
        for f in failures {
            md.push_str(&format!("- {f}\n"));
        }
    }
    md
}

/// One sample to take.
#[derive(Clone, Copy)]
enum Job {
    /// section, kind, processes, backlog
    Drain(&'static str, Kind, usize, u64),
    /// kind, rate ([`HALF_RELAY`]: half the raw HTTP relay's drain rate in this run)
    Latency(Kind, u64),
}

/// The latency rate that stands for "half the raw HTTP relay's drain rate, measured in the
/// drain section of the same run" (resolved when the job runs: see [`half_relay_rate`]).
const HALF_RELAY: u64 = 0;

/// Half the median drain rate of the raw HTTP relay among `samples`, rounded down to 500
/// events/s (so every repetition runs the rate the first one fixed), or `None` before the
/// relay was measured.
fn half_relay_rate(samples: &[Sample]) -> Option<u64> {
    let mut rates: Vec<f64> = samples
        .iter()
        .filter(|s| s.section == "drain" && s.label == Kind::Relay.label())
        .map(Sample::rate)
        .collect();
    if rates.is_empty() {
        return None;
    }
    rates.sort_by(f64::total_cmp);
    let median = rates[rates.len() / 2];
    Some(((median / 2.0 / 500.0).floor() as u64 * 500).max(500))
}

impl Job {
    fn describe(&self) -> String {
        match self {
            Job::Drain(section, kind, procs, n) => {
                format!("{section} {} x{procs} backlog {n}", kind.label())
            }
            Job::Latency(kind, HALF_RELAY) => {
                format!("latency {} at half the relay's rate", kind.label())
            }
            Job::Latency(kind, rate) => format!("latency {} {rate}/s", kind.label()),
        }
    }
}

/// Waits (up to `max_s`, polling every 10 s) until no build or test of anyone else runs.
async fn wait_quiet(max_s: u64) {
    let t0 = Instant::now();
    let mut said = false;
    loop {
        let busy = crate::util::others_busy();
        if busy.is_empty() || t0.elapsed().as_secs() >= max_s {
            if !busy.is_empty() {
                eprintln!("  still busy after {max_s}s; measuring anyway");
            }
            return;
        }
        if !said {
            eprintln!(
                "  waiting for others' builds/tests to end: {}",
                busy.join(" | ")
            );
            said = true;
        }
        tokio::time::sleep(Duration::from_secs(10)).await;
    }
}

fn start_perf(pid: u32, out: &Path, logdir: &Path) -> Result<Proc, String> {
    let mut c = Command::new("perf");
    // Flat (no call graph): DWARF unwinding costs more CPU than the worker itself on 2 cores.
    // PERF_CALL_GRAPH=fp adds `-g` (useful with a build made with -C force-frame-pointers=yes);
    // PERF_CALL_GRAPH=dwarf unwinds with DWARF at a tenth of the rate (finds the callers of
    // libc's malloc and memmove, which have no frame pointers).
    let graph = std::env::var("PERF_CALL_GRAPH").unwrap_or_default();
    let freq = if graph == "dwarf" { "199" } else { "1999" };
    c.args(["record", "-F", freq, "-o"])
        .arg(out)
        .args(["-p", &pid.to_string()]);
    match graph.as_str() {
        "fp" => {
            c.arg("-g");
        }
        "dwarf" => {
            c.args(["--call-graph", "dwarf,16384"]);
        }
        _ => {}
    }
    Proc::spawn("perf", &mut c, &logdir.join("perf.log"), false)
}

pub fn main(opts: &Opts) -> Result<(), String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(run(opts))
}

async fn run(opts: &Opts) -> Result<(), String> {
    let port = opts.num("port", 0)? as u16;
    let quick = opts.flag("quick");
    let reps = opts.num("reps", if quick { 1 } else { 3 })?.max(1) as usize;
    let backlog = opts.num("backlog", if quick { 50_000 } else { 200_000 })?;
    let lat_secs: f64 = opts
        .str_or("latency-secs", if quick { "3" } else { "20" })
        .parse()
        .map_err(|_| "--latency-secs: not a number".to_string())?;
    let sizes: Vec<u64> = opts
        .str_or(
            "sizes",
            if quick {
                "10000,50000"
            } else {
                "10000,100000,1000000"
            },
        )
        .split(',')
        .filter_map(|s| s.trim().replace('_', "").parse().ok())
        .collect();
    let sections: Vec<String> = opts
        .str_or("sections", "drain,backlog,scale,latency")
        .split(',')
        .map(str::to_string)
        .collect();
    // Before each sample, wait up to `sample-wait` s for others' builds/tests to end, at most
    // `wait-budget` s over the whole run.
    let sample_wait = opts.num("sample-wait", if quick { 0 } else { 600 })?;
    let wait_budget = opts.num("wait-budget", 2400)?;
    let mut waited_total = Duration::ZERO;
    let out = PathBuf::from(opts.str("out")?);
    let logdir = PathBuf::from(opts.str("logdir")?);
    std::fs::create_dir_all(&logdir).map_err(|e| e.to_string())?;
    let ctl = Bench::connect(port).await?;
    let mut b = Bench {
        port,
        redis_pid: 0,
        worker_bin: PathBuf::from(opts.str("worker")?),
        base_bin: opts.get("base-worker").map(PathBuf::from),
        self_bin: PathBuf::from(opts.str("self")?),
        logdir: logdir.clone(),
        ctl,
        stream: format!("events:{ENV}:{TYPE}"),
        seq: 0,
        own_cmds: BTreeMap::new(),
    };
    let v = b.call("INFO", vec!["server".into()]).await?;
    b.redis_pid = text(&v)
        .lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix("process_id:")
                .map(|p| p.parse().unwrap_or(0))
        })
        .unwrap_or(0);

    let mut samples: Vec<Sample> = Vec::new();
    // Fixed by the first latency run at half the relay's rate (see [`half_relay_rate`]).
    let mut half_relay: Option<u64> = None;
    let mut failures: Vec<String> = Vec::new();
    let t_start = Instant::now();
    let keep = |r: Result<Sample, String>,
                what: &str,
                samples: &mut Vec<Sample>,
                failures: &mut Vec<String>| match r {
        Ok(s) => {
            say(&s);
            samples.push(s);
        }
        Err(e) => {
            eprintln!("  FAILED {what}: {e}");
            failures.push(format!("{what}: {e}"));
        }
    };
    fn say(s: &Sample) {
        eprintln!(
            "  {:<9} {:<42} n={:<3} backlog={:<8} {:>9.0} ev/s  cpu {:.2}s  rss {:.1} MB  {:.2} cmds/ev  redis {:.2} us/ev  foreign {:.2}s {}{}",
            s.section,
            s.label,
            s.procs,
            s.backlog,
            s.rate(),
            s.cpu_s,
            s.rss_kb as f64 / 1024.0,
            s.per_event(s.cmds as f64),
            s.per_event(s.redis_cpu_s) * 1e6,
            s.foreign_cpu_s,
            if s.lat.is_empty() {
                String::new()
            } else {
                format!(" lat {:?}", s.lat)
            },
            if s.notes.is_empty() {
                String::new()
            } else {
                format!(" NOTE {}", s.notes.join("; "))
            },
        )
    }

    if let Some(p) = opts.get("profile") {
        // EW_BENCH_PROFILE=http profiles the http route (to the local sink) instead, =batch the
        // batched http route.
        let kind = match std::env::var("EW_BENCH_PROFILE").as_deref() {
            Ok("http") => Kind::EwHttp,
            Ok("batch") => Kind::EwHttpBatch,
            _ => Kind::EwBlackhole,
        };
        eprintln!(
            "profile: one {} drain of {backlog} under perf",
            kind.label()
        );
        let s = b
            .drain("profile", kind, 1, backlog, 0, Some(Path::new(p)))
            .await?;
        say(&s);
        return Ok(());
    }

    let mut drain_kinds = vec![
        Kind::Raw {
            conns: 1,
            batch_ack: false,
        },
        Kind::EwBlackhole,
        Kind::Raw {
            conns: 2,
            batch_ack: false,
        },
        Kind::EwHttp,
        Kind::EwHttpBatch,
        Kind::EwHttpBatch32,
        Kind::Raw {
            conns: 1,
            batch_ack: true,
        },
        Kind::EwBlackholeBlock10,
        Kind::RawNext,
        Kind::EwBlackholePerEvent,
        Kind::EwBlackholePrev,
        Kind::Relay,
        Kind::EwBlackholePrefetch512,
        Kind::EwBlackholePerCore,
        Kind::EwHttpPerCore,
    ];
    if sections.iter().any(|s| s == "bullmq") {
        drain_kinds.push(Kind::BullMq);
    }
    if b.base_bin.is_some() {
        drain_kinds.push(Kind::EwBase { http: false });
        drain_kinds.push(Kind::EwBase { http: true });
        drain_kinds.push(Kind::EwBaseBatch);
    }
    // EW_BENCH_DRAIN_ROWS="a|b": only the drain rows whose label contains one of them (for a
    // quick comparison of a few rows with more repetitions); "=a" keeps the row labelled a only.
    if let Ok(rows) = std::env::var("EW_BENCH_DRAIN_ROWS") {
        let wanted: Vec<&str> = rows.split('|').filter(|r| !r.is_empty()).collect();
        drain_kinds.retain(|k| {
            let label = k.label();
            wanted.iter().any(|w| match w.strip_prefix('=') {
                Some(exact) => label == exact,
                None => label.contains(w),
            })
        });
    }
    // One repetition: every scenario once, each section's order rotated per repetition.
    let mut jobs: Vec<Vec<Job>> = Vec::new();
    for rep in 0..reps {
        let mut js = Vec::new();
        if sections.iter().any(|s| s == "drain" || s == "bullmq") {
            for i in 0..drain_kinds.len() {
                let kind = drain_kinds[(i + rep) % drain_kinds.len()];
                js.push(Job::Drain("drain", kind, 1, backlog));
            }
        }
        if sections.iter().any(|s| s == "backlog") {
            // A drain of a small backlog takes well under a second and spreads most between
            // samples (its fixed start-up is a larger share): it is sampled
            // `SMALL_BACKLOG_SAMPLES` times per repetition, the median taken over all of them.
            // The reference drains the same backlogs, so what the sizes do to a bare loop on
            // this machine is measured beside what they do to event-worker.
            for round in 0..SMALL_BACKLOG_SAMPLES {
                for i in 0..sizes.len() {
                    let n = sizes[(i + rep + round) % sizes.len()];
                    if round == 0 || n <= SMALL_BACKLOG {
                        let kinds = [Kind::EwBlackhole, Kind::RawNext];
                        for j in 0..kinds.len() {
                            let kind = kinds[(j + i + rep + round) % kinds.len()];
                            js.push(Job::Drain("backlog", kind, 1, n));
                        }
                    }
                }
            }
        }
        if sections.iter().any(|s| s == "scale") {
            let counts = [1usize, 2, 4];
            for i in 0..counts.len() {
                js.push(Job::Drain(
                    "scale",
                    Kind::EwBlackhole,
                    counts[(i + rep) % counts.len()],
                    backlog,
                ));
            }
        }
        if sections.iter().any(|s| s == "latency") {
            for rate in [1_000u64, 10_000] {
                for kind in [
                    Kind::Raw {
                        conns: 1,
                        batch_ack: false,
                    },
                    Kind::EwHttp,
                    Kind::RawNext,
                    Kind::Relay,
                ] {
                    js.push(Job::Latency(kind, rate));
                }
            }
            // p99 at half the relay's drain rate: needs the drain section in the same run. The
            // relay's own latency (to the same sink) says what that rate leaves on the machine.
            if sections.iter().any(|s| s == "drain") {
                for kind in [Kind::EwHttp, Kind::RawNext, Kind::Relay] {
                    js.push(Job::Latency(kind, HALF_RELAY));
                }
            }
        }
        jobs.push(js);
    }
    for (rep, js) in jobs.into_iter().enumerate() {
        eprintln!(
            "== repetition {}/{reps} ({:.0}s so far)",
            rep + 1,
            t_start.elapsed().as_secs_f64()
        );
        for job in js {
            let what = format!("{} rep {}", job.describe(), rep + 1);
            let mut noisy_runs = Vec::new();
            loop {
                let budget = wait_budget.saturating_sub(waited_total.as_secs());
                let t_wait = Instant::now();
                wait_quiet(sample_wait.min(budget)).await;
                waited_total += t_wait.elapsed();
                let r = match job {
                    Job::Drain(section, kind, procs, n) => {
                        b.drain(section, kind, procs, n, rep, None).await
                    }
                    Job::Latency(kind, HALF_RELAY) => {
                        if half_relay.is_none() {
                            half_relay = half_relay_rate(&samples);
                        }
                        match half_relay {
                            Some(rate) => b.latency(kind, rate, lat_secs, rep).await,
                            None => Err("no raw HTTP relay drain measured yet".to_string()),
                        }
                    }
                    Job::Latency(kind, rate) => b.latency(kind, rate, lat_secs, rep).await,
                };
                // A sample that failed, or during which others' processes took more than 30% of
                // a core, is run again (once) after the machine is quiet again.
                if let Err(e) = &r
                    && noisy_runs.is_empty()
                {
                    eprintln!("  failed ({e}): running {what} again");
                    noisy_runs.push(format!("failed: {e}"));
                    continue;
                }
                if let Ok(s) = &r {
                    let share = s.foreign_cpu_s / s.window_s.max(1e-9);
                    if share > 0.3 && noisy_runs.is_empty() && sample_wait > 0 {
                        eprintln!(
                            "  noisy ({:.0}% of a core used by others): running {what} again",
                            share * 100.0
                        );
                        noisy_runs.push(format!("others used {:.0}% of a core", share * 100.0));
                        continue;
                    }
                }
                let r = r.map(|mut s| {
                    if !noisy_runs.is_empty() {
                        s.notes
                            .push(format!("second run (first: {})", noisy_runs.join(", ")));
                    }
                    s
                });
                keep(r, &what, &mut samples, &mut failures);
                break;
            }
        }
        report::write_tsv(&out.with_extension("tsv"), &samples)?;
        // The tables so far, so that an interrupted run still leaves the finished repetitions.
        let partial = out.with_extension("partial.md");
        let md = tables(&samples, &failures, backlog, rep + 1, lat_secs);
        std::fs::write(&partial, md).map_err(|e| format!("{}: {e}", partial.display()))?;
    }
    let _ = b.reset().await;
    let md = tables(&samples, &failures, backlog, reps, lat_secs);
    std::fs::write(&out, md).map_err(|e| format!("{}: {e}", out.display()))?;
    eprintln!(
        "results: {} ({:.0}s)",
        out.display(),
        t_start.elapsed().as_secs_f64()
    );
    Ok(())
}

/// One `INFO commandstats` line (`cmdstat_<name>:calls=..,usec=..,...`) as `(name, (calls,
/// usec))`; `None` for any other line.
pub fn cmdstat(line: &str) -> Option<(String, (u64, u64))> {
    let (name, stats) = line.strip_prefix("cmdstat_")?.split_once(':')?;
    let field = |key: &str| -> u64 {
        stats
            .split(',')
            .find_map(|kv| kv.strip_prefix(key))
            .and_then(|c| c.parse().ok())
            .unwrap_or(0)
    };
    Some((name.to_string(), (field("calls="), field("usec="))))
}
