//! The Redis side of push: [`PushStore::append_many`] (one script per channel and batch:
//! dedup by event id, XADD with the caps, the epoch, the notifications), the
//! `push.max_channels` budget, and [`PushStore::resume`] (one script for every channel of a
//! connection; on a Redis Cluster one per slot group of its channels).

use fred::types::Value;
use fred::types::scripts::Script;

use crate::config::PushConfig;
use crate::model::keys::Keys;
use crate::push::position::{NO_EPOCH, Position};
use crate::redis::store::{Store, StoreError};
use crate::redis::streams::text;

const APPEND: &str = include_str!("scripts/push_append.lua");
const RESUME: &str = include_str!("scripts/push_resume.lua");

/// Push's view of Redis.
#[derive(Clone)]
pub struct PushStore {
    /// The worker's connections.
    pub store: Store,
    /// Key names.
    pub keys: Keys,
    append: Script,
    resume: Script,
    max_len: u64,
    max_age_ms: u64,
    max_channels: u64,
    pub(crate) device_ttl_ms: u64,
    pub(crate) max_devices: u64,
}

/// What an append did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Appended {
    /// False when the event id was in the channel already (nothing written).
    pub appended: bool,
    /// The entry's position (the channel's last one for a duplicate).
    pub position: Position,
}

/// Whether a channel's messages after a position can be replayed exactly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Yes: the replay is every message after the position.
    Recovered,
    /// Messages after the position were removed by the caps.
    Trimmed,
    /// The history was lost and recreated (or the position is unknown to it).
    HistoryLost,
    /// More messages than `push.replay_max`.
    OverCap,
}

impl Status {
    /// The `reason` word of a failed recovery (`None` when recovered).
    pub fn reason(self) -> Option<&'static str> {
        match self {
            Status::Recovered => None,
            Status::Trimmed => Some("trimmed"),
            Status::HistoryLost => Some("history_lost"),
            Status::OverCap => Some("over_cap"),
        }
    }
}

/// One channel's resume.
#[derive(Debug, Clone)]
pub struct Resumed {
    /// Whether the replay is exact.
    pub status: Status,
    /// The messages after the position, oldest first (empty unless recovered).
    pub replay: Vec<(Position, String)>,
    /// Where the connection goes on from: the last replayed message, else the channel's last.
    pub position: Position,
}

impl PushStore {
    /// Push on `store` for the env of `keys`, with the caps of `config`.
    pub fn new(store: Store, keys: Keys, config: &PushConfig) -> PushStore {
        PushStore {
            store,
            keys,
            append: Script::from_lua(APPEND),
            resume: Script::from_lua(RESUME),
            max_len: config.history_max_len,
            max_age_ms: config.history_max_age.as_millis() as u64,
            max_channels: config.max_channels,
            device_ttl_ms: config.device_ttl.as_millis() as u64,
            max_devices: config.max_devices,
        }
    }

    /// Appends `events` (event id, message JSON), in their order, to `channel` in one script
    /// call: each unless its id is there already. Does not touch the channel budget (see
    /// [`PushStore::keep_budget`]). One result per event.
    ///
    /// # Errors
    /// Redis errors; then the events from the failing one on were not appended (the earlier
    /// ones may have been: a retry deduplicates them).
    pub async fn append_many(
        &self,
        channel: &str,
        events: &[(&str, &str)],
    ) -> Result<Vec<Appended>, StoreError> {
        let k = &self.keys;
        let epoch = format!("{:08x}", rand::random::<u32>() | 0x1000_0000);
        let name = serde_json::to_string(channel).unwrap_or_default();
        let mut args: Vec<Value> = Vec::with_capacity(5 + events.len() * 2);
        args.push((self.max_len as i64).into());
        args.push((self.max_age_ms as i64).into());
        args.push(epoch.into());
        args.push(k.push_notify().into());
        args.push(name.into());
        for (id, message) in events {
            args.push((*id).into());
            args.push((*message).into());
        }
        let keys = vec![
            k.push_stream(channel),
            k.push_ids(channel),
            k.push_meta(channel),
        ];
        let reply: Value = self
            .append
            .evalsha_with_reload(&self.store.cmd, keys, args)
            .await
            .map_err(|e| self.store.error(format!("push append {channel}"), e))?;
        let mut parts = reply.into_array().into_iter();
        let epoch = parts.next().and_then(|v| text(&v)).unwrap_or_default();
        let flat: Vec<Value> = parts.collect();
        Ok(flat
            .chunks(2)
            .map(|pair| {
                let appended = pair.first().and_then(Value::as_i64) == Some(1);
                let sid = pair.get(1).and_then(text).unwrap_or_default();
                let position = Position::of(&epoch, &sid).unwrap_or(Position {
                    epoch: epoch.clone(),
                    ms: 0,
                    seq: 0,
                });
                Appended { appended, position }
            })
            .collect())
    }

