//! Markdown tables (medians, spreads, ratios, targets) and a TSV of every sample.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::Path;

use crate::orch::{Kind, Sample};

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn spread(v: &[f64]) -> (f64, f64) {
    let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    (lo, hi)
}

fn k(v: f64) -> String {
    if v.is_nan() {
        "-".into()
    } else if v >= 10_000.0 {
        format!("{:.1}k", v / 1000.0)
    } else {
        format!("{v:.0}")
    }
}

fn rate_cells(ss: &[&Sample], f: impl Fn(&Sample) -> f64) -> (String, String) {
    let v: Vec<f64> = ss.iter().map(|s| f(s)).collect();
    let (lo, hi) = spread(&v);
    let m = median(v.clone());
    let pct = if m > 0.0 { (hi - lo) / m * 100.0 } else { 0.0 };
    (k(m), format!("{}–{} (±{:.0}%)", k(lo), k(hi), pct / 2.0))
}

fn med(ss: &[&Sample], f: impl Fn(&Sample) -> f64) -> f64 {
    median(ss.iter().map(|s| f(s)).collect())
}

fn of<'a>(samples: &'a [Sample], section: &str, label: &str) -> Vec<&'a Sample> {
    samples
        .iter()
        .filter(|s| s.section == section && s.label == label)
        .collect()
}

/// Median over repetitions of (sample rate / raw 1-conn rate of the same repetition).
fn ratio_to_raw(samples: &[Sample], section: &str, label: &str) -> f64 {
    let raw = Kind::Raw {
        conns: 1,
        batch_ack: false,
    }
    .label();
    let v: Vec<f64> = of(samples, section, label)
        .iter()
        .filter_map(|s| {
            of(samples, section, &raw)
                .into_iter()
                .find(|r| r.rep == s.rep)
                .map(|r| s.rate() / r.rate())
        })
        .collect();
    median(v)
}

/// Median over repetitions of (sample rate / the reference's rate in the same repetition and
/// section): the reference is the pipelined batch-ack raw loop ([`Kind::RawNext`]).
fn ratio_to_ref(samples: &[Sample], section: &str, label: &str) -> f64 {
    ratio_per_rep(samples, section, label, &Kind::RawNext.label())
}

/// The median over repetitions of `a`'s drain rate over `b`'s in the same repetition (NaN
/// when either was not measured).
fn ratio_per_rep(samples: &[Sample], section: &str, a: &str, b: &str) -> f64 {
    let bs = of(samples, section, b);
    let v: Vec<f64> = of(samples, section, a)
        .iter()
        .filter_map(|s| {
            bs.iter()
                .find(|r| r.rep == s.rep)
                .map(|r| s.rate() / r.rate())
        })
        .collect();
    median(v)
}

/// The reference's median drain rate in the drain section (NaN when it was not measured).
fn ref_rate(samples: &[Sample]) -> f64 {
    med(&of(samples, "drain", &Kind::RawNext.label()), Sample::rate)
}

fn foreign_line(ss: &[&Sample]) -> String {
    let worst = ss
        .iter()
        .map(|s| (s.foreign_cpu_s, s.foreign_cpu_s / s.window_s.max(1e-9)))
        .fold((0.0f64, 0.0f64), |a, b| if b.1 > a.1 { b } else { a });
    format!(
        "CPU used by other processes during these samples: at most {:.2} s in one sample ({:.0}% of one core over its duration).",
        worst.0,
        worst.1 * 100.0
    )
}

fn notes(out: &mut String, ss: &[&Sample]) {
    let mut seen = BTreeSet::new();
    for s in ss {
        for n in &s.notes {
            if seen.insert(format!("{}: {n}", s.label)) {
                let _ = writeln!(out, "- NOTE ({}, rep {}): {n}", s.label, s.rep + 1);
            }
        }
    }
}

