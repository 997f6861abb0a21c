//! The reclaimer is responsible for entries left pending by consumers that are gone:
//! entries of a consumer whose heartbeat key expired are claimed at once; as a backstop,
//! any entry idle longer than `visibility_timeout` is claimed. Claimed entries carry their
//! delivery count, so a poison event that keeps killing workers reaches the DLQ: claimed
//! entries go through the same batches as read ones, where `consume::decide` returns the
//! `max_deliveries_exceeded` (or `malformed`) dead-letter verdict and `settle` moves and
//! counts it.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use prometheus::{IntCounter, IntCounterVec};

use crate::consume::dispatch::Dispatcher;
use crate::consume::streams::StreamSet;
use crate::model::keys::Keys;
use crate::redis::store::{PendingEntry, Store, StoreError};

/// What reclaiming needs: Redis, key names (heartbeats), the streams read, the dispatcher
/// claimed entries are handed to (it holds the permits and the in-flight registry), this
/// consumer's names, its timings and its counters.
pub(crate) struct Reclaimer {
    /// Redis.
    pub store: Store,
    /// Key names of the env (heartbeat keys, type of a stream).
    pub keys: Keys,
    /// Type streams being consumed.
    pub streams: StreamSet,
    /// `events:<env>:redeliver:<group>`.
    pub redeliver: String,
    /// Hands claimed entries to batch tasks.
    pub dispatcher: Arc<Dispatcher>,
    /// The env label.
    pub env: String,
    /// The group.
    pub group: String,
    /// This consumer's name.
    pub consumer: String,
    /// How often a reclaim pass runs.
    pub interval: Duration,
    /// Heartbeat key lifetime (dead-consumer cleanup and claim idle times follow it).
    pub heartbeat_ttl: Duration,
    /// Idle time past which any pending entry is claimed.
    pub visibility_timeout: Duration,
    /// `reclaimed_total`.
    pub reclaimed: IntCounterVec,
    /// `redis_errors_total{op="reclaim"}`.
    pub errors: IntCounter,
}

/// Most entries looked at per stream and pass.
const BATCH: usize = 100;

/// Claims entries pending on this consumer's own name that it is not handling: at start-up,
/// those of a previous run (same configured `consumer`); after a failed read, those of a
/// reply lost on the way. So they are not left waiting for the visibility-timeout backstop.
///
/// Only entries idle for `min_idle` are taken, so entries the reclaimer has just claimed
/// for this consumer (and is about to hand out) are left alone. The streams are asked
/// [`LEFTOVER_QUERIES`] at a time (one round trip for most configurations, instead of one
/// per stream before the first read).
pub async fn claim_own_leftovers(
    reclaimer: &Reclaimer,
    tracker: &TaskTracker,
    stop: &CancellationToken,
    min_idle: Duration,
) -> Result<(), StoreError> {
    let streams = reclaimer.streams.keys_and(&reclaimer.redeliver);
    let queries = streams
        .into_iter()
        .map(|stream| own_pending(reclaimer, stream, min_idle));
    let mut answers = futures::stream::iter(queries).buffered(LEFTOVER_QUERIES);
    while let Some((stream, mine)) = answers.next().await {
        let mine = mine?;
        if mine.is_empty() {
            continue;
        }
        let handling = reclaimer.dispatcher.in_flight.ids_on(&stream);
        let mine: Vec<PendingEntry> = mine
            .into_iter()
            .filter(|p| !handling.contains(&p.id))
            .collect();
        if !mine.is_empty() {
            info!(stream = %stream, count = mine.len(), "re-delivering entries pending on this consumer that it is not handling (previous run, or a read reply lost)");
            claim_and_dispatch(reclaimer, tracker, stop, &stream, mine, Duration::ZERO).await?;
        }
    }
    Ok(())
}

/// Leftover queries (XPENDING of one consumer) in flight at once.
const LEFTOVER_QUERIES: usize = 64;

/// The entries of `stream` pending on this consumer and idle for `min_idle`.
async fn own_pending(
    reclaimer: &Reclaimer,
    stream: String,
    min_idle: Duration,
) -> (String, Result<Vec<PendingEntry>, StoreError>) {
    let mine = reclaimer
        .store
        .pending_entries(
            &stream,
            &reclaimer.group,
            min_idle,
            BATCH * 10,
            Some(&reclaimer.consumer),
        )
        .await;
    (stream, mine)
}

/// Runs a reclaim pass every `reclaim_interval` until `stop`.
pub async fn run(reclaimer: Arc<Reclaimer>, stop: CancellationToken, tracker: TaskTracker) {
    let mut tick = tokio::time::interval(reclaimer.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_cleanup = std::time::Instant::now();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.cancelled() => return,
        }
        if last_cleanup.elapsed() >= CLEANUP_EVERY {
            last_cleanup = std::time::Instant::now();
            if let Err(e) = remove_dead_consumers(&reclaimer).await {
                warn!(error = %e, "removing dead consumers failed; will try again");
            }
        }
        if let Err(e) = reclaim_once(&reclaimer, &tracker, &stop).await {
            reclaimer.errors.inc();
            warn!(error = %e, "reclaim pass failed; will try again");
        }
    }
}

/// How often dead consumers are removed from the group.
const CLEANUP_EVERY: Duration = Duration::from_secs(30);

