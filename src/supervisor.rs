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

use std::collections::VecDeque;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use nix::sys::signal::Signal;
use serde_json::json;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::backoff::Backoff;
use crate::binary::{self, LitestreamBinary};
use crate::child_logs::{LogForwarder, LogMode};
use crate::config::{DbTarget, LitestreamConfig};
use crate::control::ControlClient;
use crate::error::{Error, Result};
use crate::handoff::{Handoff, HandoffMode};
use crate::lock::InstanceLock;
use crate::render::{render, Rendered};
use crate::runtime::RuntimeDir;
use crate::status::{DbStatus, ExitInfo, State, Status};
use child::LitestreamChild;

/// How the daemon runs litestream. `Default` gives the documented defaults.
#[derive(Debug, Clone)]
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
    /// Base of the runtime directories (default: [`crate::runtime::base_dir`]).
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
            runtime_base: None,
            restore_if_missing: false,
            allow_fresh_db: false,
            verify_every: None,
            config_id: None,
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
}

impl StopHandle {
    /// Requests a stop (the first), or escalates one in progress.
    pub fn request(&self) {
        let _ = self.tx.send(());
    }
}

/// The supervised litestream.
pub struct Litestream {
    config: Arc<LitestreamConfig>,
    options: Options,
    status_tx: Arc<watch::Sender<Status>>,
    stop: StopHandle,
    stop_rx: Option<mpsc::UnboundedReceiver<()>>,
    task: Option<JoinHandle<Result<()>>>,
    logs: LogForwarder,
}

