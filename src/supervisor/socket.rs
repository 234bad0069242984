//! What the supervisor says to litestream over its control socket (sync, list, txid), and the
//! status file it keeps for `rip-litestream status`.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::json;
use tokio::sync::watch;

use crate::control::ControlClient;
use crate::status::{DbStatus, Status};

/// Writes each new status to `path` (0600, replaced atomically) for `rip-litestream status`.
pub(super) async fn write_status_file(mut rx: watch::Receiver<Status>, path: PathBuf) {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("json.tmp");
    loop {
        let json = serde_json::to_vec_pretty(&*rx.borrow_and_update()).expect("status serialises");
        let written = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .and_then(|mut f| f.write_all(&json))
            .and_then(|()| std::fs::rename(&tmp, &path));
        if let Err(e) = written {
            tracing::debug!(path = %path.display(), error = %e, "cannot write the status file");
        }
        if rx.changed().await.is_err() {
            return;
        }
    }
}

/// How often the databases' last sync is read over the control socket while ready.
pub(super) const POLL_EVERY: Duration = Duration::from_secs(2);

/// Each database's last sync (`/list`) and local transaction (`/txid`); `None` when litestream
/// does not answer in time (with an unreachable S3 replica `/list` hangs: the old values stay,
/// and age into "stalled").
pub(super) async fn poll_databases(control: &ControlClient) -> Option<Vec<DbStatus>> {
    let list = control.get("/list", Duration::from_secs(1)).await.ok()?;
    let mut dbs = Vec::new();
    for d in list["databases"].as_array()? {
        let path = d["path"].as_str().unwrap_or_default().to_string();
        let query = format!("/txid?path={}", percent_encode(&path));
        let txid = control
            .get(&query, Duration::from_millis(500))
            .await
            .ok()
            .and_then(|t| t["txid"].as_u64());
        dbs.push(DbStatus {
            last_sync_at: d["last_sync_at"]
                .as_str()
                .and_then(crate::status::parse_time),
            status: d["status"].as_str().unwrap_or_default().to_string(),
            path,
            txid,
        });
    }
    Some(dbs)
}

/// Percent-encodes a path for a query string.
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"/-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Asks litestream to sync every database it knows and wait for the replica, all at once,
/// within `budget` in total.
pub(super) async fn sync_all(control: &ControlClient, budget: Duration) -> Result<(), String> {
    let work = async {
        let list = control
            .get("/list", budget.min(Duration::from_secs(2)))
            .await
            .map_err(|e| e.to_string())?;
        let paths: Vec<String> = list["databases"]
            .as_array()
            .map(|dbs| {
                dbs.iter()
                    .filter_map(|d| d["path"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        let mut syncs = tokio::task::JoinSet::new();
        for path in paths {
            let control = control.clone();
            syncs.spawn(async move {
                let body = json!({"path": path, "wait": true, "timeout": budget.as_secs().max(1)});
                let answer = control.post("/sync", &body, budget).await;
                (path, answer)
            });
        }
        let mut failures = Vec::new();
        while let Some(joined) = syncs.join_next().await {
            match joined {
                Ok((path, Ok(answer))) => tracing::debug!(
                    db = %path,
                    status = %answer["status"],
                    txid = %answer["txid"],
                    "synced"
                ),
                Ok((path, Err(e))) => failures.push(format!("{path}: {e}")),
                Err(e) => failures.push(e.to_string()),
            }
        }
        if failures.is_empty() {
            Ok(())
        } else {
            Err(failures.join("; "))
        }
    };
    tokio::time::timeout(budget, work)
        .await
        .unwrap_or_else(|_| Err(format!("no answer within {budget:?}")))
}
