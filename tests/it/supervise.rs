//! Supervision with the real litestream 0.5.17 (and fakes only for what it cannot do on cue):
//! final sync, restarts, stop escalation, orphans, plaintext handoff, log back-pressure.

use std::os::unix::fs::PermissionsExt;
use std::process::Stdio;
use std::time::{Duration, Instant};

use restinpieces_litestream::backoff::Backoff;
use restinpieces_litestream::{Litestream, LitestreamConfig, Options, State, Status, Strictness};

use crate::replication::*;
use crate::support::{wait_for, TestEnv};

const LONG: Duration = Duration::from_secs(30);

fn restored_rows(env: &TestEnv) -> Vec<(i64, String)> {
    let out = env.path(&format!("restored-{}.db", fastrand_suffix()));
    restore(&env.path("replica"), &out);
    assert!(
        integrity_ok(&out),
        "restored database fails integrity_check"
    );
    rows(&out)
}

fn fastrand_suffix() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

#[test]
fn rows_written_while_running_are_all_in_the_replica_after_sigterm() {
    let env = TestEnv::new();
    insert(&env.db(), 0, 10);
    env.init();
    let mut sup = run_bg(&env, &[]);
    wait_ready(&env);
    let litestream = children_of(sup.pid());
    assert_eq!(litestream.len(), 1);
    insert(&env.db(), 10, 500);
    sup.signal("TERM");
    assert_eq!(sup.wait_code(LONG), Some(0), "{}", run_stderr(&env));
    assert!(!alive(litestream[0]), "litestream left running");
    assert_eq!(rows(&env.db()).len(), 500);
    assert_eq!(restored_rows(&env), rows(&env.db()));
}

#[test]
fn sigterm_with_a_pending_write_and_a_30s_sync_interval_still_replicates_it() {
    let env = TestEnv::new();
    insert(&env.db(), 0, 1);
    save_config(&env, &config_yaml(&env, "", "      sync-interval: 30s\n"));
    let mut sup = run_bg(&env, &[]);
    wait_ready(&env);
    insert(&env.db(), 1, 2);
    sup.signal("TERM");
    assert_eq!(sup.wait_code(LONG), Some(0), "{}", run_stderr(&env));
    assert_eq!(
        restored_rows(&env),
        vec![(0, "row 0".into()), (1, "row 1".into())]
    );
}

#[test]
fn first_start_against_a_closed_sftp_port_fails_fast_with_litestreams_error() {
    let env = TestEnv::new();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let yaml = format!(
        "dbs:\n  - path: {}\n    replica:\n      type: sftp\n      host: 127.0.0.1:{port}\n      user: u\n      password: p\n      path: /r\n",
        env.db().display()
    );
    save_config(&env, &yaml);
    let start = Instant::now();
    let mut sup = run_bg(&env, &[]);
    assert_eq!(sup.wait_code(LONG), Some(1));
    let elapsed = start.elapsed();
    assert!(elapsed < Duration::from_secs(2), "took {elapsed:?}");
    let err = run_stderr(&env);
    assert!(
        err.contains("Error:"),
        "litestream's error line missing:\n{err}"
    );
}

#[test]
fn memfd_handoff_leaves_no_file_and_nothing_readable_once_ready() {
    let env = TestEnv::new();
    let marker = format!("marker-{}", fastrand_suffix());
    save_config(&env, &config_yaml(&env, &format!("# {marker}\n"), ""));
    let mut sup = run_bg(&env, &[]);
    wait_ready(&env);
    let litestream = children_of(sup.pid());
    assert_eq!(litestream.len(), 1);
    let cmdline = std::fs::read_to_string(format!("/proc/{}/cmdline", litestream[0])).unwrap();
    let config_arg = cmdline
        .split('\0')
        .skip_while(|a| *a != "-config")
        .nth(1)
        .unwrap()
        .to_string();
    let fd = config_arg
        .strip_prefix("/dev/fd/")
        .expect("a /dev/fd/N config");
    let fd_path = format!("/proc/{}/fd/{fd}", litestream[0]);
    let target = std::fs::read_link(&fd_path).unwrap();
    assert!(
        target.to_string_lossy().starts_with("/memfd:"),
        "{target:?}"
    );
    // litestream keeps the descriptor; once it is ready, it leads to nothing.
    assert_eq!(std::fs::read(&fd_path).unwrap(), b"");
    for dir in [env.dir.path(), std::path::Path::new("/dev/shm")] {
        let found = files_containing(dir, marker.as_bytes());
        assert!(found.is_empty(), "plaintext config found in {found:?}");
    }
    sup.signal("TERM");
    assert_eq!(sup.wait_code(LONG), Some(0));
}

