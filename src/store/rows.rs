//! The rows of `app_config` as SQLite gives them, whoever wrote them: the row type, `content`
//! read as bytes whatever its storage class, the table's presence, the formats we read.

use std::path::Path;

use rusqlite::{Connection, OptionalExtension};

use crate::error::{Error, Result};

pub(super) struct Row {
    pub(super) id: i64,
    /// The bytes of `content`, or the kind of value it holds when that is neither BLOB nor TEXT.
    pub(super) content: std::result::Result<Vec<u8>, &'static str>,
    pub(super) format: String,
    pub(super) created_at: String,
}

/// `content` as bytes, whether it was bound as a BLOB (restinpieces, us) or as TEXT (a row
/// written with plain SQL, or by a driver binding a string).
pub(super) fn content_bytes(
    v: rusqlite::types::ValueRef<'_>,
) -> std::result::Result<Vec<u8>, &'static str> {
    use rusqlite::types::ValueRef;
    match v {
        ValueRef::Blob(b) | ValueRef::Text(b) => Ok(b.to_vec()),
        ValueRef::Null => Err("NULL"),
        ValueRef::Integer(_) => Err("an integer"),
        ValueRef::Real(_) => Err("a number"),
    }
}

pub(super) fn has_table(conn: &Connection, db: &Path) -> Result<bool> {
    conn.query_row(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'app_config'",
        [],
        |_| Ok(()),
    )
    .optional()
    .map(|r| r.is_some())
    .map_err(|e| Error::Sqlite {
        op: "cannot read schema",
        path: db.into(),
        source: e,
    })
}

pub(super) fn check_format(format: &str) -> Result<()> {
    match format {
        "yml" | "yaml" => Ok(()),
        other => Err(Error::WrongFormat {
            format: other.into(),
        }),
    }
}
