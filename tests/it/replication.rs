//! Helpers for the replication tests: SQLite rows, restores with the real litestream, fake
//! litestream scripts, and background processes that never outlive a test.

#![allow(dead_code)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use rusqlite::Connection;

use crate::support::{litestream, wait_for, TestEnv};

/// Opens `db` the way an application should (WAL, busy timeout).
pub fn open(db: &Path) -> Connection {
    let c = Connection::open(db).unwrap();
    c.busy_timeout(Duration::from_secs(5)).unwrap();
    c.query_row("PRAGMA journal_mode=WAL", [], |_| Ok(()))
        .unwrap();
    c.execute_batch("CREATE TABLE IF NOT EXISTS t (id INTEGER PRIMARY KEY, body TEXT NOT NULL)")
        .unwrap();
    c
}

/// Inserts rows `from..to` into `t`.
pub fn insert(db: &Path, from: i64, to: i64) {
    let c = open(db);
    for i in from..to {
        c.execute(
            "INSERT INTO t (id, body) VALUES (?, ?)",
            rusqlite::params![i, format!("row {i}")],
        )
        .unwrap();
    }
}

/// Every row of `t`, in id order.
pub fn rows(db: &Path) -> Vec<(i64, String)> {
    let c = Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
    let mut s = c.prepare("SELECT id, body FROM t ORDER BY id").unwrap();
    let rows = s.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).unwrap();
    rows.map(Result::unwrap).collect()
}

/// `PRAGMA integrity_check` says ok.
pub fn integrity_ok(db: &Path) -> bool {
    let c = Connection::open(db).unwrap();
    c.query_row("PRAGMA integrity_check", [], |r| r.get::<_, String>(0))
        .unwrap()
        == "ok"
}

/// Restores the file replica in `replica` to `out` with the real litestream.
pub fn restore(replica: &Path, out: &Path) {
    let status = Command::new(litestream())
        .arg("restore")
        .arg("-o")
        .arg(out)
        .arg(format!("file://{}", replica.display()))
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "litestream restore failed");
}

/// A config replicating `env.db()` to `env.path("replica")`, with `extra` appended to the db.
pub fn config_yaml(env: &TestEnv, extra_top: &str, replica_extra: &str) -> String {
    format!(
        "{extra_top}dbs:\n  - path: {}\n    replica:\n      type: file\n      path: {}\n{replica_extra}",
        env.db().display(),
        env.path("replica").display()
    )
}

/// Writes an executable fake litestream: `version` prints 0.5.17, `replicate` runs `body`, any
/// other command succeeds silently.
pub fn fake_litestream(env: &TestEnv, name: &str, body: &str) -> PathBuf {
    let path = env.path(name);
    std::fs::write(
        &path,
        format!(
            "#!/bin/sh\ncase \"$1\" in\n  version) echo 0.5.17; exit 0 ;;\n  replicate) ;;\n  *) exit 0 ;;\nesac\n{body}\n"
        ),
    )
    .unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// A background process killed (with its group) when dropped, so no test leaves one behind.
pub struct Background {
    pub child: Child,
}

impl Background {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn signal(&self, sig: &str) {
        Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.pid().to_string())
            .status()
            .unwrap();
    }

    /// Waits for the exit code (hard timeout).
    pub fn wait_code(&mut self, timeout: Duration) -> Option<i32> {
        let mut code = None;
        let child = &mut self.child;
        wait_for("process exit", timeout, || {
            match child.try_wait().unwrap() {
                Some(status) => {
                    code = Some(status.code().unwrap_or(-1));
                    true
                }
                None => false,
            }
        });
        code
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Starts `cmd` in the background with its output to files `run.out`/`run.err` in `env`.
pub fn spawn(env: &TestEnv, mut cmd: Command) -> Background {
    let out = std::fs::File::create(env.path("run.out")).unwrap();
    let err = std::fs::File::create(env.path("run.err")).unwrap();
    let child = cmd.stdout(out).stderr(err).spawn().unwrap();
    Background { child }
}

/// What the background `run` printed on stderr so far.
pub fn run_stderr(env: &TestEnv) -> String {
    std::fs::read_to_string(env.path("run.err")).unwrap_or_default()
}

/// Pids of processes whose command line contains `needle`.
pub fn pids_with(needle: &str) -> Vec<u32> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) {
            let text = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            if text.contains(needle) {
                out.push(pid);
            }
        }
    }
    out
}

/// True while a process with this pid exists (and is not a zombie).
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z'),
        Err(_) => false,
    }
}

