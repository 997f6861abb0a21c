//! The phases of the `push` scenario (see `push.rs`) and its markdown table.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use fred::prelude::*;
use tokio::sync::watch;

use crate::push::{self, ROOMS, Run, STALLED, Window};
use crate::pushclient::{self, Client as PushClient};
use crate::util::{Opts, now_ns};

/// Everything the table shows.
#[derive(Default)]
struct Results {
    clients: usize,
    ws: usize,
    secs: f64,
    scripts_dir: String,
    connect_s: f64,
    rss0_kb: u64,
    rss1_kb: u64,
    /// After the SSE clients only.
    rss_sse_kb: u64,
    base: Option<Window>,
    stalled: Option<Window>,
    cut: f64,
    stall_burst: u64,
    storm_s: f64,
    storm_replay_events: u64,
    /// Top-level commands (MONITOR) of the worker during the storm, and per second in the 3 s
    /// before it (the flow alone).
    storm_calls: BTreeMap<String, u64>,
    flow_calls: BTreeMap<String, u64>,
    flow_secs: f64,
    storm_secs_counted: f64,
    storm_resumes: f64,
    received: u64,
    expected: u64,
    dups: u64,
    reordered: u64,
    ends: u64,
    errors: Vec<String>,
}

/// Top-level commands other than the projection's appends.
fn non_append(calls: &BTreeMap<String, u64>) -> u64 {
    calls
        .iter()
        .filter(|(k, _)| k.as_str() != "evalsha push_append.lua")
        .map(|(_, v)| v)
        .sum()
}

pub async fn run(opts: &Opts) -> Result<(), String> {
    let port = opts.num("port", 0)? as u16;
    let n = opts.num("push-clients", 6000)?.max(12) as usize;
    let warm = opts.num("push-warmup", 5)? as f64;
    let secs = opts.num("push-secs", 20)? as f64;
    let out = PathBuf::from(opts.str("out")?);
    let logdir = PathBuf::from(opts.str("logdir")?);
    std::fs::create_dir_all(&logdir).map_err(|e| e.to_string())?;
    let nofile = push::raise_nofile();
    if (nofile as usize) < n + STALLED + 256 {
        return Err(format!(
            "the open-file limit is {nofile}, too low for {n} clients plus {STALLED} stalled: \
             raise the hard limit (ulimit -Hn) or pass a smaller --push-clients"
        ));
    }
    let ctl = push::connect(port).await?;
    let _: Value = ctl
        .custom(
            fred::types::CustomCommand::new_static(
                "FLUSHALL",
                fred::types::ClusterHash::Random,
                false,
            ),
            Vec::<String>::new(),
        )
        .await
        .map_err(|e| format!("FLUSHALL: {e}"))?;
    let (worker, api) = push::start_worker(opts.str("worker")?, port, &logdir)?;
    let run = Arc::new(push::new_run(port, ctl, api, worker, n));
    push::wait_ready(&run).await?;
    let mut res = Results {
        clients: n,
        ws: n / 6,
        secs,
        scripts_dir: opts.str_or("scripts-dir", "../src").to_string(),
        ..Default::default()
    };
    let result = phases(&run, &mut res, warm, secs).await;
    run.publishing.store(false, Ordering::Relaxed);
    res.errors
        .extend(run.stats.errors.lock().unwrap().iter().cloned());
    if let Err(e) = &result {
        res.errors.push(format!("run stopped: {e}"));
    }
    let md = table(&res);
    std::fs::write(&out, &md).map_err(|e| format!("{}: {e}", out.display()))?;
    eprintln!("{md}");
    result
}

