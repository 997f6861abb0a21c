//! The hub: one pub/sub read loop per instance (on `events:<env>:push`) for all of its
//! clients, fanning each notification out to the local subscribers of its channel. Each
//! client has a bounded buffer; when it is full the client is cut (its connection ends with
//! its resume position) and the others go on. When the pub/sub connection drops (or the
//! loop falls behind), the hub subscribes again and then catches every local channel up from
//! its history before it reads on, so no message is skipped and order is kept; clients drop
//! what they already had by position.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use fred::prelude::*;
use serde::Deserialize;
use serde_json::value::RawValue;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::push::position::Position;
use crate::redis::push::{PushStore, Status};
use crate::redis::streams::text;

/// Notifications the pub/sub connection holds for the read loop (fred's default is 32).
const NOTIFY_ROOM: usize = 8192;

/// One message for local clients.
#[derive(Debug, Clone)]
pub struct Live {
    /// Its channel.
    pub channel: Arc<str>,
    /// Its position.
    pub position: Position,
    /// The message JSON.
    pub message: Arc<str>,
}

/// What the hub sends a client.
#[derive(Debug, Clone)]
pub enum Delivery {
    /// A message (shared by every local subscriber of its channel; boxed, so a client's
    /// buffer preallocates 8 bytes per slot, not the whole message head).
    Message(Arc<Live>),
    /// The channel's history was lost or cannot be caught up: the client must reconnect.
    Lost,
}

struct Client {
    channels: Vec<String>,
    tx: mpsc::Sender<Delivery>,
    cut: Arc<AtomicBool>,
}

#[derive(Default)]
struct State {
    clients: HashMap<u64, Client>,
    by_channel: HashMap<String, Vec<u64>>,
    last: HashMap<String, Position>,
}

/// The instance's hub.
pub struct Hub {
    state: Mutex<State>,
    next_id: AtomicU64,
    buffer: usize,
    /// Whether the pub/sub connection is subscribed.
    pub connected: AtomicBool,
    /// Called with each client cut for being slow.
    pub on_cut: Box<dyn Fn() + Send + Sync>,
}

/// A client's registration; unregisters when dropped.
pub struct Registration {
    hub: Arc<Hub>,
    id: u64,
    /// Deliveries for this client.
    pub rx: mpsc::Receiver<Delivery>,
    /// Set when the hub cut the client for being slow.
    pub cut: Arc<AtomicBool>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.hub.remove(self.id);
    }
}

impl Hub {
    /// A hub giving each client `buffer` messages of room.
    pub fn new(buffer: usize, on_cut: Box<dyn Fn() + Send + Sync>) -> Hub {
        Hub {
            state: Mutex::default(),
            next_id: AtomicU64::new(1),
            buffer,
            connected: AtomicBool::new(false),
            on_cut,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers a client for `channels`; what is published from now on is buffered for it.
    pub fn register(self: &Arc<Self>, channels: &[String]) -> Registration {
        let (tx, rx) = mpsc::channel(self.buffer);
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let cut = Arc::new(AtomicBool::new(false));
        let mut s = self.lock();
        for c in channels {
            s.by_channel.entry(c.clone()).or_default().push(id);
        }
        let client = Client {
            channels: channels.to_vec(),
            tx,
            cut: cut.clone(),
        };
        s.clients.insert(id, client);
        Registration {
            hub: self.clone(),
            id,
            rx,
            cut,
        }
    }

    /// Records that `channel` is known up to `position` (a client's resume), the point a
    /// catch-up starts from.
    pub fn note(&self, channel: &str, position: &Position) {
        let mut s = self.lock();
        if !s.by_channel.contains_key(channel) {
            return;
        }
        let newer = match s.last.get(channel) {
            Some(p) => position.after(p) != Some(false),
            None => true,
        };
        if newer {
            s.last.insert(channel.to_string(), position.clone());
        }
    }

    /// Local clients and the channels they subscribe to.
    pub fn counts(&self) -> (usize, usize) {
        let s = self.lock();
        (s.clients.len(), s.by_channel.len())
    }

    fn remove(&self, id: u64) {
        let mut s = self.lock();
        let Some(client) = s.clients.remove(&id) else {
            return;
        };
        for c in &client.channels {
            if let Some(ids) = s.by_channel.get_mut(c) {
                ids.retain(|i| *i != id);
                if ids.is_empty() {
                    s.by_channel.remove(c);
                    s.last.remove(c);
                }
            }
        }
    }

    /// Fans `d` out to the local subscribers of `channel`, cutting each whose buffer is full.
    fn deliver(&self, channel: &str, d: Delivery) {
        let mut s = self.lock();
        if let Delivery::Message(live) = &d {
            let newer = match s.last.get(channel) {
                Some(p) => live.position.after(p) != Some(false),
                None => true,
            };
            if newer && s.by_channel.contains_key(channel) {
                s.last.insert(channel.to_string(), live.position.clone());
            }
        }
        let ids = s.by_channel.get(channel).cloned().unwrap_or_default();
        let mut slow = Vec::new();
        for id in ids {
            if let Some(c) = s.clients.get(&id)
                && c.tx.try_send(d.clone()).is_err()
            {
                c.cut.store(true, Ordering::Relaxed);
                slow.push(id);
            }
        }
        drop(s);
        for id in slow {
            self.remove(id);
            (self.on_cut)();
        }
    }

    /// Handles one notification (`{"c": channel, "p": position, "m": message}`).
    fn on_notification(&self, text: &str) {
        #[derive(Deserialize)]
        struct Note<'a> {
            c: String,
            p: String,
            #[serde(borrow)]
            m: &'a RawValue,
        }
        let Ok(n) = serde_json::from_str::<Note<'_>>(text) else {
            return;
        };
        let Some(position) = Position::parse(&n.p) else {
            return;
        };
        let live = Live {
            channel: n.c.as_str().into(),
            position,
            message: n.m.get().into(),
        };
        self.deliver(&n.c, Delivery::Message(Arc::new(live)));
    }

