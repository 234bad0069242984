//! The supervisor's cost next to bare litestream, measured side by side in one run:
//! start to ready, memory, idle CPU, log throughput, restart latency, replication lag.
//!
//! `cargo bench --bench supervision` prints a Markdown report on stdout (scripts/bench.sh puts
//! it into BENCHMARKS.md). `BENCH_QUICK=1` shortens every measurement (for a smoke run).
#![allow(missing_docs)] // criterion's macros define undocumented public functions

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use restinpieces_litestream::backoff::Backoff;
use restinpieces_litestream::runtime::RuntimeDir;
use restinpieces_litestream::{
    ConfigStore, Litestream, LitestreamConfig, Options, State, Strictness,
};

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

/// Median, min and max of samples, in the unit given.
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
    format!(
        "{:.2} {unit} ({:.2}–{:.2}, n={})",
        s.median, s.min, s.max, s.n
    )
}

/// One benchmark world: a key, an app database in WAL mode with a table, a config saved in it.
struct World {
    dir: tempfile::TempDir,
}

impl World {
    fn new(sync_interval: &str) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("rip-bench-")
            .tempdir()
            .unwrap();
        let w = World { dir };
        restinpieces_litestream::keys::generate(&w.key()).unwrap();
        let c = rusqlite::Connection::open(w.db()).unwrap();
        c.execute_batch(
            "PRAGMA journal_mode=WAL; CREATE TABLE t (id INTEGER PRIMARY KEY, body TEXT NOT NULL);
             INSERT INTO t (body) VALUES ('first');",
        )
        .unwrap();
        drop(c);
        let store = ConfigStore::open(w.db(), w.key()).unwrap();
        store
            .save(
                "litestream",
                w.yaml(sync_interval, None).as_bytes(),
                "yml",
                "bench",
            )
            .unwrap();
        w
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
    fn db(&self) -> PathBuf {
        self.path("app.db")
    }
    fn key(&self) -> PathBuf {
        self.path("age.key")
    }
    fn runtime(&self) -> PathBuf {
        self.path("run")
    }

    /// The config; with `socket`, the control socket section bare litestream needs.
    fn yaml(&self, sync_interval: &str, socket: Option<&Path>) -> String {
        let mut y = String::new();
        if let Some(s) = socket {
            y.push_str(&format!(
                "socket:\n  enabled: true\n  path: {}\n  permissions: 0600\n",
                s.display()
            ));
        }
        y.push_str(&format!(
            "dbs:\n  - path: {}\n    replica:\n      type: file\n      path: {}\n      sync-interval: {sync_interval}\n",
            self.db().display(),
            self.path("replica").display()
        ));
        y
    }

    /// `rip-litestream run` and the socket that says it is ready.
    fn spawn_supervised(&self, extra: &[&str]) -> (Child, PathBuf) {
        let child = Command::new(rip())
            .args(["run"])
            .args(extra)
            .env("RIP_DB", self.db())
            .env("RIP_AGE_KEY", self.key())
            .env("RIP_RUNTIME_DIR", self.runtime())
            .env("LITESTREAM_BIN", litestream())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::env::set_var("RIP_RUNTIME_DIR", self.runtime());
        let socket = RuntimeDir::path_for(&self.db())
            .unwrap()
            .join("control.sock");
        (child, socket)
    }

    /// Bare `litestream replicate` with the same config plus a socket section.
    fn spawn_bare(&self, sync_interval: &str) -> (Child, PathBuf) {
        let socket = self.path("bare.sock");
        let _ = std::fs::remove_file(&socket);
        let config = self.path("bare.yml");
        std::fs::write(&config, self.yaml(sync_interval, Some(&socket))).unwrap();
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
}

/// True once `GET /info` answers on `socket`.
fn answers(socket: &Path) -> bool {
    let Ok(mut s) = UnixStream::connect(socket) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    if s.write_all(b"GET /info HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut buf = [0u8; 16];
    matches!(s.read(&mut buf), Ok(n) if n >= 12 && &buf[9..12] == b"200")
}

fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_micros(500));
    }
}

fn stop(mut child: Child) {
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
    let _ = child.wait();
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

fn child_of(pid: u32) -> u32 {
    let mut found = None;
    wait_until("litestream child", Duration::from_secs(10), || {
        for e in std::fs::read_dir("/proc").unwrap().flatten() {
            let Some(p) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            if let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) {
                let ppid = stat
                    .rsplit(')')
                    .next()
                    .unwrap()
                    .split_whitespace()
                    .nth(1)
                    .map(str::to_owned);
                if ppid.as_deref() == Some(&pid.to_string()) {
                    found = Some(p);
                    return true;
                }
            }
        }
        false
    });
    found.unwrap()
}

