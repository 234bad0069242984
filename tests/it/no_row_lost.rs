//! Every committed row reaches the replica, with the application on SQLite's defaults (an
//! automatic checkpoint every 1000 frames) and a writer committing about every millisecond:
//! litestream keeps its WAL read lock while supervised (nothing we send releases it), and while
//! no litestream runs (a crash, a reload, a stop and start) nothing restarts the WAL under it.
//! Each scenario restores the replica and compares rows, content hash and integrity.
//! `RIP_LONG_TESTS=1` makes each run longer (RELIABILITY.md has the figures).

use std::time::{Duration, Instant};

use crate::reliability::{assert_replica_equals_source, litestream_pid};
use crate::replication::*;
use crate::support::{wait_for, TestEnv};

const LONG: Duration = Duration::from_secs(60);

fn seconds(short: u64, long: u64) -> Duration {
    Duration::from_secs(if std::env::var_os("RIP_LONG_TESTS").is_some() {
        long
    } else {
        short
    })
}

fn setup() -> (TestEnv, std::sync::MutexGuard<'static, ()>) {
    let turn = crate::support::heavy();
    let env = TestEnv::new();
    insert(&env.db(), 0, 1);
    save_config(&env, &config_yaml(&env, "", ""));
    (env, turn)
}

fn kill9(pid: u32) {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
}

