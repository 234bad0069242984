//! `run -- APP`: the container entrypoint with the real litestream: exit codes, signals, restarts
//! without touching the application, PID 1 reaping, restore on boot.

use std::time::Duration;

use crate::replication::*;
use crate::support::{wait_for, TestEnv};

const LONG: Duration = Duration::from_secs(30);

fn sql(env: &TestEnv, statement: &str) -> String {
    format!(
        "sqlite3 -cmd '.timeout 5000' {} \"{statement}\"",
        env.db().display()
    )
}

fn restored(env: &TestEnv) -> Vec<(i64, String)> {
    let out = env.path("restored.db");
    let _ = std::fs::remove_file(&out);
    restore(&env.path("replica"), &out);
    assert!(integrity_ok(&out));
    rows(&out)
}

/// A config in its own store (`config.db`), replicating `app.db`: the layout for restore on boot.
fn separate_store(env: &TestEnv) -> std::path::PathBuf {
    store_with(env, &config_yaml(env, "", ""))
}

/// `yaml` saved in its own store (`config.db`), with a new key.
fn store_with(env: &TestEnv, yaml: &str) -> std::path::PathBuf {
    let store = env.path("config.db");
    env.run(["keygen"]).success();
    let file = env.path("c.yml");
    std::fs::write(&file, yaml).unwrap();
    env.run([
        "--db",
        store.to_str().unwrap(),
        "config",
        "save",
        file.to_str().unwrap(),
    ])
    .success();
    std::fs::remove_file(&file).unwrap();
    store
}

#[test]
fn app_exit_code_passes_through_and_its_rows_are_in_the_replica() {
    let env = TestEnv::new();
    insert(&env.db(), 0, 1);
    save_config(&env, &config_yaml(&env, "", "      sync-interval: 30s\n"));
    let script = format!(
        "{}; exit 7",
        sql(
            &env,
            "INSERT INTO t (id, body) VALUES (1, 'row 1'), (2, 'row 2'), (3, 'row 3')"
        )
    );
    let r = env.run(["run", "--", "sh", "-c", &script]);
    r.code_is(7);
    assert_eq!(restored(&env).len(), 4);
}

#[test]
fn sigterm_goes_to_the_app_first_and_its_last_row_is_replicated() {
    let env = TestEnv::new();
    insert(&env.db(), 0, 1);
    save_config(&env, &config_yaml(&env, "", "      sync-interval: 30s\n"));
    let started = env.path("started");
    let app = env.path("app.sh");
    std::fs::write(
        &app,
        format!(
            "on_term() {{\n  {}\n  exit 0\n}}\ntrap on_term TERM\ntouch {}\nwhile :; do sleep 0.05; done\n",
            sql(&env, "INSERT INTO t (id, body) VALUES (1, 'written on TERM')"),
            started.display()
        ),
    )
    .unwrap();
    let mut sup = spawn(&env, env.cmd(["run", "--", "sh", app.to_str().unwrap()]));
    wait_for("app started", LONG, || started.exists());
    sup.signal("TERM");
    assert_eq!(sup.wait_code(LONG), Some(0), "{}", run_stderr(&env));
    assert_eq!(
        restored(&env),
        vec![(0, "row 0".into()), (1, "written on TERM".into())]
    );
}

