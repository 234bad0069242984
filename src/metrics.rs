//! The supervisor's [`Status`] as Prometheus metrics, in the text exposition format 0.0.4,
//! written by hand: what `GET /metrics` on the health listener serves (see
//! [`crate::health::metrics`]).
//!
//! Every name starts with `rip_litestream_`; times are in seconds, counters end in `_total`.
//! Per database (label `db`, its path): litestream's local and replicated transaction ids, the
//! last sync as a Unix timestamp and as an age, litestream's WAL read lock (0/1) and whether the
//! replica can be restored from (0/1). For the supervisor: its state (one-hot over every state,
//! label `state`), ready and healthy (0/1), restarts (a counter), the config
//! generation in use and whether a newer one was rejected, log lines dropped (label `source`:
//! `litestream`, our own `stderr` or `log_db`), and the last `verify` (one-hot over
//! its outcomes, with its timestamp and age). A value that is not known (no sync yet, a lock that
//! cannot be read) is left out rather than reported as 0.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use crate::status::{state_word, Outcome, State, Status};

/// Where a log line the process dropped was going (beside litestream's lines, counted in the
/// status): the sinks of `framework_logs`, which count here as they drop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogSink {
    /// Our own stderr (its queue was full).
    Stderr,
    /// The `--log-db` table (its queue was full).
    LogDb,
}

static STDERR_DROPPED: AtomicU64 = AtomicU64::new(0);
static LOG_DB_DROPPED: AtomicU64 = AtomicU64::new(0);

/// Counts one log line dropped on its way to `sink` (process-wide, as the sinks are).
pub fn count_dropped(sink: LogSink) {
    match sink {
        LogSink::Stderr => &STDERR_DROPPED,
        LogSink::LogDb => &LOG_DB_DROPPED,
    }
    .fetch_add(1, Ordering::Relaxed);
}

/// The `Content-Type` of [`render`]'s output.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// One metric family: its metadata and samples (label pairs, value).
struct Family {
    name: &'static str,
    kind: &'static str,
    help: &'static str,
    samples: Vec<(Vec<(&'static str, String)>, f64)>,
}

impl Family {
    fn new(name: &'static str, kind: &'static str, help: &'static str) -> Self {
        Family {
            name,
            kind,
            help,
            samples: Vec::new(),
        }
    }

    fn add(&mut self, labels: Vec<(&'static str, String)>, value: f64) -> &mut Self {
        self.samples.push((labels, value));
        self
    }

    fn write(&self, out: &mut String) {
        if self.samples.is_empty() {
            return;
        }
        let _ = writeln!(out, "# HELP {} {}", self.name, escape_help(self.help));
        let _ = writeln!(out, "# TYPE {} {}", self.name, self.kind);
        for (labels, value) in &self.samples {
            out.push_str(self.name);
            if !labels.is_empty() {
                out.push('{');
                for (i, (k, v)) in labels.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    let _ = write!(out, "{k}=\"{}\"", escape_label(v));
                }
                out.push('}');
            }
            let _ = writeln!(out, " {}", number(*value));
        }
    }
}

/// A label value as the format wants it: backslash, double quote and newline escaped.
pub fn escape_label(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

fn escape_help(v: &str) -> String {
    v.replace('\\', "\\\\").replace('\n', "\\n")
}

fn number(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v:.3}")
    }
}

fn unix(t: SystemTime) -> f64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}

fn age(now: SystemTime, t: SystemTime) -> f64 {
    now.duration_since(t)
        .unwrap_or(Duration::ZERO)
        .as_secs_f64()
}

fn flag(b: bool) -> f64 {
    if b {
        1.0
    } else {
        0.0
    }
}

const STATES: [&str; 6] = [
    "starting", "ready", "backoff", "stopping", "stopped", "failed",
];

