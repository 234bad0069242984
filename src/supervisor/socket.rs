//! What the supervisor says to litestream over its control socket (sync, list), and the status
//! file it keeps for `rip-litestream status`.
//!
//! Never sends a `/sync` with `wait` or `timeout` except on the way out, just before SIGTERM:
//! that request ends litestream's WAL read transaction for good
//! ([`ControlClient::sync_local`]).

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::json;
use tokio::sync::watch;

use crate::control::ControlClient;
use crate::status::{DbStatus, Status};
use crate::wal_guard::WalGuard;

/// Writes each new status to `path` (0600, replaced atomically) for `rip-litestream status`.
pub(super) async fn write_status_file(mut rx: watch::Receiver<Status>, path: PathBuf) {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("json.tmp");
    loop {
        let json = serde_json::to_vec_pretty(&*rx.borrow_and_update()).expect("status serialises");
        let written = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .and_then(|mut f| f.write_all(&json))
            .and_then(|()| std::fs::rename(&tmp, &path));
        if let Err(e) = written {
            tracing::debug!(path = %path.display(), error = %e, "cannot write the status file");
        }
        if rx.changed().await.is_err() {
            return;
        }
    }
}

/// How often the databases' last sync is read over the control socket while ready.
pub(super) const POLL_EVERY: Duration = Duration::from_secs(2);

/// Each database's last sync (`/list`), local and replicated transaction (a `/sync` without
/// `wait`, which keeps litestream's WAL read lock), and whether litestream holds that lock (pid
/// `pid`); `None` when litestream does not answer in time (with an unreachable S3 replica
/// `/list` hangs: the old values stay, and age into "stalled").
pub(super) async fn poll_databases(control: &ControlClient, pid: u32) -> Option<Vec<DbStatus>> {
    let list = control.get("/list", Duration::from_secs(1)).await.ok()?;
    let locks = crate::wal_guard::read_locks(pid);
    let mut dbs = Vec::new();
    for d in list["databases"].as_array()? {
        let path = d["path"].as_str().unwrap_or_default().to_string();
        let synced = control
            .sync_local(&path, Duration::from_millis(500))
            .await
            .ok();
        dbs.push(DbStatus {
            last_sync_at: d["last_sync_at"]
                .as_str()
                .and_then(crate::timestamps::parse_time),
            status: d["status"].as_str().unwrap_or_default().to_string(),
            txid: synced.and_then(|s| s.txid),
            replicated_txid: synced.and_then(|s| s.replicated_txid),
            read_lock: crate::wal_guard::holds_read_lock(locks.as_ref(), Path::new(&path)),
            path,
        });
    }
    Some(dbs)
}

/// A new litestream's first sync of every database, without `wait` (see [`ControlClient::sync_local`]), then
/// the WAL guard released database by database as litestream's own read lock shows in
/// `/proc/locks`. Anything still held after `patience` is released with a warning: the guard
/// must never hold the WAL for long beside a running litestream.
pub(super) async fn first_sync(
    control: Option<ControlClient>,
    guard: WalGuard,
    pid: u32,
    patience: Duration,
) {
    let started = std::time::Instant::now();
    let mut synced_all = control.is_none();
    if let Some(c) = &control {
        match c.listed_paths(Duration::from_secs(2)).await {
            Ok(paths) => {
                let mut failed = false;
                for path in paths {
                    if let Err(e) = c.sync_local(&path, Duration::from_secs(30)).await {
                        failed = true;
                        tracing::warn!(db = %path, error = %e, "first sync failed");
                    }
                }
                synced_all = !failed;
            }
            Err(e) => {
                tracing::warn!(error = %e, "first sync: litestream did not list its databases")
            }
        }
    }
    let can_see_locks = crate::wal_guard::read_locks(pid).is_some();
    let mut pause = Duration::from_millis(2);
    loop {
        let held = if can_see_locks {
            guard.release_where_locked_by(pid)
        } else if synced_all {
            // No /proc/locks: the first sync is the best evidence there is.
            guard.release_held();
            Vec::new()
        } else {
            guard.held()
        };
        if held.is_empty() {
            tracing::debug!(
                ms = started.elapsed().as_millis() as u64,
                "WAL guard released: litestream holds the WAL of every database"
            );
            return;
        }
        if started.elapsed() >= patience {
            let names: Vec<String> = held.iter().map(|p| p.display().to_string()).collect();
            tracing::warn!(db = %names.join(","), pid, "litestream did not take its WAL read lock in time: the guard lets go, so the WAL does not grow without bound");
            guard.release_held();
            return;
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}

/// What the sync before stopping learnt of one database.
#[derive(Debug, Clone)]
pub(super) struct DbSync {
    /// The database, as litestream names it.
    pub path: String,
    /// The positions litestream answered with, or why it did not.
    pub answer: Result<crate::control::Synced, String>,
}

impl DbSync {
    /// The replica holds every transaction litestream had when it answered.
    pub fn confirmed(&self) -> bool {
        matches!(&self.answer, Ok(s) if s.replicated_txid.unwrap_or(0) >= s.txid.unwrap_or(0))
    }
}

/// Asks litestream to sync every database it knows and wait for the replica, all at once,
/// within `budget` in total. Only on the way out (the WAL guard engaged, SIGTERM next): a sync
/// with `wait` ends litestream's WAL read transaction. `Err` when litestream did not list its
/// databases or did not answer in time.
pub(super) async fn sync_all(
    control: &ControlClient,
    budget: Duration,
) -> Result<Vec<DbSync>, String> {
    let work = async {
        let paths = control
            .listed_paths(budget.min(Duration::from_secs(2)))
            .await?;
        let mut syncs = tokio::task::JoinSet::new();
        for path in paths {
            let control = control.clone();
            syncs.spawn(async move {
                let body = json!({"path": path, "wait": true, "timeout": budget.as_secs().max(1)});
                let answer = control.post("/sync", &body, budget).await;
                (path, answer)
            });
        }
        let mut out = Vec::new();
        while let Some(joined) = syncs.join_next().await {
            let Ok((path, answer)) = joined else { continue };
            let answer = answer
                .map(|a| crate::control::Synced {
                    txid: a["txid"].as_u64(),
                    replicated_txid: a["replicated_txid"].as_u64(),
                })
                .map_err(|e| e.to_string());
            tracing::debug!(db = %path, answer = ?answer, "synced before stopping");
            out.push(DbSync { path, answer });
        }
        Ok(out)
    };
    tokio::time::timeout(budget, work)
        .await
        .unwrap_or_else(|_| Err(format!("no answer within {budget:?}")))
}
