//! CloudEvents 1.0 attribute rules shared by the decoder (stream entries), the publishers
//! (API, CLI, library) and the HTTP delivery: which field names are attributes, extensions,
//! the worker's own or unusable; what a valid `time`, `source`, `specversion`,
//! `datacontenttype`, `dataschema`, `subject` and `traceparent` look like; and how deep
//! `data` nests. Every check is a linear scan without recursion, cheap enough per event.

use crate::model::uri;

/// Deepest nesting of arrays and objects accepted in `data`. Deeper `data` is malformed:
/// many receivers' JSON parsers refuse or crash on deep input (.NET's System.Text.Json
/// stops at 64 by default, serde_json at 128; recursive parsers overflow their stack).
pub const MAX_DATA_DEPTH: usize = 64;

/// Longest extension attribute name (CloudEvents 1.0: "SHOULD NOT exceed 20 characters").
pub const MAX_EXTENSION_NAME: usize = 20;

/// Field names the worker gives a meaning to (attributes of the delivered event).
pub const KNOWN: &[&str] = &[
    "id",
    "type",
    "data",
    "source",
    "time",
    "specversion",
    "datacontenttype",
    "dataschema",
    "subject",
    "correlationid",
    "traceparent",
];

/// Names with a valid extension form that cannot be extensions: `attempt` (set by the
/// worker), CloudEvents 0.3 attributes (`schemaurl` makes the npm SDK throw on a 1.0 event),
/// and members of the npm SDK's event object (`validate`, `emit`) an extension would shadow.
pub const RESERVED: &[&str] = &[
    "attempt",
    "schemaurl",
    "datacontentencoding",
    "validate",
    "emit",
];

/// What a field name of a stream entry (or a publish body) is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldKind {
    /// One of [`KNOWN`].
    Known,
    /// Written by the worker: `attempt`, `origin_entry_id`, `replay_count`, `unrouted_since`,
    /// `dlq_*`.
    Worker,
    /// Valid extension form but reserved (see [`RESERVED`]).
    Reserved,
    /// A CloudEvents extension attribute: passed on to handlers.
    Extension,
    /// Not a valid attribute name (upper case, `_`, `-`, over 20 characters...): not passed on.
    Invalid,
}

/// Classifies a field name.
pub fn classify(name: &str) -> FieldKind {
    if KNOWN.contains(&name) {
        FieldKind::Known
    } else if is_worker_field(name) {
        FieldKind::Worker
    } else if !is_extension_name(name) {
        FieldKind::Invalid
    } else if RESERVED.contains(&name) {
        FieldKind::Reserved
    } else {
        FieldKind::Extension
    }
}

/// A field the worker writes into entries it moves (retries, replays, dead letters).
pub fn is_worker_field(name: &str) -> bool {
    matches!(
        name,
        "attempt" | "origin_entry_id" | "replay_count" | "unrouted_since"
    ) || name.starts_with("dlq_")
}

/// `name` is 1 to 20 characters of `a-z` and `0-9`.
pub fn is_extension_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_EXTENSION_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