/// `status` at `now` in the text exposition format 0.0.4 (see the module doc for the metrics).
pub fn render(status: &Status, now: SystemTime) -> String {
    let db = |path: &str| vec![("db", path.to_string())];
    let mut families = Vec::new();

    let mut f = Family::new(
        "rip_litestream_state",
        "gauge",
        "The supervisor's state: 1 for the current one, 0 for the others.",
    );
    let current = state_word(&status.state);
    for s in STATES {
        f.add(vec![("state", s.into())], flag(s == current));
    }
    families.push(f);
    let mut f = Family::new(
        "rip_litestream_ready",
        "gauge",
        "1 while litestream runs and is ready.",
    );
    f.add(vec![], flag(status.state == State::Ready));
    families.push(f);
    let mut f = Family::new(
        "rip_litestream_healthy",
        "gauge",
        "1 when /healthz answers 200: ready, every database synced recently and locked, nothing rejected or failed.",
    );
    f.add(vec![], flag(status.health(now).is_ok()));
    families.push(f);
    let mut f = Family::new(
        "rip_litestream_restarts_total",
        "counter",
        "How many times litestream was restarted.",
    );
    f.add(vec![], status.restarts.into());
    families.push(f);
    let mut f = Family::new(
        "rip_litestream_log_lines_dropped_total",
        "counter",
        "Log lines dropped rather than block: litestream's (our stderr not read fast enough), our own to stderr, our own to the log database.",
    );
    f.add(
        vec![("source", "litestream".into())],
        status.dropped_log_lines as f64,
    );
    for (source, n) in [("stderr", &STDERR_DROPPED), ("log_db", &LOG_DB_DROPPED)] {
        f.add(
            vec![("source", source.into())],
            n.load(Ordering::Relaxed) as f64,
        );
    }
    families.push(f);
    let mut f = Family::new(
        "rip_litestream_ready_since_timestamp_seconds",
        "gauge",
        "When the running litestream became ready (Unix time).",
    );
    if let Some(t) = status.ready_since {
        f.add(vec![], unix(t));
    }
    families.push(f);
    let mut f = Family::new(
        "rip_litestream_config_generation",
        "gauge",
        "The config generation in use: its row id in the store.",
    );
    if let Some(id) = status.config_id {
        f.add(vec![], id as f64);
    }
    families.push(f);
    let mut f = Family::new(
        "rip_litestream_config_generation_rejected",
        "gauge",
        "1 when the newest generation in the store was rejected by a reload (litestream keeps the one in use).",
    );
    f.add(vec![], flag(status.rejected_generation.is_some()));
    families.push(f);

    let mut txid = Family::new(
        "rip_litestream_db_txid",
        "gauge",
        "The local transaction id litestream has reached.",
    );
    let mut replicated = Family::new(
        "rip_litestream_db_replicated_txid",
        "gauge",
        "The transaction id the replica holds, as litestream last reported it.",
    );
    let mut sync_ts = Family::new(
        "rip_litestream_db_last_sync_timestamp_seconds",
        "gauge",
        "When litestream last synced the database to its replica (Unix time).",
    );
    let mut sync_age = Family::new(
        "rip_litestream_db_last_sync_age_seconds",
        "gauge",
        "Seconds since litestream last synced the database to its replica.",
    );
    let mut lock = Family::new(
        "rip_litestream_db_wal_read_lock",
        "gauge",
        "1 while litestream holds its WAL read lock on the database (without it a checkpoint can lose rows from the replica).",
    );
    let mut restorable = Family::new(
        "rip_litestream_db_restorable",
        "gauge",
        "0 when the last check found that the replica cannot be restored from, else 1.",
    );
    for d in &status.databases {
        if let Some(t) = d.txid {
            txid.add(db(&d.path), t as f64);
        }
        if let Some(t) = d.replicated_txid {
            replicated.add(db(&d.path), t as f64);
        }
        if let Some(t) = d.last_sync_at {
            sync_ts.add(db(&d.path), unix(t));
            sync_age.add(db(&d.path), age(now, t));
        }
        if let Some(l) = d.read_lock {
            lock.add(db(&d.path), flag(l));
        }
        restorable.add(db(&d.path), flag(!status.unrestorable.contains(&d.path)));
    }
    for path in &status.unrestorable {
        if !status.databases.iter().any(|d| &d.path == path) {
            restorable.add(db(path), 0.0);
        }
    }
    families.extend([txid, replicated, sync_ts, sync_age, lock, restorable]);

    let mut outcome = Family::new(
        "rip_litestream_verify_outcome",
        "gauge",
        "The last verify (run --verify-every): 1 for its outcome, 0 for the others.",
    );
    let mut verify_ts = Family::new(
        "rip_litestream_verify_last_timestamp_seconds",
        "gauge",
        "When the last verify finished (Unix time).",
    );
    let mut verify_age = Family::new(
        "rip_litestream_verify_last_age_seconds",
        "gauge",
        "Seconds since the last verify finished.",
    );
    if let Some(v) = &status.last_verify {
        let path = v.db.display().to_string();
        for (word, o) in [
            ("ok", Outcome::Ok),
            ("failed", Outcome::Failed),
            ("inconclusive", Outcome::Inconclusive),
        ] {
            outcome.add(
                vec![("db", path.clone()), ("outcome", word.into())],
                flag(v.outcome == o),
            );
        }
        verify_ts.add(db(&path), unix(v.at));
        verify_age.add(db(&path), age(now, v.at));
    }
    families.extend([outcome, verify_ts, verify_age]);

    let mut out = String::with_capacity(4096);
    for f in &families {
        f.write(&mut out);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::DbStatus;

    #[test]
    fn escapes_labels_and_writes_every_family_once() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        let status = Status {
            state: State::Ready,
            databases: vec![DbStatus {
                path: "/a \"b\"\\c\nd.db".into(),
                status: "replicating".into(),
                last_sync_at: Some(now - Duration::from_millis(1500)),
                txid: Some(7),
                replicated_txid: Some(6),
                read_lock: Some(true),
            }],
            restarts: 2,
            config_id: Some(3),
            ..Status::default()
        };
        let text = render(&status, now);
        let label = r#"db="/a \"b\"\\c\nd.db""#;
        assert!(
            text.contains(&format!("rip_litestream_db_txid{{{label}}} 7\n")),
            "{text}"
        );
        assert!(text.contains(&format!(
            "rip_litestream_db_last_sync_timestamp_seconds{{{label}}} 998.500\n"
        )));
        assert!(text.contains(&format!(
            "rip_litestream_db_last_sync_age_seconds{{{label}}} 1.500\n"
        )));
        assert!(text.contains("rip_litestream_state{state=\"ready\"} 1\n"));
        assert!(text.contains("rip_litestream_state{state=\"backoff\"} 0\n"));
        assert!(text.contains(
            "# TYPE rip_litestream_restarts_total counter\nrip_litestream_restarts_total 2\n"
        ));
        assert!(text.contains("rip_litestream_config_generation 3\n"));
        assert!(text.contains("rip_litestream_log_lines_dropped_total{source=\"litestream\"} 0\n"));
        assert!(text.contains("rip_litestream_log_lines_dropped_total{source=\"log_db\"} "));
        assert!(!text.contains("rip_litestream_verify"), "no verify yet");
        for line in text.lines().filter(|l| l.starts_with("# TYPE ")) {
            assert_eq!(text.matches(line).count(), 1, "{line}");
        }
    }
}
