//! What `cargo package` would publish, and whether the `rust-version` in Cargo.toml is true:
//! no locked dependency of the library or the binary may declare a newer one. Both read cargo's
//! own view (`cargo metadata`, `cargo package --list`), offline and locked.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;

fn cargo(args: &[&str]) -> String {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let out = Command::new(cargo)
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo runs");
    assert!(
        out.status.success(),
        "cargo {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn version(text: &str) -> (u64, u64, u64) {
    let mut parts = text.split('.').map(|p| p.parse::<u64>().unwrap());
    let major = parts.next().unwrap();
    (major, parts.next().unwrap_or(0), parts.next().unwrap_or(0))
}

#[test]
fn rust_version_is_at_least_what_every_locked_dependency_declares() {
    let meta: serde_json::Value = serde_json::from_str(&cargo(&[
        "metadata",
        "--format-version",
        "1",
        "--offline",
        "--locked",
    ]))
    .unwrap();
    let packages: BTreeMap<&str, &serde_json::Value> = meta["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["id"].as_str().unwrap(), p))
        .collect();
    let nodes: BTreeMap<&str, &serde_json::Value> = meta["resolve"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| (n["id"].as_str().unwrap(), n))
        .collect();
    let root = meta["resolve"]["root"].as_str().unwrap();
    let declared = packages[root]["rust_version"]
        .as_str()
        .expect("rust-version in Cargo.toml");

    // What building the library or the binary compiles, on any platform: normal and build
    // dependencies, all the way down (dev-dependencies only build the tests).
    let mut seen = BTreeSet::new();
    let mut todo = vec![root];
    while let Some(id) = todo.pop() {
        for dep in nodes[id]["deps"].as_array().unwrap() {
            let used = dep["dep_kinds"]
                .as_array()
                .unwrap()
                .iter()
                .any(|k| k["kind"].is_null() || k["kind"] == "build");
            let pkg = dep["pkg"].as_str().unwrap();
            if used && seen.insert(pkg) {
                todo.push(pkg);
            }
        }
    }
    let mut needs: Vec<((u64, u64, u64), String)> = seen
        .iter()
        .filter_map(|id| {
            let p = packages[id];
            let rv = p["rust_version"].as_str()?;
            Some((
                version(rv),
                format!(
                    "{} {} (rust-version {rv})",
                    p["name"].as_str()?,
                    p["version"].as_str()?
                ),
            ))
        })
        .collect();
    needs.sort();
    let newer: Vec<&String> = needs
        .iter()
        .filter(|(v, _)| *v > version(declared))
        .map(|(_, what)| what)
        .collect();
    assert!(
        newer.is_empty(),
        "Cargo.toml says rust-version = {declared}, but these locked dependencies need more: {newer:?}"
    );
    eprintln!(
        "rust-version {declared}; {} dependencies, the most demanding: {:?}",
        seen.len(),
        needs.last().map(|(_, w)| w)
    );
}

#[test]
fn cargo_package_ships_the_sources_and_nothing_large_or_secret() {
    let list = cargo(&[
        "package",
        "--list",
        "--allow-dirty",
        "--offline",
        "--locked",
    ]);
    let files: Vec<&str> = list.lines().collect();
    for needed in [
        "Cargo.toml",
        "Cargo.lock",
        "LICENSE",
        "README.md",
        "src/lib.rs",
        "examples/embed.rs",
    ] {
        assert!(files.contains(&needed), "{needed} not packaged: {files:?}");
    }
    assert!(
        files
            .iter()
            .any(|f| f.starts_with("src/") && f.contains("main.rs") || f.starts_with("src/bin/")),
        "the binary's source is not packaged: {files:?}"
    );
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut total = 0;
    for f in &files {
        assert!(
            !f.starts_with(".tools/") && !f.starts_with("target/") && !f.starts_with("tests/"),
            "{f} packaged"
        );
        assert!(
            ![".key", ".db", ".db-wal", ".db-shm", ".crate"]
                .iter()
                .any(|ext| f.ends_with(ext)),
            "{f} packaged"
        );
        // Files cargo writes itself (.cargo_vcs_info.json, Cargo.toml.orig) are not in the tree.
        total += std::fs::metadata(root.join(f))
            .map(|m| m.len())
            .unwrap_or(0);
    }
    assert!(total < 2 << 20, "{total} bytes packaged");
}
