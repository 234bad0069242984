//! End to end against S3: the real litestream replicating to moto's S3 server on loopback
//! (installed into `.tools/moto` by scripts/install-deps.sh), restores compared row by row,
//! credentials kept out of every command line, environment and output, `AWS_CA_BUNDLE` withheld,
//! and a stalled replica reported by `status` and `/healthz` until it recovers.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use crate::replication::*;
use crate::support::{litestream, run_cmd, wait_for, Run, TestEnv};

const LONG: Duration = Duration::from_secs(30);
const BUCKET: &str = "test-bucket";

/// moto's S3 server on a free loopback port, with the bucket created; killed (whole process
/// group) and reaped when dropped, even while stopped with SIGSTOP.
pub(crate) struct S3Server {
    child: Child,
    port: u16,
    /// moto is a Python server: its tests take turns with the other heavy ones.
    turn: Option<std::sync::MutexGuard<'static, ()>>,
}

impl S3Server {
    pub(crate) fn start(env: &TestEnv) -> S3Server {
        let mut turn = Some(crate::support::heavy());
        let moto = Path::new(env!("CARGO_MANIFEST_DIR")).join(".tools/moto");
        assert!(
            moto.join("moto/server.py").is_file(),
            "moto is not installed in {}: run `bash scripts/install-deps.sh` (it installs \
             moto[server] there)",
            moto.display()
        );
        let log = env.path("moto.log");
        // A port picked free can be taken before moto binds it: then moto exits, try another.
        for _ in 0..3 {
            let port = free_port();
            let out = std::fs::File::create(&log).unwrap();
            let mut cmd = Command::new("python3");
            cmd.args([
                "-m",
                "moto.server",
                "-H",
                "127.0.0.1",
                "-p",
                &port.to_string(),
            ])
            .env("PYTHONPATH", &moto)
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .process_group(0);
            // SAFETY: prctl is async-signal-safe and nothing here allocates; the signal makes moto
            // exit even when this test process is killed before `Drop` runs.
            unsafe {
                cmd.pre_exec(|| {
                    nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)
                        .map_err(|e| std::io::Error::from_raw_os_error(e as i32))
                });
            }
            let child = cmd
                .spawn()
                .unwrap_or_else(|e| panic!("cannot run python3 for moto: {e}"));
            let mut server = S3Server {
                child,
                port,
                turn: turn.take(),
            };
            let mut exited = false;
            wait_for(
                "moto's S3 server to answer",
                Duration::from_secs(60),
                || {
                    exited = server.child.try_wait().unwrap().is_some();
                    exited || http(port, "GET", "/").is_some()
                },
            );
            if exited {
                turn = server.turn.take();
                continue;
            }
            let created = http(port, "PUT", &format!("/{BUCKET}"));
            assert_eq!(
                created.as_ref().map(|r| r.0),
                Some(200),
                "creating the bucket: {created:?}"
            );
            return server;
        }
        panic!(
            "moto's S3 server did not start:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }

    pub(crate) fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn signal(&self, sig: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.child.id() as i32), sig).unwrap();
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let group = nix::unistd::Pid::from_raw(-(self.child.id() as i32));
        let _ = nix::sys::signal::kill(group, nix::sys::signal::Signal::SIGKILL);
        let _ = self.child.wait();
    }
}

/// A running `rip-litestream run`; when dropped without a graceful stop (a failed assertion),
/// its litestream is killed too, rather than left retrying its final sync against a dead server.
struct Supervisor(Background);

impl Drop for Supervisor {
    fn drop(&mut self) {
        if self.0.child.try_wait().ok().flatten().is_none() {
            for pid in children_of(self.0.pid()) {
                let _ = Command::new("kill").arg("-9").arg(pid.to_string()).status();
            }
        }
    }
}

/// Credentials unique to one test, so a leak found is that test's own.
pub(crate) struct Creds {
    pub(crate) key_id: String,
    pub(crate) secret: String,
}

pub(crate) fn creds() -> Creds {
    static N: AtomicU32 = AtomicU32::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let pid = std::process::id();
    Creds {
        key_id: format!("AKIA-S3-TEST-KEY-ID-{pid}-{n}"),
        secret: format!("s3-test-secret-value-{pid}-{n}"),
    }
}

