//! `--json` on `restore`, `doctor` and `config check`, with the real litestream: stdout holds
//! one JSON object and nothing else, an error that ends the command included.

use std::time::Duration;

use serde_json::Value;

use crate::cli::{json_error, json_of, s};
use crate::replication::*;
use crate::support::{snapshot, TestEnv};

const LONG: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------------------------
// restore --json

#[test]
fn restore_json_reports_what_was_restored_and_what_was_skipped() {
    let env = TestEnv::new();
    insert(&env.db(), 0, 150);
    save_config(&env, &config_yaml(&env, "", ""));
    let mut sup = run_bg(&env, &[]);
    wait_ready(&env);
    insert(&env.db(), 150, 250);
    sup.signal("TERM");
    assert_eq!(sup.wait_code(LONG), Some(0), "{}", run_stderr(&env));

    let out = env.path("restored.db");
    let r = env.run(["restore", "--json", "-o", s(&out), s(&env.db())]);
    r.success();
    let v = json_of(&r);
    assert_eq!(v["restored"], true, "{v}");
    assert_eq!(v["database"], s(&env.db()), "{v}");
    assert_eq!(v["output"], s(&out), "{v}");
    assert_eq!(v["size"], std::fs::metadata(&out).unwrap().len(), "{v}");
    assert_eq!(v["integrity_check"], "ok", "{v}");
    assert!(v["duration_ms"].is_u64(), "{v}");
    let txid = v["txid"].as_u64().expect("a txid");
    assert!(txid > 0, "{v}");
    assert_eq!(rows(&out), rows(&env.db()));
    assert_eq!(rows(&out).len(), 250);
    // The same restore without --json names the same transaction.
    let human = env.path("human.db");
    env.run(["restore", "-o", s(&human), s(&env.db())])
        .success()
        .stdout_has(&format!("txid {txid:016x}"));

    // Skipped: the output exists.
    let before = snapshot(&out);
    let r = env.run([
        "restore",
        "--json",
        "--if-db-not-exists",
        "-o",
        s(&out),
        s(&env.db()),
    ]);
    r.success();
    let v = json_of(&r);
    assert_eq!(v["restored"], false, "{v}");
    assert!(
        v["reason"].as_str().unwrap().contains("--if-db-not-exists"),
        "{v}"
    );
    assert_eq!(snapshot(&out), before);

    // Refused (exists, no --force): exit 2, the error as JSON, the file untouched.
    let r = env.run(["restore", "--json", "-o", s(&out), s(&env.db())]);
    let message = json_error(&r, 2);
    assert!(message.contains("--force"), "{message}");
    assert_eq!(snapshot(&out), before);
}

#[test]
fn restore_json_with_no_backup_and_if_replica_exists() {
    let env = TestEnv::new();
    insert(&env.db(), 0, 5);
    save_config(&env, &config_yaml(&env, "", ""));
    let out = env.path("restored.db");
    let r = env.run([
        "restore",
        "--json",
        "--if-replica-exists",
        "-o",
        s(&out),
        s(&env.db()),
    ]);
    r.success();
    let v = json_of(&r);
    assert_eq!(v["restored"], false, "{v}");
    assert!(v["reason"].as_str().unwrap().contains("no backup"), "{v}");
    assert!(!out.exists());
    // Without the flag, no backup is an error (as JSON).
    let r = env.run(["restore", "--json", "-o", s(&out), s(&env.db())]);
    assert_ne!(r.code(), 0);
    json_error(&r, r.code());
    assert!(!out.exists());
}

// ---------------------------------------------------------------------------------------------
// doctor --json

#[test]
fn doctor_json_on_a_wal_database_and_one_that_must_change() {
    let env = TestEnv::new();
    // A WAL database written with SQLite's defaults otherwise, and its writer still open.
    let db = env.path("wal.db");
    let conn = open(&db);
    conn.execute("INSERT INTO t (id, body) VALUES (1, 'one')", [])
        .unwrap();
    let before = (snapshot(&db), snapshot(&env.path("wal.db-wal")));
    let r = env.run(["doctor", "--json", s(&db)]);
    r.success();
    let v = json_of(&r);
    assert_eq!(v["verdict"], "ok", "{v}");
    assert_eq!(v["database"], s(&db), "{v}");
    let checks = v["checks"].as_array().unwrap();
    let check = |name: &str| {
        checks
            .iter()
            .find(|c| c["name"] == name)
            .unwrap_or_else(|| panic!("no {name} check in {v}"))
            .clone()
    };
    assert_eq!(
        check("journal mode"),
        serde_json::json!({"name": "journal mode", "level": "ok", "message": "WAL"})
    );
    assert_eq!(check("open by")["level"], "info");
    for c in checks {
        assert!(c["message"].as_str().is_some_and(|m| !m.is_empty()), "{c}");
    }
    assert_eq!((snapshot(&db), snapshot(&env.path("wal.db-wal"))), before);
    assert_eq!(rows(&db), [(1, "one".to_string())]);
    drop(conn);

    // A rollback-journal database: exit 1, as without --json.
    let delete = env.path("delete.db");
    rusqlite::Connection::open(&delete)
        .unwrap()
        .execute_batch("CREATE TABLE t (x); INSERT INTO t VALUES (1);")
        .unwrap();
    let r = env.run(["doctor", "--json", s(&delete)]);
    r.code_is(1);
    let v = json_of(&r);
    assert_eq!(v["verdict"], "must_fix", "{v}");
    let mode = &v["checks"][0];
    assert_eq!(
        (&mode["name"], &mode["level"]),
        (&"journal mode".into(), &"error".into()),
        "{v}"
    );
    assert!(
        mode["message"]
            .as_str()
            .unwrap()
            .contains("journal_mode=WAL"),
        "{v}"
    );

    // Not a database, and no file at all: exit 2, the error as JSON.
    let text = env.path("notes.txt");
    std::fs::write(&text, "x".repeat(4096)).unwrap();
    json_error(&env.run(["doctor", "--json", s(&text)]), 2);
    assert_eq!(std::fs::read(&text).unwrap(), "x".repeat(4096).as_bytes());
    let message = json_error(
        &env.run(["doctor", "--json", s(&env.path("missing.db"))]),
        2,
    );
    assert!(message.contains("missing.db"), "{message}");
    assert!(!env.path("missing.db").exists());
}

