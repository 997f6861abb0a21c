//! Aggregate `processed` records (`[history] processed = "aggregate"`, the default): the
//! history writer folds the successes of one append batch into one stream entry per group,
//! `kind=processed group=<g> at_ms=<newest> count=<n> events=<JSON>`, where `events` lists
//! each success as `[id, type, handler runs, at_ms, correlation id]`, oldest first. One
//! `XADD` per batch instead of one per event; the queries ([`expand`]) turn such an entry
//! back into per-event `processed` records, so `history --id`, the API and the console's
//! timeline answer "handled, when, by which group" as in the per-event mode.

use crate::model::envelope::lookup;
use crate::model::json_str;
use crate::model::time::rfc3339;
use crate::redis::store::Entry;
use crate::settle::history::{Pack, Record, kind};

/// The stream field holding the list of successes.
pub(crate) const EVENTS: &str = "events";

/// One success as stored in an aggregate: id, type, handler runs, at_ms, correlation id.
type Item = (String, String, u32, u64, String);

/// Packs `records` for the append script: every record but the `processed` ones as it is,
/// in order, then one aggregate per group for the `processed` ones (after the others: a
/// success is the last step of its event in its group). Returns how many stream entries
/// the call appends.
pub(crate) fn pack_aggregated(records: &[Record], out: &mut Pack) -> usize {
    let mut groups: Vec<(&str, Vec<&Record>)> = Vec::new();
    let mut others = 0;
    for r in records {
        if r.kind != kind::PROCESSED {
            others += 1;
            continue;
        }
        match groups.iter_mut().find(|(g, _)| *g == r.group) {
            Some((_, list)) => list.push(r),
            None => groups.push((&r.group, vec![r])),
        }
    }
    out.array(others + groups.len());
    for r in records.iter().filter(|r| r.kind != kind::PROCESSED) {
        r.write_packed(out);
    }
    for (group, list) in &groups {
        let newest = list.iter().map(|r| r.at_ms).max().unwrap_or(0);
        let events = events_json(list);
        // [kind, id, type, count, at_ms, group, correlationid, detail, events]
        out.array(9);
        out.str(kind::PROCESSED);
        out.str("");
        out.str("");
        out.str(&list.len().to_string());
        out.str(&newest.to_string());
        out.str(group);
        out.str("");
        out.str("");
        out.str(&events);
    }
    others + groups.len()
}

/// The aggregate's `events` field: `[[id, type, attempt, at_ms, correlationid], ...]` as JSON
/// (what serde_json writes for a list of such tuples; written by hand, once per success).
fn events_json(list: &[&Record]) -> String {
    let mut out = Vec::with_capacity(list.len() * 96 + 2);
    out.push(b'[');
    for (i, r) in list.iter().enumerate() {
        out.extend_from_slice(if i == 0 { b"[" } else { b",[" });
        json_str::push(&mut out, &r.id);
        out.push(b',');
        json_str::push(&mut out, &r.event_type);
        out.push(b',');
        json_str::push_u64(&mut out, u64::from(r.attempt));
        out.push(b',');
        json_str::push_u64(&mut out, r.at_ms);
        out.push(b',');
        json_str::push(&mut out, &r.correlation_id);
        out.push(b']');
    }
    out.push(b']');
    // Only whole UTF-8 strings and ASCII were written.
    String::from_utf8(out).unwrap_or_default()
}

/// The records a history entry holds, newest first: one for an ordinary record, one per
/// success for an aggregate. `keep` filters the aggregate's successes on their raw list
/// first (see [`may_hold`]) so a query by id skips most aggregates without parsing them.
pub(crate) fn expand(e: &Entry, wanted: &[&str], out: &mut Vec<Record>) {
    let Some(events) = lookup(&e.fields, EVENTS) else {
        out.push(Record::from_entry(e));
        return;
    };
    if !wanted.iter().all(|w| may_hold(events, w)) {
        return;
    }
    let Ok(items) = serde_json::from_str::<Vec<Item>>(events) else {
        return;
    };
    let group = lookup(&e.fields, "group").unwrap_or_default();
    for (id, event_type, attempt, at_ms, correlation_id) in items.into_iter().rev() {
        out.push(Record {
            entry_id: e.id.to_string(),
            kind: kind::PROCESSED.into(),
            id: id.into(),
            event_type: event_type.into(),
            group: group.into(),
            correlation_id,
            attempt,
            detail: String::new(),
            at: rfc3339(at_ms),
            at_ms,
        });
    }
}