/// Removes consumers that are gone (no heartbeat), hold nothing (pending 0) and have been idle
/// for a while, so restarts with fresh `hostname-pid` names do not pile up consumers. A
/// consumer with pending entries is never deleted (its entries would become unclaimable).
async fn remove_dead_consumers(reclaimer: &Reclaimer) -> Result<(), StoreError> {
    let min_idle = (reclaimer.heartbeat_ttl * 3)
        .max(Duration::from_secs(60))
        .as_millis() as u64;
    for stream in reclaimer.streams.keys_and(&reclaimer.redeliver) {
        for (name, pending, idle) in reclaimer.store.consumers(&stream, &reclaimer.group).await? {
            if name == reclaimer.consumer || pending > 0 || idle < min_idle {
                continue;
            }
            if reclaimer
                .store
                .exists(&reclaimer.keys.heartbeat(&reclaimer.group, &name))
                .await?
            {
                continue;
            }
            reclaimer
                .store
                .delete_consumer(&stream, &reclaimer.group, &name)
                .await?;
            info!(stream = %stream, consumer = %name, "removed a dead consumer with nothing pending");
        }
    }
    Ok(())
}

/// Idle time a dead consumer's entry must have before we claim it: guards against two
/// reclaimers claiming the same entry (the first claim resets its idle time).
fn dead_claim_min_idle(reclaimer: &Reclaimer) -> Duration {
    (reclaimer.heartbeat_ttl / 3).min(Duration::from_secs(1))
}

async fn reclaim_once(
    reclaimer: &Reclaimer,
    tracker: &TaskTracker,
    stop: &CancellationToken,
) -> Result<(), StoreError> {
    // Refused writes (OOM, ...) hit every worker of the env alike: a peer's heartbeat that
    // lapsed then says nothing about that peer, and a claimed entry could not be settled
    // either. Claim nothing while this worker's own writes were refused within a heartbeat_ttl.
    if let Some((cause, _)) = reclaimer.store.refusals().recent(reclaimer.heartbeat_ttl) {
        debug!(
            cause = cause.label(),
            "not reclaiming: Redis refuses this worker's writes"
        );
        return Ok(());
    }
    for stream in reclaimer.streams.keys_and(&reclaimer.redeliver) {
        if stop.is_cancelled() {
            return Ok(());
        }
        let mut dead: Vec<PendingEntry> = Vec::new();
        for (consumer, _count) in reclaimer
            .store
            .pending_consumers(&stream, &reclaimer.group)
            .await?
        {
            if consumer == reclaimer.consumer {
                continue;
            }
            let heartbeat = reclaimer.keys.heartbeat(&reclaimer.group, &consumer);
            if !reclaimer.store.exists(&heartbeat).await? {
                dead.extend(
                    reclaimer
                        .store
                        .pending_entries(
                            &stream,
                            &reclaimer.group,
                            Duration::ZERO,
                            BATCH,
                            Some(&consumer),
                        )
                        .await?,
                );
            }
        }
        if !dead.is_empty() {
            info!(stream = %stream, count = dead.len(), "claiming entries of consumers whose heartbeat expired");
            claim_and_dispatch(
                reclaimer,
                tracker,
                stop,
                &stream,
                dead,
                dead_claim_min_idle(reclaimer),
            )
            .await?;
        }
        let mine: HashSet<String> = reclaimer.dispatcher.in_flight.ids_on(&stream);
        let stuck: Vec<PendingEntry> = reclaimer
            .store
            .pending_entries(
                &stream,
                &reclaimer.group,
                reclaimer.visibility_timeout,
                BATCH,
                None,
            )
            .await?
            .into_iter()
            .filter(|p| !mine.contains(&p.id))
            .collect();
        if !stuck.is_empty() {
            info!(stream = %stream, count = stuck.len(), "claiming entries pending longer than visibility_timeout");
            claim_and_dispatch(
                reclaimer,
                tracker,
                stop,
                &stream,
                stuck,
                reclaimer.visibility_timeout,
            )
            .await?;
        }
    }
    Ok(())
}

/// Takes permits, XCLAIMs the candidates in batches of free permits (no more than the free
/// handler slots), and dispatches them.
async fn claim_and_dispatch(
    reclaimer: &Reclaimer,
    tracker: &TaskTracker,
    stop: &CancellationToken,
    stream: &str,
    candidates: Vec<PendingEntry>,
    min_idle: Duration,
) -> Result<(), StoreError> {
    let mut rest = candidates.as_slice();
    while !rest.is_empty() {
        let Some(startable) = reclaimer.dispatcher.free_runs(stop).await else {
            return Ok(());
        };
        let first = tokio::select! {
            p = reclaimer.dispatcher.permits.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => return Ok(()) },
            _ = stop.cancelled() => return Ok(()),
        };
        let mut permits = vec![first];
        while permits.len() < rest.len().min(startable) {
            match reclaimer.dispatcher.permits.clone().try_acquire_owned() {
                Ok(p) => permits.push(p),
                Err(_) => break,
            }
        }
        let (batch, tail) = rest.split_at(permits.len());
        rest = tail;
        let ids: Vec<String> = batch.iter().map(|p| p.id.clone()).collect();
        let mut claimed = reclaimer
            .store
            .claim(
                stream,
                &reclaimer.group,
                &reclaimer.consumer,
                min_idle,
                &ids,
            )
            .await?;
        for entry in &mut claimed {
            let before = batch
                .iter()
                .find(|p| p.id == entry.id)
                .map(|p| p.deliveries)
                .unwrap_or(0);
            entry.deliveries = before + 1;
            let label = reclaimer.keys.type_of_stream(stream).unwrap_or("other");
            reclaimer
                .reclaimed
                .with_label_values(&[
                    reclaimer.env.as_str(),
                    reclaimer.group.as_str(),
                    reclaimer.streams.type_label(label),
                ])
                .inc();
        }
        if !reclaimer
            .dispatcher
            .dispatch(tracker, claimed, permits, stop)
            .await
        {
            return Ok(());
        }
    }
    Ok(())
}
