//! Delivering an event to its handler: the `Handler` trait, the HTTP handler, the breaker.

pub(crate) mod breaker;
pub(crate) mod handler;
