//! A real `redis-server` per test: free loopback port, data dir in a tempdir,
//! killed on drop, its log printed when the test fails.

use super::resp::{Conn, Value};
use super::{free_port, wait_until};
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Persistence mode of the test server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Aof {
    /// `appendonly yes`, `appendfsync always`: no acknowledged write is lost.
    Always,
    /// `appendonly yes`, `appendfsync everysec`.
    EverySec,
    /// No persistence at all: a restart empties the server.
    None,
}

/// A redis-server child process on `127.0.0.1:port`.
pub struct RedisServer {
    pub port: u16,
    aof: Aof,
    dir: tempfile::TempDir,
    child: Option<Child>,
    starts: u32,
    /// `requirepass` of the server (`None`: no password).
    password: Option<String>,
    /// One reused connection for helper commands (few ports, fast).
    cached: std::sync::Mutex<Option<Conn>>,
    /// Extra `redis-server` arguments (TLS ports, maxmemory, ...).
    extra_args: Vec<String>,
}

/// One stream entry: its id and its fields.
#[derive(Debug, Clone)]
pub struct Entry {
    pub entry_id: String,
    pub fields: BTreeMap<String, String>,
}

impl Entry {
    pub fn get(&self, k: &str) -> Option<&str> {
        self.fields.get(k).map(String::as_str)
    }
}

impl RedisServer {
    /// Starts a server with AOF `always`.
    pub fn start() -> RedisServer {
        RedisServer::start_with(Aof::Always)
    }

    /// Starts a server on a given port (e.g. one a worker already points at).
    pub fn start_on(port: u16, aof: Aof) -> RedisServer {
        RedisServer::try_start_on_with_args(port, aof, Vec::new())
            .unwrap_or_else(|e| panic!("could not start redis-server on port {port}: {e}"))
    }

    /// Starts a server on `port` with extra `redis-server` arguments (a cluster node);
    /// `Err` with the log when it does not come up (the caller picks another port).
    pub fn try_start_on_with_args(
        port: u16,
        aof: Aof,
        extra_args: Vec<String>,
    ) -> Result<RedisServer, String> {
        let mut server = RedisServer {
            port,
            aof,
            dir: tempfile::tempdir().expect("tempdir for redis"),
            child: None,
            starts: 0,
            password: None,
            cached: std::sync::Mutex::new(None),
            extra_args,
        };
        server.spawn().map(|()| server)
    }

    /// Starts a server with the given persistence.
    pub fn start_with(aof: Aof) -> RedisServer {
        RedisServer::start_full(aof, None)
    }

    /// Starts a server (AOF `always`) that requires `password` (`requirepass`);
    /// the harness's own connections authenticate, [`RedisServer::url`] carries it.
    pub fn start_with_password(password: &str) -> RedisServer {
        RedisServer::start_full(Aof::Always, Some(password.to_string()))
    }

    fn start_full(aof: Aof, password: Option<String>) -> RedisServer {
        RedisServer::start_with_args(aof, password, Vec::new())
    }

    /// Starts a server with extra `redis-server` arguments (e.g. `--tls-port`,
    /// `--maxmemory`); the harness keeps using the plain loopback port.
    pub fn start_with_args(
        aof: Aof,
        password: Option<String>,
        extra_args: Vec<String>,
    ) -> RedisServer {
        let mut last_err = String::new();
        for _ in 0..5 {
            let mut server = RedisServer {
                port: free_port(),
                aof,
                dir: tempfile::tempdir().expect("tempdir for redis"),
                child: None,
                starts: 0,
                password: password.clone(),
                cached: std::sync::Mutex::new(None),
                extra_args: extra_args.clone(),
            };
            match server.spawn() {
                Ok(()) => return server,
                Err(e) => last_err = e,
            }
        }
        panic!("could not start redis-server: {last_err}");
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("redis.log")
    }

