//! deploy/kubernetes.yaml (rip-litestream as the entrypoint) and deploy/kubernetes-sidecar.yaml
//! (a native sidecar): read with saphyr for the settings that matter, and validated against
//! Kubernetes' own schemas by `kubernetes-validate` (bundled schemas, no cluster, no network;
//! installed into .tools/kubernetes-validate by scripts/install-deps.sh).

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use saphyr::{LoadableYamlNode, YamlOwned as Yaml};

use super::{deploy, image_health_port, image_uid, longest_backoff, read, stop_budget};

fn load(name: &str) -> Vec<Yaml> {
    Yaml::load_from_str(&read(name)).unwrap_or_else(|e| panic!("deploy/{name}: {e}"))
}

fn kinds(docs: &[Yaml]) -> Vec<&str> {
    docs.iter().filter_map(|d| d["kind"].as_str()).collect()
}

fn seq(node: &Yaml) -> &[Yaml] {
    node.as_sequence().map(Vec::as_slice).unwrap_or(&[])
}

fn strings(node: &Yaml) -> Vec<&str> {
    seq(node).iter().filter_map(|v| v.as_str()).collect()
}

fn secs(node: &Yaml) -> Duration {
    Duration::from_secs(node.as_integer().expect("an integer") as u64)
}

/// The pod spec of the one Deployment, checked for what both layouts share: one replica,
/// Recreate, the stop budget, the image's non-root user, the key's Secret volume.
fn pod(docs: &[Yaml]) -> &Yaml {
    assert_eq!(
        kinds(docs),
        ["Secret", "Deployment", "PersistentVolumeClaim"]
    );
    let deployment = &docs[1]["spec"];
    assert_eq!(deployment["replicas"].as_integer(), Some(1));
    assert_eq!(deployment["strategy"]["type"].as_str(), Some("Recreate"));
    let pod = &deployment["template"]["spec"];
    assert!(secs(&pod["terminationGracePeriodSeconds"]) >= stop_budget());
    let security = &pod["securityContext"];
    assert_eq!(security["runAsNonRoot"].as_bool(), Some(true));
    assert_eq!(security["runAsUser"].as_integer(), Some(image_uid()));
    // The volume and the key's group: fsGroup.
    assert_eq!(security["fsGroup"].as_integer(), Some(image_uid()));
    let secret = seq(&pod["volumes"])
        .iter()
        .find(|v| v.as_mapping_get("secret").is_some())
        .expect("a secret volume");
    // 0440 in the manifest: octal to Kubernetes (YAML 1.1), 440 to a YAML 1.2 reader.
    let mode = &secret["secret"]["defaultMode"];
    assert!(matches!(mode.as_integer(), Some(0o440 | 440)), "{mode:?}");
    pod
}

/// The container's port named `health` is the image's health port.
fn health_port(container: &Yaml) {
    let port = seq(&container["ports"])
        .iter()
        .find(|p| p["name"].as_str() == Some("health"))
        .expect("a port named health");
    assert_eq!(
        port["containerPort"].as_integer(),
        Some(image_health_port())
    );
}

/// Liveness must not kill during a restart backoff, when both endpoints answer 503: so a TCP
/// connect to the health port (open while the supervisor runs), and patient even so.
fn liveness_survives_a_backoff(container: &Yaml) {
    let live = &container["livenessProbe"];
    assert!(
        live.as_mapping_get("httpGet").is_none(),
        "liveness over HTTP: {live:?}"
    );
    assert_eq!(live["tcpSocket"]["port"].as_str(), Some("health"));
    let span = secs(&live["periodSeconds"]) * live["failureThreshold"].as_integer().unwrap() as u32;
    assert!(span > longest_backoff(), "{span:?}");
}

fn env<'a>(container: &'a Yaml, name: &str) -> Option<&'a str> {
    seq(&container["env"])
        .iter()
        .find(|e| e["name"].as_str() == Some(name))
        .and_then(|e| e["value"].as_str())
}

#[test]
fn entrypoint_manifest_has_the_settings_that_matter() {
    let docs = load("kubernetes.yaml");
    let pod = pod(&docs);
    let containers = seq(&pod["containers"]);
    assert_eq!(containers.len(), 1);
    let app = &containers[0];
    // The image's entrypoint runs, with the application as its arguments.
    assert!(app.as_mapping_get("command").is_none());
    assert_eq!(strings(&app["args"]), ["/usr/local/bin/app"]);
    assert_eq!(env(app, "RIP_DB"), Some("/etc/rip/config.db"));
    assert!(env(app, "RIP_AGE_KEY")
        .unwrap()
        .starts_with("/run/secrets/rip/"));
    health_port(app);
    assert_eq!(
        app["readinessProbe"]["httpGet"]["path"].as_str(),
        Some("/readyz")
    );
    liveness_survives_a_backoff(app);
}

