//! The DLQ pages: the filtered, paged list (filters in the URL) and one entry with all its
//! fields, `data` pretty-printed, long values cut with a link to the whole entry.

use axum::extract::{Path, Query};
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;

use crate::console::guard::{Console, url_encode};
use crate::console::{ConsoleError, render};
use crate::http::api::bounded;
use crate::model::envelope::field;
use crate::ops::dlq::{self, DlqFilter, is_entry_id};
use crate::settle::dlq_record::field as dlqf;

/// Longest value shown before "show all".
pub const SHOW_MAX: usize = 2_000;

/// Entries per page.
pub const PAGE: usize = 50;

/// The filter fields as they appear in URLs and forms, in order.
pub const FILTER_FIELDS: [&str; 6] = ["type", "reason", "group", "grep", "since", "older_than"];

/// Query of the list page: the filters, the cursor, the page size.
#[derive(Deserialize, Default)]
pub struct ListParams {
    #[serde(rename = "type")]
    event_type: Option<String>,
    reason: Option<String>,
    group: Option<String>,
    grep: Option<String>,
    since: Option<String>,
    older_than: Option<String>,
    before: Option<String>,
    limit: Option<usize>,
}

/// `Some(trimmed)` for a non-empty value.
pub fn given(v: Option<&str>) -> Option<String> {
    v.map(str::trim).filter(|v| !v.is_empty()).map(String::from)
}

impl ListParams {
    fn filter(&self) -> DlqFilter {
        DlqFilter {
            event_type: given(self.event_type.as_deref()),
            reason: given(self.reason.as_deref()),
            group: given(self.group.as_deref()),
            grep: given(self.grep.as_deref()),
            since: given(self.since.as_deref()),
            older_than: given(self.older_than.as_deref()),
        }
    }
}

/// The filter's fields as (name, value) pairs, the given ones only.
pub fn filter_pairs(f: &DlqFilter) -> Vec<(String, String)> {
    let values = [
        &f.event_type,
        &f.reason,
        &f.group,
        &f.grep,
        &f.since,
        &f.older_than,
    ];
    FILTER_FIELDS
        .iter()
        .zip(values)
        .filter_map(|(k, v)| v.as_ref().map(|v| (k.to_string(), v.clone())))
        .collect()
}

/// A query string of `pairs` (percent-encoded, without `?`).
pub fn query_of(pairs: &[(String, String)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={}", url_encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// One row of the list.
pub struct Row {
    entry_id: String,
    id: String,
    event_type: String,
    group: String,
    reason: String,
    attempts: String,
    failed_at: String,
    error: String,
}

/// The list page.
#[derive(askama::Template)]
#[template(path = "console/dlq.html")]
struct ListPage {
    nav: &'static str,
    csrf: String,
    /// Filter values for the form (empty when not given).
    f: [(String, String); 6],
    /// The filters as hidden fields of the action forms.
    hidden: Vec<(String, String)>,
    rows: Vec<Row>,
    /// Link to the next (older) page, filters kept.
    next: Option<String>,
    /// Link to the first page, filters kept.
    first: String,
    paged: bool,
    filtered: bool,
}

/// GET /ui/dlq: the filtered list, newest first, [`PAGE`] per page.
pub async fn list(c: Console, Query(p): Query<ListParams>) -> Result<Response, ConsoleError> {
    let filter = p.filter();
    let before = given(p.before.as_deref());
    let limit = p.limit.unwrap_or(PAGE).clamp(1, 500);
    let page = bounded(async {
        Ok(dlq::list(
            &c.worker.store,
            &c.worker.keys,
            &filter,
            limit,
            before.as_deref(),
        )
        .await?)
    })
    .await?;
    let pairs = filter_pairs(&filter);
    let query = query_of(&pairs);
    let next = page.next.as_ref().map(|n| {
        let mut q = pairs.clone();
        q.push(("before".into(), n.clone()));
        format!("/ui/dlq?{}", query_of(&q))
    });
    let f = FILTER_FIELDS.map(|k| {
        let v = pairs.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        (k.to_string(), v.unwrap_or_default())
    });
    let rows = page
        .entries
        .iter()
        .map(|e| Row {
            entry_id: e.entry_id.clone(),
            id: e.get(field::ID).to_string(),
            event_type: e.event_type().to_string(),
            group: e.group().to_string(),
            reason: e.reason().to_string(),
            attempts: e.get(dlqf::ATTEMPTS).to_string(),
            failed_at: e.get(dlqf::FAILED_AT).to_string(),
            error: crate::model::envelope::truncate(e.get(dlqf::ERROR), 200),
        })
        .collect();
    let page = ListPage {
        nav: "dlq",
        csrf: c.csrf,
        f,
        filtered: !pairs.is_empty(),
        hidden: pairs,
        rows,
        next,
        first: format!("/ui/dlq?{query}"),
        paged: before.is_some(),
    };
    Ok(render(StatusCode::OK, &page))
}

/// One field of an entry.
pub struct FieldRow {
    name: String,
    value: String,
    cut: bool,
}

/// The entry page.
#[derive(askama::Template)]
#[template(path = "console/entry.html")]
struct EntryPage {
    nav: &'static str,
    csrf: String,
    entry_id: String,
    id: String,
    correlation_id: String,
    data: String,
    data_cut: bool,
    fields: Vec<FieldRow>,
    full: bool,
}

/// `?full=1` shows every value whole.
#[derive(Deserialize)]
pub struct EntryParams {
    full: Option<String>,
}

/// GET /ui/dlq/entry/{id}: every field; `data` pretty-printed when it is JSON.
pub async fn entry(
    c: Console,
    Path(entry_id): Path<String>,
    Query(p): Query<EntryParams>,
) -> Result<Response, ConsoleError> {
    if !is_entry_id(&entry_id) {
        return Err(ConsoleError(
            StatusCode::BAD_REQUEST,
            "not a DLQ entry id (such as 1700000000000-0)".into(),
        ));
    }
    let full = p.full.is_some();
    let found =
        bounded(async { Ok(dlq::show(&c.worker.store, &c.worker.keys, &entry_id).await?) }).await?;
    let Some(e) = found else {
        return Err(ConsoleError(
            StatusCode::NOT_FOUND,
            format!("no DLQ entry {entry_id} (replayed or purged already?)"),
        ));
    };
    let cut = |v: &str| -> (String, bool) {
        if full || v.chars().count() <= SHOW_MAX {
            (v.to_string(), false)
        } else {
            (v.chars().take(SHOW_MAX).collect(), true)
        }
    };
    let raw = e.get(field::DATA);
    let pretty = serde_json::from_str::<serde_json::Value>(raw)
        .ok()
        .and_then(|v| serde_json::to_string_pretty(&v).ok())
        .unwrap_or_else(|| raw.to_string());
    let (data, data_cut) = cut(&pretty);
    let fields = e
        .fields
        .iter()
        .filter(|(k, _)| k != field::DATA)
        .map(|(k, v)| {
            let (value, cut) = cut(v);
            FieldRow {
                name: k.clone(),
                value,
                cut,
            }
        })
        .collect();
    let page = EntryPage {
        nav: "dlq",
        csrf: c.csrf,
        id: e.get(field::ID).to_string(),
        correlation_id: e.get(field::CORRELATIONID).to_string(),
        entry_id,
        data,
        data_cut,
        fields,
        full,
    };
    Ok(render(StatusCode::OK, &page))
}
