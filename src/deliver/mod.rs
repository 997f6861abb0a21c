//! Delivering an event to its handler: the `Handler` trait and `Outcome` (handler), the
//! built-in HTTP and blackhole handlers, the exhaustive factory building a configured
//! route's handler, and the circuit breaker.

pub(crate) mod blackhole;
pub(crate) mod breaker;
pub(crate) mod factory;
pub(crate) mod handler;
pub(crate) mod http;
