//! The consumer is responsible for reading: it takes free permits first, then asks
//! XREADGROUP for at most that many entries from the type streams whose breaker accepts
//! reads and from the group's redeliver stream, and hands each read batch to the
//! dispatcher (`consume::dispatch`), which spawns a task for it. On a Redis Cluster the
//! streams of a read are asked per slot group, paced by `consume::cluster_reads`.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use prometheus::IntCounter;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{error, warn};

use crate::consume::dispatch::Dispatcher;
use crate::consume::streams::StreamSet;
use crate::deliver::breaker::Breaker;
use crate::model::time::now_ms;
use crate::recover::discovery::Discovery;
use crate::recover::reclaim::Reclaimer;
use crate::redis::store::{Entry, Store};
use crate::worker::health::Health;

/// Longest block of a read that covers only some of the streams (fewer free slots than
/// streams).
const PARTIAL_READ_BLOCK: Duration = Duration::from_millis(10);

/// Longest wait for more free slots before a read (see the loop).
const GATHER: Duration = Duration::from_millis(1);

/// What the consumer reads with: Redis, the streams and their routes' breakers, the
/// dispatcher (permits, in-flight registry, batch pipeline), the reclaimer (for this
/// consumer's leftovers after a failed read), discovery (for keys that are not streams),
/// the health facts, and the read settings.
pub(crate) struct Reader {
    /// Redis.
    pub store: Store,
    /// Type streams being consumed.
    pub streams: StreamSet,
    /// Each route's breaker, by route index (a type stream is read while it accepts reads).
    pub breakers: Vec<Arc<Breaker>>,
    /// `events:<env>:redeliver:<group>`.
    pub redeliver: String,
    /// Hands read entries to batch tasks; holds the permits.
    pub dispatcher: Arc<Dispatcher>,
    /// Takes back this consumer's unseen pending entries after a failed read.
    pub reclaimer: Arc<Reclaimer>,
    /// Drops keys that turn out not to hold a stream.
    pub discovery: Arc<Discovery>,
    /// Health facts (`last_read_ms`).
    pub health: Arc<Health>,
    /// The group.
    pub group: String,
    /// This consumer's name.
    pub consumer: String,
    /// The read slots: `prefetch` (entries held, in flight plus waiting for a handler slot).
    pub concurrency: usize,
    /// Longest block of a read.
    pub read_block: Duration,
    /// `redis_errors_total{op="read"}`.
    pub errors: IntCounter,
    /// `groups_recreated_total{env,group}`.
    pub groups_recreated: IntCounter,
}

