//! event-worker: reliable event processing on Redis Streams.
//!
//! # Layout
//! LAYOUT
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

pub mod cli;
pub(crate) mod config;
pub(crate) mod consume;
pub(crate) mod deliver;
pub(crate) mod http;
pub(crate) mod metrics;
pub(crate) mod model;
pub(crate) mod ops;
#[cfg(test)]
mod proptests;
pub(crate) mod recover;
pub(crate) mod redis;
pub(crate) mod settle;
pub(crate) mod worker;

pub use config::Config;
pub use deliver::handler::{Handler, Outcome, handler_fn};
pub use model::envelope::Event;
pub use worker::builder::WorkerBuilder;