pub fn markdown(samples: &[Sample], backlog: u64, reps: usize, lat_secs: f64) -> String {
    let mut o = String::new();
    let raw1 = Kind::Raw {
        conns: 1,
        batch_ack: false,
    }
    .label();
    let ew = Kind::EwBlackhole.label();
    let http = Kind::EwHttp.label();

    // Drain.
    let drain: Vec<&Sample> = samples.iter().filter(|s| s.section == "drain").collect();
    let mut raw_redis_us = f64::NAN;
    let mut ew_redis_us = f64::NAN;
    let mut ew_cpu_us = f64::NAN;
    let mut ew_ratio = f64::NAN;
    let mut ref_redis_us = f64::NAN;
    if !drain.is_empty() {
        let _ = writeln!(
            o,
            "### Drain of a {backlog}-event backlog (median of {reps}; spread min–max)\n"
        );
        let _ = writeln!(
            o,
            "| consumer | events/s | spread | x the reference | ratio to raw 1-conn | worker CPU s per 1M events | peak RSS MB | Redis commands per event | Redis CPU µs per event | process start to first read ms |"
        );
        let _ = writeln!(
            o,
            "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
        );
        let mut labels: Vec<String> = Vec::new();
        for s in &drain {
            if !labels.contains(&s.label) {
                labels.push(s.label.clone());
            }
        }
        labels.sort_by_key(|l| {
            (
                l.starts_with("diagnostic"),
                !l.starts_with("raw"),
                l.contains("http"),
                l.clone(),
            )
        });
        for label in &labels {
            let ss = of(samples, "drain", label);
            let (m, sp) = rate_cells(&ss, Sample::rate);
            let ratio = ratio_to_raw(samples, "drain", label);
            let redis_us = med(&ss, |s| s.per_event(s.redis_cpu_s) * 1e6);
            if *label == raw1 {
                raw_redis_us = redis_us;
            }
            if *label == ew {
                ew_redis_us = redis_us;
                ew_cpu_us = med(&ss, |s| s.per_event(s.cpu_s) * 1e6);
                ew_ratio = ratio;
            }
            if *label == Kind::RawNext.label() {
                ref_redis_us = redis_us;
            }
            let _ = writeln!(
                o,
                "| {label} | {m} | {sp} | {:.2}x | {:.2}x | {:.2} | {:.1} | {:.3} | {:.2} | {:.0} |",
                ratio_to_ref(samples, "drain", label),
                ratio,
                med(&ss, |s| s.per_event(s.cpu_s) * 1e6),
                med(&ss, |s| s.rss_kb as f64 / 1024.0),
                med(&ss, |s| s.per_event(s.cmds as f64)),
                redis_us,
                med(&ss, |s| s.first_s * 1000.0),
            );
        }
        let hs = of(samples, "drain", &http);
        if !hs.is_empty() {
            let _ = writeln!(
                o,
                "\nThe sink of the http row used {:.2} CPU s per 1M events on top (same 2 cores).",
                med(&hs, |s| s.per_event(s.sink_cpu_s) * 1e6)
            );
        }
        let relay = Kind::Relay.label();
        let rs = of(samples, "drain", &relay);
        if !hs.is_empty() && !rs.is_empty() {
            let _ = writeln!(
                o,
                "The http route drained {:.2}x the raw HTTP relay's rate (median of the per-repetition ratios) at {:.2} µs of worker CPU per event; the relay used {:.2} µs of its own CPU per event (one thread), its sink {:.2} µs.",
                ratio_per_rep(samples, "drain", &http, &relay),
                med(&hs, |s| s.per_event(s.cpu_s) * 1e6),
                med(&rs, |s| s.per_event(s.cpu_s) * 1e6),
                med(&rs, |s| s.per_event(s.sink_cpu_s) * 1e6),
            );
        }
        let batch = Kind::EwHttpBatch.label();
        let bs = of(samples, "drain", &batch);
        for (what, against) in [("per-event http route", &http), ("raw HTTP relay", &relay)] {
            let ratio = ratio_per_rep(samples, "drain", &batch, against);
            if bs.is_empty() || ratio.is_nan() {
                continue;
            }
            let _ = writeln!(
                o,
                "The batched http route drained {:.2}x the {what}'s rate (median of the per-repetition ratios) at {:.2} µs of worker CPU per event.",
                ratio,
                med(&bs, |s| s.per_event(s.cpu_s) * 1e6),
            );
        }
        let _ = writeln!(
            o,
            "\n\"x the reference\": events/s over the rate of the {} in the same repetition (median of the ratios).",
            Kind::RawNext.label()
        );
        let _ = writeln!(o, "{}", foreign_line(&drain));
        notes(&mut o, &drain);

        // Commands breakdown.
        let _ = writeln!(
            o,
            "\nRedis commands per event by command, and Redis time per event they took in µs (medians; from `INFO commandstats`, where the calls a Lua script makes are counted too, inside the script's own time):\n"
        );
        let mut names: BTreeSet<String> = BTreeSet::new();
        for s in &drain {
            names.extend(s.cmdstats.keys().cloned());
        }
        command_table(&mut o, &labels, names, |l, name| {
            let ss = of(samples, "drain", l);
            let get = |s: &Sample| s.cmdstats.get(name).copied().unwrap_or((0, 0));
            (
                med(&ss, |s| s.per_event(get(s).0 as f64)),
                med(&ss, |s| s.per_event(get(s).1 as f64)),
            )
        });
    }

    // Backlog size.
    let bl = of(samples, "backlog", &Kind::EwBlackhole.label());
    let bl_ref = of(samples, "backlog", &Kind::RawNext.label());
    let mut flat_pct = f64::NAN;
    let mut ref_flat_pct = f64::NAN;
    // The same, first read to last XACK (process start left out).
    let mut read_flat_pct = f64::NAN;
    let mut ref_read_flat_pct = f64::NAN;
    let mut rss_big = f64::NAN;
    let mut rss_small = f64::NAN;
    let mut big = 0;
    if !bl.is_empty() {
        let _ = writeln!(
            o,
            "\n### event-worker (blackhole) by backlog size: drain rate and memory (medians; backlogs of up to {} sampled {} times per repetition, {reps} repetitions)\n",
            crate::orch::SMALL_BACKLOG,
            crate::orch::SMALL_BACKLOG_SAMPLES
        );
        let _ = writeln!(
            o,
            "| backlog | events/s, process start to last XACK | spread | x the reference | events/s, first read to last XACK | peak RSS MB | worker CPU s per 1M events | the reference at this backlog, events/s (process start to last XACK; first read to last XACK) |"
        );
        let _ = writeln!(
            o,
            "| ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: |"
        );
        let sizes: BTreeSet<u64> = bl.iter().map(|s| s.backlog).collect();
        let mut steady = Vec::new();
        let mut ref_rates = Vec::new();
        let mut from_read = Vec::new();
        let mut ref_from_read = Vec::new();
        for &n in &sizes {
            let ss: Vec<&Sample> = bl.iter().copied().filter(|s| s.backlog == n).collect();
            let rs: Vec<&Sample> = bl_ref.iter().copied().filter(|s| s.backlog == n).collect();
            let (m, sp) = rate_cells(&ss, Sample::rate);
            let st = med(&ss, Sample::steady_rate);
            steady.push(med(&ss, Sample::rate));
            from_read.push(st);
            // Over the reference at this backlog when it ran, else at the drain section's.
            let (reference, ref_here) = if rs.is_empty() {
                ("-".to_string(), ref_rate(samples))
            } else {
                ref_rates.push(med(&rs, Sample::rate));
                ref_from_read.push(med(&rs, Sample::steady_rate));
                let (rm, rsp) = rate_cells(&rs, Sample::rate);
                let cell = format!("{rm} {rsp}; {}", k(med(&rs, Sample::steady_rate)));
                (cell, med(&rs, Sample::rate))
            };
            let rss = med(&ss, |s| s.rss_kb as f64 / 1024.0);
            if rss_small.is_nan() {
                rss_small = rss;
            }
            rss_big = rss;
            big = n;
            let _ = writeln!(
                o,
                "| {n} | {m} | {sp} | {:.2}x | {} | {rss:.1} | {:.2} | {reference} |",
                med(&ss, Sample::rate) / ref_here,
                k(st),
                med(&ss, |s| s.per_event(s.cpu_s) * 1e6)
            );
        }
        let below = |rates: &[f64]| {
            let (lo, hi) = spread(rates);
            (hi - lo) / hi * 100.0
        };
        flat_pct = below(&steady);
        read_flat_pct = below(&from_read);
        if ref_rates.len() == sizes.len() {
            ref_flat_pct = below(&ref_rates);
            ref_read_flat_pct = below(&ref_from_read);
            let _ = writeln!(
                o,
                "\nThe reference's own drain rate (process start to last XACK) from the smallest to the largest backlog: slowest {ref_flat_pct:.0}% below fastest; event-worker's: {flat_pct:.0}%. From first read to last XACK (process start left out): the reference's {ref_read_flat_pct:.0}%, event-worker's {read_flat_pct:.0}%."
            );
        }
        let _ = writeln!(
            o,
            "\n\"x the reference\": over the median rate of the {} draining the same backlog in this section (process start to last XACK, both).",
            Kind::RawNext.label()
        );
        let all: Vec<&Sample> = bl.iter().chain(&bl_ref).copied().collect();
        let _ = writeln!(o, "{}", foreign_line(&all));
        notes(&mut o, &all);
    }

    // Scale-out.
    let sc: Vec<&Sample> = samples.iter().filter(|s| s.section == "scale").collect();
    if !sc.is_empty() {
        let _ = writeln!(
            o,
            "\n### Scale-out: event-worker processes (blackhole) on one stream, {backlog}-event backlog (median of {reps})\n"
        );
        let _ = writeln!(
            o,
            "| processes | events/s | spread | x of 1 process | x the reference | Redis busy, % of its one core | Redis CPU µs per event | worker CPU s per 1M events (all processes) | peak RSS MB (largest process) |"
        );
        let _ = writeln!(
            o,
            "| ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |"
        );
        let counts: BTreeSet<usize> = sc.iter().map(|s| s.procs).collect();
        let one = median(
            sc.iter()
                .filter(|s| s.procs == 1)
                .map(|s| s.rate())
                .collect(),
        );
        for &n in &counts {
            let ss: Vec<&Sample> = sc.iter().copied().filter(|s| s.procs == n).collect();
            let (m, sp) = rate_cells(&ss, Sample::rate);
            let _ = writeln!(
                o,
                "| {n} | {m} | {sp} | {:.2}x | {:.2}x | {:.0}% | {:.2} | {:.2} | {:.1} |",
                med(&ss, Sample::rate) / one,
                med(&ss, Sample::rate) / ref_rate(samples),
                med(&ss, |s| s.redis_cpu_s / s.wall_s * 100.0),
                med(&ss, |s| s.per_event(s.redis_cpu_s) * 1e6),
                med(&ss, |s| s.per_event(s.cpu_s) * 1e6),
                med(&ss, |s| s.rss_kb as f64 / 1024.0),
            );
        }
        let _ = writeln!(
            o,
            "\n\"x the reference\": over the median rate of the {} in the drain section of this run.",
            Kind::RawNext.label()
        );
        let _ = writeln!(o, "{}", foreign_line(&sc));
        notes(&mut o, &sc);
    }

    // Latency.
    let la: Vec<&Sample> = samples.iter().filter(|s| s.section == "latency").collect();
    let mut p99_10k = f64::NAN;
    let mut p99_half = (f64::NAN, 0u64);
    if !la.is_empty() {
        let _ = writeln!(
            o,
            "\n### Latency at a fixed publish rate, {lat_secs} s per run: publish (XADD sent) to handler start (median of {reps}; max = largest of all runs)\n"
        );
        let _ = writeln!(
            o,
            "| rate /s | consumer | achieved rate /s | p50 ms | p99 ms | p99 / the reference's p99 | p99 spread ms | max ms | worker CPU s per 1M events | Redis commands per event (publisher's XADD excluded) |"
        );
        let _ = writeln!(
            o,
            "| ---: | --- | ---: | ---: | ---: | ---: | --- | ---: | ---: | ---: |"
        );
        let rates: BTreeSet<u64> = la.iter().map(|s| s.rate_target).collect();
        let reference = Kind::RawNext.label();
        let relay_label = Kind::Relay.label();
        let p99_of = |r: u64, label: &str| {
            let v: Vec<f64> = la
                .iter()
                .filter(|s| s.rate_target == r && s.label == label)
                .map(|s| *s.lat.get("p99_us").unwrap_or(&0) as f64 / 1000.0)
                .collect();
            median(v)
        };
        for &r in &rates {
            for label in [&reference, &raw1, &relay_label, &http] {
                let ss: Vec<&Sample> = la
                    .iter()
                    .copied()
                    .filter(|s| s.rate_target == r && &s.label == label)
                    .collect();
                if ss.is_empty() {
                    continue;
                }
                let ms = |key: &'static str| {
                    move |s: &Sample| *s.lat.get(key).unwrap_or(&0) as f64 / 1000.0
                };
                let p99s: Vec<f64> = ss.iter().map(|s| ms("p99_us")(s)).collect();
                let (lo, hi) = spread(&p99s);
                let p99 = median(p99s);
                if r == 10_000 && *label == http {
                    p99_10k = p99;
                }
                if r != 1_000 && r != 10_000 && *label == http {
                    p99_half = (p99, r);
                }
                let _ = writeln!(
                    o,
                    "| {}{} | {label} | {:.0} | {:.2} | {p99:.2} | {} | {lo:.2}–{hi:.2} | {:.2} | {:.2} | {:.3} |",
                    r,
                    if r == 1_000 || r == 10_000 {
                        ""
                    } else {
                        " (half the relay's drain rate)"
                    },
                    med(&ss, |s| s.achieved_rate),
                    med(&ss, ms("p50_us")),
                    match p99 / p99_of(r, &reference) {
                        x if x.is_nan() => "-".to_string(),
                        x => format!("{x:.2}x"),
                    },
                    ss.iter().map(|s| ms("max_us")(s)).fold(0.0, f64::max),
                    med(&ss, |s| s.per_event(s.cpu_s) * 1e6),
                    med(&ss, |s| s.per_event(s.cmds as f64)),
                );
            }
        }
        let _ = writeln!(
            o,
            "\nraw loops: the time they parse the entry; event-worker and the raw HTTP relay: the time the HTTP sink has the request's head (handler start plus one loopback request)."
        );
        for &r in &rates {
            let (ours, relay) = (p99_of(r, &http), p99_of(r, &relay_label));
            if ours.is_finite() && relay.is_finite() && relay > 0.0 {
                let _ = writeln!(
                    o,
                    "At {r}/s the http route's p99 was {:.2}x the raw HTTP relay's ({ours:.2} against {relay:.2} ms).",
                    ours / relay
                );
            }
        }
        let _ = writeln!(o, "{}", foreign_line(&la));
        notes(&mut o, &la);
    }

    // Targets.
    let _ = writeln!(o, "\n### Targets\n");
    let _ = writeln!(o, "| target | measured | met |");
    let _ = writeln!(o, "| --- | --- | --- |");
    let yes = |b: bool| if b { "yes" } else { "**no**" };
    if !ew_ratio.is_nan() {
        let _ = writeln!(
            o,
            "| blackhole drain >= 0.8x the 1-conn raw loop (0.6x floor) | {ew_ratio:.2}x | {} |",
            if ew_ratio >= 0.8 {
                "yes"
            } else if ew_ratio >= 0.6 {
                "floor only"
            } else {
                "**no**"
            }
        );
    }
    if !flat_pct.is_nan() {
        let _ = writeln!(
            o,
            "| drain rate flat in backlog size (within 15%) | slowest {flat_pct:.0}% below fastest (process start to last XACK; first read to last XACK: {read_flat_pct:.0}%){} | {} |",
            if ref_flat_pct.is_nan() {
                String::new()
            } else {
                format!("; the reference's own: {ref_flat_pct:.0}% ({ref_read_flat_pct:.0}%)")
            },
            yes(flat_pct <= 15.0)
        );
    }
    if !ew_redis_us.is_nan() && !raw_redis_us.is_nan() {
        let r = ew_redis_us / raw_redis_us;
        let _ = writeln!(
            o,
            "| Redis CPU per event <= 2x the raw loop's | {ew_redis_us:.2} µs vs {raw_redis_us:.2} µs = {r:.2}x | {} |",
            yes(r <= 2.0)
        );
    }
    let ref_ratio = ratio_to_ref(samples, "drain", &ew);
    if !ref_ratio.is_nan() {
        let _ = writeln!(
            o,
            "| blackhole drain >= 0.7x the reference (batch XACK pipelined with the next read) | {ref_ratio:.2}x | {} |",
            yes(ref_ratio >= 0.7)
        );
    }
    if !ew_redis_us.is_nan() && !ref_redis_us.is_nan() {
        let r = ew_redis_us / ref_redis_us;
        let _ = writeln!(
            o,
            "| Redis CPU per event <= 2x the reference's | {ew_redis_us:.2} µs vs {ref_redis_us:.2} µs = {r:.2}x | {} |",
            yes(r <= 2.0)
        );
    }
    if !ew_cpu_us.is_nan() {
        let _ = writeln!(
            o,
            "| worker CPU per event <= 3 µs (blackhole drain) | {ew_cpu_us:.2} µs | {} |",
            yes(ew_cpu_us <= 3.0)
        );
    }
    let (hs, rs) = (
        of(samples, "drain", &http),
        of(samples, "drain", &Kind::Relay.label()),
    );
    if !hs.is_empty() && !rs.is_empty() {
        let r = med(&hs, Sample::rate) / med(&rs, Sample::rate);
        let cpu = med(&hs, |s| s.per_event(s.cpu_s) * 1e6);
        let _ = writeln!(
            o,
            "| http route >= 1.0x the raw HTTP relay, <= 15 µs of worker CPU per event | {r:.2}x (medians), {cpu:.2} µs | {} |",
            yes(r >= 1.0 && cpu <= 15.0)
        );
    }
    let batched = ratio_per_rep(samples, "drain", &Kind::EwHttpBatch.label(), &http);
    if !batched.is_nan() {
        let _ = writeln!(
            o,
            "| batched http route (max_events 64) >= 2x the per-event http route | {batched:.2}x | {} |",
            yes(batched >= 2.0)
        );
    }
    let bullmq = ratio_per_rep(samples, "drain", &ew, &Kind::BullMq.label());
    if !bullmq.is_nan() {
        let _ = writeln!(
            o,
            "| blackhole drain >= 8x BullMQ 6 (concurrency 50) | {bullmq:.2}x | {} |",
            yes(bullmq >= 8.0)
        );
    }
    if !p99_10k.is_nan() {
        let _ = writeln!(
            o,
            "| p99 publish-to-handler (http route) <= 1 ms at 10k/s | {p99_10k:.2} ms | {} |",
            yes(p99_10k <= 1.0)
        );
    }
    if !p99_half.0.is_nan() {
        let (p99, r) = p99_half;
        let _ = writeln!(
            o,
            "| p99 publish-to-handler (http route) <= 5 ms at half the raw HTTP relay's drain rate ({r}/s) | {p99:.2} ms | {} |",
            yes(p99 <= 5.0)
        );
    }
    if !rss_big.is_nan() {
        let _ = writeln!(
            o,
            "| peak RSS <= 30 MB at a 1M backlog | {rss_big:.1} MB at {big} ({rss_small:.1} MB at the smallest backlog) | {} |",
            yes(rss_big <= 30.0 && big >= 1_000_000)
        );
    }
    o
}

