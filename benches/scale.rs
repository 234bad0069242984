//! The supervisor at 1, 10, 100 and 1000 databases, next to bare litestream with the same
//! config, for `path:` entries (one per database) and for one `dir:` entry holding them all:
//! first start to ready (the fresh-database guard included), restart to ready, stop (SIGTERM
//! to exit), idle memory and CPU, and `status --json` (bare: `litestream list -json`).
//!
//! `cargo bench --bench scale` prints a Markdown table on stdout (scripts/bench.sh puts it into
//! BENCHMARKS.md). `BENCH_SCALE_MAX=100` stops at 100 databases; `BENCH_QUICK=1` takes fewer
//! samples and a shorter idle window. Every replica is a local file replica.
#![allow(missing_docs)]

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use restinpieces_litestream::runtime::RuntimeDir;
use restinpieces_litestream::ConfigStore;

fn quick() -> bool {
    std::env::var_os("BENCH_QUICK").is_some()
}

fn rip() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_rip-litestream"))
}

fn litestream() -> PathBuf {
    restinpieces_litestream::binary::locate(None)
        .expect("litestream: run scripts/install-litestream.sh")
}

/// Median, min and max of samples.
struct Stats {
    median: f64,
    min: f64,
    max: f64,
    n: usize,
}

fn stats(mut v: Vec<f64>) -> Stats {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let n = v.len();
    let median = if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    };
    Stats {
        median,
        min: v[0],
        max: v[n - 1],
        n,
    }
}

fn fmt(s: &Stats, unit: &str) -> String {
    let p = if s.median >= 100.0 { 0 } else { 1 };
    format!(
        "{:.p$} {unit} ({:.p$}–{:.p$}, n={})",
        s.median, s.min, s.max, s.n
    )
}

/// How the databases are named in the config.
#[derive(Clone, Copy, PartialEq)]
enum Kind {
    /// One `path:` entry per database.
    Path,
    /// One `dir:` + `pattern:` entry.
    Dir,
}

/// N databases (copies of one small WAL database), a config store beside them.
struct World {
    dir: tempfile::TempDir,
    n: usize,
    kind: Kind,
    template: Vec<u8>,
}

impl World {
    fn new(n: usize, kind: Kind) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("rip-scale-")
            .tempdir()
            .unwrap();
        let template_path = dir.path().join("template.db");
        let c = rusqlite::Connection::open(&template_path).unwrap();
        c.execute_batch(
            "PRAGMA journal_mode=WAL; CREATE TABLE t (id INTEGER PRIMARY KEY, body TEXT NOT NULL);
             INSERT INTO t (body) VALUES ('first'); PRAGMA wal_checkpoint(TRUNCATE);",
        )
        .unwrap();
        drop(c);
        let template = std::fs::read(&template_path).unwrap();
        let w = World {
            dir,
            n,
            kind,
            template,
        };
        restinpieces_litestream::keys::generate(&w.key()).unwrap();
        rusqlite::Connection::open(w.store())
            .unwrap()
            .execute_batch("PRAGMA journal_mode=WAL;")
            .unwrap();
        let store = ConfigStore::open(w.store(), w.key()).unwrap();
        store
            .save("litestream", w.yaml(None).as_bytes(), "yml", "bench")
            .unwrap();
        w.fresh();
        w
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
    fn store(&self) -> PathBuf {
        self.path("config.db")
    }
    fn key(&self) -> PathBuf {
        self.path("age.key")
    }
    fn runtime(&self) -> PathBuf {
        self.path("run")
    }
    fn db(&self, i: usize) -> PathBuf {
        self.path(&format!("dbs/d{i:04}.db"))
    }

    /// Every database new, no litestream state, no replica: a first start.
    fn fresh(&self) {
        let _ = std::fs::remove_dir_all(self.path("dbs"));
        let _ = std::fs::remove_dir_all(self.path("replicas"));
        std::fs::create_dir(self.path("dbs")).unwrap();
        for i in 0..self.n {
            std::fs::write(self.db(i), &self.template).unwrap();
        }
    }

