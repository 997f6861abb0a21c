//! One client connection, whatever its transport: register with the hub first (live
//! messages are buffered from then on), resume every channel in one script call (on a Redis
//! Cluster one per slot group of the channels), hand out the resume reply and the replay, then the buffered and later live messages whose position is
//! after the connection's (no gap, no duplicate).

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::http::StatusCode;
use serde_json::{Value, json};

use crate::http::api::ApiError;
use crate::push::hub::{Delivery, Live, Registration};
use crate::push::position::{Position, Positions};
use crate::push::rules::is_valid_channel;
use crate::push::service::PushService;
use crate::redis::push::Status;

/// Most channels one connection may subscribe to (they all travel in its SSE `id:`).
pub const MAX_CHANNELS_PER_CONNECTION: usize = 16;

/// What a connection sends next.
#[derive(Debug)]
pub enum Frame {
    /// A message of a channel, with the connection's positions after it.
    Message {
        /// The channel.
        channel: Arc<str>,
        /// Its position.
        position: Position,
        /// The message JSON.
        message: Arc<str>,
    },
    /// The connection ends: the client was too slow, a channel's history was lost, or the
    /// app token expired.
    End {
        /// `slow_client`, `history_lost` or `token_expired`.
        reason: &'static str,
    },
}

/// A connection's state.
pub struct Session {
    svc: Arc<PushService>,
    reg: Registration,
    /// The position of every channel, as of the last frame handed out.
    pub positions: Positions,
    replay: VecDeque<Frame>,
    transport: &'static str,
    /// When the app token expires: the connection ends then (`token_expired`).
    deadline: Option<tokio::time::Instant>,
}

impl Drop for Session {
    fn drop(&mut self) {
        let m = &self.svc.metrics;
        m.push_connections
            .with_label_values(&[&self.svc.env, self.transport])
            .dec();
        m.push_subscriptions
            .with_label_values(&[&self.svc.env])
            .sub(self.positions.len() as i64);
    }
}

/// Checks a requested channel list: 1..=16 valid names, no repeats.
///
/// # Errors
/// 400 naming the problem.
pub fn check_channels(channels: &[String]) -> Result<(), ApiError> {
    if channels.is_empty() {
        return Err(ApiError::bad("name at least one channel: ?channel=user:42"));
    }
    if channels.len() > MAX_CHANNELS_PER_CONNECTION {
        return Err(ApiError::bad(format!(
            "{} channels requested; at most {MAX_CHANNELS_PER_CONNECTION} per connection",
            channels.len()
        )));
    }
    for (i, c) in channels.iter().enumerate() {
        if !is_valid_channel(c) {
            return Err(ApiError::bad(format!(
                "channel `{c}` is not a valid name (1-200 characters, no spaces, braces or *)"
            )));
        }
        if channels[..i].contains(c) {
            return Err(ApiError::bad(format!("channel `{c}` is named twice")));
        }
    }
    Ok(())
}

impl Session {
    /// Opens a connection on `channels`, resuming from `since` where it names a channel.
    /// Returns the session and the resume reply (the first frame).
    ///
    /// # Errors
    /// 503 when push is not connected to Redis (or Redis fails).
    pub async fn open(
        svc: Arc<PushService>,
        channels: Vec<String>,
        since: Positions,
        device: Option<String>,
        transport: &'static str,
    ) -> Result<(Session, Value), ApiError> {
        if let Some(d) = &device
            && !crate::push::device::is_valid_device(d)
        {
            return Err(ApiError::bad(format!(
                "device `{d}` is not a valid id ([A-Za-z0-9_.-], 1-128 characters)"
            )));
        }
        let store = svc.connected_store()?;
        let reg = svc.hub.register(&channels);
        let asked: Vec<(String, Option<Position>)> = channels
            .iter()
            .map(|c| (c.clone(), since.get(c).cloned()))
            .collect();
        let resumed = store
            .resume(&asked, svc.config.replay_max)
            .await
            .map_err(|e| ApiError(StatusCode::SERVICE_UNAVAILABLE, format!("{e}; retry")))?;
        let (mut positions, mut replay) = (Positions::new(), VecDeque::new());
        let mut per_channel = serde_json::Map::new();
        let (mut all, mut missed, mut first_reason) = (true, 0usize, None);
        for ((channel, given), r) in asked.into_iter().zip(resumed) {
            svc.hub.note(&channel, &r.position);
            let entry = match r.status.reason() {
                None => json!({"recovered": true, "missed": r.replay.len()}),
                Some(reason) => {
                    all = false;
                    first_reason.get_or_insert(reason);
                    json!({"recovered": false, "reason": reason})
                }
            };
            count_resume(&svc, given.is_some(), r.status);
            missed += r.replay.len();
            let start = match (&given, r.status) {
                (Some(g), Status::Recovered) => g.clone(),
                _ => r.position.clone(),
            };
            let name: Arc<str> = channel.as_str().into();
            for (position, message) in r.replay {
                let message = message.into();
                replay.push_back(Frame::Message {
                    channel: name.clone(),
                    position,
                    message,
                });
            }
            per_channel.insert(channel.clone(), entry);
            positions.insert(channel, start);
        }
        let m = &svc.metrics;
        m.push_replayed_total
            .with_label_values(&[&svc.env])
            .inc_by(missed as u64);
        m.push_connections
            .with_label_values(&[&svc.env, transport])
            .inc();
        m.push_subscriptions
            .with_label_values(&[&svc.env])
            .add(positions.len() as i64);
        let mut reply = json!({"recovered": all, "missed": missed, "channels": per_channel});
        if let Some(reason) = first_reason {
            reply["reason"] = reason.into();
        }
        if let Some(d) = device {
            let report = store.device_report(&d).await;
            reply["device"] = report
                .map_err(|e| ApiError(StatusCode::SERVICE_UNAVAILABLE, format!("{e}; retry")))?;
        }
        let session = Session {
            svc,
            reg,
            positions,
            replay,
            transport,
            deadline: None,
        };
        Ok((session, reply))
    }

