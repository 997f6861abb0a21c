//! Replaying DLQ entries to their failed group's redeliver stream (rate limit, canaries),
//! each recorded in the history.

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::model::envelope::{field, lookup};
use crate::model::keys::{self, Keys};
use crate::model::time::now_ms;
use crate::ops::dlq::{DlqEntry, DlqError, MAX_SELECTED, Selection, count_selected, select};
use crate::redis::store::Store;
use crate::settle::dlq_record::{self, field as dlq};
use crate::settle::history::{Record, kind};

/// How to replay.
#[derive(Debug, Clone)]
pub struct ReplayOptions {
    /// Count and sample only; change nothing.
    pub dry_run: bool,
    /// Most replays per second.
    pub rate: Option<f64>,
    /// Replay this many first, wait for their outcome, stop if any fails again.
    pub canary: Option<usize>,
    /// How long to wait for the canaries' outcome.
    pub canary_timeout: Duration,
    /// Who asked (`cli`, `api`), recorded in the history.
    pub actor: String,
    /// `[history].max_len`, for the records this writes.
    pub history_max_len: u64,
}

/// What a replay did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ReplayReport {
    /// Entries selected.
    pub matched: usize,
    /// Entries re-added to their group and removed from the DLQ.
    pub replayed: usize,
    /// Selected entries that were gone by the time we got to them (replayed or purged).
    pub missing: usize,
    /// Selected entries that cannot be replayed: no valid type or group (malformed events);
    /// they stay in the DLQ.
    pub unreplayable: usize,
    /// Up to 10 selected entries.
    pub sample: Vec<serde_json::Value>,
    /// Nothing was changed.
    pub dry_run: bool,
    /// Why the replay stopped early, if it did.
    pub stopped: Option<String>,
    /// Per group and type replay counts.
    pub by_group_type: BTreeMap<String, u64>,
}

/// The event's fields for its replay: `dlq_*`, `attempt` and `origin_entry_id` replaced;
/// `replay_count` incremented; `unrouted_since` dropped (a replay starts a new grace).
fn replay_fields(e: &DlqEntry) -> Vec<(String, String)> {
    let count: u64 = e.get("replay_count").parse().unwrap_or(0);
    let mut fields: Vec<(String, String)> = e
        .fields
        .iter()
        .filter(|(k, _)| {
            !dlq_record::is_dlq_field(k)
                && k != field::ATTEMPT
                && k != field::ORIGIN_ENTRY_ID
                && k != "replay_count"
                && k != field::UNROUTED_SINCE
        })
        .cloned()
        .collect();
    let origin = if e.get(dlq::ENTRY_ID).is_empty() {
        e.entry_id.clone()
    } else {
        e.get(dlq::ENTRY_ID).to_string()
    };
    fields.push((field::ATTEMPT.into(), "0".into()));
    fields.push((field::ORIGIN_ENTRY_ID.into(), origin));
    fields.push(("replay_count".into(), (count + 1).to_string()));
    fields
}

/// Replays the selected entries to their failed group's redeliver stream, attempt 0.
///
/// # Errors
/// Invalid selection, or Redis errors (entries already replayed stay replayed).
pub async fn replay(
    store: &Store,
    keys: &Keys,
    selection: &Selection,
    opts: &ReplayOptions,
) -> Result<ReplayReport, DlqError> {
    if opts.dry_run {
        let (matched, sample) = count_selected(store, keys, selection, MAX_SELECTED, 10).await?;
        return Ok(ReplayReport {
            matched,
            sample: sample.iter().map(DlqEntry::summary).collect(),
            dry_run: true,
            ..Default::default()
        });
    }
    let entries = select(store, keys, selection, MAX_SELECTED).await?;
    let mut report = ReplayReport {
        matched: entries.len(),
        sample: entries.iter().take(10).map(DlqEntry::summary).collect(),
        dry_run: opts.dry_run,
        ..Default::default()
    };
    if opts.dry_run || entries.is_empty() {
        return Ok(report);
    }
    let interval = opts
        .rate
        .filter(|r| *r > 0.0)
        .map(|r| Duration::from_secs_f64(1.0 / r));
    let canary = opts.canary.unwrap_or(0).min(entries.len());
    let (canaries, rest) = entries.split_at(canary);
    let started = now_ms();
    let mut next_at = Instant::now();
    for (n, batch) in [canaries, rest].into_iter().enumerate() {
        for e in batch {
            if let Some(iv) = interval {
                tokio::time::sleep_until(next_at.into()).await;
                next_at += iv;
            }
            replay_one(store, keys, e, opts, &mut report).await?;
        }
        let canaries_done = n == 0 && canary > 0;
        if canaries_done
            && let Some(why) =
                watch_canaries(store, keys, canaries, started, opts.canary_timeout).await?
        {
            report.stopped = Some(why);
            break;
        }
    }
    Ok(report)
}

