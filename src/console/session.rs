//! The console's session cookie and CSRF tokens: stateless, signed with a key derived from
//! the operator token (HMAC-SHA256), so every instance with the same token accepts a session
//! and changing the token revokes them all. The token itself is never in the cookie.
//!
//! Cookie value: `v1.<issued_ms>.<expires_ms>.<hex HMAC of "v1.<issued_ms>.<expires_ms>">`.
//! CSRF token of a session: hex HMAC of `<cookie value>|csrf`. Both are compared in
//! constant time ([`aws_lc_rs::hmac::verify`]).

use std::time::Duration;

use aws_lc_rs::hmac;
use axum::http::{HeaderMap, header};

use crate::model::secret::Secret;

/// Name of the session cookie.
pub const COOKIE: &str = "ew_console";

/// How long a session lasts after login.
pub const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);

/// The signing key of sessions and CSRF tokens: HMAC-SHA256 keyed by the operator token
/// over a fixed label (so the key is not the token itself and serves nothing else).
pub struct SessionKey(Box<hmac::Key>);

impl SessionKey {
    /// The key derived from the operator token.
    pub fn from_token(token: &Secret) -> Self {
        let root = hmac::Key::new(hmac::HMAC_SHA256, token.expose().as_bytes());
        let derived = hmac::sign(&root, b"event-worker console session key v1");
        SessionKey(Box::new(hmac::Key::new(
            hmac::HMAC_SHA256,
            derived.as_ref(),
        )))
    }

    fn mac(&self, msg: &str) -> String {
        hex(hmac::sign(&self.0, msg.as_bytes()).as_ref())
    }

    fn verify(&self, msg: &str, mac_hex: &str) -> bool {
        unhex(mac_hex).is_some_and(|mac| hmac::verify(&self.0, msg.as_bytes(), &mac).is_ok())
    }

    /// A new session cookie value issued at `now_ms`, valid for [`SESSION_TTL`].
    pub fn issue(&self, now_ms: u64) -> String {
        let expires = now_ms + SESSION_TTL.as_millis() as u64;
        let body = format!("v1.{now_ms}.{expires}");
        format!("{body}.{}", self.mac(&body))
    }

    /// Whether `value` is a session this key signed that has not expired at `now_ms`.
    pub fn valid(&self, value: &str, now_ms: u64) -> bool {
        let Some((body, mac)) = value.rsplit_once('.') else {
            return false;
        };
        let mut parts = body.split('.');
        let (Some("v1"), Some(issued), Some(expires), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return false;
        };
        let (Ok(issued), Ok(expires)) = (issued.parse::<u64>(), expires.parse::<u64>()) else {
            return false;
        };
        self.verify(body, mac) && issued <= now_ms + 60_000 && now_ms < expires
    }

    /// The CSRF token bound to the session `value`.
    pub fn csrf(&self, value: &str) -> String {
        self.mac(&format!("{value}|csrf"))
    }

    /// Whether `token` is the CSRF token of the session `value` (constant time).
    pub fn csrf_ok(&self, value: &str, token: &str) -> bool {
        self.verify(&format!("{value}|csrf"), token)
    }
}

/// The session cookie's value in `headers`, if any.
pub fn cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v)
}

/// Whether the request came over HTTPS (a TLS-terminating proxy's `X-Forwarded-Proto`, or
/// an `https` Origin): the cookie then gets `Secure`.
pub fn over_https(headers: &HeaderMap) -> bool {
    let forwarded = headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("https"));
    let origin = headers
        .get(header::ORIGIN)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("https://"));
    forwarded || origin
}

/// The `Set-Cookie` value of a new session (`value`), or of a logout (`None`: expired now).
pub fn set_cookie(value: Option<&str>, secure: bool) -> String {
    let secure = if secure { "; Secure" } else { "" };
    match value {
        Some(v) => format!(
            "{COOKIE}={v}; Path=/ui; HttpOnly; SameSite=Strict; Max-Age={}{secure}",
            SESSION_TTL.as_secs()
        ),
        None => format!("{COOKIE}=; Path=/ui; HttpOnly; SameSite=Strict; Max-Age=0{secure}"),
    }
}

