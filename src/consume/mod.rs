//! Consuming: read batches, decide each entry's verdict, track what is in flight.

pub(crate) mod backoff;
pub(crate) mod batch;
pub(crate) mod decide;
pub(crate) mod in_flight;
pub(crate) mod reader;
pub(crate) mod type_facts;