/// 1. Start to ready: supervised (store, decrypt, validate, handoff, spawn, ready) vs bare.
fn start_to_ready(out: &mut String) {
    let n = if quick() { 5 } else { 20 };
    let w = World::new("1s");
    let (mut sup, mut bare) = (Vec::new(), Vec::new());
    for i in 0..n * 2 {
        // Alternate, so drift on a shared machine hits both alike.
        let supervised = i % 2 == 0;
        let start = Instant::now();
        let (child, socket) = if supervised {
            w.spawn_supervised(&[])
        } else {
            w.spawn_bare("1s")
        };
        wait_until("ready", Duration::from_secs(20), || answers(&socket));
        let ms = start.elapsed().as_secs_f64() * 1000.0;
        if supervised {
            sup.push(ms)
        } else {
            bare.push(ms)
        }
        stop(child);
    }
    let (s, b) = (stats(sup), stats(bare));
    out.push_str(&format!(
        "| 1. Start to ready | {} | {} | {:.2} (overhead {:+.2} ms) | overhead <= 10 ms or ratio <= 1.3 |\n",
        fmt(&s, "ms"),
        fmt(&b, "ms"),
        s.median / b.median,
        s.median - b.median
    ));
}

/// 2 and 3. Memory while replicating, and CPU over an idle period.
fn memory_and_idle(out: &mut String) {
    let idle = Duration::from_secs(if quick() { 10 } else { 60 });
    let (ws, wb) = (World::new("1s"), World::new("1s"));
    let (sup, sup_socket) = ws.spawn_supervised(&[]);
    let (bare, bare_socket) = wb.spawn_bare("1s");
    wait_until("supervised ready", Duration::from_secs(20), || {
        answers(&sup_socket)
    });
    wait_until("bare ready", Duration::from_secs(20), || {
        answers(&bare_socket)
    });
    let child = child_of(sup.id());
    std::thread::sleep(Duration::from_secs(3)); // settle: the measured period starts idle
    let (sup_rss, child_rss, bare_rss) = (rss_kib(sup.id()), rss_kib(child), rss_kib(bare.id()));
    let (s0, c0, b0) = (cpu_ns(sup.id()), cpu_ns(child), cpu_ns(bare.id()));
    std::thread::sleep(idle);
    let (s1, c1, b1) = (cpu_ns(sup.id()), cpu_ns(child), cpu_ns(bare.id()));
    let pct = |a: u64, b: u64| (b - a) as f64 / idle.as_nanos() as f64 * 100.0;
    out.push_str(&format!(
        "| 2. Memory (RSS while replicating) | supervisor {:.1} MiB (+ its litestream {:.1} MiB) | {:.1} MiB | supervisor / litestream {:.2} | supervisor <= 5 MiB |\n",
        sup_rss / 1024.0,
        child_rss / 1024.0,
        bare_rss / 1024.0,
        sup_rss / bare_rss
    ));
    out.push_str(&format!(
        "| 3. Idle CPU over {} s | supervisor {:.3} % of a core ({:.1} ms); its litestream {:.3} % | {:.3} % | supervisor / litestream {:.2} | supervisor < 0.1 % |\n",
        idle.as_secs(),
        pct(s0, s1),
        (s1 - s0) as f64 / 1e6,
        pct(c0, c1),
        pct(b0, b1),
        pct(s0, s1) / pct(b0, b1).max(1e-9)
    ));
    stop(sup);
    stop(bare);
}

