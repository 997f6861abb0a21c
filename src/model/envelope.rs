//! The wire format: decoding a stream entry into an [`Event`] (or a [`Malformed`] reason),
//! and encoding an event as CloudEvents structured JSON for HTTP handlers.
//!
//! This is the only codec. It never panics on input: every bad entry becomes a
//! [`Malformed`] with a message that says which field is wrong.

use serde_json::value::RawValue;

use crate::model::attributes::{self, FieldKind};
use crate::model::keys;
use crate::model::text::Text;
use crate::model::{json_check, json_str};

/// Largest `data` field accepted; bigger entries are dead-lettered as malformed.
pub const MAX_DATA_BYTES: usize = 1024 * 1024;

/// Most fields an entry may have; more is malformed (and keeps Lua's unpack in bounds).
pub const MAX_FIELDS: usize = 256;

/// Field names with a meaning to the worker.
pub mod field {
    /// Producer-chosen unique id.
    pub const ID: &str = "id";
    /// Event type; equals the stream's type.
    pub const TYPE: &str = "type";
    /// JSON payload.
    pub const DATA: &str = "data";
    /// Producer.
    pub const SOURCE: &str = "source";
    /// RFC 3339 occurrence time.
    pub const TIME: &str = "time";
    /// CloudEvents version.
    pub const SPECVERSION: &str = "specversion";
    /// Content type of `data`.
    pub const DATACONTENTTYPE: &str = "datacontenttype";
    /// Correlation id, carried through every hop.
    pub const CORRELATIONID: &str = "correlationid";
    /// W3C trace context.
    pub const TRACEPARENT: &str = "traceparent";
    /// Subject of the event within its source.
    pub const SUBJECT: &str = "subject";
    /// URI of the schema `data` adheres to.
    pub const DATASCHEMA: &str = "dataschema";
    /// Handler runs so far, set by the worker (0 on first delivery).
    pub const ATTEMPT: &str = "attempt";
    /// Entry id in the type stream where the event first arrived, set on retries.
    pub const ORIGIN_ENTRY_ID: &str = "origin_entry_id";
    /// When (epoch ms) a consumer of the group first read the event without a route for its
    /// type and handed it on; set by the worker, dropped once a route handles the event.
    pub const UNROUTED_SINCE: &str = "unrouted_since";

    /// The constant equal to `name` when it is one of the names above: an entry read from
    /// Redis names its fields with it, so each costs no reference count of the entry's bytes.
    pub fn known(name: &[u8]) -> Option<&'static str> {
        Some(match name {
            b"id" => ID,
            b"type" => TYPE,
            b"data" => DATA,
            b"source" => SOURCE,
            b"time" => TIME,
            b"specversion" => SPECVERSION,
            b"datacontenttype" => DATACONTENTTYPE,
            b"correlationid" => CORRELATIONID,
            b"traceparent" => TRACEPARENT,
            b"subject" => SUBJECT,
            b"dataschema" => DATASCHEMA,
            b"attempt" => ATTEMPT,
            b"origin_entry_id" => ORIGIN_ENTRY_ID,
            b"unrouted_since" => UNROUTED_SINCE,
            _ => return None,
        })
    }
}

/// One event as the handler sees it.
#[derive(Debug, Clone)]
pub struct Event {
    /// Producer-chosen id; handlers dedupe on it.
    pub id: Text,
    /// Event type, e.g. `booking.created`.
    pub event_type: Text,
    /// The `data` field, JSON text (validated).
    pub data: Text,
    /// Handler runs before this one (0 on first delivery).
    pub attempt: u32,
    /// Every field of the entry, in stream order, unknown ones included.
    pub fields: Vec<(Text, Text)>,
}

impl Event {
    /// The value of field `name`, if present.
    pub fn field(&self, name: &str) -> Option<&str> {
        lookup(&self.fields, name)
    }

    /// The correlation id, if the producer set one.
    pub fn correlation_id(&self) -> Option<&str> {
        self.field(field::CORRELATIONID)
    }

    /// The `data` payload parsed as JSON.
    ///
    /// # Errors
    /// Never for events the worker delivered (it validated `data`); kept fallible for events
    /// built by hand.
    pub fn data_json(&self) -> serde_json::Result<serde_json::Value> {
        serde_json::from_str(&self.data)
    }

