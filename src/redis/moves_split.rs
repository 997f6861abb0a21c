//! The moves of `redis::moves` when source and destination are in different Redis Cluster
//! slots (README "Redis Cluster"): destination first, source second, each half one script
//! in one slot, idempotent through a guard in the destination's slot. A crash (or a refused
//! write) between the halves leaves the guard: the retried or reclaimed move finds it and
//! completes the source half without adding again; the only duplicate a crash can cause is
//! one more delivery of the entry (it stays pending and is reclaimed). Single-node stores
//! and same-slot moves never come here.

use fred::prelude::*;
use fred::types::Value;
use fred::types::scripts::Script;

use crate::redis::dlq::{SPLIT_DEST_STREAM, counts_key, replay_guard_key};
use crate::redis::error::{RedisErrorKind, StoreError};
use crate::redis::moves::{
    GUARD_TTL_MS, PendingSource, RetryMove, StreamMove, forward_guard_prefix, guard_key,
};
use crate::redis::store::Store;

const SPLIT_DEST_RETRY: &str = include_str!("scripts/split_dest_retry.lua");
const SPLIT_SOURCE_ACK: &str = include_str!("scripts/split_source_ack.lua");
const SPLIT_FORWARD_TAKE: &str = include_str!("scripts/split_forward_take.lua");
const SPLIT_FORWARD_DONE: &str = include_str!("scripts/split_forward_done.lua");

/// How long a forwarding claim holds a due retry (ms): a claim of an instance that crashed
/// before finishing expires after it and the member is forwarded again.
pub const FORWARD_CLAIM_MS: i64 = 10_000;

/// The claim-key prefix of forwards in progress: `<retry key>:forwarding:{<retry key>}:`.
fn claim_prefix(retry_key: &str) -> String {
    format!("{retry_key}:forwarding:{{{retry_key}}}:")
}

/// The fields a retry member (a JSON array of strings) forwards as; anything else is
/// forwarded as `retry_member = <text>`, as `scripts/forward_due.lua` does.
fn member_fields(member: &str) -> Vec<String> {
    if let Ok(list) = serde_json::from_str::<Vec<serde_json::Value>>(member)
        && list.len() >= 2
        && list.len() % 2 == 0
        && list.iter().all(serde_json::Value::is_string)
    {
        return list
            .into_iter()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect();
    }
    vec!["retry_member".into(), member.into()]
}

/// The `field value ...` arguments of `items`.
pub(super) fn values(items: &[(String, String)]) -> Vec<Value> {
    items
        .iter()
        .flat_map(|(k, v)| [Value::from(k.as_str()), Value::from(v.as_str())])
        .collect()
}

impl Store {
    async fn script(
        &self,
        lua: &'static str,
        keys: Vec<&str>,
        args: Vec<Value>,
        op: impl FnOnce() -> String,
    ) -> Result<Value, StoreError> {
        Script::from_lua(lua)
            .evalsha_with_reload(&self.cmd, keys, args)
            .await
            .map_err(|e| self.error(op(), e))
    }

    /// Whether the source entry is still pending on the move's consumer (XPENDING).
    async fn still_ours(&self, from: &PendingSource<'_>) -> Result<bool, StoreError> {
        let args: Vec<Value> = vec![
            from.stream.into(),
            from.group.into(),
            from.entry_id.into(),
            from.entry_id.into(),
            1.into(),
        ];
        let rows = self.call("XPENDING", args).await?.into_array();
        let owner = rows
            .into_iter()
            .next()
            .and_then(|r| r.into_array().into_iter().nth(1))
            .and_then(|c| crate::redis::store::text(&c));
        Ok(owner.as_deref() == Some(from.consumer))
    }

    /// The source half: XACK (and XDEL) if still ours, then the guard is deleted. Returns
    /// whether it acknowledged (false: another consumer claimed it; the guard stays so its
    /// move adds nothing).
    async fn ack_source(&self, from: &PendingSource<'_>, guard: &str) -> Result<bool, StoreError> {
        let args: Vec<Value> = vec![
            from.group.into(),
            from.entry_id.into(),
            from.consumer.into(),
            if from.delete { "1" } else { "0" }.into(),
        ];
        let acked = self
            .script(SPLIT_SOURCE_ACK, vec![from.stream], args, || {
                format!("acknowledge {} {}", from.stream, from.entry_id)
            })
            .await?;
        if acked.as_i64() != Some(1) {
            return Ok(false);
        }
        self.delete(guard).await?;
        Ok(true)
    }

