//! The live database as it was at one of litestream's transactions, so `verify` can compare a
//! restore with it while the application keeps writing.
//!
//! litestream's transaction ids are its own (one per sync, covering any number of SQLite
//! commits), so a row count or a content hash of the live database "now" never names one. The
//! local LTX file of transaction T does: its header records where in the WAL that sync stopped
//! (offset + size, and the WAL's salts). The live database at T is then the database file with the
//! WAL's frames up to that point laid over it, which this module reads directly:
//!
//! 1. [`hold`] opens a read transaction on the live database. While it lasts, no checkpoint can
//!    copy frames newer than its snapshot into the database file, nor restart the WAL over
//!    frames litestream may not have copied (the same lock litestream itself relies on).
//! 2. The caller asks litestream to sync (the control socket, without `wait`), which names T; T
//!    covers at least everything the held snapshot sees, so nothing T needs has left the WAL.
//! 3. [`Held::image_at`] reads T's LTX header, checks the WAL's salts and every frame's checksum
//!    up to T's end (as SQLite's own recovery does: a frame torn by a writer reusing the WAL fails
//!    it), and hashes every page of the database at T. Then the read transaction ends: it lasts
//!    one sequential read of the database (the WAL can grow meanwhile; BENCHMARKS.md "Big
//!    databases" has the figures), never the restore.
//!
//! [`file_image`] hashes a restored copy the same way: equal images are the same pages (up to a
//! 64-bit hash).

use std::fs::File;
use std::io::{BufReader, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

use crate::error::{Error, Result};

/// The pages of a database at one moment: their size, count and a hash of all of them (the
/// lock page, which SQLite never writes, excepted).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Image {
    /// Bytes per page.
    pub page_size: u32,
    /// Pages in the database.
    pub pages: u32,
    /// A hash of every page with its number.
    pub hash: u64,
}

/// A read transaction held on the live database.
pub struct Held {
    conn: Connection,
    db: PathBuf,
}

/// Opens a read transaction on `db` (read-only; never writes).
pub fn hold(db: &Path) -> Result<Held> {
    let sqlite = |e| Error::Sqlite {
        op: "cannot read",
        path: db.into(),
        source: e,
    };
    let conn = Connection::open_with_flags(db, OpenFlags::SQLITE_OPEN_READ_ONLY).map_err(sqlite)?;
    conn.busy_timeout(Duration::from_secs(5)).map_err(sqlite)?;
    conn.execute_batch("BEGIN").map_err(sqlite)?;
    // The first read takes the snapshot (and the WAL read lock) and keeps it until ROLLBACK.
    conn.query_row("SELECT count(*) FROM sqlite_master", [], |_| Ok(()))
        .map_err(sqlite)?;
    Ok(Held {
        conn,
        db: db.to_path_buf(),
    })
}

/// Where litestream's sync of one transaction stopped in the WAL (its local LTX header).
struct LtxPosition {
    page_size: u32,
    commit: u32,
    wal_end: u64,
    salts: [u8; 8],
}

fn ltx_position(state_dir: &Path, txid: u64) -> std::result::Result<LtxPosition, String> {
    let dir = state_dir.join("ltx").join("0");
    let suffix = format!("-{txid:016x}.ltx");
    let file = std::fs::read_dir(&dir)
        .map_err(|e| format!("cannot list {}: {e}", dir.display()))?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.to_string_lossy().ends_with(&suffix))
        .ok_or_else(|| format!("no local LTX file for transaction {txid:016x}"))?;
    let mut head = [0u8; 100];
    File::open(&file)
        .and_then(|mut f| f.read_exact(&mut head))
        .map_err(|e| format!("cannot read {}: {e}", file.display()))?;
    if &head[..4] != b"LTX1" {
        return Err(format!("{} is not an LTX file", file.display()));
    }
    let be32 = |at: usize| u32::from_be_bytes(head[at..at + 4].try_into().expect("4 bytes"));
    let be64 = |at: usize| u64::from_be_bytes(head[at..at + 8].try_into().expect("8 bytes"));
    Ok(LtxPosition {
        page_size: be32(8),
        commit: be32(12),
        wal_end: be64(48) + be64(56),
        salts: head[64..72].try_into().expect("8 bytes"),
    })
}

