//! The one Redis error type, [`StoreError`], and its [`RedisErrorKind`], decided once in
//! [`StoreError::from_fred`] while fred's error is still typed: callers match on the kind,
//! never on the message text.

use crate::model::secret::RedisUrl;

/// What kind of failure a Redis error is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RedisErrorKind {
    /// The consumer group (or its stream) does not exist (`NOGROUP`).
    NoGroup,
    /// The consumer group already exists (`BUSYGROUP`).
    BusyGroup,
    /// A key holds another type (`WRONGTYPE`).
    WrongType,
    /// The key does not exist (`ERR no such key`, e.g. XINFO of a missing stream).
    NoSuchKey,
    /// Authentication failed or is missing (`WRONGPASS`, `NOAUTH`).
    Auth,
    /// The user may not run the command or touch the key (`NOPERM`).
    NoPerm,
    /// TLS setup or handshake failed (certificates, names).
    Tls,
    /// The connection failed or was cut.
    Connection,
    /// The command timed out.
    Timeout,
    /// The client configuration or URL is invalid.
    Config,
    /// Anything else (a server error reply with another code, a client-side failure).
    Other,
}

impl RedisErrorKind {
    /// Whether retrying cannot help: wrong credentials, missing permissions, or TLS.
    pub fn is_final(self) -> bool {
        matches!(self, Self::Auth | Self::NoPerm | Self::Tls)
    }

    /// The kind of a server error reply, from its error code (the first word).
    fn of_reply(details: &str) -> Option<Self> {
        let mut words = details.split_whitespace();
        Some(match words.next()? {
            "NOGROUP" => Self::NoGroup,
            "BUSYGROUP" => Self::BusyGroup,
            "WRONGTYPE" => Self::WrongType,
            "NOAUTH" | "WRONGPASS" => Self::Auth,
            "NOPERM" => Self::NoPerm,
            "ERR" if details.trim_end() == "ERR no such key" => Self::NoSuchKey,
            _ => return None,
        })
    }

    /// Decides the kind of a fred error.
    fn of_fred(e: &fred::error::Error) -> Self {
        use fred::error::ErrorKind as K;
        if let Some(kind) = Self::of_reply(e.details()) {
            return kind;
        }
        match e.kind() {
            K::Auth => Self::Auth,
            K::Tls => Self::Tls,
            // fred keeps a TLS handshake failure from tokio-rustls only as the text of an
            // IO error (`From<io::Error>` formats it), so the certificate case is read here.
            K::IO if is_tls_text(e.details()) => Self::Tls,
            K::IO | K::Canceled => Self::Connection,
            K::Timeout => Self::Timeout,
            K::Config | K::Url => Self::Config,
            _ => Self::Other,
        }
    }
}

/// Whether an IO error's text is a TLS failure (certificate, TLS handshake).
fn is_tls_text(details: &str) -> bool {
    let lower = details.to_ascii_lowercase();
    lower.contains("certificate") || lower.contains("tls")
}

/// A Redis failure, with the password scrubbed from the message.
#[derive(Debug, Clone, thiserror::Error)]
#[error("redis {op}: {message}")]
pub struct StoreError {
    /// The operation that failed, e.g. `XREADGROUP events:prod:a`.
    pub op: String,
    /// What Redis or the client said.
    pub message: String,
    /// What kind of failure it is.
    pub kind: RedisErrorKind,
}

impl StoreError {
    /// A fred error of `op`, classified, with the password of `url` scrubbed.
    pub fn from_fred(url: &RedisUrl, op: impl Into<String>, e: &fred::error::Error) -> Self {
        StoreError {
            op: op.into(),
            message: url.scrub(&e.to_string()),
            kind: RedisErrorKind::of_fred(e),
        }
    }

    /// An error of `op` that did not come from fred (a bad reply, a stopped task).
    pub fn new(op: impl Into<String>, kind: RedisErrorKind, message: impl Into<String>) -> Self {
        StoreError {
            op: op.into(),
            message: message.into(),
            kind,
        }
    }

    /// Whether Redis said the consumer group (or its stream) does not exist.
    pub fn is_nogroup(&self) -> bool {
        self.kind == RedisErrorKind::NoGroup
    }

    /// Whether Redis said a key holds another type (WRONGTYPE).
    pub fn is_wrong_type(&self) -> bool {
        self.kind == RedisErrorKind::WrongType
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fred::error::{Error, ErrorKind};

    fn kind(k: ErrorKind, details: &str) -> RedisErrorKind {
        RedisErrorKind::of_fred(&Error::new(k, details.to_string()))
    }

    #[test]
    fn server_replies_are_classified_by_their_code() {
        // The last row: a message that only mentions a code is not that code.
        let table = [
            (
                ErrorKind::Unknown,
                "NOGROUP No such key 'a'",
                RedisErrorKind::NoGroup,
            ),
            (
                ErrorKind::Unknown,
                "BUSYGROUP Consumer Group name already exists",
                RedisErrorKind::BusyGroup,
            ),
            (
                ErrorKind::InvalidArgument,
                "WRONGTYPE Operation against a key",
                RedisErrorKind::WrongType,
            ),
            (
                ErrorKind::Unknown,
                "ERR no such key",
                RedisErrorKind::NoSuchKey,
            ),
            (
                ErrorKind::Unknown,
                "ERR unknown command",
                RedisErrorKind::Other,
            ),
            (
                ErrorKind::Unknown,
                "NOPERM no permissions",
                RedisErrorKind::NoPerm,
            ),
            (ErrorKind::Auth, "WRONGPASS invalid", RedisErrorKind::Auth),
            (
                ErrorKind::Unknown,
                "ERR NOGROUP mentioned",
                RedisErrorKind::Other,
            ),
        ];
        for (fred_kind, details, want) in table {
            assert_eq!(kind(fred_kind, details), want, "{details}");
        }
    }

    #[test]
    fn client_errors_are_classified_by_fred_kind() {
        assert_eq!(
            kind(ErrorKind::IO, "Connection refused"),
            RedisErrorKind::Connection
        );
        assert_eq!(
            kind(
                ErrorKind::IO,
                "Custom { error: InvalidCertificate(UnknownIssuer) }"
            ),
            RedisErrorKind::Tls
        );
        assert_eq!(kind(ErrorKind::Timeout, "x"), RedisErrorKind::Timeout);
        assert_eq!(kind(ErrorKind::Tls, "x"), RedisErrorKind::Tls);
        assert!(RedisErrorKind::Auth.is_final() && !RedisErrorKind::Connection.is_final());
    }
}
