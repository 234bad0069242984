//! Operations with the real litestream: restore and verify from the stored config, status,
//! health endpoint, systemd notification, doctor.

use std::io::{Read, Write};
use std::time::Duration;

use crate::replication::*;
use crate::support::{wait_for, TestEnv};

const LONG: Duration = Duration::from_secs(30);

fn litestream_child(sup: &Background) -> u32 {
    let kids = children_of(sup.pid());
    assert_eq!(kids.len(), 1, "{kids:?}");
    kids[0]
}

/// Waits until the replica has caught up with everything written so far.
fn synced(env: &TestEnv) {
    wait_for("verify ok", LONG, || {
        env.run(["verify", "--timeout", "5s"]).code() == 0
    });
}

fn http_get(port: u16, path: &str) -> (u16, String) {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let code = text.split_whitespace().nth(1).unwrap().parse().unwrap();
    (
        code,
        text.split("\r\n\r\n").nth(1).unwrap_or("").to_string(),
    )
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn restore_gives_the_same_rows_refuses_to_overwrite_and_leaves_no_plaintext() {
    let env = TestEnv::new();
    insert(&env.db(), 0, 200);
    let marker = format!("marker-{}", std::process::id());
    save_config(&env, &config_yaml(&env, &format!("# {marker}\n"), ""));
    let mut sup = run_bg(&env, &[]);
    wait_ready(&env);
    insert(&env.db(), 200, 300);
    sup.signal("TERM");
    assert_eq!(sup.wait_code(LONG), Some(0));
    let out = env.path("restored.db");
    let r = env.run([
        "restore",
        "-o",
        out.to_str().unwrap(),
        env.db().to_str().unwrap(),
    ]);
    r.success().stdout_has("integrity_check ok");
    assert_eq!(rows(&out), rows(&env.db()));
    assert_eq!(rows(&out).len(), 300);
    let before = std::fs::read(&out).unwrap();
    let again = env.run([
        "restore",
        "-o",
        out.to_str().unwrap(),
        env.db().to_str().unwrap(),
    ]);
    again.code_is(2).stderr_has("--force");
    assert_eq!(std::fs::read(&out).unwrap(), before);
    for dir in [
        env.dir.path(),
        std::path::Path::new("/dev/shm"),
        &std::env::temp_dir(),
    ] {
        assert!(
            files_containing(dir, marker.as_bytes()).is_empty(),
            "plaintext config left in {dir:?}"
        );
    }
}

#[test]
fn point_in_time_restore_returns_the_earlier_state() {
    let env = TestEnv::new();
    insert(&env.db(), 0, 10);
    save_config(&env, &config_yaml(&env, "", ""));
    let mut sup = run_bg(&env, &[]);
    wait_ready(&env);
    synced(&env);
    // A moment strictly between the two batches, on whole seconds either side.
    std::thread::sleep(Duration::from_millis(1100));
    let between = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
    std::thread::sleep(Duration::from_millis(1100));
    insert(&env.db(), 10, 20);
    synced(&env);
    sup.signal("TERM");
    assert_eq!(sup.wait_code(LONG), Some(0));
    let out = env.path("earlier.db");
    env.run([
        "restore",
        "--timestamp",
        &between,
        "-o",
        out.to_str().unwrap(),
        env.db().to_str().unwrap(),
    ])
    .success();
    assert_eq!(rows(&out).len(), 10, "restored as of {between}");
}

#[test]
fn verify_is_ok_when_healthy_and_failed_when_the_replica_lost_its_files() {
    let env = TestEnv::new();
    insert(&env.db(), 0, 50);
    save_config(&env, &config_yaml(&env, "", ""));
    let mut sup = run_bg(&env, &[]);
    wait_ready(&env);
    insert(&env.db(), 50, 60);
    let r = env.run(["verify", "--timeout", "20s"]);
    r.code_is(0).stdout_has(": ok");
    sup.signal("TERM");
    assert_eq!(sup.wait_code(LONG), Some(0));
    // The replica loses its LTX files.
    for entry in walk(&env.path("replica")) {
        if entry.extension().is_some_and(|e| e == "ltx") {
            std::fs::remove_file(entry).unwrap();
        }
    }
    let r = env.run(["verify", "--timeout", "5s"]);
    r.code_is(1).stdout_has("failed");
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[test]
fn verify_is_inconclusive_when_the_replica_cannot_keep_up() {
    let env = TestEnv::new();
    insert(&env.db(), 0, 1);
    save_config(&env, &config_yaml(&env, "", ""));
    let mut sup = run_bg(&env, &[]);
    wait_ready(&env);
    synced(&env);
    // litestream is frozen: the new row cannot reach the replica.
    let child = litestream_child(&sup);
    let pid = nix::unistd::Pid::from_raw(child as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGSTOP).unwrap();
    insert(&env.db(), 1, 2);
    let r = env.run(["verify", "--timeout", "2s"]);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGCONT).unwrap();
    r.code_is(3).stdout_has("inconclusive");
    sup.signal("TERM");
    assert_eq!(sup.wait_code(LONG), Some(0));
    assert_eq!(
        env.run(["verify"]).code(),
        0,
        "caught up once litestream runs again"
    );
}

#[test]
fn status_and_healthz_follow_backoff_and_recovery() {
    let env = TestEnv::new();
    save_config(&env, &config_yaml(&env, "", ""));
    env.run(["status"]).code_is(3);
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let mut sup = run_bg(&env, &["--health-addr", &addr, "--backoff-initial", "4s"]);
    wait_ready(&env);
    wait_for("healthy status naming the database", LONG, || {
        let r = env.run(["status", "--json"]);
        r.code() == 0 && r.stdout().contains("\"databases\":[{")
    });
    let json = env.run(["status", "--json"]);
    json.success();
    let v: serde_json::Value = serde_json::from_str(json.stdout().trim()).unwrap();
    assert_eq!(v["state"], "ready");
    assert_eq!((&v["running"], &v["healthy"]), (&true.into(), &true.into()));
    let dbs = v["databases"].as_array().unwrap();
    assert_eq!(dbs.len(), 1);
    assert_eq!(
        dbs[0]["path"].as_str().unwrap(),
        std::fs::canonicalize(env.db()).unwrap().to_str().unwrap()
    );
    assert_eq!(http_get(port, "/healthz").0, 200);

    let child = litestream_child(&sup);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    wait_for("backoff in status", LONG, || {
        env.run(["status"]).code() == 1
    });
    let (code, body) = http_get(port, "/healthz");
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("backoff"), "{body}");
    assert!(env.run(["status"]).stdout().contains("backoff"));
    wait_for("healthy again", LONG, || {
        http_get(port, "/healthz").0 == 200
    });
    // `status` reads the status file, written after the state /healthz answers from.
    wait_for("status healthy again", LONG, || {
        env.run(["status"]).code() == 0
    });
    sup.signal("TERM");
    assert_eq!(sup.wait_code(LONG), Some(0));
    env.run(["status"])
        .code_is(3)
        .stderr_has("no rip-litestream is running");
}