/// Every live (non-zombie) process as (pid, ppid, process group), from /proc.
fn live_processes() -> Vec<(u32, u32, u32)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // After the command name: state, ppid, pgrp, ...
        let fields: Vec<&str> = stat
            .rsplit(')')
            .next()
            .unwrap_or("")
            .split_whitespace()
            .collect();
        let num = |i: usize| fields.get(i).and_then(|f| f.parse::<u32>().ok());
        if let (Some(&state), Some(ppid), Some(pgrp)) = (fields.first(), num(1), num(2)) {
            if state != "Z" {
                out.push((pid, ppid, pgrp));
            }
        }
    }
    out
}

/// Processes in process group `pgid`.
pub fn group_members(pgid: u32) -> Vec<u32> {
    live_processes()
        .into_iter()
        .filter(|p| p.2 == pgid)
        .map(|p| p.0)
        .collect()
}

/// Files under `dir` (recursively) whose content contains `needle`.
pub fn files_containing(dir: &Path, needle: &[u8]) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return found;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        if meta.is_dir() {
            found.extend(files_containing(&path, needle));
        } else if meta.is_file() && meta.len() < 64 << 20 {
            if let Ok(bytes) = std::fs::read(&path) {
                if bytes.windows(needle.len()).any(|w| w == needle) {
                    found.push(path);
                }
            }
        }
    }
    found
}

/// Live (non-zombie) children of `pid`.
pub fn children_of(pid: u32) -> Vec<u32> {
    live_processes()
        .into_iter()
        .filter(|p| p.1 == pid)
        .map(|p| p.0)
        .collect()
}

/// Saves `yaml` as the newest config, creating the key first when there is none.
pub fn save_config(env: &TestEnv, yaml: &str) {
    if !env.key().exists() {
        env.run(["keygen"]).success();
    }
    env.save(yaml).success();
    // The plaintext file was only a means to save: no test should find it later.
    std::fs::remove_file(env.path("to-save.yml")).unwrap();
}

/// True once the file replica in `dir` holds any file.
pub fn replica_has_data(dir: &Path) -> bool {
    fn any_file(dir: &Path) -> bool {
        std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .any(|e| {
                let p = e.path();
                if p.is_dir() {
                    any_file(&p)
                } else {
                    true
                }
            })
    }
    any_file(dir)
}

/// `rip-litestream run ARGS` in the background.
pub fn run_bg(env: &TestEnv, args: &[&str]) -> Background {
    let mut cmd = env.cmd(["run"]);
    cmd.args(args);
    spawn(env, cmd)
}

/// Waits until the background `run` reports litestream ready.
pub fn wait_ready(env: &TestEnv) {
    wait_for("litestream ready", Duration::from_secs(30), || {
        run_stderr(env).contains("litestream ready")
    });
}

/// How a test writer's connection is set up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Checkpoints {
    /// SQLite's defaults: an automatic checkpoint every 1000 frames, as users have it.
    Defaults,
    /// `wal_autocheckpoint=0`: checkpoints left to litestream (the optional tuning).
    LeftToLitestream,
}

/// A writer committing one row about every millisecond until stopped; returns how many rows it
/// wrote in all (ids `first..n`).
pub struct Writer {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    handle: std::thread::JoinHandle<i64>,
}

impl Writer {
    /// On SQLite's defaults.
    pub fn start(db: PathBuf, first: i64) -> Self {
        Writer::with(db, first, Checkpoints::Defaults)
    }

    pub fn with(db: PathBuf, first: i64, checkpoints: Checkpoints) -> Self {
        use std::sync::atomic::Ordering;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let handle = std::thread::spawn(move || {
            let c = open(&db);
            if checkpoints == Checkpoints::LeftToLitestream {
                c.execute_batch("PRAGMA wal_autocheckpoint=0").unwrap();
            }
            let mut i = first;
            while !flag.load(Ordering::Relaxed) {
                c.execute(
                    "INSERT INTO t (id, body) VALUES (?, ?)",
                    rusqlite::params![i, format!("row {i} {}", "x".repeat((i % 50) as usize))],
                )
                .unwrap();
                i += 1;
                std::thread::sleep(Duration::from_millis(1));
            }
            i
        });
        Writer { stop, handle }
    }

    pub fn finish(self) -> i64 {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.handle.join().unwrap()
    }
}

/// Whether `pid` holds a WAL read lock (bytes 123-127 of `DB-shm`) on `db`, from /proc/locks.
pub fn holds_wal_read_lock(pid: u32, db: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let shm = PathBuf::from(format!("{}-shm", db.display()));
    let Ok(meta) = std::fs::metadata(&shm) else {
        return false;
    };
    let inode = format!(":{}", meta.ino());
    std::fs::read_to_string("/proc/locks")
        .unwrap_or_default()
        .lines()
        .any(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.len() >= 8
                && f[1] == "POSIX"
                && f[4] == pid.to_string()
                && f[5].ends_with(&inode)
                && f[6].parse::<u64>().is_ok_and(|s| s <= 127)
                && (f[7] == "EOF" || f[7].parse::<u64>().is_ok_and(|e| e >= 123))
        })
}
