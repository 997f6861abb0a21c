//! DLQ filters (type, reason, group, error text, age) and entry id validation.

use serde::Deserialize;

use crate::model::keys;
use crate::model::time::{entry_id_ms, now_ms};
use crate::ops::dlq::{DlqEntry, DlqError};
use crate::settle::dlq_record::field as dlq;

/// Filters shared by list, replay and purge; every given one must match. (Deserialized as
/// part of API bodies, whose unknown fields the API refuses itself.)
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
pub struct DlqFilter {
    /// Exact event type.
    #[serde(rename = "type")]
    pub event_type: Option<String>,
    /// Exact `dlq_reason`.
    pub reason: Option<String>,
    /// Exact `dlq_group`.
    pub group: Option<String>,
    /// Case-insensitive text in `dlq_error`.
    pub grep: Option<String>,
    /// Dead-lettered at most this long ago (entry id time), e.g. `2h`.
    pub since: Option<String>,
    /// Dead-lettered at least this long ago, e.g. `7d`.
    pub older_than: Option<String>,
}

/// A filter with its durations parsed.
#[derive(Debug, Clone)]
pub(super) struct Compiled {
    filter: DlqFilter,
    grep: Option<String>,
    since_ms: Option<u64>,
    before_ms: Option<u64>,
}

impl DlqFilter {
    /// Checks the filter's values before any Redis call.
    ///
    /// # Errors
    /// [`DlqError::Invalid`] naming the bad field.
    #[cfg(test)]
    pub fn validate(&self) -> Result<(), DlqError> {
        self.compile().map(|_| ())
    }

    /// Checks the filter's values before any Redis call.
    ///
    /// # Errors
    /// [`DlqError::Invalid`] naming the bad field.
    pub(super) fn compile(&self) -> Result<Compiled, DlqError> {
        if let Some(t) = &self.event_type
            && !keys::is_valid_type(t)
        {
            return Err(DlqError::Invalid(format!(
                "type: `{}` is not a valid event type",
                crate::model::envelope::truncate(t, 80)
            )));
        }
        if let Some(g) = &self.group
            && !keys::is_valid_name(g)
        {
            return Err(DlqError::Invalid(
                "group: must match [A-Za-z0-9_.-]+".into(),
            ));
        }
        if let Some(r) = &self.reason
            && (r.len() > 64 || !r.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'))
        {
            return Err(DlqError::Invalid(
                "reason: must be a reason word such as permanent_error".into(),
            ));
        }
        let now = now_ms();
        let ago = |name: &str, v: &Option<String>| -> Result<Option<u64>, DlqError> {
            v.as_ref()
                .map(|s| {
                    crate::config::parse_duration(s)
                        .map(|d| now.saturating_sub(d.as_millis() as u64))
                        .map_err(|e| DlqError::Invalid(format!("{name}: {e}")))
                })
                .transpose()
        };
        Ok(Compiled {
            grep: self.grep.as_ref().map(|g| g.to_lowercase()),
            since_ms: ago("since", &self.since)?,
            before_ms: ago("older_than", &self.older_than)?,
            filter: self.clone(),
        })
    }
}

impl Compiled {
    /// The first entry id the time filters allow (`since`), or `-`.
    pub(super) fn range_start(&self) -> String {
        self.since_ms
            .map(|s| format!("{s}-0"))
            .unwrap_or_else(|| "-".into())
    }

    /// The exclusive upper bound the time filters set (`older_than`), e.g. `(1700-0`.
    pub(super) fn range_end(&self) -> Option<String> {
        self.before_ms.map(|b| format!("({b}-0"))
    }

    /// The exact type, reason and group wanted, for the scan script.
    pub(super) fn exact(&self) -> [Option<&str>; 3] {
        let f = &self.filter;
        [
            f.event_type.as_deref(),
            f.reason.as_deref(),
            f.group.as_deref(),
        ]
    }

    /// Whether only the scan script's exact fields and the range filter (no `grep`).
    pub(super) fn exact_only(&self) -> bool {
        self.grep.is_none()
    }

    pub(super) fn matches(&self, e: &DlqEntry) -> bool {
        let f = &self.filter;
        let at = entry_id_ms(&e.entry_id).unwrap_or(0);
        f.event_type.as_deref().is_none_or(|t| t == e.event_type())
            && f.reason.as_deref().is_none_or(|r| r == e.reason())
            && f.group.as_deref().is_none_or(|g| g == e.group())
            && self
                .grep
                .as_deref()
                .is_none_or(|g| e.get(dlq::ERROR).to_lowercase().contains(g))
            && self.since_ms.is_none_or(|s| at >= s)
            && self.before_ms.is_none_or(|b| at < b)
    }
}

/// Whether `id` is a stream entry id (`<ms>-<seq>`).
pub fn is_entry_id(id: &str) -> bool {
    let mut parts = id.split('-');
    let ok = |p: Option<&str>| {
        p.is_some_and(|p| !p.is_empty() && p.len() <= 20 && p.bytes().all(|b| b.is_ascii_digit()))
    };
    ok(parts.next()) && ok(parts.next()) && parts.next().is_none()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::dlq::test_util::entry;

    #[test]
    fn entry_ids_are_validated() {
        assert!(is_entry_id("1700000000000-0"));
        for bad in [
            "",
            "1-",
            "-1",
            "1-2-3",
            "../../x",
            "%2e%2e%2f",
            "*",
            "0-0 1-1",
            "\r\nDEL x",
            "a-1",
        ] {
            assert!(!is_entry_id(bad), "{bad}");
        }
    }

    #[test]
    fn filters_match_every_given_field() {
        let e = entry(
            &format!("{}-0", now_ms()),
            &[
                ("type", "a.b"),
                ("dlq_reason", "permanent_error"),
                ("dlq_group", "g"),
                ("dlq_error", "HTTP status 400: Bad"),
            ],
        );
        let f = |f: DlqFilter| f.compile().unwrap().matches(&e);
        assert!(f(DlqFilter {
            event_type: Some("a.b".into()),
            grep: Some("bad".into()),
            since: Some("1h".into()),
            ..Default::default()
        }));
        assert!(!f(DlqFilter {
            reason: Some("malformed".into()),
            ..Default::default()
        }));
        assert!(!f(DlqFilter {
            older_than: Some("1h".into()),
            ..Default::default()
        }));
        assert!(
            DlqFilter {
                event_type: Some("dlq".into()),
                ..Default::default()
            }
            .compile()
            .is_err()
        );
        assert!(
            DlqFilter {
                since: Some("soon".into()),
                ..Default::default()
            }
            .compile()
            .is_err()
        );
    }
}
