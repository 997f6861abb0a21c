//! Unit tests of the envelope: decoding, the malformed checks, bounded copies.
use super::*;

fn f(pairs: &[(&str, &str)]) -> Vec<(Text, Text)> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).into(), (*v).into()))
        .collect()
}

#[test]
fn decodes_a_minimal_event() {
    let e = decode(
        f(&[("id", "1"), ("type", "a.b"), ("data", "{\"x\":1}")]),
        Some("a.b"),
    )
    .unwrap();
    assert_eq!(
        (e.id.as_str(), e.event_type.as_str(), e.attempt),
        ("1", "a.b", 0)
    );
    let json: serde_json::Value = serde_json::from_slice(&e.to_cloudevent_json()).unwrap();
    assert_eq!(json["data"]["x"], 1);
    assert_eq!(json["specversion"], "1.0");
    assert_eq!(json["type"], "a.b");
}

#[test]
fn every_kind_of_malformed_entry_is_named() {
    let cases: &[(&[(&str, &str)], &str)] = &[
        (&[("type", "a"), ("data", "1")], "`id`"),
        (&[("id", "1"), ("data", "1")], "`type`"),
        (&[("id", "1"), ("type", "a")], "`data`"),
        (&[("id", "1"), ("type", "a"), ("data", "{nope")], "not JSON"),
        (
            &[("id", "1"), ("type", "b"), ("data", "1")],
            "stream is for",
        ),
        (
            &[("id", "1"), ("type", "a"), ("data", "1"), ("attempt", "-1")],
            "`attempt`",
        ),
        (
            &[("id", "1"), ("id", "2"), ("type", "a"), ("data", "1")],
            "more than once",
        ),
    ];
    for (fields, needle) in cases {
        let err = decode(f(fields), Some("a")).unwrap_err();
        assert!(err.to_string().contains(needle), "{err} lacks {needle}");
    }
}

#[test]
fn redeliver_entries_need_a_valid_type() {
    assert!(decode(f(&[("id", "1"), ("type", "dlq"), ("data", "1")]), None).is_err());
    assert!(
        decode(
            f(&[("id", "1"), ("type", "a"), ("data", "1"), ("attempt", "3")]),
            None
        )
        .is_ok()
    );
}

#[test]
fn too_many_fields_is_malformed() {
    let mut many = f(&[("id", "1"), ("type", "a"), ("data", "1")]);
    for i in 0..MAX_FIELDS {
        many.push((format!("x{i}").into(), "v".into()));
    }
    assert!(decode(many, Some("a")).unwrap_err().0.contains("fields"));
}

#[test]
fn deep_json_is_refused_not_a_crash() {
    let deep = "[".repeat(100_000);
    assert!(decode(f(&[("id", "1"), ("type", "a"), ("data", &deep)]), Some("a")).is_err());
}

#[test]
fn attributes_that_break_the_sdks_are_malformed() {
    let base = [("id", "1"), ("type", "a"), ("data", "1")];
    let cases = [
        (
            ("time", "yesterday"),
            "malformed event: field `time` `yesterday` is not an RFC 3339 timestamp (e.g. 2026-11-26T14:05:09Z)",
        ),
        (
            ("specversion", "0.3"),
            "malformed event: field `specversion` `0.3` is not 1.0, the only CloudEvents version delivered",
        ),
        (
            ("source", ""),
            "malformed event: field `source` is empty; use a URI reference such as /api/bookings",
        ),
    ];
    for (extra, message) in cases {
        let mut fields = base.to_vec();
        fields.push(extra);
        assert_eq!(
            decode(f(&fields), Some("a")).unwrap_err().to_string(),
            message
        );
    }
}

#[test]
fn deep_data_is_malformed_with_its_depth() {
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let err = decode(f(&[("id", "1"), ("type", "a"), ("data", &deep)]), Some("a")).unwrap_err();
    assert_eq!(
        err.0,
        "field `data` nests 100000 levels of arrays/objects, over the 64 limit"
    );
    let at_limit = format!("{}{}", "[".repeat(64), "]".repeat(64));
    assert!(
        decode(
            f(&[("id", "1"), ("type", "a"), ("data", &at_limit)]),
            Some("a")
        )
        .is_ok()
    );
}

#[test]
fn extensions_are_delivered_and_worker_fields_are_not() {
    let e = decode(
        f(&[
            ("id", "1"),
            ("type", "a"),
            ("data", "{}"),
            ("tenant", "t-1"),
            ("tenant", "t-2"),
            ("Region", "eu"),
            ("attempt", "2"),
            ("origin_entry_id", "1-0"),
            ("replay_count", "1"),
            ("dlq_reason", "x"),
            ("schemaurl", "http://x"),
            ("traceparent", "bogus"),
            ("subject", "s"),
        ]),
        None,
    )
    .unwrap();
    assert_eq!(e.extensions().collect::<Vec<_>>(), vec![("tenant", "t-1")]);
    assert_eq!(
        e.dropped_fields(),
        vec!["Region", "schemaurl", "traceparent"]
    );
    let json: serde_json::Value = serde_json::from_slice(&e.to_cloudevent_json()).unwrap();
    let keys: Vec<&str> = json
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        [
            "attempt",
            "data",
            "datacontenttype",
            "id",
            "source",
            "specversion",
            "subject",
            "tenant",
            "type",
        ]
    );
    assert_eq!(json["attempt"], 2);
}

