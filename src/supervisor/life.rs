//! One litestream's life: spawned on a fresh handoff, watched until ready, then replicating
//! (first sync, status polls, replica checks, reloads) until it exits, is stopped or replaced.
//! Never leaves the handoff with the config in place once litestream has read it.

use std::time::{Duration, Instant, SystemTime};

use tokio::sync::oneshot;

use super::child::LitestreamChild;
use super::socket::{first_sync, poll_databases, POLL_EVERY};
use super::{Options, ReloadOutcome, Role};
use crate::control::ControlClient;
use crate::error::Result;
use crate::handoff::Handoff;
use crate::status::State;

use super::reload::Prepared;
use super::run::{db_list, AbortOnDrop, Life, Purpose, StopFor, Supervisor};

impl Supervisor {
    /// One litestream's life: spawn, wait until ready, then replicate until it exits or a stop
    /// is requested (or, for [`Purpose::FinalSync`], stop as soon as it is ready).
    pub(super) async fn live(&mut self, purpose: Purpose) -> Result<Life> {
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
    pub(super) fn spawn_child(&mut self) -> Result<(LitestreamChild, Handoff)> {
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
    pub(super) async fn until_ready(
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
    pub(super) async fn replicate(
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
                    if self.stop_requested {
                        // The stop came while the new generation was being checked.
                        initial_sync.take();
                        return Ok(Life::Stopped(
                            self.stop_child(child, true, StopFor::Good).await,
                        ));
                    }
                    continue;
                }
            };
            initial_sync.take();
            return Ok(self.reload_now(child, prepared, reply).await);
        }
    }

    /// The status poll: each database's sync and read lock (a follower: its copy's position).
    pub(super) async fn poll(&mut self, control: &Option<ControlClient>, pid: u32) {
        if let Some(c) = control {
            if let Some(dbs) = poll_databases(c, pid, &mut self.poll_memo).await {
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
    pub(super) async fn reload_now(
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
}

/// How waiting for readiness ended.
pub(super) enum Readiness {
    /// litestream answers; `stop_pending` when a stop was requested meanwhile.
    Ready {
        child: LitestreamChild,
        stop_pending: bool,
    },
    /// litestream's life ended before it was ready.
    Over(Life),
}

/// The ticks of a ready litestream's life.
pub(super) struct Timers {
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

/// One look, after `wait`, at whether litestream is ready: its control socket answers; or,
/// without one, its start-up window (until `ready_by`) passed, and a follower's copy opens. The
/// config must have been read before the handoff is emptied: an existing copy opens at once.
pub(super) async fn probe(
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
