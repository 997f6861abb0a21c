//! The worker: builds the shared state from a [`Config`] (plus routes added in code), then
//! runs the roles (consumer, reclaimer, scheduler, heartbeater, discovery, pinger) and the
//! HTTP listener until the stop token fires, and stops them in order: reading first, then
//! in-flight work (bounded by `shutdown_timeout`), then the rest.

use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock, RwLock};
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{error, info, warn};

use crate::config::{Config, ConfigError, HandlerKind};
use crate::consume::backoff::RetryPolicy;
use crate::deliver::breaker::{Breaker, BreakerState};
use crate::deliver::handler::{BlackholeHandler, Handler, HttpHandler};
use crate::http::server::{self, ApiState};
use crate::metrics::Metrics;
use crate::model::keys::{self, Keys};
use crate::ops::backlog::BacklogCache;
use crate::ops::coordination::{self, Notices};
use crate::redis::store::{Store, StoreError};
use crate::settle::acker::Acker;
use crate::worker::shared::{Health, Route, Shared};
use crate::{
    consume::reader, ops::migrations, recover::discovery, recover::forwarder, recover::heartbeat,
    recover::reclaim, recover::retention, settle::history,
};

/// Why the worker could not run.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// Bad configuration or routes.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Redis refused us in a way retrying cannot fix (auth, TLS), or a migration failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The HTTP listener could not bind.
    #[error("api.listen {addr}: {source}")]
    Listen {
        /// The address.
        addr: std::net::SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// Builds and runs a worker. Routes added with [`WorkerBuilder::route`] come before the
/// configuration's `[[routes]]`, so code can take over a type the file also names.
pub struct WorkerBuilder {
    config: Config,
    code_routes: Vec<(Vec<String>, Arc<dyn Handler>)>,
    metrics: Metrics,
}

impl WorkerBuilder {
    /// A worker for `config`.
    pub fn new(config: Config) -> Self {
        WorkerBuilder {
            config,
            code_routes: Vec::new(),
            metrics: Metrics::new(),
        }
    }

    /// Serves the types matching `patterns` (exact types or globs) with `handler`.
    pub fn route<H: Handler>(mut self, patterns: &[&str], handler: H) -> Self {
        self.code_routes.push((
            patterns.iter().map(|p| p.to_string()).collect(),
            Arc::new(handler),
        ));
        self
    }

    /// The metrics this worker will export (to share a registry with the embedding app).
    pub fn metrics(&self) -> Metrics {
        self.metrics.clone()
    }

    /// A closed breaker named `name`, with its series started at 0.
    fn breaker(
        &self,
        name: &str,
        listener: &crate::deliver::breaker::StateListener,
    ) -> Arc<Breaker> {
        let labels = [self.config.env.as_str(), name];
        self.metrics.breaker_state.with_label_values(&labels).set(0);
        self.metrics
            .breaker_rejected_total
            .with_label_values(&labels)
            .inc_by(0);
        Arc::new(Breaker::new(name, &self.config.breaker, listener.clone()))
    }

    fn build_routes(&self, notices: &Notices) -> Result<Vec<Route>, ConfigError> {
        let mut errors = Vec::new();
        let env = self.config.env.clone();
        let (group, consumer) = (self.config.group.clone(), self.config.consumer.clone());
        let gauge = self.metrics.breaker_state.clone();
        let notices = notices.clone();
        let listener: crate::deliver::breaker::StateListener =
            Arc::new(move |name: &str, state: BreakerState| {
                gauge.with_label_values(&[&env, name]).set(state as i64);
                let kind = match state {
                    BreakerState::Open => coordination::kind::BREAKER_OPENED,
                    BreakerState::HalfOpen => coordination::kind::BREAKER_HALF_OPEN,
                    BreakerState::Closed => coordination::kind::BREAKER_CLOSED,
                };
                notices.send(coordination::notice(
                    kind,
                    &env,
                    &group,
                    &consumer,
                    serde_json::json!({"handler": name}),
                ));
                match state {
                    BreakerState::Open => warn!(
                        handler = name,
                        "circuit breaker opened; pausing the streams it serves"
                    ),
                    BreakerState::HalfOpen => info!(
                        handler = name,
                        "circuit breaker half-open; letting one probe through"
                    ),
                    BreakerState::Closed => info!(handler = name, "circuit breaker closed"),
                }
            });
        // Built only when an http route needs it (loading the system's CA roots takes a few
        // milliseconds of every start otherwise).
        let mut client: Option<reqwest::Client> = None;
        let mut routes = Vec::new();
        for (i, (patterns, handler)) in self.code_routes.iter().enumerate() {
            for p in patterns {
                if !keys::is_valid_pattern(p) {
                    errors.push(format!("code route {i}: `{p}` is not a valid type or glob"));
                }
            }
            let name = format!("code:{}", patterns.join(","));
            routes.push(Route {
                patterns: patterns.clone(),
                handler: handler.clone(),
                breaker: self.breaker(&name, &listener),
                timeout: Duration::from_secs(60),
            });
        }
        for (i, rc) in self.config.routes.iter().enumerate() {
            let handler: Arc<dyn Handler> = match (&rc.handler, &rc.url) {
                (HandlerKind::Http, Some(url)) => {
                    let client = match &client {
                        Some(c) => c.clone(),
                        None => {
                            let c = HttpHandler::default_client()
                                .map_err(|e| ConfigError(vec![format!("http client: {e}")]))?;
                            client = Some(c.clone());
                            c
                        }
                    };
                    match HttpHandler::new(
                        client,
                        url.clone(),
                        &rc.headers,
                        rc.signing_secret.as_ref().map(|s| s.expose()),
                    ) {
                        Ok(h) => Arc::new(h),
                        Err(e) => {
                            errors.push(format!("routes[{i}].headers: {e}"));
                            continue;
                        }
                    }
                }
                _ => Arc::new(BlackholeHandler),
            };
            routes.push(Route {
                patterns: rc.types.clone(),
                handler,
                breaker: self.breaker(&rc.handler_name(i), &listener),
                timeout: rc.timeout,
            });
        }
        if routes.is_empty() {
            errors.push(
                "routes: at least one [[routes]] entry (or a route in code) is needed".into(),
            );
        }
        if errors.is_empty() {
            Ok(routes)
        } else {
            Err(ConfigError(errors))
        }
    }

    /// Runs until `stop` is cancelled, then stops gracefully.
    ///
    /// # Errors
    /// Bad routes, an unbindable listener, or a Redis error that retrying cannot fix.
    pub async fn run(self, stop: CancellationToken) -> Result<(), WorkerError> {
        let (notices, notice_rx) = Notices::channel();
        let routes = self.build_routes(&notices)?;
        let cfg = self.config;
        let metrics = self.metrics;
        let health = Arc::new(Health::default());
        let api_stop = CancellationToken::new();
        let shared_cell = Arc::new(OnceLock::new());
        let api_state = ApiState {
            metrics: metrics.clone(),
            health: health.clone(),
            ready_window: cfg.read_block * 3 + Duration::from_secs(5),
            shared: shared_cell.clone(),
            token: cfg.api.token.clone(),
            backlog: Arc::new(BacklogCache::default()),
            limiter: Arc::new(server::RateLimiter::new(cfg.api.rate_limit)),
            header_timeout: cfg.api.header_timeout,
            body_timeout: cfg.api.body_timeout,
        };
        let (bound, api_task) = server::serve(cfg.api.listen, api_state, api_stop.clone())
            .await
            .map_err(|source| WorkerError::Listen {
                addr: cfg.api.listen,
                source,
            })?;
        info!(listen = %bound, env = %cfg.env, group = %cfg.group, consumer = %cfg.consumer, redis = %cfg.redis_url, "event-worker starting");
        for w in &cfg.warnings {
            warn!("{w}");
        }
        let redis_up = metrics.redis_up.with_label_values(&[&cfg.env]);
        let Some(store) = connect_until_stopped(&cfg, &stop).await? else {
            api_stop.cancel();
            let _ = api_task.await;
            return Ok(());
        };
        redis_up.set(1);
        // Series that alerts use start at 0, so the first change is visible to increase().
        metrics
            .in_flight
            .with_label_values(&[&cfg.env, &cfg.group])
            .set(0);
        metrics
            .dlq_trimmed_total
            .with_label_values(&[&cfg.env])
            .inc_by(0);
        metrics
            .dlq_purged_total
            .with_label_values(&[&cfg.env])
            .inc_by(0);
        metrics
            .history_dropped_total
            .with_label_values(&[&cfg.env])
            .inc_by(0);
        metrics
            .retries_forwarded_total
            .with_label_values(&[&cfg.env, &cfg.group])
            .inc_by(0);
        metrics
            .groups_recreated_total
            .with_label_values(&[&cfg.env, &cfg.group])
            .inc_by(0);
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
                .with_label_values(&[&cfg.env, op])
                .inc_by(0);
        }
        health.redis_up.store(true, Ordering::Relaxed);
        let keys = Keys::new(&cfg.env);
        let report = migrations::apply_all(&store, &keys).await?;
        if !report.applied.is_empty() {
            info!(applied = ?report.applied, "migrations applied");
        }
        if let Some(policy) = store.maxmemory_policy().await
            && policy != "noeviction"
        {
            warn!(policy = %policy, "Redis maxmemory-policy is not noeviction: eviction can silently delete streams and groups");
        }
        let history_stop = CancellationToken::new();
        let (history, history_task) = history::start(
            store.clone(),
            keys.history(),
            cfg.history.clone(),
            metrics.clone(),
            &cfg.env,
            history_stop.clone(),
        );
        let notices_stop = CancellationToken::new();
        let notices_task = tokio::spawn(coordination::run(
            store.clone(),
            keys.coordination(),
            notice_rx,
            notices_stop.clone(),
        ));
        let acker_stop = CancellationToken::new();
        let (acker, acker_task) =
            Acker::start(store.clone(), cfg.group.clone(), acker_stop.clone());
        let shared = Arc::new(Shared {
            acker,
            history,
            notices,
            keys: keys.clone(),
            redeliver: keys.redeliver(&cfg.group),
            store: store.clone(),
            metrics: metrics.clone(),
            routes,
            retry: RetryPolicy::new(cfg.retry.clone()),
            permits: Arc::new(Semaphore::new(cfg.concurrency)),
            unacked: Arc::new(Semaphore::new(cfg.concurrency)),
            in_flight: Default::default(),
            type_facts: Default::default(),
            streams: RwLock::new(Arc::new(Vec::new())),
            health: health.clone(),
            cfg,
        });
        let _ = shared_cell.set(shared.clone());
        startup(&shared, &stop).await;
        if stop.is_cancelled() {
            acker_stop.cancel();
            let _ = acker_task.await;
            history_stop.cancel();
            notices_stop.cancel();
            let _ = history_task.await;
            let _ = notices_task.await;
            store.quit().await;
            api_stop.cancel();
            let _ = api_task.await;
            return Ok(());
        }
        let events = TaskTracker::new();
        let read_stop = CancellationToken::new();
        let aux_stop = CancellationToken::new();
        if let Err(e) =
            reclaim::claim_own_leftovers(&shared, &events, &read_stop, Duration::ZERO).await
        {
            warn!(error = %e, "could not re-deliver this consumer's leftovers; the backstop will");
        }
        let roles = TaskTracker::new();
        roles.spawn(reader::run(
            shared.clone(),
            read_stop.clone(),
            events.clone(),
        ));
        roles.spawn(reclaim::run(
            shared.clone(),
            read_stop.clone(),
            events.clone(),
        ));
        let aux = TaskTracker::new();
        aux.spawn(forwarder::run(shared.clone(), aux_stop.clone()));
        aux.spawn(heartbeat::run(shared.clone(), aux_stop.clone()));
        aux.spawn(discovery::run(shared.clone(), aux_stop.clone()));
        aux.spawn(ping_loop(shared.clone(), aux_stop.clone()));
        aux.spawn(retention::run(shared.clone(), aux_stop.clone()));
        shared
            .notices
            .send(self_notice(&shared, coordination::kind::STARTED));
        health.consuming.store(true, Ordering::Relaxed);
        info!(streams = shared.streams().len(), "consuming");

        stop.cancelled().await;
        info!("stopping: no new reads; finishing in-flight events");
        health.consuming.store(false, Ordering::Relaxed);
        read_stop.cancel();
        roles.close();
        roles.wait().await;
        events.close();
        let finished = tokio::time::timeout(shared.cfg.shutdown_timeout, events.wait())
            .await
            .is_ok();
        if !finished {
            let left = shared.in_flight.len();
            warn!(
                left,
                "shutdown_timeout reached; unfinished events stay pending and will be reclaimed"
            );
        }
        aux_stop.cancel();
        aux.close();
        let _ = tokio::time::timeout(Duration::from_secs(5), aux.wait()).await;
        shared
            .notices
            .send(self_notice(&shared, coordination::kind::STOPPED));
        history_stop.cancel();
        notices_stop.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(5), history_task).await;
        let _ = tokio::time::timeout(Duration::from_secs(5), notices_task).await;
        let hb = shared.keys.heartbeat(shared.group(), shared.consumer());
        if let Err(e) = shared.store.delete(&hb).await {
            warn!(error = %e, "could not delete the heartbeat key; it expires by itself");
        }
        shared.store.quit().await;
        api_stop.cancel();
        let _ = api_task.await;
        info!("stopped");
        Ok(())
    }
}

