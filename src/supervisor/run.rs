//! The supervision task: one litestream at a time, started, watched until ready, restarted with
//! backoff when it exits, and stopped so that its final sync completes.
//!
//! Every stop ends with the writes made so far in the replica, or with an error saying they may
//! not be: a stop while litestream starts waits (within the grace) for it to be ready and syncs;
//! a stop during a backoff starts one more litestream only to sync.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::{mpsc, oneshot, watch};

use super::restarts::{Restarts, Verdict};
use super::{FollowSource, Options, ReloadOutcome, Role};
use crate::binary::LitestreamBinary;
use crate::child_logs::LogForwarder;
use crate::config::{DbTarget, LitestreamConfig};
use crate::control::ControlClient;
use crate::error::{Error, Result};
use crate::handoff::Handoff;
use crate::lock::InstanceLock;
use crate::render::Rendered;
use crate::runtime::RuntimeDir;
use crate::status::{ExitInfo, State, Status};
use crate::wal_guard::WalGuard;

/// The supervision task's state.
pub(super) struct Supervisor {
    pub binary: LitestreamBinary,
    pub runtime: RuntimeDir,
    pub runtime_base: PathBuf,
    /// The store's lock, and one per replicated database; litestream inherits them all.
    pub store_lock: InstanceLock,
    pub db_locks: Vec<(PathBuf, InstanceLock)>,
    pub reload_rx: mpsc::UnboundedReceiver<oneshot::Sender<ReloadOutcome>>,
    pub rendered: Rendered,
    pub config: Arc<LitestreamConfig>,
    pub options: Options,
    pub status: Arc<watch::Sender<Status>>,
    pub stop_rx: mpsc::UnboundedReceiver<()>,
    /// Keeps the stop channel open, so `recv` only ever returns real requests.
    pub _stop_tx: mpsc::UnboundedSender<()>,
    pub logs: LogForwarder,
    /// Holds the WAL of every database while no litestream does (`None` for a follower).
    pub guard: Option<WalGuard>,
    /// Databases whose read lock was missing at the last poll (one miss can be litestream's own
    /// checkpoint; two in a row are reported).
    pub lock_misses: std::collections::HashSet<String>,
    /// Databases whose lost read lock was logged already.
    pub lock_warned: std::collections::HashSet<String>,
    /// What the status polls learnt, so unchanged databases are not asked again.
    pub poll_memo: super::socket::PollMemo,
    /// A stop was requested: whatever litestream is doing, nothing is started again except to
    /// sync once.
    pub stop_requested: bool,
}

/// How one litestream's life ended.
pub(super) enum Life {
    /// It exited by itself (or never became ready in time).
    Exited { info: ExitInfo, was_ready: bool },
    /// A stop was requested and carried out.
    Stopped(Result<()>),
    /// It was stopped to start again with a new config.
    Reloaded,
}

/// Why litestream is being stopped.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum StopFor {
    /// For good: a further request escalates.
    Good,
    /// To start it again with a new config: a request meanwhile is the first stop.
    Reload,
}

/// What to do once litestream is ready.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Purpose {
    /// Replicate until told to stop.
    Replicate,
    /// A stop came while no litestream ran: sync, then stop at once.
    FinalSync,
}

/// Takes the lock of every database of `config` not in `already` (in path order).
pub(super) fn lock_databases(
    config: &LitestreamConfig,
    base: &std::path::Path,
    store_runtime: &RuntimeDir,
    already: &[PathBuf],
) -> Result<Vec<(PathBuf, InstanceLock)>> {
    let mut targets = targets_of(config);
    targets.sort();
    let mut taken = Vec::new();
    for target in targets {
        if already.contains(&target) {
            continue;
        }
        let dir = RuntimeDir::for_db_in(base, &target)?;
        if dir.path() != store_runtime.path() {
            taken.push((
                target.clone(),
                InstanceLock::acquire(&dir.lock_path(), &target)?,
            ));
        }
    }
    Ok(taken)
}

impl Supervisor {
    pub(super) async fn run(mut self) -> Result<()> {
        // The WAL is looked at just before every start (cold ones too): see `live`.
        self.engage_guard().await;
        let verifier = self
            .options
            .verify_every
            .map(|every| tokio::spawn(self.verify_loop(every)));
        let result = self.supervise().await;
        if let Some(v) = verifier {
            v.abort();
        }
        result
    }

