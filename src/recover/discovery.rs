//! Discovery is responsible for the set of type streams to consume: exact route types
//! always, and every existing `events:<env>:*` stream a route glob matches (found with
//! SCAN at start and every `discovery_interval`, so new types are picked up). Each new
//! stream gets the consumer group, created at `0`.
//!
//! The set only grows at its end: a stream, once followed, keeps its place while it exists,
//! and new ones are appended. Metric labels depend on that place (the first
//! [`MAX_TYPE_LABELS`] types get their own, see [`label_among`]), so a flood of new
//! types can neither move labels nor grow the series past the cap. At most [`MAX_STREAMS`]
//! streams are followed; more, and keys that are not streams, are reported in
//! [`Issues`] (health warnings).
//!
//! Besides its periodic pass, discovery runs at once when poked ([`Discovery::poke`]): the
//! coordination listener pokes it when a process announces a type it publishes for the
//! first time and a route would consume that type (see [`Discovery::wants`]). Every
//! `health.scan_interval` it also looks for streams nobody consumes
//! ([`crate::recover::unconsumed`]).

use std::collections::{BTreeSet, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::join_all;
use prometheus::IntCounter;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

#[cfg(doc)]
use crate::consume::streams::label_among;
use crate::consume::streams::{MAX_TYPE_LABELS, StreamSet, TypeStream};
use crate::metrics::{Metrics, OUTCOMES};
use crate::model::keys::{self, Keys};
use crate::recover::unconsumed::{self, Logged, Unconsumed};
use crate::redis::store::{Store, StoreError};
use crate::settle::dlq_record::Reason;
use crate::worker::health::Health;

/// Most streams one worker follows; streams found past it are not consumed (logged once and
/// shown as a health warning).
pub const MAX_STREAMS: usize = 2000;

/// Most keys a health warning names.
const MAX_NAMED_KEYS: usize = 10;

/// What discovery could not consume, for `/api/events/health` (kept in
/// [`crate::worker::health::Health::discovery`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Issues {
    /// Keys a route selects that hold something other than a stream.
    pub wrong_type: BTreeSet<String>,
    /// Streams matching the routes that are not followed because of [`MAX_STREAMS`] (a
    /// lower bound: the scan stops soon after the cap).
    pub unfollowed: usize,
    /// Streams nobody consumes, from the last scan (sorted by key).
    pub unconsumed: Vec<Unconsumed>,
}

impl Issues {
    /// The health reasons, `(code, message)`: `not_a_stream`, `too_many_streams`,
    /// `unconsumed_streams`; a message names at most [`MAX_NAMED_KEYS`] keys.
    pub fn reasons(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        if !self.wrong_type.is_empty() {
            let named: Vec<&str> = self
                .wrong_type
                .iter()
                .take(MAX_NAMED_KEYS)
                .map(String::as_str)
                .collect();
            let more = self.wrong_type.len() - named.len();
            out.push((
                "not_a_stream",
                format!(
                    "not a stream, not consumed (fix or delete the key): {}{}",
                    named.join(", "),
                    if more > 0 {
                        format!(" and {more} more")
                    } else {
                        String::new()
                    }
                ),
            ));
        }
        if self.unfollowed > 0 {
            out.push((
                "too_many_streams",
                format!(
                    "more streams match the routes than one worker follows ({MAX_STREAMS}): at \
                     least {} are not consumed; narrow the route globs",
                    self.unfollowed
                ),
            ));
        }
        if let Some(m) = unconsumed::summary(&self.unconsumed) {
            out.push(("unconsumed_streams", m));
        }
        out
    }
}

/// The discovery role and what it touches; shared (`Arc`) with the reader, which calls
/// [`Discovery::drop_wrong_types`] when a read fails with WRONGTYPE.
pub struct Discovery {
    /// Redis.
    pub store: Store,
    /// Key names of the env.
    pub keys: Keys,
    /// The group created on new streams.
    pub group: String,
    /// Each route's patterns, in route order (a stream's route is the first that matches).
    pub patterns: Vec<Vec<String>>,
    /// The consumed set this role maintains.
    pub streams: StreamSet,
    /// Where keys that cannot be consumed are reported.
    pub health: Arc<Health>,
    /// Metric handles (per-type series are started at 0 for new streams).
    pub metrics: Metrics,
    /// The env label.
    pub env: String,
    /// `discovery_interval`.
    pub interval: Duration,
    /// `redis_errors_total{op="discovery"}`.
    pub errors: IntCounter,
    /// Wakes the role for an extra pass (a new type was announced).
    pub poke: Arc<Notify>,
    /// `health.scan_interval`: how often streams nobody consumes are looked for.
    pub scan_interval: Duration,
    /// The unconsumed streams already logged.
    pub logged: Mutex<Logged>,
}

