//! Small helpers: options, /proc figures, child processes that die with us, a tiny HTTP client.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// `--key value` options (a flag without a value is `true`).
pub struct Opts(BTreeMap<String, String>);

impl Opts {
    pub fn parse(args: impl Iterator<Item = String>) -> Result<Opts, String> {
        let mut map = BTreeMap::new();
        let mut args = args.peekable();
        while let Some(a) = args.next() {
            let key = a
                .strip_prefix("--")
                .ok_or_else(|| format!("unexpected argument `{a}`"))?
                .to_string();
            let value = match args.peek() {
                Some(v) if !v.starts_with("--") => args.next().unwrap_or_default(),
                _ => "true".to_string(),
            };
            map.insert(key, value);
        }
        Ok(Opts(map))
    }

    pub fn str(&self, key: &str) -> Result<&str, String> {
        self.0
            .get(key)
            .map(String::as_str)
            .ok_or_else(|| format!("--{key} is required"))
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    pub fn str_or<'a>(&'a self, key: &str, default: &'a str) -> &'a str {
        self.0.get(key).map(String::as_str).unwrap_or(default)
    }

    pub fn num(&self, key: &str, default: u64) -> Result<u64, String> {
        match self.0.get(key) {
            None => Ok(default),
            Some(v) => v
                .replace('_', "")
                .parse()
                .map_err(|_| format!("--{key}: `{v}` is not a number")),
        }
    }

    pub fn flag(&self, key: &str) -> bool {
        self.0.get(key).is_some_and(|v| v != "false")
    }
}

/// A free 127.0.0.1 port below the kernel's ephemeral range (32768+), so that outgoing
/// connections of other processes cannot take it between this check and the bind.
pub fn free_port() -> Result<u16, String> {
    let seed = (now_ns() ^ (u64::from(std::process::id()) << 16)) as usize;
    for i in 0..2000 {
        let port = 20_000 + ((seed.wrapping_mul(7919) + i * 7) % 12_000) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    Err("no free port in 20000..32000".into())
}

pub fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

fn clk_tck() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as f64 } else { 100.0 }
}

/// utime + stime of a process (its threads included, also the exited ones), in seconds.
pub fn proc_cpu_s(pid: u32) -> Option<f64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the `(comm)`, which may contain spaces.
    let rest = &text[text.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state); utime is field 14, stime 15.
    let utime: f64 = f.get(11)?.parse().ok()?;
    let stime: f64 = f.get(12)?.parse().ok()?;
    Some((utime + stime) / clk_tck())
}

/// Peak resident set size (VmHWM) in KiB.
pub fn proc_hwm_kb(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    text.lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}

/// Busy CPU seconds of the whole machine (all cores) since boot, from /proc/stat.
pub fn machine_busy_s() -> f64 {
    let text = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(line) = text.lines().next() else {
        return 0.0;
    };
    let v: Vec<f64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal
    let busy: f64 = [0usize, 1, 2, 5, 6, 7]
        .iter()
        .filter_map(|&i| v.get(i))
        .sum();
    busy / clk_tck()
}

/// A child process that is stopped (SIGTERM, then SIGKILL) when dropped, and killed by the
/// kernel if this process dies first (PR_SET_PDEATHSIG).
pub struct Proc {
    pub name: String,
    pub child: Option<Child>,
    pub pid: u32,
}

