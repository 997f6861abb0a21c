//! Messages for a file that does not parse: where (file, line, column, the line quoted with
//! a caret) and what, in plain words: "unknown key `max_attempt` in [retry]; did you mean
//! `max_attempts`?", "expected an integer, found a string".
//!
//! The valid keys come from serde's own "expected one of ..." text, so a key added to the
//! raw structs is suggested without a list kept here. Quoted lines hide URL passwords and
//! the values of request headers (they may carry tokens).

use std::path::Path;

use super::raw::RawConfig;

/// The text being loaded and the file it came from (none in tests and without `--config`).
#[derive(Debug, Clone, Copy)]
pub(super) struct Source<'a> {
    /// The file, when there is one.
    pub file: Option<&'a Path>,
    /// Its text.
    pub text: &'a str,
}

impl Source<'_> {
    /// The message of a TOML syntax error: where, what, and the line.
    pub fn syntax_error(&self, e: &toml::de::Error) -> String {
        let mut what = e.message().trim().replace('\n', "; ");
        if what == "invalid basic string" {
            what.push_str(" (is its closing `\"` missing?)");
        }
        match e.span() {
            Some(span) => self.located(span, &what, false),
            None => format!("{}: {what}", self.name()),
        }
    }

    /// The message of a key the raw structs refuse (`path` as serde_path_to_error prints
    /// it, `message` serde's text), located in the file when the key is there (a value
    /// from an `EVENTS_*` variable has no line).
    pub fn key_error(&self, path: &str, message: &str) -> String {
        let what = explain(path, message);
        match self.span_of(path) {
            Some(span) => self.located(span, &what, path.contains("headers")),
            None => what,
        }
    }

    /// Where the file's own text fails at `path`, found by reading the text again with
    /// positions (the table the error came from has the environment applied and no spans).
    fn span_of(&self, path: &str) -> Option<std::ops::Range<usize>> {
        let de = toml::Deserializer::new(self.text);
        match serde_path_to_error::deserialize::<_, RawConfig>(de) {
            Err(e) if e.path().to_string().trim_start_matches('.') == path => e.into_inner().span(),
            _ => None,
        }
    }

    /// `config file <path>` or `config file`.
    fn name(&self) -> String {
        match self.file {
            Some(f) => format!("config file {}", f.display()),
            None => "config file".to_string(),
        }
    }

    /// `<name>, line L, column C: <what>` and the line with a caret under `span`.
    fn located(&self, span: std::ops::Range<usize>, what: &str, secret_values: bool) -> String {
        let start = floor_char_boundary(self.text, span.start.min(self.text.len()));
        let line_start = self.text[..start].rfind('\n').map_or(0, |i| i + 1);
        let line_end = self.text[start..]
            .find('\n')
            .map_or(self.text.len(), |i| start + i);
        let line_no = self.text[..start].matches('\n').count() + 1;
        let raw_line = self.text[line_start..line_end].trim_end_matches('\r');
        let column = self.text[line_start..start].chars().count() + 1;
        let in_headers = secret_values || self.in_headers_table(line_start);
        let shown = redact_line(raw_line, in_headers);
        let width = self.text[start..span.end.clamp(start, line_end)]
            .chars()
            .count()
            .max(1);
        let gutter = " ".repeat(line_no.to_string().len());
        // A redacted line is shorter: the caret stays within what is shown.
        let shown_len = shown.chars().count();
        let indent = (column - 1).min(shown_len);
        let width = width.min(shown_len.saturating_sub(indent)).max(1);
        format!(
            "{}, line {line_no}, column {column}: {what}\n {gutter} |\n {line_no} | {shown}\n {gutter} | {}{}",
            self.name(),
            " ".repeat(indent),
            "^".repeat(width)
        )
    }

    /// Whether the table header above `offset` is a `headers` table.
    fn in_headers_table(&self, offset: usize) -> bool {
        self.text[..offset]
            .lines()
            .rev()
            .find(|l| l.trim_start().starts_with('['))
            .is_some_and(|l| l.contains("headers"))
    }
}

