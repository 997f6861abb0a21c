//! Discovery is responsible for the set of type streams to consume: exact route types
//! always, and every existing `events:<env>:*` stream a route glob matches (found with
//! SCAN at start and every `discovery_interval`, so new types are picked up). Each new
//! stream gets the consumer group, created at `0`.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::shared::{Shared, TypeStream};
use crate::store::StoreError;

/// Most streams one worker follows; more are ignored with a warning.
const MAX_STREAMS: usize = 2000;

/// Type streams the routes select now. Exact types come first, in route order.
///
/// # Errors
/// Redis errors from SCAN.
pub async fn resolve(shared: &Shared) -> Result<Vec<TypeStream>, StoreError> {
    let mut types: Vec<String> = Vec::new();
    for route in &shared.routes {
        for p in &route.patterns {
            if !p.contains('*') && !types.contains(p) {
                types.push(p.clone());
            }
        }
    }
    if shared
        .routes
        .iter()
        .any(|r| r.patterns.iter().any(|p| p.contains('*')))
    {
        let pattern = format!("{}*", shared.keys.prefix());
        for key in shared.store.scan_streams(&pattern, MAX_STREAMS).await? {
            if let Some(t) = shared.keys.type_of_stream(&key)
                && !types.iter().any(|x| x == t)
            {
                types.push(t.to_string());
            }
        }
    }
    let mut streams: Vec<TypeStream> = types
        .into_iter()
        .filter_map(|t| {
            shared.route_for(&t).map(|route| TypeStream {
                key: shared.keys.stream(&t),
                event_type: t,
                route,
            })
        })
        .collect();
    if streams.len() > MAX_STREAMS {
        warn!(
            count = streams.len(),
            max = MAX_STREAMS,
            "too many matching streams; following the first ones only"
        );
        streams.truncate(MAX_STREAMS);
    }
    Ok(streams)
}

/// Resolves the streams, creates the group on new ones, and publishes the new set.
///
/// # Errors
/// Redis errors.
pub async fn refresh(shared: &Shared) -> Result<(), StoreError> {
    let mut found = resolve(shared).await?;
    let known = shared.streams();
    let mut unusable = Vec::new();
    for (index, s) in found.iter().enumerate() {
        if !known.iter().any(|k| k.key == s.key) {
            match shared.store.ensure_group(&s.key, shared.group()).await {
                Ok(()) => {
                    info!(stream = %s.key, group = shared.group(), "consuming stream");
                    let label = if index < crate::shared::MAX_TYPE_LABELS {
                        s.event_type.as_str()
                    } else {
                        "other"
                    };
                    start_series(shared, label);
                }
                Err(e) if e.is_wrong_type() => {
                    warn!(key = %s.key, "key holds a value that is not a stream; not consuming it (fix or delete the key)");
                    unusable.push(s.key.clone());
                }
                Err(e) => return Err(e),
            }
        }
    }
    found.retain(|s| !unusable.contains(&s.key));
    if let Ok(mut w) = shared.streams.write() {
        *w = Arc::new(found);
    }
    Ok(())
}

/// Creates the per-type counters at 0, so dashboards and `increase()` see them before the
/// first event (the Prometheus crate exports a labelled series only once it exists).
fn start_series(shared: &Shared, event_type: &str) {
    let m = &shared.metrics;
    let (env, group) = (shared.env(), shared.group());
    m.reclaimed_total
        .with_label_values(&[env, group, event_type])
        .inc_by(0);
    m.dlq_replayed_total
        .with_label_values(&[env, group, event_type])
        .inc_by(0);
    m.published_total
        .with_label_values(&[env, event_type])
        .inc_by(0);
    m.stream_trimmed_total
        .with_label_values(&[env, event_type])
        .inc_by(0);
}

/// Refreshes every `discovery_interval` until `stop`.
pub async fn run(shared: Arc<Shared>, stop: CancellationToken) {
    let mut tick = tokio::time::interval(shared.cfg.discovery_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.cancelled() => return,
        }
        if let Err(e) = refresh(&shared).await {
            shared
                .metrics
                .redis_errors_total
                .with_label_values(&[shared.env(), "discovery"])
                .inc();
            warn!(error = %e, "stream discovery failed; will try again");
        }
    }
}

/// Drops consumed keys that no longer hold a stream (someone SET or deleted-and-reused the
/// key), so one bad key cannot stop the reads of every other stream. Called when a read
/// fails with WRONGTYPE; discovery re-adds the key once it is a stream again.
///
/// # Errors
/// Redis errors.
pub async fn drop_wrong_types(shared: &Shared) -> Result<(), StoreError> {
    let mut keep = Vec::new();
    for s in shared.streams().iter() {
        match shared.store.key_type(&s.key).await?.as_str() {
            "stream" | "none" => keep.push(s.clone()),
            other => {
                warn!(key = %s.key, kind = other, "key holds a value that is not a stream; not consuming it (fix or delete the key)")
            }
        }
    }
    if let Ok(mut w) = shared.streams.write() {
        *w = Arc::new(keep);
    }
    Ok(())
}
