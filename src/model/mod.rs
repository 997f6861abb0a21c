//! The data model: key names of an env, the wire format, secrets, and time helpers.

pub(crate) mod attributes;
pub(crate) mod envelope;
pub(crate) mod keys;
pub(crate) mod secret;
pub(crate) mod time;
