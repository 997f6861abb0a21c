//! The publish fallback (README "Outbox"): [`Outbox`] is one process's open log behind a
//! mutex, and the one place every publish path (HTTP single and batch, the CLI, the
//! library's [`crate::Publisher`]) decides between Redis and the local log.
//!
//! A publish gets an id first (a random UUID when it has none), so that whatever happens
//! next is idempotent through the id guard of the type (`scripts/publish_once.lua`). Then:
//! - while the log holds events of its type, it is queued behind them (reason `behind`), so
//!   the order of a type's publishes is kept;
//! - otherwise it goes to Redis, for at most `outbox.fallback_after`; past that
//!   (`timeout`), on a connection failure (`unreachable`) or when Redis refuses writes
//!   (`oom`, `readonly`, `misconf`) it is queued; any other refusal (NOPERM, a bad event) is
//!   returned as it is: queueing would only postpone a configuration error.
//!
//! A late XADD of a publish that timed out and was queued is harmless: the drain publishes
//! the same (type, id) through the guard, and whichever comes second writes nothing.
//! Appends run on the blocking pool (`spawn_blocking`): an fsync never stalls the runtime.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use crate::config::PublishConfig;
use crate::model::keys::Keys;
use crate::ops::publish::{self, NewEvent, PublishError, Published, random_uuid};
use crate::redis::error::RedisErrorKind;
use crate::redis::store::Store;

use super::error::OutboxError;
use super::log::{Log, Options, Status};

/// Why an event went to the outbox (the `reason` label of `event_worker_outbox_appended_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// Redis did not answer within `outbox.fallback_after`.
    Timeout,
    /// The connection to Redis failed or was refused.
    Unreachable,
    /// Redis refused the write: `OOM` (maxmemory under noeviction).
    Oom,
    /// Redis refused the write: `READONLY` (a replica, e.g. after a failover).
    Readonly,
    /// Redis refused the write: `MISCONF` (a failed RDB save stops writes).
    Misconf,
    /// The outbox still held events of the type: queued behind them to keep their order.
    Behind,
}

/// Every reason, in the order of their series.
pub const REASONS: [Reason; 6] = [
    Reason::Timeout,
    Reason::Unreachable,
    Reason::Oom,
    Reason::Readonly,
    Reason::Misconf,
    Reason::Behind,
];

impl Reason {
    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Reason::Timeout => "timeout",
            Reason::Unreachable => "unreachable",
            Reason::Oom => "oom",
            Reason::Readonly => "readonly",
            Reason::Misconf => "misconf",
            Reason::Behind => "behind",
        }
    }

    /// The reason a Redis failure of `kind` queues an event, or `None` when it must not
    /// (a configuration error such as NOPERM, or an error about the event itself).
    pub fn of(kind: RedisErrorKind) -> Option<Reason> {
        Some(match kind {
            RedisErrorKind::Connection => Reason::Unreachable,
            RedisErrorKind::Timeout => Reason::Timeout,
            RedisErrorKind::Oom => Reason::Oom,
            RedisErrorKind::ReadOnly => Reason::Readonly,
            RedisErrorKind::Misconf => Reason::Misconf,
            _ => return None,
        })
    }
}

/// An event the outbox took.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Queued {
    /// The event id (generated when the publish had none).
    pub id: String,
    /// The event type.
    pub event_type: String,
    /// The type stream it will be published to.
    pub stream: String,
    /// Its correlation id.
    pub correlation_id: Option<String>,
    /// Why it was queued.
    pub reason: Reason,
    /// The outbox directory.
    pub dir: PathBuf,
}

/// What a publish did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Redis took it (or it was a duplicate of an earlier publish).
    Published(Published),
    /// Redis did not: it waits in the local outbox and is published when Redis is back.
    Queued(Queued),
}

