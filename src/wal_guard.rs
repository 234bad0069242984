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

use std::collections::{HashMap, HashSet};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rusqlite::{Connection, OpenFlags};

use crate::config::{DbTarget, LitestreamConfig};

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

/// The databases of `config` that exist now: each `path`, and each file in a `dir` that
/// matches its `pattern` (the files litestream finds at its start).
pub(crate) fn databases_now(config: &LitestreamConfig) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for target in config.dbs() {
        match target {
            DbTarget::Path(p) => {
                if p.is_file() {
                    out.push(p.clone());
                }
            }
            DbTarget::Dir { dir, pattern } => out.extend(files_in(dir, pattern)),
        }
    }
    out.sort();
    out.dedup();
    out
}

/// The files of `dir` whose name matches `pattern`, sorted.
pub(crate) fn files_in(dir: &Path, pattern: &str) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<PathBuf> = entries
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_str()
                .is_some_and(|name| glob_match(pattern, name))
                && e.path().is_file()
        })
        .map(|e| e.path())
        .collect();
    out.sort();
    out
}

/// `filepath.Match` as litestream uses it for `pattern:` (`*`, `?`, `[...]`), on one name.
pub(crate) fn glob_match(pattern: &str, name: &str) -> bool {
    fn go(p: &[char], n: &[char]) -> bool {
        match p.first() {
            None => n.is_empty(),
            Some('*') => (0..=n.len()).any(|i| go(&p[1..], &n[i..])),
            Some('?') => !n.is_empty() && go(&p[1..], &n[1..]),
            Some('[') => {
                let Some(close) = p.iter().position(|&c| c == ']') else {
                    return false;
                };
                let Some(&c) = n.first() else { return false };
                let class = &p[1..close];
                let (negate, class) = match class.first() {
                    Some('^') | Some('!') => (true, &class[1..]),
                    _ => (false, class),
                };
                let mut hit = false;
                let mut i = 0;
                while i < class.len() {
                    if i + 2 < class.len() && class[i + 1] == '-' {
                        hit |= class[i] <= c && c <= class[i + 2];
                        i += 3;
                    } else {
                        hit |= class[i] == c;
                        i += 1;
                    }
                }
                hit != negate && go(&p[close + 1..], &n[1..])
            }
            Some('\\') if p.len() > 1 => n.first() == Some(&p[1]) && go(&p[2..], &n[1..]),
            Some(&c) => n.first() == Some(&c) && go(&p[1..], &n[1..]),
        }
    }
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    go(&p, &n)
}

/// A file's identity as `/proc/locks` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct FileId {
    major: u64,
    minor: u64,
    inode: u64,
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

fn parse_locks(text: &str, pid: u32) -> HashSet<FileId> {
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

/// Why litestream, started now, could miss frames of `db` that it has not copied yet (see
/// [`restarted_since_litestream`] and [`checkpointed_past_litestream`]); `None` when nothing
/// says so.
pub(crate) fn frames_at_risk(db: &Path, state_dir: &Path) -> Option<&'static str> {
    if restarted_since_litestream(db, state_dir) {
        Some("the WAL was restarted while no litestream ran")
    } else if checkpointed_past_litestream(db, state_dir) {
        Some("the WAL was checkpointed past litestream's last copy and can be restarted by the next write")
    } else {
        None
    }
}

/// True when the WAL of `db` was restarted (its salts changed) since the last transaction
/// litestream recorded locally in `state_dir`, while frames it had not seen may have been
/// checkpointed and overwritten: litestream 0.5.17 would then take its "wal restarted" path and
/// miss them. `false` when nothing says so (no state, no WAL, same salts).
pub(crate) fn restarted_since_litestream(db: &Path, state_dir: &Path) -> bool {
    let Some(ltx) = newest_l0(state_dir) else {
        return false;
    };
    let Some(header) = read_bytes(&ltx, 100) else {
        return false;
    };
    if &header[0..4] != b"LTX1" {
        return false;
    }
    let be64 = |o: usize| u64::from_be_bytes(header[o..o + 8].try_into().unwrap());
    let (wal_offset, wal_size) = (be64(48), be64(56));
    let ltx_salts = &header[64..72];
    let mut wal = db.as_os_str().to_owned();
    wal.push("-wal");
    let wal = PathBuf::from(wal);
    let Some(wal_header) = read_bytes(&wal, 32) else {
        return false; // no WAL, or shorter than a header: litestream snapshots by itself
    };
    // Past the WAL header, with other salts: a restart litestream did not see.
    let restarted = wal_offset + wal_size > 32 && &wal_header[16..24] != ltx_salts;
    // litestream 0.5.17 goes on from the new WAL without a snapshot only when the last frame it
    // copied is still there with its old salts; where the new WAL already overwrote it, or the
    // file is shorter, litestream snapshots by itself (after our own TRUNCATE, say).
    restarted && last_copied_frame_intact(&wal, wal_offset + wal_size, ltx_salts)
}

