//! `verify`: proves a backup is restorable and current without touching the application's data.
//! The latest backup is restored into a private temporary directory, checked with
//! `PRAGMA integrity_check`, and its content compared with the live database.
//!
//! Outcomes: `ok` (restored content equals the live database), `failed` (the restore or the
//! check fails, or litestream says the replica is current and the data still differs),
//! `inconclusive` (the replica is behind, or writes kept coming, and it did not catch up within
//! the timeout: lag, not breakage).

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use rusqlite::types::ValueRef;
use rusqlite::{Connection, OpenFlags};
use serde::{Deserialize, Serialize};

use crate::binary::LitestreamBinary;
use crate::config::LitestreamConfig;
use crate::control::ControlClient;
use crate::error::{Error, Result};
use crate::handoff::HandoffMode;
use crate::restore::{restore, RestoreRequest};

/// The verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Ok,
    Failed,
    Inconclusive,
}

impl Outcome {
    /// `verify`'s exit code: 0, 1, 3.
    pub fn exit_code(self) -> u8 {
        match self {
            Outcome::Ok => 0,
            Outcome::Failed => 1,
            Outcome::Inconclusive => 3,
        }
    }
}

/// What `verify` found.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VerifyReport {
    pub outcome: Outcome,
    /// The database verified.
    pub db: PathBuf,
    /// Why this outcome.
    pub reason: String,
    /// The transaction the restored copy reached.
    pub restored_txid: Option<u64>,
    /// The transaction litestream had reached locally when asked to sync.
    pub live_txid: Option<u64>,
    /// Transactions the replica was behind the live database (when known).
    pub lag_txids: Option<u64>,
    /// When it finished.
    #[serde(with = "crate::status::rfc3339")]
    pub at: SystemTime,
}

/// Verifies `db` (a `path` database of `config`) against its replica.
pub async fn verify(
    bin: &LitestreamBinary,
    config: &LitestreamConfig,
    db: &Path,
    control: Option<&ControlClient>,
    mode: HandoffMode,
    private_parent: &Path,
    timeout: Duration,
) -> Result<VerifyReport> {
    let deadline = Instant::now() + timeout;
    let report = |outcome, reason: String, restored: Option<u64>, live: Option<u64>| VerifyReport {
        outcome,
        db: db.to_path_buf(),
        reason,
        restored_txid: restored,
        live_txid: live,
        lag_txids: match (restored, live) {
            (Some(r), Some(l)) => Some(l.saturating_sub(r)),
            _ => None,
        },
        at: SystemTime::now(),
    };
    loop {
        let live_txid = match control {
            Some(c) => sync(c, db, deadline).await,
            None => None,
        };
        let live_before = content_hash(db)?;
        let dir = tempfile::Builder::new()
            .prefix("verify-")
            .tempdir_in(private_parent)
            .map_err(|e| Error::io("cannot create a temporary directory in", private_parent, e))?;
        let copy = dir.path().join("restored.db");
        let req = RestoreRequest {
            db: db.to_path_buf(),
            output: Some(copy.clone()),
            ..RestoreRequest::default()
        };
        let restored = match restore(bin, config, mode, private_parent, &req).await {
            Ok(r) => r,
            Err(Error::RestoreFailed { reason, .. }) => {
                return Ok(report(
                    Outcome::Failed,
                    format!("restore failed: {reason}"),
                    None,
                    live_txid,
                ))
            }
            Err(e) => return Err(e),
        };
        let restored_txid = restored.txid;
        match integrity(&copy) {
            Ok(()) => {}
            Err(why) => {
                return Ok(report(
                    Outcome::Failed,
                    format!("the restored copy fails integrity_check: {why}"),
                    restored_txid,
                    live_txid,
                ))
            }
        }
        let copy_hash = content_hash(&copy)?;
        drop(dir);
        if copy_hash == live_before {
            return Ok(report(
                Outcome::Ok,
                "the restored copy equals the live database".into(),
                restored_txid,
                live_txid,
            ));
        }
        let live_after = content_hash(db)?;
        let writes_ongoing = live_after != live_before;
        let caught_up = matches!((restored_txid, live_txid), (Some(r), Some(l)) if r >= l);
        if control.is_some() && !writes_ongoing && caught_up {
            return Ok(report(
                Outcome::Failed,
                "litestream reports the replica as current, yet the restored copy differs from the live database".into(),
                restored_txid,
                live_txid,
            ));
        }
        let reason = if control.is_none() {
            "litestream is not running under rip-litestream for this database: the replica may simply be behind".to_string()
        } else if writes_ongoing {
            "writes kept coming: the restored copy never matched a moment of the live database"
                .to_string()
        } else {
            "the replica is behind the live database".to_string()
        };
        if control.is_none() || Instant::now() + Duration::from_millis(500) >= deadline {
            return Ok(report(
                Outcome::Inconclusive,
                format!("{reason} (within {timeout:?})"),
                restored_txid,
                live_txid,
            ));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Asks litestream to sync `db` and waits until the replica holds what it synced, keeping
/// litestream's WAL read lock (a `/sync` with `wait` would end it: see
/// [`ControlClient::sync_local`]); returns the local transaction it reached.
async fn sync(control: &ControlClient, db: &Path, deadline: Instant) -> Option<u64> {
    let path = crate::runtime::absolute(db).ok()?;
    let deadline = deadline.max(Instant::now() + Duration::from_secs(1));
    match control
        .sync_until_replicated(&path.to_string_lossy(), deadline)
        .await
    {
        Ok((target, _)) => Some(target),
        Err(e) => {
            tracing::warn!(db = %db.display(), error = %e, "verify: the replica did not catch up");
            None
        }
    }
}

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