    /// The config; with `socket`, the control socket section bare litestream needs.
    fn yaml(&self, socket: Option<&Path>) -> String {
        let mut y = String::new();
        if let Some(s) = socket {
            y.push_str(&format!(
                "socket:\n  enabled: true\n  path: {}\n  permissions: 0600\n",
                s.display()
            ));
        }
        y.push_str("dbs:\n");
        match self.kind {
            Kind::Path => {
                for i in 0..self.n {
                    y.push_str(&format!(
                        "  - path: {}\n    replica:\n      type: file\n      path: {}\n",
                        self.db(i).display(),
                        self.path(&format!("replicas/d{i:04}")).display()
                    ));
                }
            }
            Kind::Dir => y.push_str(&format!(
                "  - dir: {}\n    pattern: \"*.db\"\n    replica:\n      type: file\n      path: {}\n",
                self.path("dbs").display(),
                self.path("replicas").display()
            )),
        }
        y
    }

    /// `rip-litestream run` and the control socket of its litestream.
    fn spawn_supervised(&self) -> (Child, PathBuf) {
        let child = Command::new(rip())
            .args(["run"])
            .env("RIP_DB", self.store())
            .env("RIP_AGE_KEY", self.key())
            .env("RIP_RUNTIME_DIR", self.runtime())
            .env("LITESTREAM_BIN", litestream())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::env::set_var("RIP_RUNTIME_DIR", self.runtime());
        let socket = RuntimeDir::path_for(&self.store())
            .unwrap()
            .join("control.sock");
        (child, socket)
    }

    /// Bare `litestream replicate` with the same config plus a socket section.
    fn spawn_bare(&self) -> (Child, PathBuf) {
        let socket = self.path("bare.sock");
        let _ = std::fs::remove_file(&socket);
        let config = self.path("bare.yml");
        std::fs::write(&config, self.yaml(Some(&socket))).unwrap();
        let child = Command::new(litestream())
            .args(["replicate", "-no-expand-env", "-config"])
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        (child, socket)
    }

    fn spawn(&self, supervised: bool) -> (Child, PathBuf) {
        if supervised {
            self.spawn_supervised()
        } else {
            self.spawn_bare()
        }
    }
}

/// `GET path` on the control socket: the body, when it answered 200.
fn get(socket: &Path, path: &str) -> Option<String> {
    let mut s = UnixStream::connect(socket).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    // HTTP/1.0: the answer is never chunked (a long `/list` would be, to HTTP/1.1).
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").as_bytes())
        .ok()?;
    let mut raw = String::new();
    s.read_to_string(&mut raw).ok()?;
    let (head, body) = raw.split_once("\r\n\r\n")?;
    (head.split_whitespace().nth(1) == Some("200")).then(|| body.to_owned())
}

/// True once `GET /info` answers on `socket` (what benches/supervision.rs calls ready).
fn answers(socket: &Path) -> bool {
    get(socket, "/info").is_some()
}

/// How many databases litestream lists, and how many of them synced at least once.
fn synced(socket: &Path) -> (usize, usize) {
    let Some(v) =
        get(socket, "/list").and_then(|b| serde_json::from_str::<serde_json::Value>(&b).ok())
    else {
        return (0, 0);
    };
    let dbs = v["databases"].as_array().cloned().unwrap_or_default();
    let done = dbs.iter().filter(|d| d["last_sync_at"].is_string()).count();
    (dbs.len(), done)
}

/// Waits (at most `timeout`) until litestream lists `n` databases, each synced at least once;
/// says on stderr when that did not happen (the measure goes on).
fn wait_all_synced(socket: &Path, n: usize, timeout: Duration, what: &str) {
    let start = Instant::now();
    let mut last = (0, 0);
    while start.elapsed() < timeout {
        last = synced(socket);
        if last == (n, n) {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    eprintln!(
        "{what}: after {timeout:?}, {} listed, {} synced, of {n}",
        last.0, last.1
    );
}

fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    let mut pause = Duration::from_micros(500);
    while !f() {
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(10));
    }
}

