//! The `outbox` scenario (opt-in: `bench/run.sh --sections outbox`): what the durable outbox
//! costs on the publish path, and how fast it drains.
//!
//! Rows, interleaved and repeated: (a) outbox off (and the same on the `--base-rev` build, the
//! commit before the outbox, with `--base-worker`); (b) `[outbox] enabled`, `fsync = "always"`,
//! Redis up (the outbox unused); (c) the same with Redis frozen (SIGSTOP) so every publish is
//! queued; (d) queued with `fsync = "100ms"`. Each row: one release event-worker, `--events`
//! publishes through `POST /api/events/publish` from [`CONNS`] keep-alive HTTP/1.1 connections,
//! each publishing serially with a unique `id`. Then the drain: `--drain-events` queued with
//! the hidden `outbox fill` command, the worker started on them, the time until the stream holds
//! them all (XLEN), at the default `drain_rate` and at 100000.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::Bytes;
use fred::prelude::*;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::{self, SendRequest};
use hyper::header::{AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, HOST};
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;

use crate::push::{cmd, connect};
use crate::util::{Opts, Proc, free_port, http};

pub const ENV: &str = "obbench";
pub const TYPE: &str = "ob.bench";
pub const CONNS: usize = 8;
pub const TOKEN: &str = "outbox-bench-token-0123456789";

/// One measured configuration.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Row {
    /// Outbox off, on the `--base-rev` build.
    Base,
    /// Outbox off.
    Off,
    /// Outbox on (fsync always), Redis up.
    Up,
    /// Redis frozen, fsync always.
    QueuedAlways,
    /// Redis frozen, fsync 100ms.
    Queued100ms,
}

impl Row {
    pub fn label(self) -> &'static str {
        match self {
            Row::Base => "(a) outbox off, @base build",
            Row::Off => "(a) outbox off",
            Row::Up => "(b) outbox on, fsync always, Redis up",
            Row::QueuedAlways => "(c) Redis frozen: queued, fsync always",
            Row::Queued100ms => "(d) Redis frozen: queued, fsync 100ms",
        }
    }
    pub fn frozen(self) -> bool {
        matches!(self, Row::QueuedAlways | Row::Queued100ms)
    }
    fn outbox(self) -> Option<&'static str> {
        match self {
            Row::Base | Row::Off => None,
            Row::Up | Row::QueuedAlways => Some("always"),
            Row::Queued100ms => Some("100ms"),
        }
    }
}

/// One publish: latency (ns), end time since the row's start (ns), queued or direct.
#[derive(Clone, Copy)]
pub struct Sample {
    pub lat_ns: u64,
    pub end_ns: u64,
    pub queued: bool,
    pub first: bool,
}

/// The figures of one row in one repetition.
pub struct RowRun {
    pub row: Row,
    pub rep: u64,
    pub samples: Vec<Sample>,
    pub secs: f64,
    pub errors: u64,
}

/// One drain run.
pub struct DrainRun {
    pub rate: u64,
    pub events: u64,
    pub fill_s: f64,
    /// From the worker's start until the first entry, and from the first entry until all.
    pub first_s: f64,
    pub drain_s: f64,
    pub done: bool,
}

/// A SIGSTOP on the redis-server, undone (SIGCONT) when dropped.
struct Frozen(i32);

impl Frozen {
    fn new(pid: i32) -> Frozen {
        // SAFETY: kill(2) on the redis-server pid run.sh started.
        unsafe { libc::kill(pid, libc::SIGSTOP) };
        Frozen(pid)
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        // SAFETY: as in `new`.
        unsafe { libc::kill(self.0, libc::SIGCONT) };
    }
}

pub struct Ctx {
    pub port: u16,
    pub redis_pid: i32,
    pub worker: String,
    pub base: Option<String>,
    pub logdir: PathBuf,
    pub workdir: PathBuf,
    pub ctl: Client,
}

pub fn main(opts: &Opts) -> Result<(), String> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(run(opts))
}

