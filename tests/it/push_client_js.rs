//! The JavaScript client (`GET /api/events/client.js`, issue 12 point 8) in a real browser
//! (headless Chromium): a page on another loopback origin imports it, subscribes and
//! receives; with the daemon stopped it queues 5 publishes (persisted), survives a reload,
//! and when the daemon is back the queue flushes (each event handled exactly once by the
//! backend) and the subscription resumes with exactly the missed messages; a resume past
//! the trimmed history is surfaced to the app as `onReset("trimmed")`.

use std::time::Duration;

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

use crate::push_util::publish;
use crate::util::browser::{Browser, Page, PageServer};
use crate::util::*;

const SECRET: &str = "it-test-hs256-secret-not-real-0123456789ab";
const CHANNEL: &str = "user:u1";

/// An app token for user u1: subscribes `user:u1`, publishes `booking.*`.
fn app_token() -> String {
    let claims = json!({"sub": "u1", "exp": jsonwebtoken::get_current_timestamp() + 600,
        "channels": [CHANNEL], "publish": ["booking.*"]});
    let key = EncodingKey::from_secret(SECRET.as_bytes()).unwrap();
    jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &key).unwrap()
}

/// The test page: imports the served client, subscribes to `user:u1` and records what the
/// handlers get in `window.got` (event ids), `window.resumes`, `window.resets` (reasons).
fn page_html(addr: &str, token: &str) -> String {
    format!(
        r#"<!doctype html><title>client</title><script type="module">
import {{ EventClient }} from "http://{addr}/api/events/client.js";
window.got = []; window.resumes = []; window.resets = []; window.rejected = [];
const client = new EventClient({{ url: "http://{addr}", token: () => "{token}",
  cookieName: "ew_token", onRejected: (e, r) => window.rejected.push([e.id, r.status]) }});
window.client = client;
window.start = () => {{ window.sub = client.subscribe(["{CHANNEL}"], {{
  onMessage: (m) => window.got.push(m.event.id),
  onResume: (r) => window.resumes.push(r),
  onReset: (reason) => window.resets.push(reason) }}); }};
window.start();
window.ready = true;
</script>"#
    )
}

/// The daemon: `[apps]` (cookie `ew_token`, the page's origin allowed), `booking.*` routed
/// to `sink` and projected onto `user:{{data.user}}` (history of 8 messages).
fn config(redis: &RedisServer, sink: &HttpSink, env: &str) -> WorkerConfig {
    let mut cfg =
        WorkerConfig::new(env, &redis.url()).route(Route::http(&["booking.*"], &sink.url()));
    cfg.env_vars.push(("APP_JWT_SECRET".into(), SECRET.into()));
    cfg
}

fn eval(browser: &mut Browser, page: &Page, js: &str) -> Value {
    browser
        .eval(page, js, Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("{js}: {e}"))
}

/// Open `url` and wait until its module ran (imported the client).
fn open(browser: &mut Browser, url: &str) -> Page {
    let page = browser.open(url);
    browser.wait_for(
        &page,
        "the module loaded",
        "window.ready === true",
        Duration::from_secs(10),
    );
    page
}

/// Sorted strings of a JSON array.
fn sorted(v: &Value) -> Vec<String> {
    let mut out: Vec<String> = v
        .as_array()
        .unwrap_or_else(|| panic!("not an array: {v}"))
        .iter()
        .map(|x| x.as_str().unwrap().to_string())
        .collect();
    out.sort();
    out
}

