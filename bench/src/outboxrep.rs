//! The markdown table of the `outbox` scenario (see `outbox.rs`).

use std::fmt::Write as _;

use crate::outbox::{CONNS, DrainRun, Row, RowRun};
use crate::util::percentile;

/// Target of issue 13: the outbox adds at most this share to p99 when Redis is up.
pub const TARGET_P99_OVERHEAD: f64 = 0.05;

/// The measured figures of one run: (p50 ms, p99 ms, max ms, publishes/s, counted, queued).
/// Queued rows leave out each connection's first publish (it waits `fallback_after`) and count
/// the throughput from the moment every first publish was answered.
pub fn figures(r: &RowRun) -> (f64, f64, f64, f64, usize, usize) {
    let frozen = r.row.frozen();
    let counted: Vec<_> = r.samples.iter().filter(|s| !(frozen && s.first)).collect();
    let mut lat: Vec<u64> = counted.iter().map(|s| s.lat_ns).collect();
    lat.sort_unstable();
    let queued = counted.iter().filter(|s| s.queued).count();
    let from_s = if frozen {
        r.samples
            .iter()
            .filter(|s| s.first)
            .map(|s| s.end_ns)
            .max()
            .unwrap_or(0) as f64
            / 1e9
    } else {
        0.0
    };
    let tput = counted.len() as f64 / (r.secs - from_s).max(1e-9);
    let ms = |p| percentile(&lat, p) as f64 / 1e6;
    (
        ms(50.0),
        ms(99.0),
        lat.last().copied().unwrap_or(0) as f64 / 1e6,
        tput,
        counted.len(),
        queued,
    )
}

/// One line for the progress log.
pub fn summary(r: &RowRun) -> String {
    let (p50, p99, max, tput, n, q) = figures(r);
    format!(
        "p50 {p50:.2} ms, p99 {p99:.2} ms, max {max:.1} ms, {tput:.0}/s; {n} counted, {q} queued, {} not 202, {:.1}s",
        r.errors, r.secs
    )
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Median over the repetitions of (p50, p99, throughput) for one row.
fn medians(runs: &[RowRun], row: Row) -> Option<(f64, f64, f64)> {
    let f: Vec<_> = runs.iter().filter(|r| r.row == row).map(figures).collect();
    if f.is_empty() {
        return None;
    }
    Some((
        median(f.iter().map(|x| x.0).collect()),
        median(f.iter().map(|x| x.1).collect()),
        median(f.iter().map(|x| x.3).collect()),
    ))
}

/// The markdown table.
pub fn table(rows: &[Row], runs: &[RowRun], drains: &[DrainRun], events: u64) -> String {
    let mut md = String::new();
    let reps = runs.iter().map(|r| r.rep).max().unwrap_or(0);
    let _ = writeln!(
        md,
        "{events} publishes per row through `POST /api/events/publish` ({CONNS} keep-alive \
         connections, each serial, unique ids, 240-byte data), rows interleaved, {reps} \
         repetitions; medians over the repetitions (each repetition's p50 / p99 in brackets). \
         Queued rows leave out each connection's first publish (it waits `fallback_after`, 1 s).\n"
    );
    md.push_str(
        "| row | p50 / p99 (ms) | publishes/s | answered | each repetition p50 / p99 (ms) |\n",
    );
    md.push_str("| --- | --- | --- | --- | --- |\n");
    for &row in rows {
        let Some((p50, p99, tput)) = medians(runs, row) else {
            continue;
        };
        let mine: Vec<_> = runs.iter().filter(|r| r.row == row).collect();
        let (mut n, mut q, mut bad) = (0, 0, 0);
        let mut each = Vec::new();
        for r in &mine {
            let f = figures(r);
            n += f.4;
            q += f.5;
            bad += r.errors;
            each.push(format!("{:.2} / {:.2}", f.0, f.1));
        }
        let _ = writeln!(
            md,
            "| {} | {p50:.2} / {p99:.2} | {tput:.0} | {n} counted: {q} queued, {} direct, {bad} not 202 | {} |",
            row.label(),
            n - q,
            each.join("; ")
        );
    }
    let up = medians(runs, Row::Up);
    let base = medians(runs, Row::Base);
    let off = medians(runs, Row::Off);
    md.push_str("\n| target | measured | result |\n| --- | --- | --- |\n");
    if let (Some(up), Some(off)) = (up, off) {
        let over = up.1 / off.1.max(1e-9) - 1.0;
        let _ = writeln!(
            md,
            "| p99 with the outbox on and Redis up, over the outbox off (same build) | {:+.1}% ({:.2} vs {:.2} ms) | <= {:.0}%: {} |",
            over * 100.0,
            up.1,
            off.1,
            TARGET_P99_OVERHEAD * 100.0,
            pass(over <= TARGET_P99_OVERHEAD)
        );
    }
    match (up, base) {
        (Some(up), Some(base)) => {
            let over = up.1 / base.1.max(1e-9) - 1.0;
            let _ = writeln!(
                md,
                "| p99 with the outbox on and Redis up, over the commit before the outbox (@base) | {:+.1}% ({:.2} vs {:.2} ms) | <= {:.0}%: {} |",
                over * 100.0,
                up.1,
                base.1,
                TARGET_P99_OVERHEAD * 100.0,
                pass(over <= TARGET_P99_OVERHEAD)
            );
        }
        _ => md.push_str(
            "| over the commit before the outbox | not measured (run with --base-rev) | - |\n",
        ),
    }
    md.push_str("\n| drain | events | `outbox fill` (fsync 100ms) | worker start to first entry | first entry to all in the stream | drain rate |\n");
    md.push_str("| --- | --- | --- | --- | --- | --- |\n");
    for d in drains {
        let _ = writeln!(
            md,
            "| `drain_rate = {}`{} | {} | {:.1} s ({:.0}/s) | {:.2} s | {:.2} s{} | {:.0}/s |",
            d.rate,
            if d.rate == 1000 { " (default)" } else { "" },
            d.events,
            d.fill_s,
            d.events as f64 / d.fill_s.max(1e-9),
            d.first_s,
            d.drain_s,
            if d.done { "" } else { " (NOT all: timed out)" },
            d.events as f64 / d.drain_s.max(1e-9)
        );
    }
    md
}

fn pass(ok: bool) -> &'static str {
    if ok { "pass" } else { "MISSED" }
}
