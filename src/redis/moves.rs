//! The Lua moves, each destination first and source second in one atomic script: an
//! entry to a stream (the DLQ), to the retry set, due retries forwarded to the redeliver
//! stream, and a migration body applied once.

use fred::prelude::*;
use fred::types::Value;

use crate::redis::error::StoreError;
use crate::redis::store::Store;

/// The pending entry a move takes away: it moves only while still pending on `consumer`.
#[derive(Debug, Clone, Copy)]
pub struct PendingSource<'a> {
    /// Stream the entry was read from.
    pub stream: &'a str,
    /// Consumer group.
    pub group: &'a str,
    /// Entry id.
    pub entry_id: &'a str,
    /// Consumer that must own the entry.
    pub consumer: &'a str,
    /// Also XDEL the entry (entries of the redeliver stream).
    pub delete: bool,
}

impl PendingSource<'_> {
    /// `ARGV[1..4]` of both move scripts.
    fn push_args(&self, args: &mut Vec<Value>) {
        args.push(self.group.into());
        args.push(self.entry_id.into());
        args.push(self.consumer.into());
        args.push(if self.delete { "1" } else { "0" }.into());
    }
}

/// A pending entry moved to a stream (the DLQ) as `fields`.
#[derive(Debug, Clone, Copy)]
pub struct StreamMove<'a> {
    /// Where the entry comes from.
    pub from: PendingSource<'a>,
    /// Destination stream.
    pub dest: &'a str,
    /// Fields of the new entry.
    pub fields: &'a [(String, String)],
}

/// A pending entry scheduled in a retry set.
#[derive(Debug, Clone, Copy)]
pub struct RetryMove<'a> {
    /// Where the entry comes from.
    pub from: PendingSource<'a>,
    /// The retry sorted set.
    pub retry_key: &'a str,
    /// How long from now it is due: the script adds it to Redis's clock (`TIME`) for the
    /// score, so every worker schedules on one clock.
    pub delay_ms: u64,
    /// The member: the next delivery's fields as a JSON array.
    pub member: &'a str,
}

/// How long a move's guard outlives a refused acknowledgement (7 days): the retried move
/// (by this consumer or one that claimed the entry) finds it and adds nothing.
pub(super) const GUARD_TTL_MS: i64 = 7 * 24 * 3600 * 1000;

/// The guard of a move to `dest` (the DLQ or a retry set): `<dest>:moved:{<dest>}:<group>:<stream>:<entry id>`, under
/// the env prefix and in the destination's hash slot. It is written only when a move's XACK
/// was refused, and deleted by the retry that completes the move.
pub(super) fn guard_key(dest: &str, from: &PendingSource<'_>) -> String {
    format!(
        "{dest}:moved:{{{dest}}}:{}:{}:{}",
        from.group, from.stream, from.entry_id
    )
}

/// The prefix of the guards of retries dead-lettered from a retry set:
/// `<dlq>:dead-lettered:{<dlq>}:`, followed by the SHA-1 of the member; in the DLQ's slot.
pub(super) fn dead_letter_guard_prefix(dlq: &str) -> String {
    format!("{dlq}:dead-lettered:{{{dlq}}}:")
}

/// The prefix of the guards of forwarded retries: `<retry key>:forwarded:{<retry key>}:`,
/// followed in the script by the SHA-1 of the member; in the retry set's hash slot.
pub fn forward_guard_prefix(retry_key: &str) -> String {
    format!("{retry_key}:forwarded:{{{retry_key}}}:")
}

impl Store {
    /// Atomically appends the move's fields to its destination stream and acknowledges the
    /// entry, only if the entry is still pending on the move's consumer. Returns the new
    /// entry id, or `None` when the entry was no longer ours.
    ///
    /// # Errors
    /// Redis errors; nothing moved then.
    pub async fn move_to_stream(&self, m: &StreamMove<'_>) -> Result<Option<String>, StoreError> {
        let from = &m.from;
        if !self.same_slot(m.dest, from.stream) {
            return self.move_to_stream_split(m).await;
        }
        let mut args: Vec<Value> = Vec::with_capacity(5 + m.fields.len() * 2);
        from.push_args(&mut args);
        args.push(GUARD_TTL_MS.into());
        for (k, v) in m.fields {
            args.push(k.as_str().into());
            args.push(v.as_str().into());
        }
        let reply: Value = self
            .move_to_stream
            .evalsha_with_reload(
                &self.cmd,
                vec![
                    m.dest,
                    from.stream,
                    &guard_key(m.dest, from),
                    &crate::redis::dlq::counts_key(m.dest),
                ],
                args,
            )
            .await
            .map_err(|e| {
                let op = format!("move {} {} -> {}", from.stream, from.entry_id, m.dest);
                self.error(op, e)
            })?;
        Ok(reply.as_str().map(|s| s.into_owned()))
    }