#[test]
fn systemd_gets_ready_and_stopping() {
    let env = TestEnv::new();
    save_config(&env, &config_yaml(&env, "", ""));
    let sock_path = env.path("notify.sock");
    let sock = std::os::unix::net::UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(LONG)).unwrap();
    let mut cmd = env.cmd(["run"]);
    cmd.env("NOTIFY_SOCKET", &sock_path);
    let mut sup = spawn(&env, cmd);
    let mut received = String::new();
    let mut buf = [0u8; 4096];
    while !received.contains("READY=1") {
        let n = sock.recv(&mut buf).expect("no READY=1 within the timeout");
        received.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    // Our log lines reach stderr through a queue, so the ready line may come a little after
    // the datagram: the status says when litestream became ready, which must not be later.
    let notified = std::time::SystemTime::now();
    let mut ready_since = None;
    wait_for("the ready state in the status", LONG, || {
        let s: serde_json::Value =
            serde_json::from_str(env.run(["status", "--json"]).stdout().trim()).unwrap_or_default();
        ready_since = s["ready_since"]
            .as_str()
            .and_then(|t| humantime::parse_rfc3339_weak(t).ok());
        ready_since.is_some()
    });
    assert!(
        ready_since.unwrap() <= notified,
        "READY=1 before litestream was ready"
    );
    sup.signal("TERM");
    while !received.contains("STOPPING=1") {
        let n = sock
            .recv(&mut buf)
            .expect("no STOPPING=1 within the timeout");
        received.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    assert_eq!(sup.wait_code(LONG), Some(0));
}

#[test]
fn doctor_flags_a_database_not_in_wal_mode() {
    let env = TestEnv::new();
    let db = env.path("rollback.db");
    rusqlite::Connection::open(&db)
        .unwrap()
        .execute_batch("CREATE TABLE x (a)")
        .unwrap();
    let r = env.run(["doctor", db.to_str().unwrap()]);
    r.code_is(1).stdout_has("FIX  journal mode");
    insert(&env.db(), 0, 1);
    env.run(["doctor", env.db().to_str().unwrap()])
        .success()
        .stdout_has("ok   journal mode: WAL");
}

#[test]
fn pragmas_make_a_database_ready_for_replication() {
    let env = TestEnv::new();
    let db = env.path("fresh.db");
    let conn = rusqlite::Connection::open(&db).unwrap();
    restinpieces_litestream::pragmas::apply_recommended(&conn).unwrap();
    conn.execute_batch("CREATE TABLE x (a)").unwrap();
    drop(conn);
    env.run(["doctor", db.to_str().unwrap()]).success();
}

#[test]
fn impossible_flag_values_are_refused_at_parse_time_with_exit_2_and_one_line() {
    let env = TestEnv::new();
    env.init();
    let before = crate::support::snapshot(&env.db());
    for (args, needle) in [
        (&["run", "--verify-every", "0s"][..], "must be more than 0"),
        (&["run", "--verify-every", "often"][..], "--verify-every"),
        (
            &["restore", "--txid", "xyz", "-o", "out.db"][..],
            "16 hex digits",
        ),
        (
            &["restore", "--txid", "00000000000000001", "-o", "out.db"][..],
            "16 hex digits",
        ),
        (
            &["restore", "--timestamp", "yesterday", "-o", "out.db"][..],
            "RFC 3339",
        ),
        (
            &[
                "restore",
                "--timestamp",
                "2026-13-01T00:00:00Z",
                "-o",
                "out.db",
            ][..],
            "RFC 3339",
        ),
    ] {
        let r = env.run(args);
        r.code_is(2).stderr_has(needle);
        assert!(
            !r.stderr().contains("Usage: litestream"),
            "litestream's usage text leaked: {}",
            r.stderr()
        );
        assert!(!env.path("out.db").exists());
    }
    assert_eq!(
        crate::support::snapshot(&env.db()),
        before,
        "the store changed"
    );
    // Good values still parse: a short txid is padded to litestream's 16 digits.
    let db = env.db();
    let r = env.run([
        "restore",
        "--txid",
        "2a",
        "-o",
        "out.db",
        "--if-replica-exists",
        db.to_str().unwrap(),
    ]);
    assert_ne!(r.code(), 2, "{}", r.stderr());
}

#[test]
fn restore_with_force_refuses_the_database_a_running_supervisor_replicates() {
    let env = TestEnv::new();
    env.init();
    insert(&env.db(), 0, 100);
    let mut sup = run_bg(&env, &[]);
    wait_ready(&env);
    synced(&env);
    insert(&env.db(), 100, 570);
    let before = rows(&env.db());
    let db = env.db();
    let db = db.to_str().unwrap();
    // The hurried operator's recovery, onto the live database, with --force.
    let r = env.run(["restore", "--force", "-o", db, db]);
    r.code_is(2)
        .stderr_has("is in use")
        .stderr_has("rip-litestream pid");
    assert_eq!(rows(&env.db()), before, "the live database changed");
    assert_eq!(before.len(), 570);
    sup.signal("TERM");
    assert_eq!(sup.wait_code(Duration::from_secs(60)), Some(0));
    // Once it is stopped, restoring elsewhere works as before.
    let out = env.path("elsewhere.db");
    env.run(["restore", "-o", out.to_str().unwrap(), db])
        .success();
    assert_eq!(rows(&out), before);
}

#[test]
fn a_replica_whose_files_vanished_turns_status_unhealthy() {
    let env = TestEnv::new();
    env.init();
    insert(&env.db(), 0, 50);
    let mut sup = run_bg(&env, &["--replica-check", "1s"]);
    wait_ready(&env);
    synced(&env);
    wait_for("a healthy status", Duration::from_secs(30), || {
        env.run(["status"]).code() == 0
    });
    insert(&env.db(), 50, 60);
    synced(&env);
    // Objects lost: every file holding the first transaction (the snapshot among them) is gone,
    // the later ones stay. litestream goes on writing new files and reports syncing.
    let lost: Vec<_> = walk(&env.path("replica"))
        .into_iter()
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("0000000000000001-"))
        })
        .collect();
    assert!(!lost.is_empty());
    for f in &lost {
        std::fs::remove_file(f).unwrap();
    }
    insert(&env.db(), 60, 70);
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let r = env.run(["status", "--json"]);
        let last = format!("{} {}", r.code(), r.stdout());
        if r.code() == 1 && r.stdout().contains("cannot be restored from") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "status never said the replica cannot be restored from: {last}\nreplica: {:?}\n{}",
            walk(&env.path("replica")),
            run_stderr(&env)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    sup.signal("TERM");
    sup.wait_code(Duration::from_secs(60));
}
