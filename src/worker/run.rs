//! Running a worker: listen, connect, migrate, start the writers and gather the [`Parts`],
//! run start-up against Redis, split the parts into each role's narrow handles and start
//! the consume path and the background roles, then stop everything through the
//! [`Lifecycle`] when the caller's stop token fires.

use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::config::Config;
use crate::consume::reader;
use crate::http::server;
use crate::http::state::{ApiState, RateLimiter, WorkerView};
use crate::metrics::Metrics;
use crate::model::keys::Keys;
use crate::ops::backlog::{BacklogCache, BacklogSource};
use crate::ops::coordination::{self, Notices};
use crate::ops::migrations;
use crate::recover::discovery::{self, Discovery};
use crate::recover::forwarder::Forwarder;
use crate::recover::heartbeat::Heartbeat;
use crate::recover::reclaim;
use crate::recover::retention::Retention;
use crate::redis::store::{Store, StoreError};
use crate::worker::builder::WorkerError;
use crate::worker::health::Health;
use crate::worker::lifecycle::{Consuming, Lifecycle, Reached, Stage};
use crate::worker::parts::Parts;
use crate::worker::ping::Pinger;
use crate::worker::role;
use crate::worker::routes::{self, CodeRoute};
use crate::worker::sampler::Sampler;

/// Runs a worker until `stop`, then stops it (see [`Lifecycle`] for the order); with
/// `[[push.channels]]` rules, the push projector runs beside it (see
/// [`crate::worker::projector`]) and stops with it.
pub async fn run(
    cfg: Config,
    code_routes: Vec<CodeRoute>,
    metrics: Metrics,
    stop: CancellationToken,
) -> Result<(), WorkerError> {
    let projector = crate::worker::projector::spawn(&cfg, &metrics, &stop);
    let result = run_worker(cfg, code_routes, metrics, stop, true).await;
    if let Some((own_stop, task)) = projector {
        if result.is_err() {
            own_stop.cancel();
        }
        match task.await {
            Ok(Err(e)) => error!(error = %e, "the push projector stopped with an error"),
            Err(e) => error!(error = %e, "the push projector panicked"),
            Ok(Ok(())) => {}
        }
    }
    result
}

/// Runs one worker until `stop`; `serve`: whether it runs the HTTP listener (the push
/// projector does not).
pub(crate) async fn run_worker(
    cfg: Config,
    code_routes: Vec<CodeRoute>,
    metrics: Metrics,
    stop: CancellationToken,
    serve: bool,
) -> Result<(), WorkerError> {
    let notices = Notices::channel();
    let routes = routes::build(&cfg, &code_routes, &metrics, &notices.0)?;
    let life = Lifecycle::new();
    let health = Arc::new(Health::new(cfg.health.clone()));
    let view = Arc::new(OnceLock::new());
    // Before listening: a second process on the same outbox directory refuses to start.
    let outbox = match serve {
        true => crate::worker::outbox::open(&cfg).await?,
        false => None,
    };
    if serve {
        let offline = outbox.clone().map(|outbox| {
            Arc::new(crate::http::state::Offline {
                outbox,
                publish: cfg.publish.clone(),
            })
        });
        listen(&cfg, &metrics, &health, &view, &life, offline).await?;
    } else {
        info!(group = %cfg.group, "push projector starting");
    }
    // The gauge exists (at 0) while Redis is still unreachable.
    let redis_up = metrics.redis_up.with_label_values(&[&cfg.env]);
    let Some(store) = connect_until_stopped(&cfg, &health, &stop).await? else {
        life.stop(Reached {
            store: None,
            consuming: None,
        })
        .await;
        return Ok(());
    };
    redis_up.set(1);
    start_series(&cfg, &metrics);
    let store = store.recording_refusals(health.refusals.clone());
    store.count_unreplicated_moves(
        metrics
            .moves_unreplicated_total
            .with_label_values(&[&cfg.env]),
    );
    health
        .refusals
        .bind(&metrics.redis_refused_writes_total, &cfg.env);
    health.redis_up.store(true, Ordering::Relaxed);
    prepare(&store, &Keys::new(&cfg.env)).await?;
    let parts = Parts::start(cfg, store.clone(), routes, metrics, notices, &health, &life);
    let _ = view.set(Arc::new(worker_view(&parts, outbox.clone())));
    if let Some(outbox) = outbox {
        crate::worker::outbox::start(outbox, &parts, stop.clone());
    }
    let discovery = Arc::new(discovery(&parts));
    let heartbeat = heartbeat(&parts);
    startup(&parts, &discovery, &heartbeat, &stop).await;
    if stop.is_cancelled() {
        life.stop(Reached {
            store: Some(&store),
            consuming: None,
        })
        .await;
        return Ok(());
    }
    consume(&life, &parts, discovery, heartbeat).await;
    stop.cancelled().await;
    stop_consuming(life, &parts, &store).await;
    Ok(())
}