/// A table of Redis commands per event (and µs of Redis time per event) by command: one row
/// per name in `names`, one column per label; `cell(label, name)` gives `(calls, µs)` per
/// event. Rows below 0.0005 calls per event in every column are left out.
pub fn command_table(
    o: &mut String,
    labels: &[String],
    names: BTreeSet<String>,
    cell: impl Fn(&str, &str) -> (f64, f64),
) {
    let _ = write!(o, "| command |");
    for l in labels {
        let _ = write!(o, " {l} |");
    }
    let _ = write!(o, "\n| --- |");
    for _ in labels {
        let _ = write!(o, " ---: |");
    }
    let _ = writeln!(o);
    for name in names {
        let cells: Vec<(f64, f64)> = labels.iter().map(|l| cell(l, &name)).collect();
        if cells.iter().all(|c| c.0 < 0.0005) {
            continue;
        }
        let _ = write!(o, "| `{name}` |");
        for (c, us) in cells {
            if c < 0.0005 {
                let _ = write!(o, " - |");
            } else {
                let _ = write!(o, " {c:.3} ({us:.2} µs) |");
            }
        }
        let _ = writeln!(o);
    }
}

pub fn write_tsv(path: &Path, samples: &[Sample]) -> Result<(), String> {
    let mut o = String::from(
        "section\tlabel\trep\tprocs\tbacklog\tevents\twall_s\tfirst_s\tcpu_s\trss_kb\tsink_cpu_s\tredis_cpu_s\tcmds\tforeign_cpu_s\trate_target\tachieved_rate\tlat\tcmdstats\tnotes\n",
    );
    for s in samples {
        let lat: BTreeMap<_, _> = s.lat.clone();
        let _ = writeln!(
            o,
            "{}\t{}\t{}\t{}\t{}\t{}\t{:.4}\t{:.4}\t{:.3}\t{}\t{:.3}\t{:.4}\t{}\t{:.3}\t{}\t{:.1}\t{:?}\t{:?}\t{}",
            s.section,
            s.label,
            s.rep,
            s.procs,
            s.backlog,
            s.events,
            s.wall_s,
            s.first_s,
            s.cpu_s,
            s.rss_kb,
            s.sink_cpu_s,
            s.redis_cpu_s,
            s.cmds,
            s.foreign_cpu_s,
            s.rate_target,
            s.achieved_rate,
            lat,
            s.cmdstats,
            s.notes.join("; ")
        );
    }
    std::fs::write(path, o).map_err(|e| format!("{}: {e}", path.display()))
}
