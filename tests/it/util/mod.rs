//! The harness: a real redis-server per test ([`redis`]), a real HTTP sink
//! with a request ledger ([`sink`]), the daemon as a child process
//! ([`worker`]), the scenario builder that owns all of them and the closing
//! conservation check ([`scenario`]), and small helpers for keys, events, metrics and waiting.
#![allow(dead_code)] // each test file uses a different part of the harness

pub mod api;
pub mod browser;
pub mod checker;
pub mod clients;
pub mod cluster;
pub mod faults;
pub mod redis;
pub mod resp;
pub mod scenario;
pub mod sink;
pub mod slowloris;
pub mod tls;
pub mod worker;

use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

pub use redis::{Aof, Entry, Monitor, RedisServer};
pub use scenario::{Close, Scenario};
pub use sink::{Action, HttpSink, Outcome};
pub use worker::{Route, WorkerConfig, WorkerProcess};

/// Lowest port of the range [`free_port`] hands out from.
const HANDED_OUT_FROM: u32 = 10_000;

/// A free loopback TCP port for a child process to bind (a worker's API, a redis-server).
///
/// Bound and released, so between this check and the child's bind another socket could take
/// it. Ports of the kernel's ephemeral range (`ip_local_port_range`) are what the many outgoing
/// connections of parallel tests get, and one of them took a worker's API port between the two
/// (a CI run: "Address already in use"). So the port comes from below that range, where no
/// outgoing connection is given one, and each is handed out once per test process; the
/// ephemeral port of a `:0` bind only when the range leaves no room below it. The
/// cluster helper's node ports stay in the ephemeral range, their bus ports (+10000) above it.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse::<u32>().ok())
        .unwrap_or(32_768);
    if let Some(span) = ephemeral_low
        .checked_sub(HANDED_OUT_FROM)
        .filter(|s| *s >= 1_000)
    {
        // Test binaries run one after another; the pid spreads two runs' starting points.
        let start = std::process::id().wrapping_mul(7_919) % span;
        for _ in 0..span {
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            let port = (HANDED_OUT_FROM + (start + n) % span) as u16;
            if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
                return port;
            }
        }
    }
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Wall-clock time as unix seconds (comparable with MONITOR timestamps).
pub fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// The Unix time of the first line of a worker's human-format log that contains `needle`
/// (its leading RFC 3339 UTC timestamp, e.g. `2026-12-05T03:54:43.218376Z`).
pub fn log_time_of(log: &str, needle: &str) -> Option<f64> {
    let line = log.lines().find(|l| l.contains(needle))?;
    let stamp = line.split_whitespace().next()?.strip_suffix('Z')?;
    let (date, time) = stamp.split_once('T')?;
    let mut ymd = date.split('-').map(|p| p.parse::<i64>().ok());
    let (y, m, d) = (ymd.next()??, ymd.next()??, ymd.next()??);
    let mut hms = time.split(':');
    let (h, min) = (
        hms.next()?.parse::<i64>().ok()?,
        hms.next()?.parse::<i64>().ok()?,
    );
    let sec: f64 = hms.next()?.parse().ok()?;
    // Days from 1970-01-01 of a proleptic Gregorian date (H. Hinnant's days_from_civil).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some((days * 86_400 + h * 3_600 + min * 60) as f64 + sec)
}

/// Sends a signal with the `kill` utility (`sig` is `TERM`, `KILL`, ...).
pub fn send_signal(pid: u32, sig: &str) {
    let _ = std::process::Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status();
}

/// Polls `cond` every 20 ms until it holds; panics with `what` after `timeout`.
pub fn wait_until(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    if !try_wait_until(timeout, &mut cond) {
        panic!("timed out after {timeout:?} waiting for: {what}");
    }
}

