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

use nix::sys::signal::Signal;
use tokio::sync::{mpsc, oneshot, watch};

use super::child::LitestreamChild;
use super::ladder::{Ladder, Step};
use super::restarts::{Restarts, Verdict};
use super::socket::{first_sync, poll_databases, sync_all, DbSync, POLL_EVERY};
use super::{FollowSource, Options, ReloadOutcome, Role};
use crate::binary::LitestreamBinary;
use crate::child_logs::LogForwarder;
use crate::config::{DbTarget, LitestreamConfig};
use crate::control::ControlClient;
use crate::error::{Error, Result};
use crate::handoff::Handoff;
use crate::lock::InstanceLock;
use crate::render::{render, Rendered};
use crate::runtime::RuntimeDir;
use crate::status::{DbStatus, ExitInfo, State, Status};
use crate::wal_guard::{databases_now, WalGuard};

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
    /// A stop was requested: whatever litestream is doing, nothing is started again except to
    /// sync once.
    pub stop_requested: bool,
}

/// How one litestream's life ended.
enum Life {
    /// It exited by itself (or never became ready in time).
    Exited { info: ExitInfo, was_ready: bool },
    /// A stop was requested and carried out.
    Stopped(Result<()>),
    /// It was stopped to start again with a new config.
    Reloaded,
}

/// A validated new config, with the locks of its databases already held.
struct Prepared {
    config: LitestreamConfig,
    id: i64,
    new_locks: Vec<(PathBuf, InstanceLock)>,
}

/// Why litestream is being stopped.
#[derive(Clone, Copy, PartialEq, Eq)]
enum StopFor {
    /// For good: a further request escalates.
    Good,
    /// To start it again with a new config: a request meanwhile is the first stop.
    Reload,
}

/// What to do once litestream is ready.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Purpose {
    /// Replicate until told to stop.
    Replicate,
    /// A stop came while no litestream ran: sync, then stop at once.
    FinalSync,
}

/// How waiting for readiness ended.
enum Readiness {
    /// litestream answers; `stop_pending` when a stop was requested meanwhile.
    Ready {
        child: LitestreamChild,
        stop_pending: bool,
    },
    /// litestream's life ended before it was ready.
    Over(Life),
}

/// The ticks of a ready litestream's life.
struct Timers {
    /// The status poll.
    poll: tokio::time::Interval,
    /// Listing the replica to check it can still be restored from.
    replica: tokio::time::Interval,
    /// Looking for a newer config generation, when `reloads`.
    reload: tokio::time::Interval,
    reloads: bool,
}

impl Timers {
    fn new(options: &Options) -> Self {
        use tokio::time::{interval_at, Instant, MissedTickBehavior};
        let far = Duration::from_secs(100 * 365 * 24 * 3600);
        let replica_every = match (&options.role, options.replica_check) {
            (Role::Replicate, Some(every)) if !every.is_zero() => every,
            _ => far,
        };
        let check_every = options.reload.as_ref().and_then(|r| r.check_every);
        let reload_every = check_every.unwrap_or(Duration::from_secs(3600));
        let mut t = Timers {
            poll: tokio::time::interval(POLL_EVERY),
            replica: interval_at(
                Instant::now() + replica_every.min(Duration::from_secs(10)),
                replica_every,
            ),
            reload: interval_at(Instant::now() + reload_every, reload_every),
            reloads: check_every.is_some(),
        };
        for i in [&mut t.poll, &mut t.replica, &mut t.reload] {
            i.set_missed_tick_behavior(MissedTickBehavior::Delay);
        }
        t
    }
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
        self.snapshot_where_wal_restarted().await;
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

