//! Hosting push in the daemon: the projector (a second worker in the same process, in the
//! internal group `push.group`, whose one code route is the built-in
//! [`crate::push::project::Projector`]; it shares the stop token and the metrics) and the
//! push service of the HTTP side (the hub, and the `push.listen` listener).

use std::sync::Arc;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::http::server;
use crate::http::state::ApiState;
use crate::metrics::Metrics;
use crate::push::project::Projector;
use crate::push::rules::Rules;
use crate::push::service::PushService;
use crate::worker::builder::WorkerError;
use crate::worker::lifecycle::{Lifecycle, Stage};

/// Starts the projector when `[[push.channels]]` rules exist: its own stop token (a child of
/// `stop`, cancelled when the main worker fails) and its task.
pub(crate) fn spawn(
    cfg: &Config,
    metrics: &Metrics,
    stop: &CancellationToken,
) -> Option<(CancellationToken, JoinHandle<Result<(), WorkerError>>)> {
    if !cfg.push.projects() {
        return None;
    }
    let rules = Rules::new(&cfg.push);
    let mut own = cfg.clone();
    own.group = cfg.push.group.clone();
    own.routes.clear();
    // One event at a time: a channel gets its events in the order of their stream.
    own.concurrency = 1;
    let projector = Projector {
        rules: rules.clone(),
        store: tokio::sync::OnceCell::new(),
        config: own.clone(),
        metrics: metrics.clone(),
        env: cfg.env.clone(),
    };
    let route: crate::worker::routes::CodeRoute = (rules.patterns(), Arc::new(projector));
    let token = stop.child_token();
    let run =
        crate::worker::run::run_worker(own, vec![route], metrics.clone(), token.clone(), false);
    Some((token, tokio::spawn(run)))
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
