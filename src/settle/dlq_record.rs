//! The DLQ record format, in one place: the `dlq_*` field names, the [`Reason`] an event
//! was dead-lettered for, and [`encode`], which turns an event's fields into a DLQ entry.
//! The writer (`settle::moves`), the inspector (`ops::dlq`) and the CLI help use it.

use crate::model::envelope::{self, truncate};
use crate::model::time::rfc3339;

/// Names of the fields a DLQ entry carries besides the event's own.
pub mod field {
    /// Every DLQ field starts with this; an event's own fields with it are dropped.
    pub const PREFIX: &str = "dlq_";
    /// Why: one of [`super::Reason`].
    pub const REASON: &str = "dlq_reason";
    /// The last error, scrubbed and truncated.
    pub const ERROR: &str = "dlq_error";
    /// Handler runs used.
    pub const ATTEMPTS: &str = "dlq_attempts";
    /// The group that failed the event.
    pub const GROUP: &str = "dlq_group";
    /// The stream the event was published to.
    pub const STREAM: &str = "dlq_stream";
    /// The entry id the event was published as (its `origin_entry_id`).
    pub const ENTRY_ID: &str = "dlq_entry_id";
    /// When it was dead-lettered (RFC 3339).
    pub const FAILED_AT: &str = "dlq_failed_at";
    /// The consumer that dead-lettered it.
    pub const CONSUMER: &str = "dlq_consumer";
    /// Which of the event's fields did not fit, if any.
    pub const OMITTED: &str = "dlq_omitted";
}

/// Why an event was dead-lettered (the `dlq_reason` value and the `reason` metric label).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// The handler said the event can never succeed (HTTP 4xx other than 408/429).
    PermanentError,
    /// Retryable failures used up `retry.max_attempts`.
    MaxAttemptsExceeded,
    /// The entry breaks the wire format.
    Malformed,
    /// Delivered more than `max_deliveries` times (it keeps killing workers).
    MaxDeliveriesExceeded,
    /// No consumer of the group that read it had a route for its type for `no_route_grace`
    /// (each one without a route handed it on, see `consume::decide`).
    NoRoute,
    /// An operator dead-lettered it from the retry set (`retries dead-letter`).
    Operator,
}

impl Reason {
    /// Every reason a worker dead-letters with, in the order the help lists them; the one
    /// list the per-type `dead_lettered_total` series are started at 0 from (discovery), so
    /// a reason added here is exported at 0 too. [`Reason::Operator`] is not one: operators
    /// dead-letter through the API or the CLI, which count no worker metric.
    pub const ALL: [Reason; 5] = [
        Reason::PermanentError,
        Reason::MaxAttemptsExceeded,
        Reason::Malformed,
        Reason::MaxDeliveriesExceeded,
        Reason::NoRoute,
    ];

    /// Every reason a DLQ entry may hold: [`Reason::ALL`] and [`Reason::Operator`].
    pub const STORED: [Reason; 6] = [
        Reason::PermanentError,
        Reason::MaxAttemptsExceeded,
        Reason::Malformed,
        Reason::MaxDeliveriesExceeded,
        Reason::NoRoute,
        Reason::Operator,
    ];

    /// The stored word.
    pub const fn as_str(self) -> &'static str {
        match self {
            Reason::PermanentError => "permanent_error",
            Reason::MaxAttemptsExceeded => "max_attempts_exceeded",
            Reason::Malformed => "malformed",
            Reason::MaxDeliveriesExceeded => "max_deliveries_exceeded",
            Reason::NoRoute => "no_route",
            Reason::Operator => "operator",
        }
    }

    /// The reason a stored word names, if any. (The inspector keeps stored words as text,
    /// unknown ones included, so only the tests call it today.)
    #[cfg_attr(not(test), allow(dead_code))]
    pub fn parse(word: &str) -> Option<Reason> {
        Reason::STORED.into_iter().find(|r| r.as_str() == word)
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The CLI help of `--reason` (kept equal to [`Reason::STORED`] by a test).
pub const REASON_HELP: &str = "DLQ reason: permanent_error, max_attempts_exceeded, malformed, \
                               max_deliveries_exceeded, no_route, operator.";

/// Longest `dlq_error` kept.
pub const MAX_ERROR_LEN: usize = 1000;

/// Whether `name` is a DLQ field (not one of the event's).
pub fn is_dlq_field(name: &str) -> bool {
    name.starts_with(field::PREFIX)
}

/// What the DLQ entry says about the failure.
#[derive(Debug, Clone, Copy)]
pub struct Failure<'a> {
    /// Why.
    pub reason: Reason,
    /// The last error, already scrubbed of secrets (truncated here).
    pub error: &'a str,
    /// Handler runs used.
    pub attempts: u32,
    /// The group that failed it.
    pub group: &'a str,
    /// The stream the event was published to.
    pub stream: &'a str,
    /// The entry id it was published as.
    pub entry_id: &'a str,
    /// When (epoch ms).
    pub failed_at_ms: u64,
    /// The consumer that dead-letters it.
    pub consumer: &'a str,
}

/// The DLQ entry for an event with fields `original`: its fields (bounded, `dlq_*` ones
/// dropped), then `dlq_omitted` if some did not fit, then the failure's `dlq_*` fields.
pub fn encode(original: &[(String, String)], f: &Failure<'_>) -> Vec<(String, String)> {
    let (kept, omitted) = envelope::bounded_copy(original);
    let mut fields: Vec<(String, String)> =
        kept.into_iter().filter(|(k, _)| !is_dlq_field(k)).collect();
    if let Some(note) = omitted {
        fields.push((field::OMITTED.to_string(), note));
    }
    for (k, v) in [
        (field::REASON, f.reason.as_str().to_string()),
        (field::ERROR, truncate(f.error, MAX_ERROR_LEN)),
        (field::ATTEMPTS, f.attempts.to_string()),
        (field::GROUP, f.group.to_string()),
        (field::STREAM, f.stream.to_string()),
        (field::ENTRY_ID, f.entry_id.to_string()),
        (field::FAILED_AT, rfc3339(f.failed_at_ms)),
        (field::CONSUMER, f.consumer.to_string()),
    ] {
        fields.push((k.to_string(), v));
    }
    fields
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_round_trip_and_match_the_help() {
        for r in Reason::STORED {
            assert_eq!(Reason::parse(r.as_str()), Some(r));
            assert!(REASON_HELP.contains(r.as_str()), "{r}");
        }
        assert_eq!(Reason::parse("other"), None);
    }

    #[test]
    fn encode_drops_foreign_dlq_fields_and_appends_the_failure() {
        let original = vec![
            ("id".to_string(), "x".to_string()),
            ("dlq_reason".to_string(), "forged".to_string()),
        ];
        let f = Failure {
            reason: Reason::Malformed,
            error: &"e".repeat(MAX_ERROR_LEN + 10),
            attempts: 2,
            group: "g",
            stream: "events:p:a",
            entry_id: "1-0",
            failed_at_ms: 0,
            consumer: "c",
        };
        let fields = encode(&original, &f);
        let names: Vec<&str> = fields.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            names,
            [
                "id",
                field::REASON,
                field::ERROR,
                field::ATTEMPTS,
                field::GROUP,
                field::STREAM,
                field::ENTRY_ID,
                field::FAILED_AT,
                field::CONSUMER
            ]
        );
        assert_eq!(envelope::lookup(&fields, field::REASON), Some("malformed"));
        assert!(envelope::lookup(&fields, field::ERROR).unwrap().len() <= MAX_ERROR_LEN + 3);
    }
}
