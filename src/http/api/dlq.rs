//! The DLQ endpoints (token): list, stats, show one entry, replay and purge (rate-limited).
//! Replay and purge select entries by ids, `all`, or filter fields (exactly one of them).

use std::time::Duration;

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use crate::http::api::extract::{Authorized, Fields, JsonBody, RateLimited};
use crate::http::api::{ApiError, REQUEST_TIMEOUT, bounded};
use crate::http::state::WorkerView;
use crate::ops::coordination::{self, notice};
use crate::ops::dlq::{self, DlqFilter, ReplayOptions, Selection};

/// Query parameters of the list endpoint.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DlqListParams {
    #[serde(rename = "type")]
    event_type: Option<String>,
    reason: Option<String>,
    group: Option<String>,
    grep: Option<String>,
    since: Option<String>,
    limit: Option<usize>,
    before: Option<String>,
}

/// A page of entry summaries, newest first, with the cursor of the next page.
pub async fn list(
    Authorized(worker): Authorized,
    params: Result<Query<DlqListParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(p) = params?;
    let filter = DlqFilter {
        event_type: p.event_type,
        reason: p.reason,
        group: p.group,
        grep: p.grep,
        since: p.since,
        older_than: None,
    };
    bounded(async {
        let page = dlq::list(
            &worker.store,
            &worker.keys,
            &filter,
            p.limit.unwrap_or(50),
            p.before.as_deref(),
        )
        .await?;
        let entries: Vec<_> = page.entries.iter().map(|e| e.summary()).collect();
        Ok(Json(json!({"entries": entries, "next": page.next})).into_response())
    })
    .await
}

/// Counts by reason, type and group.
pub async fn stats(Authorized(worker): Authorized) -> Result<Response, ApiError> {
    bounded(async { Ok(Json(dlq::stats(&worker.store, &worker.keys).await?).into_response()) })
        .await
}

/// One entry in full; 404 when there is none with that id.
pub async fn show(
    Authorized(worker): Authorized,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    bounded(async {
        match dlq::show(&worker.store, &worker.keys, &id).await? {
            Some(e) => Ok(Json(e.to_json()).into_response()),
            None => Err(ApiError(
                StatusCode::NOT_FOUND,
                "no DLQ entry with that id".into(),
            )),
        }
    })
    .await
}

/// The fields of [`SelectBody`] (ids, all, and the filter's), then a body's own `$extra`.
macro_rules! select_fields {
    ($($extra:literal),*) => {
        &["ids", "all", "type", "reason", "group", "grep", "since", "older_than", $($extra),*]
    };
}

/// The selection part of replay and purge bodies: ids, all, or filter fields. Unknown
/// fields are refused by [`JsonBody`] (serde's `deny_unknown_fields` does not mix with
/// `flatten`).
#[derive(Debug, Deserialize, Default)]
struct SelectBody {
    ids: Option<Vec<String>>,
    all: Option<bool>,
    #[serde(flatten)]
    filter: DlqFilter,
}

impl SelectBody {
    fn selection(self) -> Result<Selection, ApiError> {
        selection(self.ids, self.all, self.filter)
    }
}

/// The replay body.
#[derive(Debug, Deserialize, Default)]
pub struct ReplayBody {
    #[serde(flatten)]
    select: SelectBody,
    dry_run: Option<bool>,
    rate: Option<f64>,
    canary: Option<usize>,
}

impl Fields for ReplayBody {
    const FIELDS: &'static [&'static str] = select_fields!("dry_run", "rate", "canary");
}

/// The purge body.
#[derive(Debug, Deserialize, Default)]
pub struct PurgeBody {
    #[serde(flatten)]
    select: SelectBody,
    dry_run: Option<bool>,
    confirm: Option<bool>,
}

impl Fields for PurgeBody {
    const FIELDS: &'static [&'static str] = select_fields!("dry_run", "confirm");
}

/// Exactly one of ids, all, or a filter.
fn selection(
    ids: Option<Vec<String>>,
    all: Option<bool>,
    filter: DlqFilter,
) -> Result<Selection, ApiError> {
    let has_filter = filter != DlqFilter::default();
    match (ids, all.unwrap_or(false), has_filter) {
        (Some(ids), false, false) => {
            if ids.len() > 10_000 {
                return Err(ApiError::bad("ids: at most 10000 per request"));
            }
            Ok(Selection::Ids(ids))
        }
        (None, true, false) => Ok(Selection::All),
        (None, false, true) => Ok(Selection::Filter(filter)),
        (None, false, false) => Err(ApiError::bad(
            "select entries with \"ids\", \"all\": true, or filter fields (type, reason, group, grep, since, older_than)",
        )),
        _ => Err(ApiError::bad(
            "give only one of \"ids\", \"all\", or filter fields",
        )),
    }
}

