//! The two actions on one retry: `retry-now` (forward it to the redeliver stream at once) and
//! `dead-letter` (move it to the DLQ with reason `operator`), each recorded in the history.

use super::{ActionOptions, Handle, MAX_SCAN, Outcome, RetryEntry, RetryError, entry, valid_group};
use crate::model::envelope::{field, lookup};
use crate::model::keys::Keys;
use crate::model::time::now_ms;
use crate::redis::store::{Store, StoreError};
use crate::settle::dlq_record::{self, Failure, Reason};
use crate::settle::history::{Record, kind};

/// The member of `group`'s set that `handle` names, if it is still there.
async fn find(
    store: &Store,
    key: &str,
    group: &str,
    handle: &Handle,
) -> Result<Option<(RetryEntry, String)>, StoreError> {
    let due = handle.due_ms.to_string();
    let same = store.zrange_by_score(key, &due, &due, MAX_SCAN).await?;
    Ok(same
        .into_iter()
        .find(|(m, _)| fred::util::sha1_hash(m) == handle.sha1)
        .map(|(m, s)| (entry(group, &m, s), m)))
}

/// Makes the member `handle` of `group`'s retry set due now: forwards it to the group's
/// redeliver stream with the scheduler's own script (`Store::forward_one`), so it runs at
/// the group's next read and a scheduler pass at the same time cannot forward it twice
/// (one script at a time; the second finds it gone). Idempotent: once forwarded, the
/// handle is [`Outcome::NotFound`]. Recorded in the history as `retried_now`.
///
/// # Errors
/// An invalid group or handle; Redis errors.
pub async fn retry_now(
    store: &Store,
    keys: &Keys,
    group: &str,
    handle: &str,
    opts: &ActionOptions<'_>,
) -> Result<Outcome, RetryError> {
    valid_group(group)?;
    let h = Handle::parse(handle)?;
    let key = keys.retry(group);
    let Some((e, _member)) = find(store, &key, group, &h).await? else {
        return Ok(Outcome::NotFound);
    };
    if !store
        .forward_one(&key, &keys.redeliver(group), h.due_ms, &h.sha1)
        .await?
    {
        return Ok(Outcome::NotFound);
    }
    let detail = format!("by {}; was due {}", opts.actor, e.due);
    record(store, keys, &e, kind::RETRIED_NOW, detail, opts).await;
    Ok(Outcome::Done)
}

/// Dead-letters the member `handle` of `group`'s retry set with reason `operator`: its
/// DLQ entry (the event's fields plus the `dlq_*` ones, `dlq_error` saying who and why) is
/// added and counted, and the member removed, in one script (`Store::retry_to_dlq`), so
/// the DLQ counts stay exact and neither the scheduler nor a repeated request moves it
/// again. Recorded in the history as `dead_lettered`.
///
/// # Errors
/// An invalid group or handle; Redis errors.
pub async fn dead_letter_now(
    store: &Store,
    keys: &Keys,
    group: &str,
    handle: &str,
    note: &str,
    opts: &ActionOptions<'_>,
) -> Result<Outcome, RetryError> {
    valid_group(group)?;
    let h = Handle::parse(handle)?;
    let key = keys.retry(group);
    let Some((e, member)) = find(store, &key, group, &h).await? else {
        return Ok(Outcome::NotFound);
    };
    let error = match note.trim() {
        "" => format!("dead-lettered from the retry set by {}", opts.actor),
        n => format!("dead-lettered from the retry set by {}: {n}", opts.actor),
    };
    let stream = keys.stream(&e.event_type);
    let fields = dlq_record::encode(
        &e.fields,
        &Failure {
            reason: Reason::Operator,
            error: &error,
            attempts: e.attempt,
            group,
            stream: &stream,
            entry_id: lookup(&e.fields, field::ORIGIN_ENTRY_ID).unwrap_or_default(),
            failed_at_ms: now_ms(),
            consumer: opts.actor,
        },
    );
    if store
        .retry_to_dlq(&key, &keys.dlq(), &member, &fields)
        .await?
        .is_none()
    {
        return Ok(Outcome::NotFound);
    }
    let detail = format!("{}: {error}", Reason::Operator.as_str());
    record(store, keys, &e, kind::DEAD_LETTERED, detail, opts).await;
    Ok(Outcome::Done)
}

/// Appends the action's history record (a failed append loses the record, not the action).
async fn record(
    store: &Store,
    keys: &Keys,
    e: &RetryEntry,
    kind: &'static str,
    detail: String,
    opts: &ActionOptions<'_>,
) {
    let r = Record::new(
        kind,
        &e.id,
        &e.event_type,
        &e.group,
        e.correlation_id.as_deref(),
        e.attempt,
        detail,
    );
    let _ =
        crate::settle::history::append(store, &keys.history(), opts.history_max_len, &[r]).await;
}
