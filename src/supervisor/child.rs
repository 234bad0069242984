//! One litestream process: spawned in its own process group, its pipes drained, signalled as a
//! group, always reaped; and told exactly once (SIGTERM) if this supervisor dies, so that it
//! still does its final sync.
//!
//! Why not `PR_SET_PDEATHSIG` on litestream itself: the kernel sends that signal each time the
//! child is re-parented, and a killed multi-threaded supervisor re-parents it once per exiting
//! thread. litestream takes a second SIGTERM as "skip the final sync" (observed: the row
//! written last was missing). Instead a tiny watcher, forked between fork and exec, waits on a
//! pipe whose only writer is this supervisor: end of file means the supervisor is gone, and the
//! watcher sends one SIGTERM. The watcher itself dies with litestream (its own parent-death
//! signal, SIGKILL, which may come any number of times).

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
    /// The watcher's pipe: while this end is open, the watcher knows the supervisor lives.
    _alive: Option<std::os::fd::OwnedFd>,
}

impl LitestreamChild {
    /// Spawns litestream with `args` (which name the handoff's `-config`). `keep_fds` are inherited
    /// by litestream (the memfd, the instance lock); everything else stays close-on-exec.
    ///
    // Long on purpose: the fork/exec steps and their reasons read best in one place, in order.
    pub fn spawn(
        binary: &Path,
        args: &[std::ffi::OsString],
        handoff: &Handoff,
        lock_fds: Vec<RawFd>,
        logs: &LogForwarder,
    ) -> Result<Self> {
        let mut cmd = Command::new(binary);
        cmd.args(args)
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
        // The watcher's pipe (Linux: the watcher needs a parent-death signal of its own).
        let alive = if cfg!(target_os = "linux") {
            Some(
                nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
                    .map_err(|e| Error::io("cannot create pipe", "<pipe>", e.into()))?,
            )
        } else {
            None
        };
        let alive_fds = alive.as_ref().map(|(r, w)| (r.as_raw_fd(), w.as_raw_fd()));
        // SAFETY: the closure runs between fork and exec. It only makes async-signal-safe system
        // calls (fcntl, fork, close, signal, prctl, getppid, read, kill, _exit) on values
        // captured by copy or allocated before the fork, and allocates nothing.
        unsafe {
            cmd.pre_exec(move || {
                if let Some((read_fd, write_fd)) = alive_fds {
                    start_watcher(read_fd, write_fd);
                }
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
        drop(cmd); // closes our copies of the log pipes' write ends: the readers see EOF at exit
                   // Keep the writer end for litestream's life; the reader end lives on in the watcher.
        let alive = alive.map(|(_read, write)| write);
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
            _alive: alive,
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

/// In the forked child, before exec: forks the watcher. The watcher closes its copy of the
/// pipe's write end, ignores the group signals meant for litestream, dies with litestream
/// (parent-death SIGKILL), and when the pipe reports end of file (every writer gone: this
/// supervisor died) sends litestream exactly one SIGTERM.
///
/// # Safety
/// Only between fork and exec; async-signal-safe calls only.
#[cfg(target_os = "linux")]
unsafe fn start_watcher(read_fd: RawFd, write_fd: RawFd) {
    use nix::libc;
    // SAFETY: plain system calls on descriptors and pids we own, and no allocation, in the
    // forked child before exec (the caller's contract).
    unsafe {
        let target = libc::getpid(); // about to become litestream
        match libc::fork() {
            0 => {
                // Keep only the pipe's read end: any other descriptor held here would outlive
                // its purpose (std's exec-error pipe would make the spawning parent wait for
                // this process, the log pipes would not close with litestream, ...).
                let _ = write_fd;
                close_all_but(read_fd);
                for sig in [
                    libc::SIGTERM,
                    libc::SIGINT,
                    libc::SIGHUP,
                    libc::SIGUSR1,
                    libc::SIGUSR2,
                ] {
                    libc::signal(sig, libc::SIG_IGN);
                }
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                if libc::getppid() != target {
                    libc::_exit(0);
                }
                let mut byte = 0u8;
                loop {
                    let n = libc::read(read_fd, (&mut byte as *mut u8).cast(), 1);
                    if n < 0 && *libc::__errno_location() == libc::EINTR {
                        continue;
                    }
                    if n == 0 {
                        libc::kill(target, libc::SIGTERM);
                    }
                    libc::_exit(0);
                }
            }
            _ => {
                // litestream does not need the read end; a failed fork just means no watcher.
                libc::close(read_fd);
            }
        }
    }
}

/// Closes every descriptor except `keep` (close_range, or a loop where it is missing).
///
/// # Safety
/// Async-signal-safe; for a freshly forked process.
#[cfg(target_os = "linux")]
unsafe fn close_all_but(keep: RawFd) {
    use nix::libc;
    // SAFETY: close_range and close take plain integers.
    unsafe {
        let keep = keep as libc::c_uint;
        let low = keep == 0 || libc::syscall(libc::SYS_close_range, 0, keep - 1, 0) == 0;
        let high = libc::syscall(libc::SYS_close_range, keep + 1, libc::c_uint::MAX, 0) == 0;
        if !(low && high) {
            for fd in 0..4096 {
                if fd != keep as RawFd {
                    libc::close(fd);
                }
            }
        }
    }
}

#[cfg(not(target_os = "linux"))]
unsafe fn start_watcher(_read_fd: RawFd, _write_fd: RawFd) {}
