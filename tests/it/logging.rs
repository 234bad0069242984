//! The split-logging model: our own logs through tracing (text, JSON lines, the SQLite `logs`
//! table), litestream's lines verbatim or as events with their own level, and no secret in
//! anything the supervisor prints, stores or passes on a command line.

use std::time::Duration;

use crate::log_formats::assert_slog_shape;
use crate::replication::*;
use crate::support::{wait_for, TestEnv};

const LONG: Duration = Duration::from_secs(30);

fn run(env: &TestEnv, global: &[&str], args: &[&str]) -> Background {
    let mut cmd = env.cmd(global);
    cmd.arg("run").args(args);
    spawn(env, cmd)
}

fn json_lines(text: &str) -> Vec<serde_json::Value> {
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON line ({e}): {l}")))
        .collect()
}

/// A config whose file replica cannot be written (its directory is under a regular file).
fn unwritable_replica(env: &TestEnv) -> String {
    std::fs::write(env.path("not-a-dir"), "x").unwrap();
    format!(
        "logging:\n  type: json\ndbs:\n  - path: {}\n    replica:\n      type: file\n      path: {}\n",
        env.db().display(),
        env.path("not-a-dir/replica").display()
    )
}

#[test]
fn json_log_format_writes_slog_shaped_lines_with_flat_fields() {
    let env = TestEnv::new();
    insert(&env.db(), 0, 1);
    save_config(&env, &config_yaml(&env, "logging:\n  type: json\n", ""));
    let mut sup = run(
        &env,
        &["--log-format", "json"],
        &["--litestream-logs", "tracing"],
    );
    wait_for("ready", LONG, || {
        run_stderr(&env).contains("litestream ready")
    });
    sup.signal("TERM");
    assert_eq!(sup.wait_code(LONG), Some(0));
    let err = run_stderr(&env);
    for l in err.lines() {
        assert_slog_shape(l);
    }
    let lines = json_lines(&err);
    assert!(lines.len() > 5);
    let started = lines
        .iter()
        .find(|l| l["msg"] == "litestream started")
        .unwrap();
    assert!(started["pid"].as_u64().is_some(), "{started}");
    assert_eq!(started["level"], "INFO");
    // litestream's own JSON fields, spread flat beside ours.
    let replicating = lines
        .iter()
        .find(|l| l["target"] == "litestream" && l["msg"] == "replicating to")
        .unwrap_or_else(|| panic!("litestream's lines as events:\n{err}"));
    assert!(
        replicating["db"].is_string() || replicating["type"].is_string(),
        "{replicating}"
    );
}

#[test]
fn litestream_error_lines_become_error_events_in_tracing_mode() {
    let env = TestEnv::new();
    insert(&env.db(), 0, 1);
    save_config(&env, &unwritable_replica(&env));
    let mut sup = run(
        &env,
        &["--log-format", "json"],
        &["--litestream-logs", "tracing"],
    );
    let is_error_event =
        |l: &serde_json::Value| l["target"] == "litestream" && l["level"] == "ERROR";
    wait_for("an ERROR event from litestream", LONG, || {
        run_stderr(&env)
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .any(|l| is_error_event(&l))
    });
    sup.signal("TERM");
    sup.wait_code(LONG);

    // An `Error:` start-up line (plain text, on stderr) is an error event too.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let yaml = format!(
        "dbs:\n  - path: {}\n    replica:\n      url: sftp://u@127.0.0.1:{port}/r\n",
        env.db().display()
    );
    save_config(&env, &yaml);
    let mut sup = run(
        &env,
        &["--log-format", "json"],
        &["--litestream-logs", "tracing"],
    );
    assert_eq!(sup.wait_code(LONG), Some(1));
    let err = run_stderr(&env);
    let events: Vec<serde_json::Value> = err
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    assert!(
        events
            .iter()
            .any(|l| is_error_event(l) && l["msg"].as_str().unwrap().starts_with("Error:")),
        "{err}"
    );
}

