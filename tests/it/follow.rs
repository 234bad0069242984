//! Read replicas: `rip-litestream follow` keeps a read-only copy up to date from the replica,
//! for a file replica and for S3, survives a SIGKILL of its litestream, and its readers never
//! see an error. It never deletes or overwrites a file it did not create (an existing `--output`
//! must be a follower's copy), and a follower that cannot start gives up unless told to keep
//! retrying.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use restinpieces_litestream::follow::{marker_path, START_ATTEMPTS};

use crate::replication::*;
use crate::support::{snapshot, wait_for, Run, TestEnv};

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

/// The primary wrote rows 0..10, made its first backup and was stopped.
fn backed_up(env: &TestEnv) {
    insert(&env.db(), 0, 10);
    save_config(env, &config_yaml(env, "", ""));
    let mut primary = primary(env);
    wait_for("the primary's first backup", LONG, || {
        replica_has_data(&env.path("replica"))
    });
    primary.signal("TERM");
    assert_eq!(primary.wait_code(LONG), Some(0));
}

/// `rip-litestream follow --output OUTPUT ARGS` to completion (hard timeout 60 s).
fn follow_once(env: &TestEnv, output: &std::path::Path, args: &[&str]) -> Run {
    let mut cmd = env.cmd(["follow", "--backoff-initial", "100ms", "--output"]);
    cmd.arg(output).args(args);
    crate::support::run_cmd(cmd)
}

fn inode(path: &std::path::Path) -> u64 {
    std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(path).unwrap())
}

/// The files beside `path` that a follower would have written.
fn follower_files(path: &std::path::Path) -> Vec<std::path::PathBuf> {
    [
        format!("{}-txid", path.display()),
        marker_path(path).display().to_string(),
    ]
    .into_iter()
    .map(std::path::PathBuf::from)
    .filter(|p| p.exists())
    .collect()
}

/// A first follower made its copy (rows 0..10) and was stopped; the primary still runs.
fn copy_made_by_an_earlier_follower(env: &TestEnv, output: &std::path::Path) -> Background {
    insert(&env.db(), 0, 10);
    save_config(env, &config_yaml(env, "", ""));
    let primary = primary(env);
    let mut first = follower(env, output, &[]);
    wait_for("the first follower's copy", LONG, || {
        count_readonly(output) == Some(10)
    });
    wait_for("the follower's marker", LONG, || {
        marker_path(output).exists()
    });
    first.signal("TERM");
    assert_eq!(first.wait_code(LONG), Some(0));
    primary
}

#[test]
fn follow_onto_an_unrelated_database_is_refused_and_leaves_it_intact() {
    let env = TestEnv::new();
    backed_up(&env);
    // The operator mistypes --output: it names another application's database.
    let other = env.path("reports.db");
    insert(&other, 0, 100);
    let before = snapshot(&other);

    follow_once(&env, &other, &[])
        .code_is(2)
        .stderr_has(other.to_str().unwrap())
        .stderr_has("is not a follower copy")
        .stderr_has("Choose another --output, or move that file away");

    assert_eq!(snapshot(&other), before, "the database was changed");
    assert_eq!(rows(&other).len(), 100);
    assert_eq!(follower_files(&other), Vec::<std::path::PathBuf>::new());
}

#[test]
fn follow_onto_a_text_file_is_refused_and_leaves_it_intact() {
    let env = TestEnv::new();
    backed_up(&env);
    let notes = env.path("notes.txt");
    std::fs::write(&notes, "the operator's notes\n").unwrap();
    let before = snapshot(&notes);
    let url = format!("file://{}", env.path("replica").display());

    follow_once(&env, &notes, &[&url])
        .code_is(2)
        .stderr_has(notes.to_str().unwrap())
        .stderr_has("is not a follower copy");

    assert_eq!(snapshot(&notes), before, "the text file was changed");
    assert_eq!(follower_files(&notes), Vec::<std::path::PathBuf>::new());
}

#[test]
fn follow_onto_the_primarys_own_database_is_refused_and_its_rows_stay() {
    let env = TestEnv::new();
    backed_up(&env);
    // The primary's supervisor is stopped; the operator points a follower at its database.
    let wal = std::path::PathBuf::from(format!("{}-wal", env.db().display()));
    let (db_before, wal_before) = (snapshot(&env.db()), snapshot(&wal));
    let rows_before = rows(&env.db());
    assert_eq!(rows_before.len(), 10);

    follow_once(&env, &env.db(), &[])
        .code_is(2)
        .stderr_has(env.db().to_str().unwrap())
        .stderr_has("is not a follower copy");

    assert_eq!(snapshot(&env.db()), db_before, "app.db was changed");
    assert_eq!(snapshot(&wal), wal_before, "app.db-wal was changed");
    assert_eq!(rows(&env.db()), rows_before);
    assert_eq!(follower_files(&env.db()), Vec::<std::path::PathBuf>::new());
}

#[test]
fn follow_onto_a_copy_made_by_an_earlier_follow_keeps_following() {
    let env = TestEnv::new();
    let output = env.path("copy.db");
    let mut primary = copy_made_by_an_earlier_follower(&env, &output);

    // Started again on the same output: accepted, and it follows the new rows.
    let mut again = follower(&env, &output, &[]);
    propagation(&env, &output, 10, 20);
    assert!(
        again.child.try_wait().unwrap().is_none(),
        "the follower keeps running"
    );
    again.signal("TERM");
    assert_eq!(again.wait_code(LONG), Some(0));
    primary.signal("TERM");
    assert_eq!(primary.wait_code(LONG), Some(0));
    assert_eq!(rows(&output), rows(&env.db()));
    assert!(marker_path(&output).exists());
}

