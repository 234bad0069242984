//! deploy/rip-litestream.service: `systemd-analyze verify`; `systemd-analyze security
//! --offline=true`, which rates the sandbox without systemd running as PID 1; and the unit's
//! system-call filter tried on the real thing: `rip-litestream run` replicating, stopping and
//! restoring on boot under strace with every system call the filter denies failing with EPERM,
//! as `SystemCallErrorNumber=EPERM` makes them fail; the same traces show that nothing needs a
//! socket family, W+X memory or a namespace the unit forbids.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use super::{deploy, have, read, stop_budget};
use crate::replication::*;
use crate::support::TestEnv;

const UNIT: &str = "rip-litestream.service";

/// Every value of `key=` in the unit, comments left out.
fn values<'a>(text: &'a str, key: &str) -> Vec<&'a str> {
    text.lines()
        .filter_map(|l| l.strip_prefix(key)?.strip_prefix('='))
        .map(str::trim)
        .collect()
}

fn one<'a>(text: &'a str, key: &str) -> &'a str {
    match values(text, key)[..] {
        [v] => v,
        ref all => panic!("{key}= set {} times: {all:?}", all.len()),
    }
}

/// The unit with the binaries pointed at this build and the example application, in `dir`.
fn local_unit(dir: &Path) -> PathBuf {
    let unit = dir.join(UNIT);
    let local = read(UNIT)
        .replace(
            "/usr/local/bin/rip-litestream",
            crate::support::bin().to_str().unwrap(),
        )
        .replace(
            "/usr/local/bin/app",
            deploy("example-app.sh").to_str().unwrap(),
        );
    std::fs::write(&unit, local).unwrap();
    unit
}