#[test]
fn log_db_holds_slog_levels_json_data_and_rfc3339_times() {
    let env = TestEnv::new();
    insert(&env.db(), 0, 1);
    save_config(&env, &unwritable_replica(&env));
    let logs = env.path("logs.db");
    let mut sup = run(
        &env,
        &["--log-db", logs.to_str().unwrap(), "--log-level", "debug"],
        &["--litestream-logs", "tracing", "--backoff-initial", "100ms"],
    );
    // Killed once ready (a kill during start-up is a failed start, not a restart).
    wait_for("litestream's ERROR, once ready", LONG, || {
        let err = run_stderr(&env);
        err.contains("ERROR") && err.contains("litestream ready")
    });
    let child = children_of(sup.pid())
        .into_iter()
        .find(|p| {
            std::fs::read_to_string(format!("/proc/{p}/cmdline"))
                .unwrap_or_default()
                .contains("replicate")
        })
        .expect("litestream");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    wait_for("restart", LONG, || {
        run_stderr(&env).matches("litestream ready").count() >= 2
    });
    sup.signal("TERM");
    sup.wait_code(LONG);
    let conn = rusqlite::Connection::open(&logs).unwrap();
    let mut stmt = conn
        .prepare("SELECT level, message, data, created FROM logs")
        .unwrap();
    let rows: Vec<(i64, String, String, String)> = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let levels: std::collections::BTreeSet<i64> = rows.iter().map(|r| r.0).collect();
    for level in [-4, 0, 4, 8] {
        assert!(levels.contains(&level), "level {level} missing: {levels:?}");
    }
    for (_, _, data, created) in &rows {
        assert!(serde_json::from_str::<serde_json::Value>(data)
            .unwrap()
            .is_object());
        humantime::parse_rfc3339(created).unwrap_or_else(|e| panic!("{created}: {e}"));
    }
    let schema: String = conn
        .query_row(
            "SELECT sql FROM sqlite_master WHERE name = 'logs'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(
        schema.contains("DEFAULT ('r'||lower(hex(randomblob(7))))"),
        "{schema}"
    );
}

#[test]
fn a_burst_of_100000_events_never_blocks_and_the_drops_are_logged() {
    use tracing_subscriber::layer::SubscriberExt;
    let env = TestEnv::new();
    let logs = env.path("logs.db");
    let (layer, guard) = restinpieces_litestream::framework_logs::log_db(&logs).unwrap();
    // Another process holds the database's write lock: the writer is stuck meanwhile.
    let locker = rusqlite::Connection::open(&logs).unwrap();
    locker.execute_batch("BEGIN EXCLUSIVE").unwrap();
    let subscriber = tracing_subscriber::registry().with(layer);
    tracing::subscriber::with_default(subscriber, || {
        for i in 0..100_000 {
            tracing::info!(i, "burst");
        }
    });
    locker.execute_batch("COMMIT").unwrap();
    drop(guard);
    let conn = rusqlite::Connection::open(&logs).unwrap();
    let (written, dropped): (i64, String) = (
        conn.query_row("SELECT count(*) FROM logs WHERE message = 'burst'", [], |r| r.get(0)).unwrap(),
        conn.query_row(
            "SELECT data FROM logs WHERE message LIKE 'log records dropped%' ORDER BY created DESC LIMIT 1",
            [],
            |r| r.get(0),
        )
        .unwrap(),
    );
    let dropped: serde_json::Value = serde_json::from_str(&dropped).unwrap();
    let total = dropped["dropped_total"].as_i64().unwrap();
    assert!(total > 0);
    assert_eq!(
        written + total,
        100_000,
        "every event is written or counted"
    );
}

const SECRETS: [&str; 5] = [
    "AKIA-TEST-ID-4821",
    "s3-secret-value-9917",
    "sftp-password-3306",
    "url-password-7744",
    "hb-password-1209",
];

fn secret_config(env: &TestEnv, replica: &str) -> String {
    format!(
        "access-key-id: {}\nsecret-access-key: {}\nheartbeat-url: http://hb:{}@127.0.0.1:9/ping\ndbs:\n  - path: {}\n    replica:\n{replica}",
        SECRETS[0],
        SECRETS[1],
        SECRETS[4],
        env.db().display(),
    )
}

fn assert_no_secret(what: &str, text: &str) {
    for s in SECRETS {
        assert!(!text.contains(s), "secret {s} found in {what}:\n{text}");
    }
}

fn all_cmdlines() -> String {
    let mut out = String::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        if let Ok(c) = std::fs::read(e.path().join("cmdline")) {
            out.push_str(&String::from_utf8_lossy(&c));
            out.push('\n');
        }
    }
    out
}

#[test]
fn credentials_appear_nowhere_in_a_run_that_succeeds() {
    let env = TestEnv::new();
    insert(&env.db(), 0, 1);
    let replica = format!(
        "      type: file\n      path: {}\n      password: {}\n",
        env.path("replica").display(),
        SECRETS[2]
    );
    save_config(&env, &secret_config(&env, &replica));
    let logs = env.path("logs.db");
    let mut sup = run(
        &env,
        &["--log-db", logs.to_str().unwrap(), "--log-level", "debug"],
        &["--litestream-logs", "tracing"],
    );
    wait_for("ready", LONG, || {
        run_stderr(&env).contains("litestream ready")
    });
    assert_no_secret("/proc/*/cmdline", &all_cmdlines());
    let child = children_of(sup.pid())
        .into_iter()
        .find(|p| {
            std::fs::read_to_string(format!("/proc/{p}/cmdline"))
                .unwrap_or_default()
                .contains("replicate")
        })
        .expect("litestream");
    let environ = std::fs::read(format!("/proc/{child}/environ")).unwrap();
    assert_no_secret(
        "litestream's environment",
        &String::from_utf8_lossy(&environ),
    );
    let status = env.run(["status", "--json"]);
    assert_no_secret("status", &status.stdout());
    sup.signal("TERM");
    assert_eq!(sup.wait_code(LONG), Some(0));
    assert_no_secret("stderr", &run_stderr(&env));
    assert_no_secret(
        "stdout",
        &std::fs::read_to_string(env.path("run.out")).unwrap(),
    );
    assert_no_secret(
        "the logs table",
        &String::from_utf8_lossy(&std::fs::read(&logs).unwrap()),
    );
    for f in walk_files(&env.runtime()) {
        assert_no_secret(
            &f.display().to_string(),
            &String::from_utf8_lossy(&std::fs::read(&f).unwrap()),
        );
    }
}

