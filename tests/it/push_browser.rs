//! Push in a real browser (issue 12 "Tests"): Debian's headless Chromium loads a page from
//! another loopback origin (allowed in `apps.allowed_origins`) that subscribes with the
//! native `EventSource` (`withCredentials`: the app token is the `ew_token` cookie, set for
//! the daemon's origin through DevTools `Storage.setCookies`) and the native `WebSocket`
//! (the same cookie on the upgrade, `since` = the last `id` on reconnect), on one channel
//! and on two. The page goes offline three ways (the connection cut by a proxy, the daemon
//! restarted on the same port, the client moved to a second instance of the same env), N
//! events per channel are published meanwhile, and what the page recorded must be exactly
//! the published events: per channel in order, no gap, no duplicate, positions equal to the
//! channel history's, then live ones.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{Value, json};

use crate::push_auth::{apps_config, token};
use crate::push_util::publish;
use crate::util::browser::{Browser, Page, PageServer};
use crate::util::faults::Proxy;
use crate::util::{RedisServer, free_port, wait_until};

const WAIT: Duration = Duration::from_secs(15);
/// Events per channel published while the page is offline.
const N: usize = 5;
/// The page's connections: name, transport, channels.
const CONNS: [(&str, &str, &[&str]); 4] = [
    ("sse1", "sse", &["user:42"]),
    ("sse2", "sse", &["user:42", "user:43"]),
    ("ws1", "ws", &["user:42"]),
    ("ws2", "ws", &["user:42", "user:43"]),
];

/// The test page: `start(name, kind, channels)` opens a connection that records every
/// message as `{ch, pos, eid}` in `rec[name]` and every resume reply in `resumes[name]`.
/// EventSource reconnects by itself (Last-Event-ID); only when the browser gives up
/// (readyState CLOSED, e.g. a 503 while the daemon starts) does the page open a new one
/// with `since` (counted in `manual`). A closed WebSocket is reopened after 300 ms with
/// `since`. `offline()` closes everything; `moveTo(base)` reopens everything at `base`.
const PAGE: &str = r#"<!doctype html><html><body><script>
window.rec = {}; window.resumes = {}; window.opens = {}; window.manual = {};
window.errors = []; window.conns = {}; window.last = {}; window.specs = {};
window.base = null;
function start(name, kind, chs) {
  specs[name] = [kind, chs];
  for (const o of [rec, resumes]) o[name] = o[name] || [];
  for (const o of [opens, manual]) o[name] = o[name] || 0;
  return kind === 'sse' ? startSse(name, chs) : startWs(name, chs);
}
function startSse(name, chs) {
  let url = 'http://' + base + '/api/events/stream?' +
    chs.map(c => 'channel=' + encodeURIComponent(c)).join('&');
  if (last[name]) url += '&since=' + encodeURIComponent(last[name]);
  const es = new EventSource(url, {withCredentials: true});
  conns[name] = es;
  es.onopen = () => { opens[name]++; };
  es.addEventListener('resume', e => {
    resumes[name].push(JSON.parse(e.data)); last[name] = e.lastEventId; });
  es.addEventListener('end', e => errors.push(name + ' end ' + e.data));
  es.onmessage = e => {
    const m = JSON.parse(e.data);
    rec[name].push({ch: m.channel, pos: m.position, eid: m.event.id});
    last[name] = e.lastEventId;
  };
  es.onerror = () => {
    if (es.readyState === 2 && conns[name] === es) {
      manual[name]++; setTimeout(() => { if (conns[name] === es) startSse(name, chs); }, 300);
    }
  };
}
function startWs(name, chs) {
  const ws = new WebSocket('ws://' + base + '/api/events/ws');
  conns[name] = ws;
  ws.onopen = () => {
    opens[name]++;
    const f = {type: 'subscribe', channels: chs};
    if (last[name]) f.since = last[name];
    ws.send(JSON.stringify(f));
  };
  ws.onmessage = e => {
    const m = JSON.parse(e.data);
    if (m.type === 'resume') { resumes[name].push(m); last[name] = m.id; }
    else if (m.type === 'message') {
      rec[name].push({ch: m.channel, pos: m.position, eid: m.event.id}); last[name] = m.id;
    } else { errors.push(name + ' ' + e.data); }
  };
  ws.onclose = () => {
    if (conns[name] === ws) {
      manual[name]++; setTimeout(() => { if (conns[name] === ws) startWs(name, chs); }, 300);
    }
  };
}
function offline() {
  for (const n of Object.keys(conns)) { const c = conns[n]; conns[n] = null; c.close(); }
}
function moveTo(b) {
  base = b;
  for (const n of Object.keys(specs)) start(n, specs[n][0], specs[n][1]);
}
</script></body></html>"#;

/// The test's side: what was published per channel, and the page.
struct Run<'a> {
    redis: &'a RedisServer,
    env: &'a str,
    browser: Browser,
    page: Page,
    sent: BTreeMap<&'static str, Vec<String>>,
}

