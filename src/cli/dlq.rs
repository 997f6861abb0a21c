//! `event-worker dlq ...`: the operator's DLQ commands, human tables by default and JSON
//! with `--json`. All logic lives in the library's `dlq` module (shared with the HTTP API).

use super::terminal::{escape_line, outln};
use crate::config::{Config, parse_duration};
use crate::model::envelope::truncate;
use crate::model::keys::Keys;
use crate::ops::coordination::{self, notice};
use crate::ops::dlq::{self, DlqEntry, DlqFilter, ReplayOptions, Selection};
use crate::ops::history::HistoryQuery;
use crate::redis::store::Store;
use anyhow::bail;
use clap::{Args, Subcommand};
use serde_json::json;

/// DLQ subcommands.
#[derive(Subcommand)]
pub enum DlqCommand {
    /// DLQ entries, newest first.
    List {
        #[command(flatten)]
        filter: FilterArgs,
        /// Most entries shown (1-1000).
        #[arg(long, default_value_t = 50)]
        limit: usize,
        /// Show entries older than this DLQ entry id (the `next` of a previous page).
        #[arg(long)]
        before: Option<String>,
    },
    /// One entry with all its fields.
    Show {
        /// DLQ entry id, e.g. 1700000000000-0.
        id: String,
    },
    /// Totals by reason, type and group; oldest and newest.
    Stats,
    /// Count the DLQ again from its entries (after entries were added or removed without the
    /// worker, e.g. by a direct XADD or an older version).
    Recount,
    /// Put entries back to their failed group's redeliver stream, attempt 0.
    Replay {
        #[command(flatten)]
        select: SelectArgs,
        /// Show the count and a sample; change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Most replays per second.
        #[arg(long)]
        rate: Option<f64>,
        /// Replay N first, wait for their outcome, stop if any fails again.
        #[arg(long)]
        canary: Option<usize>,
        /// How long to wait for the canaries' outcome.
        #[arg(long, default_value = "60s")]
        canary_timeout: String,
    },
    /// Delete entries for good (refuses without --yes).
    Purge {
        #[command(flatten)]
        select: SelectArgs,
        /// Count only; delete nothing.
        #[arg(long)]
        dry_run: bool,
        /// Confirm the deletion.
        #[arg(long)]
        yes: bool,
    },
}

/// Filters of list, replay and purge.
#[derive(Args, Default)]
pub struct FilterArgs {
    /// Event type.
    #[arg(long = "type")]
    event_type: Option<String>,
    // The help names every `dlq_record::Reason`.
    #[arg(long, help = crate::settle::dlq_record::REASON_HELP)]
    reason: Option<String>,
    /// Group that failed the event.
    #[arg(long)]
    group: Option<String>,
    /// Text in the last error (case-insensitive).
    #[arg(long)]
    grep: Option<String>,
    /// Dead-lettered within this long, e.g. 2h.
    #[arg(long)]
    since: Option<String>,
}

/// What replay and purge act on.
#[derive(Args)]
pub struct SelectArgs {
    /// DLQ entry ids (repeatable).
    #[arg(long = "id")]
    ids: Vec<String>,
    /// Every entry.
    #[arg(long)]
    all: bool,
    /// Dead-lettered at least this long ago, e.g. 7d.
    #[arg(long)]
    older_than: Option<String>,
    #[command(flatten)]
    filter: FilterArgs,
}

impl FilterArgs {
    fn to_filter(&self, older_than: Option<String>) -> DlqFilter {
        DlqFilter {
            event_type: self.event_type.clone(),
            reason: self.reason.clone(),
            group: self.group.clone(),
            grep: self.grep.clone(),
            since: self.since.clone(),
            older_than,
        }
    }
}

impl SelectArgs {
    fn selection(&self) -> anyhow::Result<Selection> {
        let filter = self.filter.to_filter(self.older_than.clone());
        let has_filter = filter != DlqFilter::default();
        match (!self.ids.is_empty(), self.all, has_filter) {
            (true, false, false) => Ok(Selection::Ids(self.ids.clone())),
            (false, true, false) => Ok(Selection::All),
            (false, false, true) => Ok(Selection::Filter(filter)),
            (false, false, false) => bail!(
                "select entries with --id, --all, or filters (--type, --reason, --group, --grep, --since, --older-than)"
            ),
            _ => bail!("give only one of --id, --all, or filters"),
        }
    }
}

