//! [`Log`]: the segmented append-only log in one locked directory. Opening it checks every
//! segment, cuts a torn last record away (counted and logged), and drops segments the ack
//! cursor covers; appending is bounded by `max_bytes` and synced per the [`FsyncPolicy`];
//! reading and acknowledging are in [`super::read`].

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::cursor::Cursor;
use super::error::OutboxError;
use super::frame::{self, HEADER_LEN, MAX_PAYLOAD};
use super::fs::sync_dir;
use super::lock::DirLock;
use super::segment::{self, MAGIC};

/// When an append is on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// `append` returns once the record (and a new segment's directory entry) is fsynced:
    /// nothing acknowledged is lost, even to a power cut.
    Always,
    /// `append` returns once the record is written (in the OS page cache: it survives the
    /// process being killed, not a kernel crash or power cut); an fsync follows at most this
    /// long after the first unsynced append (on the next append or [`Log::sync_if_due`]).
    Interval(Duration),
}

/// How the log is bounded and synced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Options {
    /// The most bytes all segments may take together; an append past it is refused.
    pub max_bytes: u64,
    /// A segment rolls over to a new file once it would grow past this.
    pub segment_bytes: u64,
    /// When an append is on disk.
    pub fsync: FsyncPolicy,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            max_bytes: 256 << 20,
            segment_bytes: 16 << 20,
            fsync: FsyncPolicy::Always,
        }
    }
}

/// One segment file.
#[derive(Debug, Clone, Copy)]
pub(super) struct Segment {
    /// The sequence of its first record (its name).
    pub first_seq: u64,
    /// Its size in bytes (magic and intact frames).
    pub len: u64,
    /// How many records it holds.
    pub records: u64,
}

impl Segment {
    /// Its last record's sequence (`first_seq - 1` when empty).
    pub fn last_seq(&self) -> u64 {
        self.first_seq + self.records - 1
    }
}

/// Where the reader is: the segment (by first sequence), the byte offset in it, and the
/// sequence of the record there.
#[derive(Debug, Clone, Copy)]
pub(super) struct ReadPos {
    pub segment: u64,
    pub offset: u64,
    pub next: u64,
}

/// What [`Log::status`] reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    /// Records not yet acknowledged.
    pub records: u64,
    /// Bytes the segments take on disk (what `max_bytes` bounds).
    pub bytes: u64,
    /// `max_bytes`.
    pub max_bytes: u64,
    /// Append time (ms since the epoch) of the oldest record not yet acknowledged.
    pub oldest_time_ms: Option<u64>,
    /// Torn records discarded when this process opened the directory.
    pub torn_at_open: u64,
    /// Torn records discarded since the directory was created.
    pub torn_total: u64,
    /// Segment files.
    pub segments: usize,
    /// fsyncs of this process so far.
    pub fsyncs: u64,
    /// Microseconds those fsyncs took in all (with `fsyncs`: the mean fsync latency).
    pub fsync_micros: u64,
}

/// A durable, bounded, append-only log of records in one directory (see the module docs of
/// [`super`] for the format and the crash analysis).
#[derive(Debug)]
pub struct Log {
    pub(super) dir: PathBuf,
    pub(super) options: Options,
    _lock: DirLock,
    /// Oldest first; the last one is the active segment.
    pub(super) segments: Vec<Segment>,
    pub(super) active: File,
    pub(super) next_seq: u64,
    pub(super) cursor: Cursor,
    pub(super) bytes: u64,
    torn_at_open: u64,
    pub(super) reader: ReadPos,
    pub(super) read_file: Option<(u64, File)>,
    /// (seq, time) of records read but not acknowledged, oldest first.
    pub(super) pending: std::collections::VecDeque<(u64, u64)>,
    pub(super) oldest_time: Option<u64>,
    dirty_since: Option<Instant>,
    stopped: Option<String>,
    fsyncs: u64,
    fsync_micros: u64,
}

