//! The command line as an operator's scripts see it: `--version`, `completions`, `man` and the
//! exit codes of `status` (its `--json` too). `cli_json` has `--json` of the other commands.

use std::path::Path;
use std::process::{Command, Stdio};

use serde_json::Value;

use crate::replication::*;
use crate::support::{litestream, run_cmd, Run, TestEnv};

const SUBCOMMANDS: [&str; 11] = [
    "keygen",
    "init",
    "config",
    "run",
    "restore",
    "verify",
    "status",
    "doctor",
    "follow",
    "completions",
    "man",
];

pub fn s(p: &Path) -> &str {
    p.to_str().expect("test paths are UTF-8")
}

/// The one JSON object a `--json` command printed: stdout must be exactly one line of JSON.
pub fn json_of(r: &Run) -> Value {
    let out = r.stdout();
    assert_eq!(
        out.lines().count(),
        1,
        "stdout is not one line:\n{out}\nstderr:\n{}",
        r.stderr()
    );
    serde_json::from_str(out.trim())
        .unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{out}\nstderr:\n{}", r.stderr()))
}

/// An error that ended a `--json` command: its exit code, and the same on stdout as JSON.
pub fn json_error(r: &Run, code: i32) -> String {
    r.code_is(code);
    let v = json_of(r);
    assert_eq!(v["exit_code"], code, "{v}");
    let message = v["error"].as_str().expect("an error message").to_string();
    assert!(r.stderr().contains(&message), "stderr lacks {message:?}");
    message
}

// ---------------------------------------------------------------------------------------------
// --version

#[test]
fn version_names_ours_and_the_litestream_found() {
    let env = TestEnv::new();
    for flag in ["--version", "-V"] {
        let r = env.run([flag]);
        r.success();
        let out = r.stdout();
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(
            lines,
            [
                format!("rip-litestream {}", env!("CARGO_PKG_VERSION")),
                format!("litestream 0.5.17 ({})", litestream().display())
            ],
            "{flag}"
        );
    }
    // A LITESTREAM_BIN that is missing, or is not litestream: said, and still exit 0.
    let fake = env.path("not-litestream");
    std::fs::write(&fake, "#!/bin/sh\necho hello\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    for (bin, says) in [
        (env.path("nowhere/litestream"), "does not exist"),
        (fake, "did not report a version"),
    ] {
        let mut cmd = env.cmd(["--version"]);
        cmd.env("LITESTREAM_BIN", &bin);
        let r = run_cmd(cmd);
        r.success()
            .stdout_has(&format!("rip-litestream {}\n", env!("CARGO_PKG_VERSION")))
            .stdout_has("litestream: unusable (")
            .stdout_has(says);
    }
}

// ---------------------------------------------------------------------------------------------
// completions and man

#[test]
fn bash_completion_is_valid_bash_and_completes_the_subcommands() {
    let env = TestEnv::new();
    let r = env.run(["completions", "bash"]);
    r.success();
    let script = env.path("rip-litestream.bash");
    std::fs::write(&script, r.stdout()).unwrap();
    let syntax = Command::new("bash")
        .arg("-n")
        .arg(&script)
        .output()
        .unwrap();
    assert!(
        syntax.status.success(),
        "bash -n: {}",
        String::from_utf8_lossy(&syntax.stderr)
    );
    for name in SUBCOMMANDS {
        assert!(
            r.stdout().contains(name),
            "no {name} in the bash completion"
        );
    }
    // What a user's Tab gets: the subcommands starting with the word typed so far, and the
    // config subcommands after `config`.
    let complete = |words: &str| {
        let program = format!(
            "source {}; COMP_WORDS=({words}); COMP_CWORD=$((${{#COMP_WORDS[@]}} - 1)); \
             COMP_LINE=\"${{COMP_WORDS[*]}}\"; COMP_POINT=${{#COMP_LINE}}; \
             _rip__litestream rip-litestream \"${{COMP_WORDS[COMP_CWORD]}}\" \
             \"${{COMP_WORDS[COMP_CWORD-1]}}\"; printf '%s\\n' \"${{COMPREPLY[@]}}\"",
            script.display()
        );
        let out = Command::new("bash")
            .arg("-c")
            .arg(program)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut words: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_owned)
            .collect();
        words.sort();
        words
    };
    assert_eq!(complete("rip-litestream co"), ["completions", "config"]);
    let config = complete("rip-litestream config ''");
    for sub in [
        "save", "show", "list", "check", "rollback", "edit", "diff", "rekey",
    ] {
        assert!(config.contains(&sub.to_string()), "{sub} not in {config:?}");
    }
    assert!(complete("rip-litestream status --j").contains(&"--json".to_string()));
}

#[test]
fn completions_for_every_shell_and_a_refused_one() {
    let env = TestEnv::new();
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let r = env.run(["completions", shell]);
        r.success();
        assert!(r.stdout().contains("rip-litestream"), "{shell}");
        assert!(
            r.stdout().contains("rollback"),
            "{shell}: no config rollback"
        );
    }
    let r = env.run(["completions", "tcsh"]);
    r.code_is(2).stderr_has("possible values");
    assert!(r.stdout().is_empty());
}

