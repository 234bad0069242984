//! The fresh-database guard: before replication starts, no database may be replicated that
//! would replace a good backup with a new empty file.

use std::path::Path;

use crate::binary::LitestreamBinary;
use crate::config::{DbTarget, LitestreamConfig};
use crate::error::{Error, Result};
use crate::handoff::HandoffMode;

use super::{replica_has_backup, restore, restored_marker, RestoreRequest};

/// Before replication starts, for each `path` database of `config`, and each file found in a
/// `dir` (file by file; `restore_missing` does not apply there: which files are missing is not
/// known):
/// - missing: restored from its replica when `restore_missing` (no backup yet: a fresh start);
///   otherwise refused while its replica holds backups (the application would create an empty
///   database and replace the latest backup with it), unless `allow_fresh_db`;
/// - present without litestream state while its replica holds backups: accepted when
///   `rip-litestream restore` put it there ([`restored_marker`]) or when its content equals the
///   replica's latest backup (restored by hand); refused otherwise, unless `allow_fresh_db`.
pub async fn prepare_databases(
    bin: &LitestreamBinary,
    config: &LitestreamConfig,
    mode: HandoffMode,
    private_parent: &Path,
    restore_missing: bool,
    allow_fresh_db: bool,
) -> Result<()> {
    for target in config.dbs() {
        match target {
            DbTarget::Path(db) => {
                guard_one(
                    bin,
                    config,
                    mode,
                    private_parent,
                    db,
                    restore_missing,
                    allow_fresh_db,
                )
                .await?
            }
            DbTarget::Dir { dir, pattern } => {
                // litestream replicates each file of the directory to its own place in the
                // replica, and its one-off commands do not know the files of a `dir:` entry: each
                // is asked about through a config naming that file alone.
                for db in crate::wal_guard::files_in(dir, pattern) {
                    let Some(one) = config.for_dir_file(dir, &db) else {
                        continue;
                    };
                    guard_one(bin, &one, mode, private_parent, &db, false, allow_fresh_db).await?;
                }
            }
        }
    }
    Ok(())
}

/// [`prepare_databases`] for one database file, asking litestream with `config`.
async fn guard_one(
    bin: &LitestreamBinary,
    config: &LitestreamConfig,
    mode: HandoffMode,
    private_parent: &Path,
    db: &Path,
    restore_missing: bool,
    allow_fresh_db: bool,
) -> Result<()> {
    if !db.exists() && restore_missing {
        let req = RestoreRequest {
            db: db.to_path_buf(),
            if_replica_exists: true,
            ..RestoreRequest::default()
        };
        let done = restore(bin, config, mode, private_parent, &req).await?;
        if done.restored {
            tracing::info!(db = %db.display(), "restored from the replica");
        } else {
            tracing::info!(db = %db.display(), "no backup in the replica yet: fresh start");
        }
        return Ok(());
    }
    let marker = restored_marker(db);
    if config.state_dir(db).exists() {
        let _ = std::fs::remove_file(&marker);
        return Ok(());
    }
    if allow_fresh_db || (db.exists() && marker.exists()) {
        return Ok(());
    }
    let has_backup = match replica_has_backup(bin, config, mode, private_parent, db).await {
        Ok(b) => b,
        Err(e) => {
            tracing::warn!(db = %db.display(), error = %e, "cannot tell whether the replica already holds backups; replicating anyway");
            false
        }
    };
    if !has_backup {
        return Ok(());
    }
    if !db.exists() {
        return Err(Error::Usage(format!(
            "refusing to start: {db} does not exist but its replica already holds backups, and the application would create an empty database that replaces the latest backup. Restore it first (run --restore-if-missing, or `rip-litestream restore`), or pass --allow-fresh-db to start anew on purpose",
            db = db.display()
        )));
    }
    if equals_latest_backup(bin, config, mode, private_parent, db).await {
        tracing::info!(db = %db.display(), "no litestream state beside it, but it equals the replica's latest backup (restored by hand): replicating it");
        return Ok(());
    }
    Err(Error::Usage(format!(
        "refusing to replicate {db}: it has no litestream state beside it ({state}) and differs from the latest backup its replica holds, so it is probably a new file that would replace a good backup. Move it away and start with --restore-if-missing (or `rip-litestream restore`), or pass --allow-fresh-db if this file is really the one to keep",
        db = db.display(),
        state = config.state_dir(db).display()
    )))
}

/// True when `db`'s content equals the replica's latest backup (restored into a private
/// temporary directory and compared table by table).
async fn equals_latest_backup(
    bin: &LitestreamBinary,
    config: &LitestreamConfig,
    mode: HandoffMode,
    private_parent: &Path,
    db: &Path,
) -> bool {
    let Ok(dir) = tempfile::Builder::new()
        .prefix("latest-")
        .tempdir_in(private_parent)
    else {
        return false;
    };
    let copy = dir.path().join("latest.db");
    let req = RestoreRequest {
        db: db.to_path_buf(),
        output: Some(copy.clone()),
        ..RestoreRequest::default()
    };
    if restore(bin, config, mode, private_parent, &req)
        .await
        .is_err()
    {
        return false;
    }
    let db = db.to_path_buf();
    tokio::task::spawn_blocking(move || {
        let same = match (
            crate::content::content_hash(&db),
            crate::content::content_hash(&copy),
        ) {
            (Ok(a), Ok(b)) => a == b,
            _ => false,
        };
        drop(dir);
        same
    })
    .await
    .unwrap_or(false)
}
