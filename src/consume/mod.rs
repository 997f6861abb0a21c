//! Consuming: read batches, dispatch them to batch tasks, decide each entry's verdict, track
//! what is in flight and which streams are consumed.

pub(crate) mod backoff;
pub(crate) mod batch;
pub(crate) mod cluster_reads;
pub(crate) mod decide;
pub(crate) mod dispatch;
pub(crate) mod in_flight;
pub(crate) mod reader;
pub(crate) mod streams;
pub(crate) mod type_facts;
