//! The ack cursor, `<dir>/ACKED`: the last sequence the caller confirmed and the count of
//! torn records ever discarded, with a CRC-32C. Replaced atomically (write `ACKED.tmp`,
//! fsync it, rename over `ACKED`, fsync the directory), so after any crash it holds either
//! the old or the new value, never a mix.

use std::fs::File;
use std::io::Write;
use std::path::Path;

use super::error::OutboxError;
use super::fs::sync_dir;

/// The cursor's file name.
pub const CURSOR_FILE: &str = "ACKED";
const TMP_FILE: &str = "ACKED.tmp";

/// What the cursor file holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Cursor {
    /// Every record up to this sequence was confirmed (0: none).
    pub acked: u64,
    /// Torn records discarded since the directory was created.
    pub torn_total: u64,
}

/// Reads the cursor of `dir` (the default when there is none yet).
///
/// # Errors
/// Unreadable, or not a cursor ([`OutboxError::Damaged`]).
pub fn load(dir: &Path) -> Result<Cursor, OutboxError> {
    let path = dir.join(CURSOR_FILE);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Cursor::default()),
        Err(e) => return Err(OutboxError::io(dir, &path, "read", e)),
    };
    let damaged = || OutboxError::Damaged {
        file: path.clone(),
        offset: 0,
        what: "not a 20-byte cursor with a valid checksum".into(),
    };
    if bytes.len() != 20 {
        return Err(damaged());
    }
    let crc = u32::from_le_bytes(bytes[16..20].try_into().expect("4 bytes"));
    if crc != crc32c::crc32c(&bytes[..16]) {
        return Err(damaged());
    }
    Ok(Cursor {
        acked: u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes")),
        torn_total: u64::from_le_bytes(bytes[8..16].try_into().expect("8 bytes")),
    })
}

/// Replaces the cursor of `dir` durably: returns once the new value survives a power loss.
///
/// # Errors
/// Any step failed; the old cursor is then still the one in force.
pub fn store(dir: &Path, cursor: Cursor) -> Result<(), OutboxError> {
    let mut bytes = Vec::with_capacity(20);
    bytes.extend_from_slice(&cursor.acked.to_le_bytes());
    bytes.extend_from_slice(&cursor.torn_total.to_le_bytes());
    bytes.extend_from_slice(&crc32c::crc32c(&bytes).to_le_bytes());
    let tmp = dir.join(TMP_FILE);
    File::create(&tmp)
        .and_then(|mut f| {
            f.write_all(&bytes)?;
            f.sync_all()
        })
        .map_err(|e| OutboxError::io(dir, &tmp, "write", e))?;
    let path = dir.join(CURSOR_FILE);
    std::fs::rename(&tmp, &path).map_err(|e| OutboxError::io(dir, &path, "rename", e))?;
    sync_dir(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_damage() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(load(dir.path()).unwrap(), Cursor::default());
        let c = Cursor {
            acked: 41,
            torn_total: 2,
        };
        store(dir.path(), c).unwrap();
        assert_eq!(load(dir.path()).unwrap(), c);
        std::fs::write(dir.path().join(CURSOR_FILE), [0u8; 20]).unwrap();
        let e = load(dir.path()).unwrap_err().to_string();
        assert!(
            e.contains("ACKED is damaged at byte 0 (not a 20-byte cursor"),
            "{e}"
        );
    }
}