/// Why a publish neither reached Redis nor the outbox.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    /// The event is invalid, or Redis refused it for a reason queueing cannot help (NOPERM).
    #[error(transparent)]
    Publish(#[from] PublishError),
    /// Redis did not take it and the outbox refused it too (full, disk full, read-only).
    #[error(transparent)]
    Outbox(#[from] OutboxError),
}

/// What the outbox tells its owner (metrics and history in the daemon).
#[derive(Debug, Clone)]
pub enum Notice {
    /// An event was queued.
    Queued(Queued),
    /// A queued event reached its stream (or was found there already: a duplicate).
    Drained(Published, Option<String>),
    /// The outbox refused an event (`full`, `disk_full`, `not_writable`, `error`).
    Refused(&'static str),
}

/// A listener of [`Notice`]s.
pub type Listener = Arc<dyn Fn(&Notice) + Send + Sync>;

/// The log (locked for appends, reads and acknowledgements, on the blocking pool).
pub(super) struct Inner {
    pub log: Log,
}

/// Queued records per type (for the ordering rule), in a lock of its own so the async
/// publish path never waits for an fsync.
pub(super) type Types = Arc<Mutex<HashMap<String, u64>>>;

/// One process's outbox: the log of one directory, opened once, behind a mutex.
pub struct Outbox {
    pub(super) inner: Arc<Mutex<Inner>>,
    pub(super) types: Types,
    /// The log's status after the last change (read without the log's lock).
    pub(super) snapshot: Arc<Mutex<Status>>,
    fsync: super::FsyncPolicy,
    dir: PathBuf,
    fallback_after: Duration,
    keys: Keys,
    pub(super) listener: Mutex<Option<Listener>>,
    pub(super) wake: tokio::sync::Notify,
    /// Set while a drain runs: one drain per outbox, never two reading at once.
    pub(super) draining: std::sync::atomic::AtomicBool,
    /// Set while the drain's last round failed (Redis does not take the events).
    pub(super) failing: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for Outbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outbox").field("dir", &self.dir).finish()
    }
}

/// The outboxes this process opened, by directory: each is opened once per process.
static OPEN: Mutex<Vec<(PathBuf, std::sync::Weak<Outbox>)>> = Mutex::new(Vec::new());

/// The `reason` label of a refusal.
pub fn refusal_label(e: &OutboxError) -> &'static str {
    match e {
        OutboxError::Full { .. } | OutboxError::TooLarge { .. } => "full",
        OutboxError::DiskFull { .. } => "disk_full",
        OutboxError::NotWritable { .. } => "not_writable",
        _ => "error",
    }
}

impl Outbox {
    /// Opens the log in `dir` (blocking: call it at start or on the blocking pool) and
    /// counts the queued records of each type.
    ///
    /// # Errors
    /// As [`Log::open`] (another process holds the directory, damage), or a record that is
    /// no event.
    pub fn open(
        dir: &Path,
        options: Options,
        fallback_after: Duration,
        keys: Keys,
    ) -> Result<Outbox, OutboxError> {
        let mut log = Log::open(dir, options)?;
        let mut types: HashMap<String, u64> = HashMap::new();
        loop {
            let records = log.read(1000)?;
            if records.is_empty() {
                break;
            }
            for r in records {
                if let Ok(e) = super::event::decode(&r.payload) {
                    *types.entry(e.event_type).or_default() += 1;
                }
            }
        }
        log.rewind();
        Ok(Outbox {
            snapshot: Arc::new(Mutex::new(log.status())),
            fsync: options.fsync,
            inner: Arc::new(Mutex::new(Inner { log })),
            types: Arc::new(Mutex::new(types)),
            dir: dir.to_path_buf(),
            fallback_after,
            keys,
            listener: Mutex::new(None),
            wake: tokio::sync::Notify::new(),
            draining: Default::default(),
            failing: Default::default(),
        })
    }

