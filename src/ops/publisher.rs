//! The library's [`Publisher`]: [`crate::ops::publish`] on a connection of its own, with the
//! local outbox when `outbox.enabled`, and then usable from the start even while Redis is
//! unreachable (it connects in the background and drains what it queued meanwhile).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::OnceCell;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::{Config, PublishConfig};
use crate::model::keys::Keys;
use crate::ops::publish::{self, NewEvent, PublishError, Published};
use crate::outbox::fallback::Reason;
use crate::outbox::{Outbox, Outcome, SubmitError};
use crate::redis::store::{Store, StoreError};

/// The library's publisher: appends events to `events:<env>:<type>` of the configured env,
/// with the wire format's fields, on its own Redis connection.
///
/// ```no_run
/// # async fn demo(config: event_worker::Config) -> Result<(), event_worker::PublishError> {
/// use event_worker::{NewEvent, Publisher};
/// let publisher = Publisher::connect(&config).await?;
/// let published = publisher
///     .publish(NewEvent {
///         event_type: "invoice.paid".into(),
///         data: r#"{"invoiceId":"i-1"}"#.into(),
///         ..Default::default()
///     })
///     .await?;
/// println!("{} is entry {}", published.id, published.entry_id);
/// publisher.close().await;
/// # Ok(()) }
/// ```
///
/// With `outbox.enabled`, [`Publisher::submit`] falls back to the local outbox (README
/// "Outbox") and the publisher drains it while it is open; [`Publisher::publish`] never
/// queues. With the outbox, [`Publisher::connect`] also succeeds while Redis is unreachable:
/// the publisher keeps connecting in the background (200 ms doubling to 5 s), `submit`
/// queues every event meanwhile (reason `unreachable`), and the drain starts once connected.
pub struct Publisher {
    redis: Arc<Connection>,
    keys: Keys,
    guard: PublishConfig,
    outbox: Option<Arc<Outbox>>,
    stop: CancellationToken,
}

/// The publisher's Redis connection: set once connected; until then the last error.
#[derive(Default)]
struct Connection {
    store: OnceCell<Store>,
    error: Mutex<Option<StoreError>>,
}

impl Connection {
    /// The store, or the error that keeps it away.
    fn store(&self) -> Result<&Store, StoreError> {
        self.store.get().ok_or_else(|| {
            let error = self.error.lock().unwrap_or_else(|e| e.into_inner());
            error.clone().unwrap_or_else(|| {
                let kind = crate::redis::error::RedisErrorKind::Connection;
                StoreError::new("connect", kind, "not connected to Redis yet")
            })
        })
    }
}

impl Publisher {
    /// Connects to the configured Redis. With `outbox.enabled`, opens the outbox first and
    /// does not wait for Redis longer than `outbox.fallback_after`: an unreachable Redis (or
    /// a refused password) is retried in the background while [`Publisher::submit`] queues.
    ///
    /// # Errors
    /// Without the outbox: Redis unreachable or refusing the connection. Always: a final
    /// connection error (TLS, missing permissions) or a bad URL.
    /// With `outbox.enabled`, its directory cannot be opened (another process holds it, or
    /// it is damaged): [`PublishError::Outbox`] names it and what to do.
    pub async fn connect(config: &Config) -> Result<Self, PublishError> {
        let keys = Keys::new(&config.env);
        let redis = Arc::new(Connection::default());
        let stop = CancellationToken::new();
        let publisher = |outbox| Publisher {
            redis: redis.clone(),
            keys: keys.clone(),
            guard: config.publish.clone(),
            outbox,
            stop: stop.clone(),
        };
        if !config.outbox.enabled {
            let store = Store::connect(config, "publisher").await?;
            let _ = redis.store.set(store);
            return Ok(publisher(None));
        }
        let outbox = open_outbox(config, &keys).await?;
        let first = tokio::time::timeout(
            config.outbox.fallback_after,
            Store::connect(config, "publisher"),
        )
        .await;
        match first {
            Ok(Ok(store)) => {
                start_drain(config, &keys, &outbox, &store, &stop);
                let _ = redis.store.set(store);
            }
            Ok(Err(e)) if e.kind.is_final() => return Err(e.into()),
            failed => {
                let e = match failed {
                    Ok(Err(e)) => e,
                    _ => timed_out(config),
                };
                warn!("{e}; the publisher queues events in the outbox and keeps connecting");
                *redis.error.lock().unwrap_or_else(|e| e.into_inner()) = Some(e);
                let later = ConnectLater {
                    config: config.clone(),
                    keys: keys.clone(),
                    outbox: outbox.clone(),
                    redis: redis.clone(),
                    stop: stop.clone(),
                };
                tokio::spawn(later.run());
            }
        }
        Ok(publisher(Some(outbox)))
    }

    /// Whether the publisher is connected to Redis (always, without the outbox).
    pub fn is_connected(&self) -> bool {
        self.redis.store.get().is_some()
    }

