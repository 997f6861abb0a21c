//! The dead-letter queue inspector: list, show, stats, replay and purge of
//! `events:<env>:dlq`. One module backs the CLI, the HTTP API and the DLQ metrics, so they
//! never disagree. Every replay and purge is recorded in the history.

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::model::envelope::{field, lookup};
use crate::model::keys::{self, Keys};
use crate::model::time::{entry_id_ms, now_ms, rfc3339};
use crate::redis::store::{Entry, Store, StoreError};
use crate::settle::history::{Record, kind};

/// Why an operation was refused before touching Redis, or failed in it.
#[derive(Debug, thiserror::Error)]
pub enum DlqError {
    /// A malformed argument; nothing was done.
    #[error("{0}")]
    Invalid(String),
    /// Redis failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// One DLQ entry.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct DlqEntry {
    /// DLQ stream entry id.
    pub entry_id: String,
    /// Every field: the event's and the `dlq_*` ones.
    pub fields: Vec<(String, String)>,
}

impl DlqEntry {
    fn from_entry(e: Entry) -> Self {
        DlqEntry {
            entry_id: e.id,
            fields: e.fields,
        }
    }

    /// A field's value, or "".
    pub fn get(&self, name: &str) -> &str {
        lookup(&self.fields, name).unwrap_or_default()
    }

    /// The event's type.
    pub fn event_type(&self) -> &str {
        self.get(field::TYPE)
    }

    /// The group that failed it.
    pub fn group(&self) -> &str {
        self.get("dlq_group")
    }

    /// Why it was dead-lettered.
    pub fn reason(&self) -> &str {
        self.get("dlq_reason")
    }

    /// A one-object JSON summary (for lists and samples).
    pub fn summary(&self) -> serde_json::Value {
        serde_json::json!({
            "entry_id": self.entry_id,
            "id": self.get(field::ID),
            "type": self.event_type(),
            "group": self.group(),
            "reason": self.reason(),
            "attempts": self.get("dlq_attempts"),
            "failed_at": self.get("dlq_failed_at"),
            "error": self.get("dlq_error"),
        })
    }

    /// All fields as a JSON object (first value wins for repeated names).
    pub fn to_json(&self) -> serde_json::Value {
        let mut map = serde_json::Map::new();
        map.insert("entry_id".into(), self.entry_id.clone().into());
        let mut fields = serde_json::Map::new();
        for (k, v) in &self.fields {
            fields.entry(k.clone()).or_insert_with(|| v.clone().into());
        }
        map.insert("fields".into(), fields.into());
        map.into()
    }
}

/// Filters shared by list, replay and purge; every given one must match. (Deserialized as
/// part of API bodies, whose unknown fields the API refuses itself.)
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
pub struct DlqFilter {
    /// Exact event type.
    #[serde(rename = "type")]
    pub event_type: Option<String>,
    /// Exact `dlq_reason`.
    pub reason: Option<String>,
    /// Exact `dlq_group`.
    pub group: Option<String>,
    /// Case-insensitive text in `dlq_error`.
    pub grep: Option<String>,
    /// Dead-lettered at most this long ago (entry id time), e.g. `2h`.
    pub since: Option<String>,
    /// Dead-lettered at least this long ago, e.g. `7d`.
    pub older_than: Option<String>,
}

/// A filter with its durations parsed.
#[derive(Debug, Clone)]
struct Compiled {
    filter: DlqFilter,
    grep: Option<String>,
    since_ms: Option<u64>,
    before_ms: Option<u64>,
}

impl DlqFilter {
    /// Checks the filter's values before any Redis call.
    ///
    /// # Errors
    /// [`DlqError::Invalid`] naming the bad field.
    #[cfg(test)]
    pub fn validate(&self) -> Result<(), DlqError> {
        self.compile().map(|_| ())
    }

