//! Hostile input on the HTTP API (T40-T44): 401 without or with a wrong token
//! (also in the query string), 413 over 1 MiB, 400 for bad JSON, unknown fields
//! (named), traversal-shaped DLQ ids and reserved or odd event types, 415
//! without a JSON content type, 405 for other verbs, no CORS headers; 503 when
//! no token is configured. A MONITOR transcript proves that no refused request
//! caused a single Redis command and that nothing touched a key outside
//! `events:<env>:*`.

use crate::util::api::{Api, Resp, encode};
use crate::util::redis::MonitorLine;
use crate::util::resp::is_test_client;
use crate::util::worker::cli;
use crate::util::*;
use serde_json::json;
use std::collections::BTreeSet;
use std::time::Duration;

const TY: &str = "orders.created";
const TOKEN: &str = "hardening-token-93b1c7d2e5f4";

/// One request the API must refuse.
struct Case {
    what: String,
    method: &'static str,
    path: String,
    /// None: no Authorization header; Some(v): that header value.
    auth: Option<String>,
    content_type: Option<&'static str>,
    body: Option<Vec<u8>>,
    status: u16,
    /// Text the error must contain (e.g. the unknown field's name).
    names: Option<&'static str>,
    /// Over a raw socket: declare this Content-Length, send only 1 MiB + 1 bytes
    /// of body, and expect the answer without sending the rest (T41: the
    /// server reads at most the limit plus slack).
    head_only: Option<usize>,
}

fn bearer() -> Option<String> {
    Some(format!("Bearer {TOKEN}"))
}

fn get(what: &str, path: impl Into<String>, auth: Option<String>, status: u16) -> Case {
    Case {
        what: what.into(),
        method: "GET",
        path: path.into(),
        auth,
        content_type: None,
        body: None,
        status,
        names: None,
        head_only: None,
    }
}

fn post(what: &str, path: &str, body: impl Into<Vec<u8>>, status: u16) -> Case {
    Case {
        what: what.into(),
        method: "POST",
        path: path.into(),
        auth: bearer(),
        content_type: Some("application/json"),
        body: Some(body.into()),
        status,
        names: None,
        head_only: None,
    }
}

fn naming(mut c: Case, name: &'static str) -> Case {
    c.names = Some(name);
    c
}

/// Declares `length` bytes of body but sends only the limit plus one byte over
/// a raw socket, then reads the answer: the 413 comes without the rest of the
/// body (real clients uploading all of it: `api_oversized`).
fn head_only(addr: &str, c: &Case, length: usize) -> Resp {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).expect("connect to the API");
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut head = format!(
        "{} {} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {length}\r\n",
        c.method, c.path
    );
    if let Some(a) = &c.auth {
        head += &format!("Authorization: {a}\r\n");
    }
    if let Some(ct) = c.content_type {
        head += &format!("Content-Type: {ct}\r\n");
    }
    head += "\r\n";
    s.write_all(head.as_bytes()).unwrap();
    let sent = (1024 * 1024 + 1).min(length);
    let _ = s.write_all(&vec![b'a'; sent]);
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        match s.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let headers = text
        .lines()
        .skip(1)
        .take_while(|l| !l.is_empty())
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Resp {
        status,
        headers,
        body: text,
    }
}

fn send(api: &Api, addr: &str, c: &Case) -> Resp {
    if let Some(length) = c.head_only {
        return head_only(addr, c, length);
    }
    let mut headers: Vec<(&str, &str)> = Vec::new();
    if let Some(a) = &c.auth {
        headers.push(("authorization", a.as_str()));
    }
    if let Some(ct) = c.content_type {
        headers.push(("content-type", ct));
    }
    api.send(c.method, &c.path, &headers, c.body.clone())
}