    /// The W3C `traceparent`, when the producer set a valid one (an invalid one is not
    /// passed on: trace context receivers ignore it anyway).
    pub fn traceparent(&self) -> Option<&str> {
        self.field(field::TRACEPARENT)
            .filter(|t| attributes::is_traceparent(t))
    }

    /// The producer's CloudEvents extension attributes, in stream order, first occurrence of
    /// each name: fields named with 1 to 20 of `a-z0-9` that the wire format does not define
    /// (`correlationid` and `traceparent` have their own accessors) and the worker does not
    /// write. HTTP handlers receive them as top-level attributes.
    pub fn extensions(&self) -> impl Iterator<Item = (&str, &str)> {
        self.fields.iter().enumerate().filter_map(|(at, (k, v))| {
            // The kind first: most fields are not extensions, and need no look back.
            (attributes::classify(k) == FieldKind::Extension
                && !self.fields[..at].iter().any(|(k2, _)| k2 == k))
            .then_some((k.as_str(), v.as_str()))
        })
    }

    /// The names of the fields HTTP handlers do not receive although the producer wrote
    /// them: names that are not valid attribute names (upper case, `_`, `-`, over 20
    /// characters; the worker's own fields aside), reserved names, and an invalid
    /// `traceparent`. Embedded handlers still see them in [`Event::fields`].
    pub fn dropped_fields(&self) -> Vec<&str> {
        let bad_trace = self.field(field::TRACEPARENT).is_some() && self.traceparent().is_none();
        self.fields
            .iter()
            .map(|(k, _)| k.as_str())
            .filter(|k| match attributes::classify(k) {
                FieldKind::Invalid | FieldKind::Reserved => !attributes::is_worker_field(k),
                FieldKind::Known => bad_trace && *k == field::TRACEPARENT,
                _ => false,
            })
            .collect()
    }

    /// CloudEvents 1.0 structured-mode JSON of this event, as POSTed to HTTP handlers: the
    /// attributes, the extensions, the worker's `attempt`, then `data`.
    pub fn to_cloudevent_json(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.write_cloudevent_json(&mut out);
        out
    }

    /// Appends [`Event::to_cloudevent_json`]'s bytes to `out` (reserving room for them
    /// first), so a body or a batch of bodies is built in one buffer.
    pub fn write_cloudevent_json(&self, out: &mut Vec<u8>) {
        self.write_json(out, false);
    }

    /// [`Event::write_cloudevent_json`] for an event the worker decoded, whose `data`
    /// [`decode`] found to be JSON: `data` is copied as it is (less the whitespace around
    /// it, as a parse would drop it) instead of being parsed a second time.
    pub(crate) fn write_decoded_cloudevent_json(&self, out: &mut Vec<u8>) {
        self.write_json(out, true);
    }

    /// Writes the JSON: the attributes as an object without `data`, then `data` spliced in
    /// before its `}` (the object is never empty: `specversion` comes first). `data_checked`
    /// says `data` is known to be JSON; otherwise it is parsed here (`null` when it is not).
    fn write_json(&self, out: &mut Vec<u8>, data_checked: bool) {
        let fields: usize = self.fields.iter().map(|(k, v)| k.len() + v.len() + 6).sum();
        out.reserve(fields.max(self.data.len()) + 160);
        self.write_attributes(out);
        let data = if data_checked {
            self.data.trim()
        } else {
            serde_json::from_str::<&RawValue>(&self.data).map_or("null", |raw| raw.get())
        };
        out.extend_from_slice(b",\"data\":");
        out.extend_from_slice(data.as_bytes());
        out.push(b'}');
    }
}

