//! Operator operations: DLQ inspector, publish, backlog, coordination notices, migrations.

pub(crate) mod backlog;
pub(crate) mod coordination;
pub(crate) mod dlq;
pub(crate) mod migrations;
pub(crate) mod publish;
