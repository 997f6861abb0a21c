//! Building and running a worker: the builder (embedding API), route building, the run
//! sequence, the lifecycle that stops every task in one order, the background-role loop,
//! the pinger, and the state the consume path shares.

pub(crate) mod builder;
pub(crate) mod lifecycle;
pub(crate) mod ping;
pub(crate) mod role;
pub(crate) mod routes;
pub(crate) mod run;
pub(crate) mod shared;
