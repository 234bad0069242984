//! `config edit`, `config diff` and `config rekey` end to end: scripted editors (a sh script
//! applying sed to its file), a pseudo-terminal where the editor must be opened again, signals
//! and SIGKILL to `rip-litestream` while the editor runs, a save racing the edit; masked diffs
//! and their exit codes; rekeys checked with the `age` CLI and refused rekeys that change no
//! byte of the table nor of the old key.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::replication::{alive, config_yaml, save_config, spawn, wait_ready, Background};
use crate::support::{run_cmd, wait_for, Run, TestEnv};

const LONG: Duration = Duration::from_secs(30);

fn s(p: &Path) -> &str {
    p.to_str().expect("test paths are UTF-8")
}

/// An env with a key, a database and one config (`init`), its runtime base on tmpfs.
fn inited() -> (TestEnv, tempfile::TempDir) {
    let env = TestEnv::new();
    env.init();
    let shm = tempfile::Builder::new()
        .prefix("rip-it-run-")
        .tempdir_in("/dev/shm")
        .expect("/dev/shm (tmpfs) is writable");
    (env, shm)
}

/// `rip-litestream config edit ARGS` with `$EDITOR` = `sh SCRIPT` (an editor with arguments).
fn edit_cmd(env: &TestEnv, shm: &Path, script: &Path, args: &[&str]) -> Command {
    let mut cmd = env.cmd(["config", "edit"]);
    cmd.args(args)
        .env_remove("VISUAL")
        .env("EDITOR", format!("sh {}", s(script)))
        .env("RIP_RUNTIME_DIR", shm);
    cmd
}

/// Writes an editor script; `$1` is the file, `$D` the env's directory.
fn script(env: &TestEnv, name: &str, body: &str) -> PathBuf {
    let path = env.path(name);
    std::fs::write(&path, format!("D={}\n{body}\n", s(env.dir.path()))).unwrap();
    path
}

fn generations(env: &TestEnv) -> usize {
    env.run(["config", "list"])
        .success()
        .stdout()
        .lines()
        .count()
}

fn show(env: &TestEnv, generation: u32) -> String {
    env.run(["config", "show", "-g", &generation.to_string()])
        .success()
        .stdout()
}