impl Run<'_> {
    fn eval(&mut self, js: &str) -> Value {
        self.browser
            .eval(&self.page, js, WAIT)
            .unwrap_or_else(|e| panic!("{js}: {e}"))
    }

    /// Publishes `n` events to each of user:42 and user:43 (ids `{tag}-{i}-{user}`).
    fn publish(&mut self, tag: &str, n: usize) {
        for i in 0..n {
            for (user, ch) in [("42", "user:42"), ("43", "user:43")] {
                let id = format!("{tag}-{i}-{user}");
                publish(self.redis, self.env, user, &id, 0);
                self.sent.entry(ch).or_default().push(id);
            }
        }
    }

    /// Waits until both channel histories hold everything published.
    fn wait_projected(&self) {
        for (ch, ids) in &self.sent {
            let key = format!("events:{}:push:{{{ch}}}", self.env);
            wait_until(&format!("{key} holds {}", ids.len()), WAIT, || {
                self.redis.xlen(&key) == ids.len() as i64
            });
        }
    }

    /// Waits until every connection has recorded as many messages as were published to
    /// its channels, then asserts it recorded exactly those: per channel the published ids
    /// in order (no gap, no duplicate) at the channel history's positions.
    fn check(&mut self, phase: &str) {
        for (name, _, chs) in CONNS {
            let want: usize = chs.iter().map(|c| self.sent[c].len()).sum();
            let cond = format!("rec.{name}.length >= {want} && rec.{name}");
            let what = format!("{phase}: {name} to record {want} messages");
            let got = self.browser.wait_for(&self.page, &what, &cond, WAIT);
            let got = got.as_array().expect("an array").clone();
            assert_eq!(got.len(), want, "{phase}: {name} recorded more: {got:?}");
            for ch in chs {
                let key = format!("events:{}:push:{{{ch}}}", self.env);
                let history: Vec<(String, String)> = self
                    .redis
                    .xrange(&key)
                    .into_iter()
                    .map(|e| (e.entry_id.clone(), e.get("id").unwrap_or("").to_string()))
                    .collect();
                let mine: Vec<(String, String)> = got
                    .iter()
                    .filter(|m| m["ch"] == json!(ch))
                    .map(|m| (str_of(&m["pos"]), str_of(&m["eid"])))
                    .collect();
                // A position is `<history epoch>-<entry id>`: one epoch, the history's ids.
                let epochs: std::collections::BTreeSet<&str> = mine
                    .iter()
                    .map(|(p, _)| p.split('-').next().unwrap_or(""))
                    .collect();
                assert_eq!(
                    epochs.len(),
                    1,
                    "{phase}: {name} on {ch}: one epoch: {mine:?}"
                );
                let mine: Vec<(String, String)> = mine
                    .iter()
                    .map(|(p, e)| (p.split_once('-').map_or("", |x| x.1).to_string(), e.clone()))
                    .collect();
                let ids: Vec<&String> = mine.iter().map(|(_, e)| e).collect();
                let sent: Vec<&String> = self.sent[ch].iter().collect();
                assert_eq!(ids, sent, "{phase}: {name} on {ch}: ids in publish order");
                assert_eq!(
                    mine, history,
                    "{phase}: {name} on {ch}: the history's positions"
                );
            }
        }
        let errors = self.eval("errors");
        assert_eq!(errors, json!([]), "{phase}: error frames");
    }

    /// The number of resume replies of `name` so far, and the last one.
    fn last_resume(&mut self, name: &str) -> (usize, Value) {
        let v = self.eval(&format!("[resumes.{name}.length, resumes.{name}.at(-1)]"));
        (v[0].as_u64().unwrap_or(0) as usize, v[1].clone())
    }

    /// Waits until every connection has resumed more than `before[name]` times and asserts
    /// each last resume recovered, with `missed` = `N` per channel.
    fn wait_resumed(&mut self, phase: &str, before: &BTreeMap<&str, usize>) {
        for (name, _, chs) in CONNS {
            let cond = format!("resumes.{name}.length > {}", before[name]);
            self.browser
                .wait_for(&self.page, &format!("{phase}: {name} resumed"), &cond, WAIT);
            let (_, r) = self.last_resume(name);
            assert_eq!(r["recovered"], json!(true), "{phase}: {name}: {r}");
            for ch in chs {
                assert_eq!(
                    r["channels"][ch],
                    json!({"recovered": true, "missed": N}),
                    "{phase}: {name} on {ch}: {r}"
                );
            }
        }
    }

    fn resumes(&mut self) -> BTreeMap<&'static str, usize> {
        CONNS
            .iter()
            .map(|(n, _, _)| (*n, self.last_resume(n).0))
            .collect()
    }
}

fn str_of(v: &Value) -> String {
    v.as_str().unwrap_or_default().to_string()
}