    fn spawn(&mut self) -> Result<(), String> {
        self.starts += 1;
        let mut cmd = Command::new("redis-server");
        cmd.arg("--port")
            .arg(self.port.to_string())
            .arg("--bind")
            .arg("127.0.0.1")
            .arg("--dir")
            .arg(self.dir.path())
            .arg("--logfile")
            .arg(self.log_path())
            .arg("--save")
            .arg("")
            .arg("--daemonize")
            .arg("no")
            .arg("--enable-debug-command")
            .arg("local")
            .arg("--maxmemory-policy")
            .arg("noeviction");
        if let Some(pw) = &self.password {
            cmd.arg("--requirepass").arg(pw);
        }
        cmd.args(&self.extra_args);
        match self.aof {
            Aof::Always => {
                cmd.args(["--appendonly", "yes", "--appendfsync", "always"]);
            }
            Aof::EverySec => {
                cmd.args(["--appendonly", "yes", "--appendfsync", "everysec"]);
            }
            Aof::None => {
                cmd.args(["--appendonly", "no"]);
            }
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("spawn redis-server: {e}"))?;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(format!(
                    "redis-server exited at start ({status}); log:\n{}",
                    self.log_tail(40)
                ));
            }
            if let Ok(mut c) = Conn::connect_auth(self.port, self.password.as_deref())
                && let Ok(Value::Status(s)) = c.cmd(&["PING"])
                && s == "PONG"
            {
                self.child = Some(child);
                return Ok(());
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "redis-server did not answer PING; log:\n{}",
                    self.log_tail(40)
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Last `n` lines of the server log.
    pub fn log_tail(&self, n: usize) -> String {
        let text = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// `redis://127.0.0.1:PORT` (`redis://:PASSWORD@127.0.0.1:PORT` with a password).
    pub fn url(&self) -> String {
        match &self.password {
            Some(pw) => format!("redis://:{pw}@127.0.0.1:{}", self.port),
            None => format!("redis://127.0.0.1:{}", self.port),
        }
    }

    /// The server's `requirepass`, if any.
    pub fn password(&self) -> Option<&str> {
        self.password.as_deref()
    }

    /// The server's pid (for SIGSTOP/SIGCONT).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("redis-server running").id()
    }

    /// Kills the server with SIGKILL (no shutdown, no final fsync).
    pub fn kill9(&mut self) {
        *self.cached.lock().unwrap_or_else(|p| p.into_inner()) = None;
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops the server with SIGTERM (graceful shutdown) and waits for it.
    pub fn stop(&mut self) {
        *self.cached.lock().unwrap_or_else(|p| p.into_inner()) = None;
        if let Some(mut child) = self.child.take() {
            super::send_signal(child.id(), "TERM");
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port with the same data dir.
    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "redis-server is still running");
        let mut last = String::new();
        for _ in 0..20 {
            match self.spawn() {
                Ok(()) => return,
                Err(e) => last = e,
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        panic!(
            "could not restart redis-server on port {}: {last}",
            self.port
        );
    }

    /// Graceful stop, then start again.
    pub fn restart(&mut self) {
        self.stop();
        self.start_again();
    }

    /// A fresh connection (panics if the server is unreachable).
    pub fn conn(&self) -> Conn {
        Conn::connect_auth(self.port, self.password.as_deref())
            .unwrap_or_else(|e| panic!("connect to redis on {}: {e}", self.port))
    }

    /// Runs one command; I/O errors panic, Redis errors come back.
    pub fn cmd<S: AsRef<str>>(&self, args: &[S]) -> Value {
        self.try_cmd(args)
            .unwrap_or_else(|e| panic!("redis command failed: {e}"))
    }

    /// Runs one command on the cached connection (reconnecting once if it
    /// went stale, e.g. after a restart); I/O errors come back as `Err`.
    pub fn try_cmd<S: AsRef<str>>(&self, args: &[S]) -> Result<Value, String> {
        let mut cached = self.cached.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = cached.as_mut() {
            match c.cmd(args) {
                Ok(v) => return Ok(v),
                Err(_) => *cached = None,
            }
        }
        let mut c =
            Conn::connect_auth(self.port, self.password.as_deref()).map_err(|e| e.to_string())?;
        let v = c.cmd(args).map_err(|e| e.to_string())?;
        *cached = Some(c);
        Ok(v)
    }

    /// XADD with `*`; returns the entry id.
    pub fn xadd(&self, key: &str, fields: &[(&str, &str)]) -> String {
        match self.try_xadd(key, fields) {
            Ok(id) => id,
            Err(e) => panic!("XADD {key}: {e}"),
        }
    }

    /// XADD with `*`; `Err` on I/O or Redis error.
    pub fn try_xadd(&self, key: &str, fields: &[(&str, &str)]) -> Result<String, String> {
        let mut args = vec!["XADD".to_string(), key.to_string(), "*".to_string()];
        for (k, v) in fields {
            args.push(k.to_string());
            args.push(v.to_string());
        }
        match self.try_cmd(&args)? {
            Value::Str(id) => Ok(id),
            other => Err(format!("unexpected XADD reply {other:?}")),
        }
    }

    /// XRANGE key - + (all entries).
    pub fn xrange(&self, key: &str) -> Vec<Entry> {
        parse_entries(&self.cmd(&["XRANGE", key, "-", "+"]))
    }

    /// XLEN (0 when the key does not exist).
    pub fn xlen(&self, key: &str) -> i64 {
        self.cmd(&["XLEN", key]).as_int().unwrap_or(0)
    }

    /// ZCARD (0 when the key does not exist).
    pub fn zcard(&self, key: &str) -> i64 {
        self.cmd(&["ZCARD", key]).as_int().unwrap_or(0)
    }

    /// ZRANGE key 0 -1 WITHSCORES as (member, score) pairs.
    pub fn zrange_withscores(&self, key: &str) -> Vec<(String, f64)> {
        let items = self.cmd(&["ZRANGE", key, "0", "-1", "WITHSCORES"]).items();
        items
            .chunks(2)
            .filter_map(|c| {
                Some((
                    c.first()?.as_str()?,
                    c.get(1)?.as_str()?.parse::<f64>().ok()?,
                ))
            })
            .collect()
    }

    /// EXISTS key
    pub fn exists(&self, key: &str) -> bool {
        self.cmd(&["EXISTS", key]).as_int() == Some(1)
    }

    /// `XREADGROUP GROUP <group> <consumer> COUNT <count> STREAMS <key> >`: reads new
    /// entries as that consumer (they stay pending on it); returns the reply.
    pub fn read_as(&self, key: &str, group: &str, consumer: &str, count: usize) -> Value {
        let count = count.to_string();
        self.cmd(&[
            "XREADGROUP",
            "GROUP",
            group,
            consumer,
            "COUNT",
            &count,
            "STREAMS",
            key,
            ">",
        ])
    }

    /// Number of entries pending for `group` on stream `key` (`None` if the
    /// stream or group does not exist).
    pub fn xpending_count(&self, key: &str, group: &str) -> Option<i64> {
        match self.cmd(&["XPENDING", key, group]) {
            Value::Array(items) => items.first().and_then(Value::as_int),
            _ => None,
        }
    }

    /// Pending counts per consumer for `group` on stream `key`.
    pub fn xpending_consumers(&self, key: &str, group: &str) -> HashMap<String, i64> {
        let mut out = HashMap::new();
        if let Value::Array(items) = self.cmd(&["XPENDING", key, group])
            && let Some(Value::Array(consumers)) = items.get(3)
        {
            for c in consumers {
                let pair = c.items();
                if let (Some(name), Some(n)) = (
                    pair.first().and_then(Value::as_str),
                    pair.get(1).and_then(Value::as_int),
                ) {
                    out.insert(name, n);
                }
            }
        }
        out
    }

    /// Detailed pending entries: (entry id, consumer, idle ms, delivery count).
    pub fn xpending_detail(&self, key: &str, group: &str) -> Vec<(String, String, i64, i64)> {
        let reply = self.cmd(&["XPENDING", key, group, "-", "+", "1000"]);
        reply
            .items()
            .iter()
            .filter_map(|e| {
                let f = e.items();
                Some((
                    f.first()?.as_str()?,
                    f.get(1)?.as_str()?,
                    f.get(2)?.as_int()?,
                    f.get(3)?.as_int()?,
                ))
            })
            .collect()
    }

    /// Names of the consumer groups of a stream.
    pub fn xinfo_group_names(&self, key: &str) -> Vec<String> {
        let mut names = Vec::new();
        for g in self.cmd(&["XINFO", "GROUPS", key]).items() {
            let f = g.items();
            for pair in f.chunks(2) {
                if pair.first().and_then(Value::as_str).as_deref() == Some("name")
                    && let Some(n) = pair.get(1).and_then(Value::as_str)
                {
                    names.push(n);
                }
            }
        }
        names
    }

    /// Every key matching `pattern` (SCAN, bounded).
    pub fn scan_keys(&self, pattern: &str) -> Vec<String> {
        let mut cursor = "0".to_string();
        let mut keys = Vec::new();
        for _ in 0..10_000 {
            let reply = self.cmd(&["SCAN", &cursor, "MATCH", pattern, "COUNT", "1000"]);
            let items = reply.items();
            cursor = items.first().and_then(Value::as_str).unwrap_or_default();
            if let Some(Value::Array(ks)) = items.get(1) {
                keys.extend(ks.iter().filter_map(Value::as_str));
            }
            if cursor == "0" {
                break;
            }
        }
        keys.sort();
        keys.dedup();
        keys
    }

    /// A human-readable dump of every `events:<env>:*` key, for failure messages.
    pub fn dump_env(&self, env: &str) -> String {
        let mut out = format!("--- redis state for env {env:?} (port {}) ---\n", self.port);
        if self.try_cmd(&["PING"]).is_err() {
            return out + "(redis unreachable)\n";
        }
        let keys = self.scan_keys(&format!("events:{env}:*"));
        for key in keys {
            let t = self.cmd(&["TYPE", &key]).as_str().unwrap_or_default();
            out.push_str(&format!("{key} ({t})"));
            match t.as_str() {
                "stream" => {
                    out.push_str(&format!(" len={}\n", self.xlen(&key)));
                    for e in self.xrange(&key).iter().take(50) {
                        out.push_str(&format!("    {} {:?}\n", e.entry_id, e.fields));
                    }
                    for g in self.xinfo_group_names(&key) {
                        out.push_str(&format!(
                            "    group {g}: pending {:?}\n",
                            self.xpending_detail(&key, &g)
                        ));
                    }
                }
                "zset" => {
                    out.push_str(&format!(" {:?}\n", self.zrange_withscores(&key)));
                }
                "string" => {
                    let ttl = self.cmd(&["PTTL", &key]).as_int().unwrap_or(-3);
                    out.push_str(&format!(" pttl={ttl}\n"));
                }
                _ => out.push('\n'),
            }
        }
        out
    }

    /// Prints [`RedisServer::dump_env`] if the current test panics while the guard lives.
    pub fn dump_on_panic<'a>(&'a self, env: &str) -> DumpGuard<'a> {
        DumpGuard {
            redis: self,
            env: env.to_string(),
        }
    }

    /// Prints [`RedisServer::dump_env`] when the current thread is panicking.
    pub fn dump_if_panicking(&self, env: &str) {
        if std::thread::panicking() {
            // Dump from a scoped thread: a failure there must not turn the
            // test's panic into an abort.
            let dump = std::thread::scope(|s| {
                s.spawn(|| self.dump_env(env))
                    .join()
                    .unwrap_or_else(|_| "(could not dump the redis state)".to_string())
            });
            eprintln!("{dump}");
        }
    }

    /// Waits until the server answers PING (after a restart).
    pub fn wait_up(&self, timeout: Duration) {
        wait_until("redis answers PING", timeout, || {
            matches!(self.try_cmd(&["PING"]), Ok(Value::Status(_)))
        });
    }
}

/// See [`RedisServer::dump_on_panic`].
pub struct DumpGuard<'a> {
    redis: &'a RedisServer,
    env: String,
}

impl Drop for DumpGuard<'_> {
    fn drop(&mut self) {
        self.redis.dump_if_panicking(&self.env);
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "--- redis-server log (port {}, {} starts) ---\n{}",
                self.port,
                self.starts,
                self.log_tail(60)
            );
        }
        self.kill9();
    }
}