    /// Atomically adds the move's member to its retry set, due `delay_ms` after Redis's
    /// `TIME`, and acknowledges the entry, only if it is still pending on the move's
    /// consumer. Idempotent like [`Store::move_to_stream`]: a refused XACK leaves a guard in
    /// the retry set's slot, so a retried move only acknowledges. Returns whether it moved.
    ///
    /// # Errors
    /// Redis errors; nothing moved then, or the member was added and the guard written.
    pub async fn move_to_retry(&self, m: &RetryMove<'_>) -> Result<bool, StoreError> {
        let from = &m.from;
        if !self.same_slot(m.retry_key, from.stream) {
            return self.move_to_retry_split(m).await;
        }
        let mut args: Vec<Value> = Vec::with_capacity(7);
        from.push_args(&mut args);
        args.push((m.delay_ms as i64).into());
        args.push(m.member.into());
        args.push(GUARD_TTL_MS.into());
        args.push((crate::model::time::now_ms() as i64).into());
        let guard = guard_key(m.retry_key, from);
        let reply: Value = self
            .move_to_retry
            .evalsha_with_reload(&self.cmd, vec![m.retry_key, from.stream, &guard], args)
            .await
            .map_err(|e| self.error(format!("retry {} {}", from.stream, from.entry_id), e))?;
        let moved = reply.as_i64();
        if moved == Some(2) {
            self.warn_time_refused();
        }
        Ok(matches!(moved, Some(1 | 2)))
    }

    /// Moves up to `limit` retries due by Redis's clock (`TIME`) from `retry_key` to
    /// `redeliver_key`. A member whose `ZREM` is refused leaves a guard
    /// ([`forward_guard_prefix`] + SHA-1 of the member) holding its score, so a later pass
    /// that finds it at that score only removes it (at another score it was added again: a
    /// new retry, forwarded).
    ///
    /// # Errors
    /// Redis errors.
    pub async fn forward_due(
        &self,
        retry_key: &str,
        redeliver_key: &str,
        limit: usize,
    ) -> Result<u64, StoreError> {
        self.forward(retry_key, redeliver_key, limit as i64, None, "forward")
            .await
    }

    /// Forwards the one member of `retry_key` at score `due_ms` whose SHA-1 is `sha1` to
    /// `redeliver_key` now, whatever its due time, with the body of [`Store::forward_due`]
    /// (see `scripts/forward_due.lua`): the member is added and removed in one script, so a
    /// scheduler pass running at the same time never forwards it too. Returns whether it
    /// moved (false: no longer in the set).
    ///
    /// # Errors
    /// Redis errors.
    pub async fn forward_one(
        &self,
        retry_key: &str,
        redeliver_key: &str,
        due_ms: u64,
        sha1: &str,
    ) -> Result<bool, StoreError> {
        let one = Some((due_ms, sha1));
        let moved = self
            .forward(retry_key, redeliver_key, 1, one, "forward now")
            .await?;
        Ok(moved > 0)
    }

    /// Runs `scripts/forward_due.lua`: up to `limit` due members, or with `one` (score,
    /// SHA-1) that member whatever its due time; returns how many moved and warns once when
    /// the script had to use the worker's clock (TIME refused).
    async fn forward(
        &self,
        retry_key: &str,
        redeliver_key: &str,
        limit: i64,
        one: Option<(u64, &str)>,
        op: &str,
    ) -> Result<u64, StoreError> {
        if !self.same_slot(retry_key, redeliver_key) {
            return self
                .forward_split(retry_key, redeliver_key, limit, one, op)
                .await;
        }
        let now = crate::model::time::now_ms() as i64;
        let mut args: Vec<Value> = vec![limit.into(), GUARD_TTL_MS.into(), now.into()];
        if let Some((due_ms, sha1)) = one {
            args.push(due_ms.to_string().into());
            args.push(sha1.into());
        }
        let reply: Value = self
            .forward_due
            .evalsha_with_reload(
                &self.cmd,
                vec![retry_key, redeliver_key, &forward_guard_prefix(retry_key)],
                args,
            )
            .await
            .map_err(|e| self.error(format!("{op} {retry_key}"), e))?;
        let (moved, fallback) = match reply {
            Value::Array(v) => (
                v.first().and_then(Value::as_u64).unwrap_or(0),
                v.get(1).and_then(Value::as_i64) == Some(1),
            ),
            other => (other.as_u64().unwrap_or(0), false),
        };
        if fallback {
            self.warn_time_refused();
        }
        Ok(moved)
    }

