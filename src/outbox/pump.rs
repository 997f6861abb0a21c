//! The running process's drain ([`run`]): oldest first, at most `outbox.drain_rate` events
//! a second, each batch acknowledged (and so removed) only after Redis confirmed every
//! event in it. The log's mutex is held only to read and to acknowledge, never across a
//! Redis call, so live publishes append while a drain waits for Redis. The same loop
//! drains `<dir>/cli`, where `event-worker publish` queues (README "Outbox").

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::PublishConfig;
use crate::model::keys::Keys;
use crate::redis::store::Store;

use super::drain::DrainError;
use super::error::OutboxError;
use super::fallback::{Notice, Outbox};
use super::frame::Record;
use super::log::Options;

/// The subdirectory of an outbox where CLI publishes queue.
pub const CLI_DIR: &str = "cli";

/// How long the drain waits for Redis to confirm one event before it leaves it queued.
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(5);
/// How often an empty `<dir>/cli` is looked at.
const CLI_PERIOD: Duration = Duration::from_secs(1);
/// The pause after a failed drain before it tries again.
const RETRY_PAUSE: Duration = Duration::from_secs(1);

/// What the drain loop needs besides the outbox.
#[derive(Clone)]
pub struct Pump {
    /// Redis.
    pub store: Store,
    /// `[publish]`: the id guard's bounds.
    pub guard: PublishConfig,
    /// The env's keys.
    pub keys: Keys,
    /// Events per second at most.
    pub rate: u32,
    /// The log options of the CLI directory.
    pub options: Options,
}

impl Pump {
    /// Events per batch: a tenth of a second's worth, 1 to 100.
    fn batch(&self) -> usize {
        (self.rate / 10).clamp(1, 100) as usize
    }

    /// The time `n` events take at the rate.
    fn pace(&self, n: usize) -> Duration {
        Duration::from_secs_f64(n as f64 / f64::from(self.rate.max(1)))
    }
}

/// Reads up to `max` records on the blocking pool.
async fn read(outbox: &Outbox, max: usize) -> Result<Vec<Record>, OutboxError> {
    let inner = outbox.inner.clone();
    tokio::task::spawn_blocking(move || inner.lock().expect("outbox lock").log.read(max))
        .await
        .expect("outbox read task")
}

/// Acknowledges up to `seq` (when some) and rewinds when `rewind`, uncounting `types`.
async fn settle(
    outbox: &Outbox,
    seq: Option<u64>,
    types: Vec<String>,
    rewind: bool,
) -> Result<(), OutboxError> {
    let (inner, counts, snapshot) = (
        outbox.inner.clone(),
        outbox.types.clone(),
        outbox.snapshot.clone(),
    );
    tokio::task::spawn_blocking(move || {
        let mut inner = inner.lock().expect("outbox lock");
        let result = match seq {
            Some(seq) => inner.log.ack(seq),
            None => Ok(()),
        };
        *snapshot.lock().expect("outbox status lock") = inner.log.status();
        let mut counts = counts.lock().expect("outbox types lock");
        if inner.log.depth() == 0 {
            counts.clear(); // Whatever happened before, nothing is queued now.
        } else if result.is_ok() {
            for t in types {
                if let Some(n) = counts.get_mut(&t) {
                    *n = n.saturating_sub(1);
                    if *n == 0 {
                        counts.remove(&t);
                    }
                }
            }
        }
        if rewind || result.is_err() {
            inner.log.rewind();
        }
        result
    })
    .await
    .expect("outbox ack task")
}

/// Drains one batch of `outbox`: the events Redis confirmed are acknowledged (and
/// reported to the listener); on a failure the rest stay queued, read again next time.
///
/// # Errors
/// The first event that was not published, or the log failing.
pub async fn drain_batch(outbox: &Outbox, pump: &Pump) -> Result<usize, DrainError> {
    let records = read(outbox, pump.batch()).await?;
    let (mut confirmed, mut types, mut failure) = (None, Vec::new(), None);
    for record in records {
        let event = match super::event::decode(&record.payload) {
            Ok(event) => event,
            Err(cause) => {
                failure = Some(DrainError::Unreadable {
                    seq: record.seq,
                    dir: outbox.dir().display().to_string(),
                    cause,
                });
                break;
            }
        };
        let (id, event_type) = (
            event.id.clone().unwrap_or_default(),
            event.event_type.clone(),
        );
        let correlation = event.correlation_id.clone();
        let publish = crate::ops::publish::publish(&pump.store, &pump.keys, &pump.guard, event);
        let result = match tokio::time::timeout(PUBLISH_TIMEOUT, publish).await {
            Ok(result) => result,
            Err(_) => Err(crate::ops::publish::PublishError::Store(
                crate::redis::error::StoreError::new(
                    "XADD",
                    crate::redis::error::RedisErrorKind::Timeout,
                    format!("Redis did not answer within {}s", PUBLISH_TIMEOUT.as_secs()),
                ),
            )),
        };
        match result {
            Ok(p) => {
                outbox.notify(&Notice::Drained(p, correlation));
                confirmed = Some(record.seq);
                types.push(event_type);
            }
            Err(source) => {
                failure = Some(DrainError::Publish {
                    seq: record.seq,
                    id,
                    source,
                });
                break;
            }
        }
    }
    let drained = types.len();
    settle(outbox, confirmed, types, failure.is_some()).await?;
    match failure {
        Some(e) => Err(e),
        None => Ok(drained),
    }
}

