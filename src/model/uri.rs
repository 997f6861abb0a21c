//! RFC 3986 checks of the URI-valued CloudEvents attributes: `source` (a URI reference) and
//! `dataschema` (an absolute URI). ASCII only (a URI, not an IRI), byte scans, no allocation.

/// RFC 3986 `unreserved / sub-delims / ":" / "@"` (a path character besides `%`).
fn is_pchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@".contains(&b)
}

/// Every byte is allowed by `allowed` or starts a `%XX` escape.
fn all_chars(s: &[u8], allowed: impl Fn(u8) -> bool) -> bool {
    let mut i = 0;
    while i < s.len() {
        if s[i] == b'%' {
            if i + 2 >= s.len() || !(s[i + 1].is_ascii_hexdigit() && s[i + 2].is_ascii_hexdigit()) {
                return false;
            }
            i += 3;
        } else if allowed(s[i]) {
            i += 1;
        } else {
            return false;
        }
    }
    true
}

/// RFC 3986 `URI-reference` (an absolute URI or a relative reference), ASCII only.
pub fn is_uri_reference(s: &str) -> bool {
    let b = s.as_bytes();
    let end_of_first = b.iter().position(|c| b"/?#".contains(c)).unwrap_or(b.len());
    let rest = match b[..end_of_first].iter().position(|&c| c == b':') {
        Some(colon) if is_scheme(&b[..colon]) => &b[colon + 1..],
        // A colon in the first segment of a relative reference is not allowed.
        Some(_) => return false,
        None => b,
    };
    is_hier_part(rest)
}

/// RFC 3986 `absolute-URI` with an optional fragment (what `dataschema` needs).
pub fn is_absolute_uri(s: &str) -> bool {
    let b = s.as_bytes();
    match b.iter().position(|&c| c == b':') {
        Some(colon) if is_scheme(&b[..colon]) => is_hier_part(&b[colon + 1..]),
        _ => false,
    }
}

fn is_scheme(s: &[u8]) -> bool {
    s.first().is_some_and(u8::is_ascii_alphabetic)
        && s.iter()
            .all(|c| c.is_ascii_alphanumeric() || b"+-.".contains(c))
}

/// `[//authority] path [?query] [#fragment]` after the scheme (if any).
fn is_hier_part(s: &[u8]) -> bool {
    let (s, fragment) = match s.iter().position(|&c| c == b'#') {
        Some(at) => (&s[..at], Some(&s[at + 1..])),
        None => (s, None),
    };
    let (s, query) = match s.iter().position(|&c| c == b'?') {
        Some(at) => (&s[..at], Some(&s[at + 1..])),
        None => (s, None),
    };
    let query_ok = |q: &[u8]| all_chars(q, |c| is_pchar(c) || c == b'/' || c == b'?');
    if !fragment.is_none_or(query_ok) || !query.is_none_or(query_ok) {
        return false;
    }
    let path = match s.strip_prefix(b"//") {
        Some(after) => {
            let end = after.iter().position(|&c| c == b'/').unwrap_or(after.len());
            if !is_authority(&after[..end]) {
                return false;
            }
            &after[end..]
        }
        None => s,
    };
    all_chars(path, |c| is_pchar(c) || c == b'/')
}

/// `[userinfo@]host[:port]`, host a reg-name, IPv4 or a bracketed IP literal.
fn is_authority(s: &[u8]) -> bool {
    let (userinfo, hostport) = match s.iter().rposition(|&c| c == b'@') {
        Some(at) => (&s[..at], &s[at + 1..]),
        None => (&b""[..], s),
    };
    if !all_chars(userinfo, |c| is_pchar(c) && c != b'@') {
        return false;
    }
    let (host, port) = if let Some(inner) = hostport.strip_prefix(b"[") {
        let Some(close) = inner.iter().position(|&c| c == b']') else {
            return false;
        };
        let literal = &inner[..close];
        if literal.is_empty()
            || !literal
                .iter()
                .all(|c| c.is_ascii_hexdigit() || b":.vV".contains(c))
        {
            return false;
        }
        match &inner[close + 1..] {
            [] => (&b""[..], None),
            [b':', port @ ..] => (&b""[..], Some(port)),
            _ => return false,
        }
    } else {
        match hostport.iter().position(|&c| c == b':') {
            Some(at) => (&hostport[..at], Some(&hostport[at + 1..])),
            None => (hostport, None),
        }
    };
    port.is_none_or(|p| p.iter().all(u8::is_ascii_digit))
        && all_chars(host, |c| is_pchar(c) && c != b':' && c != b'@')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uri_references() {
        for ok in [
            "/api/bookings",
            "https://example.com:8443/a?b=c#d",
            "urn:uuid:6e8bc430-9c3a-11d9-9669-0800200c9a66",
            "mailto:ops@example.com",
            "1-555-123-4567",
            "cloudevents/spec/pull/123",
            "//[::1]:80/x",
            "a%20b",
        ] {
            assert!(is_uri_reference(ok), "{ok}");
        }
        for bad in [
            "a b",
            "1my:source",
            "ümlaut",
            "/a%2",
            "http://a b/",
            "x#y#z",
        ] {
            assert!(!is_uri_reference(bad), "{bad}");
        }
        assert!(is_absolute_uri("https://example.com/schema.json"));
        assert!(!is_absolute_uri("/schema.json"));
    }
}