impl Held {
    /// The live database at litestream's transaction `txid`; `Ok(Err(why))` when it cannot be
    /// rebuilt from the files now (try again with a new sync). Ends the read transaction.
    pub fn image_at(
        self,
        state_dir: &Path,
        txid: u64,
    ) -> Result<std::result::Result<Image, String>> {
        let at = match ltx_position(state_dir, txid) {
            Ok(at) => at,
            Err(why) => return Ok(Err(why)),
        };
        let image = self.rebuild(&at);
        drop(self.conn);
        image
    }

    fn rebuild(&self, at: &LtxPosition) -> Result<std::result::Result<Image, String>> {
        let ps = at.page_size as u64;
        let frame = 24 + ps;
        let wal_path = PathBuf::from(format!("{}-wal", self.db.display()));
        let io = |p: &Path, e| Error::io("cannot read", p, e);
        if ps < 512 || at.wal_end < 32 || !(at.wal_end - 32).is_multiple_of(frame) {
            return Ok(Err(format!(
                "the LTX header names no frame boundary (page size {ps}, WAL end {})",
                at.wal_end
            )));
        }
        let frames = (at.wal_end - 32) / frame;
        if frames == 0 {
            return Ok(Err("litestream's transaction covers no WAL frame".into()));
        }
        let wal = match File::open(&wal_path) {
            Ok(f) => f,
            Err(e) => return Ok(Err(format!("cannot open {}: {e}", wal_path.display()))),
        };
        let mut reader = BufReader::with_capacity(1 << 20, &wal);
        let mut header = [0u8; 32];
        reader
            .read_exact(&mut header)
            .map_err(|e| io(&wal_path, e))?;
        let magic = u32::from_be_bytes(header[..4].try_into().expect("4 bytes"));
        if magic & !1 != 0x377f_0682
            || u32::from_be_bytes(header[8..12].try_into().expect("4")) != at.page_size
        {
            return Ok(Err("the WAL header is not one of this page size".into()));
        }
        if header[16..24] != at.salts {
            return Ok(Err("the WAL was restarted since litestream's sync".into()));
        }
        let big = magic & 1 == 1;
        let mut sum = (0u32, 0u32);
        checksum(big, &header[..24], &mut sum);
        if !stored_sum(&header[24..32], sum) {
            return Ok(Err("the WAL header's checksum does not match".into()));
        }
        // The newest frame at or before T of every page.
        let mut newest: Vec<u64> = Vec::new();
        let mut buf = vec![0u8; frame as usize];
        let mut last_commit = 0;
        for i in 0..frames {
            reader.read_exact(&mut buf).map_err(|e| io(&wal_path, e))?;
            if buf[8..16] != at.salts {
                return Ok(Err(
                    "a WAL frame before litestream's position was overwritten".into(),
                ));
            }
            checksum(big, &buf[..8], &mut sum);
            checksum(big, &buf[24..], &mut sum);
            if !stored_sum(&buf[16..24], sum) {
                return Ok(Err(
                    "a WAL frame before litestream's position fails its checksum".into(),
                ));
            }
            let pgno = u32::from_be_bytes(buf[..4].try_into().expect("4 bytes")) as usize;
            last_commit = u32::from_be_bytes(buf[4..8].try_into().expect("4 bytes"));
            if newest.len() <= pgno {
                newest.resize(pgno + 1, 0);
            }
            newest[pgno] = 32 + i * frame + 24;
        }
        if last_commit != at.commit {
            return Ok(Err(format!(
                "litestream's position is not a commit of {} pages (the WAL says {last_commit})",
                at.commit
            )));
        }
        let db_file = File::open(&self.db).map_err(|e| io(&self.db, e))?;
        let on_disk = db_file.metadata().map_err(|e| io(&self.db, e))?.len() / ps;
        let mut db_pages = BufReader::with_capacity(1 << 20, &db_file);
        let mut page = vec![0u8; ps as usize];
        let mut hasher = PageHash::default();
        for pgno in 1..=at.commit as u64 {
            let from_wal = newest.get(pgno as usize).copied().unwrap_or(0);
            if pgno <= on_disk {
                db_pages
                    .read_exact(&mut page)
                    .map_err(|e| io(&self.db, e))?;
            } else if from_wal == 0 {
                return Ok(Err(format!(
                    "page {pgno} is neither in the WAL nor the file"
                )));
            }
            if from_wal != 0 {
                wal.read_exact_at(&mut page, from_wal)
                    .map_err(|e| io(&wal_path, e))?;
            }
            if pgno != lock_page(ps) {
                hasher.page(pgno, &page);
            }
        }
        Ok(Ok(Image {
            page_size: at.page_size,
            pages: at.commit,
            hash: hasher.0,
        }))
    }
}

