//! The log under any sequence of appends, torn writes, crashes and acknowledged drains:
//! every append that returned is read back, in order, until it is acknowledged, and never
//! after; torn tails are discarded and counted; covered segments never come back.

use std::io::Write;
use std::path::Path;

use proptest::prelude::*;

use super::frame;
use super::log::{FsyncPolicy, Log, Options};
use super::segment::{self, MAGIC};

#[derive(Debug, Clone)]
enum Op {
    /// An append that returns.
    Append(usize),
    /// A crash mid-append: the first `cut` bytes of the next frame reach the file.
    TornAppend(usize, usize),
    /// A crash leaving bytes that are no frame at the end of the last segment.
    Garbage(Vec<u8>),
    /// A crash while a new segment is created: `cut` bytes of its magic written.
    TornRoll(usize),
    /// Hand out up to n records.
    Read(usize),
    /// Confirm everything handed out.
    Ack,
    /// Confirm, then crash before the covered segments' unlinks reached the disk.
    AckCrashBeforeUnlink,
    /// Crash and reopen (records handed out but not confirmed come again).
    Crash,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0usize..120).prop_map(Op::Append),
        1 => (0usize..120, 0usize..200).prop_map(|(l, c)| Op::TornAppend(l, c)),
        1 => proptest::collection::vec(any::<u8>(), 1..40).prop_map(Op::Garbage),
        1 => (0usize..8).prop_map(Op::TornRoll),
        3 => (1usize..6).prop_map(Op::Read),
        2 => Just(Op::Ack),
        1 => Just(Op::AckCrashBeforeUnlink),
        1 => Just(Op::Crash),
    ]
}

const OPTIONS: Options = Options {
    max_bytes: 1 << 20,
    segment_bytes: 300,
    fsync: FsyncPolicy::Always,
};

/// The model: records appended and not confirmed, how many of them were handed out.
struct Model {
    queue: Vec<(u64, Vec<u8>)>,
    handed: usize,
    torn_total: u64,
    counter: u8,
}

fn payload(model: &mut Model, len: usize) -> Vec<u8> {
    model.counter = model.counter.wrapping_add(1);
    vec![model.counter; len]
}

fn append_raw(path: &Path, bytes: &[u8]) {
    let mut f = std::fs::OpenOptions::new().append(true).open(path).unwrap();
    f.write_all(bytes).unwrap();
}

fn reopen(dir: &Path, log: Log, model: &mut Model, torn: u64) -> Log {
    drop(log);
    let log = Log::open(dir, OPTIONS).unwrap();
    model.handed = 0;
    model.torn_total += torn;
    let s = log.status();
    assert_eq!(s.torn_at_open, torn, "torn records counted at open");
    assert_eq!(s.torn_total, model.torn_total);
    assert_eq!(s.records, model.queue.len() as u64);
    let on_disk: usize = segment_files(dir).iter().map(|(_, b)| b.len()).sum();
    assert_eq!(s.bytes, on_disk as u64, "bytes counts what is on disk");
    log
}

fn segment_files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap())
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            segment::parse_name(&name).map(|_| (name, std::fs::read(e.path()).unwrap()))
        })
        .collect();
    files.sort();
    files
}