/// Runs one DLQ command.
pub async fn run(command: DlqCommand, config: Config, json: bool) -> anyhow::Result<()> {
    if let DlqCommand::Purge {
        yes: false,
        dry_run: false,
        ..
    } = &command
    {
        bail!("purge deletes DLQ entries for good: add --yes (or --dry-run to count first)");
    }
    let store = Store::connect(&config, "dlq-cli").await?;
    let keys = Keys::new(&config.env);
    let result = execute(command, &config, &store, &keys, json).await;
    store.quit().await;
    result
}

async fn execute(
    command: DlqCommand,
    config: &Config,
    store: &Store,
    keys: &Keys,
    json: bool,
) -> anyhow::Result<()> {
    let cx = Cx {
        config,
        store,
        keys,
        json,
    };
    match command {
        DlqCommand::List {
            filter,
            limit,
            before,
        } => {
            cx.list(&filter.to_filter(None), limit, before.as_deref())
                .await
        }
        DlqCommand::Show { id } => cx.show(&id).await,
        DlqCommand::Stats => cx.stats().await,
        DlqCommand::Recount => cx.recount().await,
        DlqCommand::Replay {
            select,
            dry_run,
            rate,
            canary,
            canary_timeout,
        } => {
            if rate.is_some_and(|r| r.is_nan() || r <= 0.0) {
                bail!("--rate must be above 0");
            }
            let opts = ReplayOptions {
                dry_run,
                rate,
                canary,
                canary_timeout: parse_duration(&canary_timeout)
                    .map_err(|e| anyhow::anyhow!("--canary-timeout: {e}"))?,
                actor: "cli".into(),
                history_max_len: config.history.max_len,
            };
            cx.replay(&select.selection()?, &opts).await
        }
        DlqCommand::Purge {
            select, dry_run, ..
        } => cx.purge(&select.selection()?, dry_run).await,
    }
}

/// What every `dlq` subcommand works with.
struct Cx<'a> {
    config: &'a Config,
    store: &'a Store,
    keys: &'a Keys,
    json: bool,
}

impl Cx<'_> {
    async fn list(
        &self,
        filter: &dlq::DlqFilter,
        limit: usize,
        before: Option<&str>,
    ) -> anyhow::Result<()> {
        let page = dlq::list(self.store, self.keys, filter, limit, before).await?;
        if self.json {
            let entries: Vec<_> = page.entries.iter().map(DlqEntry::summary).collect();
            println!("{}", json!({"entries": entries, "next": page.next}));
        } else {
            print_table(&page.entries);
            if let Some(next) = page.next {
                outln!("more: --before {next}");
            }
        }
        Ok(())
    }

    async fn show(&self, id: &str) -> anyhow::Result<()> {
        match dlq::show(self.store, self.keys, id).await? {
            Some(e) if self.json => println!("{}", e.to_json()),
            Some(e) => {
                outln!("entry_id: {}", e.entry_id);
                for (k, v) in &e.fields {
                    outln!("{k}: {v}");
                }
            }
            None => bail!("no DLQ entry {id} in {}", self.keys.dlq()),
        }
        Ok(())
    }

    async fn stats(&self) -> anyhow::Result<()> {
        let s = dlq::stats(self.store, self.keys).await?;
        if self.json {
            println!("{}", serde_json::to_string(&s)?);
            return Ok(());
        }
        outln!("total: {}", s.total);
        if let Some(note) = &s.note {
            outln!("incomplete: {}", escape_line(note));
        }
        for (title, map) in [
            ("by reason", &s.by_reason),
            ("by type", &s.by_type),
            ("by group", &s.by_group),
        ] {
            outln!("{title}:");
            for (k, n) in map {
                let k = if k.is_empty() { "(none)" } else { k };
                outln!("  {:<40} {n}", escape_line(k));
            }
        }
        if let (Some(o), Some(n)) = (&s.oldest, &s.newest) {
            outln!("oldest: id={} time={}", o.id, o.time);
            outln!("newest: id={} time={}", n.id, n.time);
        }
        Ok(())
    }

    async fn recount(&self) -> anyhow::Result<()> {
        let started = std::time::Instant::now();
        let r = dlq::recount(self.store, self.keys, u64::MAX).await?;
        let secs = started.elapsed().as_secs_f64();
        if self.json {
            println!(
                "{}",
                json!({"counted": r.counted, "steps": r.steps, "seconds": secs})
            );
        } else {
            outln!(
                "counted {} DLQ entries in {} steps ({secs:.1} s)",
                r.counted,
                r.steps
            );
        }
        Ok(())
    }

    /// Tells the other instances what an operator did (best effort).
    async fn notify(&self, kind: &str, count: u64) {
        let n = notice(
            kind,
            &self.config.env,
            "",
            "cli",
            json!({"count": count, "by": "cli"}),
        );
        let _ = self
            .store
            .publish_notice(&self.keys.coordination(), &n)
            .await;
    }

    async fn replay(&self, selection: &Selection, opts: &ReplayOptions) -> anyhow::Result<()> {
        let report = dlq::replay(self.store, self.keys, selection, opts).await?;
        if !opts.dry_run && report.replayed > 0 {
            self.notify(coordination::kind::DLQ_REPLAYED, report.replayed as u64)
                .await;
        }
        if self.json {
            println!("{}", serde_json::to_string(&report)?);
        } else if opts.dry_run {
            outln!(
                "dry run: {} entr{} would be replayed; sample:",
                report.matched,
                if report.matched == 1 { "y" } else { "ies" }
            );
            print_summaries(&report.sample);
        } else {
            outln!(
                "replayed {} of {} selected ({} already gone, {} not replayable: no valid type or group)",
                report.replayed,
                report.matched,
                report.missing,
                report.unreplayable
            );
        }
        if let Some(why) = report.stopped {
            bail!("replay stopped: {why}");
        }
        Ok(())
    }

    async fn purge(&self, selection: &Selection, dry_run: bool) -> anyhow::Result<()> {
        let opts = dlq::PurgeOptions {
            dry_run,
            actor: "cli",
            history_max_len: self.config.history.max_len,
        };
        let report = dlq::purge(self.store, self.keys, selection, &opts).await?;
        if !dry_run && report.purged > 0 {
            self.notify(coordination::kind::DLQ_PURGED, report.purged)
                .await;
        }
        if self.json {
            println!("{}", serde_json::to_string(&report)?);
        } else if dry_run {
            outln!(
                "dry run: {} entr{} would be purged",
                report.matched,
                if report.matched == 1 { "y" } else { "ies" }
            );
        } else {
            outln!("purged {} of {} selected", report.purged, report.matched);
        }
        Ok(())
    }
}

