//! Filesystem facts: syncing a directory (so a created, renamed or removed entry survives a
//! power loss) and telling whether a directory's filesystem survives a restart at all.

use std::fs::File;
use std::path::Path;

use super::error::OutboxError;

/// fsyncs `dir` itself, making its entries (new segment, renamed cursor) durable.
///
/// # Errors
/// The open or fsync failed.
pub fn sync_dir(dir: &Path) -> Result<(), OutboxError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| OutboxError::io(dir, dir, "fsync the directory", e))
}

/// `statfs` magic numbers of filesystems whose content is gone after a reboot or with the
/// container, and what to say about each.
const NOT_DURABLE: &[(i64, &str)] = &[
    (0x0102_1994, "tmpfs (memory: emptied by every reboot)"),
    (0x8584_58f6, "ramfs (memory: emptied by every reboot)"),
    (
        0x794c_7630,
        "overlayfs (a container's writable layer: gone when the container is replaced)",
    ),
];

/// A warning when `dir` is on a filesystem that does not survive a restart (tmpfs, ramfs,
/// a container's overlay layer), `None` when it looks durable or cannot be checked. For
/// `check` and health: an outbox there loses its queued events with the machine or container.
pub fn durability_warning(dir: &Path) -> Option<String> {
    let stat = rustix::fs::statfs(dir).ok()?;
    #[allow(clippy::unnecessary_cast)]
    let magic = stat.f_type as i64;
    NOT_DURABLE
        .iter()
        .find(|(m, _)| *m == magic)
        .map(|(_, what)| {
            format!(
                "outbox dir {} is on {what}; events queued there are lost with it; point \
                 outbox.dir at a persistent disk or volume",
                dir.display()
            )
        })
}

/// [`durability_warning`] for a directory that may not exist yet: its nearest existing
/// ancestor's filesystem is the one it will be created on (`check` before the first run).
pub fn fs_warning_for(dir: &Path) -> Option<String> {
    let existing = dir.ancestors().find(|a| a.is_dir())?;
    let w = durability_warning(existing)?;
    Some(w.replacen(
        &existing.display().to_string(),
        &dir.display().to_string(),
        1,
    ))
}

#[cfg(test)]
mod tests {
    #[test]
    fn dev_shm_is_not_durable_and_target_is() {
        if let Some(w) = super::durability_warning(std::path::Path::new("/dev/shm")) {
            assert!(w.contains("tmpfs (memory"), "{w}");
        }
        let here = std::env::current_dir().unwrap();
        let w = super::durability_warning(&here);
        assert!(w.is_none() || w.unwrap().contains("overlayfs"));
    }
}
