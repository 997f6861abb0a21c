//! The raw loops: the least a consumer of a Redis Stream can do. Each connection loops
//! `XREADGROUP GROUP g c COUNT 512 BLOCK 1000 STREAMS key >`, then acknowledges what it read:
//! one XACK per entry sent as one pipeline (`--ack pipelined`, the default), one XACK naming
//! every id of the batch (`--ack batch`), or that one XACK sent in the same pipeline as the
//! next read (`--ack next`, the drain reference, `raw/next.rs`). Runs until SIGTERM; in
//! `--latency` mode it records, per entry, now minus the `sent_ns` in the event's data and
//! prints the figures.

use std::sync::{Arc, Mutex};

use fred::prelude::*;
use fred::types::streams::XID;

use crate::util::{Opts, find_sent_ns, latency_line, now_ns};

mod next;

pub fn main(opts: &Opts) -> Result<(), String> {
    let port = opts.num("port", 0)?;
    let stream = opts.str("stream")?.to_string();
    let group = opts.str("group")?.to_string();
    let conns = opts.num("conns", 1)?.max(1);
    let count = opts.num("count", 512)?;
    let batch_ack = match opts.str_or("ack", "pipelined") {
        "pipelined" => false,
        "batch" | "next" => true,
        other => return Err(format!("--ack: `{other}` is not pipelined|batch|next")),
    };
    // `next`: the batch's XACK goes in one pipeline with the next read (raw/next.rs).
    let with_next_read = opts.str_or("ack", "pipelined") == "next";
    let latency = opts.flag("latency");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(async move {
        let lat: Arc<Mutex<Vec<u64>>> = Arc::default();
        let mut tasks = Vec::new();
        for i in 0..conns {
            let config = Config::from_url(&format!("redis://127.0.0.1:{port}"))
                .map_err(|e| e.to_string())?;
            let client = Builder::from_config(config)
                .build()
                .map_err(|e| e.to_string())?;
            client.init().await.map_err(|e| e.to_string())?;
            let consumer = format!("raw-{}-{i}", std::process::id());
            let (stream, group, lat) = (stream.clone(), group.clone(), lat.clone());
            tasks.push(tokio::spawn(async move {
                let r = if with_next_read {
                    let lat = latency.then_some(&lat);
                    next::consume(&client, &stream, &group, &consumer, count, lat).await
                } else {
                    consume(
                        &client,
                        &stream,
                        &group,
                        &consumer,
                        count,
                        batch_ack,
                        latency.then_some(&lat),
                    )
                    .await
                };
                if let Err(e) = r {
                    eprintln!("raw consumer {consumer}: {e}");
                    std::process::exit(1);
                }
            }));
        }
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .map_err(|e| e.to_string())?;
        term.recv().await;
        if latency {
            let v = std::mem::take(&mut *lat.lock().map_err(|e| e.to_string())?);
            println!("{}", latency_line(v));
        }
        Ok::<(), String>(())
    })
}

async fn consume(
    client: &Client,
    stream: &str,
    group: &str,
    consumer: &str,
    count: u64,
    batch_ack: bool,
    lat: Option<&Arc<Mutex<Vec<u64>>>>,
) -> Result<(), fred::error::Error> {
    let mut ids: Vec<XID> = Vec::with_capacity(count as usize);
    let mut seen: Vec<u64> = Vec::new();
    loop {
        let reply: Value = client
            .xreadgroup(group, consumer, Some(count), Some(1000), false, stream, ">")
            .await?;
        ids.clear();
        for per_stream in reply.into_array() {
            let mut parts = per_stream.into_array().into_iter();
            let Some(entries) = parts.nth(1) else {
                continue;
            };
            for entry in entries.into_array() {
                let mut e = entry.into_array().into_iter();
                let (Some(id), Some(fields)) = (e.next(), e.next()) else {
                    continue;
                };
                if lat.is_some() {
                    let fields = fields.into_array();
                    let data = fields
                        .chunks(2)
                        .find(|c| c[0].as_bytes() == Some(b"data"))
                        .and_then(|c| c.get(1).and_then(Value::as_bytes).and_then(find_sent_ns));
                    if let Some(sent) = data {
                        seen.push(now_ns().saturating_sub(sent));
                    }
                }
                if let Some(s) = id.as_bytes_str() {
                    ids.push(XID::from(s));
                }
            }
        }
        if ids.is_empty() {
            continue;
        }
        if batch_ack {
            let _: i64 = client.xack(stream, group, std::mem::take(&mut ids)).await?;
        } else {
            let pipe = client.pipeline();
            for id in ids.drain(..) {
                let _: () = pipe.xack(stream, group, id).await?;
            }
            let _: Vec<Value> = pipe.all().await?;
        }
        if let Some(lat) = lat
            && let Ok(mut v) = lat.lock()
        {
            v.append(&mut seen);
        }
    }
}
