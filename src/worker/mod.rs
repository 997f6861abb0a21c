//! Building and running a worker: the builder (embedding API), route building, the run
//! sequence, the lifecycle that stops every task in one order, the background-role loop,
//! the pinger, the health facts and their backlog sampler, and the start-up parts split into
//! each role's handles.

pub(crate) mod builder;
pub(crate) mod health;
pub(crate) mod lifecycle;
pub(crate) mod outbox;
pub(crate) mod parts;
pub(crate) mod ping;
pub(crate) mod projector;
pub(crate) mod role;
pub(crate) mod routes;
pub(crate) mod run;
pub(crate) mod sampler;
