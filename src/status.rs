//! The supervisor's state as others see it: published on a `watch` channel, written to
//! `status.json` in the runtime directory for `rip-litestream status`, and judged healthy or not.

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

/// What the supervisor is doing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum State {
    /// litestream was spawned and is not ready yet.
    Starting,
    /// litestream answers on its control socket (or survived the start-up window).
    Ready,
    /// litestream exited; the next start is at `until`.
    Backoff {
        #[serde(with = "crate::timestamps::rfc3339")]
        /// When the next start is due.
        until: SystemTime,
        /// The restart attempt this wait is for.
        attempt: u32,
    },
    /// A stop was requested: final sync, then SIGTERM.
    Stopping,
    /// Stopped on request.
    Stopped,
    /// Gave up or could not start.
    Failed {
        /// What went wrong, in a line.
        reason: String,
    },
}

/// How a litestream process ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExitInfo {
    /// Its pid.
    pub pid: u32,
    /// The exit code, when it exited.
    pub code: Option<i32>,
    /// The signal, when a signal ended it.
    pub signal: Option<i32>,
    /// When it ended.
    #[serde(with = "crate::timestamps::rfc3339")]
    pub at: SystemTime,
    /// How long it ran.
    #[serde(with = "crate::timestamps::secs")]
    pub ran_for: Duration,
    /// Its last output lines.
    pub last_lines: Vec<String>,
}

impl std::fmt::Display for ExitInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.code, self.signal) {
            (Some(c), _) => write!(f, "exit code {c}")?,
            (None, Some(s)) => write!(f, "killed by signal {s}")?,
            _ => write!(f, "unknown exit")?,
        }
        write!(f, " after {:.2?}", self.ran_for)
    }
}

/// One database as litestream reports it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DbStatus {
    /// Its path.
    pub path: String,
    /// litestream's word for it (`replicating`, ...).
    pub status: String,
    /// When litestream last synced it to the replica (it does so every sync interval, even
    /// when idle).
    #[serde(with = "crate::timestamps::rfc3339_opt")]
    pub last_sync_at: Option<SystemTime>,
    /// The local transaction id litestream has reached.
    pub txid: Option<u64>,
    /// The transaction the replica holds, as litestream last reported it.
    #[serde(default)]
    pub replicated_txid: Option<u64>,
    /// Whether litestream holds its WAL read lock on the database (read from `/proc/locks`):
    /// without it, a checkpoint by the application can restart the WAL under litestream and
    /// rows go missing from the replica. `None` where it cannot be known.
    #[serde(default)]
    pub read_lock: Option<bool>,
}

impl DbStatus {
    /// How long ago the last sync was.
    pub fn lag(&self, now: SystemTime) -> Option<Duration> {
        self.last_sync_at
            .map(|t| now.duration_since(t).unwrap_or_default())
    }
}

/// A snapshot of the supervisor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Status {
    /// What it is doing.
    #[serde(flatten)]
    pub state: State,
    /// The running litestream's pid.
    pub pid: Option<u32>,
    /// How many times litestream was restarted.
    pub restarts: u32,
    /// How the previous litestream ended.
    pub last_exit: Option<ExitInfo>,
    /// litestream log lines dropped because our stderr was not read fast enough.
    pub dropped_log_lines: u64,
    /// When the running litestream became ready.
    #[serde(with = "crate::timestamps::rfc3339_opt")]
    pub ready_since: Option<SystemTime>,
    /// The databases, as last polled over the control socket.
    pub databases: Vec<DbStatus>,
    /// A database counts as stalled when its last sync is older than this.
    #[serde(with = "crate::timestamps::secs")]
    pub stall_after: Duration,
    /// The config generation in use (its row id in the store), when known.
    pub config_id: Option<i64>,
    /// The last `verify` result, with `run --verify-every`.
    pub last_verify: Option<VerifyReport>,
    /// Databases whose replica cannot be restored from (nothing in it starts at the first
    /// transaction: its objects vanished), as last checked.
    #[serde(default)]
    pub unrestorable: Vec<String>,
    /// The newest generation in the store, when a reload refused it (litestream keeps running
    /// with `config_id`).
    #[serde(default)]
    pub rejected_generation: Option<RejectedGeneration>,
    /// When this snapshot was taken.
    #[serde(with = "crate::timestamps::rfc3339")]
    pub updated_at: SystemTime,
}

/// A generation a reload refused, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RejectedGeneration {
    /// Its row id.
    pub id: i64,
    /// Why (our validation, or litestream's own verdict).
    pub reason: String,
    /// The content itself was refused (our rules or litestream's): the periodic check does not
    /// try it again (SIGHUP does). A generation that could not be read or checked (a busy
    /// store, a key file not updated yet, litestream not answering) is tried at every check.
    #[serde(default)]
    pub refused: bool,
}

impl Default for Status {
    fn default() -> Self {
        Status {
            state: State::Starting,
            pid: None,
            restarts: 0,
            last_exit: None,
            dropped_log_lines: 0,
            ready_since: None,
            databases: Vec::new(),
            stall_after: Duration::from_secs(10),
            config_id: None,
            last_verify: None,
            unrestorable: Vec::new(),
            rejected_generation: None,
            updated_at: SystemTime::now(),
        }
    }
}