#[test]
fn kill_9_of_litestream_restarts_it_without_touching_the_app() {
    let env = TestEnv::new();
    save_config(&env, &config_yaml(&env, "", ""));
    let started = env.path("started");
    let script = format!("touch {}; exec sleep 60", started.display());
    let mut sup = spawn(
        &env,
        env.cmd([
            "run",
            "--backoff-initial",
            "50ms",
            "--",
            "sh",
            "-c",
            &script,
        ]),
    );
    wait_for("app started", LONG, || started.exists());
    let is_litestream = |p: &u32| {
        std::fs::read_to_string(format!("/proc/{p}/cmdline"))
            .unwrap_or_default()
            .contains("replicate")
    };
    let children = children_of(sup.pid());
    let litestream: Vec<u32> = children.iter().copied().filter(is_litestream).collect();
    let app: Vec<u32> = children
        .iter()
        .copied()
        .filter(|p| !is_litestream(p))
        .collect();
    assert_eq!((litestream.len(), app.len()), (1, 1), "{children:?}");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(litestream[0] as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    wait_for("a new litestream", LONG, || {
        children_of(sup.pid())
            .iter()
            .any(|p| is_litestream(p) && *p != litestream[0])
            && run_stderr(&env).matches("litestream ready").count() == 2
    });
    assert!(alive(app[0]), "the app was touched");
    assert!(children_of(sup.pid()).contains(&app[0]));
    sup.signal("TERM");
    assert_eq!(
        sup.wait_code(LONG),
        Some(143),
        "sleep dies of the forwarded SIGTERM"
    );
}

#[test]
fn as_pid_1_orphans_are_reaped_and_the_exit_code_passes_through() {
    if !std::process::Command::new("unshare")
        .args(["--pid", "--fork", "--mount-proc", "true"])
        .status()
        .is_ok_and(|s| s.success())
    {
        eprintln!("SKIPPED: unshare --pid is not permitted here");
        return;
    }
    let env = TestEnv::new();
    save_config(&env, &config_yaml(&env, "", ""));
    let report = env.path("orphans");
    // Orphans: each inner sh exits at once, leaving a short sleep to PID 1 (the wrapper). The
    // app then waits (up to 10 s) until every orphan is gone from /proc entirely: a zombie that
    // is never reaped stays listed, and the app reports it.
    let script = format!(
        "for i in 1 2 3 4 5; do sh -c 'sleep 0.2 & echo $! >> pids'; done; \
         for t in $(seq 100); do left=0; for p in $(cat pids); do [ -e /proc/$p ] && left=$((left+1)); done; \
           [ $left -eq 0 ] && break; sleep 0.1; done; \
         echo \"$(wc -l < pids) orphans, $left left\" > {}; exit 5",
        report.display()
    );
    let mut cmd = std::process::Command::new("unshare");
    cmd.args(["--pid", "--fork", "--mount-proc"])
        .arg(crate::support::bin())
        .args(["run", "--", "sh", "-c", &script])
        .current_dir(env.dir.path());
    for (k, v) in env.cmd(["x"]).get_envs() {
        match v {
            Some(v) => cmd.env(k, v),
            None => cmd.env_remove(k),
        };
    }
    let r = crate::support::run_cmd(cmd);
    r.code_is(5);
    assert_eq!(
        std::fs::read_to_string(&report).unwrap().trim(),
        "5 orphans, 0 left"
    );
}

#[test]
fn restore_on_boot_gives_the_app_every_row_at_its_first_query() {
    let env = TestEnv::new();
    let store = separate_store(&env);
    let db_arg = ["--db", store.to_str().unwrap()];
    insert(&env.db(), 0, 50);
    let r = env.run(db_arg.iter().copied().chain(["run", "--", "true"]));
    r.success();
    // The machine is lost: the database and its litestream state are gone.
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", env.db().display()));
    }
    std::fs::remove_dir_all(env.path(".app.db-litestream")).unwrap();
    let count = env.path("count");
    let script = format!(
        "{} > {}",
        sql(&env, "SELECT count(*) FROM t"),
        count.display()
    );
    let r = env.run(db_arg.iter().copied().chain([
        "run",
        "--restore-if-missing",
        "--",
        "sh",
        "-c",
        &script,
    ]));
    r.success();
    assert_eq!(std::fs::read_to_string(&count).unwrap().trim(), "50");
}

#[test]
fn restore_on_boot_without_a_replica_is_a_fresh_start() {
    let env = TestEnv::new();
    let store = separate_store(&env);
    let script = format!("test ! -e {}", env.db().display());
    let r = env.run([
        "--db",
        store.to_str().unwrap(),
        "run",
        "--restore-if-missing",
        "--",
        "sh",
        "-c",
        &script,
    ]);
    r.success().stderr_has("fresh start");
}

#[test]
fn a_fresh_database_over_a_replica_with_backups_is_refused() {
    let env = TestEnv::new();
    let store = separate_store(&env);
    let db_arg = ["--db", store.to_str().unwrap()];
    insert(&env.db(), 0, 5);
    env.run(db_arg.iter().copied().chain(["run", "--", "true"]))
        .success();
    // Replaced by a new empty database, without litestream's state.
    std::fs::remove_dir_all(env.path(".app.db-litestream")).unwrap();
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", env.db().display()));
    }
    insert(&env.db(), 100, 101);
    let before = std::fs::read(env.db()).unwrap();
    let r = env.run(db_arg.iter().copied().chain(["run", "--", "true"]));
    r.code_is(2).stderr_has("--allow-fresh-db");
    assert_eq!(std::fs::read(env.db()).unwrap(), before);
    assert_eq!(
        restored(&env).len(),
        5,
        "the replica still holds the good backup"
    );
    env.run(
        db_arg
            .iter()
            .copied()
            .chain(["run", "--allow-fresh-db", "--", "true"]),
    )
    .success();
}