    async fn supervise(&mut self) -> Result<()> {
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
    async fn wait_out_backoff(&mut self, delay: Duration) -> bool {
        let sleep = tokio::time::sleep(delay);
        tokio::pin!(sleep);
        loop {
            tokio::select! {
                _ = &mut sleep => return false,
                Some(reply) = self.reload_rx.recv() => {
                    if self.reload_while_down(reply).await {
                        return false;
                    }
                }
                Some(()) = self.stop_rx.recv() => return true,
            }
        }
    }

    /// A reload request while no litestream runs: applied at once when valid. True when
    /// applied.
    async fn reload_while_down(&mut self, reply: oneshot::Sender<ReloadOutcome>) -> bool {
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
    async fn stop_while_down(&mut self) -> Result<()> {
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

    fn stopped(&self, result: Result<()>) -> Result<()> {
        self.release_guard();
        self.set(|s| {
            s.state = State::Stopped;
            s.pid = None;
        });
        result
    }

    fn fail(&self, e: Error) -> Result<()> {
        self.release_guard();
        let reason = e.to_string();
        self.set(|s| {
            s.state = State::Failed { reason };
            s.pid = None;
        });
        Err(e)
    }

    /// Fails with `e` after the exit `info`, in one status update.
    fn fail_after(&self, e: Error, info: ExitInfo) -> Result<()> {
        self.release_guard();
        let reason = e.to_string();
        self.set(|s| {
            s.state = State::Failed { reason };
            s.last_exit = Some(info);
            s.pid = None;
        });
        Err(e)
    }

    fn set(&self, f: impl FnOnce(&mut Status)) {
        self.status.send_modify(|s| {
            f(s);
            s.updated_at = SystemTime::now();
            s.dropped_log_lines = self.logs.state().dropped();
        });
    }

    /// Holds the WAL of every database of the config that exists now (no litestream protects
    /// it, or none is about to).
    async fn engage_guard(&self) {
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
    async fn snapshot_where_wal_restarted(&self) {
        let Some(guard) = self.guard.clone() else {
            return;
        };
        let config = self.config.clone();
        let _ = tokio::task::spawn_blocking(move || snapshot_where_wal_restarted(&config, &guard))
            .await;
    }

    /// Lists the replica of every `path` database and records those that cannot be restored
    /// from in the status (a listing that fails leaves the previous verdict).
    fn check_replicas(&self) -> impl Future<Output = ()> + Send + 'static {
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

    /// Ends the WAL guard: no litestream is going to run any more.
    fn release_guard(&self) {
        if let Some(g) = &self.guard {
            g.release_all();
        }
    }

    fn control(&self) -> Option<ControlClient> {
        self.rendered.socket.as_ref().map(ControlClient::new)
    }

    fn grace(&self) -> Duration {
        self.options.grace_for(&self.config)
    }

    /// One litestream's life: spawn, wait until ready, then replicate until it exits or a stop
    /// is requested (or, for [`Purpose::FinalSync`], stop as soon as it is ready).
    async fn live(&mut self, purpose: Purpose) -> Result<Life> {
        // The last look before litestream starts: whatever the WAL went through while none ran
        // (the backoff can be long), litestream must not resume past frames it never copied.
        self.snapshot_where_wal_restarted().await;
        let (child, handoff) = self.spawn_child()?;
        let control = self.control();
        let (child, stop_pending) = match self.until_ready(child, handoff, &control).await {
            Readiness::Ready {
                child,
                stop_pending,
            } => (child, stop_pending),
            Readiness::Over(life) => return Ok(life),
        };
        tracing::info!(
            pid = child.pid,
            ms = child.started.elapsed().as_millis() as u64,
            "litestream ready"
        );
        self.set(|s| {
            s.state = State::Ready;
            s.ready_since = Some(SystemTime::now());
            s.databases.clear();
        });
        if purpose == Purpose::FinalSync || stop_pending {
            return Ok(Life::Stopped(
                self.stop_child(child, true, StopFor::Good).await,
            ));
        }
        self.replicate(child, control).await
    }

    /// Spawns litestream on a fresh handoff of the rendered config, with the instance locks
    /// inherited, the WAL guard's watcher armed on its pid, and the status saying so.
    fn spawn_child(&mut self) -> Result<(LitestreamChild, Handoff)> {
        let handoff = Handoff::create(
            self.options.handoff,
            self.rendered.yaml.as_bytes(),
            self.runtime.path(),
        )?;
        self.logs.state().reset_for_child();
        let mut lock_fds = vec![self.store_lock.raw_fd()];
        lock_fds.extend(self.db_locks.iter().map(|(_, l)| l.raw_fd()));
        let args = self.child_args(&handoff);
        let child =
            LitestreamChild::spawn(&self.binary.path, &args, &handoff, lock_fds, &self.logs)?;
        if let Some(g) = &self.guard {
            g.arm(child.pid, self.config.clone());
        }
        self.store_lock.record(Some(child.pid));
        for (_, lock) in &mut self.db_locks {
            lock.record(Some(child.pid));
        }
        tracing::info!(
            pid = child.pid,
            handoff = ?self.options.handoff,
            db = %db_list(&self.config),
            "litestream started"
        );
        self.set(|s| {
            s.state = State::Starting;
            s.pid = Some(child.pid);
        });
        Ok((child, handoff))
    }

    /// Waits until litestream answers (or, without a control socket, until its start-up window
    /// passed). A stop request meanwhile waits (within the grace) for readiness, so the sync
    /// before stopping can run; a second request stops at once. The handoff is emptied on every
    /// way out.
    async fn until_ready(
        &mut self,
        mut child: LitestreamChild,
        mut handoff: Handoff,
        control: &Option<ControlClient>,
    ) -> Readiness {
        let give_up_at = child.started + self.options.ready_timeout;
        let ready_by = child.started + self.options.startup_window;
        // A stop requested before this litestream started (its life is the final sync): a
        // further request escalates at once.
        let mut stop_deadline: Option<Instant> =
            self.stop_requested.then(|| Instant::now() + self.grace());
        // litestream is usually ready within 30-40 ms: look often at first, then every 10 ms.
        let mut interval = Duration::from_millis(1);
        let over = loop {
            let wait = interval;
            interval = (interval * 3 / 2).min(Duration::from_millis(10));
            tokio::select! {
                status = child.wait() => {
                    self.engage_guard().await;
                    handoff.remove();
                    let info = child.finish(status, &self.logs).await;
                    break Life::Exited { info, was_ready: false };
                }
                Some(()) = self.stop_rx.recv() => {
                    if stop_deadline.is_some() {
                        handoff.remove();
                        break Life::Stopped(self.stop_child(child, false, StopFor::Good).await);
                    }
                    tracing::info!(pid = child.pid, "stop requested while litestream starts: waiting until it is ready, to sync");
                    self.stop_requested = true;
                    stop_deadline = Some(Instant::now() + self.grace());
                }
                ready = probe(control, &self.options.role, ready_by, wait) => {
                    if ready {
                        handoff.remove();
                        return Readiness::Ready { child, stop_pending: stop_deadline.is_some() };
                    }
                    if stop_deadline.is_some_and(|d| Instant::now() >= d) {
                        handoff.remove();
                        break Life::Stopped(self.stop_child(child, false, StopFor::Good).await);
                    }
                    if Instant::now() >= give_up_at {
                        tracing::error!(pid = child.pid, timeout_s = self.options.ready_timeout.as_secs(), "litestream did not become ready: stopping it");
                        handoff.remove();
                        let _ = self.stop_child_quietly(&mut child).await;
                        let status = child.wait().await;
                        let info = child.finish(status, &self.logs).await;
                        break Life::Exited { info, was_ready: false };
                    }
                }
            }
        };
        Readiness::Over(over)
    }

    /// A ready litestream's life: the first sync (then the WAL guard lets go), status polls,
    /// replica checks and reloads, until it exits, a stop is requested or a reload replaces it.
    async fn replicate(
        &mut self,
        child: LitestreamChild,
        control: Option<ControlClient>,
    ) -> Result<Life> {
        // Sync once right away, without waiting for the replica (a sync that waits ends
        // litestream's WAL read transaction for good): litestream then has initialised every
        // database, so even if this supervisor dies its final sync on SIGTERM (parent-death
        // signal) is not skipped, and the writes made while no litestream ran are copied now.
        // Then the WAL guard lets go of each database once litestream holds its own read lock.
        // A request still in flight when litestream is told to stop would hold its HTTP server's
        // shutdown for 5 s: the task is aborted (its connection closed) before any stop.
        let mut initial_sync = self.guard.clone().map(|g| {
            AbortOnDrop(tokio::spawn(first_sync(
                control.clone(),
                g,
                child.pid,
                Duration::from_secs(30),
            )))
        });
        let mut timers = Timers::new(&self.options);
        let mut _replica_task: Option<AbortOnDrop> = None;
        let mut child = child;
        loop {
            let mut reply = None;
            tokio::select! {
                Some(r) = self.reload_rx.recv() => reply = Some(r),
                _ = timers.reload.tick(), if timers.reloads => {
                    if !self.newer_generation().await {
                        continue;
                    }
                    tracing::info!("a new config generation was saved: reloading");
                }
                status = child.wait() => {
                    // First of all: no litestream holds the WAL now.
                    self.engage_guard().await;
                    let info = child.finish(status, &self.logs).await;
                    return Ok(Life::Exited { info, was_ready: true });
                }
                Some(()) = self.stop_rx.recv() => {
                    initial_sync.take();
                    return Ok(Life::Stopped(self.stop_child(child, true, StopFor::Good).await));
                }
                _ = timers.replica.tick() => {
                    _replica_task = Some(AbortOnDrop(tokio::spawn(self.check_replicas())));
                    continue;
                }
                _ = timers.poll.tick() => {
                    self.poll(&control, child.pid).await;
                    continue;
                },
            }
            // A reload: requested, or a new generation noticed.
            let prepared = match self.prepare_reload().await {
                Ok(prepared) => prepared,
                Err(outcome) => {
                    if let Some(r) = reply {
                        let _ = r.send(outcome);
                    }
                    continue;
                }
            };
            initial_sync.take();
            return Ok(self.reload_now(child, prepared, reply).await);
        }
    }

    /// The status poll: each database's sync and read lock (a follower: its copy's position).
    async fn poll(&mut self, control: &Option<ControlClient>, pid: u32) {
        if let Some(c) = control {
            if let Some(dbs) = poll_databases(c, pid).await {
                let dbs = self.judge_read_locks(dbs, pid);
                self.set(|s| s.databases = dbs);
            }
        } else if let Role::Follow { output, .. } = &self.options.role {
            let db = super::role::follower_status(output);
            self.set(|s| s.databases = vec![db]);
        }
    }

    /// Stops the running litestream with its final sync and switches to the prepared config;
    /// a stop requested meanwhile wins and the new config is not used.
    async fn reload_now(
        &mut self,
        child: LitestreamChild,
        prepared: Prepared,
        reply: Option<oneshot::Sender<ReloadOutcome>>,
    ) -> Life {
        tracing::info!(pid = child.pid, id = prepared.id, "new config: stopping litestream with its final sync, then starting it with the new config");
        let stopped = self.stop_child(child, true, StopFor::Reload).await;
        if self.stop_requested {
            if let Some(r) = reply {
                let _ = r.send(ReloadOutcome::Rejected {
                    reason: "a stop was requested during the reload".into(),
                });
            }
            return Life::Stopped(stopped);
        }
        if let Err(e) = stopped {
            tracing::error!(error = %e, "the final sync before the reload failed");
        }
        let outcome = self.apply(prepared);
        if let Some(r) = reply {
            let _ = r.send(outcome);
        }
        Life::Reloaded
    }

    /// True when the store's newest generation is not the one in use (a cheap id read).
    async fn newer_generation(&self) -> bool {
        let Some(source) = self.options.reload.clone() else {
            return false;
        };
        let (current, rejected) = {
            let s = self.status.borrow();
            (s.config_id, s.rejected_generation.as_ref().map(|r| r.id))
        };
        let newest =
            tokio::task::spawn_blocking(move || source.store.newest_id(&source.scope)).await;
        match newest {
            // A generation refused once is not tried again by the periodic check (SIGHUP does).
            Ok(Ok(Some(id))) => Some(id) != current && Some(id) != rejected,
            Ok(Ok(None)) => false,
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "cannot check the store for a new config");
                false
            }
            Err(_) => false,
        }
    }

    /// Loads and validates the newest generation (our rules, then litestream's own parser),
    /// and takes the locks of its databases. Any reason not to switch comes back as the outcome
    /// to report, is logged, and shows in the status as the rejected generation: the running
    /// litestream is never stopped for a config that cannot replace it.
    async fn prepare_reload(&mut self) -> std::result::Result<Prepared, ReloadOutcome> {
        let status = self.status.clone();
        let reject = move |id: Option<i64>, reason: String| {
            tracing::error!(id, reason = %reason, "config not reloaded; litestream keeps running with the config in use");
            if let Some(id) = id {
                let reason = reason.clone();
                status.send_modify(|s| {
                    s.rejected_generation = Some(crate::status::RejectedGeneration { id, reason });
                    s.updated_at = std::time::SystemTime::now();
                });
            }
            ReloadOutcome::Rejected { reason }
        };
        let Some(source) = self.options.reload.clone() else {
            return Err(reject(None, "no config store to reload from".into()));
        };
        let loaded = tokio::task::spawn_blocking(move || {
            let newest = source.store.newest_id(&source.scope).ok().flatten();
            (newest, source.store.load(&source.scope, 0))
        })
        .await;
        let stored = match loaded {
            Ok((_, Ok(stored))) => stored,
            Ok((newest, Err(e))) => return Err(reject(newest, e.to_string())),
            Err(e) => return Err(reject(None, e.to_string())),
        };
        if *stored.plaintext == *self.config.yaml().as_bytes() {
            let id = stored.id;
            tracing::info!(id, "config unchanged: litestream left alone");
            self.set(|s| {
                s.config_id = Some(id);
                s.rejected_generation = None;
            });
            return Err(ReloadOutcome::Unchanged { id });
        }
        let id = stored.id;
        let config = LitestreamConfig::parse(&stored.plaintext, crate::config::Strictness::Lenient)
            .map_err(|e| reject(Some(id), format!("generation id {id} is not usable: {e}")))?;
        match crate::check::ask_litestream(&self.binary, &stored.plaintext, &self.runtime_base)
            .await
        {
            Ok(verdict) if verdict.accepted => {}
            Ok(verdict) => {
                let said = verdict
                    .output
                    .trim()
                    .lines()
                    .collect::<Vec<_>>()
                    .join(" / ");
                return Err(reject(
                    Some(id),
                    format!(
                        "litestream {} rejects generation id {id}: {said}",
                        self.binary.version
                    ),
                ));
            }
            Err(e) => {
                return Err(reject(
                    Some(id),
                    format!("cannot ask litestream about generation id {id}: {e}"),
                ))
            }
        }
        let held: Vec<PathBuf> = self.db_locks.iter().map(|(p, _)| p.clone()).collect();
        let new_locks = lock_databases(&config, &self.runtime_base, &self.runtime, &held)
            .map_err(|e| reject(None, e.to_string()))?;
        config.log_warnings();
        Ok(Prepared {
            config,
            id: stored.id,
            new_locks,
        })
    }

    /// Switches to a prepared config (no litestream runs at this point).
    fn apply(&mut self, prepared: Prepared) -> ReloadOutcome {
        let Prepared {
            config,
            id,
            new_locks,
        } = prepared;
        let wanted = targets_of(&config);
        if let Some(g) = &self.guard {
            g.release_except(&databases_now(&config));
        }
        self.db_locks.retain(|(p, _)| wanted.contains(p));
        self.db_locks.extend(new_locks);
        self.rendered = render(&config, &self.runtime.socket_path());
        self.logs.set_redactor(config.redactor());
        let stall_after = (config.sync_interval().unwrap_or(Duration::from_secs(1)) * 3)
            .max(Duration::from_secs(10));
        self.config = Arc::new(config);
        self.set(|s| {
            s.config_id = Some(id);
            s.rejected_generation = None;
            s.stall_after = stall_after;
            s.databases.clear();
        });
        tracing::info!(id, "config reloaded");
        ReloadOutcome::Applied { id }
    }

    /// Debounces the read lock seen at one poll (litestream lets go of it for its own
    /// checkpoints): a database reads as unlocked only when the lock was missing at two polls in
    /// a row while no WAL guard stood in for it, and that is logged once as a warning.
    fn judge_read_locks(&mut self, mut dbs: Vec<DbStatus>, pid: u32) -> Vec<DbStatus> {
        let guarded = self.guard.as_ref().map(|g| g.held()).unwrap_or_default();
        for d in &mut dbs {
            if guarded.iter().any(|p| p.as_os_str() == d.path.as_str()) {
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

    /// litestream's arguments: `replicate`, or `restore -f` for a follower.
    fn child_args(&self, handoff: &Handoff) -> Vec<std::ffi::OsString> {
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

    /// SIGTERM, then SIGKILL after 5 s, for a litestream that never became ready.
    async fn stop_child_quietly(&self, child: &mut LitestreamChild) -> std::process::ExitStatus {
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
    async fn stop_child(
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
    fn stop_during_reload(&mut self, why: StopFor) -> bool {
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
    async fn confirm_replicated(
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

    /// Verifies every `path` database each `every` while litestream is ready.
    fn verify_loop(&self, every: Duration) -> impl Future<Output = ()> + Send + 'static {
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

/// See [`Supervisor::snapshot_where_wal_restarted`]. The guard lets go of a database for its
/// checkpoint (a TRUNCATE waits for every reader) and holds it again right after.
fn snapshot_where_wal_restarted(config: &LitestreamConfig, guard: &WalGuard) {
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

/// A task aborted when this is dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The paths a config replicates (files and directories).
fn targets_of(config: &LitestreamConfig) -> Vec<PathBuf> {
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
fn db_list(config: &LitestreamConfig) -> String {
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
fn spawn_failure(e: Error) -> ExitInfo {
    ExitInfo {
        pid: 0,
        code: None,
        signal: None,
        at: SystemTime::now(),
        ran_for: Duration::ZERO,
        last_lines: vec![e.to_string()],
    }
}

/// Carries out one step of the stop ladder on `child`.
fn take(child: &LitestreamChild, step: Step) {
    match step {
        Step::Sigterm => child.signal(Signal::SIGTERM),
        Step::Sigkill => child.signal(Signal::SIGKILL),
        Step::SkipSync | Step::Wait => {}
    }
}

/// One look, after `wait`, at whether litestream is ready: its control socket answers; or,
/// without one, its start-up window (until `ready_by`) passed, and a follower's copy opens. The
/// config must have been read before the handoff is emptied: an existing copy opens at once.
async fn probe(
    control: &Option<ControlClient>,
    role: &Role,
    ready_by: Instant,
    wait: Duration,
) -> bool {
    tokio::time::sleep(wait).await;
    if let Some(c) = control {
        return c.get("/info", Duration::from_millis(500)).await.is_ok();
    }
    if Instant::now() < ready_by {
        return false;
    }
    match role {
        Role::Follow { output, .. } => {
            let output = output.clone();
            tokio::task::spawn_blocking(move || super::role::output_opens(&output))
                .await
                .unwrap_or(false)
        }
        Role::Replicate => true,
    }
}
