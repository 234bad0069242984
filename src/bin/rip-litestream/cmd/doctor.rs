//! `doctor`: checks a database for replication; exit 1 when something must change.

use std::path::Path;

use restinpieces_litestream::doctor::Check;
use restinpieces_litestream::{doctor, runtime, Error};

use crate::cmd::print_json;

pub(crate) fn doctor_command(db: &Path, json: bool) -> Result<u8, Error> {
    // The path as litestream would read it from a config (`~`, relative, `sqlite://`).
    let db = &runtime::litestream_path(&db.to_string_lossy());
    let checks = doctor::examine(db)?;
    let must_change = checks.iter().any(|c| c.required && !c.ok);
    if json {
        let checks: Vec<_> = checks
            .iter()
            .map(|c| {
                serde_json::json!({
                    "name": c.name,
                    "level": level(c),
                    "message": c.detail,
                })
            })
            .collect();
        print_json(&serde_json::json!({
            "database": db,
            "checks": checks,
            "verdict": if must_change { "must_fix" } else { "ok" },
        }));
    } else {
        for c in &checks {
            let mark = if c.ok { "ok  " } else { "FIX " };
            println!("{mark} {}: {}", c.name, c.detail);
        }
    }
    Ok(if must_change { 1 } else { 0 })
}

/// `ok` (a requirement met), `error` (a requirement not met: replication cannot work),
/// `warning` (advice not followed) or `info` (what was found).
fn level(c: &Check) -> &'static str {
    match (c.required, c.ok) {
        (true, true) => "ok",
        (true, false) => "error",
        (false, false) => "warning",
        (false, true) => "info",
    }
}