impl Event {
    /// Writes the CloudEvents attributes (all but `data`) as a JSON object without its closing
    /// `}`: `{"specversion":"1.0","id":...,"attempt":N`. Byte for byte what serializing them
    /// with serde_json writes (`json_str`), without its per-byte escape table on strings that
    /// need no escaping; once per delivered event.
    fn write_attributes(&self, out: &mut Vec<u8>) {
        let [source, optional @ ..] = self.attribute_values();
        out.extend_from_slice(b"{\"specversion\":\"1.0\",\"id\":");
        json_str::push(out, &self.id);
        out.extend_from_slice(b",\"type\":");
        json_str::push(out, &self.event_type);
        out.extend_from_slice(b",\"source\":");
        json_str::push(out, source.unwrap_or("event-worker"));
        for (name, value) in OPTIONAL_ATTRIBUTES
            .into_iter()
            .zip(optional)
            .chain(self.extensions().map(|(name, value)| (name, Some(value))))
        {
            if let Some(v) = value {
                out.push(b',');
                json_str::push_key(out, name);
                json_str::push(out, v);
            }
        }
        out.push(b',');
        json_str::push_key(out, field::ATTEMPT);
        json_str::push_u64(out, u64::from(self.attempt));
    }

    /// `source`, then the values of [`OPTIONAL_ATTRIBUTES`] in their order: the first field of
    /// each name (as [`Event::field`] finds it), in one pass over the fields (once per
    /// delivered event); `datacontenttype` defaulted, an invalid `traceparent` left out (as
    /// [`Event::traceparent`]).
    fn attribute_values(&self) -> [Option<&str>; 7] {
        let mut values = [None; 7];
        for (name, value) in &self.fields {
            let at = match name.as_str() {
                field::SOURCE => 0,
                field::TIME => 1,
                field::DATACONTENTTYPE => 2,
                field::SUBJECT => 3,
                field::DATASCHEMA => 4,
                field::CORRELATIONID => 5,
                field::TRACEPARENT => 6,
                _ => continue,
            };
            values[at].get_or_insert(value.as_str());
        }
        values[2].get_or_insert("application/json");
        values[6] = values[6].filter(|t| attributes::is_traceparent(t));
        values
    }
}

/// The optional attributes a handler receives after `source`, in their order.
const OPTIONAL_ATTRIBUTES: [&str; 6] = [
    field::TIME,
    field::DATACONTENTTYPE,
    field::SUBJECT,
    field::DATASCHEMA,
    field::CORRELATIONID,
    field::TRACEPARENT,
];

/// Why an entry is malformed; it goes to the DLQ with reason `malformed` and this text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed event: {0}")]
pub struct Malformed(pub String);

/// The first value of field `name` in `fields`.
pub fn lookup<'a, K: AsRef<str>, V: AsRef<str>>(
    fields: &'a [(K, V)],
    name: &str,
) -> Option<&'a str> {
    fields
        .iter()
        .find(|(k, _)| k.as_ref() == name)
        .map(|(_, v)| v.as_ref())
}

