//! The markdown of the `cluster` scenario (`crate::cluster`): medians over the repetitions,
//! per-master shares, and the projection (said to be one).

use crate::cluster::Run;
use crate::clusterwait::WaitRun;
use crate::util::percentile;

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn spread(v: &[f64]) -> String {
    let min = v.iter().copied().fold(f64::INFINITY, f64::min);
    let max = v.iter().copied().fold(0.0, f64::max);
    if v.len() < 2 {
        String::new()
    } else {
        format!(" ({min:.0}–{max:.0})")
    }
}

/// The runs of `topo`.
fn of<'a>(runs: &'a [Run], topo: &str) -> Vec<&'a Run> {
    runs.iter().filter(|r| r.topo == topo).collect()
}

fn topos(runs: &[Run]) -> Vec<&'static str> {
    let mut t: Vec<&'static str> = Vec::new();
    for r in runs {
        if !t.contains(&r.topo) {
            t.push(r.topo);
        }
    }
    t
}

fn drain_table(drains: &[Run], md: &mut String) {
    md.push_str(
        "| topology | drain s | events/s | worker CPU s per 1M events | Redis CPU s per 1M events (all nodes) | Redis commands per event (all nodes) |\n|---|---|---|---|---|---|\n",
    );
    for t in topos(drains) {
        let rs = of(drains, t);
        let rates: Vec<f64> = rs.iter().map(|r| r.events as f64 / r.secs).collect();
        let m = |f: &dyn Fn(&Run) -> f64| median(rs.iter().map(|r| f(r)).collect());
        md.push_str(&format!(
            "| {t} | {:.2} | {:.0}{} | {:.2} | {:.2} | {:.3} |\n",
            m(&|r| r.secs),
            median(rates.clone()),
            spread(&rates),
            m(&|r| r.worker_cpu_s / r.events as f64 * 1e6),
            m(&|r| r.node_cpu_s.iter().sum::<f64>() / r.events as f64 * 1e6),
            m(&|r| r.node_cmds.iter().sum::<u64>() as f64 / r.events as f64),
        ));
    }
}

/// Per node of `topo`: share of events, share of Redis CPU, CPU s per 1M of its events, busy %.
fn per_node(runs: &[Run], topo: &str, md: &mut String) {
    let rs = of(runs, topo);
    let Some(first) = rs.first() else { return };
    md.push_str(
        "| node | events share | Redis CPU share | Redis CPU s per 1M of its events | Redis CPU, % of one core | commands share |\n|---|---|---|---|---|---|\n",
    );
    for i in 0..first.node_cpu_s.len() {
        let m = |f: &dyn Fn(&Run) -> f64| median(rs.iter().map(|r| f(r)).collect());
        let share = |v: &[f64], i: usize| v[i] / v.iter().sum::<f64>().max(1e-9) * 100.0;
        md.push_str(&format!(
            "| {} {} | {:.1}% | {:.1}% | {:.2} | {:.0}% | {:.1}% |\n",
            if first.node_cpu_s.len() == 1 {
                "node"
            } else {
                "master"
            },
            i + 1,
            m(&|r| share(
                &r.node_events.iter().map(|&e| e as f64).collect::<Vec<_>>(),
                i
            )),
            m(&|r| share(&r.node_cpu_s, i)),
            m(&|r| r.node_cpu_s[i] / (r.node_events[i].max(1)) as f64 * 1e6),
            m(&|r| r.node_cpu_s[i] / r.secs * 100.0),
            m(&|r| share(
                &r.node_cmds.iter().map(|&c| c as f64).collect::<Vec<_>>(),
                i
            )),
        ));
    }
}

