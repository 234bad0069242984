//! Our log lines in the shapes their platforms read: slog-like JSON lines, every fatal error as
//! an ERROR line and a `--log-db` row, and journald's priority prefixes when stderr is the
//! journal stream.

use std::time::Duration;

use crate::replication::*;
use crate::support::{wait_for, TestEnv};

const LONG: Duration = Duration::from_secs(30);

fn json_lines(text: &str) -> Vec<serde_json::Value> {
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON line ({e}): {l}")))
        .collect()
}

/// Checks that `line` is shaped like slog's JSONHandler output: `time` (RFC 3339, nanoseconds),
/// `level`, `msg` as the first three keys, and no nested object or array among the fields.
pub fn assert_slog_shape(line: &str) {
    let rest = line
        .strip_prefix("{\"time\":\"")
        .unwrap_or_else(|| panic!("time is not first: {line}"));
    let (time, rest) = rest
        .split_once("\",\"level\":\"")
        .unwrap_or_else(|| panic!("level is not second: {line}"));
    let t = humantime::parse_rfc3339(time).unwrap_or_else(|e| panic!("{time}: {e}"));
    assert!(t <= std::time::SystemTime::now());
    assert_eq!(time.len(), "2026-12-02T03:04:05.123456789Z".len(), "{time}");
    let (level, _) = rest
        .split_once("\",\"msg\":")
        .unwrap_or_else(|| panic!("msg is not third: {line}"));
    assert!(
        ["DEBUG-4", "DEBUG", "INFO", "WARN", "ERROR"].contains(&level),
        "{line}"
    );
    let v: serde_json::Value = serde_json::from_str(line).unwrap();
    // litestream's own fields are passed on as it wrote them: slog writes a group of attributes
    // as a nested object, so only our events must be flat.
    if v["target"] == "litestream" {
        return;
    }
    for (k, v) in v.as_object().unwrap() {
        assert!(!v.is_object() && !v.is_array(), "{k} is nested in {line}");
    }
}

#[test]
fn a_fatal_error_is_a_json_error_line_and_an_error_row_in_the_log_db() {
    let env = TestEnv::new();
    let logs = env.path("logs.db");
    // No config store at all: a mistake before anything runs.
    let r = env.run([
        "--log-format",
        "json",
        "--log-db",
        logs.to_str().unwrap(),
        "run",
    ]);
    r.code_is(2);
    let err = r.stderr();
    assert!(!err.contains("error: "), "stderr is all JSON: {err}");
    for l in err.lines() {
        assert_slog_shape(l);
    }
    let fatal = json_lines(&err)
        .into_iter()
        .find(|l| l["level"] == "ERROR")
        .unwrap_or_else(|| panic!("no ERROR line: {err}"));
    assert!(
        fatal["msg"].as_str().unwrap().contains("does not exist"),
        "{fatal}"
    );
    assert_eq!(fatal["exit_code"], 2);
    let conn = rusqlite::Connection::open(&logs).unwrap();
    let (level, message, data): (i64, String, String) = conn
        .query_row(
            "SELECT level, message, data FROM logs WHERE level = 8",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap();
    assert_eq!(
        (level, message.as_str()),
        (8, fatal["msg"].as_str().unwrap())
    );
    let data: serde_json::Value = serde_json::from_str(&data).unwrap();
    assert_eq!(data["exit_code"], 2);

    // In text mode the `error:` line stays (once), and the row is written too.
    let logs2 = env.path("logs2.db");
    std::fs::write(env.path("bad.key"), "not a key").unwrap();
    let mut cmd = env.cmd(["--log-db", logs2.to_str().unwrap(), "run"]);
    cmd.env("RIP_AGE_KEY", env.path("bad.key"));
    let r = crate::support::run_cmd(cmd);
    assert_ne!(r.code(), 0);
    let err = r.stderr();
    assert_eq!(err.matches("error: ").count(), 1, "{err}");
    let line = err.lines().find(|l| l.starts_with("error: ")).unwrap();
    let conn = rusqlite::Connection::open(&logs2).unwrap();
    let message: String = conn
        .query_row("SELECT message FROM logs WHERE level = 8", [], |r| r.get(0))
        .unwrap();
    assert_eq!(message, line.trim_start_matches("error: "));

    // A log database that cannot be opened: still one JSON line.
    let r = env.run([
        "--log-format",
        "json",
        "--log-db",
        env.path("no/such/dir/logs.db").to_str().unwrap(),
        "status",
    ]);
    assert_ne!(r.code(), 0);
    let err = r.stderr();
    assert_eq!(err.lines().count(), 1, "{err}");
    assert_slog_shape(err.trim_end());
}

fn stderr_identity(path: &std::path::Path) -> String {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).unwrap();
    format!("{}:{}", m.dev(), m.ino())
}