#[test]
fn sidecar_manifest_starts_the_app_after_the_restore_and_stops_it_first() {
    let docs = load("kubernetes-sidecar.yaml");
    let pod = pod(&docs);
    let init = seq(&pod["initContainers"]);
    assert_eq!(init.len(), 1, "one init container: the sidecar");
    let sidecar = &init[0];
    // A native sidecar: started before the containers, stopped after them.
    assert_eq!(sidecar["restartPolicy"].as_str(), Some("Always"));
    let command = strings(&sidecar["command"]);
    assert_eq!(command[..2], ["rip-litestream", "run"]);
    assert!(command.contains(&"--restore-if-missing"));
    assert!(
        !command.contains(&"--"),
        "no application after --: {command:?}"
    );
    let addr = command[command.iter().position(|a| *a == "--health-addr").unwrap() + 1];
    assert_eq!(addr, format!("0.0.0.0:{}", image_health_port()));
    health_port(sidecar);
    // The app starts once this passes: restored and litestream ready. Room for a long restore.
    let startup = &sidecar["startupProbe"];
    assert_eq!(startup["httpGet"]["path"].as_str(), Some("/readyz"));
    let patience =
        secs(&startup["periodSeconds"]) * startup["failureThreshold"].as_integer().unwrap() as u32;
    assert!(patience >= Duration::from_secs(600), "{patience:?}");
    liveness_survives_a_backoff(sidecar);

    let containers = seq(&pod["containers"]);
    assert_eq!(containers.len(), 1);
    let app = &containers[0];
    let mount = |c: &Yaml, volume: &str| -> Option<String> {
        seq(&c["volumeMounts"])
            .iter()
            .find(|m| m["name"].as_str() == Some(volume))
            .and_then(|m| m["mountPath"].as_str().map(String::from))
    };
    let data = mount(sidecar, "data").expect("the sidecar mounts the data volume");
    assert_eq!(mount(app, "data"), Some(data.clone()));
    assert!(env(app, "APP_DB").unwrap().starts_with(&format!("{data}/")));
    // The key is the sidecar's alone.
    assert!(mount(sidecar, "age-key").is_some() && mount(app, "age-key").is_none());
}

/// `kubernetes-validate --strict` on `file` against `version` (None: the newest it bundles).
fn validate(tool: &Path, file: &Path, version: Option<&str>) -> (bool, String) {
    let mut cmd = Command::new("python3");
    cmd.args(["-m", "kubernetes_validate", "--strict"])
        .env("PYTHONPATH", tool)
        .env("PYTHONDONTWRITEBYTECODE", "1");
    if let Some(v) = version {
        cmd.args(["--kubernetes-version", v]);
    }
    let out = cmd.arg(file).output().expect("python3");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

#[test]
fn both_manifests_pass_kubernetes_schema_validation() {
    let tool = Path::new(env!("CARGO_MANIFEST_DIR")).join(".tools/kubernetes-validate");
    if !tool.join("kubernetes_validate/__init__.py").is_file() {
        eprintln!("SKIPPED: kubernetes-validate not installed (scripts/install-deps.sh)");
        return;
    }
    // 1.29: the first release with native sidecars on by default.
    for file in ["kubernetes.yaml", "kubernetes-sidecar.yaml"] {
        for version in [Some("1.29.0"), None] {
            let (ok, text) = validate(&tool, &deploy(file), version);
            assert!(ok, "deploy/{file} against {version:?}:\n{text}");
            assert_eq!(text.matches(" passed for resource ").count(), 3, "{text}");
        }
    }
    // The validator does look: a misspelled field fails it.
    let dir = tempfile::tempdir().unwrap();
    let broken = dir.path().join("broken.yaml");
    let text = read("kubernetes-sidecar.yaml");
    assert!(text.contains("restartPolicy: Always"));
    std::fs::write(
        &broken,
        text.replace("restartPolicy: Always", "restartPolicyy: Always"),
    )
    .unwrap();
    let (ok, out) = validate(&tool, &broken, None);
    assert!(!ok && out.contains("restartPolicyy"), "{out}");
}
