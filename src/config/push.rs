//! `[push]`: real-time push to apps (README "Push to apps"): the channels consumed events are
//! projected onto, their history caps, and the listener apps reach.

use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;

use super::parse::{Checker, DurationRule, IntRule};

/// `[push]` as the file holds it.
#[derive(Debug, Deserialize, Default)]
#[cfg_attr(test, derive(serde::Serialize))]
#[serde(deny_unknown_fields)]
pub(super) struct RawPush {
    pub listen: Option<String>,
    pub group: Option<String>,
    pub history_max_len: Option<i64>,
    pub history_max_age: Option<String>,
    pub max_channels: Option<i64>,
    pub replay_max: Option<i64>,
    pub client_buffer: Option<i64>,
    pub heartbeat: Option<String>,
    pub device_ttl: Option<String>,
    pub max_devices: Option<i64>,
    pub device_scan_interval: Option<String>,
    #[serde(default)]
    pub channels: Vec<RawChannelRule>,
}

/// One `[[push.channels]]` rule as the file holds it.
#[derive(Debug, Deserialize, Default)]
#[cfg_attr(test, derive(serde::Serialize))]
#[serde(deny_unknown_fields)]
pub(super) struct RawChannelRule {
    pub types: Vec<String>,
    pub channel: String,
}

/// One projection rule: events of `types` go to the channel `channel` renders to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelRule {
    /// Exact types or globs (`booking.*`).
    pub types: Vec<String>,
    /// The channel template: literal text and `{id}` `{type}` `{subject}` `{source}`
    /// `{data.<path>}` fields.
    pub channel: String,
}

/// `[push]`: channels, history caps and listener.
#[derive(Debug, Clone)]
pub struct PushConfig {
    /// A listener that serves only push (`push.listen`); push is on the API listener too.
    pub listen: Option<SocketAddr>,
    /// The internal consumer group that projects events onto channels (`push.group`).
    pub group: String,
    /// Hard cap of entries per channel history (`push.history_max_len`).
    pub history_max_len: u64,
    /// Age cap of a channel's entries (`push.history_max_age`).
    pub history_max_age: Duration,
    /// Most channels with a history at once; the least recently appended go first.
    pub max_channels: u64,
    /// Most messages one resume replays per channel; more is `over_cap`.
    pub replay_max: u64,
    /// Messages buffered per connected client before it is cut as slow.
    pub client_buffer: usize,
    /// Interval of SSE heartbeat comments and WebSocket pings.
    pub heartbeat: Duration,
    /// How long a device's acknowledged positions are kept after its last acknowledgement.
    pub device_ttl: Duration,
    /// Most devices with kept positions; past it, the least recently acknowledging are
    /// dropped.
    pub max_devices: u64,
    /// How often the device metrics are sampled.
    pub device_scan_interval: Duration,
    /// The projection rules, in file order.
    pub channels: Vec<ChannelRule>,
}

impl Default for PushConfig {
    fn default() -> Self {
        PushConfig {
            listen: None,
            group: "push".to_string(),
            history_max_len: HISTORY_MAX_LEN.default as u64,
            history_max_age: HISTORY_MAX_AGE.default,
            max_channels: MAX_CHANNELS.default as u64,
            replay_max: REPLAY_MAX.default as u64,
            client_buffer: CLIENT_BUFFER.default as usize,
            heartbeat: HEARTBEAT.default,
            device_ttl: DEVICE_TTL.default,
            max_devices: MAX_DEVICES.default as u64,
            device_scan_interval: DEVICE_SCAN.default,
            channels: Vec::new(),
        }
    }
}

impl PushConfig {
    /// Whether events are projected at all (some `[[push.channels]]` rule exists).
    pub fn projects(&self) -> bool {
        !self.channels.is_empty()
    }
}

const HISTORY_MAX_LEN: IntRule = IntRule::new(1000, 1, 1_000_000);
const HISTORY_MAX_AGE: DurationRule =
    DurationRule::new(Duration::from_secs(7 * 86_400), Duration::from_secs(1));
/// `push.max_devices`: devices with kept positions (about 200 B each with one channel).
const MAX_DEVICES: IntRule = IntRule::new(100_000, 1, 1_000_000_000);

const MAX_CHANNELS: IntRule = IntRule::new(10_000, 1, 100_000_000);
const REPLAY_MAX: IntRule = IntRule::new(1000, 1, 100_000);
const CLIENT_BUFFER: IntRule = IntRule::new(1024, 1, 1_000_000);
const HEARTBEAT: DurationRule =
    DurationRule::new(Duration::from_secs(15), Duration::from_millis(100));

const DEVICE_TTL: DurationRule =
    DurationRule::new(Duration::from_secs(30 * 86_400), Duration::from_secs(1));

const DEVICE_SCAN: DurationRule =
    DurationRule::new(Duration::from_secs(30), Duration::from_millis(100));

