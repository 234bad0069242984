//! The test harness: a temp environment per test, running the real binary with its output
//! shown on failure, waiting for conditions with a timeout.

#![allow(dead_code)]

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The `rip-litestream` binary under test.
pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_rip-litestream"))
}

/// The real litestream (installed by scripts/install-litestream.sh, or on PATH).
pub fn litestream() -> PathBuf {
    restinpieces_litestream::binary::locate(None)
        .expect("litestream not found: run scripts/install-litestream.sh")
}

/// One test's private world: a temp dir with `app.db`, `age.key` and its own runtime dir.
pub struct TestEnv {
    pub dir: tempfile::TempDir,
}

/// With `RIP_TEST_KEEP=DIR`, a failing test's environment is copied into DIR (database, WAL,
/// replica, runtime dir) for a look afterwards.
impl Drop for TestEnv {
    fn drop(&mut self) {
        let Some(keep) = std::env::var_os("RIP_TEST_KEEP") else {
            return;
        };
        if std::thread::panicking() {
            let _ = std::fs::create_dir_all(&keep);
            let _ = Command::new("cp")
                .arg("-a")
                .arg(self.dir.path())
                .arg(&keep)
                .status();
            eprintln!(
                "kept {} in {}",
                self.dir.path().display(),
                Path::new(&keep).display()
            );
        }
    }
}

impl TestEnv {
    /// `age -d -i KEY` of `content` (written to a file of this env first): its plaintext, or
    /// `None` when the key cannot open it.
    pub fn age_decrypts(&self, key: &Path, content: &[u8]) -> Option<Vec<u8>> {
        let input = self.path("cipher.in");
        std::fs::write(&input, content).unwrap();
        let out = Command::new("age")
            .arg("-d")
            .arg("-i")
            .arg(key)
            .arg(&input)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        out.status.success().then_some(out.stdout)
    }

    /// Whether `age -d -i KEY` opens `content`.
    pub fn age_opens(&self, key: &Path, content: &[u8]) -> bool {
        self.age_decrypts(key, content).is_some()
    }

    pub fn new() -> Self {
        TestEnv {
            dir: tempfile::Builder::new()
                .prefix("rip-it-")
                .tempdir()
                .unwrap(),
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn db(&self) -> PathBuf {
        self.path("app.db")
    }

    pub fn key(&self) -> PathBuf {
        self.path("age.key")
    }

    pub fn runtime(&self) -> PathBuf {
        self.path("run")
    }

    /// `rip-litestream` with `--db`/`--age-key` pointing into this env (through RIP_DB and
    /// RIP_AGE_KEY) and a private runtime directory.
    pub fn cmd<I, S>(&self, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut c = Command::new(bin());
        c.args(args)
            .current_dir(self.dir.path())
            .env("RIP_DB", self.db())
            .env("RIP_AGE_KEY", self.key())
            .env("RIP_RUNTIME_DIR", self.runtime())
            .env("LITESTREAM_BIN", litestream())
            .env_remove("RUST_LOG")
            .stdin(Stdio::null());
        c
    }

    /// Runs `rip-litestream ARGS` to completion (hard timeout 60 s).
    pub fn run<I, S>(&self, args: I) -> Run
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        run_cmd(self.cmd(args))
    }

    /// `init` with a file replica in `replica/`: key, app.db and a saved config.
    pub fn init(&self) -> Run {
        let r = self.run(["init", "--replica", self.path("replica").to_str().unwrap()]);
        r.success();
        r
    }

    /// Saves `yaml` as the newest config.
    pub fn save(&self, yaml: &str) -> Run {
        let file = self.path("to-save.yml");
        std::fs::write(&file, yaml).unwrap();
        self.run([OsStr::new("config"), OsStr::new("save"), file.as_os_str()])
    }
}

/// A finished command: status and output, printed whole when an assertion fails.
pub struct Run {
    pub cmd: String,
    pub output: Output,
}

impl Run {
    pub fn code(&self) -> i32 {
        self.output.status.code().unwrap_or(-1)
    }

    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.output.stdout).into_owned()
    }

    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.output.stderr).into_owned()
    }

    fn explain(&self) -> String {
        format!(
            "command: {}\nstatus: {}\n--- stdout\n{}\n--- stderr\n{}",
            self.cmd,
            self.output.status,
            self.stdout(),
            self.stderr()
        )
    }

    pub fn success(&self) -> &Self {
        assert!(
            self.output.status.success(),
            "expected success\n{}",
            self.explain()
        );
        self
    }

    pub fn code_is(&self, code: i32) -> &Self {
        assert_eq!(
            self.code(),
            code,
            "unexpected exit code\n{}",
            self.explain()
        );
        self
    }

    pub fn stderr_has(&self, needle: &str) -> &Self {
        assert!(
            self.stderr().contains(needle),
            "stderr lacks {needle:?}\n{}",
            self.explain()
        );
        self
    }

    pub fn stdout_has(&self, needle: &str) -> &Self {
        assert!(
            self.stdout().contains(needle),
            "stdout lacks {needle:?}\n{}",
            self.explain()
        );
        self
    }
}

/// Runs `cmd` to completion with a hard timeout of 60 s.
pub fn run_cmd(mut cmd: Command) -> Run {
    let text = format!("{cmd:?}");
    let child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot spawn {text}: {e}"));
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(out) => Run {
            cmd: text,
            output: out.unwrap(),
        },
        Err(_) => {
            let _ = Command::new("kill").arg("-9").arg(pid.to_string()).status();
            panic!("{text} did not finish within 60 s");
        }
    }
}

/// Polls `cond` every 20 ms until it is true or `timeout` passes; panics naming `what`.
pub fn wait_for(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        if start.elapsed() > timeout {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Bytes of every file under `dir` (for "unchanged" checks): sorted (path, content) pairs.
pub fn snapshot(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_default()
}

/// Tests that load the machine (a writer every millisecond beside litestream, a million log
/// lines) take turns: several at once would starve each other on a 2-core machine.
static HEAVY: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Waits for this test's turn among the heavy ones; the turn ends when the guard is dropped.
pub fn heavy() -> std::sync::MutexGuard<'static, ()> {
    HEAVY.lock().unwrap_or_else(|p| p.into_inner())
}
