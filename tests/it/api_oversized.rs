//! A body over the 1 MiB limit is answered 413 with the JSON error, and every real client
//! reads that answer: Python's urllib and `requests`, Node's built-in fetch and curl (with
//! its `Expect: 100-continue` and without), 20 tries each at a 2 MiB publish. (The server
//! answers as soon as the Content-Length is over the limit; without reading the rest of the
//! body the clients still uploading got a reset connection, `Broken pipe`.)

use crate::util::clients::{node, python};
use crate::util::*;
use std::process::Command;
use std::time::{Duration, Instant};

const TY: &str = "orders.created";
const TOKEN: &str = "oversized-token-5a8e21c9d7";
const TRIES: usize = 20;
const WANT: &str = r#"413 {"error":"request body over the 1 MiB limit"}"#;

/// Python: `sys.argv[1..] = url token tries body_file`; prints `<status> <body>` per try
/// (status 0 and the exception when no answer was read). `{client}` is urllib or requests.
const PYTHON: &str = r#"
import sys
url, token, tries, path = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
client = sys.argv[5]
body = open(path, "rb").read()
headers = {"Content-Type": "application/json", "Authorization": "Bearer " + token}
for _ in range(tries):
    try:
        if client == "urllib":
            import urllib.request, urllib.error
            req = urllib.request.Request(url, data=body, method="POST", headers=headers)
            try:
                with urllib.request.urlopen(req, timeout=10) as r:
                    print(r.status, r.read().decode())
            except urllib.error.HTTPError as e:
                print(e.code, e.read().decode())
        else:
            import requests
            r = requests.post(url, data=body, headers=headers, timeout=10)
            print(r.status_code, r.text)
    except Exception as e:
        print(0, repr(e).replace("\n", " "))
"#;

/// Node's built-in fetch: `url token tries body_file` (the last four arguments).
const NODE: &str = r#"
const [url, token, tries, path] = process.argv.slice(-4);
const body = require("fs").readFileSync(path);
(async () => {
  for (let i = 0; i < Number(tries); i++) {
    try {
      const r = await fetch(url, { method: "POST", body,
        headers: { "content-type": "application/json", authorization: "Bearer " + token },
        signal: AbortSignal.timeout(10000) });
      console.log(r.status + " " + (await r.text()));
    } catch (e) {
      console.log("0 " + String(e) + " " + String(e.cause));
    }
  }
})();
"#;

/// `tries` curl runs; `expect` false sends `Expect:` (no 100-continue), so the body is
/// uploaded at once.
fn curl(url: &str, body: &std::path::Path, tries: usize, expect: bool) -> Vec<String> {
    (0..tries)
        .map(|_| {
            let mut c = Command::new("curl");
            c.args([
                "-sS",
                "--max-time",
                "10",
                "-X",
                "POST",
                "-w",
                " %{http_code}",
            ])
            .args(["-H", "content-type: application/json"])
            .arg("-H")
            .arg(format!("authorization: Bearer {TOKEN}"))
            .arg("--data-binary")
            .arg(format!("@{}", body.display()));
            if !expect {
                c.args(["-H", "Expect:"]);
            }
            let out = c.arg(url).output().expect("curl is installed");
            // `-w` puts the status last; turn it into `<status> <body>`.
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            match text.rsplit_once(' ') {
                Some((body, code)) => format!("{code} {body}"),
                None => format!("0 {text} {}", String::from_utf8_lossy(&out.stderr)),
            }
        })
        .collect()
}

fn lines(out: std::process::Output) -> Vec<String> {
    assert!(
        out.status.success(),
        "client failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn every_client_reads_the_413_of_a_2_mib_publish() {
    let s = Scenario::new("oversized").types(&[TY]).token(TOKEN).start();
    let url = format!("http://{}/api/events/publish", s.cfg.api_addr());
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("body.json");
    let data = "x".repeat(2 * 1024 * 1024);
    std::fs::write(&file, format!(r#"{{"type":"{TY}","data":"{data}"}}"#)).unwrap();
    let path = file.to_str().unwrap();
    let n = TRIES.to_string();
    let started = Instant::now();
    let results: Vec<(&str, Vec<String>)> = vec![
        (
            "python urllib",
            lines(python(PYTHON, &[&url, TOKEN, &n, path, "urllib"])),
        ),
        (
            "python requests",
            lines(python(PYTHON, &[&url, TOKEN, &n, path, "requests"])),
        ),
        ("node fetch", lines(node(NODE, &[&url, TOKEN, &n, path]))),
        ("curl", curl(&url, &file, TRIES, true)),
        ("curl without Expect", curl(&url, &file, TRIES, false)),
    ];
    eprintln!("oversized: 100 tries in {:?}", started.elapsed());
    let mut problems = Vec::new();
    for (client, answers) in &results {
        if answers.len() != TRIES {
            problems.push(format!("{client}: {} answers: {answers:?}", answers.len()));
        }
        for (i, a) in answers.iter().enumerate().filter(|(_, a)| *a != WANT) {
            problems.push(format!(
                "{client} try {}: {}",
                i + 1,
                &a[..a.len().min(300)]
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "want `{WANT}` every time:\n{}",
        problems.join("\n")
    );
    // Nothing was published, and the listener still answers at once.
    assert_eq!(s.redis.xlen(&stream_key(&s.env, TY)), 0);
    let t = Instant::now();
    let health = s.api(None).get("/api/events/health");
    assert_eq!(health.status, 200, "{}", health.body);
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
}
