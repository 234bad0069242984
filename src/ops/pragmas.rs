//! Connection settings recommended for applications whose database litestream replicates.

use rusqlite::Connection;

/// The recommended settings, as `(pragma, value)`.
pub const RECOMMENDED: &[(&str, &str)] = &[
    ("journal_mode", "WAL"),
    ("busy_timeout", "5000"),
    ("synchronous", "NORMAL"),
];

/// Applies [`RECOMMENDED`]: WAL (litestream needs it), a 5 s busy timeout (litestream briefly
/// holds locks while it checkpoints), `synchronous=NORMAL` (safe in WAL mode). SQLite's default
/// automatic checkpoint is safe under the supervisor; `wal_autocheckpoint=0` (checkpoints left to
/// litestream) is an optional tuning for very high write loads, whose WAL then grows for as long
/// as litestream is down.
pub fn apply_recommended(conn: &Connection) -> rusqlite::Result<()> {
    for (name, value) in RECOMMENDED {
        conn.query_row(&format!("PRAGMA {name} = {value}"), [], |_| Ok(()))
            .or_else(|e| match e {
                rusqlite::Error::QueryReturnedNoRows => Ok(()),
                e => Err(e),
            })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn applies_wal_and_friends() {
        let dir = tempfile::tempdir().unwrap();
        let conn = Connection::open(dir.path().join("a.db")).unwrap();
        apply_recommended(&conn).unwrap();
        let mode: String = conn
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        let timeout: i64 = conn
            .query_row("PRAGMA busy_timeout", [], |r| r.get(0))
            .unwrap();
        assert_eq!(timeout, 5000);
        let sync: i64 = conn
            .query_row("PRAGMA synchronous", [], |r| r.get(0))
            .unwrap();
        assert_eq!(sync, 1);
    }
}
