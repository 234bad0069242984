//! Adversarial cases of `config edit`, `config diff` and `config rekey`, as a hurried operator
//! (or a hostile editor) causes them: secrets a diff must not print however they are written,
//! editors that replace, delete, link or keep writing their file, a rekey given the wrong key,
//! a locked store, a writer beside it and a SIGKILL inside its transaction.

use std::path::Path;
use std::process::Command;

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
