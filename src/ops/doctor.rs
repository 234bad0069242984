//! `doctor`: what a database needs for replication, checked without changing it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

use crate::error::{Error, Result};

/// One check: passed, or what to change.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Check {
    /// The name.
    pub name: String,
    /// Whether it passed.
    pub ok: bool,
    /// What was found (and what to do when not ok).
    pub detail: String,
    /// True when it must change for replication to work (false: advice).
    pub required: bool,
}

/// Runs every check on `db`.
pub fn examine(db: &Path) -> Result<Vec<Check>> {
    if !db.is_file() {
        return Err(Error::Usage(format!(
            "{} is not a database file",
            db.display()
        )));
    }
    let conn = Connection::open_with_flags(db, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .map_err(|e| sqlite_error(e, db))?;
    conn.busy_timeout(Duration::from_secs(2)).ok();
    let mut checks = Vec::new();
    let mode: String = conn
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .map_err(|e| sqlite_error(e, db))?;
    checks.push(Check {
        name: "journal mode".into(),
        ok: mode.eq_ignore_ascii_case("wal"),
        detail: if mode.eq_ignore_ascii_case("wal") {
            "WAL".into()
        } else {
            format!("{mode}: litestream needs WAL; run `PRAGMA journal_mode=WAL` once (it persists), or call pragmas::apply_recommended")
        },
        required: true,
    });
    let size = std::fs::metadata(db).map(|m| m.len()).unwrap_or(0);
    let wal = std::fs::metadata(format!("{}-wal", db.display()))
        .map(|m| m.len())
        .unwrap_or(0);
    checks.push(Check {
        name: "size".into(),
        ok: true,
        detail: format!("{size} bytes, WAL {wal} bytes"),
        required: false,
    });
    let state = crate::config::default_state_dir(db);
    checks.push(Check {
        name: "litestream state".into(),
        ok: true,
        detail: if state.is_dir() {
            format!(
                "{} exists: litestream has replicated this database",
                state.display()
            )
        } else {
            format!(
                "{} not found: litestream has not replicated this database yet",
                state.display()
            )
        },
        required: false,
    });
    let holders = holders(db);
    checks.push(Check {
        name: "open by".into(),
        ok: true,
        detail: if holders.is_empty() {
            "no other process has it open".into()
        } else {
            holders
                .iter()
                .map(|(pid, cmd)| format!("pid {pid} ({cmd})"))
                .collect::<Vec<_>>()
                .join(", ")
        },
        required: false,
    });
    checks.push(Check {
        name: "connection settings".into(),
        ok: true,
        detail: "applications should open it with busy_timeout=5000 and synchronous=NORMAL (pragmas::apply_recommended); SQLite's default automatic checkpoint is safe under rip-litestream".into(),
        required: false,
    });
    Ok(checks)
}

/// Not a SQLite file (bad input), or another SQLite failure.
fn sqlite_error(e: rusqlite::Error, db: &Path) -> Error {
    if e.sqlite_error_code() == Some(rusqlite::ErrorCode::NotADatabase) {
        Error::NotSqlite { path: db.into() }
    } else {
        Error::Sqlite {
            op: "cannot inspect",
            path: db.into(),
            source: e,
        }
    }
}

/// Other processes with `db` (or its WAL) open, from /proc (those this user may see).
fn holders(db: &Path) -> Vec<(u32, String)> {
    let Ok(target) = std::fs::canonicalize(db) else {
        return Vec::new();
    };
    let wal = PathBuf::from(format!("{}-wal", target.display()));
    let me = std::process::id();
    let mut out = Vec::new();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return out;
    };
    for p in procs.flatten() {
        let Some(pid) = p.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Ok(fds) = std::fs::read_dir(p.path().join("fd")) else {
            continue;
        };
        let open = fds
            .flatten()
            .filter_map(|fd| std::fs::read_link(fd.path()).ok())
            .any(|l| l == target || l == wal);
        if open {
            let cmd = std::fs::read_to_string(p.path().join("comm")).unwrap_or_default();
            out.push((pid, cmd.trim().to_string()));
        }
    }
    out
}