impl Log {
    /// Opens (creating if needed) the log in `dir` and takes its lock.
    ///
    /// # Errors
    /// [`OutboxError::Locked`] when another process holds it; damage other than a torn
    /// last record; I/O errors naming the file.
    pub fn open(dir: &Path, options: Options) -> Result<Log, OutboxError> {
        std::fs::create_dir_all(dir).map_err(|e| OutboxError::io(dir, dir, "create", e))?;
        let lock = DirLock::acquire(dir)?;
        let opened = super::open::recover(dir)?;
        let last = *opened
            .segments
            .last()
            .expect("recover leaves an active segment");
        let path = dir.join(segment::file_name(last.first_seq));
        let active = OpenOptions::new()
            .write(true)
            .open(&path)
            .map_err(|e| OutboxError::io(dir, &path, "open", e))?;
        let first = opened.segments[0].first_seq;
        Ok(Log {
            dir: dir.to_path_buf(),
            options,
            _lock: lock,
            bytes: opened.segments.iter().map(|s| s.len).sum(),
            segments: opened.segments,
            active,
            next_seq: opened.next_seq,
            cursor: opened.cursor,
            torn_at_open: opened.torn,
            reader: ReadPos {
                segment: first,
                offset: MAGIC.len() as u64,
                next: first,
            },
            read_file: None,
            pending: Default::default(),
            oldest_time: opened.oldest_time,
            dirty_since: None,
            stopped: None,
            fsyncs: 0,
            fsync_micros: 0,
        })
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Records not yet acknowledged.
    pub fn depth(&self) -> u64 {
        self.next_seq - 1 - self.cursor.acked
    }

    /// Depth, bytes, oldest age and torn counts.
    pub fn status(&self) -> Status {
        Status {
            records: self.depth(),
            bytes: self.bytes,
            max_bytes: self.options.max_bytes,
            oldest_time_ms: self.oldest_time,
            torn_at_open: self.torn_at_open,
            torn_total: self.cursor.torn_total,
            segments: self.segments.len(),
            fsyncs: self.fsyncs,
            fsync_micros: self.fsync_micros,
        }
    }

    /// Appends `payload` stamped with the current time; returns its sequence once it is as
    /// durable as the [`FsyncPolicy`] says.
    ///
    /// # Errors
    /// [`OutboxError::Full`] past `max_bytes`, [`OutboxError::TooLarge`],
    /// [`OutboxError::DiskFull`], [`OutboxError::NotWritable`], [`OutboxError::Stopped`]
    /// after a failed fsync. On every error nothing already queued is changed.
    pub fn append(&mut self, payload: &[u8]) -> Result<u64, OutboxError> {
        self.append_at(payload, crate::model::time::now_ms())
    }

    /// [`Log::append`] with an explicit append time (ms since the epoch).
    ///
    /// # Errors
    /// As [`Log::append`].
    pub fn append_at(&mut self, payload: &[u8], time_ms: u64) -> Result<u64, OutboxError> {
        if let Some(cause) = &self.stopped {
            return Err(OutboxError::Stopped {
                dir: self.dir.clone(),
                cause: cause.clone(),
            });
        }
        if payload.len() > MAX_PAYLOAD {
            return Err(OutboxError::TooLarge {
                size: payload.len(),
                max: MAX_PAYLOAD,
            });
        }
        let frame_len = (HEADER_LEN + payload.len()) as u64;
        let active = *self.segments.last().expect("an active segment");
        let roll = active.records > 0 && active.len + frame_len > self.options.segment_bytes;
        let needed = frame_len + if roll { MAGIC.len() as u64 } else { 0 };
        if self.bytes + needed > self.options.max_bytes {
            return Err(OutboxError::Full {
                dir: self.dir.clone(),
                used: self.bytes,
                max: self.options.max_bytes,
                needed,
            });
        }
        if roll {
            self.sync_active()?;
            self.roll()?;
        }
        let seq = self.next_seq;
        let bytes = frame::encode(seq, time_ms, payload);
        let at = self.segments.last().expect("active").len;
        if let Err(e) = self.active.write_all_at(&bytes, at) {
            // Cut a partial write away so the file ends with an intact frame again.
            let _ = self.active.set_len(at);
            return Err(OutboxError::io(&self.dir, &self.active_path(), "write", e));
        }
        let was_empty = self.depth() == 0;
        let seg = self.segments.last_mut().expect("active");
        seg.len += frame_len;
        seg.records += 1;
        self.bytes += frame_len;
        self.next_seq += 1;
        if was_empty {
            self.oldest_time = Some(time_ms);
        }
        match self.options.fsync {
            FsyncPolicy::Always => self.sync_active()?,
            FsyncPolicy::Interval(_) => {
                self.dirty_since.get_or_insert_with(Instant::now);
                self.sync_if_due()?;
            }
        }
        Ok(seq)
    }

    /// Under [`FsyncPolicy::Interval`], fsyncs when the oldest unsynced append is at least the
    /// interval old. A daemon calls it on a timer of the interval so the loss window holds
    /// when appends stop.
    ///
    /// # Errors
    /// The fsync failed (the log then accepts nothing more).
    pub fn sync_if_due(&mut self) -> Result<(), OutboxError> {
        match (self.options.fsync, self.dirty_since) {
            (FsyncPolicy::Interval(d), Some(since)) if since.elapsed() >= d => self.sync_active(),
            _ => Ok(()),
        }
    }

    /// fsyncs the active segment now (on a clean shutdown, or the group commit's tick).
    ///
    /// # Errors
    /// The fsync failed: the kernel may have dropped the pages, so the log stops accepting
    /// appends until it is opened again.
    pub fn sync_active(&mut self) -> Result<(), OutboxError> {
        let started = Instant::now();
        let synced = self.active.sync_data();
        self.fsyncs += 1;
        self.fsync_micros += started.elapsed().as_micros() as u64;
        if let Err(e) = synced {
            let err = OutboxError::io(&self.dir, &self.active_path(), "fsync", e);
            self.stopped = Some(err.to_string());
            return Err(err);
        }
        self.dirty_since = None;
        Ok(())
    }

    /// Test aid (`outbox fill --torn-tail`): writes the first half of the next record's
    /// frame, as a write cut short by a crash or power cut leaves it; its append never
    /// returns. Nothing else uses it.
    ///
    /// # Errors
    /// The write failed.
    pub fn write_torn_for_test(&mut self, payload: &[u8]) -> Result<(), OutboxError> {
        let bytes = frame::encode(self.next_seq, crate::model::time::now_ms(), payload);
        let at = self.segments.last().expect("active").len;
        self.active
            .write_all_at(&bytes[..bytes.len() / 2], at)
            .and_then(|()| self.active.sync_data())
            .map_err(|e| OutboxError::io(&self.dir, &self.active_path(), "write", e))
    }

    /// The active segment's path.
    pub(super) fn active_path(&self) -> PathBuf {
        let first = self.segments.last().expect("active").first_seq;
        self.dir.join(segment::file_name(first))
    }

    /// Starts a new, empty active segment at `next_seq`: created, its magic written and
    /// fsynced, then the directory fsynced, so the new entry survives a power cut.
    pub(super) fn roll(&mut self) -> Result<(), OutboxError> {
        let (file, seg) = create_segment(&self.dir, self.next_seq)?;
        self.active = file;
        self.bytes += seg.len;
        self.segments.push(seg);
        Ok(())
    }
}

impl Drop for Log {
    fn drop(&mut self) {
        if self.dirty_since.is_some() {
            let _ = self.active.sync_data();
        }
    }
}

/// Creates the segment file for `first_seq` durably (magic fsynced, directory fsynced).
pub(super) fn create_segment(dir: &Path, first_seq: u64) -> Result<(File, Segment), OutboxError> {
    let path = dir.join(segment::file_name(first_seq));
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)
        .map_err(|e| OutboxError::io(dir, &path, "create", e))?;
    if let Err(e) = file.write_all_at(MAGIC, 0).and_then(|()| file.sync_all()) {
        let _ = std::fs::remove_file(&path);
        return Err(OutboxError::io(dir, &path, "write", e));
    }
    sync_dir(dir)?;
    let seg = Segment {
        first_seq,
        len: MAGIC.len() as u64,
        records: 0,
    };
    Ok((file, seg))
}
