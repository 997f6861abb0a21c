//! [`OutboxError`]: every way the outbox refuses, each naming the directory or file, the
//! cause and the next step.

use std::io;
use std::path::{Path, PathBuf};

/// Why the outbox refused to open, append, read or acknowledge.
#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    /// Another process holds the directory's lock.
    #[error(
        "outbox directory {dir} is in use by another process{}; one directory serves one \
         process: stop that process, or give this one its own [outbox] dir",
        pid.map(|p| format!(" (pid {p})")).unwrap_or_default()
    )]
    Locked {
        /// The directory.
        dir: PathBuf,
        /// The holder's pid, when its lock file names one.
        pid: Option<u32>,
    },
    /// `max_bytes` reached: the record was not appended; nothing queued was dropped.
    #[error(
        "outbox {dir} is full: {used} bytes of max_bytes {max} hold events not yet drained and \
         this record needs {needed} more; nothing was dropped; retry once Redis is back and the \
         outbox drains, or raise outbox.max_bytes"
    )]
    Full {
        /// The directory.
        dir: PathBuf,
        /// Bytes the segments take now.
        used: u64,
        /// `max_bytes`.
        max: u64,
        /// Bytes this record needs.
        needed: u64,
    },
    /// A payload over the frame's limit.
    #[error("outbox record of {size} bytes is over the {max}-byte limit of one record")]
    TooLarge {
        /// The payload's size.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// The filesystem has no space left (ENOSPC/EDQUOT).
    #[error(
        "outbox {}: the disk is full while writing {}: {error}; the record was not queued and \
         nothing already queued was changed; free space on that filesystem",
        dir.display(), file.display()
    )]
    DiskFull {
        /// The directory.
        dir: PathBuf,
        /// The file being written.
        file: PathBuf,
        /// The OS error (in the message, so not a `source`: it would print twice).
        error: io::Error,
    },
    /// The filesystem is read-only (EROFS) or the directory is not writable (EACCES/EPERM).
    #[error(
        "outbox {}: cannot write {}: {error}; the record was not queued and nothing already \
         queued was changed; make the directory writable (is the volume mounted read-only?)",
        dir.display(), file.display()
    )]
    NotWritable {
        /// The directory.
        dir: PathBuf,
        /// The file being written.
        file: PathBuf,
        /// The OS error (in the message, so not a `source`: it would print twice).
        error: io::Error,
    },
    /// Any other I/O failure.
    #[error("outbox {}: cannot {action} {}: {error}", dir.display(), file.display())]
    Io {
        /// The directory.
        dir: PathBuf,
        /// What was being done (`create`, `read`, `fsync`...).
        action: &'static str,
        /// The file.
        file: PathBuf,
        /// The OS error (in the message, so not a `source`: it would print twice).
        error: io::Error,
    },
    /// A file whose content is not what the outbox wrote, somewhere other than a torn tail.
    #[error(
        "outbox file {} is damaged at byte {offset} ({what}); this is not a torn last write, \
         so the outbox will not guess: move the file aside (its intact records stay readable \
         with `event-worker outbox status`) and restart",
        file.display()
    )]
    Damaged {
        /// The file.
        file: PathBuf,
        /// Where.
        offset: u64,
        /// What is wrong.
        what: String,
    },
    /// An fsync failed earlier: the kernel may have dropped the dirty pages, so the outbox
    /// accepts nothing more until it is opened again (and re-reads what is really on disk).
    #[error(
        "outbox {dir} stopped accepting events after a failed fsync ({cause}); restart the \
         process to re-open it from what is on disk"
    )]
    Stopped {
        /// The directory.
        dir: PathBuf,
        /// The first failure.
        cause: String,
    },
    /// An acknowledgement past the records handed out.
    #[error("outbox ack of record {seq} but only records up to {read} were read")]
    AckPastRead {
        /// The sequence acknowledged.
        seq: u64,
        /// The last sequence read.
        read: u64,
    },
}

impl OutboxError {
    /// Classifies an I/O error on `file` in `dir`: full disk and read-only get their own kind.
    pub fn io(dir: &Path, file: &Path, action: &'static str, error: io::Error) -> Self {
        let (dir, file) = (dir.to_path_buf(), file.to_path_buf());
        match error.raw_os_error() {
            Some(code) if code == libc_enospc() || code == libc_edquot() => {
                OutboxError::DiskFull { dir, file, error }
            }
            Some(code) if code == libc_erofs() || code == libc_eacces() || code == libc_eperm() => {
                OutboxError::NotWritable { dir, file, error }
            }
            _ => OutboxError::Io {
                dir,
                action,
                file,
                error,
            },
        }
    }
}

fn libc_enospc() -> i32 {
    rustix::io::Errno::NOSPC.raw_os_error()
}
fn libc_edquot() -> i32 {
    rustix::io::Errno::DQUOT.raw_os_error()
}
fn libc_erofs() -> i32 {
    rustix::io::Errno::ROFS.raw_os_error()
}
fn libc_eacces() -> i32 {
    rustix::io::Errno::ACCESS.raw_os_error()
}
fn libc_eperm() -> i32 {
    rustix::io::Errno::PERM.raw_os_error()
}
