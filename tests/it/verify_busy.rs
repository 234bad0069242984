//! `verify` on a database that never stops being written (it must still reach a verdict), and on
//! a replica missing its newest data while the live database has more (never `ok`).

use std::time::Duration;

use crate::replication::*;
use crate::support::TestEnv;

const LONG: Duration = Duration::from_secs(30);

fn ltx_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(ltx_files(&p));
        } else if p.extension().is_some_and(|e| e == "ltx") {
            out.push(p);
        }
    }
    out
}

/// The verdict of `verify --json` and its report.
fn verify_json(env: &TestEnv, timeout: &str) -> (i32, serde_json::Value) {
    let r = env.run(["verify", "--json", "--timeout", timeout]);
    let report = serde_json::from_str(r.stdout().trim())
        .unwrap_or_else(|e| panic!("verify printed no JSON ({e}): {}", r.stdout()));
    (r.code(), report)
}

#[test]
fn verify_is_ok_while_a_writer_commits_throughout() {
    let env = TestEnv::new();
    insert(&env.db(), 0, 500);
    save_config(&env, &config_yaml(&env, "", ""));
    let mut sup = run_bg(&env, &[]);
    wait_ready(&env);
    let writer = Writer::start(env.db(), 1000);
    let count = || rows(&env.db()).len();
    crate::support::wait_for("the writer commits", LONG, || count() > 700);
    let before = count();
    let (code, report) = verify_json(&env, "60s");
    let after = count();
    let written = writer.finish();
    assert_eq!(code, 0, "{report}");
    assert_eq!(report["outcome"], "ok", "{report}");
    assert!(
        after > before,
        "the writer kept committing during verify ({before} -> {after})"
    );
    // The transaction compared is the one restored.
    assert_eq!(report["restored_txid"], report["live_txid"], "{report}");
    assert!(report["restored_txid"].as_u64().unwrap() > 1, "{report}");
    sup.signal("TERM");
    assert_eq!(sup.wait_code(LONG), Some(0));
    // And the backup really is whole: every row the writer committed restores.
    let out = env.path("restored.db");
    restore(&env.path("replica"), &out);
    assert_eq!(rows(&out).len() as i64, 500 + written - 1000);
}

/// The largest transaction in the name of an LTX file (`MIN-MAX.ltx`).
fn max_txid(file: &std::path::Path) -> u64 {
    let name = file.file_stem().unwrap().to_str().unwrap();
    u64::from_str_radix(name.split('-').nth(1).unwrap(), 16).unwrap()
}

/// The L0 files of `replica` newer than anything its other levels (compactions, snapshots) hold:
/// the only copy of their transactions.
fn uncovered_l0(replica: &std::path::Path) -> Vec<std::path::PathBuf> {
    let all = ltx_files(&replica.join("ltx"));
    let is_l0 = |p: &std::path::Path| p.parent().is_some_and(|d| d.ends_with("0"));
    let covered = all
        .iter()
        .filter(|p| !is_l0(p))
        .map(|p| max_txid(p))
        .max()
        .unwrap_or(0);
    all.into_iter()
        .filter(|p| is_l0(p) && max_txid(p) > covered)
        .collect()
}

#[test]
fn verify_is_never_ok_when_the_replica_lost_its_newest_files() {
    let env = TestEnv::new();
    insert(&env.db(), 0, 200);
    save_config(&env, &config_yaml(&env, "", ""));
    let mut sup = run_bg(&env, &[]);
    wait_ready(&env);
    let writer = Writer::start(env.db(), 1000);
    let replica = env.path("replica");
    // Transactions reach the replica that only its L0 files hold...
    crate::support::wait_for("L0 files newer than any snapshot", LONG, || {
        uncovered_l0(&replica).len() >= 2
    });
    // ... and they are lost, while litestream goes on believing them uploaded and the writer
    // goes on writing.
    for lost in uncovered_l0(&replica) {
        std::fs::remove_file(lost).unwrap();
    }
    let (code, report) = verify_json(&env, "15s");
    writer.finish();
    assert_ne!(report["outcome"], "ok", "{report}");
    assert_ne!(code, 0, "{report}");
    sup.signal("TERM");
    assert_eq!(sup.wait_code(LONG), Some(0));
    // The replica really is missing rows: a plain restore fails or has fewer than the live db.
    let out = env.path("restored.db");
    let restored = std::process::Command::new(crate::support::litestream())
        .arg("restore")
        .arg("-o")
        .arg(&out)
        .arg(format!("file://{}", replica.display()))
        .output()
        .unwrap();
    if restored.status.success() {
        assert!(rows(&out).len() < rows(&env.db()).len(), "{report}");
    }
}

#[test]
fn verify_is_never_ok_while_the_replica_stops_receiving_and_the_writer_goes_on() {
    let env = TestEnv::new();
    insert(&env.db(), 0, 200);
    save_config(&env, &config_yaml(&env, "", ""));
    let mut sup = run_bg(&env, &[]);
    wait_ready(&env);
    let writer = Writer::start(env.db(), 1000);
    let replica = env.path("replica");
    crate::support::wait_for("a backup in the replica", LONG, || {
        !ltx_files(&replica).is_empty()
    });
    // The replica's place becomes a plain file: litestream lives on, its uploads fail.
    let moved = env.path("replica.moved");
    std::fs::rename(&replica, &moved).unwrap();
    std::fs::write(&replica, b"not a directory").unwrap();
    let (code, report) = verify_json(&env, "5s");
    let written = writer.finish();
    assert_eq!(report["outcome"], "inconclusive", "{report}");
    assert_eq!(code, 3, "{report}");
    // Once the replica is back, the rows written meanwhile reach it and verify is ok.
    std::fs::remove_file(&replica).unwrap();
    std::fs::rename(&moved, &replica).unwrap();
    let (code, report) = verify_json(&env, "30s");
    assert_eq!(
        (code, &report["outcome"]),
        (0, &serde_json::json!("ok")),
        "{report}"
    );
    sup.signal("TERM");
    assert_eq!(sup.wait_code(LONG), Some(0));
    let out = env.path("restored.db");
    restore(&replica, &out);
    assert_eq!(rows(&out).len() as i64, 200 + written - 1000);
}
