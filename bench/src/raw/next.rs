//! The drain reference: one connection, `XREADGROUP COUNT 512`, and one XACK naming the whole
//! previous batch sent in the same fred pipeline as the next XREADGROUP (`raw --ack next`).
//! The read in the pipeline blocks (`BLOCK 1000`) like every other read: fred writes the XACK
//! and the XREADGROUP back to back on the one connection and then awaits both replies, so
//! Redis acknowledges batch N and serves batch N+1 in one round trip.

use std::sync::{Arc, Mutex};

use fred::prelude::*;
use fred::types::streams::XID;

use crate::util::{find_sent_ns, now_ns};

/// Runs the loop until the process is stopped; `count` entries per read. With `lat`, records
/// now minus the `sent_ns` in each entry's data when the entry is parsed.
pub async fn consume(
    client: &Client,
    stream: &str,
    group: &str,
    consumer: &str,
    count: u64,
    lat: Option<&Arc<Mutex<Vec<u64>>>>,
) -> Result<(), fred::error::Error> {
    let mut ids: Vec<XID> = Vec::with_capacity(count as usize);
    let mut seen: Vec<u64> = Vec::new();
    loop {
        let reply: Value = if ids.is_empty() {
            client
                .xreadgroup(group, consumer, Some(count), Some(1000), false, stream, ">")
                .await?
        } else {
            let pipe = client.pipeline();
            let _: () = pipe.xack(stream, group, std::mem::take(&mut ids)).await?;
            let _: () = pipe
                .xreadgroup(group, consumer, Some(count), Some(1000), false, stream, ">")
                .await?;
            let mut replies: Vec<Value> = pipe.all().await?;
            replies.pop().unwrap_or(Value::Null)
        };
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
                    let sent = fields
                        .chunks(2)
                        .find(|c| c[0].as_bytes() == Some(b"data"))
                        .and_then(|c| c.get(1).and_then(Value::as_bytes).and_then(find_sent_ns));
                    if let Some(sent) = sent {
                        seen.push(now_ns().saturating_sub(sent));
                    }
                }
                if let Some(s) = id.as_bytes_str() {
                    ids.push(XID::from(s));
                }
            }
        }
        if let Some(lat) = lat
            && !seen.is_empty()
            && let Ok(mut v) = lat.lock()
        {
            v.append(&mut seen);
        }
    }
}
