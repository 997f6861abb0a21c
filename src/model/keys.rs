//! Every Redis key and channel name of one environment, as the README documents them (wire format, DLQ, retries).
//!
//! No other module builds key strings: routing a name through here is what keeps a worker
//! inside `events:<env>:*` (and inside an ACL such as `~events:staging:*`).

/// Words that may not be used as event types because they name the env's own keys.
pub const RESERVED_TYPES: &[&str] = &[
    "retry",
    "redeliver",
    "dlq",
    "history",
    "coordination",
    "migrations",
    "heartbeat",
    "dedup",
    "push",
    "outbox",
];

/// Key builder for one environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    /// Keys of environment `env` (already validated).
    pub fn new(env: &str) -> Self {
        Keys {
            prefix: format!("events:{env}:"),
        }
    }

    /// `events:<env>:`, the prefix of every key of this environment.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// `events:<env>:<type>`: the stream of one event type.
    pub fn stream(&self, event_type: &str) -> String {
        format!("{}{event_type}", self.prefix)
    }

    /// `events:<env>:retry:<group>`: delayed retries of one group, scored by due time (ms).
    pub fn retry(&self, group: &str) -> String {
        format!("{}retry:{group}", self.prefix)
    }

    /// `events:<env>:redeliver:<group>`: due retries and replays for one group only.
    pub fn redeliver(&self, group: &str) -> String {
        format!("{}redeliver:{group}", self.prefix)
    }

    /// `events:<env>:dlq`: dead-lettered events.
    pub fn dlq(&self) -> String {
        format!("{}dlq", self.prefix)
    }

    /// `events:<env>:history`: the lifecycle audit trail.
    pub fn history(&self) -> String {
        format!("{}history", self.prefix)
    }

    /// `events:<env>:coordination`: the pub/sub channel between instances.
    pub fn coordination(&self) -> String {
        format!("{}coordination", self.prefix)
    }

    /// `events:<env>:migrations`: which migration files were applied.
    pub fn migrations(&self) -> String {
        format!("{}migrations", self.prefix)
    }

    /// `events:<env>:heartbeat:<group>:<consumer>`: a live consumer's heartbeat.
    pub fn heartbeat(&self, group: &str, consumer: &str) -> String {
        format!("{}heartbeat:{group}:{consumer}", self.prefix)
    }

    /// `events:<env>:dedup:{events:<env>:<type>}`: the id guard of one type stream (a sorted
    /// set event id -> entry time in ms), hash-tagged with the stream key so that both share
    /// one Redis Cluster slot and the publish script can check, add and trim it atomically
    /// with the XADD. `dedup` is a reserved word, so no type stream is named like it.
    pub fn dedup(&self, event_type: &str) -> String {
        format!("{}dedup:{{{}}}", self.prefix, self.stream(event_type))
    }

    /// `events:<env>:push`: the pub/sub channel of push notifications (one per env).
    pub fn push_notify(&self) -> String {
        format!("{}push", self.prefix)
    }

    /// `events:<env>:push:{<channel>}`: the history stream of one push channel. Its
    /// companions ([`Keys::push_ids`], [`Keys::push_meta`]) share the `{<channel>}` hash tag,
    /// so one script touches one Redis Cluster slot.
    pub fn push_stream(&self, channel: &str) -> String {
        format!("{}push:{{{channel}}}", self.prefix)
    }

    /// `events:<env>:push:{<channel>}:ids`: the event ids appended to a channel (dedup).
    pub fn push_ids(&self, channel: &str) -> String {
        format!("{}push:{{{channel}}}:ids", self.prefix)
    }

    /// `events:<env>:push:{<channel>}:meta`: a channel's epoch and last position.
    pub fn push_meta(&self, channel: &str) -> String {
        format!("{}push:{{{channel}}}:meta", self.prefix)
    }

    /// `events:<env>:push:index`: every channel with a history, scored by its last append
    /// (ms), for the `push.max_channels` budget.
    pub fn push_index(&self) -> String {
        format!("{}push:index", self.prefix)
    }

    /// `events:<env>:push:device:{<device>}`: a device's acknowledged position per channel.
    pub fn push_device(&self, device: &str) -> String {
        format!("{}push:device:{{{device}}}", self.prefix)
    }

    /// `events:<env>:push:projector`: the lease of the one instance that projects (its
    /// holder id; see README "Push to apps").
    pub fn push_projector(&self) -> String {
        format!("{}push:projector", self.prefix)
    }

    /// `events:<env>:push:devices`: devices by their last acknowledgement (ms).
    pub fn push_devices(&self) -> String {
        format!("{}push:devices", self.prefix)
    }

    /// The event type of a type-stream key of this env, or `None` for any other key
    /// (another env, a reserved key, or a name that is not a valid type).
    pub fn type_of_stream<'a>(&self, key: &'a str) -> Option<&'a str> {
        let rest = key.strip_prefix(self.prefix.as_str())?;
        is_valid_type(rest).then_some(rest)
    }
}

/// Whether `t` is a valid event type: `[a-z0-9_-]+(\.[a-z0-9_-]+)*` and not a reserved word.
pub fn is_valid_type(t: &str) -> bool {
    // One pass over the bytes (checked once per handled event): every byte allowed, no
    // empty part (no leading, trailing or doubled dot).
    let mut previous = b'.';
    let well_formed = t.len() <= 200
        && t.bytes().all(|b| {
            let ok = match b {
                b'.' => previous != b'.',
                b'a'..=b'z' | b'0'..=b'9' | b'_' | b'-' => true,
                _ => false,
            };
            previous = b;
            ok
        })
        && previous != b'.';
    well_formed && !RESERVED_TYPES.contains(&t)
}

