//! The set of type streams being consumed ([`StreamSet`]: discovery replaces it; the reader,
//! the type-facts cache, reclaim, retention and the HTTP view read snapshots) and the bounded
//! `type` metric label derived from it ([`label_among`]).

use std::sync::{Arc, RwLock};

/// A type stream being consumed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TypeStream {
    /// `events:<env>:<type>`.
    pub key: String,
    /// The type.
    pub event_type: String,
    /// Index of the route serving it.
    pub route: usize,
}

/// Most event types that get a metric label of their own; the rest count as `other`.
pub const MAX_TYPE_LABELS: usize = 200;

/// The `type` metric label for `event_type` given the consumed `streams`: itself when it is
/// one of the first [`MAX_TYPE_LABELS`] consumed types (exact route types come first), else
/// `other`. This keeps every metric's series count bounded whatever producers write, even
/// under a `*` route.
pub fn label_among<'a>(streams: &[TypeStream], event_type: &'a str) -> &'a str {
    if streams
        .iter()
        .take(MAX_TYPE_LABELS)
        .any(|s| s.event_type == event_type)
    {
        event_type
    } else {
        "other"
    }
}

/// The set of type streams being consumed, shared by handle: discovery replaces it, the
/// reader, the HTTP view and retention read snapshots. Cheap to clone.
#[derive(Clone, Default)]
pub struct StreamSet(Arc<RwLock<Arc<Vec<TypeStream>>>>);

impl StreamSet {
    /// The current set.
    pub fn snapshot(&self) -> Arc<Vec<TypeStream>> {
        self.0.read().map(|s| s.clone()).unwrap_or_default()
    }

    /// Replaces the set.
    pub fn replace(&self, next: Vec<TypeStream>) {
        if let Ok(mut w) = self.0.write() {
            *w = Arc::new(next);
        }
    }

    /// The `type` metric label of `event_type` (see [`label_among`]).
    pub fn type_label<'a>(&self, event_type: &'a str) -> &'a str {
        label_among(&self.snapshot(), event_type)
    }

    /// Every stream key a worker reads: the type streams, then `redeliver`.
    pub fn keys_and(&self, redeliver: &str) -> Vec<String> {
        let mut keys: Vec<String> = self.snapshot().iter().map(|s| s.key.clone()).collect();
        keys.push(redeliver.to_string());
        keys
    }
}