async fn phases(run: &Arc<Run>, res: &mut Results, warm: f64, secs: f64) -> Result<(), String> {
    let n = res.clients;
    let stats = run.stats.clone();
    let wpid = run.worker.pid;
    tokio::time::sleep(Duration::from_secs(1)).await;
    res.rss0_kb = push::rss_kb(wpid);
    stats
        .count_from
        .store(run.seq.load(Ordering::Relaxed), Ordering::Relaxed);

    eprintln!("== push: connecting {n} clients ({} WebSocket)", res.ws);
    let (gen_tx, gen_rx) = watch::channel(0u64);
    let mut handles = Vec::with_capacity(n);
    // SSE clients first, then WebSocket ones: the RSS between tells each transport's cost.
    for ws in [false, true] {
        for i in (0..n).filter(|i| (i % 6 == 5) == ws) {
            let c = PushClient::new(ws, &i.to_string(), (i as u64) % ROOMS);
            handles.push(push::spawn_client(
                c,
                run.api,
                stats.clone(),
                gen_rx.clone(),
            ));
            if handles.len() % 100 == 99 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        res.connect_s += push::wait_connected(&stats, handles.len() as u64, "connect").await?;
        if !ws {
            tokio::time::sleep(Duration::from_secs(3)).await;
            res.rss_sse_kb = push::rss_kb(wpid);
        }
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    res.rss1_kb = push::rss_kb(wpid);
    eprintln!(
        "   connected in {:.1}s; worker RSS {} -> {} KiB",
        res.connect_s, res.rss0_kb, res.rss1_kb
    );

    eprintln!("== push: steady load, {warm}s warm-up then {secs}s measured");
    run.publishing.store(true, Ordering::Relaxed);
    let publisher = tokio::spawn(run.clone().publisher());
    tokio::time::sleep(Duration::from_secs_f64(warm)).await;
    let base = run.window(secs).await?;
    eprintln!("   {}", crate::util::latency_line(base.lat.clone()));
    res.base = Some(base);

    stalled_run(run, res, warm, secs).await?;
    push::wait_connected(&stats, n as u64, "after the stalled run").await?;

    storm(run, res, &gen_tx, handles).await?;

    tokio::time::sleep(Duration::from_secs(3)).await;
    run.publishing.store(false, Ordering::Relaxed);
    publisher.await.map_err(|e| format!("publisher: {e}"))??;
    let t0 = Instant::now();
    while stats.received.load(Ordering::Relaxed) < run.expected.load(Ordering::Relaxed)
        && t0.elapsed() < Duration::from_secs(30)
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    res.received = stats.received.load(Ordering::Relaxed);
    res.expected = run.expected.load(Ordering::Relaxed);
    res.dups = stats.dups.load(Ordering::Relaxed);
    res.reordered = stats.reordered.load(Ordering::Relaxed);
    res.ends = stats.ends.load(Ordering::Relaxed);
    let _ = gen_tx.send(3);
    Ok(())
}

/// The steady window again with [`STALLED`] more clients that stop reading, then a burst on
/// their channel until every one is cut as slow.
async fn stalled_run(
    run: &Arc<Run>,
    res: &mut Results,
    warm: f64,
    secs: f64,
) -> Result<(), String> {
    let n = res.clients;
    let stats = run.stats.clone();
    eprintln!("== push: the same with {STALLED} clients that stop reading");
    let (stall_tx, stall_rx) = watch::channel(0u64);
    let mut stalled = Vec::new();
    for k in 0..STALLED {
        let channels = vec![
            "user:stall".to_string(),
            format!("shared:{}", k as u64 % ROOMS),
        ];
        let (st, rx) = (stats.clone(), stall_rx.clone());
        let port = run.api;
        stalled.push(tokio::spawn(async move {
            pushclient::stalled(channels, port, &st, rx).await
        }));
    }
    push::wait_connected(&stats, (n + STALLED) as u64, "stalled clients").await?;
    tokio::time::sleep(Duration::from_secs_f64(warm)).await;
    let sw = run.window(secs).await?;
    eprintln!("   {}", crate::util::latency_line(sw.lat.clone()));
    res.stalled = Some(sw);
    // A burst on their channel fills their buffers: 500 events at a time, each after the
    // previous ones are projected, until all are cut (at most 20 steps and 180 s).
    let cut0 = push::metric(run.api, "event_worker_push_slow_disconnects_total")?;
    let t0 = Instant::now();
    for _ in 0..20 {
        let batch: Vec<(bool, String)> = (0..500).map(|_| (true, "stall".to_string())).collect();
        let last = run.publish(&batch).await?;
        res.stall_burst += 500;
        if let Err(e) = run.wait_appended("user:stall", last).await {
            res.errors.push(format!("stalled clients' burst: {e}"));
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        res.cut = push::metric(run.api, "event_worker_push_slow_disconnects_total")? - cut0;
        if res.cut >= STALLED as f64 || t0.elapsed() > Duration::from_secs(180) {
            break;
        }
    }
    eprintln!(
        "   {} stalled clients cut after {} events on user:stall",
        res.cut, res.stall_burst
    );
    let _ = stall_tx.send(1);
    for h in stalled {
        if let Ok(Err(e)) = h.await {
            res.errors.push(format!("stalled client: {e}"));
        }
    }
    Ok(())
}

/// While the clients are down: one event per user and per room (each client has something to
/// replay); marks the first of them as the catch-up mark and waits until all are projected.
async fn publish_while_down(run: &Arc<Run>, n: usize) -> Result<(), String> {
    let stats = run.stats.clone();
    let from = run.seq.load(Ordering::Relaxed);
    stats.catch_from.store(from, Ordering::Relaxed);
    let users: Vec<(bool, String)> = (0..n).map(|i| (true, i.to_string())).collect();
    let mut last_user = 0;
    for chunk in users.chunks(500) {
        last_user = run.publish(chunk).await?;
    }
    let rooms: Vec<(bool, String)> = (0..ROOMS).map(|r| (false, r.to_string())).collect();
    let last_room = run.publish(&rooms).await?;
    let burst: u64 = users
        .iter()
        .chain(rooms.iter())
        .map(|(u, to)| run.recipients(*u, to))
        .sum();
    run.expected.fetch_add(burst, Ordering::Relaxed);
    run.wait_appended(&format!("user:{}", n - 1), last_user)
        .await?;
    run.wait_appended(&format!("shared:{}", ROOMS - 1), last_room)
        .await?;
    Ok(())
}

/// Every client drops; one event per user and per room is published while they are down;
/// then all resume at once. Measures the time until every client got a message published
/// after the drop on both its channels, and the Redis commands of the worker meanwhile.
async fn storm(
    run: &Arc<Run>,
    res: &mut Results,
    gen_tx: &watch::Sender<u64>,
    handles: Vec<tokio::task::JoinHandle<PushClient>>,
) -> Result<(), String> {
    let n = res.clients;
    let stats = run.stats.clone();
    eprintln!("== push: reconnect storm");
    let scripts = crate::pushmon::script_shas(&res.scripts_dir);
    let own = crate::pushmon::own_addr(&run.ctl).await?;
    let mon = crate::pushmon::Monitor::start(run.port, own.clone(), scripts.clone()).await?;
    let t = Instant::now();
    tokio::time::sleep(Duration::from_secs(3)).await;
    res.flow_calls = mon.stop();
    res.flow_secs = t.elapsed().as_secs_f64();
    let _ = gen_tx.send(1);
    let mut clients = Vec::with_capacity(n);
    for h in handles {
        clients.push(h.await.map_err(|e| format!("client task: {e}"))?);
    }
    publish_while_down(run, n).await?;
    res.storm_replay_events = (n as u64) + ROOMS;

    let resumes0 = push::metric(run.api, "event_worker_push_resumes_total")?;
    let mon = crate::pushmon::Monitor::start(run.port, own, scripts).await?;
    stats.caught.lock().unwrap().clear();
    let t0 = now_ns();
    let counted = Instant::now();
    let gen_rx = gen_tx.subscribe();
    let mut new_handles = Vec::with_capacity(n);
    for c in clients {
        new_handles.push(push::spawn_client(
            c,
            run.api,
            stats.clone(),
            gen_rx.clone(),
        ));
    }
    let deadline = Instant::now() + Duration::from_secs(180);
    while stats.caught.lock().unwrap().len() < n {
        if Instant::now() > deadline {
            return Err(format!(
                "storm: {} of {n} clients caught up after 180s",
                stats.caught.lock().unwrap().len()
            ));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let last = stats
        .caught
        .lock()
        .unwrap()
        .iter()
        .copied()
        .max()
        .unwrap_or(t0);
    res.storm_s = (last.saturating_sub(t0)) as f64 / 1e9;
    res.storm_calls = mon.stop();
    res.storm_secs_counted = counted.elapsed().as_secs_f64();
    res.storm_resumes = push::metric(run.api, "event_worker_push_resumes_total")? - resumes0;
    eprintln!(
        "   all {n} caught up in {:.2}s; calls {:?}",
        res.storm_s, res.storm_calls
    );
    // Keep the resumed clients running until the end (gen 3).
    tokio::spawn(async move {
        for h in new_handles {
            let _ = h.await;
        }
    });
    Ok(())
}

fn pass(ok: bool) -> &'static str {
    if ok { "pass" } else { "MISSED" }
}

fn lat_cells(w: &Window) -> String {
    format!(
        "{:.1} / {:.1} / {:.1} ms ({} messages)",
        w.pct(50.0),
        w.pct(99.0),
        w.max_ms(),
        w.lat.len()
    )
}

fn cpu_cells(w: &Window) -> String {
    format!(
        "worker {:.0}%, Redis {:.0}%, bench clients+publisher {:.0}%, others {:.0}% of a core; push group lag {} -> {} events",
        w.worker_cpu_s / w.secs * 100.0,
        w.redis_cpu_s / w.secs * 100.0,
        w.self_cpu_s / w.secs * 100.0,
        w.foreign_cpu_s / w.secs * 100.0,
        w.push_lag.0,
        w.push_lag.1
    )
}

/// The markdown table of the results.
fn table(r: &Results) -> String {
    let (p99_t, kb_t) = (push::TARGET_P99_MS, push::TARGET_KB_PER_CONN);
    let mut md = String::new();
    let sse = r.clients - r.ws;
    let _ = writeln!(
        md,
        "{sse} SSE + {} WebSocket clients, each on `user:<n>` and one of {ROOMS} `shared:<room>`; \
         990 user events/s + 10 shared events/s; windows of {:.0} s.\n",
        r.ws, r.secs
    );
    md.push_str("| measure | value | target | result |\n| --- | --- | --- | --- |\n");
    if let Some(b) = &r.base {
        let out = b.lat.len() as f64 / b.secs;
        let _ = writeln!(
            md,
            "| publish-to-client p50 / p99 / max | {} | p99 < {p99_t} ms | {} |",
            lat_cells(b),
            pass(b.pct(99.0) < p99_t)
        );
        let _ = writeln!(md, "| messages out | {out:.0}/s | | |");
        let _ = writeln!(md, "| CPU during the window | {} | | |", cpu_cells(b));
    }
    let per_conn = (r.rss1_kb as f64 - r.rss0_kb as f64) / r.clients as f64;
    let per_sse = (r.rss_sse_kb as f64 - r.rss0_kb as f64) / sse as f64;
    let per_ws = (r.rss1_kb as f64 - r.rss_sse_kb as f64) / r.ws.max(1) as f64;
    let _ = writeln!(
        md,
        "| memory per idle connection | {per_conn:.1} KiB: SSE {per_sse:.1} KiB, WebSocket {per_ws:.1} KiB (worker RSS {:.1} MiB, {:.1} MiB after the SSE clients, {:.1} MiB after all {}; opened in {:.1} s) | < {kb_t} KB | {} |",
        r.rss0_kb as f64 / 1024.0,
        r.rss_sse_kb as f64 / 1024.0,
        r.rss1_kb as f64 / 1024.0,
        r.clients,
        r.connect_s,
        pass(per_conn * 1.024 < kb_t)
    );
    if let (Some(b), Some(s)) = (&r.base, &r.stalled) {
        let ratio = s.pct(99.0) / b.pct(99.0).max(1e-9);
        let _ = writeln!(
            md,
            "| with {STALLED} stalled clients: others' p50 / p99 / max | {} (p99 {ratio:.2}x the run without) | within 2x | {} |",
            lat_cells(s),
            pass(ratio <= 2.0)
        );
        let _ = writeln!(
            md,
            "| stalled clients cut as slow | {:.0} of {STALLED} (`event_worker_push_slow_disconnects_total`), after {} more events on their channel | all | {} |",
            r.cut,
            r.stall_burst,
            pass(r.cut >= STALLED as f64)
        );
        let _ = writeln!(md, "| CPU, stalled run | {} | | |", cpu_cells(s));
    }
    storm_rows(&mut md, r);
    if !r.errors.is_empty() {
        md.push_str("\nErrors:\n");
        for e in &r.errors {
            let _ = writeln!(md, "- {e}");
        }
    }
    md
}

/// The rows of the reconnect storm and of the exactness check, and the command lists.
fn storm_rows(md: &mut String, r: &Results) {
    let cmd_t = push::TARGET_CMDS_PER_RESUME;
    let n = r.clients as f64;
    let resume_sha = r
        .storm_calls
        .get("evalsha push_resume.lua")
        .copied()
        .unwrap_or(0) as f64;
    let flow = non_append(&r.flow_calls) as f64 / r.flow_secs.max(1e-9) * r.storm_secs_counted;
    let per_resume = (non_append(&r.storm_calls) as f64 - flow) / n;
    let _ = writeln!(
        md,
        "| reconnect storm: all {} resume at once, time until every client caught up | {:.2} s ({} events published while down; {:.0} channel resumes counted) | | |",
        r.clients, r.storm_s, r.storm_replay_events, r.storm_resumes
    );
    let extra = per_resume - resume_sha / n;
    let _ = writeln!(
        md,
        "| Redis commands per resume (top-level, from MONITOR) | {:.2} `push_resume.lua` EVALSHA per resume; the worker's other commands during the storm: {extra:+.2} per resume beyond the flow's rate (the 3 s before) | <= {cmd_t} | {} |",
        resume_sha / n,
        pass(resume_sha / n + extra.max(0.0) <= cmd_t)
    );
    let gaps = r.expected as i64 - (r.received as i64 - r.dups as i64);
    let _ = writeln!(
        md,
        "| messages received vs expected (whole run) | {} of {} (gaps {gaps}, duplicates {}, out of order {}, server cuts of normal clients {}) | exact | {} |",
        r.received,
        r.expected,
        r.dups,
        r.reordered,
        r.ends,
        pass(gaps == 0 && r.dups == 0)
    );
    let list = |m: &BTreeMap<String, u64>| {
        m.iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let _ = writeln!(
        md,
        "\nThe worker's top-level Redis commands during the storm ({:.2} s counted): {}; in the {:.1} s before it (flow only): {}.",
        r.storm_secs_counted,
        list(&r.storm_calls),
        r.flow_secs,
        list(&r.flow_calls)
    );
}
