//! The single-instance guard: an exclusive `flock` on a file in the database's runtime
//! directory. The litestream child inherits the locked descriptor, so if the supervisor is killed
//! the lock stays held until the orphaned litestream has finished its final sync and exited.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use crate::error::{Error, Result};

/// A held instance lock; released when dropped (and when every inheriting child has exited).
#[derive(Debug)]
pub struct InstanceLock {
    file: File,
}

impl InstanceLock {
    /// Takes the lock for `db` at `path`, or says who holds it.
    pub fn acquire(path: &Path, db: &Path) -> Result<Self> {
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_CLOEXEC)
            .open(path)
            .map_err(|e| Error::io("cannot open lock file", path, e))?;
        if !try_flock(&file, nix::libc::LOCK_EX) {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            let holder = holder.trim();
            return Err(Error::AlreadyRunning {
                db: db.into(),
                holder: if holder.is_empty() {
                    "unknown process".into()
                } else {
                    holder.into()
                },
            });
        }
        let mut lock = InstanceLock { file };
        lock.record(None);
        Ok(lock)
    }

    /// Writes who holds the lock (this supervisor, and its litestream child when there is one).
    pub fn record(&mut self, child: Option<u32>) {
        let mut text = format!("rip-litestream pid {}", std::process::id());
        if let Some(pid) = child {
            text.push_str(&format!(", litestream pid {pid}"));
        }
        let _ = self.file.set_len(0);
        let _ = self.file.rewind();
        let _ = self.file.write_all(text.as_bytes());
    }

    /// The locked descriptor, for a child to inherit.
    pub fn raw_fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }
}

/// Who holds the lock at `path`, if anyone (for `status`).
pub fn holder(path: &Path) -> Option<String> {
    let file = OpenOptions::new().read(true).open(path).ok()?;
    if try_flock(&file, nix::libc::LOCK_SH) {
        None
    } else {
        fs::read_to_string(path).ok().map(|s| s.trim().to_string())
    }
}

/// A non-blocking `flock`; true when taken.
fn try_flock(file: &File, op: i32) -> bool {
    // SAFETY: flock on a descriptor we own; no memory is passed.
    unsafe { nix::libc::flock(file.as_raw_fd(), op | nix::libc::LOCK_NB) == 0 }
}
