//! The `Litestream` daemon: starts litestream once it is ready, restarts it with backoff when it
//! exits, stops it so that its final sync completes, and publishes its [`Status`].
//!
//! Stopping first asks litestream over the control socket to sync every database and wait for
//! the replica: litestream skips its own final sync when it is stopped before it has initialised
//! a database (right after a restart), and the writes since its last sync would be missing. Then
//! exactly one SIGTERM to its process group, `grace` to exit, SIGKILL. A second stop request
//! sends the second SIGTERM on purpose (litestream then skips its final-sync retries); a third
//! kills.

mod child;
mod guard;
mod ladder;
mod life;
mod reload;
mod restarts;
pub(crate) mod role;
mod run;
mod socket;
mod stop;

pub use role::{FollowSource, Role};

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use crate::backoff::Backoff;
use crate::binary;
use crate::child_logs::{LogForwarder, LogMode};
use crate::config::{DbTarget, LitestreamConfig};
use crate::error::{Error, Result};
use crate::handoff::HandoffMode;
use crate::lock::InstanceLock;
use crate::render::render;
use crate::runtime::RuntimeDir;
use crate::status::{State, Status};

/// How the daemon runs litestream. `Default` gives the documented defaults.
#[derive(Debug, Clone)]
#[non_exhaustive] // new options come with defaults: build from `Options::default()`
pub struct Options {
    /// The litestream binary (default: `LITESTREAM_BIN`, `PATH`, then the project's `.tools/`).
    pub litestream: Option<PathBuf>,
    /// How the config reaches litestream.
    pub handoff: HandoffMode,
    /// Time litestream gets to exit after SIGTERM (default: the config's
    /// `shutdown-sync-timeout` + 10 s).
    pub grace: Option<Duration>,
    /// Restart delays.
    pub backoff: Backoff,
    /// Give up after this many exits within `restart_window` (default: never).
    pub max_restarts: Option<u32>,
    /// The window `max_restarts` counts in.
    pub restart_window: Duration,
    /// Where litestream's lines go.
    pub logs: LogMode,
    /// Keep retrying when the first start fails, instead of returning the error from `start`.
    pub retry_start: bool,
    /// The database whose runtime directory (lock, socket) this daemon uses; default: the config
    /// store's database when known, else the config's first database.
    pub instance: Option<PathBuf>,
    /// Without a control socket, litestream counts as ready once it has run this long.
    pub startup_window: Duration,
    /// A litestream not ready after this long is stopped and counts as a failed start.
    pub ready_timeout: Duration,
    /// Base of the runtime directories (default: `$RIP_RUNTIME_DIR`, else `$XDG_RUNTIME_DIR/rip-litestream`, else `/dev/shm/rip-litestream-UID`).
    pub runtime_base: Option<PathBuf>,
    /// Before the first start, restore each missing `path` database from its replica.
    pub restore_if_missing: bool,
    /// Replicate a database that has no litestream state even though its replica holds backups.
    pub allow_fresh_db: bool,
    /// Run `verify` on every `path` database this often while ready; the last result is in the
    /// status.
    pub verify_every: Option<Duration>,
    /// The store row id of the config in use, shown in the status.
    pub config_id: Option<i64>,
    /// Where [`Litestream::reload`] reads the newest config from; with `check_every`, a new
    /// generation saved there is noticed and applied by itself.
    pub reload: Option<ReloadSource>,
    /// Replicate (the default), or follow a replica (see [`crate::follow`]).
    pub role: Role,
    /// How often each `path` database's replica is listed to check that it can still be
    /// restored from (a replica whose objects vanished gets only new files: unrestorable while
    /// litestream reports syncing); `None` turns the check off.
    pub replica_check: Option<Duration>,
}

/// The store a running daemon reloads its config from.
#[derive(Debug, Clone)]
pub struct ReloadSource {
    /// The config store.
    pub store: crate::store::ConfigStore,
    /// The scope in it.
    pub scope: String,
    /// How often to look for a new generation (a cheap read of the newest row id).
    pub check_every: Option<Duration>,
}