// ---------------------------------------------------------------------------------------------
// config check --json

#[test]
fn config_check_json_accepted_rejected_invalid_and_unasked() {
    let env = TestEnv::new();
    env.init();
    let id = |generation: usize| {
        let r = env.run(["config", "list", "--json"]);
        let line = r.stdout().lines().nth(generation).unwrap().to_string();
        serde_json::from_str::<Value>(&line).unwrap()["id"].clone()
    };
    let r = env.run(["config", "check", "--json"]);
    r.success();
    let v = json_of(&r);
    assert_eq!(v["valid"], true, "{v}");
    assert_eq!(v["litestream"], "accepted", "{v}");
    assert_eq!(v["litestream_version"], "0.5.17", "{v}");
    assert_eq!(v["generation"], 0, "{v}");
    assert_eq!(v["id"], id(0), "{v}");
    assert_eq!(v["errors"], serde_json::json!([]), "{v}");
    assert!(v["warnings"].is_array(), "{v}");

    // One litestream rejects (a key file it cannot find), saved past the check.
    let yaml = format!(
        "dbs:\n  - path: {}\n    replica:\n      url: s3://backups/app\n      sse-customer-key-path: /nonexistent/sse.key\n",
        env.db().display()
    );
    std::fs::write(env.path("rejected.yml"), &yaml).unwrap();
    env.run(["config", "save", "--no-check", s(&env.path("rejected.yml"))])
        .success();
    let r = env.run(["config", "check", "--json"]);
    r.code_is(2);
    let v = json_of(&r);
    assert_eq!(v["valid"], false, "{v}");
    assert_eq!(v["litestream"], "rejected", "{v}");
    assert_eq!(v["errors"], serde_json::json!([]), "ours accepts it: {v}");
    assert!(
        v["litestream_output"]
            .as_str()
            .unwrap()
            .contains("sse-customer-key-path"),
        "{v}"
    );
    assert_eq!(v["id"], id(0), "{v}");

    // The generation before it, by number.
    let r = env.run(["config", "check", "--json", "-g", "1"]);
    r.success();
    assert_eq!(json_of(&r)["id"], id(1));

    // One we reject under --strict (an unknown key), and litestream not asked (unusable).
    let strict = format!("{}bogus-key: 1\n", config_yaml(&env, "", ""));
    std::fs::write(env.path("strict.yml"), &strict).unwrap();
    env.run(["config", "save", "--no-check", s(&env.path("strict.yml"))])
        .success();
    let r = env.run([
        "config",
        "check",
        "--json",
        "--strict",
        "--litestream",
        s(&env.path("no-such-litestream")),
    ]);
    r.code_is(2);
    let v = json_of(&r);
    assert_eq!(v["valid"], false, "{v}");
    assert_eq!(v["litestream"], "unusable", "{v}");
    assert!(
        v["litestream_error"]
            .as_str()
            .unwrap()
            .contains("no-such-litestream"),
        "{v}"
    );
    let errors = v["errors"].as_array().unwrap();
    assert!(
        errors
            .iter()
            .any(|e| e["key"].as_str().unwrap().contains("bogus-key")),
        "{v}"
    );
    // Lenient, the same key is a warning and the config valid.
    let r = env.run(["config", "check", "--json"]);
    let v = json_of(&r);
    assert!(
        v["warnings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|w| w["key"].as_str().unwrap().contains("bogus-key")),
        "{v}"
    );

    // A generation that is not there: exit 2, the error as JSON.
    let message = json_error(&env.run(["config", "check", "--json", "-g", "9"]), 2);
    assert!(message.contains('9'), "{message}");
}

// ---------------------------------------------------------------------------------------------
// the other --json commands end the same way

#[test]
fn verify_and_config_list_json_errors_are_json_too() {
    let env = TestEnv::new();
    env.run(["keygen"]).success();
    // No store yet: `verify` and `config list` cannot start.
    for args in [&["verify", "--json"][..], &["config", "list", "--json"]] {
        let message = json_error(&env.run(args), 2);
        assert!(message.contains(s(&env.db())), "{args:?}: {message}");
    }
    assert!(!env.db().exists(), "a failed command created the store");
}
