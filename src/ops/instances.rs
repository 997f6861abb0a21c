//! The instances of an env: live consumers from their heartbeat keys
//! (`events:<env>:heartbeat:<group>:<consumer>`: host, pid, version, start, last beat) and
//! every consumer the groups know (XINFO CONSUMERS on the env's type streams and redeliver
//! streams: pending entries and idle time per stream). A consumer without a live heartbeat
//! is listed too (`live: false`): its pending entries wait for the reclaimer.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::model::keys::Keys;
use crate::redis::store::{Store, StoreError};

/// Most heartbeat keys and streams read.
const MAX_KEYS: usize = 10_000;

/// One consumer of a group.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Instance {
    /// Consumer group.
    pub group: String,
    /// Consumer name (default `hostname-pid`).
    pub consumer: String,
    /// Whether its heartbeat key is alive.
    pub live: bool,
    /// Host name, from the heartbeat.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// Process id, from the heartbeat.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pid: Option<u64>,
    /// event-worker version, from the heartbeat.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// When the process started (RFC 3339), from the heartbeat.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub started: Option<String>,
    /// When it last beat (RFC 3339).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_beat: Option<String>,
    /// Entries delivered to it and not acknowledged, over every stream.
    pub pending: u64,
    /// Its figures per stream (XINFO CONSUMERS), by stream key.
    pub streams: Vec<ConsumerStream>,
}

/// A consumer's figures on one stream.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct ConsumerStream {
    /// Stream key.
    pub stream: String,
    /// Pending entries (XPENDING per consumer).
    pub pending: u64,
    /// Milliseconds since it last read or claimed.
    pub idle_ms: u64,
}

/// Live instances first, then consumers without a heartbeat; each sorted by group and name.
///
/// # Errors
/// Redis errors.
pub async fn list(store: &Store, keys: &Keys) -> Result<Vec<Instance>, StoreError> {
    let mut by_name: BTreeMap<(String, String), Instance> = BTreeMap::new();
    let prefix = format!("{}heartbeat:", keys.prefix());
    for key in store.scan_keys(&format!("{prefix}*"), MAX_KEYS).await? {
        let Some((group, consumer)) = key.strip_prefix(&prefix).and_then(|r| r.split_once(':'))
        else {
            continue;
        };
        let Some(value) = store.get_string(&key).await? else {
            continue; // expired between SCAN and GET
        };
        let beat: serde_json::Value = serde_json::from_str(&value).unwrap_or_default();
        let text = |k: &str| beat.get(k).and_then(|v| v.as_str()).map(str::to_string);
        by_name.insert(
            (group.to_string(), consumer.to_string()),
            Instance {
                group: group.to_string(),
                consumer: consumer.to_string(),
                live: true,
                host: text("host"),
                pid: beat.get("pid").and_then(serde_json::Value::as_u64),
                version: text("version"),
                started: text("started"),
                last_beat: text("at"),
                ..Default::default()
            },
        );
    }
    let redeliver = keys.redeliver("");
    let keep = |k: &str| keys.type_of_stream(k).is_some() || k.starts_with(redeliver.as_str());
    for stream in store
        .scan_streams(&format!("{}*", keys.prefix()), MAX_KEYS, &keep)
        .await?
    {
        for (group, _) in store.groups(&stream).await? {
            for (consumer, pending, idle_ms) in store.consumers(&stream, &group).await? {
                let i = by_name
                    .entry((group.clone(), consumer.clone()))
                    .or_insert_with(|| Instance {
                        group: group.clone(),
                        consumer,
                        ..Default::default()
                    });
                i.pending += pending;
                i.streams.push(ConsumerStream {
                    stream: stream.clone(),
                    pending,
                    idle_ms,
                });
            }
        }
    }
    let (mut live, dead): (Vec<Instance>, Vec<Instance>) =
        by_name.into_values().partition(|i| i.live);
    live.extend(dead);
    Ok(live)
}
