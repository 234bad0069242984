//! What `/proc/locks` says of SQLite's WAL read locks (bytes 123-127 of `DB-shm`): whether a
//! process holds one on a database. Only reads.

use std::collections::HashSet;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// A file's identity as `/proc/locks` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct FileId {
    pub(super) major: u64,
    pub(super) minor: u64,
    pub(super) inode: u64,
}

pub(crate) fn file_id(path: &Path) -> Option<FileId> {
    let m = std::fs::metadata(path).ok()?;
    let dev = m.dev();
    Some(FileId {
        major: nix::sys::stat::major(dev),
        minor: nix::sys::stat::minor(dev),
        inode: m.ino(),
    })
}

/// `DB-shm`.
pub(crate) fn shm_path(db: &Path) -> PathBuf {
    let mut s = db.as_os_str().to_owned();
    s.push("-shm");
    PathBuf::from(s)
}

/// The files on which `pid` holds a POSIX lock within bytes 123-127 (SQLite's WAL read locks),
/// read from `/proc/locks`; `None` where that file does not exist.
pub(crate) fn read_locks(pid: u32) -> Option<HashSet<FileId>> {
    let text = std::fs::read_to_string("/proc/locks").ok()?;
    Some(parse_locks(&text, pid))
}

pub(super) fn parse_locks(text: &str, pid: u32) -> HashSet<FileId> {
    // Every poll reads the whole table (every lock of every process, thousands of lines beside
    // a litestream with many databases): fields are taken one by one, and a line of another
    // process is left at its pid, before anything is parsed or allocated.
    let pid = pid.to_string();
    let mut out = HashSet::new();
    for line in text.lines() {
        // "1: POSIX  ADVISORY  READ 1234 08:01:5678 123 123"; a waiter's line reads
        // "1: -> POSIX ...", so its second field is not POSIX.
        let mut f = line.split_whitespace();
        if f.nth(1) != Some("POSIX") || f.nth(2) != Some(pid.as_str()) {
            continue;
        }
        let (Some(id), Some(start), Some(end)) = (f.next(), f.next(), f.next()) else {
            continue;
        };
        let Ok(start) = start.parse::<u64>() else {
            continue;
        };
        let end = if end == "EOF" {
            u64::MAX
        } else {
            end.parse().unwrap_or(0)
        };
        if end < 123 || start > 127 {
            continue;
        }
        let mut id = id.split(':');
        let (Some(major), Some(minor), Some(inode), None) =
            (id.next(), id.next(), id.next(), id.next())
        else {
            continue;
        };
        if let (Ok(major), Ok(minor), Ok(inode)) = (
            u64::from_str_radix(major, 16),
            u64::from_str_radix(minor, 16),
            inode.parse(),
        ) {
            out.insert(FileId {
                major,
                minor,
                inode,
            });
        }
    }
    out
}

/// Whether `pid` holds a WAL read lock on `db` now; `None` when that cannot be known (no
/// `/proc/locks`, no `-shm` yet).
pub(crate) fn holds_read_lock(locks: Option<&HashSet<FileId>>, db: &Path) -> Option<bool> {
    let id = file_id(&shm_path(db))?;
    Some(locks?.contains(&id))
}