pub(crate) fn s3_yaml(env: &TestEnv, s3: &S3Server, c: &Creds) -> String {
    format!(
        "dbs:\n  - path: {db}\n    replica:\n      type: s3\n      bucket: {BUCKET}\n      \
         path: app\n      endpoint: {endpoint}\n      region: us-east-1\n      \
         force-path-style: true\n      access-key-id: {key}\n      secret-access-key: {secret}\n      \
         sync-interval: 1s\n",
        db = env.db().display(),
        endpoint = s3.endpoint(),
        key = c.key_id,
        secret = c.secret,
    )
}

/// Starts `rip-litestream run ARGS` (with `env_extra` set) and waits until litestream is ready.
fn start(env: &TestEnv, args: &[&str], env_extra: &[(&str, &str)]) -> Supervisor {
    let mut cmd = env.cmd(["run"]);
    cmd.args(args);
    for (k, v) in env_extra {
        cmd.env(k, v);
    }
    let sup = Supervisor(spawn(env, cmd));
    wait_for("litestream ready", LONG, || {
        run_stderr(env).contains("litestream ready")
    });
    sup
}

/// SIGTERM, then the exit code must be 0 (the final sync reached the replica).
fn stop(mut sup: Supervisor, env: &TestEnv) {
    sup.0.signal("TERM");
    let code = sup.0.wait_code(LONG);
    assert_eq!(code, Some(0), "run's stderr:\n{}", run_stderr(env));
}

/// The one litestream the supervisor runs.
fn litestream_pid(sup: &Supervisor) -> u32 {
    let kids = children_of(sup.0.pid());
    assert_eq!(kids.len(), 1, "children of run: {kids:?}");
    kids[0]
}

/// `rip-litestream restore` of the replica to `out`: succeeds and reports the integrity check.
fn restore_with_rip(env: &TestEnv, out: &Path) -> Run {
    let r = env.run([
        "restore",
        "-o",
        out.to_str().unwrap(),
        env.db().to_str().unwrap(),
    ]);
    r.success().stdout_has("integrity_check ok");
    r
}

/// litestream's own restore from the replica URL (credentials in its environment); false when
/// it fails (e.g. no backup yet).
fn restore_with_litestream(s3: &S3Server, c: &Creds, out: &Path) -> bool {
    let _ = std::fs::remove_file(out);
    let mut cmd = Command::new(litestream());
    cmd.arg("restore")
        .arg("-o")
        .arg(out)
        .arg(format!(
            "s3://{BUCKET}/app?endpoint={}&region=us-east-1&forcePathStyle=true",
            s3.endpoint()
        ))
        .env_remove("AWS_CA_BUNDLE")
        .env("AWS_ACCESS_KEY_ID", &c.key_id)
        .env("AWS_SECRET_ACCESS_KEY", &c.secret);
    run_cmd(cmd).output.status.success()
}

