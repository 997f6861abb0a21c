use proptest::prelude::*;
use serde_json::value::RawValue;

use super::{is_json, plain_end};
use crate::model::attributes::MAX_DATA_DEPTH;

/// serde_json's answer: what `is_json` must agree with.
fn serde_accepts(text: &str) -> bool {
    serde_json::from_str::<&RawValue>(text).is_ok()
}

fn assert_same(text: &str) {
    assert_eq!(
        is_json(text),
        serde_accepts(text),
        "is_json and serde_json disagree on {text:?}"
    );
}

#[test]
fn values_serde_accepts_are_accepted() {
    let cases = [
        "0",
        "-0",
        "12",
        "-12.5e+3",
        "1E-7",
        "0.0",
        "1e0",
        "true",
        "false",
        "null",
        r#""""#,
        r#""plain""#,
        r#""esc \" \\ \/ \b \f \n \r \t \u00e9 \uD800 \uDFFF \uABCD""#,
        "\"non-ASCII é ✓ 😀\"",
        "[]",
        "{}",
        " \t\r\n[ 1 , 2 ,\n3 ] \n",
        r#"{"a":1,"b":[true,false,null],"c":{"d":"e"},"":{}}"#,
        r#"{ "a" : 1 , "a" : 2 }"#,
        r#"[[[[[]]]],{},[{}],[{"x":[]}]]"#,
        r#""a string of exactly sixteen""#,
        r#""0123456789abcdef0123456789abcdef\"0123456789abcdef""#,
    ];
    for text in cases {
        assert!(serde_accepts(text), "serde_json refuses {text:?}");
        assert!(is_json(text), "is_json refuses {text:?}");
    }
}

#[test]
fn values_serde_refuses_are_refused() {
    let cases = [
        "",
        "   ",
        "01",
        "-",
        "-a",
        "1.",
        ".5",
        "1e",
        "1e+",
        "+1",
        "0x10",
        "tru",
        "truex",
        "nul",
        "True",
        "NaN",
        "Infinity",
        r#"""#,
        r#""unterminated"#,
        "\"tab\tinside\"",
        "\"nul\u{0}inside\"",
        r#""bad \x escape""#,
        r#""short \u12""#,
        r#""bad hex \u12G4""#,
        r#""ends in a backslash\"#,
        "[",
        "]",
        "[1,]",
        "[,1]",
        "[1 2]",
        "{",
        r#"{"a"}"#,
        r#"{"a":}"#,
        r#"{"a":1,}"#,
        r#"{"a" 1}"#,
        "{a:1}",
        "{1:1}",
        r#"{"a":1]"#,
        r#"[1}"#,
        "1 2",
        "[] []",
        "\u{feff}1",
        "\u{c}1",
        "'a'",
    ];
    for text in cases {
        assert!(!serde_accepts(text), "serde_json accepts {text:?}");
        assert!(!is_json(text), "is_json accepts {text:?}");
    }
}

#[test]
fn nesting_up_to_the_data_limit_is_accepted_and_deeper_left_to_serde() {
    let nested = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
    assert!(is_json(&nested(MAX_DATA_DEPTH)));
    let objects = format!(
        "{}1{}",
        r#"{"k":"#.repeat(MAX_DATA_DEPTH),
        "}".repeat(MAX_DATA_DEPTH)
    );
    assert!(is_json(&objects));
    // Deeper than the limit: refused here (serde_json, which allows 128, has the last word).
    assert!(!is_json(&nested(MAX_DATA_DEPTH + 1)));
    assert!(serde_accepts(&nested(MAX_DATA_DEPTH + 1)));
    // Containers closed in between do not count.
    let siblings = format!("[{}]", vec![nested(MAX_DATA_DEPTH - 1); 3].join(","));
    assert!(is_json(&siblings));
}

#[test]
fn plain_end_finds_the_first_special_byte_from_every_start() {
    for len in 0..50 {
        for special_at in (0..len).map(Some).chain([None]) {
            for special in [b'"', b'\\', 0x00, 0x1f] {
                let mut b = vec![b'a'; len];
                if let Some(at) = special_at {
                    b[at] = special;
                }
                for start in 0..=len {
                    let expected = special_at.filter(|&at| at >= start).unwrap_or(len);
                    assert_eq!(
                        plain_end(&b, start),
                        expected,
                        "{len} {special_at:?} {start}"
                    );
                }
            }
        }
    }
    // Bytes that are not special, around the special ones.
    assert_eq!(plain_end(" !#[]{}~\x7fé\"".as_bytes(), 0), 11);
}

#[test]
fn a_string_opened_at_the_very_end_is_refused() {
    for text in [r#"["aaaaaaaaaaaaaaaaaaaa",""#, r#"""#, r#"["a","#] {
        assert_same(text);
    }
}

#[test]
fn the_bench_event_data_is_accepted() {
    let pad = "x".repeat(170);
    let data = format!(
        r#"{{"bookingId":"b-00000042","userId":"u-0042","amount":"000042","currency":"EUR","pad":"{pad}"}}"#
    );
    assert!(is_json(&data));
}

/// Any JSON value of a few levels, from scalars that stress the scanner: strings with every
/// kind of character around the 16-byte chunk borders, numbers of every shape.
fn json_value() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::Bool),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(serde_json::Value::from),
        "[a-z\"\\\\/\u{0}-\u{1f}é😀 ]{0,40}".prop_map(serde_json::Value::String),
    ];
    leaf.prop_recursive(5, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(serde_json::Value::Array),
            prop::collection::btree_map("[a-z\"\\\\\u{1}]{0,20}", inner, 0..6)
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A character JSON gives a meaning to, or one it refuses.
fn json_char() -> impl Strategy<Value = char> {
    prop::sample::select(
        "{}[]\",: \t\n\r\\/0123456789-+.eEtrufalsnbxA\u{1}\u{c}é"
            .chars()
            .collect::<Vec<_>>(),
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn serialized_values_are_accepted(value in json_value(), pretty in any::<bool>()) {
        let text = if pretty {
            serde_json::to_string_pretty(&value).unwrap()
        } else {
            serde_json::to_string(&value).unwrap()
        };
        prop_assert!(is_json(&text), "refused {text:?}");
    }

    /// Valid text with one to three characters replaced, inserted or removed: whatever the
    /// edit made of it, both answer the same (the values nest far less than the limit).
    #[test]
    fn edited_values_get_serde_json_s_answer(
        value in json_value(),
        edits in prop::collection::vec((any::<prop::sample::Index>(), 0u8..3, json_char()), 1..4),
    ) {
        let mut chars: Vec<char> = serde_json::to_string(&value).unwrap().chars().collect();
        for (at, kind, c) in edits {
            let at = at.index(chars.len() + 1);
            match kind {
                0 => chars.insert(at, c),
                1 if at < chars.len() => chars[at] = c,
                _ if at < chars.len() => { chars.remove(at); }
                _ => chars.push(c),
            }
        }
        let text: String = chars.into_iter().collect();
        assert_same(&text);
    }

    #[test]
    fn arbitrary_text_gets_serde_json_s_answer(text in "[{}\\[\\]\",: 0-9a-z\\\\.+\\-\u{1}é]{0,30}") {
        assert_same(&text);
    }
}
