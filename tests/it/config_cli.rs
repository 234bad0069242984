//! The config commands end to end (`keygen`, `init`, `config save|show|list|check|rollback`):
//! interop with the `age` command-line tool and plain SQL, generation order, every validation
//! rule, every bad input (exit 2, a message saying what to do, the database untouched), key file
//! modes and the real litestream's verdict.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use rusqlite::Connection;
use serde_json::Value;

use crate::support::{run_cmd, snapshot, Run, TestEnv};

/// A config both our validator and litestream accept.
const GOOD: &str = "\
dbs:
  - path: /data/app.db
    replica:
      type: file
      path: /backups/app
";

/// restinpieces' DDL as SQLite stores it in `sqlite_master` (it drops `IF NOT EXISTS`).
const TABLE_SQL: &str = "CREATE TABLE app_config (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    scope TEXT NOT NULL,
    content BLOB NOT NULL,
    format TEXT NOT NULL DEFAULT 'toml',
    description TEXT,
    created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%SZ', 'now'))
)";
const INDEX_SQL: &str = "CREATE INDEX idx_app_config_created ON app_config(created_at DESC)";

/// The version `scripts/install-litestream.sh` installs.
const LITESTREAM_VERSION: &str = "0.5.17";

// ---------------------------------------------------------------------------------------------
// helpers

/// A valid config that replicates `db`: distinct content per generation.
fn config_for(db: &str) -> String {
    format!("dbs:\n  - path: {db}\n    replica:\n      type: file\n      path: /backups/app\n")
}

fn s(p: &Path) -> &str {
    p.to_str().expect("test paths are UTF-8")
}

/// Runs rip-litestream with string arguments.
fn run(env: &TestEnv, args: &[&str]) -> Run {
    env.run(args.iter().copied())
}

/// Writes `yaml` to `name` in the env and runs `config save` on it with `extra` flags.
fn save_file(env: &TestEnv, name: &str, yaml: &str, extra: &[&str]) -> Run {
    let file = env.path(name);
    std::fs::write(&file, yaml).unwrap();
    let mut args = vec!["config", "save", s(&file)];
    args.extend_from_slice(extra);
    run(env, &args)
}

/// An env with a key, a database and one saved config (`init`).
fn inited() -> TestEnv {
    let env = TestEnv::new();
    env.init();
    env
}