    /// Checks the filter's values before any Redis call.
    ///
    /// # Errors
    /// [`DlqError::Invalid`] naming the bad field.
    fn compile(&self) -> Result<Compiled, DlqError> {
        if let Some(t) = &self.event_type
            && !keys::is_valid_type(t)
        {
            return Err(DlqError::Invalid(format!(
                "type: `{}` is not a valid event type",
                crate::model::envelope::truncate(t, 80)
            )));
        }
        if let Some(g) = &self.group
            && !keys::is_valid_name(g)
        {
            return Err(DlqError::Invalid(
                "group: must match [A-Za-z0-9_.-]+".into(),
            ));
        }
        if let Some(r) = &self.reason
            && (r.len() > 64 || !r.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'))
        {
            return Err(DlqError::Invalid(
                "reason: must be a reason word such as permanent_error".into(),
            ));
        }
        let now = now_ms();
        let ago = |name: &str, v: &Option<String>| -> Result<Option<u64>, DlqError> {
            v.as_ref()
                .map(|s| {
                    crate::config::parse_duration(s)
                        .map(|d| now.saturating_sub(d.as_millis() as u64))
                        .map_err(|e| DlqError::Invalid(format!("{name}: {e}")))
                })
                .transpose()
        };
        Ok(Compiled {
            grep: self.grep.as_ref().map(|g| g.to_lowercase()),
            since_ms: ago("since", &self.since)?,
            before_ms: ago("older_than", &self.older_than)?,
            filter: self.clone(),
        })
    }
}

impl Compiled {
    fn matches(&self, e: &DlqEntry) -> bool {
        let f = &self.filter;
        let at = entry_id_ms(&e.entry_id).unwrap_or(0);
        f.event_type.as_deref().is_none_or(|t| t == e.event_type())
            && f.reason.as_deref().is_none_or(|r| r == e.reason())
            && f.group.as_deref().is_none_or(|g| g == e.group())
            && self
                .grep
                .as_deref()
                .is_none_or(|g| e.get("dlq_error").to_lowercase().contains(g))
            && self.since_ms.is_none_or(|s| at >= s)
            && self.before_ms.is_none_or(|b| at < b)
    }
}

/// Whether `id` is a stream entry id (`<ms>-<seq>`).
pub fn is_entry_id(id: &str) -> bool {
    let mut parts = id.split('-');
    let ok = |p: Option<&str>| {
        p.is_some_and(|p| !p.is_empty() && p.len() <= 20 && p.bytes().all(|b| b.is_ascii_digit()))
    };
    ok(parts.next()) && ok(parts.next()) && parts.next().is_none()
}

/// A page of entries, newest first, and the cursor for the next page.
#[derive(Debug, Clone, Serialize)]
pub struct Page {
    /// Matching entries.
    pub entries: Vec<DlqEntry>,
    /// Pass as `before` to get the next page; `None` at the end.
    pub next: Option<String>,
}

/// DLQ entries scanned at most per call, so one request's cost is bounded.
pub const MAX_SCAN: usize = 100_000;

/// Lists entries matching `filter`, newest first, at most `limit` (1..=1000), older than
/// the `before` cursor when given.
///
/// # Errors
/// Invalid filter or cursor, or Redis errors.
pub async fn list(
    store: &Store,
    keys: &Keys,
    filter: &DlqFilter,
    limit: usize,
    before: Option<&str>,
) -> Result<Page, DlqError> {
    let compiled = filter.compile()?;
    if let Some(b) = before
        && !is_entry_id(b)
    {
        return Err(DlqError::Invalid(
            "before: not a stream entry id such as 1700000000000-0".into(),
        ));
    }
    let limit = limit.clamp(1, 1000);
    let dlq = keys.dlq();
    let mut end = before
        .map(|b| format!("({b}"))
        .unwrap_or_else(|| "+".into());
    let mut out = Vec::new();
    let mut scanned = 0;
    loop {
        let page = store.xrevrange(&dlq, &end, "-", 500).await?;
        let full = page.len() == 500;
        scanned += page.len();
        for e in page {
            end = format!("({}", e.id);
            let e = DlqEntry::from_entry(e);
            if compiled.matches(&e) {
                if out.len() == limit {
                    // One more match exists: the page is full and has a next page.
                    let next = out.last().map(|e: &DlqEntry| e.entry_id.clone());
                    return Ok(Page { entries: out, next });
                }
                out.push(e);
            }
        }
        if !full {
            return Ok(Page {
                entries: out,
                next: None,
            });
        }
        if scanned >= MAX_SCAN {
            // Stopped scanning, not at the end: continue below what was scanned.
            let next = Some(end.trim_start_matches('(').to_string());
            return Ok(Page { entries: out, next });
        }
    }
}

/// One entry by its DLQ entry id.
///
/// # Errors
/// Invalid id, or Redis errors.
pub async fn show(store: &Store, keys: &Keys, id: &str) -> Result<Option<DlqEntry>, DlqError> {
    if !is_entry_id(id) {
        return Err(DlqError::Invalid(
            "id: not a stream entry id such as 1700000000000-0".into(),
        ));
    }
    Ok(store
        .xrange(&keys.dlq(), id, id, 1)
        .await?
        .into_iter()
        .next()
        .map(DlqEntry::from_entry))
}

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
    /// Oldest entry id and its time.
    pub oldest: Option<(String, String)>,
    /// Newest entry id and its time.
    pub newest: Option<(String, String)>,
    /// Whether the counts cover every entry (false past [`MAX_SCAN`] entries).
    pub complete: bool,
}

