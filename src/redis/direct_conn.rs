//! The worker's own connections to a single-node Redis ([`DirectConnection`]), one TCP (or
//! TLS) connection each, speaking RESP2 (`resp`), in place of fred clients: the reader's
//! (XREADGROUP, named `...:reader`) and the acknowledging one (XACK, and XDEL on the
//! redeliver stream, named `...:ack`), for which fred's path for a command (its frames, its
//! router task and the hand-overs between tasks) cost more than the acknowledgement itself,
//! ~0.9k instructions per event.
//!
//! Why: reading is the one command whose reply grows with the load (a read of 64 entries is
//! ~700 frames), and fred turns every reply into a tree of frames, converts it to RESP3
//! frames, and hands it over between tasks; that was ~40% of the worker's instructions per
//! event on the blackhole drain. Here a reply is read straight into entries, in one pass as
//! its bytes arrive. Everything else (moves, scripts, a cluster's reads and acks) stays on
//! fred.
//!
//! Both are made at start (the acknowledging one beside the first read; a failure leaves it to
//! the first acknowledgement) and named `event-worker:<name>:<role>` (operators find them in
//! `CLIENT LIST`). A read is sent once, never replayed: an IO error, a timeout or a
//! malformed reply drops the connection and fails the read (the consumer then takes back
//! what a lost reply left pending, `reclaim::claim_own_leftovers`), and the next read
//! connects again (the consumer backs off between failed reads). An error reply (`NOGROUP`,
//! `NOPERM`, ...) fails the read and keeps the connection. Errors are fred's error values,
//! so they are classified and worded as every other Redis error.

use std::time::Duration;

use bytes::{Buf, BytesMut};
use fred::error::{Error, ErrorKind};
use fred::types::config::{Config as FredConfig, ServerConfig, TlsConnector};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::Mutex;

use crate::model::secret::Secret;
use crate::redis::resp::{self, ReadReply, XReadReader};
use crate::redis::store::Entry;

/// How long connecting (TCP, TLS, AUTH, SELECT, SETNAME) may take, as fred's
/// `connection_timeout` for the other connections.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a read may take beyond its BLOCK before the connection is given up, and the
/// least it is given: as fred's `unresponsive` check on the other connections.
const READ_GRACE: Duration = Duration::from_secs(5);
const READ_LIMIT_MIN: Duration = Duration::from_secs(10);

/// Read buffer: the initial size and the size above which an emptied buffer is let go (a
/// read of large entries does not keep its memory for good).
const BUFFER: usize = 64 * 1024;
const BUFFER_KEPT_MAX: usize = 4 * 1024 * 1024;

/// A connection of the worker's own (see the module doc).
pub(crate) struct DirectConnection {
    target: Target,
    conn: Mutex<Option<Conn>>,
}

/// Where and how to connect.
struct Target {
    host: String,
    port: u16,
    tls: Option<(TlsConnector, String)>,
    username: Option<String>,
    password: Option<Secret>,
    database: Option<u8>,
    name: String,
}

/// A byte stream to Redis, plain or TLS.
trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// One open connection.
struct Conn {
    io: Box<dyn Io>,
    buf: BytesMut,
    xread: XReadReader,
    out: Vec<u8>,
    /// A command was written and its reply not yet read (a read given up half way): the
    /// connection cannot be reused, its next bytes would be that reply.
    awaiting: bool,
}

/// Why an exchange (a read, or acknowledgements) failed, and whether the connection survives it.
enum Failure {
    /// An error reply: the connection stays.
    Reply(Error),
    /// IO, timeout or malformed bytes: the connection is dropped.
    Broken(Error),
}

impl DirectConnection {
    /// A connection for fred's configuration of a single node (`None` for a cluster), named
    /// `name` in `CLIENT LIST`. Does not connect.
    pub(crate) fn new(config: &FredConfig, name: String) -> Option<DirectConnection> {
        let ServerConfig::Centralized { server } = &config.server else {
            return None;
        };
        let host = server.host.to_string();
        let tls = config.tls.as_ref().map(|tls| {
            let server_name = server.tls_server_name.as_ref().map(ToString::to_string);
            (
                tls.connector.clone(),
                server_name.unwrap_or_else(|| host.clone()),
            )
        });
        Some(DirectConnection {
            target: Target {
                host,
                port: server.port,
                tls,
                username: config.username.clone(),
                password: config.password.clone().map(Secret::new),
                database: config.database,
                name,
            },
            conn: Mutex::new(None),
        })
    }

    /// Connects now unless connected (at start, so that a wrong password or an unreachable
    /// server is reported at once, as for the other connections, and the first command does
    /// not wait for a handshake). A command waits for a connection in progress.
    ///
    /// # Errors
    /// As fred's connection errors.
    pub(crate) async fn connect(&self) -> Result<(), Error> {
        let mut slot = self.conn.lock().await;
        if slot.is_none() {
            *slot = Some(self.target.connect().await?);
        }
        Ok(())
    }

