//! Adversarial cases of `config edit`, `config diff` and `config rekey`, as a hurried operator
//! (or a hostile editor) causes them: secrets a diff must not print however they are written,
//! editors that replace, delete, link or keep writing their file, a rekey given the wrong key,
//! a locked store, a writer beside it and a SIGKILL inside its transaction.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::replication::config_yaml;
use crate::support::TestEnv;

fn s(p: &Path) -> &str {
    p.to_str().expect("test paths are UTF-8")
}

/// Saves `yaml` without asking litestream (the secrets below are not all litestream's keys).
fn save_unchecked(env: &TestEnv, yaml: &str) {
    let file = env.path("to-save.yml");
    std::fs::write(&file, yaml).unwrap();
    env.run(["config", "save", "--no-check", s(&file)])
        .success();
    std::fs::remove_file(file).unwrap();
}

// ---------------------------------------------------------------------------------------------
// diff

/// A secret continued on the next line (plain or quoted), under a key in another case, or in a
/// URL's query: never printed by `config diff`, on stdout or stderr, and a change still shows.
#[test]
fn a_diff_prints_no_secret_however_it_is_written() {
    let env = TestEnv::new();
    env.init();
    let old = config_yaml(
        &env,
        "secret-access-key: plainfirst\n  plaincontinued\nSecret-Access-Key: casesecret1\n",
        "      password: \"quoted first\n        quotedcontinued\"\n  - path: /srv/b.db\n    replica:\n      url: s3://b/p?sig=urlsecret1&x=1\n",
    );
    let new = old
        .replace("plaincontinued", "plaincont2")
        .replace("casesecret1", "casesecret2")
        .replace("quotedcontinued", "quotedcont2")
        .replace("urlsecret1", "urlsecret2");
    save_unchecked(&env, &old);
    save_unchecked(&env, &new);
    let r = env.run(["config", "diff", "1", "0"]);
    r.code_is(1).stdout_has("(changed)");
    let all = r.stdout() + &r.stderr();
    for secret in [
        "plainfirst",
        "plaincontinued",
        "plaincont2",
        "casesecret",
        "quoted first",
        "quotedcontinued",
        "quotedcont2",
        "urlsecret",
    ] {
        assert!(!all.contains(secret), "{secret} printed:\n{all}");
    }
}

/// Generations that do not exist, negative or beyond u32: exit 2, saying what to pick.
#[test]
fn a_diff_of_generations_that_do_not_exist_is_bad_input() {
    let env = TestEnv::new();
    env.init();
    for (a, b, why) in [
        ("0", "7", "pick 0..=0"),
        ("0", "-1", "'-1'"),
        ("0", "99999999999", "not in 0..=4294967295"),
        ("x", "0", "invalid digit"),
    ] {
        env.run(["config", "diff", a, b]).code_is(2).stderr_has(why);
    }
}

// ---------------------------------------------------------------------------------------------
// edit

/// `rip-litestream config edit --no-check` with `$EDITOR` = `sh SCRIPT` and the runtime base
/// in `base`.
fn edit_with(env: &TestEnv, base: &Path, body: &str) -> crate::support::Run {
    let script = env.path("editor.sh");
    std::fs::write(&script, format!("D={}\n{body}\n", s(env.dir.path()))).unwrap();
    let mut cmd = env.cmd(["config", "edit", "--no-check"]);
    cmd.env_remove("VISUAL")
        .env("EDITOR", format!("sh {}", s(&script)))
        .env("RIP_RUNTIME_DIR", base);
    crate::support::run_cmd(cmd)
}

/// Every file left under `base` (recursively), with its bytes.
fn left_under(base: &Path) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(base) else {
        return out;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(left_under(&p));
        } else {
            let bytes = std::fs::read(&p).unwrap_or_default();
            out.push((p, bytes));
        }
    }
    out
}

/// Nothing under `base` holds the config's plaintext (a line of it).
fn assert_no_plaintext(base: &Path, marker: &str) {
    for (p, bytes) in left_under(base) {
        assert!(
            !String::from_utf8_lossy(&bytes).contains(marker),
            "{} holds the plaintext",
            p.display()
        );
    }
}

fn shm() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("rip-it-run-")
        .tempdir_in("/dev/shm")
        .expect("/dev/shm (tmpfs) is writable")
}