/// Replays one entry and records it in `report` and the history.
async fn replay_one(
    store: &Store,
    keys: &Keys,
    e: &DlqEntry,
    opts: &ReplayOptions,
    report: &mut ReplayReport,
) -> Result<(), DlqError> {
    let group = e.group();
    if !keys::is_valid_name(group) || !keys::is_valid_type(e.event_type()) {
        report.unreplayable += 1;
        return Ok(());
    }
    let redeliver = keys.redeliver(group);
    store.ensure_group(&redeliver, group).await?;
    if store
        .replay_entry(&keys.dlq(), &redeliver, &e.entry_id, &replay_fields(e))
        .await?
        .is_none()
    {
        report.missing += 1;
        return Ok(());
    }
    report.replayed += 1;
    *report
        .by_group_type
        .entry(format!("{group}/{}", e.event_type()))
        .or_default() += 1;
    let record = Record::new(
        kind::REPLAYED,
        e.get(field::ID),
        e.event_type(),
        group,
        lookup(&e.fields, field::CORRELATIONID),
        0,
        format!("by {}; from DLQ entry {}", opts.actor, e.entry_id),
    );
    let _ = crate::settle::history::append(store, &keys.history(), opts.history_max_len, &[record])
        .await;
    Ok(())
}

/// Waits until every canary was processed (history) or one is dead-lettered again.
/// Returns why to stop, or `None` to go on.
async fn watch_canaries(
    store: &Store,
    keys: &Keys,
    canaries: &[DlqEntry],
    since_ms: u64,
    timeout: Duration,
) -> Result<Option<String>, DlqError> {
    let ids: HashSet<String> = canaries
        .iter()
        .map(|e| e.get(field::ID).to_string())
        .collect();
    let deadline = Instant::now() + timeout;
    let from = format!("{since_ms}-0");
    loop {
        for e in store.xrange(&keys.dlq(), &from, "+", 10_000).await? {
            let entry = DlqEntry::from_entry(e);
            if ids.contains(entry.get(field::ID)) {
                return Ok(Some(format!(
                    "canary event {} failed again ({}: {}); the rest was not replayed",
                    entry.get(field::ID),
                    entry.reason(),
                    crate::model::envelope::truncate(entry.get(dlq::ERROR), 200)
                )));
            }
        }
        let mut done: HashSet<String> = HashSet::new();
        let mut records = Vec::new();
        for e in store.xrange(&keys.history(), &from, "+", 10_000).await? {
            // Per-event records and aggregates of successes alike (`history.processed`).
            crate::settle::aggregate::expand(&e, &[], &mut records);
        }
        for r in records {
            if r.kind == kind::PROCESSED && ids.contains(r.id.as_str()) {
                done.insert(r.id.into());
            }
        }
        if done.len() == ids.len() {
            return Ok(None);
        }
        if Instant::now() >= deadline {
            return Ok(Some(format!(
                "canary outcome unknown after {timeout:?} ({} of {} processed); the rest was not replayed",
                done.len(),
                ids.len()
            )));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::dlq::test_util::entry;

    #[test]
    fn replay_resets_attempts_and_counts_replays() {
        let e = entry(
            "5-0",
            &[
                ("id", "x"),
                ("type", "a"),
                ("data", "{}"),
                ("attempt", "4"),
                ("origin_entry_id", "1-0"),
                ("dlq_reason", "r"),
                ("dlq_entry_id", "1-0"),
                ("replay_count", "1"),
                ("unrouted_since", "1000"),
            ],
        );
        let f = replay_fields(&e);
        assert_eq!(lookup(&f, "attempt"), Some("0"));
        assert_eq!(lookup(&f, "origin_entry_id"), Some("1-0"));
        assert_eq!(lookup(&f, "replay_count"), Some("2"));
        assert!(f.iter().all(|(k, _)| !k.starts_with("dlq_")));
        assert_eq!(lookup(&f, "unrouted_since"), None);
    }
}