#[test]
fn the_js_client_queues_offline_flushes_once_and_resumes_exactly() {
    let env = "jsc";
    let redis = RedisServer::start();
    let _dump = redis.dump_on_panic(env);
    let sink = HttpSink::start();
    let mut cfg = config(&redis, &sink, env);
    let token = app_token();
    let pages = PageServer::start(&page_html(&cfg.api_addr(), &token));
    cfg.extra = format!(
        "[apps]\njwt_secret_env = \"APP_JWT_SECRET\"\ncookie_name = \"ew_token\"\n\
         allowed_origins = [{:?}]\n[push]\nheartbeat = \"1s\"\nhistory_max_len = 8\n\
         [[push.channels]]\ntypes = [\"booking.*\"]\nchannel = \"user:{{data.user}}\"\n",
        pages.origin()
    );
    let mut w = WorkerProcess::start("w1", cfg);
    w.wait_ready(Duration::from_secs(20));
    let wait = Duration::from_secs(10);
    // The module as served: its type, cache and CORS headers for the page's origin.
    let r = crate::util::api::Api::new(&w.config.api_addr(), None).send(
        "GET",
        "/api/events/client.js",
        &[("origin", &pages.origin())],
        None,
    );
    let header = |name: &str| {
        r.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    assert_eq!(r.status, 200);
    assert_eq!(
        header("content-type"),
        Some("text/javascript; charset=utf-8")
    );
    assert_eq!(header("cache-control"), Some("public, max-age=300"));
    assert_eq!(
        header("access-control-allow-origin"),
        Some(pages.origin().as_str())
    );
    assert!(r.body.contains("export class EventClient"), "{}", r.body);
    let mut browser = Browser::launch();

    // Subscribe and receive.
    let page = open(&mut browser, &pages.url("/"));
    browser.wait_for(
        &page,
        "the first resume",
        "window.resumes.length === 1",
        wait,
    );
    publish(&redis, env, "u1", "e-1", 0);
    let got = browser.wait_for(&page, "e-1", "window.got.length >= 1 && window.got", wait);
    assert_eq!(got, json!(["e-1"]));

    // The daemon stops; the page publishes 5 events: queued and persisted.
    w.sigterm();
    assert_eq!(w.wait_exit(wait).and_then(|s| s.code()), Some(0));
    let ids = eval(
        &mut browser,
        &page,
        "[1,2,3,4,5].map(n => client.publish({type: 'booking.created', data: {user: 'u1', n}}))",
    );
    let queued = sorted(&ids);
    assert_eq!(queued.len(), 5);
    std::thread::sleep(Duration::from_millis(300));
    let pending = eval(&mut browser, &page, "client.pending().map(e => e.id)");
    assert_eq!(pending, ids, "queued in order, nothing sent");

    // Reloaded while offline: the queue survives (client.js comes from the browser's cache).
    browser.close(page);
    let page = open(&mut browser, &pages.url("/"));
    let pending = eval(&mut browser, &page, "client.pending().map(e => e.id)");
    assert_eq!(pending, ids, "the queue survives the reload");

    // Two backend events while the daemon is down, then the daemon is back.
    publish(&redis, env, "u1", "d-1", 0);
    publish(&redis, env, "u1", "d-2", 0);
    w.restart();
    w.wait_ready(Duration::from_secs(20));
    browser.wait_for(
        &page,
        "the queue flushed",
        "client.pending().length === 0",
        Duration::from_secs(15),
    );
    let got = browser.wait_for(
        &page,
        "7 missed messages",
        "window.got.length >= 7 && window.got",
        wait,
    );
    let mut expected = queued.clone();
    expected.extend(["d-1".to_string(), "d-2".to_string()]);
    expected.sort();
    std::thread::sleep(Duration::from_millis(500));
    let got_after = eval(&mut browser, &page, "window.got");
    assert_eq!(got_after, got, "nothing more arrives");
    assert_eq!(
        sorted(&got),
        expected,
        "exactly the missed messages, once each"
    );
    let resumes = eval(&mut browser, &page, "window.resumes");
    let last = resumes.as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["recovered"], json!(true), "{resumes}");
    assert_eq!(eval(&mut browser, &page, "window.resets"), json!([]));
    assert_eq!(eval(&mut browser, &page, "window.rejected"), json!([]));
    for id in queued
        .iter()
        .chain(["d-1".to_string(), "d-2".to_string()].iter())
    {
        wait_until(&format!("{id} handled"), wait, || {
            !sink.requests_for(id).is_empty()
        });
    }
    std::thread::sleep(Duration::from_millis(300));
    for id in &queued {
        assert_eq!(sink.requests_for(id).len(), 1, "{id} handled exactly once");
    }

    // Offline past the history: 10 messages while the page is away, history 8 -> trimmed.
    eval(&mut browser, &page, "window.sub.close(); true");
    for n in 1..=10 {
        publish(&redis, env, "u1", &format!("f-{n}"), 0);
    }
    let key = format!("events:{env}:push:{{{CHANNEL}}}");
    wait_until("f-10 in the channel", wait, || {
        redis
            .xrange(&key)
            .last()
            .is_some_and(|e| e.get("id") == Some("f-10"))
    });
    eval(&mut browser, &page, "window.got = []; window.start(); true");
    let resets = browser.wait_for(
        &page,
        "the reset",
        "window.resets.length >= 1 && window.resets",
        wait,
    );
    assert_eq!(resets, json!(["trimmed"]));
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        eval(&mut browser, &page, "window.got"),
        json!([]),
        "no partial replay"
    );
    publish(&redis, env, "u1", "g-1", 0);
    let got = browser.wait_for(
        &page,
        "g-1 live",
        "window.got.length >= 1 && window.got",
        wait,
    );
    assert_eq!(got, json!(["g-1"]), "live again after the reset");
    // Refused for good: dropped from the queue and reported; the WebSocket transport.
    eval(
        &mut browser,
        &page,
        "client.publish({id: 'bad-1', type: 'booking.created'}); \
         client.publish({id: 'pay-1', type: 'payment.made', data: {}}); true",
    );
    let rejected = browser.wait_for(
        &page,
        "2 rejected",
        "window.rejected.length >= 2 && client.pending().length === 0 && window.rejected",
        wait,
    );
    assert_eq!(
        rejected,
        json!([["bad-1", "invalid"], ["pay-1", "forbidden"]])
    );
    eval(
        &mut browser,
        &page,
        &format!(
            "window.wsgot = []; window.resumes = []; window.sub.close(); client.subscribe(['{CHANNEL}'], \
             {{transport: 'ws', onMessage: m => window.wsgot.push(m.event.id), \
             onResume: r => window.resumes.push(r)}}); true"
        ),
    );
    browser.wait_for(&page, "the ws resume", "window.resumes.length >= 1", wait);
    publish(&redis, env, "u1", "h-1", 0);
    let wsgot = browser.wait_for(
        &page,
        "h-1 over ws",
        "window.wsgot.length >= 1 && window.wsgot",
        wait,
    );
    assert_eq!(
        wsgot,
        json!(["h-1"]),
        "resumed from the stored position: only h-1"
    );
    // The page-load sequence's first step: the position endpoint.
    let pos = eval(
        &mut browser,
        &page,
        &format!(
            "client.position(['{CHANNEL}']).then(p => typeof p.positions['{CHANNEL}'] === 'string' && typeof p.id)"
        ),
    );
    assert_eq!(pos, json!("string"));
}
