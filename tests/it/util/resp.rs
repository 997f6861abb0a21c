//! A tiny synchronous RESP2 client for the test side of the harness.
//!
//! The tests talk to Redis through this client rather than through the
//! daemon's own stack so that a bug in the daemon's Redis layer can never hide
//! itself in the checks. Every connection registers its local port in
//! [`is_test_client`] so MONITOR transcripts can tell harness commands from
//! worker commands.

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

/// One RESP2 reply.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Nil,
    Int(i64),
    Str(String),
    Status(String),
    Err(String),
    Array(Vec<Value>),
}

impl Value {
    /// The reply as text (bulk or status string, or integer), `None` otherwise.
    pub fn as_str(&self) -> Option<String> {
        match self {
            Value::Str(s) | Value::Status(s) => Some(s.clone()),
            Value::Int(i) => Some(i.to_string()),
            _ => None,
        }
    }

    /// The reply as an integer (integer reply or a numeric string).
    pub fn as_int(&self) -> Option<i64> {
        match self {
            Value::Int(i) => Some(*i),
            Value::Str(s) | Value::Status(s) => s.parse().ok(),
            _ => None,
        }
    }

    /// The elements of an array reply (empty for nil).
    pub fn items(&self) -> Vec<Value> {
        match self {
            Value::Array(v) => v.clone(),
            _ => Vec::new(),
        }
    }
}

fn test_ports() -> &'static Mutex<HashSet<u16>> {
    static PORTS: OnceLock<Mutex<HashSet<u16>>> = OnceLock::new();
    PORTS.get_or_init(|| Mutex::new(HashSet::new()))
}

/// Records a local port as belonging to a harness connection.
pub fn register_test_port(port: u16) {
    test_ports().lock().unwrap().insert(port);
}

/// Whether a client address seen by Redis (`127.0.0.1:PORT`) belongs to the harness.
pub fn is_test_client(addr: &str) -> bool {
    let Some(port) = addr.rsplit(':').next().and_then(|p| p.parse::<u16>().ok()) else {
        return false;
    };
    test_ports().lock().unwrap().contains(&port)
}

/// A synchronous connection to one Redis server.
pub struct Conn {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
    port: u16,
}

impl Drop for Conn {
    fn drop(&mut self) {
        // The port may be reused by a worker connection later.
        test_ports().lock().unwrap().remove(&self.port);
    }
}

impl Conn {
    /// Connects with a short timeout; every read and write is bounded too.
    pub fn connect(port: u16) -> std::io::Result<Conn> {
        Conn::connect_auth(port, None)
    }