    /// Dead-letters `member` of `retry_key`: appends `fields` to `dlq` (counted in its
    /// counts hash) and removes the member, in one script (`scripts/retry_to_dlq.lua`).
    /// Returns the new DLQ entry id, or `None` when the member is no longer in the set. A
    /// retried call whose ZREM was refused adds nothing (guard in the DLQ's slot).
    ///
    /// # Errors
    /// Redis errors.
    pub async fn retry_to_dlq(
        &self,
        retry_key: &str,
        dlq: &str,
        member: &str,
        fields: &[(String, String)],
    ) -> Result<Option<String>, StoreError> {
        if !self.same_slot(retry_key, dlq) {
            return self
                .retry_to_dlq_split(retry_key, dlq, member, fields)
                .await;
        }
        let mut args: Vec<Value> = Vec::with_capacity(2 + fields.len() * 2);
        args.push(member.into());
        args.push(GUARD_TTL_MS.into());
        for (k, v) in fields {
            args.push(k.as_str().into());
            args.push(v.as_str().into());
        }
        let guard = dead_letter_guard_prefix(dlq);
        let counts = crate::redis::dlq::counts_key(dlq);
        let reply: Value = fred::types::scripts::Script::from_lua(crate::redis::dlq::RETRY_TO_DLQ)
            .evalsha_with_reload(&self.cmd, vec![retry_key, dlq, &guard, &counts], args)
            .await
            .map_err(|e| self.error(format!("dead-letter from {retry_key}"), e))?;
        Ok(reply.as_str().map(|s| s.into_owned()))
    }

    /// Members of the sorted set `key` with scores in `min..=max` (`(` for exclusive,
    /// `+inf`), in set order (score, then member bytes), at most `limit`: `(member, score)`.
    ///
    /// # Errors
    /// Redis errors.
    pub async fn zrange_by_score(
        &self,
        key: &str,
        min: &str,
        max: &str,
        limit: usize,
    ) -> Result<Vec<(String, u64)>, StoreError> {
        self.zrange_by_score_from(key, min, max, 0, limit).await
    }

    /// [`Store::zrange_by_score`] skipping the first `offset` members of the range.
    ///
    /// # Errors
    /// Redis errors.
    pub async fn zrange_by_score_from(
        &self,
        key: &str,
        min: &str,
        max: &str,
        offset: usize,
        limit: usize,
    ) -> Result<Vec<(String, u64)>, StoreError> {
        let args: Vec<Value> = vec![
            key.into(),
            min.into(),
            max.into(),
            "WITHSCORES".into(),
            "LIMIT".into(),
            (offset as i64).into(),
            (limit as i64).into(),
        ];
        let flat = self.call("ZRANGEBYSCORE", args).await?.into_array();
        Ok(flat
            .chunks(2)
            .filter(|c| c.len() == 2)
            .filter_map(|c| {
                let member = crate::redis::store::text(&c[0])?;
                let score = c[1].as_f64()?;
                Some((member, score.max(0.0) as u64))
            })
            .collect())
    }

    /// Warns, once per process, that the ACL user is refused `TIME`, so retries are
    /// scheduled and forwarded on each worker's own clock (skewed clocks then forward early
    /// or late) until it is granted.
    pub(super) fn warn_time_refused(&self) {
        static WARNED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
        if WARNED.swap(true, std::sync::atomic::Ordering::Relaxed) {
            return;
        }
        let refused = fred::error::Error::new(
            fred::error::ErrorKind::Unknown,
            "NOPERM this user has no permissions to run the 'time' command",
        );
        let error = self.error("retry TIME", refused);
        tracing::warn!(
            "{error}; until then retries are scheduled and forwarded on each worker's own clock"
        );
    }
    /// Applies a migration body once (see `scripts/apply_migration.lua`). Returns whether it
    /// ran now (false: it had been applied before).
    ///
    /// # Errors
    /// Redis errors, including errors raised by the body.
    pub async fn apply_migration(
        &self,
        hash: &str,
        name: &str,
        body: &str,
        prefix: &str,
        now: &str,
    ) -> Result<bool, StoreError> {
        let script = self.apply_migration_template.replace("--BODY--", body);
        let reply: Value = self
            .cmd
            .eval(script, vec![hash], vec![name, now, prefix])
            .await
            .map_err(|e| self.error(format!("migration {name}"), e))?;
        Ok(reply.as_i64() == Some(1))
    }
}
