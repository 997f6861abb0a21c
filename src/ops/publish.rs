//! Appending one event to its type stream, with the fields of the wire format. Used by
//! `event-worker publish`, the HTTP publish endpoints, and embedding apps through
//! [`crate::Publisher`].
//!
//! A publish that carries its own `id` is idempotent: it goes through the id guard of its
//! type (`Keys::dedup`, `scripts/publish_once.lua`), so a repeat of the same (type, id)
//! within `[publish] dedup_window` (and the newest `dedup_max_ids` ids of the type) writes
//! nothing and returns the original entry as a duplicate. Without an id a new UUID is made
//! and the event is appended with a plain XADD (no guard: nobody can repeat that id).

use rand::Rng;

use crate::config::PublishConfig;
use crate::model::attributes::{self, FieldKind};
use crate::model::envelope::{MAX_DATA_BYTES, MAX_FIELDS, field, lookup, truncate};
use crate::model::keys::{self, Keys};
use crate::model::time::{now_ms, rfc3339};
pub use crate::redis::replicas::Replication;
use crate::redis::store::{Store, StoreError};
use crate::redis::streams::{Appended, XaddOnce};

/// Why an event was not published.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// The type is not valid or is reserved.
    #[error(
        "type `{0}` is not a valid event type ([a-z0-9_-] parts separated by dots; not a reserved word)"
    )]
    BadType(String),
    /// `data` is not JSON.
    #[error("data is not valid JSON: {0}")]
    BadData(String),
    /// `data` is over the size limit or nests too deep.
    #[error("data {0}")]
    DataLimit(String),
    /// The id is empty or longer than 256 characters.
    #[error("id must be 1 to 256 characters")]
    BadId,
    /// An attribute value that would make the delivered event invalid (`time` not RFC 3339,
    /// empty `source`...), or an extension that cannot be published.
    #[error("{0}")]
    BadAttribute(String),
    /// Redis refused or failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// `outbox.enabled` and its directory cannot be opened (the message names it).
    #[error("{0}")]
    Outbox(String),
}

/// One event to publish.
#[derive(Debug, Clone, Default)]
pub struct NewEvent {
    /// Event type.
    pub event_type: String,
    /// JSON text.
    pub data: String,
    /// Producer id; a random UUID v4 when `None`.
    pub id: Option<String>,
    /// Correlation id.
    pub correlation_id: Option<String>,
    /// `source` attribute (a URI reference); `event-worker` when `None`.
    pub source: Option<String>,
    /// `time` (RFC 3339); the time of publishing when `None`.
    pub time: Option<String>,
    /// W3C `traceparent`.
    pub traceparent: Option<String>,
    /// `datacontenttype` (a media type); handlers get `application/json` when `None`.
    pub datacontenttype: Option<String>,
    /// `subject`.
    pub subject: Option<String>,
    /// `dataschema` (an absolute URI).
    pub dataschema: Option<String>,
    /// Extension attributes: names of 1 to 20 characters of `a-z0-9`, not defined by the
    /// wire format and not the worker's own (`attempt`), string values.
    pub extensions: Vec<(String, String)>,
}

/// A published event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    /// Stream entry id: the new entry's, or for a duplicate the original entry's (empty
    /// when the stream no longer holds it, e.g. trimmed by `stream_retention`).
    pub entry_id: String,
    /// Event id.
    pub id: String,
    /// Stream key.
    pub stream: String,
    /// True when the (type, id) had been published within the dedup window: nothing was
    /// written this time.
    pub duplicate: bool,
    /// With `[redis] wait_replicas` > 0, how many replicas acknowledged the new entry within
    /// `wait_timeout` (README "Redis Cluster"); `None` when waiting is off or for a duplicate.
    /// The entry is on the master either way; fewer than wanted means a failover now could
    /// lose it.
    pub replication: Option<Replication>,
}

