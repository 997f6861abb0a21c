//! Streams nobody will consume ("black holes"): streams under `events:<env>:` that are not
//! one of the env's own keys ([`OWN_KEY_WORDS`]), hold entries, are not followed by this
//! worker and have no consumer group at all, either because their name is not a valid
//! event type (`events:<env>:Booking.Created`: no worker ever consumes or dead-letters it)
//! or because no route of any service reads that type. A stream some other service's group
//! reads is not reported.
//!
//! Found by [`find`] (one bounded SCAN with `TYPE stream`, then XINFO GROUPS and XLEN of the
//! candidates), run by discovery every `health.scan_interval` and by `event-worker check`;
//! reported in health (reason `unconsumed_streams`), as the gauges
//! `event_worker_unconsumed_streams{env,cause}` / `event_worker_unconsumed_entries{env,cause}`
//! and in one WARN line per stream (see [`Logged`]).

use std::collections::HashSet;

use futures::future::join_all;
use serde_json::json;
use tracing::warn;

use crate::metrics::Metrics;
use crate::model::keys::{Keys, RESERVED_TYPES};
use crate::redis::store::{Store, StoreError};

/// First words (before any `:`) of the env's own keys besides [`RESERVED_TYPES`]: keys the
/// worker or its operators keep under the prefix that are not type streams.
pub const OWN_KEY_WORDS: &[&str] = &["push", "outbox", "dedup"];

/// Most streams one scan looks at (keys the SCAN returns past it are not checked).
pub const SCAN_LIMIT: usize = 5000;

/// Most streams health and `check` name; the totals count them all.
pub const MAX_LISTED: usize = 20;

/// Candidates checked concurrently (XINFO GROUPS, XLEN) per round trip.
const CHUNK: usize = 100;

/// Why nobody consumes a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Cause {
    /// The name after `events:<env>:` is not a valid event type.
    InvalidType,
    /// A valid type no consumer group reads (no route of any service matches it).
    NoGroup,
}

impl Cause {
    /// Every cause (the metric's `cause` values).
    pub const ALL: [Cause; 2] = [Cause::InvalidType, Cause::NoGroup];

    /// The `cause` label and JSON word.
    pub const fn as_str(self) -> &'static str {
        match self {
            Cause::InvalidType => "invalid_type",
            Cause::NoGroup => "no_group",
        }
    }

    /// What an operator reads: why, and what to do.
    pub const fn explain(self) -> &'static str {
        match self {
            Cause::InvalidType => {
                "its name is not a valid event type ([a-z0-9_-] parts separated by dots), so no \
                 worker consumes or dead-letters it; publish under a valid type and move or \
                 delete the stream"
            }
            Cause::NoGroup => {
                "no consumer group reads it (no route of any service matches the type); add a \
                 route or delete the stream"
            }
        }
    }
}

/// One stream nobody consumes.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Unconsumed {
    /// The stream key.
    pub key: String,
    /// Why.
    pub cause: Cause,
    /// Its entries (XLEN).
    pub entries: u64,
}

/// Whether `key` is one of the env's own keys (DLQ, retry sets, heartbeats, ...).
pub fn is_own_key(keys: &Keys, key: &str) -> bool {
    let Some(rest) = key.strip_prefix(keys.prefix()) else {
        return true;
    };
    let word = rest.split(':').next().unwrap_or(rest);
    RESERVED_TYPES.contains(&word) || OWN_KEY_WORDS.contains(&word)
}

/// The streams under the env's prefix nobody consumes, sorted by key: not own keys, not in
/// `followed`, with entries and without any consumer group. At most [`SCAN_LIMIT`] streams
/// are looked at.
///
/// # Errors
/// Redis errors.
pub async fn find(
    store: &Store,
    keys: &Keys,
    followed: &HashSet<String>,
) -> Result<Vec<Unconsumed>, StoreError> {
    let keep = |k: &str| !is_own_key(keys, k) && !followed.contains(k);
    let candidates = store
        .scan_streams(&format!("{}*", keys.prefix()), SCAN_LIMIT, &keep)
        .await?;
    let mut out = Vec::new();
    for chunk in candidates.chunks(CHUNK) {
        let groups = join_all(chunk.iter().map(|k| store.groups(k))).await;
        let lens = join_all(chunk.iter().map(|k| store.xlen(k))).await;
        for ((key, groups), len) in chunk.iter().zip(groups).zip(lens) {
            let (groups, entries) = (groups?, len?);
            if !groups.is_empty() || entries == 0 {
                continue;
            }
            let cause = if keys.type_of_stream(key).is_some() {
                Cause::NoGroup
            } else {
                Cause::InvalidType
            };
            out.push(Unconsumed {
                key: key.clone(),
                cause,
                entries,
            });
        }
    }
    Ok(out)
}

