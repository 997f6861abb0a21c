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
    let found = resolve(shared).await?;
    let known = shared.streams();
    for s in &found {
        if !known.iter().any(|k| k.key == s.key) {
            shared.store.ensure_group(&s.key, shared.group()).await?;
            info!(stream = %s.key, group = shared.group(), "consuming stream");
        }
    }
    if let Ok(mut w) = shared.streams.write() {
        *w = Arc::new(found);
    }
    Ok(())
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
