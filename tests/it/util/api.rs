//! A small client for the daemon's HTTP API (real HTTP through `reqwest`, driven
//! from synchronous tests by a private current-thread runtime).

use std::time::Duration;

/// One HTTP answer.
#[derive(Debug, Clone)]
pub struct Resp {
    pub status: u16,
    /// Header names in lower case.
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Resp {
    /// The body as JSON (panics with the body when it is not JSON).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| {
            panic!(
                "HTTP {} body is not JSON ({e}): {:?}",
                self.status, self.body
            )
        })
    }

    /// The first value of a header.
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A client for `http://127.0.0.1:PORT`, with an optional bearer token that
/// [`Api::get`] and [`Api::post`] send.
pub struct Api {
    base: String,
    token: Option<String>,
    client: reqwest::Client,
    rt: tokio::runtime::Runtime,
}

impl Api {
    /// A client for the api address `127.0.0.1:PORT`.
    pub fn new(addr: &str, token: Option<&str>) -> Api {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio runtime for the API client");
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(2))
            .timeout(Duration::from_secs(60))
            .no_proxy()
            .build()
            .expect("reqwest client");
        Api {
            base: format!("http://{addr}"),
            token: token.map(str::to_string),
            client,
            rt,
        }
    }

    /// Any request: method, path (with query), headers as given (no token
    /// added), optional body. Panics when the server cannot be reached.
    pub fn send(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<Vec<u8>>,
    ) -> Resp {
        self.try_send(method, path, headers, body)
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
    }

    /// Like [`Api::send`]; `Err` when the server cannot be reached.
    pub fn try_send(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<Vec<u8>>,
    ) -> Result<Resp, String> {
        let url = format!("{}{path}", self.base);
        let method = reqwest::Method::from_bytes(method.as_bytes()).map_err(|e| e.to_string())?;
        let mut req = self.client.request(method, &url);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if let Some(b) = body {
            req = req.body(b);
        }
        self.rt.block_on(async move {
            let resp = req.send().await.map_err(|e| format!("{e:?}"))?;
            let status = resp.status().as_u16();
            let headers = resp
                .headers()
                .iter()
                .map(|(k, v)| {
                    (
                        k.as_str().to_ascii_lowercase(),
                        v.to_str().unwrap_or_default().to_string(),
                    )
                })
                .collect();
            let body = resp.text().await.map_err(|e| format!("{e:?}"))?;
            Ok(Resp {
                status,
                headers,
                body,
            })
        })
    }

    fn auth(&self) -> Option<String> {
        self.token.as_ref().map(|t| format!("Bearer {t}"))
    }

    /// GET with the token (if any).
    pub fn get(&self, path: &str) -> Resp {
        let auth = self.auth();
        let headers: Vec<(&str, &str)> = auth
            .as_deref()
            .map(|a| vec![("authorization", a)])
            .unwrap_or_default();
        self.send("GET", path, &headers, None)
    }

    /// POST a JSON body with the token (if any).
    pub fn post(&self, path: &str, body: &serde_json::Value) -> Resp {
        let auth = self.auth();
        let mut headers = vec![("content-type", "application/json")];
        if let Some(a) = auth.as_deref() {
            headers.push(("authorization", a));
        }
        self.send("POST", path, &headers, Some(body.to_string().into_bytes()))
    }
}

/// Percent-encodes everything but unreserved characters (for query values).
pub fn encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
