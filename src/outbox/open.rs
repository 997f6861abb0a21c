//! Recovery when a directory is opened: what a crash at any point leaves behind is brought
//! back to a consistent log before the first append (see the crash analysis in [`super`]).

use std::path::{Path, PathBuf};

use super::cursor::{self, Cursor};
use super::error::OutboxError;
use super::fs::sync_dir;
use super::log::{Segment, create_segment};
use super::segment;

/// What recovery found and left.
pub(super) struct Opened {
    /// Oldest first, at least one (the active segment, last).
    pub segments: Vec<Segment>,
    /// The sequence the next append gets.
    pub next_seq: u64,
    /// The cursor (torn records of this open already counted in it).
    pub cursor: Cursor,
    /// Torn records discarded now.
    pub torn: u64,
    /// Append time of the oldest unacknowledged record.
    pub oldest_time: Option<u64>,
}

/// The segment files of `dir`, by first sequence.
fn list(dir: &Path) -> Result<Vec<(u64, PathBuf)>, OutboxError> {
    let entries = std::fs::read_dir(dir).map_err(|e| OutboxError::io(dir, dir, "list", e))?;
    let mut found = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| OutboxError::io(dir, dir, "list", e))?;
        if let Some(first) = entry.file_name().to_str().and_then(segment::parse_name) {
            found.push((first, entry.path()));
        }
    }
    found.sort();
    Ok(found)
}

/// Checks every segment, cuts a torn tail off the last one, removes segments the cursor
/// covers and makes sure an active segment starts where the next append goes.
pub(super) fn recover(dir: &Path) -> Result<Opened, OutboxError> {
    let _ = std::fs::remove_file(dir.join("ACKED.tmp"));
    let mut cursor = cursor::load(dir)?;
    let files = list(dir)?;
    let mut segments: Vec<Segment> = Vec::new();
    let mut torn = 0;
    let mut oldest_time = None;
    let mut removed = false;
    for (i, (first, path)) in files.iter().enumerate() {
        let last_file = i + 1 == files.len();
        let scan = segment::scan(dir, path, *first, cursor.acked)?;
        let mut len = scan.valid_len;
        if !scan.header {
            if !last_file {
                return Err(damaged(path, 0, "shorter than its 8-byte header"));
            }
            // A crash while the segment was being created: no record was in it yet.
            len = create_segment(dir, *first)?.1.len;
        } else if let Some(tail) = &scan.tail {
            if !last_file {
                return Err(damaged(path, tail.offset, tail.what));
            }
            tracing::warn!(
                file = %path.display(), offset = tail.offset, bytes = tail.bytes, what = tail.what,
                "outbox: discarded a torn last record (a crash cut its write short, so its \
                 append never returned and no caller was told it was queued)"
            );
            rewrite(dir, path, tail.offset)?;
            torn += 1;
        }
        let seg = Segment {
            first_seq: *first,
            len,
            records: scan.records,
        };
        if !last_file && (seg.records == 0 || seg.last_seq() <= cursor.acked) {
            // Confirmed earlier; its unlink did not happen or did not reach the disk.
            std::fs::remove_file(path).map_err(|e| OutboxError::io(dir, path, "remove", e))?;
            removed = true;
            continue;
        }
        if let Some(prev) = segments.last()
            && prev.last_seq() + 1 != seg.first_seq
        {
            let what = format!(
                "records {}..{} are missing",
                prev.last_seq() + 1,
                seg.first_seq
            );
            return Err(damaged(path, 0, &what));
        }
        oldest_time = oldest_time.or(scan.first_unacked_time);
        segments.push(seg);
    }
    if removed {
        sync_dir(dir)?;
    }
    let natural_next = segments.last().map_or(1, |s| s.last_seq() + 1);
    let next_seq = natural_next.max(cursor.acked + 1);
    let all_acked = next_seq - 1 == cursor.acked;
    let active_ok = segments
        .last()
        .is_some_and(|s| (s.records == 0 && s.first_seq == next_seq) || !all_acked);
    if !active_ok {
        // Nothing left to drain (or the cursor is ahead of what survived): start clean.
        let (_, seg) = create_segment(dir, next_seq)?;
        for old in segments.drain(..) {
            let path = dir.join(segment::file_name(old.first_seq));
            if old.first_seq != next_seq {
                std::fs::remove_file(&path)
                    .map_err(|e| OutboxError::io(dir, &path, "remove", e))?;
            }
        }
        sync_dir(dir)?;
        segments.push(seg);
        oldest_time = None;
    }
    if torn > 0 {
        cursor.torn_total += torn;
        cursor::store(dir, cursor)?;
    }
    Ok(Opened {
        segments,
        next_seq,
        cursor,
        torn,
        oldest_time,
    })
}

/// Truncates `path` to `len` and fsyncs it.
fn rewrite(dir: &Path, path: &Path, len: u64) -> Result<(), OutboxError> {
    std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .and_then(|f| {
            f.set_len(len)?;
            f.sync_all()
        })
        .map_err(|e| OutboxError::io(dir, path, "truncate", e))
}

fn damaged(path: &Path, offset: u64, what: &str) -> OutboxError {
    OutboxError::Damaged {
        file: path.to_path_buf(),
        offset,
        what: what.to_string(),
    }
}
