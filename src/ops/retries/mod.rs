//! The retry sets (`events:<env>:retry:<group>`, members scored by due time in ms): list
//! them in due order, make one due now (`retry-now`) or dead-letter it (`dead-letter`).
//! One module backs the CLI, the HTTP API and the console pages.
//!
//! A member is the JSON array of the event's fields for its next delivery (see
//! `settle::moves`); its *handle* is `<due ms>-<SHA-1 of the member>`, short and opaque,
//! and names it exactly (a set holds a member once). Both actions run one Lua script that
//! finds the member and moves it atomically, so they and the scheduler (which forwards due
//! members with the same script as `retry-now`) never move one member twice: whichever
//! runs second no longer finds it. Both are recorded in the history.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::model::envelope::{field, lookup};
use crate::model::keys::{self, Keys};
use crate::model::time::rfc3339;
use crate::redis::store::{Store, StoreError};
use crate::settle::history::{Record, kind};

mod actions;
pub use actions::{dead_letter_now, retry_now};

/// Entries per page when the query names no limit.
pub const DEFAULT_LIMIT: usize = 50;
/// Most entries per page.
pub const MAX_LIMIT: usize = 500;
/// Members read per group for one page at most, so a type filter that matches little
/// costs a bounded scan; the page then ends there and its cursor goes on from there.
pub const MAX_SCAN: usize = 10_000;
/// Members read per command.
const CHUNK: usize = 500;
/// Newest history records read to find the last error of the listed entries.
const HISTORY_LOOKUP: usize = 2_000;

/// What to list.
#[derive(Debug, Clone, Default)]
pub struct RetryQuery {
    /// Only this group (`None`: every group with a retry set).
    pub group: Option<String>,
    /// Only this type (exact, or a glob with `*`).
    pub event_type: Option<String>,
    /// Go on after this cursor (a page's `next_cursor`).
    pub cursor: Option<String>,
    /// Most entries (0: [`DEFAULT_LIMIT`]; clamped to [`MAX_LIMIT`]).
    pub limit: usize,
}

/// Why a retry operation was refused before touching Redis, or failed in it.
#[derive(Debug, thiserror::Error)]
pub enum RetryError {
    /// A malformed argument; nothing was done.
    #[error("{0}")]
    Invalid(String),
    /// Redis failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// One member of a retry set.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct RetryEntry {
    /// The group whose retry set holds it.
    pub group: String,
    /// Event type.
    #[serde(rename = "type")]
    pub event_type: String,
    /// Event id.
    pub id: String,
    /// Handler runs so far (the next delivery's `attempt`).
    pub attempt: u32,
    /// When it is due (epoch ms, Redis's clock).
    pub due_ms: u64,
    /// `due_ms` in RFC 3339.
    pub due: String,
    /// The last failure, from the newest `retried` history record of the event in this
    /// group (e.g. `retry in 400ms: HTTP 503`), if the recent history holds one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// Correlation id, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<String>,
    /// What `retry_now` and `dead_letter_now` take: `<due ms>-<SHA-1 of the member>`.
    pub handle: String,
    /// The member's fields (the next delivery's), in order.
    #[serde(skip)]
    pub fields: Vec<(String, String)>,
}

/// One page of retry entries, in due order (then group, then member).
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct RetryPage {
    /// The entries.
    pub entries: Vec<RetryEntry>,
    /// Where the next page starts; `None` on the last page.
    pub next_cursor: Option<String>,
    /// Members per group listed (ZCARD), whatever the type filter.
    pub depth: BTreeMap<String, u64>,
}

/// What an action found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Done.
    Done,
    /// No such member (any more): forwarded, retried now or dead-lettered already.
    NotFound,
}

/// Who acts (recorded in the history) and the history's length cap.
#[derive(Debug, Clone, Copy)]
pub struct ActionOptions<'a> {
    /// `cli`, `api` or `ui`.
    pub actor: &'a str,
    /// `[history].max_len`.
    pub history_max_len: u64,
}

