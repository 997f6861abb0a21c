//! The WAIT rows of the `cluster` scenario (`crate::cluster`): a master and one replica, one
//! event-worker per row with the API, `[redis] wait_replicas` 0 or 1.

use std::process::Command;
use std::time::{Duration, Instant};

use fred::prelude::*;
use fred::types::Value;

use crate::cluster::{Ctx, GROUP, wait_ready};
use crate::clustertopo::node;
use crate::push::cmd;
use crate::util::{Proc, free_port};

/// One wait row: the publish latencies (ns), seconds, non-202 answers, unreplicated.
pub struct WaitRun {
    pub wait: bool,
    pub lat_ns: Vec<u64>,
    pub secs: f64,
    pub errors: u64,
    pub unreplicated: u64,
}

/// The WAIT rows: a master and a replica; one worker per row with the API, publishing with
/// `outbox::publish_all` (8 connections, a unique id each).
pub async fn wait_rows(ctx: &Ctx, publishes: u64, reps: u64) -> Result<Vec<WaitRun>, String> {
    let mport = free_port()?;
    let master = node(ctx, "wait-master", mport, &[]).await?;
    let rargs: Vec<String> = vec!["--replicaof".into(), "127.0.0.1".into(), mport.to_string()];
    let _replica = node(ctx, "wait-replica", free_port()?, &rargs).await?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let v: Value = master
            .ctl
            .custom(cmd("INFO"), vec!["replication"])
            .await
            .map_err(|e| format!("INFO: {e}"))?;
        if v.as_str_lossy().is_some_and(|s| s.contains("state=online")) {
            break;
        }
        if Instant::now() > deadline {
            return Err("the bench replica is not online after 30 s".into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut runs = Vec::new();
    for rep in 1..=reps {
        let order = if rep % 2 == 1 {
            [false, true]
        } else {
            [true, false]
        };
        for wait in order {
            let _: Value = master
                .ctl
                .custom(cmd("FLUSHALL"), vec!["SYNC"])
                .await
                .map_err(|e| format!("FLUSHALL: {e}"))?;
            eprintln!(
                "== cluster: rep {rep}, publish with wait_replicas {}",
                u8::from(wait)
            );
            let r = wait_run(ctx, mport, wait, rep, publishes).await?;
            runs.push(r);
        }
    }
    Ok(runs)
}

async fn wait_run(ctx: &Ctx, port: u16, wait: bool, rep: u64, n: u64) -> Result<WaitRun, String> {
    let api = free_port()?;
    let redis = if wait {
        "[redis]\nwait_replicas = 1\nwait_timeout = \"100ms\"\n\n"
    } else {
        ""
    };
    let config = format!(
        "env = \"{}\"\nredis_url = \"redis://127.0.0.1:{port}\"\ngroup = \"{GROUP}\"\n\n{redis}\
         [api]\nlisten = \"127.0.0.1:{api}\"\nrate_limit = 0\n\n\
         [[routes]]\ntypes = [\"other.type\"]\nhandler = \"blackhole\"\n",
        crate::outbox::ENV
    );
    let name = format!("wait{}-{rep}", u8::from(wait));
    let path = ctx.logdir.join(format!("cluster-{name}.toml"));
    std::fs::write(&path, config).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut c = Command::new(&ctx.worker);
    c.env_clear()
        .env("RUST_LOG", "warn")
        .env("EVENTS_API_TOKEN", crate::outbox::TOKEN);
    if let Ok(p) = std::env::var("PATH") {
        c.env("PATH", p);
    }
    c.arg("--config").arg(&path).arg("run");
    let log = ctx.logdir.join(format!("cluster-{name}.log"));
    let mut w = Proc::spawn(&format!("event-worker ({name})"), &mut c, &log, false)?;
    wait_ready(api, &mut w).await?;
    let _ = crate::outbox::publish_all(api, &format!("w{name}"), 16).await?;
    let t0 = Instant::now();
    let (samples, errors) = crate::outbox::publish_all(api, &name, n).await?;
    let secs = t0.elapsed().as_secs_f64();
    let unreplicated = crate::push::metric(api, "event_worker_publish_unreplicated_total")? as u64;
    w.stop();
    Ok(WaitRun {
        wait,
        lat_ns: samples.iter().map(|s| s.lat_ns).collect(),
        secs,
        errors,
        unreplicated,
    })
}