    /// Catches every local channel up from its history after the last position the hub
    /// saw; a channel that cannot be caught up exactly has its clients told to reconnect.
    async fn catch_up(
        &self,
        store: &PushStore,
        cap: u64,
    ) -> Result<(), crate::redis::store::StoreError> {
        let wanted: Vec<(String, Option<Position>)> = {
            let s = self.lock();
            s.last
                .iter()
                .map(|(c, p)| (c.clone(), Some(p.clone())))
                .collect()
        };
        for chunk in wanted.chunks(100) {
            let resumed = store.resume(chunk, cap).await?;
            for ((channel, _), r) in chunk.iter().zip(resumed) {
                if r.status != Status::Recovered {
                    self.deliver(channel, Delivery::Lost);
                    continue;
                }
                for (position, message) in r.replay {
                    let live = Live {
                        channel: channel.as_str().into(),
                        position,
                        message: message.into(),
                    };
                    self.deliver(channel, Delivery::Message(Arc::new(live)));
                }
            }
        }
        Ok(())
    }

    /// The read loop: subscribes on a connection of its own, catches up after every
    /// (re)subscription, and fans out notifications until `stop`.
    pub async fn run(self: Arc<Self>, store: PushStore, cap: u64, stop: CancellationToken) {
        // Its own connection, with room for bursts: the projector appends a batch at a time,
        // so a few thousand notifications can arrive at once; past the room the hub would
        // fall behind and catch every channel up from Redis.
        let base = &store.store.cmd;
        let mut perf = base.perf_config();
        perf.broadcast_channel_capacity = NOTIFY_ROOM;
        let client = fred::clients::Client::new(
            base.client_config(),
            Some(perf),
            Some(base.connection_config().clone()),
            base.client_reconnect_policy(),
        );
        let mut rx = client.message_rx();
        let (again_tx, mut again) = mpsc::channel::<()>(1);
        let signal = again_tx.clone();
        client.on_reconnect(move |_| {
            let _ = signal.try_send(());
            async { Ok(()) }
        });
        let _ = client.init().await;
        let _ = again_tx.try_send(());
        let channel = store.keys.push_notify();
        loop {
            tokio::select! {
                biased;
                () = stop.cancelled() => break,
                Some(()) = again.recv() => {
                    self.connected.store(false, Ordering::Relaxed);
                    let ok = client.subscribe(channel.as_str()).await.is_ok()
                        && self.catch_up(&store, cap).await.is_ok();
                    if ok {
                        self.connected.store(true, Ordering::Relaxed);
                    } else {
                        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                        let _ = again_tx.try_send(());
                    }
                }
                m = rx.recv() => match m {
                    Ok(m) => {
                        if let Some(t) = text(&m.value) {
                            self.on_notification(&t);
                        }
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                        let _ = again_tx.try_send(());
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
                },
            }
        }
        self.connected.store(false, Ordering::Relaxed);
        let _ = client.quit().await;
    }
}
