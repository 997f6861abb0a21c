//! Fault tools (docs/reliability-matrix.md "Method", faults). Every loop is bounded in count and
//! in time, everything binds loopback addresses only.
//!
//! * process faults: [`kill9_loop`], [`sigterm_loop`] (restart after each);
//! * Redis-side faults: [`ClientKillStorm`] (`CLIENT KILL` every period for a
//!   bounded time), [`client_pause`], [`DebugSleep`] (`DEBUG SLEEP`; the test
//!   server runs with `--enable-debug-command local`);
//! * network faults: [`Proxy`], a small tokio TCP proxy between the daemon and
//!   Redis with modes pass, latency ± jitter, half-open blackhole (stop
//!   forwarding, keep the sockets open), RST now, RST after N bytes, and RST
//!   right after a chunk matching a pattern was forwarded (a commit point).

use super::resp::{Conn, Value};
use super::{RedisServer, WorkerProcess};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

// ------------------------------------------------------------ process faults

/// `kill -9` then restart, `count` times, `gap` apart (bounded by `count`).
/// Returns the sink-independent kill instants.
pub fn kill9_loop(worker: &mut WorkerProcess, count: usize, gap: Duration) -> Vec<Instant> {
    let mut at = Vec::new();
    for _ in 0..count.min(100) {
        std::thread::sleep(gap.min(Duration::from_secs(30)));
        worker.assert_running();
        worker.kill9();
        at.push(Instant::now());
        worker.restart();
    }
    at
}

/// SIGTERM, wait for the exit (at most `exit_within`), restart; `count` times.
/// Returns the exit codes.
pub fn sigterm_loop(
    worker: &mut WorkerProcess,
    count: usize,
    gap: Duration,
    exit_within: Duration,
) -> Vec<Option<i32>> {
    let mut codes = Vec::new();
    for _ in 0..count.min(100) {
        std::thread::sleep(gap.min(Duration::from_secs(30)));
        worker.assert_running();
        worker.sigterm();
        let status = worker.wait_exit(exit_within);
        if status.is_none() {
            worker.kill9();
        }
        codes.push(status.and_then(|s| s.code()));
        worker.restart();
    }
    codes
}

// ------------------------------------------------------------ redis faults

/// Which clients a [`ClientKillStorm`] kills.
#[derive(Debug, Clone)]
pub enum KillTarget {
    /// `CLIENT KILL ID <id>` for every client whose name starts with the prefix
    /// (the daemon names its connections `event-worker:<consumer>:<role>`).
    NamePrefix(String),
    /// `CLIENT KILL TYPE normal SKIPME yes` (harness connections reconnect).
    TypeNormal,
    /// `CLIENT KILL USER <name>`.
    User(String),
}

/// `CLIENT KILL` every `every` for `duration` (bounded), in a thread.
pub struct ClientKillStorm {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<(usize, usize)>>,
}

impl ClientKillStorm {
    /// Starts the storm against `redis` (a dedicated harness connection).
    pub fn start(
        redis: &RedisServer,
        target: KillTarget,
        every: Duration,
        duration: Duration,
    ) -> ClientKillStorm {
        let port = redis.port;
        let password = redis.password().map(str::to_string);
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = Arc::clone(&stop);
        let duration = duration.min(Duration::from_secs(120));
        let thread = std::thread::spawn(move || {
            let start = Instant::now();
            let (mut rounds, mut killed) = (0usize, 0usize);
            let mut conn: Option<Conn> = None;
            while start.elapsed() < duration && !stop2.load(Ordering::SeqCst) && rounds < 10_000 {
                if conn.is_none() {
                    conn = Conn::connect_auth(port, password.as_deref()).ok();
                }
                if let Some(c) = conn.as_mut() {
                    match kill_once(c, &target) {
                        Ok(n) => killed += n,
                        Err(_) => conn = None,
                    }
                }
                rounds += 1;
                std::thread::sleep(every);
            }
            (rounds, killed)
        });
        ClientKillStorm {
            stop,
            thread: Some(thread),
        }
    }

    /// Waits for the end of the storm: (rounds, clients killed).
    pub fn join(mut self) -> (usize, usize) {
        self.thread.take().unwrap().join().unwrap()
    }
}

