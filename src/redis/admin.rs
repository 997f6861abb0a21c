//! Store operations of the operator surface: ranges over streams, history appends, coordination notices and the backlog figures read at scrape time.

use fred::prelude::*;
use fred::types::Value;
use fred::types::scripts::Script;

use crate::redis::store::{Entry, RedisErrorKind, Store, StoreError, parse_entries, text};

const APPEND_HISTORY: &str = include_str!("scripts/append_history.lua");

/// Backlog figures of one group on one stream (XINFO GROUPS).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GroupInfo {
    /// Entries not yet delivered to the group (`lag`); `None` when Redis cannot tell.
    pub lag: Option<u64>,
    /// Delivered, not acknowledged (`pel-count`).
    pub pending: u64,
    /// Id of the last entry delivered to the group.
    pub last_delivered_id: String,
    /// Entries delivered to the group so far, by every consumer (`entries-read`; `None`
    /// when Redis cannot tell).
    pub entries_read: Option<u64>,
}

impl Store {
    /// XREVRANGE `stream` from `end` (inclusive, `+` for newest) down to `start`, at most
    /// `count` entries, newest first.
    ///
    /// # Errors
    /// Redis errors.
    pub async fn xrevrange(
        &self,
        stream: &str,
        end: &str,
        start: &str,
        count: usize,
    ) -> Result<Vec<Entry>, StoreError> {
        let args: Vec<Value> = vec![
            stream.into(),
            end.into(),
            start.into(),
            "COUNT".into(),
            (count as i64).into(),
        ];
        Ok(parse_entries(
            &stream.into(),
            self.call("XREVRANGE", args).await?,
        ))
    }

    /// XRANGE `stream` from `start` to `end`, at most `count` entries, oldest first.
    ///
    /// # Errors
    /// Redis errors.
    pub async fn xrange(
        &self,
        stream: &str,
        start: &str,
        end: &str,
        count: usize,
    ) -> Result<Vec<Entry>, StoreError> {
        let args: Vec<Value> = vec![
            stream.into(),
            start.into(),
            end.into(),
            "COUNT".into(),
            (count as i64).into(),
        ];
        Ok(parse_entries(
            &stream.into(),
            self.call("XRANGE", args).await?,
        ))
    }

    /// XLEN.
    ///
    /// # Errors
    /// Redis errors.
    pub async fn xlen(&self, stream: &str) -> Result<u64, StoreError> {
        Ok(self
            .call("XLEN", vec![stream.into()])
            .await?
            .as_u64()
            .unwrap_or(0))
    }

    /// ZCARD.
    ///
    /// # Errors
    /// Redis errors.
    pub async fn zcard(&self, key: &str) -> Result<u64, StoreError> {
        Ok(self
            .call("ZCARD", vec![key.into()])
            .await?
            .as_u64()
            .unwrap_or(0))
    }

    /// XTRIM with `strategy` (`MAXLEN` or `MINID`) and `threshold`, exact (`=`) so every
    /// removed entry is counted; returns how many were removed.
    ///
    /// # Errors
    /// Redis errors.
    pub async fn xtrim(
        &self,
        stream: &str,
        strategy: &str,
        threshold: &str,
        approximate: bool,
    ) -> Result<u64, StoreError> {
        let args: Vec<Value> = vec![
            stream.into(),
            strategy.to_string().into(),
            if approximate { "~" } else { "=" }.into(),
            threshold.to_string().into(),
        ];
        Ok(self.call("XTRIM", args).await?.as_u64().unwrap_or(0))
    }

    /// `XTRIM stream MINID ~ min_id LIMIT limit`: removes whole stream nodes whose entries
    /// are all below `min_id`, at most `limit` entries (Redis's own default limit for `~` is
    /// 100 nodes, 10,000 entries); returns how many were removed.
    ///
    /// # Errors
    /// Redis errors.
    pub async fn xtrim_minid_limited(
        &self,
        stream: &str,
        min_id: &str,
        limit: u64,
    ) -> Result<u64, StoreError> {
        let args: Vec<Value> = vec![
            stream.into(),
            "MINID".into(),
            "~".into(),
            min_id.to_string().into(),
            "LIMIT".into(),
            (limit as i64).into(),
        ];
        Ok(self.call("XTRIM", args).await?.as_u64().unwrap_or(0))
    }

    /// XINFO GROUPS of `stream`, for `group`. `None` when the stream or group is missing.
    ///
    /// # Errors
    /// Redis errors other than a missing key.
    pub async fn group_info(
        &self,
        stream: &str,
        group: &str,
    ) -> Result<Option<GroupInfo>, StoreError> {
        Ok(self
            .groups(stream)
            .await?
            .into_iter()
            .find(|(n, _)| n == group)
            .map(|(_, i)| i))
    }

