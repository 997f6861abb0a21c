//! Route building: each route's handler (code routes first, then `[[routes]]`), its
//! circuit breaker, and the breaker listener (state gauge, coordination notice, log line).

use std::sync::Arc;
use std::time::Duration;

use tracing::{info, warn};

use crate::config::{Config, ConfigError};
use crate::deliver::breaker::{Breaker, BreakerState, StateListener};
use crate::deliver::factory::{HandlerBuildError, HandlerFactory};
use crate::deliver::handler::Handler;
use crate::metrics::Metrics;
use crate::model::keys;
use crate::ops::coordination::{self, Notices};

/// One route: patterns, its handler and the handler's breaker.
pub struct Route {
    /// Exact types or globs.
    pub patterns: Vec<String>,
    /// The handler.
    pub handler: Arc<dyn Handler>,
    /// The handler's circuit breaker.
    pub breaker: Arc<Breaker>,
    /// Longest a run may take.
    pub timeout: Duration,
    /// The handler ends each run within `timeout` itself (batched http: one deadline per
    /// batch, set by its first event), so the run needs no timer of its own.
    pub self_timed: bool,
}

impl Route {
    /// Whether this route serves `event_type`.
    pub fn serves(&self, event_type: &str) -> bool {
        self.patterns
            .iter()
            .any(|p| keys::glob_matches(p, event_type))
    }
}

/// A route added in code: its patterns and handler.
pub type CodeRoute = (Vec<String>, Arc<dyn Handler>);

/// A closed breaker named `name`, with its series started at 0.
fn breaker(
    config: &Config,
    metrics: &Metrics,
    name: &str,
    listener: &StateListener,
) -> Arc<Breaker> {
    let labels = [config.env.as_str(), name];
    metrics.breaker_state.with_label_values(&labels).set(0);
    metrics
        .breaker_rejected_total
        .with_label_values(&labels)
        .inc_by(0);
    Arc::new(Breaker::new(name, &config.breaker, listener.clone()))
}

/// The breaker listener: sets the state gauge, sends a notice and logs each change.
fn listener(config: &Config, metrics: &Metrics, notices: &Notices) -> StateListener {
    let env = config.env.clone();
    let (group, consumer) = (config.group.clone(), config.consumer.clone());
    let gauge = metrics.breaker_state.clone();
    let notices = notices.clone();
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
    })
}

/// The routes: code routes first, then the configuration's `[[routes]]`, each with its
/// breaker.
///
/// # Errors
/// Every invalid pattern or header, and no route at all, in one [`ConfigError`].
pub fn build(
    config: &Config,
    code_routes: &[CodeRoute],
    metrics: &Metrics,
    notices: &Notices,
) -> Result<Vec<Route>, ConfigError> {
    let mut errors = Vec::new();
    let listener = listener(config, metrics, notices);
    let mut handlers = HandlerFactory::default();
    let mut routes = Vec::new();
    for (i, (patterns, handler)) in code_routes.iter().enumerate() {
        for p in patterns {
            if !keys::is_valid_pattern(p) {
                errors.push(format!("code route {i}: `{p}` is not a valid type or glob"));
            }
        }
        let name = format!("code:{}", patterns.join(","));
        routes.push(Route {
            patterns: patterns.clone(),
            handler: handler.clone(),
            breaker: breaker(config, metrics, &name, &listener),
            timeout: Duration::from_secs(60),
            self_timed: false,
        });
    }
    for (i, rc) in config.routes.iter().enumerate() {
        let handler = match handlers.build(i, rc) {
            Ok(h) => h,
            Err(e @ HandlerBuildError::Client(_)) => {
                return Err(ConfigError(vec![e.to_string()]));
            }
            Err(e) => {
                errors.push(e.to_string());
                continue;
            }
        };
        routes.push(Route {
            patterns: rc.types.clone(),
            handler,
            breaker: breaker(config, metrics, &rc.handler_name(i), &listener),
            timeout: rc.timeout,
            self_timed: crate::deliver::factory::self_timed(rc),
        });
    }
    if routes.is_empty() {
        errors.push("routes: at least one [[routes]] entry (or a route in code) is needed".into());
    }
    if errors.is_empty() {
        Ok(routes)
    } else {
        Err(ConfigError(errors))
    }
}