/// SIGTERM, then the time until it exited.
fn stop(mut child: Child) -> Duration {
    let start = Instant::now();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    child.wait().unwrap();
    start.elapsed()
}

fn rss_kib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0.0)
}

/// CPU time of every thread of `pid`, in nanoseconds (schedstat).
fn cpu_ns(pid: u32) -> u64 {
    let mut total = 0;
    for t in std::fs::read_dir(format!("/proc/{pid}/task"))
        .into_iter()
        .flatten()
        .flatten()
    {
        if let Ok(s) = std::fs::read_to_string(t.path().join("schedstat")) {
            total += s
                .split_whitespace()
                .next()
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0);
        }
    }
    total
}

/// The pid of the litestream a supervisor runs (the process whose parent is `pid`).
fn child_of(pid: u32) -> u32 {
    let mut found = None;
    wait_until("litestream child", Duration::from_secs(30), || {
        for e in std::fs::read_dir("/proc").unwrap().flatten() {
            let Some(p) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            if let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) {
                let ppid = stat.rsplit(')').next().unwrap().split_whitespace().nth(1);
                if ppid == Some(&pid.to_string()) {
                    found = Some(p);
                    return true;
                }
            }
        }
        false
    });
    found.unwrap()
}

/// Samples, supervised and bare, of one measure.
#[derive(Default)]
struct Pair {
    sup: Vec<f64>,
    bare: Vec<f64>,
}

impl Pair {
    fn push(&mut self, supervised: bool, v: f64) {
        if supervised {
            self.sup.push(v)
        } else {
            self.bare.push(v)
        }
    }

    fn row(self, n: usize, kind: &str, what: &str, unit: &str) -> String {
        let (s, b) = (stats(self.sup), stats(self.bare));
        format!(
            "| {n} | {kind} | {what} | {} | {} | {:.2} |\n",
            fmt(&s, unit),
            fmt(&b, unit),
            s.median / b.median.max(1e-9)
        )
    }
}

/// Starts (first and repeated) and stops, supervised and bare alternating.
fn starts_and_stops(w: &World, samples: usize, out: &mut String, kind: &str) {
    let n = w.n;
    let timeout = Duration::from_secs(120 + n as u64 / 5);
    let synced_timeout = Duration::from_secs(30 + n as u64 / 10);
    let (mut first, mut again, mut stops) = (Pair::default(), Pair::default(), Pair::default());
    for i in 0..samples * 2 {
        // Alternate, so drift on a shared machine hits both alike.
        let supervised = i % 2 == 0;
        w.fresh();
        let start = Instant::now();
        let (child, socket) = w.spawn(supervised);
        wait_until("ready", timeout, || answers(&socket));
        first.push(supervised, start.elapsed().as_secs_f64() * 1000.0);
        wait_all_synced(
            &socket,
            n,
            synced_timeout,
            &format!("first start, supervised {supervised}"),
        );
        stop(child);
        // Again, with litestream's state and the replicas there (a restart, a deploy).
        let start = Instant::now();
        let (child, socket) = w.spawn(supervised);
        wait_until("ready", timeout, || answers(&socket));
        again.push(supervised, start.elapsed().as_secs_f64() * 1000.0);
        wait_all_synced(
            &socket,
            n,
            synced_timeout,
            &format!("restart, supervised {supervised}"),
        );
        stops.push(supervised, stop(child).as_secs_f64() * 1000.0);
    }
    out.push_str(&first.row(n, kind, "first start to ready", "ms"));
    out.push_str(&again.row(n, kind, "restart to ready", "ms"));
    out.push_str(&stops.row(n, kind, "stop (SIGTERM to exit, all synced)", "ms"));
}