/// An editor that puts a symbolic link (to another YAML file, or /etc/passwd) where the file
/// was: refused, never followed, nothing saved. One that deletes the file: said, nothing saved.
#[test]
fn an_editor_that_links_or_deletes_the_file_saves_nothing() {
    let env = TestEnv::new();
    env.init();
    let base = shm();
    let other = env.path("other.yml");
    std::fs::write(&other, config_yaml(&env, "# not what was edited\n", "")).unwrap();
    let before = env.run(["config", "list"]).success().stdout();
    for (body, why) in [
        (
            format!("rm \"$1\"; ln -s {} \"$1\"", s(&other)),
            "a symbolic link",
        ),
        (
            "rm \"$1\"; ln -s /etc/passwd \"$1\"".to_string(),
            "a symbolic link",
        ),
        ("rm \"$1\"; mkfifo \"$1\"".to_string(), "not a regular file"),
        ("rm \"$1\"".to_string(), "the editor removed"),
    ] {
        let r = edit_with(&env, base.path(), &body);
        r.code_is(2).stderr_has(why).stderr_has("nothing saved");
        assert!(!r.stderr().contains("root:"), "{}", r.stderr());
        assert_eq!(env.run(["config", "list"]).success().stdout(), before);
        assert_no_plaintext(base.path(), "rip-litestream init");
        assert!(left_under(base.path())
            .iter()
            .all(|(p, _)| !p.to_string_lossy().contains("edit-")));
    }
}

/// vim with `backupcopy=no`: the new text written to another file renamed over the edited one.
/// It is read and saved; the renamed-away inode and the editor's leftovers are removed.
#[test]
fn an_editor_that_replaces_the_file_by_rename_is_read() {
    let env = TestEnv::new();
    env.init();
    let base = shm();
    let r = edit_with(
        &env,
        base.path(),
        "sed 's/sync-interval: 1s/sync-interval: 7s/' \"$1\" > \"$1.tmp\" && mv \"$1.tmp\" \"$1\" && cp \"$1\" \"$1~\"",
    );
    r.success().stderr_has("saved as the newest generation");
    let shown = env.run(["config", "show"]).success().stdout();
    assert!(shown.contains("sync-interval: 7s"), "{shown}");
    assert_no_plaintext(base.path(), "sync-interval");
}

// ---------------------------------------------------------------------------------------------
// rekey

fn age_keygen(path: &Path) {
    let out = Command::new("age-keygen")
        .args(["-o", s(path)])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
}

/// `age -d -i KEY` of `content`: its plaintext, or `None` when the key cannot open it.
fn age_decrypts(env: &TestEnv, key: &Path, content: &[u8]) -> Option<Vec<u8>> {
    let input = env.path("cipher.in");
    std::fs::write(&input, content).unwrap();
    let out = Command::new("age")
        .args(["-d", "-i", s(key), s(&input)])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    out.status.success().then_some(out.stdout)
}

/// Every byte of the database's rows, table by table (what "nothing changed" is checked on).
fn dump(db: &Path) -> String {
    let out = Command::new("sqlite3")
        .arg(db)
        .arg(".dump")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).unwrap()
}

/// The wrong file as --new-key: the public key (`age1...`), a directory, a symlink to the old
/// key: exit 2, saying what to pass, nothing changed.
#[test]
fn a_rekey_to_the_wrong_key_file_changes_nothing() {
    let env = TestEnv::new();
    env.init();
    let public = env.path("public.txt");
    let out = Command::new("age-keygen")
        .args(["-y", s(&env.key())])
        .output()
        .unwrap();
    std::fs::write(&public, out.stdout).unwrap();
    std::os::unix::fs::symlink(env.key(), env.path("link.key")).unwrap();
    std::fs::create_dir(env.path("keys")).unwrap();
    let before = dump(&env.db());
    for (key, why) in [
        ("public.txt", "--new-key"),
        ("keys", "--new-key"),
        ("link.key", "same key"),
    ] {
        env.run(["config", "rekey", "--new-key", key])
            .code_is(2)
            .stderr_has(why);
        assert_eq!(dump(&env.db()), before, "{key}");
    }
}

/// A writer holding the write lock (SQLite's defaults, a transaction left open): the rekey waits
/// its busy timeout, then fails saying so (exit 1), nothing changed.
#[test]
fn a_rekey_behind_a_writers_lock_fails_clean() {
    let env = TestEnv::new();
    env.init();
    let new_key = env.path("new.key");
    age_keygen(&new_key);
    let before = dump(&env.db());
    let writer = rusqlite::Connection::open(env.db()).unwrap();
    writer
        .execute_batch("BEGIN IMMEDIATE; CREATE TABLE busy (x); INSERT INTO busy VALUES (1);")
        .unwrap();
    let r = env.run(["config", "rekey", "--new-key", s(&new_key)]);
    r.code_is(1)
        .stderr_has("nothing was changed")
        .stderr_has("another process held the write lock");
    writer.execute_batch("ROLLBACK").unwrap();
    drop(writer);
    assert_eq!(dump(&env.db()), before);
    env.run(["config", "show"]).success();
}

