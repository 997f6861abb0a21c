//! `event-worker publish`: its arguments, and reading `data` from the argument, a file or
//! stdin (a command-line argument is capped by the OS at about 128 KiB).

use std::io::Read;
use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::Args;

use crate::cli::terminal::escape_text;
use crate::config::Config;
use crate::config::format_duration;
use crate::model::envelope::MAX_DATA_BYTES;
use crate::model::keys::Keys;
use crate::ops::publish::{NewEvent, Published};
use crate::outbox::pump::CLI_DIR;
use crate::outbox::{Outbox, OutboxError, Outcome, Queued, Reason};
use crate::redis::store::Store;

/// Arguments of `publish`.
#[derive(Args)]
pub(super) struct PublishArgs {
    /// Event type, e.g. booking.created.
    #[arg(value_name = "TYPE")]
    event_type: String,
    /// JSON payload, or `-` to read it from stdin.
    #[arg(
        value_name = "DATA_JSON",
        required_unless_present = "data_file",
        conflicts_with = "data_file"
    )]
    data: Option<String>,
    /// Read the JSON payload from this file (`-` for stdin); for data over the ~128 KiB an
    /// argument can carry (at most 1 MiB).
    #[arg(long, value_name = "PATH")]
    data_file: Option<PathBuf>,
    /// Event id (default: a random UUID). With an id the publish is idempotent: a repeat of
    /// the same type and id within `[publish] dedup_window` writes nothing.
    #[arg(long)]
    id: Option<String>,
    /// Correlation id.
    #[arg(long)]
    correlation_id: Option<String>,
    /// `source` attribute, a URI reference (default: event-worker-cli).
    #[arg(long)]
    source: Option<String>,
    /// `time` attribute, RFC 3339 (default: now).
    #[arg(long)]
    time: Option<String>,
    /// W3C trace context, e.g. 00-<32 hex>-<16 hex>-01.
    #[arg(long)]
    traceparent: Option<String>,
    /// `datacontenttype` attribute, a media type (handlers see application/json when absent).
    #[arg(long)]
    datacontenttype: Option<String>,
    /// `subject` attribute.
    #[arg(long)]
    subject: Option<String>,
    /// Extension attribute NAME=VALUE (name: 1-20 characters of a-z and 0-9); repeatable.
    #[arg(long = "ext", value_name = "NAME=VALUE", value_parser = parse_ext)]
    ext: Vec<(String, String)>,
}

fn parse_ext(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("`{s}` is not NAME=VALUE"))
}

impl PublishArgs {
    /// The event to publish, with `data` read from where the arguments say.
    ///
    /// # Errors
    /// The file or stdin cannot be read, is not UTF-8 or is over the size limit.
    pub(super) fn into_event(self) -> anyhow::Result<NewEvent> {
        let data = match (self.data, self.data_file) {
            (Some(d), _) if d != "-" => d,
            (Some(_), _) => read_bounded(std::io::stdin().lock(), "stdin")?,
            (None, Some(p)) if p.as_os_str() == "-" => {
                read_bounded(std::io::stdin().lock(), "stdin")?
            }
            (None, Some(p)) => {
                let what = format!("--data-file {}", p.display());
                let file =
                    std::fs::File::open(&p).with_context(|| format!("cannot read {what}"))?;
                read_bounded(file, &what)?
            }
            (None, None) => bail!("give DATA_JSON, `-` for stdin, or --data-file PATH"),
        };
        Ok(NewEvent {
            event_type: self.event_type,
            data,
            id: self.id,
            correlation_id: self.correlation_id,
            source: Some(self.source.unwrap_or_else(|| "event-worker-cli".into())),
            time: self.time,
            traceparent: self.traceparent,
            datacontenttype: self.datacontenttype,
            subject: self.subject,
            dataschema: None,
            extensions: self.ext,
        })
    }
}

/// Reads at most [`MAX_DATA_BYTES`] of UTF-8 from `input`, trailing whitespace trimmed.
fn read_bounded(input: impl Read, what: &str) -> anyhow::Result<String> {
    let mut bytes = Vec::new();
    input
        .take(MAX_DATA_BYTES as u64 + 1)
        .read_to_end(&mut bytes)
        .with_context(|| format!("cannot read {what}"))?;
    if bytes.len() > MAX_DATA_BYTES {
        bail!("data from {what} is over the {MAX_DATA_BYTES}-byte limit");
    }
    let mut text = String::from_utf8(bytes)
        .map_err(|e| anyhow::anyhow!("data from {what} is not UTF-8: {e}"))?;
    text.truncate(text.trim_end().len());
    Ok(text)
}

/// The stderr line of a repeated `publish --id`: what was not written and where the original is.
/// `answer` plus `"replicas"` and `"replicated"` when the publish waited for replicas.
pub(super) fn with_replication(mut answer: serde_json::Value, p: &Published) -> serde_json::Value {
    if let (Some(r), Some(map)) = (p.replication, answer.as_object_mut()) {
        map.insert("replicas".into(), r.acked.into());
        map.insert("replicated".into(), r.ok().into());
    }
    answer
}