/// Samples whether litestream (a child of `sup`) holds its read lock on app.db until `until`;
/// returns (held, samples, longest run of misses).
fn sample_read_lock(env: &TestEnv, sup: &Background, until: Instant) -> (u32, u32, u32) {
    let (mut held, mut n, mut run, mut worst) = (0, 0, 0, 0);
    while Instant::now() < until {
        if let Some(pid) = litestream_pid(sup) {
            n += 1;
            if holds_wal_read_lock(pid, &env.db()) {
                held += 1;
                run = 0;
            } else {
                run += 1;
                worst = worst.max(run);
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    (held, n, worst)
}

/// Kills `sup`'s litestream with SIGKILL and waits until a new one runs.
fn kill_litestream(sup: &Background) {
    let pid = litestream_pid(sup).expect("litestream runs");
    kill9(pid);
    wait_for("litestream back", LONG, || {
        litestream_pid(sup).is_some_and(|p| p != pid)
    });
}

/// Lets the writer go on a second, stops it and the supervisor, and checks the replica.
fn finish(env: &TestEnv, sup: Background, writer: Writer, at_least: i64) {
    std::thread::sleep(Duration::from_secs(1));
    let written = writer.finish();
    stop(env, sup);
    assert!(written > at_least, "only {written} rows");
    assert_replica_equals_source(env);
}

fn stop(env: &TestEnv, mut sup: Background) {
    sup.signal("TERM");
    assert_eq!(sup.wait_code(LONG), Some(0), "{}", run_stderr(env));
}

#[test]
fn no_fault_litestream_holds_its_read_lock_throughout_and_nothing_is_lost() {
    let (env, _turn) = setup();
    let sup = run_bg(&env, &[]);
    wait_ready(&env);
    let writer = Writer::start(env.db(), 1);
    let until = Instant::now() + seconds(8, 60);
    // `status` and `verify` talk to litestream while we sample: neither may release the lock.
    let (held, n, worst) = {
        let sampler = std::thread::scope(|s| {
            let h = s.spawn(|| sample_read_lock(&env, &sup, until));
            std::thread::sleep(Duration::from_secs(2));
            env.run(["status", "--json"]);
            let v = env.run(["verify", "--timeout", "20s"]);
            assert!(
                [0, 3].contains(&v.code()),
                "verify: {}\n{}",
                v.stdout(),
                v.stderr()
            );
            h.join().unwrap()
        });
        sampler
    };
    let status: serde_json::Value =
        serde_json::from_str(env.run(["status", "--json"]).stdout().trim()).unwrap();
    let written = writer.finish();
    stop(&env, sup);
    assert!(
        written > 1000,
        "only {written} rows: the writer did not run"
    );
    // A miss is only possible during litestream's own checkpoint, which re-takes it at once.
    assert!(n >= 20, "only {n} samples");
    assert!(
        worst <= 1 && held * 10 >= n * 9,
        "read lock held in {held} of {n} samples (longest gap {worst})"
    );
    let db = &status["databases"][0];
    assert_ne!(db["read_lock"], serde_json::json!(false), "{status}");
    assert!(db["replicated_txid"].as_u64().is_some(), "{status}");
    assert_replica_equals_source(&env);
}

#[test]
fn litestream_killed_three_times_under_writes_loses_nothing() {
    let (env, _turn) = setup();
    let sup = run_bg(&env, &["--backoff-initial", "200ms", "--backoff-max", "1s"]);
    wait_ready(&env);
    let writer = Writer::start(env.db(), 1);
    for _ in 0..3 {
        std::thread::sleep(seconds(2, 10));
        kill_litestream(&sup);
    }
    finish(&env, sup, writer, 1000);
}

#[test]
fn three_reloads_under_writes_lose_nothing() {
    let (env, _turn) = setup();
    let sup = run_bg(&env, &[]);
    wait_ready(&env);
    let writer = Writer::start(env.db(), 1);
    for i in 0..3 {
        std::thread::sleep(seconds(2, 10));
        let pid = litestream_pid(&sup).expect("litestream runs");
        // A changed generation (another sync interval), then SIGHUP.
        let interval = format!("{}ms", 700 + 100 * i);
        let yaml = config_yaml(&env, "", &format!("      sync-interval: {interval}\n"));
        env.save(&yaml).success();
        sup.signal("HUP");
        wait_for("litestream restarted with the new generation", LONG, || {
            litestream_pid(&sup).is_some_and(|p| p != pid)
        });
    }
    std::thread::sleep(Duration::from_secs(1));
    let written = writer.finish();
    stop(&env, sup);
    assert!(written > 1000, "only {written} rows");
    assert_eq!(
        run_stderr(&env).matches("config reloaded").count(),
        3,
        "{}",
        run_stderr(&env)
    );
    assert_replica_equals_source(&env);
}

#[test]
fn stop_and_start_again_while_the_application_writes_loses_nothing() {
    let (env, _turn) = setup();
    let writer = Writer::start(env.db(), 1);
    // `systemctl restart`: started again at once, and once after a pause long enough for the
    // application's own checkpoint to restart the WAL (over 1000 commits).
    for pause in [0, 0, 1500] {
        let sup = run_bg(&env, &[]);
        wait_ready(&env);
        std::thread::sleep(seconds(2, 10));
        stop(&env, sup);
        std::thread::sleep(Duration::from_millis(pause));
    }
    let sup = run_bg(&env, &[]);
    wait_ready(&env);
    finish(&env, sup, writer, 2000);
}

#[test]
fn run_with_the_writer_as_the_application_loses_nothing_while_litestream_restarts() {
    let (env, _turn) = setup();
    // The application: Python's sqlite3 on SQLite's defaults, one row about every millisecond,
    // for a few seconds; then it exits 0 and the wrapper stops litestream with its final sync.
    let app = format!(
        "import sqlite3, time\n\
         c = sqlite3.connect({db:?}, isolation_level=None)\n\
         c.execute('PRAGMA busy_timeout=5000')\n\
         i = 1000000\n\
         end = time.time() + {secs}\n\
         while time.time() < end:\n\
         \x20   c.execute('INSERT INTO t (id, body) VALUES (?, ?)', (i, 'app row %d' % i))\n\
         \x20   i += 1\n\
         \x20   time.sleep(0.001)\n",
        db = env.db().display().to_string(),
        secs = seconds(8, 60).as_secs()
    );
    std::fs::write(env.path("app.py"), app).unwrap();
    let app_path = env.path("app.py");
    let sup = run_bg(
        &env,
        &[
            "--backoff-initial",
            "200ms",
            "--",
            "python3",
            app_path.to_str().unwrap(),
        ],
    );
    wait_ready(&env);
    let mut sup = sup;
    for _ in 0..2 {
        std::thread::sleep(Duration::from_secs(2));
        kill_litestream(&sup);
    }
    assert_eq!(sup.wait_code(LONG), Some(0), "{}", run_stderr(&env));
    assert!(
        rows(&env.db()).len() > 1000,
        "the application did not write"
    );
    assert_replica_equals_source(&env);
}

/// The case behind the random-kill residual, set up on purpose: litestream dies with frames it
/// never copied, the application checkpoints every frame into the database while nobody reads,
/// and only then does a reader begin (the guard, litestream itself). Such a reader takes read
/// mark 0, which does not stop the application's next write from restarting the WAL, and
/// litestream 0.5.17, finding its last copied frame intact, would go on from the new WAL
/// without the checkpointed frames. The supervisor must see them and force a full snapshot.
#[test]
fn frames_checkpointed_while_nobody_read_still_reach_the_replica() {
    let (env, _turn) = setup();
    let app = open(&env.db());
    // A table of its own, so no later write rewrites its pages: a lost frame shows.
    app.execute_batch("CREATE TABLE u (id INTEGER PRIMARY KEY, body TEXT NOT NULL)")
        .unwrap();
    let mut sup = spawn(&env, env.cmd(["run"]));
    wait_ready(&env);
    // A long WAL that litestream copies, so that a few writes after a restart leave its last
    // copied frame in place (what litestream checks before going on from the new WAL).
    insert(&env.db(), 1, 300);
    std::thread::sleep(Duration::from_millis(1500)); // one sync interval: all of it copied
                                                     // Rows litestream never copies: written and killed well within its 1 s sync interval.
    let pid = litestream_pid(&sup).unwrap();
    for i in 0..20 {
        app.execute(
            "INSERT INTO u (id, body) VALUES (?, ?)",
            rusqlite::params![i, "u".repeat(100)],
        )
        .unwrap();
    }
    kill9(pid);
    sup.signal("KILL");
    sup.wait_code(LONG);
    // Every frame checkpointed while no one reads; no write yet, so the WAL is not restarted.
    let (busy, log, done): (i64, i64, i64) = app
        .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })
        .unwrap();
    assert_eq!((busy, done), (0, log), "not every frame was checkpointed");
    // The supervisor comes back, and the application writes again before litestream reads:
    // litestream's start is delayed by a second (the real binary behind a `sleep 1`) so that
    // the writes fall, every time, between the supervisor's look at the WAL and litestream's.
    let slow = env.path("slow-litestream");
    std::fs::write(
        &slow,
        format!(
            "#!/bin/sh\n[ \"$1\" = replicate ] && sleep 1\nexec {} \"$@\"\n",
            crate::support::litestream().display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&slow, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let mut cmd = env.cmd(["run"]);
    cmd.env("LITESTREAM_BIN", &slow);
    let again = spawn(&env, cmd);
    wait_for("litestream started", LONG, || {
        run_stderr(&env).contains("litestream started")
    });
    insert(&env.db(), 1000, 1005); // the first write restarts the WAL
    drop(app);
    wait_ready(&env);
    insert(&env.db(), 2000, 2010);
    std::thread::sleep(Duration::from_millis(1500)); // one sync interval
    stop(&env, again);
    assert_replica_equals_source(&env);
    let restored = open(&env.path("restored.db"));
    let n: i64 = restored
        .query_row("SELECT count(*) FROM u", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 20, "the checkpointed rows are missing from the replica");
}
