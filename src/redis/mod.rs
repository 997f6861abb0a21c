//! The only Redis caller: connection, stream commands, the Lua moves, admin reads.

pub(crate) mod admin;
pub(crate) mod store;