/// Whether the raw JSON list may hold the string `value`: false only when `value` needs
/// no JSON escaping and its quoted form is absent.
fn may_hold(events: &str, value: &str) -> bool {
    let plain = !value
        .chars()
        .any(|c| c == '"' || c == '\\' || c.is_control());
    !plain || events.contains(&format!("\"{value}\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn processed(id: &str, group: &str, at_ms: u64) -> Record {
        let mut r = Record::new(kind::PROCESSED, id, "t.x", group, None, 1, "");
        r.at_ms = at_ms;
        r
    }

    /// Decodes the packed records the way the script sees them (strings only).
    fn unpacked(records: &[Record]) -> Vec<Vec<String>> {
        let mut out = Pack::default();
        let n = pack_aggregated(records, &mut out);
        let v = crate::settle::history::tests::unpack(&out.into_bytes());
        assert_eq!(v.len(), n);
        v
    }

    #[test]
    fn successes_fold_into_one_record_per_group_after_the_others() {
        let mut retried = Record::new(kind::RETRIED, "r-1", "t.x", "g", None, 1, "retry in 5ms");
        retried.at_ms = 5;
        let mut with_corr = Record::new(kind::PROCESSED, "p-\"2", "t.y", "g", Some("c-1"), 2, "");
        with_corr.at_ms = 7;
        let records = vec![
            processed("p-1", "g", 3),
            retried,
            with_corr,
            processed("q-1", "h", 9),
        ];
        let v = unpacked(&records);
        assert_eq!(v.len(), 3);
        assert_eq!(v[0][..2], ["retried".to_string(), "r-1".to_string()]);
        assert_eq!(
            v[1],
            [
                "processed",
                "",
                "",
                "2",
                "7",
                "g",
                "",
                "",
                r#"[["p-1","t.x",1,3,""],["p-\"2","t.y",2,7,"c-1"]]"#
            ]
        );
        assert_eq!(v[2][5], "h");
        assert_eq!(v[2][8], r#"[["q-1","t.x",1,9,""]]"#);
    }

    #[test]
    fn the_events_list_is_what_serde_json_writes_and_reads_back() {
        let odd = ["", "p-1", "q\"x", "b\\s", "c\u{1}\n", "é😀"];
        let records: Vec<Record> = odd
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let mut r = Record::new(kind::PROCESSED, *s, *s, "g", Some(*s), i as u32, "");
                r.at_ms = u64::MAX - i as u64;
                r
            })
            .collect();
        let list: Vec<&Record> = records.iter().collect();
        let items: Vec<(&str, &str, u32, u64, &str)> = records
            .iter()
            .map(|r| {
                (
                    &*r.id,
                    &*r.event_type,
                    r.attempt,
                    r.at_ms,
                    &*r.correlation_id,
                )
            })
            .collect();
        let ours = events_json(&list);
        assert_eq!(ours, serde_json::to_string(&items).unwrap());
        assert_eq!(events_json(&[]), "[]");
        let back: Vec<Item> = serde_json::from_str(&ours).unwrap();
        assert_eq!(back.len(), odd.len());
        assert_eq!(back[2].0, "q\"x");
    }

    fn aggregate_entry(events: &str) -> Entry {
        let fields = [
            ("kind", "processed"),
            ("at_ms", "9"),
            ("group", "g"),
            ("count", "2"),
            ("events", events),
        ];
        Entry {
            stream: "h".into(),
            id: "9-0".into(),
            fields: fields
                .iter()
                .map(|(k, v)| ((*k).into(), (*v).into()))
                .collect(),
            deliveries: 0,
        }
    }

    #[test]
    fn an_aggregate_expands_newest_first_and_skips_lists_without_the_id() {
        let e = aggregate_entry(r#"[["a-1","t.x",1,3,""],["b-1","t.y",2,7,"c"]]"#);
        let mut out = Vec::new();
        expand(&e, &[], &mut out);
        let got: Vec<_> = out
            .iter()
            .map(|r| {
                (
                    r.id.as_str(),
                    r.kind.as_ref(),
                    r.group.as_str(),
                    r.attempt,
                    r.at_ms,
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                ("b-1", "processed", "g", 2, 7),
                ("a-1", "processed", "g", 1, 3)
            ]
        );
        assert_eq!(out[0].correlation_id, "c");
        assert_eq!(out[0].at, "1970-01-01T00:00:00.007Z");
        assert_eq!(out[0].entry_id, "9-0");
        let mut none = Vec::new();
        expand(&e, &["a-2"], &mut none);
        assert!(none.is_empty());
        expand(&e, &["a-1"], &mut none);
        assert_eq!(none.len(), 2, "the caller filters the expanded records");
    }
}
