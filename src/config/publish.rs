//! `[publish]`: the idempotent publish (README "Publishing events", "Idempotent publish and
//! the batch form"): how long and how many event ids per type the id guard remembers, and the
//! bounds of one batch of `POST /api/events/publish/batch`.

use std::time::Duration;

use serde::Deserialize;

use super::parse::{Checker, DurationRule, IntRule};

/// `[publish]` as the file holds it.
#[derive(Debug, Deserialize, Default)]
#[cfg_attr(test, derive(serde::Serialize))]
#[serde(deny_unknown_fields)]
pub(super) struct RawPublish {
    pub dedup_window: Option<String>,
    pub dedup_max_ids: Option<i64>,
    pub batch_max_events: Option<i64>,
    pub batch_max_bytes: Option<i64>,
}

/// `[publish]`: the id guard's bounds and the batch bounds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishConfig {
    /// A publish with an `id` already published to its type within this window writes
    /// nothing and answers `duplicate` (default 24 h).
    pub dedup_window: Duration,
    /// The id guard of a type keeps at most this many ids, the oldest dropped first
    /// (default 100,000): under a higher rate the guard covers less than `dedup_window`.
    pub dedup_max_ids: u64,
    /// Most events in one batch (default 100).
    pub batch_max_events: usize,
    /// Most bytes in one batch body (default 1 MiB, the API's body limit, which is also the
    /// maximum).
    pub batch_max_bytes: usize,
}

impl Default for PublishConfig {
    fn default() -> Self {
        PublishConfig {
            dedup_window: DEDUP_WINDOW.default,
            dedup_max_ids: DEDUP_MAX_IDS.default as u64,
            batch_max_events: BATCH_MAX_EVENTS.default as usize,
            batch_max_bytes: BATCH_MAX_BYTES.default as usize,
        }
    }
}

/// `publish.dedup_window`.
const DEDUP_WINDOW: DurationRule =
    DurationRule::new(Duration::from_secs(24 * 3600), Duration::from_millis(100));
/// `publish.dedup_max_ids`.
const DEDUP_MAX_IDS: IntRule = IntRule::new(100_000, 1, 100_000_000);
/// `publish.batch_max_events`.
const BATCH_MAX_EVENTS: IntRule = IntRule::new(100, 1, 10_000);
/// `publish.batch_max_bytes` (the API refuses any body over 1 MiB before this applies).
const BATCH_MAX_BYTES: IntRule = IntRule::new(1024 * 1024, 1024, 1024 * 1024);

/// Validates `[publish]`, naming each bad key (`publish.dedup_max_ids: 0 is out of range`).
pub(super) fn publish(c: &mut Checker, raw: &RawPublish) -> PublishConfig {
    PublishConfig {
        dedup_window: c.duration(
            "publish.dedup_window",
            raw.dedup_window.as_deref(),
            DEDUP_WINDOW,
        ),
        dedup_max_ids: c.int("publish.dedup_max_ids", raw.dedup_max_ids, DEDUP_MAX_IDS) as u64,
        batch_max_events: c.int(
            "publish.batch_max_events",
            raw.batch_max_events,
            BATCH_MAX_EVENTS,
        ) as usize,
        batch_max_bytes: c.int(
            "publish.batch_max_bytes",
            raw.batch_max_bytes,
            BATCH_MAX_BYTES,
        ) as usize,
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;
    use std::time::Duration;

    const BASE: &str = "env = \"t\"\nredis_url = \"redis://127.0.0.1:1\"\n";

    #[test]
    fn defaults_and_overrides() {
        let c = Config::from_toml_and_env(BASE, |_| None).unwrap();
        assert_eq!(c.publish, super::PublishConfig::default());
        assert_eq!(c.publish.dedup_window, Duration::from_secs(86_400));
        assert_eq!(c.publish.dedup_max_ids, 100_000);
        assert_eq!(
            (c.publish.batch_max_events, c.publish.batch_max_bytes),
            (100, 1_048_576)
        );
        let text = format!("{BASE}[publish]\ndedup_window = \"2s\"\nbatch_max_events = 5\n");
        let c = Config::from_toml_and_env(&text, |n| {
            (n == "EVENTS_PUBLISH_DEDUP_MAX_IDS").then(|| "7".to_string())
        })
        .unwrap();
        assert_eq!(c.publish.dedup_window, Duration::from_secs(2));
        assert_eq!(
            (c.publish.dedup_max_ids, c.publish.batch_max_events),
            (7, 5)
        );
    }

    #[test]
    fn bad_values_name_their_key() {
        let text = format!(
            "{BASE}[publish]\ndedup_window = \"10ms\"\ndedup_max_ids = 0\nbatch_max_bytes = 2000000\n"
        );
        let e = Config::from_toml_and_env(&text, |_| None)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("publish.dedup_window: must be at least 100ms"),
            "{e}"
        );
        assert!(
            e.contains("publish.dedup_max_ids: 0 is out of range (1..=100000000)"),
            "{e}"
        );
        assert!(
            e.contains("publish.batch_max_bytes: 2000000 is out of range (1024..=1048576)"),
            "{e}"
        );
    }
}
