//! Building and running a worker: routes, shared state, the lifecycle.

pub(crate) mod builder;
pub(crate) mod shared;
