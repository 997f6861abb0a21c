//! Black-box integration tests for `event-worker`.
//!
//! Every test drives the real binary as child processes against a real
//! `redis-server` (one per test, loopback, free port) and a real HTTP sink
//! running inside the test process. Counts are exact; every wait is bounded.
//!
//! Run with `cargo test --test it` (needs `redis-server` on `PATH`). A failing
//! test prints the worker's stdout/stderr and config, the redis-server log,
//! the sink's request ledger and a dump of every `events:<env>:*` key.
//!
//! Harness (`util/`): `redis.rs` (RedisServer, MONITOR recorder), `resp.rs`
//! (a small RESP client, independent of the daemon's Redis stack), `sink.rs`
//! (HttpSink: per-id behaviour scripts, request ledger), `worker.rs`
//! (WorkerConfig -> TOML, WorkerProcess with signals and restarts), `scenario.rs`
//! (Scenario: redis + sink + workers + publish ledger + the closing conservation
//! check in one value; start a new fault row there), `checker.rs` (the
//! conservation checker), `faults.rs` (kill loops, CLIENT KILL/PAUSE, DEBUG SLEEP,
//! the TCP proxy).

mod util;

// One file per feature; every reliability-matrix row test has its row id in its
// name (`t22a_...`), so `cargo test --test it t22` runs a row wherever it lives.
mod api_consistency;
mod api_hardening;
mod api_oversized;
mod app_auth;
mod backoff;
mod backpressure;
mod batch_delivery;
mod black_holes;
mod breaker;
mod clock_skew;
mod cluster;
mod cluster_drain;
mod cluster_failover;
mod cluster_ops;
mod cluster_push;
mod cluster_reads;
mod cluster_restart;
mod config;
mod config_messages;
mod console;
mod coordination;
mod crash;
mod dashboard_metrics;
mod dlq;
mod dlq_ops;
mod dlq_replay_api;
mod dlq_retention;
mod dlq_scale;
mod first_run;
mod health;
mod history_modes;
mod http_delivery;
mod input;
mod isolation;
mod long;
mod metrics;
mod metrics_cardinality;
mod mixed_batch;
mod network_faults;
mod outbox_disk;
mod outbox_log;
mod outbox_publish;
mod prometheus;
mod publish_idempotent;
mod push_auth;
mod push_browser;
mod push_checker;
mod push_client_js;
mod push_connections;
mod push_projector;
mod push_resume;
mod push_util;
mod read_connection;
mod redis_errors;
mod redis_faults;
mod redis_restart;
mod replication_wait;
mod retries_ops;
mod retry;
mod retry_moves;
mod rolling_deploy;
mod security;
mod settle_counting;
mod shutdown;
mod slow_handlers;
mod stream_retention;
mod terminal_output;
mod wire_format;
mod worker_lifecycle;