    /// Like [`Conn::connect`], then `AUTH password` when a password is given.
    pub fn connect_auth(port: u16, password: Option<&str>) -> std::io::Result<Conn> {
        let mut conn = Conn::connect_plain(port)?;
        if let Some(pw) = password {
            match conn.cmd(&["AUTH", pw])? {
                Value::Status(_) => {}
                other => {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::PermissionDenied,
                        format!("AUTH refused: {other:?}"),
                    ));
                }
            }
        }
        Ok(conn)
    }

    fn connect_plain(port: u16) -> std::io::Result<Conn> {
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        stream.set_write_timeout(Some(Duration::from_secs(10)))?;
        stream.set_nodelay(true)?;
        let port = stream.local_addr()?.port();
        register_test_port(port);
        let writer = stream.try_clone()?;
        Ok(Conn {
            reader: BufReader::new(stream),
            writer,
            port,
        })
    }

    /// Sets the read timeout (MONITOR readers poll with a short one).
    pub fn set_read_timeout(&self, d: Duration) -> std::io::Result<()> {
        self.writer.set_read_timeout(Some(d))
    }

    /// A handle on the socket, to shut it down from another thread.
    pub fn socket(&self) -> std::io::Result<TcpStream> {
        self.writer.try_clone()
    }

    /// Sends one command and reads its reply. Redis errors come back as `Value::Err`.
    pub fn cmd<S: AsRef<str>>(&mut self, args: &[S]) -> std::io::Result<Value> {
        self.send(args)?;
        self.read_value()
    }

    /// Sends one command without reading the reply.
    pub fn send<S: AsRef<str>>(&mut self, args: &[S]) -> std::io::Result<()> {
        let mut buf = format!("*{}\r\n", args.len()).into_bytes();
        for a in args {
            let a = a.as_ref().as_bytes();
            buf.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
            buf.extend_from_slice(a);
            buf.extend_from_slice(b"\r\n");
        }
        self.writer.write_all(&buf)
    }

    /// Reads one reply.
    pub fn read_value(&mut self) -> std::io::Result<Value> {
        let mut line = String::new();
        let n = self.reader.read_line(&mut line)?;
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "redis closed the connection",
            ));
        }
        let line = line.trim_end_matches(['\r', '\n']);
        let (kind, rest) = line.split_at(1);
        let bad =
            |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_string());
        match kind {
            "+" => Ok(Value::Status(rest.to_string())),
            "-" => Ok(Value::Err(rest.to_string())),
            ":" => Ok(Value::Int(rest.parse().map_err(|_| bad("bad integer"))?)),
            "$" => {
                let len: i64 = rest.parse().map_err(|_| bad("bad bulk length"))?;
                if len < 0 {
                    return Ok(Value::Nil);
                }
                let mut data = vec![0u8; len as usize + 2];
                self.reader.read_exact(&mut data)?;
                data.truncate(len as usize);
                Ok(Value::Str(String::from_utf8_lossy(&data).into_owned()))
            }
            "*" => {
                let len: i64 = rest.parse().map_err(|_| bad("bad array length"))?;
                if len < 0 {
                    return Ok(Value::Nil);
                }
                let mut items = Vec::with_capacity(len as usize);
                for _ in 0..len {
                    items.push(self.read_value()?);
                }
                Ok(Value::Array(items))
            }
            _ => Err(bad(&format!("unexpected reply line {line:?}"))),
        }
    }
}

/// A SUBSCRIBE connection recording every message of one channel (one reader
/// thread; stops when dropped).
pub struct Subscriber {
    socket: TcpStream,
    messages: std::sync::Arc<Mutex<Vec<String>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Subscriber {
    /// Subscribes to `channel` and waits for Redis to confirm the subscription.
    pub fn start(port: u16, password: Option<&str>, channel: &str) -> Subscriber {
        let mut conn = Conn::connect_auth(port, password).expect("connect for SUBSCRIBE");
        let confirm = conn.cmd(&["SUBSCRIBE", channel]).expect("SUBSCRIBE");
        assert_eq!(
            confirm.items().first().and_then(Value::as_str).as_deref(),
            Some("subscribe"),
            "SUBSCRIBE answered {confirm:?}"
        );
        conn.set_read_timeout(Duration::from_millis(500)).unwrap();
        let socket = conn.socket().unwrap();
        let messages = std::sync::Arc::new(Mutex::new(Vec::new()));
        let out = std::sync::Arc::clone(&messages);
        let thread = std::thread::spawn(move || {
            // Bounded: at most 1e6 reads (~6 days of 500 ms timeouts).
            for _ in 0..1_000_000u32 {
                match conn.read_value() {
                    Ok(v) => {
                        let items = v.items();
                        if items.first().and_then(Value::as_str).as_deref() == Some("message")
                            && let Some(m) = items.get(2).and_then(Value::as_str)
                        {
                            out.lock().unwrap().push(m);
                        }
                    }
                    Err(e)
                        if matches!(
                            e.kind(),
                            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                        ) => {}
                    Err(_) => return,
                }
            }
        });
        Subscriber {
            socket,
            messages,
            thread: Some(thread),
        }
    }

    /// The messages received so far.
    pub fn messages(&self) -> Vec<String> {
        self.messages.lock().unwrap().clone()
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        let _ = self.socket.shutdown(std::net::Shutdown::Both);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