async fn run(opts: &Opts) -> Result<(), String> {
    let quick = opts.flag("quick");
    let events = opts.num("events", if quick { 2000 } else { 20000 })?;
    let drain_events = opts.num("drain-events", if quick { 10000 } else { 100000 })?;
    let reps = opts.num("reps", if quick { 1 } else { 3 })?;
    let port = opts.num("port", 0)? as u16;
    let ctx = Ctx {
        port,
        redis_pid: opts.num("redis-pid", 0)? as i32,
        worker: opts.str("worker")?.to_string(),
        base: opts.get("base-worker").map(str::to_string),
        logdir: PathBuf::from(opts.str("logdir")?),
        workdir: PathBuf::from(opts.str("workdir")?),
        ctl: connect(port).await?,
    };
    if ctx.redis_pid <= 0 {
        return Err("--redis-pid is needed (the rows freeze Redis with SIGSTOP)".into());
    }
    std::fs::create_dir_all(&ctx.logdir).map_err(|e| e.to_string())?;
    std::fs::create_dir_all(&ctx.workdir).map_err(|e| e.to_string())?;
    let mut rows = vec![Row::Off, Row::Up, Row::QueuedAlways, Row::Queued100ms];
    if ctx.base.is_some() {
        rows.insert(0, Row::Base);
    }
    let mut runs = Vec::new();
    for rep in 1..=reps {
        for (k, &row) in rows.iter().enumerate() {
            // Interleaved, and the order turns each repetition.
            let row = if rep % 2 == 0 {
                rows[rows.len() - 1 - k]
            } else {
                row
            };
            eprintln!("== outbox: rep {rep}, {}", row.label());
            let r = row_run(&ctx, row, rep, events).await?;
            eprintln!("   {}", crate::outboxrep::summary(&r));
            runs.push(r);
        }
    }
    let mut drains = Vec::new();
    for rate in [1000, 100000] {
        eprintln!("== outbox: drain of {drain_events} queued events, drain_rate {rate}");
        let d = drain_run(&ctx, rate, drain_events).await?;
        eprintln!(
            "   fill {:.1}s, first entry after {:.2}s, all after {:.2}s more",
            d.fill_s, d.first_s, d.drain_s
        );
        drains.push(d);
    }
    let md = crate::outboxrep::table(&rows, &runs, &drains, events);
    let out = PathBuf::from(opts.str("out")?);
    std::fs::write(&out, &md).map_err(|e| format!("{}: {e}", out.display()))?;
    eprintln!("{md}");
    Ok(())
}

async fn flushall(ctl: &Client) -> Result<(), String> {
    let _: Value = ctl
        .custom(cmd("FLUSHALL"), vec!["SYNC"])
        .await
        .map_err(|e| format!("FLUSHALL: {e}"))?;
    Ok(())
}

/// Writes the worker's config: outbox `fsync` (none: no [outbox]) and `drain_rate`.
fn write_config(
    ctx: &Ctx,
    name: &str,
    api: u16,
    fsync: Option<&str>,
    rate: u64,
) -> Result<(PathBuf, PathBuf), String> {
    let dir = ctx.workdir.join(format!("ob-{name}"));
    let _ = std::fs::remove_dir_all(&dir);
    let mut config = format!(
        "env = \"{ENV}\"\nredis_url = \"redis://127.0.0.1:{}\"\ngroup = \"bench\"\n\n\
         [api]\nlisten = \"127.0.0.1:{api}\"\nrate_limit = 0\n\n",
        ctx.port
    );
    if let Some(f) = fsync {
        config.push_str(&format!(
            "[outbox]\nenabled = true\ndir = \"{}\"\nfsync = \"{f}\"\nfallback_after = \"1s\"\n\
             drain_rate = {rate}\n\n",
            dir.display()
        ));
    }
    // The route consumes another type: the rows measure the publish path alone, not a
    // consumer of the published events competing for the same 2 cores.
    config.push_str("[[routes]]\ntypes = [\"outbox.fill\"]\nhandler = \"blackhole\"\n");
    let path = ctx.logdir.join(format!("outbox-{name}.toml"));
    std::fs::write(&path, config).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok((path, dir))
}

