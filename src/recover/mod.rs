//! Background recovery roles: reclaim, heartbeat, retry forwarder, discovery, retention.

pub(crate) mod discovery;
pub(crate) mod forwarder;
pub(crate) mod heartbeat;
pub(crate) mod reclaim;
pub(crate) mod retention;
