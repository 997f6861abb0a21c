//! Push to apps on a Redis Cluster (README "Redis Cluster", "Push to apps"): a connection
//! whose channels' histories live on different masters gets live messages, and after a
//! disconnect resumes with exactly the missed messages, in order per channel, over SSE and
//! WebSocket (one resume script per slot group).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use futures::SinkExt;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use crate::push_resume::connect;
use crate::push_util::{Ev, Ws, ws_next, ws_subscribe};
use crate::util::cluster::Cluster;
use crate::util::{Route, WorkerConfig, WorkerProcess, wait_until};

const WAIT: Duration = Duration::from_secs(10);

/// The history stream of `channel`.
fn history(env: &str, channel: &str) -> String {
    format!("events:{env}:push:{{{channel}}}")
}

/// Three `user:<n>` channels whose histories are on three different masters.
fn channels_on_every_master(c: &Cluster, env: &str) -> Vec<String> {
    let (mut out, mut ports) = (Vec::new(), BTreeSet::new());
    for n in 0..200 {
        let channel = format!("user:{n}");
        if ports.insert(c.port_of(&history(env, &channel))) {
            out.push(channel);
        }
        if out.len() == c.masters {
            break;
        }
    }
    assert_eq!(ports.len(), 3, "channels {out:?} do not cover every master");
    out
}

/// Publishes `booking.created` event `id` for the user of `channel` on the type stream's
/// master.
fn publish(c: &Cluster, env: &str, channel: &str, id: &str) {
    let user = channel.trim_start_matches("user:");
    let data = format!(r#"{{"user":"{user}","n":"{id}"}}"#);
    c.xadd(
        &format!("events:{env}:booking.created"),
        &[("id", id), ("type", "booking.created"), ("data", &data)],
    );
}

/// Publishes `<letter><i>` for `i` in `range` on each channel (letters a, b, c by channel)
/// and waits until every history holds `upto` messages.
fn publish_round(c: &Cluster, env: &str, chans: &[String], range: std::ops::RangeInclusive<u32>) {
    let upto = *range.end() as i64;
    for i in range {
        for (k, ch) in chans.iter().enumerate() {
            publish(c, env, ch, &format!("{}{i}", letter(k)));
        }
    }
    for ch in chans {
        let key = history(env, ch);
        wait_until(&format!("{key} holds {upto}"), WAIT, || {
            c.xlen(&key) == upto
        });
    }
}

fn letter(k: usize) -> char {
    (b'a' + k as u8) as char
}

/// The expected event ids per channel: `<letter><i>` for `i` in `range`.
fn expected(
    chans: &[String],
    range: std::ops::RangeInclusive<u32>,
) -> BTreeMap<String, Vec<String>> {
    chans
        .iter()
        .enumerate()
        .map(|(k, ch)| {
            let ids = range.clone().map(|i| format!("{}{i}", letter(k))).collect();
            (ch.clone(), ids)
        })
        .collect()
}

/// Groups `(channel, event id)` by channel, in arrival order.
fn per_channel(got: impl IntoIterator<Item = (String, String)>) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (ch, id) in got {
        out.entry(ch).or_default().push(id);
    }
    out
}

/// The channel and event id of an SSE message.
fn sse_pair(e: &Ev) -> (String, String) {
    let j = e.json();
    (j["channel"].as_str().unwrap().to_string(), e.event_id())
}

/// The `channels` part of a resume reply where every channel missed `missed`.
fn resumed(chans: &[String], missed: u64) -> Value {
    let per: serde_json::Map<String, Value> = chans
        .iter()
        .map(|c| (c.clone(), json!({"recovered": true, "missed": missed})))
        .collect();
    Value::Object(per)
}

/// `n` WebSocket messages as (channel, event id), and the last frame's `id`.
async fn ws_messages(ws: &mut Ws, n: usize) -> (Vec<(String, String)>, String) {
    let (mut got, mut last) = (Vec::new(), String::new());
    while got.len() < n {
        let m = ws_next(ws).await;
        if m["type"] == "ping" {
            continue;
        }
        assert_eq!(m["type"], "message", "{m}");
        let ch = m["channel"].as_str().unwrap().to_string();
        got.push((ch, m["event"]["id"].as_str().unwrap().to_string()));
        last = m["id"].as_str().unwrap().to_string();
    }
    (got, last)
}