#[test]
fn file_handoff_is_private_and_gone_once_litestream_is_ready() {
    let env = TestEnv::new();
    let report = env.path("modes");
    // The fake records the handoff file's mode and its directory's mode, then stays up.
    let fake = fake_litestream(
        &env,
        "fake-modes",
        &format!(
            "stat -c %a \"$4\" > {r}.tmp; stat -c %a \"$(dirname \"$4\")\" >> {r}.tmp; mv {r}.tmp {r}\nexec sleep 60",
            r = report.display()
        ),
    );
    save_config(&env, &config_yaml(&env, "socket:\n  enabled: false\n", ""));
    let mut sup = run_bg(
        &env,
        &[
            "--handoff",
            "file",
            "--litestream",
            fake.to_str().unwrap(),
            "--grace",
            "2s",
        ],
    );
    wait_ready(&env);
    assert_eq!(std::fs::read_to_string(&report).unwrap(), "600\n700\n");
    let leftovers: Vec<_> = std::fs::read_dir(env.runtime())
        .unwrap()
        .flatten()
        .flat_map(|d| std::fs::read_dir(d.path()).into_iter().flatten().flatten())
        .map(|e| e.file_name())
        .collect();
    assert!(
        leftovers
            .iter()
            .all(|n| !n.to_string_lossy().starts_with("handoff-")),
        "{leftovers:?}"
    );
    sup.signal("TERM");
    sup.wait_code(LONG);
}

#[test]
fn file_handoff_left_by_a_killed_supervisor_is_swept_at_the_next_start() {
    let env = TestEnv::new();
    // Never ready (no control socket): the handoff file stays while it starts.
    let fake = fake_litestream(&env, "fake-never-ready", "exec sleep 60");
    env.init();
    let mut sup = run_bg(
        &env,
        &["--handoff", "file", "--litestream", fake.to_str().unwrap()],
    );
    let handoffs = || -> Vec<std::path::PathBuf> {
        std::fs::read_dir(env.runtime())
            .into_iter()
            .flatten()
            .flatten()
            .flat_map(|d| std::fs::read_dir(d.path()).into_iter().flatten().flatten())
            .map(|e| e.path())
            .filter(|p| {
                p.file_name()
                    .unwrap()
                    .to_string_lossy()
                    .starts_with("handoff-")
            })
            .collect()
    };
    wait_for("handoff file", LONG, || !handoffs().is_empty());
    let fake_pids = children_of(sup.pid());
    let left = handoffs()[0].join("litestream.yml");
    assert_eq!(
        std::fs::metadata(&left).unwrap().permissions().mode() & 0o777,
        0o600
    );
    sup.signal("KILL");
    sup.wait_code(LONG);
    wait_for("fake litestream gone", LONG, || {
        fake_pids.iter().all(|p| !alive(*p))
    });
    assert!(
        left.exists(),
        "a killed supervisor cannot clean up: the file should still be there"
    );
    // The next start sweeps it (and then fails or runs: here the real litestream runs).
    let mut next = run_bg(&env, &["--handoff", "file"]);
    wait_ready(&env);
    assert!(handoffs().is_empty(), "left behind: {:?}", handoffs());
    next.signal("TERM");
    assert_eq!(next.wait_code(LONG), Some(0));
}

#[test]
fn killed_supervisor_leaves_litestream_to_finish_and_blocks_a_second_one_meanwhile() {
    let env = TestEnv::new();
    // The orphan takes 3 s to finish after SIGTERM.
    let fake = fake_litestream(
        &env,
        "fake-slow-exit",
        "trap 'sleep 3; exit 0' TERM\nwhile :; do sleep 0.05; done",
    );
    save_config(&env, &config_yaml(&env, "socket:\n  enabled: false\n", ""));
    let mut sup = run_bg(&env, &["--litestream", fake.to_str().unwrap()]);
    wait_ready(&env);
    let orphans = children_of(sup.pid());
    assert_eq!(orphans.len(), 1);
    sup.signal("KILL");
    sup.wait_code(LONG);
    // Meanwhile, a second supervisor refuses, naming the holder.
    let second = env.run(["run", "--litestream", fake.to_str().unwrap()]);
    second.code_is(1).stderr_has("already supervises");
    // The orphan got SIGTERM (parent-death signal) and exits by itself: none left.
    wait_for("orphan exits", Duration::from_secs(10), || {
        orphans.iter().all(|p| !alive(*p))
    });
    let mut third = run_bg(
        &env,
        &["--litestream", fake.to_str().unwrap(), "--grace", "5s"],
    );
    wait_ready(&env);
    third.signal("TERM");
    assert_eq!(third.wait_code(LONG), Some(0));
}