/// The stop of a worker that consumes: every step of [`Lifecycle::stop`].
async fn stop_consuming(life: Lifecycle, parts: &Parts, store: &Store) {
    life.stop(Reached {
        store: Some(store),
        consuming: Some(Consuming {
            shutdown_timeout: parts.cfg.shutdown_timeout,
            in_flight: &parts.in_flight,
            stopped_notice: Box::new(move || {
                let notice = self_notice(parts, coordination::kind::STOPPED);
                parts.notices.send(notice);
            }),
            heartbeat_key: parts.keys.heartbeat(parts.group(), parts.consumer()),
            health: &parts.health,
        }),
    })
    .await;
}

/// Binds the HTTP listener and runs it on [`Stage::Http`]; logs the start line and the
/// configuration warnings.
async fn listen(
    cfg: &Config,
    metrics: &Metrics,
    health: &Arc<Health>,
    view: &Arc<OnceLock<Arc<WorkerView>>>,
    life: &Lifecycle,
    offline: Option<Arc<crate::http::state::Offline>>,
) -> Result<(), WorkerError> {
    let api_state = ApiState {
        metrics: metrics.clone(),
        health: health.clone(),
        ready_window: cfg.read_block * 3 + Duration::from_secs(5),
        worker: view.clone(),
        token: cfg.api.token.clone(),
        apps: crate::http::app_auth::AppVerifier::from_config(&cfg.apps).map(Arc::new),
        backlog: Arc::new(BacklogCache::default()),
        limiter: Arc::new(RateLimiter::new(cfg.api.rate_limit)),
        header_timeout: cfg.api.header_timeout,
        body_timeout: cfg.api.body_timeout,
        push: None,
        offline,
    };
    let api_state = crate::worker::projector::serve_push(cfg, metrics, api_state, life).await?;
    let (bound, api_task) = server::serve(cfg.api.listen, api_state, life.token(Stage::Http))
        .await
        .map_err(|source| WorkerError::Listen {
            addr: cfg.api.listen,
            source,
        })?;
    life.spawn(Stage::Http, api_task);
    // The runtime's worker threads (`worker_threads`; an embedding application's own).
    let runtime_threads = tokio::runtime::Handle::current().metrics().num_workers();
    info!(listen = %bound, env = %cfg.env, group = %cfg.group, consumer = %cfg.consumer, redis = %cfg.redis_url, runtime_threads, "event-worker starting");
    for w in &cfg.warnings {
        warn!("{w}");
    }
    Ok(())
}

/// Starts the series alerts use at 0, so the first change is visible to `increase()`.
fn start_series(cfg: &Config, metrics: &Metrics) {
    let (env, group) = (cfg.env.as_str(), cfg.group.as_str());
    metrics.in_flight.with_label_values(&[env, group]).set(0);
    for counter in [
        &metrics.dlq_trimmed_total,
        &metrics.dlq_purged_total,
        &metrics.history_dropped_total,
    ] {
        counter.with_label_values(&[env]).inc_by(0);
    }
    for counter in [
        &metrics.retries_forwarded_total,
        &metrics.groups_recreated_total,
        &metrics.handed_on_total,
    ] {
        counter.with_label_values(&[env, group]).inc_by(0);
    }
    for op in [
        "read",
        "settle",
        "reclaim",
        "schedule",
        "heartbeat",
        "discovery",
    ] {
        metrics
            .redis_errors_total
            .with_label_values(&[env, op])
            .inc_by(0);
    }
}

/// Applies the migrations, starts counting an existing DLQ, and warns when Redis may
/// evict keys.
async fn prepare(store: &Store, keys: &Keys) -> Result<(), WorkerError> {
    let (report, policy) =
        tokio::join!(migrations::apply_all(store, keys), store.maxmemory_policy());
    let report = report?;
    if !report.applied.is_empty() {
        info!(applied = ?report.applied, "migrations applied");
    }
    tokio::spawn(crate::ops::dlq::build_in_background(
        store.clone(),
        keys.clone(),
    ));
    if let Some(policy) = policy
        && policy != "noeviction"
    {
        warn!(policy = %policy, "Redis maxmemory-policy is not noeviction: eviction can silently delete streams and groups");
    }
    Ok(())
}

