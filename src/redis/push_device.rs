//! Devices: a client may acknowledge the position it has processed
//! (`POST /api/events/stream/ack`); each device's acknowledged position per channel is kept in
//! `events:<env>:push:device:{<device>}` (a hash, at most [`MAX_DEVICE_CHANNELS`] channels,
//! expiring `push.device_ttl` after the device's last acknowledgement: Redis 7.0 has no
//! per-field expiry, so the whole hash expires), and a resume that names the device reports
//! which of its channels were trimmed past that position (or lost their history).

use std::sync::LazyLock;

use fred::types::Value;
use fred::types::scripts::Script;
use serde_json::json;

use crate::push::device::MAX_DEVICE_CHANNELS;
use crate::push::position::{Position, Positions};
use crate::redis::push::{PushStore, Status};
use crate::redis::store::StoreError;
use crate::redis::streams::text;

/// `scripts/push_device_ack.lua`: the device hash's part of an acknowledgement, one call.
static ACK: LazyLock<Script> =
    LazyLock::new(|| Script::from_lua(include_str!("scripts/push_device_ack.lua")));

/// `scripts/push_device_index.lua`: the device index's part of an acknowledgement, one call.
static INDEX: LazyLock<Script> =
    LazyLock::new(|| Script::from_lua(include_str!("scripts/push_device_index.lua")));

impl PushStore {
    /// Records `positions` as acknowledged by `device` and refreshes its expiry, in one
    /// script call. Returns `Ok(false)` (nothing written) when the device would then hold
    /// more than [`MAX_DEVICE_CHANNELS`] channels.
    ///
    /// # Errors
    /// Redis errors.
    pub async fn ack(&self, device: &str, positions: &Positions) -> Result<bool, StoreError> {
        let key = self.keys.push_device(device);
        let ttl = self.device_ttl_ms as i64;
        let mut args: Vec<Value> = vec![MAX_DEVICE_CHANNELS.into(), ttl.into()];
        for (c, p) in positions {
            args.push(c.as_str().into());
            args.push(p.to_string().into());
        }
        let kept: i64 = ACK
            .evalsha_with_reload(&self.store.cmd, vec![key.as_str()], args)
            .await
            .map_err(|e| self.store.error(format!("push device ack {key}"), e))?;
        Ok(kept == 1)
    }

    /// The positions `device` acknowledged.
    ///
    /// # Errors
    /// Redis errors.
    pub async fn device_positions(&self, device: &str) -> Result<Positions, StoreError> {
        let key = self.keys.push_device(device);
        let reply = self
            .store
            .call("HGETALL", vec![key.as_str().into()])
            .await?;
        let flat = reply.into_array();
        Ok(flat
            .chunks(2)
            .filter_map(|c| {
                let channel = text(&c[0])?;
                Some((channel, Position::parse(&text(c.get(1)?)?)?))
            })
            .collect())
    }

    /// The resume reply's `device` part: `{"id", "trimmed": [channels]}`, the device's
    /// channels whose messages after its acknowledged position are gone (trimmed, or the
    /// history lost). Two Redis commands (HGETALL, one resume script call).
    ///
    /// # Errors
    /// Redis errors.
    pub async fn device_report(&self, device: &str) -> Result<serde_json::Value, StoreError> {
        let acked = self.device_positions(device).await?;
        let asked: Vec<(String, Option<Position>)> =
            acked.into_iter().map(|(c, p)| (c, Some(p))).collect();
        let mut trimmed = Vec::new();
        if !asked.is_empty() {
            let resumed = self.resume(&asked, 0).await?;
            for ((channel, _), r) in asked.iter().zip(resumed) {
                if matches!(r.status, Status::Trimmed | Status::HistoryLost) {
                    trimmed.push(channel.clone());
                }
            }
        }
        Ok(json!({"id": device, "trimmed": trimmed}))
    }
}

/// Most devices one sampling pass looks at (the most recently acknowledging first).
pub const SAMPLED_DEVICES: i64 = 1000;

impl PushStore {
    /// Records that `device` acknowledged now, in `events:<env>:push:devices` (one script
    /// call, plus a DEL per dropped device), and drops
    /// devices silent for longer than `push.device_ttl` from it, and beyond
    /// `push.max_devices` drops the least recently acknowledging ones (index entry and
    /// positions).
    ///
    /// # Errors
    /// Redis errors.
    pub async fn index_device(&self, device: &str) -> Result<(), StoreError> {
        let index = self.keys.push_devices();
        let now = crate::model::time::now_ms() as i64;
        let silent_since = now - self.device_ttl_ms as i64;
        let args: Vec<Value> = vec![
            now.into(),
            device.into(),
            silent_since.into(),
            (self.max_devices as i64).into(),
        ];
        let popped: Value = INDEX
            .evalsha_with_reload(&self.store.cmd, vec![index.as_str()], args)
            .await
            .map_err(|e| self.store.error(format!("push device index {index}"), e))?;
        for device in popped.into_array().iter().step_by(2).filter_map(text) {
            let key = self.keys.push_device(&device);
            self.store.call("DEL", vec![key.into()]).await?;
        }
        Ok(())
    }

    /// One pass over the [`SAMPLED_DEVICES`] most recent devices: how many are behind (a
    /// channel has messages after their acknowledged position) and the age in seconds of the
    /// oldest message one of them has not acknowledged.
    ///
    /// # Errors
    /// Redis errors.
    pub async fn sample_devices(&self) -> Result<(i64, f64), StoreError> {
        let index = self.keys.push_devices();
        let args = vec![
            index.as_str().into(),
            0.into(),
            (SAMPLED_DEVICES - 1).into(),
        ];
        let devices = self.store.call("ZREVRANGE", args).await?.into_array();
        let now = crate::model::time::now_ms();
        let (mut behind, mut oldest) = (0, 0u64);
        for device in devices.iter().filter_map(text) {
            let mut is_behind = false;
            for (channel, acked) in self.device_positions(&device).await? {
                if let Some(first) = self.first_after(&channel, &acked).await? {
                    is_behind = true;
                    oldest = oldest.max(now.saturating_sub(first));
                }
            }
            behind += i64::from(is_behind);
        }
        Ok((behind, oldest as f64 / 1000.0))
    }

    /// The time (ms) of the oldest message of `channel` after `acked`, if any (a lost
    /// history counts from the acknowledged position itself).
    async fn first_after(
        &self,
        channel: &str,
        acked: &Position,
    ) -> Result<Option<u64>, StoreError> {
        let meta = self.keys.push_meta(channel);
        let args = vec![meta.as_str().into(), "epoch".into(), "last".into()];
        let m = self.store.call("HMGET", args).await?.into_array();
        let epoch = m.first().and_then(text).unwrap_or_default();
        let last = m
            .get(1)
            .and_then(text)
            .and_then(|l| Position::of(&epoch, &l));
        let Some(last) = last else { return Ok(None) };
        match last.after(acked) {
            Some(false) => return Ok(None),
            None => return Ok(Some(acked.ms)),
            Some(true) => {}
        }
        let stream = self.keys.push_stream(channel);
        let from = format!("({}", acked.stream_id());
        let args = vec![
            stream.as_str().into(),
            from.into(),
            "+".into(),
            "COUNT".into(),
            1.into(),
        ];
        let first = self.store.call("XRANGE", args).await?.into_array();
        let ms = first
            .first()
            .and_then(|e| e.clone().into_array().first().and_then(text))
            .and_then(|id| crate::model::time::entry_id_ms(&id));
        Ok(Some(ms.unwrap_or(last.ms)))
    }
}
