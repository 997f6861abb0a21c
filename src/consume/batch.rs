//! One read batch is processed by one task. Its entries are decided concurrently inside it
//! (one future each, `consume::decide`), each once it holds one of the `concurrency` handler
//! slots ([`Pipeline::runs`]; a read may hold up to `prefetch` entries, so some wait here, in
//! read order); whatever succeeded by the time the task looks is
//! handed to `settle::acks` in one request to the acker, while the rest keep running;
//! retries and dead letters are settled by `settle::moves`. Each entry's permit is released once its outcome is durable,
//! except that successes waiting only for their XACK move to a second pool of `concurrency`
//! permits ([`Pipeline::unacked`]) when it has room, so the next read overlaps the round trip:
//! at most `concurrency` events are being handled, and at most twice that are delivered
//! and not yet settled.
//!
//! One task per batch instead of one per event keeps task spawns, wake-ups and channel
//! traffic per batch rather than per event. Handler futures of one batch share that task:
//! CPU-heavy handler work belongs in `tokio::task::spawn_blocking`.

use std::collections::VecDeque;
use std::sync::Arc;

use futures::FutureExt;
use futures::stream::{FuturesUnordered, StreamExt};
use prometheus::IntGauge;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::consume::decide::{self, Decider};
use crate::model::text::Text;
use crate::redis::store::Entry;
use crate::settle::acker::AckItem;
use crate::settle::acks::{self, Success};
use crate::settle::history::Record;
use crate::settle::{Decision, Settler, Verdict, moves};

/// What a batch task needs: the decision step, the settling step, the second permit pool
/// and the in-flight gauge. Built once by `worker::run`; each batch task holds one `Arc`.
pub(crate) struct Pipeline {
    /// Decides each entry.
    pub decider: Decider,
    /// Settles each verdict.
    pub settler: Settler,
    /// `concurrency` handler slots: an entry's handler runs (and its retry or dead letter is
    /// settled) while it holds one.
    pub runs: Arc<Semaphore>,
    /// `concurrency` more permits for successes whose XACK is in flight.
    pub unacked: Arc<Semaphore>,
    /// `in_flight{env,group}`.
    pub gauge: IntGauge,
}

/// What became of one entry.
struct Handled {
    /// Stream key of the entry.
    stream: Text,
    /// Entry id.
    id: Text,
    /// What is left to do.
    step: Step,
    /// The `processed` record to write once a success is acknowledged.
    record: Option<Box<Record>>,
}

/// What is left to do for a handled entry.
enum Step {
    /// The handler succeeded: acknowledge the entry (together with the others of the
    /// batch), then count it and write the record to the history.
    Ack(Arc<crate::consume::type_facts::TypeFacts>),
    /// Retried or dead-lettered durably (or given up after Redis errors, so it stays
    /// pending); nothing is left to do.
    Settled,
}

/// Decides `entry` and settles every verdict but success, which the caller acknowledges
/// in a batch, holding a handler slot until the entry is decided and any retry or dead
/// letter settled. The caller registered the entry in `in_flight`.
///
/// One `async` block using its captures in place: this future is allocated once per event,
/// and `async fn`s nested here would each keep a second copy of their arguments (over
/// glibc's per-thread cache limit of about 1 KiB, the allocation takes the slow path).
#[expect(
    clippy::manual_async_fn,
    reason = "an async fn would store `entry` twice"
)]
fn handle_in_slot(
    pipeline: &Pipeline,
    mut entry: Entry,
    slot: OwnedSemaphorePermit,
) -> impl Future<Output = Handled> + '_ {
    async move {
        let Decision { verdict, record } =
            decide::decide(&pipeline.decider, &mut entry).finish().await;
        let (step, record) = match verdict {
            Verdict::Ack { facts } => (Step::Ack(facts), record),
            Verdict::Move(action) => {
                // Boxed: the settle future is large and rarely needed; inline it would make
                // every event's future that large.
                let record = record.map(|r| *r);
                Box::pin(moves::settle(&pipeline.settler, &entry, action, record)).await;
                (Step::Settled, None)
            }
        };
        drop(slot);
        Handled {
            stream: entry.stream,
            id: entry.id,
            step,
            record,
        }
    }
}

