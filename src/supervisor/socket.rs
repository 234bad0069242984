//! What the supervisor says to litestream over its control socket (sync, list), and the status
//! file it keeps for `rip-litestream status`.
//!
//! Never sends a `/sync` with `wait` or `timeout` except on the way out, just before SIGTERM:
//! that request ends litestream's WAL read transaction for good
//! ([`ControlClient::sync_local`]).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde_json::json;
use tokio::sync::watch;

use crate::control::{ControlClient, Synced};
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

/// How many polls in a row may reuse a database's positions while its files did not change:
/// then it is asked again all the same.
const REUSE_AT_MOST: u32 = 15;

/// What the previous polls learnt of each database, so one whose files did not change since
/// is not asked again: at a thousand databases, a `/sync` each every poll costs litestream
/// more than its own replication does when idle.
#[derive(Debug, Default)]
pub(super) struct PollMemo {
    /// The litestream these answers came from.
    pid: u32,
    /// Per database: its files' sizes and modification times when it was asked, what it
    /// answered, and how many polls reused that since.
    seen: HashMap<String, (Stamp, Synced, u32)>,
}

/// Size and modification time of a database and of its WAL: while both stay the same, no
/// transaction was written, and litestream's local position cannot have moved.
type Stamp = [Option<(u64, SystemTime)>; 2];

fn stamp(db: &str) -> Stamp {
    let of = |p: &str| {
        std::fs::metadata(p)
            .ok()
            .and_then(|m| Some((m.len(), m.modified().ok()?)))
    };
    [of(db), of(&format!("{db}-wal"))]
}

impl PollMemo {
    /// The positions of `path` from an earlier poll, when they can stand: the same litestream,
    /// the same files, the replica caught up with the local position, and not reused too often.
    fn reuse(&mut self, pid: u32, path: &str, now: &Stamp) -> Option<Synced> {
        if self.pid != pid {
            self.pid = pid;
            self.seen.clear();
        }
        let (then, synced, reused) = self.seen.get_mut(path)?;
        let caught_up =
            matches!((synced.txid, synced.replicated_txid), (Some(t), Some(r)) if r >= t);
        if then != now || !caught_up || *reused >= REUSE_AT_MOST {
            return None;
        }
        *reused += 1;
        Some(*synced)
    }
}

/// Each database's last sync (`/list`), local and replicated transaction (a `/sync` without
/// `wait`, which keeps litestream's WAL read lock; skipped, the earlier answer kept, while the
/// database's files did not change and its replica had caught up: [`PollMemo`]), and whether
/// litestream holds that lock (pid `pid`); `None` when litestream does not answer in time (with
/// an unreachable S3 replica `/list` hangs: the old values stay, and age into "stalled").
pub(super) async fn poll_databases(
    control: &ControlClient,
    pid: u32,
    memo: &mut PollMemo,
) -> Option<Vec<DbStatus>> {
    let list = control.get("/list", Duration::from_secs(1)).await.ok()?;
    let locks = crate::wal_guard::read_locks(pid);
    let mut dbs = Vec::new();
    for d in list["databases"].as_array()? {
        let path = d["path"].as_str().unwrap_or_default().to_string();
        let now = stamp(&path);
        let synced = match memo.reuse(pid, &path, &now) {
            Some(synced) => Some(synced),
            None => {
                let answer = control
                    .sync_local(&path, Duration::from_millis(500))
                    .await
                    .ok();
                match answer {
                    Some(a) => memo.seen.insert(path.clone(), (now, a, 0)),
                    None => memo.seen.remove(&path),
                };
                answer
            }
        };
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
    memo.seen.retain(|p, _| dbs.iter().any(|d| &d.path == p));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_are_reused_only_while_nothing_changed_and_the_replica_caught_up() {
        let t = SystemTime::UNIX_EPOCH;
        let files: Stamp = [Some((4096, t)), Some((8272, t))];
        let caught_up = Synced {
            txid: Some(7),
            replicated_txid: Some(7),
        };
        let mut memo = PollMemo::default();
        assert!(memo.reuse(10, "/a.db", &files).is_none(), "never asked yet");
        memo.seen.insert("/a.db".into(), (files, caught_up, 0));
        assert_eq!(memo.reuse(10, "/a.db", &files).unwrap().txid, Some(7));
        let written: Stamp = [Some((4096, t)), Some((12392, t))];
        assert!(memo.reuse(10, "/a.db", &written).is_none(), "the WAL grew");
        for _ in 1..REUSE_AT_MOST {
            assert!(memo.reuse(10, "/a.db", &files).is_some());
        }
        assert!(
            memo.reuse(10, "/a.db", &files).is_none(),
            "asked again after {REUSE_AT_MOST} reuses"
        );
        let behind = Synced {
            txid: Some(8),
            replicated_txid: Some(7),
        };
        memo.seen.insert("/a.db".into(), (files, behind, 0));
        assert!(memo.reuse(10, "/a.db", &files).is_none(), "replica behind");
        memo.seen.insert("/a.db".into(), (files, caught_up, 0));
        assert!(
            memo.reuse(11, "/a.db", &files).is_none(),
            "another litestream"
        );
        assert!(memo.seen.is_empty());
    }
}
