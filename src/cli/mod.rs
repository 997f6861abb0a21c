//! `event-worker`: the daemon and its operator commands. CLI -> tracing -> Config -> library.
//! Human output goes through `terminal` (`outln!`, `escape_text`) and the human log through
//! `log_fields`, so text from producers cannot drive the operator's terminal; JSON is exact.

use std::path::PathBuf;
use std::process::ExitCode;

mod check;
mod dlq;
mod log_fields;
mod outbox;
mod publish;
mod retries;
mod terminal;

use crate::WorkerBuilder;
use crate::config::Config;
use crate::model::keys::Keys;
use crate::ops::history::HistoryQuery;
use crate::ops::migrations;
use crate::ops::publish::{NewEvent, publish};
use crate::redis::store::Store;
use crate::settle::history::{Record, kind};
use clap::{Parser, Subcommand, ValueEnum};
use terminal::{escape_text, outln};
use tokio_util::sync::CancellationToken;

/// Reliable event processing on Redis Streams.
#[derive(Parser)]
#[command(name = "event-worker", version, about)]
struct Cli {
    /// TOML configuration file (see README "Configuration").
    #[arg(long, global = true, env = "EVENTS_CONFIG")]
    config: Option<PathBuf>,
    /// Machine-readable JSON output.
    #[arg(long, global = true)]
    json: bool,
    /// Log format.
    #[arg(long, global = true, value_enum, default_value = "human")]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Human,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon: apply migrations, consume, serve HTTP.
    Run,
    /// Validate the config, reach Redis, and list what `run` would consume.
    Check,
    /// Apply the migrations not yet recorded for this env.
    Migrate,
    /// Append one event to its stream and print the entry id.
    Publish(publish::PublishArgs),
    /// Lifecycle records (published, processed, retried, dead_lettered, replayed, purged, retried_now), newest first.
    History {
        /// Only this event type.
        #[arg(long = "type")]
        event_type: Option<String>,
        /// Only this correlation id.
        #[arg(long)]
        correlation_id: Option<String>,
        /// Only this event id.
        #[arg(long)]
        id: Option<String>,
        /// Most records shown (1-1000).
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
    /// Inspect, replay and purge the dead-letter queue.
    #[command(subcommand)]
    Dlq(dlq::DlqCommand),
    /// List the retry sets by due time; retry entries now or dead-letter them.
    #[command(subcommand)]
    Retries(retries::RetriesCommand),
    /// Live instances (heartbeats) and every consumer of the env's groups, with pending entries.
    Instances,
    /// Inspect and drain a local outbox directory (events queued while Redis was away).
    #[command(subcommand)]
    Outbox(outbox::OutboxCommand),
}

/// The log filter when `EVENTS_LOG` is not set: `info`, with the Redis client's own lines
/// (fred's "Broadcasting error ..." WARNs on every failed reconnect) at `error` only; the
/// worker logs the cause in plain words instead. `EVENTS_LOG` replaces it entirely.
const DEFAULT_LOG_FILTER: &str = "info,fred=error";

fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("EVENTS_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(DEFAULT_LOG_FILTER));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        // Values come from producers (ids, types, error text): escaped, see `terminal`.
        LogFormat::Human => builder.fmt_fields(log_fields::EscapedFields).init(),
    }
}

/// The `event-worker` binary: parses the command line, sets up logging, loads the
/// configuration and runs the command. Exit 0 on success, 2 for bad configuration, 1 otherwise.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing(cli.log_format);
    let config = match load_config(&cli) {
        Ok(c) => c,
        Err(message) => {
            eprintln!("event-worker: {}", escape_text(&message));
            return ExitCode::from(2);
        }
    };
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if config.worker_threads > 0 {
        builder.worker_threads(config.worker_threads);
    }
    let runtime = match builder.enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("event-worker: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let url = config.redis_url.clone();
    match runtime.block_on(dispatch(cli.command, config, cli.json)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!(
                "event-worker: {}",
                escape_text(&url.scrub(&format!("{e:#}")))
            );
            ExitCode::FAILURE
        }
    }
}

/// The configuration `cli.command` needs. `run` and `check` need a file (routes come
/// from the file only); the other commands also run on `EVENTS_*` variables and defaults.
/// Route signing secrets are read for `run` only: no other command delivers.
fn load_config(cli: &Cli) -> Result<Config, String> {
    let needs_routes = matches!(cli.command, Command::Run | Command::Check);
    if needs_routes && cli.config.is_none() {
        return Err(NO_CONFIG_FILE.to_string());
    }
    let mut config = Config::load(cli.config.as_deref()).map_err(|e| e.to_string())?;
    if needs_routes {
        config.require_routes().map_err(|e| e.to_string())?;
    }
    if matches!(cli.command, Command::Run) {
        config
            .resolve_signing_secrets(&|var| std::env::var(var).ok())
            .map_err(|e| e.to_string())?;
    }
    Ok(config)
}