/// Handles `entries`, one permit each (the caller took them and registered the entries in
/// `in_flight`), each once it gets a handler slot; returns when every entry is settled or
/// given up. Once `stop` fires, entries still waiting for a slot are not started: they are
/// forgotten from `in_flight` and stay pending (claimed at once by another consumer after
/// this one's heartbeat is gone). `turn` (ordered dispatch) is released once every entry is
/// handled. Entries start in entry order and their futures are first polled in that order
/// (`FuturesUnordered` runs newly pushed futures in push order), so their handlers are
/// called in that order.
pub async fn run(
    pipeline: Arc<Pipeline>,
    entries: Vec<Entry>,
    mut permits: Vec<OwnedSemaphorePermit>,
    mut turn: Option<OwnedSemaphorePermit>,
    stop: CancellationToken,
) {
    let (settler, in_flight) = (&pipeline.settler, &pipeline.gauge);
    in_flight.add(entries.len() as i64);
    let mut waiting: VecDeque<Entry> = entries.into();
    let mut handling = FuturesUnordered::new();
    // Starts the waiting entries for which a handler slot is free now, in read order.
    let start_free = |waiting: &mut VecDeque<Entry>, handling: &mut FuturesUnordered<_>| {
        while !waiting.is_empty() {
            let Ok(slot) = pipeline.runs.clone().try_acquire_owned() else {
                return;
            };
            if let Some(entry) = waiting.pop_front() {
                handling.push(handle_in_slot(&pipeline, entry, slot));
            }
        }
    };
    start_free(&mut waiting, &mut handling);

    let mut acking = FuturesUnordered::new();
    let mut succeeded: Vec<Success> = Vec::new();
    let mut release = |n: usize| {
        permits.truncate(permits.len().saturating_sub(n));
        in_flight.sub(n as i64);
    };
    loop {
        tokio::select! {
            Some(first) = handling.next(), if !handling.is_empty() => {
                // This one and everything else that is ready now go into the same
                // acknowledgement (room made once: the entries are large to grow into).
                succeeded.reserve(handling.len() + 1);
                let mut settled = 0;
                let mut ready = Some(first);
                while let Some(h) = ready {
                    ready = handling.next().now_or_never().flatten();
                    let Handled { stream, id, step, record } = h;
                    match step {
                        Step::Ack(facts) => {
                            let delete = stream == settler.redeliver;
                            let item = AckItem { stream, id, delete };
                            succeeded.push(Success { item, record, facts });
                        }
                        Step::Settled => {
                            settler.in_flight.remove(&stream, &id);
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
                        .and_then(|k| pipeline.unacked.clone().try_acquire_many_owned(k).ok());
                    if handed_over.is_some() {
                        settled += k;
                    }
                    acking.push(acks::acknowledge(settler, std::mem::take(&mut succeeded), handed_over));
                }
                release(settled);
            }
            Some(n) = acking.next(), if !acking.is_empty() => release(n),
            slot = pipeline.runs.clone().acquire_owned(), if !waiting.is_empty() && !stop.is_cancelled() => {
                let (Ok(slot), Some(entry)) = (slot, waiting.pop_front()) else { continue };
                handling.push(handle_in_slot(&pipeline, entry, slot));
                start_free(&mut waiting, &mut handling);
            }
            _ = stop.cancelled(), if !waiting.is_empty() => {
                let n = waiting.len();
                for e in waiting.drain(..) {
                    settler.in_flight.remove(&e.stream, &e.id);
                }
                release(n);
            }
            else => break,
        }
        if handling.is_empty() && waiting.is_empty() {
            turn.take();
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    /// The largest allocation glibc serves from its per-thread cache (`tcache`); larger ones
    /// take the slower path (and trigger consolidation), once per event here.
    pub(crate) const TCACHE_MAX: usize = 1032;

    #[test]
    fn an_events_future_fits_the_allocators_fast_path() {
        fn size<'a, F, Fut>(_: F) -> usize
        where
            F: FnOnce(&'a super::Pipeline, super::Entry, super::OwnedSemaphorePermit) -> Fut,
        {
            std::mem::size_of::<Fut>()
        }
        // `FuturesUnordered` allocates the future with about 64 bytes of its own.
        let bytes = size(super::handle_in_slot) + 64;
        assert!(bytes <= TCACHE_MAX, "{bytes} bytes per event");
    }
}
