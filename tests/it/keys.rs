//! Key files as age users expect them: accepted exactly when the `age` CLI accepts them, several
//! recipients for what is saved, the key found where systemd puts credentials, and its
//! permission warnings.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::support::{run_cmd, TestEnv};

const GOOD: &str =
    "dbs:\n  - path: /data/app.db\n    replica:\n      type: file\n      path: /backups/app\n";

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// The secret key line of an age-keygen file.
fn secret_line(key: &Path) -> String {
    std::fs::read_to_string(key)
        .unwrap()
        .lines()
        .find(|l| l.starts_with("AGE-SECRET-KEY-1"))
        .unwrap()
        .to_string()
}

fn recipient_of(key: &Path) -> String {
    let out = Command::new("age-keygen")
        .arg("-y")
        .arg(key)
        .output()
        .unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

fn age_keygen(path: &Path) {
    let out = Command::new("age-keygen")
        .arg("-o")
        .arg(path)
        .output()
        .unwrap();
    assert!(out.status.success(), "age-keygen failed");
}

/// The content of the newest row of the store.
fn newest_content(db: &Path) -> Vec<u8> {
    rusqlite::Connection::open(db)
        .unwrap()
        .query_row(
            "SELECT content FROM app_config ORDER BY created_at DESC, id DESC LIMIT 1",
            [],
            |r| r.get(0),
        )
        .unwrap()
}

/// A syntactically valid age plugin identity (bech32, checksum right), for a plugin that is
/// not installed.
const PLUGIN_IDENTITY: &str = "AGE-PLUGIN-YUBIKEY-1QYPQXPQ9QCRSSZG2NXY8KP";

#[test]
fn key_files_are_accepted_exactly_when_the_age_cli_accepts_them() {
    let env = TestEnv::new();
    env.init();
    env.save(GOOD).success();
    let cipher = newest_content(&env.db());
    let key = secret_line(&env.key());
    let other = env.path("other.key");
    age_keygen(&other);
    let other_key = secret_line(&other);
    let public = recipient_of(&env.key());
    // (name, content, how we differ from the age CLI: None = we agree)
    let cases: Vec<(&str, String, Option<&str>)> = vec![
        (
            "with comments",
            format!("# created: x\n# public key: {public}\n{key}\n"),
            None,
        ),
        ("CRLF line ends", format!("# created: x\r\n{key}\r\n"), None),
        ("no final newline", key.clone(), None),
        ("blank lines", format!("\n\n{key}\n\n"), None),
        ("trailing space", format!("{key} \n"), None),
        ("leading tab", format!("\t{key}\n"), None),
        ("indented comment", format!("  # a comment\n{key}\n"), None),
        ("lower-case key", format!("{}\n", key.to_lowercase()), None),
        (
            "two keys, ours second",
            format!("{other_key}\n{key}\n"),
            None,
        ),
        ("empty file", String::new(), None),
        ("comments only", "# created: x\n\n".into(), None),
        ("a public key only", format!("{public}\n"), None),
        ("garbage", "not a key at all\n".into(), None),
        ("byte-order mark", format!("\u{feff}{key}\n"), None),
        (
            "plugin identity first",
            format!("{PLUGIN_IDENTITY}\n{key}\n"),
            None,
        ),
        (
            "plugin identity after ours",
            format!("{key}\n{PLUGIN_IDENTITY}\n"),
            Some("age skips to our key first; we refuse plugin identities outright"),
        ),
    ];
    let mut table = String::new();
    for (i, (name, content, differs)) in cases.iter().enumerate() {
        let file = env.path(&format!("case{i}.key"));
        std::fs::write(&file, content).unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        let age = env.age_opens(&file, &cipher);
        let r = env.run(["--age-key", s(&file), "config", "show"]);
        let ours = r.code() == 0;
        if ours {
            assert_eq!(r.stdout(), GOOD, "{name}: wrong plaintext");
        } else {
            assert_eq!(r.code(), 2, "{name}: not bad input:\n{}", r.stderr());
            assert!(
                r.stderr().contains("age key file"),
                "{name}: unclear message:\n{}",
                r.stderr()
            );
            assert!(
                !r.stderr().contains(&key[16..]),
                "{name}: the key in a message"
            );
        }
        table.push_str(&format!("{name:<28} age={age:<5} ours={ours}\n"));
        match differs {
            None => assert_eq!(ours, age, "{name}: age says {age}, we say {ours}\n{table}"),
            Some(why) => assert!(!ours && age, "{name} ({why}): age {age}, ours {ours}"),
        }
    }
    eprintln!("{table}");
}

#[test]
fn messages_name_the_usual_key_file_mistakes() {
    let env = TestEnv::new();
    env.init();
    let key = secret_line(&env.key());
    for (content, needle) in [
        (format!("{key} \n"), "spaces"),
        (format!(" # x\n{key}\n"), "first column"),
        (format!("{}\n", recipient_of(&env.key())), "public key"),
        (format!("{PLUGIN_IDENTITY}\n"), "plugin"),
        (format!("{}\n", key.to_lowercase()), "upper case"),
    ] {
        std::fs::write(env.key(), content).unwrap();
        env.run(["config", "show"])
            .code_is(2)
            .stderr_has(needle)
            .stderr_has("line 1");
    }
}

#[test]
fn recipients_given_also_open_what_is_saved_and_so_does_the_key_itself() {
    let env = TestEnv::new();
    env.init();
    let offline = env.path("offline.key");
    let second = env.path("second.key");
    age_keygen(&offline);
    age_keygen(&second);
    let file = env.path("good.yml");
    std::fs::write(&file, GOOD).unwrap();
    env.run([
        "config",
        "save",
        s(&file),
        "--recipient",
        &recipient_of(&offline),
    ])
    .success();
    let content = newest_content(&env.db());
    assert!(env.age_opens(&offline, &content), "not to --recipient");
    assert!(env.age_opens(&env.key(), &content), "not to our own key");
    assert!(!env.age_opens(&second, &content));

    // RIP_RECIPIENTS, comma-separated; the store's key check still counts it as ours.
    let mut cmd = env.cmd(["config", "save", s(&file)]);
    cmd.env(
        "RIP_RECIPIENTS",
        format!("{}, {},", recipient_of(&offline), recipient_of(&second)),
    );
    run_cmd(cmd).success();
    let content = newest_content(&env.db());
    for key in [&offline, &second, &env.key()] {
        assert!(
            env.age_opens(key, &content),
            "{} cannot open it",
            key.display()
        );
    }
    env.run(["config", "show"])
        .success()
        .stdout_has("/data/app.db");
    let mut cmd = env.cmd(["config", "save", s(&file)]);
    cmd.env("RIP_RECIPIENTS", "");
    run_cmd(cmd).success();
    let content = newest_content(&env.db());
    assert!(env.age_opens(&env.key(), &content));
    assert!(
        !env.age_opens(&offline, &content),
        "an empty RIP_RECIPIENTS kept the old ones"
    );

    // A secret key or garbage as a recipient: bad input, nothing saved.
    let rows = |env: &TestEnv| {
        env.run(["config", "list", "--json"])
            .stdout()
            .lines()
            .count()
    };
    let before = rows(&env);
    env.run([
        "config",
        "save",
        s(&file),
        "--recipient",
        &secret_line(&offline),
    ])
    .code_is(2)
    .stderr_has("age-keygen -y");
    env.run(["config", "save", s(&file), "--recipient", "age1nope"])
        .code_is(2)
        .stderr_has("age1...");
    assert_eq!(rows(&env), before);
}

#[test]
fn encrypt_to_all_identities_opens_with_each_of_the_key_files_identities() {
    let env = TestEnv::new();
    let first = env.path("first.key");
    let second = env.path("second.key");
    age_keygen(&first);
    age_keygen(&second);
    let mut both = std::fs::read(&first).unwrap();
    both.extend(std::fs::read(&second).unwrap());
    std::fs::write(env.key(), &both).unwrap();
    std::fs::set_permissions(env.key(), std::fs::Permissions::from_mode(0o600)).unwrap();
    env.save(GOOD).success();
    assert!(!env.age_opens(&second, &newest_content(&env.db())));
    let file = env.path("good.yml");
    std::fs::write(&file, GOOD).unwrap();
    env.run(["--encrypt-to-all-identities", "config", "save", s(&file)])
        .success();
    let content = newest_content(&env.db());
    assert!(env.age_opens(&first, &content));
    assert!(env.age_opens(&second, &content));
}

#[test]
fn the_key_comes_from_rip_age_key_file_or_the_systemd_credentials_directory() {
    let env = TestEnv::new();
    env.init();
    // RIP_AGE_KEY_FILE alone.
    let mut cmd = env.cmd(["config", "show"]);
    cmd.env_remove("RIP_AGE_KEY")
        .env("RIP_AGE_KEY_FILE", env.key());
    run_cmd(cmd).success().stdout_has("dbs:");
    // Both, agreeing: fine; disagreeing: bad input naming both.
    let mut cmd = env.cmd(["config", "show"]);
    cmd.env("RIP_AGE_KEY_FILE", env.key());
    run_cmd(cmd).success();
    let mut cmd = env.cmd(["config", "show"]);
    cmd.env("RIP_AGE_KEY_FILE", env.path("other.key"));
    run_cmd(cmd)
        .code_is(2)
        .stderr_has("RIP_AGE_KEY_FILE")
        .stderr_has("set only one");
    // systemd's LoadCredential=age.key:...: $CREDENTIALS_DIRECTORY/age.key.
    let creds = env.path("creds");
    std::fs::create_dir(&creds).unwrap();
    std::fs::copy(env.key(), creds.join("age.key")).unwrap();
    let mut cmd = env.cmd(["config", "show"]);
    cmd.env_remove("RIP_AGE_KEY")
        .env("CREDENTIALS_DIRECTORY", &creds);
    run_cmd(cmd).success().stdout_has("dbs:");
    // A credentials directory without age.key: the message names every way to give a key.
    let mut cmd = env.cmd(["config", "show"]);
    cmd.env_remove("RIP_AGE_KEY")
        .env("CREDENTIALS_DIRECTORY", env.path("run"));
    run_cmd(cmd)
        .code_is(2)
        .stderr_has("--age-key")
        .stderr_has("RIP_AGE_KEY_FILE")
        .stderr_has("LoadCredential");
}

#[test]
fn a_world_readable_key_warns_loudly_and_a_group_readable_one_gently() {
    let env = TestEnv::new();
    env.init();
    std::fs::set_permissions(env.key(), std::fs::Permissions::from_mode(0o644)).unwrap();
    env.run(["config", "show"])
        .success()
        .stderr_has("every user")
        .stderr_has("chmod 600");
    std::fs::set_permissions(env.key(), std::fs::Permissions::from_mode(0o640)).unwrap();
    let r = env.run(["config", "show"]);
    r.success().stderr_has("its group");
    assert!(!r.stderr().contains("every user"), "{}", r.stderr());
}

#[test]
fn a_daemon_warns_about_a_group_readable_key_once_however_often_it_reads_it() {
    use crate::replication::{config_yaml, run_stderr, save_config, spawn};
    let env = TestEnv::new();
    save_config(&env, &config_yaml(&env, "", ""));
    // Kubernetes' fsGroup: the secret is 0440 and group-owned by the pod's group.
    std::fs::set_permissions(env.key(), std::fs::Permissions::from_mode(0o640)).unwrap();
    let mut sup = spawn(&env, env.cmd(["run"]));
    let unchanged = |env: &TestEnv| run_stderr(env).matches("config unchanged").count();
    crate::support::wait_for("ready", Duration::from_secs(30), || {
        env.run(["status"]).code() == 0
    });
    for n in 1..=2 {
        sup.signal("HUP"); // each reload reads the key again
        crate::support::wait_for("a reload", Duration::from_secs(30), || unchanged(&env) >= n);
    }
    sup.signal("TERM");
    assert_eq!(sup.wait_code(Duration::from_secs(30)), Some(0));
    let said = run_stderr(&env).matches("readable by its group").count();
    assert_eq!(said, 1, "{}", run_stderr(&env));
}

/// A rekey keeps an offline recovery key a recipient when it is given again: every generation
/// opens with the new key and with `--recipient`, none with the old key.
#[test]
fn a_rekey_with_a_recipient_encrypts_every_generation_to_both() {
    let env = TestEnv::new();
    env.init();
    let file = env.path("good.yml");
    std::fs::write(&file, GOOD).unwrap();
    env.run(["config", "save", s(&file)]).success();
    let offline = env.path("offline.key");
    let new_key = env.path("new.key");
    age_keygen(&offline);
    age_keygen(&new_key);
    env.run([
        "config",
        "rekey",
        "--new-key",
        s(&new_key),
        "--recipient",
        &recipient_of(&offline),
    ])
    .success();
    let contents: Vec<Vec<u8>> = rusqlite::Connection::open(env.db())
        .unwrap()
        .prepare("SELECT content FROM app_config")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(contents.len(), 2);
    for content in &contents {
        assert!(env.age_opens(&new_key, content), "not to the new key");
        assert!(env.age_opens(&offline, content), "not to --recipient");
        assert!(!env.age_opens(&env.key(), content), "still to the old key");
    }
}