fn assert_same_rows(restored: &Path, source: &Path, count: usize) {
    let got = rows(restored);
    assert_eq!(
        got.len(),
        count,
        "rows restored into {}",
        restored.display()
    );
    assert_eq!(got, rows(source), "restored rows differ from the source");
    assert!(
        integrity_ok(restored),
        "integrity_check of {}",
        restored.display()
    );
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One HTTP/1.1 request to 127.0.0.1:`port`: status code and body, `None` when nothing answers
/// within 5 s.
fn http(port: u16, method: &str, path: &str) -> Option<(u16, String)> {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.write_all(
        format!(
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\n\
             Connection: close\r\n\r\n"
        )
        .as_bytes(),
    )
    .ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let code = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
    Some((code, body))
}

/// `status --json`, timed: it reads the supervisor's state file, so it must answer at once even
/// while litestream's control socket hangs.
fn status(env: &TestEnv) -> (Run, serde_json::Value) {
    let started = Instant::now();
    let r = env.run(["status", "--json"]);
    let took = started.elapsed();
    assert!(took < Duration::from_secs(10), "status took {took:?}");
    let v = serde_json::from_str(r.stdout().trim()).unwrap_or_else(|e| {
        panic!("status --json is not JSON ({e}):\n{}", r.stdout());
    });
    (r, v)
}

fn canonical_db(env: &TestEnv) -> String {
    std::fs::canonicalize(env.db())
        .unwrap()
        .to_string_lossy()
        .into_owned()
}

#[test]
fn s3_replica_restores_every_row_written_before_and_while_running() {
    let env = TestEnv::new();
    let s3 = S3Server::start(&env);
    let c = creds();
    insert(&env.db(), 0, 100);
    save_config(&env, &s3_yaml(&env, &s3, &c));
    let sup = start(&env, &[], &[]);
    insert(&env.db(), 100, 300);

    // Replicated while running: litestream's own restore from the bucket catches up.
    let live = env.path("live.db");
    wait_for("the bucket to hold all 300 rows", LONG, || {
        restore_with_litestream(&s3, &c, &live) && rows(&live).len() == 300
    });
    assert_same_rows(&live, &env.db(), 300);

    insert(&env.db(), 300, 400);
    stop(sup, &env);
    let out = env.path("restored.db");
    restore_with_rip(&env, &out);
    assert_same_rows(&out, &env.db(), 400);
    let again = env.path("litestream-restored.db");
    assert!(
        restore_with_litestream(&s3, &c, &again),
        "litestream restore"
    );
    assert_same_rows(&again, &env.db(), 400);
}

#[test]
fn s3_credentials_appear_in_no_command_line_environment_or_output() {
    let env = TestEnv::new();
    let s3 = S3Server::start(&env);
    let c = creds();
    insert(&env.db(), 0, 50);
    save_config(&env, &s3_yaml(&env, &s3, &c));
    let check = env.run(["config", "check"]);
    check.success();
    let sup = start(&env, &[], &[]);
    insert(&env.db(), 50, 100);
    wait_for("a healthy status", LONG, || status(&env).0.code() == 0);
    let ls = litestream_pid(&sup);
    let secrets = [c.key_id.as_str(), c.secret.as_str()];

    for (what, pid) in [("litestream", ls), ("rip-litestream", sup.0.pid())] {
        let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
        let environ = String::from_utf8_lossy(&environ);
        for s in secrets {
            assert!(!environ.contains(s), "{s} in the environment of {what}");
        }
    }
    for s in secrets {
        let found = pids_with(s);
        assert!(found.is_empty(), "{s} on the command line of {found:?}");
    }
    let (status_text, status_json) = (env.run(["status"]), status(&env).0);

    stop(sup, &env);
    let restore = restore_with_rip(&env, &env.path("restored.db"));
    assert_same_rows(&env.path("restored.db"), &env.db(), 100);
    let printed = [
        ("config check stdout", check.stdout()),
        ("config check stderr", check.stderr()),
        ("status", status_text.stdout() + &status_text.stderr()),
        (
            "status --json",
            status_json.stdout() + &status_json.stderr(),
        ),
        ("restore", restore.stdout() + &restore.stderr()),
        (
            "run stdout",
            std::fs::read_to_string(env.path("run.out")).unwrap(),
        ),
        ("run stderr", run_stderr(&env)),
    ];
    for (what, text) in printed {
        for s in secrets {
            assert!(!text.contains(s), "{s} in what {what} printed:\n{text}");
        }
    }
    for dir in [env.dir.path(), Path::new("/dev/shm")] {
        let found: Vec<PathBuf> = files_containing(dir, c.secret.as_bytes());
        assert!(found.is_empty(), "the secret in plaintext in {found:?}");
    }
}

#[test]
fn aws_ca_bundle_is_withheld_from_litestream_and_said_once() {
    let env = TestEnv::new();
    let s3 = S3Server::start(&env);
    let c = creds();
    insert(&env.db(), 0, 100);
    save_config(&env, &s3_yaml(&env, &s3, &c));
    let bundle = [("AWS_CA_BUNDLE", "/etc/ssl/certs/ca-certificates.crt")];
    let sup = start(&env, &[], &bundle);
    let no_bundle = |pid: u32| {
        let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
        assert!(
            !String::from_utf8_lossy(&environ)
                .split('\0')
                .any(|kv| kv.starts_with("AWS_CA_BUNDLE=")),
            "AWS_CA_BUNDLE in litestream's environment"
        );
    };
    let first = litestream_pid(&sup);
    no_bundle(first);
    insert(&env.db(), 100, 200);

    // A restarted litestream is started the same way, and nothing more is said.
    Command::new("kill")
        .args(["-9", &first.to_string()])
        .status()
        .unwrap();
    let mut second = 0;
    wait_for("litestream restarted and ready", LONG, || {
        let (r, v) = status(&env);
        second = v["pid"].as_u64().unwrap_or(0) as u32;
        r.code() == 0 && second != 0 && second != first
    });
    no_bundle(second);
    insert(&env.db(), 200, 300);
    stop(sup, &env);

    let out = env.path("restored.db");
    restore_with_rip(&env, &out);
    assert_same_rows(&out, &env.db(), 300);
    let stderr = run_stderr(&env);
    let said = stderr
        .lines()
        .filter(|l| l.contains("AWS_CA_BUNDLE"))
        .count();
    assert_eq!(said, 1, "AWS_CA_BUNDLE said {said} times:\n{stderr}");
}

#[test]
fn a_stopped_s3_server_shows_as_stalled_until_it_answers_again() {
    let env = TestEnv::new();
    let s3 = S3Server::start(&env);
    let c = creds();
    insert(&env.db(), 0, 100);
    save_config(&env, &s3_yaml(&env, &s3, &c));
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let sup = start(&env, &["--health-addr", &addr], &[]);
    wait_for("a healthy status", LONG, || status(&env).0.code() == 0);
    assert_eq!(http(port, "GET", "/healthz").map(|r| r.0), Some(200));

    // Frozen, not gone: its state survives. A write gives litestream something to upload.
    s3.signal(nix::sys::signal::Signal::SIGSTOP);
    insert(&env.db(), 100, 200);
    let db = canonical_db(&env);
    let mut last = serde_json::Value::Null;
    // (Under load litestream can also lose its WAL read lock meanwhile: that is reported too,
    // beside the stall.)
    wait_for("status to report the stall", LONG, || {
        let (r, v) = status(&env);
        let stall = v["reason"].as_str().unwrap_or_default().contains("stalled");
        last = v;
        r.code() == 1 && stall
    });
    assert_eq!(last["healthy"], false, "{last}");
    let reason = last["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("stalled") && reason.contains(&db),
        "reason: {reason:?}"
    );
    env.run(["status"]).code_is(1).stdout_has("stalled");
    let (code, body) = http(port, "GET", "/healthz").expect("/healthz answers");
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("stalled"), "{body}");

    s3.signal(nix::sys::signal::Signal::SIGCONT);
    wait_for("a healthy status again", LONG, || {
        status(&env).0.code() == 0
    });
    wait_for("/healthz 200 again", LONG, || {
        http(port, "GET", "/healthz").map(|r| r.0) == Some(200)
    });
    stop(sup, &env);
    let out = env.path("restored.db");
    restore_with_rip(&env, &out);
    assert_same_rows(&out, &env.db(), 200);
}