/// Validates `[push]`, naming each bad key (`push.history_max_len: ...`).
pub(super) fn push(c: &mut Checker, raw: &RawPush) -> PushConfig {
    let listen = raw.listen.as_deref().and_then(|l| match l.parse() {
        Ok(a) => Some(a),
        Err(_) => {
            c.push(format!(
                "push.listen: `{l}` is not an address such as 0.0.0.0:9091"
            ));
            None
        }
    });
    let group = raw.group.clone().unwrap_or_else(|| "push".to_string());
    if !crate::model::keys::is_valid_name(&group) {
        c.push(format!("push.group: `{group}` must match [A-Za-z0-9_.-]+"));
    }
    let age = raw.history_max_age.as_deref();
    let hb = raw.heartbeat.as_deref();
    PushConfig {
        listen,
        history_max_len: c.int("push.history_max_len", raw.history_max_len, HISTORY_MAX_LEN) as u64,
        history_max_age: c.duration("push.history_max_age", age, HISTORY_MAX_AGE),
        max_channels: c.int("push.max_channels", raw.max_channels, MAX_CHANNELS) as u64,
        replay_max: c.int("push.replay_max", raw.replay_max, REPLAY_MAX) as u64,
        client_buffer: c.int("push.client_buffer", raw.client_buffer, CLIENT_BUFFER) as usize,
        heartbeat: c.duration("push.heartbeat", hb, HEARTBEAT),
        device_ttl: c.duration("push.device_ttl", raw.device_ttl.as_deref(), DEVICE_TTL),
        max_devices: c.int("push.max_devices", raw.max_devices, MAX_DEVICES) as u64,
        device_scan_interval: c.duration(
            "push.device_scan_interval",
            raw.device_scan_interval.as_deref(),
            DEVICE_SCAN,
        ),
        channels: rules(c, &raw.channels),
        group,
    }
}

/// The `[[push.channels]]` rules, each type pattern and template checked.
fn rules(c: &mut Checker, raw: &[RawChannelRule]) -> Vec<ChannelRule> {
    let mut out = Vec::new();
    for (i, r) in raw.iter().enumerate() {
        let key = format!("push.channels[{i}]");
        if r.types.is_empty() {
            c.push(format!("{key}.types: must list at least one type"));
        }
        for t in &r.types {
            if !crate::model::keys::is_valid_pattern(t) {
                c.push(format!(
                    "{key}.types: `{t}` is not a type or a glob such as booking.*"
                ));
            }
        }
        if let Err(e) = crate::push::rules::Template::parse(&r.channel) {
            c.push(format!("{key}.channel: {e}"));
        }
        out.push(ChannelRule {
            types: r.types.clone(),
            channel: r.channel.clone(),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::config::Config;

    #[test]
    fn every_bad_push_key_is_named() {
        let text = "[push]\nlisten = \"nope\"\nhistory_max_len = 0\ngroup = \"default\"\n\
                    heartbeat = \"5\"\n[[push.channels]]\ntypes = [\"Booking\"]\n\
                    channel = \"user:{data.}\"\n[[push.channels]]\ntypes = []\nchannel = \"a b\"\n";
        let e = Config::from_toml_and_env(text, |_| None).unwrap_err().0;
        assert_eq!(
            e,
            [
                "push.listen: `nope` is not an address such as 0.0.0.0:9091",
                "push.history_max_len: 0 is out of range (1..=1000000)",
                "push.heartbeat: `5` has no unit (use ms, s, m, h or d); e.g. heartbeat = \"15s\"",
                "push.channels[0].types: `Booking` is not a type or a glob such as booking.*",
                "push.channels[0].channel: `{data.}` is no field; use {id}, {type}, {subject}, {source} or {data.<path>}",
                "push.channels[1].types: must list at least one type",
                "push.channels[1].channel: `a b`: channel names take no spaces, control characters, `*` or `}`",
                "push.group: `default` is the worker's own group; name another",
            ]
        );
    }

    #[test]
    fn push_defaults_and_variables() {
        let text = "[[push.channels]]\ntypes = [\"booking.*\"]\nchannel = \"type:{type}\"\n";
        let c = Config::from_toml_and_env(text, |_| None).unwrap();
        assert!(c.push.projects());
        assert_eq!(c.push.group, "push");
        assert_eq!(c.push.history_max_len, 1000);
        assert_eq!(c.push.history_max_age, Duration::from_secs(7 * 86_400));
        assert_eq!(c.push.max_channels, 10_000);
        assert_eq!(c.push.replay_max, 1000);
        assert_eq!(c.push.listen, None);
        let c = Config::from_toml_and_env(text, |n| {
            (n == "EVENTS_PUSH_HISTORY_MAX_LEN").then(|| "50".to_string())
        })
        .unwrap();
        assert_eq!(c.push.history_max_len, 50);
        assert!(
            !Config::from_toml_and_env("", |_| None)
                .unwrap()
                .push
                .projects()
        );
    }
}
