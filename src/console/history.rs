//! The history page: lifecycle records by event id or correlation id (the same query as
//! `GET /api/events/history`), shown as a timeline, oldest first.

use axum::extract::Query;
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;

use crate::console::dlq::given;
use crate::console::guard::Console;
use crate::console::{ConsoleError, render};
use crate::http::api::bounded;
use crate::ops::dlq::DlqError;
use crate::ops::history::{self, HistoryQuery};
use crate::settle::history::Record;

/// Search fields (in the URL).
#[derive(Deserialize)]
pub struct HistoryParams {
    id: Option<String>,
    correlation_id: Option<String>,
    #[serde(rename = "type")]
    event_type: Option<String>,
}

/// The history page.
#[derive(askama::Template)]
#[template(path = "console/history.html")]
struct HistoryPage {
    nav: &'static str,
    csrf: String,
    id: String,
    correlation_id: String,
    event_type: String,
    searched: bool,
    records: Vec<Record>,
}

/// Most records one search shows.
pub const LIMIT: usize = 500;

/// GET /ui/history: the search form and, when a field is given, the timeline.
pub async fn page(c: Console, Query(p): Query<HistoryParams>) -> Result<Response, ConsoleError> {
    let q = HistoryQuery {
        event_type: given(p.event_type.as_deref()),
        correlation_id: given(p.correlation_id.as_deref()),
        id: given(p.id.as_deref()),
        limit: LIMIT,
    };
    for v in [&q.id, &q.correlation_id, &q.event_type] {
        if v.as_ref().is_some_and(|v| v.len() > 256) {
            return Err(ConsoleError(
                StatusCode::BAD_REQUEST,
                "search values: at most 256 characters".into(),
            ));
        }
    }
    let searched = q.id.is_some() || q.correlation_id.is_some() || q.event_type.is_some();
    let mut records = if searched {
        bounded(async {
            let key = c.worker.keys.history();
            Ok(history::query(&c.worker.store, &key, &q)
                .await
                .map_err(DlqError::Store)?)
        })
        .await?
    } else {
        Vec::new()
    };
    records.reverse();
    let page = HistoryPage {
        nav: "history",
        csrf: c.csrf,
        id: q.id.unwrap_or_default(),
        correlation_id: q.correlation_id.unwrap_or_default(),
        event_type: q.event_type.unwrap_or_default(),
        searched,
        records,
    };
    Ok(render(StatusCode::OK, &page))
}
