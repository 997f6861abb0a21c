//! The retry sets page: entries in due order (per group, filtered by type, paged), each
//! group's depth, and "retry now" / "dead-letter now" on the selected entries (the same
//! operations as the API and the CLI, [`crate::ops::retries`], recorded in the history with
//! the actor `console`).

use axum::extract::Query;
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;

use crate::console::dlq::{given, query_of};
use crate::console::dlq_actions::ACTOR;
use crate::console::guard::{Console, PostForm};
use crate::console::{ConsoleError, render};
use crate::http::api::{REQUEST_TIMEOUT, bounded};
use crate::ops::retries::{self, ActionOptions, Outcome, RetryError, RetryQuery};

impl From<RetryError> for ConsoleError {
    fn from(e: RetryError) -> Self {
        match e {
            RetryError::Invalid(m) => ConsoleError(StatusCode::BAD_REQUEST, m),
            RetryError::Store(e) => crate::ops::dlq::DlqError::Store(e).into(),
        }
    }
}

/// Query of the page: group, type (exact or glob), the page cursor.
#[derive(Deserialize)]
pub struct RetryParams {
    group: Option<String>,
    #[serde(rename = "type")]
    event_type: Option<String>,
    cursor: Option<String>,
}

/// One row.
pub struct Row {
    group: String,
    event_type: String,
    id: String,
    attempt: u32,
    due: String,
    last_error: String,
    correlation_id: String,
    /// `<group> <handle>`: the checkbox value.
    pick: String,
}

/// The page.
#[derive(askama::Template)]
#[template(path = "console/retries.html")]
struct RetriesPage {
    nav: &'static str,
    csrf: String,
    group: String,
    event_type: String,
    depth: Vec<(String, u64)>,
    rows: Vec<Row>,
    next: Option<String>,
}

/// GET /ui/retries.
pub async fn page(c: Console, Query(p): Query<RetryParams>) -> Result<Response, ConsoleError> {
    let q = RetryQuery {
        group: given(p.group.as_deref()),
        event_type: given(p.event_type.as_deref()),
        cursor: given(p.cursor.as_deref()),
        limit: 50,
    };
    let page =
        bounded(async { Ok(retries::list(&c.worker.store, &c.worker.keys, &q).await?) }).await?;
    let mut pairs = Vec::new();
    for (k, v) in [("group", &q.group), ("type", &q.event_type)] {
        if let Some(v) = v {
            pairs.push((k.to_string(), v.clone()));
        }
    }
    let next = page.next_cursor.as_ref().map(|n| {
        let mut q = pairs.clone();
        q.push(("cursor".into(), n.clone()));
        format!("/ui/retries?{}", query_of(&q))
    });
    let rows = page
        .entries
        .into_iter()
        .map(|e| Row {
            pick: format!("{} {}", e.group, e.handle),
            group: e.group,
            event_type: e.event_type,
            id: e.id,
            attempt: e.attempt,
            due: e.due,
            last_error: e.last_error.unwrap_or_default(),
            correlation_id: e.correlation_id.unwrap_or_default(),
        })
        .collect();
    let page = RetriesPage {
        nav: "retries",
        csrf: c.csrf,
        group: q.group.unwrap_or_default(),
        event_type: q.event_type.unwrap_or_default(),
        depth: page.depth.into_iter().collect(),
        rows,
        next,
    };
    Ok(render(StatusCode::OK, &page))
}

/// The report of an action.
#[derive(askama::Template)]
#[template(path = "console/retry_done.html")]
struct DonePage {
    nav: &'static str,
    csrf: String,
    action: &'static str,
    done: usize,
    not_found: usize,
}

/// POST /ui/retries/retry-now: the selected entries are due now.
pub async fn retry_now(form: PostForm) -> Result<Response, ConsoleError> {
    act(form, "retry-now").await
}

/// POST /ui/retries/dead-letter: the selected entries go to the DLQ (reason `operator`,
/// the note in `dlq_error`).
pub async fn dead_letter(form: PostForm) -> Result<Response, ConsoleError> {
    act(form, "dead-letter").await
}

async fn act(form: PostForm, action: &'static str) -> Result<Response, ConsoleError> {
    let picks = form.all("pick");
    if picks.is_empty() {
        return Err(ConsoleError(
            StatusCode::BAD_REQUEST,
            "select at least one entry (the boxes in the list)".into(),
        ));
    }
    if picks.len() > 1_000 {
        return Err(ConsoleError(
            StatusCode::BAD_REQUEST,
            "at most 1000 entries per action".into(),
        ));
    }
    let note = form.get("note").unwrap_or_default();
    let worker = &form.console.worker;
    let opts = ActionOptions {
        actor: ACTOR,
        history_max_len: worker.history_max_len,
    };
    let run = async {
        let (mut done, mut not_found) = (0, 0);
        for pick in &picks {
            let Some((group, handle)) = pick.rsplit_once(' ') else {
                return Err(ConsoleError(
                    StatusCode::BAD_REQUEST,
                    "a malformed selection; reload the page".into(),
                ));
            };
            let outcome = if action == "retry-now" {
                retries::retry_now(&worker.store, &worker.keys, group, handle, &opts).await
            } else {
                retries::dead_letter_now(&worker.store, &worker.keys, group, handle, &note, &opts)
                    .await
            };
            match outcome? {
                Outcome::Done => done += 1,
                Outcome::NotFound => not_found += 1,
            }
        }
        Ok((done, not_found))
    };
    let (done, not_found) = tokio::time::timeout(REQUEST_TIMEOUT, run)
        .await
        .map_err(|_| {
            ConsoleError(
                StatusCode::SERVICE_UNAVAILABLE,
                "the action took too long (Redis slow or unreachable); see the history".into(),
            )
        })??;
    let page = DonePage {
        nav: "retries",
        csrf: form.console.csrf.clone(),
        action,
        done,
        not_found,
    };
    Ok(render(StatusCode::OK, &page))
}
