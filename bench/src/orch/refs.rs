//! The references' processes: the pipelined batch-ack raw loop (`raw --ack next`), the raw
//! HTTP relay (`relay`, 64 connections) and the BullMQ peer (`node bench/bullmq/drain.js`,
//! section `bullmq` only).

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use super::{Bench, GROUP, Kind, Sample};
use crate::util::{Proc, kv, machine_busy_s, proc_cpu_s};

/// HTTP connections (= requests in flight) of the relay: fixed, whatever the route's default.
pub const RELAY_SLOTS: u32 = 64;
/// Worker concurrency of the BullMQ peer.
pub const BULLMQ_CONCURRENCY: u32 = 50;

impl Bench {
    /// Starts the pipelined batch-ack raw loop (1 connection, COUNT 512).
    pub(super) fn start_raw_next(&mut self, latency: bool) -> Result<Proc, String> {
        let log = self.log("raw-next");
        let mut c = Command::new(&self.self_bin);
        let port = self.port.to_string();
        c.args([
            "raw",
            "--port",
            &port,
            "--stream",
            &self.stream,
            "--group",
            GROUP,
        ]);
        c.args(["--conns", "1", "--ack", "next"]);
        if latency {
            c.arg("--latency");
        }
        Proc::spawn(
            "raw (XACK pipelined with the next read)",
            &mut c,
            &log,
            latency,
        )
    }

    /// Starts the raw HTTP relay to the sink on `sink`.
    pub(super) fn start_relay(&mut self, sink: Option<u16>) -> Result<Proc, String> {
        let sink = sink.ok_or("the relay needs the sink")?;
        let log = self.log("relay");
        let mut c = Command::new(&self.self_bin);
        let (port, sink, slots) = (
            self.port.to_string(),
            sink.to_string(),
            RELAY_SLOTS.to_string(),
        );
        c.args([
            "relay",
            "--port",
            &port,
            "--stream",
            &self.stream,
            "--group",
            GROUP,
        ]);
        c.args(["--sink-port", &sink, "--slots", &slots]);
        Proc::spawn("relay", &mut c, &log, false)
    }

    /// One BullMQ drain: FLUSHALL, `addBulk` of `backlog` jobs (drain.js preload), then
    /// drain.js work, timed by the script from worker start to the last completed job.
    pub(super) async fn bullmq(&mut self, backlog: u64, rep: usize) -> Result<Sample, String> {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("bullmq");
        let script = dir.join("drain.js");
        self.reset().await?;
        let port = self.port.to_string();
        let n = backlog.to_string();
        let run = |b: &mut Bench, mode: &str| -> Result<Proc, String> {
            let log = b.log(&format!("bullmq-{mode}"));
            let mut c = Command::new("node");
            c.current_dir(&dir).arg(&script).arg(mode);
            c.args(["--port", &port, "--n", &n]);
            c.args(["--concurrency", &BULLMQ_CONCURRENCY.to_string()]);
            Proc::spawn(&format!("bullmq {mode}"), &mut c, &log, mode == "work")
        };
        let mut pre = run(self, "preload")?;
        wait_exit(&mut pre, Duration::from_secs(300)).await?;
        self.own_delta();
        let before = self.info().await?;
        let busy0 = machine_busy_s();
        let self0 = proc_cpu_s(std::process::id()).unwrap_or(0.0);
        let redis0 = proc_cpu_s(self.redis_pid).unwrap_or(0.0);
        let mut p = run(self, "work")?;
        wait_exit(&mut p, Duration::from_secs(120 + backlog / 200)).await?;
        let after = self.info().await?;
        let busy1 = machine_busy_s();
        let self1 = proc_cpu_s(std::process::id()).unwrap_or(0.0);
        let redis1 = proc_cpu_s(self.redis_pid).unwrap_or(0.0);
        let out = kv(p.stop().trim());
        if out.get("events").copied() != Some(backlog) {
            return Err(format!("drain.js work printed {out:?}"));
        }
        let wall_s = out.get("wall_ms").copied().unwrap_or(0) as f64 / 1000.0;
        let cpu_s = out.get("cpu_us").copied().unwrap_or(0) as f64 / 1e6;
        let mut s = Sample {
            section: "drain".into(),
            label: Kind::BullMq.label(),
            rep,
            procs: 1,
            backlog,
            events: backlog,
            wall_s,
            cpu_s,
            rss_kb: out.get("rss_kb").copied().unwrap_or(0),
            window_s: wall_s,
            ..Default::default()
        };
        self.finish_redis(&mut s, &before, &after, &[]);
        let ours = cpu_s + (self1 - self0) + (redis1 - redis0);
        s.foreign_cpu_s = ((busy1 - busy0) - ours).max(0.0);
        s.notes.push(
            "Redis CPU and commands include the worker's start and stop (outside wall_s)".into(),
        );
        Ok(s)
    }
}

/// Waits (bounded) until `p` has exited with status 0.
async fn wait_exit(p: &mut Proc, timeout: Duration) -> Result<(), String> {
    let t0 = Instant::now();
    while p.alive() {
        if t0.elapsed() > timeout {
            return Err(format!("{} still running after {timeout:?}", p.name));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    match p.child.as_mut().map(|c| c.try_wait()) {
        Some(Ok(Some(st))) if st.success() => Ok(()),
        other => Err(format!("{} failed: {other:?} (see its log)", p.name)),
    }
}
