//! The consumer's reads on a Redis Cluster (README "Redis Cluster", "Reads").
//!
//! XREADGROUP may name the streams of one hash slot only, so on a cluster every read is one
//! XREADGROUP per slot group (`Store::read_slot_groups`), and none blocks: a blocked command
//! holds its master's connection until its BLOCK ends, and a read can only block on one slot
//! group while events arrive on the others. Instead, each slot group keeps its own pace:
//!
//! - a group whose last reply was full (`COUNT` entries for a stream: a backlog) is asked again
//!   at once; a group that returned some entries is asked again after [`FIRST_POLL`], and each
//!   empty reply doubles its interval up to a cap: [`ACTIVE_POLL`] while it had entries within
//!   [`ACTIVE_FOR`], [`IDLE_POLL`] after that (both caps grow with the number of groups, so
//!   that polls of quiet groups stay under [`ACTIVE_POLLS`] and [`IDLE_POLLS`] per second);
//! - a read asks the groups that are due, the one asked longest ago first, and as many as fit
//!   the free slots: a backlogged group wants [`FULL_COUNT`] entries per stream, a poll one,
//!   and every asked stream gets the same `COUNT`, the free slots divided by the streams
//!   asked (so a read never returns more entries than there are free slots);
//! - when no group is due, the read sleeps until the next one is (at most the read block).
//!
//! So under load a read asks a few backlogged groups for many entries each (fewer, fuller
//! XREADGROUPs), a group is never passed over for longer than the groups due before it
//! (oldest first), and an event on a quiet stream waits at most one poll interval (plus a
//! round trip) before it is read.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::redis::cluster::slot;
use crate::redis::store::{Entry, Store, StoreError};

/// Entries per stream a read asks of a backlogged slot group (when the free slots allow).
pub(crate) const FULL_COUNT: usize = 32;
/// First interval before a group that returned entries (or had none the first time) is
/// asked again; doubled after each empty reply.
pub(crate) const FIRST_POLL: Duration = Duration::from_millis(1);
/// Longest interval between polls of a group that had entries within [`ACTIVE_FOR`].
pub(crate) const ACTIVE_POLL: Duration = Duration::from_millis(2);
/// How long a group counts as active after its last entries.
pub(crate) const ACTIVE_FOR: Duration = Duration::from_secs(1);
/// Longest interval between polls of a group without entries for [`ACTIVE_FOR`].
pub(crate) const IDLE_POLL: Duration = Duration::from_millis(20);
/// With many slot groups the active cap grows so that active groups are polled at most this
/// many times a second in all.
pub(crate) const ACTIVE_POLLS: u32 = 25_000;
/// With many slot groups the idle cap grows so that idle groups are polled at most this many
/// times a second in all (e.g. 2,001 groups: every 500 ms).
pub(crate) const IDLE_POLLS: u32 = 4_000;

/// One slot group and its pace.
#[derive(Debug, Clone)]
struct SlotGroup {
    /// Its streams (all in one slot).
    streams: Vec<String>,
    /// The read that last asked it (0: never).
    asked: u64,
    /// When it is next asked.
    due: Instant,
    /// Whether its last reply was full (entries are waiting).
    backlogged: bool,
    /// Empty replies in a row.
    empty: u32,
    /// When it last returned entries.
    last_entries: Option<Instant>,
    /// Where the next read starts among its streams when the free slots are fewer.
    rotate: usize,
}

/// The slot groups of the streams being read and their pace (one per consumer).
#[derive(Debug, Default)]
pub(crate) struct ClusterReads {
    /// The streams the groups were built from (rebuilt when they change).
    streams: Vec<String>,
    groups: Vec<SlotGroup>,
    /// Reads so far (the `asked` stamp).
    reads: u64,
}

/// One planned read: which groups (their index and the streams asked) and the COUNT.
#[derive(Debug, PartialEq, Eq)]
struct Plan {
    asks: Vec<(usize, Vec<String>)>,
    count: usize,
}

impl ClusterReads {
    /// One read of `all` with `free` slots: polls the due slot groups until one returns
    /// entries or `block` has passed (then empty).
    ///
    /// # Errors
    /// Any Redis error of any group fails the read (see `Store::read_slot_groups`).
    pub(crate) async fn read(
        &mut self,
        store: &Store,
        (group, consumer): (&str, &str),
        all: &[String],
        free: usize,
        block: Duration,
    ) -> Result<Vec<Entry>, StoreError> {
        self.sync(all, Instant::now());
        let deadline = Instant::now() + block;
        loop {
            let now = Instant::now();
            let plan = self.plan(free, now);
            if plan.asks.is_empty() {
                if now >= deadline {
                    return Ok(Vec::new());
                }
                let next = self.next_due().unwrap_or(deadline).min(deadline);
                tokio::time::sleep_until(next.into()).await;
                continue;
            }
            let groups: Vec<Vec<String>> = plan.asks.iter().map(|(_, s)| s.clone()).collect();
            let entries = store
                .read_slot_groups(group, consumer, &groups, plan.count)
                .await?;
            self.note(&plan, &entries, Instant::now());
            if !entries.is_empty() || Instant::now() >= deadline {
                return Ok(entries);
            }
        }
    }