/// What a reload did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReloadOutcome {
    /// litestream was stopped with its final sync and started with generation `id`.
    Applied {
        /// The row id.
        id: i64,
    },
    /// The newest generation holds the config in use: litestream was left alone.
    Unchanged {
        /// The row id.
        id: i64,
    },
    /// The newest generation cannot be used (undecryptable, invalid, ...): litestream was left
    /// alone.
    Rejected {
        /// What went wrong, in a line.
        reason: String,
    },
}

/// Asks a running daemon to reload its config. Cheap to clone, usable from a signal task.
#[derive(Debug, Clone)]
pub struct ReloadHandle {
    tx: mpsc::UnboundedSender<oneshot::Sender<ReloadOutcome>>,
}

impl ReloadHandle {
    /// Loads and validates the newest generation; applies it when it differs.
    pub async fn reload(&self) -> ReloadOutcome {
        let (reply, answer) = oneshot::channel();
        if self.tx.send(reply).is_err() {
            return ReloadOutcome::Rejected {
                reason: "the daemon is not running".into(),
            };
        }
        answer.await.unwrap_or(ReloadOutcome::Rejected {
            reason: "the daemon stopped before reloading".into(),
        })
    }
}

impl Options {
    /// The time litestream gets to exit after SIGTERM: `grace`, or litestream's
    /// `shutdown-sync-timeout` plus 10 s (its final sync, then a margin to exit).
    pub fn grace_for(&self, config: &LitestreamConfig) -> Duration {
        self.grace
            .unwrap_or_else(|| config.shutdown_sync_timeout() + Duration::from_secs(10))
    }
}

impl Default for Options {
    fn default() -> Self {
        Options {
            litestream: None,
            handoff: HandoffMode::default(),
            grace: None,
            backoff: Backoff::default(),
            max_restarts: None,
            restart_window: Duration::from_secs(600),
            logs: LogMode::default(),
            retry_start: false,
            instance: None,
            startup_window: Duration::from_secs(1),
            ready_timeout: Duration::from_secs(60),
            runtime_base: None,
            restore_if_missing: false,
            allow_fresh_db: false,
            verify_every: None,
            config_id: None,
            reload: None,
            role: Role::Replicate,
            replica_check: Some(Duration::from_secs(300)),
        }
    }
}

/// Something a host application starts and stops with its other services.
pub trait Daemon: Send {
    /// A short name for logs.
    fn name(&self) -> &str;
    /// Returns once the daemon runs, or with the start-up error.
    fn start(&mut self) -> Pin<Box<dyn Future<Output = Result<()>> + Send + '_>>;
    /// Stops within `deadline`; an error says what did not complete.
    fn stop(&mut self, deadline: Duration)
        -> Pin<Box<dyn Future<Output = Result<()>> + Send + '_>>;
}

/// Asks a running daemon to stop; each further request escalates. Cheap to clone, usable from a
/// signal handler task.
#[derive(Debug, Clone)]
pub struct StopHandle {
    tx: mpsc::UnboundedSender<()>,
    requested: Arc<AtomicBool>,
}

impl StopHandle {
    /// Requests a stop (the first), or escalates one in progress.
    pub fn request(&self) {
        self.requested.store(true, Ordering::SeqCst);
        let _ = self.tx.send(());
    }

    /// Requests a stop unless one was requested already (never escalates).
    fn request_once(&self) {
        if !self.requested.swap(true, Ordering::SeqCst) {
            let _ = self.tx.send(());
        }
    }
}

/// The supervised litestream.
pub struct Litestream {
    config: Arc<LitestreamConfig>,
    options: Options,
    status_tx: Arc<watch::Sender<Status>>,
    stop: StopHandle,
    stop_rx: Option<mpsc::UnboundedReceiver<()>>,
    reload: ReloadHandle,
    reload_rx: Option<mpsc::UnboundedReceiver<oneshot::Sender<ReloadOutcome>>>,
    task: Option<JoinHandle<Result<()>>>,
    logs: LogForwarder,
}

impl Litestream {
    /// A daemon for `config`; nothing runs until [`Litestream::start`].
    pub fn new(config: LitestreamConfig, options: Options) -> Self {
        let (status_tx, _) = watch::channel(Status::default());
        let (tx, rx) = mpsc::unbounded_channel();
        let (reload_tx, reload_rx) = mpsc::unbounded_channel();
        let logs = LogForwarder::new(options.logs, config.redactor());
        Litestream {
            config: Arc::new(config),
            options,
            status_tx: Arc::new(status_tx),
            stop: StopHandle {
                tx,
                requested: Arc::new(AtomicBool::new(false)),
            },
            stop_rx: Some(rx),
            reload: ReloadHandle { tx: reload_tx },
            reload_rx: Some(reload_rx),
            task: None,
            logs,
        }
    }

