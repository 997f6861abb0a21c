//! Delivering an event to its handler: the `Handler` trait and `Outcome` (handler), the
//! built-in HTTP handlers (per event, `http`, or batched, `batch`, over a route's own
//! connections, `conn_pool`, or the shared https client, `client`) and the blackhole handler,
//! the exhaustive factory building a configured route's handler, and the circuit breaker.

pub(crate) mod batch;
pub(crate) mod blackhole;
pub(crate) mod breaker;
pub(crate) mod client;
pub(crate) mod conn_pool;
pub(crate) mod factory;
pub(crate) mod handler;
pub(crate) mod http;
