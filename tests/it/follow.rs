//! Read replicas: `rip-litestream follow` keeps a read-only copy up to date from the replica,
//! for a file replica and for S3, survives a SIGKILL of its litestream, and its readers never
//! see an error.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::replication::*;
use crate::support::{wait_for, TestEnv};

const LONG: Duration = Duration::from_secs(30);

fn primary(env: &TestEnv) -> Background {
    let mut cmd = env.cmd(["run"]);
    cmd.env("RUST_LOG", "warn");
    let sup = spawn(env, cmd);
    wait_for("primary ready", LONG, || litestream_of(&sup).is_some());
    sup
}

fn follower(env: &TestEnv, output: &std::path::Path, extra: &[&str]) -> Background {
    let mut cmd = env.cmd([
        "follow",
        "--follow-interval",
        "200ms",
        "--backoff-initial",
        "100ms",
        "--output",
    ]);
    cmd.arg(output).args(extra);
    let err = std::fs::File::create(env.path("follow.err")).unwrap();
    Background {
        child: cmd
            .stdout(std::process::Stdio::null())
            .stderr(err)
            .spawn()
            .unwrap(),
    }
}

fn litestream_of(sup: &Background) -> Option<u32> {
    children_of(sup.pid()).into_iter().find(|p| {
        let cmd = std::fs::read_to_string(format!("/proc/{p}/cmdline")).unwrap_or_default();
        cmd.contains("replicate") || cmd.contains("restore")
    })
}

fn count_readonly(db: &std::path::Path) -> Option<i64> {
    let c = rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .ok()?;
    c.busy_timeout(Duration::from_secs(5)).ok()?;
    c.query_row("SELECT count(*) FROM t", [], |r| r.get(0)).ok()
}

/// Inserts `n` rows on the primary and measures until the follower's copy has them all.
fn propagation(env: &TestEnv, output: &std::path::Path, from: i64, n: i64) -> Duration {
    insert(&env.db(), from, from + n);
    let start = Instant::now();
    // sync-interval (1 s) + follow-interval (200 ms) + a generous margin for a loaded machine.
    wait_for("rows on the follower", Duration::from_secs(10), || {
        count_readonly(output) == Some(from + n)
    });
    start.elapsed()
}

#[test]
fn a_follower_sees_the_primarys_rows_and_its_readers_never_fail() {
    let env = TestEnv::new();
    insert(&env.db(), 0, 10);
    save_config(&env, &config_yaml(&env, "", ""));
    let mut primary = primary(&env);
    let output = env.path("follower/app.db");
    std::fs::create_dir_all(output.parent().unwrap()).unwrap();
    let mut follow = follower(&env, &output, &[]);
    wait_for("the follower's copy", LONG, || {
        count_readonly(&output) == Some(10)
    });

    // A reader querying the copy read-only, all along.
    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let (out, stop) = (output.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut reads = 0;
            while !stop.load(Ordering::Relaxed) {
                let c = rusqlite::Connection::open_with_flags(
                    &out,
                    rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
                )
                .unwrap_or_else(|e| panic!("open failed after {reads} reads: {e}"));
                c.busy_timeout(Duration::from_secs(5)).unwrap();
                let check: String = c
                    .query_row("PRAGMA integrity_check", [], |r| r.get(0))
                    .unwrap_or_else(|e| panic!("integrity_check failed after {reads} reads: {e}"));
                assert_eq!(check, "ok", "after {reads} reads");
                c.query_row("SELECT count(*) FROM t", [], |r| r.get::<_, i64>(0))
                    .unwrap_or_else(|e| panic!("query failed after {reads} reads: {e}"));
                reads += 1;
            }
            reads
        })
    };

    let took = propagation(&env, &output, 10, 50);
    eprintln!("50 rows reached the follower in {took:?}");

    propagation(&env, &output, 60, 50);
    // `status --output` shows the follower and the transaction it reached (updated every 2 s).
    let follower_status = || {
        let r = env.run(["status", "--json", "--output", output.to_str().unwrap()]);
        serde_json::from_str::<serde_json::Value>(r.stdout().trim()).unwrap_or_default()
    };
    wait_for("the follower's txid in its status", LONG, || {
        follower_status()["databases"][0]["txid"].as_u64() > Some(1)
    });
    let v = follower_status();
    assert_eq!(v["state"], "ready");
    assert_eq!(v["databases"][0]["status"], "following");
    stop.store(true, Ordering::Relaxed);
    let reads = reader.join().expect("the reader saw an error");
    assert!(reads > 10, "only {reads} reads");
    follow.signal("TERM");
    assert_eq!(follow.wait_code(LONG), Some(0));
    primary.signal("TERM");
    assert_eq!(primary.wait_code(LONG), Some(0));
    assert_eq!(rows(&output), rows(&env.db()));
}

#[test]
fn a_follower_of_an_s3_replica_sees_the_primarys_rows() {
    let env = TestEnv::new();
    let s3 = crate::s3::S3Server::start(&env);
    let creds = crate::s3::creds();
    insert(&env.db(), 0, 5);
    save_config(&env, &crate::s3::s3_yaml(&env, &s3, &creds));
    let mut primary = primary(&env);
    let output = env.path("s3-follower.db");
    let mut follow = follower(&env, &output, &[env.db().to_str().unwrap()]);
    wait_for("the follower's copy", LONG, || {
        count_readonly(&output) == Some(5)
    });
    propagation(&env, &output, 5, 20);
    let err = std::fs::read_to_string(env.path("follow.err")).unwrap();
    assert!(
        !err.contains(&creds.secret),
        "the secret leaked into the follower's output"
    );
    follow.signal("TERM");
    assert_eq!(follow.wait_code(LONG), Some(0));
    primary.signal("TERM");
    assert_eq!(primary.wait_code(LONG), Some(0));
}

#[test]
fn a_follower_survives_a_sigkill_of_its_litestream_and_catches_up() {
    let env = TestEnv::new();
    insert(&env.db(), 0, 10);
    save_config(&env, &config_yaml(&env, "", ""));
    let mut primary = primary(&env);
    let output = env.path("follower.db");
    let mut follow = follower(&env, &output, &[]);
    wait_for("the follower's copy", LONG, || {
        count_readonly(&output) == Some(10)
    });
    propagation(&env, &output, 10, 20);
    let child = litestream_of(&follow).expect("the follower's litestream");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    wait_for("a new follower litestream", LONG, || {
        litestream_of(&follow).is_some_and(|p| p != child)
    });
    insert(&env.db(), 30, 60);
    wait_for("the follower caught up", LONG, || {
        count_readonly(&output) == Some(60)
    });
    assert!(
        follow.child.try_wait().unwrap().is_none(),
        "the follower keeps running"
    );
    follow.signal("TERM");
    assert_eq!(follow.wait_code(LONG), Some(0));
    primary.signal("TERM");
    assert_eq!(primary.wait_code(LONG), Some(0));
    assert_eq!(rows(&output), rows(&env.db()));
}