    pub(super) async fn supervise(&mut self) -> Result<()> {
        let mut restarts = Restarts::new(
            self.options.backoff.clone(),
            self.options.restart_window,
            self.options.max_restarts,
        );
        let mut ever_ready = false;
        loop {
            let (info, was_ready) = match self.live(Purpose::Replicate).await {
                Ok(Life::Stopped(result)) => return self.stopped(result),
                Ok(Life::Reloaded) => {
                    restarts.reset();
                    continue;
                }
                Ok(Life::Exited { info, was_ready }) => {
                    // The guard came a few milliseconds after litestream's death: look whether
                    // the WAL was restarted in that gap.
                    self.snapshot_where_wal_restarted().await;
                    if self.stop_requested {
                        // A stop was waiting for this litestream to be ready: never lost.
                        self.set(|s| s.last_exit = Some(info));
                        return self.stop_while_down().await;
                    }
                    (info, was_ready)
                }
                Err(e) if !ever_ready && !self.options.retry_start => return self.fail(e),
                // A restart that cannot even spawn (EAGAIN, a binary being replaced, ...) is
                // retried like an exit.
                Err(e) => {
                    tracing::error!(error = %e, "cannot start litestream");
                    (spawn_failure(e), false)
                }
            };
            ever_ready |= was_ready;
            tracing::warn!(
                pid = info.pid,
                code = info.code,
                signal = info.signal,
                ran_for_ms = info.ran_for.as_millis() as u64,
                "litestream exited"
            );
            if !ever_ready && !self.options.retry_start {
                let e = Error::StartFailed {
                    exit: info.to_string(),
                    last_lines: info.last_lines.clone(),
                };
                return self.fail_after(e, info);
            }
            self.options.role.after_exit(&info);
            let (attempt, delay) = match restarts.on_exit(info.ran_for, Instant::now()) {
                Verdict::Restart { attempt, delay } => (attempt, delay),
                Verdict::GiveUp { max } => {
                    let e = Error::GaveUp {
                        restarts: max,
                        reason: format!("litestream {info}"),
                    };
                    return self.fail_after(e, info);
                }
            };
            tracing::info!(
                attempt,
                delay_ms = delay.as_millis() as u64,
                "restarting litestream after backoff"
            );
            // One update: nobody may see the old state with the new exit.
            self.set(|s| {
                s.state = State::Backoff {
                    until: SystemTime::now() + delay,
                    attempt,
                };
                s.last_exit = Some(info);
                s.pid = None;
            });
            if self.wait_out_backoff(delay).await {
                return self.stop_while_down().await;
            }
            self.set(|s| s.restarts += 1);
        }
    }

    /// Waits `delay` before the next start; a valid new config applies at once and ends the
    /// wait early. True when a stop was requested meanwhile.
    pub(super) async fn wait_out_backoff(&mut self, delay: Duration) -> bool {
        let sleep = tokio::time::sleep(delay);
        tokio::pin!(sleep);
        loop {
            tokio::select! {
                _ = &mut sleep => return false,
                Some(reply) = self.reload_rx.recv() => {
                    if self.reload_while_down(reply).await {
                        return false;
                    }
                    if self.stop_requested {
                        return true; // the stop came while the new generation was checked
                    }
                }
                Some(()) = self.stop_rx.recv() => return true,
            }
        }
    }

    /// A reload request while no litestream runs: applied at once when valid. True when
    /// applied.
    pub(super) async fn reload_while_down(
        &mut self,
        reply: oneshot::Sender<ReloadOutcome>,
    ) -> bool {
        let outcome = match self.prepare_reload().await {
            Ok(prepared) => self.apply(prepared),
            Err(outcome) => outcome,
        };
        let applied = matches!(outcome, ReloadOutcome::Applied { .. });
        let _ = reply.send(outcome);
        applied
    }

    /// A stop while no litestream runs (backoff, or litestream died while a stop waited for it
    /// to be ready): one more start, only to sync; a follower just stops.
    pub(super) async fn stop_while_down(&mut self) -> Result<()> {
        self.stop_requested = true;
        if matches!(self.options.role, Role::Follow { .. }) {
            // A follower has nothing of its own to sync.
            return self.stopped(Ok(()));
        }
        tracing::info!(
            "stop requested while litestream was not running: one more start, only to sync"
        );
        let result = match self.live(Purpose::FinalSync).await {
            Ok(Life::Stopped(r)) => r,
            Ok(Life::Reloaded) => unreachable!("a final-sync run stops as soon as it is ready"),
            Ok(Life::Exited { info, .. }) => Err(Error::FinalSync(format!(
                "litestream was restarting and could not sync before stopping ({info}); writes since its last sync may be missing from the replica"
            ))),
            Err(e) => Err(Error::FinalSync(format!(
                "litestream was restarting and could not be started to sync: {e}"
            ))),
        };
        self.stopped(result)
    }

    pub(super) fn stopped(&self, result: Result<()>) -> Result<()> {
        self.release_guard();
        self.set(|s| {
            s.state = State::Stopped;
            s.pid = None;
        });
        result
    }

    pub(super) fn fail(&self, e: Error) -> Result<()> {
        self.release_guard();
        let reason = e.to_string();
        self.set(|s| {
            s.state = State::Failed { reason };
            s.pid = None;
        });
        Err(e)
    }

    /// Fails with `e` after the exit `info`, in one status update.
    pub(super) fn fail_after(&self, e: Error, info: ExitInfo) -> Result<()> {
        self.release_guard();
        let reason = e.to_string();
        self.set(|s| {
            s.state = State::Failed { reason };
            s.last_exit = Some(info);
            s.pid = None;
        });
        Err(e)
    }

