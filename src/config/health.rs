//! `[health]`: when `/api/events/health` says `degraded` (README "Operating it"). Each key is
//! one threshold with a default chosen so that a normal trickle of poison events leaves the
//! status `ok`; a `degraded` status names the threshold it crossed.

use std::time::Duration;

use serde::Deserialize;

use super::parse::{Checker, DurationRule, IntRule};

/// `[health]` as the file holds it.
#[derive(Debug, Deserialize, Default)]
#[cfg_attr(test, derive(serde::Serialize))]
#[serde(deny_unknown_fields)]
pub(super) struct RawHealth {
    pub window: Option<String>,
    pub dlq_growth: Option<i64>,
    pub retry_depth: Option<i64>,
    pub lag: Option<i64>,
    pub scan_interval: Option<String>,
}

/// `[health]`: the thresholds of the `degraded` reasons.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthConfig {
    /// The period growth is measured over (DLQ growth, lag growth) (default 5 min).
    pub window: Duration,
    /// `degraded` when the DLQ grew by this many entries or more within `window` (default 10).
    pub dlq_growth: u64,
    /// `degraded` when the group's retry set holds this many events or more (default 1000).
    pub retry_depth: u64,
    /// `degraded` when the group's lag over its streams is this many entries or more and
    /// grew within `window` (default 10000).
    pub lag: u64,
    /// How often the env's streams are checked for ones nobody consumes (default 30 s).
    pub scan_interval: Duration,
}

impl Default for HealthConfig {
    fn default() -> Self {
        HealthConfig {
            window: WINDOW.default,
            dlq_growth: DLQ_GROWTH.default as u64,
            retry_depth: RETRY_DEPTH.default as u64,
            lag: LAG.default as u64,
            scan_interval: SCAN_INTERVAL.default,
        }
    }
}

/// `health.window`.
const WINDOW: DurationRule = DurationRule {
    default: Duration::from_secs(300),
    min: Duration::from_secs(1),
};
/// `health.dlq_growth`.
const DLQ_GROWTH: IntRule = IntRule {
    default: 10,
    min: 1,
    max: i64::MAX,
};
/// `health.retry_depth`.
const RETRY_DEPTH: IntRule = IntRule {
    default: 1000,
    min: 1,
    max: i64::MAX,
};
/// `health.lag`.
const LAG: IntRule = IntRule {
    default: 10_000,
    min: 1,
    max: i64::MAX,
};
/// `health.scan_interval`.
const SCAN_INTERVAL: DurationRule = DurationRule {
    default: Duration::from_secs(30),
    min: Duration::from_millis(100),
};

/// Validates `[health]`, naming each bad key (`health.window: must be at least 1s`).
pub(super) fn health(c: &mut Checker, raw: &RawHealth) -> HealthConfig {
    HealthConfig {
        window: c.duration("health.window", raw.window.as_deref(), WINDOW),
        dlq_growth: c.int("health.dlq_growth", raw.dlq_growth, DLQ_GROWTH) as u64,
        retry_depth: c.int("health.retry_depth", raw.retry_depth, RETRY_DEPTH) as u64,
        lag: c.int("health.lag", raw.lag, LAG) as u64,
        scan_interval: c.duration(
            "health.scan_interval",
            raw.scan_interval.as_deref(),
            SCAN_INTERVAL,
        ),
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    const BASE: &str = "env = \"t\"\nredis_url = \"redis://127.0.0.1:1\"\n";

    #[test]
    fn defaults_and_overrides() {
        let c = Config::from_toml_and_env(BASE, |_| None).unwrap();
        assert_eq!(c.health, super::HealthConfig::default());
        assert_eq!(c.health.window, std::time::Duration::from_secs(300));
        let text = format!("{BASE}[health]\nwindow = \"2m\"\ndlq_growth = 3\n");
        let c = Config::from_toml_and_env(&text, |n| {
            (n == "EVENTS_HEALTH_RETRY_DEPTH").then(|| "50".to_string())
        })
        .unwrap();
        assert_eq!(c.health.window, std::time::Duration::from_secs(120));
        assert_eq!((c.health.dlq_growth, c.health.retry_depth), (3, 50));
    }

    #[test]
    fn bad_values_name_their_key() {
        let text = format!("{BASE}[health]\nwindow = \"10ms\"\nlag = 0\nscan_interval = \"x\"\n");
        let e = Config::from_toml_and_env(&text, |_| None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("health.window: must be at least 1s"), "{e}");
        assert!(e.contains("health.lag: 0 is out of range (1..="), "{e}");
        assert!(
            e.contains("health.scan_interval: `x` is not a duration"),
            "{e}"
        );
    }
}