/// The [`Image`] of a database file without a WAL (a restored copy), in pages of `page_size`.
pub fn file_image(path: &Path, page_size: u32) -> Result<Image> {
    let io = |e| Error::io("cannot read", path, e);
    let file = File::open(path).map_err(io)?;
    let ps = page_size as u64;
    let pages = file.metadata().map_err(io)?.len() / ps;
    let mut reader = BufReader::with_capacity(1 << 20, file);
    let mut page = vec![0u8; page_size as usize];
    let mut hasher = PageHash::default();
    for pgno in 1..=pages {
        reader.read_exact(&mut page).map_err(io)?;
        if pgno != lock_page(ps) {
            hasher.page(pgno, &page);
        }
    }
    Ok(Image {
        page_size,
        pages: u32::try_from(pages).unwrap_or(u32::MAX),
        hash: hasher.0,
    })
}

/// A 64-bit hash of numbered pages, fast enough to be a small part of a restore (with std's
/// SipHash, verify took 2.2 s where the restore takes 1.6 s at 110 MB). Each step is a bijection
/// of the state for a given word and injective in the word for a given state, so pages that
/// differ in one 8-byte word always hash differently; not meant to resist a forger, only to see
/// a backup that is not the database.
#[derive(Default)]
struct PageHash(u64);

impl PageHash {
    fn step(h: u64, word: u64) -> u64 {
        let h = (h ^ word).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        h ^ (h >> 29)
    }

    fn page(&mut self, pgno: u64, page: &[u8]) {
        let mut h = Self::step(self.0, pgno);
        for word in page.chunks_exact(8) {
            h = Self::step(h, u64::from_le_bytes(word.try_into().expect("8 bytes")));
        }
        self.0 = h;
    }
}

/// The page holding SQLite's lock bytes (at 1 GiB), never written by SQLite nor litestream.
fn lock_page(page_size: u64) -> u64 {
    0x4000_0000 / page_size + 1
}

/// SQLite's WAL checksum over `data`, continuing from `sum`.
fn checksum(big_endian: bool, data: &[u8], sum: &mut (u32, u32)) {
    let word = |b: &[u8]| {
        let b: [u8; 4] = b.try_into().expect("4 bytes");
        if big_endian {
            u32::from_be_bytes(b)
        } else {
            u32::from_le_bytes(b)
        }
    };
    for pair in data.chunks_exact(8) {
        sum.0 = sum.0.wrapping_add(word(&pair[..4])).wrapping_add(sum.1);
        sum.1 = sum.1.wrapping_add(word(&pair[4..])).wrapping_add(sum.0);
    }
}