    /// Every group of `stream` with its figures: `(name, info)`. Empty when the key is missing.
    ///
    /// # Errors
    /// Redis errors other than a missing key.
    pub async fn groups(&self, stream: &str) -> Result<Vec<(String, GroupInfo)>, StoreError> {
        let reply = match self
            .cmd
            .custom::<Value, _>(super::store::keyed("XINFO", stream), vec!["GROUPS", stream])
            .await
        {
            Ok(v) => v,
            Err(e) => match self.error(format!("XINFO GROUPS {stream}"), e) {
                e if e.kind == RedisErrorKind::NoSuchKey => return Ok(Vec::new()),
                e => return Err(e),
            },
        };
        let mut out = Vec::new();
        for g in reply.into_array() {
            let flat = g.into_array();
            let mut name = String::new();
            let mut info = GroupInfo::default();
            for pair in flat.chunks(2) {
                if pair.len() != 2 {
                    continue;
                }
                match text(&pair[0]).as_deref() {
                    Some("name") => name = text(&pair[1]).unwrap_or_default(),
                    Some("pending") => info.pending = pair[1].as_u64().unwrap_or(0),
                    Some("lag") => info.lag = pair[1].as_u64(),
                    Some("entries-read") => info.entries_read = pair[1].as_u64(),
                    Some("last-delivered-id") => {
                        info.last_delivered_id = text(&pair[1]).unwrap_or_default()
                    }
                    _ => {}
                }
            }
            out.push((name, info));
        }
        Ok(out)
    }

    /// Consumers of `group` on `stream`: `(name, pending, idle_ms)`.
    ///
    /// # Errors
    /// Redis errors.
    pub async fn consumers(
        &self,
        stream: &str,
        group: &str,
    ) -> Result<Vec<(String, u64, u64)>, StoreError> {
        let reply = self
            .cmd
            .custom::<Value, _>(
                super::store::keyed("XINFO", stream),
                vec!["CONSUMERS", stream, group],
            )
            .await
            .map_err(|e| self.error(format!("XINFO CONSUMERS {stream}"), e))?;
        let mut out = Vec::new();
        for c in reply.into_array() {
            let flat = c.into_array();
            let (mut name, mut pending, mut idle) = (String::new(), 0, 0);
            for pair in flat.chunks(2) {
                if pair.len() != 2 {
                    continue;
                }
                match text(&pair[0]).as_deref() {
                    Some("name") => name = text(&pair[1]).unwrap_or_default(),
                    Some("pending") => pending = pair[1].as_u64().unwrap_or(0),
                    Some("idle") => idle = pair[1].as_u64().unwrap_or(0),
                    _ => {}
                }
            }
            out.push((name, pending, idle));
        }
        Ok(out)
    }

    /// XGROUP DELCONSUMER; returns how many pending entries the consumer still had (callers
    /// only delete consumers with none: pending entries of a deleted consumer are orphaned).
    ///
    /// # Errors
    /// Redis errors.
    pub async fn delete_consumer(
        &self,
        stream: &str,
        group: &str,
        consumer: &str,
    ) -> Result<u64, StoreError> {
        let args: Vec<Value> = vec![
            "DELCONSUMER".into(),
            stream.into(),
            group.into(),
            consumer.into(),
        ];
        let reply: Value = self
            .cmd
            .custom(super::store::keyed("XGROUP", stream), args)
            .await
            .map_err(|e| self.error(format!("XGROUP DELCONSUMER {stream}"), e))?;
        Ok(reply.as_u64().unwrap_or(0))
    }

    /// The smallest pending entry id of `group` on `stream`, if any is pending.
    ///
    /// # Errors
    /// Redis errors.
    pub async fn oldest_pending(
        &self,
        stream: &str,
        group: &str,
    ) -> Result<Option<String>, StoreError> {
        let reply = self
            .call("XPENDING", vec![stream.into(), group.into()])
            .await?;
        Ok(reply.into_array().get(1).and_then(text))
    }

    /// Appends history records to `stream` with one script call, then trims it with
    /// `MAXLEN ~ max_len`; `packed` is a MessagePack array of records (see
    /// `history::append`).
    ///
    /// # Errors
    /// Redis errors.
    pub async fn append_history(
        &self,
        stream: &str,
        max_len: u64,
        packed: Vec<u8>,
    ) -> Result<(), StoreError> {
        let args: Vec<Value> = vec![(max_len as i64).into(), Value::Bytes(packed.into())];
        let _: Value = Script::from_lua(APPEND_HISTORY)
            .evalsha_with_reload(&self.cmd, vec![stream], args)
            .await
            .map_err(|e| self.error("append history", e))?;
        Ok(())
    }

    /// PUBLISH `message` on `channel`.
    ///
    /// # Errors
    /// Redis errors.
    pub async fn publish_notice(&self, channel: &str, message: &str) -> Result<(), StoreError> {
        let _: Value = self
            .cmd
            .publish(channel, message)
            .await
            .map_err(|e| self.error(format!("PUBLISH {channel}"), e))?;
        Ok(())
    }

    /// GET of a string key.
    ///
    /// # Errors
    /// Redis errors.
    pub async fn get_string(&self, key: &str) -> Result<Option<String>, StoreError> {
        Ok(text(&self.call("GET", vec![key.into()]).await?))
    }

    /// Keys matching `pattern` (SCAN, any type), at most `limit`.
    ///
    /// # Errors
    /// Redis errors.
    pub async fn scan_keys(&self, pattern: &str, limit: usize) -> Result<Vec<String>, StoreError> {
        self.scan(pattern, None, limit, &|_| true).await
    }
}