/// Whether the WAL frame that ends at `end` still carries `salts` (bytes 8..16 of its header).
fn last_copied_frame_intact(wal: &Path, end: u64, salts: &[u8]) -> bool {
    use std::io::{Read, Seek, SeekFrom};
    let Some(page) = read_bytes(wal, 12).map(|h| u32::from_be_bytes(h[8..12].try_into().unwrap()))
    else {
        return false;
    };
    let frame = u64::from(page) + 24;
    let Some(start) = end.checked_sub(frame).filter(|s| *s >= 32) else {
        return false;
    };
    let mut header = [0u8; 24];
    let read = std::fs::File::open(wal).and_then(|mut f| {
        f.seek(SeekFrom::Start(start))?;
        f.read_exact(&mut header)
    });
    read.is_ok() && &header[8..16] == salts
}

/// True when every frame of the WAL of `db` is checkpointed (SQLite's WAL index says
/// `nBackfill == mxFrame`) and the WAL holds frames past the end of litestream's newest local
/// transaction, with the same salts.
///
/// A reader that begins then takes read mark 0 (it needs nothing from the WAL), and a mark-0
/// reader does not stop the next writer from restarting the WAL: neither the WAL guard nor
/// litestream's own read transaction could keep those frames, and litestream 0.5.17, finding
/// its last copied frame intact after the restart, would go on from the new WAL's start
/// without them.
pub(crate) fn checkpointed_past_litestream(db: &Path, state_dir: &Path) -> bool {
    let Some((wal_end, ltx_salts)) = newest_l0(state_dir).and_then(|p| ltx_wal_end(&p)) else {
        return false;
    };
    let Some(index) = wal_index(db) else {
        return false;
    };
    index.n_backfill == index.mx_frame
        && index.mx_frame > 0
        && index.salts == ltx_salts
        && 32 + u64::from(index.mx_frame) * index.frame_size > wal_end
}

/// The end offset in the WAL of an LTX file's frames, and their WAL salts (raw bytes).
fn ltx_wal_end(ltx: &Path) -> Option<(u64, [u8; 8])> {
    let header = read_bytes(ltx, 100)?;
    if &header[0..4] != b"LTX1" {
        return None;
    }
    let be64 = |o: usize| u64::from_be_bytes(header[o..o + 8].try_into().unwrap());
    Some((be64(48) + be64(56), header[64..72].try_into().unwrap()))
}

/// What SQLite's WAL index (the `-shm` file) says of the WAL.
#[derive(Debug, PartialEq, Eq)]
struct WalIndex {
    mx_frame: u32,
    n_backfill: u32,
    /// The WAL header's salts, as the raw bytes SQLite copies into the index.
    salts: [u8; 8],
    frame_size: u64,
}

/// Reads the WAL index header of `db`'s `-shm` (SQLite's layout, native byte order: two copies
/// of the 48-byte header, then the checkpoint info with `nBackfill` at byte 96). `None` when
/// there is none, or the two copies differ (a writer was updating it).
fn wal_index(db: &Path) -> Option<WalIndex> {
    let shm = read_shm_header(&shm_path(db))?;
    if shm[0..48] != shm[48..96] || shm[12] == 0 {
        return None; // torn, or not initialised
    }
    let u32_at = |o: usize| u32::from_ne_bytes(shm[o..o + 4].try_into().unwrap());
    let page = u16::from_ne_bytes(shm[14..16].try_into().unwrap());
    let page = if page == 1 { 65536 } else { u64::from(page) };
    Some(WalIndex {
        mx_frame: u32_at(16),
        n_backfill: u32_at(96),
        salts: shm[32..40].try_into().unwrap(),
        frame_size: page + 24,
    })
}

