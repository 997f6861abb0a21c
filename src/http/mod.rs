//! The HTTP listener: /metrics, health probes and the operator API.

pub(crate) mod api;
pub(crate) mod app_auth;
pub(crate) mod event_stream;
pub(crate) mod server;
pub(crate) mod state;
#[cfg(test)]
mod tests;
