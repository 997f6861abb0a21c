//! T64: text from producers and sinks never writes to the operator's terminal. Event ids,
//! types, correlation ids, data, handler error text and stream names holding terminal
//! escape sequences (`ESC [2J` clears the screen, `ESC ]0;...BEL` sets the window title),
//! carriage returns, backspaces and a bidi override are shown as visible escapes (`\x1b`,
//! `\r`, `\u{202e}`) by every human output (`dlq list|show|stats|replay --dry-run`,
//! `history`, `check`, error lines, the human log), while `--json` keeps the exact bytes.

use crate::util::worker::cli;
use crate::util::{Route, Scenario, stream_key, wait_until};
use serde_json::Value;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

const TY: &str = "t64.pay";
/// Published with the CLI; the sink answers 400 with [`SINK_BODY`].
const ID1: &str = "t64-1\x1b[2J\r\u{202e}";
const ID1_SHOWN: &str = r"t64-1\x1b[2J\r\u{202e}";
const CORRELATION: &str = "c\x1b]0;pwned\x07\x08";
const CORRELATION_SHOWN: &str = r"c\x1b]0;pwned\x07\x08";
const SINK_BODY: &str = "\x1b[31mred\r\x08\u{202e}";
const ERROR1_SHOWN: &str = r"http status 400: \x1b[31mred\r\x08\u{202e}";
/// XADDed with a type that is not the stream's: dead-lettered `malformed`.
const ID2: &str = "t64-2\x1b]0;pwned\x07";
const ID2_SHOWN: &str = r"t64-2\x1b]0;pwned\x07";
const TYPE2: &str = "t64.pay\x1b[2J\u{202e}";
const DATA2: &str = "{\"a\":\"\x1b[H\x1b[2J\"}";
const ERROR2_SHOWN: &str =
    r"field `type` is `t64.pay\x1b[2J\u{202e}` but the stream is for `t64.pay`";
/// A stream whose name is no valid type: reported as unconsumed by `check` and the log.
const STREAM3_SUFFIX: &str = "\x1b[2Jevil\u{202e}";
const STREAM3_SHOWN: &str = r"events:t64:\x1b[2Jevil\u{202e}";

