//! `restore`: a database from its replica, with the stored config.

use std::path::Path;
use std::time::Instant;

use restinpieces_litestream::handoff::HandoffMode;
use restinpieces_litestream::restore::{self, RestoreRequest};
use restinpieces_litestream::{binary, running, runtime, verify, Error};

use crate::args::{Global, RestoreArgs};
use crate::cmd::{load_config, print_json};
use crate::daemon::block_on;

pub(crate) fn restore_command(g: &Global, args: RestoreArgs) -> Result<u8, Error> {
    let started = Instant::now();
    let (config, _) = load_config(g)?;
    let db = config.database(Some(&args.database))?;
    let output = args.output.clone().unwrap_or_else(|| db.clone());
    // A database a supervisor replicates or a follower keeps: restoring under it would replace
    // the live data and the replica's latest state with an older one, with or without --force.
    if let Some(holder) = running::holder(&output) {
        return Err(Error::Usage(format!(
            "{} is in use ({holder}): stop that supervisor or follower first, or restore to another path with --output",
            output.display()
        )));
    }
    let summary = Summary {
        json: args.json,
        db: &db,
        output: &output,
        started,
    };
    if args.if_db_not_exists && output.exists() {
        say!("{} exists: nothing restored", output.display());
        summary.skipped("output exists (--if-db-not-exists)");
        return Ok(0);
    }
    let bin = binary::find(args.litestream.as_deref())?;
    let req = RestoreRequest {
        db: db.clone(),
        output: Some(output.clone()),
        timestamp: args.timestamp,
        txid: args.txid,
        if_replica_exists: args.if_replica_exists,
        force: args.force,
    };
    let base = runtime::private_base()?;
    let done = block_on(restore::restore(
        &bin,
        &config,
        HandoffMode::default(),
        &base,
        &req,
    ))?;
    if !done.restored {
        say!("no backup found in the replica: nothing restored");
        summary.skipped("no backup in the replica (--if-replica-exists)");
        return Ok(0);
    }
    verify::integrity(&output).map_err(|why| Error::RestoreFailed {
        db: output.clone(),
        reason: format!("integrity_check: {why}"),
    })?;
    let size = std::fs::metadata(&output).map(|m| m.len()).unwrap_or(0);
    if args.json {
        print_json(&serde_json::json!({
            "database": db,
            "output": output,
            "restored": true,
            "timestamp": req.timestamp,
            "txid": done.txid,
            "size": size,
            "integrity_check": "ok",
            "duration_ms": started.elapsed().as_millis() as u64,
        }));
        return Ok(0);
    }
    let point = match (&req.timestamp, done.txid) {
        (Some(t), Some(x)) => format!("as of {t} (txid {x:016x})"),
        (Some(t), None) => format!("as of {t}"),
        (None, Some(x)) => format!("txid {x:016x}"),
        (None, None) => "latest".into(),
    };
    println!(
        "restored {} to {}: {point}, {size} bytes, integrity_check ok",
        req.db.display(),
        output.display()
    );
    Ok(0)
}

/// What `--json` prints when nothing was restored.
struct Summary<'a> {
    json: bool,
    db: &'a Path,
    output: &'a Path,
    started: Instant,
}

impl Summary<'_> {
    fn skipped(&self, reason: &str) {
        if self.json {
            print_json(&serde_json::json!({
                "database": self.db,
                "output": self.output,
                "restored": false,
                "reason": reason,
                "duration_ms": self.started.elapsed().as_millis() as u64,
            }));
        }
    }
}