/// Generations saved for the SIGKILL test: enough that a kill lands inside the rekey.
const MANY: usize = 500;

/// `MANY` more generations of `litestream`, each a different text, through the library.
fn many_generations(env: &TestEnv) {
    let store = restinpieces_litestream::ConfigStore::open(env.db(), env.key()).unwrap();
    for n in 0..MANY {
        let text = config_yaml(env, &format!("# generation {n}\n"), "");
        store
            .save("litestream", text.as_bytes(), "yml", "many")
            .unwrap();
    }
}

/// Each row of `litestream` as (id, plaintext) decrypted by the `age` CLI with `key`, or `None`
/// for a row it cannot open.
fn rows_with(env: &TestEnv, key: &Path) -> Vec<(i64, Option<Vec<u8>>)> {
    let conn = rusqlite::Connection::open(env.db()).unwrap();
    let mut stmt = conn
        .prepare("SELECT id, content FROM app_config WHERE scope = 'litestream' ORDER BY id")
        .unwrap();
    let rows: Vec<(i64, Vec<u8>)> = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(|r| r.unwrap())
        .collect();
    rows.into_iter()
        .map(|(id, content)| (id, age_decrypts(env, key, &content)))
        .collect()
}

/// SIGKILL inside the rekey's transaction (the database in rollback-journal and in WAL mode):
/// the table is wholly old or wholly new, every row opened by `age -d` with one key only.
#[test]
fn a_rekey_killed_midway_leaves_the_table_wholly_old_or_wholly_new() {
    let _turn = crate::support::heavy();
    for mode in ["delete", "wal"] {
        let env = TestEnv::new();
        env.init();
        let conn = rusqlite::Connection::open(env.db()).unwrap();
        let _: String = conn
            .query_row(&format!("PRAGMA journal_mode={mode}"), [], |r| r.get(0))
            .unwrap();
        drop(conn);
        many_generations(&env);
        let (old_key, new_key) = (env.key(), env.path("new.key"));
        age_keygen(&new_key);
        let old_rows = rows_with(&env, &old_key);
        assert!(old_rows.iter().all(|(_, p)| p.is_some()));
        let mut child = env
            .cmd(["config", "rekey", "--new-key", s(&new_key)])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let pid = child.id();
        // Killed once it has the database open (rollback journal: once it writes its journal).
        let journal = env.path("app.db-journal");
        crate::support::wait_for("the rekey at work", Duration::from_secs(60), || {
            let has_db = std::fs::read_dir(format!("/proc/{pid}/fd")).is_ok_and(|fds| {
                fds.flatten()
                    .any(|fd| std::fs::read_link(fd.path()).is_ok_and(|l| l == env.db()))
            });
            let ended = child.try_wait().unwrap().is_some();
            ended || (has_db && (mode == "wal" || journal.exists()))
        });
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::SIGKILL,
        );
        let status = child.wait().unwrap();
        let new_rows = rows_with(&env, &new_key);
        let with_old = rows_with(&env, &old_key);
        let all_new = new_rows.iter().all(|(_, p)| p.is_some());
        let all_old = with_old == old_rows && new_rows.iter().all(|(_, p)| p.is_none());
        assert!(
            all_old || all_new,
            "{mode}: mixed table after {status:?}: {} rows open with the new key, {} with the old",
            new_rows.iter().filter(|(_, p)| p.is_some()).count(),
            with_old.iter().filter(|(_, p)| p.is_some()).count()
        );
        if all_new {
            let plain: Vec<_> = new_rows.into_iter().collect();
            assert_eq!(plain, old_rows, "{mode}: the same plaintexts");
        }
        eprintln!(
            "{mode}: killed ({status:?}); the table is wholly {}",
            if all_old { "old" } else { "new" }
        );
    }
}

