//! Reading the DLQ: pages of matching entries, one entry, and the selection replay and
//! purge act on (or its count, for dry runs).

use std::collections::HashSet;

use serde::Serialize;

use crate::model::keys::Keys;
use crate::ops::dlq::filter::Compiled;
use crate::ops::dlq::{DlqEntry, DlqError, DlqFilter, is_entry_id};
use crate::redis::dlq::{Direction, ScanStep};
use crate::redis::store::Store;

/// A page of entries, newest first, and the cursor for the next page.
#[derive(Debug, Clone, Serialize)]
pub struct Page {
    /// Matching entries.
    pub entries: Vec<DlqEntry>,
    /// Pass as `before` to get the next page; `None` at the end.
    pub next: Option<String>,
}

/// DLQ entries one scan step reads (one script call of a few milliseconds); a filtered
/// list or selection goes on step by step until it has what it needs or the DLQ ends.
pub const SCAN_STEP: usize = 5_000;

/// The smaller of two exclusive upper bounds (`(<id>`), or `+`.
fn lower_end(a: Option<String>, b: Option<String>) -> String {
    let key = |s: &String| {
        let (ms, seq) = s
            .trim_start_matches('(')
            .split_once('-')
            .unwrap_or(("0", "0"));
        (
            ms.parse::<u64>().unwrap_or(0),
            seq.parse::<u64>().unwrap_or(0),
        )
    };
    [a, b]
        .into_iter()
        .flatten()
        .min_by_key(key)
        .unwrap_or_else(|| "+".into())
}

/// Lists entries matching `filter`, newest first, at most `limit` (1..=1000), older than
/// the `before` cursor when given. Scans on in steps of [`SCAN_STEP`] entries (the type,
/// reason and group compared in Redis) until the page is full or the DLQ ends, so a first
/// page is empty only when nothing matches.
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
    let start = compiled.range_start();
    let mut end = lower_end(before.map(|b| format!("({b}")), compiled.range_end());
    let exact = compiled.exact();
    let mut out: Vec<DlqEntry> = Vec::new();
    loop {
        let step = ScanStep {
            direction: Direction::Newest,
            start: &start,
            end: &end,
            count: match (exact.iter().all(Option::is_none), compiled.exact_only()) {
                (true, true) => limit + 1,
                (_, false) => 1000,
                (false, true) => SCAN_STEP,
            },
            exact,
            // With `grep`, checked here, every entry the script returns may still fail.
            most: if compiled.exact_only() {
                limit + 1 - out.len()
            } else {
                SCAN_STEP
            },
            count_only: false,
        };
        let found = store.dlq_scan(&dlq, &step).await?;
        for e in found.entries {
            let e = DlqEntry::from_entry(e);
            if compiled.matches(&e) {
                if out.len() == limit {
                    // One more match exists: the page is full and has a next page.
                    let next = out.last().map(|e| e.entry_id.clone());
                    return Ok(Page { entries: out, next });
                }
                out.push(e);
            }
        }
        match found.last {
            Some(last) => end = format!("({last}"),
            None => {
                return Ok(Page {
                    entries: out,
                    next: None,
                });
            }
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
            scan_forward(store, &dlq, compiled.as_ref(), false, max, |e| {
                let e = DlqEntry::from_entry(e);
                if compiled.as_ref().is_none_or(|c| c.matches(&e)) {
                    out.push(e);
                }
                out.len()
            })
            .await?;
            Ok(out)
        }
    }
}

/// How many entries `selection` selects (at most `max`) and the first `sample` of them,
/// without reading the others out of Redis unless a `grep` filter needs their text: the
/// scan script counts the matches of the type, reason, group and time filters in Redis.
///
/// # Errors
/// Invalid ids or filter, or Redis errors.
pub async fn count_selected(
    store: &Store,
    keys: &Keys,
    selection: &Selection,
    max: usize,
    sample: usize,
) -> Result<(usize, Vec<DlqEntry>), DlqError> {
    let compiled = match selection {
        Selection::Filter(f) if *f != DlqFilter::default() => f.compile()?,
        Selection::Filter(_) | Selection::Ids(_) => {
            let all = select(store, keys, selection, max).await?;
            return Ok((all.len(), all.into_iter().take(sample).collect()));
        }
        Selection::All => {
            let first = select(store, keys, selection, sample).await?;
            let n = store.xlen(&keys.dlq()).await? as usize;
            return Ok((n.min(max), first));
        }
    };
    if !compiled.exact_only() {
        let all = select(store, keys, selection, max).await?;
        return Ok((all.len(), all.into_iter().take(sample).collect()));
    }
    let first = select(store, keys, selection, sample).await?;
    if first.len() < sample {
        return Ok((first.len(), first));
    }
    let dlq = keys.dlq();
    let n = scan_forward(store, &dlq, Some(&compiled), true, max, |_| 0).await?;
    Ok((n, first))
}

/// Scans `dlq` oldest first in steps of [`SCAN_STEP`], within the filter's time range and
/// keeping its type, reason and group (in Redis), until `max` matches or the end. Each
/// entry goes to `keep`, which returns how many were kept so far; when `count_only`, no
/// entry is read out and the count of matches is returned.
async fn scan_forward(
    store: &Store,
    dlq: &str,
    compiled: Option<&Compiled>,
    count_only: bool,
    max: usize,
    mut keep: impl FnMut(crate::redis::store::Entry) -> usize,
) -> Result<usize, DlqError> {
    let mut start = compiled
        .map(Compiled::range_start)
        .unwrap_or_else(|| "-".into());
    let end = lower_end(compiled.and_then(Compiled::range_end), None);
    let exact = compiled.map(Compiled::exact).unwrap_or_default();
    let mut kept = 0;
    while kept < max {
        let step = ScanStep {
            direction: Direction::Oldest,
            start: &start,
            end: &end,
            count: SCAN_STEP,
            exact,
            most: max - kept,
            count_only,
        };
        let found = store.dlq_scan(dlq, &step).await?;
        if count_only {
            kept += found.matched as usize;
        }
        for e in found.entries {
            kept = keep(e);
            if kept >= max {
                return Ok(kept);
            }
        }
        match found.last {
            Some(last) => start = format!("({last}"),
            None => break,
        }
    }
    Ok(kept)
}

/// Most entries one replay or purge acts on.
pub const MAX_SELECTED: usize = 1_000_000;

#[cfg(test)]
mod tests {
    use super::lower_end;

    #[test]
    fn the_lower_exclusive_end_wins() {
        let s = |v: &str| Some(v.to_string());
        assert_eq!(lower_end(s("(10-5"), s("(9-0")), "(9-0");
        assert_eq!(lower_end(s("(10-5"), s("(10-10")), "(10-5");
        assert_eq!(lower_end(None, s("(9-0")), "(9-0");
        assert_eq!(lower_end(None, None), "+");
    }
}
