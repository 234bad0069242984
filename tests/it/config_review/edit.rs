//! `config edit` against editors that link, delete, rename, fork away or get SIGQUIT, runtime
//! bases that are not private, no editor at all, two edits at once and a rekey meanwhile.

use super::*;

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