/// What `run` and `check` say when no file is given.
const NO_CONFIG_FILE: &str = "no config file given: `run` and `check` read their [[routes]] \
from one; pass --config path/to/event-worker.toml (or set EVENTS_CONFIG); other keys may also \
come from EVENTS_* variables (see README \"Configuration\")";

async fn dispatch(command: Command, config: Config, json: bool) -> anyhow::Result<()> {
    match command {
        Command::Run => {
            let stop = CancellationToken::new();
            tokio::spawn(shutdown_signal(stop.clone()));
            // On a runtime thread, not on this one (`block_on`'s): start-up's round trips then
            // do not each wake this thread from the runtime's.
            tokio::spawn(WorkerBuilder::new(config).run(stop)).await??;
            Ok(())
        }
        Command::Check => check::check(config, json).await,
        Command::Dlq(command) => dlq::run(command, config, json).await,
        Command::Outbox(command) => outbox::run(command, config, json).await,
        Command::Retries(command) => retries::run(command, config, json).await,
        Command::Instances => retries::instances(config, json).await,
        Command::History {
            event_type,
            correlation_id,
            id,
            limit,
        } => {
            let query = HistoryQuery {
                event_type,
                correlation_id,
                id,
                limit,
            };
            dlq::history(query, config, json).await
        }
        Command::Migrate => migrate(config, json).await,
        Command::Publish(args) => publish_one(args.into_event()?, config, json).await,
    }
}

/// `event-worker migrate`: applies the migrations not yet recorded for this env and
/// finishes counting an existing DLQ (see `ops::dlq::build`).
async fn migrate(config: Config, json: bool) -> anyhow::Result<()> {
    let store = Store::connect(&config, "migrate").await?;
    let keys = Keys::new(&config.env);
    let report = migrations::apply_all(&store, &keys).await?;
    let counts = crate::ops::dlq::build(&store, &keys, u64::MAX).await;
    store.quit().await;
    counts?;
    if json {
        println!(
            "{}",
            serde_json::json!({"applied": report.applied, "already_applied": report.skipped})
        );
    } else {
        outln!("applied: {}", list_or_none(&report.applied));
        outln!("already applied: {}", list_or_none(&report.skipped));
    }
    Ok(())
}

/// `event-worker publish`: appends one event, records it in the history, prints its entry id.
/// With `--id`, a repeat within `[publish] dedup_window` writes nothing, says so on stderr
/// and prints the original entry id (exit 0).
async fn publish_one(event: NewEvent, config: Config, json: bool) -> anyhow::Result<()> {
    let correlation = event.correlation_id.clone();
    let (store, result) = if config.outbox.enabled {
        match publish::publish_or_queue(&config, event).await? {
            Err(queued) => return publish::print_queued(&queued, json),
            Ok((p, store)) => (store, Ok(p)),
        }
    } else {
        let store = Store::connect(&config, "publish").await?;
        let result = publish(&store, &Keys::new(&config.env), &config.publish, event).await;
        (store, result)
    };
    let keys = Keys::new(&config.env);
    if let Ok(p) = &result
        && !p.duplicate
    {
        let t = p.stream.strip_prefix(keys.prefix()).unwrap_or_default();
        let record = Record::new(
            kind::PUBLISHED,
            &p.id,
            t,
            "",
            correlation.as_deref(),
            0,
            "via CLI",
        );
        let _ = crate::settle::history::append(
            &store,
            &keys.history(),
            config.history.max_len,
            &[record],
        )
        .await;
    }
    store.quit().await;
    let published = result?;
    if json {
        println!(
            "{}",
            publish::with_replication(
                serde_json::json!({"entry_id": Some(&published.entry_id).filter(|e| !e.is_empty()), "id": published.id,
                "stream": published.stream, "duplicate": published.duplicate}),
                &published
            )
        );
        return Ok(());
    }
    if let Some(note) = publish::unreplicated_note(&published, &config.redis) {
        eprintln!("{note}");
    }
    if published.duplicate {
        eprintln!(
            "{}",
            publish::duplicate_note(&published, config.publish.dedup_window)
        );
        if !published.entry_id.is_empty() {
            outln!("{}", published.entry_id);
        }
    } else {
        outln!("{}", published.entry_id);
    }
    Ok(())
}

fn list_or_none(items: &[String]) -> String {
    if items.is_empty() {
        "none".into()
    } else {
        items.join(", ")
    }
}

/// Resolves on SIGTERM or SIGINT.
async fn shutdown_signal(stop: CancellationToken) {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = match signal(SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => {
                let _ = ctrl_c.await;
                stop.cancel();
                return;
            }
        };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
    tracing::info!("signal received; shutting down");
    stop.cancel();
}