/// Idle memory and CPU side by side, then `status --json` against `litestream list -json`.
fn idle_and_status(ws: &World, wb: &World, idle: Duration, out: &mut String, kind: &str) {
    let n = ws.n;
    let timeout = Duration::from_secs(30 + n as u64 / 10);
    ws.fresh();
    wb.fresh();
    let (sup, sup_socket) = ws.spawn_supervised();
    let (bare, bare_socket) = wb.spawn_bare();
    wait_all_synced(&sup_socket, n, timeout, "idle, supervised");
    wait_all_synced(&bare_socket, n, timeout, "idle, bare");
    let child = child_of(sup.id());
    std::thread::sleep(Duration::from_secs(3)); // settle: the measured window starts idle
    let (s0, c0, b0) = (cpu_ns(sup.id()), cpu_ns(child), cpu_ns(bare.id()));
    std::thread::sleep(idle);
    let (s1, c1, b1) = (cpu_ns(sup.id()), cpu_ns(child), cpu_ns(bare.id()));
    let (sup_rss, child_rss, bare_rss) = (rss_kib(sup.id()), rss_kib(child), rss_kib(bare.id()));
    let pct = |a: u64, b: u64| (b - a) as f64 / idle.as_nanos() as f64 * 100.0;
    out.push_str(&format!(
        "| {n} | {kind} | idle RSS | supervisor {:.1} MiB + its litestream {:.1} MiB | {:.1} MiB | {:.2} (both / bare) |\n",
        sup_rss / 1024.0,
        child_rss / 1024.0,
        bare_rss / 1024.0,
        (sup_rss + child_rss) / bare_rss.max(1.0)
    ));
    out.push_str(&format!(
        "| {n} | {kind} | idle CPU over {} s, % of a core | supervisor {:.2} % + its litestream {:.1} % | {:.1} % | {:.2} (both / bare) |\n",
        idle.as_secs(),
        pct(s0, s1),
        pct(c0, c1),
        pct(b0, b1),
        (pct(s0, s1) + pct(c0, c1)) / pct(b0, b1).max(1e-9)
    ));
    let mut status = Pair::default();
    for _ in 0..if quick() { 3 } else { 7 } {
        let start = Instant::now();
        let ok = Command::new(rip())
            .args(["status", "--json"])
            .env("RIP_DB", ws.store())
            .env("RIP_AGE_KEY", ws.key())
            .env("RIP_RUNTIME_DIR", ws.runtime())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap();
        status.push(true, start.elapsed().as_secs_f64() * 1000.0);
        assert!(ok.code().is_some(), "status --json did not exit");
        let start = Instant::now();
        Command::new(litestream())
            .args(["list", "-json", "-socket"])
            .arg(&bare_socket)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap();
        status.push(false, start.elapsed().as_secs_f64() * 1000.0);
    }
    out.push_str(&status.row(
        n,
        kind,
        "`status --json` (bare: `litestream list -json`)",
        "ms",
    ));
    stop(sup);
    stop(bare);
}

fn main() {
    let max: usize = std::env::var("BENCH_SCALE_MAX")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let idle = Duration::from_secs(if quick() { 10 } else { 30 });
    let min: usize = std::env::var("BENCH_SCALE_MIN")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    println!(
        "| databases | config | measure | supervised (rip-litestream) | bare litestream | ratio |"
    );
    println!("|---|---|---|---|---|---|");
    let t = Instant::now();
    for n in [1, 10, 100, 1000]
        .into_iter()
        .filter(|n| (min..=max).contains(n))
    {
        for (kind, name) in [(Kind::Path, "`path:`"), (Kind::Dir, "`dir:`")] {
            let samples = match (quick(), n) {
                (true, _) => 3,
                (false, 1000) => 3,
                _ => 9,
            };
            let mut out = String::new();
            let w = World::new(n, kind);
            starts_and_stops(&w, samples, &mut out, name);
            let wb = World::new(n, kind);
            idle_and_status(&w, &wb, idle, &mut out, name);
            print!("{out}");
            eprintln!("{n} databases, {name} done ({:.0?})", t.elapsed());
        }
    }
}
