//! docs/reliability-matrix.md rows I: T48 secret canaries everywhere, T49 password file,
//! T50 TLS verification, T51 the README's least-privilege ACL user suffices,
//! T52 signed webhooks and no redirects.

use crate::util::api::Api;
use crate::util::checker::{self, CheckOpts, ledger, publish_logged};
use crate::util::tls::{Pki, start_tls_redis};
use crate::util::worker::cli;
use crate::util::*;
use serde_json::json;
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

const TY: &str = "sec.event";

// ------------------------------------------------------------------ T48

const CANARY_PW: &str = "Cn4ry/p@ss-7f3a9c";
const CANARY_PW_URL: &str = "Cn4ry%2Fp%40ss-7f3a9c";
const WRONG_PW: &str = "Wr0ng/c4n@ry-51d0";
const WRONG_PW_URL: &str = "Wr0ng%2Fc4n%40ry-51d0";
const CANARY_TOKEN: &str = "tok3n-c4nary-e81b2f60a9";

fn leaks(text: &str, what: &str, out: &mut Vec<String>) {
    for (name, s) in [
        ("the Redis password", CANARY_PW),
        ("the URL-encoded Redis password", CANARY_PW_URL),
        ("a wrong Redis password", WRONG_PW),
        ("a URL-encoded wrong Redis password", WRONG_PW_URL),
        ("the API token", CANARY_TOKEN),
    ] {
        if text.contains(s) {
            let at = text.find(s).unwrap();
            let from = text[..at]
                .char_indices()
                .rev()
                .nth(120)
                .map_or(0, |(i, _)| i);
            let ctx: String = text[from..].chars().take(240).collect();
            out.push(format!("{what} contains {name}: …{ctx}…"));
        }
    }
}