/// Whether `env` is a valid environment name: `[a-z0-9][a-z0-9-]*`.
pub fn is_valid_env(env: &str) -> bool {
    let mut bytes = env.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_lowercase() || b.is_ascii_digit())
        && bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && env.len() <= 64
}

/// Whether `name` is usable as a group or consumer name inside a key: `[A-Za-z0-9_.-]+`.
pub fn is_valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
}

/// Whether `pattern` (an exact type or a glob with `*`) matches `event_type`.
/// `*` matches any run of characters, dots included (`booking.*` matches `booking.a.b`).
pub fn glob_matches(pattern: &str, event_type: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == event_type;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !event_type.starts_with(first) || event_type.len() < first.len() + last.len() {
        return false;
    }
    let mut rest = &event_type[first.len()..];
    for middle in &parts[1..parts.len() - 1] {
        match rest.find(middle) {
            Some(i) => rest = &rest[i + middle.len()..],
            None => return false,
        }
    }
    rest.ends_with(last)
}

/// Whether `pattern` is a valid route pattern: a valid type, or a glob whose non-`*`
/// characters are allowed in types.
pub fn is_valid_pattern(pattern: &str) -> bool {
    if !pattern.contains('*') {
        return is_valid_type(pattern);
    }
    !pattern.is_empty()
        && pattern.len() <= 200
        && pattern.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'-' | b'.' | b'*')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_follow_the_design_table() {
        let k = Keys::new("staging");
        assert_eq!(
            k.stream("booking.created"),
            "events:staging:booking.created"
        );
        assert_eq!(k.retry("notif"), "events:staging:retry:notif");
        assert_eq!(k.redeliver("notif"), "events:staging:redeliver:notif");
        assert_eq!(k.dlq(), "events:staging:dlq");
        assert_eq!(k.heartbeat("g", "c-1"), "events:staging:heartbeat:g:c-1");
        assert_eq!(k.migrations(), "events:staging:migrations");
        assert_eq!(
            k.dedup("booking.created"),
            "events:staging:dedup:{events:staging:booking.created}"
        );
        assert_eq!(k.push_notify(), "events:staging:push");
        assert_eq!(k.push_stream("user:7"), "events:staging:push:{user:7}");
        assert_eq!(k.push_ids("user:7"), "events:staging:push:{user:7}:ids");
        assert_eq!(k.push_meta("user:7"), "events:staging:push:{user:7}:meta");
        assert_eq!(k.push_index(), "events:staging:push:index");
        assert_eq!(k.push_device("p-1"), "events:staging:push:device:{p-1}");
    }

    #[test]
    fn a_type_and_its_id_guard_share_one_cluster_slot() {
        let k = Keys::new("prod");
        for t in ["booking.created", "a", "user_signed-up.v2"] {
            let slot = |key: &str| fred::util::redis_keyslot(key.as_bytes());
            assert_eq!(slot(&k.stream(t)), slot(&k.dedup(t)), "{t}");
        }
    }

    #[test]
    fn type_validation_refuses_reserved_and_odd_names() {
        let longest = "a".repeat(200);
        for ok in ["booking.created", "a", "user_signed-up.v2", "0.9", &longest] {
            assert!(is_valid_type(ok), "{ok}");
        }
        for bad in [
            "dlq",
            "retry",
            "dedup",
            "push",
            "outbox",
            "",
            "a..b",
            ".a",
            "a.",
            "A",
            "a:b",
            "{x}",
            "a*",
            "../x",
            ".",
            "a.b.",
            "é",
            "a b",
            &"a".repeat(201),
        ] {
            assert!(!is_valid_type(bad), "{bad}");
        }
    }

    #[test]
    fn stream_keys_map_back_to_types_only_within_the_env() {
        let k = Keys::new("prod");
        assert_eq!(
            k.type_of_stream("events:prod:booking.created"),
            Some("booking.created")
        );
        assert_eq!(k.type_of_stream("events:prod:dlq"), None);
        assert_eq!(k.type_of_stream("events:prod:dedup"), None);
        assert_eq!(k.type_of_stream(&k.dedup("a.b")), None);
        assert_eq!(k.type_of_stream("events:prod:retry:g"), None);
        assert_eq!(k.type_of_stream("events:staging:booking.created"), None);
    }

    #[test]
    fn globs_match_prefixes_suffixes_and_middles() {
        assert!(glob_matches("booking.*", "booking.created"));
        assert!(glob_matches("booking.*", "booking.a.b"));
        assert!(!glob_matches("booking.*", "bookings.created"));
        assert!(glob_matches("*", "x"));
        assert!(glob_matches("*.created", "user.created"));
        assert!(glob_matches("a*b*c", "axxbyyc"));
        assert!(!glob_matches("a*b*c", "axxc"));
        assert!(glob_matches("x", "x"));
        assert!(!glob_matches("x", "xy"));
    }

    #[test]
    fn env_names() {
        assert!(is_valid_env("production"));
        assert!(is_valid_env("dev-2"));
        assert!(!is_valid_env("-dev"));
        assert!(!is_valid_env("Dev"));
        assert!(!is_valid_env("a:b"));
        assert!(!is_valid_env(""));
    }
}