/// Runs a command-line tool (`age`, `age-keygen`) and returns its stdout; panics on failure.
fn tool(program: &str, args: &[&str]) -> Vec<u8> {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// `age-keygen -o PATH`: a key file in age-keygen's own format.
fn age_keygen(path: &Path) {
    tool("age-keygen", &["-o", s(path)]);
}

/// The public recipient of the first identity in `key`, as `age-keygen -y` prints it.
fn recipient_of(key: &Path) -> String {
    String::from_utf8(tool("age-keygen", &["-y", s(key)]))
        .unwrap()
        .lines()
        .next()
        .expect("age-keygen -y prints a recipient")
        .to_string()
}

/// `age -r RECIPIENT`: binary ciphertext of `plaintext`.
fn age_encrypt(env: &TestEnv, recipient: &str, plaintext: &[u8]) -> Vec<u8> {
    let input = env.path("plain.in");
    let output = env.path("cipher.age");
    std::fs::write(&input, plaintext).unwrap();
    let _ = std::fs::remove_file(&output);
    tool("age", &["-r", recipient, "-o", s(&output), s(&input)]);
    std::fs::read(&output).unwrap()
}

/// `age -d -i KEY`: the plaintext of `ciphertext`.
fn age_decrypt(env: &TestEnv, key: &Path, ciphertext: &[u8]) -> Vec<u8> {
    let input = env.path("cipher.in");
    std::fs::write(&input, ciphertext).unwrap();
    tool("age", &["-d", "-i", s(key), s(&input)])
}

/// Inserts a row exactly as restinpieces does.
fn insert_row(db: &Path, content: &[u8], format: &str, description: &str) -> i64 {
    let conn = Connection::open(db).unwrap();
    conn.execute(
        "INSERT INTO app_config (scope, content, format, description) \
         VALUES ('litestream', ?, ?, ?)",
        rusqlite::params![content, format, description],
    )
    .unwrap();
    conn.last_insert_rowid()
}

/// The `content` BLOB of the newest row by id.
fn newest_content(db: &Path) -> Vec<u8> {
    let conn = Connection::open(db).unwrap();
    let (kind, content): (String, Vec<u8>) = conn
        .query_row(
            "SELECT typeof(content), content FROM app_config ORDER BY id DESC LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!(kind, "blob", "content must be stored as a BLOB");
    content
}

fn set_created_at(db: &Path, id: i64, created_at: &str) {
    let conn = Connection::open(db).unwrap();
    let n = conn
        .execute(
            "UPDATE app_config SET created_at = ? WHERE id = ?",
            rusqlite::params![created_at, id],
        )
        .unwrap();
    assert_eq!(n, 1);
}

/// `config list --json`, parsed.
fn list(env: &TestEnv) -> Vec<Value> {
    let r = run(env, &["config", "list", "--json"]);
    r.success();
    r.stdout()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON line {l:?}: {e}")))
        .collect()
}

/// `config show -g N` stdout, asserting success.
fn show(env: &TestEnv, generation: u32) -> String {
    let r = run(env, &["config", "show", "-g", &generation.to_string()]);
    r.success();
    r.stdout()
}

fn mode_of(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// Runs `args` and asserts a bad-input failure: exit 2, each of `needles` on stderr, and the
/// file at `db` byte-identical (or still absent) afterwards.
fn assert_bad_input(env: &TestEnv, db: &Path, args: &[&str], needles: &[&str]) -> Run {
    let existed = db.exists();
    let before = snapshot(db);
    let r = run(env, args);
    r.code_is(2);
    for n in needles {
        r.stderr_has(n);
    }
    assert_eq!(
        db.exists(),
        existed,
        "{} appeared or vanished",
        db.display()
    );
    assert!(snapshot(db) == before, "{} changed", db.display());
    r
}

/// `config save` of `yaml` on an `init`ed env must fail naming `key` with `why`, and leave the
/// database byte-identical.
fn assert_rejected(yaml: &str, key: &str, why: &str, extra: &[&str]) {
    let env = inited();
    let before = snapshot(&env.db());
    let r = save_file(&env, "bad.yml", yaml, extra);
    r.code_is(2)
        .stderr_has("invalid litestream config")
        .stderr_has(&format!("- {key}: "))
        .stderr_has(why);
    assert!(snapshot(&env.db()) == before, "the database changed");
}

// ---------------------------------------------------------------------------------------------
// 1. interop with the age CLI and plain SQL

#[test]
fn saved_content_decrypts_with_age_cli_to_the_saved_bytes() {
    let env = inited();
    // Unusual but valid bytes: a comment, CRLF-free odd spacing and no trailing newline.
    let yaml = "# prod backup, see runbook\ndbs:\n  - path: /srv/app.db   # the app\n    replica:\n      type: file\n      path: /backups/app";
    save_file(&env, "prod.yml", yaml, &[]).success();

    let content = newest_content(&env.db());
    assert!(
        content.starts_with(b"age-encryption.org/v1\n"),
        "content is not a binary age file: {:?}",
        String::from_utf8_lossy(&content[..content.len().min(40)])
    );
    assert!(
        !content.windows(yaml.len()).any(|w| w == yaml.as_bytes()),
        "plaintext stored"
    );
    assert_eq!(age_decrypt(&env, &env.key(), &content), yaml.as_bytes());
}

#[test]
fn row_inserted_with_sql_and_age_cli_is_what_config_show_prints() {
    let env = inited();
    let yaml = "# written by ripc\ndbs:\n  - path: /srv/other.db\n    replica:\n      url: s3://bucket/other\n";
    let content = age_encrypt(&env, &recipient_of(&env.key()), yaml.as_bytes());
    insert_row(&env.db(), &content, "yml", "x");

    assert_eq!(show(&env, 0), yaml);
}

#[test]
fn table_and_index_schema_are_restinpieces_ddl() {
    let env = TestEnv::new();
    run(&env, &["keygen", "--output", s(&env.key())]).success();
    // The first save creates the database and the table.
    env.save(GOOD).success();

    let conn = Connection::open(env.db()).unwrap();
    let sql = |name: &str| -> String {
        conn.query_row(
            "SELECT sql FROM sqlite_master WHERE name = ?",
            [name],
            |r| r.get(0),
        )
        .unwrap_or_else(|e| panic!("no {name} in sqlite_master: {e}"))
    };
    assert_eq!(sql("app_config"), TABLE_SQL);
    assert_eq!(sql("idx_app_config_created"), INDEX_SQL);
    let user_version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(
        user_version, 0,
        "restinpieces does not expect a user_version"
    );
}

#[test]
fn saving_into_an_existing_restinpieces_database_keeps_its_schema_and_other_tables() {
    let env = TestEnv::new();
    run(&env, &["keygen", "--output", s(&env.key())]).success();
    {
        let conn = Connection::open(env.db()).unwrap();
        conn.execute_batch(&format!(
            "{TABLE_SQL};\n{INDEX_SQL};\nCREATE TABLE users (id TEXT PRIMARY KEY, email TEXT);\n\
             INSERT INTO users VALUES ('u1', 'a@example.com');"
        ))
        .unwrap();
    }
    env.save(GOOD).success();

    let conn = Connection::open(env.db()).unwrap();
    let email: String = conn
        .query_row("SELECT email FROM users WHERE id = 'u1'", [], |r| r.get(0))
        .unwrap();
    assert_eq!(email, "a@example.com");
    let tables: i64 = conn
        .query_row(
            "SELECT count(*) FROM sqlite_master WHERE name = 'app_config'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(tables, 1);
    assert_eq!(show(&env, 0), GOOD);
}

#[test]
fn age_keygen_key_file_with_several_identities_decrypts_with_any_and_encrypts_to_first() {
    let env = TestEnv::new();
    let first = env.path("first.key");
    let second = env.path("second.key");
    age_keygen(&first);
    age_keygen(&second);
    // Both files, comments included, one after the other: age-keygen's own format.
    let mut both = std::fs::read(&first).unwrap();
    both.extend(std::fs::read(&second).unwrap());
    std::fs::write(env.key(), &both).unwrap();
    chmod(&env.key(), 0o600);

    // Encryption uses the first identity only.
    env.save(GOOD).success();
    let content = newest_content(&env.db());
    assert_eq!(age_decrypt(&env, &first, &content), GOOD.as_bytes());
    assert!(
        !env.age_opens(&second, &content),
        "encrypted to the second identity too"
    );

    // Decryption tries them all: a row for the second identity is readable.
    let other = config_for("/srv/second.db");
    insert_row(
        &env.db(),
        &age_encrypt(&env, &recipient_of(&second), other.as_bytes()),
        "yml",
        "x",
    );
    assert_eq!(show(&env, 0), other);
    assert_eq!(show(&env, 1), GOOD);
}

// ---------------------------------------------------------------------------------------------
// 2. generation order

#[test]
fn saves_within_one_second_come_back_newest_first() {
    let env = inited();
    let configs: Vec<String> = ["/srv/a.db", "/srv/b.db", "/srv/c.db"]
        .iter()
        .map(|p| config_for(p))
        .collect();
    for (c, d) in configs.iter().zip(["A", "B", "C"]) {
        save_file(&env, "c.yml", c, &["--description", d]).success();
    }
    // Make the three saves (and init's) share one second, whatever the clock did.
    let conn = Connection::open(env.db()).unwrap();
    conn.execute(
        "UPDATE app_config SET created_at = '2026-11-25T17:54:49Z'",
        [],
    )
    .unwrap();
    drop(conn);

    let rows = list(&env);
    let descriptions: Vec<&str> = rows
        .iter()
        .map(|r| r["description"].as_str().unwrap())
        .collect();
    assert_eq!(descriptions[..3], ["C", "B", "A"]);
    let generations: Vec<u64> = rows
        .iter()
        .map(|r| r["generation"].as_u64().unwrap())
        .collect();
    assert_eq!(generations, [0, 1, 2, 3]);
    let ids: Vec<i64> = rows.iter().map(|r| r["id"].as_i64().unwrap()).collect();
    assert!(
        ids.windows(2).all(|w| w[0] > w[1]),
        "ids not newest first: {ids:?}"
    );

    assert_eq!(show(&env, 0), configs[2]);
    assert_eq!(show(&env, 1), configs[1]);
    assert_eq!(show(&env, 2), configs[0]);
}

#[test]
fn rollback_makes_an_old_generation_the_newest_in_a_new_row() {
    let env = inited();
    let a = config_for("/srv/a.db");
    let b = config_for("/srv/b.db");
    save_file(&env, "c.yml", &a, &[]).success();
    save_file(&env, "c.yml", &b, &[]).success();
    let init_config = show(&env, 2);
    assert_eq!(list(&env).len(), 3);

    run(&env, &["config", "rollback", "2"])
        .success()
        .stderr_has("generation 2");

    assert_eq!(show(&env, 0), init_config);
    assert_eq!(show(&env, 1), b);
    assert_eq!(show(&env, 2), a);
    assert_eq!(show(&env, 3), init_config);
    let rows = list(&env);
    assert_eq!(rows.len(), 4, "rollback must add a row");
    assert!(
        rows[0]["description"]
            .as_str()
            .unwrap()
            .contains("rollback"),
        "{:?}",
        rows[0]
    );
}

#[test]
fn fractional_second_created_at_values_still_order_newest_first() {
    let env = inited();
    // Inserted in an order unlike their times, so the ids cannot give the answer.
    let times = [
        ("/srv/t1.db", "2026-01-01T00:00:01.250Z"),
        ("/srv/t0.db", "2026-01-01T00:00:00.900Z"),
        ("/srv/t2.db", "2026-01-01T00:00:02Z"),
        ("/srv/t1b.db", "2026-01-01T00:00:01.5Z"),
    ];
    let recipient = recipient_of(&env.key());
    let mut yaml_at = Vec::new();
    for (db, at) in times {
        let yaml = config_for(db);
        let id = insert_row(
            &env.db(),
            &age_encrypt(&env, &recipient, yaml.as_bytes()),
            "yml",
            at,
        );
        set_created_at(&env.db(), id, at);
        yaml_at.push((at, yaml));
    }
    // init's own row is from today, so newer than all of these.
    let mut expected = yaml_at.clone();
    expected.sort_by(|x, y| y.0.cmp(x.0));
    assert_eq!(expected[0].0, "2026-01-01T00:00:02Z");
    assert_eq!(expected[3].0, "2026-01-01T00:00:00.900Z");

    let rows = list(&env);
    let created: Vec<&str> = rows[1..]
        .iter()
        .map(|r| r["created_at"].as_str().unwrap())
        .collect();
    assert_eq!(
        created,
        [
            "2026-01-01T00:00:02Z",
            "2026-01-01T00:00:01.5Z",
            "2026-01-01T00:00:01.250Z",
            "2026-01-01T00:00:00.900Z"
        ]
    );
    for (i, (_, yaml)) in expected.iter().enumerate() {
        assert_eq!(&show(&env, i as u32 + 1), yaml, "generation {}", i + 1);
    }
}

// ---------------------------------------------------------------------------------------------
// 3. validation rules: each one exit 2, names its key, database untouched

#[test]
fn rejects_empty_dbs() {
    assert_rejected("dbs: []\n", "dbs", "no database to replicate", &[]);
}

#[test]
fn rejects_db_without_path() {
    let yaml = "dbs:\n  - replica:\n      type: file\n      path: /backups/app\n";
    assert_rejected(yaml, "dbs[0].path", "is missing", &[]);
}

#[test]
fn rejects_db_with_both_path_and_dir() {
    let yaml = "dbs:\n  - path: /data/app.db\n    dir: /data\n    pattern: \"*.db\"\n    replica:\n      type: file\n      path: /backups/app\n";
    assert_rejected(yaml, "dbs[0]", "has both `path` and `dir`", &[]);
}

#[test]
fn rejects_dir_without_pattern() {
    let yaml = "dbs:\n  - dir: /data\n    replica:\n      type: file\n      path: /backups/app\n";
    assert_rejected(yaml, "dbs[0].pattern", "is missing", &[]);
}

#[test]
fn rejects_db_without_replica() {
    assert_rejected(
        "dbs:\n  - path: /data/app.db\n",
        "dbs[0].replica",
        "is missing",
        &[],
    );
}

#[test]
fn rejects_db_with_both_replica_and_replicas() {
    let yaml = "dbs:\n  - path: /data/app.db\n    replica:\n      type: file\n      path: /backups/a\n    replicas:\n      - type: file\n        path: /backups/b\n";
    assert_rejected(yaml, "dbs[0]", "has both `replica` and `replicas`", &[]);
}

#[test]
fn rejects_two_replicas() {
    let yaml = "dbs:\n  - path: /data/app.db\n    replicas:\n      - type: file\n        path: /backups/a\n      - type: file\n        path: /backups/b\n";
    assert_rejected(yaml, "dbs[0].replicas", "exactly one replica", &[]);
}

#[test]
fn rejects_unknown_replica_type() {
    let yaml =
        "dbs:\n  - path: /data/app.db\n    replica:\n      type: ftp\n      path: /backups/app\n";
    assert_rejected(
        yaml,
        "dbs[0].replica.type",
        "`ftp` is not a replica type",
        &[],
    );
}

#[test]
fn rejects_bare_integer_duration() {
    let yaml = "dbs:\n  - path: /data/app.db\n    replica:\n      type: file\n      path: /backups/app\n      sync-interval: 1\n";
    assert_rejected(yaml, "dbs[0].replica.sync-interval", "nanoseconds", &[]);
}

#[test]
fn rejects_bad_duration_string() {
    let yaml = "dbs:\n  - path: /data/app.db\n    replica:\n      type: file\n      path: /backups/app\n      sync-interval: soon\n";
    assert_rejected(
        yaml,
        "dbs[0].replica.sync-interval",
        "`soon` is not a duration",
        &[],
    );
}

#[test]
fn rejects_invalid_logging_level() {
    let yaml = format!("logging:\n  level: verbose\n{GOOD}");
    assert_rejected(&yaml, "logging.level", "`verbose` is not a level", &[]);
}

#[test]
fn rejects_invalid_logging_type() {
    let yaml = format!("logging:\n  type: xml\n{GOOD}");
    assert_rejected(&yaml, "logging.type", "`xml` is not a log format", &[]);
}

#[test]
fn rejects_dollar_name_env_var_in_a_value() {
    let yaml =
        "dbs:\n  - path: $HOME/app.db\n    replica:\n      type: file\n      path: /backups/app\n";
    assert_rejected(yaml, "dbs[0].path", "environment-variable placeholder", &[]);
}

#[test]
fn rejects_braced_env_var_in_a_value() {
    let yaml = "dbs:\n  - path: /data/app.db\n    replica:\n      type: s3\n      bucket: backups\n      secret-access-key: \"${AWS_SECRET}\"\n";
    assert_rejected(
        yaml,
        "dbs[0].replica.secret-access-key",
        "environment-variable placeholder",
        &[],
    );
}

#[test]
fn accepts_a_dollar_that_is_part_of_a_secret() {
    let env = inited();
    // litestream runs with -no-expand-env: this is the password, as written.
    let yaml = "dbs:\n  - path: /data/app.db\n    replica:\n      url: sftp://backup@files.example.com/srv\n      password: \"pa$$w0rd$ecret\"\n";
    save_file(&env, "c.yml", yaml, &[]).success();
    assert_eq!(show(&env, 0), yaml);
}

#[test]
fn accepts_dollar_sign_inside_a_comment() {
    let env = inited();
    let yaml = format!("# costs $5 a month; was ${{OLD_PATH}}\n{GOOD}");
    save_file(&env, "c.yml", &yaml, &[]).success();
    assert_eq!(show(&env, 0), yaml);
}

#[test]
fn rejects_exec() {
    let yaml = format!("exec: myapp --serve\n{GOOD}");
    assert_rejected(&yaml, "exec", "rip-litestream run -- APP", &[]);
}

#[test]
fn rejects_mcp_addr() {
    let yaml = format!("mcp-addr: \":3001\"\n{GOOD}");
    assert_rejected(&yaml, "mcp-addr", "is not supported", &[]);
}

#[test]
fn rejects_text_that_is_not_yaml() {
    assert_rejected(
        "dbs: [{path: /data/app.db, replica: {type: file\n",
        "(root)",
        "is not valid YAML",
        &[],
    );
}

#[test]
fn unknown_key_is_a_warning_by_default() {
    let env = inited();
    let yaml = format!("{GOOD}    colour: red\n");
    save_file(&env, "c.yml", &yaml, &[])
        .success()
        .stderr_has("unknown key `colour`")
        .stderr_has("dbs[0].colour");
    assert_eq!(show(&env, 0), yaml);
}

#[test]
fn unknown_key_is_an_error_with_strict() {
    let yaml = format!("{GOOD}    colour: red\n");
    assert_rejected(
        &yaml,
        "dbs[0].colour",
        "unknown key `colour`",
        &["--strict"],
    );
}

// ---------------------------------------------------------------------------------------------
// 4. bad input: exit 2, a message saying what to do, the database untouched

#[test]
fn missing_key_file_is_bad_input() {
    let env = inited();
    let gone = env.path("nope.key");
    let file = env.path("good.yml");
    std::fs::write(&file, GOOD).unwrap();
    for args in [
        vec!["--age-key", s(&gone), "config", "show"],
        vec!["--age-key", s(&gone), "config", "save", s(&file)],
    ] {
        assert_bad_input(
            &env,
            &env.db(),
            &args,
            &["does not exist", "keygen --output"],
        );
        assert!(!gone.exists(), "a key file was created");
    }
}

#[test]
fn key_path_that_is_a_directory_is_bad_input() {
    let env = inited();
    let dir = env.path("keydir");
    std::fs::create_dir(&dir).unwrap();
    let file = env.path("good.yml");
    std::fs::write(&file, GOOD).unwrap();
    for args in [
        vec!["--age-key", s(&dir), "config", "show"],
        vec!["--age-key", s(&dir), "config", "save", s(&file)],
    ] {
        assert_bad_input(&env, &env.db(), &args, &["is a directory", "--age-key"]);
    }
}

#[test]
fn garbled_key_file_is_bad_input() {
    let env = inited();
    let garbled = env.path("garbled.key");
    std::fs::write(
        &garbled,
        "# created: today\nAGE-SECRET-KEY-1NOTREALLYAKEY\n",
    )
    .unwrap();
    chmod(&garbled, 0o600);
    let file = env.path("good.yml");
    std::fs::write(&file, GOOD).unwrap();
    for args in [
        vec!["--age-key", s(&garbled), "config", "show"],
        vec!["--age-key", s(&garbled), "config", "save", s(&file)],
    ] {
        assert_bad_input(&env, &env.db(), &args, &["line 2", "AGE-SECRET-KEY-1"]);
    }
}

#[test]
fn key_file_with_only_comments_is_bad_input() {
    let env = inited();
    let empty = env.path("comments.key");
    std::fs::write(&empty, "# created: today\n\n# public key: age1xyz\n").unwrap();
    chmod(&empty, 0o600);
    let file = env.path("good.yml");
    std::fs::write(&file, GOOD).unwrap();
    for args in [
        vec!["--age-key", s(&empty), "config", "show"],
        vec!["--age-key", s(&empty), "config", "save", s(&file)],
    ] {
        assert_bad_input(&env, &env.db(), &args, &["holds no identity", "age-keygen"]);
    }
}

#[test]
fn wrong_key_on_show_is_bad_input() {
    let env = inited();
    let other = env.path("other.key");
    age_keygen(&other);
    assert_bad_input(
        &env,
        &env.db(),
        &["--age-key", s(&other), "config", "show"],
        &["cannot decrypt", "pass the key it was saved with"],
    );
}

#[test]
fn corrupt_ciphertext_is_bad_input_not_a_wrong_key() {
    let env = inited();
    let mut content = newest_content(&env.db());
    *content.last_mut().unwrap() ^= 0x01; // inside the authenticated payload
    let conn = Connection::open(env.db()).unwrap();
    conn.execute(
        "UPDATE app_config SET content = ? WHERE id = (SELECT max(id) FROM app_config)",
        [&content],
    )
    .unwrap();
    drop(conn);

    let r = assert_bad_input(
        &env,
        &env.db(),
        &["config", "show"],
        &["is corrupt", "config rollback"],
    );
    assert!(
        !r.stderr().contains("cannot decrypt"),
        "reported as a wrong key"
    );
    assert_eq!(r.stdout(), "", "partial plaintext printed");
}

#[test]
fn db_that_is_not_sqlite_is_bad_input_for_show_and_save() {
    let env = inited();
    let text = env.path("notes.txt");
    std::fs::write(&text, "just some notes, not a database\n").unwrap();
    let file = env.path("good.yml");
    std::fs::write(&file, GOOD).unwrap();
    for args in [
        vec!["--db", s(&text), "config", "show"],
        vec!["--db", s(&text), "config", "save", s(&file)],
    ] {
        assert_bad_input(&env, &text, &args, &["is not a SQLite database", "--db"]);
    }
}

#[test]
fn missing_db_is_bad_input_for_show() {
    let env = inited();
    let gone = env.path("gone.db");
    assert_bad_input(
        &env,
        &gone,
        &["--db", s(&gone), "config", "show"],
        &["does not exist", "init --replica"],
    );
}

#[test]
fn unknown_scope_is_bad_input() {
    let env = inited();
    assert_bad_input(
        &env,
        &env.db(),
        &["--scope", "nope", "config", "show"],
        &["no config saved for scope `nope`", "config save"],
    );
}

#[test]
fn generation_out_of_range_is_bad_input() {
    let env = inited();
    assert_bad_input(
        &env,
        &env.db(),
        &["config", "show", "-g", "5"],
        &["no generation 5", "pick 0..=0", "config list"],
    );
}

#[test]
fn stored_row_with_toml_format_is_bad_input() {
    let env = inited();
    let content = age_encrypt(
        &env,
        &recipient_of(&env.key()),
        b"[server]\naddr = \":8080\"\n",
    );
    insert_row(&env.db(), &content, "toml", "the app's own config");
    assert_bad_input(
        &env,
        &env.db(),
        &["config", "show"],
        &[
            "format `toml`",
            "`yml` or `yaml`",
            "UPDATE app_config SET format = 'yml' WHERE id",
        ],
    );
}

#[test]
fn row_inserted_without_format_is_refused_saying_what_to_set() {
    let env = inited();
    let content = age_encrypt(&env, &recipient_of(&env.key()), GOOD.as_bytes());
    let conn = Connection::open(env.db()).unwrap();
    conn.execute(
        "INSERT INTO app_config (scope, content) VALUES ('litestream', ?)",
        [&content],
    )
    .unwrap();
    let id = conn.last_insert_rowid();
    drop(conn);
    assert_bad_input(
        &env,
        &env.db(),
        &["config", "show"],
        &[
            "format `toml`",
            "the table's default",
            &format!("UPDATE app_config SET format = 'yml' WHERE id = {id}"),
        ],
    );
    // Set as the message says, the row is read.
    let conn = Connection::open(env.db()).unwrap();
    conn.execute("UPDATE app_config SET format = 'yml' WHERE id = ?", [id])
        .unwrap();
    drop(conn);
    assert_eq!(show(&env, 0), GOOD);
}

#[test]
fn content_stored_as_text_is_read_as_its_bytes() {
    let env = inited();
    // A binary age file bound as TEXT (a driver binding a string), and an armored one pasted
    // with plain SQL: both are the config.
    let binary = age_encrypt(&env, &recipient_of(&env.key()), b"# as text\n");
    let conn = Connection::open(env.db()).unwrap();
    conn.execute(
        "INSERT INTO app_config (scope, content, format) VALUES ('litestream', CAST(? AS TEXT), 'yml')",
        [&binary],
    )
    .unwrap();
    let kind: String = conn
        .query_row(
            "SELECT typeof(content) FROM app_config ORDER BY id DESC LIMIT 1",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(kind, "text");
    drop(conn);
    assert_eq!(show(&env, 0), "# as text\n");

    let input = env.path("plain.in");
    std::fs::write(&input, GOOD).unwrap();
    let armored = tool("age", &["-a", "-r", &recipient_of(&env.key()), s(&input)]);
    let sql = format!(
        "INSERT INTO app_config (scope, content, format) VALUES ('litestream', '{}', 'yml');",
        String::from_utf8(armored).unwrap()
    );
    Connection::open(env.db())
        .unwrap()
        .execute_batch(&sql)
        .unwrap();
    assert_eq!(show(&env, 0), GOOD);
    run(&env, &["config", "check"]).success();
    assert_eq!(
        list(&env)[0]["recipient"],
        recipient_of(&env.key()).as_str()
    );
}

#[test]
fn content_of_another_type_is_bad_input_naming_the_row() {
    let env = inited();
    let conn = Connection::open(env.db()).unwrap();
    conn.execute(
        "INSERT INTO app_config (scope, content, format) VALUES ('litestream', 42, 'yml')",
        [],
    )
    .unwrap();
    let id = conn.last_insert_rowid();
    drop(conn);
    assert_bad_input(
        &env,
        &env.db(),
        &["config", "show"],
        &[&format!("row id {id}"), "an integer", "config save"],
    );
}

#[test]
fn saving_with_toml_format_is_bad_input() {
    let env = inited();
    let file = env.path("good.yml");
    std::fs::write(&file, GOOD).unwrap();
    assert_bad_input(
        &env,
        &env.db(),
        &["config", "save", s(&file), "--format", "toml"],
        &["format `toml`", "use `yml` or `yaml`"],
    );
}

/// The command `env.cmd(args)`, made unable to bypass file permissions: as root it runs under
/// `setpriv` without CAP_DAC_OVERRIDE (root ignores a 0444 mode otherwise). None when that is
/// impossible here.
fn without_permission_bypass(env: &TestEnv, args: &[&str]) -> Option<Command> {
    let cmd = env.cmd(args.iter().copied());
    if !nix::unistd::geteuid().is_root() {
        return Some(cmd);
    }
    let setpriv_works = Command::new("setpriv")
        .args([
            "--bounding-set=-dac_override,-dac_read_search",
            "--",
            "true",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !setpriv_works {
        return None;
    }
    let mut w = Command::new("setpriv");
    w.arg("--bounding-set=-dac_override,-dac_read_search")
        .arg("--")
        .arg(cmd.get_program())
        .args(cmd.get_args())
        .stdin(Stdio::null());
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => w.env(k, v),
            None => w.env_remove(k),
        };
    }
    if let Some(dir) = cmd.get_current_dir() {
        w.current_dir(dir);
    }
    Some(w)
}

#[test]
fn read_only_store_is_bad_input_for_save() {
    let env = inited();
    let file = env.path("good.yml");
    std::fs::write(&file, GOOD).unwrap();
    chmod(&env.db(), 0o444);
    let Some(cmd) = without_permission_bypass(&env, &["config", "save", s(&file)]) else {
        eprintln!("SKIPPED: running as root and `setpriv` cannot drop CAP_DAC_OVERRIDE here");
        return;
    };
    let before = snapshot(&env.db());
    let r = run_cmd(cmd);
    r.code_is(2)
        .stderr_has("is read-only")
        .stderr_has("make it writable");
    assert!(
        snapshot(&env.db()) == before,
        "the read-only database changed"
    );
}

#[test]
fn store_in_a_read_only_directory_is_bad_input_for_save() {
    let env = inited();
    let file = env.path("good.yml");
    std::fs::write(&file, GOOD).unwrap();
    let dir = env.path("ro");
    std::fs::create_dir(&dir).unwrap();
    chmod(&dir, 0o555);
    let db: PathBuf = dir.join("new.db");
    let Some(cmd) = without_permission_bypass(&env, &["--db", s(&db), "config", "save", s(&file)])
    else {
        eprintln!("SKIPPED: running as root and `setpriv` cannot drop CAP_DAC_OVERRIDE here");
        return;
    };
    let r = run_cmd(cmd);
    chmod(&dir, 0o755);
    r.code_is(2)
        .stderr_has("is read-only")
        .stderr_has("another --db");
    assert!(
        !db.exists(),
        "a database appeared in the read-only directory"
    );
}

// ---------------------------------------------------------------------------------------------
// 5. key files: keygen and modes

#[test]
fn keygen_writes_a_0600_key_whose_recipient_it_prints_and_never_overwrites() {
    let env = TestEnv::new();
    let key = env.path("new.key");
    let r = run(&env, &["keygen", "--output", s(&key)]);
    r.success();
    assert_eq!(mode_of(&key), 0o600, "key file mode");
    let printed = r.stdout().trim().to_string();
    assert!(
        printed.starts_with("age1"),
        "stdout is not a recipient: {printed:?}"
    );
    assert_eq!(
        printed,
        recipient_of(&key),
        "printed recipient differs from age-keygen -y"
    );

    let before = std::fs::read(&key).unwrap();
    run(&env, &["keygen", "--output", s(&key)])
        .code_is(2)
        .stderr_has("already exists");
    assert_eq!(
        std::fs::read(&key).unwrap(),
        before,
        "the key was overwritten"
    );
    assert_eq!(mode_of(&key), 0o600);
}

#[test]
fn group_readable_key_warns_about_chmod_600_and_still_works() {
    let env = inited();
    chmod(&env.key(), 0o640);
    let r = run(&env, &["config", "show"]);
    r.success().stderr_has("chmod 600").stdout_has("type: file");
    assert_eq!(mode_of(&env.key()), 0o640, "the key's mode was changed");
}

#[test]
fn private_key_gives_no_permission_warning() {
    let env = inited();
    assert_eq!(mode_of(&env.key()), 0o600);
    let r = run(&env, &["config", "show"]);
    r.success();
    assert!(
        !r.stderr().contains("chmod 600"),
        "spurious warning:\n{}",
        r.stderr()
    );
}

// ---------------------------------------------------------------------------------------------
// 6. config check asks the real litestream

#[test]
fn check_reports_litestream_accepting_a_valid_config() {
    let env = inited();
    let r = run(&env, &["config", "check"]);
    r.code_is(0)
        .stdout_has("rip-litestream: valid")
        .stdout_has(&format!("litestream {LITESTREAM_VERSION}: accepted"));
}

#[test]
fn check_reports_litestream_rejecting_a_config_we_accept() {
    let env = inited();
    // What depends on the machine is left to litestream: here a key file that is not there.
    let yaml = "dbs:\n  - path: /data/app.db\n    replica:\n      url: s3://backups/app\n      sse-customer-key-path: /nonexistent/sse.key\n";
    let before = snapshot(&env.db());
    env.save(yaml)
        .code_is(2)
        .stderr_has(&format!(
            "litestream {LITESTREAM_VERSION} rejects this config"
        ))
        .stderr_has("sse-customer-key-path")
        .stderr_has("--no-check");
    assert!(snapshot(&env.db()) == before, "a rejected config was saved");
    save_file(&env, "rejected.yml", yaml, &["--no-check"])
        .success()
        .stderr_has("without asking litestream");
    let r = run(&env, &["config", "check"]);
    r.code_is(2)
        .stdout_has("rip-litestream: valid")
        .stdout_has(&format!("litestream {LITESTREAM_VERSION}: rejected"))
        .stdout_has("sse-customer-key-path")
        .stderr_has("config save");
}

#[test]
fn check_reports_both_verdicts_on_a_config_saved_around_our_validator() {
    let env = inited();
    // Saved like ripc would: plain SQL + age CLI, no validation on the way in.
    let yaml = format!("logging:\n  type: xml\n{GOOD}");
    let content = age_encrypt(&env, &recipient_of(&env.key()), yaml.as_bytes());
    insert_row(&env.db(), &content, "yml", "x");
    let r = run(&env, &["config", "check"]);
    r.code_is(2)
        .stdout_has("rip-litestream: invalid litestream config")
        .stdout_has("logging.type")
        .stdout_has(&format!("litestream {LITESTREAM_VERSION}: rejected"));
    // An older generation is still checkable on its own.
    run(&env, &["config", "check", "-g", "1"])
        .code_is(0)
        .stdout_has(&format!("litestream {LITESTREAM_VERSION}: accepted"));
}

// ---------------------------------------------------------------------------------------------
// 7. init

#[test]
fn init_creates_a_private_key_and_a_config_that_check_accepts() {
    let env = TestEnv::new();
    assert!(!env.key().exists() && !env.db().exists());
    let r = env.init();
    r.stderr_has("created age key");
    assert_eq!(mode_of(&env.key()), 0o600, "key file mode");
    assert!(env.db().exists());

    let shown = show(&env, 0);
    assert_eq!(r.stdout(), shown, "init prints what it saved");
    assert!(
        shown.contains(s(&env.db())),
        "config does not name the database:\n{shown}"
    );
    assert!(
        shown.contains(s(&env.path("replica"))),
        "config does not name the replica:\n{shown}"
    );
    run(&env, &["config", "check", "--strict"])
        .code_is(0)
        .stdout_has(&format!("litestream {LITESTREAM_VERSION}: accepted"));
}

#[test]
fn init_keeps_an_existing_key() {
    let env = TestEnv::new();
    age_keygen(&env.key());
    let key_before = std::fs::read(env.key()).unwrap();
    let r = env.init();
    assert!(!r.stderr().contains("created age key"), "{}", r.stderr());
    assert_eq!(std::fs::read(env.key()).unwrap(), key_before);
    assert_eq!(
        age_decrypt(&env, &env.key(), &newest_content(&env.db())),
        r.stdout().as_bytes()
    );
}

#[test]
fn second_init_without_force_is_refused_and_writes_nothing() {
    let env = inited();
    let key_before = std::fs::read(env.key()).unwrap();
    let other_replica = env.path("other-replica");
    assert_bad_input(
        &env,
        &env.db(),
        &["init", "--replica", s(&other_replica)],
        &["already has a config", "--force"],
    );
    assert_eq!(
        std::fs::read(env.key()).unwrap(),
        key_before,
        "the key changed"
    );

    run(&env, &["init", "--replica", s(&other_replica), "--force"]).success();
    assert_eq!(list(&env).len(), 2);
    assert!(show(&env, 0).contains(s(&other_replica)));
}

#[test]
fn list_of_an_empty_store_says_so() {
    let env = TestEnv::new();
    run(&env, &["keygen", "--output", s(&env.key())]).success();
    Connection::open(env.db())
        .unwrap()
        .execute_batch(TABLE_SQL)
        .unwrap();
    let r = run(&env, &["config", "list"]);
    r.success()
        .stderr_has("no config saved for scope `litestream`");
    assert_eq!(r.stdout(), "");
}

// ---------------------------------------------------------------------------------------------
// rows, keys and verdicts a hurried operator causes

#[test]
fn saving_with_another_key_is_refused_unless_new_key() {
    let env = inited();
    let production = recipient_of(&env.key());
    let other = env.path("other.key");
    age_keygen(&other);
    let before = snapshot(&env.db());
    let file = env.path("next.yml");
    std::fs::write(&file, config_for("/srv/next.db")).unwrap();
    let with_other = |extra: &[&str]| {
        let mut args = vec!["--age-key", s(&other), "config", "save", s(&file)];
        args.extend_from_slice(extra);
        run(&env, &args)
    };
    with_other(&[])
        .code_is(2)
        .stderr_has("not encrypted to")
        .stderr_has(&recipient_of(&other))
        .stderr_has("--new-key");
    assert!(snapshot(&env.db()) == before, "saved to another key");
    // The production key still reads the newest generation.
    assert!(show(&env, 0).contains("path: "));

    // A rollback encrypting to the other key is the same change.
    let r = run(&env, &["--age-key", s(&other), "config", "rollback", "0"]);
    r.code_is(2);
    assert!(snapshot(&env.db()) == before);

    // --new-key changes keys on purpose; then list tells the generations apart.
    with_other(&["--new-key"]).success();
    let rows = list(&env);
    assert_eq!(
        rows[0]["recipient"],
        Value::Null,
        "production key opens the new row"
    );
    assert_eq!(rows[1]["recipient"], production.as_str());
    let text = run(&env, &["config", "list"]);
    text.success().stdout_has("not decryptable with this key");
    let rows = {
        let r = run(&env, &["--age-key", s(&other), "config", "list", "--json"]);
        r.success();
        r.stdout()
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap())
            .collect::<Vec<_>>()
    };
    assert_eq!(rows[0]["recipient"], recipient_of(&other).as_str());
    assert_eq!(rows[1]["recipient"], Value::Null);
}

#[test]
fn a_key_file_rotated_with_the_new_identity_first_is_a_key_change() {
    let env = inited();
    let new = env.path("new.key");
    age_keygen(&new);
    // New identity first, old one kept for reading: saving encrypts to the new one only.
    let mut ring = std::fs::read(&new).unwrap();
    ring.extend(std::fs::read(env.key()).unwrap());
    let ring_path = env.path("ring.key");
    std::fs::write(&ring_path, ring).unwrap();
    chmod(&ring_path, 0o600);
    let file = env.path("next.yml");
    std::fs::write(&file, config_for("/srv/next.db")).unwrap();
    run(
        &env,
        &["--age-key", s(&ring_path), "config", "save", s(&file)],
    )
    .code_is(2)
    .stderr_has("--new-key");
    // With the old identity first it is no change.
    let mut ring = std::fs::read(env.key()).unwrap();
    ring.extend(std::fs::read(&new).unwrap());
    std::fs::write(&ring_path, ring).unwrap();
    run(
        &env,
        &["--age-key", s(&ring_path), "config", "save", s(&file)],
    )
    .success();
}

#[test]
fn a_row_dated_in_the_future_still_shadows_a_save_and_the_save_says_so() {
    let env = inited();
    let id0 = list(&env)[0]["id"].as_i64().unwrap();
    set_created_at(&env.db(), id0, "2999-01-01T00:00:00Z");
    let r = save_file(&env, "next.yml", &config_for("/srv/next.db"), &[]);
    r.success()
        .stderr_has("NOT the newest")
        .stderr_has("generation 1")
        .stderr_has("dated after now");
    assert!(!r.stderr().contains("as the newest generation"));
    assert_eq!(list(&env)[0]["id"].as_i64().unwrap(), id0);
}

#[test]
fn rollback_to_a_generation_litestream_rejects_is_refused() {
    let env = inited();
    let bad = "dbs:\n  - path: /data/app.db\n    replica:\n      url: s3://backups/app\n      sse-customer-key-path: /nonexistent/sse.key\n";
    save_file(&env, "bad.yml", bad, &["--no-check"]).success();
    env.save(&config_for("/srv/good.db")).success();
    let before = snapshot(&env.db());
    run(&env, &["config", "rollback", "1"])
        .code_is(2)
        .stderr_has("rejects this config")
        .stderr_has("sse-customer-key-path");
    assert!(snapshot(&env.db()) == before);
    run(&env, &["config", "rollback", "2"]).success();
}

#[test]
fn save_without_a_litestream_binary_says_to_pass_no_check() {
    let env = inited();
    let file = env.path("next.yml");
    std::fs::write(&file, config_for("/srv/next.db")).unwrap();
    let before = snapshot(&env.db());
    let mut cmd = env.cmd(["config", "save", s(&file)]);
    cmd.env("LITESTREAM_BIN", env.path("no-such-litestream"))
        .env("PATH", "/nonexistent");
    let r = crate::support::run_cmd(cmd);
    r.code_is(2).stderr_has("--no-check");
    assert!(snapshot(&env.db()) == before);
    let mut cmd = env.cmd(["config", "save", "--no-check", s(&file)]);
    cmd.env("LITESTREAM_BIN", env.path("no-such-litestream"))
        .env("PATH", "/nonexistent");
    crate::support::run_cmd(cmd).success();
}