/// A WAL database with an application writer on SQLite's defaults committing all the while:
/// rekeys back and forth succeed, every row the writer committed is there byte for byte (its
/// table hashed against what it committed), and another scope's row is untouched.
#[test]
fn a_rekey_beside_a_committing_writer_touches_nothing_else() {
    let env = TestEnv::new();
    env.init();
    let other = env.path("other.yml");
    std::fs::write(&other, config_yaml(&env, "# other scope\n", "")).unwrap();
    env.run(["--scope", "other", "config", "save", s(&other)])
        .success();
    let conn = rusqlite::Connection::open(env.db()).unwrap();
    let _: String = conn
        .query_row("PRAGMA journal_mode=wal", [], |r| r.get(0))
        .unwrap();
    conn.execute_batch("CREATE TABLE items (n INTEGER PRIMARY KEY, v BLOB NOT NULL)")
        .unwrap();
    drop(conn);
    let other_row = |db: &Path| -> Vec<u8> {
        let conn = rusqlite::Connection::open(db).unwrap();
        conn.query_row(
            "SELECT content FROM app_config WHERE scope = 'other'",
            [],
            |r| r.get(0),
        )
        .unwrap()
    };
    let other_before = other_row(&env.db());
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (db, stop) = (env.db(), stop.clone());
        std::thread::spawn(move || {
            // SQLite's defaults: no busy timeout, automatic checkpoints; a busy insert is retried.
            let conn = rusqlite::Connection::open(db).unwrap();
            let mut committed = Vec::new();
            let mut n: i64 = 0;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let v = format!("row {n} {}", "x".repeat((n % 97) as usize)).into_bytes();
                match conn.execute(
                    "INSERT INTO items (n, v) VALUES (?, ?)",
                    rusqlite::params![n, v],
                ) {
                    Ok(_) => {
                        committed.push((n, v));
                        n += 1;
                        // Back to back, no pause: the rekey still gets the lock in between.
                    }
                    Err(e) if e.sqlite_error_code() == Some(rusqlite::ErrorCode::DatabaseBusy) => {}
                    Err(e) => panic!("writer: {e}"),
                }
            }
            committed
        })
    };
    let keys = [env.key(), env.path("b.key")];
    age_keygen(&keys[1]);
    for round in 0..4 {
        let (from, to) = (&keys[round % 2], &keys[(round + 1) % 2]);
        let mut cmd = env.cmd(["config", "rekey", "--new-key", s(to)]);
        cmd.env("RIP_AGE_KEY", from);
        crate::support::run_cmd(cmd)
            .success()
            .stderr_has("re-encrypted 1 generation(s)");
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let committed = writer.join().unwrap();
    assert!(
        !committed.is_empty(),
        "the writer committed during the rekeys"
    );
    let conn = rusqlite::Connection::open(env.db()).unwrap();
    let mut stmt = conn.prepare("SELECT n, v FROM items ORDER BY n").unwrap();
    let rows: Vec<(i64, Vec<u8>)> = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(|r| r.unwrap())
        .collect();
    let hash = |rows: &[(i64, Vec<u8>)]| {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        rows.hash(&mut h);
        h.finish()
    };
    assert_eq!(rows.len(), committed.len());
    assert_eq!(
        hash(&rows),
        hash(&committed),
        "the writer's rows, byte for byte"
    );
    assert_eq!(
        other_row(&env.db()),
        other_before,
        "another scope untouched"
    );
    // Back under the first key after an even number of rekeys: age opens it with that key.
    let content: Vec<u8> = conn
        .query_row(
            "SELECT content FROM app_config WHERE scope = 'litestream'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(age_decrypts(&env, &env.key(), &content).is_some());
    assert!(age_decrypts(&env, &keys[1], &content).is_none());
}

/// An editor that forks to the background and exits 0 at once (gvim without -f): nothing is
/// saved, the private directory is gone, and what the background process writes later (the
/// edited text, a swap file) finds no directory to land in.
#[test]
fn an_editor_that_returns_at_once_and_writes_later_leaves_nothing() {
    let env = TestEnv::new();
    env.init();
    let base = shm();
    let go = env.path("go");
    let done = env.path("done");
    let body = format!(
        "F=\"$1\"\n( while [ ! -e {go} ]; do sleep 0.02; done; cp \"$F\" /dev/null 2>/dev/null; \
         echo 'secret-access-key: latesecret' > \"$F\"; echo 'latesecret' > \"$(dirname \"$F\")/.swp\"; \
         touch {done} ) >/dev/null 2>&1 &\nexit 0",
        go = s(&go),
        done = s(&done)
    );
    let before = env.run(["config", "list"]).success().stdout();
    edit_with(&env, base.path(), &body)
        .success()
        .stderr_has("no changes: nothing saved");
    std::fs::write(&go, "").unwrap();
    crate::support::wait_for("the background editor", Duration::from_secs(30), || {
        done.exists()
    });
    assert!(
        left_under(base.path()).is_empty()
            || left_under(base.path())
                .iter()
                .all(|(p, _)| !p.to_string_lossy().contains("edit-"))
    );
    assert_no_plaintext(base.path(), "latesecret");
    assert_no_plaintext(base.path(), "rip-litestream init");
    assert_eq!(env.run(["config", "list"]).success().stdout(), before);
}

/// No editor to run ($EDITOR a missing program, or neither set and no `vi` on PATH): exit 2
/// saying to set VISUAL or EDITOR, and no plaintext left behind.
#[test]
fn an_edit_without_an_editor_to_run_is_bad_input_and_leaves_nothing() {
    let env = TestEnv::new();
    env.init();
    let base = shm();
    let mut missing = env.cmd(["config", "edit", "--no-check"]);
    missing
        .env_remove("VISUAL")
        .env("EDITOR", "/nonexistent/editor --wait")
        .env("RIP_RUNTIME_DIR", base.path());
    let mut none = env.cmd(["config", "edit", "--no-check"]);
    none.env_remove("VISUAL")
        .env_remove("EDITOR")
        .env("PATH", env.path("empty-path"))
        .env("RIP_RUNTIME_DIR", base.path());
    for cmd in [missing, none] {
        crate::support::run_cmd(cmd)
            .code_is(2)
            .stderr_has("cannot start the editor")
            .stderr_has("set VISUAL or EDITOR");
        assert!(
            left_under(base.path()).is_empty(),
            "{:?}",
            left_under(base.path())
        );
    }
}

/// Two `config edit` at once, both changing the config: the first to save wins, the second is
/// refused (saved meanwhile) and saves nothing; each had its own private directory.
#[test]
fn two_concurrent_edits_save_one() {
    let env = TestEnv::new();
    env.init();
    let base = shm();
    let body = |n: u32| {
        format!(
            "touch \"$D/started-{n}\"\nwhile [ ! -e \"$D/release-{n}\" ]; do sleep 0.02; done\n\
             sed -i 's/sync-interval: 1s/sync-interval: {n}s/' \"$1\""
        )
    };
    let spawn = |n: u32| {
        let script = env.path(&format!("ed{n}.sh"));
        std::fs::write(&script, format!("D={}\n{}\n", s(env.dir.path()), body(n))).unwrap();
        let mut cmd = env.cmd(["config", "edit", "--no-check"]);
        cmd.env_remove("VISUAL")
            .env("EDITOR", format!("sh {}", s(&script)))
            .env("RIP_RUNTIME_DIR", base.path());
        std::thread::spawn(move || crate::support::run_cmd(cmd))
    };
    let (a, b) = (spawn(2), spawn(3));
    crate::support::wait_for("both editors", Duration::from_secs(30), || {
        env.path("started-2").exists() && env.path("started-3").exists()
    });
    let dirs = left_under(base.path())
        .into_iter()
        .filter(|(p, _)| p.ends_with("config.yml"))
        .count();
    assert_eq!(dirs, 2, "each edit has its own file");
    std::fs::write(env.path("release-2"), "").unwrap();
    let first = a.join().unwrap();
    first.success().stderr_has("saved as the newest generation");
    std::fs::write(env.path("release-3"), "").unwrap();
    let second = b.join().unwrap();
    second.code_is(1).stderr_has("saved meanwhile");
    let shown = env.run(["config", "show"]).success().stdout();
    assert!(shown.contains("sync-interval: 2s"), "{shown}");
    assert_eq!(
        env.run(["config", "list"])
            .success()
            .stdout()
            .lines()
            .count(),
        2
    );
    assert!(left_under(base.path())
        .iter()
        .all(|(p, _)| !p.to_string_lossy().contains("edit-")));
}

/// A supervisor reloads (SIGHUP) after a rekey but before its key file is replaced: it cannot
/// open the store any more, says so (status: not healthy, the generation named), and keeps its
/// litestream running (no stop, no restart; restarted from the config in use when it dies);
/// once the key file is replaced, a reload finds the config unchanged.
#[test]
fn a_supervisor_reloading_with_the_old_key_after_a_rekey_keeps_its_litestream() {
    use crate::replication::{run_stderr, save_config, spawn, wait_ready};
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
    let (id, pid) = (status()["config_id"].as_i64(), status()["pid"].as_u64());
    let new_key = env.path("new.key");
    env.run(["keygen", "--output", s(&new_key)]).success();
    env.run(["config", "rekey", "--new-key", s(&new_key)])
        .success();
    let seen = run_stderr(&env).len();
    sup.signal("HUP");
    crate::support::wait_for("the reload's answer", Duration::from_secs(30), || {
        run_stderr(&env)[seen..].contains("reload outcome=Rejected")
    });
    // Said in its status: not healthy, the generation it cannot open named.
    crate::support::wait_for("an unhealthy status", Duration::from_secs(30), || {
        status()["healthy"] == false
    });
    let s1 = status();
    assert_eq!(s1["rejected_generation"]["id"].as_i64(), id, "{s1}");
    assert_eq!(s1["pid"].as_u64(), pid, "the same litestream: {s1}");
    assert_eq!(s1["config_id"].as_i64(), id, "{s1}");
    assert!(
        crate::replication::alive(pid.unwrap() as u32),
        "litestream still runs"
    );
    // litestream dies meanwhile: restarted from the config in use, which no key is needed for.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid.unwrap() as i32),
        nix::sys::signal::SIGKILL,
    )
    .unwrap();
    crate::support::wait_for("litestream restarted", Duration::from_secs(60), || {
        let now = status();
        now["running"] == true && now["pid"].as_u64().is_some_and(|p| Some(p) != pid)
    });
    let pid = status()["pid"].as_u64();
    std::fs::copy(&new_key, &key).unwrap();
    let seen = run_stderr(&env).len();
    sup.signal("HUP");
    crate::support::wait_for("config unchanged", Duration::from_secs(30), || {
        run_stderr(&env)[seen..].contains("config unchanged")
    });
    crate::support::wait_for("a healthy status again", Duration::from_secs(30), || {
        status()["healthy"] == true
    });
    let s2 = status();
    assert_eq!(s2["pid"].as_u64(), pid);
    assert!(s2["rejected_generation"].is_null(), "{s2}");
    sup.signal("TERM");
    assert_eq!(sup.wait_code(Duration::from_secs(30)), Some(0));
}

