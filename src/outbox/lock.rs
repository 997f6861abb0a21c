//! The directory's exclusive lock: `flock(LOCK_EX | LOCK_NB)` on `<dir>/LOCK`, which then
//! holds the holder's pid for the next opener's message. The kernel drops the lock when the
//! holder exits, however it exits (kill -9 included), so a stale file never blocks anyone.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::path::Path;

use rustix::fs::{FlockOperation, flock};

use super::error::OutboxError;

/// The lock file's name.
pub const LOCK_FILE: &str = "LOCK";

/// A held lock; released when dropped (or when the process ends).
#[derive(Debug)]
pub struct DirLock {
    _file: File,
}

impl DirLock {
    /// Takes the lock of `dir` without waiting.
    ///
    /// # Errors
    /// [`OutboxError::Locked`] naming the holder's pid when another process holds it; I/O
    /// errors naming the file.
    pub fn acquire(dir: &Path) -> Result<DirLock, OutboxError> {
        let path = dir.join(LOCK_FILE);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| OutboxError::io(dir, &path, "open", e))?;
        if let Err(e) = flock(&file, FlockOperation::NonBlockingLockExclusive) {
            if e == rustix::io::Errno::WOULDBLOCK {
                let mut text = String::new();
                let _ = file.read_to_string(&mut text);
                return Err(OutboxError::Locked {
                    dir: dir.to_path_buf(),
                    pid: text.trim().parse().ok(),
                });
            }
            return Err(OutboxError::io(dir, &path, "lock", e.into()));
        }
        // Best effort: the pid only improves the next opener's message, and a full disk must
        // not keep the owner from opening its outbox to drain it.
        let pid = format!("{}\n", std::process::id());
        let _ = file
            .set_len(0)
            .and_then(|()| file.rewind())
            .and_then(|()| file.write_all(pid.as_bytes()));
        Ok(DirLock { _file: file })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_opener_is_refused_with_the_pid() {
        let dir = tempfile::tempdir().unwrap();
        let held = DirLock::acquire(dir.path()).unwrap();
        let e = DirLock::acquire(dir.path()).unwrap_err().to_string();
        let want = format!(
            "outbox directory {} is in use by another process (pid {});",
            dir.path().display(),
            std::process::id()
        );
        assert!(e.starts_with(&want), "{e}");
        drop(held);
        DirLock::acquire(dir.path()).expect("free again once dropped");
    }
}
