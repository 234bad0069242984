//! `run -- APP ARGS...`: the container entrypoint. litestream is started and ready before the
//! application; the application runs in its own process group with the environment minus
//! `RIP_*`; litestream crashes are restarted without touching it. When the application exits,
//! litestream is stopped with its final sync (the application's last writes) and the wrapper
//! exits with the application's code (128+N for a signal).
//!
//! Signals reach this module as [`HostSignal`] values (the library installs no handlers):
//! SIGTERM/SIGINT go to the application first, and litestream is stopped once it has exited; a
//! second one kills the application's group. SIGHUP is never passed to litestream.

use std::ffi::OsString;
use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tokio::sync::mpsc;

use crate::error::{Error, Result};
use crate::supervisor::Litestream;

/// A signal the host received, passed on by the binary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostSignal {
    /// SIGTERM: stop.
    Terminate,
    /// SIGINT: stop.
    Interrupt,
    /// SIGHUP: reload the config.
    Hangup,
}

impl HostSignal {
    fn as_signal(self) -> Signal {
        match self {
            HostSignal::Terminate => Signal::SIGTERM,
            HostSignal::Interrupt => Signal::SIGINT,
            HostSignal::Hangup => Signal::SIGHUP,
        }
    }
}

/// The application to run beside litestream.
#[derive(Debug, Clone)]
pub struct App {
    /// The program to run.
    pub program: OsString,
    /// Its arguments.
    pub args: Vec<OsString>,
}

/// Starts litestream, then the application, and supervises both until the application exits.
/// Returns the exit code the wrapper should end with. `app_pid` is told the application's pid
/// (for the reaper).
pub async fn run(
    daemon: &mut Litestream,
    app: App,
    signals: &mut mpsc::UnboundedReceiver<HostSignal>,
    app_pid: &std::sync::atomic::AtomicU32,
    stop_deadline: Duration,
) -> Result<i32> {
    let stop = daemon.stop_handle();
    let mut interrupted = None;
    {
        let start = daemon.start();
        tokio::pin!(start);
        loop {
            tokio::select! {
                r = &mut start => { r?; break; }
                Some(sig) = signals.recv() => if sig != HostSignal::Hangup {
                    tracing::info!(?sig, "signal before the application started: stopping");
                    interrupted = Some(sig);
                    stop.request();
                },
            }
        }
    }
    if let Some(sig) = interrupted {
        daemon.stop(stop_deadline).await?;
        return Ok(128 + sig.as_signal() as i32);
    }

    let mut child = match spawn_app(&app) {
        Ok(c) => c,
        Err(e) => {
            let _ = daemon.stop(stop_deadline).await;
            return Err(e);
        }
    };
    let pid = child.id().expect("a just-spawned child has a pid");
    app_pid.store(pid, std::sync::atomic::Ordering::Relaxed);
    crate::reaper::register(pid);
    tracing::info!(pid, program = ?app.program, "application started");

    let mut forwarded = 0;
    let mut litestream_failed = None;
    let status = loop {
        tokio::select! {
            status = child.wait() => break status,
            Some(sig) = signals.recv() => match sig {
                HostSignal::Hangup => spawn_reload(daemon.reload_handle()),
                _ => {
                    forwarded += 1;
                    let signal = if forwarded == 1 { sig.as_signal() } else { Signal::SIGKILL };
                    tracing::info!(pid, ?signal, "passing the signal to the application");
                    let _ = killpg(Pid::from_raw(pid as i32), signal);
                }
            },
            r = daemon.wait(), if litestream_failed.is_none() => {
                let e = r.err().unwrap_or_else(|| Error::FinalSync("litestream stopped".into()));
                tracing::error!(error = %e, "litestream supervision ended: stopping the application");
                let _ = killpg(Pid::from_raw(pid as i32), Signal::SIGTERM);
                litestream_failed = Some(e);
            }
        }
    };
    crate::reaper::unregister(pid);
    let code = match &status {
        Ok(s) => exit_code(s),
        Err(_) => 1,
    };
    tracing::info!(
        pid,
        code,
        "application exited: stopping litestream with its final sync"
    );
    if let Some(e) = litestream_failed {
        return Err(e);
    }

    stop_after_app(daemon, signals, stop_deadline, code).await
}

/// The application in a process group of its own (signals reach all of it), with our own
/// variables withheld from its environment.
fn spawn_app(app: &App) -> Result<tokio::process::Child> {
    let mut cmd = tokio::process::Command::new(&app.program);
    cmd.args(&app.args)
        .stdin(Stdio::inherit())
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit())
        .process_group(0)
        .kill_on_drop(false);
    for name in crate::binary::withheld_env(false) {
        cmd.env_remove(name);
    }
    cmd.spawn().map_err(|e| {
        Error::Usage(format!(
            "cannot start the application {:?}: {e}",
            app.program
        ))
    })
}

/// After the application exited with `code`: litestream stopped with its final sync (a stop
/// request meanwhile escalates). The application's own failure wins over a failed final sync,
/// which is logged.
async fn stop_after_app(
    daemon: &mut Litestream,
    signals: &mut mpsc::UnboundedReceiver<HostSignal>,
    stop_deadline: Duration,
    code: i32,
) -> Result<i32> {
    let stop = daemon.stop_handle();
    let stopped = daemon.stop(stop_deadline);
    tokio::pin!(stopped);
    let result = loop {
        tokio::select! {
            r = &mut stopped => break r,
            Some(sig) = signals.recv() => if sig != HostSignal::Hangup { stop.request() },
        }
    };
    match result {
        Ok(()) => Ok(code),
        Err(e) if code != 0 => {
            tracing::error!(error = %e, "final sync failed");
            Ok(code)
        }
        Err(e) => Err(e),
    }
}

/// SIGHUP: reload the config in the background (never passed to litestream or the application).
pub fn spawn_reload(handle: crate::supervisor::ReloadHandle) {
    tracing::info!("SIGHUP: reloading the config");
    tokio::spawn(async move {
        let outcome = handle.reload().await;
        tracing::info!(?outcome, "reload");
    });
}

/// The shell's convention: the exit code, or 128 + the signal that ended the process.
pub fn exit_code(status: &std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(1)
}