#[test]
fn t48_secret_canaries_never_leak() {
    let env = "t48";
    let redis = RedisServer::start_with_password(CANARY_PW);
    let _dump = redis.dump_on_panic(env);
    let sink = HttpSink::start();
    sink.script("fail-1", vec![Action::status(500)]);
    sink.script("perm-1", vec![Action::status(400)]);
    let url = format!("redis://:{CANARY_PW_URL}@127.0.0.1:{}", redis.port);
    let mk = |url: &str| {
        let mut cfg = WorkerConfig::new(env, url)
            .route(Route::http(&[TY], &sink.url()))
            .api_token(CANARY_TOKEN);
        cfg.max_attempts = 2;
        cfg.env_vars.push(("EVENTS_LOG".into(), "trace".into()));
        cfg
    };
    let cfg = mk(&url);
    let mut w = WorkerProcess::start("w1", cfg.clone());
    w.wait_ready(Duration::from_secs(20));
    let mut found = Vec::new();
    // Work: success, retry -> DLQ, permanent -> DLQ, API publish, history.
    let api = Api::new(&cfg.api_addr(), Some(CANARY_TOKEN));
    for id in ["ok-1", "fail-1", "perm-1"] {
        let r = api.post(
            "/api/events/publish",
            &json!({"type": TY, "data": {"v": id}, "id": id}),
        );
        assert_eq!(r.status, 202, "{}", r.body);
    }
    // A wrong token that looks like the canary (never echoed).
    let r = Api::new(&cfg.api_addr(), Some(&format!("{CANARY_TOKEN}x"))).get("/api/events/dlq");
    assert_eq!(r.status, 401);
    leaks(&r.body, "401 body", &mut found);
    wait_until("settled", Duration::from_secs(15), || {
        redis.xlen(&dlq_key(env)) == 2 && drained(&redis, env, "group", &[TY])
    });
    for e in dlq_entries(&redis, env) {
        leaks(&format!("{:?}", e.fields), "a DLQ entry", &mut found);
    }
    for path in [
        "/api/events/history?limit=1000",
        "/api/events/dlq",
        "/api/events/dlq/stats",
        "/api/events/health",
    ] {
        let r = api.get(path);
        leaks(&r.body, path, &mut found);
    }
    leaks(&w.metrics(), "/metrics", &mut found);
    let clients = redis.cmd(&["CLIENT", "LIST"]).as_str().unwrap_or_default();
    leaks(&clients, "CLIENT LIST", &mut found);
    let mut envs_cfg = cfg.clone();
    envs_cfg.env_vars.push(("REDIS_URL".into(), url.clone()));
    for args in [
        &["--help"][..],
        &["run", "--help"],
        &["check", "--help"],
        &["dlq", "--help"],
        &["--version"],
        &["check"],
        &["--json", "check"],
        &["history"],
        &["--json", "history"],
        &["dlq", "list"],
        &["--json", "dlq", "stats"],
    ] {
        let out = cli(&envs_cfg, args);
        leaks(
            &out.stdout,
            &format!("`{}` stdout", args.join(" ")),
            &mut found,
        );
        leaks(
            &out.stderr,
            &format!("`{}` stderr", args.join(" ")),
            &mut found,
        );
    }
    // WRONGPASS and connection refused, both at trace level.
    let wrong = format!("redis://:{WRONG_PW_URL}@127.0.0.1:{}", redis.port);
    let refused = format!("redis://:{CANARY_PW_URL}@127.0.0.1:{}", free_port());
    let mut w2 = WorkerProcess::start("wrongpass", mk(&wrong));
    let mut w3 = WorkerProcess::start("refused", mk(&refused));
    for path in ["/api/events/health", "/readyz", "/metrics"] {
        for w in [&w2, &w3] {
            if let Some((_, body)) = w.get(path) {
                leaks(&body, &format!("{path} of {}", w.name), &mut found);
            }
        }
    }
    for out in [
        cli(&mk(&wrong), &["check"]),
        cli(&mk(&refused), &["--json", "check"]),
        cli(&mk(&wrong), &["dlq", "list"]),
    ] {
        leaks(&out.stdout, "check/dlq with a bad URL (stdout)", &mut found);
        leaks(&out.stderr, "check/dlq with a bad URL (stderr)", &mut found);
    }
    std::thread::sleep(Duration::from_secs(3));
    for w in [&mut w2, &mut w3] {
        if w.is_running() {
            w.sigterm();
            let _ = w.wait_exit(Duration::from_secs(10));
        }
    }
    w.sigterm();
    let _ = w.wait_exit(Duration::from_secs(10));
    let logs = [&w, &w2, &w3].map(|w| (w.name.clone(), w.output()));
    for (name, text) in &logs {
        leaks(
            text,
            &format!("logs of {name} (EVENTS_LOG=trace)"),
            &mut found,
        );
    }
    eprintln!(
        "[T48] scanned {} bytes of logs; wrongpass said: {:?}",
        logs.iter().map(|l| l.1.len()).sum::<usize>(),
        logs[1]
            .1
            .lines()
            .find(|l| l.contains("WRONGPASS") || l.contains("rror"))
    );
    assert!(found.is_empty(), "secrets leaked:\n{}", found.join("\n"));
}

// ------------------------------------------------------------------ T49

#[test]
fn t49_password_file_hygiene() {
    let pw = "pwfile-s3cret-0b7e1d";
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("redis-password");
    std::fs::write(&file, format!("{pw}\n")).unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let file_env = file.to_str().unwrap().to_string();
    let mut s = Scenario::new("T49")
        .types(&[TY])
        .redis(RedisServer::start_with_password(pw))
        .url(|r, _| format!("redis://127.0.0.1:{}", r.port))
        .config(move |c| c.env_vars.push(("REDIS_PASSWORD_FILE".into(), file_env)))
        .start();
    s.publish("pf-1");
    s.conserve(Duration::from_secs(10));
    let (cfg, w) = (&s.cfg, &mut s.workers[0]);
    let pid = w.pid();
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
    let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
    let has = |b: &[u8]| b.windows(pw.len()).any(|x| x == pw.as_bytes());
    assert!(!has(&cmdline), "password in /proc/{pid}/cmdline");
    assert!(!has(&environ), "password in /proc/{pid}/environ");
    let quiet = !w.output().contains("chmod 600");
    // World-readable: still works, but warns (run and check).
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    w.graceful_restart();
    let check = cli(cfg, &["check"]);
    let warned_run = w.output().contains("readable by group or others");
    let check_text = format!("{}{}", check.stdout, check.stderr);
    eprintln!(
        "[T49] 0600: ready, no warning ({quiet}); 0644: run warns {warned_run}, check exit {:?} warns {}",
        check.code,
        check_text.contains("readable by group or others")
    );
    assert!(quiet, "a 0600 file warned");
    assert!(
        warned_run,
        "no warning for a 0644 password file:\n{}",
        w.output()
    );
    assert!(
        check_text.contains("readable by group or others"),
        "check does not warn: {check_text}"
    );
    assert!(!check_text.contains(pw) && !w.output().contains(pw));
    w.assert_running();
}