/// The page rendered as a reader sees it (`man -l`, else groff), or `None` when neither is
/// installed (scripts/install-deps.sh installs them as optional tools).
fn rendered(page: &Path) -> Option<String> {
    let man = Command::new("man")
        .arg("-l")
        .arg(page)
        .env("MANPAGER", "cat")
        .env("MANWIDTH", "100")
        .env("LC_ALL", "C.UTF-8")
        .output();
    if let Some(out) = man
        .ok()
        .filter(|o| o.status.success() && !o.stdout.is_empty())
    {
        return Some(String::from_utf8_lossy(&out.stdout).into_owned());
    }
    let groff = Command::new("groff")
        .args(["-man", "-Tutf8"])
        .arg(page)
        .output()
        .ok()?;
    assert!(groff.status.success(), "groff failed on {page:?}");
    Some(String::from_utf8_lossy(&groff.stdout).into_owned())
}

#[test]
fn man_page_renders_and_names_every_subcommand() {
    let env = TestEnv::new();
    let r = env.run(["man"]);
    r.success();
    let roff = r.stdout();
    assert!(
        roff.lines().any(|l| l.starts_with(".TH rip-litestream 1")),
        "no .TH line:\n{roff}"
    );
    let page = env.path("rip-litestream.1");
    std::fs::write(&page, &roff).unwrap();
    let Some(text) = rendered(&page) else {
        println!(
            "SKIPPED: man page rendering (neither man nor groff installed); roff checked only"
        );
        for name in SUBCOMMANDS {
            assert!(roff.contains(name), "no {name} in the man page");
        }
        return;
    };
    for section in ["NAME", "SYNOPSIS", "OPTIONS", "SUBCOMMANDS"] {
        assert!(text.contains(section), "no {section}:\n{text}");
    }
    for name in SUBCOMMANDS {
        assert!(
            text.contains(&format!("rip-litestream-{name}(1)")),
            "no {name} in the rendered page:\n{text}"
        );
    }
}

#[test]
fn man_output_writes_a_page_per_command_and_touches_nothing_else() {
    let env = TestEnv::new();
    let dir = env.path("man1");
    std::fs::create_dir_all(&dir).unwrap();
    let other = dir.join("litestream.1");
    std::fs::write(&other, "not ours").unwrap();
    let r = env.run(["man", "--output", s(&dir)]);
    r.success();
    assert!(r.stdout().is_empty(), "{}", r.stdout());
    let mut pages = vec!["rip-litestream".to_string()];
    pages.extend(SUBCOMMANDS.iter().map(|n| format!("rip-litestream-{n}")));
    for sub in [
        "save", "show", "list", "check", "rollback", "edit", "diff", "rekey",
    ] {
        pages.push(format!("rip-litestream-config-{sub}"));
    }
    for name in &pages {
        let page = dir.join(format!("{name}.1"));
        let roff = std::fs::read_to_string(&page)
            .unwrap_or_else(|e| panic!("{page:?}: {e}; wrote: {}", r.stderr()));
        assert!(
            roff.lines()
                .any(|l| l.starts_with(&format!(".TH {name} 1"))),
            "{name}"
        );
        r.stderr_has(s(&page));
        if let Some(text) = rendered(&page) {
            assert!(text.contains("SYNOPSIS"), "{name}:\n{text}");
        }
    }
    assert_eq!(std::fs::read(&other).unwrap(), b"not ours");
    let status = std::fs::read_to_string(dir.join("rip-litestream-status.1")).unwrap();
    assert!(
        status.contains("3 nothing runs"),
        "exit codes not in status(1)"
    );
    // Again: the pages are replaced, still one per command; a page that is a symlink is
    // replaced itself, never the file it points to.
    let elsewhere = env.path("precious.txt");
    std::fs::write(&elsewhere, "keep me").unwrap();
    let status_page = dir.join("rip-litestream-status.1");
    std::fs::remove_file(&status_page).unwrap();
    std::os::unix::fs::symlink(&elsewhere, &status_page).unwrap();
    env.run(["man", "-o", s(&dir)]).success();
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), pages.len() + 1);
    assert_eq!(std::fs::read(&elsewhere).unwrap(), b"keep me");
    assert!(!status_page.is_symlink());
    assert!(std::fs::read_to_string(&status_page)
        .unwrap()
        .contains(".TH"));
    // A file where the directory should be: bad input, the file unchanged.
    let r = env.run(["man", "-o", s(&elsewhere)]);
    r.code_is(2).stderr_has("not a directory");
    assert_eq!(std::fs::read(&elsewhere).unwrap(), b"keep me");
}

// ---------------------------------------------------------------------------------------------
// status

#[test]
fn status_exits_3_when_nothing_runs_and_says_what_it_looked_for() {
    let env = TestEnv::new();
    save_config(&env, &config_yaml(&env, "", ""));
    env.run(["status"])
        .code_is(3)
        .stderr_has("no rip-litestream is running");
    let r = env.run(["status", "--json"]);
    r.code_is(3).stderr_has("no rip-litestream is running");
    let v = json_of(&r);
    assert_eq!(v["running"], false, "{v}");
    assert_eq!(v["db"], s(&env.db()), "{v}");
    assert!(v["runtime_dir"].is_string(), "{v}");
    // The follower's copy: named as "output".
    let copy = env.path("copy.db");
    let r = env.run(["status", "--json", "--output", s(&copy)]);
    r.code_is(3);
    let v = json_of(&r);
    assert_eq!(
        v,
        serde_json::json!({"running": false, "healthy": false, "output": s(&copy), "runtime_dir": v["runtime_dir"]})
    );
    // No store named at all: bad input, as JSON too.
    let mut cmd = env.cmd(["status", "--json"]);
    cmd.env_remove("RIP_DB");
    let message = json_error(&run_cmd(cmd), 2);
    assert!(message.contains("--db"), "{message}");
    // The codes are in the help.
    env.run(["status", "--help"])
        .success()
        .stdout_has("3 nothing runs for it");
}
