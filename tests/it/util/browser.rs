//! A real browser for tests: Debian's headless `chromium` driven over the DevTools protocol
//! (a WebSocket to the browser target, flat sessions per page), and [`PageServer`], a tiny
//! HTTP server on its own loopback origin serving a test page.
//!
//! Loopback only: the browser gets a dead proxy for every non-loopback host and a resolver
//! that resolves nothing, and its background services (updates, sync, metrics) are off. Each
//! [`Browser`] has its own temporary profile; every wait is bounded; the process is killed
//! on drop.
//!
//! ```ignore
//! let page_server = PageServer::start("<html>...</html>");
//! let mut browser = Browser::launch();
//! let page = browser.open(&page_server.url("/"));
//! let v = browser.eval(&page, "fetch('http://127.0.0.1:9/x').then(r => r.status)", T);
//! ```

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

/// Where Debian installs the browser (`scripts/ensure-deps.sh` installs `chromium`).
pub const CHROMIUM: &str = "/usr/bin/chromium";

/// Longest wait for the browser to start or a page to load.
pub const START_TIMEOUT: Duration = Duration::from_secs(15);

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A headless Chromium and its DevTools connection.
pub struct Browser {
    child: Child,
    _profile: tempfile::TempDir,
    rt: tokio::runtime::Runtime,
    ws: Ws,
    next_id: u64,
}

/// An open tab: its target and the DevTools session attached to it.
pub struct Page {
    target: String,
    session: String,
}