/// The largest char boundary at or below `i`.
fn floor_char_boundary(text: &str, mut i: usize) -> usize {
    while !text.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// `line` as it may be shown: a URL's password replaced by `***`, and every quoted value
/// replaced by `"***"` when `secret_values` (request headers).
fn redact_line(line: &str, secret_values: bool) -> String {
    let mut out = String::with_capacity(line.len());
    let mut rest = line;
    while let Some(i) = rest.find("://") {
        let (head, tail) = rest.split_at(i + 3);
        out.push_str(head);
        let authority_end = tail
            .find(['/', '"', '\'', ' ', '?', '#'])
            .unwrap_or(tail.len());
        match tail[..authority_end].rfind('@') {
            Some(at) => {
                let userinfo = &tail[..at];
                match userinfo.find(':') {
                    Some(colon) => {
                        out.push_str(&userinfo[..=colon]);
                        out.push_str("***");
                    }
                    None => out.push_str(userinfo),
                }
                rest = &tail[at..];
            }
            None => rest = tail,
        }
    }
    out.push_str(rest);
    if secret_values {
        mask_quoted(&out)
    } else {
        out
    }
}

/// Every `"..."` or `'...'` in `line` as `"***"`.
fn mask_quoted(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut quote: Option<char> = None;
    for ch in line.chars() {
        match quote {
            Some(q) if ch == q => {
                out.push_str("***");
                out.push(ch);
                quote = None;
            }
            Some(_) => {}
            None => {
                out.push(ch);
                if matches!(ch, '"' | '\'') {
                    quote = Some(ch);
                }
            }
        }
    }
    if quote.is_some() {
        out.push_str("***");
    }
    out
}

/// Serde's `message` about `path` in plain words.
fn explain(path: &str, message: &str) -> String {
    if let Some(rest) = message.strip_prefix("unknown field `") {
        let (key, valid) = rest.split_once('`').unwrap_or((rest, ""));
        return unknown_key(path, key, &backticked(valid));
    }
    if let Some(rest) = message.strip_prefix("invalid type: ") {
        let (found, expected) = rest.split_once(", expected ").unwrap_or((rest, ""));
        return format!(
            "{path}: expected {}, found {}",
            type_name(expected),
            found_name(found)
        );
    }
    if let Some(rest) = message.strip_prefix("missing field `") {
        let key = rest.split('`').next().unwrap_or(rest);
        let at = if path.is_empty() || path == "." {
            key.to_string()
        } else {
            format!("{path}.{key}")
        };
        return format!("{at}: is required");
    }
    if path.is_empty() || path == "." {
        message.to_string()
    } else {
        format!("{path}: {message}")
    }
}

/// "unknown key `k` in [section]; did you mean `x`?" (or the valid keys when none is close).
fn unknown_key(path: &str, key: &str, valid: &[&str]) -> String {
    let parent = path
        .strip_suffix(key)
        .map(|p| p.trim_end_matches('.'))
        .unwrap_or("");
    let place = if parent.is_empty() {
        "at the top level".to_string()
    } else if parent.ends_with(']') {
        let section = parent.split('[').next().unwrap_or(parent);
        format!("in a [[{section}]] entry ({parent})")
    } else {
        format!("in [{parent}]")
    };
    match closest(key, valid.iter().copied()) {
        Some(best) => format!("unknown key `{key}` {place}; did you mean `{best}`?"),
        None => format!(
            "unknown key `{key}` {place}; valid keys: {}",
            valid.join(", ")
        ),
    }
}

/// The words between backticks in `text`.
fn backticked(text: &str) -> Vec<&str> {
    text.split('`').skip(1).step_by(2).collect()
}

/// A serde "expected" text in plain words.
fn type_name(expected: &str) -> String {
    match expected {
        "i64" | "u64" | "i32" | "u32" | "usize" => "an integer".into(),
        "f64" | "f32" => "a number".into(),
        "a sequence" => "a list such as [\"a.b\"]".into(),
        "a boolean" | "bool" => "true or false".into(),
        e if e.starts_with("struct ") || e == "a map" => "a table".into(),
        e => e.to_string(),
    }
}

/// A serde "invalid type" description (`string "16"`, `integer `5``) as a kind, without
/// the value: the quoted line shows it, and a value is not repeated where it may be secret.
fn found_name(found: &str) -> &'static str {
    let kind = found.split([' ', '`', '"']).next().unwrap_or(found);
    match kind {
        "string" => "a string",
        "integer" => "an integer",
        "floating" => "a decimal number",
        "boolean" => "true or false",
        "sequence" => "a list",
        "map" => "a table",
        _ => "another type",
    }
}

/// The candidate closest to `word` by edit distance, if close enough to be a typo (at
/// most a third of the word's length, at least 1).
pub(super) fn closest<'a>(
    word: &str,
    candidates: impl Iterator<Item = &'a str>,
) -> Option<&'a str> {
    let limit = (word.chars().count() / 3).max(1);
    candidates
        .map(|c| (edit_distance(word, c), c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// Levenshtein distance (insertions, deletions, substitutions), ASCII case-insensitive.
pub(super) fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().map(|c| c.to_ascii_lowercase()).collect();
    let b: Vec<char> = b.chars().map(|c| c.to_ascii_lowercase()).collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != cb);
            let next = (row[j + 1] + 1).min(row[j] + 1).min(prev + cost);
            prev = row[j + 1];
            row[j + 1] = next;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distances_and_suggestions() {
        assert_eq!(edit_distance("max_attempt", "max_attempts"), 1);
        assert_eq!(edit_distance("concurency", "concurrency"), 1);
        assert_eq!(edit_distance("abc", "abc"), 0);
        assert_eq!(edit_distance("", "ab"), 2);
        let keys = ["max_attempts", "multiplier", "jitter"];
        assert_eq!(
            closest("max_attempt", keys.into_iter()),
            Some("max_attempts")
        );
        assert_eq!(closest("color", keys.into_iter()), None);
    }

    #[test]
    fn quoted_lines_hide_passwords_and_header_values() {
        assert_eq!(
            redact_line(
                r#"redis_url = "redis://u:placeholder-password@h:6379"#,
                false
            ),
            r#"redis_url = "redis://u:***@h:6379"#
        );
        assert_eq!(
            redact_line(r#"url = "http://h/x""#, false),
            r#"url = "http://h/x""#
        );
        assert_eq!(
            redact_line(
                r#"headers = { Authorization = "Bearer abc", "X" = 'y' }"#,
                true
            ),
            r#"headers = { Authorization = "***", "***" = '***' }"#
        );
    }
}