    /// Records `channels` (just appended to) in the index with one ZADD; when new channels
    /// take the count over `push.max_channels`, deletes the histories of the least recently
    /// appended ones.
    ///
    /// # Errors
    /// Redis errors.
    pub async fn keep_budget(&self, channels: &[String]) -> Result<(), StoreError> {
        if channels.is_empty() {
            return Ok(());
        }
        let index = self.keys.push_index();
        let now = crate::model::time::now_ms() as i64;
        let mut args: Vec<Value> = Vec::with_capacity(1 + channels.len() * 2);
        args.push(index.as_str().into());
        for channel in channels {
            args.push(now.into());
            args.push(channel.as_str().into());
        }
        let added = self.store.call("ZADD", args).await?;
        if added.as_i64().unwrap_or(0) < 1 {
            return Ok(());
        }
        let count = self
            .store
            .call("ZCARD", vec![index.as_str().into()])
            .await?;
        let over = count.as_i64().unwrap_or(0) - self.max_channels as i64;
        if over <= 0 {
            return Ok(());
        }
        let popped = self
            .store
            .call("ZPOPMIN", vec![index.as_str().into(), over.into()])
            .await?;
        for (i, victim) in popped.into_array().iter().enumerate() {
            if i % 2 == 1 {
                continue;
            }
            let Some(victim) = text(victim) else { continue };
            let k = &self.keys;
            let keys = [
                k.push_stream(&victim),
                k.push_ids(&victim),
                k.push_meta(&victim),
            ];
            let args = keys.into_iter().map(Value::from).collect();
            self.store.call("DEL", args).await?;
            tracing::info!(channel = %victim, "push.max_channels reached: dropped the history of the least recently used channel");
        }
        Ok(())
    }

    /// Resumes `channels` (each with the client's position, if any), replaying at most `cap`
    /// messages per channel: one script call on a single node; on a Redis Cluster one call
    /// per slot group of the channels (a channel's keys share the hash tag `{<channel>}`),
    /// the calls sent concurrently. One result per channel, in the order of `channels`.
    ///
    /// # Errors
    /// Redis errors (any group's: the whole resume fails).
    pub async fn resume(
        &self,
        channels: &[(String, Option<Position>)],
        cap: u64,
    ) -> Result<Vec<Resumed>, StoreError> {
        let groups = self.slot_groups(channels);
        if groups.len() <= 1 {
            return self.resume_one_slot(channels, cap).await;
        }
        let calls = groups.iter().map(|idx| {
            let part: Vec<(String, Option<Position>)> =
                idx.iter().map(|&i| channels[i].clone()).collect();
            async move { self.resume_one_slot(&part, cap).await }
        });
        let mut out: Vec<Option<Resumed>> = vec![None; channels.len()];
        for (idx, done) in groups.iter().zip(futures::future::join_all(calls).await) {
            for (&i, r) in idx.iter().zip(done?) {
                out[i] = Some(r);
            }
        }
        out.into_iter().collect::<Option<Vec<_>>>().ok_or_else(|| {
            StoreError::new(
                "push resume",
                crate::redis::error::RedisErrorKind::Other,
                "a resume script answered fewer channels than asked",
            )
        })
    }

    /// The indexes of `channels` grouped by the hash slot of their keys (one group on a
    /// single node), each group in the order of `channels`.
    fn slot_groups(&self, channels: &[(String, Option<Position>)]) -> Vec<Vec<usize>> {
        if !self.store.is_cluster() {
            return vec![(0..channels.len()).collect()];
        }
        let mut groups: Vec<(u16, Vec<usize>)> = Vec::new();
        for (i, (c, _)) in channels.iter().enumerate() {
            let sl = crate::redis::cluster::slot(&self.keys.push_stream(c));
            match groups.iter_mut().find(|(g, _)| *g == sl) {
                Some((_, v)) => v.push(i),
                None => groups.push((sl, vec![i])),
            }
        }
        groups.into_iter().map(|(_, v)| v).collect()
    }

    /// [`PushStore::resume`] of channels whose keys are in one slot: one script call.
    async fn resume_one_slot(
        &self,
        channels: &[(String, Option<Position>)],
        cap: u64,
    ) -> Result<Vec<Resumed>, StoreError> {
        let k = &self.keys;
        let mut keys = Vec::with_capacity(channels.len() * 2);
        let mut args: Vec<Value> = vec![(cap as i64).into()];
        for (c, p) in channels {
            keys.push(k.push_stream(c));
            keys.push(k.push_meta(c));
            match p {
                Some(p) => {
                    args.push(p.epoch.as_str().into());
                    args.push(p.stream_id().into());
                }
                None => {
                    args.push("".into());
                    args.push("".into());
                }
            }
        }
        let reply: Value = self
            .resume
            .evalsha_with_reload(&self.store.cmd, keys, args)
            .await
            .map_err(|e| self.store.error("push resume", e))?;
        Ok(reply
            .into_array()
            .into_iter()
            .zip(channels)
            .map(|(r, (_, given))| parse_resumed(r, given.as_ref()))
            .collect())
    }
}

/// One channel's `{status, epoch, last, {id, message, ...}}`.
fn parse_resumed(reply: Value, given: Option<&Position>) -> Resumed {
    let mut parts = reply.into_array().into_iter();
    let status = match parts.next().and_then(|v| text(&v)).as_deref() {
        Some("ok") => Status::Recovered,
        Some("trimmed") => Status::Trimmed,
        Some("over_cap") => Status::OverCap,
        _ => Status::HistoryLost,
    };
    let epoch = parts.next().and_then(|v| text(&v)).unwrap_or_default();
    let last = parts.next().and_then(|v| text(&v)).unwrap_or_default();
    let flat = parts.next().map(Value::into_array).unwrap_or_default();
    let replay: Vec<(Position, String)> = flat
        .chunks(2)
        .filter_map(|c| Some((Position::of(&epoch, &text(&c[0])?)?, text(c.get(1)?)?)))
        .collect();
    let current = Position::of(&epoch, &last).unwrap_or(Position {
        epoch: NO_EPOCH.to_string(),
        ms: 0,
        seq: 0,
    });
    let position = match (status, replay.last(), given) {
        (Status::Recovered, Some((p, _)), _) => p.clone(),
        (Status::Recovered, None, Some(g)) if g.epoch != NO_EPOCH => g.clone(),
        _ => current,
    };
    Resumed {
        status,
        replay,
        position,
    }
}
