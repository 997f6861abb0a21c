//! event-worker: reliable event processing on Redis Streams.
//!
//! # Layout
//! - [`config`]: the TOML contract, env overrides, validation naming each key.
//! - [`keys`]: every key name of an env (`events:<env>:...`).
//! - [`secret`]: redacted Redis URL and token types.
//! - [`envelope`]: the wire format; decoding entries, CloudEvents JSON.
//! - [`store`]: the only Redis caller; Lua scripts for atomic moves.
//! - [`handler`]: the `Handler` trait, `Outcome`, the http and blackhole handlers.
//! - [`retry`]: backoff delays. [`breaker`]: per-handler circuit breaker.
//! - [`consumer`], [`process`], [`reclaim`], [`scheduler`], [`heartbeat`], [`discovery`]:
//!   the worker's roles. [`worker`]: builds and supervises them.
//! - [`metrics`]: the metric catalogue. [`http`]: /metrics, /livez, /readyz.
//! - [`migrations`]: `migrations-redis/`. [`publish`]: appending events.
//!
//! # Embedding
//! ```no_run
//! use event_worker::{Config, Outcome, WorkerBuilder, handler_fn};
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let config = Config::from_toml_and_env("group = \"billing\"", |_| None)?;
//! let stop = tokio_util::sync::CancellationToken::new();
//! WorkerBuilder::new(config)
//!     .route(&["invoice.*"], handler_fn(|event| async move {
//!         println!("{} {}", event.id, event.data);
//!         Outcome::Success
//!     }))
//!     .run(stop)
//!     .await?;
//! # Ok(()) }
//! ```

pub mod acker;
pub mod api;
pub mod backlog;
pub mod batch;
pub mod breaker;
pub mod config;
pub mod consumer;
pub mod coordination;
pub mod discovery;
pub mod dlq;
pub mod envelope;
pub mod handler;
pub mod heartbeat;
pub mod history;
pub mod http;
pub mod in_flight;
pub mod keys;
pub mod metrics;
pub mod migrations;
pub mod process;
#[cfg(test)]
mod proptests;
pub mod publish;
pub mod reclaim;
pub mod retention;
pub mod retry;
pub mod scheduler;
pub mod secret;
pub mod shared;
pub mod store;
pub mod store_admin;
pub mod timeutil;
pub mod type_facts;
pub mod worker;

pub use config::Config;
pub use envelope::Event;
pub use handler::{Handler, Outcome, handler_fn};
pub use worker::WorkerBuilder;
