//! systemd's notification protocol beyond READY=1: the watchdog (`WATCHDOG_USEC`, fed during a
//! restore on boot too), the start timeout extended while a restore on boot runs, and none of systemd's variables (nor the key's)
//! reaching litestream or the application.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

use crate::replication::*;
use crate::support::{wait_for, TestEnv};

const LONG: Duration = Duration::from_secs(30);

/// A notify socket bound in the env: what systemd listens on.
fn notify_socket(env: &TestEnv) -> (UnixDatagram, std::path::PathBuf) {
    let path = env.path("notify.sock");
    let sock = UnixDatagram::bind(&path).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    (sock, path)
}

/// Receives datagrams until `done` holds for the messages so far (each datagram one entry).
fn receive_until(
    sock: &UnixDatagram,
    got: &mut Vec<String>,
    what: &str,
    mut done: impl FnMut(&[String]) -> bool,
) {
    let start = Instant::now();
    let mut buf = [0u8; 4096];
    while !done(got) {
        assert!(
            start.elapsed() < LONG,
            "timed out waiting for {what}; received {got:?}"
        );
        if let Ok(n) = sock.recv(&mut buf) {
            got.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
    }
}

fn count(got: &[String], needle: &str) -> usize {
    got.iter().filter(|m| m.contains(needle)).count()
}

/// The variables no child may see, and whether `environ` (NUL- or newline-separated) has one.
fn leaked(environ: &str) -> Vec<String> {
    environ
        .split(['\0', '\n'])
        .filter(|v| {
            ["NOTIFY_SOCKET=", "WATCHDOG_USEC=", "WATCHDOG_PID=", "RIP_"]
                .iter()
                .any(|p| v.starts_with(p))
        })
        .map(String::from)
        .collect()
}

#[test]
fn the_watchdog_is_fed_and_no_child_sees_systemds_or_the_keys_variables() {
    let env = TestEnv::new();
    save_config(&env, &config_yaml(&env, "", ""));
    let (sock, sock_path) = notify_socket(&env);
    let creds = env.path("creds");
    std::fs::create_dir(&creds).unwrap();
    let dump = env.path("app-env.txt");
    let mut cmd = env.cmd([
        "run",
        "--",
        "sh",
        "-c",
        &format!(
            "env > {}.tmp && mv {0}.tmp {0} && exec sleep 120",
            dump.display()
        ),
    ]);
    cmd.env("NOTIFY_SOCKET", &sock_path)
        .env("WATCHDOG_USEC", "200000")
        .env("RIP_AGE_KEY_FILE", env.key())
        .env("CREDENTIALS_DIRECTORY", &creds);
    let mut sup = spawn(&env, cmd);
    let mut got = Vec::new();
    receive_until(&sock, &mut got, "READY=1 and two watchdog pings", |g| {
        count(g, "READY=1") == 1 && count(g, "WATCHDOG=1") >= 2
    });

    wait_for("the application's environment", LONG, || dump.exists());
    let app_env = std::fs::read_to_string(&dump).unwrap();
    assert_eq!(
        leaked(&app_env),
        Vec::<String>::new(),
        "in the app's environment"
    );
    assert!(
        app_env.contains(&format!("CREDENTIALS_DIRECTORY={}", creds.display())),
        "the app lost its own credentials directory:\n{app_env}"
    );
    let key = env.key().display().to_string();
    assert!(!app_env.contains(&key), "the key's path reached the app");

    let litestream = children_of(sup.pid())
        .into_iter()
        .find(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains("replicate"))
        })
        .expect("litestream replicate among the children");
    let environ = std::fs::read(format!("/proc/{litestream}/environ")).unwrap();
    let environ = String::from_utf8_lossy(&environ);
    assert_eq!(
        leaked(&environ),
        Vec::<String>::new(),
        "in litestream's environment"
    );
    let cmdline = std::fs::read(format!("/proc/{litestream}/cmdline")).unwrap();
    assert!(!environ.contains(&key) && !String::from_utf8_lossy(&cmdline).contains(&key));

    // Still fed while running: more pings come.
    let before = count(&got, "WATCHDOG=1");
    receive_until(&sock, &mut got, "more watchdog pings", |g| {
        count(g, "WATCHDOG=1") >= before + 2
    });
    sup.signal("TERM");
    receive_until(&sock, &mut got, "STOPPING=1", |g| {
        count(g, "STOPPING=1") > 0
    });
    sup.wait_code(LONG);
}