/// The edit directories under the runtime base.
fn edit_dirs(shm: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(shm)
        .map(|d| {
            d.flatten()
                .map(|e| e.path())
                .filter(|p| {
                    p.file_name()
                        .unwrap()
                        .to_string_lossy()
                        .starts_with("edit-")
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Runs `cmd` with a pseudo-terminal as stdin (the master kept open until it ends).
fn run_on_terminal(mut cmd: Command) -> Run {
    let pty = nix::pty::openpty(None, None).unwrap();
    cmd.stdin(Stdio::from(pty.slave));
    let run = run_cmd(cmd);
    drop(pty.master);
    run
}

/// Every row of the table, in id order (what "nothing changed" is checked against).
type Table = Vec<(i64, String, Vec<u8>, String, Option<String>, String)>;
fn table(db: &Path) -> Table {
    let conn = rusqlite::Connection::open(db).unwrap();
    let mut stmt = conn
        .prepare("SELECT id, scope, content, format, description, created_at FROM app_config ORDER BY id")
        .unwrap();
    let rows = stmt
        .query_map([], |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
            ))
        })
        .unwrap()
        .map(|r| r.unwrap())
        .collect();
    rows
}

// ---------------------------------------------------------------------------------------------
// edit

#[test]
fn an_edit_saves_what_the_editor_wrote() {
    let (env, shm) = inited();
    let before = show(&env, 0);
    let ed = script(
        &env,
        "ed.sh",
        "sed -i 's/sync-interval: 1s/sync-interval: 7s/' \"$1\"",
    );
    let r = run_cmd(edit_cmd(&env, shm.path(), &ed, &[]));
    r.success().stderr_has("saved as the newest generation");
    assert_eq!(
        show(&env, 0),
        before.replace("sync-interval: 1s", "sync-interval: 7s")
    );
    assert_ne!(show(&env, 0), before);
    assert_eq!(show(&env, 1), before, "the old generation is kept");
    let list = env.run(["config", "list"]).stdout();
    assert!(list.lines().next().unwrap().ends_with("\tedited"), "{list}");
    assert!(edit_dirs(shm.path()).is_empty(), "the plaintext is removed");
    // $VISUAL comes before $EDITOR.
    let ed = script(
        &env,
        "visual.sh",
        "sed -i 's/sync-interval: 7s/sync-interval: 8s/' \"$1\"",
    );
    let mut cmd = edit_cmd(&env, shm.path(), &ed, &[]);
    cmd.env("VISUAL", format!("sh {}", s(&ed)))
        .env("EDITOR", "false");
    run_cmd(cmd).success();
    assert!(show(&env, 0).contains("sync-interval: 8s"));
}

#[test]
fn an_unchanged_edit_saves_nothing() {
    let (env, shm) = inited();
    let before = table(&env.db());
    let ed = script(&env, "ed.sh", "exit 0");
    run_cmd(edit_cmd(&env, shm.path(), &ed, &[]))
        .success()
        .stderr_has("no changes");
    assert_eq!(table(&env.db()), before);
    assert!(edit_dirs(shm.path()).is_empty());
}

/// First call: a key that is not a litestream key (an error with --strict), so the editor is
/// opened again with the errors at the top; second call: the line removed. The errors are
/// stripped from what is saved.
#[test]
fn a_failing_validation_opens_the_editor_again_and_saves_the_fix() {
    let (env, shm) = inited();
    let before = show(&env, 0);
    let ed = script(
        &env,
        "ed.sh",
        r#"n=$(cat "$D/count" 2>/dev/null || echo 0); n=$((n+1)); echo $n > "$D/count"
if [ $n = 1 ]; then echo 'no-such-key: 1' >> "$1"; exit 0; fi
grep -q '^# rip-litestream: ' "$1" && grep -q 'no-such-key' "$1" && touch "$D/saw-errors"
sed -i '/^no-such-key/d; s/sync-interval: 1s/sync-interval: 3s/' "$1""#,
    );
    let r = run_on_terminal(edit_cmd(&env, shm.path(), &ed, &["--strict"]));
    r.success().stderr_has("no-such-key");
    assert_eq!(
        std::fs::read_to_string(env.path("count")).unwrap().trim(),
        "2"
    );
    assert!(
        env.path("saw-errors").exists(),
        "the errors were in the file"
    );
    assert_eq!(
        show(&env, 0),
        before.replace("sync-interval: 1s", "sync-interval: 3s")
    );
    assert_eq!(generations(&env), 2);
    assert!(edit_dirs(shm.path()).is_empty());
}

#[test]
fn an_edit_that_keeps_failing_gives_up_without_saving() {
    let (env, shm) = inited();
    let before = table(&env.db());
    let bad = r#"n=$(cat "$D/count" 2>/dev/null || echo 0); n=$((n+1)); echo $n > "$D/count"
if [ $n = 1 ]; then echo 'dbs: [' >> "$1"; fi"#;
    // On a terminal: saved unchanged after the errors -> gave up (bad input).
    let ed = script(&env, "ed.sh", bad);
    run_on_terminal(edit_cmd(&env, shm.path(), &ed, &[]))
        .code_is(2)
        .stderr_has("gave up");
    assert_eq!(
        std::fs::read_to_string(env.path("count")).unwrap().trim(),
        "2"
    );
    // On a terminal, the editor quits with an error the second time -> exit 1.
    std::fs::remove_file(env.path("count")).unwrap();
    let ed = script(&env, "ed2.sh", &format!("{bad}\n[ $n = 1 ] || exit 3"));
    run_on_terminal(edit_cmd(&env, shm.path(), &ed, &[]))
        .code_is(1)
        .stderr_has("exited with");
    // Not on a terminal: not opened again.
    std::fs::remove_file(env.path("count")).unwrap();
    run_cmd(edit_cmd(&env, shm.path(), &ed, &[]))
        .code_is(2)
        .stderr_has("not a terminal");
    assert_eq!(
        std::fs::read_to_string(env.path("count")).unwrap().trim(),
        "1"
    );
    assert_eq!(table(&env.db()), before, "nothing saved");
    assert!(edit_dirs(shm.path()).is_empty(), "no plaintext left");
}

/// An editor that says where its file is, then waits (`exec`: its pid is the script's).
fn waiting_editor(env: &TestEnv) -> PathBuf {
    script(
        env,
        "wait.sh",
        r#"echo $$ > "$D/editor.pid"; echo "$1" > "$D/path.tmp"; mv "$D/path.tmp" "$D/path"; exec sleep 120"#,
    )
}

fn editing(env: &TestEnv, shm: &Path) -> (Background, PathBuf, u32) {
    let cmd = edit_cmd(env, shm, &waiting_editor(env), &[]);
    let bg = spawn(env, cmd);
    wait_for("the editor to start", LONG, || env.path("path").exists());
    let file = PathBuf::from(std::fs::read_to_string(env.path("path")).unwrap().trim());
    let pid = std::fs::read_to_string(env.path("editor.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    (bg, file, pid)
}

#[test]
fn the_plaintext_is_private_on_tmpfs_while_the_editor_runs() {
    let (env, shm) = inited();
    let (mut bg, file, editor) = editing(&env, shm.path());
    let meta = std::fs::metadata(&file).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    assert_eq!(meta.uid(), nix::unistd::getuid().as_raw());
    let dir = file.parent().unwrap();
    assert_eq!(
        std::fs::metadata(dir).unwrap().permissions().mode() & 0o777,
        0o700
    );
    assert_eq!(dir.parent().unwrap(), shm.path(), "under the runtime base");
    let fs = Command::new("stat")
        .args(["-f", "-c", "%T", s(&file)])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&fs.stdout).trim(), "tmpfs");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), show(&env, 0));
    // Another command sweeping the runtime base leaves a live edit alone.
    let mut check = env.cmd(["config", "check"]);
    check.env("RIP_RUNTIME_DIR", shm.path());
    run_cmd(check).success();
    assert!(file.exists(), "a live edit is not swept");
    bg.signal("HUP");
    assert_eq!(bg.wait_code(LONG), Some(1));
    assert!(!dir.exists(), "SIGHUP: removed");
    wait_for("the editor to end", LONG, || !alive(editor));
}

