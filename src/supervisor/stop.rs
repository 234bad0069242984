//! Stopping litestream: the sync before stopping, exactly one SIGTERM, SIGKILL at the end of
//! the grace (the ladder), and the check that the final sync reached the replica. Never sends a
//! second SIGTERM unless a stop request escalates.

use std::path::PathBuf;
use std::time::Duration;

use nix::sys::signal::Signal;

use super::child::LitestreamChild;
use super::ladder::{Ladder, Step};
use super::socket::{sync_all, DbSync};
use crate::config::DbTarget;
use crate::error::{Error, Result};
use crate::status::State;

use super::run::{StopFor, Supervisor};

impl Supervisor {
    /// SIGTERM, then SIGKILL after 5 s, for a litestream that never became ready.
    pub(super) async fn stop_child_quietly(
        &self,
        child: &mut LitestreamChild,
    ) -> std::process::ExitStatus {
        child.signal(Signal::SIGTERM);
        match tokio::time::timeout(Duration::from_secs(5), child.wait()).await {
            Ok(status) => status,
            Err(_) => {
                child.signal(Signal::SIGKILL);
                child.wait().await
            }
        }
    }

    /// The stop sequence, all within one budget, `grace`: sync through the socket (when ready;
    /// at most `shutdown-sync-timeout` and half the grace), exactly one SIGTERM, the rest of the
    /// grace for litestream's own final sync and exit, then SIGKILL; always reaps. Further stop
    /// requests escalate. With a replica that cannot be reached the socket sync and litestream's
    /// own shutdown sync would each wait their full timeout: the one budget keeps the stop
    /// within what systemd, Kubernetes and Docker are told.
    // Long on purpose: the stop sequence (sync, one SIGTERM, the wait and its escalations)
    // reads best in one place, in order.
    pub(super) async fn stop_child(
        &mut self,
        mut child: LitestreamChild,
        ready: bool,
        why: StopFor,
    ) -> Result<()> {
        // Before anything ends litestream's read transaction (the sync with `wait`, SIGTERM).
        self.engage_guard().await;
        self.set(|s| s.state = State::Stopping);
        let grace = self.grace();
        let deadline = tokio::time::Instant::now() + grace;
        let mut synced = None;
        let mut ladder = Ladder::default();
        if ready {
            if let Some(control) = self.control() {
                let budget = self.config.shutdown_sync_timeout().min(grace / 2);
                let sync = sync_all(&control, budget);
                tokio::pin!(sync);
                loop {
                    tokio::select! {
                        r = &mut sync => {
                            synced = Some(r);
                            break;
                        }
                        Some(()) = self.stop_rx.recv() => {
                            if self.stop_during_reload(why) {
                                continue;
                            }
                            tracing::warn!("second stop request: skipping the sync before stopping");
                            let _ = ladder.on_request();
                            break;
                        }
                    }
                }
            }
        }
        tracing::info!(
            pid = child.pid,
            left_s = deadline
                .saturating_duration_since(tokio::time::Instant::now())
                .as_secs_f64(),
            "stopping litestream (SIGTERM)"
        );
        take(&child, ladder.terminate());
        let status = loop {
            tokio::select! {
                status = child.wait() => break status,
                _ = tokio::time::sleep_until(deadline), if !ladder.killed() => {
                    tracing::error!(pid = child.pid, grace_s = grace.as_secs_f64(), "litestream did not finish its stop within the grace period: SIGKILL");
                    take(&child, ladder.on_deadline());
                }
                Some(()) = self.stop_rx.recv() => {
                    if self.stop_during_reload(why) {
                        continue;
                    }
                    let step = ladder.on_request();
                    match step {
                        Step::Sigterm => tracing::warn!(pid = child.pid, "another stop request: SIGTERM again (litestream skips its final-sync retries)"),
                        Step::Sigkill => tracing::warn!(pid = child.pid, "another stop request: SIGKILL"),
                        Step::SkipSync | Step::Wait => {}
                    }
                    take(&child, step);
                }
            }
        };
        let killed = ladder.killed();
        let info = child.finish(status, &self.logs).await;
        tracing::info!(
            pid = info.pid,
            code = info.code,
            signal = info.signal,
            ran_for_ms = info.ran_for.as_millis() as u64,
            "litestream stopped"
        );
        self.set(|s| s.last_exit = Some(info.clone()));
        if killed {
            return Err(Error::FinalSync(format!(
                "litestream was killed ({info}); writes since its last sync may be missing from the replica"
            )));
        }
        if self.logs.state().final_sync_failed() {
            let n = info.last_lines.len().saturating_sub(5);
            return Err(Error::FinalSync(format!(
                "litestream reported it:\n{}",
                info.last_lines[n..].join("\n")
            )));
        }
        match synced {
            Some(synced) => self.confirm_replicated(synced, deadline).await,
            None => Ok(()),
        }
    }