#[test]
fn t64_hostile_text_is_escaped_in_every_human_output_and_exact_in_json() {
    let sink = BadRequestSink::start(SINK_BODY);
    let sink_url = sink.url();
    let stream3 = format!("events:t64:{STREAM3_SUFFIX}");
    let seeded = stream3.clone();
    let s = Scenario::new("T64")
        .types(&[TY])
        .routes(move |types, _| {
            let tys: Vec<&str> = types.iter().map(String::as_str).collect();
            vec![Route::http(&tys, &sink_url)]
        })
        .setup(move |r| {
            r.xadd(&seeded, &[("x", "1")]);
        })
        .config(|c| c.extra += "[health]\nscan_interval = \"200ms\"\n")
        .start();

    // Event 1 through the CLI (its human output is the entry id), event 2 malformed.
    let out = cli(
        &s.cfg,
        &[
            "publish",
            TY,
            r#"{"note":"x"}"#,
            "--id",
            ID1,
            "--correlation-id",
            CORRELATION,
        ],
    );
    assert_eq!(out.code, Some(0), "publish failed: {}", out.stderr);
    assert_inert("publish", &out.stdout);
    s.redis.xadd(
        &stream_key(&s.env, TY),
        &[("id", ID2), ("type", TYPE2), ("data", DATA2)],
    );
    wait_until("2 DLQ entries", Duration::from_secs(15), || {
        s.redis.xrange(&format!("events:{}:dlq", s.env)).len() == 2
    });
    assert_eq!(sink.requests(), 1, "the sink saw event 1 once");

    // ---- dlq list: one row per entry, every cell escaped.
    let list = human(&s, &["dlq", "list"]);
    for shown in [
        ID1_SHOWN,
        ID2_SHOWN,
        ERROR1_SHOWN,
        "permanent_error",
        "malformed",
    ] {
        assert!(list.contains(shown), "dlq list lacks {shown}:\n{list}");
    }
    assert_eq!(list.lines().count(), 3, "header + 2 rows:\n{list}");
    let json = json_out(&s, &["dlq", "list"]);
    let entries = json["entries"].as_array().unwrap();
    let by_id = |id: &str| {
        entries
            .iter()
            .find(|e| e["id"] == id)
            .unwrap_or_else(|| panic!("{id:?} not in dlq list --json: {json}"))
    };
    assert_eq!(by_id(ID1)["error"], format!("http status 400: {SINK_BODY}"));
    let (e1, e2) = (
        by_id(ID1)["entry_id"].as_str().unwrap().to_string(),
        by_id(ID2)["entry_id"].as_str().unwrap().to_string(),
    );

    // ---- dlq show: one `field: value` line per field; --json keeps the exact bytes.
    let show1 = human(&s, &["dlq", "show", &e1]);
    for line in [
        format!("id: {ID1_SHOWN}"),
        format!("correlationid: {CORRELATION_SHOWN}"),
        format!("dlq_error: {ERROR1_SHOWN}"),
    ] {
        assert!(
            show1.lines().any(|l| l == line),
            "dlq show lacks `{line}`:\n{show1}"
        );
    }
    let show2 = human(&s, &["dlq", "show", &e2]);
    for line in [
        format!("id: {ID2_SHOWN}"),
        r"type: t64.pay\x1b[2J\u{202e}".to_string(),
        r#"data: {"a":"\x1b[H\x1b[2J"}"#.to_string(),
        format!("dlq_error: {ERROR2_SHOWN}"),
    ] {
        assert!(
            show2.lines().any(|l| l == line),
            "dlq show lacks `{line}`:\n{show2}"
        );
    }
    let exact1 = json_out(&s, &["dlq", "show", &e1]);
    assert_eq!(exact1["fields"]["id"], ID1);
    assert_eq!(exact1["fields"]["correlationid"], CORRELATION);
    assert_eq!(
        exact1["fields"]["dlq_error"],
        format!("http status 400: {SINK_BODY}")
    );
    let exact2 = json_out(&s, &["dlq", "show", &e2]);
    assert_eq!(exact2["fields"]["id"], ID2);
    assert_eq!(exact2["fields"]["type"], TYPE2);
    assert_eq!(exact2["fields"]["data"], DATA2);

    // ---- stats and the replay sample.
    human(&s, &["dlq", "stats"]);
    let sample = human(&s, &["dlq", "replay", "--all", "--dry-run"]);
    assert!(
        sample.contains(ID1_SHOWN) && sample.contains(ID2_SHOWN),
        "{sample}"
    );

    // ---- history.
    let history = human(&s, &["history"]);
    let line = format!("correlation={CORRELATION_SHOWN} ");
    assert!(
        history
            .lines()
            .any(|l| l.contains(ID1_SHOWN) && l.contains(&line)),
        "history lacks {ID1_SHOWN} with `{line}`:\n{history}"
    );
    assert!(
        history.contains(ID2_SHOWN),
        "history lacks {ID2_SHOWN}:\n{history}"
    );
    let records = json_out(&s, &["history"]);
    assert!(
        records["records"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["id"] == ID1 && r["correlation_id"] == CORRELATION),
        "history --json lacks the exact id and correlation id: {records}"
    );

    // ---- check: the unconsumed stream's name.
    let check = human(&s, &["check"]);
    let warning = format!("warning: stream {STREAM3_SHOWN} holds 1 entries nobody consumes");
    assert!(
        check.contains(&warning),
        "check lacks `{warning}`:\n{check}"
    );
    let exact = json_out(&s, &["check"]);
    assert_eq!(exact["unconsumed"]["streams"][0]["stream"], stream3);

    // ---- an error line quoting the operator's input.
    let out = cli(&s.cfg, &["history", "--type", "\x1b[2J"]);
    assert_eq!(out.code, Some(1), "{}", out.stderr);
    assert_inert("history --type error", &out.stderr);
    assert!(
        out.stderr
            .contains(r"--type: `\x1b[2J` is not a valid event type"),
        "{}",
        out.stderr
    );

    // ---- the worker's human log.
    wait_until(
        "the unconsumed stream logged",
        Duration::from_secs(5),
        || s.workers[0].stderr().contains(STREAM3_SHOWN),
    );
    let log = s.workers[0].stderr();
    assert_inert("the worker's log", &log);
    for shown in [
        format!("id={ID1_SHOWN} type={TY}"),
        format!("error={ERROR1_SHOWN}"),
        format!("error=malformed event: {ERROR2_SHOWN}"),
        format!("stream={STREAM3_SHOWN}"),
    ] {
        assert!(log.contains(&shown), "the log lacks `{shown}`:\n{log}");
    }
}

