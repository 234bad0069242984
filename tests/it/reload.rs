//! Live reload with the real litestream: a new generation takes effect without losing a write;
//! an unusable one or an unchanged one leaves litestream alone.

use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::replication::*;
use crate::support::{wait_for, TestEnv};

const LONG: Duration = Duration::from_secs(30);

fn status(env: &TestEnv) -> serde_json::Value {
    let r = env.run(["status", "--json"]);
    serde_json::from_str(r.stdout().trim()).unwrap_or(serde_json::Value::Null)
}

fn litestream_pid(env: &TestEnv) -> Option<u64> {
    status(env)["pid"].as_u64()
}

/// Stores `yaml` as a new generation with plain SQL and the `age` CLI (no validation at all).
fn insert_with_age_cli(env: &TestEnv, yaml: &str) {
    let recipient = Command::new("age-keygen")
        .arg("-y")
        .arg(env.key())
        .output()
        .unwrap();
    let recipient = String::from_utf8(recipient.stdout).unwrap();
    let mut age = Command::new("age")
        .args(["-r", recipient.trim()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    age.stdin
        .take()
        .unwrap()
        .write_all(yaml.as_bytes())
        .unwrap();
    let blob = age.wait_with_output().unwrap().stdout;
    let c = rusqlite::Connection::open(env.db()).unwrap();
    c.busy_timeout(Duration::from_secs(5)).unwrap();
    c.execute(
        "INSERT INTO app_config (scope, content, format, description) VALUES ('litestream', ?, 'yml', 'by hand')",
        [blob],
    )
    .unwrap();
}

#[test]
fn a_new_generation_moves_the_replica_without_losing_a_write() {
    let env = TestEnv::new();
    insert(&env.db(), 0, 1);
    save_config(&env, &config_yaml(&env, "", ""));
    let mut sup = run_bg(&env, &["--reload-check", "1s"]);
    wait_for("ready", LONG, || {
        run_stderr(&env).contains("litestream ready")
    });
    let first_pid = litestream_pid(&env).unwrap();
    let first_id = status(&env)["config_id"].as_i64().unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (db, stop) = (env.db(), stop.clone());
        std::thread::spawn(move || {
            let c = open(&db);
            let mut i = 1;
            while !stop.load(Ordering::Relaxed) {
                c.execute(
                    "INSERT INTO t (id, body) VALUES (?, 'written during the reload')",
                    [i],
                )
                .unwrap();
                i += 1;
                std::thread::sleep(Duration::from_millis(2));
            }
        })
    };
    let moved = config_yaml(&env, "", "").replace("/replica", "/replica-new");
    save_config(&env, &moved);
    let new_id = first_id + 1;
    // Within the check interval plus a few seconds.
    wait_for(
        "litestream runs with the new generation",
        Duration::from_secs(6),
        || {
            let s = status(&env);
            s["config_id"].as_i64() == Some(new_id)
                && s["state"] == "ready"
                && s["pid"].as_u64() != Some(first_pid)
        },
    );
    wait_for("the new replica has data", LONG, || {
        replica_has_data(&env.path("replica-new"))
    });
    std::thread::sleep(Duration::from_millis(300)); // the writer goes on a little after the switch
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    sup.signal("TERM");
    assert_eq!(sup.wait_code(LONG), Some(0), "{}", run_stderr(&env));
    let out = env.path("restored.db");
    restore(&env.path("replica-new"), &out);
    assert!(integrity_ok(&out));
    let written = rows(&env.db());
    assert!(written.len() > 10);
    assert_eq!(rows(&out), written, "every row is in the new replica");
}

#[test]
fn an_invalid_generation_and_sighup_leave_litestream_running() {
    let env = TestEnv::new();
    save_config(&env, &config_yaml(&env, "", ""));
    let mut sup = run_bg(&env, &["--reload-check", "0"]);
    wait_for("ready", LONG, || {
        run_stderr(&env).contains("litestream ready")
    });
    let pid = litestream_pid(&env).unwrap();
    let id = status(&env)["config_id"].as_i64().unwrap();
    insert_with_age_cli(&env, "logging:\n  type: xml\ndbs: []\n");
    sup.signal("HUP");
    wait_for("the rejection in the log", LONG, || {
        run_stderr(&env).contains("config not reloaded")
    });
    assert_eq!(litestream_pid(&env), Some(pid));
    assert_eq!(
        status(&env)["config_id"].as_i64(),
        Some(id),
        "status shows the old generation"
    );
    assert!(
        sup.child.try_wait().unwrap().is_none(),
        "the supervisor keeps running"
    );
    sup.signal("TERM");
    assert_eq!(sup.wait_code(LONG), Some(0));
}

#[test]
fn sighup_with_an_unchanged_config_keeps_the_same_litestream() {
    let env = TestEnv::new();
    save_config(&env, &config_yaml(&env, "", ""));
    let mut sup = run_bg(&env, &[]);
    wait_for("ready", LONG, || {
        run_stderr(&env).contains("litestream ready")
    });
    let pid = litestream_pid(&env).unwrap();
    sup.signal("HUP");
    wait_for("the reload answer", LONG, || {
        run_stderr(&env).contains("config unchanged")
    });
    assert_eq!(litestream_pid(&env), Some(pid));
    assert!(
        !run_stderr(&env).contains("signal received"),
        "litestream never sees SIGHUP"
    );
    sup.signal("TERM");
    assert_eq!(sup.wait_code(LONG), Some(0));
}

/// The issue's case: a generation our rules accept but litestream rejects, saved around the
/// check while `run -- APP` runs. The healthy litestream keeps running, the application is left
/// alone, status and health name the rejected row, and the next good generation applies.
#[test]
fn a_generation_litestream_rejects_never_stops_the_running_one() {
    let env = TestEnv::new();
    insert(&env.db(), 0, 1);
    save_config(&env, &config_yaml(&env, "", ""));
    let marker = env.path("app-got-term");
    let app = format!(
        "trap 'touch {}; exit 0' TERM; while :; do sleep 0.1; done",
        marker.display()
    );
    let mut sup = run_bg(&env, &["--reload-check", "1s", "--", "sh", "-c", &app]);
    wait_ready(&env);
    let pid = litestream_pid(&env).unwrap();
    let id = status(&env)["config_id"].as_i64().unwrap();
    // An SSE key file that is not there: our rules leave it to litestream, which refuses it.
    let bad = format!(
        "dbs:\n  - path: {}\n    replica:\n      url: s3://backups/app\n      sse-customer-key-path: /nonexistent/sse.key\n",
        env.db().display()
    );
    let file = env.path("bad.yml");
    std::fs::write(&file, &bad).unwrap();
    env.run(["config", "save", "--no-check", file.to_str().unwrap()])
        .success();
    let bad_id = id + 1;
    wait_for("the rejected generation in the status", LONG, || {
        status(&env)["rejected_generation"]["id"].as_i64() == Some(bad_id)
    });
    let s = env.run(["status"]);
    s.code_is(1)
        .stdout_has(&format!("newest generation rejected: row id {bad_id}"))
        .stdout_has("unhealthy");
    assert_eq!(litestream_pid(&env), Some(pid), "litestream was restarted");
    assert_eq!(status(&env)["config_id"].as_i64(), Some(id));
    assert!(!marker.exists(), "the application was signalled");
    // Tried once, not at every check: one rejection in the log after a few checks.
    std::thread::sleep(Duration::from_millis(2500)); // three reload checks go by
    assert_eq!(
        run_stderr(&env).matches("config not reloaded").count(),
        1,
        "{}",
        run_stderr(&env)
    );
    // The operator deletes the bad row: the generation in use is the newest again, and health
    // no longer names a rejection.
    rusqlite::Connection::open(env.db())
        .unwrap()
        .execute("DELETE FROM app_config WHERE id = ?", [bad_id])
        .unwrap();
    wait_for("the rejection forgotten", LONG, || {
        status(&env)["rejected_generation"].is_null()
    });
    env.run(["status"]).code_is(0);
    // Writes still reach the replica through the running litestream.
    insert(&env.db(), 1, 50);
    // A good generation applies and clears the rejection.
    save_config(&env, &config_yaml(&env, "", "      sync-interval: 1s\n"));
    wait_for("the good generation in use", LONG, || {
        let s = status(&env);
        s["config_id"].as_i64() == Some(bad_id + 1) && s["rejected_generation"].is_null()
    });
    assert_eq!(
        litestream_pid(&env).map(|p| p != pid),
        Some(true),
        "not reloaded"
    );
    sup.signal("TERM");
    assert_eq!(sup.wait_code(LONG), Some(0), "{}", run_stderr(&env));
    assert!(marker.exists(), "the application was stopped at the end");
    crate::reliability::assert_replica_equals_source(&env);
}