#[test]
fn journald_priorities_prefix_our_lines_only_when_stderr_is_the_journal_stream() {
    let env = TestEnv::new();
    insert(&env.db(), 0, 1);
    save_config(&env, &config_yaml(&env, "", ""));
    // stderr is a file here: the test names it as the journal stream, as systemd would.
    let err_file = env.path("run.err");
    std::fs::File::create(&err_file).unwrap();
    let mut cmd = env.cmd(["run"]);
    cmd.env("JOURNAL_STREAM", stderr_identity(&err_file));
    let out = std::fs::File::create(env.path("run.out")).unwrap();
    let err = std::fs::OpenOptions::new()
        .append(true)
        .open(&err_file)
        .unwrap();
    let child = cmd.stdout(out).stderr(err).spawn().unwrap();
    let mut sup = Background { child };
    wait_for("ready", LONG, || {
        run_stderr(&env).contains("litestream ready")
    });
    sup.signal("TERM");
    assert_eq!(sup.wait_code(LONG), Some(0));
    let text = run_stderr(&env);
    let ours: Vec<&str> = text
        .lines()
        .filter(|l| l.contains(" restinpieces_litestream::"))
        .collect();
    assert!(ours.len() > 3, "{text}");
    for l in &ours {
        assert!(
            l.starts_with("<6>") || l.starts_with("<4>") || l.starts_with("<7>"),
            "no priority: {l}"
        );
    }
    assert!(ours
        .iter()
        .any(|l| l.starts_with("<6>") && l.contains("litestream ready")));
    // litestream's own lines keep their format, behind the priority of their level.
    let theirs: Vec<&str> = text.lines().filter(|l| l.contains("level=")).collect();
    assert!(!theirs.is_empty(), "{text}");
    for l in &theirs {
        let expected = if l.contains(" level=INFO ") {
            "<6>time="
        } else if l.contains(" level=WARN ") {
            "<4>time="
        } else if l.contains(" level=ERROR ") {
            "<3>time="
        } else {
            "<"
        };
        assert!(l.starts_with(expected), "{l}");
    }

    // A fatal error on the journal: `<3>error: ...`.
    let mut cmd = env.cmd(["run"]);
    cmd.env("RIP_DB", env.path("missing.db"));
    let probe = env.path("fatal.err");
    std::fs::File::create(&probe).unwrap();
    cmd.env("JOURNAL_STREAM", stderr_identity(&probe));
    let err = std::fs::OpenOptions::new()
        .append(true)
        .open(&probe)
        .unwrap();
    let status = cmd
        .stdout(std::process::Stdio::null())
        .stderr(err)
        .status()
        .unwrap();
    assert_eq!(status.code(), Some(2));
    let fatal = std::fs::read_to_string(&probe).unwrap();
    assert!(fatal.starts_with("<3>error: "), "{fatal}");

    // JOURNAL_STREAM inherited, stderr redirected elsewhere: no prefixes.
    let mut cmd = env.cmd(["run"]);
    cmd.env("RIP_DB", env.path("missing.db"));
    cmd.env("JOURNAL_STREAM", stderr_identity(&probe));
    let r = crate::support::run_cmd(cmd);
    r.code_is(2);
    assert!(r.stderr().starts_with("error: "), "{}", r.stderr());
}
