//! Frames litestream has not copied, and whether they are at risk: the WAL's header and
//! SQLite's WAL index (`-shm`) against litestream's newest local LTX file; and the forced
//! snapshot that saves them. Reads files only through descriptors that never drop a lock.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rusqlite::{Connection, OpenFlags};

use super::locks::shm_path;

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
pub(super) fn last_copied_frame_intact(wal: &Path, end: u64, salts: &[u8]) -> bool {
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
pub(super) fn ltx_wal_end(ltx: &Path) -> Option<(u64, [u8; 8])> {
    let header = read_bytes(ltx, 100)?;
    if &header[0..4] != b"LTX1" {
        return None;
    }
    let be64 = |o: usize| u64::from_be_bytes(header[o..o + 8].try_into().unwrap());
    Some((be64(48) + be64(56), header[64..72].try_into().unwrap()))
}

/// What SQLite's WAL index (the `-shm` file) says of the WAL.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct WalIndex {
    pub(super) mx_frame: u32,
    pub(super) n_backfill: u32,
    /// The WAL header's salts, as the raw bytes SQLite copies into the index.
    pub(super) salts: [u8; 8],
    pub(super) frame_size: u64,
}

/// Reads the WAL index header of `db`'s `-shm` (SQLite's layout, native byte order: two copies
/// of the 48-byte header, then the checkpoint info with `nBackfill` at byte 96). `None` when
/// there is none, or the two copies differ (a writer was updating it).
pub(super) fn wal_index(db: &Path) -> Option<WalIndex> {
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
pub(super) fn read_shm_header(shm: &Path) -> Option<Vec<u8>> {
    use std::os::unix::fs::FileExt;
    /// The descriptor in use per path, and those of files since replaced at their path
    /// (kept open too: closing them could drop locks on a file still in use elsewhere).
    struct Open {
        current: HashMap<PathBuf, std::fs::File>,
        replaced: Vec<std::fs::File>,
    }
    static OPEN: Mutex<Option<Open>> = Mutex::new(None);
    let inode = std::fs::metadata(shm).ok()?.ino();
    let mut guard = OPEN.lock().unwrap_or_else(|p| p.into_inner());
    let open = guard.get_or_insert_with(|| Open {
        current: HashMap::new(),
        replaced: Vec::new(),
    });
    let same = |f: &std::fs::File| f.metadata().is_ok_and(|m| m.ino() == inode);
    if !open.current.get(shm).is_some_and(same) {
        let file = std::fs::File::open(shm).ok()?;
        if let Some(old) = open.current.insert(shm.to_path_buf(), file) {
            open.replaced.push(old);
        }
    }
    let mut buf = vec![0u8; 100];
    open.current[shm].read_exact_at(&mut buf, 0).ok()?;
    Some(buf)
}

/// The newest transaction litestream holds locally for a database (its newest L0 file in
/// `state_dir`), `None` when it holds none.
pub(crate) fn local_position(state_dir: &Path) -> Option<u64> {
    let name = newest_l0(state_dir)?;
    let name = name.file_name()?.to_str()?;
    u64::from_str_radix(name.strip_suffix(".ltx")?.split('-').nth(1)?, 16).ok()
}

pub(super) fn newest_l0(state_dir: &Path) -> Option<PathBuf> {
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

pub(super) fn read_bytes(path: &Path, n: usize) -> Option<Vec<u8>> {
    use std::io::Read;
    let mut buf = vec![0u8; n];
    std::fs::File::open(path).ok()?.read_exact(&mut buf).ok()?;
    Some(buf)
}

/// Makes litestream take a full snapshot at its next start: `PRAGMA wal_checkpoint(TRUNCATE)`
/// moves every frame into the database (what the application's own checkpoints do) and empties
/// the WAL, which litestream then sees as truncated by another process. Content is unchanged.
///
/// A TRUNCATE checkpoint holds SQLite's writer lock while it waits for readers: each attempt
/// waits at most 200 ms, so the application's writers (busy_timeout of a few seconds) are never
/// held up long; attempts go on for up to 5 s in all.
pub(crate) fn force_snapshot(db: &Path) -> Result<(), String> {
    use std::time::{Duration, Instant};
    let conn = Connection::open_with_flags(db, OpenFlags::SQLITE_OPEN_READ_WRITE)
        .map_err(|e| e.to_string())?;
    conn.busy_timeout(Duration::from_millis(200))
        .map_err(|e| e.to_string())?;
    let until = Instant::now() + Duration::from_secs(5);
    loop {
        let busy = match conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
            r.get::<_, i64>(0)
        }) {
            Ok(busy) => busy != 0,
            Err(e) if e.sqlite_error_code() == Some(rusqlite::ErrorCode::DatabaseBusy) => true,
            Err(e) => return Err(e.to_string()),
        };
        if !busy {
            return Ok(());
        }
        if Instant::now() >= until {
            return Err("the database stayed busy for 5 s".into());
        }
        std::thread::sleep(Duration::from_millis(50)); // writers get their turn
    }
}