    /// [`Store::move_to_stream`] across slots.
    pub(super) async fn move_to_stream_split(
        &self,
        m: &StreamMove<'_>,
    ) -> Result<Option<String>, StoreError> {
        let from = &m.from;
        if !self.still_ours(from).await? {
            return Ok(None);
        }
        let guard = guard_key(m.dest, from);
        let counts = counts_key(m.dest);
        let mut args: Vec<Value> = vec![GUARD_TTL_MS.into()];
        args.extend(values(m.fields));
        let keys = vec![m.dest, guard.as_str(), counts.as_str()];
        let id = self
            .script(SPLIT_DEST_STREAM, keys, args, || {
                format!("move {} {} -> {}", from.stream, from.entry_id, m.dest)
            })
            .await?;
        let id = id.as_str().map(|s| s.into_owned());
        self.wait_for_destination(&guard, GUARD_TTL_MS, || {
            format!(
                "the move of {} {} to {}",
                from.stream, from.entry_id, m.dest
            )
        })
        .await?;
        crate::crash_point::crash_point("move_split.between_halves");
        Ok(if self.ack_source(from, &guard).await? {
            id
        } else {
            None
        })
    }

    /// [`Store::move_to_retry`] across slots.
    pub(super) async fn move_to_retry_split(&self, m: &RetryMove<'_>) -> Result<bool, StoreError> {
        let from = &m.from;
        if !self.still_ours(from).await? {
            return Ok(false);
        }
        let guard = guard_key(m.retry_key, from);
        let args: Vec<Value> = vec![
            (m.delay_ms as i64).into(),
            m.member.into(),
            GUARD_TTL_MS.into(),
            (crate::model::time::now_ms() as i64).into(),
        ];
        let done = self
            .script(
                SPLIT_DEST_RETRY,
                vec![m.retry_key, guard.as_str()],
                args,
                || format!("retry {} {}", from.stream, from.entry_id),
            )
            .await?;
        if done.as_i64() == Some(2) {
            self.warn_time_refused();
        }
        self.wait_for_destination(&guard, GUARD_TTL_MS, || {
            format!(
                "the retry of {} {} in {}",
                from.stream, from.entry_id, m.retry_key
            )
        })
        .await?;
        self.ack_source(from, &guard).await
    }

    /// [`Store::forward_due`] / [`Store::forward_one`] across slots: claim due members in
    /// the retry set's slot, XADD them to the redeliver stream (one pipeline), then remove them.
    pub(super) async fn forward_split(
        &self,
        retry_key: &str,
        redeliver_key: &str,
        limit: i64,
        one: Option<(u64, &str)>,
        op: &str,
    ) -> Result<u64, StoreError> {
        let (guards, claims) = (forward_guard_prefix(retry_key), claim_prefix(retry_key));
        let now = crate::model::time::now_ms() as i64;
        let mut args: Vec<Value> = vec![
            limit.into(),
            GUARD_TTL_MS.into(),
            now.into(),
            FORWARD_CLAIM_MS.into(),
        ];
        if let Some((due_ms, sha1)) = one {
            args.push(due_ms.to_string().into());
            args.push(sha1.into());
        }
        let keys = vec![retry_key, guards.as_str(), claims.as_str()];
        let name = || format!("{op} {retry_key}");
        let taken = self
            .script(SPLIT_FORWARD_TAKE, keys.clone(), args, name)
            .await?
            .into_array();
        if taken.first().and_then(Value::as_i64) == Some(1) {
            self.warn_time_refused();
        }
        let pairs: Vec<(String, String)> = taken[1.min(taken.len())..]
            .chunks(2)
            .filter_map(|c| {
                let m = crate::redis::store::text(c.first()?)?;
                Some((m, crate::redis::store::text(c.get(1)?)?))
            })
            .collect();
        if pairs.is_empty() {
            return Ok(0);
        }
        // The members added are removed even when another XADD of the batch failed, so only
        // the failed ones (still claimed) wait for their claims to expire.
        let client = self.waited_client();
        let results = self.xadd_members(&client, redeliver_key, &pairs).await;
        let mut added: Vec<(String, String)> = Vec::with_capacity(pairs.len());
        let mut failed = None;
        for (pair, r) in pairs.into_iter().zip(results) {
            match r {
                Ok(()) => added.push(pair),
                Err(e) => failed = failed.or(Some(e)),
            }
        }
        if !added.is_empty() {
            // Waited (`[redis] wait_replicas`): members whose entries no replica has yet stay
            // claimed, so they are forwarded again after the claim (a duplicate, not a loss).
            let r = self.wait_on(&client, redeliver_key).await;
            let n = added.len();
            let what = || format!("the forward of {n} due retries to {redeliver_key}");
            let kept = "the due retries stay claimed and are forwarded again after the claim \
                        expires (a duplicate at worst)";
            r.and_then(|r| self.check_destination(r, what, kept))?;
        }
        let mut done: Vec<Value> = vec![GUARD_TTL_MS.into()];
        done.extend(values(&added));
        if !added.is_empty() {
            self.script(SPLIT_FORWARD_DONE, keys, done, name).await?;
        }
        match failed {
            Some(e) => Err(e),
            None => Ok(added.len() as u64),
        }
    }

