//! Executing success verdicts: a read batch's successes are acknowledged together through
//! the acker (one XACK per stream for everything queued meanwhile), retried with backoff on
//! Redis errors; once acknowledged each is counted as a success
//! (`events_total{outcome="success"}`) and its `processed` record is written.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::OwnedSemaphorePermit;
use tracing::warn;

use crate::consume::type_facts::TypeFacts;
use crate::settle::acker::AckItem;
use crate::settle::history::Record;
use crate::settle::{Settler, pause_after_error};

/// Most attempts at acknowledging a group of successes before leaving them pending.
const ACK_ATTEMPTS: u32 = 10;

/// A success waiting for its acknowledgement.
pub(crate) struct Success {
    /// What to acknowledge.
    pub item: AckItem,
    /// The `processed` record (boxed, see `Decision::record`).
    pub record: Option<Box<Record>>,
    /// The type's metric handles (counted as a success once acknowledged).
    pub facts: Arc<TypeFacts>,
}

/// Acknowledges `succeeded` through the acker, retrying Redis failures with backoff for a
/// while, then counts them and writes their history records; returns how many handling
/// permits the caller may release now (none when the entries already moved to the
/// `unacked` pool, whose permits are released here). If it still fails, the entries stay
/// pending and are delivered again (at-least-once), uncounted.
pub(crate) async fn acknowledge(
    settler: &Settler,
    succeeded: Vec<Success>,
    unacked: Option<OwnedSemaphorePermit>,
) -> usize {
    let n = if unacked.is_some() {
        0
    } else {
        succeeded.len()
    };
    let mut items = Vec::with_capacity(succeeded.len());
    let mut done = Vec::with_capacity(succeeded.len());
    for s in succeeded {
        items.push(s.item);
        done.push((s.record, s.facts));
    }
    let mut items = Some(items);
    let mut backoff = Duration::from_millis(50);
    for attempt in 0..ACK_ATTEMPTS {
        let Some(batch) = items.take() else { break };
        let entries = batch.len();
        let (back, result) = settler.acker.ack_many(batch).await;
        match result {
            Ok(()) => {
                forget(settler, back.as_deref());
                for (record, facts) in done {
                    facts.success.inc();
                    if let Some(record) = record {
                        settler.history.record(*record);
                    }
                }
                return n;
            }
            Err(e) => {
                warn!(entries, attempt, error = %e, "could not acknowledge handled entries; retrying");
                items = back;
                pause_after_error(settler, &mut backoff).await;
            }
        }
    }
    // Left pending: no longer in flight, so a sweep of this consumer's entries takes them.
    forget(settler, items.as_deref());
    warn!(
        entries = done.len(),
        "acknowledgement not recorded; the entries stay pending and will be delivered again"
    );
    n
}

/// Removes acknowledged (or given up) entries from `in_flight`.
fn forget(settler: &Settler, items: Option<&[AckItem]>) {
    settler
        .in_flight
        .remove_all(items.unwrap_or_default(), |item| (&item.stream, &item.id));
}