    /// The status channel: always holds the latest [`Status`].
    pub fn status(&self) -> watch::Receiver<Status> {
        self.status_tx.subscribe()
    }

    /// A handle that requests (and escalates) a stop.
    pub fn stop_handle(&self) -> StopHandle {
        self.stop.clone()
    }

    /// A handle that asks for a reload.
    pub fn reload_handle(&self) -> ReloadHandle {
        self.reload.clone()
    }

    /// Loads and validates the newest generation from [`Options::reload`]; when it differs from
    /// the config in use, stops litestream with its final sync and starts it with the new one.
    pub async fn reload(&self) -> ReloadOutcome {
        self.reload.reload().await
    }

    /// The last lines litestream printed.
    pub fn last_lines(&self) -> Vec<String> {
        self.logs.state().last_lines()
    }

    /// Starts litestream and returns once it is ready. If it exits first, returns
    /// [`Error::StartFailed`] with its last lines (unless `retry_start`).
    pub async fn start(&mut self) -> Result<()> {
        let stop_rx = self
            .stop_rx
            .take()
            .ok_or_else(|| Error::Usage("this daemon was already started".into()))?;
        // `litestream version` is a process run to completion: not on an async worker.
        let explicit = self.options.litestream.clone();
        let binary = tokio::task::spawn_blocking(move || binary::find(explicit.as_deref()))
            .await
            .map_err(|e| Error::LitestreamFailed(format!("cannot look for litestream: {e}")))??;
        tracing::debug!(path = %binary.path.display(), version = %binary.version, "found litestream");
        let following = matches!(self.options.role, Role::Follow { .. });
        let instance = self.instance()?;
        let base = self
            .options
            .runtime_base
            .clone()
            .unwrap_or_else(crate::runtime::base_dir);
        let runtime = RuntimeDir::for_db_in(&base, &instance)?;
        // One lock for the store (what `status` finds), one per replicated database: two
        // supervisors must never run litestream on the same database, whatever their --db. A
        // follower locks its output only (its primary may well run on this machine).
        let store_lock = InstanceLock::acquire(&runtime.lock_path(), &instance)?;
        let db_locks = if following {
            Vec::new()
        } else {
            run::lock_databases(&self.config, &base, &runtime, &[])?
        };
        runtime.sweep();
        if !following {
            // A restore on boot may take long: the watchdog is fed while it makes its calls.
            crate::health::beating(crate::restore::prepare_databases(
                &binary,
                &self.config,
                self.options.handoff,
                runtime.path(),
                self.options.restore_if_missing,
                self.options.allow_fresh_db,
            ))
            .await?;
        }
        let rendered = self.rendered(following, &runtime);
        self.publish_start(following);
        tokio::spawn(socket::write_status_file(
            self.status(),
            runtime.status_path(),
        ));
        let supervisor = run::Supervisor {
            binary,
            runtime,
            runtime_base: base,
            store_lock,
            db_locks,
            reload_rx: self
                .reload_rx
                .take()
                .expect("taken only once, with stop_rx"),
            rendered,
            config: self.config.clone(),
            options: self.options.clone(),
            status: self.status_tx.clone(),
            stop_rx,
            _stop_tx: self.stop.tx.clone(),
            logs: self.logs.clone(),
            guard: (!following).then(crate::wal_guard::WalGuard::default),
            lock_misses: Default::default(),
            lock_warned: Default::default(),
            poll_memo: Default::default(),
            stop_requested: false,
        };
        self.task = Some(tokio::spawn(crate::health::beating(supervisor.run())));
        self.until_ready().await
    }