/// A parsed handle: the due time and the member's SHA-1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handle {
    /// Due time (ms).
    pub due_ms: u64,
    /// SHA-1 of the member, 40 lowercase hex digits.
    pub sha1: String,
}

impl Handle {
    /// Parses `<due ms>-<40 hex digits>`.
    ///
    /// # Errors
    /// A message naming the expected shape.
    pub fn parse(text: &str) -> Result<Handle, RetryError> {
        let bad = || {
            RetryError::Invalid(format!(
                "handle `{}`: must be <due ms>-<sha1> as `retries list` shows it",
                crate::model::envelope::truncate(text, 80)
            ))
        };
        let (due, sha1) = text.split_once('-').ok_or_else(bad)?;
        let due_ms = due.parse::<u64>().map_err(|_| bad())?;
        let hex = sha1.len() == 40
            && sha1
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if !hex {
            return Err(bad());
        }
        Ok(Handle {
            due_ms,
            sha1: sha1.to_string(),
        })
    }

    fn of(due_ms: u64, member: &str) -> String {
        format!("{due_ms}-{}", fred::util::sha1_hash(member))
    }
}

/// A page position: after the member `sha1` at `due_ms` in `group`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Cursor {
    due_ms: u64,
    group: String,
    sha1: String,
}

impl Cursor {
    fn parse(text: &str) -> Result<Cursor, RetryError> {
        let bad = || {
            RetryError::Invalid(format!(
                "cursor `{}`: must be a next_cursor of a previous page",
                crate::model::envelope::truncate(text, 80)
            ))
        };
        let mut parts = text.splitn(3, ':');
        let (Some(due), Some(group), Some(sha1)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(bad());
        };
        let h = Handle::parse(&format!("{due}-{sha1}")).map_err(|_| bad())?;
        if !keys::is_valid_name(group) {
            return Err(bad());
        }
        Ok(Cursor {
            due_ms: h.due_ms,
            group: group.to_string(),
            sha1: h.sha1,
        })
    }

    fn text(due_ms: u64, group: &str, member: &str) -> String {
        format!("{due_ms}:{group}:{}", fred::util::sha1_hash(member))
    }
}

/// Every group with a retry set in this env (SCAN), sorted.
///
/// # Errors
/// Redis errors.
pub async fn groups(store: &Store, keys: &Keys) -> Result<Vec<String>, StoreError> {
    let prefix = keys.retry("");
    let found = store
        .scan(&format!("{prefix}*"), Some("zset"), 1000, &|k: &str| {
            k.strip_prefix(prefix.as_str())
                .is_some_and(keys::is_valid_name)
        })
        .await?;
    Ok(found
        .iter()
        .filter_map(|k| k.strip_prefix(prefix.as_str()).map(str::to_string))
        .collect())
}

/// The group name, checked.
fn valid_group(group: &str) -> Result<(), RetryError> {
    if keys::is_valid_name(group) {
        Ok(())
    } else {
        Err(RetryError::Invalid(format!(
            "group `{}`: must be a group name ([A-Za-z0-9_.-], up to 128 characters)",
            crate::model::envelope::truncate(group, 80)
        )))
    }
}

