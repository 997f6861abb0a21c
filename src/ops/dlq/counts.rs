//! DLQ counts: `dlq stats` from the counts hash the DLQ scripts keep (see `redis::dlq`),
//! in a constant number of commands whatever the DLQ's length, and the bounded, resumable
//! counting of an existing DLQ (at startup, by `migrate`, and by `dlq recount`).

use std::collections::BTreeMap;

use serde::Serialize;

use crate::model::keys::Keys;
use crate::model::time::{entry_id_ms, rfc3339};
use crate::ops::dlq::DlqError;
use crate::redis::store::{Store, StoreError};

/// DLQ entries one counting step reads (one script call of a few milliseconds).
pub const COUNT_STEP: usize = 10_000;

/// Counts of the DLQ.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Stats {
    /// Entries (XLEN).
    pub total: u64,
    /// By `dlq_reason`.
    pub by_reason: BTreeMap<String, u64>,
    /// By event type.
    pub by_type: BTreeMap<String, u64>,
    /// By failed group.
    pub by_group: BTreeMap<String, u64>,
    /// The oldest entry.
    pub oldest: Option<At>,
    /// The newest entry.
    pub newest: Option<At>,
    /// Whether the counts cover every entry: false while the counts of an existing DLQ are
    /// still being built, or when they disagree with the DLQ's length (see `note`).
    pub complete: bool,
    /// Why the counts are not complete, and what to do.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// A DLQ entry and when it was dead-lettered: `{"id": "<entry id>", "time": "<RFC 3339>"}`.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct At {
    /// The DLQ entry id.
    pub id: String,
    /// Its time (from the entry id), RFC 3339.
    pub time: String,
}

impl At {
    fn of(id: &str) -> At {
        At {
            id: id.to_string(),
            time: entry_id_ms(id).map(rfc3339).unwrap_or_default(),
        }
    }
}

/// Counts by reason, type and group (from the counts hash), total, oldest and newest (from
/// the stream), read at one instant by one script of five commands, whatever the DLQ's
/// length.
///
/// # Errors
/// Redis errors.
pub async fn stats(store: &Store, keys: &Keys) -> Result<Stats, DlqError> {
    let dlq = keys.dlq();
    let figures = store.dlq_stats_raw(&dlq).await?;
    let mut s = Stats {
        total: figures.len,
        oldest: figures.oldest.as_deref().map(At::of),
        newest: figures.newest.as_deref().map(At::of),
        ..Default::default()
    };
    let mut built = None;
    for (field, value) in figures.counts {
        let n: u64 = value.parse().unwrap_or(0);
        let (kind, name) = field.split_once(':').unwrap_or((field.as_str(), ""));
        let map = match kind {
            "reason" => &mut s.by_reason,
            "type" => &mut s.by_type,
            "group" => &mut s.by_group,
            _ => {
                if field == "~built" {
                    built = Some(value);
                }
                continue;
            }
        };
        if n > 0 {
            map.insert(name.to_string(), n);
        }
    }
    let sum = |m: &BTreeMap<String, u64>| m.values().sum::<u64>();
    let counted = sum(&s.by_reason);
    let agree = [sum(&s.by_type), sum(&s.by_group)]
        .iter()
        .all(|n| *n == counted);
    s.note = match built.as_deref() {
        None if s.total == 0 => None,
        Some("all") if agree && counted == s.total => None,
        Some("all") => Some(format!(
            "the counts cover {counted} entries but {dlq} holds {}: entries were added or \
             removed without the worker's scripts (a direct XADD/XDEL, an older worker \
             version, or a Redis user without +hget +hincrby +hdel); run `event-worker dlq \
             recount` to count them again",
            s.total
        )),
        cursor => Some(format!(
            "the counts of the existing DLQ are still being built ({counted} of {} entries \
             counted, up to entry {}): every worker does it at startup in steps of {COUNT_STEP} \
             entries; `event-worker migrate` finishes it now",
            s.total,
            cursor.unwrap_or("(none yet)")
        )),
    };
    s.complete = s.note.is_none();
    Ok(s)
}

/// What [`build`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BuildReport {
    /// Entries counted by these steps.
    pub counted: u64,
    /// Steps run.
    pub steps: u64,
    /// Whether every entry is counted now.
    pub done: bool,
}

/// Counts the entries of an existing DLQ not counted yet, [`COUNT_STEP`] entries per
/// script call, at most `max_steps` calls. Resumable (the cursor is in the counts hash) and
/// safe with other instances doing the same: each step counts the entries after the cursor
/// and moves it in one script, and the DLQ scripts count only entries at or below the cursor,
/// so no entry is counted twice.
///
/// # Errors
/// Redis errors (the steps done stay done).
pub async fn build(store: &Store, keys: &Keys, max_steps: u64) -> Result<BuildReport, StoreError> {
    let dlq = keys.dlq();
    let mut report = BuildReport::default();
    while report.steps < max_steps {
        let (cursor, n) = store.dlq_count_step(&dlq, COUNT_STEP).await?;
        report.steps += 1;
        report.counted += n;
        if cursor.is_none() {
            report.done = true;
            break;
        }
    }
    Ok(report)
}

/// Deletes the counts and counts the whole DLQ again (up to `max_steps` steps; the workers
/// finish the rest at their next startup).
///
/// # Errors
/// Redis errors.
pub async fn recount(
    store: &Store,
    keys: &Keys,
    max_steps: u64,
) -> Result<BuildReport, StoreError> {
    store.dlq_counts_reset(&keys.dlq()).await?;
    build(store, keys, max_steps).await
}

/// The startup step of every worker: counts an existing DLQ (see [`build`]) to the end,
/// logging when it had anything to do; on a Redis error it warns and stops (the next
/// startup, `event-worker migrate` or `dlq recount` resumes from the cursor).
pub async fn build_in_background(store: Store, keys: Keys) {
    let started = std::time::Instant::now();
    match build(&store, &keys, u64::MAX).await {
        Ok(r) if r.counted > 0 => tracing::info!(
            counted = r.counted,
            steps = r.steps,
            ms = started.elapsed().as_millis() as u64,
            "DLQ counts built for the existing entries of {}",
            keys.dlq()
        ),
        Ok(_) => {}
        Err(e) => tracing::warn!(
            error = %e,
            "counting the existing DLQ entries stopped; `dlq stats` says the counts are \
             incomplete until the next worker startup or `event-worker migrate` finishes them"
        ),
    }
}
