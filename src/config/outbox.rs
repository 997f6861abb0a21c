//! `[outbox]`: the durable local outbox (README "Outbox"): whether publishes fall back to it,
//! where it lives, how big it may grow and when an append is on disk.
//!
//! Off by default: a durable outbox needs a directory on a persistent disk that belongs to
//! one process, which only the operator can name (a container's own disk is gone with it, and
//! two processes with the same default would contend for one lock).

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::parse::{Checker, DurationRule, IntRule, parse_duration};
use crate::outbox::{FsyncPolicy, Options};

/// `[outbox]` as the file holds it.
#[derive(Debug, Deserialize, Default)]
#[cfg_attr(test, derive(serde::Serialize))]
#[serde(deny_unknown_fields)]
pub(super) struct RawOutbox {
    pub enabled: Option<bool>,
    pub dir: Option<PathBuf>,
    pub max_bytes: Option<i64>,
    pub fsync: Option<String>,
    pub segment_bytes: Option<i64>,
    pub fallback_after: Option<String>,
    pub drain_rate: Option<i64>,
    pub max_age: Option<String>,
}

/// `[outbox]`: the local log publishes fall back to when Redis does not answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxConfig {
    /// Whether publishes fall back to the outbox (default false, see the module docs).
    pub enabled: bool,
    /// Its directory (default `<state dir>/outbox-<env>`, the state dir being
    /// `$EVENT_WORKER_STATE_DIR`, `$XDG_STATE_HOME/event-worker`,
    /// `$HOME/.local/state/event-worker` or `/var/lib/event-worker`, the first one set).
    pub dir: PathBuf,
    /// The most bytes its segments may take (default 256 MiB); a publish past it answers 503.
    pub max_bytes: u64,
    /// When an append is on disk (default `always`).
    pub fsync: FsyncPolicy,
    /// Segment file size before rolling over (default 16 MiB).
    pub segment_bytes: u64,
    /// How long a publish waits for Redis before it queues in the outbox (default 1 s).
    pub fallback_after: Duration,
    /// Events a second the daemon's drain publishes at most (default 1000).
    pub drain_rate: u32,
    /// Health is `degraded` when the oldest queued event is older than this (default 1m).
    pub max_age: Duration,
}

impl OutboxConfig {
    /// The log's options.
    pub fn options(&self) -> Options {
        Options {
            max_bytes: self.max_bytes,
            segment_bytes: self.segment_bytes,
            fsync: self.fsync,
        }
    }
}

/// `outbox.max_bytes`.
const MAX_BYTES: IntRule = IntRule::new(256 << 20, 4096, i64::MAX);
/// `outbox.segment_bytes`.
const SEGMENT_BYTES: IntRule = IntRule::new(16 << 20, 4096, 1 << 30);
/// `outbox.fallback_after`.
const FALLBACK_AFTER: DurationRule =
    DurationRule::new(Duration::from_secs(1), Duration::from_millis(10));

/// `outbox.drain_rate`.
const DRAIN_RATE: IntRule = IntRule::new(1000, 1, 1_000_000);
/// `outbox.max_age`.
const MAX_AGE: DurationRule = DurationRule::new(Duration::from_secs(60), Duration::from_secs(1));

/// The default directory for `env`, from the first state directory `lookup` gives.
fn default_dir(env: &str, lookup: &impl Fn(&str) -> Option<String>) -> PathBuf {
    let set = |name: &str| lookup(name).filter(|v| !v.is_empty()).map(PathBuf::from);
    let state = set("EVENT_WORKER_STATE_DIR")
        .or_else(|| set("XDG_STATE_HOME").map(|p| p.join("event-worker")))
        .or_else(|| set("HOME").map(|p| p.join(".local/state/event-worker")))
        .unwrap_or_else(|| PathBuf::from("/var/lib/event-worker"));
    state.join(format!("outbox-{env}"))
}

/// `outbox.fsync`: `always` or a group commit interval.
fn fsync(c: &mut Checker, raw: Option<&str>) -> FsyncPolicy {
    match raw.map(str::trim) {
        None | Some("always") => FsyncPolicy::Always,
        Some(text) => match parse_duration(text) {
            Ok(d) if d >= Duration::from_millis(1) && d <= Duration::from_secs(10) => {
                FsyncPolicy::Interval(d)
            }
            _ => {
                c.push(format!(
                    "outbox.fsync: `{text}` is neither `always` nor a group commit interval \
                     from 1ms to 10s such as \"100ms\""
                ));
                FsyncPolicy::Always
            }
        },
    }
}