/// `fields` as owned strings (for the rare paths that rewrite them: retries, dead letters).
pub fn owned_fields(fields: &[(Text, Text)]) -> Vec<(String, String)> {
    fields
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Decodes entry fields into an event.
///
/// `stream_type` is the type of the stream the entry came from (`None` for the group's
/// redeliver stream, where the entry's own `type` names its stream).
///
/// # Errors
/// [`Malformed`] naming the field that breaks the wire format.
#[cfg(test)]
pub fn decode(fields: Vec<(Text, Text)>, stream_type: Option<&str>) -> Result<Event, Malformed> {
    decode_or_return(fields, stream_type).map_err(|(e, _)| e)
}

/// [`decode`] that hands the fields back when the entry is malformed (so the caller can
/// dead-letter them without having copied them first).
///
/// # Errors
/// The first rule the entry breaks, with its fields.
pub fn decode_or_return(
    fields: Vec<(Text, Text)>,
    stream_type: Option<&str>,
) -> Result<Event, (Malformed, Vec<(Text, Text)>)> {
    match check(&fields, stream_type) {
        Ok((id, event_type, data, attempt)) => Ok(Event {
            id: fields[id].1.clone(),
            event_type: fields[event_type].1.clone(),
            data: fields[data].1.clone(),
            attempt,
            fields,
        }),
        Err(e) => Err((e, fields)),
    }
}

/// Checks the wire format; returns the positions of `id`, `type` and `data` and the attempt.
fn check(
    fields: &[(Text, Text)],
    stream_type: Option<&str>,
) -> Result<(usize, usize, usize, u32), Malformed> {
    if fields.len() > MAX_FIELDS {
        return Err(Malformed(format!(
            "{} fields, over the {MAX_FIELDS} limit",
            fields.len()
        )));
    }
    let required = |name: &str| -> Result<(usize, &str), Malformed> {
        let mut values = fields.iter().enumerate().filter(|(_, (k, _))| k == name);
        let (at, first) = values
            .next()
            .ok_or_else(|| Malformed(format!("missing required field `{name}`")))?;
        if values.next().is_some() {
            return Err(Malformed(format!("field `{name}` appears more than once")));
        }
        Ok((at, first.1.as_str()))
    };
    let (id_at, id) = required(field::ID)?;
    if id.is_empty() || id.len() > 256 {
        return Err(Malformed("field `id` must be 1 to 256 characters".into()));
    }
    let (type_at, event_type) = required(field::TYPE)?;
    match stream_type {
        Some(expected) if expected != event_type => {
            return Err(Malformed(format!(
                "field `type` is `{}` but the stream is for `{expected}`",
                truncate(event_type, 100)
            )));
        }
        None if !keys::is_valid_type(event_type) => {
            return Err(Malformed(format!(
                "field `type` `{}` is not a valid type",
                truncate(event_type, 100)
            )));
        }
        _ => {}
    }
    let (data_at, data) = required(field::DATA)?;
    if data.len() > MAX_DATA_BYTES {
        return Err(Malformed(format!(
            "field `data` is {} bytes, over the {MAX_DATA_BYTES} limit",
            data.len()
        )));
    }
    // The quick check accepts only JSON within the depth limit; anything else goes to the
    // depth check and serde_json, whose errors say what is wrong.
    if !json_check::is_json(data) {
        if let Err(e) = attributes::check_depth(data) {
            return Err(Malformed(format!("field `data` {e}")));
        }
        if let Err(e) = serde_json::from_str::<&RawValue>(data) {
            return Err(Malformed(format!("field `data` is not JSON: {e}")));
        }
    }
    check_attributes(fields)?;
    let attempt = match lookup(fields, field::ATTEMPT) {
        None => 0,
        Some(a) => a.parse::<u32>().map_err(|_| {
            Malformed(format!(
                "field `attempt` `{}` is not a non-negative integer",
                truncate(a, 40)
            ))
        })?,
    };
    Ok((id_at, type_at, data_at, attempt))
}

/// Checks the optional attributes whose values would make the delivered event invalid for
/// the CloudEvents SDKs (`time`, `specversion`, `source`, `datacontenttype`, `dataschema`,
/// `subject`; an invalid `traceparent` is dropped instead).
fn check_attributes(fields: &[(Text, Text)]) -> Result<(), Malformed> {
    for name in [
        field::SPECVERSION,
        field::TIME,
        field::SOURCE,
        field::DATACONTENTTYPE,
        field::DATASCHEMA,
        field::SUBJECT,
    ] {
        if let Some(value) = lookup(fields, name)
            && let Err(e) = attributes::check_value(name, value)
        {
            return Err(Malformed(format!("field `{name}` {e}")));
        }
    }
    Ok(())
}

/// Fields of an entry as kept in a DLQ record: at most [`MAX_FIELDS`] fields, values over
/// 64 KiB replaced by a note, so a hostile entry (10 MiB payload, 100k fields) cannot blow up
/// the DLQ or the move script. The original stays in its stream (`dlq_stream` and
/// `dlq_entry_id` point at it) until retention trims it. Returns the fields and what was
/// left out, if anything.
pub fn bounded_copy(fields: &[(String, String)]) -> (Vec<(String, String)>, Option<String>) {
    const MAX_VALUE: usize = 64 * 1024;
    let mut out = Vec::new();
    let mut omitted = Vec::new();
    for (k, v) in fields.iter().take(MAX_FIELDS) {
        if v.len() > MAX_VALUE || k.len() > 256 {
            omitted.push(format!("{}: {} bytes", truncate(k, 64), v.len()));
        } else {
            out.push((k.clone(), v.clone()));
        }
    }
    if fields.len() > MAX_FIELDS {
        omitted.push(format!("{} more fields", fields.len() - MAX_FIELDS));
    }
    let note = (!omitted.is_empty()).then(|| omitted.join("; "));
    (out, note)
}

/// `s` cut to at most `max` bytes on a character boundary, with `…` when cut.
pub fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

#[cfg(test)]
#[path = "envelope_tests.rs"]
mod tests;