/// What the HTTP endpoints see of the worker.
fn worker_view(parts: &Parts, outbox: Option<Arc<crate::outbox::Outbox>>) -> WorkerView {
    let (env, group) = (parts.env().to_string(), parts.group().to_string());
    WorkerView {
        store: parts.store.clone(),
        keys: parts.keys.clone(),
        breakers: parts.routes.iter().map(|r| r.breaker.clone()).collect(),
        in_flight: parts.in_flight.clone(),
        streams: parts.streams.clone(),
        history: parts.history.clone(),
        notices: parts.notices.clone(),
        history_max_len: parts.cfg.history.max_len,
        publish: parts.cfg.publish.clone(),
        backlog: backlog_source(parts),
        metrics: parts.metrics.clone(),
        outbox,
        outbox_max_age: parts.cfg.outbox.max_age,
        consumer: parts.consumer().to_string(),
        env,
        group,
    }
}

/// Where this worker's backlog figures come from.
fn backlog_source(parts: &Parts) -> BacklogSource {
    BacklogSource {
        store: parts.store.clone(),
        streams: parts.streams.clone(),
        redeliver: parts.redeliver.clone(),
        retry: parts.keys.retry(parts.group()),
        dlq: parts.keys.dlq(),
        metrics: parts.metrics.clone(),
        env: parts.env().to_string(),
        group: parts.group().to_string(),
    }
}

/// The discovery role of this worker.
fn discovery(parts: &Parts) -> Discovery {
    Discovery {
        store: parts.store.clone(),
        keys: parts.keys.clone(),
        group: parts.group().to_string(),
        patterns: parts.routes.iter().map(|r| r.patterns.clone()).collect(),
        streams: parts.streams.clone(),
        health: parts.health.clone(),
        metrics: parts.metrics.clone(),
        env: parts.env().to_string(),
        interval: parts.cfg.discovery_interval,
        errors: parts.redis_errors("discovery"),
        poke: Default::default(),
        scan_interval: parts.cfg.health.scan_interval,
        logged: Default::default(),
    }
}

/// The heartbeat role of this worker.
fn heartbeat(parts: &Parts) -> Heartbeat {
    Heartbeat {
        store: parts.store.clone(),
        key: parts.keys.heartbeat(parts.group(), parts.consumer()),
        ttl: parts.cfg.heartbeat_ttl,
        group: parts.group().to_string(),
        consumer: parts.consumer().to_string(),
        visibility_timeout: parts.cfg.visibility_timeout,
        in_flight: parts.in_flight.clone(),
        errors: parts.redis_errors("heartbeat"),
    }
}

/// Opens the acknowledging connection in the background, takes back this consumer's
/// leftovers, starts the reader and the reclaimer on
/// [`Stage::Read`] and the background roles on [`Stage::Roles`], and announces the start.
async fn consume(life: &Lifecycle, parts: &Parts, discovery: Arc<Discovery>, heartbeat: Heartbeat) {
    let (events, read_stop) = (life.tracker(Stage::Events), life.token(Stage::Read));
    let (reader, reclaimer) = parts.consume_path(discovery.clone());
    let (store, stop) = (parts.store.clone(), read_stop.clone());
    tokio::spawn(async move {
        // Given up at stop (it would otherwise wait out the connect timeout, 5 s).
        tokio::select! {
            () = store.open_ack_connection() => {}
            () = stop.cancelled() => {}
        }
    });
    if let Err(e) =
        reclaim::claim_own_leftovers(&reclaimer, &events, &read_stop, Duration::ZERO).await
    {
        warn!(error = %e, "could not re-deliver this consumer's leftovers; the backstop will");
    }
    life.spawn(
        Stage::Read,
        reader::run(reader, read_stop.clone(), events.clone()),
    );
    life.spawn(Stage::Read, reclaim::run(reclaimer, read_stop, events));
    let roles = life.token(Stage::Roles);
    let forwarder = Forwarder {
        store: parts.store.clone(),
        retry_key: parts.keys.retry(parts.group()),
        redeliver: parts.redeliver.clone(),
        interval: parts.cfg.scheduler_interval,
        forwarded: parts
            .metrics
            .retries_forwarded_total
            .with_label_values(&[parts.env(), parts.group()]),
        errors: parts.redis_errors("schedule"),
        last_error_log: None,
    };
    life.spawn(Stage::Roles, role::run(forwarder, roles.clone()));
    life.spawn(Stage::Roles, role::run(heartbeat, roles.clone()));
    // A type announced by a publisher (see `coordination::announce_type`) is discovered
    // at once when a route would consume it.
    let hears = discovery.clone();
    let on_type = move |t: &str| {
        if hears.wants(t) {
            hears.poke.notify_one();
        }
    };
    let channel = parts.keys.coordination();
    let listener = coordination::listen(parts.store.clone(), channel, on_type, roles.clone());
    life.spawn(Stage::Roles, listener);
    life.spawn(Stage::Roles, discovery::run(discovery, roles.clone()));
    let sampler = Sampler {
        source: backlog_source(parts),
        health: parts.health.clone(),
    };
    life.spawn(Stage::Roles, role::run(sampler, roles.clone()));
    let pinger = Pinger {
        store: parts.store.clone(),
        gauge: parts.metrics.redis_up.with_label_values(&[parts.env()]),
        health: parts.health.clone(),
        said: RepeatedError::default(),
        watch: Default::default(),
        metrics: (parts.metrics.clone(), parts.env().to_string()),
    };
    life.spawn(Stage::Roles, role::run(pinger, roles.clone()));
    let retention = Retention::new(
        &parts.cfg,
        parts.store.clone(),
        &parts.keys,
        parts.streams.clone(),
        &parts.metrics,
    );
    if let Some(retention) = retention {
        life.spawn(Stage::Roles, role::run(retention, roles));
    }
    parts
        .notices
        .send(self_notice(parts, coordination::kind::STARTED));
    parts.health.consuming.store(true, Ordering::Relaxed);
    info!(streams = parts.streams.snapshot().len(), "consuming");
}