/// `event-worker history`: what happened to an event, newest first.
pub async fn history(query: HistoryQuery, config: Config, json: bool) -> anyhow::Result<()> {
    if let Some(t) = &query.event_type
        && !crate::model::keys::is_valid_type(t)
    {
        bail!("--type: `{t}` is not a valid event type");
    }
    let store = Store::connect(&config, "history-cli").await?;
    let keys = Keys::new(&config.env);
    let records = crate::ops::history::query(&store, &keys.history(), &query).await;
    store.quit().await;
    let records = records?;
    if json {
        println!("{}", json!({"records": records}));
        return Ok(());
    }
    if records.is_empty() {
        outln!("(no records)");
    }
    for r in records {
        outln!(
            "{}  {:<13} {:<36} {:<24} group={} attempt={} correlation={} {}",
            r.at,
            r.kind,
            truncate(&escape_line(&r.id), 36),
            truncate(&escape_line(&r.event_type), 24),
            if r.group.is_empty() { "-" } else { &r.group },
            r.attempt,
            if r.correlation_id.is_empty() {
                "-"
            } else {
                &r.correlation_id
            },
            r.detail
        );
    }
    Ok(())
}

fn print_table(entries: &[DlqEntry]) {
    let rows: Vec<serde_json::Value> = entries.iter().map(DlqEntry::summary).collect();
    print_summaries(&rows);
}

fn print_summaries(rows: &[serde_json::Value]) {
    if rows.is_empty() {
        outln!("(no entries)");
        return;
    }
    outln!(
        "{:<18} {:<24} {:<24} {:<14} {:<23} {:>3}  {:<36} ERROR",
        "ENTRY_ID",
        "FAILED_AT",
        "TYPE",
        "GROUP",
        "REASON",
        "ATT",
        "ID"
    );
    for r in rows {
        // Each cell escaped before it is cut and padded, so the columns stay aligned.
        let s = |k: &str| match &r[k] {
            serde_json::Value::String(v) if k == "error" => {
                escape_line(&v.replace('\n', " ")).into_owned()
            }
            serde_json::Value::String(v) => escape_line(v).into_owned(),
            serde_json::Value::Null => String::new(),
            other => other.to_string(),
        };
        outln!(
            "{:<18} {:<24} {:<24} {:<14} {:<23} {:>3}  {:<36} {}",
            s("entry_id"),
            s("failed_at"),
            truncate(&s("type"), 24),
            truncate(&s("group"), 14),
            s("reason"),
            s("attempts"),
            truncate(&s("id"), 36),
            truncate(&s("error"), 60)
        );
    }
}