/// Three channels on three masters: SSE live, disconnect, 3 missed per channel, resume with
/// `Last-Event-ID`: exactly the 9 missed (in order per channel), then live; the same over
/// WebSocket with `since`. Before the per-slot resume the connection failed: the one resume
/// script touched keys of three slots (`CROSSSLOT`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_push_resumes_channels_on_three_masters_over_sse_and_websocket() {
    let c = Cluster::start(3);
    let env = "cpush";
    let chans = channels_on_every_master(&c, env);
    let refs: Vec<&str> = chans.iter().map(String::as_str).collect();
    let mut cfg = WorkerConfig::new(env, &c.url()).route(Route::blackhole(&["booking.*"]));
    cfg.extra = "[push]\nheartbeat = \"1s\"\n[[push.channels]]\ntypes = [\"booking.*\"]\n\
                 channel = \"user:{data.user}\"\n"
        .into();
    let mut w = WorkerProcess::start("w1", cfg);
    w.wait_ready(Duration::from_secs(20));
    let addr = w.config.api_addr();

    // SSE: live, then a resume after 3 missed messages per channel.
    let mut sse = connect(&addr, &refs, None).await;
    let first = sse.next(WAIT).await.expect("resume event");
    assert_eq!(
        first.json()["channels"],
        resumed(&chans, 0),
        "{}",
        w.output()
    );
    publish_round(&c, env, &chans, 1..=1);
    let live = sse.messages(3, WAIT).await;
    assert_eq!(
        per_channel(live.iter().map(sse_pair)),
        expected(&chans, 1..=1)
    );
    let last = live[2].id.clone();
    drop(sse);
    publish_round(&c, env, &chans, 2..=4);
    let mut sse = connect(&addr, &refs, Some(&last)).await;
    let first = sse.next(WAIT).await.unwrap();
    assert_eq!(first.json()["channels"], resumed(&chans, 3));
    assert_eq!(first.json()["missed"], 9);
    let replay = sse.messages(9, WAIT).await;
    assert_eq!(
        per_channel(replay.iter().map(sse_pair)),
        expected(&chans, 2..=4)
    );
    publish_round(&c, env, &chans, 5..=5);
    let live = sse.messages(3, WAIT).await;
    assert_eq!(
        per_channel(live.iter().map(sse_pair)),
        expected(&chans, 5..=5)
    );
    let extra = sse.next(Duration::from_millis(300)).await;
    assert!(extra.is_none(), "nothing more: {extra:?}");
    let last = live[2].id.clone();
    drop(sse);

    // WebSocket: resume from the SSE id (positions of all three channels), 2 missed each.
    let (mut ws, first) = ws_subscribe(&addr, &chans, None).await;
    assert_eq!(first["channels"], resumed(&chans, 0), "{first}");
    drop(ws);
    publish_round(&c, env, &chans, 6..=7);
    let (ws2, first) = ws_subscribe(&addr, &chans, Some(&last)).await;
    ws = ws2;
    assert_eq!(first["type"], "resume");
    assert_eq!(first["channels"], resumed(&chans, 2), "{first}");
    let (got, last) = ws_messages(&mut ws, 6).await;
    assert_eq!(per_channel(got), expected(&chans, 6..=7));
    publish_round(&c, env, &chans, 8..=8);
    let (got, _) = ws_messages(&mut ws, 3).await;
    assert_eq!(per_channel(got), expected(&chans, 8..=8));
    drop(ws);
    let (_ws, first) = ws_subscribe(&addr, &chans, Some(&last)).await;
    assert_eq!(first["channels"], resumed(&chans, 1), "{first}");

    // A device acknowledges the three channels (one hash, one index), then resumes with it:
    // its report (one resume per slot group too) finds nothing trimmed.
    let ack = reqwest::Client::new()
        .post(format!("http://{addr}/api/events/stream/ack"))
        .json(&json!({"device": "phone-1", "id": last}))
        .send()
        .await
        .unwrap();
    assert_eq!(ack.status(), 200);
    let mut acked: Vec<String> =
        serde_json::from_value(ack.json::<Value>().await.unwrap()["acknowledged"].clone()).unwrap();
    acked.sort();
    let mut want = chans.clone();
    want.sort();
    assert_eq!(acked, want);
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/api/events/ws"))
        .await
        .unwrap();
    let sub = json!({"type": "subscribe", "channels": chans, "since": last, "device": "phone-1"});
    ws.send(Message::text(sub.to_string())).await.unwrap();
    let first = ws_next(&mut ws).await;
    assert_eq!(
        first["device"],
        json!({"id": "phone-1", "trimmed": []}),
        "{first}"
    );
    assert_eq!(first["channels"], resumed(&chans, 1), "{first}");
    assert!(!w.output().contains("CROSSSLOT"), "{}", w.output());
}