fn self_notice(parts: &Parts, kind: &str) -> String {
    let extra =
        serde_json::json!({"pid": std::process::id(), "version": env!("CARGO_PKG_VERSION")});
    coordination::notice(kind, parts.env(), parts.group(), parts.consumer(), extra)
}

/// Connects, retrying with backoff (200 ms doubling to 5 s) while Redis is unreachable or
/// refuses the password (a rotated password heals without a restart). The plain-words error
/// is logged at ERROR when connecting starts failing (or the cause changes) and again at most
/// once a minute while it persists, and kept in [`Health::redis_error`]. TLS and URL errors
/// are final. Returns `None` when stopped first.
async fn connect_until_stopped(
    cfg: &Config,
    health: &Health,
    stop: &CancellationToken,
) -> Result<Option<Store>, StoreError> {
    let mut pause = Duration::from_millis(200);
    let mut said = RepeatedError::default();
    loop {
        let attempt = Store::connect(cfg, &cfg.consumer);
        let result = tokio::select! {
            r = attempt => r,
            _ = stop.cancelled() => return Ok(None),
        };
        match result {
            Ok(store) => {
                set_redis_error(health, None);
                if said.failing() {
                    info!(redis = %cfg.redis_url, "connected to Redis");
                }
                return Ok(Some(store));
            }
            Err(e) if e.kind.is_final() => return Err(e),
            Err(e) => {
                set_redis_error(health, Some(e.to_string()));
                if said.should_log(&e.to_string()) {
                    error!("{e}; retrying with backoff (up to every 5 s)");
                }
                tokio::select! {
                    _ = tokio::time::sleep(pause) => {}
                    _ = stop.cancelled() => return Ok(None),
                }
                pause = (pause * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// Sets (or clears) the plain-words Redis error that health reports.
pub(crate) fn set_redis_error(health: &Health, error: Option<String>) {
    *health.redis_error.lock().unwrap_or_else(|e| e.into_inner()) = error;
}

/// Logs a persisting error once when it starts (or its cause changes), then at most once a
/// minute.
#[derive(Default)]
pub(crate) struct RepeatedError {
    last: Option<(String, std::time::Instant)>,
}

impl RepeatedError {
    /// How often a persisting error is logged again.
    const EVERY: Duration = Duration::from_secs(60);

    /// Whether to log now an error whose cause is `cause` (`""`: any cause counts as the
    /// same error); records it as logged when so.
    pub(crate) fn should_log(&mut self, cause: &str) -> bool {
        let due = match &self.last {
            Some((c, at)) => c != cause || at.elapsed() >= Self::EVERY,
            None => true,
        };
        if due {
            self.last = Some((cause.to_string(), std::time::Instant::now()));
        }
        due
    }

    /// Whether an error was logged since the last [`RepeatedError::clear`].
    pub(crate) fn failing(&self) -> bool {
        self.last.is_some()
    }

    /// The error is over.
    pub(crate) fn clear(&mut self) {
        self.last = None;
    }
}

/// Groups on the redeliver stream and the type streams, the first heartbeat. Retries with
/// backoff until it works or `stop` fires.
async fn startup(
    parts: &Parts,
    discovery: &Discovery,
    heartbeat: &Heartbeat,
    stop: &CancellationToken,
) {
    let mut pause = Duration::from_millis(200);
    loop {
        // Independent of each other: sent together (one round trip on a remote Redis, not three).
        let result = futures::future::try_join3(
            parts.store.ensure_group(&parts.redeliver, parts.group()),
            discovery.refresh(),
            heartbeat.beat(),
        )
        .await
        .map(drop);
        match result {
            Ok(()) => return,
            Err(e) => {
                error!(error = %e, "start-up against Redis failed; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(pause) => {}
                    _ = stop.cancelled() => return,
                }
                pause = (pause * 2).min(Duration::from_secs(5));
            }
        }
    }
}
