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
    let mut out = HashSet::new();
    for line in text.lines() {
        // "1: POSIX  ADVISORY  READ 1234 08:01:5678 123 123" ("->" marks a waiter).
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 8 || f.get(1) != Some(&"POSIX") || f.contains(&"->") {
            continue;
        }
        if f[4].parse::<u32>().ok() != Some(pid) {
            continue;
        }
        let (Ok(start), end) = (f[6].parse::<u64>(), f[7]) else {
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
        let id: Vec<&str> = f[5].split(':').collect();
        if id.len() != 3 {
            continue;
        }
        if let (Ok(major), Ok(minor), Ok(inode)) = (
            u64::from_str_radix(id[0], 16),
            u64::from_str_radix(id[1], 16),
            id[2].parse(),
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
