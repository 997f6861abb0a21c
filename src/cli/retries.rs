//! `event-worker retries ...` and `event-worker instances`: the retry sets in due order,
//! retry-now and dead-letter by handle, and the instances with their consumers. Human
//! tables by default, JSON with `--json`; the logic is the library's (`ops::retries`,
//! `ops::instances`), shared with the HTTP API.

use super::terminal::{escape_line, outln};
use crate::config::Config;
use crate::model::envelope::truncate;
use crate::model::keys::Keys;
use crate::ops::retries::{self, ActionOptions, Outcome, RetryEntry, RetryQuery};
use crate::redis::store::Store;
use anyhow::bail;
use clap::Subcommand;
use serde_json::json;

/// Retry-set subcommands.
#[derive(Subcommand)]
pub enum RetriesCommand {
    /// Entries waiting in the retry sets, soonest due first.
    List {
        /// Only this group (default: every group with a retry set).
        #[arg(long)]
        group: Option<String>,
        /// Only this event type (or a glob such as booking.*).
        #[arg(long = "type")]
        event_type: Option<String>,
        /// Go on after this cursor (the `more:` line of a previous page).
        #[arg(long)]
        cursor: Option<String>,
        /// Most entries shown (1-500).
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
    /// Make entries due now: the group runs them at its next read.
    RetryNow {
        /// The group whose retry set holds them.
        #[arg(long)]
        group: String,
        /// Entry handles, as `retries list` shows them.
        #[arg(required = true)]
        handles: Vec<String>,
    },
    /// Move entries to the DLQ with reason `operator`.
    DeadLetter {
        /// The group whose retry set holds them.
        #[arg(long)]
        group: String,
        /// Why, recorded in the entry's dlq_error.
        #[arg(long, default_value = "")]
        note: String,
        /// Entry handles, as `retries list` shows them.
        #[arg(required = true)]
        handles: Vec<String>,
    },
}

/// Runs one `retries` command.
pub async fn run(command: RetriesCommand, config: Config, json: bool) -> anyhow::Result<()> {
    let store = Store::connect(&config, "retries-cli").await?;
    let keys = Keys::new(&config.env);
    let result = execute(command, &config, &store, &keys, json).await;
    store.quit().await;
    result
}

async fn execute(
    command: RetriesCommand,
    config: &Config,
    store: &Store,
    keys: &Keys,
    json: bool,
) -> anyhow::Result<()> {
    let opts = ActionOptions {
        actor: "cli",
        history_max_len: config.history.max_len,
    };
    match command {
        RetriesCommand::List {
            group,
            event_type,
            cursor,
            limit,
        } => {
            let q = RetryQuery {
                group,
                event_type,
                cursor,
                limit: limit.max(1),
            };
            let page = retries::list(store, keys, &q).await?;
            if json {
                println!("{}", serde_json::to_string(&page)?);
            } else {
                print_entries(&page.entries);
                for (g, n) in &page.depth {
                    outln!("group {g}: {n} waiting");
                }
                if let Some(c) = page.next_cursor {
                    outln!("more: --cursor {c}");
                }
            }
            Ok(())
        }
        RetriesCommand::RetryNow { group, handles } => {
            act(&group, &handles, json, "retried now", |h| {
                retries::retry_now(store, keys, &group, h, &opts)
            })
            .await
        }
        RetriesCommand::DeadLetter {
            group,
            note,
            handles,
        } => {
            act(&group, &handles, json, "dead-lettered", |h| {
                retries::dead_letter_now(store, keys, &group, h, &note, &opts)
            })
            .await
        }
    }
}

/// Runs `action` on every handle (each checked first) and reports the counts; fails
/// (exit 1) when none was found.
async fn act<'a, F, Fut>(
    group: &str,
    handles: &'a [String],
    json: bool,
    done_word: &str,
    action: F,
) -> anyhow::Result<()>
where
    F: Fn(&'a str) -> Fut,
    Fut: Future<Output = Result<Outcome, retries::RetryError>>,
{
    for h in handles {
        retries::Handle::parse(h)?;
    }
    let (mut done, mut not_found) = (0u64, 0u64);
    for h in handles {
        match action(h).await? {
            Outcome::Done => done += 1,
            Outcome::NotFound => not_found += 1,
        }
    }
    if json {
        println!("{}", json!({"done": done, "not_found": not_found}));
    } else {
        outln!("{done_word}: {done}, not found: {not_found}");
    }
    if done == 0 {
        bail!(
            "no entry with that handle in the retry set of group `{group}` (forwarded, retried \
             or dead-lettered meanwhile); list it again with `event-worker retries list --group {group}`"
        );
    }
    Ok(())
}

fn print_entries(entries: &[RetryEntry]) {
    if entries.is_empty() {
        outln!("(no entries)");
        return;
    }
    outln!(
        "{:<24} {:<14} {:<24} {:>3}  {:<36} {:<54} LAST_ERROR",
        "DUE",
        "GROUP",
        "TYPE",
        "ATT",
        "ID",
        "HANDLE"
    );
    for e in entries {
        let error = e.last_error.as_deref().unwrap_or("-").replace('\n', " ");
        outln!(
            "{:<24} {:<14} {:<24} {:>3}  {:<36} {:<54} {}",
            e.due,
            truncate(&escape_line(&e.group), 14),
            truncate(&escape_line(&e.event_type), 24),
            e.attempt,
            truncate(&escape_line(&e.id), 36),
            e.handle,
            truncate(&escape_line(&error), 60)
        );
    }
}

/// `event-worker instances`: live instances and every consumer of the env's groups.
pub async fn instances(config: Config, json: bool) -> anyhow::Result<()> {
    let store = Store::connect(&config, "instances-cli").await?;
    let keys = Keys::new(&config.env);
    let list = crate::ops::instances::list(&store, &keys).await;
    store.quit().await;
    let list = list?;
    if json {
        println!("{}", json!({"instances": list}));
        return Ok(());
    }
    if list.is_empty() {
        outln!("(no instances)");
        return Ok(());
    }
    for i in &list {
        let or = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
        outln!(
            "{} group={} {} host={} pid={} version={} started={} last_beat={} pending={}",
            escape_line(&i.consumer),
            escape_line(&i.group),
            if i.live { "live" } else { "no heartbeat" },
            escape_line(&or(&i.host)),
            i.pid.map_or("-".into(), |p| p.to_string()),
            or(&i.version),
            or(&i.started),
            or(&i.last_beat),
            i.pending
        );
        for s in &i.streams {
            outln!(
                "  {} pending={} idle={}ms",
                escape_line(&s.stream),
                s.pending,
                s.idle_ms
            );
        }
    }
    Ok(())
}
