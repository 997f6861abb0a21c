//! Reading the history back (the `history` CLI command, `GET /api/events/history` and the
//! console's timeline): matching records, newest first, with a bounded scan (of stream
//! entries: an aggregate of successes counts once and expands into its events).

use crate::redis::store::{Store, StoreError};
use crate::settle::aggregate;
use crate::settle::history::Record;

/// What to look for in the history.
#[derive(Debug, Clone, Default)]
pub struct HistoryQuery {
    /// Only this event type.
    pub event_type: Option<String>,
    /// Only this correlation id.
    pub correlation_id: Option<String>,
    /// Only this event id.
    pub id: Option<String>,
    /// Most records returned (clamped to 1..=1000).
    pub limit: usize,
}

/// Records scanned at most per query, so a query's cost is bounded.
pub const MAX_SCAN: usize = 50_000;

/// Matching records, newest first.
///
/// # Errors
/// Redis errors.
pub async fn query(store: &Store, key: &str, q: &HistoryQuery) -> Result<Vec<Record>, StoreError> {
    let limit = q.limit.clamp(1, 1000);
    let mut out = Vec::new();
    let mut end = "+".to_string();
    let mut scanned = 0;
    // What an aggregate of successes must mention to be worth parsing.
    let wanted: Vec<&str> = [&q.id, &q.correlation_id, &q.event_type]
        .into_iter()
        .filter_map(|v| v.as_deref())
        .collect();
    while scanned < MAX_SCAN && out.len() < limit {
        let page = store.xrevrange(key, &end, "-", 1000).await?;
        if page.is_empty() {
            break;
        }
        scanned += page.len();
        end = format!("({}", page.last().map(|e| e.id.as_str()).unwrap_or("0-0"));
        let mut records = Vec::new();
        for e in &page {
            records.clear();
            aggregate::expand(e, &wanted, &mut records);
            for r in records.drain(..) {
                let keep = q.event_type.as_ref().is_none_or(|t| *t == r.event_type)
                    && q.correlation_id
                        .as_ref()
                        .is_none_or(|c| *c == r.correlation_id)
                    && q.id.as_ref().is_none_or(|i| *i == r.id);
                if keep && out.len() < limit {
                    out.push(r);
                }
            }
            if out.len() >= limit {
                break;
            }
        }
        if page.len() < 1000 {
            break;
        }
    }
    Ok(out)
}