/// The first 100 bytes of a `-shm` file, read through a descriptor this process keeps open for
/// good. Never through a descriptor opened and closed here: closing *any* descriptor of a file
/// drops *every* POSIX lock the process holds on it (fcntl's rule), and with it the WAL guard's
/// read lock, which SQLite would still believe held. (SQLite itself never closes a descriptor
/// of a file it holds locks on, for that reason.)
fn read_shm_header(shm: &Path) -> Option<Vec<u8>> {
    use std::os::unix::fs::FileExt;
    static OPEN: Mutex<Vec<(PathBuf, std::fs::File)>> = Mutex::new(Vec::new());
    let inode = std::fs::metadata(shm).ok()?.ino();
    let mut open = OPEN.lock().unwrap_or_else(|p| p.into_inner());
    let same = |f: &std::fs::File| f.metadata().is_ok_and(|m| m.ino() == inode);
    let index = match open.iter().position(|(p, f)| p == shm && same(f)) {
        Some(i) => i,
        None => {
            // A new file at that path (or the first look): the old descriptor stays open too.
            open.push((shm.to_path_buf(), std::fs::File::open(shm).ok()?));
            open.len() - 1
        }
    };
    let mut buf = vec![0u8; 100];
    open[index].1.read_exact_at(&mut buf, 0).ok()?;
    Some(buf)
}

/// The newest transaction litestream holds locally for a database (its newest L0 file in
/// `state_dir`), `None` when it holds none.
pub(crate) fn local_position(state_dir: &Path) -> Option<u64> {
    let name = newest_l0(state_dir)?;
    let name = name.file_name()?.to_str()?;
    u64::from_str_radix(name.strip_suffix(".ltx")?.split('-').nth(1)?, 16).ok()
}

fn newest_l0(state_dir: &Path) -> Option<PathBuf> {
    let dir = state_dir.join("ltx").join("0");
    std::fs::read_dir(&dir)
        .ok()?
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let max = name.strip_suffix(".ltx")?.split('-').nth(1)?.to_string();
            Some((u64::from_str_radix(&max, 16).ok()?, e.path()))
        })
        .max_by_key(|(txid, _)| *txid)
        .map(|(_, p)| p)
}

fn read_bytes(path: &Path, n: usize) -> Option<Vec<u8>> {
    use std::io::Read;
    let mut buf = vec![0u8; n];
    std::fs::File::open(path).ok()?.read_exact(&mut buf).ok()?;
    Some(buf)
}

