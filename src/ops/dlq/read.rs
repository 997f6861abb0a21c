//! Reading the DLQ: pages of matching entries, one entry, counts, and the selection
//! replay and purge act on.

use std::collections::{BTreeMap, HashSet};

use serde::Serialize;

use crate::model::keys::Keys;
use crate::model::time::{entry_id_ms, rfc3339};
use crate::ops::dlq::{DlqEntry, DlqError, DlqFilter, is_entry_id};
use crate::redis::store::Store;

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
    /// The oldest entry.
    pub oldest: Option<At>,
    /// The newest entry.
    pub newest: Option<At>,
    /// Whether the counts cover every entry (false past [`MAX_SCAN`] entries).
    pub complete: bool,
}

/// A DLQ entry and when it was dead-lettered: `{"id": "<entry id>", "time": "<RFC 3339>"}`.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct At {
    /// The DLQ entry id.
    pub id: String,
    /// Its time (from the entry id), RFC 3339.
    pub time: String,
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
            let at = |id: &str| At {
                id: id.to_string(),
                time: entry_id_ms(id).map(rfc3339).unwrap_or_default(),
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
