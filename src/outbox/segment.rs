//! Segment files: `<dir>/<first seq, 20 digits>.seg`, an 8-byte magic then frames
//! ([`super::frame`]) whose sequence numbers run on from the name without gaps. Only the
//! last (active) segment is ever appended to; a segment is fsynced before the next one is
//! created, so every segment but the last is complete.

use std::fs::File;
use std::io::Read;
use std::path::Path;

use super::error::OutboxError;
use super::frame::{self, Decoded};

/// The first bytes of every segment (format version 1).
pub const MAGIC: &[u8; 8] = b"EWOUTBX1";

/// The file name of the segment whose first record is `first_seq`.
pub fn file_name(first_seq: u64) -> String {
    format!("{first_seq:020}.seg")
}

/// The first sequence a segment file name stands for, `None` for other files.
pub fn parse_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(".seg")?;
    (digits.len() == 20 && digits.bytes().all(|b| b.is_ascii_digit()))
        .then(|| digits.parse().ok())
        .flatten()
}

/// Bytes at the end of a segment that are no intact frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tail {
    /// Where the intact frames end.
    pub offset: u64,
    /// Bytes from there to the end of the file.
    pub bytes: u64,
    /// What the first of them is (`cut short`, `checksum mismatch`...).
    pub what: &'static str,
}

/// What a segment holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scan {
    /// False when the file is shorter than [`MAGIC`] (a crash while creating it).
    pub header: bool,
    /// Intact records.
    pub records: u64,
    /// The last intact record's sequence.
    pub last_seq: Option<u64>,
    /// The append time of the first intact record past `acked`.
    pub first_unacked_time: Option<u64>,
    /// Bytes of the magic and the intact frames.
    pub valid_len: u64,
    /// What follows them, if anything.
    pub tail: Option<Tail>,
}

/// Reads `path` (a segment named for `first_seq`) and checks every frame.
///
/// # Errors
/// Unreadable file; a wrong magic or a sequence out of order ([`OutboxError::Damaged`]).
pub fn scan(dir: &Path, path: &Path, first_seq: u64, acked: u64) -> Result<Scan, OutboxError> {
    let mut bytes = Vec::new();
    File::open(path)
        .and_then(|mut f| f.read_to_end(&mut bytes))
        .map_err(|e| OutboxError::io(dir, path, "read", e))?;
    let damaged = |offset: usize, what: String| OutboxError::Damaged {
        file: path.to_path_buf(),
        offset: offset as u64,
        what,
    };
    let mut scan = Scan {
        header: bytes.len() >= MAGIC.len(),
        records: 0,
        last_seq: None,
        first_unacked_time: None,
        valid_len: 0,
        tail: None,
    };
    if !scan.header {
        return Ok(scan);
    }
    if &bytes[..MAGIC.len()] != MAGIC {
        return Err(damaged(0, "not an outbox segment: wrong magic".into()));
    }
    let mut at = MAGIC.len();
    while at < bytes.len() {
        let (record, len) = match frame::decode(&bytes[at..]) {
            Decoded::Frame(r, len) => (r, len),
            Decoded::Short { .. } => {
                scan.tail = Some(tail(at, bytes.len(), "a record cut short"));
                break;
            }
            Decoded::Bad(what) => {
                scan.tail = Some(tail(at, bytes.len(), what));
                break;
            }
        };
        let want = first_seq + scan.records;
        if record.seq != want {
            let what = format!("record {} where {want} was expected", record.seq);
            return Err(damaged(at, what));
        }
        if record.seq > acked && scan.first_unacked_time.is_none() {
            scan.first_unacked_time = Some(record.time_ms);
        }
        scan.records += 1;
        scan.last_seq = Some(record.seq);
        at += len;
    }
    scan.valid_len = at as u64;
    Ok(scan)
}

fn tail(at: usize, end: usize, what: &'static str) -> Tail {
    Tail {
        offset: at as u64,
        bytes: (end - at) as u64,
        what,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        assert_eq!(file_name(42), "00000000000000000042.seg");
        assert_eq!(parse_name("00000000000000000042.seg"), Some(42));
        assert_eq!(parse_name("42.seg"), None);
        assert_eq!(parse_name("LOCK"), None);
    }

    #[test]
    fn scan_finds_the_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(file_name(5));
        let mut bytes = MAGIC.to_vec();
        bytes.extend(frame::encode(5, 100, b"a"));
        bytes.extend(frame::encode(6, 200, b"b"));
        let good = bytes.len();
        bytes.extend(&frame::encode(7, 300, b"c")[..10]);
        std::fs::write(&path, &bytes).unwrap();
        let s = scan(dir.path(), &path, 5, 5).unwrap();
        assert_eq!(
            (s.records, s.last_seq, s.valid_len),
            (2, Some(6), good as u64)
        );
        assert_eq!(s.first_unacked_time, Some(200));
        assert_eq!(s.tail, Some(tail(good, good + 10, "a record cut short")));
    }

    #[test]
    fn a_gap_is_damage() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(file_name(1));
        let mut bytes = MAGIC.to_vec();
        bytes.extend(frame::encode(2, 1, b"a"));
        std::fs::write(&path, &bytes).unwrap();
        let e = scan(dir.path(), &path, 1, 0).unwrap_err().to_string();
        assert!(
            e.contains("is damaged at byte 8 (record 2 where 1 was expected)"),
            "{e}"
        );
    }
}
