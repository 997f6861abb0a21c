//! `[redis]`: the opt-in `WAIT` after writes whose loss on a failover would lose an event
//! (README "Redis Cluster", "Replication window"): `wait_replicas` replicas must acknowledge a
//! publish, and the destination half of a move across Cluster slots, within `wait_timeout`.

use std::time::Duration;

use serde::Deserialize;

use super::parse::{Checker, DurationRule, IntRule};

/// `[redis]` as the file holds it.
#[derive(Debug, Deserialize, Default)]
#[cfg_attr(test, derive(serde::Serialize))]
#[serde(deny_unknown_fields)]
pub(super) struct RawRedis {
    pub wait_replicas: Option<i64>,
    pub wait_timeout: Option<String>,
}

/// `[redis]`: how many replicas must acknowledge a write that would lose an event if a
/// failover lost it, and how long to wait for them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RedisConfig {
    /// `WAIT <n>` after a publish and after the destination half of a move across slots
    /// (default 0: off, no WAIT is sent).
    pub wait_replicas: u32,
    /// The WAIT's timeout (default 100 ms, 1 ms to 5 s): a publish answers within about this
    /// much more than without WAIT even when no replica answers.
    pub wait_timeout: Duration,
}

impl Default for RedisConfig {
    fn default() -> Self {
        RedisConfig {
            wait_replicas: WAIT_REPLICAS.default as u32,
            wait_timeout: WAIT_TIMEOUT.default,
        }
    }
}

/// `redis.wait_replicas`.
const WAIT_REPLICAS: IntRule = IntRule::new(0, 0, 16);
/// `redis.wait_timeout` (at most [`MAX_WAIT_TIMEOUT`]).
const WAIT_TIMEOUT: DurationRule =
    DurationRule::new(Duration::from_millis(100), Duration::from_millis(1));
/// The longest `redis.wait_timeout`: well under the 10 s after which an unanswering
/// connection is replaced.
const MAX_WAIT_TIMEOUT: Duration = Duration::from_secs(5);

/// Validates `[redis]`, naming each bad key (`redis.wait_replicas: 17 is out of range`).
pub(super) fn redis(c: &mut Checker, raw: &RawRedis) -> RedisConfig {
    let wait_replicas = c.int("redis.wait_replicas", raw.wait_replicas, WAIT_REPLICAS) as u32;
    let mut wait_timeout = c.duration(
        "redis.wait_timeout",
        raw.wait_timeout.as_deref(),
        WAIT_TIMEOUT,
    );
    if wait_timeout > MAX_WAIT_TIMEOUT {
        c.push(format!(
            "redis.wait_timeout: must be at most 5s (a publish waits this long for replicas \
             when none answers); got {wait_timeout:?}"
        ));
        wait_timeout = WAIT_TIMEOUT.default;
    }
    RedisConfig {
        wait_replicas,
        wait_timeout,
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;
    use std::time::Duration;

    const BASE: &str = "env = \"t\"\nredis_url = \"redis://127.0.0.1:1\"\n";

    #[test]
    fn defaults_overrides_and_bounds() {
        let c = Config::from_toml_and_env(BASE, |_| None).unwrap();
        assert_eq!(c.redis, super::RedisConfig::default());
        assert_eq!(
            (c.redis.wait_replicas, c.redis.wait_timeout),
            (0, Duration::from_millis(100))
        );
        let text = format!("{BASE}[redis]\nwait_replicas = 1\n");
        let c = Config::from_toml_and_env(&text, |n| {
            (n == "EVENTS_REDIS_WAIT_TIMEOUT").then(|| "250ms".to_string())
        })
        .unwrap();
        assert_eq!(
            (c.redis.wait_replicas, c.redis.wait_timeout),
            (1, Duration::from_millis(250))
        );
        let text = format!("{BASE}[redis]\nwait_replicas = 17\nwait_timeout = \"6s\"\n");
        let e = Config::from_toml_and_env(&text, |_| None)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("redis.wait_replicas: 17 is out of range (0..=16)"),
            "{e}"
        );
        assert!(
            e.contains("redis.wait_timeout: must be at most 5s (a publish waits this long for replicas when none answers); got 6s"),
            "{e}"
        );
    }
}
