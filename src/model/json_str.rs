//! Writing JSON strings on the per-event paths (the CloudEvent of an http request, the
//! history's aggregate of successes) without serde_json's byte-by-byte escape table when
//! nothing needs escaping, which is almost always: ids, types, times and extension values
//! rarely hold a quote, a backslash or a control character. The output is byte for byte what
//! `serde_json` writes (which escapes only those and leaves every other byte, non-ASCII
//! included, as it is).

/// Appends `s` as a JSON string.
pub(crate) fn push(out: &mut Vec<u8>, s: &str) {
    // A fold without an early exit, so the compiler checks 16 bytes per step.
    let plain = !s.as_bytes().iter().fold(false, |escape, &b| {
        escape | (b < 0x20) | (b == b'"') | (b == b'\\')
    });
    if plain {
        out.reserve(s.len() + 2);
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
    } else {
        // Writing to a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *out, s);
    }
}

/// Appends `"name":` (an object key and its colon).
pub(crate) fn push_key(out: &mut Vec<u8>, name: &str) {
    push(out, name);
    out.push(b':');
}

/// Appends `n` as a JSON number.
pub(crate) fn push_u64(out: &mut Vec<u8>, n: u64) {
    let _ = serde_json::to_writer(&mut *out, &n);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_come_out_as_serde_json_writes_them() {
        let cases = [
            "",
            "plain",
            "e-1f3a",
            "say \"hi\"",
            "back\\slash",
            "tab\there",
            "nl\n",
            "\u{1}\u{1f}",
            "\u{7f}del",
            "é€😀",
            "</script>",
        ];
        for s in cases {
            let mut ours = Vec::new();
            push(&mut ours, s);
            assert_eq!(ours, serde_json::to_vec(s).unwrap(), "{s:?}");
        }
        let mut out = Vec::new();
        push_key(&mut out, "id");
        push_u64(&mut out, u64::MAX);
        assert_eq!(out, b"\"id\":18446744073709551615");
    }
}
