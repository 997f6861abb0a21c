//! The only Redis caller: the connection (`store`; on a single node the consumer's reads and
//! acknowledgements go over connections of its own, `direct_conn`, speaking RESP2 with
//! `resp`), stream commands (`streams`), plain keys (`keyspace`), the Lua moves loaded once
//! (`moves`; across Redis Cluster slots `moves_split`), the cluster's slots, topology and
//! slot-grouped reads (`cluster`), its changes and failed nodes (`cluster_watch`), operator
//! reads (`admin`), the DLQ scripts and counts (`dlq`), channel subscriptions (`pubsub`), the
//! TCP settings of every connection (`tcp`), the TLS setup (`tls`), the typed error (`error`),
//! the record of refused writes (`refusals`) and the opt-in WAIT for replicas (`replicas`).

pub(crate) mod admin;
pub(crate) mod cluster;
pub(crate) mod cluster_watch;
pub(crate) mod direct_conn;
pub(crate) mod dlq;
pub(crate) mod error;
pub(crate) mod keyspace;
pub(crate) mod lease;
pub(crate) mod moves;
pub(crate) mod moves_split;
pub(crate) mod pubsub;
pub(crate) mod push;
pub(crate) mod push_device;
pub(crate) mod refusals;
pub(crate) mod replicas;
pub(crate) mod resp;
pub(crate) mod store;
pub(crate) mod streams;
pub(crate) mod tcp;
pub(crate) mod tls;
