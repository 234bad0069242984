//! The supervisor's state as others see it: published on a `watch` channel.

use std::time::{Duration, SystemTime};

/// What the supervisor is doing.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum State {
    /// litestream was spawned and is not ready yet.
    Starting,
    /// litestream answers on its control socket (or survived the start-up window).
    Ready,
    /// litestream exited; the next start is at `until`.
    Backoff {
        #[serde(with = "crate::status::rfc3339")]
        until: SystemTime,
        attempt: u32,
    },
    /// A stop was requested: final sync, then SIGTERM.
    Stopping,
    /// Stopped on request.
    Stopped,
    /// Gave up or could not start.
    Failed { reason: String },
}

/// How a litestream process ended.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ExitInfo {
    /// Its pid.
    pub pid: u32,
    /// The exit code, when it exited.
    pub code: Option<i32>,
    /// The signal, when a signal ended it.
    pub signal: Option<i32>,
    /// When it ended.
    #[serde(with = "crate::status::rfc3339")]
    pub at: SystemTime,
    /// How long it ran.
    #[serde(with = "crate::status::secs")]
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

/// A snapshot of the supervisor.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
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
}

impl Default for Status {
    fn default() -> Self {
        Status {
            state: State::Starting,
            pid: None,
            restarts: 0,
            last_exit: None,
            dropped_log_lines: 0,
        }
    }
}

pub(crate) mod rfc3339 {
    use std::time::SystemTime;
    pub fn serialize<S: serde::Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&humantime::format_rfc3339_millis(*t))
    }
}

pub(crate) mod secs {
    use std::time::Duration;
    pub fn serialize<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64())
    }
}
