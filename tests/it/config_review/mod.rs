//! Adversarial cases of `config edit`, `config diff` and `config rekey`, as a hurried operator
//! (or a hostile editor) causes them: secrets a diff must not print however they are written,
//! editors that replace, delete, link or keep writing their file, a rekey given the wrong key,
//! a locked store, a writer beside it and a SIGKILL inside its transaction.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::replication::config_yaml;
use crate::support::TestEnv;

mod edit;
mod rekey;

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

fn age_keygen(path: &Path) {
    let out = Command::new("age-keygen")
        .args(["-o", s(path)])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
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
        .map(|(id, content)| (id, env.age_decrypts(key, &content)))
        .collect()
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
