//! Hosting push in the daemon: the projector (a second worker in the same process, in the
//! internal group `push.group`, whose one code route is the built-in
//! [`crate::push::project::Projector`]; it shares the stop token and the metrics) and the
//! push service of the HTTP side (the hub, and the `push.listen` listener).
//!
//! One instance of an env projects at a time, so a channel's history keeps the order of the
//! type streams even with several instances: the projector runs only while its instance
//! holds the lease `events:<env>:push:projector` (see [`crate::redis::lease`]), under the one
//! consumer name [`PROJECTOR_CONSUMER`]. A new holder therefore starts with what the previous
//! one read and did not acknowledge (its own leftovers), before reading on. A holder that
//! cannot renew for half the lease stops projecting, before the lease can pass to another.

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::Config;
use crate::http::server;
use crate::http::state::ApiState;
use crate::metrics::Metrics;
use crate::model::keys::Keys;
use crate::push::project::Projector;
use crate::push::rules::Rules;
use crate::push::service::PushService;
use crate::redis::store::Store;
use crate::worker::builder::WorkerError;
use crate::worker::lifecycle::{Lifecycle, Stage};

/// The consumer name of the projector in `push.group`, whichever instance holds the lease.
pub const PROJECTOR_CONSUMER: &str = "push-projector";

/// How long the lease lasts without renewal: how long projection pauses when its holder
/// dies without a clean stop.
const LEASE_TTL: Duration = Duration::from_secs(10);

/// How often the holder renews, and how often the others try to take the lease.
const LEASE_EVERY: Duration = Duration::from_secs(2);

/// Starts the projector when `[[push.channels]]` rules exist: its own stop token (a child of
/// `stop`, cancelled when the main worker fails) and its task, which projects while this
/// instance holds the lease.
pub(crate) fn spawn(
    cfg: &Config,
    metrics: &Metrics,
    stop: &CancellationToken,
) -> Option<(CancellationToken, JoinHandle<Result<(), WorkerError>>)> {
    if !cfg.push.projects() {
        return None;
    }
    let rules = Rules::new(&cfg.push);
    // The instance's consumer name: an instance restarted under a configured name takes its
    // lease back at once; `hostname-pid` waits for the old lease to expire.
    let holder = cfg.consumer.clone();
    let mut own = cfg.clone();
    own.group = cfg.push.group.clone();
    own.consumer = PROJECTOR_CONSUMER.to_string();
    own.routes.clear();
    // Read batches of up to BATCH events, handled one batch after the other in stream order
    // (the worker's ordered dispatch, on for this consumer name): a channel gets its events
    // in the order of their stream. No prefetch beyond the batch: a read asks for what the
    // free slots can start.
    own.concurrency = crate::push::project::BATCH;
    own.prefetch = crate::push::project::BATCH;
    let token = stop.child_token();
    let task = tokio::spawn(lead(own, holder, rules, metrics.clone(), token.clone()));
    Some((token, task))
}

/// Takes the lease (trying every [`LEASE_EVERY`]), projects while it holds it, and gives it
/// back at a clean stop; until `stop`.
async fn lead(
    cfg: Config,
    holder: String,
    rules: Rules,
    metrics: Metrics,
    stop: CancellationToken,
) -> Result<(), WorkerError> {
    let key = Keys::new(&cfg.env).push_projector();
    // The series exists (at 0) from the start, standing by.
    metrics
        .push_projector_active
        .with_label_values(&[&cfg.env])
        .set(0);
    let mut store: Option<Store> = None;
    let mut waiting_logged = false;
    while !stop.is_cancelled() {
        if store.is_none() {
            store = Store::connect(&cfg, &holder).await.ok();
        }
        let held = match &store {
            Some(s) => s
                .acquire_lease(&key, &holder, LEASE_TTL)
                .await
                .unwrap_or(false),
            None => false,
        };
        if let (true, Some(s)) = (held, &store) {
            info!(lease = %key, "this instance projects push channels (it holds the lease)");
            waiting_logged = false;
            let active = metrics.push_projector_active.with_label_values(&[&cfg.env]);
            active.set(1);
            let result = project_while_held(&cfg, &rules, &metrics, &stop, s, &key, &holder).await;
            active.set(0);
            result?;
            let _ = s.release_lease(&key, &holder).await;
            continue;
        }
        if !waiting_logged && store.is_some() {
            info!(lease = %key, "another instance projects push channels; this one stands by");
            waiting_logged = true;
        }
        tokio::select! {
            () = tokio::time::sleep(LEASE_EVERY) => {}
            () = stop.cancelled() => {}
        }
    }
    Ok(())
}