impl Discovery {
    /// Whether a pass would add `event_type`: a valid type a route matches that is not
    /// followed yet (the coordination listener pokes only then).
    pub fn wants(&self, event_type: &str) -> bool {
        keys::is_valid_type(event_type)
            && self.route_for(event_type).is_some()
            && !self
                .streams
                .snapshot()
                .iter()
                .any(|s| s.event_type == event_type)
    }

    /// Looks for streams nobody consumes; reports them in [`Issues`], the gauges and the
    /// log (each stream once).
    ///
    /// # Errors
    /// Redis errors.
    pub async fn scan_unconsumed(&self) -> Result<(), StoreError> {
        let followed: HashSet<String> = self
            .streams
            .snapshot()
            .iter()
            .map(|s| s.key.clone())
            .collect();
        let found = unconsumed::find(&self.store, &self.keys, &followed).await?;
        unconsumed::export(&self.metrics, &self.env, &found);
        if let Ok(mut l) = self.logged.lock() {
            l.log_new(&found);
        }
        if let Ok(mut i) = self.health.discovery.lock() {
            i.unconsumed = found;
        }
        Ok(())
    }

    fn route_for(&self, event_type: &str) -> Option<usize> {
        self.patterns
            .iter()
            .position(|ps| ps.iter().any(|p| keys::glob_matches(p, event_type)))
    }

    /// Type streams the routes select now: exact types first, in route order, then glob
    /// matches sorted by key, from at most [`MAX_STREAMS`] + 1 existing streams; and whether
    /// the scan stopped at its limit (more streams exist than it saw).
    async fn resolve_scan(&self) -> Result<(Vec<TypeStream>, bool), StoreError> {
        let mut types: Vec<String> = Vec::new();
        for p in self.patterns.iter().flatten() {
            if !p.contains('*') && !types.contains(p) {
                types.push(p.clone());
            }
        }
        let mut truncated = false;
        if self.patterns.iter().flatten().any(|p| p.contains('*')) {
            let pattern = format!("{}*", self.keys.prefix());
            let exact: HashSet<String> = types.iter().cloned().collect();
            let limit = MAX_STREAMS + 1;
            // Only type streams count towards the limit (not the DLQ, history, redeliver, ...).
            let is_type_stream = |k: &str| self.keys.type_of_stream(k).is_some();
            let keys = self
                .store
                .scan_streams(&pattern, limit, &is_type_stream)
                .await?;
            truncated = keys.len() >= limit;
            for key in keys {
                if let Some(t) = self.keys.type_of_stream(&key)
                    && !exact.contains(t)
                {
                    types.push(t.to_string());
                }
            }
        }
        let streams = types
            .into_iter()
            .filter_map(|t| {
                self.route_for(&t).map(|route| TypeStream {
                    key: self.keys.stream(&t),
                    event_type: t,
                    route,
                })
            })
            .collect();
        Ok((streams, truncated))
    }

