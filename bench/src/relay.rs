//! The http reference: a raw HTTP relay (`ew-bench relay`), the least an HTTP-delivering
//! consumer of a Redis Stream can do. One thread (a `current_thread` tokio runtime); one fred
//! connection reads (`XREADGROUP COUNT <free slots> BLOCK 1000`, issued as soon as one of the
//! `--slots` (64) is free and no read is in flight), a second one acknowledges (one XACK naming
//! every entry completed since the previous XACK, sent as soon as the previous one answered; on
//! its own connection so that it never waits behind a blocked read). Each slot is one HTTP/1.1
//! keep-alive connection made with a bare hyper client (`hyper::client::conn::http1::handshake`)
//! to `127.0.0.1:--sink-port`, POSTing `/hook` with the body and headers event-worker's http
//! route sends (a CloudEvents structured JSON object, see [`cloudevent`]). A non-2xx answer
//! or a transport error stops the relay (the bench's sink always answers 200). Runs until
//! SIGTERM.

use std::future::Future;
use std::pin::Pin;

use bytes::Bytes;
use fred::prelude::*;
use fred::types::streams::XID;
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::{self, SendRequest};
use hyper::header::{ACCEPT, CONTENT_LENGTH, CONTENT_TYPE, HOST, USER_AGENT};
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;

use crate::util::Opts;

/// The `user-agent` event-worker's http client sends (its crate version).
const UA: &str = "event-worker/0.1.0";

type Sender = SendRequest<Full<Bytes>>;
type Boxed<T> = Pin<Box<dyn Future<Output = T>>>;

pub fn main(opts: &Opts) -> Result<(), String> {
    let port = opts.num("port", 0)?;
    let sink = opts.num("sink-port", 0)?;
    let stream = opts.str("stream")?.to_string();
    let group = opts.str("group")?.to_string();
    let slots = opts.num("slots", 64)?.max(1) as usize;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, run(port, sink as u16, stream, group, slots))
}

async fn redis(port: u64) -> Result<Client, String> {
    let config =
        Config::from_url(&format!("redis://127.0.0.1:{port}")).map_err(|e| e.to_string())?;
    let client = Builder::from_config(config)
        .build()
        .map_err(|e| e.to_string())?;
    client.init().await.map_err(|e| e.to_string())?;
    Ok(client)
}