/// Retry entries of one group or all groups in due order, one page.
///
/// # Errors
/// An invalid group, type or cursor; Redis errors.
pub async fn list(store: &Store, keys: &Keys, q: &RetryQuery) -> Result<RetryPage, RetryError> {
    if let Some(t) = &q.event_type
        && !keys::is_valid_pattern(t)
    {
        return Err(RetryError::Invalid(format!(
            "type `{}`: must be an event type or a glob such as booking.*",
            crate::model::envelope::truncate(t, 80)
        )));
    }
    let cursor = q.cursor.as_deref().map(Cursor::parse).transpose()?;
    let groups = match &q.group {
        Some(g) => {
            valid_group(g)?;
            vec![g.clone()]
        }
        None => groups(store, keys).await?,
    };
    let limit = if q.limit == 0 { DEFAULT_LIMIT } else { q.limit }.min(MAX_LIMIT);
    let mut page = RetryPage::default();
    let mut found: Vec<(RetryEntry, String)> = Vec::new();
    let mut capped: Option<(u64, String, String)> = None;
    for g in &groups {
        let key = keys.retry(g);
        page.depth.insert(g.clone(), store.zcard(&key).await?);
        let scan = scan_group(store, &key, g, cursor.as_ref(), limit + 1, q).await?;
        found.extend(scan.entries);
        if let Some((due, member)) = scan.capped_at {
            let pos = (due, g.clone(), member);
            if capped.as_ref().is_none_or(|c| pos < *c) {
                capped = Some(pos);
            }
        }
    }
    found.sort_by(|a, b| order(a).cmp(&order(b)));
    if let Some(cap) = &capped {
        found.retain(|e| order(e) <= (cap.0, cap.1.as_str(), cap.2.as_str()));
    }
    let more = found.len() > limit;
    found.truncate(limit);
    page.next_cursor = match (found.last(), &capped) {
        (Some((e, member)), _) if more || capped.is_some() => {
            Some(Cursor::text(e.due_ms, &e.group, member))
        }
        (None, Some((due, g, member))) => Some(Cursor::text(*due, g, member)),
        _ => None,
    };
    page.entries = found.into_iter().map(|(e, _)| e).collect();
    add_last_errors(store, keys, &mut page.entries).await?;
    Ok(page)
}

/// The sort key of a found entry: due time, group, member bytes (the set's own order).
fn order(e: &(RetryEntry, String)) -> (u64, &str, &str) {
    (e.0.due_ms, e.0.group.as_str(), e.1.as_str())
}

/// What one group's scan found.
struct GroupScan {
    /// Matching entries with their members, in set order.
    entries: Vec<(RetryEntry, String)>,
    /// The last member read when [`MAX_SCAN`] stopped the scan before `want` matches.
    capped_at: Option<(u64, String)>,
}

/// Reads group `g`'s set after `cursor` in set order until `want` entries match the
/// query's type or [`MAX_SCAN`] members were read.
async fn scan_group(
    store: &Store,
    key: &str,
    g: &str,
    cursor: Option<&Cursor>,
    want: usize,
    q: &RetryQuery,
) -> Result<GroupScan, StoreError> {
    let mut out = GroupScan {
        entries: Vec::new(),
        capped_at: None,
    };
    let keep = |member: String, due: u64, out: &mut GroupScan| {
        let e = entry(g, &member, due);
        let wanted = q
            .event_type
            .as_deref()
            .is_none_or(|t| keys::glob_matches(t, &e.event_type));
        if wanted {
            out.entries.push((e, member));
        }
    };
    let mut scanned = 0;
    let min = match cursor {
        None => "-inf".to_string(),
        Some(c) => {
            // Members at the cursor's own due time: those after the cursor's member (its
            // group), all (a later group), none (an earlier group). When the cursor's
            // member is gone, all of them are listed again rather than some skipped.
            if g >= c.group.as_str() {
                let due = c.due_ms.to_string();
                let same = store.zrange_by_score(key, &due, &due, MAX_SCAN).await?;
                scanned += same.len();
                let skip = if g == c.group {
                    same.iter()
                        .position(|(m, _)| fred::util::sha1_hash(m) == c.sha1)
                        .map_or(0, |i| i + 1)
                } else {
                    0
                };
                for (m, s) in same.into_iter().skip(skip) {
                    keep(m, s, &mut out);
                }
            }
            format!("({}", c.due_ms)
        }
    };
    let mut offset = 0;
    while out.entries.len() < want && scanned < MAX_SCAN {
        let chunk = store
            .zrange_by_score_from(key, &min, "+inf", offset, CHUNK)
            .await?;
        let n = chunk.len();
        scanned += n;
        offset += n;
        let last = chunk.last().map(|(m, s)| (*s, m.clone()));
        for (m, s) in chunk {
            keep(m, s, &mut out);
        }
        if n < CHUNK {
            return Ok(out);
        }
        if scanned >= MAX_SCAN && out.entries.len() < want {
            out.capped_at = last;
        }
    }
    Ok(out)
}

