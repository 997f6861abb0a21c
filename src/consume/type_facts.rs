//! What the hot path needs to know about an event type, resolved once instead of per event:
//! its metric label (see [`label_among`]), the route serving it, and the metric
//! handles of its label. The cache is dropped whenever the set of consumed streams changes
//! (labels depend on it) and is bounded, so random types cannot grow it.

use std::sync::{Arc, RwLock};

use prometheus::{Histogram, HistogramVec, IntCounter, IntCounterVec};
use rustc_hash::FxHashMap;

use crate::consume::streams::{StreamSet, TypeStream, label_among};
use crate::metrics::Metrics;
use crate::worker::routes::Route;

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

/// The cache, keyed by type, valid for one snapshot of the consumed streams, with what it
/// resolves facts from: the stream set (labels) and the metric families of the facts.
pub struct TypeFactsCache {
    inner: RwLock<Cached>,
    /// The consumed streams (labels depend on them).
    streams: StreamSet,
    /// `events_total`.
    events_total: IntCounterVec,
    /// `handler_duration_seconds`.
    handler_duration: HistogramVec,
    /// `end_to_end_latency_seconds`.
    end_to_end: HistogramVec,
    /// The env label.
    env: String,
    /// The group label.
    group: String,
}

#[derive(Default)]
struct Cached {
    /// The streams snapshot the entries were resolved against (held, so its address is
    /// never reused by a newer one while cached).
    streams: Option<Arc<Vec<TypeStream>>>,
    /// FxHash: looked up once per event; at most `MAX_CACHED` types.
    by_type: FxHashMap<String, Arc<TypeFacts>>,
}

impl TypeFactsCache {
    /// An empty cache resolving against `streams` and the metric families of `metrics`.
    pub fn new(streams: StreamSet, metrics: &Metrics, env: &str, group: &str) -> Self {
        TypeFactsCache {
            inner: RwLock::default(),
            streams,
            events_total: metrics.events_total.clone(),
            handler_duration: metrics.handler_duration_seconds.clone(),
            end_to_end: metrics.end_to_end_latency_seconds.clone(),
            env: env.to_string(),
            group: group.to_string(),
        }
    }

    /// The `type` metric label of `event_type` among the consumed streams (see
    /// [`label_among`]).
    pub fn label<'a>(&self, event_type: &'a str) -> &'a str {
        self.streams.type_label(event_type)
    }

    /// Facts for `event_type` (the first of `routes` serving it), resolved on first use.
    pub fn get(&self, routes: &[Route], event_type: &str) -> Arc<TypeFacts> {
        let streams = self.streams.snapshot();
        let current = |c: &Cached| c.streams.as_ref().is_some_and(|s| Arc::ptr_eq(s, &streams));
        if let Ok(c) = self.inner.read()
            && current(&c)
            && let Some(f) = c.by_type.get(event_type)
        {
            return f.clone();
        }
        let facts = Arc::new(self.resolve(routes, &streams, event_type));
        if let Ok(mut c) = self.inner.write() {
            if !current(&c) || c.by_type.len() >= MAX_CACHED {
                c.by_type.clear();
                c.streams = Some(streams.clone());
            }
            c.by_type.insert(event_type.to_string(), facts.clone());
        }
        facts
    }

    fn resolve(&self, routes: &[Route], streams: &[TypeStream], event_type: &str) -> TypeFacts {
        let label = label_among(streams, event_type).to_string();
        let (env, group) = (self.env.as_str(), self.group.as_str());
        let labels = [env, group, label.as_str()];
        TypeFacts {
            route: routes.iter().position(|r| r.serves(event_type)),
            success: self
                .events_total
                .with_label_values(&[env, group, &label, "success"]),
            retried: self
                .events_total
                .with_label_values(&[env, group, &label, "retried"]),
            handler_duration: self.handler_duration.with_label_values(&labels),
            end_to_end: self.end_to_end.with_label_values(&labels),
            label,
        }
    }
}