    /// Publishes `event` as [`Publisher::publish`] does, but with `outbox.enabled` answers
    /// within `outbox.fallback_after`: when Redis does not take it in time, is unreachable
    /// (also before the publisher's first connection) or refuses writes, the event is queued
    /// in the local outbox and [`crate::PublishOutcome::Queued`] says so (the publisher
    /// drains it once Redis answers).
    ///
    /// # Errors
    /// Invalid event, a Redis refusal queueing cannot help (NOPERM), or the outbox refused it.
    pub async fn submit(&self, event: NewEvent) -> Result<Outcome, SubmitError> {
        match (&self.outbox, self.redis.store.get()) {
            (Some(outbox), Some(store)) => outbox.publish(store, &self.guard, event).await,
            (Some(outbox), None) => Ok(Outcome::Queued(
                outbox.queue(event, Reason::Unreachable).await?,
            )),
            (None, _) => Ok(Outcome::Published(self.publish(event).await?)),
        }
    }

    /// Validates `event` and appends it to its type stream; with an `id`, once per
    /// (type, id) within `[publish] dedup_window` (a repeat returns `duplicate: true`).
    ///
    /// # Errors
    /// Invalid type, id or data (before any Redis call), or a Redis failure (also while
    /// the publisher has not connected yet: the connection's last error).
    pub async fn publish(&self, event: NewEvent) -> Result<Published, PublishError> {
        publish::validate(&event)?;
        let store = self.redis.store()?;
        publish::publish(store, &self.keys, &self.guard, event).await
    }

    /// Publishes `events` in order, each as [`Publisher::publish`] does; one result per
    /// event. Invalid events are refused alone; after a Redis failure the remaining events
    /// are not attempted and get that error too (resend them with the same ids).
    pub async fn publish_batch(
        &self,
        events: Vec<NewEvent>,
    ) -> Vec<Result<Published, PublishError>> {
        match self.redis.store() {
            Ok(store) => publish::publish_batch(store, &self.keys, &self.guard, events).await,
            Err(e) => events
                .iter()
                .map(|event| {
                    publish::validate(event)?;
                    Err(PublishError::Store(e.clone()))
                })
                .collect(),
        }
    }

    /// Stops connecting and the outbox drain, and closes the connection.
    pub async fn close(self) {
        self.stop.cancel();
        if let Some(store) = self.redis.store.get() {
            store.quit().await;
        }
    }
}

/// The error of a first connection that did not answer within `outbox.fallback_after`.
fn timed_out(config: &Config) -> StoreError {
    StoreError::timed_out(&config.redis_url, "connect", config.outbox.fallback_after)
}

/// Opens the outbox of `config` (shared with a worker of this process).
async fn open_outbox(config: &Config, keys: &Keys) -> Result<Arc<Outbox>, PublishError> {
    let o = &config.outbox;
    let (dir, options, after, k) = (o.dir.clone(), o.options(), o.fallback_after, keys.clone());
    tokio::task::spawn_blocking(move || Outbox::shared(&dir, options, after, k))
        .await
        .expect("outbox open task")
        .map_err(|e| PublishError::Outbox(e.to_string()))
}

/// Starts the drain of `outbox` on `store`, until `stop`.
fn start_drain(
    config: &Config,
    keys: &Keys,
    outbox: &Arc<Outbox>,
    store: &Store,
    stop: &CancellationToken,
) {
    let pump = crate::outbox::pump::Pump {
        store: store.clone(),
        guard: config.publish.clone(),
        keys: keys.clone(),
        rate: config.outbox.drain_rate,
        options: config.outbox.options(),
    };
    tokio::spawn(crate::outbox::pump::run(outbox.clone(), pump, stop.clone()));
}

/// The background connection of a publisher whose first attempt failed.
struct ConnectLater {
    config: Config,
    keys: Keys,
    outbox: Arc<Outbox>,
    redis: Arc<Connection>,
    stop: CancellationToken,
}

impl ConnectLater {
    /// Connects with backoff (200 ms doubling to 5 s) until connected or stopped, then
    /// starts the drain. A final error (TLS, permissions) ends the attempts with an error log.
    async fn run(self) {
        let mut pause = Duration::from_millis(200);
        loop {
            tokio::select! {
                () = tokio::time::sleep(pause) => {}
                () = self.stop.cancelled() => return,
            }
            let attempt = tokio::select! {
                r = Store::connect(&self.config, "publisher") => r,
                () = self.stop.cancelled() => return,
            };
            match attempt {
                Ok(store) => {
                    info!(redis = %self.config.redis_url, "the publisher connected to Redis; draining its outbox");
                    start_drain(&self.config, &self.keys, &self.outbox, &store, &self.stop);
                    let _ = self.redis.store.set(store);
                    return;
                }
                Err(e) if e.kind.is_final() => {
                    tracing::error!(
                        "{e}; the publisher stops connecting (its outbox keeps what it queued)"
                    );
                    *self.redis.error.lock().unwrap_or_else(|e| e.into_inner()) = Some(e);
                    return;
                }
                Err(e) => {
                    *self.redis.error.lock().unwrap_or_else(|e| e.into_inner()) = Some(e);
                    pause = (pause * 2).min(Duration::from_secs(5));
                }
            }
        }
    }
}
