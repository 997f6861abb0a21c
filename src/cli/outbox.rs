//! `event-worker outbox ...`: look at and drain an outbox directory (README "Outbox").
//! Both commands take the directory's lock, so they refuse a directory a running daemon owns.

use std::path::{Path, PathBuf};

use clap::Subcommand;

use super::terminal::{escape_text, outln};
use crate::config::Config;
use crate::model::keys::Keys;
use crate::model::time::now_ms;
use crate::ops::publish::NewEvent;
use crate::outbox::{DrainOptions, FsyncPolicy, Log, Options, drain_into, durability_warning};
use crate::redis::store::Store;

/// `event-worker outbox`.
#[derive(Subcommand)]
pub enum OutboxCommand {
    /// Depth, bytes, oldest age and torn records of an outbox directory.
    Status {
        /// The directory (default: outbox.dir of the config).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Publish the events queued in a directory to Redis, oldest first (for a directory whose
    /// owner is gone; a running daemon drains its own).
    Drain {
        /// The directory (default: outbox.dir of the config).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Records published between two acknowledgements (1-10000).
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u16).range(1..=10000))]
        batch: u16,
    },
    /// Test aid: appends `count` events of `size` data bytes, printing `appended <seq>` as
    /// each append returns.
    #[command(hide = true)]
    Fill {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        count: u64,
        #[arg(long, default_value_t = 16)]
        size: usize,
        /// `always` or an interval such as `100ms`.
        #[arg(long, default_value = "always")]
        fsync: String,
        #[arg(long, default_value_t = 256 << 20)]
        max_bytes: u64,
        /// Append `size` raw bytes per record instead of an event (no JSON per append).
        #[arg(long)]
        raw: bool,
        /// After the appends, write half of one more record, print `torn` and wait to be
        /// killed (a crash in the middle of an append).
        #[arg(long)]
        torn_tail: bool,
    },
}

/// Runs one `outbox` command.
pub async fn run(command: OutboxCommand, config: Config, json: bool) -> anyhow::Result<()> {
    match command {
        OutboxCommand::Status { dir } => {
            let dir = existing(dir.as_deref(), &config)?;
            status(&Log::open(&dir, config.outbox.options())?, json);
            Ok(())
        }
        OutboxCommand::Drain { dir, batch } => {
            let dir = existing(dir.as_deref(), &config)?;
            let mut log = Log::open(&dir, config.outbox.options())?;
            let store = Store::connect(&config, "outbox-drain").await?;
            let options = DrainOptions {
                batch: batch.into(),
                limit: None,
            };
            let result = drain_into(
                &store,
                &Keys::new(&config.env),
                &config.publish,
                &mut log,
                options,
            )
            .await;
            store.quit().await;
            let report = result?;
            if json {
                println!(
                    "{}",
                    serde_json::json!({"drained": report.drained, "remaining": report.remaining})
                );
            } else {
                outln!(
                    "drained: {}, remaining: {}",
                    report.drained,
                    report.remaining
                );
            }
            Ok(())
        }
        OutboxCommand::Fill {
            dir,
            count,
            size,
            fsync,
            max_bytes,
            raw,
            torn_tail,
        } => {
            let fsync = match fsync.as_str() {
                "always" => FsyncPolicy::Always,
                other => FsyncPolicy::Interval(crate::config::parse_duration(other)?),
            };
            let options = Options {
                fsync,
                max_bytes,
                segment_bytes: (16 << 20).min(max_bytes),
            };
            let mut log = fill(&dir, count, size, options, raw)?;
            if torn_tail {
                log.write_torn_for_test(&vec![b'x'; size])?;
                println!("torn");
                std::thread::sleep(std::time::Duration::from_secs(60));
            }
            Ok(())
        }
    }
}

/// The directory to open: it must exist (status and drain never create one).
fn existing(dir: Option<&Path>, config: &Config) -> anyhow::Result<PathBuf> {
    let dir = dir.unwrap_or(&config.outbox.dir).to_path_buf();
    if !dir.is_dir() {
        anyhow::bail!(
            "outbox directory {} does not exist, so nothing was queued there; check --dir or \
             outbox.dir",
            dir.display()
        );
    }
    Ok(dir)
}

/// Prints what [`Log::status`] says, and the filesystem warning if any.
fn status(log: &Log, json: bool) {
    let s = log.status();
    let age = s.oldest_time_ms.map(|t| now_ms().saturating_sub(t));
    let warning = durability_warning(log.dir());
    if json {
        let v = serde_json::json!({
            "dir": log.dir().display().to_string(),
            "records": s.records,
            "bytes": s.bytes,
            "max_bytes": s.max_bytes,
            "oldest_age_ms": age,
            "torn_at_open": s.torn_at_open,
            "torn_total": s.torn_total,
            "segments": s.segments,
            "warning": warning,
        });
        println!("{v}");
        return;
    }
    outln!("outbox: {}", escape_text(&log.dir().display().to_string()));
    outln!("records: {}", s.records);
    outln!("bytes: {} of max_bytes {}", s.bytes, s.max_bytes);
    match age {
        Some(ms) => outln!("oldest: {:.1}s ago", ms as f64 / 1000.0),
        None => outln!("oldest: none"),
    }
    outln!(
        "torn records discarded: {} at this open, {} in all",
        s.torn_at_open,
        s.torn_total
    );
    if let Some(w) = warning {
        outln!("warning: {}", escape_text(&w));
    }
}

/// `outbox fill` (hidden): appends test events, one line per returned append.
fn fill(dir: &Path, count: u64, size: usize, options: Options, raw: bool) -> anyhow::Result<Log> {
    use std::io::Write;
    let mut log = Log::open(dir, options)?;
    let data = format!("\"{}\"", "x".repeat(size));
    let mut out = std::io::stdout().lock();
    let bytes = vec![b'x'; size];
    for i in 0..count {
        if raw {
            let seq = log.append(&bytes)?;
            writeln!(out, "appended {seq}")?;
            out.flush()?;
            continue;
        }
        let mut event = NewEvent {
            event_type: "outbox.fill".into(),
            data: data.clone(),
            id: Some(format!("fill-{i}")),
            ..Default::default()
        };
        let seq = crate::outbox::event::append_event(&mut log, &mut event)?;
        writeln!(out, "appended {seq}")?;
        out.flush()?;
    }
    Ok(log)
}