/// Validates `[outbox]` for `env`, naming each bad key; `lookup` reads the state directory
/// variables for the default `dir`.
pub(super) fn outbox(
    c: &mut Checker,
    raw: &RawOutbox,
    env: &str,
    lookup: &impl Fn(&str) -> Option<String>,
) -> OutboxConfig {
    let enabled = raw.enabled.unwrap_or(false);
    let dir = raw.dir.clone().unwrap_or_else(|| default_dir(env, lookup));
    if enabled && dir.starts_with(Path::new("/tmp")) {
        c.push(format!(
            "outbox.dir: {} is under /tmp, which many systems empty on reboot, so queued \
             events would be lost; choose a directory on a persistent disk",
            dir.display()
        ));
    }
    let max_bytes = c.int("outbox.max_bytes", raw.max_bytes, MAX_BYTES) as u64;
    let segment_bytes = c.int("outbox.segment_bytes", raw.segment_bytes, SEGMENT_BYTES) as u64;
    // Unset, it shrinks to fit a small max_bytes; set, it must fit.
    let segment_bytes = match raw.segment_bytes {
        None => segment_bytes.min(max_bytes),
        Some(_) => segment_bytes,
    };
    if segment_bytes > max_bytes {
        c.push(format!(
            "outbox.segment_bytes: {segment_bytes} is over outbox.max_bytes ({max_bytes}); a \
             segment must fit in the outbox"
        ));
    }
    OutboxConfig {
        enabled,
        dir,
        max_bytes,
        fsync: fsync(c, raw.fsync.as_deref()),
        segment_bytes,
        fallback_after: c.duration(
            "outbox.fallback_after",
            raw.fallback_after.as_deref(),
            FALLBACK_AFTER,
        ),
        drain_rate: c.int("outbox.drain_rate", raw.drain_rate, DRAIN_RATE) as u32,
        max_age: c.duration("outbox.max_age", raw.max_age.as_deref(), MAX_AGE),
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;
    use std::time::Duration;

    use crate::config::Config;
    use crate::outbox::FsyncPolicy;

    const BASE: &str = "env = \"t\"\nredis_url = \"redis://127.0.0.1:1\"\n";

    #[test]
    fn defaults() {
        let c =
            Config::from_toml_and_env(BASE, |n| (n == "HOME").then(|| "/home/u".into())).unwrap();
        let o = c.outbox;
        assert!(!o.enabled);
        assert_eq!(
            o.dir,
            PathBuf::from("/home/u/.local/state/event-worker/outbox-t")
        );
        assert_eq!((o.max_bytes, o.segment_bytes), (256 << 20, 16 << 20));
        assert_eq!(o.fsync, FsyncPolicy::Always);
        assert_eq!(o.fallback_after, Duration::from_secs(1));
        assert_eq!((o.drain_rate, o.max_age), (1000, Duration::from_secs(60)));
        let c = Config::from_toml_and_env(BASE, |_| None).unwrap();
        assert_eq!(
            c.outbox.dir,
            PathBuf::from("/var/lib/event-worker/outbox-t")
        );
    }

    #[test]
    fn overrides_from_file_and_env() {
        let text =
            format!("{BASE}[outbox]\nenabled = true\ndir = \"/data/ob\"\nfsync = \"100ms\"\n");
        let c = Config::from_toml_and_env(&text, |n| {
            (n == "EVENTS_OUTBOX_MAX_BYTES").then(|| "65536".into())
        })
        .unwrap();
        assert!(c.outbox.enabled);
        assert_eq!(c.outbox.dir, PathBuf::from("/data/ob"));
        assert_eq!(
            c.outbox.fsync,
            FsyncPolicy::Interval(Duration::from_millis(100))
        );
        assert_eq!((c.outbox.max_bytes, c.outbox.segment_bytes), (65536, 65536));
        let c = Config::from_toml_and_env(BASE, |n| {
            (n == "EVENTS_OUTBOX_ENABLED").then(|| "true".into())
        })
        .unwrap();
        assert!(c.outbox.enabled);
    }

    #[test]
    fn bad_values_name_their_key() {
        let text = format!(
            "{BASE}[outbox]\nenabled = true\ndir = \"/tmp/ob\"\nfsync = \"sometimes\"\n\
             max_bytes = 10000\nsegment_bytes = 20000\n"
        );
        let e = Config::from_toml_and_env(&text, |_| None)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("outbox.dir: /tmp/ob is under /tmp, which many systems empty"),
            "{e}"
        );
        assert!(
            e.contains("outbox.fsync: `sometimes` is neither `always` nor a group commit"),
            "{e}"
        );
        assert!(
            e.contains("outbox.segment_bytes: 20000 is over outbox.max_bytes (10000)"),
            "{e}"
        );
    }
}
