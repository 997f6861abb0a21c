//! Purging DLQ entries, each deletion recorded in the history.

use serde::Serialize;

use crate::model::envelope::{field, lookup};
use crate::model::keys::Keys;
use crate::ops::dlq::{DlqError, MAX_SELECTED, Selection, count_selected, select};
use crate::redis::store::Store;
use crate::settle::dlq_record::field as dlq;
use crate::settle::history::{Record, kind};

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

/// How a purge runs and who asked for it.
#[derive(Debug, Clone, Copy)]
pub struct PurgeOptions<'a> {
    /// Only count what would be deleted.
    pub dry_run: bool,
    /// Who purges (`cli`, `api`), recorded in the history.
    pub actor: &'a str,
    /// `[history] max_len`, for the history records of the purge.
    pub history_max_len: u64,
}

/// Deletes the selected entries and uncounts them (one script per 500). Each deletion is
/// recorded in the history. A dry run counts in Redis without reading the entries out.
///
/// # Errors
/// Invalid selection, or Redis errors.
pub async fn purge(
    store: &Store,
    keys: &Keys,
    selection: &Selection,
    opts: &PurgeOptions<'_>,
) -> Result<PurgeReport, DlqError> {
    let PurgeOptions {
        dry_run,
        actor,
        history_max_len,
    } = *opts;
    if dry_run {
        let (matched, _) = count_selected(store, keys, selection, MAX_SELECTED, 0).await?;
        return Ok(PurgeReport {
            matched,
            dry_run,
            ..Default::default()
        });
    }
    let entries = select(store, keys, selection, MAX_SELECTED).await?;
    let mut report = PurgeReport {
        matched: entries.len(),
        dry_run,
        ..Default::default()
    };
    for chunk in entries.chunks(500) {
        let ids: Vec<String> = chunk.iter().map(|e| e.entry_id.clone()).collect();
        report.purged += store.dlq_purge(&keys.dlq(), &ids).await?;
        let records: Vec<Record> = chunk
            .iter()
            .map(|e| {
                Record::new(
                    kind::PURGED,
                    e.get(field::ID),
                    e.event_type(),
                    e.group(),
                    lookup(&e.fields, field::CORRELATIONID),
                    e.get(dlq::ATTEMPTS).parse().unwrap_or(0),
                    format!("by {actor}; DLQ entry {} ({})", e.entry_id, e.reason()),
                )
            })
            .collect();
        let _ =
            crate::settle::history::append(store, &keys.history(), history_max_len, &records).await;
    }
    Ok(report)
}