/// Runs a human CLI command that must succeed; its stdout and stderr must be inert.
fn human(s: &Scenario, args: &[&str]) -> String {
    let out = cli(&s.cfg, args);
    assert_eq!(out.code, Some(0), "{args:?} failed: {}", out.stderr);
    assert_inert(&format!("{args:?} stdout"), &out.stdout);
    assert_inert(&format!("{args:?} stderr"), &out.stderr);
    out.stdout
}

/// Runs `--json ARGS` that must succeed; its stdout as JSON.
fn json_out(s: &Scenario, args: &[&str]) -> Value {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let out = cli(&s.cfg, &all);
    assert_eq!(out.code, Some(0), "{all:?} failed: {}", out.stderr);
    serde_json::from_str(out.stdout.trim())
        .unwrap_or_else(|e| panic!("{all:?}: {e}: {}", out.stdout))
}

/// Panics when `text` holds a character a terminal acts on (a control character other
/// than the line breaks, DEL, a C1 control, a bidi control or a line separator).
fn assert_inert(what: &str, text: &str) {
    let bad = |c: char| {
        (c.is_control() && c != '\n')
            || matches!(c, '\u{61c}' | '\u{200e}' | '\u{200f}' | '\u{2028}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
    };
    if let Some((i, c)) = text.char_indices().find(|(_, c)| bad(*c)) {
        let from = text[..i].rfind('\n').map_or(0, |n| n + 1);
        let to = text[i..].find('\n').map_or(text.len(), |n| i + n);
        panic!(
            "{what}: raw U+{:04X} reaches the terminal in line {:?}",
            c as u32,
            &text[from..to]
        );
    }
}

/// A loopback HTTP server answering every request `400` with a fixed body (the harness's
/// sink answers with an empty body). Stops when dropped, or after 60 s.
struct BadRequestSink {
    port: u16,
    requests: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl BadRequestSink {
    fn start(body: &'static str) -> BadRequestSink {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let (requests, stop) = (
            Arc::new(AtomicUsize::new(0)),
            Arc::new(AtomicBool::new(false)),
        );
        let (n, halt) = (Arc::clone(&requests), Arc::clone(&stop));
        let thread = std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(60);
            while !halt.load(Ordering::Relaxed) && Instant::now() < deadline {
                match listener.accept() {
                    Ok((conn, _)) => {
                        n.fetch_add(1, Ordering::Relaxed);
                        let _ = answer(conn, body);
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        BadRequestSink {
            port,
            requests,
            stop,
            thread: Some(thread),
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/events", self.port)
    }

    fn requests(&self) -> usize {
        self.requests.load(Ordering::Relaxed)
    }
}

/// Reads one request (head, then `Content-Length` bytes; at most 1 MiB, 5 s) and answers 400.
fn answer(mut conn: TcpStream, body: &str) -> std::io::Result<()> {
    conn.set_nonblocking(false)?;
    conn.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break p + 4;
        }
        let n = conn.read(&mut chunk)?;
        if n == 0 || buf.len() > 1 << 20 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    while buf.len() < head_end + length.min(1 << 20) {
        let n = conn.read(&mut chunk)?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    write!(
        conn,
        "HTTP/1.1 400 Bad Request\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )?;
    conn.flush()
}

impl Drop for BadRequestSink {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
