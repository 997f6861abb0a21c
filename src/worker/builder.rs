//! The embedding API's entry point: [`WorkerBuilder`] takes a [`Config`] and routes added in
//! code; [`WorkerBuilder::run`] hands them to [`crate::worker::run`], which runs the worker
//! until the stop token fires and stops it in one documented order
//! ([`crate::worker::lifecycle::Lifecycle`]).

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::config::{Config, ConfigError};
use crate::deliver::handler::Handler;
use crate::metrics::Metrics;
use crate::redis::store::StoreError;
use crate::worker::routes::CodeRoute;

/// Why the worker could not run.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// Bad configuration or routes.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Redis refused us in a way retrying cannot fix (TLS, permissions), or a migration failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The outbox directory could not be opened (another process holds it, damage).
    #[error(transparent)]
    Outbox(#[from] crate::outbox::OutboxError),
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
    code_routes: Vec<CodeRoute>,
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

    /// Runs until `stop` is cancelled, then stops gracefully.
    ///
    /// # Errors
    /// Bad routes, an unbindable listener, or a Redis error that retrying cannot fix.
    pub async fn run(self, stop: CancellationToken) -> Result<(), WorkerError> {
        crate::worker::run::run(self.config, self.code_routes, self.metrics, stop).await
    }
}