    /// The path the instance lock and the runtime directory are named after: a follower's copy,
    /// the given instance, else the config's first database (or `dir:`).
    fn instance(&self) -> Result<PathBuf> {
        match (
            &self.options.role,
            &self.options.instance,
            self.config.dbs().first(),
        ) {
            (Role::Follow { output, .. }, _, _) => Ok(output.clone()),
            (_, Some(p), _) => Ok(p.clone()),
            (_, None, Some(DbTarget::Path(p))) => Ok(p.clone()),
            (_, None, Some(DbTarget::Dir { dir, .. })) => Ok(dir.clone()),
            (_, None, None) => Err(Error::Usage("the config has no database".into())),
        }
    }

    /// What litestream reads: the user's bytes (a follower's as they are; a replicator's with
    /// the control socket injected, its stale socket file removed).
    fn rendered(&self, following: bool, runtime: &RuntimeDir) -> crate::render::Rendered {
        if following {
            return crate::render::Rendered {
                yaml: zeroize::Zeroizing::new(self.config.yaml().to_owned()),
                socket: None,
                injected: false,
            };
        }
        let rendered = render(&self.config, &runtime.socket_path());
        if rendered.injected {
            let _ = std::fs::remove_file(runtime.socket_path());
        }
        rendered
    }

    /// The facts the status carries from the start: when a database counts as stalled, and
    /// the config generation in use.
    fn publish_start(&self, following: bool) {
        let sync_interval = self
            .config
            .sync_interval()
            .unwrap_or(Duration::from_secs(1));
        self.status_tx.send_modify(|s| {
            // A follower of a quiet primary sees no change for as long as it is quiet: only a
            // replicating litestream can stall.
            s.stall_after = if following {
                Duration::from_secs(100 * 365 * 24 * 3600)
            } else {
                (sync_interval * 3).max(Duration::from_secs(10))
            };
            s.config_id = self.options.config_id;
        });
    }

    /// Waits for the supervision task to report litestream ready, or to end.
    async fn until_ready(&mut self) -> Result<()> {
        let mut status = self.status();
        loop {
            let state = status.borrow_and_update().state.clone();
            match state {
                State::Ready => return Ok(()),
                State::Failed { .. } | State::Stopped => return self.join().await,
                _ => {}
            }
            if status.changed().await.is_err() {
                return self.join().await;
            }
        }
    }

    /// The time litestream gets to exit after SIGTERM ([`Options::grace_for`]): what a host
    /// passes to [`Litestream::stop`] unless its own stop budget is shorter.
    pub fn grace(&self) -> Duration {
        self.options.grace_for(&self.config)
    }

    /// Stops litestream with its final sync, within `deadline` (after which it is killed).
    /// Returns an error when the final sync did not complete.
    pub async fn stop(&mut self, deadline: Duration) -> Result<()> {
        if self.task.is_none() {
            return Ok(());
        }
        self.stop.request_once();
        let result = match tokio::time::timeout(deadline, self.join()).await {
            Ok(r) => r,
            Err(_) => {
                // Past the deadline: escalate twice (second SIGTERM, then SIGKILL) and reap.
                self.stop.request();
                self.stop.request();
                self.join().await.and(Err(Error::FinalSync(format!(
                    "litestream did not stop within {deadline:?} and was killed"
                ))))
            }
        };
        result
    }

    /// Waits until the supervisor ends on its own (gave up, or a stop requested elsewhere).
    pub async fn wait(&mut self) -> Result<()> {
        self.join().await
    }

    /// Cancel safe: the task handle is only dropped once the task has ended.
    async fn join(&mut self) -> Result<()> {
        let Some(task) = self.task.as_mut() else {
            return Ok(());
        };
        let result = task.await;
        self.task = None;
        result.unwrap_or_else(|e| Err(Error::FinalSync(format!("supervisor task failed: {e}"))))
    }
}

impl Daemon for Litestream {
    fn name(&self) -> &str {
        "litestream"
    }
    fn start(&mut self) -> Pin<Box<dyn Future<Output = Result<()>> + Send + '_>> {
        Box::pin(Litestream::start(self))
    }
    fn stop(
        &mut self,
        deadline: Duration,
    ) -> Pin<Box<dyn Future<Output = Result<()>> + Send + '_>> {
        Box::pin(Litestream::stop(self, deadline))
    }
}

impl Drop for Litestream {
    fn drop(&mut self) {
        // A dropped daemon still stops litestream gracefully (the task runs on).
        if self.task.is_some() {
            self.stop.request_once();
        }
    }
}