    /// The outbox of `dir` this process already has open, else [`Outbox::open`]s it
    /// (blocking): a daemon and a [`crate::Publisher`] in one process share one log.
    ///
    /// # Errors
    /// As [`Outbox::open`].
    pub fn shared(
        dir: &Path,
        options: Options,
        fallback_after: Duration,
        keys: Keys,
    ) -> Result<Arc<Outbox>, OutboxError> {
        let mut open = OPEN.lock().expect("outbox registry");
        open.retain(|(_, o)| o.strong_count() > 0);
        if let Some(o) = open
            .iter()
            .find(|(d, _)| d == dir)
            .and_then(|(_, o)| o.upgrade())
        {
            return Ok(o);
        }
        let outbox = Arc::new(Outbox::open(dir, options, fallback_after, keys)?);
        open.push((dir.to_path_buf(), Arc::downgrade(&outbox)));
        Ok(outbox)
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `outbox.fallback_after`.
    pub fn fallback_after(&self) -> Duration {
        self.fallback_after
    }

    /// Sets who hears of queued, drained and refused events.
    pub fn set_listener(&self, listener: Listener) {
        *self.listener.lock().expect("listener lock") = Some(listener);
    }

    pub(super) fn notify(&self, notice: &Notice) {
        let listener = self.listener.lock().expect("listener lock").clone();
        if let Some(l) = listener {
            l(notice);
        }
    }

    /// Depth, bytes, oldest append time and torn counts.
    pub fn status(&self) -> Status {
        self.snapshot.lock().expect("outbox status lock").clone()
    }

    /// Whether the outbox holds events of `event_type`.
    pub(super) fn holds(&self, event_type: &str) -> bool {
        let types = self.types.lock().expect("outbox types lock");
        types.get(event_type).is_some_and(|n| *n > 0)
    }

    /// Publishes `event` to Redis within `fallback_after`, else queues it (see the module
    /// docs for when).
    ///
    /// # Errors
    /// [`SubmitError::Publish`]: invalid, or refused by Redis for a reason queueing cannot
    /// help; [`SubmitError::Outbox`]: Redis did not take it and neither did the outbox.
    pub async fn publish(
        &self,
        store: &Store,
        guard: &PublishConfig,
        event: NewEvent,
    ) -> Result<Outcome, SubmitError> {
        let deadline = Instant::now() + self.fallback_after;
        self.publish_by(store, guard, event, deadline).await
    }

    /// Queues `event` without trying Redis (a caller that could not even connect in
    /// time): gives it an id, checks it, appends it.
    ///
    /// # Errors
    /// The event is invalid, or the outbox refused it.
    pub async fn queue(&self, mut event: NewEvent, reason: Reason) -> Result<Queued, SubmitError> {
        event.id.get_or_insert_with(random_uuid);
        publish::validate(&event)?;
        Ok(self.append(event, reason).await?)
    }

    /// [`Outbox::publish`] with the Redis attempt bounded by `deadline`.
    pub async fn publish_by(
        &self,
        store: &Store,
        guard: &PublishConfig,
        mut event: NewEvent,
        deadline: Instant,
    ) -> Result<Outcome, SubmitError> {
        event.id.get_or_insert_with(random_uuid);
        publish::validate(&event)?;
        if self.holds(&event.event_type) {
            return Ok(Outcome::Queued(self.append(event, Reason::Behind).await?));
        }
        let attempt = publish::publish(store, &self.keys, guard, event.clone());
        let reason = match tokio::time::timeout_at(deadline, attempt).await {
            Ok(Ok(p)) => return Ok(Outcome::Published(p)),
            Ok(Err(PublishError::Store(e))) => match Reason::of(e.kind) {
                Some(reason) => reason,
                None => return Err(PublishError::Store(e).into()),
            },
            Ok(Err(e)) => return Err(e.into()),
            Err(_) => Reason::Timeout,
        };
        Ok(Outcome::Queued(self.append(event, reason).await?))
    }

    /// Publishes `events` in order, one result each, the Redis part bounded by one
    /// `fallback_after` for the whole batch: once one event is queued, the rest are queued
    /// behind it without trying Redis (their order is kept, and the batch still answers in
    /// time). Invalid events are refused alone.
    pub async fn publish_batch(
        &self,
        store: &Store,
        guard: &PublishConfig,
        events: Vec<NewEvent>,
    ) -> Vec<Result<Outcome, SubmitError>> {
        let deadline = Instant::now() + self.fallback_after;
        let mut queueing = false;
        let mut results = Vec::with_capacity(events.len());
        for mut event in events {
            let result = if queueing {
                event.id.get_or_insert_with(random_uuid);
                match publish::validate(&event) {
                    Ok(()) => self
                        .append(event, Reason::Behind)
                        .await
                        .map(Outcome::Queued)
                        .map_err(SubmitError::from),
                    Err(e) => Err(e.into()),
                }
            } else {
                self.publish_by(store, guard, event, deadline).await
            };
            queueing |= matches!(result, Ok(Outcome::Queued(_)));
            results.push(result);
        }
        results
    }

    /// Appends `event` (which has its id) to the log on the blocking pool, counts its type
    /// and wakes the drain.
    ///
    /// # Errors
    /// The log refused it (full, disk full, not writable, stopped).
    pub async fn append(&self, mut event: NewEvent, reason: Reason) -> Result<Queued, OutboxError> {
        let (inner, types, snapshot) = (
            self.inner.clone(),
            self.types.clone(),
            self.snapshot.clone(),
        );
        let event_type = event.event_type.clone();
        let appended = tokio::task::spawn_blocking(move || {
            let mut inner = inner.lock().expect("outbox lock");
            super::event::append_event(&mut inner.log, &mut event)?;
            *snapshot.lock().expect("outbox status lock") = inner.log.status();
            let mut types = types.lock().expect("outbox types lock");
            *types.entry(event.event_type.clone()).or_default() += 1;
            Ok::<_, OutboxError>(event)
        })
        .await
        .expect("outbox append task");
        let event = match appended {
            Ok(event) => event,
            Err(e) => {
                self.notify(&Notice::Refused(refusal_label(&e)));
                return Err(e);
            }
        };
        let queued = Queued {
            id: event.id.clone().unwrap_or_default(),
            stream: self.keys.stream(&event_type),
            event_type,
            correlation_id: event.correlation_id,
            reason,
            dir: self.dir.clone(),
        };
        self.notify(&Notice::Queued(queued.clone()));
        self.wake.notify_one();
        Ok(queued)
    }
}

/// The answer of a refused publish: `Retry-After` seconds for an outbox that is full (it
/// frees up as the drain runs) or cannot be written.
pub fn retry_after(e: &OutboxError) -> u64 {
    match e {
        OutboxError::Full { .. } => 5,
        _ => 30,
    }
}

impl Outbox {
    /// The `outbox` object of the health report; the `outbox_holding` reason while it holds
    /// events, `outbox_not_draining` instead once the oldest is older than `max_age` (or the `outbox_not_durable` one when
    /// the directory is on a filesystem that does not survive a restart).
    pub fn health(&self, max_age: Duration) -> (serde_json::Value, Vec<(&'static str, String)>) {
        use std::sync::atomic::Ordering;
        let (s, fsync) = (self.status(), self.fsync);
        let age_ms = s
            .oldest_time_ms
            .map(|t| crate::model::time::now_ms().saturating_sub(t));
        let warning = super::durability_warning(&self.dir);
        let draining =
            self.draining.load(Ordering::Relaxed) && !self.failing.load(Ordering::Relaxed);
        let fsync = match fsync {
            super::FsyncPolicy::Always => "always".to_string(),
            super::FsyncPolicy::Interval(d) => crate::config::format_duration(d),
        };
        let body = serde_json::json!({
            "dir": self.dir.display().to_string(),
            "depth": s.records,
            "bytes": s.bytes,
            "max_bytes": s.max_bytes,
            "oldest_age_seconds": age_ms.map(|ms| ms as f64 / 1000.0),
            "fsync": fsync,
            "durability_warning": warning,
            "draining": draining && s.records > 0,
            "torn_at_open": s.torn_at_open,
        });
        let mut reasons = Vec::new();
        let late = age_ms.is_some_and(|ms| ms > max_age.as_millis() as u64);
        if s.records > 0 && !late {
            reasons.push((
                "outbox_holding",
                format!(
                    "the local outbox {} holds {} event(s) Redis did not take (the oldest                      queued {}s ago); they are published when Redis takes writes again",
                    self.dir.display(),
                    s.records,
                    age_ms.unwrap_or(0) / 1000
                ),
            ));
        }
        if let Some(ms) = age_ms.filter(|ms| *ms > max_age.as_millis() as u64) {
            reasons.push((
                "outbox_not_draining",
                format!(
                    "the local outbox {} holds {} event(s), the oldest queued {}s ago (over \
                     outbox.max_age {}): Redis does not take them; check Redis and the \
                     outbox drain's log lines",
                    self.dir.display(),
                    s.records,
                    ms / 1000,
                    crate::config::format_duration(max_age)
                ),
            ));
        }
        if let Some(w) = warning {
            reasons.push(("outbox_not_durable", w));
        }
        (body, reasons)
    }
}
