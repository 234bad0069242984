//! The command line as an operator's scripts see it: `--version`, `completions`, `man`, the exit
//! codes of `status`, and `--json` on `status`, `restore`, `doctor` and `config check` (stdout
//! holds one JSON object and nothing else, an error included).

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::replication::*;
use crate::support::{litestream, run_cmd, snapshot, Run, TestEnv};

const LONG: Duration = Duration::from_secs(30);

const SUBCOMMANDS: [&str; 11] = [
    "keygen",
    "init",
    "config",
    "run",
    "restore",
    "verify",
    "status",
    "doctor",
    "follow",
    "completions",
    "man",
];

fn s(p: &Path) -> &str {
    p.to_str().expect("test paths are UTF-8")
}

/// The one JSON object a `--json` command printed: stdout must be exactly one line of JSON.
fn json_of(r: &Run) -> Value {
    let out = r.stdout();
    assert_eq!(
        out.lines().count(),
        1,
        "stdout is not one line:\n{out}\nstderr:\n{}",
        r.stderr()
    );
    serde_json::from_str(out.trim())
        .unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{out}\nstderr:\n{}", r.stderr()))
}

/// An error that ended a `--json` command: its exit code, and the same on stdout as JSON.
fn json_error(r: &Run, code: i32) -> String {
    r.code_is(code);
    let v = json_of(r);
    assert_eq!(v["exit_code"], code, "{v}");
    let message = v["error"].as_str().expect("an error message").to_string();
    assert!(r.stderr().contains(&message), "stderr lacks {message:?}");
    message
}

// ---------------------------------------------------------------------------------------------
// --version

#[test]
fn version_names_ours_and_the_litestream_found() {
    let env = TestEnv::new();
    for flag in ["--version", "-V"] {
        let r = env.run([flag]);
        r.success();
        let out = r.stdout();
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(
            lines,
            [
                format!("rip-litestream {}", env!("CARGO_PKG_VERSION")),
                format!("litestream 0.5.17 ({})", litestream().display())
            ],
            "{flag}"
        );
    }
    // A LITESTREAM_BIN that is missing, or is not litestream: said, and still exit 0.
    let fake = env.path("not-litestream");
    std::fs::write(&fake, "#!/bin/sh\necho hello\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    for (bin, says) in [
        (env.path("nowhere/litestream"), "does not exist"),
        (fake, "did not report a version"),
    ] {
        let mut cmd = env.cmd(["--version"]);
        cmd.env("LITESTREAM_BIN", &bin);
        let r = run_cmd(cmd);
        r.success()
            .stdout_has(&format!("rip-litestream {}\n", env!("CARGO_PKG_VERSION")))
            .stdout_has("litestream: unusable (")
            .stdout_has(says);
    }
}

// ---------------------------------------------------------------------------------------------
// completions and man

#[test]
fn bash_completion_is_valid_bash_and_completes_the_subcommands() {
    let env = TestEnv::new();
    let r = env.run(["completions", "bash"]);
    r.success();
    let script = env.path("rip-litestream.bash");
    std::fs::write(&script, r.stdout()).unwrap();
    let syntax = Command::new("bash")
        .arg("-n")
        .arg(&script)
        .output()
        .unwrap();
    assert!(
        syntax.status.success(),
        "bash -n: {}",
        String::from_utf8_lossy(&syntax.stderr)
    );
    for name in SUBCOMMANDS {
        assert!(
            r.stdout().contains(name),
            "no {name} in the bash completion"
        );
    }
    // What a user's Tab gets: the subcommands starting with the word typed so far, and the
    // config subcommands after `config`.
    let complete = |words: &str| {
        let program = format!(
            "source {}; COMP_WORDS=({words}); COMP_CWORD=$((${{#COMP_WORDS[@]}} - 1)); \
             COMP_LINE=\"${{COMP_WORDS[*]}}\"; COMP_POINT=${{#COMP_LINE}}; \
             _rip__litestream rip-litestream \"${{COMP_WORDS[COMP_CWORD]}}\" \
             \"${{COMP_WORDS[COMP_CWORD-1]}}\"; printf '%s\\n' \"${{COMPREPLY[@]}}\"",
            script.display()
        );
        let out = Command::new("bash")
            .arg("-c")
            .arg(program)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut words: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_owned)
            .collect();
        words.sort();
        words
    };
    assert_eq!(complete("rip-litestream co"), ["completions", "config"]);
    let config = complete("rip-litestream config ''");
    for sub in ["save", "show", "list", "check", "rollback"] {
        assert!(config.contains(&sub.to_string()), "{sub} not in {config:?}");
    }
    assert!(complete("rip-litestream status --j").contains(&"--json".to_string()));
}

#[test]
fn completions_for_every_shell_and_a_refused_one() {
    let env = TestEnv::new();
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let r = env.run(["completions", shell]);
        r.success();
        assert!(r.stdout().contains("rip-litestream"), "{shell}");
        assert!(
            r.stdout().contains("rollback"),
            "{shell}: no config rollback"
        );
    }
    let r = env.run(["completions", "tcsh"]);
    r.code_is(2).stderr_has("possible values");
    assert!(r.stdout().is_empty());
}