/// Whether a POST is same-origin: its `Origin` (or, without one, its `Referer`) names the
/// host of its `Host` header. A request with neither, or with `Origin: null`, is refused.
pub fn same_origin(headers: &HeaderMap) -> bool {
    let Some(host) = headers.get(header::HOST).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let source = headers
        .get(header::ORIGIN)
        .or_else(|| headers.get(header::REFERER))
        .and_then(|v| v.to_str().ok());
    let Some(url) = source.and_then(|s| url::Url::parse(s).ok()) else {
        return false;
    };
    if !matches!(url.scheme(), "http" | "https") {
        return false;
    }
    let Some(h) = url.host_str() else {
        return false;
    };
    let authority = match url.port() {
        Some(p) => format!("{h}:{p}"),
        None => h.to_string(),
    };
    authority.eq_ignore_ascii_case(host)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) || !s.is_ascii() {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn key(t: &str) -> SessionKey {
        SessionKey::from_token(&Secret::new(t.to_string()))
    }

    #[test]
    fn a_session_is_valid_until_it_expires_and_only_for_the_same_token() {
        let k = key("operator-token-1");
        let s = k.issue(1_000);
        assert!(k.valid(&s, 1_000));
        assert!(k.valid(&s, 1_000 + SESSION_TTL.as_millis() as u64 - 1));
        assert!(!k.valid(&s, 1_000 + SESSION_TTL.as_millis() as u64));
        assert!(key("operator-token-1").valid(&s, 2_000), "another instance");
        assert!(
            !key("operator-token-2").valid(&s, 2_000),
            "a new token revokes"
        );
        assert!(!s.contains("operator-token-1"));
        let forged = s.replacen(".1000.", ".1000000000000.", 1);
        assert!(!k.valid(&forged, 2_000));
        for bad in ["", "v1", "v1.1.2", "v1.1.2.zz", "v2.1.2.00", "v1.1.2.3.00"] {
            assert!(!k.valid(bad, 1), "{bad}");
        }
    }

    #[test]
    fn csrf_tokens_are_bound_to_their_session() {
        let k = key("t");
        let (a, b) = (k.issue(1), k.issue(2));
        assert!(k.csrf_ok(&a, &k.csrf(&a)));
        assert!(!k.csrf_ok(&b, &k.csrf(&a)));
        assert!(!k.csrf_ok(&a, ""));
    }

    #[test]
    fn same_origin_needs_a_matching_origin_or_referer() {
        let h = |pairs: &[(header::HeaderName, &str)]| {
            let mut m = HeaderMap::new();
            for (k, v) in pairs {
                m.insert(k.clone(), HeaderValue::from_str(v).unwrap());
            }
            m
        };
        let host = (header::HOST, "127.0.0.1:8080");
        assert!(same_origin(&h(&[
            host.clone(),
            (header::ORIGIN, "http://127.0.0.1:8080")
        ])));
        assert!(same_origin(&h(&[
            host.clone(),
            (header::REFERER, "http://127.0.0.1:8080/ui/dlq?x=1")
        ])));
        assert!(!same_origin(&h(&[
            host.clone(),
            (header::ORIGIN, "http://127.0.0.1:9999")
        ])));
        assert!(!same_origin(&h(&[host.clone(), (header::ORIGIN, "null")])));
        assert!(!same_origin(&h(&[host])));
    }

    #[test]
    fn the_cookie_is_http_only_strict_and_scoped_to_ui() {
        assert_eq!(
            set_cookie(Some("v"), true),
            "ew_console=v; Path=/ui; HttpOnly; SameSite=Strict; Max-Age=43200; Secure"
        );
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; ew_console=xyz; b=2"),
        );
        assert_eq!(cookie(&h), Some("xyz"));
    }
}
