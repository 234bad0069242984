//! `verify`: proves a backup is restorable and current without touching the application's data.
//! The latest backup is restored into a private temporary directory, checked with
//! `PRAGMA integrity_check`, and its content compared with the live database.
//!
//! Outcomes: `ok` (restored content equals the live database), `failed` (the restore or the
//! check fails, or litestream says the replica is current and the data still differs),
//! `inconclusive` (the replica is behind, or writes kept coming, and it did not catch up within
//! the timeout: lag, not breakage).

use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use crate::binary::LitestreamBinary;
use crate::config::LitestreamConfig;
pub use crate::content::{content_hash, integrity};
use crate::control::ControlClient;
use crate::error::{Error, Result};
use crate::handoff::HandoffMode;
use crate::restore::{restore, RestoreRequest};
pub use crate::status::{Outcome, VerifyReport};

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
        let live_before = blocking_hash(db.to_path_buf()).await?;
        let (restored_txid, copy_hash) =
            match restored_copy(bin, config, mode, private_parent, db).await? {
                Copy::Hashed { txid, hash } => (txid, hash),
                Copy::Failed { reason, txid } => {
                    return Ok(report(Outcome::Failed, reason, txid, live_txid))
                }
            };
        if copy_hash == live_before {
            return Ok(report(
                Outcome::Ok,
                "the restored copy equals the live database".into(),
                restored_txid,
                live_txid,
            ));
        }
        let live_after = blocking_hash(db.to_path_buf()).await?;
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

/// The latest backup of `db`, restored into a private temporary directory and checked.
enum Copy {
    /// It restored and passes `integrity_check`: its transaction and content hash.
    Hashed { txid: Option<u64>, hash: u64 },
    /// The restore or the check failed.
    Failed { reason: String, txid: Option<u64> },
}

async fn restored_copy(
    bin: &LitestreamBinary,
    config: &LitestreamConfig,
    mode: HandoffMode,
    private_parent: &Path,
    db: &Path,
) -> Result<Copy> {
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
            return Ok(Copy::Failed {
                reason: format!("restore failed: {reason}"),
                txid: None,
            })
        }
        Err(e) => return Err(e),
    };
    let checked = copy.clone();
    let integrity = tokio::task::spawn_blocking(move || integrity(&checked))
        .await
        .unwrap_or_else(|e| Err(e.to_string()));
    if let Err(why) = integrity {
        return Ok(Copy::Failed {
            reason: format!("the restored copy fails integrity_check: {why}"),
            txid: restored.txid,
        });
    }
    let hash = blocking_hash(copy).await?;
    drop(dir);
    Ok(Copy::Hashed {
        txid: restored.txid,
        hash,
    })
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

/// [`content_hash`] on a blocking thread: a whole-database scan must not hold up the async
/// workers (the daemon's are few, and an embedding host's are not ours).
async fn blocking_hash(db: std::path::PathBuf) -> Result<u64> {
    tokio::task::spawn_blocking(move || content_hash(&db))
        .await
        .map_err(|e| Error::LitestreamFailed(format!("the content hash did not finish: {e}")))?
}
