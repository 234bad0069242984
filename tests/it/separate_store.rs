//! Every command of the README with the config store apart from the databases (`config.db`
//! holding a config for `app.db` and `two.db`), acting on the second database, with global
//! options before and after the subcommand. The data is checked, not only the exit codes: the
//! restored rows equal the source, and no command writes into a database it was not given as
//! the store.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::replication::*;
use crate::support::{run_cmd, snapshot, wait_for, Run, TestEnv};

const LONG: Duration = Duration::from_secs(30);

struct Layout {
    env: TestEnv,
    store: PathBuf,
    two: PathBuf,
}

impl Layout {
    /// `config.db` (store) with `init --database app.db`, then a second database added with
    /// `config save`.
    fn new() -> Self {
        let env = TestEnv::new();
        insert(&env.db(), 0, 20);
        let two = env.path("two.db");
        insert(&two, 100, 130);
        let store = env.path("config.db");
        let layout = Layout { env, store, two };
        let before = snapshot(&layout.env.db());
        layout
            .cmd(&[
                "init",
                "--database",
                s(&layout.env.db()),
                "--replica",
                s(&layout.env.path("replica")),
                "--db",
                s(&layout.store),
            ])
            .success()
            .stdout_has(&format!("path: \"{}\"", layout.env.db().display()));
        assert!(
            snapshot(&layout.env.db()) == before,
            "init wrote into the database it replicates"
        );
        let yaml = format!(
            "dbs:\n  - path: {}\n    replica:\n      type: file\n      path: {}\n  - path: {}\n    replica:\n      type: file\n      path: {}\n",
            layout.env.db().display(),
            layout.env.path("replica").display(),
            layout.two.display(),
            layout.env.path("replica-two").display()
        );
        let file = layout.env.path("both.yml");
        std::fs::write(&file, yaml).unwrap();
        // Global options after the subcommand, as the README allows.
        layout
            .cmd(&["config", "save", s(&file), "--db", s(&layout.store)])
            .success();
        layout
    }

    /// `rip-litestream ARGS` with no RIP_DB: the store is named by the arguments only.
    fn command(&self, args: &[&str]) -> Command {
        let mut c = self.env.cmd(args);
        c.env_remove("RIP_DB");
        c
    }