    /// One XADD to `redeliver_key` per claimed member, in their order, sent as one pipeline
    /// on `client` (the waited connection when `[redis] wait_replicas` > 0; one round trip for
    /// the batch, to the stream's master). One result per member; when
    /// the pipeline as a whole fails (a cut connection), every member counts as failed (its
    /// claim expires and it is forwarded again: at most one duplicate).
    async fn xadd_members(
        &self,
        client: &fred::clients::Client,
        redeliver_key: &str,
        pairs: &[(String, String)],
    ) -> Vec<Result<(), StoreError>> {
        let op = || format!("XADD {redeliver_key}");
        let pipeline = client.pipeline();
        for (member, _) in pairs {
            let mut xadd: Vec<Value> = vec![redeliver_key.into(), "*".into()];
            xadd.extend(member_fields(member).into_iter().map(Value::from));
            let queued: Result<(), _> = pipeline
                .custom(crate::redis::store::cmd("XADD"), xadd)
                .await;
            if let Err(e) = queued {
                let e = self.error(op(), e);
                return vec![Err(e); pairs.len()];
            }
        }
        let results = pipeline.try_all::<Value>().await;
        if results.len() != pairs.len() {
            let e = match results.into_iter().find_map(Result::err) {
                Some(e) => self.error(op(), e),
                None => StoreError::new(op(), RedisErrorKind::Other, "pipeline reply cut short"),
            };
            return vec![Err(e); pairs.len()];
        }
        results
            .into_iter()
            .map(|r| r.map(|_| ()).map_err(|e| self.error(op(), e)))
            .collect()
    }

    /// [`Store::retry_to_dlq`] across slots: the member still in the set, then the DLQ entry
    /// (guarded, counted), then the ZREM, then the guard deleted.
    pub(super) async fn retry_to_dlq_split(
        &self,
        retry_key: &str,
        dlq: &str,
        member: &str,
        fields: &[(String, String)],
    ) -> Result<Option<String>, StoreError> {
        let score = self
            .call("ZSCORE", vec![retry_key.into(), member.into()])
            .await?;
        if score.is_null() {
            return Ok(None);
        }
        let guard = format!(
            "{}{}",
            super::moves::dead_letter_guard_prefix(dlq),
            fred::util::sha1_hash(member)
        );
        let counts = counts_key(dlq);
        let mut args: Vec<Value> = vec![GUARD_TTL_MS.into()];
        args.extend(values(fields));
        let keys = vec![dlq, guard.as_str(), counts.as_str()];
        let id = self
            .script(SPLIT_DEST_STREAM, keys, args, || {
                format!("dead-letter from {retry_key}")
            })
            .await?;
        self.wait_for_destination(&guard, GUARD_TTL_MS, || {
            format!("the dead-lettering of a retry of {retry_key} to {dlq}")
        })
        .await?;
        self.call("ZREM", vec![retry_key.into(), member.into()])
            .await?;
        self.delete(&guard).await?;
        Ok(id.as_str().map(|s| s.into_owned()))
    }

    /// [`Store::replay_entry`] across slots: the DLQ entry still there, then the XADD to
    /// `redeliver` (skipped when a guard holds an earlier one), then the DLQ entry deleted
    /// and uncounted (the purge script); a refused delete leaves the guard.
    pub(super) async fn replay_split(
        &self,
        dlq: &str,
        redeliver: &str,
        dlq_id: &str,
        fields: &[(String, String)],
    ) -> Result<Option<String>, StoreError> {
        let found = self
            .call("XRANGE", vec![dlq.into(), dlq_id.into(), dlq_id.into()])
            .await?;
        if found.into_array().is_empty() {
            return Ok(None);
        }
        let guard = replay_guard_key(dlq, dlq_id);
        let guarded = self.get_string(&guard).await?;
        let id = match guarded.clone() {
            Some(id) => id,
            None if self.waits_for_replicas() => {
                // Waited: a replay no replica has yet keeps its DLQ entry (replay it again).
                let client = self.waited_client();
                let id = self.xadd_on(&client, redeliver, fields).await?;
                let r = self.wait_on(&client, redeliver).await?;
                let what = || format!("the replay of {dlq} {dlq_id} to {redeliver}");
                let kept = "the DLQ entry is kept; replay it again (a duplicate at worst)";
                self.check_destination(r, what, kept)?;
                id
            }
            None => {
                let mut xadd: Vec<Value> = vec![redeliver.into(), "*".into()];
                xadd.extend(values(fields));
                let id = self.call("XADD", xadd).await?;
                crate::redis::store::text(&id).unwrap_or_default()
            }
        };
        if let Err(e) = self.dlq_purge(dlq, &[dlq_id.to_string()]).await {
            if guarded.is_none() {
                let ttl = Value::from(GUARD_TTL_MS);
                let set = vec![guard.as_str().into(), id.as_str().into(), "PX".into(), ttl];
                let _ = self.call("SET", set).await;
            }
            return Err(e);
        }
        if guarded.is_some() {
            self.delete(&guard).await?;
        }
        Ok(Some(id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_forward_as_their_fields_or_as_malformed() {
        assert_eq!(
            member_fields(r#"["id","a","type","t"]"#),
            ["id", "a", "type", "t"]
        );
        assert_eq!(member_fields("[1,2]"), ["retry_member", "[1,2]"]);
        assert_eq!(member_fields(r#"["x"]"#), ["retry_member", r#"["x"]"#]);
        assert_eq!(member_fields("nope"), ["retry_member", "nope"]);
    }
}