#[test]
fn killed_supervisor_real_litestream_still_does_its_final_sync() {
    let env = TestEnv::new();
    insert(&env.db(), 0, 5);
    save_config(&env, &config_yaml(&env, "", "      sync-interval: 30s\n"));
    let mut sup = run_bg(&env, &[]);
    wait_ready(&env);
    let child = children_of(sup.pid());
    assert_eq!(child.len(), 1);
    wait_for("first sync", LONG, || {
        replica_has_data(&env.path("replica"))
    });
    insert(&env.db(), 5, 6);
    sup.signal("KILL");
    sup.wait_code(LONG);
    wait_for("orphaned litestream exits", LONG, || !alive(child[0]));
    assert_eq!(restored_rows(&env).len(), 6);
}

#[test]
fn crash_loop_gives_up_with_max_restarts() {
    let env = TestEnv::new();
    let fake = fake_litestream(
        &env,
        "fake-crash",
        "sleep 0.1; echo 'Error: boom' >&2; exit 1",
    );
    save_config(&env, &config_yaml(&env, "socket:\n  enabled: false\n", ""));
    let mut sup = run_bg(
        &env,
        &[
            "--litestream",
            fake.to_str().unwrap(),
            "--retry-start",
            "--max-restarts",
            "3",
            "--backoff-initial",
            "20ms",
        ],
    );
    assert_eq!(sup.wait_code(LONG), Some(1));
    let err = run_stderr(&env);
    assert!(err.contains("gave up after 3 restarts"), "{err}");
    assert!(err.contains("Error: boom"), "{err}");
}

#[test]
fn a_child_flooding_an_unread_stderr_keeps_running_and_drops_are_reported() {
    let _turn = crate::support::heavy();
    let env = TestEnv::new();
    let done = env.path("done");
    let fake = fake_litestream(
        &env,
        "fake-flood",
        &format!("yes 'time=2026-11-25T00:00:00Z level=INFO msg=\"flood line\"' | head -n 1000000\ntouch {}\nexec sleep 60", done.display()),
    );
    save_config(&env, &config_yaml(&env, "socket:\n  enabled: false\n", ""));
    let mut cmd = env.cmd([
        "run",
        "--litestream",
        fake.to_str().unwrap(),
        "--grace",
        "2s",
    ]);
    cmd.stdout(Stdio::null()).stderr(Stdio::piped());
    let mut sup = Background {
        child: cmd.spawn().unwrap(),
    };
    // Nobody reads our stderr (for at least 5 s): the child must still get all its lines out.
    // Were forwarding to block, it would stall on its pipe and never finish.
    let started = std::time::Instant::now();
    wait_for("the flooding child finished printing", LONG, || {
        done.exists()
    });
    let unread = Duration::from_secs(5).saturating_sub(started.elapsed());
    std::thread::sleep(unread); // the scenario's length, not a synchronisation
    assert!(
        sup.child.try_wait().unwrap().is_none(),
        "the supervisor died"
    );
    let mut err = sup.child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut err, &mut s).ok();
        s
    });
    sup.signal("TERM");
    sup.wait_code(LONG);
    let text = reader.join().unwrap();
    assert!(
        text.contains("lines dropped"),
        "no drop report in {} bytes of stderr",
        text.len()
    );
}

// ---- the library: status, restarts, escalation ----

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn load(env: &TestEnv) -> LitestreamConfig {
    let store = restinpieces_litestream::ConfigStore::open(env.db(), env.key()).unwrap();
    let stored = store.load("litestream", 0).unwrap();
    LitestreamConfig::parse(&stored.plaintext, Strictness::Lenient).unwrap()
}

fn options(env: &TestEnv) -> Options {
    {
        let mut options = Options::default();
        options.instance = Some(env.db());
        options.runtime_base = Some(env.runtime());
        options
    }
}

async fn until(
    rx: &mut tokio::sync::watch::Receiver<Status>,
    what: &str,
    f: impl Fn(&Status) -> bool,
) -> Status {
    tokio::time::timeout(LONG, async {
        loop {
            {
                let s = rx.borrow_and_update();
                if f(&s) {
                    return s.clone();
                }
            }
            rx.changed().await.unwrap();
        }
    })
    .await
    .unwrap_or_else(|_| panic!("timed out waiting for {what}: {:?}", rx.borrow()))
}

