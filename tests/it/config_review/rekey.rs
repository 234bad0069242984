//! `config rekey` given the wrong key file, behind a writer's lock, beside a committing writer,
//! SIGKILLed inside its transaction, on a read-only store, across rows under two keys, beside
//! other scopes and a running supervisor.

use super::*;

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
    assert!(env.age_decrypts(&env.key(), &content).is_some());
    assert!(env.age_decrypts(&keys[1], &content).is_none());
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
    assert!(env.age_decrypts(&both, &app).is_some());
    assert!(rows_with(&env, &both).iter().all(|(_, p)| p.is_some()));
}
