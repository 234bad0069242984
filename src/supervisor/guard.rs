//! The supervisor's side of the WAL guard: engaging it whenever no litestream holds the WAL,
//! forcing a snapshot when frames litestream never copied are at risk, letting go, and judging
//! litestream's own read lock. Never holds the WAL beside a litestream that holds its own.

use std::time::Instant;

use crate::config::LitestreamConfig;
use crate::status::DbStatus;
use crate::wal_guard::{databases_now, WalGuard};

use super::run::Supervisor;

impl Supervisor {
    /// Holds the WAL of every database of the config that exists now (no litestream protects
    /// it, or none is about to).
    pub(super) async fn engage_guard(&self) {
        if let Some(g) = &self.guard {
            let config = self.config.clone();
            let g2 = g.clone();
            let started = Instant::now();
            let n = tokio::task::spawn_blocking(move || {
                let n = g2.engage_blocking(&databases_now(&config));
                // Engaged here: a watcher waking late must not begin a transaction after a
                // release that makes way for a forced snapshot.
                g2.disarm();
                n
            })
            .await
            .unwrap_or(0);
            tracing::debug!(
                held = n,
                us = started.elapsed().as_micros() as u64,
                "WAL guard engaged"
            );
        }
    }

    /// After a gap nobody guarded (a cold start, or the milliseconds between litestream's death
    /// and the guard): each database whose WAL was restarted since litestream's last local
    /// transaction is checkpointed with TRUNCATE, so the next litestream takes a full snapshot
    /// instead of missing the frames the restart overwrote.
    pub(super) async fn snapshot_where_wal_restarted(&self) {
        let Some(guard) = self.guard.clone() else {
            return;
        };
        let config = self.config.clone();
        let _ = tokio::task::spawn_blocking(move || snapshot_where_wal_restarted(&config, &guard))
            .await;
    }

    /// Ends the WAL guard: no litestream is going to run any more.
    pub(super) fn release_guard(&self) {
        if let Some(g) = &self.guard {
            g.release_all();
        }
    }

    /// Debounces the read lock seen at one poll (litestream lets go of it for its own
    /// checkpoints): a database reads as unlocked only when the lock was missing at two polls in
    /// a row while no WAL guard stood in for it, and that is logged once as a warning.
    pub(super) fn judge_read_locks(&mut self, mut dbs: Vec<DbStatus>, pid: u32) -> Vec<DbStatus> {
        let guarded = self.guard.as_ref().map(|g| g.held()).unwrap_or_default();
        for d in &mut dbs {
            if guarded.iter().any(|p| p.as_os_str() == d.path.as_str()) {
                // The guard stands in until litestream takes its own lock (an idle database
                // can take it seconds after the start): the WAL is held, nothing is missing.
                d.read_lock = None;
                self.lock_misses.remove(&d.path);
                continue;
            }
            if d.read_lock == Some(false) {
                if self.lock_misses.insert(d.path.clone()) {
                    d.read_lock = None; // the first miss: maybe a checkpoint
                } else if !self.lock_warned.contains(&d.path) {
                    tracing::warn!(db = %d.path, pid, "litestream does not hold its WAL read lock: a checkpoint by the application can restart the WAL and rows would be missing from the replica");
                    self.lock_warned.insert(d.path.clone());
                }
            } else {
                self.lock_misses.remove(&d.path);
                self.lock_warned.remove(&d.path);
            }
        }
        dbs
    }
}

/// See [`Supervisor::snapshot_where_wal_restarted`]. The guard lets go of a database for its
/// checkpoint (a TRUNCATE waits for every reader) and holds it again right after.
pub(super) fn snapshot_where_wal_restarted(config: &LitestreamConfig, guard: &WalGuard) {
    guard.disarm(); // no watcher may begin a transaction between a release and the checkpoint
    for db in databases_now(config) {
        let Some(why) = crate::wal_guard::frames_at_risk(&db, &config.state_dir(&db)) else {
            continue;
        };
        let was_held = guard.release(&db);
        let forced = crate::wal_guard::force_snapshot(&db);
        if was_held {
            guard.engage_blocking(std::slice::from_ref(&db));
        }
        match forced {
            Ok(()) => {
                tracing::warn!(db = %db.display(), "{why}: litestream takes a full snapshot, so no frame is missed")
            }
            Err(e) => {
                tracing::error!(db = %db.display(), error = %e, "{why}, and no full snapshot could be forced: writes made meanwhile may be missing from the replica")
            }
        }
    }
}