/// Counts by reason, type and group, plus oldest and newest.
///
/// # Errors
/// Redis errors.
pub async fn stats(store: &Store, keys: &Keys) -> Result<Stats, DlqError> {
    let dlq = keys.dlq();
    let mut s = Stats {
        total: store.xlen(&dlq).await?,
        complete: true,
        ..Default::default()
    };
    let mut start = "-".to_string();
    let mut scanned = 0;
    loop {
        let page = store.xrange(&dlq, &start, "+", 1000).await?;
        let full = page.len() == 1000;
        for e in page {
            scanned += 1;
            start = format!("({}", e.id);
            let at = |id: &str| {
                (
                    id.to_string(),
                    entry_id_ms(id).map(rfc3339).unwrap_or_default(),
                )
            };
            if s.oldest.is_none() {
                s.oldest = Some(at(&e.id));
            }
            s.newest = Some(at(&e.id));
            let e = DlqEntry::from_entry(e);
            *s.by_reason.entry(e.reason().to_string()).or_default() += 1;
            *s.by_type.entry(e.event_type().to_string()).or_default() += 1;
            *s.by_group.entry(e.group().to_string()).or_default() += 1;
        }
        if !full {
            break;
        }
        if scanned >= MAX_SCAN {
            s.complete = false;
            break;
        }
    }
    Ok(s)
}

/// Which entries an operation acts on.
#[derive(Debug, Clone)]
pub enum Selection {
    /// These DLQ entry ids.
    Ids(Vec<String>),
    /// Entries matching a filter (an empty filter matches nothing; use [`Selection::All`]).
    Filter(DlqFilter),
    /// Every entry.
    All,
}

/// The selected entries, oldest first, at most `max`.
///
/// # Errors
/// Invalid ids or filter, or Redis errors.
pub async fn select(
    store: &Store,
    keys: &Keys,
    selection: &Selection,
    max: usize,
) -> Result<Vec<DlqEntry>, DlqError> {
    let dlq = keys.dlq();
    match selection {
        Selection::Ids(ids) => {
            if ids.is_empty() {
                return Err(DlqError::Invalid(
                    "ids: give at least one DLQ entry id".into(),
                ));
            }
            if let Some(bad) = ids.iter().find(|i| !is_entry_id(i)) {
                return Err(DlqError::Invalid(format!(
                    "ids: `{}` is not a stream entry id such as 1700000000000-0",
                    crate::model::envelope::truncate(bad, 40)
                )));
            }
            let mut out = Vec::new();
            let mut seen = HashSet::new();
            for id in ids.iter().take(max) {
                if seen.insert(id.clone())
                    && let Some(e) = store.xrange(&dlq, id, id, 1).await?.into_iter().next()
                {
                    out.push(DlqEntry::from_entry(e));
                }
            }
            Ok(out)
        }
        Selection::Filter(f) if *f == DlqFilter::default() => {
            Err(DlqError::Invalid("give a filter, ids, or all".into()))
        }
        Selection::Filter(_) | Selection::All => {
            let compiled = match selection {
                Selection::Filter(f) => Some(f.compile()?),
                _ => None,
            };
            let mut out = Vec::new();
            let mut start = "-".to_string();
            loop {
                let page = store.xrange(&dlq, &start, "+", 1000).await?;
                let full = page.len() == 1000;
                for e in page {
                    start = format!("({}", e.id);
                    let e = DlqEntry::from_entry(e);
                    if compiled.as_ref().is_none_or(|c| c.matches(&e)) {
                        out.push(e);
                        if out.len() >= max {
                            return Ok(out);
                        }
                    }
                }
                if !full {
                    return Ok(out);
                }
            }
        }
    }
}

