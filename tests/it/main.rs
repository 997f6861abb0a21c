//! Black-box integration tests for `event-worker`.
//!
//! Every test drives the real binary as child processes against a real
//! `redis-server` (one per test, loopback, free port) and a real HTTP sink
//! running inside the test process. Counts are exact; every wait is bounded.

mod util;

mod backoff;
mod backpressure;
mod breaker;
mod config;
mod crash;
mod dlq;
mod isolation;
mod metrics;
mod mixed_batch;
mod redis_restart;
mod shutdown;