fn step(dir: &Path, mut log: Log, model: &mut Model, op: Op) -> Log {
    match op {
        Op::Append(len) => {
            let p = payload(model, len);
            let seq = log.append(&p).unwrap();
            if let Some((last, _)) = model.queue.last() {
                assert_eq!(seq, last + 1);
            }
            model.queue.push((seq, p));
            log
        }
        Op::TornAppend(len, cut) => {
            let p = payload(model, len);
            let bytes = frame::encode(log.next_seq, 1, &p);
            let cut = cut.min(bytes.len() - 1);
            append_raw(&log.active_path(), &bytes[..cut]);
            reopen(dir, log, model, u64::from(cut > 0))
        }
        Op::Garbage(bytes) => {
            append_raw(&log.active_path(), &bytes);
            reopen(dir, log, model, 1)
        }
        Op::TornRoll(cut) => {
            if log.segments.last().unwrap().records == 0 {
                return log;
            }
            let path = dir.join(segment::file_name(log.next_seq));
            std::fs::write(path, &MAGIC[..cut]).unwrap();
            reopen(dir, log, model, 0)
        }
        Op::Read(n) => {
            let got = log.read(n).unwrap();
            let want = &model.queue[model.handed..(model.handed + n).min(model.queue.len())];
            let got: Vec<_> = got.into_iter().map(|r| (r.seq, r.payload)).collect();
            assert_eq!(got, want, "records handed out in order, each once");
            model.handed += got.len();
            log
        }
        Op::Ack | Op::AckCrashBeforeUnlink => {
            if model.handed == 0 {
                return log;
            }
            let before = segment_files(dir);
            log.ack(model.queue[model.handed - 1].0).unwrap();
            model.queue.drain(..model.handed);
            model.handed = 0;
            if matches!(op, Op::Ack) {
                return log;
            }
            drop(log);
            for (name, bytes) in before {
                let path = dir.join(name);
                if !path.exists() {
                    std::fs::write(path, bytes).unwrap();
                }
            }
            let log = Log::open(dir, OPTIONS).unwrap();
            reopen(dir, log, model, 0)
        }
        Op::Crash => reopen(dir, log, model, 0),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn every_returned_append_is_read_until_confirmed(ops in proptest::collection::vec(op(), 1..60)) {
        // On tmpfs when there is one: this checks the format, not the disk's fsync speed.
        let dir = tempfile::tempdir_in("/dev/shm").or_else(|_| tempfile::tempdir()).unwrap();
        let mut model = Model { queue: Vec::new(), handed: 0, torn_total: 0, counter: 0 };
        let mut log = Log::open(dir.path(), OPTIONS).unwrap();
        for op in ops {
            log = step(dir.path(), log, &mut model, op);
        }
        let log = reopen(dir.path(), log, &mut model, 0);
        let mut log = log;
        let all = log.read(usize::MAX).unwrap();
        let all: Vec<_> = all.into_iter().map(|r| (r.seq, r.payload)).collect();
        prop_assert_eq!(&all, &model.queue);
        if let Some((last, _)) = all.last() {
            log.ack(*last).unwrap();
        }
        prop_assert_eq!(log.depth(), 0);
        drop(log);
        let files = segment_files(dir.path());
        prop_assert_eq!(files.len(), 1, "only the empty active segment is left");
        prop_assert_eq!(files[0].1.len(), MAGIC.len());
    }
}

#[test]
fn full_refuses_and_keeps_everything() {
    let dir = tempfile::tempdir().unwrap();
    let options = Options {
        max_bytes: 200,
        segment_bytes: 100,
        fsync: FsyncPolicy::Always,
    };
    let mut log = Log::open(dir.path(), options).unwrap();
    let mut seqs = Vec::new();
    let err = loop {
        match log.append(b"0123456789012345678901234567890123456789") {
            Ok(seq) => seqs.push(seq),
            Err(e) => break e,
        }
        assert!(seqs.len() < 10, "max_bytes never refused");
    };
    assert_eq!(seqs, [1, 2]);
    let want = format!(
        "outbox {} is full: 144 bytes of max_bytes 200 hold events not yet drained and this \
         record needs 72 more; nothing was dropped;",
        dir.path().display()
    );
    assert!(err.to_string().starts_with(&want), "{err}");
    assert!(matches!(
        err,
        super::error::OutboxError::Full { used: 144, .. }
    ));
    let read = log.read(10).unwrap();
    assert_eq!(read.iter().map(|r| r.seq).collect::<Vec<_>>(), seqs);
    log.ack(2).unwrap();
    assert_eq!(
        log.status().bytes,
        MAGIC.len() as u64,
        "drained segments removed"
    );
    assert_eq!(log.append(b"room again").unwrap(), 3);
}

#[test]
fn oldest_time_follows_acks() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), OPTIONS).unwrap();
    assert_eq!(log.status().oldest_time_ms, None);
    for t in [100, 200, 300] {
        log.append_at(b"x", t).unwrap();
    }
    assert_eq!(log.status().oldest_time_ms, Some(100));
    log.read(1).unwrap();
    log.ack(1).unwrap();
    assert_eq!(log.status().oldest_time_ms, Some(200));
    drop(log);
    let mut log = Log::open(dir.path(), OPTIONS).unwrap();
    assert_eq!(log.status().oldest_time_ms, Some(200));
    log.read(2).unwrap();
    log.ack(3).unwrap();
    assert_eq!(log.status().oldest_time_ms, None);
    let e = log.ack(9).unwrap_err().to_string();
    assert_eq!(
        e,
        "outbox ack of record 9 but only records up to 3 were read"
    );
}

#[test]
fn damage_before_the_tail_is_refused_not_guessed() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), OPTIONS).unwrap();
    for _ in 0..20 {
        log.append(&[7u8; 60]).unwrap();
    }
    drop(log);
    let first = dir.path().join(segment::file_name(1));
    let mut bytes = std::fs::read(&first).unwrap();
    bytes[MAGIC.len() + 30] ^= 1;
    std::fs::write(&first, bytes).unwrap();
    let e = Log::open(dir.path(), OPTIONS).unwrap_err().to_string();
    let want = format!(
        "outbox file {} is damaged at byte 8 (checksum mismatch); this is not a torn last write",
        first.display()
    );
    assert!(e.starts_with(&want), "{e}");
}

#[test]
fn group_commit_appends_are_there_after_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let options = Options {
        fsync: FsyncPolicy::Interval(std::time::Duration::from_secs(10)),
        ..OPTIONS
    };
    let mut log = Log::open(dir.path(), options).unwrap();
    let mut event = crate::ops::publish::NewEvent {
        event_type: "booking.created".into(),
        data: "{}".into(),
        ..Default::default()
    };
    assert_eq!(super::event::append_event(&mut log, &mut event).unwrap(), 1);
    log.sync_if_due().unwrap();
    drop(log);
    let mut log = Log::open(dir.path(), options).unwrap();
    let back = super::event::decode(&log.read(1).unwrap()[0].payload).unwrap();
    assert_eq!(back.id, event.id);
}