fn worker_cmd(bin: &str, config: &Path) -> std::process::Command {
    let mut c = std::process::Command::new(bin);
    c.env_clear();
    if let Ok(p) = std::env::var("PATH") {
        c.env("PATH", p);
    }
    c.env("RUST_LOG", "warn").env("EVENTS_API_TOKEN", TOKEN);
    c.arg("--config").arg(config);
    c
}

fn start_worker(ctx: &Ctx, bin: &str, config: &Path, name: &str) -> Result<Proc, String> {
    let mut c = worker_cmd(bin, config);
    c.arg("run");
    Proc::spawn(
        &format!("event-worker ({name})"),
        &mut c,
        &ctx.logdir.join(format!("outbox-{name}.log")),
        false,
    )
}

async fn wait_ready(api: u16, w: &mut Proc) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if matches!(http(api, "GET", "/readyz"), Ok((200, _))) {
            return Ok(());
        }
        if !w.alive() {
            return Err(format!("{} exited at start (see its log)", w.name));
        }
        if Instant::now() > deadline {
            return Err(format!("{} not ready within 60s", w.name));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn row_run(ctx: &Ctx, row: Row, rep: u64, events: u64) -> Result<RowRun, String> {
    flushall(&ctx.ctl).await?;
    let api = free_port()?;
    let name = format!("{row:?}-{rep}").to_lowercase();
    let (config, dir) = write_config(ctx, &name, api, row.outbox(), 1000)?;
    let bin = match row {
        Row::Base => ctx.base.clone().unwrap_or_default(),
        _ => ctx.worker.clone(),
    };
    let mut w = start_worker(ctx, &bin, &config, &name)?;
    wait_ready(api, &mut w).await?;
    // A short warm-up (connections, first allocations), not measured.
    let _ = publish_all(api, &format!("w{name}"), 2 * CONNS as u64).await?;
    let frozen = row.frozen().then(|| Frozen::new(ctx.redis_pid));
    let t0 = Instant::now();
    let (samples, errors) = publish_all(api, &name, events).await?;
    let secs = t0.elapsed().as_secs_f64();
    drop(frozen);
    w.stop();
    let _ = std::fs::remove_dir_all(&dir);
    Ok(RowRun {
        row,
        rep,
        samples,
        secs,
        errors,
    })
}

type Sender = SendRequest<Full<Bytes>>;

async fn conn(api: u16) -> Result<Sender, String> {
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", api))
        .await
        .map_err(|e| format!("connect 127.0.0.1:{api}: {e}"))?;
    let _ = tcp.set_nodelay(true);
    let (sender, c) = http1::handshake(TokioIo::new(tcp))
        .await
        .map_err(|e| format!("handshake 127.0.0.1:{api}: {e}"))?;
    tokio::spawn(async move {
        let _ = c.await;
    });
    Ok(sender)
}

/// `events` publishes from [`CONNS`] connections, each serially; (samples, non-202 answers).
pub async fn publish_all(api: u16, tag: &str, events: u64) -> Result<(Vec<Sample>, u64), String> {
    let t0 = Instant::now();
    let per = events.div_ceil(CONNS as u64);
    let mut tasks = Vec::new();
    for c in 0..CONNS as u64 {
        let tag = tag.to_string();
        let n = per.min(events.saturating_sub(c * per));
        tasks.push(tokio::spawn(async move {
            let mut s = conn(api).await?;
            let pad = "x".repeat(240);
            let mut out = Vec::with_capacity(n as usize);
            let mut errors = 0;
            for i in 0..n {
                let body =
                    format!(r#"{{"type":"{TYPE}","id":"{tag}-{c}-{i}","data":{{"pad":"{pad}"}}}}"#);
                let req = Request::builder()
                    .method(Method::POST)
                    .uri("/api/events/publish")
                    .header(HOST, "127.0.0.1")
                    .header(AUTHORIZATION, format!("Bearer {TOKEN}"))
                    .header(CONTENT_TYPE, "application/json")
                    .header(CONTENT_LENGTH, body.len())
                    .body(Full::new(Bytes::from(body)))
                    .map_err(|e| e.to_string())?;
                let start = Instant::now();
                s.ready().await.map_err(|e| format!("http: {e}"))?;
                let resp = s
                    .send_request(req)
                    .await
                    .map_err(|e| format!("http: {e}"))?;
                let status = resp.status().as_u16();
                let body = resp
                    .into_body()
                    .collect()
                    .await
                    .map_err(|e| format!("http body: {e}"))?
                    .to_bytes();
                let lat_ns = start.elapsed().as_nanos() as u64;
                if status != 202 {
                    errors += 1;
                    if errors == 1 {
                        eprintln!(
                            "   publish answered {status}: {}",
                            String::from_utf8_lossy(&body)
                        );
                    }
                }
                out.push(Sample {
                    lat_ns,
                    end_ns: t0.elapsed().as_nanos() as u64,
                    queued: body.windows(8).any(|w| w == b"\"queued\""),
                    first: i == 0,
                });
            }
            Ok::<_, String>((out, errors))
        }));
    }
    let mut all = Vec::with_capacity(events as usize);
    let mut errors = 0;
    for t in tasks {
        let (s, e) = t.await.map_err(|e| format!("publisher: {e}"))??;
        all.extend(s);
        errors += e;
    }
    Ok((all, errors))
}

async fn xlen(ctl: &Client, key: &str) -> Result<u64, String> {
    let v: Value = ctl
        .custom(cmd("XLEN"), vec![key])
        .await
        .map_err(|e| format!("XLEN {key}: {e}"))?;
    Ok(v.as_u64().unwrap_or(0))
}

/// Queues `events` with `outbox fill` (fsync 100ms), starts the worker on them with
/// `drain_rate = rate` and times the stream until it holds them all.
async fn drain_run(ctx: &Ctx, rate: u64, events: u64) -> Result<DrainRun, String> {
    flushall(&ctx.ctl).await?;
    let api = free_port()?;
    let name = format!("drain-{rate}");
    let (config, dir) = write_config(ctx, &name, api, Some("100ms"), rate)?;
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let t = Instant::now();
    let mut fill = worker_cmd(&ctx.worker, &config);
    fill.args(["outbox", "fill", "--dir"])
        .arg(&dir)
        .args(["--count", &events.to_string(), "--size", "240"])
        .args(["--fsync", "100ms"])
        .stdout(std::process::Stdio::null());
    let st = fill.status().map_err(|e| format!("outbox fill: {e}"))?;
    if !st.success() {
        return Err(format!(
            "event-worker outbox fill --dir {} failed: {st}",
            dir.display()
        ));
    }
    let fill_s = t.elapsed().as_secs_f64();
    let key = format!("events:{ENV}:outbox.fill");
    let t0 = Instant::now();
    let mut w = start_worker(ctx, &ctx.worker, &config, &name)?;
    let limit = Duration::from_secs(events / rate.max(1) * 3 + 60);
    let mut first: Option<Instant> = None;
    let mut done = false;
    while t0.elapsed() < limit {
        let n = xlen(&ctx.ctl, &key).await?;
        if n > 0 && first.is_none() {
            first = Some(Instant::now());
        }
        if n >= events {
            done = true;
            break;
        }
        if !w.alive() {
            return Err(format!("{} exited while draining (see its log)", w.name));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let end = Instant::now();
    w.stop();
    let _ = std::fs::remove_dir_all(&dir);
    let first = first.unwrap_or(end);
    Ok(DrainRun {
        rate,
        events,
        fill_s,
        first_s: (first - t0).as_secs_f64(),
        drain_s: (end - first).as_secs_f64(),
        done,
    })
}