impl Drop for ClientKillStorm {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// One round of a storm; returns the number of clients killed.
pub fn kill_once(c: &mut Conn, target: &KillTarget) -> std::io::Result<usize> {
    match target {
        KillTarget::TypeNormal => Ok(c
            .cmd(&["CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes"])?
            .as_int()
            .unwrap_or(0) as usize),
        KillTarget::User(u) => Ok(c
            .cmd(&["CLIENT", "KILL", "USER", u, "SKIPME", "yes"])?
            .as_int()
            .unwrap_or(0) as usize),
        KillTarget::NamePrefix(prefix) => {
            let list = c.cmd(&["CLIENT", "LIST"])?.as_str().unwrap_or_default();
            let mut n = 0;
            for line in list.lines() {
                let field = |k: &str| {
                    line.split(' ')
                        .find_map(|kv| kv.strip_prefix(&format!("{k}=")))
                        .unwrap_or("")
                        .to_string()
                };
                if field("name").starts_with(prefix.as_str()) {
                    let id = field("id");
                    if c.cmd(&["CLIENT", "KILL", "ID", &id])?.as_int() == Some(1) {
                        n += 1;
                    }
                }
            }
            Ok(n)
        }
    }
}

/// Names of the connected clients (`CLIENT LIST` name= fields).
pub fn client_names(redis: &RedisServer) -> Vec<String> {
    let list = redis.cmd(&["CLIENT", "LIST"]).as_str().unwrap_or_default();
    list.lines()
        .filter_map(|l| {
            l.split(' ')
                .find_map(|kv| kv.strip_prefix("name="))
                .map(str::to_string)
        })
        .collect()
}

/// `CLIENT PAUSE <ms> ALL|WRITE` on a dedicated connection.
pub fn client_pause(redis: &RedisServer, ms: u64, mode: &str) {
    let mut c = redis.conn();
    let r = c
        .cmd(&["CLIENT", "PAUSE", &ms.min(60_000).to_string(), mode])
        .unwrap();
    assert_eq!(r, Value::Status("OK".into()), "CLIENT PAUSE answered {r:?}");
}

/// `DEBUG SLEEP <secs>` running in a thread (the server is stalled meanwhile).
pub struct DebugSleep {
    thread: Option<std::thread::JoinHandle<Result<Value, String>>>,
    pub started: Instant,
}

impl DebugSleep {
    /// Starts `DEBUG SLEEP secs` (at most 30 s).
    pub fn start(redis: &RedisServer, secs: f64) -> DebugSleep {
        let secs = secs.min(30.0);
        let mut c = redis.conn();
        c.set_read_timeout(Duration::from_secs_f64(secs + 10.0))
            .unwrap();
        let thread = std::thread::spawn(move || {
            c.cmd(&["DEBUG", "SLEEP", &format!("{secs}")])
                .map_err(|e| e.to_string())
        });
        DebugSleep {
            thread: Some(thread),
            started: Instant::now(),
        }
    }

    /// Waits for the reply (`+OK`).
    pub fn join(mut self) -> Result<Value, String> {
        self.thread.take().unwrap().join().unwrap()
    }
}

impl Drop for DebugSleep {
    fn drop(&mut self) {
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

// ------------------------------------------------------------ the TCP proxy

/// Direction of traffic through the proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dir {
    /// Client (daemon) to Redis.
    Up,
    /// Redis to client.
    Down,
}

/// A one-shot cut: when a chunk in `dir` contains every one of `patterns` (or,
/// with no pattern, once `after_bytes` more bytes went through in `dir`), it is
/// forwarded and, `delay` later, both sockets of that connection are reset.
#[derive(Debug, Clone)]
pub struct Cut {
    pub dir: Dir,
    pub patterns: Vec<Vec<u8>>,
    pub after_bytes: Option<u64>,
    pub delay: Duration,
}

impl Cut {
    /// Reset after the next chunk containing all `patterns` went upstream.
    pub fn after_command(patterns: &[&[u8]], delay: Duration) -> Cut {
        Cut {
            dir: Dir::Up,
            patterns: patterns.iter().map(|p| p.to_vec()).collect(),
            after_bytes: None,
            delay,
        }
    }
    /// Reset after `n` more bytes (in either direction's count for `dir`).
    pub fn after_bytes(dir: Dir, n: u64) -> Cut {
        Cut {
            dir,
            patterns: Vec::new(),
            after_bytes: Some(n),
            delay: Duration::ZERO,
        }
    }
}

/// A fired cut: when, and the chunk that triggered it (lossy text, bounded).
#[derive(Debug, Clone)]
pub struct Fired {
    pub at: Instant,
    pub chunk: String,
}

#[derive(Default)]
struct Mode {
    blackhole: bool,
    /// (base, jitter) per direction.
    latency: Option<(Duration, Duration)>,
    cut: Option<(Cut, u64)>,
}

struct ProxyState {
    mode: Mutex<Mode>,
    conns: Mutex<Vec<CancellationToken>>,
    fired: Mutex<Vec<Fired>>,
    accepted: AtomicUsize,
    bytes_up: AtomicU64,
    bytes_down: AtomicU64,
    upstream: SocketAddr,
}

/// A TCP proxy `listen -> upstream` on its own runtime; dropped = stopped.
pub struct Proxy {
    pub addr: SocketAddr,
    state: Arc<ProxyState>,
    stop: CancellationToken,
    rt: Option<tokio::runtime::Runtime>,
}

impl Proxy {
    /// A proxy on `127.0.0.1:<free port>` to `127.0.0.1:upstream_port`.
    pub fn start(upstream_port: u16) -> Proxy {
        Proxy::start_on("127.0.0.1", upstream_port)
    }

