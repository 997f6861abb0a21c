//! Handing entries to batch tasks: the reader and the reclaimer both give what they read or
//! claimed to the [`Dispatcher`], which registers the entries as in flight, makes sure each
//! holds a handling permit and spawns one `consume::batch` task for them.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::consume::batch::{self, Pipeline};
use crate::consume::in_flight::InFlight;
use crate::redis::store::Entry;

/// The handling permits, the in-flight registry and the pipeline batches run. One per
/// worker, shared by the reader and the reclaimer.
pub(crate) struct Dispatcher {
    /// `prefetch` permits; one is held per event from read until it is handled and its
    /// outcome settled (or handed over to [`Pipeline::unacked`]). Handler runs are bounded
    /// separately, by [`Pipeline::runs`] (`concurrency`).
    pub permits: Arc<Semaphore>,
    /// Entries this consumer is handling now, with their start time (for idle refresh).
    pub in_flight: Arc<InFlight>,
    /// What each batch task runs.
    pub pipeline: Arc<Pipeline>,
    /// Set for a handler that needs its calls in stream order (the push projector): one
    /// permit, taken here before a batch task is spawned and released once every handler
    /// call of the batch has returned, so batches are handled one after the other (a batch's
    /// handlers are called in entry order within its task).
    pub ordered: Option<Arc<Semaphore>>,
}

impl Dispatcher {
    /// Waits until a handler slot is free and returns how many are free now (at least 1),
    /// or `None` when `stop` fires. The reclaimer claims only that many at a time, so an
    /// entry it claims (one more delivery counted against `max_deliveries`) can start at
    /// once instead of waiting behind a poison event that may crash the process again.
    pub async fn free_runs(&self, stop: &CancellationToken) -> Option<usize> {
        let runs = &self.pipeline.runs;
        let slot = tokio::select! {
            p = runs.clone().acquire_owned() => p.ok()?,
            _ = stop.cancelled() => return None,
        };
        let free = 1 + runs.available_permits();
        drop(slot);
        Some(free)
    }

    /// Spawns one task for the batch, with a permit per entry. Entries beyond the permits
    /// taken (a read of several streams can return `COUNT` from each) wait for permits first.
    /// Returns false when `stop` fired while waiting; the entries not spawned stay pending and
    /// are reclaimed.
    pub async fn dispatch(
        &self,
        tracker: &TaskTracker,
        entries: Vec<Entry>,
        mut permits: Vec<OwnedSemaphorePermit>,
        stop: &CancellationToken,
    ) -> bool {
        if entries.is_empty() {
            return true;
        }
        permits.truncate(entries.len());
        // Registered before waiting for permits: a sweep of this consumer's pending entries
        // (after a failed read) must not take them.
        self.in_flight.insert_batch(&entries);
        while permits.len() < entries.len() {
            tokio::select! {
                p = self.permits.clone().acquire_owned() => match p { Ok(p) => permits.push(p), Err(_) => return false },
                _ = stop.cancelled() => return false,
            }
        }
        let turn = match &self.ordered {
            Some(order) => tokio::select! {
                p = order.clone().acquire_owned() => match p { Ok(p) => Some(p), Err(_) => return false },
                _ = stop.cancelled() => return false,
            },
            None => None,
        };
        // Boxed: the future is large, and spawn would otherwise move it several times.
        tracker.spawn(Box::pin(batch::run(
            self.pipeline.clone(),
            entries,
            permits,
            turn,
            stop.clone(),
        )));
        true
    }
}
