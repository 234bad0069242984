//! Many databases at once: the fresh-database guard looks at them side by side, and still
//! refuses each new empty file that would replace a good backup, leaving every other database
//! as it was (the real litestream, SQLite's defaults for the writers).

use std::path::{Path, PathBuf};

use crate::replication::*;
use crate::support::TestEnv;

const N: usize = 20;

/// `yaml` saved in its own store (`config.db`), with a new key.
fn store_with(env: &TestEnv, yaml: &str) -> PathBuf {
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

/// Replaces `db` by a new database holding one row, its litestream state gone with it: what an
/// application does when it finds no file.
fn recreate(db: &Path) {
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", db.display()));
    }
    let name = db.file_name().unwrap().to_string_lossy();
    std::fs::remove_dir_all(db.with_file_name(format!(".{name}-litestream"))).unwrap();
    insert(db, 1000, 1001);
}

/// The rows the file replica `replica` restores.
fn restored_rows(env: &TestEnv, replica: &Path) -> usize {
    let out = env.path("restored.db");
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", out.display()));
    }
    restore(replica, &out);
    assert!(integrity_ok(&out));
    rows(&out).len()
}

/// Runs `run -- sh -c 'touch RAN'` and says whether the application ran.
fn run_app(env: &TestEnv, store: &Path) -> (crate::support::Run, bool) {
    let ran = env.path("ran");
    let _ = std::fs::remove_file(&ran);
    let touch = format!("touch {}", ran.display());
    let r = env.run([
        "--db",
        store.to_str().unwrap(),
        "run",
        "--",
        "sh",
        "-c",
        &touch,
    ]);
    (r, ran.exists())
}

#[test]
fn twenty_databases_two_recreated_empty_are_refused_the_others_untouched() {
    let env = TestEnv::new();
    std::fs::create_dir(env.path("dbs")).unwrap();
    let db = |i: usize| env.path(&format!("dbs/d{i:02}.db"));
    let replica = |i: usize| env.path(&format!("replicas/d{i:02}"));
    let mut yaml = String::from("dbs:\n");
    for i in 0..N {
        insert(&db(i), 0, 5 + i as i64);
        // Both spellings of a file replica: `type: file` + `path`, and a `file://` URL.
        let replica_yaml = if i % 2 == 0 {
            format!("type: file\n      path: {}", replica(i).display())
        } else {
            format!("url: file://{}", replica(i).display())
        };
        yaml.push_str(&format!(
            "  - path: {}\n    replica:\n      {replica_yaml}\n",
            db(i).display()
        ));
    }
    let store = store_with(&env, &yaml);
    // First start: no litestream state and no replica anywhere: nothing to refuse.
    let (r, ran) = run_app(&env, &store);
    r.success();
    assert!(ran);
    for i in [0, 7, 13, N - 1] {
        assert_eq!(restored_rows(&env, &replica(i)), 5 + i);
    }
    recreate(&db(7));
    recreate(&db(13));
    let before: Vec<Vec<u8>> = (0..N).map(|i| std::fs::read(db(i)).unwrap()).collect();
    let (r, ran) = run_app(&env, &store);
    r.code_is(2)
        .stderr_has("d07.db")
        .stderr_has("d13.db")
        .stderr_has("--allow-fresh-db");
    assert!(!ran, "the application must not run");
    assert!(
        !r.stderr().contains("d06.db") && !r.stderr().contains("d08.db"),
        "only the recreated databases are named: {}",
        r.stderr()
    );
    for (i, bytes) in before.iter().enumerate() {
        assert_eq!(
            &std::fs::read(db(i)).unwrap(),
            bytes,
            "d{i:02}.db untouched"
        );
    }
    assert_eq!(restored_rows(&env, &replica(7)), 12, "d07's backup intact");
    assert_eq!(restored_rows(&env, &replica(13)), 18, "d13's backup intact");
    assert_eq!(restored_rows(&env, &replica(8)), 13);
}

#[test]
fn a_directory_of_twenty_with_one_recreated_empty_is_refused() {
    let env = TestEnv::new();
    let tenants = env.path("tenants");
    std::fs::create_dir(&tenants).unwrap();
    let db = |i: usize| tenants.join(format!("t{i:02}.db"));
    for i in 0..N {
        insert(&db(i), 0, 3 + i as i64);
    }
    let store = store_with(
        &env,
        &format!(
            "dbs:\n  - dir: {}\n    pattern: \"*.db\"\n    replica:\n      type: file\n      path: {}\n",
            tenants.display(),
            env.path("replica").display()
        ),
    );
    let (r, ran) = run_app(&env, &store);
    r.success();
    assert!(ran);
    let tenant_replica = |i: usize| env.path(&format!("replica/t{i:02}.db"));
    assert_eq!(restored_rows(&env, &tenant_replica(11)), 14);
    recreate(&db(11));
    // A new tenant, never replicated: nothing of it to lose, accepted.
    insert(&db(N), 0, 2);
    let before: Vec<Vec<u8>> = (0..=N).map(|i| std::fs::read(db(i)).unwrap()).collect();
    let (r, ran) = run_app(&env, &store);
    r.code_is(2)
        .stderr_has("t11.db")
        .stderr_has("--allow-fresh-db");
    assert!(!ran, "the application must not run");
    assert!(!r.stderr().contains("t20.db"), "{}", r.stderr());
    for (i, bytes) in before.iter().enumerate() {
        assert_eq!(
            &std::fs::read(db(i)).unwrap(),
            bytes,
            "t{i:02}.db untouched"
        );
    }
    assert_eq!(
        restored_rows(&env, &tenant_replica(11)),
        14,
        "t11's backup intact"
    );
    // Put back from its replica by hand: accepted, and every tenant replicated on.
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", db(11).display()));
    }
    restore(&tenant_replica(11), &db(11));
    let (r, ran) = run_app(&env, &store);
    r.success();
    assert!(ran);
    assert_eq!(restored_rows(&env, &tenant_replica(N)), 2);
    assert_eq!(restored_rows(&env, &tenant_replica(11)), 14);
}