#[test]
fn truncate_respects_char_boundaries() {
    assert_eq!(truncate("héllo", 2), "h…");
    assert_eq!(truncate("abc", 5), "abc");
}

#[test]
fn a_decoded_event_is_written_as_the_parsing_writer_writes_it() {
    let cases: &[&str] = &[
        "{\"x\":1}",
        " \n{\"a\": [1, 2, {\"b\": \"}\"}]}\t ",
        "\"text with \\\" and }\"",
        "null",
        "42",
    ];
    for data in cases {
        let e = decode(
            f(&[
                ("id", "1"),
                ("type", "a.b"),
                ("data", data),
                ("correlationid", "c-1"),
                ("tenant", "t\"1"),
                ("attempt", "2"),
            ]),
            Some("a.b"),
        )
        .unwrap();
        let mut spliced = Vec::new();
        e.write_decoded_cloudevent_json(&mut spliced);
        assert_eq!(
            String::from_utf8(spliced).unwrap(),
            String::from_utf8(e.to_cloudevent_json()).unwrap(),
            "data {data:?}"
        );
    }
}

/// The CloudEvent's attributes as serde_json serializes them (how they were written before
/// `json_str`): the reference the hand-written JSON must match byte for byte.
struct SerdeCloudEvent<'a>(&'a Event);

impl serde::Serialize for SerdeCloudEvent<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let e = self.0;
        let mut map = s.serialize_map(None)?;
        map.serialize_entry("specversion", "1.0")?;
        map.serialize_entry("id", &e.id)?;
        map.serialize_entry("type", &e.event_type)?;
        map.serialize_entry("source", e.field(field::SOURCE).unwrap_or("event-worker"))?;
        // Each looked up on its own, as the writer did before it read them in one pass.
        let optional = [
            (field::TIME, e.field(field::TIME)),
            (
                field::DATACONTENTTYPE,
                Some(
                    e.field(field::DATACONTENTTYPE)
                        .unwrap_or("application/json"),
                ),
            ),
            (field::SUBJECT, e.field(field::SUBJECT)),
            (field::DATASCHEMA, e.field(field::DATASCHEMA)),
            (field::CORRELATIONID, e.correlation_id()),
            (field::TRACEPARENT, e.traceparent()),
        ];
        for (name, value) in optional {
            if let Some(v) = value {
                map.serialize_entry(name, v)?;
            }
        }
        for (name, value) in e.extensions() {
            map.serialize_entry(name, value)?;
        }
        map.serialize_entry(field::ATTEMPT, &e.attempt)?;
        map.end()
    }
}

#[test]
fn cloudevent_json_is_byte_for_byte_serde_jsons() {
    // Built by hand, not decoded: the writer must match serde_json on any text, valid
    // attribute or not.
    let odd = [
        "plain",
        "q\"uote",
        "back\\slash",
        "ctl\u{1}\n\t",
        "é€😀",
        "</x>",
        "",
    ];
    for (i, value) in odd.iter().enumerate() {
        let e = Event {
            id: format!("id-{value}").into(),
            event_type: Text::from(*value),
            data: Text::from("{\"k\":[1,\"v\"]}"),
            attempt: [0, 1, 9, 10, 99, 4_000_000_000, u32::MAX][i],
            fields: f(&[
                ("source", value),
                ("time", value),
                ("subject", value),
                ("correlationid", value),
                ("tenant", value),
                ("region", "eu"),
                // Later duplicates are not sent; a valid traceparent is, an invalid one not;
                // datacontenttype defaulted when absent.
                ("time", "later"),
                ("tenant", "later"),
                ("dataschema", value),
                (
                    "traceparent",
                    [
                        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                        value,
                    ][i % 2],
                ),
                (["datacontenttype", "x"][i % 3 / 2], "text/plain"),
            ]),
        };
        let mut expected = serde_json::to_vec(&SerdeCloudEvent(&e)).unwrap();
        expected.pop();
        expected.extend_from_slice(b",\"data\":{\"k\":[1,\"v\"]}}");
        assert_eq!(
            String::from_utf8(e.to_cloudevent_json()).unwrap(),
            String::from_utf8(expected).unwrap(),
            "{value:?}"
        );
    }
}

#[test]
fn every_field_name_constant_is_known_and_nothing_else_is() {
    let names = [
        field::ID,
        field::TYPE,
        field::DATA,
        field::SOURCE,
        field::TIME,
        field::SPECVERSION,
        field::DATACONTENTTYPE,
        field::CORRELATIONID,
        field::TRACEPARENT,
        field::SUBJECT,
        field::DATASCHEMA,
        field::ATTEMPT,
        field::ORIGIN_ENTRY_ID,
        field::UNROUTED_SINCE,
    ];
    for name in names {
        assert_eq!(field::known(name.as_bytes()), Some(name));
    }
    for other in ["", "ID", "types", "dat", "x-custom", "correlation_id"] {
        assert_eq!(field::known(other.as_bytes()), None, "{other}");
    }
}