// ------------------------------------------------------------------ T50

fn tls_cfg(env: &str, url: &str, top: &str) -> WorkerConfig {
    let mut cfg = WorkerConfig::new(env, url).route(Route::blackhole(&[TY]));
    cfg.top_level = top.to_string();
    cfg
}

fn check_case(cfg: &WorkerConfig) -> (Option<i32>, String) {
    let out = cli(cfg, &["check"]);
    (out.code, format!("{}{}", out.stdout, out.stderr))
}

#[test]
fn t50_tls_verify_default_on() {
    let env = "t50";
    let pki = Pki::generate();
    let tls = start_tls_redis(&pki, false, None);
    let p = tls.tls_port;
    let ca = format!("tls_ca_file = {:?}\n", pki.ca_cert.to_str().unwrap());
    let other_ca = format!("tls_ca_file = {:?}\n", pki.other_ca_cert.to_str().unwrap());
    let report = std::cell::RefCell::new(Vec::new());
    let fails = std::cell::RefCell::new(Vec::new());
    let expect = |name: &str, cfg: WorkerConfig, ok: bool, needle: &[&str]| {
        let (code, text) = check_case(&cfg);
        let first = text.lines().last().unwrap_or("").to_string();
        report
            .borrow_mut()
            .push(format!("{name}: exit {code:?}: {first}"));
        let good = if ok {
            code == Some(0)
        } else {
            code.is_some_and(|c| c != 0)
                && needle
                    .iter()
                    .any(|n| text.to_lowercase().contains(&n.to_lowercase()))
        };
        if !good {
            fails
                .borrow_mut()
                .push(format!("{name}: exit {code:?}\n{text}"));
        }
    };
    let url = format!("rediss://localhost:{p}");
    expect(
        "(a) no CA: fail closed",
        tls_cfg(env, &url, ""),
        false,
        &["certificate", "issuer", "tls"],
    );
    expect("(b) tls_ca_file", tls_cfg(env, &url, &ca), true, &[]);
    expect(
        "(b2) IP in the SAN",
        tls_cfg(env, &format!("rediss://127.0.0.1:{p}"), &ca),
        true,
        &[],
    );
    expect(
        "(b3) a different CA",
        tls_cfg(env, &url, &other_ca),
        false,
        &["certificate", "issuer", "tls"],
    );
    // A name that is not in the SAN: the same server reached as 127.0.0.2.
    let alias = crate::util::faults::Proxy::start_on("127.0.0.2", p);
    expect(
        "(c) hostname mismatch",
        tls_cfg(env, &format!("rediss://127.0.0.2:{}", alias.port()), &ca),
        false,
        &["certificate", "name", "tls"],
    );
    expect(
        "(d) #insecure refused",
        tls_cfg(env, &format!("{url}/#insecure"), &ca),
        false,
        &["insecure", "fragment"],
    );
    expect(
        "(d2) plaintext to the TLS port",
        tls_cfg(env, &format!("redis://127.0.0.1:{p}"), ""),
        false,
        &["redis", "connect", "closed", "error"],
    );
    // A running daemon without the CA never becomes ready and says why.
    let mut w = WorkerProcess::start("noca", tls_cfg(env, &url, ""));
    std::thread::sleep(Duration::from_secs(3));
    let ready = matches!(w.get("/readyz"), Some((200, _)));
    let running = w.is_running();
    let logs = w.output();
    report.borrow_mut().push(format!(
        "run without CA: ready={ready} running={running}, says: {:?}",
        logs.lines()
            .find(|l| l.to_lowercase().contains("certificate"))
            .unwrap_or("(no line mentions the certificate)")
    ));
    if ready || !logs.to_lowercase().contains("certificate") {
        fails
            .borrow_mut()
            .push(format!("run without CA: ready={ready}\n{logs}"));
    }
    drop(w);
    // tls-auth-clients yes: a client certificate is required.
    let mtls = start_tls_redis(&pki, true, None);
    let murl = format!("rediss://localhost:{}", mtls.tls_port);
    let with_cert = format!(
        "{ca}tls_cert_file = {:?}\ntls_key_file = {:?}\n",
        pki.client_cert.to_str().unwrap(),
        pki.client_key.to_str().unwrap()
    );
    expect(
        "(e) mTLS without a client cert",
        tls_cfg(env, &murl, &ca),
        false,
        &["certificate", "tls", "closed", "reset", "error"],
    );
    expect(
        "(e2) mTLS with a client cert",
        tls_cfg(env, &murl, &with_cert),
        true,
        &[],
    );
    let mut w = WorkerProcess::start("mtls", tls_cfg(env, &murl, &with_cert));
    w.wait_ready(Duration::from_secs(15));
    w.assert_running();
    eprintln!("[T50]\n{}", report.borrow().join("\n"));
    let fails = fails.borrow();
    assert!(
        fails.is_empty(),
        "TLS cases failed:\n{}",
        fails.join("\n---\n")
    );
}

