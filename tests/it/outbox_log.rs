//! The outbox's log through the real binary and real files: the directory lock against a
//! second process, kill -9 in the middle of appends, `max_bytes`, and a drain into a real
//! Redis (README "Outbox"). `outbox fill` is the hidden test command that appends.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::util::redis::RedisServer;
use crate::util::worker::binary;

/// The binary with a clean environment: no config file, env `it`.
pub fn cli(redis_url: &str) -> Command {
    let mut c = Command::new(binary());
    c.env_clear()
        .env("EVENTS_ENV", "it")
        .env("EVENTS_REDIS_URL", redis_url)
        .env("EVENTS_LOG", "warn");
    c
}

/// `outbox status --json` of `dir`.
pub fn status(dir: &Path) -> serde_json::Value {
    let out = cli("redis://127.0.0.1:1")
        .args(["--json", "outbox", "status", "--dir"])
        .arg(dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "status: {}", text(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// `outbox fill` with extra arguments, as a child whose stdout is piped.
pub fn fill(dir: &Path, args: &[&str]) -> Child {
    cli("redis://127.0.0.1:1")
        .args(["outbox", "fill", "--dir"])
        .arg(dir)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Reads `appended <seq>` lines until `n` arrived (bounded by 20 s); returns the last seq.
fn wait_for_appends(lines: &mut impl BufRead, n: u64) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut last = 0;
    for seen in 1..=n {
        assert!(Instant::now() < deadline, "fill too slow");
        let mut line = String::new();
        assert!(lines.read_line(&mut line).unwrap() > 0, "fill ended early");
        last = line
            .trim()
            .strip_prefix("appended ")
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(last, seen);
    }
    last
}

/// A second process on a locked directory is refused with the holder's pid; kill -9 of a
/// process in the middle of appends loses no append that returned.
#[test]
fn outbox_lock_and_kill9_mid_appends() {
    for attempt in 0..3u64 {
        let dir = tempfile::tempdir().unwrap();
        let args = [
            "--raw", "--count", "100000", "--size", "3000", "--fsync", "always",
        ];
        let mut child = fill(dir.path(), &args);
        let mut out = BufReader::new(child.stdout.take().unwrap());
        wait_for_appends(&mut out, 3);
        if attempt == 0 {
            let refused = cli("redis://127.0.0.1:1")
                .args(["outbox", "status", "--dir"])
                .arg(dir.path())
                .output()
                .unwrap();
            let want = format!(
                "event-worker: outbox directory {} is in use by another process (pid {}); one \
                 directory serves one process: stop that process, or give this one its own \
                 [outbox] dir",
                dir.path().display(),
                child.id()
            );
            assert_eq!(text(&refused.stderr).trim(), want);
            assert_eq!(refused.status.code(), Some(1));
        }
        std::thread::sleep(Duration::from_millis(attempt * 37));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        // Every line printed before the kill is an append that returned.
        let mut rest = String::new();
        let _ = std::io::Read::read_to_string(&mut out, &mut rest);
        let returned = 3 + rest.lines().count() as u64;
        let s = status(dir.path());
        let records = s["records"].as_u64().unwrap();
        assert!(
            records == returned || records == returned + 1,
            "{records} records after {returned} returned appends: {s}"
        );
        assert!(s["torn_at_open"].as_u64().unwrap() <= 1, "{s}");
    }
}

/// A process killed (-9) with half a record written: the next open discards that torn
/// record, counts it and keeps every record whose append returned.
#[test]
fn outbox_kill9_with_a_torn_record() {
    let dir = tempfile::tempdir().unwrap();
    let args = ["--count", "5", "--size", "500", "--torn-tail"];
    let mut child = fill(dir.path(), &args);
    let mut out = BufReader::new(child.stdout.take().unwrap());
    wait_for_appends(&mut out, 5);
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert_eq!(line, "torn\n");
    child.kill().unwrap();
    child.wait().unwrap();
    let s = status(dir.path());
    assert_eq!(
        (&s["records"], &s["torn_at_open"], &s["torn_total"]),
        (&5.into(), &1.into(), &1.into()),
        "{s}"
    );
    let s = status(dir.path());
    assert_eq!(
        (&s["torn_at_open"], &s["torn_total"]),
        (&0.into(), &1.into())
    );
    let human = cli("redis://127.0.0.1:1")
        .args(["outbox", "status", "--dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    let human = text(&human.stdout);
    assert!(human.contains("records: 5\n"), "{human}");
    assert!(
        human.contains("torn records discarded: 0 at this open, 1 in all\n"),
        "{human}"
    );
}

/// `max_bytes` refuses with the typed message and loses nothing; a drain then publishes
/// every queued event into its stream, in order, and empties the outbox.
#[test]
fn outbox_full_then_drain_into_redis() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let child = fill(
        dir.path(),
        &["--count", "100", "--size", "100", "--max-bytes", "4096"],
    );
    let out = child.wait_with_output().unwrap();
    let appended = text(&out.stdout).lines().count();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(appended, 23, "{}", text(&out.stdout));
    let want = format!(
        "event-worker: outbox {} is full: 4023 bytes of max_bytes 4096 hold events not yet \
         drained and this record needs 183 more; nothing was dropped; retry once Redis is back \
         and the outbox drains, or raise outbox.max_bytes",
        dir.path().display()
    );
    assert_eq!(text(&out.stderr).trim(), want);
    assert_eq!(status(dir.path())["records"], 23);

    let drained = drain(&redis, dir.path());
    assert!(drained.status.success(), "{}", text(&drained.stderr));
    assert_eq!(text(&drained.stdout).trim(), "drained: 23, remaining: 0");
    let ids: Vec<String> = redis
        .xrange("events:it:outbox.fill")
        .iter()
        .map(|e| e.get("id").unwrap().to_string())
        .collect();
    let want: Vec<String> = (0..23).map(|i| format!("fill-{i}")).collect();
    assert_eq!(ids, want);
    let s = status(dir.path());
    assert_eq!(
        (s["records"].as_u64(), s["bytes"].as_u64()),
        (Some(0), Some(8))
    );
    // Nothing is drained twice.
    let again = drain(&redis, dir.path());
    assert_eq!(text(&again.stdout).trim(), "drained: 0, remaining: 0");
    assert_eq!(redis.xlen("events:it:outbox.fill"), 23);
}

/// A crash after the XADDs but before the ack is reproduced with a copy of the directory
/// taken before a drain: draining the copy again re-publishes every record, and the id guard
/// of the idempotent publish writes none of them twice.
#[test]
fn outbox_drain_repeated_after_a_lost_ack_writes_nothing_twice() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let out = fill(dir.path(), &["--count", "7"])
        .wait_with_output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let before_ack = tempfile::tempdir().unwrap();
    let copied = std::process::Command::new("cp")
        .arg("-a")
        .arg(format!("{}/.", dir.path().display()))
        .arg(before_ack.path())
        .status()
        .unwrap();
    assert!(copied.success());
    let first = drain(&redis, dir.path());
    assert_eq!(text(&first.stdout).trim(), "drained: 7, remaining: 0");
    let again = drain(&redis, before_ack.path());
    assert!(again.status.success(), "{}", text(&again.stderr));
    assert_eq!(text(&again.stdout).trim(), "drained: 7, remaining: 0");
    let ids: Vec<String> = redis
        .xrange("events:it:outbox.fill")
        .iter()
        .map(|e| e.get("id").unwrap().to_string())
        .collect();
    let want: Vec<String> = (0..7).map(|i| format!("fill-{i}")).collect();
    assert_eq!(ids, want, "each record once, in order");
}

/// A drain with Redis down fails naming the cause and keeps every record.
#[test]
fn outbox_drain_with_redis_down_keeps_everything() {
    let dir = tempfile::tempdir().unwrap();
    let out = fill(dir.path(), &["--count", "5"])
        .wait_with_output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let port = crate::util::free_port();
    let down = cli(&format!("redis://127.0.0.1:{port}"))
        .args(["outbox", "drain", "--dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(down.status.code(), Some(1), "{}", text(&down.stdout));
    assert!(
        text(&down.stderr).contains(&format!("127.0.0.1:{port}")),
        "{}",
        text(&down.stderr)
    );
    assert_eq!(status(dir.path())["records"], 5);
}

fn drain(redis: &RedisServer, dir: &Path) -> Output {
    cli(&redis.url())
        .args(["outbox", "drain", "--dir"])
        .arg(dir)
        .output()
        .unwrap()
}