/// Replays the selection (optionally paced, with a canary); counts and announces it. 200 with
/// the report, or 409 with the same report when the replay stopped early (`stopped` says
/// why: a canary dead-lettered again, or its outcome unknown in time).
pub async fn replay(
    Authorized(worker): Authorized,
    _: RateLimited,
    JsonBody(b): JsonBody<ReplayBody>,
) -> Result<Response, ApiError> {
    let sel = b.select.selection()?;
    if b.rate.is_some_and(|r| !(r > 0.0 && r <= 100_000.0)) {
        return Err(ApiError::bad(
            "rate: must be between 0 and 100000 per second",
        ));
    }
    let opts = ReplayOptions {
        dry_run: b.dry_run.unwrap_or(false),
        rate: b.rate,
        canary: b.canary,
        canary_timeout: Duration::from_secs(20),
        actor: "api".into(),
        history_max_len: worker.history_max_len,
    };
    let timeout = if opts.canary.is_some() || opts.rate.is_some() {
        Duration::from_secs(300)
    } else {
        REQUEST_TIMEOUT
    };
    let report = tokio::time::timeout(
        timeout,
        dlq::replay(&worker.store, &worker.keys, &sel, &opts),
    )
    .await
    .map_err(|_| {
        ApiError::unavailable("the replay took too long; it may have partly run (see the history)")
    })??;
    replayed(&worker, &report, "api");
    // A replay that stopped (a canary failed again, or its outcome is unknown) is a
    // conflict with what the operator asked for: 409, with the same report.
    let status = if report.stopped.is_some() {
        StatusCode::CONFLICT
    } else {
        StatusCode::OK
    };
    Ok((status, Json(report)).into_response())
}

/// Deletes the selection for good (`confirm: true`, or `dry_run: true` to count first).
pub async fn purge(
    Authorized(worker): Authorized,
    _: RateLimited,
    JsonBody(b): JsonBody<PurgeBody>,
) -> Result<Response, ApiError> {
    let dry_run = b.dry_run.unwrap_or(false);
    if !dry_run && b.confirm != Some(true) {
        return Err(ApiError::bad(
            "purge deletes entries for good: send \"confirm\": true (or \"dry_run\": true to count first)",
        ));
    }
    let sel = b.select.selection()?;
    bounded(async {
        let opts = dlq::PurgeOptions {
            dry_run,
            actor: "api",
            history_max_len: worker.history_max_len,
        };
        let report = dlq::purge(&worker.store, &worker.keys, &sel, &opts).await?;
        purged(&worker, &report, "api");
        Ok(Json(report).into_response())
    })
    .await
}

/// What follows a replay done by `actor` (`api`, `console`): the replayed counters by group
/// and type, and the coordination notice. Nothing for a dry run or when nothing moved.
pub(crate) fn replayed(worker: &WorkerView, report: &dlq::ReplayReport, actor: &str) {
    if report.dry_run || report.replayed == 0 {
        return;
    }
    for (gt, n) in &report.by_group_type {
        let (g, t) = gt.split_once('/').unwrap_or((gt, ""));
        worker
            .metrics
            .dlq_replayed_total
            .with_label_values(&[&worker.env, g, worker.type_label(t)])
            .inc_by(*n);
    }
    announce(
        worker,
        coordination::kind::DLQ_REPLAYED,
        json!({"count": report.replayed, "by": actor}),
    );
}

/// What follows a purge done by `actor`: the purged counter and the coordination notice.
pub(crate) fn purged(worker: &WorkerView, report: &dlq::PurgeReport, actor: &str) {
    if report.purged == 0 {
        return;
    }
    worker
        .metrics
        .dlq_purged_total
        .with_label_values(&[&worker.env])
        .inc_by(report.purged);
    announce(
        worker,
        coordination::kind::DLQ_PURGED,
        json!({"count": report.purged, "by": actor}),
    );
}

/// Sends a coordination notice of an operator action.
fn announce(worker: &WorkerView, kind: &str, extra: serde_json::Value) {
    worker.notices.send(notice(
        kind,
        &worker.env,
        &worker.group,
        &worker.consumer,
        extra,
    ));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_selection_is_exactly_one_of_ids_all_or_a_filter() {
        let f = DlqFilter {
            reason: Some("malformed".into()),
            ..Default::default()
        };
        assert!(matches!(
            selection(Some(vec!["1-0".into()]), None, DlqFilter::default()),
            Ok(Selection::Ids(_))
        ));
        assert!(matches!(
            selection(None, Some(true), DlqFilter::default()),
            Ok(Selection::All)
        ));
        assert!(matches!(
            selection(None, None, f.clone()),
            Ok(Selection::Filter(_))
        ));
        assert!(selection(None, None, DlqFilter::default()).is_err());
        assert!(selection(Some(vec![]), Some(true), f).is_err());
    }
}
