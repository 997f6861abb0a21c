//! The retry-set and instances endpoints (token): list the retry sets in due order, make
//! entries due now or dead-letter them (rate-limited, by handle), and list the instances.

use axum::Json;
use axum::extract::Query;
use axum::extract::rejection::QueryRejection;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use crate::http::api::extract::{Authorized, Fields, JsonBody, RateLimited};
use crate::http::api::{ApiError, bounded};
use crate::ops::retries::{self, ActionOptions, Outcome, RetryError, RetryQuery};

/// Most handles one action request takes.
pub const MAX_HANDLES: usize = 1000;

/// Query parameters of the list endpoint.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryListParams {
    group: Option<String>,
    #[serde(rename = "type")]
    event_type: Option<String>,
    cursor: Option<String>,
    limit: Option<usize>,
}

/// One page of retry entries in due order, with the cursor of the next page and the depth
/// of each group's retry set.
pub async fn list(
    Authorized(worker): Authorized,
    params: Result<Query<RetryListParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(p) = params?;
    let q = RetryQuery {
        group: p.group.filter(|g| !g.is_empty()),
        event_type: p.event_type.filter(|t| !t.is_empty()),
        cursor: p.cursor.filter(|c| !c.is_empty()),
        limit: p.limit.unwrap_or(0),
    };
    bounded(async {
        let page = retries::list(&worker.store, &worker.keys, &q).await?;
        Ok(Json(page).into_response())
    })
    .await
}

/// The body of both actions: the group and one handle or several.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ActionBody {
    group: Option<String>,
    handle: Option<String>,
    handles: Option<Vec<String>>,
    note: Option<String>,
}

impl Fields for ActionBody {
    const FIELDS: &'static [&'static str] = &["group", "handle", "handles", "note"];
}

impl ActionBody {
    /// The group and the handles, checked for presence and count.
    fn target(self) -> Result<(String, Vec<String>, String), ApiError> {
        let group = self.group.filter(|g| !g.is_empty()).ok_or_else(|| {
            ApiError::bad("group: required (the group whose retry set holds the entries)")
        })?;
        let handles = match (self.handle, self.handles) {
            (Some(h), None) => vec![h],
            (None, Some(hs)) if !hs.is_empty() && hs.len() <= MAX_HANDLES => hs,
            (None, Some(hs)) if hs.len() > MAX_HANDLES => {
                return Err(ApiError::bad(format!(
                    "handles: at most {MAX_HANDLES} per request"
                )));
            }
            _ => {
                return Err(ApiError::bad(
                    "send one of \"handle\" or \"handles\" (as GET /api/events/retries lists them)",
                ));
            }
        };
        // Every handle is checked first, so a malformed one refuses the whole request.
        for h in &handles {
            retries::Handle::parse(h)?;
        }
        Ok((group, handles, self.note.unwrap_or_default()))
    }
}

/// What an action did: 200 with `{"done", "not_found"}`, or 404 with the same counts and
/// an `error` when no handle was found.
fn report(group: &str, done: u64, not_found: u64) -> Response {
    if done == 0 && not_found > 0 {
        let error = format!(
            "no entry with that handle in the retry set of group `{group}` (forwarded, retried \
             or dead-lettered meanwhile); list it again with GET /api/events/retries"
        );
        let body = json!({"error": error, "done": done, "not_found": not_found});
        return (StatusCode::NOT_FOUND, Json(body)).into_response();
    }
    Json(json!({"done": done, "not_found": not_found})).into_response()
}

/// Runs `act` on each handle in turn and answers with [`report`] of the outcomes.
async fn each_handle<F, Fut>(
    group: &str,
    handles: &[String],
    mut act: F,
) -> Result<Response, ApiError>
where
    F: FnMut(String) -> Fut,
    Fut: std::future::Future<Output = Result<Outcome, RetryError>>,
{
    bounded(async {
        let (mut done, mut not_found) = (0, 0);
        for h in handles {
            match act(h.clone()).await? {
                Outcome::Done => done += 1,
                Outcome::NotFound => not_found += 1,
            }
        }
        Ok(report(group, done, not_found))
    })
    .await
}

/// Makes the entries due now: forwarded to the group's redeliver stream, run at its next
/// read.
pub async fn retry_now(
    Authorized(worker): Authorized,
    _: RateLimited,
    JsonBody(b): JsonBody<ActionBody>,
) -> Result<Response, ApiError> {
    let (group, handles, _) = b.target()?;
    let opts = ActionOptions {
        actor: "api",
        history_max_len: worker.history_max_len,
    };
    let (w, g, o) = (&worker, group.as_str(), &opts);
    each_handle(g, &handles, |h| async move {
        retries::retry_now(&w.store, &w.keys, g, &h, o).await
    })
    .await
}

/// Dead-letters the entries with reason `operator` (`note` goes into `dlq_error`).
pub async fn dead_letter(
    Authorized(worker): Authorized,
    _: RateLimited,
    JsonBody(b): JsonBody<ActionBody>,
) -> Result<Response, ApiError> {
    let (group, handles, note) = b.target()?;
    let opts = ActionOptions {
        actor: "api",
        history_max_len: worker.history_max_len,
    };
    let (w, g, n, o) = (&worker, group.as_str(), note.as_str(), &opts);
    each_handle(g, &handles, |h| async move {
        retries::dead_letter_now(&w.store, &w.keys, g, &h, n, o).await
    })
    .await
}

/// Live instances (heartbeats) and every consumer of the env's groups, with pending entries
/// and idle time per stream.
pub async fn instances(Authorized(worker): Authorized) -> Result<Response, ApiError> {
    bounded(async {
        let list = crate::ops::instances::list(&worker.store, &worker.keys)
            .await
            .map_err(RetryError::from)?;
        Ok(Json(json!({"instances": list})).into_response())
    })
    .await
}

impl From<RetryError> for ApiError {
    fn from(e: RetryError) -> Self {
        match e {
            RetryError::Invalid(m) => ApiError::bad(m),
            RetryError::Store(e) => {
                tracing::warn!(error = %e, "API request failed in Redis");
                ApiError::unavailable(format!("{e}; try again"))
            }
        }
    }
}
