//! Operator operations: DLQ inspector, history queries, publish, backlog, coordination notices, migrations,
//! the retry sets (`retries`) and the instances (`instances`).

pub(crate) mod backlog;
pub(crate) mod coordination;
pub(crate) mod dlq;
pub(crate) mod history;
pub(crate) mod instances;
pub(crate) mod migrations;
pub(crate) mod publish;
pub(crate) mod publisher;
pub(crate) mod retries;