#[test]
fn credentials_appear_nowhere_in_a_run_that_fails() {
    let env = TestEnv::new();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let replica = format!(
        "      url: sftp://bob:{}@127.0.0.1:{port}/backups\n      password: {}\n",
        SECRETS[3], SECRETS[2]
    );
    save_config(&env, &secret_config(&env, &replica));
    let logs = env.path("logs.db");
    let mut sup = run(
        &env,
        &["--log-db", logs.to_str().unwrap(), "--log-level", "debug"],
        &[],
    );
    assert_eq!(sup.wait_code(LONG), Some(1));
    let err = run_stderr(&env);
    assert!(err.contains("Error:"), "{err}");
    assert_no_secret("stderr", &err);
    assert_no_secret(
        "the logs table",
        &String::from_utf8_lossy(&std::fs::read(&logs).unwrap()),
    );
    // The human form and the JSON one (which carries litestream's own output and our errors).
    for json in [&[][..], &["--json"]] {
        let check = env.run([&["config", "check"][..], json].concat());
        assert_no_secret(
            "config check",
            &format!("{}{}", check.stdout(), check.stderr()),
        );
        let out = env.path("r.db");
        let restore = env.run(
            [
                &["restore", "-o", out.to_str().unwrap()][..],
                json,
                &[env.db().to_str().unwrap()],
            ]
            .concat(),
        );
        assert_no_secret(
            "restore",
            &format!("{}{}", restore.stdout(), restore.stderr()),
        );
    }
}

fn walk_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk_files(&p));
        } else if p.is_file() {
            out.push(p);
        }
    }
    out
}

#[test]
fn a_bad_rust_log_or_log_level_is_refused_with_exit_2_and_nothing_saved_or_started() {
    let env = TestEnv::new();
    env.init();
    let yaml = config_yaml(&env, "", "");
    std::fs::write(env.path("new.yml"), &yaml).unwrap();
    let generations = || {
        env.run(["config", "list"])
            .success()
            .stdout()
            .lines()
            .count()
    };
    let before = generations();
    for (rust_log, level, says) in [
        (
            Some("info,restinpieces_litestream=loud"),
            "info",
            "RUST_LOG",
        ),
        (Some("a=b=c"), "info", "too many '='"),
        (None, "verbose", "\"verbose\" is not a level"),
        (None, "warning", "--log-level"),
        (None, ",", "names no level"),
    ] {
        let save = |args: &[&str]| {
            let mut cmd = env.cmd(["--log-level", level]);
            cmd.args(args);
            if let Some(v) = rust_log {
                cmd.env("RUST_LOG", v);
            }
            crate::support::run_cmd(cmd)
        };
        save(&["config", "save", env.path("new.yml").to_str().unwrap()])
            .code_is(2)
            .stderr_has(says);
        save(&["run"]).code_is(2).stderr_has("a level");
    }
    assert_eq!(generations(), before, "nothing saved");
    assert!(!replica_has_data(&env.path("replica")), "nothing started");
}

#[test]
fn rust_log_directives_filter_by_target_and_an_empty_one_falls_back_to_log_level() {
    let env = TestEnv::new();
    env.init();
    // A failing command logs its error at debug under the binary's target.
    let failing = |rust_log: Option<&str>, level: &str| {
        let mut cmd = env.cmd(["--log-level", level, "--scope", "nowhere", "config", "show"]);
        if let Some(v) = rust_log {
            cmd.env("RUST_LOG", v);
        }
        let r = crate::support::run_cmd(cmd);
        assert_ne!(r.code(), 0, "{}", r.stderr());
        r.stderr().contains("command failed")
    };
    assert!(!failing(None, "info"));
    assert!(failing(None, "debug"));
    assert!(failing(Some("warn,rip_litestream=debug"), "info"));
    assert!(!failing(Some("debug,rip_litestream=info"), "debug"));
    assert!(
        failing(Some("debug,"), "info"),
        "a trailing comma is ignored"
    );
    assert!(
        failing(Some("  "), "debug"),
        "an empty RUST_LOG leaves --log-level"
    );
}