#[test]
fn kill_9_of_litestream_restarts_it_and_rows_written_right_after_are_replicated() {
    let env = TestEnv::new();
    insert(&env.db(), 0, 3);
    save_config(&env, &config_yaml(&env, "", "      sync-interval: 30s\n"));
    let config = load(&env);
    runtime().block_on(async {
        let mut daemon = Litestream::new(config, options(&env));
        daemon.start().await.unwrap();
        let mut rx = daemon.status();
        let first = rx.borrow().pid.unwrap();
        let killed_at = Instant::now();
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(first as i32),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap();
        let s = until(&mut rx, "restart", |s| {
            s.state == State::Ready && s.pid != Some(first)
        })
        .await;
        assert_eq!(s.restarts, 1);
        assert!(
            killed_at.elapsed() < Backoff::default().initial.mul_f64(1.2) + Duration::from_secs(2)
        );
        assert_eq!(s.last_exit.as_ref().unwrap().signal, Some(9));
        // Written right after the restart, stopped within a second: litestream alone would skip
        // its final sync here.
        insert(&env.db(), 3, 6);
        daemon.stop(LONG).await.unwrap();
    });
    assert_eq!(restored_rows(&env).len(), 6);
}

#[test]
fn crash_delays_double_up_to_the_cap_and_reset_after_a_stable_run() {
    let env = TestEnv::new();
    // Runs 100 ms, then fails; every fifth run is "stable" (1.5 s > reset_after).
    let counter = env.path("runs");
    let fake = fake_litestream(
        &env,
        "fake-flaky",
        &format!("n=$(cat {c} 2>/dev/null || echo 0); n=$((n+1)); echo $n > {c}\nif [ $((n % 5)) -eq 0 ]; then sleep 1.5; else sleep 0.1; fi\nexit 1", c = counter.display()),
    );
    save_config(&env, &config_yaml(&env, "socket:\n  enabled: false\n", ""));
    let config = load(&env);
    runtime().block_on(async {
        let mut opts = options(&env);
        opts.litestream = Some(fake);
        opts.startup_window = Duration::from_millis(20);
        opts.backoff = Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_millis(400),
            jitter: 0.0,
            reset_after: Duration::from_secs(1),
            ..Backoff::default()
        };
        let mut daemon = Litestream::new(config, opts);
        daemon.start().await.unwrap();
        let mut rx = daemon.status();
        let mut seen = Vec::new();
        while seen.len() < 7 {
            let s = until(&mut rx, "backoff", |s| {
                matches!(s.state, State::Backoff { .. })
            })
            .await;
            if let State::Backoff { attempt, until } = s.state {
                let delay = until
                    .duration_since(s.last_exit.as_ref().unwrap().at)
                    .unwrap_or_default();
                seen.push((attempt, delay.as_millis()));
            }
            until(&mut rx, "next start", |s| {
                !matches!(s.state, State::Backoff { .. })
            })
            .await;
        }
        let attempts: Vec<u32> = seen.iter().map(|(a, _)| *a).collect();
        // runs 1-4 crash fast (attempts 1..4), run 5 is stable and resets, then 1, 2.
        assert_eq!(attempts, [1, 2, 3, 4, 1, 2, 3], "{seen:?}");
        for (attempt, ms) in &seen {
            let expected = (100u128 << (attempt - 1)).min(400);
            assert!(
                (expected as i128 - *ms as i128).abs() <= 30,
                "attempt {attempt}: {ms} ms, expected {expected}: {seen:?}"
            );
        }
        daemon.stop(LONG).await.unwrap();
    });
}

#[test]
fn a_child_ignoring_sigterm_is_killed_after_the_grace_with_its_whole_group() {
    let env = TestEnv::new();
    let fake = fake_litestream(
        &env,
        "fake-stubborn",
        "trap '' TERM\nsleep 60 &\nwhile :; do sleep 0.05; done",
    );
    save_config(&env, &config_yaml(&env, "socket:\n  enabled: false\n", ""));
    let config = load(&env);
    runtime().block_on(async {
        let mut opts = options(&env);
        opts.litestream = Some(fake);
        opts.startup_window = Duration::from_millis(100);
        opts.grace = Some(Duration::from_millis(500));
        let mut daemon = Litestream::new(config, opts);
        daemon.start().await.unwrap();
        let pgid = daemon.status().borrow().pid.unwrap();
        wait_for("the fake and its sleep", LONG, || {
            group_members(pgid).len() >= 2
        });
        let started = Instant::now();
        let err = daemon.stop(LONG).await.unwrap_err();
        assert!(err.to_string().contains("killed"), "{err}");
        assert!(started.elapsed() >= Duration::from_millis(500));
        wait_for("the group is gone", LONG, || group_members(pgid).is_empty());
    });
}

