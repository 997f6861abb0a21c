//! The DLQ actions: replay (a dry-run count first, then the replay, optionally with a
//! canary) and purge (a dry-run count first, then a typed confirmation). Each runs the same
//! operation as the API ([`crate::ops::dlq`], which records it in the history with the
//! actor `console`), counts it in the same metrics and announces it the same way.

use std::time::Duration;

use axum::http::StatusCode;
use axum::response::Response;

use crate::console::dlq::{FILTER_FIELDS, filter_pairs, query_of};
use crate::console::guard::PostForm;
use crate::console::{ConsoleError, render};
use crate::http::api::{REQUEST_TIMEOUT, bounded};
use crate::ops::dlq::{self, DlqFilter, PurgeOptions, ReplayOptions, Selection};

/// Who the history records name for console actions.
pub const ACTOR: &str = "console";

/// Most ids one form may select.
const MAX_IDS: usize = 10_000;

/// How long a canary replay waits for the canaries' outcome.
const CANARY_TIMEOUT: Duration = Duration::from_secs(20);

/// What a form selected: its hidden fields (to carry to the next step) and the selection.
struct Chosen {
    hidden: Vec<(String, String)>,
    selection: Selection,
    /// Where "back to the list" goes (the filters kept).
    back: String,
}

/// The selection of a form: `mode=ids` with `ids`, or `mode=filter` with filter fields
/// (none: the whole DLQ).
fn chosen(form: &PostForm) -> Result<Chosen, ConsoleError> {
    let bad = |m: &str| ConsoleError(StatusCode::BAD_REQUEST, m.to_string());
    match form.get("mode").as_deref() {
        Some("ids") => {
            let ids = form.all("ids");
            if ids.is_empty() {
                return Err(bad("select at least one entry (the boxes in the list)"));
            }
            if ids.len() > MAX_IDS {
                return Err(bad("at most 10000 entries per action; use a filter"));
            }
            let mut hidden = vec![("mode".to_string(), "ids".to_string())];
            hidden.extend(ids.iter().map(|i| ("ids".to_string(), i.clone())));
            Ok(Chosen {
                hidden,
                selection: Selection::Ids(ids),
                back: "/ui/dlq".into(),
            })
        }
        Some("filter") => {
            let value = |k: &str| form.get(k);
            let filter = DlqFilter {
                event_type: value(FILTER_FIELDS[0]),
                reason: value(FILTER_FIELDS[1]),
                group: value(FILTER_FIELDS[2]),
                grep: value(FILTER_FIELDS[3]),
                since: value(FILTER_FIELDS[4]),
                older_than: value(FILTER_FIELDS[5]),
            };
            let pairs = filter_pairs(&filter);
            let mut hidden = vec![("mode".to_string(), "filter".to_string())];
            hidden.extend(pairs.iter().cloned());
            let selection = if pairs.is_empty() {
                Selection::All
            } else {
                Selection::Filter(filter)
            };
            Ok(Chosen {
                hidden,
                selection,
                back: format!("/ui/dlq?{}", query_of(&pairs)),
            })
        }
        _ => Err(bad("the form names no selection (mode=ids or mode=filter)")),
    }
}

/// The answer of an action: a count to confirm, or a report.
#[derive(askama::Template)]
#[template(path = "console/action.html")]
struct ActionPage {
    nav: &'static str,
    csrf: String,
    /// `replay` or `purge`.
    action: &'static str,
    /// True for a dry-run answer (the confirm form follows).
    dry_run: bool,
    matched: usize,
    hidden: Vec<(String, String)>,
    /// The report's fields.
    report: Vec<(String, String)>,
    /// Why a replay stopped early.
    stopped: Option<String>,
    back: String,
}

/// The report's top-level fields as text, arrays and objects as JSON.
fn report_rows(v: &serde_json::Value) -> Vec<(String, String)> {
    v.as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| {
            let text = match v {
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            (k.clone(), text)
        })
        .collect()
}

/// POST /ui/dlq/replay: `step=dry_run` counts and shows the confirm form; `step=run`
/// replays (with `canary=N`, the first N go first and the rest only when they did not
/// fail again).
pub async fn replay(form: PostForm) -> Result<Response, ConsoleError> {
    let ch = chosen(&form)?;
    let dry_run = form.get("step").as_deref() != Some("run");
    let canary = match form.get("canary") {
        None => None,
        Some(n) => match n.parse::<usize>() {
            Ok(0) => None,
            Ok(n) => Some(n),
            Err(_) => {
                return Err(ConsoleError(
                    StatusCode::BAD_REQUEST,
                    "canary: a whole number of entries (or empty for none)".into(),
                ));
            }
        },
    };
    let worker = &form.console.worker;
    let opts = ReplayOptions {
        dry_run,
        rate: None,
        canary,
        canary_timeout: CANARY_TIMEOUT,
        actor: ACTOR.into(),
        history_max_len: worker.history_max_len,
    };
    let timeout = if canary.is_some() {
        Duration::from_secs(300)
    } else {
        REQUEST_TIMEOUT
    };
    let report = tokio::time::timeout(
        timeout,
        dlq::replay(&worker.store, &worker.keys, &ch.selection, &opts),
    )
    .await
    .map_err(|_| {
        ConsoleError(
            StatusCode::SERVICE_UNAVAILABLE,
            "the replay took too long; it may have partly run (see the history)".into(),
        )
    })??;
    crate::http::api::dlq::replayed(worker, &report, ACTOR);
    let status = if report.stopped.is_some() {
        StatusCode::CONFLICT
    } else {
        StatusCode::OK
    };
    let page = ActionPage {
        nav: "dlq",
        csrf: form.console.csrf.clone(),
        action: "replay",
        dry_run,
        matched: report.matched,
        hidden: ch.hidden,
        report: report_rows(&serde_json::to_value(&report).unwrap_or_default()),
        stopped: report.stopped.clone(),
        back: ch.back,
    };
    Ok(render(status, &page))
}

/// POST /ui/dlq/purge: `step=dry_run` counts and asks to type `purge N`; `step=run` with
/// `confirm` equal to `purge <count>` deletes for good.
pub async fn purge(form: PostForm) -> Result<Response, ConsoleError> {
    let ch = chosen(&form)?;
    let dry_run = form.get("step").as_deref() != Some("run");
    if !dry_run {
        let count = form.get("count").unwrap_or_default();
        let want = format!("purge {count}");
        if form.get("confirm").as_deref() != Some(want.as_str()) {
            return Err(ConsoleError(
                StatusCode::BAD_REQUEST,
                format!(
                    "not purged: type exactly `{want}` in the confirmation box to delete these \
                     entries for good"
                ),
            ));
        }
    }
    let worker = &form.console.worker;
    let report = bounded(async {
        let opts = PurgeOptions {
            dry_run,
            actor: ACTOR,
            history_max_len: worker.history_max_len,
        };
        Ok(dlq::purge(&worker.store, &worker.keys, &ch.selection, &opts).await?)
    })
    .await?;
    crate::http::api::dlq::purged(worker, &report, ACTOR);
    let page = ActionPage {
        nav: "dlq",
        csrf: form.console.csrf.clone(),
        action: "purge",
        dry_run,
        matched: report.matched,
        hidden: ch.hidden,
        report: report_rows(&serde_json::to_value(&report).unwrap_or_default()),
        stopped: None,
        back: ch.back,
    };
    Ok(render(StatusCode::OK, &page))
}
