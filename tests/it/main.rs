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
//! (WorkerConfig -> TOML, WorkerProcess with signals and restarts).

mod util;

mod api_hardening;
mod backoff;
mod backpressure;
mod breaker;
mod config;
mod coordination;
mod crash;
mod dashboard_metrics;
mod dlq;
mod dlq_ops;
mod dlq_replay_api;
mod dlq_retention;
mod health;
mod isolation;
mod metrics;
mod mixed_batch;
mod prometheus;
mod redis_restart;
mod rows_input;
mod rows_long;
mod rows_metrics;
mod rows_network;
mod rows_redis;
mod rows_retry;
mod rows_security;
mod rows_worker;
mod settle_counting;
mod shutdown;