    /// Rebuilds the groups when the streams changed, keeping each slot's pace.
    fn sync(&mut self, all: &[String], now: Instant) {
        if self.streams.as_slice() == all {
            return;
        }
        let mut old: HashMap<u16, SlotGroup> = self
            .groups
            .drain(..)
            .map(|g| (slot(&g.streams[0]), g))
            .collect();
        let mut order: Vec<u16> = Vec::new();
        let mut by_slot: HashMap<u16, Vec<String>> = HashMap::new();
        for s in all {
            let sl = slot(s);
            let v = by_slot.entry(sl).or_insert_with(|| {
                order.push(sl);
                Vec::new()
            });
            v.push(s.clone());
        }
        for sl in order {
            let streams = by_slot.remove(&sl).unwrap_or_default();
            let group = match old.remove(&sl) {
                Some(g) => SlotGroup { streams, ..g },
                None => SlotGroup {
                    streams,
                    asked: 0,
                    due: now,
                    backlogged: false,
                    empty: 0,
                    last_entries: None,
                    rotate: 0,
                },
            };
            self.groups.push(group);
        }
        self.streams = all.to_vec();
    }

    /// The groups due at `now`, the one asked longest ago first, as many as `free` allows
    /// (a backlogged group wants [`FULL_COUNT`] per stream, a poll 1, the first always
    /// fits), and the COUNT: `free` divided by the streams asked.
    fn plan(&self, free: usize, now: Instant) -> Plan {
        let free = free.max(1);
        let mut due: Vec<usize> = (0..self.groups.len())
            .filter(|&i| self.groups[i].due <= now)
            .collect();
        due.sort_by_key(|&i| self.groups[i].asked);
        let full = FULL_COUNT.min(free);
        let (mut asks, mut wanted, mut streams) = (Vec::new(), 0usize, 0usize);
        for i in due {
            let g = &self.groups[i];
            let want = g.streams.len() * if g.backlogged { full } else { 1 };
            if !asks.is_empty() && wanted + want > free {
                break;
            }
            // A group with more streams than free slots: `free` of them, in turn.
            let n = g.streams.len().min(free);
            let picked: Vec<String> = (0..n)
                .map(|k| g.streams[(g.rotate + k) % g.streams.len()].clone())
                .collect();
            asks.push((i, picked));
            wanted += want;
            streams += n;
        }
        let count = free.checked_div(streams).unwrap_or(0);
        Plan { asks, count }
    }

    /// Records the replies of `plan` (read at `now`): each group's next poll.
    fn note(&mut self, plan: &Plan, entries: &[Entry], now: Instant) {
        self.reads += 1;
        let groups = self.groups.len() as u32;
        let active_cap = cap(ACTIVE_POLL, groups, ACTIVE_POLLS);
        let idle_cap = cap(IDLE_POLL, groups, IDLE_POLLS);
        for (i, asked) in &plan.asks {
            let g = &mut self.groups[*i];
            g.asked = self.reads;
            g.rotate = (g.rotate + asked.len()) % g.streams.len().max(1);
            let got = |s: &String| entries.iter().filter(|e| e.stream == *s).count();
            let counts: Vec<usize> = asked.iter().map(got).collect();
            g.backlogged = counts.iter().any(|&n| n >= plan.count);
            if counts.iter().any(|&n| n > 0) {
                g.empty = 0;
                g.last_entries = Some(now);
            } else {
                g.empty = g.empty.saturating_add(1);
            }
            let active = g.last_entries.is_some_and(|t| now - t < ACTIVE_FOR);
            let interval = (FIRST_POLL * (1u32 << g.empty.min(10))).min(if active {
                active_cap
            } else {
                idle_cap
            });
            g.due = if g.backlogged { now } else { now + interval };
        }
    }

    /// When the next group is due.
    fn next_due(&self) -> Option<Instant> {
        self.groups.iter().map(|g| g.due).min()
    }
}

