//! The WAL guard, and what can be known about litestream's own WAL read lock.
//!
//! litestream keeps every frame it has not copied yet by holding a long-running read transaction
//! on each database it replicates: while any reader is in the WAL, no checkpoint by the
//! application can *restart* it and overwrite frames. While no litestream runs (backoff after a
//! crash, a reload, the moments of a stop), nothing holds it, and SQLite's default automatic
//! checkpoint (every 1000 frames) lets the next writer restart the WAL; litestream 0.5.17 then
//! takes its "wal restarted" path and the rows in the lost frames are silently missing from the
//! replica (see `docs/litestream-0.5.md`, "The WAL read lock").
//!
//! [`WalGuard`] holds a read transaction on each database in those gaps: engaged before any
//! planned stop and within milliseconds of an unplanned exit, released once the new litestream
//! has synced the database and holds its own lock. It owns the connections it opens and:
//! - never writes: no create, no checkpoint on close, only `BEGIN` and a `SELECT`;
//! - never guards a database that is not in WAL mode (a read lock there would block writers);
//! - is never held while litestream holds its own lock for long (the WAL would grow).
//!
//! [`read_locks`] reads `/proc/locks` (Linux) to tell whether a process holds a WAL read lock
//! (bytes 123-127 of `DB-shm`); [`restarted_since_litestream`] tells whether the WAL was restarted
//! since litestream's last local transaction, for a cold start.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rusqlite::{Connection, OpenFlags};

use crate::config::LitestreamConfig;

mod databases;
mod frames;
mod locks;

pub(crate) use databases::{databases_now, files_in};
pub(crate) use frames::{force_snapshot, frames_at_risk, local_position};
pub(crate) use locks::{file_id, holds_read_lock, read_locks, shm_path, FileId};

/// Read transactions held on databases while no litestream protects their WAL.
#[derive(Clone, Default)]
pub(crate) struct WalGuard {
    inner: Arc<Mutex<Inner>>,
}

#[derive(Default)]
struct Inner {
    /// Connections open without a transaction, ready to begin one within microseconds.
    idle: HashMap<PathBuf, Connection>,
    /// Connections holding a read transaction.
    held: HashMap<PathBuf, Held>,
    /// Bumped by [`WalGuard::disarm`]: a watcher armed before does nothing.
    generation: u64,
}

struct Held {
    conn: Connection,
    /// The `-shm` file's identity, to match litestream's lock in `/proc/locks`.
    shm: Option<FileId>,
}

/// At most this many idle connections are kept open (three descriptors each); databases past
/// it are opened when the guard engages, which takes a little longer.
const MAX_IDLE: usize = 256;

impl WalGuard {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes a read transaction on each of `dbs` not held yet, and on every database it keeps
    /// an idle connection to (blocking; microseconds per database once open). Returns how many
    /// are held now.
    pub(crate) fn engage_blocking(&self, dbs: &[PathBuf]) -> usize {
        let mut inner = self.lock();
        inner.engage(dbs);
        inner.held.len()
    }

    /// Ends the read transaction on `db`, if held, keeping its connection for the next time.
    pub(crate) fn release(&self, db: &Path) -> bool {
        let mut inner = self.lock();
        let Some(h) = inner.held.remove(db) else {
            return false;
        };
        let _ = h.conn.execute_batch("ROLLBACK");
        if inner.idle.len() < MAX_IDLE {
            inner.idle.insert(db.to_path_buf(), h.conn);
        }
        true
    }

    /// Ends every read transaction held on a database not in `keep`, and forgets it.
    pub(crate) fn release_except(&self, keep: &[PathBuf]) {
        let mut inner = self.lock();
        let gone: Vec<PathBuf> = inner
            .held
            .keys()
            .chain(inner.idle.keys())
            .filter(|p| !keep.contains(p))
            .cloned()
            .collect();
        for db in gone {
            if let Some(h) = inner.held.remove(&db) {
                let _ = h.conn.execute_batch("ROLLBACK");
            }
            inner.idle.remove(&db);
        }
    }

    /// Ends every read transaction held, keeping the connections and the armed watcher: a
    /// litestream runs and holds the WAL itself, and its death must still be caught at once.
    pub(crate) fn release_held(&self) {
        let held: Vec<PathBuf> = self.lock().held.keys().cloned().collect();
        for db in held {
            self.release(&db);
        }
    }

    /// Ends every read transaction and closes every connection: no litestream will run again.
    pub(crate) fn release_all(&self) {
        self.disarm();
        let mut inner = self.lock();
        for (_, h) in inner.held.drain() {
            let _ = h.conn.execute_batch("ROLLBACK");
        }
        inner.idle.clear();
    }

    /// Releases each database on which `pid` holds its own WAL read lock; returns what is still
    /// held. Without `/proc/locks`, nothing can be confirmed and nothing is released.
    pub(crate) fn release_where_locked_by(&self, pid: u32) -> Vec<PathBuf> {
        let Some(locks) = read_locks(pid) else {
            return self.held();
        };
        let confirmed: Vec<PathBuf> = self
            .lock()
            .held
            .iter()
            .filter(|(_, h)| h.shm.is_some_and(|id| locks.contains(&id)))
            .map(|(p, _)| p.clone())
            .collect();
        for db in &confirmed {
            self.release(db);
            tracing::debug!(db = %db.display(), pid, "litestream holds its WAL read lock: guard released");
        }
        self.held()
    }

