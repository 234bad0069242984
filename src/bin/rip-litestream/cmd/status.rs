//! `status`: the running supervisor's (or follower's) state and health. Exit 0 healthy, 1
//! unhealthy, 3 when nothing runs for the store (or the follower's output) asked about.

use std::path::Path;

use restinpieces_litestream::status::state_word;
use restinpieces_litestream::{running, runtime, Error};

use crate::args::{need, Global};
use crate::cmd::print_json;

/// The exit code when no supervisor (or follower) runs: neither healthy nor a failure of one.
pub(crate) const NOT_RUNNING: u8 = 3;

pub(crate) fn status_command(g: &Global, json: bool, output: Option<&Path>) -> Result<u8, Error> {
    let (store, what) = match output {
        Some(o) => (o, "output"),
        None => (need(&g.db, "db")?, "db"),
    };
    let Some(status) = running::status(store)? else {
        let runtime_dir = runtime::RuntimeDir::path_for(store)?;
        say!(
            "no rip-litestream is running for {} (nothing holds its lock in {})",
            store.display(),
            runtime_dir.display()
        );
        if json {
            print_json(&serde_json::json!({
                "running": false,
                "healthy": false,
                what: store,
                "runtime_dir": runtime_dir,
            }));
        }
        return Ok(NOT_RUNNING);
    };
    let now = std::time::SystemTime::now();
    let health = status.health(now);
    if json {
        let mut v = serde_json::to_value(&status).expect("status serialises");
        v["running"] = true.into();
        v["healthy"] = health.is_ok().into();
        if let Err(why) = &health {
            v["reason"] = why.clone().into();
        }
        print_json(&v);
    } else {
        let pid = status.pid.map(|p| format!("pid {p}, ")).unwrap_or_default();
        println!(
            "state: {} ({pid}{} restart(s))",
            state_word(&status.state),
            status.restarts
        );
        if let Some(id) = status.config_id {
            println!("config: row id {id}");
        }
        if let Some(r) = &status.rejected_generation {
            println!("newest generation rejected: row id {}: {}", r.id, r.reason);
        }
        if let Some(exit) = &status.last_exit {
            println!("last exit: pid {} {exit}", exit.pid);
        }
        for d in &status.databases {
            let lag = d
                .lag(now)
                .map(|l| format!("last sync {:.1}s ago", l.as_secs_f64()))
                .unwrap_or_else(|| "never synced".into());
            let txid = d.txid.map(|t| format!(", txid {t}")).unwrap_or_default();
            let replicated = d
                .replicated_txid
                .map(|t| format!(", replicated {t}"))
                .unwrap_or_default();
            let lock = match d.read_lock {
                Some(true) => ", WAL read lock held",
                Some(false) => ", WAL read lock NOT held",
                None => "",
            };
            println!("{}: {}, {lag}{txid}{replicated}{lock}", d.path, d.status);
        }
        if let Some(v) = &status.last_verify {
            println!("last verify: {:?}: {}", v.outcome, v.reason);
        }
        match &health {
            Ok(()) => println!("healthy"),
            Err(why) => println!("unhealthy: {why}"),
        }
    }
    Ok(if health.is_ok() { 0 } else { 1 })
}