/// Makes litestream take a full snapshot at its next start: `PRAGMA wal_checkpoint(TRUNCATE)`
/// moves every frame into the database (what the application's own checkpoints do) and empties
/// the WAL, which litestream then sees as truncated by another process. Content is unchanged.
pub(crate) fn force_snapshot(db: &Path) -> Result<(), String> {
    let conn = Connection::open_with_flags(db, OpenFlags::SQLITE_OPEN_READ_WRITE)
        .map_err(|e| e.to_string())?;
    conn.busy_timeout(std::time::Duration::from_secs(5))
        .map_err(|e| e.to_string())?;
    let busy: i64 = conn
        .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| r.get(0))
        .map_err(|e| e.to_string())?;
    if busy != 0 {
        return Err("the database stayed busy".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_proc_locks() {
        let text = "1: POSIX  ADVISORY  READ 4242 fd:01:99 123 123\n\
                    2: POSIX  ADVISORY  READ 4242 fd:01:77 128 128\n\
                    3: POSIX  ADVISORY  WRITE 17 fd:01:55 124 124\n\
                    4: FLOCK  ADVISORY  WRITE 4242 fd:01:11 0 EOF\n\
                    5: POSIX  ADVISORY  READ 4242 08:02:1234 120 EOF\n";
        let got = parse_locks(text, 4242);
        let id = |major, minor, inode| FileId {
            major,
            minor,
            inode,
        };
        assert!(got.contains(&id(0xfd, 1, 99)));
        assert!(got.contains(&id(8, 2, 1234)), "a range covering 123-127");
        assert!(
            !got.contains(&id(0xfd, 1, 77)),
            "byte 128 is not a read lock"
        );
        assert!(!got.contains(&id(0xfd, 1, 55)), "another pid");
        assert!(!got.contains(&id(0xfd, 1, 11)), "flock");
    }

    #[test]
    fn sees_a_wal_restart_litestream_did_not_see() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("a.db");
        std::fs::write(&db, b"").unwrap();
        let state = dir.path().join(".a.db-litestream");
        let l0 = state.join("ltx").join("0");
        std::fs::create_dir_all(&l0).unwrap();
        let ltx = |txid: u64, offset: u64, size: u64, salts: [u8; 8]| {
            let mut h = vec![0u8; 100];
            h[0..4].copy_from_slice(b"LTX1");
            h[48..56].copy_from_slice(&offset.to_be_bytes());
            h[56..64].copy_from_slice(&size.to_be_bytes());
            h[64..72].copy_from_slice(&salts);
            std::fs::write(l0.join(format!("{txid:016x}-{txid:016x}.ltx")), h).unwrap();
        };
        // A WAL of 4 frames of 4096-byte pages: its header's salts, and those of the 4th frame.
        let wal = |salts: [u8; 8], last_frame: [u8; 8]| {
            let mut w = vec![0u8; 32 + 4120 * 4];
            w[8..12].copy_from_slice(&4096u32.to_be_bytes());
            w[16..24].copy_from_slice(&salts);
            let f = 32 + 4120 * 3;
            w[f + 8..f + 16].copy_from_slice(&last_frame);
            std::fs::write(dir.path().join("a.db-wal"), w).unwrap();
        };
        assert!(!restarted_since_litestream(&db, &state), "no state, no WAL");
        ltx(1, 32, 4120 * 3, [1; 8]);
        ltx(2, 32 + 4120 * 3, 4120, [2; 8]); // the newest one counts
        wal([2; 8], [2; 8]);
        assert!(!restarted_since_litestream(&db, &state), "same salts");
        wal([3; 8], [2; 8]);
        assert!(
            restarted_since_litestream(&db, &state),
            "other salts, litestream's last frame intact: it would go on without a snapshot"
        );
        wal([3; 8], [3; 8]);
        assert!(
            !restarted_since_litestream(&db, &state),
            "its last frame overwritten: litestream snapshots by itself"
        );
        std::fs::write(dir.path().join("a.db-wal"), b"").unwrap();
        assert!(
            !restarted_since_litestream(&db, &state),
            "an empty WAL: litestream snapshots by itself"
        );
    }

    #[test]
    fn sees_a_wal_checkpointed_past_litestream_with_real_sqlite() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("a.db");
        let app = Connection::open(&db).unwrap();
        app.execute_batch(
            "PRAGMA journal_mode=wal; PRAGMA wal_autocheckpoint=0; CREATE TABLE t(x);",
        )
        .unwrap();
        for i in 0..10 {
            app.execute("INSERT INTO t VALUES (?)", [i]).unwrap();
        }
        let state = dir.path().join(".a.db-litestream");
        let l0 = state.join("ltx").join("0");
        std::fs::create_dir_all(&l0).unwrap();
        let wal_header = read_bytes(&dir.path().join("a.db-wal"), 32).unwrap();
        let index = wal_index(&db).expect("a WAL index");
        assert_eq!(
            index.salts[..],
            wal_header[16..24],
            "salts as in the WAL header"
        );
        assert_eq!(index.frame_size, 4096 + 24);
        assert!(index.mx_frame >= 11 && index.n_backfill == 0, "{index:?}");
        let wal_end = 32 + u64::from(index.mx_frame) * index.frame_size;
        let ltx = |end: u64| {
            let mut h = vec![0u8; 100];
            h[0..4].copy_from_slice(b"LTX1");
            h[48..56].copy_from_slice(&32u64.to_be_bytes());
            h[56..64].copy_from_slice(&(end - 32).to_be_bytes());
            h[64..72].copy_from_slice(&wal_header[16..24]);
            std::fs::write(l0.join("0000000000000001-0000000000000001.ltx"), h).unwrap();
        };
        ltx(wal_end - 2 * index.frame_size); // litestream copied all but the last two frames
        assert!(
            !checkpointed_past_litestream(&db, &state),
            "not checkpointed yet: a reader would keep the frames"
        );
        let (_, _, done): (i64, i64, i64) = app
            .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
            .unwrap();
        assert_eq!(i64::from(index.mx_frame), done);
        assert!(
            checkpointed_past_litestream(&db, &state),
            "all checkpointed, two frames litestream never copied: the next write restarts the WAL"
        );
        assert_eq!(
            frames_at_risk(&db, &state),
            Some("the WAL was checkpointed past litestream's last copy and can be restarted by the next write")
        );
        ltx(wal_end); // litestream had copied every frame: a restart loses nothing
        assert!(!checkpointed_past_litestream(&db, &state));
        assert_eq!(frames_at_risk(&db, &state), None);
    }

    #[test]
    fn matches_patterns_like_go() {
        assert!(glob_match("*.db", "a.db"));
        assert!(!glob_match("*.db", "a.db-wal"));
        assert!(glob_match("t?.db", "t1.db"));
        assert!(glob_match("[a-c]*.db", "b.db"));
        assert!(!glob_match("[^a-c]*.db", "b.db"));
        assert!(glob_match("*", ".hidden"));
    }

    #[test]
    fn looking_at_the_wal_index_keeps_the_guards_lock() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("g.db");
        let app = Connection::open(&db).unwrap();
        app.execute_batch("PRAGMA journal_mode=WAL; CREATE TABLE t(x); INSERT INTO t VALUES (1);")
            .unwrap();
        let guard = WalGuard::default();
        assert_eq!(guard.engage_blocking(std::slice::from_ref(&db)), 1);
        let held = || holds_read_lock(read_locks(std::process::id()).as_ref(), &db);
        assert_eq!(held(), Some(true));
        for _ in 0..3 {
            assert!(wal_index(&db).is_some());
        }
        assert_eq!(
            held(),
            Some(true),
            "reading the WAL index dropped the guard's lock"
        );
        // The hazard avoided: any descriptor of the -shm opened and closed in this process drops
        // every POSIX lock the process holds on it, while SQLite believes it still holds them.
        drop(std::fs::File::open(shm_path(&db)).unwrap());
        assert_eq!(held(), Some(false));
        drop(app);
    }

    #[test]
    fn guard_holds_a_read_lock_and_never_writes() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("g.db");
        let app = Connection::open(&db).unwrap();
        app.execute_batch("PRAGMA journal_mode=WAL; CREATE TABLE t(x); INSERT INTO t VALUES (1);")
            .unwrap();
        let guard = WalGuard::default();
        assert_eq!(guard.engage_blocking(std::slice::from_ref(&db)), 1);
        // Our own pid holds the lock now.
        let locks = read_locks(std::process::id()).unwrap();
        assert_eq!(holds_read_lock(Some(&locks), &db), Some(true));
        // While held, a checkpoint cannot restart the WAL: frames stay.
        for i in 0..50 {
            app.execute("INSERT INTO t VALUES (?)", [i]).unwrap();
        }
        app.query_row("PRAGMA wal_checkpoint(RESTART)", [], |r| r.get::<_, i64>(0))
            .map(|busy| assert_eq!(busy, 1, "restart must be blocked"))
            .unwrap();
        assert!(guard.release(&db));
        assert!(guard.held().is_empty());
        // Its connection stays idle, for the next engagement.
        assert_eq!(guard.engage_blocking(&[]), 1);
        guard.release_all();
        assert!(guard.held().is_empty());
        drop(app);
        // A rollback-journal database is left alone.
        let plain = dir.path().join("plain.db");
        Connection::open(&plain)
            .unwrap()
            .execute_batch("CREATE TABLE t(x)")
            .unwrap();
        assert_eq!(
            guard.engage_blocking(&[plain, dir.path().join("missing.db")]),
            0
        );
        assert!(!dir.path().join("missing.db").exists());
    }
}