    /// The databases held now.
    pub(crate) fn held(&self) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = self.lock().held.keys().cloned().collect();
        v.sort();
        v
    }

    /// Opens idle connections to `dbs`, then watches process `pid` from a thread of its own and
    /// engages the guard the instant it exits (a pidfd becomes readable at its death, before the
    /// supervisor has even reaped it): the gap in which the application's checkpoint could
    /// restart the WAL is then the kernel's wake-up, not the async runtime's. Where pidfds are
    /// not available, the supervisor's own engagement after the reap is all there is.
    /// Each call disarms the watchers armed before.
    pub(crate) fn arm(&self, pid: u32, config: Arc<LitestreamConfig>) {
        self.disarm();
        let generation = self.lock().generation;
        let guard = self.clone();
        let spawned = std::thread::Builder::new()
            .name("wal-guard".into())
            .spawn(move || {
                let fd = pidfd_open(pid);
                guard.open_idle(&databases_now(&config));
                let Some(fd) = fd else { return };
                wait_readable(&fd);
                let mut inner = guard.lock();
                if inner.generation == generation {
                    let started = std::time::Instant::now();
                    inner.engage(&[]);
                    let n = inner.held.len();
                    drop(inner);
                    tracing::debug!(
                        pid,
                        held = n,
                        us = started.elapsed().as_micros() as u64,
                        "litestream exited: WAL guard engaged"
                    );
                }
            });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "cannot start the WAL guard's watcher thread");
        }
    }

    /// Makes every watcher armed so far do nothing.
    pub(crate) fn disarm(&self) {
        self.lock().generation += 1;
    }

    fn open_idle(&self, dbs: &[PathBuf]) {
        for db in dbs {
            {
                let inner = self.lock();
                if inner.idle.len() >= MAX_IDLE
                    || inner.idle.contains_key(db)
                    || inner.held.contains_key(db)
                {
                    continue;
                }
            }
            // Opened without the lock held: an open can wait on a busy database.
            if let Ok(Some(conn)) = open(db) {
                let mut inner = self.lock();
                if !inner.held.contains_key(db) {
                    inner.idle.insert(db.clone(), conn);
                }
            }
        }
    }
}

impl Inner {
    fn engage(&mut self, dbs: &[PathBuf]) {
        let mut wanted: Vec<PathBuf> = self.idle.keys().cloned().collect();
        wanted.extend(dbs.iter().filter(|d| !self.idle.contains_key(*d)).cloned());
        for db in wanted {
            if self.held.contains_key(&db) {
                continue;
            }
            let conn = match self.idle.remove(&db) {
                Some(c) => Some(c),
                None => match open(&db) {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::warn!(db = %db.display(), error = %e, "cannot hold the WAL for litestream: a checkpoint by the application may restart it while litestream is not running");
                        None
                    }
                },
            };
            let Some(conn) = conn else { continue };
            match begin_read(&conn) {
                Ok(()) => {
                    let shm = file_id(&shm_path(&db));
                    self.held.insert(db, Held { conn, shm });
                }
                Err(e) => {
                    tracing::warn!(db = %db.display(), error = %e, "cannot hold the WAL for litestream: a checkpoint by the application may restart it while litestream is not running")
                }
            }
        }
    }
}

/// A pidfd for `pid` (Linux 5.3 and later).
#[cfg(target_os = "linux")]
fn pidfd_open(pid: u32) -> Option<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1; nothing is
    // borrowed.
    let fd = unsafe { nix::libc::syscall(nix::libc::SYS_pidfd_open, pid as nix::libc::pid_t, 0) };
    if fd < 0 {
        return None;
    }
    // SAFETY: `fd` was just returned by the kernel and is owned by nobody else.
    Some(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd as i32) })
}

#[cfg(not(target_os = "linux"))]
fn pidfd_open(_pid: u32) -> Option<std::os::fd::OwnedFd> {
    None
}

/// Blocks until `fd` is readable (for a pidfd: the process has exited).
fn wait_readable(fd: &std::os::fd::OwnedFd) {
    use std::os::fd::AsRawFd;
    let mut pfd = nix::libc::pollfd {
        fd: fd.as_raw_fd(),
        events: nix::libc::POLLIN,
        revents: 0,
    };
    loop {
        // SAFETY: one valid pollfd, for a descriptor that `fd` keeps open during the call.
        let n = unsafe { nix::libc::poll(&mut pfd, 1, -1) };
        if n != 0
            && !(n < 0 && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted)
        {
            return;
        }
    }
}

/// Opens `db` for the guard, or `None` when there is nothing to guard (no file, not in WAL
/// mode).
fn open(db: &Path) -> rusqlite::Result<Option<Connection>> {
    if !db.is_file() {
        return Ok(None);
    }
    // Read-write without create: a read-only connection cannot open a WAL database whose -shm
    // is missing. Nothing here writes.
    let conn = Connection::open_with_flags(
        db,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    // Closing the last connection would otherwise checkpoint (write) and remove the WAL.
    conn.set_db_config(
        rusqlite::config::DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE,
        true,
    )?;
    conn.busy_timeout(std::time::Duration::from_secs(1))?;
    let mode: String = conn.query_row("PRAGMA journal_mode", [], |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Ok(None);
    }
    Ok(Some(conn))
}

/// Begins the read transaction: the first read takes the WAL read lock and holds it until the
/// transaction ends.
fn begin_read(conn: &Connection) -> rusqlite::Result<()> {
    conn.execute_batch("BEGIN DEFERRED")?;
    let read = conn.query_row("SELECT count(*) FROM sqlite_master", [], |r| {
        r.get::<_, i64>(0)
    });
    if read.is_err() {
        let _ = conn.execute_batch("ROLLBACK");
    }
    read.map(|_| ())
}

#[cfg(test)]
mod tests;
