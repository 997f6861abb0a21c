//! Plain key commands: heartbeat keys, key types, SCAN, server settings.

use std::time::Duration;

use fred::prelude::*;
use fred::types::{ClusterHash, CustomCommand, Value};

use crate::redis::error::{RedisErrorKind, StoreError};
use crate::redis::store::Store;
use crate::redis::streams::text;

impl Store {
    /// Sets the heartbeat key with a TTL; out of memory (SET refused), extends the existing
    /// key's TTL with PEXPIRE instead.
    ///
    /// # Errors
    /// Redis errors.
    pub async fn set_heartbeat(
        &self,
        key: &str,
        value: &str,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        let args: Vec<Value> = vec![
            key.into(),
            value.into(),
            "PX".into(),
            (ttl.as_millis() as i64).into(),
        ];
        match self.call("SET", args).await {
            // Out of memory, SET is refused but PEXPIRE is not (it adds nothing): the key of
            // a live worker keeps living, so peers do not take its entries over.
            Err(e) if e.kind == RedisErrorKind::Oom => {
                let ttl = (ttl.as_millis() as i64).into();
                match self.call("PEXPIRE", vec![key.into(), ttl]).await {
                    Ok(Value::Integer(1)) => Ok(()),
                    _ => Err(e),
                }
            }
            other => other.map(|_| ()),
        }
    }

    /// Deletes a key this worker owns (its heartbeat on a clean stop).
    ///
    /// # Errors
    /// Redis errors.
    pub async fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.call("DEL", vec![key.into()]).await.map(|_| ())
    }

    /// The Redis type of `key` (`none` when absent).
    ///
    /// # Errors
    /// Redis errors.
    pub async fn key_type(&self, key: &str) -> Result<String, StoreError> {
        Ok(text(&self.call("TYPE", vec![key.into()]).await?).unwrap_or_else(|| "none".into()))
    }

    /// Whether `key` exists.
    ///
    /// # Errors
    /// Redis errors.
    pub async fn exists(&self, key: &str) -> Result<bool, StoreError> {
        Ok(self.call("EXISTS", vec![key.into()]).await?.as_u64() == Some(1))
    }

    /// Keys of type stream matching `pattern` (SCAN, never KEYS), at most `limit`.
    ///
    /// # Errors
    /// Redis errors.
    pub async fn scan_streams(
        &self,
        pattern: &str,
        limit: usize,
        keep: &(dyn Fn(&str) -> bool + Sync),
    ) -> Result<Vec<String>, StoreError> {
        self.scan(pattern, Some("stream"), limit, keep).await
    }

    /// Keys matching `pattern` (and of type `kind`, if given) for which `keep` holds,
    /// sorted, at most `limit` (keys `keep` refuses do not count towards it). On a cluster
    /// every master is scanned (the topology is read again for each scan, so a resharding
    /// or failover is followed).
    pub(crate) async fn scan(
        &self,
        pattern: &str,
        kind: Option<&str>,
        limit: usize,
        keep: &(dyn Fn(&str) -> bool + Sync),
    ) -> Result<Vec<String>, StoreError> {
        let mut out = Vec::new();
        match self.scan_targets().await? {
            None => {
                self.scan_node(None, pattern, kind, limit, keep, &mut out)
                    .await?
            }
            Some(slots) => {
                for slot in slots {
                    if out.len() >= limit {
                        break;
                    }
                    self.scan_node(Some(slot), pattern, kind, limit, keep, &mut out)
                        .await?;
                }
            }
        }
        out.sort();
        out.dedup();
        out.truncate(limit);
        Ok(out)
    }

    /// SCAN of one node into `out` (on a cluster the master of `slot`; `None`: the single
    /// node), until `out` holds `limit`.
    async fn scan_node(
        &self,
        slot: Option<u16>,
        pattern: &str,
        kind: Option<&str>,
        limit: usize,
        keep: &(dyn Fn(&str) -> bool + Sync),
        out: &mut Vec<String>,
    ) -> Result<(), StoreError> {
        let mut cursor = "0".to_string();
        for _ in 0..10_000 {
            let mut args: Vec<Value> = vec![
                cursor.as_str().into(),
                "MATCH".into(),
                pattern.into(),
                "COUNT".into(),
                1000.into(),
            ];
            if let Some(k) = kind {
                args.push("TYPE".into());
                args.push(k.into());
            }
            let hash = slot.map_or(ClusterHash::Random, ClusterHash::Custom);
            let command = CustomCommand::new("SCAN", hash, false);
            let reply: Value = self
                .cmd
                .custom(command, args)
                .await
                .map_err(|e| match slot {
                    Some(slot) => self.error(format!("SCAN on the master of slot {slot}"), e),
                    None => self.error("SCAN", e),
                })?;
            let mut parts = reply.into_array().into_iter();
            cursor = parts
                .next()
                .as_ref()
                .and_then(text)
                .unwrap_or_else(|| "0".into());
            out.extend(
                parts
                    .next()
                    .map(Value::into_array)
                    .unwrap_or_default()
                    .iter()
                    .filter_map(text)
                    .filter(|k| keep(k)),
            );
            if cursor == "0" || out.len() >= limit {
                break;
            }
        }
        Ok(())
    }
    /// The server's `maxmemory-policy`, or `None` when CONFIG is not allowed (managed Redis).
    pub async fn maxmemory_policy(&self) -> Option<String> {
        let reply = self
            .call("CONFIG", vec!["GET".into(), "maxmemory-policy".into()])
            .await
            .ok()?;
        reply.into_array().get(1).and_then(text)
    }
}