/// Validates `event` and XADDs it to `events:<env>:<type>`; an event with its own `id`
/// goes through the type's id guard (bounded by `guard`), so a repeat writes nothing.
///
/// # Errors
/// Invalid type, id or data (before any Redis call), or a Redis failure.
pub async fn publish(
    store: &Store,
    keys: &Keys,
    guard: &PublishConfig,
    event: NewEvent,
) -> Result<Published, PublishError> {
    let own_id = event.id.is_some();
    let fields = fields_of(event)?;
    let (id, event_type) = (fields[0].1.clone(), fields[1].1.clone());
    let stream = keys.stream(&event_type);
    let (appended, replication) = if own_id {
        let once = XaddOnce {
            stream: &stream,
            guard: &keys.dedup(&event_type),
            id: &id,
            window: guard.dedup_window,
            max_ids: guard.dedup_max_ids,
            fields: &fields,
        };
        store.xadd_once_waited(&once).await?
    } else {
        let (id, replication) = store.xadd_waited(&stream, &fields).await?;
        (Appended::New(id), replication)
    };
    let (entry_id, duplicate) = match appended {
        Appended::New(entry_id) => (entry_id, false),
        Appended::Duplicate(original) => (original.unwrap_or_default(), true),
    };
    if !duplicate {
        crate::ops::coordination::announce_type(store, keys, &event_type).await;
    }
    Ok(Published {
        entry_id,
        id,
        stream,
        duplicate,
        replication,
    })
}

/// Publishes `events` in order with [`publish`]; one result per event. An invalid event is
/// refused alone; after a Redis failure the rest are not attempted and carry a copy of the
/// failure (they may be resent with the same ids).
pub async fn publish_batch(
    store: &Store,
    keys: &Keys,
    guard: &PublishConfig,
    events: Vec<NewEvent>,
) -> Vec<Result<Published, PublishError>> {
    let mut results = Vec::with_capacity(events.len());
    let mut failed: Option<StoreError> = None;
    for event in events {
        if let Some(e) = &failed {
            results.push(Err(PublishError::Store(e.clone())));
            continue;
        }
        let result = publish(store, keys, guard, event).await;
        if let Err(PublishError::Store(e)) = &result {
            failed = Some(e.clone());
        }
        results.push(result);
    }
    results
}

/// Checks `event` as [`publish`] does before any Redis call (the outbox validates an event
/// before queueing it, so a drain never meets an event Redis would refuse).
///
/// # Errors
/// Invalid type, id, data or attribute.
pub fn validate(event: &NewEvent) -> Result<(), PublishError> {
    fields_of(event.clone()).map(|_| ())
}

/// Validates `event` and returns its stream fields: `id`, `type`, `data` first.
fn fields_of(event: NewEvent) -> Result<Vec<(String, String)>, PublishError> {
    if !keys::is_valid_type(&event.event_type) {
        return Err(PublishError::BadType(truncate(&event.event_type, 100)));
    }
    if event.data.len() > MAX_DATA_BYTES {
        return Err(PublishError::DataLimit(format!(
            "is {} bytes, over the {MAX_DATA_BYTES} limit",
            event.data.len()
        )));
    }
    attributes::check_depth(&event.data).map_err(PublishError::DataLimit)?;
    // A full parse (safe: the depth is bounded above) also refuses numbers out of range.
    serde_json::from_str::<serde_json::Value>(&event.data)
        .map_err(|e| PublishError::BadData(e.to_string()))?;
    let id = event.id.unwrap_or_else(random_uuid);
    if id.is_empty() || id.len() > 256 {
        return Err(PublishError::BadId);
    }
    let mut fields = vec![
        (field::ID.to_string(), id),
        (field::TYPE.to_string(), event.event_type),
        (field::DATA.to_string(), event.data),
        (
            field::SOURCE.to_string(),
            event.source.unwrap_or_else(|| "event-worker".into()),
        ),
        (
            field::TIME.to_string(),
            event.time.unwrap_or_else(|| rfc3339(now_ms())),
        ),
        (field::SPECVERSION.to_string(), "1.0".into()),
    ];
    let optional = [
        (field::CORRELATIONID, event.correlation_id),
        (field::TRACEPARENT, event.traceparent),
        (field::DATACONTENTTYPE, event.datacontenttype),
        (field::SUBJECT, event.subject),
        (field::DATASCHEMA, event.dataschema),
    ];
    for (name, value) in optional {
        if let Some(v) = value {
            fields.push((name.to_string(), v));
        }
    }
    for (name, value) in &fields[3..] {
        attributes::check_value(name, value)
            .map_err(|e| PublishError::BadAttribute(format!("{name}: {e}")))?;
    }
    if let Some(c) = lookup(&fields, field::CORRELATIONID)
        && c.len() > 256
    {
        return Err(PublishError::BadAttribute(
            "correlationid: at most 256 characters".into(),
        ));
    }
    check_extensions(&event.extensions)?;
    fields.extend(event.extensions);
    Ok(fields)
}