#[test]
fn t95_browser_eventsource_and_websocket_resume_exactly_after_cut_restart_and_move() {
    let redis = RedisServer::start();
    let env = "t95";
    let server = PageServer::start(PAGE);
    let cfg = apps_config(&redis, env, &[server.origin()]);
    let mut cfg2 = cfg.clone();
    cfg2.api_port = free_port();
    cfg2.consumer = Some("w2".into());
    let mut w1 = crate::push_util::start(cfg);
    let proxy = Proxy::start(w1.config.api_port);
    let mut browser = Browser::launch();
    let page = browser.open(&server.url("/"));
    let cookie = json!({"cookies": [{"name": "ew_token", "url": format!("http://{}", w1.config.api_addr()),
        "value": token(&["user:42", "user:43"], 600)}]});
    browser
        .call(None, "Storage.setCookies", cookie, WAIT)
        .expect("the cookie set");
    let mut run = Run {
        redis: &redis,
        env,
        browser,
        page,
        sent: BTreeMap::new(),
    };
    run.sent.insert("user:42", Vec::new());
    run.sent.insert("user:43", Vec::new());
    run.eval(&format!("base = '127.0.0.1:{}'", proxy.port()));
    for (name, kind, chs) in CONNS {
        run.eval(&format!("start('{name}', '{kind}', {})", json!(chs)));
    }
    run.wait_resumed_first();
    run.publish("live0", 3);
    run.check("connected");

    // (a) The connection cut: every connection reset, new ones held, N published.
    let before = run.resumes();
    proxy.blackhole(true);
    proxy.rst_all();
    run.publish("cut", N);
    run.wait_projected();
    proxy.pass();
    proxy.rst_all();
    run.wait_resumed("cut", &before);
    run.publish("live1", 2);
    run.check("after the cut");
    let manual = run.eval("[manual.sse1, manual.sse2]");
    assert_eq!(
        manual,
        json!([0, 0]),
        "EventSource reconnected by itself after the cut"
    );

    // (b) The daemon restarted on the same port.
    let before = run.resumes();
    w1.kill9();
    run.publish("restart", N);
    w1.restart();
    w1.wait_ready(WAIT);
    run.wait_projected();
    run.wait_resumed("restart", &before);
    run.publish("live2", 2);
    run.check("after the restart");

    // (c) The client moved to another instance of the same env: the first one is gone (one
    // projecting instance at a time keeps the publish order; see the README's projection).
    let before = run.resumes();
    run.eval("offline()");
    w1.kill9();
    let w2 = crate::push_util::start(cfg2);
    run.publish("move", N);
    run.wait_projected();
    run.eval(&format!("moveTo('{}')", w2.config.api_addr()));
    run.wait_resumed("move", &before);
    run.publish("live3", 2);
    run.check("on the other instance");
    let opens = run.eval("opens");
    eprintln!("t95 opens {opens} manual {}", run.eval("manual"));
    other_origin_is_refused(&mut run.browser, &w2.config.api_addr());
}

/// A page from an origin not in `apps.allowed_origins`, with the same cookie in the
/// browser: its WebSocket upgrade is refused (403, the browser reports 1006) and its
/// EventSource fails on CORS (readyState CLOSED, no message).
fn other_origin_is_refused(browser: &mut Browser, addr: &str) {
    let other = PageServer::start("<!doctype html><html><body>other</body></html>");
    let page = browser.open(&other.url("/"));
    let js = format!(
        "new Promise(r => {{ const w = new WebSocket('ws://{addr}/api/events/ws'); \
         w.onopen = () => r('open'); w.onclose = e => r('closed ' + e.code); }})"
    );
    let ws = browser.eval(&page, &js, WAIT);
    assert_eq!(
        ws,
        Ok(json!("closed 1006")),
        "WebSocket from {}",
        other.origin()
    );
    let js = format!(
        "new Promise(r => {{ const es = new EventSource('http://{addr}/api/events/stream?\
         channel=user:42', {{withCredentials: true}}); es.onmessage = () => r('message'); \
         es.addEventListener('resume', () => r('resume')); \
         es.onerror = () => r('error ' + es.readyState); }})"
    );
    let sse = browser.eval(&page, &js, WAIT);
    assert_eq!(
        sse,
        Ok(json!("error 2")),
        "EventSource from {}",
        other.origin()
    );
    browser.close(page);
}

impl Run<'_> {
    /// Waits for the first resume of every connection (nothing missed).
    fn wait_resumed_first(&mut self) {
        for (name, _, _) in CONNS {
            let cond = format!("resumes.{name}.length > 0");
            self.browser
                .wait_for(&self.page, &format!("{name} connected"), &cond, WAIT);
            let (_, r) = self.last_resume(name);
            assert_eq!(r["recovered"], json!(true), "{name}: {r}");
        }
    }
}