/// Fsyncs the log when the interval policy says so (on the blocking pool).
async fn sync_if_due(outbox: &Outbox) {
    let inner = outbox.inner.clone();
    let synced =
        tokio::task::spawn_blocking(move || inner.lock().expect("outbox lock").log.sync_if_due())
            .await
            .expect("outbox sync task");
    if let Err(e) = synced {
        warn!(error = %e, "the outbox fsync failed");
    }
}

/// Drains one batch of what `event-worker publish` queued in `<dir>/cli`, unless a CLI
/// holds it now (then next time).
///
/// # Errors
/// As [`drain_batch`].
async fn drain_cli(outbox: &Arc<Outbox>, pump: &Pump) -> Result<usize, DrainError> {
    let dir: PathBuf = outbox.dir().join(CLI_DIR);
    if !dir.is_dir() {
        return Ok(0);
    }
    let (options, keys, after) = (pump.options, pump.keys.clone(), outbox.fallback_after());
    let opened = tokio::task::spawn_blocking(move || Outbox::open(&dir, options, after, keys))
        .await
        .expect("outbox open task");
    let cli = match opened {
        Ok(cli) => cli,
        Err(OutboxError::Locked { .. }) => return Ok(0),
        Err(e) => return Err(e.into()),
    };
    if cli.status().records == 0 {
        return Ok(0);
    }
    if let Some(l) = outbox.listener.lock().expect("listener lock").clone() {
        cli.set_listener(l);
    }
    drain_batch(&cli, pump).await
}

/// One round: a batch of the outbox, then of `<dir>/cli` when the first left room and
/// `cli` says it is time (the CLI directory is opened at most once a second while empty).
async fn round(outbox: &Arc<Outbox>, pump: &Pump, cli: &mut Instant) -> Result<usize, DrainError> {
    let mut drained = 0;
    if outbox.status().records > 0 {
        drained = drain_batch(outbox, pump).await?;
    }
    if drained < pump.batch() && Instant::now() >= *cli {
        let from_cli = drain_cli(outbox, pump).await?;
        if from_cli == 0 {
            *cli = Instant::now() + CLI_PERIOD;
        }
        drained += from_cli;
    }
    Ok(drained)
}

/// Drains `outbox` (and its `cli` subdirectory) until `stop`: oldest first at most
/// `pump.rate` events a second; fsyncs on the interval policy's tick; after a failure it
/// logs once per outage and tries again every second.
pub async fn run(outbox: Arc<Outbox>, pump: Pump, stop: CancellationToken) {
    use std::sync::atomic::Ordering;
    if outbox.draining.swap(true, Ordering::SeqCst) {
        return; // Another drain of this process runs on it.
    }
    let mut failing = false;
    let mut cli = Instant::now();
    let tick = match pump.options.fsync {
        super::FsyncPolicy::Interval(d) => d.min(Duration::from_millis(200)),
        super::FsyncPolicy::Always => Duration::from_millis(200),
    };
    loop {
        sync_if_due(&outbox).await;
        let started = Instant::now();
        let (mut drained, mut pause) = (0, tick);
        match round(&outbox, &pump, &mut cli).await {
            Ok(n) => {
                drained = n;
                if failing {
                    info!(dir = %outbox.dir().display(), "Redis answers again: the outbox drains");
                }
                failing = false;
                outbox.failing.store(false, Ordering::Relaxed);
            }
            Err(e) => {
                if !failing {
                    warn!(error = %e, "the outbox cannot drain now; it is tried again every second");
                }
                failing = true;
                outbox.failing.store(true, Ordering::Relaxed);
                pause = RETRY_PAUSE;
            }
        }
        if drained > 0 {
            pause = pump.pace(drained).saturating_sub(started.elapsed());
        }
        tokio::select! {
            () = stop.cancelled() => break,
            () = outbox.wake.notified(), if drained == 0 && !failing => {}
            () = tokio::time::sleep(pause) => {}
        }
    }
    let inner = outbox.inner.clone();
    let _ =
        tokio::task::spawn_blocking(move || inner.lock().expect("outbox lock").log.sync_active())
            .await;
    outbox.draining.store(false, Ordering::SeqCst);
}
