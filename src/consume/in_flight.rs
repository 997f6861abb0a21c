//! The set of entries this consumer is handling now, with the time each was read: the
//! heartbeat refreshes the idle time of long runners from it, the reclaimer leaves these
//! entries alone, and health and shutdown report its size. Entries are registered a read
//! batch at a time and looked up by `&str`, so the hot path takes one lock per batch to
//! register and keeps the entry's own stream and id (shared [`Text`]s: no allocation per
//! entry). Its maps hash with `rustc_hash` (FxHash, a few instructions per key instead of
//! SipHash's ~100): they hold at most `prefetch` entries of this consumer, so keys chosen to
//! collide could only slow this consumer's own bookkeeping.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rustc_hash::FxHashMap;

use crate::model::text::Text;
use crate::redis::store::Entry;

/// Entries in flight, by stream then entry id.
#[derive(Default)]
pub struct InFlight {
    by_stream: Mutex<FxHashMap<Text, FxHashMap<Text, Instant>>>,
}

impl InFlight {
    /// Registers a read batch, stamped now. A read's entries come stream by stream, so
    /// each run of one stream's entries looks its stream up once and makes room for all of
    /// them at once.
    pub fn insert_batch(&self, entries: &[Entry]) {
        let now = Instant::now();
        let Ok(mut map) = self.by_stream.lock() else {
            return;
        };
        for run in entries.chunk_by(|a, b| a.stream == b.stream) {
            let stream = &run[0].stream;
            let ids = match map.get_mut(stream.as_str()) {
                Some(ids) => ids,
                None => map.entry(stream.clone()).or_default(),
            };
            ids.reserve(run.len());
            for e in run {
                ids.insert(e.id.clone(), now);
            }
        }
    }

    /// Forgets one entry (its outcome is decided).
    pub fn remove(&self, stream: &str, id: &str) {
        self.remove_all(&[(stream, id)], |&(stream, id)| (stream, id));
    }

    /// Forgets entries whose outcome is decided, `key` giving each one's stream and id:
    /// one lock for all, and a run of one stream's entries looks its stream up once.
    pub fn remove_all<T>(&self, items: &[T], key: impl Fn(&T) -> (&str, &str)) {
        let Ok(mut map) = self.by_stream.lock() else {
            return;
        };
        for run in items.chunk_by(|a, b| key(a).0 == key(b).0) {
            let stream = key(&run[0]).0;
            if let Some(ids) = map.get_mut(stream) {
                for t in run {
                    ids.remove(key(t).1);
                }
                if ids.is_empty() {
                    map.remove(stream);
                }
            }
        }
    }

    /// Number of entries in flight.
    pub fn len(&self) -> usize {
        self.by_stream
            .lock()
            .map(|m| m.values().map(FxHashMap::len).sum())
            .unwrap_or(0)
    }

    /// Ids in flight on `stream`.
    pub fn ids_on(&self, stream: &str) -> HashSet<String> {
        self.by_stream
            .lock()
            .ok()
            .and_then(|m| {
                m.get(stream)
                    .map(|ids| ids.keys().map(Text::to_string).collect())
            })
            .unwrap_or_default()
    }

    /// Entries in flight for at least `age`, by stream.
    pub fn older_than(&self, age: Duration) -> HashMap<String, Vec<String>> {
        let now = Instant::now();
        let mut out: HashMap<String, Vec<String>> = HashMap::new();
        if let Ok(map) = self.by_stream.lock() {
            for (stream, ids) in map.iter() {
                let old: Vec<String> = ids
                    .iter()
                    .filter(|(_, t)| now.duration_since(**t) >= age)
                    .map(|(id, _)| id.to_string())
                    .collect();
                if !old.is_empty() {
                    out.insert(stream.to_string(), old);
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(stream: &str, id: &str) -> Entry {
        Entry {
            stream: stream.into(),
            id: id.into(),
            fields: Vec::new(),
            deliveries: 1,
        }
    }

    #[test]
    fn tracks_entries_per_stream_until_removed() {
        let f = InFlight::default();
        f.insert_batch(&[entry("a", "1-0"), entry("a", "2-0"), entry("b", "1-0")]);
        assert_eq!(f.len(), 3);
        assert_eq!(f.ids_on("a").len(), 2);
        f.remove("a", "1-0");
        f.remove("b", "1-0");
        f.remove("b", "9-9");
        assert_eq!(f.len(), 1);
        assert!(f.ids_on("b").is_empty());
        assert_eq!(
            f.older_than(Duration::ZERO).get("a"),
            Some(&vec!["2-0".to_string()])
        );
        assert!(f.older_than(Duration::from_secs(60)).is_empty());
        f.remove("a", "2-0");
        assert_eq!(f.len(), 0);
    }

    #[test]
    fn a_batch_whose_streams_come_back_registers_every_entry() {
        let f = InFlight::default();
        f.insert_batch(&[entry("a", "1-0")]);
        f.insert_batch(&[
            entry("a", "2-0"),
            entry("b", "1-0"),
            entry("a", "3-0"),
            entry("c", "1-0"),
            entry("c", "2-0"),
        ]);
        assert_eq!(f.len(), 6);
        let mut a: Vec<String> = f.ids_on("a").into_iter().collect();
        a.sort();
        assert_eq!(a, ["1-0", "2-0", "3-0"]);
        assert_eq!(f.ids_on("b").len(), 1);
        assert_eq!(f.ids_on("c").len(), 2);
    }

    #[test]
    fn removing_many_forgets_each_of_them_whatever_their_order() {
        let f = InFlight::default();
        f.insert_batch(&[
            entry("a", "1-0"),
            entry("a", "2-0"),
            entry("a", "3-0"),
            entry("b", "1-0"),
            entry("b", "2-0"),
        ]);
        let done = [
            ("a", "2-0"),
            ("b", "1-0"),
            ("a", "1-0"),
            ("a", "9-9"),
            ("c", "1-0"),
        ];
        f.remove_all(&done, |&(s, i)| (s, i));
        assert_eq!(f.ids_on("a").into_iter().collect::<Vec<_>>(), vec!["3-0"]);
        assert_eq!(f.ids_on("b").into_iter().collect::<Vec<_>>(), vec!["2-0"]);
        f.remove_all(&[("a", "3-0"), ("b", "2-0")], |&(s, i)| (s, i));
        assert_eq!(f.len(), 0);
        assert!(f.older_than(Duration::ZERO).is_empty());
    }

    #[test]
    fn ids_not_of_the_ms_seq_form_are_kept_as_they_are() {
        let f = InFlight::default();
        let odd = [
            "1-01",
            "x",
            "1-",
            "-1",
            "18446744073709551616-0",
            "1-2-3",
            "+1-0",
        ];
        let batch: Vec<Entry> = odd.iter().map(|id| entry("a", id)).collect();
        f.insert_batch(&batch);
        f.insert_batch(&[entry("a", "1-1")]);
        let mut seen: Vec<String> = f.ids_on("a").into_iter().collect();
        seen.sort();
        let mut want: Vec<String> = odd.iter().map(|s| s.to_string()).collect();
        want.push("1-1".into());
        want.sort();
        assert_eq!(seen, want);
        for id in odd {
            f.remove("a", id);
        }
        assert_eq!(f.ids_on("a").into_iter().collect::<Vec<_>>(), vec!["1-1"]);
    }
}
