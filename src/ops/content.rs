//! What a database holds, as `verify` and the fresh-database guard compare it: SQLite's own
//! integrity check and a hash of the schema and every row. Opens read-only; never writes.

use std::hash::{Hash, Hasher};
use std::path::Path;
use std::time::Duration;

use rusqlite::types::ValueRef;
use rusqlite::{Connection, OpenFlags};

use crate::error::{Error, Result};

/// `PRAGMA integrity_check` of a database file.
pub fn integrity(db: &Path) -> std::result::Result<(), String> {
    let conn = Connection::open_with_flags(db, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .map_err(|e| e.to_string())?;
    let result: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .map_err(|e| e.to_string())?;
    if result == "ok" {
        Ok(())
    } else {
        Err(result)
    }
}

/// A hash of a database's schema and every row of every table (litestream's own bookkeeping
/// tables excepted), read in one read transaction so it is one moment of the database.
pub fn content_hash(db: &Path) -> Result<u64> {
    let sqlite = |e| Error::Sqlite {
        op: "cannot read",
        path: db.into(),
        source: e,
    };
    let mut conn =
        Connection::open_with_flags(db, OpenFlags::SQLITE_OPEN_READ_ONLY).map_err(sqlite)?;
    conn.busy_timeout(Duration::from_secs(5)).map_err(sqlite)?;
    let tx = conn.transaction().map_err(sqlite)?;
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    let tables: Vec<(String, String)> = {
        let mut stmt = tx
            .prepare(
                "SELECT name, COALESCE(sql, '') FROM sqlite_master WHERE type = 'table' \
                 AND name NOT LIKE '\\_litestream%' ESCAPE '\\' AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' ORDER BY name",
            )
            .map_err(sqlite)?;
        let rows = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .map_err(sqlite)?;
        rows.collect::<std::result::Result<_, _>>()
            .map_err(sqlite)?
    };
    for (name, sql) in &tables {
        name.hash(&mut hasher);
        sql.hash(&mut hasher);
        let mut stmt = tx
            .prepare(&format!("SELECT * FROM \"{}\"", name.replace('"', "\"\"")))
            .map_err(sqlite)?;
        let columns = stmt.column_count();
        let mut rows = stmt.query([]).map_err(sqlite)?;
        while let Some(row) = rows.next().map_err(sqlite)? {
            for i in 0..columns {
                match row.get_ref(i).map_err(sqlite)? {
                    ValueRef::Null => 0u8.hash(&mut hasher),
                    ValueRef::Integer(v) => (1u8, v).hash(&mut hasher),
                    ValueRef::Real(v) => (2u8, v.to_bits()).hash(&mut hasher),
                    ValueRef::Text(v) => (3u8, v).hash(&mut hasher),
                    ValueRef::Blob(v) => (4u8, v).hash(&mut hasher),
                }
            }
        }
    }
    Ok(hasher.finish())
}