fn cases() -> Vec<Case> {
    let pub_ = "/api/events/publish";
    let replay = "/api/events/dlq/replay";
    let purge = "/api/events/dlq/purge";
    let valid_publish = json!({"type": TY, "data": {"a": 1}}).to_string();
    let mut v = Vec::new();

    // ---- 401: no token, wrong token, token elsewhere.
    for path in [
        "/api/events/dlq",
        "/api/events/dlq/stats",
        "/api/events/dlq/1-0",
        "/api/events/history",
    ] {
        v.push(get("no token", path, None, 401));
        v.push(get(
            "wrong token",
            path,
            Some("Bearer wrong-token-0000000000".into()),
            401,
        ));
    }
    v.push(get(
        "token in the query string",
        format!("/api/events/history?token={TOKEN}"),
        None,
        401,
    ));
    v.push(get(
        "token as Basic",
        "/api/events/dlq/stats",
        Some(format!("Basic {TOKEN}")),
        401,
    ));
    v.push(get(
        "token plus one char",
        "/api/events/dlq/stats",
        Some(format!("Bearer {TOKEN}x")),
        401,
    ));
    v.push(get(
        "token minus one char",
        "/api/events/dlq/stats",
        Some(format!("Bearer {}", &TOKEN[..TOKEN.len() - 1])),
        401,
    ));
    v.push(get(
        "empty bearer",
        "/api/events/dlq/stats",
        Some("Bearer ".into()),
        401,
    ));
    for (path, body) in [
        (pub_, valid_publish.clone()),
        (replay, json!({"all": true}).to_string()),
        (purge, json!({"all": true, "confirm": true}).to_string()),
    ] {
        let mut c = post("mutation without token", path, body.clone(), 401);
        c.auth = None;
        v.push(c);
        let mut c = post("mutation with wrong token", path, body, 401);
        c.auth = Some("Bearer wrong-token-0000000000".into());
        v.push(c);
    }

    // ---- 413: a 2 MiB body is refused from its Content-Length, before it is sent.
    for path in [pub_, replay, purge] {
        let mut c = post("2 MiB body", path, Vec::new(), 413);
        c.head_only = Some(2 * 1024 * 1024);
        v.push(c);
    }

    // ---- 400: bad JSON.
    let bad_json: Vec<(&str, Vec<u8>)> = vec![
        ("truncated JSON", br#"{"type":"#.to_vec()),
        ("not JSON", b"type=orders.created".to_vec()),
        (
            "invalid UTF-8",
            vec![b'{', b'"', 0xff, 0xfe, b'"', b':', b'1', b'}'],
        ),
        ("depth bomb", "[".repeat(100_000).into_bytes()),
        ("array instead of object", b"[]".to_vec()),
        (
            "duplicate keys",
            format!(r#"{{"type":"{TY}","data":{{}},"type":"x"}}"#).into_bytes(),
        ),
        (
            "huge number",
            format!(r#"{{"type":"{TY}","data":1e999999}}"#).into_bytes(),
        ),
    ];
    for (what, body) in bad_json {
        for path in [pub_, replay, purge] {
            v.push(post(what, path, body.clone(), 400));
        }
    }

    // ---- 400: unknown fields, named.
    v.push(naming(
        post(
            "unknown field",
            pub_,
            json!({"type": TY, "data": {}, "bogus_field": 1}).to_string(),
            400,
        ),
        "bogus_field",
    ));
    v.push(naming(
        post(
            "unknown field",
            replay,
            json!({"all": true, "dryrun": true}).to_string(),
            400,
        ),
        "dryrun",
    ));
    v.push(naming(
        post(
            "unknown field",
            purge,
            json!({"all": true, "confirm": true, "yes": true}).to_string(),
            400,
        ),
        "yes",
    ));
    v.push(naming(
        get(
            "unknown query field",
            "/api/events/dlq?typ=x",
            bearer(),
            400,
        ),
        "typ",
    ));
    v.push(naming(
        get(
            "unknown query field",
            "/api/events/history?correlation=x",
            bearer(),
            400,
        ),
        "correlation",
    ));

    // ---- 400: identifiers shaped like traversal or injection.
    let long_id = format!("{}-0", "1".repeat(10 * 1024));
    for raw in [
        "..%2F..%2Fx",
        "%2e%2e%2f",
        "*",
        "0-0%201-1",
        "%0D%0ADEL%20x",
        "1-2-3",
        "-1",
        "%7Bx%7D",
        long_id.as_str(),
    ] {
        v.push(get(
            "hostile DLQ id in the path",
            format!("/api/events/dlq/{raw}"),
            bearer(),
            400,
        ));
    }
    for id in [
        "../../x",
        "%2e%2e%2f",
        "*",
        "0-0 1-1",
        "\r\nDEL x",
        "{x}",
        long_id.as_str(),
    ] {
        v.push(post(
            "hostile id in a replay",
            replay,
            json!({ "ids": [id] }).to_string(),
            400,
        ));
        v.push(post(
            "hostile id in a purge",
            purge,
            json!({ "ids": [id], "confirm": true }).to_string(),
            400,
        ));
    }
    v.push(post(
        "one good id and one hostile id",
        replay,
        json!({"ids": ["1-0", "*"]}).to_string(),
        400,
    ));
    for q in [
        "before=*",
        "before=..%2Fx",
        "type=dlq",
        "type=a%3Ab",
        "type=%7Bx%7D",
        "type=..%2Fx",
        "group=..%2Fx",
        "group=a%20b",
        "reason=DEL%20x",
        "since=soon",
        "limit=-1",
    ] {
        v.push(get(
            "hostile list filter",
            format!("/api/events/dlq?{q}"),
            bearer(),
            400,
        ));
    }
    for body in [
        json!({"type": "../x", "dry_run": true}),
        json!({"type": "history", "dry_run": true}),
        json!({"group": "a b", "dry_run": true}),
        json!({"since": "forever", "dry_run": true}),
        json!({"all": true, "rate": 0}),
        json!({"all": true, "rate": -5}),
        json!({}),
    ] {
        v.push(post("hostile replay filter", replay, body.to_string(), 400));
    }
    v.push(post(
        "hostile purge filter",
        purge,
        json!({"type": "dlq", "confirm": true}).to_string(),
        400,
    ));
    v.push(post(
        "purge without confirm",
        purge,
        json!({"all": true}).to_string(),
        400,
    ));

    // ---- 400: publish with reserved or odd types, bad ids.
    let long_type = "a".repeat(300);
    for t in [
        "dlq",
        "retry",
        "redeliver",
        "history",
        "coordination",
        "migrations",
        "heartbeat",
        "a:b",
        "{x}",
        "*",
        "../x",
        "",
        "Orders.Created",
        "ünïcödé",
        "orders.created\r\nDEL x",
        "orders..created",
        long_type.as_str(),
    ] {
        v.push(post(
            "bad publish type",
            pub_,
            json!({"type": t, "data": {}}).to_string(),
            400,
        ));
    }
    v.push(post(
        "empty event id",
        pub_,
        json!({"type": TY, "data": {}, "id": ""}).to_string(),
        400,
    ));
    v.push(post(
        "300-char event id",
        pub_,
        json!({"type": TY, "data": {}, "id": "i".repeat(300)}).to_string(),
        400,
    ));
    v.push(post(
        "300-char correlation id",
        pub_,
        json!({"type": TY, "data": {}, "correlationid": "c".repeat(300)}).to_string(),
        400,
    ));
    v.push(post(
        "missing data",
        pub_,
        json!({"type": TY}).to_string(),
        400,
    ));
    for q in [
        "type=dlq".to_string(),
        "type=a%3Ab".to_string(),
        format!("id={}", "i".repeat(10 * 1024)),
        format!("correlation_id={}", encode(&"c".repeat(10 * 1024))),
        "limit=abc".to_string(),
    ] {
        v.push(get(
            "bad history query",
            format!("/api/events/history?{q}"),
            bearer(),
            400,
        ));
    }

    // ---- 415: no JSON content type.
    for (ct, path) in [
        (None, pub_),
        (Some("text/plain"), pub_),
        (Some("application/x-www-form-urlencoded"), replay),
        (Some("text/json"), purge),
    ] {
        let mut c = post("no JSON content type", path, valid_publish.clone(), 415);
        c.content_type = ct;
        v.push(c);
    }

    // ---- 405: other verbs.
    for (method, path) in [
        ("GET", pub_),
        ("GET", replay),
        ("GET", purge),
        ("HEAD", purge),
        ("PUT", replay),
        ("DELETE", "/api/events/dlq/1-0"),
        ("DELETE", "/api/events/dlq"),
        ("POST", "/api/events/dlq"),
        ("POST", "/api/events/health"),
        ("PATCH", "/api/events/history"),
    ] {
        let mut c = get("other verb", path, bearer(), 405);
        c.method = method;
        v.push(c);
    }
    // A cross-origin preflight: not allowed, and no CORS headers (checked for every case).
    for path in [pub_, replay, "/api/events/dlq"] {
        let mut c = get("CORS preflight", path, None, 405);
        c.method = "OPTIONS";
        v.push(c);
    }
    v
}

fn command(l: &MonitorLine) -> String {
    l.args
        .first()
        .map(|c| c.to_ascii_uppercase())
        .unwrap_or_default()
}

#[test]
fn t40_api_refuses_hostile_requests_before_any_redis_call() {
    let env = "hostile";
    let mut sc = Scenario::new(env).types(&[TY]).token(TOKEN).start();
    let (redis, sink, cfg) = (&sc.redis, &sc.sink, sc.cfg.clone());
    let worker = &mut sc.workers[0];
    let api = Api::new(&cfg.api_addr(), None);
    let authed = Api::new(&cfg.api_addr(), Some(TOKEN));
    // Warm up the paths once (connections, script loads) before recording.
    assert_eq!(authed.get("/api/events/dlq/stats").status, 200);
    let cases = cases();

    let monitor = Monitor::start(redis);
    // A quiet baseline: which commands the worker issues on its own.
    let b0 = unix_now();
    std::thread::sleep(Duration::from_millis(3000));
    let b1 = unix_now();
    let t0 = unix_now();
    let mut problems = Vec::new();
    for c in &cases {
        let mut headers = vec![];
        if c.method == "OPTIONS" {
            headers.push(("origin", "http://evil.example"));
            headers.push(("access-control-request-method", "POST"));
            headers.push(("access-control-request-headers", "authorization"));
        }
        let r = if headers.is_empty() {
            send(&api, &cfg.api_addr(), c)
        } else {
            api.send(c.method, &c.path, &headers, None)
        };
        let short = |p: &str| p.chars().take(100).collect::<String>();
        if r.status != c.status {
            problems.push(format!(
                "{} {} ({}): {} (want {}) {}",
                c.method,
                short(&c.path),
                c.what,
                r.status,
                c.status,
                short(&r.body)
            ));
        }
        if let Some(name) = c.names
            && !r.body.contains(name)
        {
            problems.push(format!(
                "{} {} ({}): error does not name `{name}`: {}",
                c.method,
                short(&c.path),
                c.what,
                short(&r.body)
            ));
        }
        if r.body.contains(TOKEN) {
            problems.push(format!(
                "{} {}: the answer echoes the token",
                c.method, c.what
            ));
        }
        if r.body.contains("panicked") || r.body.contains("RUST_BACKTRACE") {
            problems.push(format!("{} {}: {}", c.method, c.what, short(&r.body)));
        }
        for h in [
            "access-control-allow-origin",
            "access-control-allow-methods",
            "access-control-allow-headers",
            "access-control-allow-credentials",
        ] {
            if let Some(v) = r.header(h) {
                problems.push(format!(
                    "{} {} ({}): CORS header {h}: {v}",
                    c.method,
                    short(&c.path),
                    c.what
                ));
            }
        }
        // 4xx answers that a client can read are JSON errors (413/405 come from
        // the framework and may be plain).
        if [400, 401, 415].contains(&c.status) && r.status == c.status {
            let ok = serde_json::from_str::<serde_json::Value>(&r.body)
                .ok()
                .and_then(|v| v["error"].as_str().map(str::to_string))
                .is_some();
            if !ok {
                problems.push(format!(
                    "{} {} ({}): error body is not {{\"error\": ...}}: {}",
                    c.method,
                    short(&c.path),
                    c.what,
                    short(&r.body)
                ));
            }
        }
    }
    let t1 = unix_now();
    std::thread::sleep(Duration::from_millis(300));
    // A control request that does reach Redis, to prove the recorder sees API calls.
    let tc = unix_now();
    let control = authed.send(
        "GET",
        "/api/events/dlq/1-0",
        &[
            ("authorization", &format!("Bearer {TOKEN}")),
            ("origin", "http://evil.example"),
        ],
        None,
    );
    assert_eq!(control.status, 404, "{}", control.body);
    assert!(
        control.header("access-control-allow-origin").is_none(),
        "CORS header on a cross-origin GET"
    );
    std::thread::sleep(Duration::from_millis(300));
    let transcript = monitor.stop();

    let worker_lines: Vec<&MonitorLine> = transcript
        .iter()
        .filter(|l| !is_test_client(&l.client))
        .collect();
    let in_window = |l: &&MonitorLine, a: f64, b: f64| l.ts >= a && l.ts <= b;
    let baseline: BTreeSet<String> = worker_lines
        .iter()
        .filter(|l| in_window(l, b0, b1))
        .map(|l| command(l))
        .collect();
    assert!(
        baseline.contains("XREADGROUP"),
        "the baseline saw no XREADGROUP: {baseline:?}"
    );
    eprintln!(
        "hardening: baseline commands {baseline:?}; {} worker commands while the {} refused requests ran",
        worker_lines.iter().filter(|l| in_window(l, t0, t1)).count(),
        cases.len()
    );
    let dlq = dlq_key(env);
    let history = format!("events:{env}:history");
    // What an API handler would run: reads and writes of events and entries.
    let api_like = [
        "XADD",
        "XRANGE",
        "XREVRANGE",
        "XDEL",
        "XLEN",
        "DEL",
        "UNLINK",
        "ZCARD",
    ];
    // Keys the worker's own roles maintain (reads, reclaims, retries,
    // heartbeats, retention, dead-consumer cleanup on timers of their own).
    let background_key = |a: &str| {
        a == stream_key(env, TY)
            || a == redeliver_key(env, "group")
            || a == retry_key(env, "group")
            || a.starts_with(&format!("events:{env}:heartbeat:"))
    };
    let caused: Vec<&str> = worker_lines
        .iter()
        .filter(|l| in_window(l, t0 - 0.005, t1 + 0.005))
        .filter(|l| {
            let c = command(l);
            let keys: Vec<&String> = l.args.iter().filter(|a| a.starts_with("events:")).collect();
            let maintenance = !keys.is_empty() && keys.iter().all(|k| background_key(k));
            l.args.iter().any(|a| *a == dlq || *a == history)
                || (!baseline.contains(&c) && (api_like.contains(&c.as_str()) || !maintenance))
        })
        .map(|l| l.raw.as_str())
        .collect();
    if !caused.is_empty() {
        problems.push(format!(
            "Redis commands while only refused requests were sent (baseline {baseline:?}):\n{}",
            caused.join("\n")
        ));
    }
    let control_seen = worker_lines.iter().any(|l| {
        l.ts >= tc - 0.005
            && command(l) == "XRANGE"
            && l.args.get(1).map(String::as_str) == Some(dlq.as_str())
    });
    assert!(
        control_seen,
        "MONITOR did not see the control request's XRANGE on {dlq}: the check above proves nothing"
    );
    // Whole transcript: every key the worker names is inside events:<env>:*,
    // and no hostile string ever reached Redis.
    let prefix = format!("events:{env}:");
    let outside: Vec<&str> = worker_lines
        .iter()
        .filter(|l| {
            let skip = match command(l).as_str() {
                "EVAL" | "EVAL_RO" | "SCRIPT" | "FUNCTION" => 2,
                _ => 1,
            };
            l.args.iter().skip(skip).any(|a| {
                (a.starts_with("events:") && !a.starts_with(&prefix))
                    || a.contains("../")
                    || a.contains("{x}")
                    || a.contains("DEL x")
                    || a.contains("a:b")
                    || a.contains("evil.example")
            })
        })
        .map(|l| l.raw.as_str())
        .collect();
    if !outside.is_empty() {
        problems.push(format!(
            "commands outside {prefix}* or carrying hostile input:\n{}",
            outside.join("\n")
        ));
    }
    let keys = redis.scan_keys("*");
    let stray: Vec<&String> = keys.iter().filter(|k| !k.starts_with(&prefix)).collect();
    if !stray.is_empty() {
        problems.push(format!("keys outside {prefix}*: {stray:?}"));
    }
    assert!(
        problems.is_empty(),
        "{} of {} hostile requests misbehaved:\n{}",
        problems.len(),
        cases.len(),
        problems.join("\n")
    );
    assert_eq!(sink.request_count(), 0, "nothing was published");
    worker.assert_running();
}

#[test]
fn t40_token_endpoints_are_off_without_a_token_and_short_tokens_are_refused() {
    let env = "notoken";
    let redis = RedisServer::start();
    let sink = HttpSink::start();
    let cfg = WorkerConfig::new(env, &redis.url()).route(Route::http(&[TY], &sink.url()));
    let mut worker = WorkerProcess::start("w1", cfg.clone());
    worker.wait_ready(Duration::from_secs(15));
    for auth in [None, Some("Bearer anything-at-all-0123456789")] {
        let api = Api::new(&cfg.api_addr(), None);
        let mut headers: Vec<(&str, &str)> = vec![("content-type", "application/json")];
        if let Some(a) = auth {
            headers.push(("authorization", a));
        }
        for (method, path, body) in [
            ("GET", "/api/events/history", None),
            ("GET", "/api/events/dlq", None),
            ("GET", "/api/events/dlq/stats", None),
            ("GET", "/api/events/dlq/1-0", None),
            (
                "POST",
                "/api/events/publish",
                Some(json!({"type": TY, "data": {}})),
            ),
            ("POST", "/api/events/dlq/replay", Some(json!({"all": true}))),
            (
                "POST",
                "/api/events/dlq/purge",
                Some(json!({"all": true, "confirm": true})),
            ),
        ] {
            let r = api.send(
                method,
                path,
                &headers,
                body.map(|b| b.to_string().into_bytes()),
            );
            assert_eq!(
                r.status, 503,
                "{method} {path} without a token configured: {}",
                r.body
            );
            assert!(
                r.body.contains("EVENTS_API_TOKEN"),
                "{method} {path}: the 503 should say why: {}",
                r.body
            );
        }
        assert_eq!(api.get("/api/events/health").status, 200);
        assert_eq!(api.get("/metrics").status, 200);
    }
    assert_eq!(redis.xlen(&stream_key(env, TY)), 0, "nothing was published");
    worker.assert_running();
    // A token shorter than 16 characters is a configuration error that does
    // not print the token.
    let short = cfg.clone().api_token("short-tok3n");
    let out = cli(&short, &["check"]);
    assert_eq!(out.code, Some(2), "{}\n{}", out.stdout, out.stderr);
    assert!(out.stderr.contains("EVENTS_API_TOKEN"), "{}", out.stderr);
    assert!(
        !out.stderr.contains("short-tok3n") && !out.stdout.contains("short-tok3n"),
        "the rejected token was printed: {}",
        out.stderr
    );
}
