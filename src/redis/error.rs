//! The one Redis error type, [`StoreError`], and its [`RedisErrorKind`], decided once in
//! [`StoreError::from_fred`] while fred's error is still typed: callers match on the kind,
//! never on the message text.
//!
//! Its `Display` is plain words for operators (run logs, `check`, every CLI command, API 503
//! bodies): the server's `host:port` (never the password), the cause and the next step, e.g.
//! `cannot connect to Redis at 127.0.0.1:6390: connection refused (is Redis running? is the
//! port right?)`. The words are chosen in [`describe`].

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
    /// Used memory reached `maxmemory` under `noeviction`: writes are refused (`OOM`).
    Oom,
    /// The server is a read-only replica (`READONLY`).
    ReadOnly,
    /// The last RDB save failed and `stop-writes-on-bgsave-error` refuses writes (`MISCONF`).
    Misconf,
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
    /// Whether retrying cannot help: missing permissions, or TLS (certificates, a plaintext
    /// server). A refused password is not final: it may be rotated in Redis while we retry.
    pub fn is_final(self) -> bool {
        matches!(self, Self::NoPerm | Self::Tls)
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
            "OOM" => Self::Oom,
            "READONLY" => Self::ReadOnly,
            "MISCONF" => Self::Misconf,
            // A script's write refused for memory, as older servers wrap it.
            "ERR" if details.contains("OOM command not allowed") => Self::Oom,
            "ERR" if details.trim_end() == "ERR no such key" => Self::NoSuchKey,
            // Inside a script Redis words an ACL refusal without NOPERM or the command.
            "ERR" if details.contains(SCRIPT_REFUSAL) => Self::NoPerm,
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
            // fred found no connection to send the command on (Redis down, reconnecting):
            // `Routing`, or `Unknown` with this text on a centralized client.
            K::Routing => Self::Connection,
            K::Unknown if e.details().starts_with("Failed to route command") => Self::Connection,
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

/// A Redis failure, with the password scrubbed from the message; displayed in plain words.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{text}")]
pub struct StoreError {
    /// The operation that failed, e.g. `XREADGROUP events:prod:a`.
    pub op: String,
    /// What Redis or the client said (scrubbed, as fred worded it).
    pub message: String,
    /// What kind of failure it is.
    pub kind: RedisErrorKind,
    /// `host:port` of the Redis server (empty when not known).
    pub server: String,
    /// The plain-words description shown by `Display`.
    text: String,
}

/// The server an error is about: `host:port` (or the redacted URL) and the host alone.
struct At {
    server: String,
    host: String,
    tls: bool,
}

impl At {
    fn of(url: &RedisUrl) -> At {
        let shown = url.to_string();
        let parsed = url::Url::parse(&shown).ok();
        let host = parsed
            .as_ref()
            .and_then(|u| u.host_str().map(str::to_string))
            .unwrap_or_else(|| shown.clone());
        let port = parsed.as_ref().and_then(url::Url::port).unwrap_or(6379);
        At {
            server: format!("{host}:{port}"),
            host,
            tls: url.is_tls(),
        }
    }
}

impl StoreError {
    /// A fred error of `op`, classified, with the password of `url` scrubbed.
    pub fn from_fred(url: &RedisUrl, op: impl Into<String>, e: &fred::error::Error) -> Self {
        let op = op.into();
        let kind = RedisErrorKind::of_fred(e);
        let message = url.scrub(&e.to_string());
        let at = At::of(url);
        let text = url.scrub(&describe(kind, &op, &url.scrub(e.details()), &at));
        StoreError {
            op,
            message,
            kind,
            server: at.server,
            text,
        }
    }

    /// An error of `op` that did not come from fred (a bad reply, a stopped task).
    pub fn new(op: impl Into<String>, kind: RedisErrorKind, message: impl Into<String>) -> Self {
        let (op, message) = (op.into(), message.into());
        StoreError {
            text: format!("redis {op}: {message}"),
            op,
            message,
            kind,
            server: String::new(),
        }
    }

    /// The TLS configuration for `url` could not be built (`message` names the file).
    pub fn tls_setup(url: &RedisUrl, message: impl Into<String>) -> Self {
        let (message, at) = (message.into(), At::of(url));
        StoreError {
            text: format!("TLS setup for Redis at {}: {message}", at.server),
            op: "tls".into(),
            message,
            kind: RedisErrorKind::Tls,
            server: at.server,
        }
    }

    /// A `rediss://` URL points at a server that answered in plain Redis protocol.
    pub fn plaintext_server(url: &RedisUrl) -> Self {
        let at = At::of(url);
        StoreError {
            text: format!(
                "the server at {} did not answer the TLS handshake: it speaks plain Redis; \
                 use redis:// for a plaintext server (rediss:// is for TLS)",
                at.server
            ),
            op: format!("connect to {url}"),
            message: "plaintext server".into(),
            kind: RedisErrorKind::Tls,
            server: at.server,
        }
    }

    /// Connecting to `url` did not finish within `after` (the caller stopped waiting).
    pub fn timed_out(url: &RedisUrl, op: impl Into<String>, after: std::time::Duration) -> Self {
        let (op, at) = (op.into(), At::of(url));
        StoreError {
            text: format!(
                "Redis at {} did not answer within {} ms (down, paused, or the network is down?)",
                at.server,
                after.as_millis()
            ),
            op,
            message: "timed out".into(),
            kind: RedisErrorKind::Timeout,
            server: at.server,
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

/// The plain words for an error of `kind` during `op`, from fred's `details`.
fn describe(kind: RedisErrorKind, op: &str, details: &str, at: &At) -> String {
    use RedisErrorKind as K;
    let d = details.to_ascii_lowercase();
    let server = &at.server;
    let connecting = op.starts_with("connect");
    match kind {
        K::Connection if d.contains("connectionrefused") || d.contains("connection refused") => {
            format!(
                "cannot connect to Redis at {server}: connection refused (is Redis running? is the port right?)"
            )
        }
        K::Connection
            if d.contains("lookup address")
                || d.contains("name or service not known")
                || d.contains("nodename nor servname")
                || d.contains("name resolution") =>
        {
            format!(
                "cannot resolve host {} (Redis at {server}): check the host name in redis_url / REDIS_URL",
                at.host
            )
        }
        K::Connection if connecting && !at.tls && (d.contains("reset") || d.contains("closed")) => {
            format!(
                "cannot connect to Redis at {server}: {} (a TLS-only server closes plaintext \
                 connections: use rediss:// if it expects TLS)",
                plain_detail(details)
            )
        }
        K::Connection if connecting => format!(
            "cannot connect to Redis at {server}: {} (is the host reachable? is the port right?)",
            plain_detail(details)
        ),
        K::Connection => format!(
            "lost the connection to Redis at {server} during {}: {}; the client reconnects by itself",
            command_of(op),
            plain_detail(details)
        ),
        K::Timeout if connecting && at.tls => format!(
            "the server at {server} did not answer the TLS handshake in time: use redis:// if it is a \
             plaintext server, else check that the host and port are reachable"
        ),
        K::Timeout if connecting => format!(
            "cannot connect to Redis at {server}: no answer in time (is the host reachable? is a firewall dropping the port?)"
        ),
        K::Timeout => format!(
            "Redis at {server} did not answer {} in time (overloaded, paused, or the network is down?)",
            command_of(op)
        ),
        K::Auth if d.contains("noauth") => format!(
            "authentication required by Redis at {server} (NOAUTH): put the password in redis_url / \
             REDIS_URL (redis://:PASSWORD@host:port) or in redis_password_file"
        ),
        K::Auth => format!(
            "authentication failed (WRONGPASS) at Redis {server}: check the password (and user) in \
             redis_url / REDIS_URL or redis_password_file"
        ),
        K::NoPerm => no_perm(op, details, server),
        K::Oom => format!(
            "Redis at {server} refuses writes: OOM, used memory reached maxmemory ({} refused): \
             raise maxmemory (CONFIG SET maxmemory) or free memory; the worker retries by itself",
            command_of(op)
        ),
        K::ReadOnly => format!(
            "Redis at {server} refuses writes: READONLY, it is a read-only replica ({} refused): \
             point redis_url at the primary",
            command_of(op)
        ),
        K::Misconf => format!(
            "Redis at {server} refuses writes: MISCONF, its last RDB save failed ({} refused): \
             fix the disk or permissions of its dir (see the Redis log)",
            command_of(op)
        ),
        K::Tls => tls(details, at),
        K::Config => format!(
            "invalid Redis connection settings: {}",
            plain_detail(details)
        ),
        _ => format!("redis {op}: {details}"),
    }
}

/// How Redis words an ACL refusal inside a script (no NOPERM code, no command name).
const SCRIPT_REFUSAL: &str = "The user executing the script can't run this command";

/// NOPERM: which command (or key) the ACL user lacks.
fn no_perm(op: &str, details: &str, server: &str) -> String {
    if details.contains(SCRIPT_REFUSAL) {
        // The rest of the reply names the script's SHA and line, which helps nobody.
        let reply = details.split(" script:").next().unwrap_or(details).trim();
        return format!(
            "the Redis ACL user lacks permission for a command in the script of `{op}` \
             ({reply}) at {server}: compare the user's ACL (ACL GETUSER <user>) with the block \
             in README \"Least-privilege Redis user\""
        );
    }
    let quoted = details.split('\'').nth(1).filter(|c| !c.is_empty());
    match quoted {
        Some(command) => {
            let command = command.to_ascii_uppercase();
            format!(
                "the Redis ACL user lacks permission to run {command} (NOPERM) at {server}: grant it, \
                 e.g. ACL SETUSER <user> +{} (README \"Least-privilege Redis user\")",
                command.to_ascii_lowercase()
            )
        }
        None => format!(
            "the Redis ACL user lacks permission for {} (NOPERM: {}) at {server}: grant the keys \
             events:* (and the command) with ACL SETUSER (README \"Least-privilege Redis user\")",
            command_of(op),
            details.trim_start_matches("NOPERM").trim()
        ),
    }
}

/// TLS failures: certificate checks, names, a server that does not speak TLS.
fn tls(details: &str, at: &At) -> String {
    let d = details.to_ascii_lowercase();
    let server = &at.server;
    if d.contains("alert")
        && [
            "certificaterequired",
            "badcertificate",
            "unknownca",
            "handshakefailure",
        ]
        .iter()
        .any(|a| d.contains(a))
    {
        format!(
            "Redis at {server} refused the TLS handshake: it wants a client certificate it \
             trusts (tls-auth-clients): set tls_cert_file and tls_key_file"
        )
    } else if d.contains("notvalidforname") || d.contains("not valid for name") {
        format!(
            "the TLS certificate of Redis at {server} is not valid for the name {}: connect with a \
             name the certificate lists",
            at.host
        )
    } else if d.contains("expired") {
        format!("the TLS certificate of Redis at {server} has expired or is not yet valid")
    } else if d.contains("certificate") {
        format!(
            "cannot verify the TLS certificate of Redis at {server} ({}): set tls_ca_file to the CA \
             certificate that signed it",
            if d.contains("unknownissuer") {
                "unknown issuer"
            } else {
                "rejected"
            }
        )
    } else {
        format!(
            "the TLS handshake with Redis at {server} failed ({}): use redis:// for a plaintext \
             server; for TLS check tls_ca_file, tls_cert_file and tls_key_file",
            plain_detail(details)
        )
    }
}

/// The command word of an operation (`XADD events:a` -> `XADD`).
fn command_of(op: &str) -> &str {
    op.split_whitespace().next().unwrap_or(op)
}

/// An IO error's own words out of Rust debug text (`Os { .., message: "Broken pipe" }`).
fn plain_detail(details: &str) -> String {
    for marker in ["message: \"", "error: \""] {
        if let Some(rest) = details.split(marker).nth(1)
            && let Some(text) = rest.split('"').next()
        {
            return text.to_ascii_lowercase();
        }
    }
    details.trim_end_matches('.').to_string()
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
                "OOM command not allowed when used memory > 'maxmemory'.",
                RedisErrorKind::Oom,
            ),
            (
                ErrorKind::Unknown,
                "ERR Error running script: OOM command not allowed when used memory > 'maxmemory'",
                RedisErrorKind::Oom,
            ),
            (
                ErrorKind::Unknown,
                "READONLY You can't write against a read only replica.",
                RedisErrorKind::ReadOnly,
            ),
            (
                ErrorKind::Unknown,
                "MISCONF Redis is configured to save RDB snapshots",
                RedisErrorKind::Misconf,
            ),
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
    fn messages_are_plain_words_with_host_port_and_no_password() {
        let url = RedisUrl::parse("redis://:placeholder-password@redis.internal:6390").unwrap();
        let text = |k: ErrorKind, details: &str, op: &str| {
            StoreError::from_fred(&url, op, &Error::new(k, details.to_string())).to_string()
        };
        let connect = "connect to redis://:***@redis.internal:6390";
        let refused = r#"Os { code: 111, kind: ConnectionRefused, message: "Connection refused" }"#;
        assert_eq!(
            text(ErrorKind::IO, refused, connect),
            "cannot connect to Redis at redis.internal:6390: connection refused (is Redis running? is the port right?)"
        );
        assert_eq!(
            text(
                ErrorKind::IO,
                r#"Custom { kind: Uncategorized, error: "failed to lookup address information: Name or service not known" }"#,
                connect
            ),
            "cannot resolve host redis.internal (Redis at redis.internal:6390): check the host name in redis_url / REDIS_URL"
        );
        let wrongpass = text(
            ErrorKind::Auth,
            "WRONGPASS invalid username-password pair placeholder-password",
            connect,
        );
        assert!(
            wrongpass.starts_with(
                "authentication failed (WRONGPASS) at Redis redis.internal:6390: check the password"
            ),
            "{wrongpass}"
        );
        assert!(!wrongpass.contains("placeholder-password"), "{wrongpass}");
        assert_eq!(
            text(
                ErrorKind::Unknown,
                "ERR The user executing the script can't run this command or subcommand script: 7838a19e01c90fe4f363478838d65fe576863251, on @user_script:1.",
                "EVALSHA abc"
            ),
            "the Redis ACL user lacks permission for a command in the script of `EVALSHA abc` (ERR The user executing the script can't run this command or subcommand) at redis.internal:6390: compare the user's ACL (ACL GETUSER <user>) with the block in README \"Least-privilege Redis user\""
        );
        assert_eq!(
            text(
                ErrorKind::Unknown,
                "NOPERM User worker has no permissions to run the 'xadd' command",
                "XADD events:a:b"
            ),
            "the Redis ACL user lacks permission to run XADD (NOPERM) at redis.internal:6390: grant it, e.g. ACL SETUSER <user> +xadd (README \"Least-privilege Redis user\")"
        );
        assert_eq!(
            text(
                ErrorKind::Unknown,
                "OOM command not allowed when used memory > 'maxmemory'.",
                "EVALSHA abc"
            ),
            "Redis at redis.internal:6390 refuses writes: OOM, used memory reached maxmemory (EVALSHA refused): raise maxmemory (CONFIG SET maxmemory) or free memory; the worker retries by itself"
        );
        assert_eq!(
            text(ErrorKind::Timeout, "Request timed out.", "XADD events:a:b"),
            "Redis at redis.internal:6390 did not answer XADD in time (overloaded, paused, or the network is down?)"
        );
        let tls = RedisUrl::parse("rediss://redis.internal:6390").unwrap();
        let e = StoreError::from_fred(
            &tls,
            "connect to rediss://redis.internal:6390",
            &Error::new(
                ErrorKind::IO,
                "Custom { error: InvalidCertificate(UnknownIssuer) }",
            ),
        );
        assert_eq!(
            e.to_string(),
            "cannot verify the TLS certificate of Redis at redis.internal:6390 (unknown issuer): set tls_ca_file to the CA certificate that signed it"
        );
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
        assert!(RedisErrorKind::Tls.is_final() && !RedisErrorKind::Connection.is_final());
        // No connection to send on: a connection failure (the outbox queues it).
        let unrouted = kind(ErrorKind::Unknown, "Failed to route command.");
        assert_eq!(unrouted, RedisErrorKind::Connection);
        assert_eq!(kind(ErrorKind::Routing, "x"), RedisErrorKind::Connection);
        assert_eq!(
            kind(ErrorKind::Unknown, "something else"),
            RedisErrorKind::Other
        );
        assert!(!RedisErrorKind::Auth.is_final());
    }
}