/// Parses an XRANGE-style reply.
pub fn parse_entries(reply: &Value) -> Vec<Entry> {
    reply
        .items()
        .iter()
        .filter_map(|e| {
            let parts = e.items();
            let entry_id = parts.first()?.as_str()?;
            let kv = parts.get(1)?.items();
            let fields = kv
                .chunks(2)
                .filter_map(|p| Some((p.first()?.as_str()?, p.get(1)?.as_str()?)))
                .collect();
            Some(Entry { entry_id, fields })
        })
        .collect()
}

/// A MONITOR transcript recorder (one connection, one reader thread).
pub struct Monitor {
    stream: std::net::TcpStream,
    lines: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// One command seen by MONITOR.
#[derive(Debug, Clone)]
pub struct MonitorLine {
    /// Server time (unix seconds) when the command ran.
    pub ts: f64,
    /// `127.0.0.1:PORT`, `lua`, ...
    pub client: String,
    /// Command name and arguments, unescaped.
    pub args: Vec<String>,
    pub raw: String,
}

impl Monitor {
    /// Starts recording every command the server executes.
    pub fn start(redis: &RedisServer) -> Monitor {
        use std::io::{BufRead, BufReader, Write};
        let stream = std::net::TcpStream::connect(("127.0.0.1", redis.port)).expect("connect");
        super::resp::register_test_port(stream.local_addr().unwrap().port());
        let mut w = stream.try_clone().unwrap();
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        if let Some(pw) = &redis.password {
            let auth = format!("*2\r\n$4\r\nAUTH\r\n${}\r\n{pw}\r\n", pw.len());
            w.write_all(auth.as_bytes()).unwrap();
            let mut ok = String::new();
            reader.read_line(&mut ok).unwrap();
            assert!(ok.starts_with("+OK"), "AUTH answered {ok:?}");
        }
        w.write_all(b"*1\r\n$7\r\nMONITOR\r\n").unwrap();
        let mut first = String::new();
        reader.read_line(&mut first).unwrap();
        assert!(first.starts_with("+OK"), "MONITOR answered {first:?}");
        let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let out = std::sync::Arc::clone(&lines);
        let thread = std::thread::spawn(move || {
            for _ in 0..10_000_000u64 {
                let mut line = String::new();
                match reader.read_line(&mut line) {
                    Ok(0) | Err(_) => return,
                    Ok(_) => out
                        .lock()
                        .unwrap()
                        .push(line.trim_end().trim_start_matches('+').to_string()),
                }
            }
        });
        Monitor {
            stream,
            lines,
            thread: Some(thread),
        }
    }