/// The projection: Redis-bound capacity when each master has a core of its own.
fn projection(drains: &[Run], md: &mut String) {
    let single = median(
        of(drains, "1 node")
            .iter()
            .map(|r| r.node_cpu_s[0] / r.events as f64)
            .collect(),
    );
    let cluster = of(drains, "3-master cluster");
    let busiest = median(
        cluster
            .iter()
            .map(|r| r.node_cpu_s.iter().copied().fold(0.0, f64::max) / r.events as f64)
            .collect(),
    );
    let total = median(
        cluster
            .iter()
            .map(|r| r.node_cpu_s.iter().sum::<f64>() / r.events as f64)
            .collect(),
    );
    if single <= 0.0 || busiest <= 0.0 {
        return;
    }
    md.push_str(&format!(
        "\n**Projected, not measured.** One Redis process uses one core. Measured: the single node \
         spent {:.2} s of Redis CPU per 1M events, so one node saturates at about {:.0} events/s \
         of Redis work; the cluster spent {:.2} s per 1M events over all masters ({:+.0}% per \
         event; the commands per event are in the table above), the busiest master \
         {:.2} s per 1M of all events. With one core per master (3 machines, or 3 free cores) \
         the Redis side saturates when the busiest master does: about {:.0} events/s, **{:.2}x the \
         single node**. The worker side scales by adding processes (BENCHMARKS.md \"Scale-out\"). \
         On this 2-core machine both topologies share the same 2 cores with the worker, so the \
         measured drain rates above cannot show that gain.\n",
        single * 1e6,
        1.0 / single,
        total * 1e6,
        (total / single - 1.0) * 100.0,
        busiest * 1e6,
        1.0 / busiest,
        single / busiest,
    ));
}

/// Redis commands per event by command over all nodes (the drains and the latency runs of
/// each topology), with the Redis time they took per event.
fn command_table(drains: &[Run], lats: &[Run], md: &mut String) {
    let mut labels = Vec::new();
    for (what, runs) in [("drain", drains), ("latency", lats)] {
        for t in topos(runs) {
            labels.push(format!("{what}, {t}"));
        }
    }
    let mut names = std::collections::BTreeSet::new();
    for r in drains.iter().chain(lats) {
        names.extend(r.cmdstats.keys().cloned());
    }
    crate::report::command_table(md, &labels, names, |label, name| {
        let (what, topo) = label.split_once(", ").unwrap_or_default();
        let runs = of(if what == "drain" { drains } else { lats }, topo);
        let per = |f: &dyn Fn((u64, u64)) -> u64| {
            median(
                runs.iter()
                    .map(|r| {
                        f(r.cmdstats.get(name).copied().unwrap_or_default()) as f64
                            / r.events as f64
                    })
                    .collect(),
            )
        };
        (per(&|c| c.0), per(&|c| c.1))
    });
}

fn latency_table(lats: &[Run], rate: u64, md: &mut String) {
    md.push_str(&format!(
        "| topology ({rate} events/s) | p50 ms | p99 ms | max ms | received | worker CPU % | Redis CPU % of one core, per node |\n|---|---|---|---|---|---|---|\n"
    ));
    for t in topos(lats) {
        let rs = of(lats, t);
        let l = |k: usize| -> Vec<f64> {
            rs.iter()
                .filter_map(|r| r.lat)
                .map(|x| [x.0, x.1, x.2, x.3][k] as f64 / 1000.0)
                .collect()
        };
        let max = l(2).into_iter().fold(0.0, f64::max);
        let received: u64 = rs
            .iter()
            .filter_map(|r| r.lat)
            .map(|x| x.3)
            .min()
            .unwrap_or(0);
        let sent: u64 = rs.iter().map(|r| r.events).min().unwrap_or(0);
        let nodes = rs.first().map_or(0, |r| r.node_cpu_s.len());
        let per: Vec<String> = (0..nodes)
            .map(|i| {
                format!(
                    "{:.1}",
                    median(
                        rs.iter()
                            .map(|r| r.node_cpu_s[i] / r.secs * 100.0)
                            .collect()
                    )
                )
            })
            .collect();
        md.push_str(&format!(
            "| {t} | {:.2} | {:.2} | {:.1} | {received}/{sent} | {:.1} | {} |\n",
            median(l(0)),
            median(l(1)),
            max,
            median(rs.iter().map(|r| r.worker_cpu_s / r.secs * 100.0).collect()),
            per.join(" / ")
        ));
    }
}