#[test]
fn a_missing_config_store_says_how_to_recover() {
    let env = TestEnv::new();
    let r = env.run([
        "--db",
        env.path("config.db").to_str().unwrap(),
        "run",
        "--",
        "true",
    ]);
    r.code_is(2)
        .stderr_has("cannot be restored from the backup it describes");
}

#[test]
fn the_app_environment_has_no_rip_variables() {
    let env = TestEnv::new();
    save_config(&env, &config_yaml(&env, "", ""));
    let dump = env.path("env.txt");
    let mut cmd = env.cmd([
        "run",
        "--",
        "sh",
        "-c",
        &format!("env > {}", dump.display()),
    ]);
    cmd.env("RIP_SECRET_THING", "x").env("APP_SETTING", "kept");
    crate::support::run_cmd(cmd).success();
    let text = std::fs::read_to_string(&dump).unwrap();
    assert!(text.lines().all(|l| !l.starts_with("RIP_")), "{text}");
    assert!(text.contains("APP_SETTING=kept"));
}

/// The machine lost its volume: the database and litestream's state beside it are gone.
fn lose_the_database(env: &TestEnv) {
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", env.db().display()));
    }
    let _ = std::fs::remove_dir_all(env.path(".app.db-litestream"));
}

#[test]
fn a_missing_database_with_backups_is_refused_without_restore_if_missing() {
    let env = TestEnv::new();
    let store = separate_store(&env);
    let db_arg = ["--db", store.to_str().unwrap()];
    insert(&env.db(), 0, 305);
    env.run(db_arg.iter().copied().chain(["run", "--", "true"]))
        .success();
    lose_the_database(&env);
    // The operator forgets --restore-if-missing; the app would create a fresh 3-row database.
    let script = format!(
        "{} ; {}",
        sql(
            &env,
            "CREATE TABLE t (id INTEGER PRIMARY KEY, body TEXT NOT NULL)"
        ),
        sql(&env, "INSERT INTO t VALUES (1,'a'),(2,'b'),(3,'c')")
    );
    let r = env.run(
        db_arg
            .iter()
            .copied()
            .chain(["run", "--", "sh", "-c", &script]),
    );
    r.code_is(2)
        .stderr_has("does not exist")
        .stderr_has("--restore-if-missing")
        .stderr_has("--allow-fresh-db");
    assert!(!env.db().exists(), "the app must not have run");
    assert_eq!(restored(&env).len(), 305, "the replica keeps its 305 rows");
}

#[test]
fn a_database_restored_by_hand_or_by_restore_is_accepted_and_replicated_on() {
    let env = TestEnv::new();
    let store = separate_store(&env);
    let db_arg = ["--db", store.to_str().unwrap()];
    insert(&env.db(), 0, 40);
    env.run(db_arg.iter().copied().chain(["run", "--", "true"]))
        .success();
    lose_the_database(&env);
    // By hand, with bare litestream (the documented recovery): no state, no marker of ours.
    restore(&env.path("replica"), &env.db());
    let r = env.run(db_arg.iter().copied().chain(["run", "--", "true"]));
    r.success().stderr_has("equals the replica's latest backup");
    insert(&env.db(), 40, 60);
    env.run(db_arg.iter().copied().chain(["run", "--", "true"]))
        .success();
    assert_eq!(restored(&env), rows(&env.db()));
    assert_eq!(rows(&env.db()).len(), 60);

    // With rip-litestream restore, then the app writes before the supervisor starts: the
    // content no longer equals the latest backup, the marker says we restored it.
    lose_the_database(&env);
    let db = env.db();
    env.run(
        db_arg
            .iter()
            .copied()
            .chain(["restore", db.to_str().unwrap()]),
    )
    .success();
    insert(&env.db(), 60, 70);
    env.run(db_arg.iter().copied().chain(["run", "--", "true"]))
        .success();
    assert_eq!(restored(&env).len(), 70);
    // The marker goes at the next start, litestream's own state being there by then.
    env.run(db_arg.iter().copied().chain(["run", "--", "true"]))
        .success();
    assert!(!env.path(".app.db-rip-restored").exists());
}

