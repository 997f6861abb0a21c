//! `[push]`: real-time push to apps (README "Push to apps"): the channels consumed events are
//! projected onto, their history caps, and the listener apps reach.

use serde::Deserialize;

use super::parse::Checker;

/// `[push]` as the file holds it.
#[derive(Debug, Deserialize, Default)]
#[cfg_attr(test, derive(serde::Serialize))]
#[serde(deny_unknown_fields)]
pub(super) struct RawPush {}

/// `[push]`: channels, history caps and listener.
#[derive(Debug, Clone, Default)]
pub struct PushConfig {}

/// Validates `[push]`, naming each bad key (`push.history_max_len: ...`).
pub(super) fn push(_c: &mut Checker, _raw: &RawPush) -> PushConfig {
    PushConfig {}
}