    fn cmd(&self, args: &[&str]) -> Run {
        run_cmd(self.command(args))
    }
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn no_app_config(db: &Path) -> bool {
    let c = rusqlite::Connection::open(db).unwrap();
    c.query_row(
        "SELECT count(*) FROM sqlite_master WHERE name = 'app_config'",
        [],
        |r| r.get::<_, i64>(0),
    )
    .unwrap()
        == 0
}

#[test]
fn every_readme_command_works_with_the_store_apart_and_a_second_database() {
    let l = Layout::new();
    let store = s(&l.store);
    let two = s(&l.two);
    l.cmd(&["--db", store, "config", "list"])
        .success()
        .stdout_has("yml");
    l.cmd(&["config", "show", "--db", store])
        .success()
        .stdout_has(two);
    l.cmd(&["config", "check", "--db", store])
        .success()
        .stdout_has("litestream 0.5.17: accepted");
    // Generation 1 is init's one-database config: rolling back to it and forward again.
    l.cmd(&["config", "rollback", "1", "--db", store]).success();
    assert!(!l
        .cmd(&["config", "show", "--db", store])
        .stdout()
        .contains(two));
    l.cmd(&["--db", store, "config", "rollback", "1"]).success();
    l.cmd(&["--db", store, "config", "show"])
        .success()
        .stdout_has(two);
    l.cmd(&["doctor", two, "--db", store])
        .success()
        .stdout_has("journal mode: WAL");

    let mut sup = spawn(&l.env, l.command(&["run", "--db", store]));
    wait_for("litestream ready", LONG, || {
        run_stderr(&l.env).contains("litestream ready")
    });
    insert(&l.two, 130, 160);
    // Healthy once litestream holds both databases (an idle one can take it a few seconds).
    wait_for("both databases healthy in the status", LONG, || {
        let r = l.cmd(&["status", "--db", store]);
        let out = r.stdout();
        r.output.status.success() && out.contains(two) && out.contains(s(&l.env.db()))
    });
    // verify names the database; without one it says which there are.
    l.cmd(&["verify", "--db", store])
        .code_is(2)
        .stderr_has("name the database")
        .stderr_has(two);
    l.cmd(&["verify", two, "--db", store])
        .success()
        .stdout_has("ok");
    l.cmd(&["--db", store, "verify", s(&l.env.db())]).success();

    // A follower of the second database, from the same store.
    let copy = l.env.path("follower/two.db");
    std::fs::create_dir_all(copy.parent().unwrap()).unwrap();
    let follow_err = std::fs::File::create(l.env.path("follow.err")).unwrap();
    let mut follower = Background {
        child: l
            .command(&["follow", "-o", s(&copy), two, "--db", store])
            .stdout(std::process::Stdio::null())
            .stderr(follow_err)
            .spawn()
            .unwrap(),
    };
    wait_for("the follower's copy", LONG, || {
        copy.exists() && rows(&copy).len() == 60
    });
    wait_for("the follower ready", LONG, || {
        l.cmd(&["status", "--output", s(&copy), "--db", store])
            .output
            .status
            .success()
    });
    follower.signal("TERM");
    assert_eq!(follower.wait_code(LONG), Some(0));

    sup.signal("TERM");
    assert_eq!(sup.wait_code(LONG), Some(0), "{}", run_stderr(&l.env));

    // restore: the second database, global option after, into a new file.
    let out = l.env.path("restored-two.db");
    l.cmd(&["restore", "-o", s(&out), two, "--db", store])
        .success();
    assert_eq!(rows(&out), rows(&l.two));
    assert!(integrity_ok(&out));
    // Refuses to overwrite the live database it names.
    let before = snapshot(&l.two);
    l.cmd(&["restore", two, "--db", store]).code_is(2);
    assert!(snapshot(&l.two) == before);

    // Only the store holds the config.
    assert!(no_app_config(&l.env.db()), "app.db got an app_config table");
    assert!(no_app_config(&l.two), "two.db got an app_config table");
}

#[test]
fn init_database_must_be_a_file() {
    let env = TestEnv::new();
    let dir = env.path("somedir");
    std::fs::create_dir(&dir).unwrap();
    let mut cmd = env.cmd([
        "init",
        "--database",
        s(&dir),
        "--replica",
        s(&env.path("replica")),
    ]);
    cmd.env("RIP_DB", env.path("config.db"));
    run_cmd(cmd).code_is(2).stderr_has("is a directory");
    assert!(!env.path("config.db").exists());
}

/// `config list | head -1` and friends: the reader went away; the command ends quietly (SIGPIPE,
/// as any Unix tool), never with a panic or a backtrace.
#[test]
fn output_to_a_closed_pipe_ends_quietly() {
    use std::os::unix::process::ExitStatusExt;
    let env = TestEnv::new();
    env.init();
    for args in [
        &["config", "list"][..],
        &["config", "show"],
        &["config", "list", "--json"],
        &["config", "check"],
        &["--help"],
    ] {
        let (read, write) = nix::unistd::pipe().unwrap();
        drop(read);
        let out = env
            .cmd(args)
            .stdout(std::process::Stdio::from(write))
            .stderr(std::process::Stdio::piped())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !stderr.contains("panicked") && !stderr.contains("Broken pipe"),
            "{args:?}: {stderr}"
        );
        assert_eq!(
            out.status.signal(),
            Some(libc_sigpipe()),
            "{args:?}: {:?} {stderr}",
            out.status
        );
    }
}

fn libc_sigpipe() -> i32 {
    nix::sys::signal::Signal::SIGPIPE as i32
}

/// `init --force` with a key file that is not there, over a store of another key: refused
/// before anything is written (no key file, the store byte-identical).
#[test]
fn init_force_without_the_stores_key_writes_nothing() {
    let env = TestEnv::new();
    env.init();
    let before = snapshot(&env.db());
    let missing = env.path("new.key");
    let mut cmd = env.cmd(["init", "--force", "--replica", s(&env.path("replica"))]);
    cmd.env("RIP_AGE_KEY", &missing);
    run_cmd(cmd)
        .code_is(2)
        .stderr_has("encrypted to another key")
        .stderr_has("--age-key");
    assert!(!missing.exists(), "a key file was written");
    assert!(snapshot(&env.db()) == before);
}