/// The runtime base as an operator may leave it: on a disk (warned, the edit works and leaves
/// nothing), world-writable (made private before use), another user's or a symlink (refused,
/// exit 2, nothing decrypted there).
#[test]
fn an_edit_in_a_runtime_base_that_is_not_private() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let env = TestEnv::new();
    env.init();
    let sed = "sed -i 's/sync-interval: 1s/sync-interval: 4s/' \"$1\"";
    // On a disk (the test's temp dir is not tmpfs when /tmp is a disk; the warning is checked
    // only then).
    let disk = env.path("disk-run");
    let r = edit_with(&env, &disk, sed);
    r.success();
    let on_tmpfs = nix::sys::statfs::statfs(&disk)
        .is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::TMPFS_MAGIC);
    if !on_tmpfs {
        r.stderr_has("not tmpfs");
    }
    assert!(left_under(&disk)
        .iter()
        .all(|(p, _)| !p.to_string_lossy().contains("edit-")));
    // World-writable: made 0700 first.
    let open = shm();
    std::fs::set_permissions(open.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    edit_with(
        &env,
        open.path(),
        "sed -i 's/sync-interval: 4s/sync-interval: 5s/' \"$1\"",
    )
    .success()
    .stderr_has("saved as the newest generation");
    assert_eq!(
        std::fs::metadata(open.path()).unwrap().mode() & 0o777,
        0o700
    );
    // Another user's (when we may hand it to one), or a symlink to a private directory.
    let theirs = shm();
    let before = env.run(["config", "list"]).success().stdout();
    if nix::unistd::getuid().is_root() {
        nix::unistd::chown(theirs.path(), Some(nix::unistd::Uid::from_raw(65534)), None).unwrap();
        edit_with(&env, theirs.path(), sed)
            .code_is(2)
            .stderr_has("not a directory owned by this user");
        assert!(left_under(theirs.path()).is_empty());
    }
    let link = env.path("run-link");
    std::os::unix::fs::symlink(open.path(), &link).unwrap();
    edit_with(&env, &link, sed)
        .code_is(2)
        .stderr_has("not a directory owned by this user");
    assert_eq!(env.run(["config", "list"]).success().stdout(), before);
}

