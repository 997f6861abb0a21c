//! The DLQ scripts: replay, purge, the retention trim, the counting of an existing DLQ and
//! the filtered scan, plus the counts hash they keep (`<dlq>:counts:{<dlq>}`, in the DLQ's
//! hash slot) by type, reason and group. Every script that adds or removes DLQ entries
//! updates the counts in the same script (the DLQ move in `scripts/move_to_stream.lua`
//! too), so `dlq stats` reads them in O(1) commands.

use fred::types::Value;
use fred::types::scripts::Script;

use crate::redis::error::StoreError;
use crate::redis::store::{Entry, Store, parse_entries, text};

/// The shared head (`scripts/dlq_counts.lua`) followed by one script.
macro_rules! with_counts {
    ($file:literal) => {
        concat!(
            include_str!("scripts/dlq_counts.lua"),
            include_str!(concat!("scripts/", $file))
        )
    };
}
pub(crate) const MOVE_TO_STREAM: &str = with_counts!("move_to_stream.lua");
pub(crate) const RETRY_TO_DLQ: &str = with_counts!("retry_to_dlq.lua");
pub(crate) const SPLIT_DEST_STREAM: &str = with_counts!("split_dest_stream.lua");
const REPLAY: &str = with_counts!("replay.lua");
const PURGE: &str = with_counts!("dlq_purge.lua");
const TRIM: &str = with_counts!("dlq_trim.lua");
const COUNT_STEP: &str = with_counts!("dlq_count_step.lua");
const SCAN: &str = with_counts!("dlq_scan.lua");
const STATS: &str = include_str!("scripts/dlq_stats.lua");

/// The counts hash of the DLQ `dlq`: `<dlq>:counts:{<dlq>}`.
pub fn counts_key(dlq: &str) -> String {
    format!("{dlq}:counts:{{{dlq}}}")
}

/// The guard of a replay whose XDEL was refused: `<dlq>:replayed:{<dlq>}:<entry id>`.
pub(super) fn replay_guard_key(dlq: &str, dlq_id: &str) -> String {
    format!("{dlq}:replayed:{{{dlq}}}:{dlq_id}")
}

/// How long a replay guard outlives a refused XDEL: the move guards' 7 days.
use crate::redis::moves::GUARD_TTL_MS;

/// Which way a scan reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Newest first (XREVRANGE).
    Newest,
    /// Oldest first (XRANGE).
    Oldest,
}

/// One step of a filtered scan: the range `start..=end` (ids or `-`/`+`, `(` for exclusive),
/// read `count` entries at most, keep those whose type, reason and group match (`None`: any).
#[derive(Debug, Clone, Copy)]
pub struct ScanStep<'a> {
    /// Direction.
    pub direction: Direction,
    /// Lower bound.
    pub start: &'a str,
    /// Upper bound.
    pub end: &'a str,
    /// Entries read at most.
    pub count: usize,
    /// Exact type, reason and group wanted.
    pub exact: [Option<&'a str>; 3],
    /// Stop after this many matches.
    pub most: usize,
    /// Return only how many matched, not the entries.
    pub count_only: bool,
}

/// What one scan step found.
#[derive(Debug, Clone, Default)]
pub struct ScanFound {
    /// The matching entries (none when counting only).
    pub entries: Vec<Entry>,
    /// How many matched.
    pub matched: u64,
    /// The id of the last entry read; `None` when the range ended.
    pub last: Option<String>,
}

/// What `dlq stats` reads (see `scripts/dlq_stats.lua`).
#[derive(Debug, Clone, Default)]
pub struct DlqFigures {
    /// XLEN.
    pub len: u64,
    /// The counts hash, `(field, value)` pairs.
    pub counts: Vec<(String, String)>,
    /// Oldest entry id.
    pub oldest: Option<String>,
    /// Newest entry id.
    pub newest: Option<String>,
}

fn args(items: &[&str]) -> Vec<Value> {
    items.iter().map(|s| Value::from(*s)).collect()
}

impl Store {
    async fn dlq_script(
        &self,
        op: String,
        lua: &'static str,
        keys: Vec<&str>,
        args: Vec<Value>,
    ) -> Result<Value, StoreError> {
        Script::from_lua(lua)
            .evalsha_with_reload(&self.cmd, keys, args)
            .await
            .map_err(|e| self.error(op, e))
    }

    /// Runs the replay script: `fields` to `redeliver`, then XDEL of `dlq_id` from `dlq` and
    /// its counts. `None` when the DLQ entry no longer exists. A retried replay whose XDEL was
    /// refused adds nothing (guard).
    ///
    /// # Errors
    /// Redis errors; when the XDEL was refused the event is in `redeliver` and the retry
    /// completes the replay without adding it again.
    pub async fn replay_entry(
        &self,
        dlq: &str,
        redeliver: &str,
        dlq_id: &str,
        fields: &[(String, String)],
    ) -> Result<Option<String>, StoreError> {
        if !self.same_slot(dlq, redeliver) {
            return self.replay_split(dlq, redeliver, dlq_id, fields).await;
        }
        let mut a: Vec<Value> = vec![dlq_id.into(), GUARD_TTL_MS.into()];
        a.extend(super::moves_split::values(fields));
        let (guard, counts) = (replay_guard_key(dlq, dlq_id), counts_key(dlq));
        let keys = vec![dlq, redeliver, guard.as_str(), counts.as_str()];
        let reply = self
            .dlq_script(format!("replay {dlq_id}"), REPLAY, keys, a)
            .await?;
        Ok(reply.as_str().map(|s| s.into_owned()))
    }

