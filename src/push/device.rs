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
