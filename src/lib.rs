//! event-worker: reliable event processing on Redis Streams.
//!
//! # Layout
//! One event's path: `consume` reads and decides, `deliver` runs the handler, `settle`
//! executes the verdict; `recover` brings back what crashes and outages leave behind.
//!
//! - `config`: the TOML file, `EVENTS_*` overrides and validation naming each key
//!   (`raw`, `env`, `validate`, `connection`, `route`, `defaults`, `parse`, `types`, `error`).
//! - `model`: `keys` (every key name of an env), `envelope` (the wire format), `secret`
//!   (redacted URL and tokens), `time` (epoch ms, RFC 3339).
//! - `redis`: the only Redis caller: `store` (connection), `streams` (stream and group
//!   commands), `keyspace` (plain keys), `moves` (the Lua moves), `admin` (operator reads),
//!   `tls`, `error` (`StoreError` and its kind).
//! - `consume`: `reader` (permits, then XREADGROUP), `dispatch` (entries to batch tasks),
//!   `batch` (one task per read batch), `decide` (an entry's verdict), `in_flight`,
//!   `streams` (the consumed set, type labels), `type_facts` (per-type label and metric
//!   handles), `backoff` (retry delays).
//! - `deliver`: `handler` (the `Handler` trait, `Outcome`), `http` (per event), `batch` (batched
//!   http delivery), `client` (their shared hyper client), `blackhole`, `factory`
//!   (a configured route's handler, exhaustively), `breaker`.
//! - `settle`: the one owner of outcomes: `acks` and `acker` (batched XACK), `moves` (retry
//!   and DLQ moves), `dlq_record` (the DLQ fields and `Reason`), `history` (the audit writer).
//! - `recover`: `reclaim`, `heartbeat`, `forwarder` (due retries), `discovery`, `retention`.
//! - `ops`: operator operations: `dlq` (list, stats, replay, purge), `retries` (list,
//!   retry-now, dead-letter), `instances`, `history` (queries), `publish`, `backlog`,
//!   `coordination` (notices), `migrations`.
//! - `http`: `server` (listener, /metrics, probes), `state` (the read-only view), `api`
//!   (health, history, publish, dlq, retries; the `Authorized` and `JsonBody` extractors),
//!   `app_auth` (app tokens: JWT grants, allowed origins, CORS, the publish extractor).
//! - `console`: the operator console in the browser at `/ui` (session cookie, CSRF, pages).
//! - `worker`: `builder` (the embedding API), `routes`, `run`, `parts` (start-up handles,
//!   split into each role's own), `lifecycle` (one root token, the stop order), `role` (the
//!   background loop shape), `ping`, `health` (readiness facts).
//! - `outbox`: the durable local outbox (`log`, `segment`, `frame`, `drain`).
//! - `push`: real-time push to apps (channels, history, SSE and WebSocket, app tokens).
//! - `metrics`: the one metric catalogue. [`cli`]: the `event-worker` commands.
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

#![warn(missing_docs)]

pub mod cli;
pub(crate) mod config;
pub(crate) mod console;
pub(crate) mod consume;
pub(crate) mod crash_point;
pub(crate) mod deliver;
pub(crate) mod http;
pub(crate) mod metrics;
pub(crate) mod model;
pub(crate) mod ops;
pub(crate) mod outbox;
#[cfg(test)]
mod proptests;
pub(crate) mod push;
pub(crate) mod recover;
pub(crate) mod redis;
pub(crate) mod settle;
#[cfg(test)]
mod test_redis;
pub(crate) mod worker;

pub use config::{Config, ConfigError};
pub use deliver::handler::{BoxFuture, Handler, Outcome, handler_fn};
pub use model::envelope::Event;
pub use model::text::Text;
pub use ops::publish::{NewEvent, PublishError, Published, Replication};
pub use ops::publisher::Publisher;
pub use outbox::{
    OutboxError, Outcome as PublishOutcome, Queued, Reason as QueueReason, SubmitError,
};
pub use redis::error::{RedisErrorKind, StoreError};
pub use worker::builder::{WorkerBuilder, WorkerError};