/// Reads until `stop` is cancelled; processing tasks are spawned on `tracker`. Keys that
/// turn out not to hold a stream are dropped through discovery.
pub async fn run(reader: Reader, stop: CancellationToken, tracker: TaskTracker) {
    let mut error_pause = Duration::from_millis(100);
    let mut last_error_log: Option<Instant> = None;
    let mut turn = 0usize;
    let mut quiet = QuietStreams::default();
    // On a cluster the reads are paced per slot group (`consume::cluster_reads`).
    let mut cluster = reader
        .store
        .is_cluster()
        .then(crate::consume::cluster_reads::ClusterReads::default);
    loop {
        let all = readable_streams(&reader);
        let first = tokio::select! {
            p = reader.dispatcher.permits.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => return },
            _ = stop.cancelled() => return,
        };
        let mut permits = Vec::with_capacity(reader.concurrency);
        permits.push(first);
        while let Ok(p) = reader.dispatcher.permits.clone().try_acquire_owned() {
            permits.push(p);
        }
        // Under load slots free up one by one; gather up to half of them for a moment so
        // reads stay large instead of one round trip per freed slot.
        let half = reader.concurrency / 2;
        if permits.len() < half {
            let gather = tokio::time::sleep(GATHER);
            tokio::pin!(gather);
            while permits.len() < half {
                tokio::select! {
                    p = reader.dispatcher.permits.clone().acquire_owned() => match p { Ok(p) => permits.push(p), Err(_) => return },
                    _ = &mut gather => break,
                    _ = stop.cancelled() => return,
                }
            }
        }
        let (free, at) = (permits.len(), turn);
        let read = async {
            match cluster.as_mut() {
                Some(c) => {
                    let who = (reader.group.as_str(), reader.consumer.as_str());
                    c.read(&reader.store, who, &all, free, reader.read_block)
                        .await
                }
                None => read_once(&reader, &all, free, at, &mut quiet).await,
            }
        };
        turn = turn.wrapping_add(permits.len().min(all.len()));
        let result = tokio::select! {
            r = read => r,
            _ = stop.cancelled() => return,
        };
        match result {
            Ok(entries) => {
                reader
                    .health
                    .last_read_ms
                    .store(now_ms(), Ordering::Relaxed);
                error_pause = Duration::from_millis(100);
                if !reader
                    .dispatcher
                    .dispatch(&tracker, entries, permits, &stop)
                    .await
                {
                    return;
                }
            }
            Err(e) => {
                drop(permits);
                reader.errors.inc();
                if e.is_wrong_type() {
                    if let Err(e) = reader.discovery.drop_wrong_types().await {
                        warn!(error = %e, "could not check stream key types");
                    }
                } else if e.is_nogroup() {
                    warn!(error = %e, "consumer group missing (stream deleted or Redis lost its data); recreating it at 0");
                    reader.groups_recreated.inc();
                    for key in &all {
                        if let Err(e) = reader.store.ensure_group(key, &reader.group).await {
                            warn!(error = %e, "could not recreate the group");
                        }
                    }
                } else if last_error_log.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) {
                    error!(error = %e, "reading from Redis failed; retrying with backoff");
                    last_error_log = Some(Instant::now());
                }
                tokio::select! {
                    _ = tokio::time::sleep(error_pause) => {}
                    _ = stop.cancelled() => return,
                }
                // A read cut off in flight may have delivered entries whose reply was lost:
                // they are pending on this consumer and nothing else will take them before
                // the visibility timeout.
                if let Err(e) = crate::recover::reclaim::claim_own_leftovers(
                    &reader.reclaimer,
                    &tracker,
                    &stop,
                    Duration::from_millis(50),
                )
                .await
                {
                    warn!(error = %e, "could not take back this consumer's unseen pending entries");
                }
                error_pause = (error_pause * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// Type streams whose handler's breaker accepts reads, then the redeliver stream.
fn readable_streams(reader: &Reader) -> Vec<String> {
    let mut keys: Vec<String> = reader
        .streams
        .snapshot()
        .iter()
        .filter(|s| reader.breakers[s.route].accepts_reads())
        .map(|s| s.key.clone())
        .collect();
    keys.push(reader.redeliver.clone());
    keys
}

/// Streams that came back empty from a recent read, with when. Under load the consumer
/// leaves them out of its reads for [`QUIET_RECHECK`], so their share of `COUNT` (Redis
/// applies one COUNT to every stream of a read) goes to streams that have entries; the
/// group's redeliver stream, empty most of the time, would otherwise halve every read.
#[derive(Default)]
struct QuietStreams {
    since: HashMap<String, Instant>,
}

/// How long a stream that was empty is left out of reads under load.
const QUIET_RECHECK: Duration = Duration::from_millis(50);

impl QuietStreams {
    /// The streams of `all` not known to be empty (and forgets streams no longer read).
    fn busy(&mut self, all: &[String]) -> Vec<String> {
        if self.since.len() > all.len() {
            self.since.retain(|s, _| all.contains(s));
        }
        all.iter()
            .filter(|s| {
                self.since
                    .get(s.as_str())
                    .is_none_or(|t| t.elapsed() >= QUIET_RECHECK)
            })
            .cloned()
            .collect()
    }

    /// Records which of the `asked` streams returned nothing.
    fn note(&mut self, asked: &[String], entries: &[Entry]) {
        for s in asked {
            if entries.iter().any(|e| e.stream == *s) {
                self.since.remove(s);
            } else if let Some(t) = self.since.get_mut(s) {
                *t = Instant::now();
            } else {
                self.since.insert(s.clone(), Instant::now());
            }
        }
    }
}

/// One read. Under load (some streams recently empty, others not) it first asks only the
/// busy streams (blocking up to [`PARTIAL_READ_BLOCK`] when they fit in one read and only the
/// redeliver stream is quiet, else without blocking, `free` at a time). Otherwise, when every
/// stream can be asked at once it is one blocking XREADGROUP (it blocks only when all are
/// empty). With fewer free slots than streams, the streams are first asked without blocking,
/// `free` at a time (so no stream with data waits behind an empty one); only when all were
/// empty does it block, briefly, on the first subset.
async fn read_once(
    reader: &Reader,
    all: &[String],
    free: usize,
    turn: usize,
    quiet: &mut QuietStreams,
) -> Result<Vec<Entry>, crate::redis::store::StoreError> {
    let busy = quiet.busy(all);
    if !busy.is_empty() && busy.len() < all.len() {
        // When every busy stream fits in one read and the only stream left out is the
        // group's redeliver stream, it blocks briefly: under a steady trickle the next entries
        // arrive on the read already waiting, instead of after an empty non-blocking read and
        // a second, blocking one (one round trip less per wake-up). A due retry waits at most
        // that block; an event on a quiet type stream must not, so with quiet type streams
        // the busy ones are asked without blocking and the blocking read covers them all.
        // (`busy` is a subset of `all`: exactly one stream is left out, the redeliver stream;
        // counted rather than searched for per stream, as a read may name thousands.)
        let only_redeliver_left_out = busy.len() + 1 == all.len()
            && all.contains(&reader.redeliver)
            && !busy.contains(&reader.redeliver);
        let entries = if busy.len() <= free && only_redeliver_left_out {
            let block = reader.read_block.min(PARTIAL_READ_BLOCK);
            read(reader, &busy, free / busy.len(), Some(block), quiet).await?
        } else {
            read_in_turn(reader, &busy, free, turn, quiet).await?
        };
        if !entries.is_empty() {
            return Ok(entries);
        }
    }
    let (first, count) = plan_read(all, free, turn);
    if first.len() < all.len() {
        let entries = read_in_turn(reader, all, free, turn, quiet).await?;
        if !entries.is_empty() {
            return Ok(entries);
        }
    }
    let block = if first.len() == all.len() {
        reader.read_block
    } else {
        reader.read_block.min(PARTIAL_READ_BLOCK)
    };
    read(reader, &first, count, Some(block), quiet).await
}

/// Asks `streams` without blocking, `free` at a time starting at `turn`, until one subset
/// returns entries.
async fn read_in_turn(
    reader: &Reader,
    streams: &[String],
    free: usize,
    turn: usize,
    quiet: &mut QuietStreams,
) -> Result<Vec<Entry>, crate::redis::store::StoreError> {
    for i in 0..streams.len().div_ceil(free.max(1)) {
        let (subset, count) = plan_read(streams, free, turn.wrapping_add(i * free));
        let entries = read(reader, &subset, count, None, quiet).await?;
        if !entries.is_empty() {
            return Ok(entries);
        }
    }
    Ok(Vec::new())
}

/// One XREADGROUP of `streams`, noting which came back empty.
async fn read(
    reader: &Reader,
    streams: &[String],
    count: usize,
    block: Option<Duration>,
    quiet: &mut QuietStreams,
) -> Result<Vec<Entry>, crate::redis::store::StoreError> {
    let entries = reader
        .store
        .read_group(&reader.group, &reader.consumer, streams, count, block)
        .await?;
    quiet.note(streams, &entries);
    Ok(entries)
}

/// Which streams one read asks and the COUNT for each, so that the total a read can return
/// never exceeds the `free` slots (Redis applies COUNT per stream). With fewer free slots
/// than streams, `free` streams are read in turn, starting at `turn`, one entry each.
fn plan_read(streams: &[String], free: usize, turn: usize) -> (Vec<String>, usize) {
    let k = streams.len().max(1);
    if free >= k {
        (streams.to_vec(), free / k)
    } else {
        let picked = (0..free).map(|i| streams[(turn + i) % k].clone()).collect();
        (picked, 1)
    }
}

#[cfg(test)]
mod tests {
    use super::plan_read;

    fn names(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("s{i}")).collect()
    }

    #[test]
    fn a_read_never_asks_for_more_than_the_free_slots() {
        for streams in 1..6 {
            for free in 1..20 {
                for turn in 0..7 {
                    let (picked, count) = plan_read(&names(streams), free, turn);
                    assert!(
                        picked.len() * count <= free,
                        "{streams} streams, {free} free"
                    );
                    assert!(count >= 1 && !picked.is_empty());
                }
            }
        }
    }

    #[test]
    fn scarce_slots_rotate_over_every_stream() {
        let all = names(3);
        let mut seen = std::collections::HashSet::new();
        let mut turn = 0;
        for _ in 0..3 {
            let (picked, _) = plan_read(&all, 1, turn);
            turn += picked.len();
            seen.extend(picked);
        }
        assert_eq!(seen.len(), 3);
    }
}
