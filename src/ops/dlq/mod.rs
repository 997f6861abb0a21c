//! The dead-letter queue inspector: list, show, stats, replay and purge of
//! `events:<env>:dlq`. One module backs the CLI, the HTTP API and the DLQ metrics, so they
//! never disagree. Every replay and purge is recorded in the history. The entry format is
//! `settle::dlq_record`'s. Parts: `filter` (filters, entry ids), `read` (list, show,
//! selection), `counts` (stats, the counting of an existing DLQ), `replay`, `purge`.

mod counts;
mod filter;
mod purge;
mod read;
mod replay;

use serde::Serialize;

use crate::model::envelope::{field, lookup};
use crate::redis::store::{Entry, StoreError};
use crate::settle::dlq_record::field as dlq;

pub use counts::{build, build_in_background, recount, stats};
pub use filter::{DlqFilter, is_entry_id};
pub use purge::{PurgeOptions, PurgeReport, purge};
pub use read::{MAX_SELECTED, Selection, count_selected, list, select, show};
pub use replay::{ReplayOptions, ReplayReport, replay};

/// Why an operation was refused before touching Redis, or failed in it.
#[derive(Debug, thiserror::Error)]
pub enum DlqError {
    /// A malformed argument; nothing was done.
    #[error("{0}")]
    Invalid(String),
    /// Redis failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// One DLQ entry.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct DlqEntry {
    /// DLQ stream entry id.
    pub entry_id: String,
    /// Every field: the event's and the `dlq_*` ones.
    pub fields: Vec<(String, String)>,
}

impl DlqEntry {
    pub(crate) fn from_entry(e: Entry) -> Self {
        DlqEntry {
            entry_id: e.id.into(),
            fields: crate::model::envelope::owned_fields(&e.fields),
        }
    }

    /// A field's value, or "".
    pub fn get(&self, name: &str) -> &str {
        lookup(&self.fields, name).unwrap_or_default()
    }

    /// The event's type.
    pub fn event_type(&self) -> &str {
        self.get(field::TYPE)
    }

    /// The group that failed it.
    pub fn group(&self) -> &str {
        self.get(dlq::GROUP)
    }

    /// Why it was dead-lettered.
    pub fn reason(&self) -> &str {
        self.get(dlq::REASON)
    }

    /// A one-object JSON summary (for lists and samples); `attempts` (handler runs) is a
    /// JSON number.
    pub fn summary(&self) -> serde_json::Value {
        serde_json::json!({
            "entry_id": self.entry_id,
            "id": self.get(field::ID),
            "type": self.event_type(),
            "group": self.group(),
            "reason": self.reason(),
            "attempts": json_value(dlq::ATTEMPTS, self.get(dlq::ATTEMPTS)),
            "failed_at": self.get(dlq::FAILED_AT),
            "error": self.get(dlq::ERROR),
        })
    }

    /// All fields as a JSON object (first value wins for repeated names); the counters of
    /// [`NUMERIC_FIELDS`] are JSON numbers, every other field a string.
    pub fn to_json(&self) -> serde_json::Value {
        let mut map = serde_json::Map::new();
        map.insert("entry_id".into(), self.entry_id.clone().into());
        let mut fields = serde_json::Map::new();
        for (k, v) in &self.fields {
            fields.entry(k.clone()).or_insert_with(|| json_value(k, v));
        }
        map.insert("fields".into(), fields.into());
        map.into()
    }
}

/// The fields of a DLQ entry that are counters, shown as JSON numbers: `dlq_attempts`
/// (handler runs), the event's `attempt` and `replay_count`.
pub const NUMERIC_FIELDS: &[&str] = &[dlq::ATTEMPTS, field::ATTEMPT, "replay_count"];

/// A field's JSON value: a number for a counter of [`NUMERIC_FIELDS`] that holds one, the
/// text otherwise (a counter a producer garbled stays visible as it is).
fn json_value(name: &str, value: &str) -> serde_json::Value {
    match value.parse::<u64>() {
        Ok(n) if NUMERIC_FIELDS.contains(&name) => n.into(),
        _ => value.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::test_util::entry;
    use serde_json::json;

    #[test]
    fn counters_are_json_numbers_and_other_fields_text() {
        let e = entry(
            "5-0",
            &[
                ("id", "x"),
                ("data", "3"),
                ("attempt", "2"),
                ("replay_count", "1"),
                ("dlq_attempts", "3"),
                ("dlq_failed_at", "2026-01-01T00:00:00.000Z"),
            ],
        );
        assert_eq!(e.summary()["attempts"], json!(3));
        assert_eq!(
            e.to_json()["fields"],
            json!({"id": "x", "data": "3", "attempt": 2, "replay_count": 1, "dlq_attempts": 3,
                   "dlq_failed_at": "2026-01-01T00:00:00.000Z"})
        );
        let garbled = entry("6-0", &[("dlq_attempts", "three")]);
        assert_eq!(garbled.summary()["attempts"], json!("three"));
    }
}

#[cfg(test)]
pub(crate) mod test_util {
    use super::DlqEntry;

    pub(crate) fn entry(id: &str, pairs: &[(&str, &str)]) -> DlqEntry {
        DlqEntry {
            entry_id: id.into(),
            fields: pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }
}