    /// A proxy listening on `ip` (a loopback address) to `127.0.0.1:upstream_port`.
    pub fn start_on(ip: &str, upstream_port: u16) -> Proxy {
        assert!(ip.starts_with("127."), "loopback only");
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let std_listener = std::net::TcpListener::bind((ip, 0)).expect("bind proxy");
        std_listener.set_nonblocking(true).unwrap();
        let addr = std_listener.local_addr().unwrap();
        let state = Arc::new(ProxyState {
            mode: Mutex::new(Mode::default()),
            conns: Mutex::new(Vec::new()),
            fired: Mutex::new(Vec::new()),
            accepted: AtomicUsize::new(0),
            bytes_up: AtomicU64::new(0),
            bytes_down: AtomicU64::new(0),
            upstream: ([127, 0, 0, 1], upstream_port).into(),
        });
        let stop = CancellationToken::new();
        {
            let state = Arc::clone(&state);
            let stop = stop.clone();
            rt.spawn(async move {
                let listener = tokio::net::TcpListener::from_std(std_listener).unwrap();
                loop {
                    let accepted = tokio::select! {
                        _ = stop.cancelled() => return,
                        a = listener.accept() => a,
                    };
                    let Ok((client, _)) = accepted else { continue };
                    state.accepted.fetch_add(1, Ordering::SeqCst);
                    let kill = stop.child_token();
                    state.conns.lock().unwrap().push(kill.clone());
                    tokio::spawn(handle_conn(client, Arc::clone(&state), kill));
                }
            });
        }
        Proxy {
            addr,
            state,
            stop,
            rt: Some(rt),
        }
    }

    /// `redis://HOST:PORT` of the proxy (`host` e.g. `127.0.0.1` or `localhost`).
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Forward everything as is (clears latency and blackhole; keeps an armed cut).
    pub fn pass(&self) {
        let mut m = self.state.mode.lock().unwrap();
        m.blackhole = false;
        m.latency = None;
    }

    /// Adds `base ± jitter` to every chunk, per direction (order kept).
    pub fn latency(&self, base: Duration, jitter: Duration) {
        self.state.mode.lock().unwrap().latency = Some((base, jitter));
    }

    /// Half-open blackhole on/off: nothing is forwarded, sockets stay open, new
    /// connections are accepted but not connected upstream.
    pub fn blackhole(&self, on: bool) {
        self.state.mode.lock().unwrap().blackhole = on;
    }

    /// Resets every open connection now (both sides see RST).
    pub fn rst_all(&self) -> usize {
        let conns: Vec<CancellationToken> = self.state.conns.lock().unwrap().drain(..).collect();
        let n = conns.iter().filter(|c| !c.is_cancelled()).count();
        for c in conns {
            c.cancel();
        }
        n
    }

    /// Arms a one-shot cut.
    pub fn arm(&self, cut: Cut) {
        self.state.mode.lock().unwrap().cut = Some((cut, 0));
    }

    /// Whether an armed cut is still waiting.
    pub fn armed(&self) -> bool {
        self.state.mode.lock().unwrap().cut.is_some()
    }

    /// Cuts that fired so far.
    pub fn fired(&self) -> Vec<Fired> {
        self.state.fired.lock().unwrap().clone()
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.state.accepted.load(Ordering::SeqCst)
    }

