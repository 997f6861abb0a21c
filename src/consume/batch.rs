//! One read batch is processed by one task. Its entries are handled concurrently inside it
//! (one future each); whatever succeeded by the time the task looks is acknowledged in one
//! request to the acker, while the rest keep running; retries and dead letters are settled
//! by their own atomic moves. Each entry's permit is released once its outcome is durable,
//! except that successes waiting only for their XACK move to a second pool of `concurrency`
//! permits (`Shared::unacked`) when it has room, so the next read overlaps the round trip:
//! at most `concurrency` events are being handled, and at most twice that are delivered
//! and not yet settled.
//!
//! One task per batch instead of one per event keeps task spawns, wake-ups and channel
//! traffic per batch rather than per event. Handler futures of one batch share that task:
//! CPU-heavy handler work belongs in `tokio::task::spawn_blocking`.

use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use futures::stream::{FuturesUnordered, StreamExt};
use tokio::sync::OwnedSemaphorePermit;
use tracing::warn;

use crate::consume::decide::{self, Handled, Step};
use crate::redis::store::Entry;
use crate::settle::acker::AckItem;
use crate::settle::history::Record;
use crate::worker::shared::Shared;

/// Most attempts at acknowledging a group of successes before leaving them pending.
const ACK_ATTEMPTS: u32 = 10;

/// Handles `entries`, one permit each (the caller took them and registered the entries in
/// `in_flight`); returns when every entry is settled or given up.
pub async fn run(shared: Arc<Shared>, entries: Vec<Entry>, mut permits: Vec<OwnedSemaphorePermit>) {
    let in_flight = shared
        .metrics
        .in_flight
        .with_label_values(&[shared.env(), shared.group()]);
    in_flight.add(entries.len() as i64);
    let mut handling: FuturesUnordered<_> = entries
        .into_iter()
        .map(|e| decide::handle(&shared, e))
        .collect();

    let mut acking = FuturesUnordered::new();
    let mut succeeded: Vec<(AckItem, Option<Record>)> = Vec::new();
    let mut release = |n: usize| {
        permits.truncate(permits.len().saturating_sub(n));
        in_flight.sub(n as i64);
    };
    loop {
        tokio::select! {
            Some(first) = handling.next(), if !handling.is_empty() => {
                let mut done = vec![first];
                // Everything else that is ready now goes into the same acknowledgement.
                while let Some(Some(h)) = handling.next().now_or_never() {
                    done.push(h);
                }
                let mut settled = 0;
                for h in done {
                    let Handled { stream, id, step, record } = h;
                    match step {
                        Step::Ack => {
                            let delete = stream == shared.redeliver;
                            succeeded.push((AckItem { stream, id, delete }, record));
                        }
                        Step::Settled => {
                            shared.in_flight.remove(&stream, &id);
                            settled += 1;
                        }
                    }
                }
                if !succeeded.is_empty() {
                    // Successes waiting for their XACK hand their permits over to the
                    // unacked pool when it has room, so the next read need not wait for
                    // the round trip; otherwise they keep them until the XACK is answered.
                    let k = succeeded.len();
                    let handed_over = u32::try_from(k)
                        .ok()
                        .and_then(|k| shared.unacked.clone().try_acquire_many_owned(k).ok());
                    if handed_over.is_some() {
                        settled += k;
                    }
                    acking.push(acknowledge(&shared, std::mem::take(&mut succeeded), handed_over));
                }
                release(settled);
            }
            Some(n) = acking.next(), if !acking.is_empty() => release(n),
            else => break,
        }
    }
}

/// Acknowledges `succeeded` through the acker, retrying Redis failures with backoff for a
/// while, then writes their history records; returns how many handling permits the caller
/// may release now (none when the entries already moved to the `unacked` pool, whose
/// permits are released here). If it still fails, the entries stay pending and are
/// delivered again (at-least-once).
async fn acknowledge(
    shared: &Shared,
    succeeded: Vec<(AckItem, Option<Record>)>,
    unacked: Option<OwnedSemaphorePermit>,
) -> usize {
    let n = if unacked.is_some() {
        0
    } else {
        succeeded.len()
    };
    let (items, records): (Vec<AckItem>, Vec<Option<Record>>) = succeeded.into_iter().unzip();
    let mut items = Some(items);
    let mut backoff = Duration::from_millis(50);
    for attempt in 0..ACK_ATTEMPTS {
        let Some(batch) = items.take() else { break };
        let entries = batch.len();
        let (back, result) = shared.acker.ack_many(batch).await;
        match result {
            Ok(()) => {
                forget(shared, back.as_deref());
                for record in records.into_iter().flatten() {
                    shared.history.record(record);
                }
                return n;
            }
            Err(e) => {
                warn!(entries, attempt, error = %e, "could not acknowledge handled entries; retrying");
                items = back;
                decide::pause_after_settle_error(shared, &mut backoff).await;
            }
        }
    }
    // Left pending: no longer in flight, so a sweep of this consumer's entries takes them.
    forget(shared, items.as_deref());
    warn!(
        entries = records.len(),
        "acknowledgement not recorded; the entries stay pending and will be delivered again"
    );
    n
}

/// Removes acknowledged (or given up) entries from `in_flight`.
fn forget(shared: &Shared, items: Option<&[AckItem]>) {
    for item in items.unwrap_or_default() {
        shared.in_flight.remove(&item.stream, &item.id);
    }
}