impl Proc {
    pub fn spawn(
        name: &str,
        cmd: &mut Command,
        log: &Path,
        piped_stdout: bool,
    ) -> Result<Proc, String> {
        let log_file = std::fs::File::create(log).map_err(|e| format!("{}: {e}", log.display()))?;
        let err_file = log_file.try_clone().map_err(|e| e.to_string())?;
        cmd.stdin(Stdio::null()).stderr(err_file);
        if piped_stdout {
            cmd.stdout(Stdio::piped());
        } else {
            cmd.stdout(log_file);
        }
        // SAFETY: prctl is async-signal-safe; it only sets a flag of the new process.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong);
                Ok(())
            });
        }
        let child = cmd.spawn().map_err(|e| format!("start {name}: {e}"))?;
        let pid = child.id();
        Ok(Proc {
            name: name.to_string(),
            child: Some(child),
            pid,
        })
    }

    pub fn alive(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// SIGTERM (or `sig`), wait up to `grace`, then SIGKILL; returns the captured stdout.
    pub fn stop_with(&mut self, sig: libc::c_int, grace: Duration) -> String {
        let Some(mut child) = self.child.take() else {
            return String::new();
        };
        if matches!(child.try_wait(), Ok(None)) {
            // SAFETY: as in `signal`.
            unsafe {
                libc::kill(self.pid as libc::pid_t, sig);
            }
            let deadline = Instant::now() + grace;
            while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            if matches!(child.try_wait(), Ok(None)) {
                eprintln!("  {} did not stop within {grace:?}; killing it", self.name);
                let _ = child.kill();
            }
        }
        let mut out = String::new();
        if let Some(mut s) = child.stdout.take() {
            let _ = s.read_to_string(&mut out);
        }
        let _ = child.wait();
        out
    }

    pub fn stop(&mut self) -> String {
        self.stop_with(libc::SIGTERM, Duration::from_secs(15))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop_with(libc::SIGTERM, Duration::from_secs(5));
    }
}

/// A bounded HTTP/1.0 request to 127.0.0.1:`port`; returns (status, body).
pub fn http(port: u16, method: &str, path: &str) -> Result<(u16, String), String> {
    let mut s = TcpStream::connect_timeout(
        &std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_secs(2),
    )
    .map_err(|e| format!("connect 127.0.0.1:{port}: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok();
    s.set_write_timeout(Some(Duration::from_secs(10))).ok();
    write!(
        s,
        "{method} {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\n\r\n"
    )
    .map_err(|e| e.to_string())?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

/// Nearest-rank percentile of sorted values.
pub fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// The number following `"sent_ns":` in `data`.
pub fn find_sent_ns(data: &[u8]) -> Option<u64> {
    const KEY: &[u8] = b"\"sent_ns\":";
    let at = data.windows(KEY.len()).position(|w| w == KEY)? + KEY.len();
    let mut v: u64 = 0;
    let mut any = false;
    for &b in &data[at..] {
        if b.is_ascii_digit() {
            v = v * 10 + u64::from(b - b'0');
            any = true;
        } else {
            break;
        }
    }
    any.then_some(v)
}

/// `n=.. p50_us=.. p99_us=.. max_us=..` from latencies in ns.
pub fn latency_line(mut lat: Vec<u64>) -> String {
    lat.sort_unstable();
    format!(
        "n={} p50_us={} p99_us={} max_us={}",
        lat.len(),
        percentile(&lat, 50.0) / 1000,
        percentile(&lat, 99.0) / 1000,
        lat.last().copied().unwrap_or(0) / 1000
    )
}

/// Parses `k=v` words into a map.
pub fn kv(line: &str) -> BTreeMap<String, u64> {
    line.split_whitespace()
        .filter_map(|w| w.split_once('='))
        .filter_map(|(k, v)| Some((k.to_string(), v.parse().ok()?)))
        .collect()
}

/// Others' builds and test runs: cargo, rustc, linkers, test binaries, debug workers.
pub fn others_busy() -> Vec<String> {
    const COMMS: &[&str] = &[
        "cargo",
        "rustc",
        "rustdoc",
        "clippy-driver",
        "cc",
        "ld",
        "promtool",
    ];
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in dir.flatten() {
        let name = e.file_name();
        let Some(pid) = name
            .to_str()
            .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
        else {
            continue;
        };
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        let comm = comm.trim();
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline"))
            .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
            .unwrap_or_default();
        if COMMS.contains(&comm)
            || cmdline.contains("target/debug/deps/")
            || cmdline.contains("target/release/deps/")
            || cmdline.contains("target/debug/event-worker")
        {
            out.push(format!(
                "{pid} {}",
                cmdline.chars().take(80).collect::<String>().trim()
            ));
        }
    }
    out
}