/// Runs the projecting worker until `stop` or until the lease is lost (not renewed for half
/// [`LEASE_TTL`]).
async fn project_while_held(
    cfg: &Config,
    rules: &Rules,
    metrics: &Metrics,
    stop: &CancellationToken,
    store: &Store,
    key: &str,
    holder: &str,
) -> Result<(), WorkerError> {
    let projector = Projector::start(rules.clone(), cfg.clone(), metrics.clone());
    let route: crate::worker::routes::CodeRoute = (rules.patterns(), Arc::new(projector));
    let held = stop.child_token();
    let run = crate::worker::run::run_worker(
        cfg.clone(),
        vec![route],
        metrics.clone(),
        held.clone(),
        false,
    );
    let renew = async {
        let mut renewed = tokio::time::Instant::now();
        let mut pause = LEASE_EVERY;
        loop {
            tokio::time::sleep(pause).await;
            let deadline = renewed + LEASE_TTL / 2;
            let renewal =
                tokio::time::timeout_at(deadline, store.renew_lease(key, holder, LEASE_TTL)).await;
            match renewal {
                Ok(Ok(true)) => (renewed, pause) = (tokio::time::Instant::now(), LEASE_EVERY),
                Ok(Ok(false)) => {
                    warn!(lease = %key, "the push projector lease passed to another instance; this one stops projecting");
                    return;
                }
                Ok(Err(_)) if tokio::time::Instant::now() < deadline => {
                    pause = Duration::from_millis(250);
                }
                Ok(Err(_)) | Err(_) => {
                    warn!(lease = %key, "the push projector lease could not be renewed; this one stops projecting before it expires");
                    return;
                }
            }
        }
    };
    tokio::pin!(run);
    tokio::select! {
        result = &mut run => return result,
        () = renew => held.cancel(),
    }
    run.await
}

/// Starts the push service when push is on (rules exist, or `push.listen` is set), binds
/// `push.listen` when set (push endpoints only), and returns `state` with push in it.
///
/// # Errors
/// When `push.listen` cannot be bound.
pub(crate) async fn serve_push(
    cfg: &Config,
    metrics: &Metrics,
    mut state: ApiState,
    life: &Lifecycle,
) -> Result<ApiState, WorkerError> {
    if !cfg.push.projects() && cfg.push.listen.is_none() {
        return Ok(state);
    }
    if cfg.api.token.is_none() && cfg.apps.key.is_none() {
        tracing::warn!(
            "push is open: neither EVENTS_API_TOKEN nor [apps] app tokens are configured, so \
             anyone who reaches the listener may subscribe to any channel; set one of them \
             before exposing push (README \"Push to apps\")"
        );
    }
    let svc = PushService::start(cfg, metrics, life.token(Stage::Http));
    state.push = Some(svc.clone());
    if let Some(addr) = cfg.push.listen {
        let app = server::push_router(state.clone());
        let (bound, task) =
            server::serve_router(addr, app, cfg.api.header_timeout, life.token(Stage::Http))
                .await
                .map_err(|source| WorkerError::Listen { addr, source })?;
        let _ = svc.listener.set(bound);
        tracing::info!(listen = %bound, "push listener started");
        life.spawn(Stage::Http, task);
    }
    Ok(state)
}