fn stored_sum(stored: &[u8], sum: (u32, u32)) -> bool {
    stored[..4] == sum.0.to_be_bytes() && stored[4..8] == sum.1.to_be_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A WAL database with some commits, and an LTX header (as litestream writes one) ending at
    /// the WAL's last frame.
    fn fixture(dir: &Path) -> (PathBuf, PathBuf) {
        let db = dir.join("app.db");
        let c = Connection::open(&db).unwrap();
        c.execute_batch(
            "PRAGMA journal_mode=WAL; PRAGMA wal_autocheckpoint=0;
             CREATE TABLE t (id INTEGER PRIMARY KEY, body TEXT);",
        )
        .unwrap();
        for i in 0..300 {
            c.execute("INSERT INTO t VALUES (?, ?)", (i, "x".repeat(i % 300)))
                .unwrap();
        }
        let wal = std::fs::read(format!("{}-wal", db.display())).unwrap();
        let frames = (wal.len() as u64 - 32) / (24 + 4096);
        let last = 32 + (frames - 1) as usize * (24 + 4096);
        let mut head = vec![0u8; 100];
        head[..4].copy_from_slice(b"LTX1");
        head[8..12].copy_from_slice(&4096u32.to_be_bytes());
        head[12..16].copy_from_slice(&wal[last + 4..last + 8]);
        head[48..56].copy_from_slice(&32u64.to_be_bytes());
        head[56..64].copy_from_slice(&(frames * (24 + 4096)).to_be_bytes());
        head[64..72].copy_from_slice(&wal[16..24]);
        let state = dir.join("state");
        std::fs::create_dir_all(state.join("ltx/0")).unwrap();
        std::fs::write(
            state.join("ltx/0/0000000000000001-0000000000000007.ltx"),
            head,
        )
        .unwrap();
        std::mem::forget(c); // keeps the WAL (closing the last connection would checkpoint it)
        (db, state)
    }

    #[test]
    fn the_rebuilt_pages_are_those_of_the_checkpointed_database() {
        let dir = tempfile::tempdir().unwrap();
        let (db, state) = fixture(dir.path());
        let live = hold(&db).unwrap().image_at(&state, 7).unwrap().unwrap();
        // The same state, checkpointed into a file of its own.
        let copy = dir.path().join("copy.db");
        std::fs::copy(&db, &copy).unwrap();
        std::fs::copy(
            format!("{}-wal", db.display()),
            format!("{}-wal", copy.display()),
        )
        .unwrap();
        let c = Connection::open(&copy).unwrap();
        c.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)").unwrap();
        drop(c);
        assert_eq!(file_image(&copy, 4096).unwrap(), live);
        assert!(live.pages > 2, "{live:?}");
        // Another transaction is not there to be read.
        let none = hold(&db).unwrap().image_at(&state, 8).unwrap();
        assert!(none.unwrap_err().contains("no local LTX file"));
    }

    #[test]
    fn a_damaged_frame_is_never_taken_for_the_database() {
        let dir = tempfile::tempdir().unwrap();
        let (db, state) = fixture(dir.path());
        let wal = PathBuf::from(format!("{}-wal", db.display()));
        let mut bytes = std::fs::read(&wal).unwrap();
        bytes[32 + 24 + 4096 + 24 + 100] ^= 1; // the second frame's page
        std::fs::write(&wal, bytes).unwrap();
        let why = hold(&db).unwrap().image_at(&state, 7).unwrap().unwrap_err();
        assert!(why.contains("checksum"), "{why}");
    }

    #[test]
    fn one_changed_word_or_a_moved_page_changes_the_hash() {
        let page = vec![7u8; 4096];
        let hash = |pages: &[(u64, &[u8])]| {
            let mut h = PageHash::default();
            for (n, p) in pages {
                h.page(*n, p);
            }
            h.0
        };
        let base = hash(&[(1, &page), (2, &page)]);
        for at in [0, 8, 2048, 4088] {
            let mut other = page.clone();
            other[at] ^= 0x80;
            assert_ne!(hash(&[(1, &page), (2, &other)]), base, "byte {at}");
        }
        assert_ne!(hash(&[(1, &page), (3, &page)]), base);
        assert_eq!(hash(&[(1, &page), (2, &page)]), base);
    }
}