/// The warning of a publish fewer replicas acknowledged than `[redis] wait_replicas` asks.
pub(super) fn unreplicated_note(
    p: &Published,
    redis: &crate::config::RedisConfig,
) -> Option<String> {
    let r = p.replication.filter(|r| !r.ok())?;
    Some(format!(
        "warning: {} {} was written on the master, but {} of {} replica(s) acknowledged it within {} \
         (redis.wait_replicas, redis.wait_timeout); a failover now could lose it",
        p.stream,
        p.entry_id,
        r.acked,
        r.wanted,
        format_duration(redis.wait_timeout)
    ))
}

pub(super) fn duplicate_note(p: &Published, window: std::time::Duration) -> String {
    let original = match p.entry_id.as_str() {
        "" => "an entry the stream no longer holds".to_string(),
        e => format!("entry {e}"),
    };
    escape_text(&format!(
        "duplicate: id {} was already published to {} within the dedup window ({}) as {original}; nothing written",
        p.id,
        p.stream,
        format_duration(window)
    ))
    .into_owned()
}

/// How long a CLI publish waits for `<dir>/cli` while the daemon's drain holds it.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Opens `<outbox.dir>/cli`, waiting up to [`LOCK_WAIT`] while another process (the
/// daemon's drain, another CLI) holds it.
async fn open_cli_outbox(config: &Config) -> anyhow::Result<Outbox> {
    let dir = config.outbox.dir.join(CLI_DIR);
    let until = tokio::time::Instant::now() + LOCK_WAIT;
    loop {
        let (d, options, after) = (
            dir.clone(),
            config.outbox.options(),
            config.outbox.fallback_after,
        );
        let keys = Keys::new(&config.env);
        let opened =
            tokio::task::spawn_blocking(move || Outbox::open(&d, options, after, keys)).await?;
        match opened {
            Err(OutboxError::Locked { .. }) if tokio::time::Instant::now() < until => {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
            other => return Ok(other?),
        }
    }
}

/// `publish` with `outbox.enabled`: the event goes to Redis within `outbox.fallback_after`
/// (connecting included), else it is queued in `<outbox.dir>/cli`, which the daemon
/// drains (or `event-worker outbox drain --dir <outbox.dir>/cli`). Returns what Redis took
/// with the store (for the history record), or what was queued.
///
/// # Errors
/// The event is invalid, Redis refused it for a reason queueing cannot help, or the outbox
/// refused it too.
pub(super) async fn publish_or_queue(
    config: &Config,
    event: NewEvent,
) -> anyhow::Result<Result<(Published, Store), Queued>> {
    let outbox = open_cli_outbox(config).await?;
    let deadline = tokio::time::Instant::now() + config.outbox.fallback_after;
    let connect = Store::connect(config, "publish");
    let store = match tokio::time::timeout_at(deadline, connect).await {
        Ok(Ok(store)) => store,
        Ok(Err(e)) => {
            let reason = Reason::of(e.kind).ok_or(e)?;
            return Ok(Err(outbox.queue(event, reason).await?));
        }
        Err(_) => return Ok(Err(outbox.queue(event, Reason::Timeout).await?)),
    };
    let outcome = outbox
        .publish_by(&store, &config.publish, event, deadline)
        .await;
    match outcome {
        Ok(Outcome::Published(p)) => Ok(Ok((p, store))),
        Ok(Outcome::Queued(q)) => {
            store.quit().await;
            Ok(Err(q))
        }
        Err(e) => {
            store.quit().await;
            Err(e.into())
        }
    }
}

/// The stderr line of a publish queued in the outbox: where, why, and who publishes it.
pub(super) fn queued_note(q: &Queued) -> String {
    let parent = q.dir.parent().unwrap_or(&q.dir);
    escape_text(&format!(
        "queued: Redis did not take event {} ({}), so it waits in the local outbox {}; a running \
         event-worker with outbox.dir {} publishes it to {} when Redis answers (or run \
         `event-worker outbox drain --dir {}`)",
        q.id,
        q.reason.label(),
        q.dir.display(),
        parent.display(),
        q.stream,
        q.dir.display()
    ))
    .into_owned()
}

/// Prints a publish queued in the outbox: the note on stderr; with `--json`, `{"queued":
/// "outbox", "id", "stream", "dir"}` on stdout (plain mode prints nothing on stdout: there
/// is no entry id yet).
pub(super) fn print_queued(q: &Queued, json: bool) -> anyhow::Result<()> {
    eprintln!("{}", queued_note(q));
    if json {
        println!(
            "{}",
            serde_json::json!({"queued": "outbox", "id": q.id, "stream": q.stream,
                "dir": q.dir.display().to_string()})
        );
    }
    Ok(())
}