    /// Deletes the DLQ entries `ids` and uncounts them; returns how many were deleted.
    ///
    /// # Errors
    /// Redis errors.
    pub async fn dlq_purge(&self, dlq: &str, ids: &[String]) -> Result<u64, StoreError> {
        let counts = counts_key(dlq);
        let a = ids.iter().map(|i| Value::from(i.as_str())).collect();
        let reply = self
            .dlq_script(format!("purge {dlq}"), PURGE, vec![dlq, &counts], a)
            .await?;
        Ok(reply.as_u64().unwrap_or(0))
    }

    /// Removes at most `chunk` of the oldest DLQ entries past `max_len` (`by_age: false`) or
    /// below the entry id `threshold` (`by_age: true`), uncounting them; returns how many.
    ///
    /// # Errors
    /// Redis errors.
    pub async fn dlq_trim_chunk(
        &self,
        dlq: &str,
        by_age: bool,
        threshold: &str,
        chunk: u64,
    ) -> Result<u64, StoreError> {
        let counts = counts_key(dlq);
        let mode = if by_age { "minid" } else { "maxlen" };
        let a = args(&[mode, threshold, &chunk.to_string()]);
        let reply = self
            .dlq_script(format!("trim {dlq}"), TRIM, vec![dlq, &counts], a)
            .await?;
        Ok(reply.as_u64().unwrap_or(0))
    }

    /// Counts the next `count` not yet counted entries of an existing DLQ; returns the new
    /// cursor (`None` once every entry is counted) and how many this step counted.
    ///
    /// # Errors
    /// Redis errors.
    pub async fn dlq_count_step(
        &self,
        dlq: &str,
        count: usize,
    ) -> Result<(Option<String>, u64), StoreError> {
        let counts = counts_key(dlq);
        let a = args(&[&count.to_string()]);
        let reply = self
            .dlq_script(format!("count {dlq}"), COUNT_STEP, vec![dlq, &counts], a)
            .await?;
        let mut parts = reply.into_array().into_iter();
        let cursor = parts.next().as_ref().and_then(text);
        let n = parts.next().and_then(|v| v.as_u64()).unwrap_or(0);
        Ok((cursor.filter(|c| c != "all"), n))
    }

    /// The figures of `dlq stats` at one instant (one script, five commands).
    ///
    /// # Errors
    /// Redis errors.
    pub async fn dlq_stats_raw(&self, dlq: &str) -> Result<DlqFigures, StoreError> {
        let counts = counts_key(dlq);
        let reply = self
            .dlq_script(
                format!("stats {dlq}"),
                STATS,
                vec![dlq, &counts],
                Vec::new(),
            )
            .await?;
        let mut parts = reply.into_array().into_iter();
        let len = parts.next().and_then(|v| v.as_u64()).unwrap_or(0);
        let flat = parts.next().map(Value::into_array).unwrap_or_default();
        let counts = flat
            .chunks(2)
            .filter(|c| c.len() == 2)
            .filter_map(|c| Some((text(&c[0])?, text(&c[1])?)))
            .collect();
        let oldest = parts.next().as_ref().and_then(text);
        let newest = parts.next().as_ref().and_then(text);
        Ok(DlqFigures {
            len,
            counts,
            oldest,
            newest,
        })
    }

    /// Deletes the counts hash of `dlq` (the next counting steps rebuild it).
    ///
    /// # Errors
    /// Redis errors.
    pub async fn dlq_counts_reset(&self, dlq: &str) -> Result<(), StoreError> {
        self.call("DEL", vec![counts_key(dlq).into()]).await?;
        Ok(())
    }

    /// One step of a filtered scan of `dlq`.
    ///
    /// # Errors
    /// Redis errors.
    pub async fn dlq_scan(&self, dlq: &str, s: &ScanStep<'_>) -> Result<ScanFound, StoreError> {
        let dir = if s.direction == Direction::Newest {
            "rev"
        } else {
            "fwd"
        };
        let want: Vec<String> = s
            .exact
            .iter()
            .map(|w| w.map(|v| format!("={v}")).unwrap_or_default())
            .collect();
        let a = args(&[
            dir,
            s.start,
            s.end,
            &s.count.to_string(),
            &want[0],
            &want[1],
            &want[2],
            &s.most.max(1).to_string(),
            if s.count_only { "count" } else { "entries" },
        ]);
        let reply = self
            .dlq_script(format!("scan {dlq}"), SCAN, vec![dlq], a)
            .await?;
        let mut parts = reply.into_array().into_iter();
        let first = parts.next().unwrap_or(Value::Null);
        let last = parts.next().as_ref().and_then(text);
        if s.count_only {
            let matched = first.as_u64().unwrap_or(0);
            return Ok(ScanFound {
                matched,
                last,
                ..Default::default()
            });
        }
        let entries = parse_entries(&dlq.into(), first);
        Ok(ScanFound {
            matched: entries.len() as u64,
            entries,
            last,
        })
    }
}