    /// Ends the connection with `token_expired` at `until` (an app token's expiry); `None`
    /// keeps it open.
    #[must_use]
    pub fn until(mut self, until: Option<std::time::SystemTime>) -> Session {
        self.deadline = until.map(|t| {
            let left = t
                .duration_since(std::time::SystemTime::now())
                .unwrap_or_default();
            tokio::time::Instant::now() + left
        });
        self
    }

    /// Whether the app token has expired.
    fn expired(&self) -> bool {
        self.deadline
            .is_some_and(|d| d <= tokio::time::Instant::now())
    }

    /// The next frame: the replay first, then live messages after the connection's position;
    /// `None` when the instance stops.
    pub async fn next(&mut self) -> Option<Frame> {
        if self.expired() {
            return Some(Frame::End {
                reason: "token_expired",
            });
        }
        if let Some(f) = self.replay.pop_front() {
            self.advance(&f);
            return Some(f);
        }
        loop {
            let deadline = self.deadline;
            let expiry = async move {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d).await,
                    None => std::future::pending().await,
                }
            };
            let d = tokio::select! {
                d = self.reg.rx.recv() => d,
                () = self.svc.stop.cancelled() => return None,
                () = expiry => return Some(Frame::End { reason: "token_expired" }),
            };
            let live = match d {
                Some(Delivery::Message(live)) => live,
                Some(Delivery::Lost) => {
                    return Some(Frame::End {
                        reason: "history_lost",
                    });
                }
                None if self.reg.cut.load(Ordering::Relaxed) => {
                    return Some(Frame::End {
                        reason: "slow_client",
                    });
                }
                None => return None,
            };
            let Live {
                channel,
                position,
                message,
            } = Arc::unwrap_or_clone(live);
            let Some(mine) = self.positions.get(channel.as_ref()) else {
                continue;
            };
            match position.after(mine) {
                Some(true) => {
                    let latency = crate::model::time::now_ms().saturating_sub(position.ms);
                    self.svc
                        .metrics
                        .push_delivery_latency_seconds
                        .with_label_values(&[&self.svc.env])
                        .observe(latency as f64 / 1000.0);
                    let f = Frame::Message {
                        channel,
                        position,
                        message,
                    };
                    self.advance(&f);
                    return Some(f);
                }
                Some(false) => continue,
                None => {
                    return Some(Frame::End {
                        reason: "history_lost",
                    });
                }
            }
        }
    }

    fn advance(&mut self, f: &Frame) {
        if let Frame::Message {
            channel, position, ..
        } = f
        {
            self.positions.insert(channel.to_string(), position.clone());
        }
    }
}

/// Counts one channel's resume by result and reason.
fn count_resume(svc: &PushService, had_position: bool, status: Status) {
    let (result, reason) = match (had_position, status.reason()) {
        (false, _) => ("fresh", "none"),
        (true, None) => ("recovered", "none"),
        (true, Some(r)) => ("failed", r),
    };
    svc.metrics
        .push_resumes_total
        .with_label_values(&[&svc.env, result, reason])
        .inc();
}