#[test]
fn a_home_relative_path_is_restored_where_litestream_replicates_it() {
    let env = TestEnv::new();
    // A directory of this test's own under the home directory, removed at the end.
    let home = nix::unistd::User::from_uid(nix::unistd::getuid())
        .unwrap()
        .unwrap()
        .dir;
    let name = format!(".rip-it-{}", std::process::id());
    struct Gone(std::path::PathBuf);
    impl Drop for Gone {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    let dir = Gone(home.join(&name));
    std::fs::create_dir_all(&dir.0).unwrap();
    let db = dir.0.join("app.db");
    insert(&db, 0, 25);
    let store = store_with(
        &env,
        &format!(
            "dbs:\n  - path: ~/{name}/app.db\n    replica:\n      type: file\n      path: {}\n",
            env.path("replica").display()
        ),
    );
    let db_arg = ["--db", store.to_str().unwrap()];
    env.run(db_arg.iter().copied().chain(["run", "--", "true"]))
        .success();
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", db.display()));
    }
    let _ = std::fs::remove_dir_all(dir.0.join(".app.db-litestream"));
    env.run(
        db_arg
            .iter()
            .copied()
            .chain(["run", "--restore-if-missing", "--", "true"]),
    )
    .success();
    assert_eq!(
        rows(&db).len(),
        25,
        "restored where litestream replicates it"
    );
    assert!(!env.path("~").exists(), "nothing under a literal ./~");
    // The other commands find it by the same spelling.
    env.run(
        db_arg
            .iter()
            .copied()
            .chain(["doctor", &format!("~/{name}/app.db")]),
    )
    .success();
    let out = env.path("copy.db");
    env.run(db_arg.iter().copied().chain([
        "restore",
        "-o",
        out.to_str().unwrap(),
        &format!("~/{name}/app.db"),
    ]))
    .success();
    assert_eq!(rows(&out).len(), 25);
}

#[test]
fn a_tenant_database_recreated_empty_is_refused_file_by_file() {
    let env = TestEnv::new();
    let tenants = env.path("tenants");
    std::fs::create_dir(&tenants).unwrap();
    insert(&tenants.join("a.db"), 0, 30);
    insert(&tenants.join("b.db"), 0, 5);
    let store = store_with(
        &env,
        &format!(
            "dbs:\n  - dir: {}\n    pattern: \"*.db\"\n    replica:\n      type: file\n      path: {}\n",
            tenants.display(),
            env.path("replica").display()
        ),
    );
    let db_arg = ["--db", store.to_str().unwrap()];
    env.run(db_arg.iter().copied().chain(["run", "--", "true"]))
        .success();
    let tenant = |name: &str| {
        let out = env.path(&format!("restored-{name}"));
        let _ = std::fs::remove_file(&out);
        restore(&env.path("replica").join(name), &out);
        rows(&out).len()
    };
    assert_eq!(tenant("a.db"), 30);
    // Tenant a's database recreated empty (its litestream state gone with it).
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", tenants.join("a.db").display()));
    }
    std::fs::remove_dir_all(tenants.join(".a.db-litestream")).unwrap();
    insert(&tenants.join("a.db"), 1000, 1001);
    let before = std::fs::read(tenants.join("a.db")).unwrap();
    let r = env.run(db_arg.iter().copied().chain(["run", "--", "true"]));
    r.code_is(2)
        .stderr_has("a.db")
        .stderr_has("--allow-fresh-db");
    assert_eq!(std::fs::read(tenants.join("a.db")).unwrap(), before);
    assert_eq!(tenant("a.db"), 30, "tenant a's backup is intact");
    // Put back by hand from its replica: accepted, and replicated on.
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", tenants.join("a.db").display()));
    }
    restore(&env.path("replica").join("a.db"), &tenants.join("a.db"));
    env.run(db_arg.iter().copied().chain(["run", "--", "true"]))
        .success();
    assert_eq!(tenant("a.db"), 30);
    assert_eq!(tenant("b.db"), 5);
}
