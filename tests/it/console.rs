//! The operator console (`/ui`, issue 16) in a real browser: Debian's headless Chromium
//! driven over DevTools against a real daemon and Redis (with a password). Logs in, checks
//! the overview against `GET /api/events/health`, filters the DLQ, opens entries (hostile
//! data rendered as text, no script ran), replays after a dry run with a canary, purges with
//! a typed confirmation, searches the history by correlation id, retries one waiting event
//! now and dead-letters another, lists the instances; a forged cross-origin form
//! POST is refused with 403; no session redirects to login; no page shows the Redis URL,
//! its password or the token. Screenshots of each page go to `target/console-screenshots/`.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Value, json};

use crate::util::api::{Api, Resp};
use crate::util::browser::{Browser, Page, PageServer};
use crate::util::*;

const TOKEN: &str = "console-operator-token-5f2a9c";
const PASSWORD: &str = "console-redis-pw-81b7";
const ORDERS: &str = "orders.created";
const MAIL: &str = "mail.sent";
const WAIT: Duration = Duration::from_secs(15);
const XSS_SCRIPT: &str = "<script>window.__xss=1</script>";
const XSS_IMG: &str = "\"><img src=x onerror=window.__xss=1>";

/// The browser on the console, with every page's HTML kept for the leak check.
struct Ui {
    browser: Browser,
    page: Page,
    base: String,
    seen: Vec<(String, String)>,
}

impl Ui {
    fn eval(&mut self, js: &str) -> Value {
        self.browser
            .eval(&self.page, js, WAIT)
            .unwrap_or_else(|e| panic!("{js}: {e}"))
    }

    fn text(&mut self, selector: &str) -> String {
        let js = format!("(document.querySelector({selector:?}) || {{}}).textContent || ''");
        self.eval(&js)
            .as_str()
            .unwrap_or_default()
            .trim()
            .to_string()
    }

    /// Runs `action` (which navigates), waits for the new page to load, checks that no
    /// injected script ran there and keeps its HTML; returns its path and query.
    fn nav(&mut self, action: &str) -> String {
        self.eval(&format!("window.__stale = 1; {action}; true"));
        let loaded = "!window.__stale && document.readyState === 'complete' && \
                      location.pathname + location.search";
        let at = self.browser.wait_for(&self.page, action, loaded, WAIT);
        let at = at.as_str().unwrap_or_default().to_string();
        assert_eq!(
            self.eval("typeof window.__xss"),
            json!("undefined"),
            "an injected script ran on {at}"
        );
        let html = self.eval("document.documentElement.outerHTML");
        self.seen
            .push((at.clone(), html.as_str().unwrap_or_default().to_string()));
        at
    }

    fn go(&mut self, path: &str) -> String {
        let url = format!("{}{path}", self.base);
        self.go_abs(&url)
    }

    fn go_abs(&mut self, url: &str) -> String {
        self.nav(&format!("location.href = {url:?}"))
    }

    fn shot(&mut self, name: &str) {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/console-screenshots");
        self.browser
            .screenshot(&self.page, &dir.join(format!("{name}.png")));
    }
}

/// The (ms, seq) of a stream entry id, for ordering.
fn entry_ms(id: &str) -> (u64, u64) {
    let (ms, seq) = id.split_once('-').unwrap_or((id, "0"));
    (ms.parse().unwrap_or(0), seq.parse().unwrap_or(0))
}

/// A same-origin POST with the session cookie (or none), for the raw checks.
fn post(api: &Api, path: &str, cookie: &str, origin: &str, body: &str) -> Resp {
    let mut headers = vec![("content-type", "application/x-www-form-urlencoded")];
    if !cookie.is_empty() {
        headers.push(("cookie", cookie));
    }
    if !origin.is_empty() {
        headers.push(("origin", origin));
    }
    api.send("POST", path, &headers, Some(body.as_bytes().to_vec()))
}

/// What the steps share: the scenario, the DLQ entry id of each event, the API clients,
/// the session cookie.
struct Ctx {
    s: Scenario,
    env: &'static str,
    dlq: String,
    entries: std::collections::HashMap<String, String>,
    base: String,
    api: Api,
    raw: Api,
    cookie: String,
}

