//! Draining a log into Redis: oldest first, each record acknowledged (and so removed) only
//! after Redis confirmed its publish.

use crate::config::PublishConfig;
use crate::model::keys::Keys;
use crate::ops::publish::{NewEvent, PublishError, Published};
use crate::redis::store::Store;

use super::error::OutboxError;
use super::log::Log;

/// How much one [`drain_into`] call does.
#[derive(Debug, Clone, Copy)]
pub struct DrainOptions {
    /// Records read (and acknowledged) together; a crash re-publishes at most this many.
    pub batch: usize,
    /// Stop after this many records (`None`: until the log is empty).
    pub limit: Option<u64>,
}

impl Default for DrainOptions {
    fn default() -> Self {
        DrainOptions {
            batch: 100,
            limit: None,
        }
    }
}

/// What a drain did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DrainReport {
    /// Records published and acknowledged.
    pub drained: u64,
    /// Records still in the log.
    pub remaining: u64,
}

/// Why a drain stopped early (records drained before it stay drained).
#[derive(Debug, thiserror::Error)]
pub enum DrainError {
    /// The log failed.
    #[error(transparent)]
    Outbox(#[from] OutboxError),
    /// Redis refused or failed: the record stays queued and is tried again next time.
    #[error("outbox record {seq} (event {id}) was not published, it stays queued: {source}")]
    Publish {
        /// Its sequence.
        seq: u64,
        /// The event id.
        id: String,
        /// Why.
        source: PublishError,
    },
    /// A record that is no outbox event: it stays queued, and draining stops at it so it is
    /// never skipped silently.
    #[error(
        "outbox record {seq} in {dir} is not an event this version can publish ({cause}); \
         draining stopped there and the record stays queued; run the version that queued it"
    )]
    Unreadable {
        /// Its sequence.
        seq: u64,
        /// The directory.
        dir: String,
        /// The decoder's message.
        cause: String,
    },
}

/// The one call that writes a queued event to Redis: the idempotent publish by (type, id)
/// (every queued event carries its id), so re-publishing the unconfirmed batch after a crash
/// between the XADD and the ack writes nothing (README "Idempotent publish").
async fn publish_queued(
    store: &Store,
    keys: &Keys,
    guard: &PublishConfig,
    event: NewEvent,
) -> Result<Published, PublishError> {
    debug_assert!(event.id.is_some(), "queued events carry their id");
    crate::ops::publish::publish(store, keys, guard, event).await
}

/// Publishes the records of `log` oldest first through [`publish_queued`], acknowledging
/// each batch once Redis confirmed all of it; on a failure, acknowledges the confirmed
/// prefix, rewinds to the first unconfirmed record and returns the error.
///
/// # Errors
/// [`DrainError`]: the record that failed stays queued.
pub async fn drain_into(
    store: &Store,
    keys: &Keys,
    guard: &PublishConfig,
    log: &mut Log,
    options: DrainOptions,
) -> Result<DrainReport, DrainError> {
    let mut drained = 0u64;
    loop {
        let room = options.limit.map_or(u64::MAX, |l| l - drained);
        let want = options
            .batch
            .max(1)
            .min(room.min(usize::MAX as u64) as usize);
        if want == 0 {
            break;
        }
        let records = log.read(want)?;
        if records.is_empty() {
            break;
        }
        let mut confirmed = None;
        for record in records {
            let result = match super::event::decode(&record.payload) {
                Ok(event) => {
                    let id = event.id.clone().unwrap_or_default();
                    publish_queued(store, keys, guard, event)
                        .await
                        .map_err(|source| DrainError::Publish {
                            seq: record.seq,
                            id,
                            source,
                        })
                }
                Err(cause) => Err(DrainError::Unreadable {
                    seq: record.seq,
                    dir: log.dir().display().to_string(),
                    cause,
                }),
            };
            if let Err(e) = result {
                if let Some(seq) = confirmed {
                    log.ack(seq)?;
                }
                log.rewind();
                return Err(e);
            }
            confirmed = Some(record.seq);
            drained += 1;
        }
        if let Some(seq) = confirmed {
            log.ack(seq)?;
        }
    }
    Ok(DrainReport {
        drained,
        remaining: log.depth(),
    })
}
