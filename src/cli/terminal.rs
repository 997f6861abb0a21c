//! Text bound for the operator's terminal. Event ids, types, correlation ids, error text and
//! stream names come from producers and sinks; printed raw, their control characters could
//! clear the screen, move the cursor, set the window title (`ESC ] 0 ; ... BEL`), overwrite a
//! line (`\r`, backspace) or reorder what is shown (bidi overrides). Every human-readable
//! output (the CLI's tables and text, the human log format) shows them as visible escapes
//! instead: `\x1b`, `\r`, `\n`, `\u{9b}`, `\u{202e}`. JSON output keeps the exact bytes (its
//! own escaping makes them inert). A backslash itself is left as it is, so `\x1b` can also be
//! literal text: `--json` has the exact bytes.

use std::borrow::Cow;
use std::fmt::{self, Write as _};

/// Whether `c` is shown as an escape: the C0 controls (tab and newline included), DEL, the
/// C1 controls, and the Unicode formatting characters that reorder or break displayed text
/// (the Arabic letter mark, LRM/RLM, the line and paragraph separators, the bidi embeddings,
/// overrides and isolates).
pub(crate) fn is_escaped(c: char) -> bool {
    matches!(
        c,
        '\0'..='\x1f'
            | '\x7f'..='\u{9f}'
            | '\u{61c}'
            | '\u{200e}'
            | '\u{200f}'
            | '\u{2028}'..='\u{202e}'
            | '\u{2066}'..='\u{2069}'
    )
}

/// `s` for one line of a table or message: every [`is_escaped`] character (newline and tab
/// included) as a visible escape. Borrows `s` when it has none.
pub(crate) fn escape_line(s: &str) -> Cow<'_, str> {
    escape(s, false)
}

/// `s` for multi-line text (an error message with a quoted config line): like
/// [`escape_line`] but newline and tab stay as they are.
pub(crate) fn escape_text(s: &str) -> Cow<'_, str> {
    escape(s, true)
}

fn escape(s: &str, keep_layout: bool) -> Cow<'_, str> {
    if !s.chars().any(|c| needs_escape(c, keep_layout)) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 16);
    // Writing to a String cannot fail.
    let _ = write_escaped(&mut out, s, keep_layout);
    Cow::Owned(out)
}

fn needs_escape(c: char, keep_layout: bool) -> bool {
    is_escaped(c) && !(keep_layout && matches!(c, '\n' | '\t'))
}

/// Writes `s` to `out` with the characters [`needs_escape`] names escaped.
fn write_escaped<W: fmt::Write + ?Sized>(out: &mut W, s: &str, keep_layout: bool) -> fmt::Result {
    let mut start = 0;
    for (i, c) in s.char_indices() {
        if !needs_escape(c, keep_layout) {
            continue;
        }
        out.write_str(&s[start..i])?;
        match c {
            '\n' => out.write_str("\\n")?,
            '\r' => out.write_str("\\r")?,
            '\t' => out.write_str("\\t")?,
            c if (c as u32) < 0x80 => write!(out, "\\x{:02x}", c as u32)?,
            c => write!(out, "\\u{{{:x}}}", c as u32)?,
        }
        start = i + c.len_utf8();
    }
    out.write_str(&s[start..])
}

/// A `fmt::Write` that passes text on to the inner writer with every [`is_escaped`]
/// character escaped (streaming: no copy of the whole value).
pub(crate) struct EscapingWriter<'a, W: ?Sized>(pub &'a mut W);

impl<W: fmt::Write + ?Sized> fmt::Write for EscapingWriter<'_, W> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        write_escaped(self.0, s, false)
    }
}

/// Formats the wrapped value (`{:?}` or `{}`) with every [`is_escaped`] character escaped.
pub(crate) struct Escaped<T>(pub T);

impl<T: fmt::Debug> fmt::Debug for Escaped<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(EscapingWriter(f), "{:?}", self.0)
    }
}

impl<T: fmt::Display> fmt::Display for Escaped<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(EscapingWriter(f), "{}", self.0)
    }
}

/// `println!` for human output: the formatted line with every [`is_escaped`] character
/// shown as an escape. JSON output uses `println!`.
macro_rules! outln {
    ($($arg:tt)*) => {
        println!("{}", $crate::cli::terminal::escape_line(&format!($($arg)*)))
    };
}
pub(crate) use outln;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_text_is_borrowed_unchanged() {
        let s = "pay.captured ünïcødé 1700000000000-0 a\\x1b \"quoted\" 日本";
        assert!(matches!(escape_line(s), Cow::Borrowed(t) if t == s));
        assert!(matches!(escape_text(s), Cow::Borrowed(t) if t == s));
    }

    #[test]
    fn terminal_sequences_become_visible_escapes() {
        let hostile = "a\x1b[2Jb\x1b]0;pwned\x07c\rd\x08e\x7f\0f\u{9b}31m";
        assert_eq!(
            escape_line(hostile),
            "a\\x1b[2Jb\\x1b]0;pwned\\x07c\\rd\\x08e\\x7f\\x00f\\u{9b}31m"
        );
    }

    #[test]
    fn bidi_and_separators_are_escaped() {
        assert_eq!(
            escape_line("x\u{202e}gpj.exe\u{202c}\u{2066}\u{2069}\u{200f}\u{61c}\u{2028}y"),
            "x\\u{202e}gpj.exe\\u{202c}\\u{2066}\\u{2069}\\u{200f}\\u{61c}\\u{2028}y"
        );
        // Neighbours of the escaped ranges stay.
        assert_eq!(
            escape_line("\u{a0}\u{2027}\u{202f}\u{2065}\u{206a}"),
            "\u{a0}\u{2027}\u{202f}\u{2065}\u{206a}"
        );
    }

    #[test]
    fn line_escapes_newline_and_tab_text_keeps_them() {
        assert_eq!(escape_line("a\nb\tc\r"), "a\\nb\\tc\\r");
        assert_eq!(escape_text("a\nb\tc\r\x1b"), "a\nb\tc\\r\\x1b");
    }

    #[test]
    fn wrappers_escape_debug_and_display() {
        assert_eq!(format!("{}", Escaped("a\x1bb")), "a\\x1bb");
        // Debug of a str already escapes ESC as \u{1b}; the bidi override is escaped too.
        assert_eq!(format!("{:?}", Escaped("a\u{202e}b")), "\"a\\u{202e}b\"");
        assert_eq!(format!("{:?}", Escaped(7u32)), "7");
    }

    #[test]
    fn every_escaped_character_is_covered_and_no_other() {
        for c in (0u32..0x3000).filter_map(char::from_u32) {
            let out = escape_line(&c.to_string()).into_owned();
            assert_eq!(out != c.to_string(), is_escaped(c), "U+{:04X}", c as u32);
            assert!(
                !out.chars().any(is_escaped),
                "U+{:04X} -> {out:?}",
                c as u32
            );
        }
    }
}