fn wait_table(waits: &[WaitRun], md: &mut String) {
    md.push_str(
        "| publish through the API (8 connections) | publishes/s | p50 ms | p99 ms | `replicated: false` | non-202 |\n|---|---|---|---|---|---|\n",
    );
    for wait in [false, true] {
        let rs: Vec<&WaitRun> = waits.iter().filter(|w| w.wait == wait).collect();
        if rs.is_empty() {
            continue;
        }
        let pct = |p: f64| {
            median(
                rs.iter()
                    .map(|r| {
                        let mut v = r.lat_ns.clone();
                        v.sort_unstable();
                        percentile(&v, p) as f64 / 1e6
                    })
                    .collect(),
            )
        };
        let rates: Vec<f64> = rs.iter().map(|r| r.lat_ns.len() as f64 / r.secs).collect();
        md.push_str(&format!(
            "| {} | {:.0}{} | {:.2} | {:.2} | {} | {} |\n",
            if wait {
                "`wait_replicas = 1` (WAIT 1 100 after each XADD)"
            } else {
                "`wait_replicas = 0` (default)"
            },
            median(rates.clone()),
            spread(&rates),
            pct(50.0),
            pct(99.0),
            rs.iter().map(|r| r.unreplicated).sum::<u64>(),
            rs.iter().map(|r| r.errors).sum::<u64>(),
        ));
    }
}

pub fn markdown(
    drains: &[Run],
    lats: &[Run],
    waits: &[WaitRun],
    events: u64,
    types: u64,
    rate: u64,
    secs: u64,
) -> String {
    let reps = drains.iter().map(|r| r.rep).max().unwrap_or(0);
    let mut md = format!(
        "#### Drain of {events} events over {types} type streams (256-byte data), one event-worker, blackhole route (median of {reps}; spread min–max)\n\n"
    );
    drain_table(drains, &mut md);
    for t in topos(drains) {
        md.push_str(&format!("\nPer node, drain, {t}:\n\n"));
        per_node(drains, t, &mut md);
    }
    projection(drains, &mut md);
    md.push_str(&format!(
        "\n#### Latency at {rate} events/s for {secs} s over the {types} types: publish (XADD sent) to handler start, http route to the local sink (median of {reps}; max = largest)\n\n"
    ));
    latency_table(lats, rate, &mut md);
    md.push_str(
        "\n#### Redis commands per event by command, all nodes (median; in parentheses the Redis time per event they took, from `INFO commandstats`; the bench's own polling is in `xinfo|groups` and `info`)\n\n",
    );
    command_table(drains, lats, &mut md);
    md.push_str(
        "\n#### The cost of `[redis] wait_replicas` (one master, one replica, loopback)\n\n",
    );
    wait_table(waits, &mut md);
    md
}

/// The idle rows: Redis commands and CPU per second of an idle worker, per topology and type
/// count (medians over the repetitions).
pub fn idle_table(idles: &[crate::cluster::IdleRun], secs: u64, md: &mut String) {
    if idles.is_empty() {
        return;
    }
    md.push_str(&format!(
        "\n#### An idle worker ({secs} s measured after it is ready and 2 s more; groups at `$`, nothing published; median)\n\n\
         | topology | types | Redis commands/s (all nodes) | XREADGROUP/s | Redis CPU, % of one core (all nodes) |\n|---|---|---|---|---|\n"
    ));
    let mut rows: Vec<(&str, u64)> = Vec::new();
    for r in idles {
        if !rows.contains(&(r.topo, r.types)) {
            rows.push((r.topo, r.types));
        }
    }
    for (topo, types) in rows {
        let rs: Vec<_> = idles
            .iter()
            .filter(|r| r.topo == topo && r.types == types)
            .collect();
        let m =
            |f: &dyn Fn(&crate::cluster::IdleRun) -> f64| median(rs.iter().map(|r| f(r)).collect());
        md.push_str(&format!(
            "| {topo} | {types} | {:.0} | {:.0} | {:.2} |\n",
            m(&|r| r.node_cmds.iter().sum::<u64>() as f64 / r.secs),
            m(&|r| r.cmdstats.get("xreadgroup").map_or(0, |c| c.0) as f64 / r.secs),
            m(&|r| r.node_cpu_s.iter().sum::<f64>() / r.secs * 100.0),
        ));
    }
}