    /// Resolves the streams, keeps the followed ones that still exist in their place, creates
    /// the group on new ones and appends them (up to [`MAX_STREAMS`]), and publishes the new
    /// set when it changed.
    ///
    /// # Errors
    /// Redis errors.
    pub async fn refresh(&self) -> Result<(), StoreError> {
        let (found, truncated) = self.resolve_scan().await?;
        let known = self.streams.snapshot();
        let found_keys: HashSet<&str> = found.iter().map(|s| s.key.as_str()).collect();
        // A followed stream missing from an incomplete scan may still exist: ask.
        let unsure: Vec<&TypeStream> = known
            .iter()
            .filter(|k| truncated && !found_keys.contains(k.key.as_str()))
            .collect();
        let kinds = join_all(unsure.iter().map(|k| self.store.key_type(&k.key))).await;
        let mut still = HashSet::new();
        for (k, kind) in unsure.iter().zip(kinds) {
            if kind? == "stream" {
                still.insert(k.key.as_str());
            }
        }
        let mut next: Vec<TypeStream> = known
            .iter()
            .filter(|k| found_keys.contains(k.key.as_str()) || still.contains(k.key.as_str()))
            .cloned()
            .collect();
        let followed: HashSet<&str> = next.iter().map(|s| s.key.as_str()).collect();
        let new: Vec<&TypeStream> = found
            .iter()
            .filter(|s| !followed.contains(s.key.as_str()))
            .collect();
        let room = MAX_STREAMS.saturating_sub(next.len());
        let (admitted, left_out) = new.split_at(new.len().min(room));
        let (flagged, mut cleared) = self.admit(admitted, &mut next).await?;
        // Keys reported as not streams stop being reported once fixed or deleted.
        let reported = self.current_issues().wrong_type;
        let recheck: Vec<&String> = reported
            .iter()
            .filter(|k| !found_keys.contains(k.as_str()))
            .collect();
        let kinds = join_all(recheck.iter().map(|k| self.store.key_type(k))).await;
        for (k, kind) in recheck.into_iter().zip(kinds) {
            if matches!(kind?.as_str(), "stream" | "none") {
                cleared.push(k.clone());
            }
        }
        if !left_out.is_empty() && self.current_issues().unfollowed == 0 {
            warn!(
                max = MAX_STREAMS,
                "more streams match the routes than one worker follows; the ones past the limit are not consumed"
            );
        }
        if let Ok(mut i) = self.health.discovery.lock() {
            for k in cleared {
                i.wrong_type.remove(&k);
            }
            i.wrong_type.extend(flagged);
            i.unfollowed = left_out.len();
        }
        if next != *known {
            self.streams.replace(next);
        }
        Ok(())
    }

    /// Creates the group on `admitted` streams and appends the ones that took it to `next`;
    /// returns the keys that are not streams (flagged) and the ones that now are (cleared).
    async fn admit(
        &self,
        admitted: &[&TypeStream],
        next: &mut Vec<TypeStream>,
    ) -> Result<(Vec<String>, Vec<String>), StoreError> {
        let created = join_all(
            admitted
                .iter()
                .map(|s| self.store.ensure_group(&s.key, &self.group)),
        )
        .await;
        let reported = self.current_issues().wrong_type;
        let (mut flagged, mut cleared) = (Vec::new(), Vec::new());
        for (s, result) in admitted.iter().zip(created) {
            match result {
                Ok(()) => {
                    info!(stream = %s.key, group = %self.group, "consuming stream");
                    cleared.push(s.key.clone());
                    let label = if next.len() < MAX_TYPE_LABELS {
                        s.event_type.as_str()
                    } else {
                        "other"
                    };
                    self.start_series(label);
                    next.push((*s).clone());
                }
                Err(e) if e.is_wrong_type() => {
                    if !reported.contains(&s.key) {
                        warn!(key = %s.key, "key holds a value that is not a stream; not consuming it (fix or delete the key)");
                    }
                    flagged.push(s.key.clone());
                }
                Err(e) => return Err(e),
            }
        }
        Ok((flagged, cleared))
    }

    fn current_issues(&self) -> Issues {
        self.health
            .discovery
            .lock()
            .map(|i| i.clone())
            .unwrap_or_default()
    }

    /// Creates the per-type counters at 0, so dashboards and `increase()` see them before
    /// the first event (the Prometheus crate exports a labelled series only once it exists):
    /// `dead_lettered_total` for every [`Reason::ALL`] and `events_total` for every
    /// [`OUTCOMES`], so a reason added later starts at 0 too.
    fn start_series(&self, event_type: &str) {
        let m = &self.metrics;
        let (env, group) = (self.env.as_str(), self.group.as_str());
        m.reclaimed_total
            .with_label_values(&[env, group, event_type])
            .inc_by(0);
        m.dlq_replayed_total
            .with_label_values(&[env, group, event_type])
            .inc_by(0);
        m.published_total
            .with_label_values(&[env, event_type])
            .inc_by(0);
        m.publish_duplicates_total
            .with_label_values(&[env, event_type])
            .inc_by(0);
        m.stream_trimmed_total
            .with_label_values(&[env, event_type])
            .inc_by(0);
        for reason in Reason::ALL {
            m.dead_lettered_total
                .with_label_values(&[env, group, event_type, reason.as_str()])
                .inc_by(0);
        }
        for outcome in OUTCOMES {
            m.events_total
                .with_label_values(&[env, group, event_type, outcome])
                .inc_by(0);
        }
        m.fields_dropped_total
            .with_label_values(&[env, event_type])
            .inc_by(0);
    }

