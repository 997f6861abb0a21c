//! The data model: key names of an env, the wire format and its attribute rules, secrets,
//! and time helpers.

pub(crate) mod attributes;
pub(crate) mod envelope;
pub(crate) mod json_check;
pub(crate) mod json_str;
pub(crate) mod keys;
pub(crate) mod secret;
pub(crate) mod text;
pub(crate) mod time;
pub(crate) mod uri;