async fn connect(sink: u16) -> Result<Sender, String> {
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", sink))
        .await
        .map_err(|e| format!("connect 127.0.0.1:{sink}: {e}"))?;
    let _ = tcp.set_nodelay(true);
    let (sender, conn) = http1::handshake(TokioIo::new(tcp))
        .await
        .map_err(|e| format!("handshake 127.0.0.1:{sink}: {e}"))?;
    tokio::task::spawn_local(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

/// Appends `s` as a JSON string (what serde_json writes for it).
fn json_str(out: &mut Vec<u8>, s: &[u8]) {
    out.push(b'"');
    for &c in s {
        match c {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            0x08 => out.extend_from_slice(b"\\b"),
            0x0c => out.extend_from_slice(b"\\f"),
            c if c < 0x20 => out.extend_from_slice(format!("\\u{c:04x}").as_bytes()),
            c => out.push(c),
        }
    }
    out.push(b'"');
}

/// The body event-worker's http route POSTs for an entry with fields `id`, `type`, `data`
/// (and no others, as in the bench): `specversion`, `id`, `type`, `source` (default
/// `event-worker`), `datacontenttype` (default `application/json`), `attempt` (0 on a first
/// delivery), then `data` as raw JSON; compact, in that order.
pub fn cloudevent(id: &[u8], typ: &[u8], data: &[u8]) -> Vec<u8> {
    let mut b = Vec::with_capacity(data.len() + 160);
    b.extend_from_slice(br#"{"specversion":"1.0","id":"#);
    json_str(&mut b, id);
    b.extend_from_slice(br#","type":"#);
    json_str(&mut b, typ);
    b.extend_from_slice(
        br#","source":"event-worker","datacontenttype":"application/json","attempt":0,"data":"#,
    );
    b.extend_from_slice(data);
    b.push(b'}');
    b
}

/// One POST on `sender`, its head as event-worker's http route sends it: the same headers in
/// the same order (checked against a capture of both); gives the connection back with the entry id once the answer's body
/// has been read.
async fn post(
    mut sender: Sender,
    host: String,
    id: XID,
    body: Vec<u8>,
) -> Result<(Sender, XID), String> {
    sender.ready().await.map_err(|e| format!("http: {e}"))?;
    let req = Request::builder()
        .method(Method::POST)
        .uri("/hook")
        .header(CONTENT_TYPE, "application/cloudevents+json")
        .header(ACCEPT, "*/*")
        .header(USER_AGENT, UA)
        .header(HOST, host)
        .header(CONTENT_LENGTH, body.len())
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| e.to_string())?;
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| format!("http: {e}"))?;
    let status = resp.status();
    let _ = resp.into_body().collect().await;
    if !status.is_success() {
        return Err(format!("http status {status}"));
    }
    Ok((sender, id))
}

/// (id, type, data) of each entry of an XREADGROUP reply.
fn entries(reply: Value) -> Vec<(XID, Bytes, Bytes, Bytes)> {
    let mut out = Vec::new();
    for per_stream in reply.into_array() {
        let Some(list) = per_stream.into_array().into_iter().nth(1) else {
            continue;
        };
        for entry in list.into_array() {
            let mut e = entry.into_array().into_iter();
            let (Some(xid), Some(fields)) = (e.next(), e.next()) else {
                continue;
            };
            let Some(xid) = xid.as_bytes_str() else {
                continue;
            };
            let fields = fields.into_array();
            let get = |name: &[u8]| {
                fields
                    .chunks(2)
                    .find(|c| c[0].as_bytes() == Some(name))
                    .and_then(|c| c.get(1))
                    .and_then(|v| v.as_bytes().map(Bytes::copy_from_slice))
                    .unwrap_or_default()
            };
            let (id, typ, data) = (get(b"id"), get(b"type"), get(b"data"));
            out.push((XID::from(xid), id, typ, data));
        }
    }
    out
}

async fn run(
    port: u64,
    sink: u16,
    stream: String,
    group: String,
    slots: usize,
) -> Result<(), String> {
    let reader = redis(port).await?;
    let acker = redis(port).await?;
    let consumer = format!("relay-{}", std::process::id());
    let host = format!("127.0.0.1:{sink}");
    let mut idle: Vec<Sender> = Vec::with_capacity(slots);
    for _ in 0..slots {
        idle.push(connect(sink).await?);
    }
    let mut inflight: FuturesUnordered<Boxed<Result<(Sender, XID), String>>> =
        FuturesUnordered::new();
    let mut read: Option<Boxed<Result<Value, fred::error::Error>>> = None;
    let mut ack: Option<Boxed<Result<i64, fred::error::Error>>> = None;
    let mut done: Vec<XID> = Vec::new();
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| e.to_string())?;
    loop {
        if read.is_none() && !idle.is_empty() {
            let (c, g, s, me, n) = (
                reader.clone(),
                group.clone(),
                stream.clone(),
                consumer.clone(),
                idle.len() as u64,
            );
            read = Some(Box::pin(async move {
                c.xreadgroup(g, me, Some(n), Some(1000), false, s, ">")
                    .await
            }));
        }
        if ack.is_none() && !done.is_empty() {
            let (c, g, s, ids) = (
                acker.clone(),
                group.clone(),
                stream.clone(),
                std::mem::take(&mut done),
            );
            ack = Some(Box::pin(async move { c.xack(s, g, ids).await }));
        }
        tokio::select! {
            r = async { read.as_mut().expect("read").await }, if read.is_some() => {
                read = None;
                let reply = r.map_err(|e| format!("XREADGROUP: {e}"))?;
                for (xid, id, typ, data) in entries(reply) {
                    let sender = idle.pop().ok_or("more entries than free slots")?;
                    let body = cloudevent(&id, &typ, &data);
                    inflight.push(Box::pin(post(sender, host.clone(), xid, body)));
                }
            }
            a = async { ack.as_mut().expect("ack").await }, if ack.is_some() => {
                ack = None;
                a.map_err(|e| format!("XACK: {e}"))?;
            }
            Some(c) = inflight.next(), if !inflight.is_empty() => {
                let (sender, xid) = c?;
                idle.push(sender);
                done.push(xid);
            }
            _ = term.recv() => return Ok(()),
        }
    }
}
