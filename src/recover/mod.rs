//! Background recovery roles: reclaim, heartbeat, retry forwarder, discovery (and its scan
//! for streams nobody consumes, `unconsumed`), retention.

pub(crate) mod discovery;
pub(crate) mod forwarder;
pub(crate) mod heartbeat;
pub(crate) mod reclaim;
pub(crate) mod retention;
pub(crate) mod unconsumed;
