//! `status`: the running supervisor's (or follower's) state and health.

use std::path::Path;

use restinpieces_litestream::status::state_word;
use restinpieces_litestream::{running, runtime, Error};

use crate::args::{need, Global};

pub(crate) fn status_command(g: &Global, json: bool, output: Option<&Path>) -> Result<u8, Error> {
    let store = match output {
        Some(o) => o,
        None => need(&g.db, "db")?,
    };
    let Some(status) = running::status(store)? else {
        say!(
            "no rip-litestream is running for {} (nothing holds its lock in {})",
            store.display(),
            runtime::RuntimeDir::path_for(store)?.display()
        );
        return Ok(1);
    };
    let now = std::time::SystemTime::now();
    let health = status.health(now);
    if json {
        let mut v = serde_json::to_value(&status).expect("status serialises");
        v["healthy"] = health.is_ok().into();
        if let Err(why) = &health {
            v["reason"] = why.clone().into();
        }
        println!("{v}");
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
