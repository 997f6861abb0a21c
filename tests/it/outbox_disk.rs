//! The outbox on a full disk and on a read-only filesystem: a small tmpfs the test mounts
//! (tests run as root). Clear errors, and what was queued before is intact afterwards.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::outbox_log::{cli, fill, status, text};

/// A tmpfs mounted for one test, unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, size: &str) -> Tmpfs {
        let out = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(at)
            .output()
            .expect("run mount");
        assert!(
            out.status.success(),
            "cannot mount a tmpfs at {} ({}); these tests run as root to mount a small \
             filesystem they can fill or make read-only",
            at.display(),
            text(&out.stderr).trim()
        );
        Tmpfs(at.to_path_buf())
    }

    fn remount(&self, mode: &str) {
        let out = Command::new("mount")
            .args(["-o", &format!("remount,{mode}")])
            .arg(&self.0)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "remount {mode}: {}",
            text(&out.stderr)
        );
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn segment_bytes(dir: &Path) -> Vec<u8> {
    std::fs::read(dir.join("00000000000000000001.seg")).unwrap()
}

#[test]
fn outbox_disk_full_is_a_clear_error_and_keeps_the_queue() {
    let root = tempfile::tempdir().unwrap();
    let fs = Tmpfs::mount(root.path(), "64k");
    let dir = fs.0.join("outbox");
    let out = fill(&dir, &["--raw", "--count", "100", "--size", "10000"])
        .wait_with_output()
        .unwrap();
    let appended = text(&out.stdout).lines().count() as u64;
    assert!(
        (3..10).contains(&appended),
        "{appended} appends fit in 64 KiB"
    );
    assert_eq!(out.status.code(), Some(1));
    let seg = dir.join("00000000000000000001.seg");
    let want = format!(
        "event-worker: outbox {}: the disk is full while writing {}: No space left on device \
         (os error 28); the record was not queued and nothing already queued was changed; \
         free space on that filesystem",
        dir.display(),
        seg.display()
    );
    assert_eq!(text(&out.stderr).trim(), want);
    // The partial write was cut away: the file ends with the last whole record.
    assert_eq!(segment_bytes(&dir).len() as u64, 8 + appended * 10_024);
    let s = status(&dir);
    assert_eq!(
        (s["records"].as_u64(), s["torn_at_open"].as_u64()),
        (Some(appended), Some(0))
    );
    let warning = s["warning"].as_str().unwrap_or_default();
    assert!(
        warning.ends_with(
            "is on tmpfs (memory: emptied by every reboot); events queued there \
                           are lost with it; point outbox.dir at a persistent disk or volume"
        ),
        "{s}"
    );
}

#[test]
fn outbox_read_only_is_a_clear_error_and_changes_nothing() {
    let root = tempfile::tempdir().unwrap();
    let fs = Tmpfs::mount(root.path(), "1m");
    let dir = fs.0.join("outbox");
    let out = fill(&dir, &["--raw", "--count", "3", "--size", "100"])
        .wait_with_output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let before = segment_bytes(&dir);
    fs.remount("ro");
    let refused = fill(&dir, &["--raw", "--count", "1"])
        .wait_with_output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(1));
    let want = format!(
        "event-worker: outbox {}: cannot write {}: Read-only file system (os error 30); the \
         record was not queued and nothing already queued was changed; make the directory \
         writable (is the volume mounted read-only?)",
        dir.display(),
        dir.join("LOCK").display()
    );
    assert_eq!(text(&refused.stderr).trim(), want);
    let drain = cli("redis://127.0.0.1:1")
        .args(["outbox", "drain", "--dir"])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(
        text(&drain.stderr).contains("Read-only file system"),
        "{}",
        text(&drain.stderr)
    );
    fs.remount("rw");
    assert_eq!(
        segment_bytes(&dir),
        before,
        "the segment is byte for byte unchanged"
    );
    let s = status(&dir);
    assert_eq!(
        (s["records"].as_u64(), s["torn_at_open"].as_u64()),
        (Some(3), Some(0))
    );
}