/// 4. Log throughput: a fake litestream prints a million litestream-like JSON lines.
fn log_throughput(out: &mut String) {
    let lines = if quick() { 200_000 } else { 1_000_000 };
    let w = World::new("1s");
    let file = w.path("lines.json");
    {
        let mut f = std::io::BufWriter::new(std::fs::File::create(&file).unwrap());
        for i in 0..lines {
            writeln!(
                f,
                r#"{{"time":"2026-11-25T12:00:00.000Z","level":"INFO","msg":"sync","db":"/data/app.db","txid":{i}}}"#
            )
            .unwrap();
        }
    }
    let fake = w.path("fake-litestream");
    std::fs::write(
        &fake,
        format!(
            "#!/bin/sh\ncase \"$1\" in version) echo 0.5.17; exit 0;; replicate) ;; *) exit 0;; esac\ncat {}\nexec sleep 60\n",
            file.display()
        ),
    )
    .unwrap();
    std::os::unix::fs::PermissionsExt::set_mode(
        &mut std::fs::metadata(&fake).unwrap().permissions(),
        0o755,
    );
    Command::new("chmod")
        .arg("755")
        .arg(&fake)
        .status()
        .unwrap();
    let store = ConfigStore::open(w.db(), w.key()).unwrap();
    let yaml = format!("socket:\n  enabled: false\n{}", w.yaml("1s", None));
    store
        .save("litestream", yaml.as_bytes(), "yml", "bench")
        .unwrap();

    // Bare: the same lines through one pipe, read as fast as possible.
    let start = Instant::now();
    let mut cat = Command::new("cat")
        .arg(&file)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut n = 0;
    for _ in BufReader::with_capacity(1 << 16, cat.stdout.take().unwrap()).lines() {
        n += 1;
    }
    cat.wait().unwrap();
    let bare_rate = n as f64 / start.elapsed().as_secs_f64();

    let mut rates = Vec::new();
    for mode in ["verbatim", "tracing"] {
        let mut child = Command::new(rip())
            .args(["run", "--grace", "2s", "--litestream"])
            .arg(&fake)
            .args(["--litestream-logs", mode])
            .env("RIP_DB", w.db())
            .env("RIP_AGE_KEY", w.key())
            .env("RIP_RUNTIME_DIR", w.runtime())
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // Count the forwarded lines until none has come for a second (the child printed them
        // all; in tracing mode some may have been dropped, and are counted as such).
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::with_capacity(1 << 16, stderr).lines() {
                let Ok(line) = line else { break };
                if line.contains("txid")
                    && line.contains("sync")
                    && tx.send(Instant::now()).is_err()
                {
                    break;
                }
            }
        });
        let first = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("no line forwarded");
        let (mut last, mut count) = (first, 1usize);
        while let Ok(t) = rx.recv_timeout(Duration::from_secs(1)) {
            last = t;
            count += 1;
        }
        let rate = count as f64 / last.duration_since(first).as_secs_f64().max(1e-6);
        rates.push((mode, rate, count));
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status();
        let _ = child.wait();
    }

    // A reader that stalls for 3 s: how long the child takes to print everything.
    let done = w.path("done");
    std::fs::write(
        &fake,
        format!(
            "#!/bin/sh\ncase \"$1\" in version) echo 0.5.17; exit 0;; replicate) ;; *) exit 0;; esac\ncat {}\ntouch {}\nexec sleep 60\n",
            file.display(),
            done.display()
        ),
    )
    .unwrap();
    let mut child = Command::new(rip())
        .args(["run", "--grace", "2s", "--litestream"])
        .arg(&fake)
        .env("RIP_DB", w.db())
        .env("RIP_AGE_KEY", w.key())
        .env("RIP_RUNTIME_DIR", w.runtime())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    wait_until(
        "the child printed everything",
        Duration::from_secs(60),
        || done.exists(),
    );
    let blocked_child = start.elapsed();
    let mut err = child.stderr.take().unwrap();
    std::thread::sleep(Duration::from_secs(3).saturating_sub(start.elapsed()));
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
    let mut text = String::new();
    let _ = err.read_to_string(&mut text);
    let _ = child.wait();
    let dropped = text.lines().any(|l| l.contains("lines dropped"));

    for (mode, rate, count) in rates {
        out.push_str(&format!(
            "| 4. Log throughput, {mode} ({lines} lines printed, {count} forwarded, {} dropped) | {:.0} lines/s | {:.0} lines/s (cat through a pipe) | {:.2} | verbatim >= 500 000 lines/s |\n",
            lines - count.min(lines),
            rate,
            bare_rate,
            rate / bare_rate
        ));
    }
    out.push_str(&format!(
        "| 4b. Slow reader (stderr unread for 3 s) | child printed {lines} lines in {:.2} s, never blocked; drops reported: {dropped} | | | child never blocked |\n",
        blocked_child.as_secs_f64()
    ));
}