#[test]
fn a_watchdog_meant_for_another_process_is_not_fed() {
    let env = TestEnv::new();
    save_config(&env, &config_yaml(&env, "", ""));
    let (sock, sock_path) = notify_socket(&env);
    let mut cmd = env.cmd(["run"]);
    cmd.env("NOTIFY_SOCKET", &sock_path)
        .env("WATCHDOG_USEC", "100000")
        .env("WATCHDOG_PID", "1");
    let mut sup = spawn(&env, cmd);
    let mut got = Vec::new();
    receive_until(&sock, &mut got, "READY=1", |g| count(g, "READY=1") == 1);
    // Ask the running supervisor for its status twice: by then, pings every 50 ms would have
    // come; none may.
    for _ in 0..2 {
        wait_for("a status", LONG, || env.run(["status"]).code() == 0);
    }
    sup.signal("TERM");
    receive_until(&sock, &mut got, "STOPPING=1", |g| {
        count(g, "STOPPING=1") > 0
    });
    sup.wait_code(LONG);
    assert_eq!(count(&got, "WATCHDOG=1"), 0, "{got:?}");
}

#[test]
fn a_restore_on_boot_extends_systemds_start_timeout_until_ready() {
    let env = TestEnv::new();
    // The layout for restore on boot: the config in its own store.
    let store = env.path("config.db");
    env.run(["keygen"]).success();
    let file = env.path("c.yml");
    std::fs::write(&file, config_yaml(&env, "", "")).unwrap();
    env.run([
        "--db",
        store.to_str().unwrap(),
        "config",
        "save",
        file.to_str().unwrap(),
    ])
    .success();
    let db_arg = ["--db", store.to_str().unwrap()];
    insert(&env.db(), 0, 200);
    env.run(db_arg.iter().copied().chain(["run", "--", "true"]))
        .success();
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", env.db().display()));
    }
    std::fs::remove_dir_all(env.path(".app.db-litestream")).unwrap();

    // The real litestream, its restore held until the test has seen the timeout extended: a
    // restore as long as the test needs, without guessing how long that is.
    let go = env.path("go");
    let wrapper = env.path("slow-litestream");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nif [ \"$1\" = restore ]; then\n  while [ ! -e {} ]; do sleep 0.05; done\nfi\nexec {} \"$@\"\n",
            go.display(),
            crate::support::litestream().display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();

    let (sock, sock_path) = notify_socket(&env);
    let counted = env.path("count");
    let mut cmd = env.cmd(db_arg.iter().copied().chain([
        "run",
        "--restore-if-missing",
        "--",
        "sh",
        "-c",
        &format!(
            "sqlite3 {} 'SELECT count(*) FROM t' > {}",
            env.db().display(),
            counted.display()
        ),
    ]));
    cmd.env("NOTIFY_SOCKET", &sock_path)
        .env("WATCHDOG_USEC", "400000")
        .env("LITESTREAM_BIN", &wrapper);
    let mut sup = spawn(&env, cmd);
    let mut got = Vec::new();
    // The restore is held: the start timeout is extended and the watchdog fed meanwhile.
    receive_until(&sock, &mut got, "EXTEND_TIMEOUT_USEC and pings", |g| {
        count(g, "EXTEND_TIMEOUT_USEC=30000000") > 0 && count(g, "WATCHDOG=1") >= 3
    });
    assert_eq!(
        count(&got, "READY=1"),
        0,
        "ready before the restore: {got:?}"
    );
    std::fs::write(&go, "").unwrap();
    receive_until(&sock, &mut got, "READY=1", |g| count(g, "READY=1") == 1);
    assert_eq!(sup.wait_code(LONG), Some(0), "{}", run_stderr(&env));
    assert_eq!(std::fs::read_to_string(&counted).unwrap().trim(), "200");
    let ready_at = got.iter().position(|m| m.contains("READY=1")).unwrap();
    assert_eq!(
        count(&got[ready_at..], "EXTEND_TIMEOUT_USEC"),
        0,
        "extended after READY=1: {got:?}"
    );
}