impl Ctx {
    /// The DLQ entry id of event `id`.
    fn entry(&self, id: &str) -> String {
        self.entries[id].clone()
    }
}

#[test]
fn console_in_a_real_browser() {
    let env = "consoleui";
    let redis = RedisServer::start_with_password(PASSWORD);
    let s = Scenario::new(env)
        .redis(redis)
        .types(&[ORDERS, MAIL])
        .token(TOKEN)
        .config(|c| {
            c.initial_backoff = "1h".into();
            c.max_backoff = "1h".into();
        })
        .start();
    let failing = ["o-1", "o-2", "o-3", "m-1", "m-2", "x-1", "x-2", "big-1"];
    for id in failing {
        s.sink.script(id, vec![Action::status(400), Action::ok()]);
    }
    for id in ["r-1", "r-2"] {
        s.sink.script(id, vec![Action::status(503), Action::ok()]);
    }
    let add = |ty: &str, id: &str, data: &str, corr: &str| {
        let mut f = vec![("id", id), ("type", ty), ("data", data)];
        if !corr.is_empty() {
            f.push(("correlationid", corr));
        }
        s.redis.xadd(&stream_key(env, ty), &f);
    };
    add(ORDERS, "ok-1", r#"{"n":1}"#, "");
    add(ORDERS, "o-1", r#"{"order":"A-1","lines":[1,2]}"#, "corr-42");
    add(ORDERS, "o-2", r#"{"order":"A-2"}"#, "");
    add(ORDERS, "o-3", r#"{"order":"A-3"}"#, "");
    add(MAIL, "m-1", r#"{"to":"a@example.com"}"#, "");
    add(MAIL, "m-2", r#"{"to":"b@example.com"}"#, "");
    add(ORDERS, "x-1", &json!(XSS_SCRIPT).to_string(), "");
    add(ORDERS, "x-2", &json!(XSS_IMG).to_string(), "");
    let blob = format!("{}END", "b".repeat(2_500));
    add(ORDERS, "big-1", &json!({ "blob": blob }).to_string(), "");
    add(MAIL, "r-1", r#"{"to":"c@example.com"}"#, "corr-r");
    add(MAIL, "r-2", r#"{"to":"d@example.com"}"#, "");
    let dlq = dlq_key(env);
    wait_until("8 dead letters, 2 waiting retries", WAIT, || {
        s.redis.xlen(&dlq) == 8 && s.redis.zcard(&retry_key(env, "group")) == 2
    });
    let entries = dlq_by_id(&s.redis, env)
        .iter()
        .map(|(id, e)| (id.clone(), e[0].entry_id.clone()))
        .collect();
    let addr = s.workers[0].config.api_addr();
    let base = format!("http://{addr}");
    let api = Api::new(&addr, Some(TOKEN));
    let raw = Api::new(&addr, None);

    let browser = Browser::launch();
    let mut ui = {
        let mut browser = browser;
        let page = browser.open(&format!("{base}/ui/login"));
        browser.viewport(&page, 1100, 800);
        Ui {
            browser,
            page,
            base: base.clone(),
            seen: Vec::new(),
        }
    };

    let cookie = login(&mut ui);
    let t = Ctx {
        s,
        env,
        dlq,
        entries,
        base,
        api,
        raw,
        cookie,
    };
    dlq_filters(&mut ui, &t);
    overview(&mut ui, &t);
    entry_pages(&mut ui, &t);
    replay_and_purge(&mut ui, &t);
    history(&mut ui);
    csrf(&mut ui, &t);
    retries_and_instances(&mut ui, &t);
    headers_and_leaks(&mut ui, &t);
}

/// No session: the login form; a wrong token refused; the right one gives an HttpOnly,
/// SameSite=Strict cookie for /ui and returns to the page first asked for. Returns the
/// cookie header.
fn login(ui: &mut Ui) -> String {
    // No session: redirected to the login form, which keeps where to go back to.
    let at = ui.go("/ui/dlq?type=mail.sent");
    assert_eq!(at, "/ui/login?next=%2Fui%2Fdlq%3Ftype%3Dmail.sent");
    ui.shot("login");
    // A wrong token: the form again, saying so.
    ui.nav("document.getElementById('token').value = 'nope'; document.forms[0].submit()");
    assert_eq!(
        ui.text("#login-error"),
        "That is not the operator token (EVENTS_API_TOKEN). Try again."
    );
    // The right one: a session cookie (HttpOnly: not visible to scripts), then the page.
    let at = ui.nav(&format!(
        "document.getElementById('token').value = {TOKEN:?}; document.forms[0].submit()"
    ));
    assert_eq!(at, "/ui/dlq?type=mail.sent");
    assert_eq!(ui.eval("document.cookie"), json!(""));
    let cookies = ui
        .browser
        .call(None, "Storage.getCookies", json!({}), WAIT)
        .expect("cookies");
    let c = cookies["cookies"]
        .as_array()
        .and_then(|a| a.iter().find(|c| c["name"] == "ew_console"))
        .cloned()
        .expect("the session cookie");
    assert_eq!(
        (&c["httpOnly"], &c["sameSite"], &c["path"]),
        (&json!(true), &json!("Strict"), &json!("/ui"))
    );
    let session = c["value"].as_str().unwrap().to_string();
    assert!(!session.contains(TOKEN));
    let cookie = format!("ew_console={session}");
    cookie
}

/// The DLQ list: filtered by type from the URL, then by the filter form.
fn dlq_filters(ui: &mut Ui, t: &Ctx) {
    // The DLQ filtered by type (the URL is the view): the two mail entries only.
    let rows =
        ui.eval("[...document.querySelectorAll('#entries tbody tr')].map(r => r.dataset.entry)");
    let mut want = [t.entry("m-1"), t.entry("m-2")];
    want.sort_by_key(|e| std::cmp::Reverse(entry_ms(e)));
    assert_eq!(rows, json!(want), "newest first");
    // The filter form: reason and type, read back from the URL.
    let at = ui.nav(
        "document.getElementById('f-type').value = 'orders.created'; \
         document.getElementById('f-reason').value = 'permanent_error'; \
         document.getElementById('filters').submit()",
    );
    assert!(
        at.starts_with("/ui/dlq?type=orders.created&reason=permanent_error"),
        "{at}"
    );
    let n = ui.eval("document.querySelectorAll('#entries tbody tr').length");
    assert_eq!(n, json!(6));
    ui.shot("dlq");
}

/// The overview shows the API's figures, refreshed live.
fn overview(ui: &mut Ui, t: &Ctx) {
    // Overview: the same figures as the API's health report, refreshed live.
    ui.go("/ui");
    ui.browser.wait_for(
        &ui.page,
        "a live refresh",
        "window.__consoleRefreshes >= 1",
        WAIT,
    );
    let health = t.api.get("/api/events/health").json();
    assert_eq!(ui.text("#dlq-depth"), health["dlq_depth"].to_string());
    assert_eq!(ui.text("#retry-depth"), health["retry_depth"].to_string());
    assert_eq!(
        ui.text("#instances-count"),
        health["instances"].as_array().unwrap().len().to_string()
    );
    for st in health["streams"].as_array().unwrap() {
        let t = st["type"].as_str().unwrap();
        for k in ["lag", "pending", "read"] {
            let sel = format!("[data-k=\"{k}:{t}\"]");
            assert_eq!(ui.text(&sel), st[k].to_string(), "{k} of {t}");
        }
    }
    assert_eq!(ui.text(&format!("[data-k=\"handled:{ORDERS}\"]")), "1");
    assert_eq!(ui.text(&format!("[data-k=\"failed:{ORDERS}\"]")), "6");
    ui.shot("overview");
}

/// Entry pages: hostile data inert, every field, data pretty-printed, long values cut.
fn entry_pages(ui: &mut Ui, t: &Ctx) {
    // Hostile data: shown as text in <pre>, no script ran (checked on every page by nav).
    for (id, text) in [("x-1", XSS_SCRIPT), ("x-2", XSS_IMG)] {
        ui.go(&format!("/ui/dlq/entry/{}", t.entry(id)));
        assert_eq!(ui.text("#data"), json!(text).to_string());
        assert_eq!(
            ui.eval("document.querySelectorAll('#main script, #main img').length"),
            json!(0)
        );
    }
    // An entry with all its fields, data pretty-printed, ids copyable.
    ui.go(&format!("/ui/dlq/entry/{}", t.entry("o-1")));
    assert_eq!(
        ui.text("#data"),
        "{\n  \"lines\": [\n    1,\n    2\n  ],\n  \"order\": \"A-1\"\n}"
    );
    assert_eq!(ui.text("#event-id"), "o-1");
    // The copy button (console.js) puts the id on the clipboard.
    let grant =
        json!({"permissions": ["clipboardReadWrite", "clipboardSanitizedWrite"], "origin": t.base});
    ui.browser
        .call(None, "Browser.grantPermissions", grant, WAIT)
        .expect("clipboard permission");
    ui.eval("document.querySelector('button.copy[data-copy=\"o-1\"]').click()");
    let copied = "document.querySelector('button.copy[data-copy=\"o-1\"]').textContent";
    ui.browser.wait_for(
        &ui.page,
        "the copy button",
        &format!("{copied} !== 'Copy' && {copied}"),
        WAIT,
    );
    assert_eq!(ui.eval(copied), json!("Copied"));
    assert_eq!(ui.eval("navigator.clipboard.readText()"), json!("o-1"));
    let fields = ui.eval("[...document.querySelectorAll('#fields dt')].map(d => d.textContent)");
    for f in [
        "id",
        "type",
        "correlationid",
        "dlq_reason",
        "dlq_group",
        "dlq_attempts",
    ] {
        assert!(
            fields.as_array().unwrap().contains(&json!(f)),
            "{f} in {fields}"
        );
    }
    ui.shot("entry");
    // A long value is cut, with a link to the whole of it.
    ui.go(&format!("/ui/dlq/entry/{}", t.entry("big-1")));
    let shown = ui.text("#data");
    assert_eq!(shown.chars().count(), 2_000, "cut at 2000 characters");
    assert!(!shown.contains("END"));
    ui.nav("document.getElementById('show-all').click()");
    assert!(ui.text("#data").ends_with("bbbEND\"\n}"), "the whole value");
}

/// Replay after a dry run with a canary; purge with a typed confirmation; both in the history.
fn replay_and_purge(ui: &mut Ui, t: &Ctx) {
    // Replay by filter: the dry-run count first, then the replay with a canary of 1.
    ui.go("/ui/dlq?type=mail.sent");
    ui.nav("document.getElementById('replay-filter').click()");
    assert_eq!(ui.text("#matched"), "2");
    assert_eq!(t.s.redis.xlen(&t.dlq), 8, "a dry run changes nothing");
    ui.nav("document.getElementById('canary').value = '1'; document.getElementById('run').click()");
    assert_eq!(ui.text("#done"), "Replay done");
    assert_eq!(ui.text("[data-r=\"replayed\"]"), "2");
    ui.shot("replay");
    wait_until("m-1, m-2 handled after the replay", WAIT, || {
        let ok = t.s.sink.success_counts();
        ok.get("m-1") == Some(&1) && ok.get("m-2") == Some(&1)
    });
    assert_eq!(t.s.redis.xlen(&t.dlq), 6);

    // Purge selected entries: count, a wrong confirmation refused, the typed one done.
    ui.go("/ui/dlq?type=orders.created");
    for id in ["o-2", "o-3"] {
        ui.eval(&format!(
            "document.getElementById('sel-{}').checked = true",
            t.entry(id)
        ));
    }
    ui.nav("document.getElementById('purge-selected').click()");
    assert_eq!(ui.text("#matched"), "2");
    let wrong = ui.eval(
        "(async () => { const f = new FormData(document.getElementById('confirm')); \
         f.set('confirm', 'purge'); const r = await fetch('/ui/dlq/purge', {method: 'POST', \
         body: new URLSearchParams(f)}); return [r.status, (await r.text()).includes('type exactly `purge 2`')]; })()",
    );
    assert_eq!(wrong, json!([400, true]));
    assert_eq!(t.s.redis.xlen(&t.dlq), 6);
    ui.nav("document.getElementById('confirm-text').value = 'purge 2'; document.getElementById('run').click()");
    assert_eq!(ui.text("#done"), "Purge done");
    assert_eq!(ui.text("[data-r=\"purged\"]"), "2");
    assert_eq!(t.s.redis.xlen(&t.dlq), 4);
    let history = t.api.get("/api/events/history?limit=1000").json();
    let actions: Vec<(String, String)> = history["records"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["kind"] == "replayed" || r["kind"] == "purged")
        .map(|r| {
            (
                r["id"].as_str().unwrap().to_string(),
                r["kind"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    for (id, kind) in [
        ("m-1", "replayed"),
        ("m-2", "replayed"),
        ("o-2", "purged"),
        ("o-3", "purged"),
    ] {
        assert!(
            actions.contains(&(id.to_string(), kind.to_string())),
            "{id} {kind}: {actions:?}"
        );
    }
}

/// History search by correlation id.
fn history(ui: &mut Ui) {
    // History by correlation id: the timeline of o-1, oldest first.
    ui.go("/ui/history");
    ui.nav("document.getElementById('h-corr').value = 'corr-42'; document.getElementById('search').submit()");
    let kinds = ui.eval("[...document.querySelectorAll('#timeline li')].map(l => l.dataset.kind)");
    let ids = ui.eval("[...new Set([...document.querySelectorAll('#timeline li code.id')].map(c => c.textContent))]");
    assert_eq!(ids, json!(["o-1"]));
    assert!(
        kinds.as_array().unwrap().contains(&json!("dead_lettered")),
        "{kinds}"
    );
    ui.shot("history");
}

/// Forged and cross-origin POSTs are refused; the same-origin control is let through.
fn csrf(ui: &mut Ui, t: &Ctx) {
    let base = &t.base;
    // CSRF: a form on another origin posting to the console (the browser sends the
    // cookie: both are 127.0.0.1, same site) is refused with 403 and purges nothing.
    let evil = PageServer::start(&format!(
        "<!doctype html><html><body><form id=f method=post action=\"{base}/ui/dlq/purge\">\
         <input name=mode value=filter><input name=step value=run><input name=count value=3>\
         <input name=confirm value=\"purge 3\"><input name=csrf value=guess></form></body></html>"
    ));
    ui.go_abs(&evil.url("/"));
    ui.nav("document.getElementById('f').submit()");
    let status = ui.eval("performance.getEntriesByType('navigation')[0].responseStatus");
    assert_eq!(status, json!(403));
    assert!(
        ui.text("#message")
            .starts_with("Refused: this form did not come from this console")
    );
    assert_eq!(
        t.s.redis.xlen(&t.dlq),
        4,
        "the forged purge deleted nothing"
    );
    // The same without a browser, each check on its own: with the session's real CSRF
    // token but a foreign Origin, or none; from the same origin with a wrong token; and
    // the control (same origin, real token) that is let through.
    ui.go("/ui/dlq");
    let csrf = ui.eval("document.querySelector('input[name=csrf]').value");
    let csrf = csrf.as_str().unwrap().to_string();
    let run = format!("mode=filter&step=run&count=4&confirm=purge+4&csrf={csrf}");
    let foreign = post(
        &t.raw,
        "/ui/dlq/purge",
        &t.cookie,
        "http://127.0.0.1:1",
        &run,
    );
    let none = post(&t.raw, "/ui/dlq/purge", &t.cookie, "", &run);
    let wrong = "mode=filter&step=run&count=4&confirm=purge+4&csrf=00";
    let bad_csrf = post(&t.raw, "/ui/dlq/purge", &t.cookie, &t.base, wrong);
    assert_eq!(
        (foreign.status, none.status, bad_csrf.status),
        (403, 403, 403)
    );
    assert_eq!(t.s.redis.xlen(&t.dlq), 4);
    let dry = format!("mode=filter&step=dry_run&csrf={csrf}");
    let control = post(&t.raw, "/ui/dlq/purge", &t.cookie, &t.base, &dry);
    assert_eq!(control.status, 200, "{}", control.body);
    assert!(
        control
            .body
            .contains("<span id=\"matched\">4</span> entries match")
    );
}

/// Retry now, dead-letter now, and the instances page.
fn retries_and_instances(ui: &mut Ui, t: &Ctx) {
    // Retries: two events wait in the retry set (1 h backoff); one is retried now, the
    // other dead-lettered now (reason operator, the note as its error).
    ui.go("/ui/retries");
    let ids = ui
        .eval("[...document.querySelectorAll('#retries tbody tr')].map(r => r.dataset.id).sort()");
    assert_eq!(ids, json!(["r-1", "r-2"]));
    assert_eq!(ui.text("[data-group=\"group\"]"), "2");
    ui.shot("retries");
    ui.eval("document.getElementById('pick-r-1').checked = true");
    ui.nav("document.getElementById('retry-now').click()");
    assert_eq!(ui.text("#done-count"), "1");
    wait_until("r-1 handled after retry-now", WAIT, || {
        t.s.sink.success_counts().get("r-1") == Some(&1)
    });
    ui.go("/ui/retries");
    ui.eval("document.getElementById('pick-r-2').checked = true");
    ui.nav(
        "document.getElementById('note').value = 'bad address'; \
         document.getElementById('dead-letter').click()",
    );
    assert_eq!(ui.text("#done-count"), "1");
    assert_eq!(t.s.redis.zcard(&retry_key(t.env, "group")), 0);
    let r2 = dlq_by_id(&t.s.redis, t.env)["r-2"][0].clone();
    assert_eq!(
        (r2.get("dlq_reason"), r2.get("dlq_error")),
        (
            Some("operator"),
            Some("dead-lettered from the retry set by console: bad address")
        )
    );
    // Instances: this worker, live, with its pending count.
    ui.go("/ui/instances");
    assert_eq!(
        ui.eval("document.querySelectorAll('#instances-table tr[data-consumer=\"w1\"]').length"),
        json!(1)
    );
    ui.shot("instances");
}

/// Security headers, no secret in any page, phone width.
fn headers_and_leaks(ui: &mut Ui, t: &Ctx) {
    // Headers of every console answer.
    let r = t.raw.send("GET", "/ui/login", &[], None);
    assert_eq!(
        r.header("content-security-policy"),
        Some(
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
             connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
        )
    );
    assert_eq!(r.header("x-content-type-options"), Some("nosniff"));
    assert_eq!(r.header("referrer-policy"), Some("same-origin"));

    // Nothing shows the Redis URL, its password or the operator token.
    for (at, html) in &ui.seen {
        for secret in [t.s.redis.url().as_str(), PASSWORD, TOKEN] {
            assert!(!html.contains(secret), "{at} shows {secret}");
        }
    }
    // A phone-width window: the overview fits (tables scroll inside their box).
    ui.browser.viewport(&ui.page, 390, 844);
    ui.go("/ui");
    assert_eq!(
        ui.eval("document.documentElement.scrollWidth <= 390"),
        json!(true)
    );
    ui.shot("overview-phone");
}

#[test]
fn console_is_off_without_a_token() {
    let s = Scenario::new("consoleoff").types(&[ORDERS]).start();
    let raw = Api::new(&s.workers[0].config.api_addr(), None);
    for path in ["/ui", "/ui/login", "/ui/dlq"] {
        let r = raw.send("GET", path, &[], None);
        assert_eq!(r.status, 404, "{path}");
        assert!(
            r.body.contains(
                "The console is off: no operator token is configured. Set EVENTS_API_TOKEN"
            ),
            "{path}: {}",
            r.body
        );
    }
    let r = post(&raw, "/ui/login", "", "", "token=x");
    assert_eq!(r.status, 404);
}