#[test]
fn sigterm_during_the_edit_removes_the_plaintext_and_saves_nothing() {
    for sig in ["TERM", "INT"] {
        let (env, shm) = inited();
        let before = table(&env.db());
        let (mut bg, file, editor) = editing(&env, shm.path());
        bg.signal(sig);
        assert_eq!(bg.wait_code(LONG), Some(1), "SIG{sig}");
        assert!(
            !file.exists() && !file.parent().unwrap().exists(),
            "SIG{sig}"
        );
        assert!(edit_dirs(shm.path()).is_empty());
        wait_for("the editor to get the signal", LONG, || !alive(editor));
        assert_eq!(table(&env.db()), before);
        let err = std::fs::read_to_string(env.path("run.err")).unwrap();
        assert!(
            err.contains(&format!("SIG{sig}: the edit was abandoned")),
            "{err}"
        );
    }
}

#[test]
fn the_plaintext_of_a_killed_edit_is_swept_by_the_next_one() {
    let (env, shm) = inited();
    let before = table(&env.db());
    let (mut bg, file, editor) = editing(&env, shm.path());
    bg.signal("KILL");
    bg.wait_code(LONG);
    let _ = Command::new("kill").arg(editor.to_string()).status();
    wait_for("the editor to end", LONG, || !alive(editor));
    assert!(file.exists(), "SIGKILL leaves it: nothing could remove it");
    // A directory that only looks like an edit's (no owner file) is not ours: left alone.
    let stranger = shm.path().join("edit-1-stranger");
    std::fs::create_dir(&stranger).unwrap();
    std::fs::set_permissions(&stranger, std::fs::Permissions::from_mode(0o700)).unwrap();
    let ed = script(&env, "noop.sh", "exit 0");
    run_cmd(edit_cmd(&env, shm.path(), &ed, &[])).success();
    assert!(!file.exists() && !file.parent().unwrap().exists(), "swept");
    assert!(stranger.exists());
    assert_eq!(table(&env.db()), before, "nothing saved");
}

#[test]
fn a_save_during_the_edit_is_not_overwritten() {
    let (env, shm) = inited();
    let ed = script(
        &env,
        "race.sh",
        r#"echo "$1" > "$D/path"; while [ ! -e "$D/go" ]; do sleep 0.05; done
sed -i 's/sync-interval: 1s/sync-interval: 9s/' "$1""#,
    );
    let mut bg = spawn(&env, edit_cmd(&env, shm.path(), &ed, &[]));
    wait_for("the editor to start", LONG, || env.path("path").exists());
    let meanwhile = config_yaml(&env, "# saved meanwhile\n", "");
    env.save(&meanwhile).success();
    std::fs::write(env.path("go"), "").unwrap();
    assert_eq!(bg.wait_code(LONG), Some(1));
    let err = std::fs::read_to_string(env.path("run.err")).unwrap();
    assert!(err.contains("not saved") && err.contains("re-run"), "{err}");
    assert_eq!(show(&env, 0), meanwhile);
    assert_eq!(generations(&env), 2);
    assert!(edit_dirs(shm.path()).is_empty());
}