    /// Bytes forwarded (up, down).
    pub fn bytes(&self) -> (u64, u64) {
        (
            self.state.bytes_up.load(Ordering::SeqCst),
            self.state.bytes_down.load(Ordering::SeqCst),
        )
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.cancel();
        if let Some(rt) = self.rt.take() {
            rt.shutdown_timeout(Duration::from_secs(2));
        }
    }
}

fn is_blackholed(state: &ProxyState) -> bool {
    state.mode.lock().unwrap().blackhole
}

fn jittered(state: &ProxyState) -> Duration {
    use rand::Rng;
    match state.mode.lock().unwrap().latency {
        None => Duration::ZERO,
        Some((base, jitter)) => {
            let j = jitter.as_secs_f64();
            let d = base.as_secs_f64() + rand::thread_rng().gen_range(-j..=j);
            Duration::from_secs_f64(d.max(0.0))
        }
    }
}

/// Whether this chunk fires the armed cut (consumes it), and the chunk text.
fn check_cut(state: &ProxyState, dir: Dir, chunk: &[u8]) -> Option<Duration> {
    let mut m = state.mode.lock().unwrap();
    let (cut, seen) = m.cut.as_mut()?;
    if cut.dir != dir {
        return None;
    }
    *seen += chunk.len() as u64;
    let hit = if let Some(n) = cut.after_bytes {
        *seen >= n
    } else {
        cut.patterns
            .iter()
            .all(|p| chunk.windows(p.len()).any(|w| w == p.as_slice()))
    };
    if !hit {
        return None;
    }
    let delay = cut.delay;
    m.cut = None;
    drop(m);
    let text: String = String::from_utf8_lossy(&chunk[..chunk.len().min(300)]).replace("\r\n", " ");
    state.fired.lock().unwrap().push(Fired {
        at: Instant::now(),
        chunk: text,
    });
    Some(delay)
}

async fn handle_conn(
    client: tokio::net::TcpStream,
    state: Arc<ProxyState>,
    kill: CancellationToken,
) {
    // A blackholed proxy accepts and then forwards nothing, not even the connect.
    for _ in 0..600_000 {
        if !is_blackholed(&state) || kill.is_cancelled() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    if kill.is_cancelled() {
        let _ = client.set_zero_linger();
        return;
    }
    let server = match tokio::net::TcpStream::connect(state.upstream).await {
        Ok(s) => s,
        Err(_) => {
            let _ = client.set_zero_linger();
            return;
        }
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (cr, cw) = client.into_split();
    let (sr, sw) = server.into_split();
    let up = tokio::spawn(pump(cr, sw, Dir::Up, Arc::clone(&state), kill.clone()));
    let down = tokio::spawn(pump(sr, cw, Dir::Down, Arc::clone(&state), kill.clone()));
    let (a, b) = (up.await, down.await);
    // Reset both sockets when the connection was killed (linger 0 = RST on close).
    if kill.is_cancelled() {
        for half in [a, b].into_iter().flatten() {
            let (r, w) = half;
            let _ = r.as_ref().set_zero_linger();
            w.forget();
            drop(r);
        }
    }
}

type Halves = (
    tokio::net::tcp::OwnedReadHalf,
    tokio::net::tcp::OwnedWriteHalf,
);

/// Copies `r -> w` with the proxy's modes; returns the halves so the caller
/// can reset the sockets.
async fn pump(
    mut r: tokio::net::tcp::OwnedReadHalf,
    w: tokio::net::tcp::OwnedWriteHalf,
    dir: Dir,
    state: Arc<ProxyState>,
    kill: CancellationToken,
) -> Halves {
    // Writer task: chunks in order, each not before its deadline.
    let (tx, mut rx) =
        tokio::sync::mpsc::unbounded_channel::<(Instant, Vec<u8>, Option<Duration>)>();
    let wkill = kill.clone();
    let writer = tokio::spawn(async move {
        let mut w = w;
        loop {
            let item = tokio::select! {
                _ = wkill.cancelled() => return w,
                i = rx.recv() => i,
            };
            let Some((deadline, data, fire)) = item else {
                let _ = w.shutdown().await;
                return w;
            };
            tokio::select! {
                _ = wkill.cancelled() => return w,
                _ = tokio::time::sleep_until(deadline.into()) => {}
            }
            if data.is_empty() {
                continue;
            }
            if w.write_all(&data).await.is_err() {
                wkill.cancel();
                return w;
            }
            if let Some(delay) = fire {
                let k = wkill.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(delay).await;
                    k.cancel();
                });
            }
        }
    });
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = tokio::select! {
            _ = kill.cancelled() => break,
            n = r.read(&mut buf) => n,
        };
        let n = match n {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        // Half-open: hold the data (and stop reading) while blackholed.
        let mut waited = 0u32;
        while is_blackholed(&state) && !kill.is_cancelled() && waited < 600_000 {
            tokio::time::sleep(Duration::from_millis(10)).await;
            waited += 1;
        }
        if kill.is_cancelled() {
            break;
        }
        let chunk = buf[..n].to_vec();
        let fire = check_cut(&state, dir, &chunk);
        match dir {
            Dir::Up => state.bytes_up.fetch_add(n as u64, Ordering::SeqCst),
            Dir::Down => state.bytes_down.fetch_add(n as u64, Ordering::SeqCst),
        };
        let deadline = Instant::now() + jittered(&state);
        if tx.send((deadline, chunk, fire)).is_err() {
            break;
        }
    }
    drop(tx);
    let w = writer.await.expect("proxy writer");
    (r, w)
}