#[test]
fn a_failed_start_with_file_handoff_leaves_no_plaintext() {
    let env = TestEnv::new();
    let fake = fake_litestream(
        &env,
        "fake-fail",
        "echo 'Error: cannot open store' >&2; exit 1",
    );
    let marker = format!("marker-{}", fastrand_suffix());
    save_config(&env, &config_yaml(&env, &format!("# {marker}\n"), ""));
    let r = env.run([
        "run",
        "--handoff",
        "file",
        "--litestream",
        fake.to_str().unwrap(),
    ]);
    r.code_is(1).stderr_has("Error: cannot open store");
    let found = files_containing(env.dir.path(), marker.as_bytes());
    assert!(found.is_empty(), "plaintext config left in {found:?}");
}

#[test]
fn a_stop_during_backoff_still_gets_the_writes_since_the_crash_into_the_replica() {
    let env = TestEnv::new();
    insert(&env.db(), 0, 3);
    save_config(&env, &config_yaml(&env, "", "      sync-interval: 30s\n"));
    let config = load(&env);
    runtime().block_on(async {
        let mut opts = options(&env);
        opts.backoff.initial = Duration::from_secs(30);
        let mut daemon = Litestream::new(config, opts);
        daemon.start().await.unwrap();
        let mut rx = daemon.status();
        let first = rx.borrow().pid.unwrap();
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(first as i32),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap();
        until(&mut rx, "backoff", |s| {
            matches!(s.state, State::Backoff { .. })
        })
        .await;
        insert(&env.db(), 3, 7); // written while no litestream runs
        daemon.stop(LONG).await.unwrap();
    });
    assert_eq!(restored_rows(&env).len(), 7);
}

#[test]
fn a_sync_that_never_answers_does_not_eat_the_grace_after_sigterm() {
    let env = TestEnv::new();
    // A fake whose control socket answers /info and /list but never /sync, and which needs
    // 1 s after SIGTERM to exit.
    let script = env.path("fake_socket.py");
    std::fs::write(
        &script,
        r#"import os, re, signal, socket, sys, threading, time
cfg = open(sys.argv[sys.argv.index("-config") + 1]).read()
path = re.search(r'path: "([^"]+control.sock)"', cfg).group(1)
signal.signal(signal.SIGTERM, lambda *a: (time.sleep(1), os._exit(0)))
s = socket.socket(socket.AF_UNIX); s.bind(path); s.listen(16)
def serve(c):
    req = c.recv(4096).decode()
    if req.startswith("POST /sync"):
        time.sleep(3600)
    body = '{"databases":[{"path":"/x.db","status":"replicating"}]}'
    c.sendall(("HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)).encode()); c.close()
while True:
    c, _ = s.accept(); threading.Thread(target=serve, args=(c,), daemon=True).start()
"#,
    )
    .unwrap();
    let fake = fake_litestream(
        &env,
        "fake-socket",
        &format!("exec python3 {} \"$@\"", script.display()),
    );
    save_config(&env, &config_yaml(&env, "shutdown-sync-timeout: 1s\n", ""));
    let config = load(&env);
    runtime().block_on(async {
        let mut opts = options(&env);
        opts.litestream = Some(fake);
        opts.grace = Some(Duration::from_secs(3));
        let mut daemon = Litestream::new(config, opts);
        daemon.start().await.unwrap();
        let pid = daemon.status().borrow().pid.unwrap();
        // The sync gets at most shutdown-sync-timeout (1 s); SIGTERM then gets the whole grace.
        // Nothing confirmed the replica (the fake never syncs, its replica lists nothing): the
        // stop says so instead of claiming success.
        let stopped = daemon.stop(LONG).await;
        let why = stopped
            .expect_err("an unconfirmed final sync is an error")
            .to_string();
        assert!(why.contains("did not reach the replica"), "{why}");
        let s = daemon.status().borrow().clone();
        let exit = s.last_exit.unwrap();
        assert_eq!(
            (exit.pid, exit.code),
            (pid, Some(0)),
            "killed instead of exiting: {exit:?}"
        );
    });
}
