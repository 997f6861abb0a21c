//! A check that an event's `data` is one JSON value, once per consumed event, at a fraction
//! of what parsing it with serde_json costs: one pass, no allocation, no recursion, strings
//! scanned 16 bytes per step. It accepts only what `serde_json::from_str::<&RawValue>`
//! accepts (RFC 8259: one value, whitespace around it, any `\uXXXX` escape, no trailing
//! commas, numbers by the grammar); where it says no, the caller asks serde_json, whose error
//! names the fault, so a refusal here never decides alone. The tests hold the two to the same
//! answers.

use super::attributes::MAX_DATA_DEPTH;

/// Whether `text` is one JSON value (whitespace around it allowed) nesting at most
/// [`MAX_DATA_DEPTH`] arrays and objects. `true` only where serde_json would accept it too;
/// `false` for anything else, including values nested deeper.
pub(crate) fn is_json(text: &str) -> bool {
    let b = text.as_bytes();
    // Bit k of `objects` says whether the container k levels above the innermost one is an
    // object (bit 0: the innermost); `depth` counts the open containers.
    let mut objects: u64 = 0;
    let mut depth = 0usize;
    let mut i = skip_whitespace(b, 0);
    loop {
        // A value starts at `i`.
        let after = match b.get(i) {
            Some(&open @ (b'{' | b'[')) => {
                // An empty container counts as a level too, as in `check_depth`.
                if depth == MAX_DATA_DEPTH {
                    return false;
                }
                let object = open == b'{';
                i = skip_whitespace(b, i + 1);
                let close = if object { b'}' } else { b']' };
                if b.get(i) == Some(&close) {
                    i + 1
                } else {
                    objects = (objects << 1) | u64::from(object);
                    depth += 1;
                    if object {
                        match key(b, i) {
                            Some(value_at) => i = value_at,
                            None => return false,
                        }
                    }
                    continue;
                }
            }
            Some(b'"') => match string_end(b, i + 1) {
                Some(end) => end,
                None => return false,
            },
            Some(b't') if b[i..].starts_with(b"true") => i + 4,
            Some(b'f') if b[i..].starts_with(b"false") => i + 5,
            Some(b'n') if b[i..].starts_with(b"null") => i + 4,
            Some(b'-' | b'0'..=b'9') => match number_end(b, i) {
                Some(end) => end,
                None => return false,
            },
            _ => return false,
        };
        i = after;
        // After a value: close containers until a `,` asks for the next value.
        loop {
            i = skip_whitespace(b, i);
            if depth == 0 {
                return i == b.len();
            }
            let in_object = objects & 1 == 1;
            match b.get(i) {
                Some(b',') => {
                    i = skip_whitespace(b, i + 1);
                    if in_object {
                        match key(b, i) {
                            Some(value_at) => i = value_at,
                            None => return false,
                        }
                    }
                    break;
                }
                Some(b'}') if in_object => {}
                Some(b']') if !in_object => {}
                _ => return false,
            }
            i += 1;
            objects >>= 1;
            depth -= 1;
        }
    }
}

/// The index after the JSON whitespace (space, tab, line feed, carriage return) at `i`.
fn skip_whitespace(b: &[u8], mut i: usize) -> usize {
    while let Some(b' ' | b'\t' | b'\n' | b'\r') = b.get(i) {
        i += 1;
    }
    i
}

/// For an object key at `i` (`"name" :` with whitespace), the index of its value.
fn key(b: &[u8], i: usize) -> Option<usize> {
    if b.get(i) != Some(&b'"') {
        return None;
    }
    let i = skip_whitespace(b, string_end(b, i + 1)?);
    (b.get(i) == Some(&b':')).then(|| skip_whitespace(b, i + 1))
}

/// For a string whose opening quote is just before `i`, the index after its closing quote;
/// `None` for a control character, a bad escape or no closing quote.
fn string_end(b: &[u8], mut i: usize) -> Option<usize> {
    loop {
        i = plain_end(b, i);
        match *b.get(i)? {
            b'"' => return Some(i + 1),
            b'\\' => match *b.get(i + 1)? {
                b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => i += 2,
                b'u' => {
                    let hex = b.get(i + 2..i + 6)?;
                    if !hex.iter().all(u8::is_ascii_hexdigit) {
                        return None;
                    }
                    i += 6;
                }
                _ => return None,
            },
            // A control character (U+0000 to U+001F), which must be escaped.
            _ => return None,
        }
    }
}

/// The index of the first quote, backslash or control character at or after `i`
/// (`b.len()` for none); 16 bytes per step.
fn plain_end(b: &[u8], mut i: usize) -> usize {
    while let Some(chunk) = b.get(i..i + 16) {
        let marks = special_marks(chunk.try_into().expect("16 bytes"));
        if marks != 0 {
            return i + first_marked(marks);
        }
        i += 16;
    }
    if i >= b.len() {
        b.len()
    } else if b.len() >= 16 {
        // The last 16 bytes, the marks of those before `i` shifted out.
        let start = b.len() - 16;
        let marks = special_marks(b[start..].try_into().expect("16 bytes")) >> ((i - start) * 8);
        i + first_marked(marks).min(b.len() - i)
    } else {
        // Shorter than one step: padded with quotes, which stop the scan where `b` ends.
        let mut last = [b'"'; 16];
        last[..b.len() - i].copy_from_slice(&b[i..]);
        i + first_marked(special_marks(&last))
    }
}

/// One byte of `0xFF` in the result for each quote, backslash or control character of
/// `chunk`, in its place (little-endian). Written so that the compiler compares the 16
/// bytes at once (no branch per byte).
fn special_marks(chunk: &[u8; 16]) -> u128 {
    let marks: [u8; 16] = std::array::from_fn(|k| {
        let c = chunk[k];
        if (c < 0x20) | (c == b'"') | (c == b'\\') {
            0xFF
        } else {
            0
        }
    });
    u128::from_le_bytes(marks)
}

/// The index of the first marked byte of [`special_marks`]' result (16 when none is).
fn first_marked(marks: u128) -> usize {
    marks.trailing_zeros() as usize / 8
}

/// For a number starting at `i` (`-`? int frac? exp?), the index after it.
fn number_end(b: &[u8], mut i: usize) -> Option<usize> {
    if b.get(i) == Some(&b'-') {
        i += 1;
    }
    match b.get(i)? {
        b'0' => i += 1,
        b'1'..=b'9' => i = digits_end(b, i + 1),
        _ => return None,
    }
    if b.get(i) == Some(&b'.') {
        let end = digits_end(b, i + 1);
        if end == i + 1 {
            return None;
        }
        i = end;
    }
    if let Some(b'e' | b'E') = b.get(i) {
        i += 1;
        if let Some(b'+' | b'-') = b.get(i) {
            i += 1;
        }
        let end = digits_end(b, i);
        if end == i {
            return None;
        }
        i = end;
    }
    Some(i)
}

/// The index after the ASCII digits at `i`.
fn digits_end(b: &[u8], mut i: usize) -> usize {
    while b.get(i).is_some_and(u8::is_ascii_digit) {
        i += 1;
    }
    i
}

#[cfg(test)]
#[path = "json_check_tests.rs"]
mod tests;
