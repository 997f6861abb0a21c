//! The wire format as the official CloudEvents SDKs see it (issue 10 points 9 and 10):
//! every delivery, whatever optional fields, extensions and weird-but-valid values the
//! producer wrote (XADD, the publish API, the CLI), parses and validates in the Python SDK
//! (`cloudevents.http.from_http`) and the npm SDK (`HTTP.toEvent` + `validate()`); values
//! that would break them are dead-lettered as malformed with a reason; deep `data` is
//! malformed past 64 levels and refused by the publish API and CLI.

use crate::util::api::Api;
use crate::util::clients::{node, python};
use crate::util::*;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::io::Write;
use std::process::Stdio;
use std::time::Duration;

const TOKEN: &str = "wire-format-token-0123456789";
const TY: &str = "wire.check";
const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

/// Hands each request (headers + body) to the Python SDK in one process; one result per request.
const PY_SDK: &str = r#"
import json, sys
from cloudevents.http import from_http
out = []
for r in json.load(open(sys.argv[1])):
    try:
        ev = from_http(r["headers"], r["body"])
        out.append({"ok": True, "attrs": dict(ev.get_attributes()), "data": ev.get_data()})
    except Exception as e:
        out.append({"ok": False, "error": type(e).__name__ + ": " + str(e)})
print(json.dumps(out))
"#;

/// The same with the npm SDK: `HTTP.toEvent` does not validate structured events, so each
/// event is also `validate()`d (the JSON schema: URI-reference source, RFC 3339 time...).
const NODE_SDK: &str = r#"
const fs = require("fs");
const { HTTP } = require("cloudevents");
const reqs = JSON.parse(fs.readFileSync(process.argv[process.argv.length - 1], "utf8"));
const out = reqs.map((r) => {
  try {
    const ev = HTTP.toEvent({ headers: r.headers, body: r.body });
    ev.validate();
    const attrs = { ...ev };
    delete attrs.data;
    for (const k of Object.keys(attrs)) if (attrs[k] === undefined) delete attrs[k];
    return { ok: true, attrs, time_ms: Date.parse(ev.time) };
  } catch (e) {
    return { ok: false, error: String(e) };
  }
});
console.log(JSON.stringify(out));
"#;

/// Runs both SDKs over every request the sink received; returns (python, node) results keyed
/// by the event id of the body and attempt (`id#attempt`).
fn sdk_results(sink: &HttpSink) -> (BTreeMap<String, Value>, BTreeMap<String, Value>) {
    let ledger = sink.ledger();
    let requests: Vec<Value> = ledger
        .iter()
        .map(|r| json!({"headers": r.headers, "body": String::from_utf8_lossy(&r.raw)}))
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("requests.json");
    std::fs::write(&path, serde_json::to_vec(&requests).unwrap()).unwrap();
    let path = path.to_str().unwrap();
    let run = |name: &str, out: std::process::Output| -> BTreeMap<String, Value> {
        assert!(
            out.status.success(),
            "{name} SDK run failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let results: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "{name} output: {e}: {}",
                String::from_utf8_lossy(&out.stdout)
            )
        });
        assert_eq!(results.len(), ledger.len());
        ledger
            .iter()
            .zip(results)
            .map(|(r, res)| {
                assert_eq!(
                    res["ok"],
                    true,
                    "{name} SDK refused {}: {res}\nbody: {}",
                    r.id,
                    String::from_utf8_lossy(&r.raw)
                );
                (format!("{}#{}", r.id, r.attempt.unwrap_or(99)), res)
            })
            .collect()
    };
    (
        run("Python", python(PY_SDK, &[path])),
        run("Node", node(NODE_SDK, &[path])),
    )
}