/// Refuses extensions with invalid, reserved, duplicate or wire-format names, naming them.
fn check_extensions(extensions: &[(String, String)]) -> Result<(), PublishError> {
    let mut seen = std::collections::HashSet::new();
    for (name, _) in extensions {
        let shown = truncate(name, 64);
        let why = match attributes::classify(name) {
            FieldKind::Extension if seen.insert(name.as_str()) => continue,
            FieldKind::Extension => "appears more than once",
            FieldKind::Known => "is a wire-format attribute, not an extension",
            FieldKind::Worker => "is written by the worker and cannot be published",
            FieldKind::Reserved => "is a reserved name",
            FieldKind::Invalid => {
                "is not a valid extension name (1 to 20 characters of a-z and 0-9)"
            }
        };
        return Err(PublishError::BadAttribute(format!(
            "extension `{shown}` {why}"
        )));
    }
    if extensions.len() > MAX_FIELDS - 16 {
        return Err(PublishError::BadAttribute(format!(
            "{} extensions, over the {} limit",
            extensions.len(),
            MAX_FIELDS - 16
        )));
    }
    Ok(())
}

/// A random UUID v4 as text.
pub fn random_uuid() -> String {
    let mut b: [u8; 16] = rand::thread_rng().r#gen();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(e: NewEvent) -> String {
        fields_of(e).unwrap_err().to_string()
    }

    #[test]
    fn every_value_is_checked_before_any_write() {
        let ok = || NewEvent {
            event_type: "a.b".into(),
            data: "{}".into(),
            ..NewEvent::default()
        };
        let cases = [
            (
                NewEvent {
                    data: "1e999999".into(),
                    ..ok()
                },
                "data is not valid JSON: number out of range",
            ),
            (
                NewEvent {
                    data: format!("{}{}", "[".repeat(65), "]".repeat(65)),
                    ..ok()
                },
                "data nests 65 levels of arrays/objects, over the 64 limit",
            ),
            (
                NewEvent {
                    time: Some("now".into()),
                    ..ok()
                },
                "time: `now` is not an RFC 3339 timestamp",
            ),
            (
                NewEvent {
                    source: Some(String::new()),
                    ..ok()
                },
                "source: is empty",
            ),
            (
                NewEvent {
                    traceparent: Some("x".into()),
                    ..ok()
                },
                "traceparent: `x` is not W3C trace context",
            ),
            (
                NewEvent {
                    extensions: vec![("attempt".into(), "1".into())],
                    ..ok()
                },
                "extension `attempt` is written by the worker",
            ),
            (
                NewEvent {
                    extensions: vec![("Tenant".into(), "1".into())],
                    ..ok()
                },
                "extension `Tenant` is not a valid extension name",
            ),
            (
                NewEvent {
                    extensions: vec![("source".into(), "1".into())],
                    ..ok()
                },
                "extension `source` is a wire-format attribute",
            ),
        ];
        for (event, message) in cases {
            let got = refused(event);
            assert!(got.starts_with(message), "{got} is not {message}");
        }
        let fields = fields_of(NewEvent {
            extensions: vec![("tenant".into(), "acme".into())],
            ..ok()
        })
        .unwrap();
        assert_eq!(lookup(&fields, "tenant"), Some("acme"));
        assert_eq!(lookup(&fields, "specversion"), Some("1.0"));
    }

    #[test]
    fn uuids_look_like_v4() {
        let u = super::random_uuid();
        assert_eq!(u.len(), 36);
        assert_eq!(&u[14..15], "4");
        assert_ne!(u, super::random_uuid());
    }
}