    pub(super) fn set(&self, f: impl FnOnce(&mut Status)) {
        self.status.send_modify(|s| {
            f(s);
            s.updated_at = SystemTime::now();
            s.dropped_log_lines = self.logs.state().dropped();
        });
    }

    /// Lists the replica of every `path` database and records those that cannot be restored
    /// from in the status (a listing that fails leaves the previous verdict).
    pub(super) fn check_replicas(&self) -> impl Future<Output = ()> + Send + 'static {
        let (binary, config, status, mode, dir) = (
            self.binary.clone(),
            self.config.clone(),
            self.status.clone(),
            self.options.handoff,
            self.runtime.path().to_path_buf(),
        );
        async move {
            let mut unrestorable = Vec::new();
            for db in config.dbs() {
                let DbTarget::Path(db) = db else { continue };
                match crate::restore::replica_files(
                    &binary,
                    &config,
                    mode,
                    &dir,
                    db,
                    crate::restore::LISTING_TIMEOUT,
                )
                .await
                {
                    Ok(files) if !crate::restore::restorable(&files) => {
                        tracing::error!(db = %db.display(), "the replica cannot be restored from: nothing in it starts at the first transaction (its objects vanished?)");
                        unrestorable.push(db.display().to_string());
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::debug!(db = %db.display(), error = %e, "cannot list the replica");
                        return;
                    }
                }
            }
            status.send_modify(|s| s.unrestorable = unrestorable);
        }
    }

    pub(super) fn control(&self) -> Option<ControlClient> {
        self.rendered.socket.as_ref().map(ControlClient::new)
    }

    pub(super) fn grace(&self) -> Duration {
        self.options.grace_for(&self.config)
    }

    /// litestream's arguments: `replicate`, or `restore -f` for a follower.
    pub(super) fn child_args(&self, handoff: &Handoff) -> Vec<std::ffi::OsString> {
        let mut args: Vec<std::ffi::OsString> = Vec::new();
        let config = |args: &mut Vec<std::ffi::OsString>| {
            args.extend([
                "-no-expand-env".into(),
                "-config".into(),
                handoff.config_arg(),
            ]);
        };
        match &self.options.role {
            Role::Replicate => {
                args.push("replicate".into());
                config(&mut args);
            }
            Role::Follow {
                source,
                output,
                interval,
            } => {
                args.extend(["restore".into(), "-f".into()]);
                if let Some(i) = interval {
                    args.extend(["-follow-interval".into(), i.into()]);
                }
                args.extend(["-o".into(), output.clone().into_os_string()]);
                match source {
                    FollowSource::Db(db) => {
                        config(&mut args);
                        args.push(db.clone().into_os_string());
                    }
                    FollowSource::Url(url) => args.push(url.into()),
                }
            }
        }
        args
    }

    /// Verifies every `path` database each `every` while litestream is ready.
    pub(super) fn verify_loop(&self, every: Duration) -> impl Future<Output = ()> + Send + 'static {
        let (binary, config, status) = (
            self.binary.clone(),
            self.config.clone(),
            self.status.clone(),
        );
        let (runtime, control, mode) = (
            self.runtime.path().to_path_buf(),
            self.control(),
            self.options.handoff,
        );
        async move {
            let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
            loop {
                tick.tick().await;
                if status.borrow().state != State::Ready {
                    continue;
                }
                for db in config.dbs() {
                    let DbTarget::Path(db) = db else { continue };
                    let timeout = Duration::from_secs(60);
                    let checked = crate::verify::verify(
                        &binary,
                        &config,
                        db,
                        control.as_ref(),
                        mode,
                        &runtime,
                        timeout,
                    )
                    .await;
                    match checked {
                        Ok(report) => {
                            tracing::info!(db = %db.display(), outcome = ?report.outcome, reason = %report.reason, "verify");
                            status.send_modify(|s| s.last_verify = Some(report));
                        }
                        Err(e) => {
                            tracing::warn!(db = %db.display(), error = %e, "verify could not run")
                        }
                    }
                }
            }
        }
    }
}

/// A task aborted when this is dropped.
pub(super) struct AbortOnDrop(pub(super) tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The paths a config replicates (files and directories).
pub(super) fn targets_of(config: &LitestreamConfig) -> Vec<PathBuf> {
    config
        .dbs()
        .iter()
        .map(|d| match d {
            DbTarget::Path(p) => p.clone(),
            DbTarget::Dir { dir, .. } => dir.clone(),
        })
        .collect()
}

/// The databases of `config`, for logs.
pub(super) fn db_list(config: &LitestreamConfig) -> String {
    config
        .dbs()
        .iter()
        .map(|d| match d {
            DbTarget::Path(p) => p.display().to_string(),
            DbTarget::Dir { dir, pattern } => format!("{}/{pattern}", dir.display()),
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// An "exit" for a litestream that could not be spawned at all.
pub(super) fn spawn_failure(e: Error) -> ExitInfo {
    ExitInfo {
        pid: 0,
        code: None,
        signal: None,
        at: SystemTime::now(),
        ran_for: Duration::ZERO,
        last_lines: vec![e.to_string()],
    }
}
