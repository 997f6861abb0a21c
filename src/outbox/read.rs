//! Reading oldest first and acknowledging: the only way records leave the log.
//!
//! [`Log::read`] hands out records after the cursor, in order, each once per open (or per
//! [`Log::rewind`]); [`Log::ack`] makes "every record up to `seq` is confirmed" durable
//! (the cursor first, then the segments it covers are unlinked). A crash before the cursor
//! is durable re-delivers the unconfirmed tail; a crash after it and before the unlinks
//! leaves files the next open removes. Nothing is ever removed that the cursor does not cover.

use std::fs::File;
use std::os::unix::fs::FileExt;

use super::cursor;
use super::error::OutboxError;
use super::frame::{self, Decoded, HEADER_LEN, Record};
use super::fs::sync_dir;
use super::log::{Log, ReadPos};
use super::segment::{self, MAGIC};

impl Log {
    /// Up to `max` records after the cursor, oldest first, continuing where the last read
    /// stopped. Records stay in the log until [`Log::ack`].
    ///
    /// # Errors
    /// A read failed, or a record changed on disk since it was checked.
    pub fn read(&mut self, max: usize) -> Result<Vec<Record>, OutboxError> {
        let mut out = Vec::new();
        while out.len() < max && self.reader.next < self.next_seq {
            let Some(record) = self.read_one()? else {
                break;
            };
            if record.seq > self.cursor.acked {
                self.pending.push_back((record.seq, record.time_ms));
                out.push(record);
            }
        }
        Ok(out)
    }

    /// Starts reading again at the oldest unacknowledged record (after a failed hand-off).
    pub fn rewind(&mut self) {
        let first = self.segments[0].first_seq;
        self.reader = ReadPos {
            segment: first,
            offset: MAGIC.len() as u64,
            next: first,
        };
        self.pending.clear();
    }

    /// The record at the reader, moving past it (`None` at the end of the log).
    fn read_one(&mut self) -> Result<Option<Record>, OutboxError> {
        let index = self
            .segments
            .iter()
            .position(|s| s.first_seq == self.reader.segment);
        let Some(mut index) = index else {
            // Its segment was removed: every record in it was acknowledged.
            let first = self.segments[0].first_seq;
            self.reader = ReadPos {
                segment: first,
                offset: MAGIC.len() as u64,
                next: first,
            };
            return self.read_one();
        };
        while self.reader.offset >= self.segments[index].len {
            index += 1;
            let Some(seg) = self.segments.get(index) else {
                return Ok(None);
            };
            self.reader = ReadPos {
                segment: seg.first_seq,
                offset: MAGIC.len() as u64,
                next: seg.first_seq,
            };
        }
        let record = self.read_at(self.reader.segment, self.reader.offset)?;
        self.reader.offset += (HEADER_LEN + record.payload.len()) as u64;
        self.reader.next = record.seq + 1;
        Ok(Some(record))
    }

    /// Reads and checks the frame at `offset` of segment `first_seq`.
    fn read_at(&mut self, first_seq: u64, offset: u64) -> Result<Record, OutboxError> {
        let path = self.dir.join(segment::file_name(first_seq));
        if self.read_file.as_ref().is_none_or(|(f, _)| *f != first_seq) {
            let file =
                File::open(&path).map_err(|e| OutboxError::io(&self.dir, &path, "open", e))?;
            self.read_file = Some((first_seq, file));
        }
        let (_, file) = self.read_file.as_ref().expect("opened above");
        let mut header = [0u8; HEADER_LEN];
        file.read_exact_at(&mut header, offset)
            .map_err(|e| OutboxError::io(&self.dir, &path, "read", e))?;
        let len = frame::payload_len(&header).unwrap_or(0);
        let mut bytes = header.to_vec();
        bytes.resize(HEADER_LEN + len, 0);
        file.read_exact_at(&mut bytes[HEADER_LEN..], offset + HEADER_LEN as u64)
            .map_err(|e| OutboxError::io(&self.dir, &path, "read", e))?;
        match frame::decode(&bytes) {
            Decoded::Frame(record, _) => Ok(record),
            Decoded::Bad(what) => Err(damaged(path, offset, what)),
            Decoded::Short { .. } => Err(damaged(path, offset, "a record cut short")),
        }
    }

    /// Confirms every record up to `seq` (handed out by [`Log::read`]): durable once this
    /// returns; segments it covers are removed. Confirming an older sequence again is a no-op.
    ///
    /// # Errors
    /// [`OutboxError::AckPastRead`] for a record not read yet; the cursor could not be
    /// written (then the old one stays in force: those records will be handed out again).
    pub fn ack(&mut self, seq: u64) -> Result<(), OutboxError> {
        if seq <= self.cursor.acked {
            return Ok(());
        }
        if seq >= self.reader.next {
            return Err(OutboxError::AckPastRead {
                seq,
                read: self.reader.next - 1,
            });
        }
        let mut next = self.cursor;
        next.acked = seq;
        cursor::store(&self.dir, next)?;
        self.cursor = next;
        while self.pending.front().is_some_and(|(s, _)| *s <= seq) {
            self.pending.pop_front();
        }
        self.oldest_time = match self.pending.front() {
            Some((_, t)) => Some(*t),
            None if self.depth() > 0 => self.peek_time()?,
            None => None,
        };
        self.remove_covered()
    }

    /// The append time of the record at the reader, without moving it.
    fn peek_time(&mut self) -> Result<Option<u64>, OutboxError> {
        let saved = self.reader;
        let record = self.read_one()?;
        self.reader = saved;
        Ok(record.map(|r| r.time_ms))
    }

    /// Unlinks the segments the cursor covers; when it covers everything, starts a fresh
    /// active segment so the space of the old one comes back too.
    fn remove_covered(&mut self) -> Result<(), OutboxError> {
        let acked = self.cursor.acked;
        let mut removed = Vec::new();
        while self.segments.len() > 1 && self.segments[0].last_seq() <= acked {
            removed.push(self.segments.remove(0));
        }
        let active = *self.segments.last().expect("active");
        if self.depth() == 0 && active.records > 0 {
            self.roll()?;
            removed.push(self.segments.remove(0));
        }
        if removed.is_empty() {
            return Ok(());
        }
        for seg in &removed {
            let path = self.dir.join(segment::file_name(seg.first_seq));
            if let Err(e) = std::fs::remove_file(&path) {
                // The cursor already covers it: the next open removes it.
                tracing::warn!(file = %path.display(), error = %e, "outbox: cannot remove a drained segment");
            }
            self.bytes -= seg.len;
        }
        if let Err(e) = sync_dir(&self.dir) {
            tracing::warn!(error = %e, "outbox: directory fsync after removing segments failed");
        }
        Ok(())
    }
}

fn damaged(path: std::path::PathBuf, offset: u64, what: &str) -> OutboxError {
    OutboxError::Damaged {
        file: path,
        offset,
        what: what.to_string(),
    }
}
