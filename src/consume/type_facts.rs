//! What the hot path needs to know about an event type, resolved once instead of per event:
//! its metric label (see [`Shared::type_label`]), the route serving it, and the metric
//! handles of its label. The cache is dropped whenever the set of consumed streams changes
//! (labels depend on it) and is bounded, so random types cannot grow it.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use prometheus::{Histogram, IntCounter};

use crate::worker::shared::{Shared, TypeStream};

/// Most types cached at once; past it the cache starts over.
const MAX_CACHED: usize = 1024;

/// Facts about one event type.
pub struct TypeFacts {
    /// The `type` metric label.
    pub label: String,
    /// Index of the first route serving the type, if any.
    pub route: Option<usize>,
    /// `events_total{outcome="success"}` (counted by `settle::acks` once acknowledged).
    pub success: IntCounter,
    /// `events_total{outcome="retried"}` (counted by `settle::moves` once stored).
    pub retried: IntCounter,
    /// `handler_duration_seconds`.
    pub handler_duration: Histogram,
    /// `end_to_end_latency_seconds`.
    pub end_to_end: Histogram,
}

/// The cache, keyed by type, valid for one snapshot of the consumed streams.
#[derive(Default)]
pub struct TypeFactsCache {
    inner: RwLock<Cached>,
}

#[derive(Default)]
struct Cached {
    /// The streams snapshot the entries were resolved against (held, so its address is
    /// never reused by a newer one while cached).
    streams: Option<Arc<Vec<TypeStream>>>,
    by_type: HashMap<String, Arc<TypeFacts>>,
}

impl TypeFactsCache {
    /// Facts for `event_type`, resolved on first use.
    pub fn get(&self, shared: &Shared, event_type: &str) -> Arc<TypeFacts> {
        let streams = shared.streams();
        let current = |c: &Cached| c.streams.as_ref().is_some_and(|s| Arc::ptr_eq(s, &streams));
        if let Ok(c) = self.inner.read()
            && current(&c)
            && let Some(f) = c.by_type.get(event_type)
        {
            return f.clone();
        }
        let facts = Arc::new(resolve(shared, &streams, event_type));
        if let Ok(mut c) = self.inner.write() {
            if !current(&c) || c.by_type.len() >= MAX_CACHED {
                c.by_type.clear();
                c.streams = Some(streams.clone());
            }
            c.by_type.insert(event_type.to_string(), facts.clone());
        }
        facts
    }
}

fn resolve(shared: &Shared, streams: &[TypeStream], event_type: &str) -> TypeFacts {
    let label = crate::worker::shared::label_among(streams, event_type).to_string();
    let m = &shared.metrics;
    let (env, group) = (shared.env(), shared.group());
    let labels = [env, group, label.as_str()];
    TypeFacts {
        route: shared.route_for(event_type),
        success: m
            .events_total
            .with_label_values(&[env, group, &label, "success"]),
        retried: m
            .events_total
            .with_label_values(&[env, group, &label, "retried"]),
        handler_duration: m.handler_duration_seconds.with_label_values(&labels),
        end_to_end: m.end_to_end_latency_seconds.with_label_values(&labels),
        label,
    }
}