/// `event-worker --config CFG publish ARGS` with `stdin` piped in.
fn cli_with_stdin(cfg: &WorkerConfig, args: &[&str], stdin: &[u8]) -> (i32, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cli.toml");
    std::fs::write(&path, cfg.to_toml()).unwrap();
    let mut cmd = worker::command();
    cmd.arg("--config").arg(&path).args(args);
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in &cfg.env_vars {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("spawn event-worker publish");
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin).unwrap();
    drop(input);
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// XADDs `fields` (with `id` and `type`) to the test stream.
fn xadd(s: &Scenario, id: &str, fields: &[(&str, &str)]) {
    let mut all = vec![("id", id), ("type", TY)];
    all.extend_from_slice(fields);
    s.redis.xadd(&stream_key(&s.env, TY), &all);
}

#[test]
fn wire_every_delivery_validates_in_the_python_and_npm_sdks() {
    let mut s = Scenario::new("wire-sdk").types(&[TY]).token(TOKEN).start();
    s.sink
        .script("retried", vec![Action::status(500), Action::ok()]);
    let big = format!(r#"{{"pad":"{}"}}"#, "x".repeat(200 * 1024));
    // Every optional field, extensions, and the worker's own fields a producer copied.
    xadd(
        &s,
        "full",
        &[
            (
                "data",
                r#"{"n":12345678901234567890,"s":"ü \"q\"","deep":[[[1]]]}"#,
            ),
            ("source", "https://example.com/bookings?x=1&y=%20#frag"),
            ("time", "1985-04-12T23:20:50.52Z"),
            ("specversion", "1.0"),
            ("datacontenttype", "application/json; charset=utf-8"),
            ("subject", "booking/42 ✓"),
            ("dataschema", "https://example.com/schemas/booking.json"),
            ("correlationid", "req-123"),
            ("traceparent", TRACEPARENT),
            ("tenant", "acme"),
            ("a1234567890123456789", "twenty-character name"),
            ("replay_count", "2"),
            ("origin_entry_id", "1-0"),
            ("dlq_reason", "forged"),
        ],
    );
    // Weird but valid: lower-case t, an offset, a URN source, an id with spaces, scalar data.
    xadd(
        &s,
        "weird id/ü &",
        &[
            ("data", r#""just a string""#),
            ("source", "urn:uuid:6e8bc430-9c3a-11d9-9669-0800200c9a66"),
            ("time", "1996-12-19t16:39:57-08:00"),
            ("region", ""),
            ("x9", "quote \" and unicode ✓"),
        ],
    );
    xadd(&s, "minimal", &[("data", "null")]);
    // Fields HTTP handlers cannot receive: invalid names, a reserved name, a bad traceparent.
    xadd(
        &s,
        "dropped",
        &[
            ("data", "{}"),
            ("Region", "eu"),
            ("x-y", "1"),
            ("averyveryverylongname1", "21 chars"),
            ("schemaurl", "http://x"),
            ("traceparent", "garbage"),
            ("ok1", "kept"),
        ],
    );
    xadd(&s, "retried", &[("data", "[1,2]"), ("tenant", "t")]);
    // Values that would break the SDKs: dead-lettered as malformed with a reason.
    let malformed = [
        (
            "bad-time",
            ("time", "yesterday"),
            "field `time` `yesterday` is not an RFC 3339 timestamp (e.g. 2026-11-26T14:05:09Z)",
        ),
        (
            "bad-spec",
            ("specversion", "0.3"),
            "field `specversion` `0.3` is not 1.0, the only CloudEvents version delivered",
        ),
        (
            "bad-source",
            ("source", ""),
            "field `source` is empty; use a URI reference such as /api/bookings",
        ),
        (
            "bad-uri",
            ("source", "my service"),
            "field `source` `my service` is not a URI reference (RFC 3986; percent-encode spaces and other characters)",
        ),
        (
            "bad-ct",
            ("datacontenttype", "json"),
            "field `datacontenttype` `json` is not a media type (type/subtype, e.g. application/json)",
        ),
    ];
    for (id, field, _) in &malformed {
        xadd(&s, id, &[("data", "{}"), *field]);
    }
    // The publish API with every attribute and an extension.
    let api = Api::new(&s.cfg.api_addr(), Some(TOKEN));
    let r = api.post(
        "/api/events/publish",
        &json!({
            "type": TY, "data": {"big": 12345678901234567890u64}, "id": "api",
            "source": "/checkout", "time": "2026-11-26T14:05:09.123456789+01:00",
            "specversion": "1.0", "traceparent": TRACEPARENT,
            "datacontenttype": "application/json", "subject": "s", "correlationid": "c-1",
            "tenant": "acme"
        }),
    );
    assert_eq!(r.status, 202, "{}", r.body);
    // The CLI: 200 KiB of data from a file and from stdin (over the argument limit).
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("data.json");
    std::fs::write(&file, &big).unwrap();
    let out = worker::cli(
        &s.cfg,
        &[
            "publish",
            TY,
            "--data-file",
            file.to_str().unwrap(),
            "--id",
            "cli-file",
            "--source",
            "/cli",
            "--time",
            "2026-01-02T03:04:05Z",
            "--traceparent",
            TRACEPARENT,
            "--correlation-id",
            "c-2",
            "--ext",
            "tenant=acme",
            "--ext",
            "plan=gold",
        ],
    );
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let (code, _, err) = cli_with_stdin(
        &s.cfg,
        &["publish", TY, "-", "--id", "cli-stdin"],
        big.as_bytes(),
    );
    assert_eq!(code, 0, "{err}");

    let delivered = [
        "full#0",
        "weird id/ü &#0",
        "minimal#0",
        "dropped#0",
        "retried#0",
        "retried#1",
        "api#0",
        "cli-file#0",
        "cli-stdin#0",
    ];
    wait_until(
        "every delivery and dead letter",
        Duration::from_secs(15),
        || {
            s.sink.ledger().len() >= delivered.len()
                && s.redis.xlen(&dlq_key(&s.env)) >= malformed.len() as i64
        },
    );
    std::thread::sleep(Duration::from_millis(300));
    let (py, nd) = sdk_results(&s.sink);
    assert_eq!(
        py.keys().map(String::as_str).collect::<Vec<_>>().len(),
        delivered.len(),
        "{:?}",
        py.keys()
    );
    for key in delivered {
        assert!(
            py.contains_key(key) && nd.contains_key(key),
            "{key} not delivered: {:?}",
            py.keys()
        );
    }
    // id/type/source/time/extensions as written, in both SDKs.
    let p = &py["full#0"]["attrs"];
    let n = &nd["full#0"]["attrs"];
    for (k, v) in [
        ("id", "full"),
        ("type", TY),
        ("source", "https://example.com/bookings?x=1&y=%20#frag"),
        ("subject", "booking/42 ✓"),
        ("dataschema", "https://example.com/schemas/booking.json"),
        ("datacontenttype", "application/json; charset=utf-8"),
        ("correlationid", "req-123"),
        ("traceparent", TRACEPARENT),
        ("tenant", "acme"),
        ("a1234567890123456789", "twenty-character name"),
    ] {
        assert_eq!(p[k], v, "python {k}: {p}");
        assert_eq!(n[k], v, "node {k}: {n}");
    }
    assert_eq!(p["time"], "1985-04-12T23:20:50.52Z");
    assert_eq!(nd["full#0"]["time_ms"], 482_196_050_520u64);
    assert_eq!(
        py["full#0"]["data"],
        json!({"n":12345678901234567890u64,"s":"ü \"q\"","deep":[[[1]]]})
    );
    // The worker's own fields never become extensions; `attempt` is the worker's attribute.
    for k in [
        "replay_count",
        "origin_entry_id",
        "dlq_reason",
        "replaycount",
    ] {
        assert!(
            p.get(k).is_none() && n.get(k).is_none(),
            "{k} delivered: {p}"
        );
    }
    assert_eq!(
        (p["attempt"].clone(), n["attempt"].clone()),
        (json!(0), json!(0))
    );
    assert_eq!(py["retried#1"]["attrs"]["attempt"], 1);
    assert!(py["retried#1"]["attrs"].get("origin_entry_id").is_none());
    assert_eq!(nd["retried#1"]["attrs"]["tenant"], "t");
    let (p, n) = (
        &py["weird id/ü &#0"]["attrs"],
        &nd["weird id/ü &#0"]["attrs"],
    );
    assert_eq!(
        (p["id"].as_str(), n["id"].as_str()),
        (Some("weird id/ü &"), Some("weird id/ü &"))
    );
    assert_eq!(p["time"], "1996-12-19t16:39:57-08:00");
    assert_eq!(nd["weird id/ü &#0"]["time_ms"], 851_042_397_000u64);
    assert_eq!(
        (p["region"].as_str(), n["region"].as_str()),
        (Some(""), Some(""))
    );
    assert_eq!(n["x9"], "quote \" and unicode ✓");
    assert_eq!(py["weird id/ü &#0"]["data"], "just a string");
    assert_eq!(py["minimal#0"]["attrs"]["source"], "event-worker");
    // Dropped fields: not delivered (no traceparent header either), counted, logged once.
    let (p, n) = (&py["dropped#0"]["attrs"], &nd["dropped#0"]["attrs"]);
    assert_eq!(
        (p["ok1"].as_str(), n["ok1"].as_str()),
        (Some("kept"), Some("kept"))
    );
    for k in [
        "Region",
        "region",
        "x-y",
        "averyveryverylongname1",
        "schemaurl",
        "traceparent",
    ] {
        assert!(
            p.get(k).is_none() && n.get(k).is_none(),
            "{k} delivered: {p}"
        );
    }
    let dropped_req = &s.sink.requests_for("dropped")[0];
    assert!(!dropped_req.headers.contains_key("traceparent"));
    assert_eq!(
        s.sink.requests_for("full")[0].headers["traceparent"],
        TRACEPARENT
    );
    let metrics = parse_metrics(&s.workers[0].metrics());
    assert_eq!(
        sum(
            &metrics,
            "event_worker_fields_dropped_total",
            &[("type", TY)]
        ),
        5.0
    );
    let logs = s.w().logs();
    assert_eq!(
        logs.matches("event fields not passed on to HTTP handlers")
            .count(),
        1,
        "{logs}"
    );
    assert!(
        logs.contains("`Region`, `x-y`, `averyveryverylongname1`, `schemaurl`, `traceparent`"),
        "{logs}"
    );
    // The API and CLI events.
    let (p, n) = (&py["api#0"]["attrs"], &nd["api#0"]["attrs"]);
    assert_eq!(
        (p["source"].as_str(), n["tenant"].as_str()),
        (Some("/checkout"), Some("acme"))
    );
    assert_eq!(p["time"], "2026-11-26T14:05:09.123456789+01:00");
    assert_eq!(py["api#0"]["data"], json!({"big": 12345678901234567890u64}));
    let (p, n) = (&py["cli-file#0"]["attrs"], &nd["cli-file#0"]["attrs"]);
    assert_eq!(
        (p["source"].as_str(), p["time"].as_str(), n["plan"].as_str()),
        (Some("/cli"), Some("2026-01-02T03:04:05Z"), Some("gold"))
    );
    assert_eq!(p["correlationid"], "c-2");
    for key in ["cli-file#0", "cli-stdin#0"] {
        assert_eq!(
            py[key]["data"]["pad"].as_str().map(str::len),
            Some(200 * 1024),
            "{key}"
        );
    }
    // The malformed ones: DLQ with the reason, never delivered.
    let dlq = dlq_by_id(&s.redis, &s.env);
    for (id, _, error) in &malformed {
        let e = &dlq[*id][0];
        assert_eq!(
            (e.get("dlq_reason"), e.get("dlq_error")),
            (Some("malformed"), Some(*error)),
            "{id}"
        );
        assert!(s.sink.requests_for(id).is_empty(), "{id} delivered");
    }
}

#[test]
fn wire_data_nested_past_64_levels_is_malformed_and_refused() {
    let s = Scenario::new("wire-deep").types(&[TY]).token(TOKEN).start();
    let nest = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
    xadd(&s, "deep-100k", &[("data", &nest(100_000))]);
    xadd(&s, "deep-64", &[("data", &nest(64))]);
    xadd(&s, "deep-65", &[("data", &nest(65))]);
    let message = |n: usize| format!("nests {n} levels of arrays/objects, over the 64 limit");
    wait_until(
        "deliveries and dead letters",
        Duration::from_secs(10),
        || s.redis.xlen(&dlq_key(&s.env)) >= 2 && !s.sink.requests_for("deep-64").is_empty(),
    );
    let dlq = dlq_by_id(&s.redis, &s.env);
    for (id, n) in [("deep-100k", 100_000), ("deep-65", 65)] {
        let e = &dlq[id][0];
        assert_eq!(
            (e.get("dlq_reason"), e.get("dlq_error")),
            (
                Some("malformed"),
                Some(format!("field `data` {}", message(n)).as_str())
            )
        );
    }
    // The publish API and CLI refuse it up front.
    let api = Api::new(&s.cfg.api_addr(), Some(TOKEN));
    let body = format!(r#"{{"type":"{TY}","data":{}}}"#, nest(100_000));
    let r = api.send(
        "POST",
        "/api/events/publish",
        &[
            ("content-type", "application/json"),
            ("authorization", &format!("Bearer {TOKEN}")),
        ],
        Some(body.into_bytes()),
    );
    assert_eq!(
        (r.status, r.json()["error"].as_str()),
        (400, Some(format!("data {}", message(100_000)).as_str()))
    );
    let r = api.post("/api/events/publish", &json!({"type": TY, "data": serde_json::from_str::<Value>(&nest(64)).unwrap(), "id": "api-64"}));
    assert_eq!(r.status, 202, "{}", r.body);
    let (code, _, err) = cli_with_stdin(&s.cfg, &["publish", TY, "-"], nest(100_000).as_bytes());
    assert_eq!(
        (code, err.trim()),
        (
            1,
            format!("event-worker: data {}", message(100_000)).as_str()
        )
    );
    wait_until("the API's event", Duration::from_secs(10), || {
        !s.sink.requests_for("api-64").is_empty()
    });
    std::thread::sleep(Duration::from_millis(300));
    let dlq = dlq_by_id(&s.redis, &s.env);
    assert_eq!(dlq.len(), 2, "{:?}", dlq.keys());
    for id in ["deep-100k", "deep-65"] {
        assert!(s.sink.requests_for(id).is_empty(), "{id} delivered");
    }
    for id in ["deep-64", "api-64"] {
        let r = &s.sink.requests_for(id);
        assert_eq!(r.len(), 1, "{id}");
        assert_eq!(
            r[0].body["data"],
            serde_json::from_str::<Value>(&nest(64)).unwrap()
        );
    }
}