/// Most entries one replay or purge acts on.
pub const MAX_SELECTED: usize = 1_000_000;

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
/// `replay_count` incremented.
fn replay_fields(e: &DlqEntry) -> Vec<(String, String)> {
    let count: u64 = e.get("replay_count").parse().unwrap_or(0);
    let mut fields: Vec<(String, String)> = e
        .fields
        .iter()
        .filter(|(k, _)| {
            !k.starts_with("dlq_")
                && k != field::ATTEMPT
                && k != field::ORIGIN_ENTRY_ID
                && k != "replay_count"
        })
        .cloned()
        .collect();
    let origin = if e.get("dlq_entry_id").is_empty() {
        e.entry_id.clone()
    } else {
        e.get("dlq_entry_id").to_string()
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
                    crate::model::envelope::truncate(entry.get("dlq_error"), 200)
                )));
            }
        }
        let mut done = HashSet::new();
        for r in store.xrange(&keys.history(), &from, "+", 10_000).await? {
            if lookup(&r.fields, "kind") == Some(kind::PROCESSED)
                && let Some(id) = lookup(&r.fields, "id")
                && ids.contains(id)
            {
                done.insert(id.to_string());
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

/// What a purge did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PurgeReport {
    /// Entries selected.
    pub matched: usize,
    /// Entries deleted.
    pub purged: u64,
    /// Nothing was changed.
    pub dry_run: bool,
}

/// Deletes the selected entries. Each deletion is recorded in the history.
///
/// # Errors
/// Invalid selection, or Redis errors.
pub async fn purge(
    store: &Store,
    keys: &Keys,
    selection: &Selection,
    dry_run: bool,
    actor: &str,
    history_max_len: u64,
) -> Result<PurgeReport, DlqError> {
    let entries = select(store, keys, selection, MAX_SELECTED).await?;
    let mut report = PurgeReport {
        matched: entries.len(),
        dry_run,
        ..Default::default()
    };
    if dry_run {
        return Ok(report);
    }
    for chunk in entries.chunks(500) {
        let ids: Vec<String> = chunk.iter().map(|e| e.entry_id.clone()).collect();
        report.purged += store.xdel(&keys.dlq(), &ids).await?;
        let records: Vec<Record> = chunk
            .iter()
            .map(|e| {
                Record::new(
                    kind::PURGED,
                    e.get(field::ID),
                    e.event_type(),
                    e.group(),
                    lookup(&e.fields, field::CORRELATIONID),
                    0,
                    format!("by {actor}; DLQ entry {} ({})", e.entry_id, e.reason()),
                )
            })
            .collect();
        let _ =
            crate::settle::history::append(store, &keys.history(), history_max_len, &records).await;
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: &str, pairs: &[(&str, &str)]) -> DlqEntry {
        DlqEntry {
            entry_id: id.into(),
            fields: pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    #[test]
    fn entry_ids_are_validated() {
        assert!(is_entry_id("1700000000000-0"));
        for bad in [
            "",
            "1-",
            "-1",
            "1-2-3",
            "../../x",
            "%2e%2e%2f",
            "*",
            "0-0 1-1",
            "\r\nDEL x",
            "a-1",
        ] {
            assert!(!is_entry_id(bad), "{bad}");
        }
    }

    #[test]
    fn filters_match_every_given_field() {
        let e = entry(
            &format!("{}-0", now_ms()),
            &[
                ("type", "a.b"),
                ("dlq_reason", "permanent_error"),
                ("dlq_group", "g"),
                ("dlq_error", "HTTP status 400: Bad"),
            ],
        );
        let f = |f: DlqFilter| f.compile().unwrap().matches(&e);
        assert!(f(DlqFilter {
            event_type: Some("a.b".into()),
            grep: Some("bad".into()),
            since: Some("1h".into()),
            ..Default::default()
        }));
        assert!(!f(DlqFilter {
            reason: Some("malformed".into()),
            ..Default::default()
        }));
        assert!(!f(DlqFilter {
            older_than: Some("1h".into()),
            ..Default::default()
        }));
        assert!(
            DlqFilter {
                event_type: Some("dlq".into()),
                ..Default::default()
            }
            .compile()
            .is_err()
        );
        assert!(
            DlqFilter {
                since: Some("soon".into()),
                ..Default::default()
            }
            .compile()
            .is_err()
        );
    }

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
            ],
        );
        let f = replay_fields(&e);
        assert_eq!(lookup(&f, "attempt"), Some("0"));
        assert_eq!(lookup(&f, "origin_entry_id"), Some("1-0"));
        assert_eq!(lookup(&f, "replay_count"), Some("2"));
        assert!(f.iter().all(|(k, _)| !k.starts_with("dlq_")));
    }
}