// ------------------------------------------------------------------ T51

/// The README's `ACL SETUSER` block (comments stripped, lines joined), for `env`.
fn readme_acl(env: &str, password: &str) -> Vec<String> {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let start = readme
        .find("ACL SETUSER worker-production")
        .expect("README has the ACL block");
    let block = &readme[start..];
    let block = &block[..block.find("```").unwrap()];
    let mut text = String::new();
    for line in block.lines() {
        let line = line.split('#').next().unwrap_or("").trim_end();
        text.push_str(line.trim_end_matches('\\'));
        text.push(' ');
    }
    text.replace("production", env)
        .replace(">password", &format!(">{password}"))
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

#[test]
fn t51_acl_least_privilege_suffices() {
    let env = "t51";
    let redis = RedisServer::start();
    let _dump = redis.dump_on_panic(env);
    let args = readme_acl(env, "acl-pass-6c1f");
    assert_eq!(args[..2], ["ACL".to_string(), "SETUSER".to_string()]);
    let r = redis.cmd(&args);
    assert_eq!(r.as_str().as_deref(), Some("OK"), "{r:?} for {args:?}");
    redis.cmd(&["ACL", "LOG", "RESET"]);
    let sink = HttpSink::start();
    sink.set_default(Action::delayed(200, Duration::from_millis(5)));
    sink.script("retry-1", vec![Action::status(503), Action::ok()]);
    sink.script("perm-1", vec![Action::status(400)]);
    let url = format!(
        "redis://worker-{env}:acl-pass-6c1f@127.0.0.1:{}",
        redis.port
    );
    let token = "acl-api-token-0123456789";
    let mk = |name: &str| {
        let mut cfg = WorkerConfig::new(env, &url)
            .route(Route::http(&["sec.*"], &sink.url()))
            .api_token(token);
        cfg.consumer = Some(name.into());
        cfg.top_level = "stream_retention = \"1m\"\ndlq_max_len = 100\n".into();
        // Push (projector group, hub, resume script) runs under the same user.
        cfg.extra =
            "[push]\n[[push.channels]]\ntypes = [\"sec.*\"]\nchannel = \"type:{type}\"\n".into();
        cfg
    };
    let cfg = mk("w1");
    let mut w1 = WorkerProcess::start("w1", cfg.clone());
    w1.wait_ready(Duration::from_secs(15));
    let api = Api::new(&cfg.api_addr(), Some(token));
    let l = ledger();
    let mut dead = std::collections::BTreeSet::new();
    for id in ["ok-1", "ok-2", "retry-1", "perm-1"] {
        let r = api.post(
            "/api/events/publish",
            &json!({"type": TY, "data": {"id": id}, "id": id}),
        );
        assert_eq!(r.status, 202, "{}", r.body);
        l.lock().unwrap().ack(id);
    }
    dead.insert("perm-1".to_string());
    let out = cli(&cfg, &["publish", TY, r#"{"via":"cli"}"#, "--id", "cli-1"]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    l.lock().unwrap().ack("cli-1");
    wait_until("settled", Duration::from_secs(15), || {
        redis.xlen(&dlq_key(env)) == 1 && sink.success_counts().len() == 4
    });
    // Takeover: a second consumer killed while it holds work.
    sink.set_default(Action::delayed(200, Duration::from_millis(600)));
    let mut w2 = WorkerProcess::start("w2", mk("w2"));
    w2.wait_ready(Duration::from_secs(15));
    for i in 0..8 {
        publish_logged(&redis, env, TY, &format!("k-{i}"), &l);
    }
    let held = try_wait_until(Duration::from_secs(5), || {
        redis
            .xpending_consumers(&stream_key(env, TY), "group")
            .contains_key("w2")
    });
    w2.kill9();
    sink.set_default(Action::delayed(200, Duration::from_millis(5)));
    // Operator surface: replay, history, purge, stats, check, migrate.
    let dlq_id = dlq_entries(&redis, env)[0].entry_id.clone();
    sink.script("perm-1", vec![Action::ok()]);
    let out = cli(&cfg, &["dlq", "replay", "--id", &dlq_id]);
    assert_eq!(out.code, Some(0), "replay: {}", out.stderr);
    dead.clear();
    wait_until("replayed and handled", Duration::from_secs(15), || {
        sink.success_counts().contains_key("perm-1")
    });
    sink.script("purge-me", vec![Action::status(400)]);
    publish_logged(&redis, env, TY, "purge-me", &l);
    wait_until("purge-me dead", Duration::from_secs(10), || {
        dlq_by_id(&redis, env).contains_key("purge-me")
    });
    let pid = dlq_by_id(&redis, env)["purge-me"][0].entry_id.clone();
    let out = cli(&cfg, &["dlq", "purge", "--id", &pid, "--yes"]);
    assert_eq!(out.code, Some(0), "purge: {}", out.stderr);
    l.lock().unwrap().acked.remove("purge-me");
    for args in [
        &["history", "--limit", "50"][..],
        &["dlq", "list"],
        &["dlq", "stats"],
        &["check"],
        &["migrate"],
        &["retries", "list"],
        &["--json", "instances"],
    ] {
        let out = cli(&cfg, args);
        assert_eq!(out.code, Some(0), "{args:?}: {}", out.stderr);
    }
    for path in [
        "/api/events/history?limit=100",
        "/api/events/dlq",
        "/api/events/dlq/stats",
        "/api/events/health",
        &format!("/api/events/stream/position?channel=type:{TY}"),
    ] {
        let r = api.get(path);
        assert_eq!(r.status, 200, "{path}: {}", r.body);
    }
    let channel = format!("events:{env}:push:{{type:{TY}}}");
    wait_until(
        "projected onto the push channel",
        Duration::from_secs(10),
        || redis.xlen(&channel) >= 4,
    );
    checker::must_conserve(
        "T51",
        &l,
        &sink,
        &redis,
        env,
        "group",
        &[TY],
        Duration::from_secs(20),
    );
    std::thread::sleep(Duration::from_millis(500));
    let opts = CheckOpts {
        expect_dead: dead,
        ..CheckOpts::default()
    };
    let rep = checker::check(&l.lock().unwrap(), &sink, &redis, env, &opts);
    // w2 was killed holding up to its concurrency (4).
    rep.assert_ok("T51", 4, "");
    let log = redis.cmd(&["ACL", "LOG"]);
    let mut objects = Vec::new();
    for e in log.items() {
        let f = e.items();
        let get = |n: &str| {
            f.chunks(2)
                .find(|p| p.first().and_then(|v| v.as_str()).as_deref() == Some(n))
                .and_then(|p| p.get(1).and_then(|v| v.as_str()))
                .unwrap_or_default()
        };
        objects.push(format!(
            "{} {} {} x{}",
            get("reason"),
            get("context"),
            get("object"),
            get("count")
        ));
    }
    eprintln!(
        "[T51] takeover exercised: {held}; ACL LOG: {objects:?}; {}",
        rep.summary()
    );
    let denied: Vec<&String> = objects
        .iter()
        .filter(|o| !o.contains("config|get"))
        .collect();
    assert!(
        denied.is_empty(),
        "ACL denials beyond config|get: {objects:?}"
    );
    w1.assert_running();
}

// ------------------------------------------------------------------ T52

fn verify_signature(secret: &str, header: &str, raw: &[u8]) -> Result<u64, String> {
    let mut t = None;
    let mut v1 = None;
    for part in header.split(',') {
        match part.split_once('=') {
            Some(("t", x)) => t = x.parse::<u64>().ok(),
            Some(("v1", x)) => v1 = Some(x.to_string()),
            _ => {}
        }
    }
    let (t, v1) = (t.ok_or("no t=")?, v1.ok_or("no v1=")?);
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, secret.as_bytes());
    let mut msg = format!("{t}.").into_bytes();
    msg.extend_from_slice(raw);
    let want: String = aws_lc_rs::hmac::sign(&key, &msg)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    if want == v1 {
        Ok(t)
    } else {
        Err(format!("v1 {v1} != {want}"))
    }
}

#[test]
fn t52_webhook_signature_and_no_redirects() {
    let secret = "whsec-0123456789abcdef";
    let mut s = Scenario::new("T52")
        .types(&["hook.signed", "hook.redirect"])
        .routes(|_, url| {
            let mut signed = Route::http(&["hook.signed"], url);
            signed.signing_secret_env = Some("HOOK_SECRET".into());
            signed.name = Some("signed".into());
            vec![signed, Route::http(&["hook.redirect"], url)]
        })
        .config(move |c| c.env_vars.push(("HOOK_SECRET".into(), secret.into())))
        .start();
    let (env, redis, sink) = (s.env.as_str(), &s.redis, &s.sink);
    let elsewhere = HttpSink::start();
    for code in [301u16, 302, 307, 308] {
        sink.script(
            &format!("redir-{code}"),
            vec![Action {
                location: Some(elsewhere.url()),
                ..Action::status(code)
            }],
        );
    }
    let mut dead = std::collections::BTreeSet::new();
    for i in 0..5 {
        s.publish_to("hook.signed", &format!("s-{i}"));
    }
    for code in [301, 302, 307, 308] {
        let id = format!("redir-{code}");
        s.publish_to("hook.redirect", &id);
        dead.insert(id);
    }
    s.conserve(Duration::from_secs(15));
    std::thread::sleep(Duration::from_millis(300));
    let now = unix_now() as u64;
    for i in 0..5 {
        let r = &sink.requests_for(&format!("s-{i}"))[0];
        let header = r
            .headers
            .get("x-event-signature")
            .unwrap_or_else(|| panic!("no X-Event-Signature: {:?}", r.headers));
        let t = verify_signature(secret, header, &r.raw)
            .unwrap_or_else(|e| panic!("bad signature {header}: {e}"));
        assert!(now.abs_diff(t) <= 60, "timestamp {t} vs now {now}");
        // Tampering with the body breaks it.
        let mut tampered = r.raw.clone();
        tampered.push(b' ');
        assert!(verify_signature(secret, header, &tampered).is_err());
    }
    for id in &dead {
        assert!(
            !sink.requests_for(id)[0]
                .headers
                .contains_key("x-event-signature"),
            "unsigned route sent a signature"
        );
    }
    let opts = CheckOpts {
        expect_dead: dead.clone(),
        ..CheckOpts::default()
    };
    let rep = s.check(&opts);
    rep.assert_ok("T52", 0, "");
    let d = dlq_by_id(redis, env);
    for id in &dead {
        assert_eq!(d[id][0].get("dlq_reason"), Some("permanent_error"), "{id}");
        assert_eq!(sink.requests_for(id).len(), 1, "{id} retried");
    }
    assert_eq!(
        elsewhere.request_count(),
        0,
        "a redirect was followed:\n{}",
        elsewhere.ledger_dump()
    );
    eprintln!(
        "[T52] 5 signatures verified (HMAC-SHA256 over t.body); 301/302/307/308 -> permanent_error, target never called"
    );
    s.w().assert_running();
}
