//! Secrets that must never reach logs, errors, health output or metrics: the Redis URL's
//! password and the API token. Their `Debug`/`Display` print `***`.

use std::fmt;

/// A secret string. Only [`Secret::expose`] gives the value, for the one place that needs it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The secret itself; call only where it is sent to its consumer (Redis, a comparison).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// Why a Redis URL was refused; the message never contains the password.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RedisUrlError {
    /// Not a URL at all (the parser's message does not echo the input).
    #[error("not a valid URL ({0})")]
    Invalid(url::ParseError),
    /// A scheme other than [`RedisUrl::SCHEMES`].
    #[error(
        "unsupported scheme `{scheme}` in {redacted} (use redis://, rediss://, redis-cluster:// or rediss-cluster://)"
    )]
    Scheme {
        /// The scheme given.
        scheme: String,
        /// The URL, password hidden.
        redacted: String,
    },
    /// No host.
    #[error("no host in {0}")]
    NoHost(String),
    /// A `#fragment` (such as redis-rs' `#insecure`).
    #[error(
        "URL fragments are not supported ({0}); certificate checks cannot be turned off by URL"
    )]
    Fragment(String),
    /// The stored URL no longer parses when a password is added.
    #[error("{0}")]
    Reparse(url::ParseError),
    /// The URL cannot carry a password.
    #[error("cannot set a password on {0}")]
    CannotSetPassword(String),
}

/// A Redis URL whose password is hidden from every `Display`/`Debug`.
#[derive(Clone)]
pub struct RedisUrl {
    raw: Secret,
    redacted: String,
    password: Option<String>,
}

impl RedisUrl {
    /// Schemes the worker accepts.
    pub const SCHEMES: &'static [&'static str] =
        &["redis", "rediss", "redis-cluster", "rediss-cluster"];

    /// Parses and checks a Redis URL. Errors never contain the password.
    ///
    /// # Errors
    /// A [`RedisUrlError`] (safe to print) when the URL does not parse, has an unknown scheme, no host,
    /// or a `#fragment` (such as redis-rs' `#insecure`, which we refuse rather than obey).
    pub fn parse(raw: &str) -> Result<Self, RedisUrlError> {
        let parsed = url::Url::parse(raw).map_err(RedisUrlError::Invalid)?;
        let password = parsed
            .password()
            .map(percent_decode)
            .filter(|p| !p.is_empty());
        let mut shown = parsed.clone();
        if parsed.password().is_some() {
            let _ = shown.set_password(Some("***"));
        }
        let redacted = shown.to_string();
        if !Self::SCHEMES.contains(&parsed.scheme()) {
            return Err(RedisUrlError::Scheme {
                scheme: parsed.scheme().to_string(),
                redacted,
            });
        }
        if parsed.host_str().is_none_or(str::is_empty) {
            return Err(RedisUrlError::NoHost(redacted));
        }
        if parsed.fragment().is_some() {
            return Err(RedisUrlError::Fragment(redacted));
        }
        Ok(RedisUrl {
            raw: Secret::new(raw),
            redacted,
            password,
        })
    }

    /// The same URL with `password` as its password (from a password file).
    ///
    /// # Errors
    /// When the URL cannot carry a password.
    pub fn with_password(&self, password: &str) -> Result<RedisUrl, RedisUrlError> {
        let mut parsed = url::Url::parse(self.raw.expose()).map_err(RedisUrlError::Reparse)?;
        parsed
            .set_password(Some(password))
            .map_err(|_| RedisUrlError::CannotSetPassword(self.redacted.clone()))?;
        RedisUrl::parse(parsed.as_str())
    }

    /// The URL with its password, for the Redis client only.
    pub fn expose(&self) -> &str {
        self.raw.expose()
    }

    /// Whether the URL asks for TLS.
    pub fn is_tls(&self) -> bool {
        self.redacted.starts_with("rediss")
    }

    /// Whether the URL names a Redis Cluster.
    pub fn is_cluster(&self) -> bool {
        self.redacted.contains("-cluster://")
    }

    /// Removes the password (raw and percent-decoded) from any text, e.g. an error message
    /// from a library that might echo the URL.
    pub fn scrub(&self, text: &str) -> String {
        let mut out = text.replace(self.raw.expose(), &self.redacted);
        if let Some(p) = &self.password {
            out = out.replace(p.as_str(), "***");
            let encoded: String = url::form_urlencoded::byte_serialize(p.as_bytes()).collect();
            out = out.replace(&encoded, "***");
        }
        out
    }
}

fn percent_decode(s: &str) -> String {
    url::form_urlencoded::parse(format!("x={s}").as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_else(|| s.to_string())
}

impl fmt::Display for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted)
    }
}

impl fmt::Debug for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RedisUrl({})", self.redacted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_is_hidden_everywhere() {
        let u = RedisUrl::parse("rediss://user:Cn4ry%2Fp%40ss@host:6380/0").unwrap();
        for shown in [u.to_string(), format!("{u:?}")] {
            assert!(!shown.contains("Cn4ry"), "{shown}");
            assert!(shown.contains("***"), "{shown}");
        }
        assert!(u.is_tls());
        let scrubbed = u.scrub("failed: Cn4ry/p@ss and Cn4ry%2Fp%40ss");
        assert!(!scrubbed.contains("Cn4ry"), "{scrubbed}");
    }

    #[test]
    fn bad_urls_are_refused_without_echoing_the_password() {
        let e = RedisUrl::parse("http://:secretpw@h:1")
            .unwrap_err()
            .to_string();
        assert!(e.contains("scheme") && !e.contains("secretpw"), "{e}");
        let e = RedisUrl::parse("rediss://:secretpw@h:1#insecure")
            .unwrap_err()
            .to_string();
        assert!(e.contains("fragment") && !e.contains("secretpw"), "{e}");
        assert!(RedisUrl::parse("not a url").is_err());
    }

    #[test]
    fn error_texts_are_unchanged() {
        let e = |raw: &str| RedisUrl::parse(raw).unwrap_err().to_string();
        assert_eq!(
            e("http://:pw@h:1"),
            "unsupported scheme `http` in http://:***@h:1/ (use redis://, rediss://, redis-cluster:// or rediss-cluster://)"
        );
        assert_eq!(e("redis://"), "no host in redis://");
        assert_eq!(
            e("redis://h#x"),
            "URL fragments are not supported (redis://h#x); certificate checks cannot be turned off by URL"
        );
        assert_eq!(
            e("not a url"),
            "not a valid URL (relative URL without a base)"
        );
    }

    #[test]
    fn password_from_a_file_replaces_the_urls() {
        let u = RedisUrl::parse("redis://worker@h:1").unwrap();
        let with = u.with_password("p@ss/word").unwrap();
        assert_eq!(with.to_string(), "redis://worker:***@h:1");
        assert!(with.expose().contains("p%40ss%2Fword") || with.expose().contains("p%40ss/word"));
        assert!(!with.scrub("x p@ss/word y").contains("p@ss"));
    }

    #[test]
    fn secret_debug_is_masked() {
        assert_eq!(format!("{:?}", Secret::new("tok")), "***");
    }
}
