//! Settling an event's verdict durably: acknowledgements, retry and DLQ moves, history.

pub(crate) mod acker;
pub(crate) mod history;
