//! Property tests over every parser of untrusted input: stream-entry decoding, durations,
//! ids, DLQ filters and Redis URLs. Each must return a clear error for bad input and never
//! panic (reliability matrix rows T36, T42, T43; docs/reliability-matrix.md).

use proptest::prelude::*;

use crate::config::parse_duration;
use crate::model::envelope::{self, decode};
use crate::model::keys;
use crate::model::secret::RedisUrl;
use crate::ops::dlq::{self, DlqFilter};

fn field_name() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("id".to_string()),
        Just("type".to_string()),
        Just("data".to_string()),
        Just("attempt".to_string()),
        Just("correlationid".to_string()),
        ".{0,12}",
    ]
}

fn field_value() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("a.b".to_string()),
        Just("{}".to_string()),
        Just("[1,{\"x\":null}]".to_string()),
        Just("-1".to_string()),
        "[0-9]{1,25}",
        ".{0,40}",
        "[\\[{]{0,300}",
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn decoding_any_entry_never_panics(
        fields in prop::collection::vec((field_name(), field_value()), 0..12),
        stream_type in prop::option::of(prop_oneof![Just("a.b".to_string()), ".{0,10}"]),
    ) {
        let fields: Vec<(crate::Text, crate::Text)> =
            fields.into_iter().map(|(k, v)| (k.into(), v.into())).collect();
        match decode(fields.clone(), stream_type.as_deref()) {
            Ok(event) => {
                // A decoded event always satisfies the wire format...
                prop_assert!(envelope::lookup(&fields, "id").is_some());
                prop_assert!(serde_json::from_str::<serde_json::Value>(&event.data).is_ok());
                // ...and encodes to valid CloudEvents JSON.
                let ce: serde_json::Value = serde_json::from_slice(&event.to_cloudevent_json()).unwrap();
                prop_assert_eq!(ce["id"].as_str(), Some(event.id.as_str()));
            }
            Err(e) => prop_assert!(!e.0.is_empty()),
        }
    }

    #[test]
    fn bounded_copy_is_bounded(
        fields in prop::collection::vec(((0usize..300).prop_map(|n| "k".repeat(n)), (0usize..70_000).prop_map(|n| "v".repeat(n))), 0..4),
    ) {
        let (kept, _) = envelope::bounded_copy(&fields);
        prop_assert!(kept.len() <= envelope::MAX_FIELDS);
        prop_assert!(kept.iter().all(|(_, v)| v.len() <= 64 * 1024));
    }

    #[test]
    fn durations_ids_types_and_urls_never_panic(text in ".{0,60}") {
        let _ = parse_duration(&text);
        let _ = dlq::is_entry_id(&text);
        let _ = keys::is_valid_type(&text);
        let _ = keys::is_valid_pattern(&text);
        let _ = keys::glob_matches(&text, "a.b.c");
        if let Err(e) = RedisUrl::parse(&text) {
            prop_assert!(!e.to_string().is_empty());
        }
    }

    #[test]
    fn dlq_filters_validate_without_panicking(
        t in prop::option::of(".{0,20}"),
        reason in prop::option::of(".{0,20}"),
        since in prop::option::of(".{0,20}"),
    ) {
        let f = DlqFilter { event_type: t, reason, since, ..Default::default() };
        let _ = f.validate();
    }

    #[test]
    fn reserved_and_odd_types_are_never_valid(t in "[a-z:{}*/ ]{0,10}") {
        if t.contains([':', '{', '}', '*', '/', ' ']) || keys::RESERVED_TYPES.contains(&t.as_str()) {
            prop_assert!(!keys::is_valid_type(&t));
        }
    }
}