/// The page rendered as a reader sees it (`man -l`, else groff), or `None` when neither is
/// installed (scripts/install-deps.sh installs them as optional tools).
fn rendered(page: &Path) -> Option<String> {
    let man = Command::new("man")
        .arg("-l")
        .arg(page)
        .env("MANPAGER", "cat")
        .env("MANWIDTH", "100")
        .env("LC_ALL", "C.UTF-8")
        .output();
    if let Some(out) = man
        .ok()
        .filter(|o| o.status.success() && !o.stdout.is_empty())
    {
        return Some(String::from_utf8_lossy(&out.stdout).into_owned());
    }
    let groff = Command::new("groff")
        .args(["-man", "-Tutf8"])
        .arg(page)
        .output()
        .ok()?;
    assert!(groff.status.success(), "groff failed on {page:?}");
    Some(String::from_utf8_lossy(&groff.stdout).into_owned())
}

#[test]
fn man_page_renders_and_names_every_subcommand() {
    let env = TestEnv::new();
    let r = env.run(["man"]);
    r.success();
    let roff = r.stdout();
    assert!(
        roff.lines().any(|l| l.starts_with(".TH rip-litestream 1")),
        "no .TH line:\n{roff}"
    );
    let page = env.path("rip-litestream.1");
    std::fs::write(&page, &roff).unwrap();
    let Some(text) = rendered(&page) else {
        println!(
            "SKIPPED: man page rendering (neither man nor groff installed); roff checked only"
        );
        for name in SUBCOMMANDS {
            assert!(roff.contains(name), "no {name} in the man page");
        }
        return;
    };
    for section in ["NAME", "SYNOPSIS", "OPTIONS", "SUBCOMMANDS"] {
        assert!(text.contains(section), "no {section}:\n{text}");
    }
    for name in SUBCOMMANDS {
        assert!(
            text.contains(&format!("rip-litestream-{name}(1)")),
            "no {name} in the rendered page:\n{text}"
        );
    }
}

#[test]
fn man_output_writes_a_page_per_command_and_touches_nothing_else() {
    let env = TestEnv::new();
    let dir = env.path("man1");
    std::fs::create_dir_all(&dir).unwrap();
    let other = dir.join("litestream.1");
    std::fs::write(&other, "not ours").unwrap();
    let r = env.run(["man", "--output", s(&dir)]);
    r.success();
    assert!(r.stdout().is_empty(), "{}", r.stdout());
    let mut pages = vec!["rip-litestream".to_string()];
    pages.extend(SUBCOMMANDS.iter().map(|n| format!("rip-litestream-{n}")));
    for sub in ["save", "show", "list", "check", "rollback"] {
        pages.push(format!("rip-litestream-config-{sub}"));
    }
    for name in &pages {
        let page = dir.join(format!("{name}.1"));
        let roff = std::fs::read_to_string(&page)
            .unwrap_or_else(|e| panic!("{page:?}: {e}; wrote: {}", r.stderr()));
        assert!(
            roff.lines()
                .any(|l| l.starts_with(&format!(".TH {name} 1"))),
            "{name}"
        );
        r.stderr_has(s(&page));
        if let Some(text) = rendered(&page) {
            assert!(text.contains("SYNOPSIS"), "{name}:\n{text}");
        }
    }
    assert_eq!(std::fs::read(&other).unwrap(), b"not ours");
    let status = std::fs::read_to_string(dir.join("rip-litestream-status.1")).unwrap();
    assert!(
        status.contains("3 nothing runs"),
        "exit codes not in status(1)"
    );
    // Again: the pages are replaced, still one per command.
    env.run(["man", "-o", s(&dir)]).success();
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), pages.len() + 1);
}

// ---------------------------------------------------------------------------------------------
// status

#[test]
fn status_exits_3_when_nothing_runs_and_says_what_it_looked_for() {
    let env = TestEnv::new();
    save_config(&env, &config_yaml(&env, "", ""));
    env.run(["status"])
        .code_is(3)
        .stderr_has("no rip-litestream is running");
    let r = env.run(["status", "--json"]);
    r.code_is(3).stderr_has("no rip-litestream is running");
    let v = json_of(&r);
    assert_eq!(v["running"], false, "{v}");
    assert_eq!(v["db"], s(&env.db()), "{v}");
    assert!(v["runtime_dir"].is_string(), "{v}");
    // The follower's copy: named as "output".
    let copy = env.path("copy.db");
    let r = env.run(["status", "--json", "--output", s(&copy)]);
    r.code_is(3);
    let v = json_of(&r);
    assert_eq!(
        v,
        serde_json::json!({"running": false, "healthy": false, "output": s(&copy), "runtime_dir": v["runtime_dir"]})
    );
    // No store named at all: bad input, as JSON too.
    let mut cmd = env.cmd(["status", "--json"]);
    cmd.env_remove("RIP_DB");
    let message = json_error(&run_cmd(cmd), 2);
    assert!(message.contains("--db"), "{message}");
    // The codes are in the help.
    env.run(["status", "--help"])
        .success()
        .stdout_has("3 nothing runs for it");
}

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