    /// Drops consumed keys that no longer hold a stream (someone SET or deleted-and-reused
    /// the key), so one bad key cannot stop the reads of every other stream, and reports
    /// them in [`Issues`]. Called when a read fails with WRONGTYPE; discovery re-adds the key
    /// once it is a stream again.
    ///
    /// # Errors
    /// Redis errors.
    pub async fn drop_wrong_types(&self) -> Result<(), StoreError> {
        let mut keep = Vec::new();
        let mut wrong = Vec::new();
        for s in self.streams.snapshot().iter() {
            match self.store.key_type(&s.key).await?.as_str() {
                "stream" | "none" => keep.push(s.clone()),
                other => {
                    warn!(key = %s.key, kind = other, "key holds a value that is not a stream; not consuming it (fix or delete the key)");
                    wrong.push(s.key.clone());
                }
            }
        }
        if let Ok(mut i) = self.health.discovery.lock() {
            i.wrong_type.extend(wrong);
        }
        self.streams.replace(keep);
        Ok(())
    }
}

/// Shortest time between two passes run because of pokes.
const POKE_GAP: Duration = Duration::from_millis(200);

/// Runs discovery until `stop`: a refresh every `discovery_interval` (the first refresh is
/// part of start-up) and whenever poked, and the unconsumed-stream scan at once and then
/// every `health.scan_interval`. A pass in progress is finished, not abandoned.
pub async fn run(d: Arc<Discovery>, stop: CancellationToken) {
    let delayed = |period: Duration, first| {
        let mut tick = tokio::time::interval_at(first, period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick
    };
    let now = tokio::time::Instant::now();
    let mut refresh = delayed(d.interval, now + d.interval);
    let mut scan = delayed(d.scan_interval, now);
    let mut last_poked = now - POKE_GAP;
    loop {
        let rescan = tokio::select! {
            _ = refresh.tick() => false,
            () = d.poke.notified() => {
                // A flood of new types costs at most one pass per POKE_GAP.
                let wait = POKE_GAP.saturating_sub(last_poked.elapsed());
                tokio::select! {
                    () = tokio::time::sleep(wait) => {}
                    () = stop.cancelled() => return,
                }
                last_poked = tokio::time::Instant::now();
                false
            }
            _ = scan.tick() => true,
            () = stop.cancelled() => return,
        };
        let result = if rescan {
            d.scan_unconsumed().await
        } else {
            d.refresh().await
        };
        if let Err(e) = result {
            d.errors.inc();
            warn!(error = %e, "stream discovery failed; will try again");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{Issues, MAX_NAMED_KEYS};

    impl Issues {
        fn warnings(&self) -> Vec<String> {
            self.reasons().into_iter().map(|(_, m)| m).collect()
        }
    }

    #[test]
    fn warnings_name_a_bounded_number_of_keys_and_the_cap() {
        assert!(Issues::default().warnings().is_empty());
        let mut i = Issues::default();
        i.wrong_type.insert("events:p:a.b".into());
        let w = i.warnings();
        assert_eq!(w.len(), 1);
        assert!(
            w[0].contains("events:p:a.b") && w[0].contains("not a stream"),
            "{w:?}"
        );
        for n in 0..30 {
            i.wrong_type.insert(format!("events:p:k{n:02}"));
        }
        i.unfollowed = 7;
        let w = i.warnings();
        assert_eq!(w.len(), 2);
        assert_eq!(w[0].matches("events:p:").count(), MAX_NAMED_KEYS, "{w:?}");
        assert!(w[0].ends_with("and 21 more"), "{w:?}");
        assert!(w[1].contains("at least 7 are not consumed"), "{w:?}");
    }
}