/// The deepest nesting of arrays and objects in the JSON text `json` (0 for a scalar),
/// counting brackets outside strings; one pass, no recursion. Meant for text that is (or
/// will be checked to be) JSON; on other text the count is still bounded by its length.
pub fn json_depth(json: &str) -> usize {
    let (mut depth, mut max) = (0usize, 0usize);
    let (mut in_string, mut escaped) = (false, false);
    for b in json.bytes() {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                max = max.max(depth);
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    max
}

/// `Err` naming the depth when `data` nests deeper than [`MAX_DATA_DEPTH`].
pub fn check_depth(data: &str) -> Result<(), String> {
    // The depth is at most the number of opening brackets: a count the compiler vectorises,
    // so the usual event skips the byte-by-byte walk of `json_depth` (a hot path per event).
    // `[` (0x5B) and `{` (0x7B) are the only bytes that are `{` with bit 0x20 set; a sum of
    // 0/1 bytes in chunks of 255 vectorises, where a filter-count did not.
    let opening: usize = data
        .as_bytes()
        .chunks(255)
        .map(|chunk| {
            let n: u8 = chunk
                .iter()
                .fold(0u8, |n, &b| n + u8::from(b | 0x20 == b'{'));
            usize::from(n)
        })
        .sum();
    if opening <= MAX_DATA_DEPTH {
        return Ok(());
    }
    let depth = json_depth(data);
    if depth > MAX_DATA_DEPTH {
        return Err(format!(
            "nests {depth} levels of arrays/objects, over the {MAX_DATA_DEPTH} limit"
        ));
    }
    Ok(())
}

/// Checks the value of a known attribute (`time`, `source`, `specversion`,
/// `datacontenttype`, `dataschema`, `subject`, `traceparent`); other names pass.
///
/// # Errors
/// Why the value would make the delivered event invalid, without the attribute name.
pub fn check_value(name: &str, value: &str) -> Result<(), String> {
    let ok = match name {
        "time" => is_rfc3339(value),
        "specversion" => value == "1.0",
        "source" => !value.is_empty() && uri::is_uri_reference(value),
        "datacontenttype" => is_media_type(value),
        "dataschema" => uri::is_absolute_uri(value),
        "subject" => !value.is_empty(),
        "traceparent" => is_traceparent(value),
        _ => true,
    };
    if ok {
        return Ok(());
    }
    let shown = crate::model::envelope::truncate(value, 100);
    Err(match name {
        "time" => format!("`{shown}` is not an RFC 3339 timestamp (e.g. 2026-11-26T14:05:09Z)"),
        "specversion" => format!("`{shown}` is not 1.0, the only CloudEvents version delivered"),
        "source" if value.is_empty() => {
            "is empty; use a URI reference such as /api/bookings".into()
        }
        "source" => format!(
            "`{shown}` is not a URI reference (RFC 3986; percent-encode spaces and other characters)"
        ),
        "datacontenttype" => {
            format!("`{shown}` is not a media type (type/subtype, e.g. application/json)")
        }
        "dataschema" => format!("`{shown}` is not an absolute URI (RFC 3986)"),
        "subject" => "is empty".into(),
        _ => format!("`{shown}` is not W3C trace context (00-<32 hex>-<16 hex>-<2 hex>)"),
    })
}

fn digits(s: &[u8]) -> Option<u32> {
    if s.is_empty() || !s.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(s.iter().fold(0, |n, d| n * 10 + u32::from(d - b'0')))
}

/// RFC 3339 `date-time`: `YYYY-MM-DDTHH:MM:SS[.frac](Z|±HH:MM)`, `T` and `Z` in either case,
/// with real dates (leap years) and a leap second allowed.
pub fn is_rfc3339(s: &str) -> bool {
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't') {
        return false;
    }
    if b[13] != b':' || b[16] != b':' {
        return false;
    }
    let (Some(year), Some(month), Some(day)) =
        (digits(&b[0..4]), digits(&b[5..7]), digits(&b[8..10]))
    else {
        return false;
    };
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    let days = [
        31,
        if leap { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    if !(1..=12).contains(&month) || day < 1 || day > days[month as usize - 1] {
        return false;
    }
    let (Some(h), Some(m), Some(sec)) =
        (digits(&b[11..13]), digits(&b[14..16]), digits(&b[17..19]))
    else {
        return false;
    };
    if h > 23 || m > 59 || sec > 60 {
        return false;
    }
    let mut rest = &b[19..];
    if let Some(frac) = rest.strip_prefix(b".") {
        let n = frac.iter().take_while(|c| c.is_ascii_digit()).count();
        if n == 0 {
            return false;
        }
        rest = &frac[n..];
    }
    match rest {
        [b'Z' | b'z'] => true,
        [b'+' | b'-', oh @ .., b':', _, _] if oh.len() == 2 => {
            matches!((digits(oh), digits(&rest[4..6])), (Some(oh), Some(om)) if oh <= 23 && om <= 59)
        }
        _ => false,
    }
}

/// An HTTP token character (RFC 9110).
fn is_token_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&c)
}

/// RFC 2046 / RFC 9110 media type: `type/subtype` then `; name=value` parameters (token or
/// quoted-string values).
pub fn is_media_type(s: &str) -> bool {
    let mut parts = s.split(';');
    let essence = parts.next().unwrap_or_default();
    let Some((t, sub)) = essence.split_once('/') else {
        return false;
    };
    let token = |x: &str| !x.is_empty() && x.bytes().all(is_token_char);
    if !token(t) || !token(sub.trim_end_matches([' ', '\t'])) {
        return false;
    }
    parts.all(|p| {
        let Some((name, value)) = p.trim_start_matches([' ', '\t']).split_once('=') else {
            return false;
        };
        let quoted = value.len() >= 2
            && value.starts_with('"')
            && value.ends_with('"')
            && value[1..value.len() - 1]
                .bytes()
                .all(|c| c != b'"' && (c == b'\t' || (0x20..0x7f).contains(&c)));
        token(name) && (token(value) || quoted)
    })
}

