//! Counting the worker's top-level Redis commands with `MONITOR` (the reconnect storm's
//! commands per resume), each EVALSHA named by its script.

use std::sync::Arc;

use fred::prelude::*;

use crate::push::cmd;

/// Counts the top-level commands Redis runs (`MONITOR`; the commands scripts call, shown as
/// `[0 lua]`, are left out) of every client but `skip` (this process's own connection), by
/// name, EVALSHA by script name (`scripts`: sha -> name).
pub struct Monitor {
    pub counts: Arc<std::sync::Mutex<std::collections::BTreeMap<String, u64>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Monitor {
    pub async fn start(
        port: u16,
        skip: String,
        scripts: std::collections::BTreeMap<String, String>,
    ) -> Result<Monitor, String> {
        use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
        let mut tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .map_err(|e| format!("MONITOR connection: {e}"))?;
        tcp.write_all(b"MONITOR\r\n")
            .await
            .map_err(|e| e.to_string())?;
        let mut lines = BufReader::new(tcp).lines();
        let first = lines.next_line().await.map_err(|e| e.to_string())?;
        if first.as_deref() != Some("+OK") {
            return Err(format!("MONITOR answered {first:?}"));
        }
        let counts = Arc::new(std::sync::Mutex::new(std::collections::BTreeMap::new()));
        let c = counts.clone();
        let task = tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                // +1733361338.123456 [0 127.0.0.1:50012] "evalsha" "3f2a..." "2" ...
                let Some(open) = line.find('[') else { continue };
                let Some(close) = line[open..].find(']').map(|i| open + i) else {
                    continue;
                };
                let who = &line[open + 1..close];
                if who.ends_with(" lua") || who.ends_with(&skip) {
                    continue;
                }
                let mut words = line[close + 1..].split('"').skip(1).step_by(2);
                let name = words.next().unwrap_or("").to_lowercase();
                let key = if name == "evalsha" {
                    let sha = words.next().unwrap_or("");
                    format!("evalsha {}", scripts.get(sha).map_or(sha, String::as_str))
                } else {
                    name
                };
                *c.lock().unwrap().entry(key).or_insert(0) += 1;
            }
        });
        Ok(Monitor { counts, task })
    }

    /// Stops counting; returns the counts.
    pub fn stop(self) -> std::collections::BTreeMap<String, u64> {
        self.task.abort();
        std::mem::take(&mut *self.counts.lock().unwrap())
    }
}

/// `sha1 -> file name` of the `.lua` files under `dir` (the worker loads them as they are).
pub fn script_shas(dir: &str) -> std::collections::BTreeMap<String, String> {
    let mut out = std::collections::BTreeMap::new();
    add_shas(std::path::Path::new(dir), &mut out, 0);
    out
}

fn add_shas(
    dir: &std::path::Path,
    out: &mut std::collections::BTreeMap<String, String>,
    depth: u32,
) {
    use sha1::{Digest, Sha1};
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if depth < 4 && e.path().is_dir() {
            add_shas(&e.path(), out, depth + 1);
        } else if let (true, Ok(text)) = (name.ends_with(".lua"), std::fs::read(e.path())) {
            let sha: String = Sha1::digest(&text)
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            out.insert(sha, name);
        }
    }
}

/// This connection's `addr` (`CLIENT INFO`), to tell its commands from the worker's.
pub async fn own_addr(ctl: &Client) -> Result<String, String> {
    let v: Value = ctl
        .custom(cmd("CLIENT"), vec!["INFO"])
        .await
        .map_err(|e| format!("CLIENT INFO: {e}"))?;
    let text = v.as_str_lossy().map(|s| s.into_owned()).unwrap_or_default();
    text.split_whitespace()
        .find_map(|w| w.strip_prefix("addr="))
        .map(str::to_string)
        .ok_or_else(|| format!("CLIENT INFO without addr: {text}"))
}