/// The entry of `member` (due `due_ms`) in `group`'s set. A member that is not a JSON
/// array of strings is shown with an empty type and id (the scheduler forwards it as
/// malformed, so the group dead-letters it).
fn entry(group: &str, member: &str, due_ms: u64) -> RetryEntry {
    let fields = member_fields(member).unwrap_or_default();
    let get = |name: &str| lookup(&fields, name).map(str::to_string);
    RetryEntry {
        group: group.to_string(),
        event_type: get(field::TYPE).unwrap_or_default(),
        id: get(field::ID).unwrap_or_default(),
        attempt: get(field::ATTEMPT)
            .and_then(|a| a.parse().ok())
            .unwrap_or(0),
        due_ms,
        due: rfc3339(due_ms),
        last_error: None,
        correlation_id: get(field::CORRELATIONID),
        handle: Handle::of(due_ms, member),
        fields,
    }
}

/// The fields of a member: a JSON array `[field, value, ...]` of strings.
fn member_fields(member: &str) -> Option<Vec<(String, String)>> {
    let flat: Vec<String> = serde_json::from_str(member).ok()?;
    if !flat.len().is_multiple_of(2) {
        return None;
    }
    Some(
        flat.chunks(2)
            .map(|c| (c[0].clone(), c[1].clone()))
            .collect(),
    )
}

/// Fills `last_error` from the newest `retried` records among the last
/// [`HISTORY_LOOKUP`] history records.
async fn add_last_errors(
    store: &Store,
    keys: &Keys,
    entries: &mut [RetryEntry],
) -> Result<(), StoreError> {
    if entries.is_empty() {
        return Ok(());
    }
    let records = store
        .xrevrange(&keys.history(), "+", "-", HISTORY_LOOKUP)
        .await?;
    for e in entries.iter_mut() {
        e.last_error = records
            .iter()
            .map(Record::from_entry)
            .find(|r| r.kind == kind::RETRIED && r.id == e.id && r.group == e.group)
            .map(|r| r.detail);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handles_and_cursors_parse_only_their_own_shape() {
        let sha = "a".repeat(40);
        let h = Handle::parse(&format!("1700000000000-{sha}")).unwrap();
        assert_eq!(h.due_ms, 1_700_000_000_000);
        for bad in ["", "12", "x-aaaa", &format!("12-{}", "A".repeat(40)), "-1"] {
            let err = Handle::parse(bad).unwrap_err().to_string();
            assert!(err.ends_with("must be <due ms>-<sha1> as `retries list` shows it"));
        }
        let c = Cursor::parse(&format!("5:billing.v2:{sha}")).unwrap();
        assert_eq!((c.due_ms, c.group.as_str()), (5, "billing.v2"));
        assert!(Cursor::parse(&format!("5:a:b:{sha}")).is_err());
        assert_eq!(
            Cursor::text(5, "g", "m"),
            format!("5:g:{}", fred::util::sha1_hash("m"))
        );
    }

    #[test]
    fn entries_read_the_member_fields() {
        let member = r#"["id","e-1","type","a.b","data","{}","correlationid","c-9","attempt","2","origin_entry_id","1-0"]"#;
        let e = entry("g", member, 1000);
        assert_eq!(
            (e.id.as_str(), e.event_type.as_str(), e.attempt),
            ("e-1", "a.b", 2)
        );
        assert_eq!(e.correlation_id.as_deref(), Some("c-9"));
        assert_eq!(e.due, "1970-01-01T00:00:01.000Z");
        assert_eq!(Handle::parse(&e.handle).unwrap().due_ms, 1000);
        let odd = entry("g", "not json", 7);
        assert_eq!((odd.id.as_str(), odd.fields.len()), ("", 0));
    }
}
