//! Operator operations: DLQ inspector, history queries, publish, backlog, coordination notices, migrations.

pub(crate) mod backlog;
pub(crate) mod coordination;
pub(crate) mod dlq;
pub(crate) mod history;
pub(crate) mod migrations;
pub(crate) mod publish;