#[test]
fn an_edit_without_a_config_says_how_to_make_one() {
    let env = TestEnv::new();
    env.run(["keygen"]).success();
    rusqlite::Connection::open(env.db())
        .unwrap()
        .execute_batch("CREATE TABLE t (x)")
        .unwrap();
    let mut cmd = env.cmd(["config", "edit"]);
    cmd.env("EDITOR", "false");
    run_cmd(cmd)
        .code_is(2)
        .stderr_has("init")
        .stderr_has("config save");
}

// ---------------------------------------------------------------------------------------------
// diff

#[test]
fn a_diff_masks_secrets_and_marks_a_changed_one() {
    let env = TestEnv::new();
    let with = |secret: &str, url_pw: &str, interval: &str| {
        format!(
            "access-key-id: AKIAKEEPME\nsecret-access-key: {secret}\ndbs:\n  - path: {}\n    replica:\n      url: s3://bucket/app\n      sync-interval: {interval}\n  - path: /data/b.db\n    replica:\n      url: sftp://bob:{url_pw}@host/b\n",
            env.db().display()
        )
    };
    save_config(&env, &with("oldSecretValue1", "oldUrlPw1", "1s"));
    save_config(&env, &with("newSecretValue2", "newUrlPw2", "5s"));
    let r = env.run(["config", "diff"]);
    r.code_is(1)
        .stdout_has("-secret-access-key: [REDACTED]\n+secret-access-key: [REDACTED] (changed)\n")
        .stdout_has("-      sync-interval: 1s\n+      sync-interval: 5s\n")
        .stdout_has("+      url: sftp://[REDACTED]@host/b (changed)")
        .stdout_has("--- generation 1 (id 1,")
        .stdout_has("+++ generation 0 (id 2,");
    let all = r.stdout() + &r.stderr();
    for secret in [
        "oldSecretValue1",
        "newSecretValue2",
        "oldUrlPw1",
        "newUrlPw2",
        "AKIAKEEPME",
    ] {
        assert!(!all.contains(secret), "{secret} shown:\n{all}");
    }
    // The other way round, and explicit generations.
    env.run(["config", "diff", "0", "1"])
        .code_is(1)
        .stdout_has("-      sync-interval: 5s\n+      sync-interval: 1s\n");
    env.run(["config", "diff", "0", "0"]).code_is(0);
    assert_eq!(env.run(["config", "diff", "1", "1"]).stdout(), "");
    env.run(["config", "diff", "0", "5"])
        .code_is(2)
        .stderr_has("no generation 5");
}

#[test]
fn a_diff_of_equal_generations_exits_0_and_of_one_generation_2() {
    let env = TestEnv::new();
    env.init();
    env.run(["config", "diff"])
        .code_is(2)
        .stderr_has("no generation 1");
    let same = show(&env, 0);
    env.save(&same).success();
    env.run(["config", "diff"])
        .code_is(0)
        .stderr_has("same config");
}

// ---------------------------------------------------------------------------------------------
// rekey

/// An env with three generations of `litestream` and one of another scope.
fn three_generations() -> TestEnv {
    let env = TestEnv::new();
    env.init();
    for n in [2, 3] {
        env.save(&config_yaml(&env, &format!("# generation {n}\n"), ""))
            .success();
    }
    let file = env.path("other.yml");
    std::fs::write(&file, config_yaml(&env, "# other scope\n", "")).unwrap();
    env.run(["--scope", "other", "config", "save", s(&file)])
        .success();
    env
}

#[test]
fn a_rekey_reencrypts_every_generation_and_keeps_the_rest() {
    let env = three_generations();
    let (old_key, new_key) = (env.key(), env.path("new.key"));
    Command::new("age-keygen")
        .args(["-o", s(&new_key)])
        .output()
        .unwrap();
    let old_key_bytes = std::fs::read(&old_key).unwrap();
    let before = table(&env.db());
    let r = env.run(["config", "rekey", "--new-key", s(&new_key)]);
    r.success()
        .stderr_has("re-encrypted 3 generation(s)")
        .stderr_has("other scopes are still under the old key")
        .stderr_has("`other` (1 row(s))");
    let after = table(&env.db());
    assert_eq!(
        std::fs::read(&old_key).unwrap(),
        old_key_bytes,
        "old key unchanged"
    );
    for (b, a) in before.iter().zip(&after) {
        assert_eq!((b.0, &b.1, &b.3, &b.4, &b.5), (a.0, &a.1, &a.3, &a.4, &a.5));
        let plain = env.age_decrypts(&old_key, &b.2).unwrap();
        if b.1 == "other" {
            assert_eq!(a.2, b.2, "another scope is left alone");
            continue;
        }
        assert_eq!(env.age_decrypts(&new_key, &a.2), Some(plain), "row {}", a.0);
        assert_eq!(env.age_decrypts(&old_key, &a.2), None, "row {}", a.0);
    }
    let mut cmd = env.cmd(["config", "show", "-g", "2"]);
    cmd.env("RIP_AGE_KEY", &new_key);
    run_cmd(cmd)
        .success()
        .stdout_has("saved encrypted by rip-litestream init");
    // Run again with the old --age-key: refused, saying why, nothing changed.
    env.run(["config", "rekey", "--new-key", s(&new_key)])
        .code_is(2)
        .stderr_has("already encrypted to the key in");
    assert_eq!(table(&env.db()), after);
}