    /// Waits until a recorded line contains `needle` (bounded by `wait`); whether it did.
    pub fn wait_seen(&self, needle: &str, wait: std::time::Duration) -> bool {
        let deadline = std::time::Instant::now() + wait;
        loop {
            if self
                .lines
                .lock()
                .unwrap()
                .iter()
                .any(|l| l.contains(needle))
            {
                return true;
            }
            if std::time::Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    /// Stops recording and returns the parsed transcript.
    pub fn stop(mut self) -> Vec<MonitorLine> {
        let _ = self.stream.shutdown(std::net::Shutdown::Both);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let lines = self.lines.lock().unwrap().clone();
        lines.iter().filter_map(|l| parse_monitor_line(l)).collect()
    }
}

/// Parses `1700000000.123456 [0 127.0.0.1:5555] "CMD" "arg" ...`.
pub fn parse_monitor_line(line: &str) -> Option<MonitorLine> {
    let ts: f64 = line.split_whitespace().next()?.parse().ok()?;
    let open = line.find('[')?;
    let close = open + line[open..].find(']')?;
    let client = line[open + 1..close].split_whitespace().nth(1)?.to_string();
    let mut args = Vec::new();
    let mut chars = line[close + 1..].chars().peekable();
    while let Some(c) = chars.next() {
        if c != '"' {
            continue;
        }
        let mut arg = String::new();
        while let Some(c) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some('x') => {
                        let hex: String = chars.by_ref().take(2).collect();
                        if let Ok(b) = u8::from_str_radix(&hex, 16) {
                            arg.push(b as char);
                        }
                    }
                    Some('n') => arg.push('\n'),
                    Some('r') => arg.push('\r'),
                    Some('t') => arg.push('\t'),
                    Some(o) => arg.push(o),
                    None => {}
                },
                '"' => break,
                c => arg.push(c),
            }
        }
        args.push(arg);
    }
    Some(MonitorLine {
        ts,
        client,
        args,
        raw: line.to_string(),
    })
}