    /// A stop request while litestream is stopped for a reload: the first one is a stop, not an
    /// escalation (litestream must get one SIGTERM and its final-sync retries), remembered so
    /// that nothing is started again. True when it was taken so.
    pub(super) fn stop_during_reload(&mut self, why: StopFor) -> bool {
        if why == StopFor::Reload && !self.stop_requested {
            tracing::info!("stop requested during a reload: litestream stops with its final sync and is not started again");
            self.stop_requested = true;
            return true;
        }
        false
    }

    /// After a stop: every database the sync before stopping did not confirm is looked up in
    /// its replica, whose newest transaction must reach the newest one litestream holds locally.
    /// litestream exits 0 whether or not its final sync reached the replica (a missing bucket,
    /// say), so its exit code says nothing; the replica's position does.
    pub(super) async fn confirm_replicated(
        &self,
        synced: std::result::Result<Vec<DbSync>, String>,
        deadline: tokio::time::Instant,
    ) -> Result<()> {
        let paths: Vec<PathBuf> = self
            .config
            .dbs()
            .iter()
            .filter_map(|d| match d {
                DbTarget::Path(p) => Some(p.clone()),
                DbTarget::Dir { .. } => None,
            })
            .collect();
        let same = |a: &std::path::Path, b: &std::path::Path| {
            a == b || matches!((a.canonicalize(), b.canonicalize()), (Ok(x), Ok(y)) if x == y)
        };
        let unconfirmed: Vec<PathBuf> = match &synced {
            Ok(dbs) => paths
                .iter()
                .filter(|p| {
                    dbs.iter()
                        .find(|d| same(std::path::Path::new(&d.path), p))
                        .is_none_or(|d| !d.confirmed())
                })
                .cloned()
                .collect(),
            Err(_) => paths,
        };
        let mut failures = Vec::new();
        for db in &unconfirmed {
            // litestream may not even have copied the WAL locally (it checks the replica first):
            // a database that exists needs at least its first transaction in the replica.
            let local = match crate::wal_guard::local_position(&self.config.state_dir(db)) {
                Some(t) => t,
                None if db.exists() => 1,
                None => continue,
            };
            // Within what is left of the stop's budget (at least a second to look).
            let left = deadline
                .saturating_duration_since(tokio::time::Instant::now())
                .max(Duration::from_secs(1));
            let replica = crate::restore::replica_position(
                &self.binary,
                &self.config,
                self.options.handoff,
                self.runtime.path(),
                db,
                left,
            )
            .await;
            match replica {
                Ok(Some(r)) if r >= local => {
                    tracing::info!(db = %db.display(), txid = local, "the replica holds every transaction (checked after the stop)")
                }
                Ok(r) => failures.push(format!(
                    "{}: the replica holds transaction {}, the database reached {local}",
                    db.display(),
                    r.map(|r| r.to_string()).unwrap_or_else(|| "none".into())
                )),
                Err(e) => failures.push(format!("{}: {e}", db.display())),
            }
        }
        if failures.is_empty() {
            return Ok(());
        }
        let why = match &synced {
            Err(e) => format!(" (the sync before stopping failed: {e})"),
            Ok(dbs) => dbs
                .iter()
                .filter_map(|d| d.answer.as_ref().err())
                .next()
                .map(|e| format!(" (the sync before stopping failed: {e})"))
                .unwrap_or_default(),
        };
        Err(Error::FinalSync(format!(
            "the final sync did not reach the replica: {}{why}",
            failures.join("; ")
        )))
    }
}

/// Carries out one step of the stop ladder on `child`.
pub(super) fn take(child: &LitestreamChild, step: Step) {
    match step {
        Step::Sigterm => child.signal(Signal::SIGTERM),
        Step::Sigkill => child.signal(Signal::SIGKILL),
        Step::SkipSync | Step::Wait => {}
    }
}