#[test]
fn a_refused_rekey_changes_no_byte() {
    let env = three_generations();
    let old_key_bytes = std::fs::read(env.key()).unwrap();
    let before = table(&env.db());
    let not_a_key = env.path("not.key");
    std::fs::write(&not_a_key, "AGE-SECRET-KEY-1NOTREALLY\n").unwrap();
    let other = env.path("other.key");
    Command::new("age-keygen")
        .args(["-o", s(&other)])
        .output()
        .unwrap();
    let cases: [(&Path, &str); 3] = [
        (&not_a_key, "not an age X25519 identity"),
        (&env.key(), "same key"),
        (&env.path("missing.key"), "does not exist"),
    ];
    for (key, why) in cases {
        env.run(["config", "rekey", "--new-key", s(key)])
            .code_is(2)
            .stderr_has(why);
        assert_eq!(table(&env.db()), before, "{why}");
    }
    // A generation the current key cannot open (written by hand to another key): named, and
    // the rows before it in the transaction are rolled back.
    let third = env.path("third.key");
    Command::new("age-keygen")
        .args(["-o", s(&third)])
        .output()
        .unwrap();
    let recipient = String::from_utf8(
        Command::new("age-keygen")
            .args(["-y", s(&third)])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    std::fs::write(env.path("plain"), "# foreign\n").unwrap();
    Command::new("age")
        .args([
            "-r",
            recipient.trim(),
            "-o",
            s(&env.path("foreign.age")),
            s(&env.path("plain")),
        ])
        .status()
        .unwrap();
    let foreign = std::fs::read(env.path("foreign.age")).unwrap();
    let conn = rusqlite::Connection::open(env.db()).unwrap();
    conn.execute(
        "INSERT INTO app_config (scope, content, format, description, created_at) \
         VALUES ('litestream', ?, 'yml', 'foreign', '2000-01-01T00:00:00Z')",
        [foreign],
    )
    .unwrap();
    let before = table(&env.db());
    env.run(["config", "rekey", "--new-key", s(&other)])
        .code_is(2)
        .stderr_has("generation 3 (row id 5) cannot be decrypted");
    assert_eq!(table(&env.db()), before, "rolled back");
    assert_eq!(std::fs::read(env.key()).unwrap(), old_key_bytes);
}

/// A rekey keeps the row ids, so a running supervisor sees no new generation; once its key file
/// is replaced by the new key, a reload (SIGHUP) reads the store again and finds it unchanged.
#[test]
fn a_running_supervisor_keeps_working_through_a_rekey() {
    let env = TestEnv::new();
    save_config(&env, &config_yaml(&env, "", ""));
    let key = env.path("run.key");
    std::fs::copy(env.key(), &key).unwrap();
    let mut cmd = env.cmd(["run", "--reload-check", "100ms"]);
    cmd.env("RIP_AGE_KEY", &key);
    let mut sup = spawn(&env, cmd);
    wait_ready(&env);
    let status = || {
        let r = env.run(["status", "--json"]);
        serde_json::from_str::<serde_json::Value>(r.stdout().trim()).unwrap_or_default()
    };
    let id = status()["config_id"].as_i64().unwrap();
    let pid = status()["pid"].as_u64().unwrap();
    let new_key = env.path("new.key");
    env.run(["keygen", "--output", s(&new_key)]).success();
    env.run(["config", "rekey", "--new-key", s(&new_key)])
        .success();
    std::fs::copy(&new_key, &key).unwrap();
    sup.signal("HUP");
    wait_for("the reload answer", LONG, || {
        crate::replication::run_stderr(&env).contains("config unchanged")
    });
    let s = status();
    assert_eq!(s["config_id"].as_i64(), Some(id));
    assert_eq!(s["pid"].as_u64(), Some(pid), "the same litestream");
    assert!(s["rejected_generation"].is_null(), "{s}");
    sup.signal("TERM");
    assert_eq!(sup.wait_code(LONG), Some(0));
}