/// 5. Restart latency: kill -9 to the new litestream being ready, minus the backoff delay.
fn restart_latency(out: &mut String) {
    let n = if quick() { 5 } else { 15 };
    let w = World::new("1s");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let delay = Duration::from_millis(100);
    let samples = rt.block_on(async {
        let store = ConfigStore::open(w.db(), w.key()).unwrap();
        let config = LitestreamConfig::parse(
            &store.load("litestream", 0).unwrap().plaintext,
            Strictness::Lenient,
        )
        .unwrap();
        let mut daemon = Litestream::new(config, {
            let mut options = Options::default();
            options.instance = Some(w.db());
            options.runtime_base = Some(w.runtime());
            options.backoff = Backoff {
                initial: delay,
                factor: 1.0,
                jitter: 0.0,
                ..Backoff::default()
            };
            options
        });
        daemon.start().await.unwrap();
        let mut rx = daemon.status();
        let mut samples = Vec::new();
        for _ in 0..n {
            let old = rx.borrow().pid.unwrap();
            let killed = Instant::now();
            nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(old as i32),
                nix::sys::signal::Signal::SIGKILL,
            )
            .unwrap();
            loop {
                {
                    let s = rx.borrow_and_update();
                    if s.state == State::Ready && s.pid.is_some() && s.pid != Some(old) {
                        break;
                    }
                }
                rx.changed().await.unwrap();
            }
            samples.push((killed.elapsed().saturating_sub(delay)).as_secs_f64() * 1000.0);
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        daemon.stop(Duration::from_secs(40)).await.unwrap();
        samples
    });
    // The bare counterpart: a fresh litestream's own start to ready.
    let mut bare = Vec::new();
    for _ in 0..n {
        let start = Instant::now();
        let (child, socket) = w.spawn_bare("1s");
        wait_until("ready", Duration::from_secs(20), || answers(&socket));
        bare.push(start.elapsed().as_secs_f64() * 1000.0);
        stop(child);
    }
    let (s, b) = (stats(samples), stats(bare));
    out.push_str(&format!(
        "| 5. Restart latency (kill -9 to ready, minus the {} ms backoff) | {} | {} (a fresh litestream's start to ready) | {:.2} | <= 50 ms |\n",
        delay.as_millis(),
        fmt(&s, "ms"),
        fmt(&b, "ms"),
        s.median / b.median
    ));
}

/// 6. Replication lag: commit to a new LTX file in the replica, supervised vs bare.
fn replication_lag(out: &mut String) {
    let n = if quick() { 5 } else { 20 };
    let mut results = Vec::new();
    for supervised in [true, false] {
        let w = World::new("1s");
        let (child, socket) = if supervised {
            w.spawn_supervised(&[])
        } else {
            w.spawn_bare("1s")
        };
        wait_until("ready", Duration::from_secs(20), || answers(&socket));
        let replica = w.path("replica");
        let count = || count_files(&replica);
        wait_until("first sync", Duration::from_secs(20), || count() > 0);
        std::thread::sleep(Duration::from_millis(1500));
        let c = rusqlite::Connection::open(w.db()).unwrap();
        c.busy_timeout(Duration::from_secs(5)).unwrap();
        let mut samples = Vec::new();
        for i in 0..n {
            let before = count();
            let start = Instant::now();
            c.execute("INSERT INTO t (body) VALUES (?)", [format!("row {i}")])
                .unwrap();
            wait_until("the write in the replica", Duration::from_secs(20), || {
                count() > before
            });
            samples.push(start.elapsed().as_secs_f64() * 1000.0);
            // Start the next write at another point of the sync cycle.
            std::thread::sleep(Duration::from_millis(137));
        }
        results.push(stats(samples));
        stop(child);
    }
    out.push_str(&format!(
        "| 6. Replication lag (sync-interval 1s) | {} | {} | {:.2} | ratio 1.0 within noise |\n",
        fmt(&results[0], "ms"),
        fmt(&results[1], "ms"),
        results[0].median / results[1].median
    ));
}

fn count_files(dir: &Path) -> usize {
    let mut n = 0;
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        n += if p.is_dir() { count_files(&p) } else { 1 };
    }
    n
}

fn main() {
    // `cargo bench` passes --bench; anything else (e.g. a filter) is ignored.
    let mut out = String::new();
    out.push_str("| measure | supervised (rip-litestream) | bare litestream | ratio | goal |\n");
    out.push_str("|---|---|---|---|---|\n");
    let t = Instant::now();
    start_to_ready(&mut out);
    eprintln!("start to ready done ({:.0?})", t.elapsed());
    memory_and_idle(&mut out);
    eprintln!("memory and idle done ({:.0?})", t.elapsed());
    log_throughput(&mut out);
    eprintln!("log throughput done ({:.0?})", t.elapsed());
    restart_latency(&mut out);
    eprintln!("restart latency done ({:.0?})", t.elapsed());
    replication_lag(&mut out);
    eprintln!("replication lag done ({:.0?})", t.elapsed());
    println!("{out}");
}