/// A store this user may only read (run as `nobody` through setpriv, when the tests run as
/// root): the rekey is refused (exit 2, read-only said), no byte of the database changed.
#[test]
fn a_rekey_of_a_read_only_store_changes_no_byte() {
    use std::os::unix::fs::PermissionsExt;
    if !nix::unistd::getuid().is_root()
        || Command::new("setpriv").arg("--version").output().is_err()
    {
        eprintln!("skipped: needs root and setpriv to run as another user");
        return;
    }
    for mode in ["delete", "wal"] {
        let env = TestEnv::new();
        env.init();
        let conn = rusqlite::Connection::open(env.db()).unwrap();
        let _: String = conn
            .query_row(&format!("PRAGMA journal_mode={mode}"), [], |r| r.get(0))
            .unwrap();
        drop(conn);
        let new_key = env.path("new.key");
        age_keygen(&new_key);
        for p in [env.key(), new_key.clone(), env.db()] {
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        }
        std::fs::set_permissions(env.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let before = std::fs::read(env.db()).unwrap();
        let mut cmd = Command::new("setpriv");
        cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(crate::support::bin())
            .args(["config", "rekey", "--new-key", s(&new_key)])
            .env("RIP_DB", env.db())
            .env("RIP_AGE_KEY", env.key())
            .env("RIP_RUNTIME_DIR", "/dev/shm/rip-it-nobody")
            .env_remove("RUST_LOG");
        crate::support::run_cmd(cmd)
            .code_is(2)
            .stderr_has("read-only");
        assert_eq!(std::fs::read(env.db()).unwrap(), before, "{mode}");
    }
}

/// A rekey while an edit is open (begun under the old key): the edit's save is refused, naming
/// the key, and writes no row under the old key; every row still opens with the new key only.
#[test]
fn an_edit_open_across_a_rekey_saves_nothing_under_the_old_key() {
    let env = TestEnv::new();
    env.init();
    let base = shm();
    let script = env.path("ed.sh");
    std::fs::write(
        &script,
        format!(
            "touch {d}/started\nwhile [ ! -e {d}/release ]; do sleep 0.02; done\n\
             sed -i 's/sync-interval: 1s/sync-interval: 9s/' \"$1\"\n",
            d = s(env.dir.path())
        ),
    )
    .unwrap();
    let mut cmd = env.cmd(["config", "edit", "--no-check"]);
    cmd.env_remove("VISUAL")
        .env("EDITOR", format!("sh {}", s(&script)))
        .env("RIP_RUNTIME_DIR", base.path());
    let edit = std::thread::spawn(move || crate::support::run_cmd(cmd));
    crate::support::wait_for("the editor", Duration::from_secs(30), || {
        env.path("started").exists()
    });
    let new_key = env.path("new.key");
    age_keygen(&new_key);
    env.run(["config", "rekey", "--new-key", s(&new_key)])
        .success();
    std::fs::write(env.path("release"), "").unwrap();
    let r = edit.join().unwrap();
    assert_ne!(r.code(), 0, "{}", r.stderr());
    r.stderr_has(s(&env.key()));
    let rows = rows_with(&env, &new_key);
    assert_eq!(rows.len(), 1, "nothing saved");
    assert!(
        rows.iter().all(|(_, p)| p.is_some()),
        "every row opens with the new key"
    );
    assert!(left_under(base.path())
        .iter()
        .all(|(p, _)| !p.to_string_lossy().contains("edit-")));
}

/// Generations under two keys (an older one saved under a key the current key file still
/// holds as its second identity): the rekey opens each with the identity that fits and leaves
/// every one under the new key, checked row by row with `age -d`.
#[test]
fn a_rekey_of_generations_under_different_keys_reencrypts_them_all() {
    let env = TestEnv::new();
    env.init();
    let (older, newer, target) = (env.key(), env.path("k2"), env.path("k3"));
    age_keygen(&newer);
    age_keygen(&target);
    let both = env.path("both.key");
    let text = std::fs::read_to_string(&newer).unwrap() + &std::fs::read_to_string(&older).unwrap();
    std::fs::write(&both, text).unwrap();
    std::fs::set_permissions(&both, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let file = env.path("c.yml");
    std::fs::write(&file, config_yaml(&env, "# under k2\n", "")).unwrap();
    let mut save = env.cmd(["config", "save", "--new-key", s(&file)]);
    save.env("RIP_AGE_KEY", &both);
    crate::support::run_cmd(save).success();
    let (by_older, by_newer) = (rows_with(&env, &older), rows_with(&env, &newer));
    assert!(by_older[0].1.is_some() && by_older[1].1.is_none());
    assert!(by_newer[0].1.is_none() && by_newer[1].1.is_some());
    let mut rekey = env.cmd(["config", "rekey", "--new-key", s(&target)]);
    rekey.env("RIP_AGE_KEY", &both);
    crate::support::run_cmd(rekey)
        .success()
        .stderr_has("re-encrypted 2 generation(s)");
    let after = rows_with(&env, &target);
    assert_eq!(after[0].1, by_older[0].1);
    assert_eq!(after[1].1, by_newer[1].1);
    assert!(rows_with(&env, &both).iter().all(|(_, p)| p.is_none()));
}

/// A secret pasted under the wrong key (`sync-interval: <the secret>`): the messages that reject
/// it, of `config save`, `config check` (text and --json) and `config edit`, do not echo it.
#[test]
fn a_secret_pasted_under_the_wrong_key_is_not_echoed() {
    let env = TestEnv::new();
    env.init();
    let bad = config_yaml(
        &env,
        "secret-access-key: PASTEDSECRET9\n",
        "      sync-interval: PASTEDSECRET9\n",
    );
    let file = env.path("bad.yml");
    std::fs::write(&file, &bad).unwrap();
    let saved = env.run(["config", "save", "--no-check", s(&file)]);
    saved.code_is(2).stderr_has("sync-interval");
    // Stored anyway (a row written by another tool), then checked and edited.
    let recipient = Command::new("age-keygen")
        .args(["-y", s(&env.key())])
        .output()
        .unwrap()
        .stdout;
    let out = Command::new("age")
        .args(["-r", String::from_utf8(recipient).unwrap().trim(), s(&file)])
        .output()
        .unwrap();
    let conn = rusqlite::Connection::open(env.db()).unwrap();
    conn.execute(
        "INSERT INTO app_config (scope, content, format, description) VALUES ('litestream', ?, 'yml', 'bad')",
        [out.stdout],
    )
    .unwrap();
    let check = env.run(["config", "check"]);
    check.code_is(2).stdout_has("sync-interval");
    let json = env.run(["config", "check", "--json"]);
    json.code_is(2).stdout_has("sync-interval");
    let base = shm();
    let edit = edit_with(&env, base.path(), "echo '# edited' >> \"$1\"");
    edit.code_is(2).stderr_has("sync-interval");
    for r in [&saved, &check, &json, &edit] {
        let all = r.stdout() + &r.stderr();
        assert!(!all.contains("PASTEDSECRET9"), "{}:\n{all}", r.cmd);
    }
}

/// restinpieces keeps its own config (scope `application`, toml) in the same table under the
/// same key: a rekey of `litestream` leaves it alone and says so, not "pass the new key
/// everywhere"; the key file it advises (new identity first, then old) opens both scopes.
#[test]
fn a_rekey_says_which_other_scopes_still_need_the_old_key() {
    let env = TestEnv::new();
    env.init();
    let recipient = Command::new("age-keygen")
        .args(["-y", s(&env.key())])
        .output()
        .unwrap()
        .stdout;
    std::fs::write(env.path("app.toml"), "[server]\naddr = \":8080\"\n").unwrap();
    let out = Command::new("age")
        .args([
            "-r",
            String::from_utf8(recipient).unwrap().trim(),
            s(&env.path("app.toml")),
        ])
        .output()
        .unwrap();
    let conn = rusqlite::Connection::open(env.db()).unwrap();
    conn.execute(
        "INSERT INTO app_config (scope, content, format, description) VALUES ('application', ?, 'toml', 'ripc')",
        [&out.stdout],
    )
    .unwrap();
    let new_key = env.path("new.key");
    age_keygen(&new_key);
    let r = env.run(["config", "rekey", "--new-key", s(&new_key)]);
    r.success()
        .stderr_has("other scopes are still under the old key")
        .stderr_has("`application` (1 row(s))");
    assert!(!r.stderr().contains("no longer opens it"), "{}", r.stderr());
    let app: Vec<u8> = conn
        .query_row(
            "SELECT content FROM app_config WHERE scope = 'application'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(app, out.stdout, "the application's row untouched");
    let both = env.path("both.key");
    let text =
        std::fs::read_to_string(&new_key).unwrap() + &std::fs::read_to_string(env.key()).unwrap();
    std::fs::write(&both, text).unwrap();
    assert!(age_decrypts(&env, &both, &app).is_some());
    assert!(rows_with(&env, &both).iter().all(|(_, p)| p.is_some()));
}

/// SIGQUIT (Ctrl-\ on the terminal) during an edit: passed on to the editor like SIGINT, the
/// edit abandoned, nothing saved, the decrypted file removed (not a core dump leaving it).
#[test]
fn sigquit_during_an_edit_removes_the_plaintext() {
    let env = TestEnv::new();
    env.init();
    let base = shm();
    let before = env.run(["config", "list"]).success().stdout();
    let r = edit_with(
        &env,
        base.path(),
        "echo '# edited' >> \"$1\"\nkill -QUIT $PPID\nwhile :; do sleep 0.05; done",
    );
    r.code_is(1)
        .stderr_has("SIGQUIT")
        .stderr_has("nothing saved");
    assert!(left_under(base.path())
        .iter()
        .all(|(p, _)| !p.to_string_lossy().contains("edit-")));
    assert_no_plaintext(base.path(), "edited");
    assert_eq!(env.run(["config", "list"]).success().stdout(), before);
}