fn self_notice(shared: &Shared, kind: &str) -> String {
    let extra =
        serde_json::json!({"pid": std::process::id(), "version": env!("CARGO_PKG_VERSION")});
    coordination::notice(kind, shared.env(), shared.group(), shared.consumer(), extra)
}

/// Connects, retrying with backoff while Redis is unreachable. Authentication and TLS
/// errors are final. Returns `None` when stopped first.
async fn connect_until_stopped(
    cfg: &Config,
    stop: &CancellationToken,
) -> Result<Option<Store>, StoreError> {
    let mut pause = Duration::from_millis(200);
    loop {
        let attempt = Store::connect(cfg, &cfg.consumer);
        let result = tokio::select! {
            r = attempt => r,
            _ = stop.cancelled() => return Ok(None),
        };
        match result {
            Ok(store) => return Ok(Some(store)),
            Err(e) if is_final(&e) => return Err(e),
            Err(e) => {
                warn!(error = %e, redis = %cfg.redis_url, "Redis unreachable; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(pause) => {}
                    _ = stop.cancelled() => return Ok(None),
                }
                pause = (pause * 2).min(Duration::from_secs(5));
            }
        }
    }
}

fn is_final(e: &StoreError) -> bool {
    e.kind.is_final()
}

/// Groups on the redeliver stream and the type streams, the first heartbeat. Retries with
/// backoff until it works or `stop` fires.
async fn startup(shared: &Arc<Shared>, stop: &CancellationToken) {
    let mut pause = Duration::from_millis(200);
    loop {
        let result = async {
            shared
                .store
                .ensure_group(&shared.redeliver, shared.group())
                .await?;
            discovery::refresh(shared).await?;
            heartbeat::beat(shared).await
        }
        .await;
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

/// Pings Redis every second for `event_worker_redis_up` and /readyz.
async fn ping_loop(shared: Arc<Shared>, stop: CancellationToken) {
    let gauge = shared.metrics.redis_up.with_label_values(&[shared.env()]);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.cancelled() => return,
        }
        let up = shared.store.ping(Duration::from_secs(2)).await.is_ok();
        gauge.set(i64::from(up));
        let was = shared.health.redis_up.swap(up, Ordering::Relaxed);
        if was && !up {
            warn!("Redis stopped answering pings");
        } else if !was && up {
            info!("Redis answers again");
        }
    }
}