/// The poll cap for `groups` slot groups: `base`, or longer so that they are polled at most
/// `per_sec` times a second in all.
fn cap(base: Duration, groups: u32, per_sec: u32) -> Duration {
    base.max(Duration::from_secs(1) * groups / per_sec)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("events:e:t{i}")).collect()
    }

    fn entries(stream: &str, n: usize) -> Vec<Entry> {
        (0..n)
            .map(|i| Entry {
                stream: stream.into(),
                id: format!("{i}-0").into(),
                fields: Vec::new(),
                deliveries: 1,
            })
            .collect()
    }

    fn asked(plan: &Plan) -> usize {
        plan.asks.iter().map(|(_, s)| s.len()).sum()
    }

    #[test]
    fn a_cluster_read_never_asks_for_more_than_the_free_slots() {
        let now = Instant::now();
        for streams in [1, 2, 5, 51, 300] {
            for free in [1, 2, 3, 7, 64, 128, 256] {
                let mut r = ClusterReads::default();
                r.sync(&names(streams), now);
                // Half the groups backlogged, the rest polls.
                for (k, g) in r.groups.iter_mut().enumerate() {
                    g.backlogged = k % 2 == 0;
                }
                let plan = r.plan(free, now);
                assert!(!plan.asks.is_empty() && plan.count >= 1);
                assert!(
                    asked(&plan) * plan.count <= free,
                    "{streams} streams, {free} free"
                );
            }
        }
    }

    #[test]
    fn backlogged_groups_are_read_few_at_a_time_with_a_full_count() {
        let now = Instant::now();
        let mut r = ClusterReads::default();
        r.sync(&names(51), now);
        for g in &mut r.groups {
            g.backlogged = true;
        }
        let plan = r.plan(128, now);
        assert_eq!((plan.asks.len(), plan.count), (4, 32));
        // Quiet groups due for a poll are all asked at once, one entry or more each.
        for g in &mut r.groups {
            g.backlogged = false;
        }
        let plan = r.plan(256, now);
        assert_eq!((plan.asks.len(), plan.count), (51, 5));
    }

    #[test]
    fn every_due_group_is_asked_in_turn_oldest_first() {
        let mut now = Instant::now();
        let all = names(51);
        let mut r = ClusterReads::default();
        r.sync(&all, now);
        let mut seen = std::collections::HashSet::new();
        // Every group always has a backlog: 4 groups per read of 128, so 13 reads cover 51.
        for _ in 0..13 {
            let plan = r.plan(128, now);
            let mut got = Vec::new();
            for (_, s) in &plan.asks {
                seen.insert(s[0].clone());
                got.extend(entries(&s[0], plan.count));
            }
            r.note(&plan, &got, now);
            now += Duration::from_micros(100);
        }
        assert_eq!(seen.len(), 51);
    }

    #[test]
    fn a_quiet_group_is_polled_within_its_cap() {
        let mut now = Instant::now();
        let all = names(3);
        let mut r = ClusterReads::default();
        r.sync(&all, now);
        let mut polls = Vec::new();
        // No entries for 2 s: the interval doubles from 1 ms to the idle cap.
        let end = now + Duration::from_secs(2);
        while now < end {
            let plan = r.plan(64, now);
            if plan.asks.iter().any(|(i, _)| *i == 0) {
                polls.push(now);
            }
            if !plan.asks.is_empty() {
                r.note(&plan, &[], now);
            }
            now = r.next_due().unwrap();
        }
        let gaps: Vec<Duration> = polls.windows(2).map(|w| w[1] - w[0]).collect();
        assert_eq!(gaps[..3], [2, 4, 8].map(Duration::from_millis));
        assert!(gaps.iter().all(|g| *g <= IDLE_POLL), "{gaps:?}");
        // A group that had entries a moment ago is polled at least every ACTIVE_POLL.
        let plan = r.plan(64, now);
        let got = entries(&plan.asks[0].1[0], 1);
        r.note(&plan, &got, now);
        let first = plan.asks[0].0;
        let mut last = now;
        for _ in 0..10 {
            now = r.groups[first].due;
            assert!(now - last <= ACTIVE_POLL, "{:?}", now - last);
            last = now;
            let plan = r.plan(64, now);
            r.note(&plan, &[], now);
        }
    }

    #[test]
    fn poll_caps_grow_with_the_number_of_groups() {
        assert_eq!(cap(IDLE_POLL, 51, IDLE_POLLS), IDLE_POLL);
        assert_eq!(
            cap(IDLE_POLL, 2001, IDLE_POLLS),
            Duration::from_micros(500_250)
        );
        assert_eq!(cap(ACTIVE_POLL, 49, ACTIVE_POLLS), ACTIVE_POLL);
        assert_eq!(
            cap(ACTIVE_POLL, 2001, ACTIVE_POLLS),
            Duration::from_micros(80_040)
        );
    }
}