#[test]
fn follow_onto_a_copy_from_before_markers_is_accepted_by_its_txid_file() {
    let env = TestEnv::new();
    let output = env.path("copy.db");
    let mut primary = copy_made_by_an_earlier_follower(&env, &output);
    // A copy made before followers wrote markers: only litestream's -txid is beside it.
    std::fs::remove_file(marker_path(&output)).unwrap();

    let mut again = follower(&env, &output, &[]);
    propagation(&env, &output, 10, 20);
    wait_for("the copy marked", LONG, || marker_path(&output).exists());
    again.signal("TERM");
    assert_eq!(again.wait_code(LONG), Some(0));
    primary.signal("TERM");
    assert_eq!(primary.wait_code(LONG), Some(0));
    assert_eq!(rows(&output), rows(&env.db()));
}

#[test]
fn follow_onto_a_copy_replaced_since_by_another_database_is_refused() {
    let env = TestEnv::new();
    let output = env.path("copy.db");
    let mut primary = copy_made_by_an_earlier_follower(&env, &output);
    primary.signal("TERM");
    assert_eq!(primary.wait_code(LONG), Some(0));
    // The operator deletes the copy and copies another database to its path; litestream's -txid
    // and our marker are still there, and the new file often gets the old inode number.
    let other = env.path("other.db");
    insert(&other, 100, 150);
    let old_inode = inode(&output);
    for suffix in ["-wal", "-shm", ""] {
        let _ = std::fs::remove_file(format!("{}{suffix}", output.display()));
    }
    std::fs::copy(&other, &output).unwrap();
    if inode(&output) == old_inode {
        eprintln!("the new file got the copy's inode number: only its birth time tells them apart");
    }
    let before = snapshot(&output);

    follow_once(&env, &output, &[])
        .code_is(2)
        .stderr_has(output.to_str().unwrap())
        .stderr_has("it was replaced since");

    assert_eq!(snapshot(&output), before, "the database was changed");
    assert_eq!(rows(&output).first().map(|r| r.0), Some(100));
    assert_eq!(rows(&output).len(), 50);
}

#[test]
fn a_follower_that_cannot_start_gives_up_with_litestreams_reason() {
    let env = TestEnv::new();
    // The config is saved but the primary never ran: its replica holds no backup.
    insert(&env.db(), 0, 10);
    save_config(&env, &config_yaml(&env, "", ""));
    let output = env.path("copy.db");

    let mut follow = follower(&env, &output, &[]);
    assert_eq!(follow.wait_code(Duration::from_secs(60)), Some(1));
    let err = std::fs::read_to_string(env.path("follow.err")).unwrap();
    assert!(
        err.contains(&format!("gave up after {START_ATTEMPTS} attempts")),
        "{err}"
    );
    assert!(err.contains("--keep-retrying"), "{err}");
    // litestream's own last line says why.
    let last = err.lines().last().unwrap_or_default();
    assert!(last.contains("no matching backup files"), "{err}");
    assert!(!output.exists());
}

#[test]
fn a_follower_with_keep_retrying_waits_for_the_primarys_first_backup() {
    let env = TestEnv::new();
    insert(&env.db(), 0, 10);
    save_config(&env, &config_yaml(&env, "", ""));
    let output = env.path("copy.db");

    let mut follow = follower(
        &env,
        &output,
        &["--keep-retrying", "--backoff-max", "500ms"],
    );
    let exits = || {
        std::fs::read_to_string(env.path("follow.err"))
            .unwrap_or_default()
            .matches("litestream exited")
            .count() as u32
    };
    // Past the point where it would have given up, it still runs.
    wait_for(
        "more failed starts than a follower makes by default",
        LONG,
        || exits() > START_ATTEMPTS + 1,
    );
    assert!(
        follow.child.try_wait().unwrap().is_none(),
        "the follower keeps retrying"
    );

    // The primary makes its first backup: the follower's copy appears.
    let mut primary = primary(&env);
    wait_for("the follower's copy", LONG, || {
        count_readonly(&output) == Some(10)
    });
    follow.signal("TERM");
    assert_eq!(follow.wait_code(LONG), Some(0));
    primary.signal("TERM");
    assert_eq!(primary.wait_code(LONG), Some(0));
}

#[test]
fn following_a_dir_database_is_refused_at_once() {
    let env = TestEnv::new();
    let dir = env.path("tenants");
    std::fs::create_dir_all(&dir).unwrap();
    insert(&dir.join("a.db"), 0, 5);
    let yaml = format!(
        "{}  - dir: {}\n    pattern: \"*.db\"\n    replica:\n      type: file\n      path: {}\n",
        config_yaml(&env, "", ""),
        dir.display(),
        env.path("tenants-replica").display()
    );
    save_config(&env, &yaml);
    let output = env.path("copy.db");

    follow_once(&env, &output, &[dir.join("a.db").to_str().unwrap()])
        .code_is(2)
        .stderr_has("`dir:` database")
        .stderr_has(dir.to_str().unwrap());
    assert!(!output.exists());
}