impl Litestream {
    /// A daemon for `config`; nothing runs until [`Litestream::start`].
    pub fn new(config: LitestreamConfig, options: Options) -> Self {
        let (status_tx, _) = watch::channel(Status::default());
        let (tx, rx) = mpsc::unbounded_channel();
        let logs = LogForwarder::new(options.logs, config.redactor());
        Litestream {
            config: Arc::new(config),
            options,
            status_tx: Arc::new(status_tx),
            stop: StopHandle { tx },
            stop_rx: Some(rx),
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
        let binary = binary::find(self.options.litestream.as_deref())?;
        tracing::debug!(path = %binary.path.display(), version = %binary.version, "found litestream");
        let instance = match (&self.options.instance, self.config.dbs().first()) {
            (Some(p), _) => p.clone(),
            (None, Some(DbTarget::Path(p))) => p.clone(),
            (None, Some(DbTarget::Dir { dir, .. })) => dir.clone(),
            (None, None) => return Err(Error::Usage("the config has no database".into())),
        };
        let base = self
            .options
            .runtime_base
            .clone()
            .unwrap_or_else(crate::runtime::base_dir);
        let runtime = RuntimeDir::for_db_in(&base, &instance)?;
        let lock = InstanceLock::acquire(&runtime.lock_path(), &instance)?;
        runtime.sweep();
        crate::restore::prepare_databases(
            &binary,
            &self.config,
            self.options.handoff,
            runtime.path(),
            self.options.restore_if_missing,
            self.options.allow_fresh_db,
        )
        .await?;
        let rendered = render(&self.config, &runtime.socket_path());
        if rendered.injected {
            let _ = std::fs::remove_file(runtime.socket_path());
        }
        let sync_interval = self
            .config
            .sync_interval()
            .unwrap_or(Duration::from_secs(1));
        self.status_tx.send_modify(|s| {
            s.stall_after = (sync_interval * 3).max(Duration::from_secs(10));
            s.config_id = self.options.config_id;
        });
        tokio::spawn(write_status_file(self.status(), runtime.status_path()));
        let supervisor = Supervisor {
            binary,
            runtime,
            lock,
            rendered,
            config: self.config.clone(),
            options: self.options.clone(),
            status: self.status_tx.clone(),
            stop_rx,
            logs: self.logs.clone(),
        };
        let mut status = self.status();
        let task = tokio::spawn(supervisor.run());
        self.task = Some(task);
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

    /// Stops litestream with its final sync, within `deadline` (after which it is killed).
    /// Returns an error when the final sync did not complete.
    pub async fn stop(&mut self, deadline: Duration) -> Result<()> {
        if self.task.is_none() {
            return Ok(());
        }
        self.stop.request();
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
            self.stop.request();
        }
    }
}

/// The supervision task's state.
struct Supervisor {
    binary: LitestreamBinary,
    runtime: RuntimeDir,
    lock: InstanceLock,
    rendered: Rendered,
    config: Arc<LitestreamConfig>,
    options: Options,
    status: Arc<watch::Sender<Status>>,
    stop_rx: mpsc::UnboundedReceiver<()>,
    logs: LogForwarder,
}

/// How one child's life ended.
enum Outcome {
    /// It exited by itself.
    Exited { info: ExitInfo, was_ready: bool },
    /// A stop was requested and carried out.
    Stopped(Result<()>),
}

impl Supervisor {
    async fn run(mut self) -> Result<()> {
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
                    match crate::verify::verify(
                        &binary,
                        &config,
                        db,
                        control.as_ref(),
                        mode,
                        &runtime,
                        timeout,
                    )
                    .await
                    {
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

    async fn supervise(&mut self) -> Result<()> {
        let mut attempt = 0u32;
        let mut exits: VecDeque<Instant> = VecDeque::new();
        let mut ever_ready = false;
        loop {
            let outcome = match self.run_child().await {
                Ok(o) => o,
                Err(e) => return self.fail(e),
            };
            let (info, was_ready) = match outcome {
                Outcome::Stopped(result) => {
                    self.set(|s| {
                        s.state = State::Stopped;
                        s.pid = None;
                    });
                    return result;
                }
                Outcome::Exited { info, was_ready } => (info, was_ready),
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
                let exit = info.to_string();
                let last_lines = info.last_lines.clone();
                self.set(|s| s.last_exit = Some(info));
                return self.fail(Error::StartFailed { exit, last_lines });
            }
            if info.ran_for >= self.options.backoff.reset_after {
                attempt = 0;
            }
            attempt += 1;
            let now = Instant::now();
            exits.push_back(now);
            while exits
                .front()
                .is_some_and(|t| now.duration_since(*t) > self.options.restart_window)
            {
                exits.pop_front();
            }
            if let Some(max) = self.options.max_restarts {
                if exits.len() as u32 > max {
                    let reason = format!("litestream {info}");
                    self.set(|s| s.last_exit = Some(info));
                    return self.fail(Error::GaveUp {
                        restarts: max,
                        reason,
                    });
                }
            }
            let delay = self.options.backoff.delay(attempt);
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
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = self.stop_rx.recv() => {
                    self.set(|s| s.state = State::Stopped);
                    return Ok(());
                }
            }
            self.set(|s| s.restarts += 1);
        }
    }

    fn fail(&self, e: Error) -> Result<()> {
        let reason = e.to_string();
        self.set(|s| {
            s.state = State::Failed { reason };
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

    fn control(&self) -> Option<ControlClient> {
        self.rendered.socket.as_ref().map(ControlClient::new)
    }

    /// One child's life: spawn, wait until ready, then until it exits or a stop is requested.
    async fn run_child(&mut self) -> Result<Outcome> {
        let mut handoff = Handoff::create(
            self.options.handoff,
            self.rendered.yaml.as_bytes(),
            self.runtime.path(),
        )?;
        self.logs.state().reset_for_child();
        let mut child =
            LitestreamChild::spawn(&self.binary.path, &handoff, self.lock.raw_fd(), &self.logs)?;
        self.lock.record(Some(child.pid));
        let dbs: Vec<String> = self
            .config
            .dbs()
            .iter()
            .map(|d| match d {
                DbTarget::Path(p) => p.display().to_string(),
                DbTarget::Dir { dir, pattern } => format!("{}/{pattern}", dir.display()),
            })
            .collect();
        tracing::info!(pid = child.pid, handoff = ?self.options.handoff, db = %dbs.join(","), "litestream started");
        self.set(|s| {
            s.state = State::Starting;
            s.pid = Some(child.pid);
        });

        // Until ready.
        let control = self.control();
        let ready_by = child.started + self.options.startup_window;
        loop {
            let probe = async {
                tokio::time::sleep(Duration::from_millis(10)).await;
                match &control {
                    Some(c) => c.get("/info", Duration::from_millis(500)).await.is_ok(),
                    None => Instant::now() >= ready_by,
                }
            };
            tokio::select! {
                status = child.wait() => {
                    handoff.remove();
                    let info = child.finish(status, &self.logs).await;
                    return Ok(Outcome::Exited { info, was_ready: false });
                }
                _ = self.stop_rx.recv() => {
                    handoff.remove();
                    return Ok(Outcome::Stopped(self.stop_child(child, false).await));
                }
                ready = probe => if ready { break },
            }
        }
        handoff.remove();
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

        // Sync once right away: litestream then has initialised every database, so even if this
        // supervisor dies, its final sync on SIGTERM (parent-death signal) is not skipped; and the
        // writes made while no litestream ran reach the replica now, not a sync interval later.
        let initial_sync = async {
            if let Some(control) = &control {
                if let Err(e) = sync_all(control, Duration::from_secs(30)).await {
                    tracing::warn!(error = %e, "initial sync failed");
                }
            }
            std::future::pending::<()>().await
        };
        tokio::pin!(initial_sync);
        let mut poll = tokio::time::interval(POLL_EVERY);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                status = child.wait() => {
                    let info = child.finish(status, &self.logs).await;
                    return Ok(Outcome::Exited { info, was_ready: true });
                }
                _ = self.stop_rx.recv() => return Ok(Outcome::Stopped(self.stop_child(child, true).await)),
                _ = &mut initial_sync => unreachable!("the initial sync future never completes"),
                _ = poll.tick() => if let Some(c) = &control {
                    if let Some(dbs) = poll_databases(c).await {
                        self.set(|s| s.databases = dbs);
                    }
                },
            }
        }
    }

    /// The stop sequence: sync through the socket, one SIGTERM, grace, SIGKILL; always reaps.
    async fn stop_child(&mut self, mut child: LitestreamChild, ready: bool) -> Result<()> {
        self.set(|s| s.state = State::Stopping);
        let grace = self
            .options
            .grace
            .unwrap_or_else(|| self.config.shutdown_sync_timeout() + Duration::from_secs(10));
        let deadline = tokio::time::Instant::now() + grace;
        let mut sync_error = None;
        if ready {
            if let Some(control) = self.control() {
                let sync = sync_all(&control, grace);
                tokio::select! {
                    r = sync => sync_error = r.err(),
                    _ = self.stop_rx.recv() => tracing::warn!("second stop request: skipping the sync before stopping"),
                }
            }
        }
        tracing::info!(
            pid = child.pid,
            grace_s = grace.as_secs_f64(),
            "stopping litestream (SIGTERM)"
        );
        child.signal(Signal::SIGTERM);
        let mut requests = 0;
        let mut killed = false;
        let status = loop {
            tokio::select! {
                status = child.wait() => break status,
                _ = tokio::time::sleep_until(deadline), if !killed => {
                    tracing::error!(pid = child.pid, "litestream did not exit within the grace period: SIGKILL");
                    child.signal(Signal::SIGKILL);
                    killed = true;
                }
                Some(()) = self.stop_rx.recv() => {
                    requests += 1;
                    if requests == 1 {
                        tracing::warn!(pid = child.pid, "second stop request: SIGTERM again (litestream skips its final-sync retries)");
                        child.signal(Signal::SIGTERM);
                    } else {
                        tracing::warn!(pid = child.pid, "third stop request: SIGKILL");
                        child.signal(Signal::SIGKILL);
                        killed = true;
                    }
                }
            }
        };
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
            return Err(Error::FinalSync(format!("litestream was killed ({info}); writes since its last sync may be missing from the replica")));
        }
        if self.logs.state().final_sync_failed() {
            let lines = info
                .last_lines
                .iter()
                .rev()
                .take(5)
                .rev()
                .cloned()
                .collect::<Vec<_>>()
                .join("\n");
            return Err(Error::FinalSync(format!(
                "litestream reported it:\n{lines}"
            )));
        }
        if let Some(e) = sync_error {
            tracing::warn!(error = %e, "the sync before stopping failed; litestream's own final sync completed");
        }
        Ok(())
    }
}

/// Writes each new status to `path` (0600, replaced atomically) for `rip-litestream status`.
async fn write_status_file(mut rx: watch::Receiver<Status>, path: PathBuf) {
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
const POLL_EVERY: Duration = Duration::from_secs(2);

/// Each database's last sync (`/list`) and local transaction (`/txid`); `None` when litestream
/// does not answer in time (with an unreachable S3 replica `/list` hangs: the old values stay,
/// and age into "stalled").
async fn poll_databases(control: &ControlClient) -> Option<Vec<DbStatus>> {
    let list = control.get("/list", Duration::from_secs(1)).await.ok()?;
    let mut dbs = Vec::new();
    for d in list["databases"].as_array()? {
        let path = d["path"].as_str().unwrap_or_default().to_string();
        let query = format!("/txid?path={}", percent_encode(&path));
        let txid = control
            .get(&query, Duration::from_millis(500))
            .await
            .ok()
            .and_then(|t| t["txid"].as_u64());
        dbs.push(DbStatus {
            last_sync_at: d["last_sync_at"]
                .as_str()
                .and_then(crate::status::parse_time),
            status: d["status"].as_str().unwrap_or_default().to_string(),
            path,
            txid,
        });
    }
    Some(dbs)
}

/// Percent-encodes a path for a query string.
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"/-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Asks litestream to sync every database it knows and wait for the replica.
async fn sync_all(control: &ControlClient, budget: Duration) -> std::result::Result<(), String> {
    let list = control
        .get("/list", Duration::from_secs(2))
        .await
        .map_err(|e| e.to_string())?;
    let paths: Vec<String> = list["databases"]
        .as_array()
        .map(|dbs| {
            dbs.iter()
                .filter_map(|d| d["path"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    let secs = budget.as_secs().max(1);
    let mut failures = Vec::new();
    for path in paths {
        let body = json!({"path": path, "wait": true, "timeout": secs});
        match control.post("/sync", &body, budget).await {
            Ok(answer) => {
                tracing::debug!(db = %path, status = %answer["status"], txid = %answer["txid"], "synced before stopping")
            }
            Err(e) => failures.push(format!("{path}: {e}")),
        }
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(failures.join("; "))
    }
}
