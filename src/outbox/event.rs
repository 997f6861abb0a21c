//! What one outbox record holds: an event to publish, as JSON. The id is fixed when the event
//! is queued, so a drain that runs twice publishes the same id twice and the id guard of the
//! idempotent publish keeps one.

use serde::{Deserialize, Serialize};

use crate::ops::publish::{NewEvent, random_uuid};

/// The JSON of an outbox record (field names are the format: never rename one).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Queued {
    #[serde(rename = "type")]
    event_type: String,
    data: String,
    id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    correlation_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    source: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    traceparent: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    datacontenttype: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    subject: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    dataschema: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    extensions: Vec<(String, String)>,
}

/// The record bytes of `event`, giving it a random UUID v4 id first when it has none (the
/// id is written back into `event`, so the caller can report it).
pub fn encode(event: &mut NewEvent) -> Vec<u8> {
    let id = event.id.get_or_insert_with(random_uuid).clone();
    let queued = Queued {
        event_type: event.event_type.clone(),
        data: event.data.clone(),
        id,
        correlation_id: event.correlation_id.clone(),
        source: event.source.clone(),
        time: event.time.clone(),
        traceparent: event.traceparent.clone(),
        datacontenttype: event.datacontenttype.clone(),
        subject: event.subject.clone(),
        dataschema: event.dataschema.clone(),
        extensions: event.extensions.clone(),
    };
    serde_json::to_vec(&queued).expect("strings serialize")
}

/// Queues `event` in `log` (giving it an id first when it has none, see [`encode`]); returns
/// its sequence once it is as durable as the log's fsync policy says. The publish fallback's
/// one call into the outbox.
///
/// # Errors
/// As [`super::Log::append`]: full, disk full, read-only, stopped; nothing queued is changed.
pub fn append_event(
    log: &mut super::Log,
    event: &mut NewEvent,
) -> Result<u64, super::error::OutboxError> {
    log.append(&encode(event))
}

/// The event a record holds.
///
/// # Errors
/// The bytes are not an outbox event (serde's message).
pub fn decode(bytes: &[u8]) -> Result<NewEvent, String> {
    let q: Queued = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    Ok(NewEvent {
        event_type: q.event_type,
        data: q.data,
        id: Some(q.id),
        correlation_id: q.correlation_id,
        source: q.source,
        time: q.time,
        traceparent: q.traceparent,
        datacontenttype: q.datacontenttype,
        subject: q.subject,
        dataschema: q.dataschema,
        extensions: q.extensions,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_keeps_every_field_and_fixes_the_id() {
        let mut e = NewEvent {
            event_type: "booking.created".into(),
            data: r#"{"b":1}"#.into(),
            correlation_id: Some("c-1".into()),
            extensions: vec![("tenant".into(), "t1".into())],
            ..Default::default()
        };
        let bytes = encode(&mut e);
        let id = e.id.clone().expect("an id was given");
        assert_eq!(id.len(), 36);
        let back = decode(&bytes).unwrap();
        assert_eq!(back.id.as_deref(), Some(id.as_str()));
        assert_eq!(back.event_type, "booking.created");
        assert_eq!(back.correlation_id.as_deref(), Some("c-1"));
        assert_eq!(back.extensions, e.extensions);
        assert!(decode(b"{}").unwrap_err().contains("missing field"));
    }
}
