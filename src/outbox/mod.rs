//! The durable local outbox (README "Outbox"): events a publish could not hand to Redis wait
//! here, on local disk, until a drain publishes them. [`fallback`] decides, per publish,
//! between Redis and the log (and keeps a type's order); [`pump`] is the running process's
//! drain; [`drain_into`] the one-shot drain of `event-worker outbox drain`.
//!
//! # Format
//! One directory per process, locked ([`lock`]). Records go to segment files
//! ([`segment`]: `<first seq>.seg`, an 8-byte magic, then frames), each record framed with
//! its length, a CRC-32C, its sequence and its append time ([`frame`]). The ack cursor
//! `ACKED` ([`cursor`]) holds the last confirmed sequence. A plain log, not an embedded
//! database: the access pattern is append at the tail and remove from the head, which a log
//! does with one write and one fsync per record, and whose every byte is explained below; a
//! database would bring its own recovery rules and compaction to trust on top.
//!
//! # Crash analysis (each point where a crash can land)
//! - **Mid-append** (torn last frame): the frame is cut short or its bytes are garbage; the
//!   next open finds it by its length and checksum, truncates it away, counts it in
//!   `ACKED` (`torn_total`) and logs it. Its `append` never returned, so no caller was told it
//!   was queued. Only the last segment can be torn: a segment is fsynced before the next is
//!   created, and damage anywhere else is refused as [`OutboxError::Damaged`], not guessed.
//! - **Mid-roll**: the new segment is shorter than its magic; it held no record yet and is
//!   re-created. A new segment's directory entry is fsynced before any record goes in it.
//! - **After the publish, before the ack**: the cursor still has the old value, so the
//!   batch is handed out again (at most one batch, [`drain::DrainOptions::batch`]); the
//!   idempotent publish by (type, id) makes that harmless.
//! - **Mid-ack**: the cursor is replaced by rename (write a temp file, fsync, rename,
//!   fsync the directory): it is either old (re-delivery as above) or new.
//! - **After the ack, before the unlink** (Vector's 2026 bug was the reverse order): the
//!   cursor is durable before any file is removed, so a segment that survives is only
//!   redundant, and the next open removes segments the cursor covers. Nothing is unlinked
//!   that the cursor does not already cover.
//! - **Fsync failure**: the kernel may have dropped the dirty pages, so the log refuses
//!   appends ([`OutboxError::Stopped`]) until re-opened from what is really on disk. The
//!   failed append returns the error, yet its record may have reached the disk and be
//!   drained later under the same id: a retry by the caller (same id) is then harmless
//!   through the id guard, never a loss.
//! - **Disk full / read-only**: the append fails with [`OutboxError::DiskFull`] or
//!   [`OutboxError::NotWritable`]; a partial write is truncated away (and would be found
//!   as a torn tail otherwise); records already there are never rewritten.
//! - **`interval` policy and a power cut**: appends of the last interval may be lost (the
//!   stated loss window); if the drain had already confirmed some of them, the cursor is
//!   ahead of what survived and the next open starts a fresh segment after the cursor.
//!
//! Nothing leaves the log except through [`Log::ack`] or as a counted torn tail: there is
//! no silent drop. `max_bytes` refuses new appends ([`OutboxError::Full`]) instead.

mod cursor;
pub mod drain;
pub mod error;
pub mod event;
pub mod fallback;
#[cfg(test)]
mod fallback_tests;
pub mod frame;
mod fs;
mod lock;
pub mod log;
mod open;
pub mod pump;
mod read;
pub mod segment;
#[cfg(test)]
mod tests;

pub use drain::{DrainOptions, drain_into};
pub use error::OutboxError;
pub use fallback::{Outbox, Outcome, Queued, Reason, SubmitError};
pub use fs::{durability_warning, fs_warning_for};
pub use log::{FsyncPolicy, Log, Options};