    /// XREADGROUP GROUP `group` `consumer` COUNT `count` [BLOCK `block`] STREAMS `streams`
    /// `>` ...: the entries read (see the module doc for errors and the connection).
    ///
    /// # Errors
    /// fred-shaped errors: an error reply, IO, timeout, a malformed reply.
    pub(crate) async fn read_group(
        &self,
        group: &str,
        consumer: &str,
        streams: &[String],
        count: usize,
        block: Option<Duration>,
    ) -> Result<Vec<Entry>, Error> {
        let limit = (block.unwrap_or_default() + READ_GRACE).max(READ_LIMIT_MIN);
        let count = count.to_string();
        let block = block.map(|b| b.as_millis().max(1).to_string());
        let mut args: Vec<&str> = vec!["XREADGROUP", "GROUP", group, consumer, "COUNT", &count];
        if let Some(b) = &block {
            args.extend(["BLOCK", b.as_str()]);
        }
        args.push("STREAMS");
        args.extend(streams.iter().map(String::as_str));
        args.extend(streams.iter().map(|_| ">"));
        self.exchange(limit, async |conn: &mut Conn| {
            resp::encode_command(&mut conn.out, &args);
            conn.send().await.map_err(|e| Failure::Broken(e.into()))?;
            let (reply, len) = conn.xread_reply().await.map_err(Failure::Broken)?;
            conn.consumed(len);
            match reply {
                ReadReply::Entries(entries) => Ok(entries),
                ReadReply::Error(line) => Err(Failure::Reply(reply_error(line))),
            }
        })
        .await
    }

    /// Sends `commands` in one write and reads their replies, each one line (a status or an
    /// integer: XACK's and XDEL's counts); the answer of each command, in order. As a read,
    /// they are sent once: IO, a timeout or malformed bytes drop the connection and fail
    /// them all (the caller retries; acknowledging twice is harmless), an error reply fails
    /// its command only and keeps the connection.
    ///
    /// # Errors
    /// fred-shaped errors: IO, timeout, a malformed reply (an error reply is its command's
    /// answer).
    pub(crate) async fn one_line_commands(
        &self,
        commands: &[Vec<&str>],
    ) -> Result<Vec<Result<(), Error>>, Error> {
        self.exchange(READ_LIMIT_MIN, async |conn: &mut Conn| {
            for args in commands {
                resp::encode_command(&mut conn.out, args);
            }
            conn.send().await.map_err(|e| Failure::Broken(e.into()))?;
            let mut answers = Vec::with_capacity(commands.len());
            for _ in commands {
                let line = conn.line_reply().await.map_err(Failure::Broken)?;
                answers.push(line.map_err(reply_error));
            }
            Ok(answers)
        })
        .await
    }

    /// Runs `work` (commands written and their replies read) on the connection, connecting
    /// first when there is none, within `limit`. IO, a timeout or malformed bytes
    /// ([`Failure::Broken`]) drop the connection; so does a reply followed by bytes nobody
    /// asked for (the connection is out of step: the next exchange starts on a new one).
    async fn exchange<T>(
        &self,
        limit: Duration,
        work: impl AsyncFnOnce(&mut Conn) -> Result<T, Failure>,
    ) -> Result<T, Error> {
        let mut slot = self.conn.lock().await;
        if slot.as_ref().is_some_and(|c| c.awaiting) {
            *slot = None;
        }
        let attempt = async {
            let conn = match slot.take() {
                Some(conn) => conn,
                None => self.target.connect().await.map_err(Failure::Broken)?,
            };
            let conn = slot.insert(conn);
            conn.out.clear();
            let result = work(conn).await;
            conn.awaiting = !conn.buf.is_empty();
            result
        };
        let result = match tokio::time::timeout(limit, attempt).await {
            Ok(r) => r,
            Err(_) => Err(Failure::Broken(Error::new(
                ErrorKind::Timeout,
                "Request timed out.",
            ))),
        };
        match result {
            Ok(value) => Ok(value),
            Err(Failure::Reply(e)) => Err(e),
            Err(Failure::Broken(e)) => {
                *slot = None;
                Err(e)
            }
        }
    }

    /// Closes the connection (a read in progress keeps it until it ends; it is closed when
    /// the reader is dropped).
    pub(crate) fn close(&self) {
        if let Ok(mut slot) = self.conn.try_lock() {
            *slot = None;
        }
    }
}