/// W3C trace context `traceparent`, version 00 form: `vv-<32 hex>-<16 hex>-<2 hex>`,
/// lower-case hex, version not `ff`, trace and parent ids not all zeros.
pub fn is_traceparent(s: &str) -> bool {
    let b = s.as_bytes();
    let hex = |r: &[u8]| {
        r.iter()
            .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(c))
    };
    let zeros = |r: &[u8]| r.iter().all(|&c| c == b'0');
    b.len() == 55
        && b[2] == b'-'
        && b[35] == b'-'
        && b[52] == b'-'
        && hex(&b[0..2])
        && &b[0..2] != b"ff"
        && hex(&b[3..35])
        && !zeros(&b[3..35])
        && hex(&b[36..52])
        && !zeros(&b[36..52])
        && hex(&b[53..55])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_classified() {
        assert_eq!(classify("source"), FieldKind::Known);
        assert_eq!(classify("attempt"), FieldKind::Worker);
        assert_eq!(classify("dlq_reason"), FieldKind::Worker);
        assert_eq!(classify("replay_count"), FieldKind::Worker);
        assert_eq!(classify("unrouted_since"), FieldKind::Worker);
        assert_eq!(classify("schemaurl"), FieldKind::Reserved);
        assert_eq!(classify("tenant"), FieldKind::Extension);
        assert_eq!(classify("a1234567890123456789"), FieldKind::Extension);
        for bad in ["Tenant", "x-y", "a_b", "a12345678901234567890", ""] {
            assert_eq!(classify(bad), FieldKind::Invalid, "{bad}");
        }
    }

    #[test]
    fn depth_counts_brackets_outside_strings() {
        assert_eq!(json_depth("1"), 0);
        assert_eq!(json_depth("[[1],{\"a\":[2]}]"), 3);
        assert_eq!(json_depth("[\"[[[\\\"[[\"]"), 1);
        assert_eq!(json_depth(&"[".repeat(100_000)), 100_000);
        let at_limit = format!("{}{}", "[".repeat(64), "]".repeat(64));
        assert!(check_depth(&at_limit).is_ok());
        let over = format!("{}{}", "[".repeat(65), "]".repeat(65));
        assert_eq!(
            check_depth(&over).unwrap_err(),
            "nests 65 levels of arrays/objects, over the 64 limit"
        );
        // More opening brackets than the limit, but shallow (siblings, or inside a string).
        let siblings = format!("[{}[]]", "[],".repeat(100));
        assert!(check_depth(&siblings).is_ok());
        assert!(check_depth(&format!("[\"{}\"]", "[".repeat(100))).is_ok());
    }

    #[test]
    fn rfc3339_timestamps() {
        for ok in [
            "2026-11-26T14:05:09Z",
            "2026-11-26t14:05:09.123456789z",
            "2024-02-29T23:59:60+05:30",
            "0001-01-01T00:00:00-00:00",
        ] {
            assert!(is_rfc3339(ok), "{ok}");
        }
        for bad in [
            "yesterday",
            "2026-11-26",
            "2026-11-26 14:05:09Z",
            "2026-11-26T14:05:09",
            "2025-02-29T00:00:00Z",
            "2026-13-01T00:00:00Z",
            "2026-11-26T24:00:00Z",
            "2026-11-26T14:05:09.Z",
            "2026-11-26T14:05:09+0530",
            "1700000000",
        ] {
            assert!(!is_rfc3339(bad), "{bad}");
        }
    }

    #[test]
    fn media_types_and_traceparents() {
        for ok in [
            "application/json",
            "application/cloudevents+json; charset=utf-8",
            "text/plain;format=\"a b\"",
        ] {
            assert!(is_media_type(ok), "{ok}");
        }
        for bad in [
            "json",
            "application/",
            "/json",
            "text/plain; charset",
            "a b/c",
        ] {
            assert!(!is_media_type(bad), "{bad}");
        }
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert!(is_traceparent(tp));
        assert!(!is_traceparent(&tp.to_uppercase()));
        assert!(!is_traceparent(
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01"
        ));
        assert!(!is_traceparent("garbage"));
    }

    #[test]
    fn value_errors_name_the_problem() {
        assert_eq!(
            check_value("time", "yesterday").unwrap_err(),
            "`yesterday` is not an RFC 3339 timestamp (e.g. 2026-11-26T14:05:09Z)"
        );
        assert!(check_value("specversion", "0.3").is_err());
        assert!(check_value("source", "").unwrap_err().contains("empty"));
        assert!(check_value("tenant", "anything").is_ok());
    }
}