/// Totals of `found` for `cause`: (streams, entries).
pub fn totals(found: &[Unconsumed], cause: Cause) -> (usize, u64) {
    found
        .iter()
        .filter(|u| u.cause == cause)
        .fold((0, 0), |(n, e), u| (n + 1, e + u.entries))
}

/// The JSON report health and `check --json` show: totals, then at most [`MAX_LISTED`]
/// streams.
pub fn report(found: &[Unconsumed]) -> serde_json::Value {
    let listed: Vec<_> = found
        .iter()
        .take(MAX_LISTED)
        .map(|u| json!({"stream": u.key, "cause": u.cause.as_str(), "entries": u.entries}))
        .collect();
    json!({
        "total": found.len(),
        "entries": found.iter().map(|u| u.entries).sum::<u64>(),
        "streams": listed,
    })
}

/// The one-line summary of health's `unconsumed_streams` reason.
pub fn summary(found: &[Unconsumed]) -> Option<String> {
    if found.is_empty() {
        return None;
    }
    let named: Vec<String> = found
        .iter()
        .take(3)
        .map(|u| format!("{} ({}, {} entries)", u.key, u.cause.as_str(), u.entries))
        .collect();
    let more = found.len() - named.len();
    Some(format!(
        "{} stream(s) hold {} entries nobody consumes: {}{}; see `event-worker check`",
        found.len(),
        found.iter().map(|u| u.entries).sum::<u64>(),
        named.join(", "),
        if more > 0 {
            format!(" and {more} more")
        } else {
            String::new()
        }
    ))
}

/// The line printed and logged for one stream.
pub fn describe(u: &Unconsumed) -> String {
    format!(
        "stream {} holds {} entries nobody consumes: {}",
        u.key,
        u.entries,
        u.cause.explain()
    )
}

/// Sets the gauges of `env` from `found` (every cause, 0 included).
pub fn export(metrics: &Metrics, env: &str, found: &[Unconsumed]) {
    for cause in Cause::ALL {
        let (n, entries) = totals(found, cause);
        let labels = [env, cause.as_str()];
        metrics
            .unconsumed_streams
            .with_label_values(&labels)
            .set(n as i64);
        metrics
            .unconsumed_entries
            .with_label_values(&labels)
            .set(entries as i64);
    }
}

/// The streams already logged, so each is logged once while it stays unconsumed (and
/// again if it comes back after being fixed).
#[derive(Debug, Default)]
pub struct Logged(HashSet<String>);

impl Logged {
    /// Logs (WARN) the streams of `found` not logged yet; forgets the ones gone.
    pub fn log_new(&mut self, found: &[Unconsumed]) {
        let now: HashSet<&str> = found.iter().map(|u| u.key.as_str()).collect();
        self.0.retain(|k| now.contains(k.as_str()));
        for u in found {
            if self.0.insert(u.key.clone()) {
                warn!(stream = %u.key, cause = u.cause.as_str(), entries = u.entries, "{}", describe(u));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn u(key: &str, cause: Cause, entries: u64) -> Unconsumed {
        Unconsumed {
            key: key.into(),
            cause,
            entries,
        }
    }

    #[test]
    fn own_keys_are_not_candidates() {
        let k = Keys::new("p");
        for own in [
            "events:p:dlq",
            "events:p:retry:g",
            "events:p:redeliver:g",
            "events:p:history",
            "events:p:heartbeat:g:c",
            "events:p:migrations",
            "events:p:outbox:g",
            "events:p:push",
            "events:p:dedup:g",
            "events:q:a.b",
        ] {
            assert!(is_own_key(&k, own), "{own}");
        }
        for other in ["events:p:Booking.Created", "events:p:a.b", "events:p:x:y"] {
            assert!(!is_own_key(&k, other), "{other}");
        }
    }

    #[test]
    fn reports_are_capped_and_totalled() {
        let found: Vec<_> = (0..25)
            .map(|i| u(&format!("events:p:T{i:02}"), Cause::InvalidType, 2))
            .chain([u("events:p:z.z", Cause::NoGroup, 5)])
            .collect();
        let r = report(&found);
        assert_eq!(r["total"], 26);
        assert_eq!(r["entries"], 55);
        assert_eq!(r["streams"].as_array().unwrap().len(), MAX_LISTED);
        assert_eq!(
            r["streams"][0],
            json!({"stream": "events:p:T00", "cause": "invalid_type", "entries": 2})
        );
        assert_eq!(totals(&found, Cause::NoGroup), (1, 5));
        assert_eq!(
            summary(&found[..1]).unwrap(),
            "1 stream(s) hold 2 entries nobody consumes: events:p:T00 (invalid_type, 2 \
             entries); see `event-worker check`"
        );
        assert!(summary(&found).unwrap().contains("and 23 more"));
        assert_eq!(summary(&[]), None);
    }
}