/// Polls `cond` every 20 ms; false after `timeout`.
pub fn try_wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    loop {
        if cond() {
            return true;
        }
        if start.elapsed() >= timeout {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// HTTP/1.0 GET with std only: (status, body), `None` if unreachable.
pub fn http_get(addr: &str, path: &str) -> Option<(u16, String)> {
    let addr: SocketAddr = addr.parse().ok()?;
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.set_write_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.0\r\nHost: {addr}\r\nAccept: */*\r\n\r\n"
    )
    .ok()?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).ok()?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Some((status, body))
}

/// Resident set size of a process in KiB (`VmRSS` of `/proc/<pid>/status`; 0 if gone).
pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// Open file descriptors of a process (entries of `/proc/<pid>/fd`; 0 if gone).
pub fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// A field of `INFO <section>` as an integer.
pub fn info_field(redis: &RedisServer, section: &str, field: &str) -> Option<i64> {
    let text = redis.cmd(&["INFO", section]).as_str()?;
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .and_then(|v| v.trim().parse().ok())
}

// ---------------------------------------------------------------- keys

/// `events:<env>:<type>`
pub fn stream_key(env: &str, ty: &str) -> String {
    format!("events:{env}:{ty}")
}
/// `events:<env>:retry:<group>`
pub fn retry_key(env: &str, group: &str) -> String {
    format!("events:{env}:retry:{group}")
}
/// `events:<env>:redeliver:<group>`
pub fn redeliver_key(env: &str, group: &str) -> String {
    format!("events:{env}:redeliver:{group}")
}
/// `events:<env>:dlq`
pub fn dlq_key(env: &str) -> String {
    format!("events:{env}:dlq")
}
/// `events:<env>:heartbeat:<group>:<consumer>`
pub fn heartbeat_key(env: &str, group: &str, consumer: &str) -> String {
    format!("events:{env}:heartbeat:{group}:{consumer}")
}

// ---------------------------------------------------------------- events

/// XADDs a well-formed event (`id`, `type`, `data`); returns the entry id.
pub fn publish(redis: &RedisServer, env: &str, ty: &str, id: &str) -> String {
    let data = format!(r#"{{"n":"{id}"}}"#);
    redis.xadd(
        &stream_key(env, ty),
        &[("id", id), ("type", ty), ("data", &data)],
    )
}

/// The DLQ entries of an env.
pub fn dlq_entries(redis: &RedisServer, env: &str) -> Vec<Entry> {
    redis.xrange(&dlq_key(env))
}

/// DLQ entries keyed by event `id` (entries without an id are left out).
pub fn dlq_by_id(redis: &RedisServer, env: &str) -> BTreeMap<String, Vec<Entry>> {
    let mut m: BTreeMap<String, Vec<Entry>> = BTreeMap::new();
    for e in dlq_entries(redis, env) {
        if let Some(id) = e.get("id") {
            m.entry(id.to_string()).or_default().push(e.clone());
        }
    }
    m
}

/// Total pending entries of `group` over the given streams (missing group = 0).
pub fn pending_total(redis: &RedisServer, keys: &[String], group: &str) -> i64 {
    keys.iter()
        .map(|k| redis.xpending_count(k, group).unwrap_or(0))
        .sum()
}

/// Drain condition: nothing pending on the type streams and the redeliver
/// stream of `group`, and the retry set empty.
pub fn drained(redis: &RedisServer, env: &str, group: &str, types: &[&str]) -> bool {
    let mut keys: Vec<String> = types.iter().map(|t| stream_key(env, t)).collect();
    keys.push(redeliver_key(env, group));
    pending_total(redis, &keys, group) == 0 && redis.zcard(&retry_key(env, group)) == 0
}

/// Asserts the drained state with a readable message. The acknowledgement follows the
/// handler's answer by a round trip (acks are batched), so this first waits a bounded
/// moment for the drain.
pub fn assert_drained(redis: &RedisServer, env: &str, group: &str, types: &[&str]) {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !drained(redis, env, group, types) && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    for t in types {
        let k = stream_key(env, t);
        let p = redis.xpending_count(&k, group).unwrap_or(0);
        assert_eq!(p, 0, "{k}: {p} entries still pending for group {group}");
    }
    let rk = redeliver_key(env, group);
    let p = redis.xpending_count(&rk, group).unwrap_or(0);
    assert_eq!(p, 0, "{rk}: {p} entries still pending for group {group}");
    let z = redis.zcard(&retry_key(env, group));
    assert_eq!(z, 0, "retry set of group {group} still holds {z} entries");
}

// ---------------------------------------------------------------- metrics

/// One Prometheus sample.
#[derive(Debug, Clone)]
pub struct Sample {
    pub name: String,
    pub labels: HashMap<String, String>,
    pub value: f64,
}

/// Parses Prometheus text format (enough for our own metrics).
pub fn parse_metrics(text: &str) -> Vec<Sample> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (head, value) = match line.rfind(' ') {
            Some(i) => (&line[..i], line[i + 1..].trim()),
            None => continue,
        };
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => match v.parse() {
                Ok(v) => v,
                Err(_) => continue,
            },
        };
        let (name, labels) = match head.find('{') {
            Some(i) => (&head[..i], parse_labels(&head[i + 1..head.len() - 1])),
            None => (head, HashMap::new()),
        };
        out.push(Sample {
            name: name.to_string(),
            labels,
            value,
        });
    }
    out
}

fn parse_labels(s: &str) -> HashMap<String, String> {
    let mut m = HashMap::new();
    let mut rest = s;
    while let Some(eq) = rest.find('=') {
        let key = rest[..eq].trim().trim_start_matches(',').trim().to_string();
        let after = &rest[eq + 1..];
        if !after.starts_with('"') {
            break;
        }
        let mut val = String::new();
        let mut chars = after[1..].char_indices();
        let mut end = after.len();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => {
                    if let Some((_, n)) = chars.next() {
                        val.push(match n {
                            'n' => '\n',
                            other => other,
                        });
                    }
                }
                '"' => {
                    end = i + 2;
                    break;
                }
                c => val.push(c),
            }
        }
        m.insert(key, val);
        rest = &after[end.min(after.len())..];
    }
    m
}

/// Samples named `name` whose labels include all of `want`.
pub fn samples<'a>(all: &'a [Sample], name: &str, want: &[(&str, &str)]) -> Vec<&'a Sample> {
    all.iter()
        .filter(|s| s.name == name)
        .filter(|s| {
            want.iter()
                .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .collect()
}

/// Sum of the matching samples' values.
pub fn sum(all: &[Sample], name: &str, want: &[(&str, &str)]) -> f64 {
    samples(all, name, want).iter().map(|s| s.value).sum()
}