impl Target {
    /// A new connection, through TLS when configured, authenticated, on its database, named.
    async fn connect(&self) -> Result<Conn, Error> {
        let connect = async {
            let tcp = tokio::net::TcpStream::connect((self.host.as_str(), self.port)).await?;
            super::tcp::tune(&tcp)?;
            let io: Box<dyn Io> = match &self.tls {
                None => Box::new(tcp),
                Some((connector, server_name)) => tls_stream(connector, server_name, tcp).await?,
            };
            let mut conn = Conn {
                io,
                buf: BytesMut::with_capacity(BUFFER),
                xread: XReadReader::default(),
                out: Vec::with_capacity(256),
                awaiting: false,
            };
            self.handshake(&mut conn).await?;
            Ok(conn)
        };
        tokio::time::timeout(CONNECT_TIMEOUT, connect)
            .await
            .unwrap_or_else(|_| Err(Error::new(ErrorKind::Timeout, "Connection timed out.")))
    }

    /// AUTH, SELECT and CLIENT SETNAME in one write; a refused AUTH or SELECT fails the
    /// connection, a refused SETNAME (an ACL without `client`) does not, as on fred's
    /// connections.
    async fn handshake(&self, conn: &mut Conn) -> Result<(), Error> {
        let mut fatal = 0;
        if let Some(password) = &self.password {
            match &self.username {
                Some(user) => {
                    resp::encode_command(&mut conn.out, &["AUTH", user.as_str(), password.expose()])
                }
                None => resp::encode_command(&mut conn.out, &["AUTH", password.expose()]),
            }
            fatal += 1;
        }
        if let Some(db) = self.database.filter(|db| *db != 0) {
            resp::encode_command(&mut conn.out, &["SELECT", &db.to_string()]);
            fatal += 1;
        }
        resp::encode_command(&mut conn.out, &["CLIENT", "SETNAME", &self.name]);
        conn.send().await?;
        for i in 0..=fatal {
            if let (Err(line), true) = (conn.line_reply().await?, i < fatal) {
                return Err(reply_error(line));
            }
        }
        conn.awaiting = !conn.buf.is_empty();
        Ok(())
    }
}

impl Conn {
    /// Writes the command in `out`.
    async fn send(&mut self) -> std::io::Result<()> {
        self.awaiting = true;
        self.io.write_all(&self.out).await?;
        self.out.clear();
        self.io.flush().await
    }

    /// Reads one one-line reply: `Ok` or the error's text.
    async fn line_reply(&mut self) -> Result<resp::LineReply, Error> {
        loop {
            if let Some((reply, len)) = resp::line_reply(&self.buf).map_err(protocol_error)? {
                self.consumed(len);
                return Ok(reply);
            }
            self.fill().await?;
        }
    }

    /// Reads until a whole XREADGROUP reply is read; it and its length in the buffer.
    async fn xread_reply(&mut self) -> Result<(ReadReply, usize), Error> {
        loop {
            if let Some(read) = self.xread.read(&self.buf).map_err(protocol_error)? {
                return Ok(read);
            }
            self.fill().await?;
        }
    }

    /// One socket read into the buffer.
    async fn fill(&mut self) -> Result<(), Error> {
        if self.buf.capacity() - self.buf.len() < BUFFER / 4 {
            self.buf.reserve(BUFFER);
        }
        if self.io.read_buf(&mut self.buf).await? == 0 {
            return Err(Error::new(ErrorKind::IO, "connection closed by Redis"));
        }
        Ok(())
    }

    /// Drops the first `len` bytes (a reply read).
    fn consumed(&mut self, len: usize) {
        self.buf.advance(len);
        if self.buf.is_empty() && self.buf.capacity() > BUFFER_KEPT_MAX {
            self.buf = BytesMut::with_capacity(BUFFER);
        }
    }
}

/// A TLS stream over `tcp`, the server's certificate checked for `server_name`.
async fn tls_stream(
    connector: &TlsConnector,
    server_name: &str,
    tcp: tokio::net::TcpStream,
) -> Result<Box<dyn Io>, Error> {
    let name =
        fred::rustls::pki_types::ServerName::try_from(server_name.to_string()).map_err(|e| {
            Error::new(
                ErrorKind::Tls,
                format!("TLS server name {server_name}: {e}"),
            )
        })?;
    #[allow(unreachable_patterns)]
    match connector {
        TlsConnector::Rustls(connector) => Ok(Box::new(connector.connect(name, tcp).await?)),
        _ => Err(Error::new(ErrorKind::Tls, "Invalid TLS configuration.")),
    }
}

/// Bytes that are not the reply expected, as a fred error.
fn protocol_error(e: resp::ProtocolError) -> Error {
    Error::new(ErrorKind::Protocol, e.to_string())
}

/// An error reply (`line`: without its `-`) as fred words it.
fn reply_error(line: String) -> Error {
    let kind = match line.split_whitespace().next() {
        Some("NOAUTH" | "WRONGPASS") => ErrorKind::Auth,
        _ => ErrorKind::Unknown,
    };
    Error::new(kind, line)
}
