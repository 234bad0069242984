//! Reaping orphans when this process is PID 1 of a container (or a child subreaper): processes
//! the application leaves behind are re-parented to us, and their zombies must be collected.
//!
//! Never `waitpid(-1)`: that would steal the exit statuses of our own children (litestream and
//! the application), which tokio waits for by pid. Instead each SIGCHLD triggers a look, a
//! moment later, at our zombie children, and only those we did not start are reaped.

use std::collections::BTreeSet;
use std::sync::Mutex;
use std::time::Duration;

use nix::sys::wait::{waitpid, WaitPidFlag};
use nix::unistd::Pid;
use tokio::sync::mpsc;

/// The pids this process spawned and waits for itself (litestream, the application, one-off
/// litestream commands): never reaped here.
static SPAWNED: Mutex<BTreeSet<u32>> = Mutex::new(BTreeSet::new());

/// Marks `pid` as one of ours (its waiter reaps it).
pub fn register(pid: u32) {
    SPAWNED.lock().expect("spawned set poisoned").insert(pid);
}

/// `pid` has been reaped by its waiter.
pub fn unregister(pid: u32) {
    SPAWNED.lock().expect("spawned set poisoned").remove(&pid);
}

fn is_registered(pid: u32) -> bool {
    SPAWNED.lock().expect("spawned set poisoned").contains(&pid)
}

/// True when orphans will be re-parented to this process: it is PID 1, or was made a subreaper.
pub fn is_pid1() -> bool {
    std::process::id() == 1
}

/// Makes this process a child subreaper (Linux): orphans of its descendants come to it.
pub fn become_subreaper() -> std::io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: prctl with integer arguments only.
        if unsafe { nix::libc::prctl(nix::libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) } == -1 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }
    #[cfg(not(target_os = "linux"))]
    Err(std::io::Error::other("child subreaper is Linux-only"))
}

/// Reaps orphaned zombies each time `sigchld` ticks, sparing the pids `ours` returns (children
/// whose exit status someone waits for). Ends when `sigchld` closes.
pub async fn reap_orphans(mut sigchld: mpsc::UnboundedReceiver<()>, ours: impl Fn() -> Vec<u32>) {
    while sigchld.recv().await.is_some() {
        // Our own children are reaped by their waiters within this moment.
        tokio::time::sleep(Duration::from_millis(100)).await;
        while sigchld.try_recv().is_ok() {}
        let spared = ours();
        for pid in zombie_children() {
            if spared.contains(&pid) || is_registered(pid) {
                continue;
            }
            match waitpid(Pid::from_raw(pid as i32), Some(WaitPidFlag::WNOHANG)) {
                Ok(status) => tracing::debug!(pid, ?status, "reaped an orphan"),
                Err(e) => tracing::debug!(pid, error = %e, "could not reap"),
            }
        }
    }
}

/// Our children that are zombies, from /proc.
fn zombie_children() -> Vec<u32> {
    let me = std::process::id();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| {
            let pid: u32 = e.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
            let mut fields = stat.rsplit(')').next()?.split_whitespace();
            let state = fields.next()?;
            let ppid: u32 = fields.next()?.parse().ok()?;
            (state == "Z" && ppid == me).then_some(pid)
        })
        .collect()
}
