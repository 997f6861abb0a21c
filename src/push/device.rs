//! Devices: a client may acknowledge the position it has processed
//! (`POST /api/events/stream/ack`); each device's acknowledged position per channel is kept in
//! `events:<env>:push:device:{<device>}` (a hash, at most [`MAX_DEVICE_CHANNELS`] channels,
//! expiring `push.device_ttl` after the device's last acknowledgement: Redis 7.0 has no
//! per-field expiry, so the whole hash expires), and a resume that names the device reports
//! which of its channels were trimmed past that position (or lost their history).

use serde_json::{Value, json};

use crate::push::position::{Position, Positions};
use crate::push::store::{PushStore, Status};
use crate::redis::store::StoreError;
use crate::redis::streams::text;

/// Most channels one device keeps positions for.
pub const MAX_DEVICE_CHANNELS: i64 = 64;

/// Whether `device` is a valid device id: `[A-Za-z0-9_.-]{1,128}`.
pub fn is_valid_device(device: &str) -> bool {
    crate::model::keys::is_valid_name(device)
}

impl PushStore {
    /// Records `positions` as acknowledged by `device` and refreshes its expiry. Returns
    /// `Ok(false)` (nothing kept) when the device would hold more than
    /// [`MAX_DEVICE_CHANNELS`] channels.
    ///
    /// # Errors
    /// Redis errors.
    pub async fn ack(&self, device: &str, positions: &Positions) -> Result<bool, StoreError> {
        let key = self.keys.push_device(device);
        let mut args = vec![key.as_str().into()];
        for (c, p) in positions {
            args.push(c.as_str().into());
            args.push(p.to_string().into());
        }
        self.store.call("HSET", args).await?;
        let len = self.store.call("HLEN", vec![key.as_str().into()]).await?;
        if len.as_i64().unwrap_or(0) > MAX_DEVICE_CHANNELS {
            let mut args = vec![key.as_str().into()];
            args.extend(positions.keys().map(|c| c.as_str().into()));
            self.store.call("HDEL", args).await?;
            return Ok(false);
        }
        let ttl = self.device_ttl_ms as i64;
        self.store
            .call("PEXPIRE", vec![key.as_str().into(), ttl.into()])
            .await?;
        Ok(true)
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
    pub async fn device_report(&self, device: &str) -> Result<Value, StoreError> {
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
    /// Records that `device` acknowledged now, in `events:<env>:push:devices`, and drops
    /// devices silent for longer than `push.device_ttl` from it, and beyond
    /// `push.max_devices` drops the least recently acknowledging ones (index entry and
    /// positions).
    ///
    /// # Errors
    /// Redis errors.
    pub async fn index_device(&self, device: &str) -> Result<(), StoreError> {
        let index = self.keys.push_devices();
        let now = crate::model::time::now_ms() as i64;
        let args = vec![index.as_str().into(), now.into(), device.into()];
        self.store.call("ZADD", args).await?;
        let old = format!("({}", now - self.device_ttl_ms as i64);
        let args = vec![index.as_str().into(), "-inf".into(), old.into()];
        self.store.call("ZREMRANGEBYSCORE", args).await?;
        let count = self
            .store
            .call("ZCARD", vec![index.as_str().into()])
            .await?;
        let over = count.as_i64().unwrap_or(0) - self.max_devices as i64;
        if over > 0 {
            // The least recently acknowledging devices go, at most 100 per ack.
            let args = vec![index.as_str().into(), over.min(100).into()];
            let popped = self.store.call("ZPOPMIN", args).await?.into_array();
            for device in popped.iter().step_by(2).filter_map(text) {
                let key = self.keys.push_device(&device);
                self.store.call("DEL", vec![key.into()]).await?;
            }
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