impl Browser {
    /// Starts Chromium headless with a fresh profile and connects to it. Panics with the
    /// reason when it cannot (not installed, no DevTools port within [`START_TIMEOUT`]).
    pub fn launch() -> Browser {
        assert!(
            Path::new(CHROMIUM).exists(),
            "{CHROMIUM} is missing: run scripts/ensure-deps.sh (installs Debian's chromium)"
        );
        let profile = tempfile::tempdir().expect("a temp profile dir");
        let child = Command::new(CHROMIUM)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--remote-debugging-address=127.0.0.1",
                "--remote-debugging-port=0",
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-extensions",
                "--disable-default-apps",
                "--disable-breakpad",
                "--disable-domain-reliability",
                "--metrics-recording-only",
                "--no-pings",
                "--proxy-server=http://127.0.0.1:9",
                "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE localhost, EXCLUDE 127.0.0.1",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {CHROMIUM}: {e}"));
        let port_file = profile.path().join("DevToolsActivePort");
        let deadline = Instant::now() + START_TIMEOUT;
        let endpoint = loop {
            if let Ok(text) = std::fs::read_to_string(&port_file)
                && let Some((port, path)) = text.split_once('\n')
                && path.trim().starts_with("/devtools/browser/")
            {
                break format!("ws://127.0.0.1:{}{}", port.trim(), path.trim());
            }
            assert!(
                Instant::now() < deadline,
                "chromium wrote no DevToolsActivePort within {START_TIMEOUT:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio runtime for the DevTools client");
        let ws = rt
            .block_on(async {
                tokio::time::timeout(
                    START_TIMEOUT,
                    tokio_tungstenite::connect_async(endpoint.as_str()),
                )
                .await
            })
            .expect("DevTools connect in time")
            .unwrap_or_else(|e| panic!("DevTools connect to {endpoint}: {e}"))
            .0;
        Browser {
            child,
            _profile: profile,
            rt,
            ws,
            next_id: 0,
        }
    }

    /// Sends one DevTools command (to `session`, or the browser) and returns its `result`;
    /// events in between are skipped. `Err` with the protocol's error or on timeout.
    pub fn call(
        &mut self,
        session: Option<&str>,
        method: &str,
        params: Value,
        timeout: Duration,
    ) -> Result<Value, String> {
        self.next_id += 1;
        let id = self.next_id;
        let mut msg = json!({"id": id, "method": method, "params": params});
        if let Some(s) = session {
            msg["sessionId"] = json!(s);
        }
        let ws = &mut self.ws;
        let exchange = async {
            ws.send(Message::text(msg.to_string()))
                .await
                .map_err(|e| format!("send {method}: {e}"))?;
            while let Some(frame) = ws.next().await {
                let frame = frame.map_err(|e| format!("read: {e}"))?;
                let Message::Text(text) = frame else { continue };
                let v: Value = serde_json::from_str(text.as_str()).map_err(|e| e.to_string())?;
                if v["id"] != json!(id) {
                    continue;
                }
                if let Some(err) = v.get("error") {
                    return Err(format!("{method}: {err}"));
                }
                return Ok(v["result"].clone());
            }
            Err("the DevTools connection closed".to_string())
        };
        self.rt
            .block_on(async { tokio::time::timeout(timeout, exchange).await })
            .unwrap_or_else(|_| Err(format!("{method}: no answer within {timeout:?}")))
    }

    /// Opens `url` in a new tab and waits (at most [`START_TIMEOUT`]) until it has loaded.
    pub fn open(&mut self, url: &str) -> Page {
        let t = START_TIMEOUT;
        let target = self
            .call(None, "Target.createTarget", json!({"url": url}), t)
            .expect("a new tab")["targetId"]
            .as_str()
            .expect("a target id")
            .to_string();
        let session = self
            .call(
                None,
                "Target.attachToTarget",
                json!({"targetId": target, "flatten": true}),
                t,
            )
            .expect("attached to the tab")["sessionId"]
            .as_str()
            .expect("a session id")
            .to_string();
        let page = Page { target, session };
        let deadline = Instant::now() + t;
        let loaded = "document.readyState === 'complete' ? location.href : ''";
        loop {
            let href = self.eval(&page, loaded, t);
            if href
                .as_ref()
                .is_ok_and(|h| h.as_str().is_some_and(|h| h.starts_with(url)))
            {
                return page;
            }
            assert!(
                Instant::now() < deadline,
                "{url} did not load within {t:?} (last: {href:?})"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Evaluates `js` in `page`, awaiting it when it is a promise, and returns its value
    /// (as JSON); `Err` with the exception's text when it throws or rejects, or on timeout.
    pub fn eval(&mut self, page: &Page, js: &str, timeout: Duration) -> Result<Value, String> {
        let params = json!({"expression": js, "awaitPromise": true, "returnByValue": true});
        let r = self.call(Some(&page.session), "Runtime.evaluate", params, timeout)?;
        if let Some(ex) = r.get("exceptionDetails") {
            let text = ex["exception"]["description"]
                .as_str()
                .or(ex["text"].as_str())
                .unwrap_or("an exception");
            return Err(text.to_string());
        }
        Ok(r["result"]["value"].clone())
    }

    /// Polls the JS expression `cond` in `page` every 50 ms until it is truthy and returns
    /// its value; panics naming `what` (and the last value or error) after `timeout`. For
    /// pages that collect what a native `EventSource` or `WebSocket` receives into a global
    /// (`window.got = []` ... `window.got.length >= 3 && window.got`).
    pub fn wait_for(&mut self, page: &Page, what: &str, cond: &str, timeout: Duration) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let v = self.eval(page, cond, timeout);
            if let Ok(v) = &v
                && !matches!(v, Value::Null | Value::Bool(false))
                && v != &json!(0)
                && v != &json!("")
            {
                return v.clone();
            }
            assert!(
                Instant::now() < deadline,
                "timed out after {timeout:?} waiting for {what} (last: {v:?})"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Saves a PNG screenshot of `page`'s viewport to `path` (DevTools
    /// `Page.captureScreenshot`), creating its folder.
    pub fn screenshot(&mut self, page: &Page, path: &Path) {
        let params = json!({"format": "png"});
        let r = self
            .call(
                Some(&page.session),
                "Page.captureScreenshot",
                params,
                START_TIMEOUT,
            )
            .unwrap_or_else(|e| panic!("screenshot {}: {e}", path.display()));
        let png = base64_decode(r["data"].as_str().unwrap_or_default());
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).expect("the screenshot folder");
        }
        std::fs::write(path, png).expect("the screenshot written");
    }

    /// Sets `page`'s viewport to `width` x `height` CSS pixels (DevTools
    /// `Emulation.setDeviceMetricsOverride`), e.g. a phone's 390 x 844.
    pub fn viewport(&mut self, page: &Page, width: u32, height: u32) {
        let params = json!({"width": width, "height": height, "deviceScaleFactor": 1, "mobile": width < 600});
        self.call(
            Some(&page.session),
            "Emulation.setDeviceMetricsOverride",
            params,
            START_TIMEOUT,
        )
        .expect("viewport set");
    }

    /// Closes `page`'s tab.
    pub fn close(&mut self, page: Page) {
        let _ = self.call(
            None,
            "Target.closeTarget",
            json!({"targetId": page.target}),
            Duration::from_secs(5),
        );
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A loopback HTTP/1.1 server that answers every GET with one HTML page (its own origin,
/// `http://127.0.0.1:PORT`); stops on drop.
pub struct PageServer {
    port: u16,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl PageServer {
    /// Serves `html` on a free loopback port.
    pub fn start(html: &str) -> PageServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("a loopback port");
        listener
            .set_nonblocking(true)
            .expect("non-blocking listener");
        let port = listener.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let html = html.to_string();
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => serve_one(stream, &html),
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        PageServer {
            port,
            stop,
            thread: Some(thread),
        }
    }

    /// `http://127.0.0.1:PORT`, the page's origin.
    pub fn origin(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The URL of `path` on this server.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.origin())
    }
}

impl Drop for PageServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Reads one request's header (bounded in size and time) and answers with `html`, closing
/// the connection.
fn serve_one(stream: TcpStream, html: &str) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let mut reader = BufReader::new(stream.try_clone().expect("clone").take(64 * 1024));
    let mut line = String::new();
    while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
        line.clear();
    }
    let (status, body) = if html.is_empty() {
        ("404 Not Found", "")
    } else {
        ("200 OK", html)
    };
    let mut stream = stream;
    let _ = write!(
        stream,
        "HTTP/1.1 {status}\r\ncontent-type: text/html; charset=utf-8\r\ncontent-length: {}\r\n\
         cache-control: no-store\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
}

/// Decodes standard base64 (DevTools binary answers); invalid characters are skipped.
fn base64_decode(text: &str) -> Vec<u8> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in text.bytes() {
        let Some(v) = ALPHABET.iter().position(|&a| a == c) else {
            continue;
        };
        acc = (acc << 6) | v as u32;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    out
}
