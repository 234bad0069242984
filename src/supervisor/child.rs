//! One litestream process: spawned in its own process group with a parent-death signal, its
//! pipes drained, signalled as a group, always reaped.

use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::Stdio;
use std::time::{Instant, SystemTime};

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tokio::process::{Child, Command};
use tokio::task::JoinHandle;

use crate::child_logs::{LogForwarder, LogMode, Stream};
use crate::error::{Error, Result};
use crate::handoff::{inherit_in_child, Handoff};
use crate::status::ExitInfo;

/// A running litestream.
pub(crate) struct LitestreamChild {
    child: Child,
    pub pid: u32,
    pub started: Instant,
    drains: Vec<JoinHandle<()>>,
    /// Its exit status was taken by someone else: its pid must not be signalled any more.
    reaped_elsewhere: bool,
}

impl LitestreamChild {
    /// Spawns `litestream replicate -no-expand-env -config <handoff>`. `keep_fds` are inherited
    /// by litestream (the memfd, the instance lock); everything else stays close-on-exec.
    ///
    /// Must run on a long-lived runtime thread (not `spawn_blocking`): the parent-death signal
    /// fires when the thread that forked exits.
    pub fn spawn(
        binary: &Path,
        handoff: &Handoff,
        lock_fds: Vec<RawFd>,
        logs: &LogForwarder,
    ) -> Result<Self> {
        let mut cmd = Command::new(binary);
        cmd.arg("replicate")
            .arg("-no-expand-env")
            .arg("-config")
            .arg(handoff.config_arg())
            .stdin(Stdio::null())
            .process_group(0)
            .kill_on_drop(false);
        for name in crate::binary::withheld_env(true) {
            cmd.env_remove(name);
        }
        // Our own pipes, so that litestream can keep their read ends: if this supervisor dies,
        // its log writes then never fail with EPIPE, which makes Go kill itself with SIGPIPE
        // before the final sync (SIGPIPE being ignored does not stop it).
        let pipes = if logs.mode() == LogMode::Inherit {
            cmd.stdout(Stdio::inherit()).stderr(Stdio::inherit());
            None
        } else {
            let pipe = || {
                nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
                    .map_err(|e| Error::io("cannot create pipe", "<pipe>", e.into()))
            };
            let (out_r, out_w) = pipe()?;
            let (err_r, err_w) = pipe()?;
            cmd.stdout(Stdio::from(out_w)).stderr(Stdio::from(err_w));
            Some((out_r, err_r))
        };
        let read_ends = pipes.as_ref().map(|(o, e)| [o.as_raw_fd(), e.as_raw_fd()]);
        let memfd = handoff.inherited_fd();
        let parent = std::process::id() as i32;
        // SAFETY: the closure runs between fork and exec. It only makes async-signal-safe system
        // calls (prctl, getppid, _exit, fcntl) on values captured by copy, and does not allocate.
        unsafe {
            cmd.pre_exec(move || {
                #[cfg(target_os = "linux")]
                {
                    if nix::libc::prctl(nix::libc::PR_SET_PDEATHSIG, nix::libc::SIGTERM) == -1 {
                        return Err(std::io::Error::last_os_error());
                    }
                    // The parent may have died before prctl: then nobody would ever signal us.
                    // (Not kill(SIGTERM): until exec, the parent's signal handlers are in place.)
                    if nix::libc::getppid() != parent {
                        nix::libc::_exit(1);
                    }
                }
                #[cfg(not(target_os = "linux"))]
                let _ = parent;
                if let Some(fds) = read_ends {
                    for fd in fds {
                        inherit_in_child(fd)?;
                    }
                }
                if let Some(fd) = memfd {
                    inherit_in_child(fd)?;
                }
                for fd in &lock_fds {
                    inherit_in_child(*fd)?;
                }
                Ok(())
            });
        }
        let child = cmd.spawn().map_err(|e| {
            Error::LitestreamFailed(format!("{} cannot be started: {e}", binary.display()))
        })?;
        drop(cmd); // closes our copies of the write ends, so the readers see EOF at exit
        let pid = child.id().expect("a just-spawned child has a pid");
        crate::reaper::register(pid);
        let mut drains = Vec::new();
        if let Some((out, err)) = pipes {
            for (fd, stream) in [(out, Stream::Stdout), (err, Stream::Stderr)] {
                let pipe = tokio::net::unix::pipe::Receiver::from_owned_fd(fd)
                    .map_err(|e| Error::io("cannot read litestream's output", "<pipe>", e))?;
                let logs = logs.clone();
                drains.push(tokio::spawn(async move { logs.drain(pipe, stream).await }));
            }
        }
        Ok(LitestreamChild {
            child,
            pid,
            started: Instant::now(),
            drains,
            reaped_elsewhere: false,
        })
    }

    /// Waits for litestream to exit (cancel safe). Does not reap the rest of its group.
    pub async fn wait(&mut self) -> std::process::ExitStatus {
        loop {
            match self.child.wait().await {
                Ok(status) => return status,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) if e.raw_os_error() == Some(nix::libc::ECHILD) => {
                    // Someone else reaped it (a host that waits for every child): it is gone,
                    // and its pid may already be reused, so nothing is signalled.
                    tracing::warn!(
                        pid = self.pid,
                        "litestream's exit status was taken by another waiter"
                    );
                    self.reaped_elsewhere = true;
                    return std::process::ExitStatus::from_raw(0);
                }
                Err(e) => {
                    tracing::error!(pid = self.pid, error = %e, "cannot wait for litestream; killing it");
                    self.signal(Signal::SIGKILL);
                    return std::process::ExitStatus::from_raw(Signal::SIGKILL as i32);
                }
            }
        }
    }

    /// Sends `signal` to litestream's whole process group.
    pub fn signal(&self, signal: Signal) {
        if self.reaped_elsewhere {
            return;
        }
        match killpg(Pid::from_raw(self.pid as i32), signal) {
            Ok(()) | Err(nix::errno::Errno::ESRCH) => {}
            Err(e) => {
                tracing::warn!(pid = self.pid, ?signal, error = %e, "cannot signal litestream")
            }
        }
    }

    /// After litestream exited: kills whatever is left of its group, waits (briefly) for the
    /// pipes to close so the last lines are kept, and describes the exit.
    pub async fn finish(
        mut self,
        status: std::process::ExitStatus,
        logs: &LogForwarder,
    ) -> ExitInfo {
        self.signal(Signal::SIGKILL);
        crate::reaper::unregister(self.pid);
        for drain in self.drains.drain(..) {
            let _ = tokio::time::timeout(std::time::Duration::from_secs(2), drain).await;
        }
        ExitInfo {
            pid: self.pid,
            code: status.code(),
            signal: status.signal(),
            at: SystemTime::now(),
            ran_for: self.started.elapsed(),
            last_lines: logs.state().last_lines(),
        }
    }
}