#[test]
fn systemd_unit_verifies_and_gives_restore_and_final_sync_their_time() {
    let text = read(UNIT);
    assert_eq!(one(&text, "Type"), "notify");
    assert_eq!(one(&text, "KillMode"), "mixed");
    assert_eq!(one(&text, "KillSignal"), "SIGTERM");
    let stop = Duration::from_secs(one(&text, "TimeoutStopSec").parse().unwrap());
    assert!(stop >= stop_budget(), "TimeoutStopSec={stop:?}");
    // A restore on boot comes before READY=1.
    let start = humantime::parse_duration(one(&text, "TimeoutStartSec")).unwrap();
    assert!(
        start >= Duration::from_secs(600),
        "TimeoutStartSec={start:?}"
    );
    assert!(one(&text, "ExecStart").contains("run --restore-if-missing --"));
    assert!(one(&text, "RestartPreventExitStatus")
        .split_whitespace()
        .any(|c| c == "2"));

    // The key as a credential, the encrypted form shown as the alternative.
    assert!(one(&text, "LoadCredential").starts_with("age.key:"));
    assert!(text
        .lines()
        .any(|l| l.starts_with("#LoadCredentialEncrypted=age.key:")));
    // Found as $CREDENTIALS_DIRECTORY/age.key: no variable names it.
    let env = values(&text, "Environment");
    assert!(!env.iter().any(|e| e.starts_with("RIP_AGE_KEY")), "{env:?}");
    // The watchdog, fed every half period.
    let watchdog = humantime::parse_duration(one(&text, "WatchdogSec")).unwrap();
    assert!(
        watchdog >= Duration::from_secs(10),
        "WatchdogSec={watchdog:?}"
    );
    // The runtime directory systemd makes is the one rip-litestream uses.
    let runtime = one(&text, "RuntimeDirectory");
    assert!(env.contains(&format!("RIP_RUNTIME_DIR=%t/{runtime}").as_str()));
    assert_eq!(one(&text, "RuntimeDirectoryMode"), "0700");
    // The database's directory is writable under ProtectSystem=strict.
    assert_eq!(one(&text, "ProtectSystem"), "strict");
    let state = format!("/var/lib/{}", one(&text, "StateDirectory"));
    assert_eq!(one(&text, "WorkingDirectory"), state);
    assert!(values(&text, "ReadWritePaths").contains(&state.as_str()));
    let db = env.iter().find_map(|e| e.strip_prefix("RIP_DB=")).unwrap();
    assert!(db.starts_with(&format!("{state}/")), "{db}");

    if !have("systemd-analyze") {
        eprintln!("SKIPPED: systemd-analyze not installed");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(local_unit(dir.path()))
        .output()
        .unwrap();
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "systemd-analyze verify: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn systemd_analyze_security_rates_the_unit_ok() {
    if !have("systemd-analyze") {
        eprintln!("SKIPPED: systemd-analyze not installed");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // --threshold is on systemd's scale of 0-100: exit 1 above 49, i.e. worse than "OK" (1.0
    // to 4.9 of 10; 5.0 and above is "MEDIUM").
    let out = Command::new("systemd-analyze")
        .args(["security", "--offline=true", "--threshold=49", "--no-pager"])
        .arg(local_unit(dir.path()))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if stderr.contains("--offline") {
        eprintln!("SKIPPED: this systemd-analyze has no --offline (systemd 250 and later)");
        return;
    }
    let verdict = stdout
        .lines()
        .find_map(|l| l.split_once("Overall exposure level for rip-litestream.service: "))
        .map(|(_, v)| v.to_string())
        .unwrap_or_else(|| panic!("no overall exposure level:\n{stdout}\n{stderr}"));
    let mut words = verdict.split_whitespace();
    let exposure: f64 = words.next().unwrap().parse().unwrap();
    let label = words.next().unwrap();
    eprintln!("systemd-analyze security: {exposure} {label}");
    assert!(
        out.status.success() && exposure < 5.0 && matches!(label, "OK" | "SAFE" | "PERFECT"),
        "{verdict}\n{stdout}\n{stderr}"
    );
}

/// The system calls a unit's `SystemCallFilter=` lines allow: the first line is an allow list,
/// later ones add to it, or take away with `~`; `@groups` expanded by systemd-analyze.
fn allowed_syscalls(text: &str) -> BTreeSet<String> {
    fn expand(item: &str, out: &mut BTreeSet<String>) {
        if !item.starts_with('@') {
            out.insert(item.to_string());
            return;
        }
        let listing = Command::new("systemd-analyze")
            .args(["syscall-filter", "--no-pager", item])
            .output()
            .unwrap();
        assert!(listing.status.success(), "syscall-filter {item}");
        for line in String::from_utf8_lossy(&listing.stdout).lines().skip(1) {
            let name = line.trim();
            if !name.is_empty() && !name.starts_with('#') {
                expand(name, out);
            }
        }
    }
    let mut allowed = BTreeSet::new();
    for (n, value) in values(text, "SystemCallFilter").into_iter().enumerate() {
        let (deny, list) = match value.strip_prefix('~') {
            Some(rest) => (true, rest),
            None => (false, value),
        };
        assert!(n > 0 || !deny, "the filter starts with an allow list");
        let mut set = BTreeSet::new();
        for item in list.split_whitespace() {
            expand(item, &mut set);
        }
        if deny {
            allowed.retain(|s| !set.contains(s));
        } else {
            allowed.extend(set);
        }
    }
    allowed
}

/// strace running rip-litestream. Dropped early (a failed assertion), it kills everything it
/// traces first: killing strace alone would leave them running, untraced.
struct Traced(Background);

impl Drop for Traced {
    fn drop(&mut self) {
        if self.0.child.try_wait().ok().flatten().is_some() {
            return;
        }
        let mut tree = children_of(self.0.pid());
        let mut i = 0;
        while i < tree.len() {
            let more = children_of(tree[i]);
            tree.extend(more);
            i += 1;
        }
        for pid in tree {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
        }
    }
}

/// `rip-litestream ARGS` under strace, every system call outside `allowed` failing with EPERM.
fn run_filtered(env: &TestEnv, args: &[&str], allowed: &str, trace: &Path) -> Traced {
    let inner = env.cmd(std::iter::once("run").chain(args.iter().copied()));
    let mut cmd = Command::new("strace");
    cmd.args(["-f", "-qq", "-o"])
        .arg(trace)
        .arg("-e")
        .arg(format!("inject=!{allowed}:error=EPERM"))
        .arg(inner.get_program())
        .args(inner.get_args())
        .current_dir(inner.get_current_dir().unwrap())
        .stdin(Stdio::null());
    for (k, v) in inner.get_envs() {
        match v {
            Some(v) => cmd.env(k, v),
            None => cmd.env_remove(k),
        };
    }
    Traced(spawn(env, cmd))
}

/// SIGTERM to the rip-litestream that strace runs; its exit code (strace exits with it).
fn stop(env: &TestEnv, mut strace: Traced) -> Option<i32> {
    let rip = children_of(strace.0.pid());
    assert_eq!(rip.len(), 1, "strace's child: {rip:?}");
    Command::new("kill")
        .args(["-TERM", &rip[0].to_string()])
        .status()
        .unwrap();
    let code = strace.0.wait_code(Duration::from_secs(60));
    assert_eq!(code, Some(0), "run's stderr:\n{}", run_stderr(env));
    code
}

#[test]
fn systemd_syscall_filter_leaves_replication_stop_and_restore_working() {
    if !have("systemd-analyze") || !have("strace") {
        eprintln!("SKIPPED: strace or systemd-analyze not installed");
        return;
    }
    let _turn = crate::support::heavy();
    let allowed = allowed_syscalls(&read(UNIT));
    assert!(allowed.contains("memfd_create") && !allowed.contains("mount"));
    // `?`: a name this architecture lacks (the groups list every architecture's) is no error.
    let allowed = allowed
        .iter()
        .map(|s| format!("?{s}"))
        .collect::<Vec<_>>()
        .join(",");

    // The config in a store of its own (restore on boot needs that), as in the unit.
    let env = TestEnv::new();
    insert(&env.db(), 0, 100);
    let store = env.path("config.db");
    let store = store.to_str().unwrap();
    let replica = env.path("replica");
    env.run([
        "init",
        "--database",
        env.db().to_str().unwrap(),
        "--replica",
        replica.to_str().unwrap(),
        "--db",
        store,
    ])
    .success();
    let trace = env.path("strace.txt");
    let sup = run_filtered(&env, &["--db", store], &allowed, &trace);
    wait_ready(&env);
    insert(&env.db(), 100, 200);
    stop(&env, sup);

    // A new machine: the database and litestream's state gone, restored on boot.
    for name in ["app.db", "app.db-wal", "app.db-shm"] {
        let _ = std::fs::remove_file(env.path(name));
    }
    std::fs::remove_dir_all(env.path(".app.db-litestream")).unwrap();
    std::fs::rename(env.path("run.err"), env.path("first-run.err")).unwrap();
    let trace2 = env.path("strace-restore.txt");
    let sup = run_filtered(
        &env,
        &["--db", store, "--restore-if-missing"],
        &allowed,
        &trace2,
    );
    wait_ready(&env);
    assert_eq!(rows(&env.db()).len(), 200, "rows restored on boot");
    assert!(integrity_ok(&env.db()));
    insert(&env.db(), 200, 250);
    stop(&env, sup);
    let out = env.path("final.db");
    restore(&replica, &out);
    assert_eq!(rows(&out), rows(&env.db()));

    // The filter was in force: something was denied (litestream's chown of the files it
    // creates, which it does not need).
    let traced =
        std::fs::read_to_string(&trace).unwrap() + &std::fs::read_to_string(&trace2).unwrap();
    let denied: BTreeSet<&str> = traced
        .lines()
        .filter(|l| l.contains("(INJECTED)"))
        .filter_map(|l| {
            let call = l.split_once(' ')?.1.trim_start();
            let call = call.strip_prefix("<... ").unwrap_or(call);
            call.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .next()
        })
        .collect();
    assert!(
        !denied.is_empty(),
        "no system call was denied: the filter was not applied"
    );
    eprintln!("denied, and survived: {denied:?}");

    // The rest of the sandbox, read off the same traces: only the socket families
    // RestrictAddressFamilies= allows, no memory both writable and executable, nor made
    // executable later (MemoryDenyWriteExecute=), no new namespaces (RestrictNamespaces=).
    let text = read(UNIT);
    let families: Vec<&str> = one(&text, "RestrictAddressFamilies")
        .split_whitespace()
        .collect();
    for line in traced.lines() {
        let call = line
            .split_once(' ')
            .map(|(_, c)| c.trim_start())
            .unwrap_or("");
        if let Some(rest) = call.strip_prefix("socket(") {
            let family = rest.split([',', ')']).next().unwrap();
            assert!(families.contains(&family), "{line}");
        }
        let wx =
            call.starts_with("mmap(") && call.contains("PROT_WRITE") && call.contains("PROT_EXEC");
        let x = (call.starts_with("mprotect(") || call.starts_with("pkey_mprotect("))
            && call.contains("PROT_EXEC");
        assert!(!wx && !x, "{line}");
        assert!(!call.contains("CLONE_NEW"), "{line}");
    }
}
