//! Restoring databases from their replica with the stored config: on demand, and on boot for
//! databases that are missing; plus the guard against a fresh empty file replacing a good backup.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::binary::LitestreamBinary;
use crate::config::{DbTarget, LitestreamConfig};
use crate::error::{Error, Result};
use crate::handoff::HandoffMode;
use crate::oneshot;

/// How long a restore may take before it is abandoned.
pub const RESTORE_TIMEOUT: Duration = Duration::from_secs(3600);

/// One `litestream restore`.
#[derive(Debug, Clone, Default)]
pub struct RestoreRequest {
    /// The database as named in the config.
    pub db: PathBuf,
    /// Where to write it (default: `db` itself).
    pub output: Option<PathBuf>,
    /// Point in time (RFC 3339).
    pub timestamp: Option<String>,
    /// Transaction id (16 hex digits).
    pub txid: Option<String>,
    /// No backup is not an error: nothing is written.
    pub if_replica_exists: bool,
    /// Overwrite an existing output.
    pub force: bool,
}

/// What a restore did.
#[derive(Debug, Clone)]
pub struct Restored {
    /// False when there was no backup (with `if_replica_exists`).
    pub restored: bool,
    /// The output path.
    pub output: PathBuf,
    /// The transaction the restored database reached (from litestream's JSON summary).
    pub txid: Option<u64>,
    /// litestream's output.
    pub log: String,
}

/// Runs `litestream restore ... -integrity-check full` for `req`.
pub async fn restore(
    bin: &LitestreamBinary,
    config: &LitestreamConfig,
    mode: HandoffMode,
    private_parent: &Path,
    req: &RestoreRequest,
) -> Result<Restored> {
    let output = req.output.clone().unwrap_or_else(|| req.db.clone());
    if output.exists() && !req.force {
        return Err(Error::Usage(format!(
            "{} already exists: refusing to overwrite it (pass --force, or choose another --output)",
            output.display()
        )));
    }
    let mut args: Vec<OsString> = vec!["-json".into(), "-integrity-check".into(), "full".into()];
    args.extend(["-o".into(), output.clone().into_os_string()]);
    if let Some(t) = &req.timestamp {
        args.extend(["-timestamp".into(), t.into()]);
    }
    if let Some(t) = &req.txid {
        args.extend(["-txid".into(), t.into()]);
    }
    if req.if_replica_exists {
        args.push("-if-replica-exists".into());
    }
    if req.force {
        args.push("-force".into());
    }
    args.push(req.db.clone().into_os_string());
    let out = oneshot::run(
        bin,
        "restore",
        config.yaml().as_bytes(),
        mode,
        private_parent,
        &args,
        RESTORE_TIMEOUT,
    )
    .await?;
    let log = oneshot::text(&out, config.yaml().as_bytes());
    if !out.status.success() {
        return Err(Error::RestoreFailed {
            db: req.db.clone(),
            reason: log,
        });
    }
    let summary: Option<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .find('{')
        .and_then(|i| serde_json::from_slice(&out.stdout[i..]).ok());
    let txid = summary
        .as_ref()
        .and_then(|s| s["txid"].as_str())
        .and_then(|t| u64::from_str_radix(t, 16).ok());
    Ok(Restored {
        restored: output.exists(),
        output,
        txid,
        log,
    })
}

/// True when the replica of `db` holds any backup (`litestream ltx -level all`).
pub async fn replica_has_backup(
    bin: &LitestreamBinary,
    config: &LitestreamConfig,
    mode: HandoffMode,
    private_parent: &Path,
    db: &Path,
) -> Result<bool> {
    let args: Vec<OsString> = vec!["-level".into(), "all".into(), db.as_os_str().into()];
    let out = oneshot::run(
        bin,
        "ltx",
        config.yaml().as_bytes(),
        mode,
        private_parent,
        &args,
        Duration::from_secs(10),
    )
    .await?;
    if !out.status.success() {
        return Err(Error::LitestreamFailed(format!(
            "cannot list the replica of {}: {}",
            db.display(),
            oneshot::text(&out, config.yaml().as_bytes())
        )));
    }
    // A header line, then one line per LTX file.
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .skip(1)
        .any(|l| !l.trim().is_empty()))
}

/// Before replication starts: restores each missing `path` database from its replica (no
/// backup yet: a fresh start) when `restore_missing`; and refuses a database that exists without
/// litestream state while its replica holds backups, unless `allow_fresh_db`.
pub async fn prepare_databases(
    bin: &LitestreamBinary,
    config: &LitestreamConfig,
    mode: HandoffMode,
    private_parent: &Path,
    restore_missing: bool,
    allow_fresh_db: bool,
) -> Result<()> {
    for target in config.dbs() {
        let DbTarget::Path(db) = target else { continue };
        if !db.exists() {
            if !restore_missing {
                continue;
            }
            let req = RestoreRequest {
                db: db.clone(),
                if_replica_exists: true,
                ..RestoreRequest::default()
            };
            let done = restore(bin, config, mode, private_parent, &req).await?;
            if done.restored {
                tracing::info!(db = %db.display(), "restored from the replica");
            } else {
                tracing::info!(db = %db.display(), "no backup in the replica yet: fresh start");
            }
            continue;
        }
        if allow_fresh_db || config.state_dir(db).exists() {
            continue;
        }
        let has_backup = match replica_has_backup(bin, config, mode, private_parent, db).await {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(db = %db.display(), error = %e, "cannot tell whether the replica already holds backups; replicating anyway");
                false
            }
        };
        if has_backup {
            return Err(Error::Usage(format!(
                "refusing to replicate {db}: it has no litestream state beside it ({state}) but its replica already holds backups, so it is probably a new empty file that would overwrite a good backup. Move it away and start with --restore-if-missing, or pass --allow-fresh-db if this file is really the one to keep",
                db = db.display(),
                state = config.state_dir(db).display()
            )));
        }
    }
    Ok(())
}