impl Status {
    /// Databases whose last sync (or, before the first one, litestream's start) is older than
    /// `stall_after` at `now`.
    pub fn stalled(&self, now: SystemTime) -> Vec<&DbStatus> {
        let since_ready = self
            .ready_since
            .map(|t| now.duration_since(t).unwrap_or_default());
        self.databases
            .iter()
            .filter(|d| {
                d.lag(now)
                    .or(since_ready)
                    .is_some_and(|lag| lag > self.stall_after)
            })
            .collect()
    }

    /// Healthy: litestream is ready, every database synced recently and litestream holds its WAL
    /// read lock on each. Otherwise, why not (every reason found, `; ` between them).
    pub fn health(&self, now: SystemTime) -> Result<(), String> {
        if self.state != State::Ready {
            return Err(match &self.state {
                State::Backoff { attempt, .. } => {
                    format!("litestream is restarting (attempt {attempt})")
                }
                State::Failed { reason } => format!("failed: {reason}"),
                other => format!("litestream is not ready ({})", state_word(other)),
            });
        }
        let mut reasons = Vec::new();
        let stalled = self.stalled(now);
        if !stalled.is_empty() {
            let names: Vec<String> = stalled
                .iter()
                .map(|d| match d.lag(now) {
                    Some(lag) => format!("{} (last sync {:.0?} ago)", d.path, lag),
                    None => format!("{} (never synced)", d.path),
                })
                .collect();
            reasons.push(format!("stalled: {}", names.join(", ")));
        }
        let unlocked: Vec<&str> = self
            .databases
            .iter()
            .filter(|d| d.read_lock == Some(false))
            .map(|d| d.path.as_str())
            .collect();
        if !unlocked.is_empty() {
            reasons.push(format!(
                "litestream does not hold its WAL read lock on {}: a checkpoint can lose rows from the replica",
                unlocked.join(", ")
            ));
        }
        if !self.unrestorable.is_empty() {
            reasons.push(format!(
                "the replica of {} cannot be restored from (nothing in it starts at the first transaction): run `rip-litestream verify`, and restart replication to a fresh replica path",
                self.unrestorable.join(", ")
            ));
        }
        if let Some(r) = &self.rejected_generation {
            let in_use = self
                .config_id
                .map(|id| format!("row id {id}"))
                .unwrap_or_else(|| "the config it started with".into());
            reasons.push(format!(
                "newest generation rejected (row id {}): {}; litestream keeps running with {in_use}",
                r.id, r.reason
            ));
        }
        if let Some(v) = self
            .last_verify
            .as_ref()
            .filter(|v| v.outcome == Outcome::Failed)
        {
            reasons.push(format!(
                "the last verify of {} failed: {}",
                v.db.display(),
                v.reason
            ));
        }
        if reasons.is_empty() {
            Ok(())
        } else {
            Err(reasons.join("; "))
        }
    }
}

/// The verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The restored copy equals the live database.
    Ok,
    /// The restore or its check failed, or the data differs although the replica is current.
    Failed,
    /// The replica is behind (or writes kept coming) and did not catch up in time.
    Inconclusive,
}

impl Outcome {
    /// `verify`'s exit code: 0, 1, 3.
    pub fn exit_code(self) -> u8 {
        match self {
            Outcome::Ok => 0,
            Outcome::Failed => 1,
            Outcome::Inconclusive => 3,
        }
    }
}

/// What `verify` found.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VerifyReport {
    /// The verdict.
    pub outcome: Outcome,
    /// The database verified.
    pub db: PathBuf,
    /// Why this outcome.
    pub reason: String,
    /// The transaction the restored copy reached.
    pub restored_txid: Option<u64>,
    /// The transaction litestream had reached locally when asked to sync.
    pub live_txid: Option<u64>,
    /// Transactions the replica was behind the live database (when known).
    pub lag_txids: Option<u64>,
    /// When it finished.
    #[serde(with = "crate::timestamps::rfc3339")]
    pub at: SystemTime,
}

/// The state's name, as in JSON.
pub fn state_word(state: &State) -> &'static str {
    match state {
        State::Starting => "starting",
        State::Ready => "ready",
        State::Backoff { .. } => "backoff",
        State::Stopping => "stopping",
        State::Stopped => "stopped",
        State::Failed { .. } => "failed",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ready() -> Status {
        Status {
            state: State::Ready,
            ready_since: Some(SystemTime::now()),
            ..Status::default()
        }
    }

    #[test]
    fn health_names_every_reason() {
        let now = SystemTime::now();
        assert_eq!(ready().health(now), Ok(()));
        let mut s = ready();
        s.unrestorable = vec!["/a.db".into()];
        s.databases = vec![DbStatus {
            path: "/b.db".into(),
            status: "replicating".into(),
            last_sync_at: Some(now),
            txid: Some(3),
            replicated_txid: Some(3),
            read_lock: Some(false),
        }];
        s.last_verify = Some(VerifyReport {
            outcome: Outcome::Failed,
            db: "/c.db".into(),
            reason: "content differs".into(),
            restored_txid: None,
            live_txid: None,
            lag_txids: None,
            at: now,
        });
        s.config_id = Some(4);
        s.rejected_generation = Some(RejectedGeneration {
            id: 5,
            reason: "bucket required".into(),
            refused: true,
        });
        let why = s.health(now).unwrap_err();
        assert!(
            why.contains("newest generation rejected (row id 5): bucket required")
                && why.contains("running with row id 4"),
            "{why}"
        );
        assert!(
            why.contains("/a.db") && why.contains("cannot be restored from"),
            "{why}"
        );
        assert!(why.contains("WAL read lock on /b.db"), "{why}");
        assert!(why.contains("verify of /c.db failed"), "{why}");
    }
}