#[test]
fn a_stop_whose_final_sync_never_reached_a_missing_bucket_exits_1_and_says_so() {
    let env = TestEnv::new();
    let s3 = S3Server::start(&env);
    let c = creds();
    insert(&env.db(), 0, 10);
    // The operator's typo: a bucket that does not exist.
    let yaml = s3_yaml(&env, &s3, &c).replace(BUCKET, "no-such-bucket");
    save_config(&env, &format!("shutdown-sync-timeout: 2s\n{yaml}"));
    let sup = start(&env, &[], &[]);
    insert(&env.db(), 10, 20);
    let mut sup = sup;
    sup.0.signal("TERM");
    let code = sup.0.wait_code(Duration::from_secs(60));
    let stderr = run_stderr(&env);
    assert_eq!(code, Some(1), "run's stderr:\n{stderr}");
    assert!(
        stderr.contains("the final sync did not reach the replica")
            && stderr.contains("no-such-bucket") | stderr.contains("NoSuchBucket"),
        "{stderr}"
    );
}

#[test]
fn a_stop_with_an_unreachable_replica_fits_in_the_grace_and_exits_1() {
    let env = TestEnv::new();
    let s3 = S3Server::start(&env);
    let c = creds();
    insert(&env.db(), 0, 10);
    save_config(&env, &s3_yaml(&env, &s3, &c));
    let mut sup = start(&env, &["--grace", "4s"], &[]);
    // The replica stops answering; a write gives litestream something it cannot upload.
    s3.signal(nix::sys::signal::Signal::SIGSTOP);
    insert(&env.db(), 10, 20);
    let asked = std::time::Instant::now();
    sup.0.signal("TERM");
    let code = sup.0.wait_code(Duration::from_secs(60));
    let took = asked.elapsed();
    s3.signal(nix::sys::signal::Signal::SIGCONT);
    // One budget for the whole stop (socket sync, SIGTERM, litestream's shutdown sync): 4 s,
    // and a little for the reap and the exit.
    assert!(
        took < Duration::from_secs(8),
        "the stop took {took:?}:\n{}",
        run_stderr(&env)
    );
    assert_eq!(code, Some(1), "{}", run_stderr(&env));
}
