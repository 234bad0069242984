//! litestream's own log lines: read from its stdout and stderr until it exits, kept (the last 50)
//! for crash reports, and forwarded whole (on the journal stream with the sd-daemon priority of
//! their level in front), never blocking litestream.
//!
//! Readers run as tokio tasks and hand lines to one writer thread through a bounded queue; when
//! the queue is full (our stderr is a pipe nobody reads fast enough) lines are dropped and
//! counted rather than stalling litestream, whose log writes would otherwise block replication.
//! Both pipes are always drained: a closed pipe would kill litestream with SIGPIPE.

use std::collections::VecDeque;
use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::TrySendError;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};

mod queue;

/// How many of litestream's last lines are kept for crash reports.
pub const KEPT_LINES: usize = 50;

/// How many lines may wait for the writer before new ones are dropped.
const QUEUE: usize = 16 * 1024;

/// Where litestream's lines go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogMode {
    /// Each line, as litestream wrote it, to our stderr.
    #[default]
    Verbatim,
    /// Each line as a `tracing` event, target `litestream`, at the level read from the line.
    Tracing,
    /// litestream writes to our stdout/stderr directly (no capture, no crash report lines).
    Inherit,
}

impl std::str::FromStr for LogMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "verbatim" => Ok(LogMode::Verbatim),
            "tracing" => Ok(LogMode::Tracing),
            "inherit" => Ok(LogMode::Inherit),
            other => Err(format!(
                "unknown log mode `{other}`: use verbatim, tracing or inherit"
            )),
        }
    }
}

/// Which pipe a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// litestream's stdout.
    Stdout,
    /// litestream's stderr.
    Stderr,
}

/// What the readers share with the supervisor.
#[derive(Debug, Default)]
pub struct LogState {
    last: Mutex<VecDeque<String>>,
    dropped: AtomicU64,
    final_sync_failed: AtomicBool,
}

impl LogState {
    /// litestream's last lines (at most [`KEPT_LINES`]).
    pub fn last_lines(&self) -> Vec<String> {
        self.last
            .lock()
            .expect("log ring poisoned")
            .iter()
            .cloned()
            .collect()
    }

    /// Clears the kept lines and the final-sync flag (a new child starts).
    pub(crate) fn reset_for_child(&self) {
        self.last.lock().expect("log ring poisoned").clear();
        self.final_sync_failed.store(false, Ordering::Relaxed);
    }

    /// Lines dropped because the writer could not keep up.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// True when litestream logged that its final sync failed.
    pub fn final_sync_failed(&self) -> bool {
        self.final_sync_failed.load(Ordering::Relaxed)
    }

    fn keep(&self, line: &str) {
        if line.contains("failed to close database") || line.contains("shutdown sync skipped") {
            self.final_sync_failed.store(true, Ordering::Relaxed);
        }
        let mut last = self.last.lock().expect("log ring poisoned");
        if last.len() == KEPT_LINES {
            last.pop_front();
        }
        last.push_back(line.to_owned());
    }
}

/// The forwarding machinery of one supervisor: the shared state and the writer thread's queue.
#[derive(Debug, Clone)]
pub struct LogForwarder {
    mode: LogMode,
    redactor: Arc<std::sync::RwLock<crate::redact::Redactor>>,
    state: Arc<LogState>,
    tx: Option<queue::Sender<(Stream, String)>>,
}

impl LogForwarder {
    /// Starts the writer thread (none for `Inherit`). Every line goes through `redactor` before
    /// it is kept or forwarded.
    pub fn new(mode: LogMode, redactor: crate::redact::Redactor) -> Self {
        let state = Arc::new(LogState::default());
        let tx = (mode != LogMode::Inherit).then(|| {
            let (tx, rx) = queue::bounded(QUEUE);
            let writer_state = state.clone();
            std::thread::Builder::new()
                .name("litestream-logs".into())
                .spawn(move || {
                    let journal = mode == LogMode::Verbatim && crate::journal::stderr_is_journal();
                    write_lines(mode, journal, rx, &writer_state)
                })
                .expect("cannot start the log writer thread");
            tx
        });
        LogForwarder {
            mode,
            redactor: Arc::new(std::sync::RwLock::new(redactor)),
            state,
            tx,
        }
    }

    /// Replaces the redactor (a new config with other credentials).
    pub fn set_redactor(&self, redactor: crate::redact::Redactor) {
        *self.redactor.write().expect("redactor poisoned") = redactor;
    }

    /// The mode.
    pub fn mode(&self) -> LogMode {
        self.mode
    }

    /// The shared state (last lines, drop count).
    pub fn state(&self) -> &Arc<LogState> {
        &self.state
    }

    /// Reads `pipe` line by line until it closes, keeping and forwarding each line.
    pub async fn drain(&self, pipe: impl AsyncRead + Unpin, stream: Stream) {
        let mut reader = BufReader::with_capacity(64 * 1024, pipe);
        let mut buf = Vec::with_capacity(512);
        loop {
            buf.clear();
            match reader.read_until(b'\n', &mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            while matches!(buf.last(), Some(b'\n' | b'\r')) {
                buf.pop();
            }
            let line = String::from_utf8_lossy(&buf);
            let line = self
                .redactor
                .read()
                .expect("redactor poisoned")
                .redact(&line)
                .into_owned();
            self.state.keep(&line);
            if let Some(tx) = &self.tx {
                match tx.try_send((stream, line)) {
                    Ok(()) => {}
                    Err(TrySendError::Full(_)) => {
                        self.state.dropped.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(TrySendError::Disconnected(_)) => {}
                }
            }
        }
    }
}

/// The writer thread: blocks on our stderr so that nobody else has to. With `journal` (stderr is
/// the journal stream), each verbatim line starts with the sd-daemon priority of its level.
fn write_lines(
    mode: LogMode,
    journal: bool,
    rx: queue::Receiver<(Stream, String)>,
    state: &LogState,
) {
    let mut reported = 0;
    let stderr = std::io::stderr();
    while let Ok(first) = rx.recv() {
        // stderr stays locked for a batch of verbatim lines only: in tracing mode our own
        // subscriber's writer needs it for the very events this loop emits.
        let mut out = (mode == LogMode::Verbatim)
            .then(|| std::io::BufWriter::with_capacity(64 * 1024, stderr.lock()));
        let mut next = Some(first);
        while let Some((stream, line)) = next {
            match (mode, out.as_mut()) {
                (LogMode::Verbatim, Some(out)) => {
                    if journal {
                        let prefix = crate::journal::journal_priority(&line_level(&line));
                        let _ = out.write_all(prefix.as_bytes());
                    }
                    let _ = out.write_all(line.as_bytes());
                    let _ = out.write_all(b"\n");
                }
                (LogMode::Tracing, _) => emit(stream, &line),
                _ => {}
            }
            next = rx.try_recv().ok();
        }
        if let Some(mut out) = out {
            let _ = out.flush();
        }
        let dropped = state.dropped();
        if dropped > reported {
            tracing::warn!(
                dropped_total = dropped,
                dropped_now = dropped - reported,
                "litestream log lines dropped: our stderr is not being read fast enough"
            );
            reported = dropped;
        }
    }
}

/// The level a litestream line carries: JSON's first `level` key, text's `level=`; `Error:` and
/// panic lines are errors.
#[doc(hidden)] // internal; public only for the property tests
pub fn line_level(line: &str) -> tracing::Level {
    use tracing::Level;
    let word = if line.starts_with('{') {
        line.find("\"level\":").map(|i| {
            let rest = line[i + 8..].trim_start().trim_start_matches('"');
            &rest[..rest.find('"').unwrap_or(rest.len())]
        })
    } else if let Some(i) = line.find("level=") {
        let rest = &line[i + 6..];
        Some(&rest[..rest.find(' ').unwrap_or(rest.len())])
    } else if line.starts_with("Error:")
        || line.starts_with("panic:")
        || line.starts_with("fatal error:")
    {
        Some("ERROR")
    } else {
        None
    };
    match word.map(|w| w.to_ascii_uppercase()) {
        Some(w) if w.starts_with("ERR") => Level::ERROR,
        Some(w) if w.starts_with("WARN") => Level::WARN,
        Some(w) if w.starts_with("DEBUG") => Level::DEBUG,
        Some(w) if w.starts_with("TRACE") || w.starts_with("DEBUG-") => Level::TRACE,
        _ => Level::INFO,
    }
}

/// A litestream line's message and its other fields (as JSON for JSON lines, `key=value` text
/// otherwise); lines that are neither come back whole as the message.
#[doc(hidden)] // internal; public only for the property tests
pub fn split_line(line: &str) -> (String, String) {
    if line.starts_with('{') {
        if let Ok(serde_json::Value::Object(mut map)) = serde_json::from_str(line) {
            let msg = map
                .remove("msg")
                .and_then(|m| m.as_str().map(str::to_owned))
                .unwrap_or_default();
            map.remove("time");
            map.remove("level");
            return (msg, serde_json::Value::Object(map).to_string());
        }
    } else if line.starts_with("time=") || line.contains(" level=") {
        let mut msg = String::new();
        let mut rest = Vec::new();
        for (k, v) in logfmt_pairs(line) {
            match k {
                "msg" => msg = v.trim_matches('"').to_string(),
                "time" | "level" => {}
                _ => rest.push(format!("{k}={v}")),
            }
        }
        return (msg, rest.join(" "));
    }
    (line.to_string(), String::new())
}

/// `key=value` and `key="quoted value"` pairs of a slog text line.
fn logfmt_pairs(line: &str) -> Vec<(&str, &str)> {
    let mut out = Vec::new();
    let mut rest = line.trim();
    while let Some(eq) = rest.find('=') {
        let key = rest[..eq].trim();
        let after = &rest[eq + 1..];
        let end = if let Some(quoted) = after.strip_prefix('"') {
            let mut escaped = false;
            let close = quoted
                .char_indices()
                .find(|&(_, c)| {
                    let hit = c == '"' && !escaped;
                    escaped = c == '\\' && !escaped;
                    hit
                })
                .map(|(i, _)| i + 2)
                .unwrap_or(after.len());
            close.min(after.len())
        } else {
            after.find(' ').unwrap_or(after.len())
        };
        out.push((key, &after[..end]));
        rest = after[end..].trim_start();
    }
    out
}

fn emit(stream: Stream, line: &str) {
    use tracing::Level;
    let stream = match stream {
        Stream::Stdout => "stdout",
        Stream::Stderr => "stderr",
    };
    let (msg, fields) = split_line(line);
    match line_level(line) {
        Level::ERROR => tracing::error!(target: "litestream", stream, fields, "{msg}"),
        Level::WARN => tracing::warn!(target: "litestream", stream, fields, "{msg}"),
        Level::INFO => tracing::info!(target: "litestream", stream, fields, "{msg}"),
        Level::DEBUG => tracing::debug!(target: "litestream", stream, fields, "{msg}"),
        _ => tracing::trace!(target: "litestream", stream, fields, "{msg}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing::Level;

    #[test]
    fn reads_levels() {
        assert_eq!(
            line_level(r#"{"time":"t","level":"ERROR","msg":"sync error","level":1}"#),
            Level::ERROR
        );
        assert_eq!(
            line_level(r#"{"time":"t","level":"WARN","msg":"x"}"#),
            Level::WARN
        );
        assert_eq!(line_level("time=2026 level=DEBUG msg=x"), Level::DEBUG);
        assert_eq!(
            line_level("time=2026 level=INFO msg=\"replicating to\""),
            Level::INFO
        );
        assert_eq!(
            line_level("Error: must specify replica for database"),
            Level::ERROR
        );
        assert_eq!(line_level("panic: unknown log type"), Level::ERROR);
        assert_eq!(line_level("something else"), Level::INFO);
    }

    #[test]
    fn splits_message_and_fields() {
        let (m, f) =
            split_line(r#"time=2026 level=ERROR msg="sync error" db=/a.db error="no such host""#);
        assert_eq!(m, "sync error");
        assert_eq!(f, r#"db=/a.db error="no such host""#);
        let (m, f) =
            split_line(r#"{"time":"t","level":"INFO","msg":"replicating to","type":"file"}"#);
        assert_eq!(m, "replicating to");
        assert_eq!(f, r#"{"type":"file"}"#);
        assert_eq!(split_line("Error: boom").0, "Error: boom");
    }

    #[test]
    fn keeps_the_last_lines_and_spots_a_failed_final_sync() {
        let s = LogState::default();
        for i in 0..60 {
            s.keep(&format!("line {i}"));
        }
        let last = s.last_lines();
        assert_eq!(last.len(), KEPT_LINES);
        assert_eq!(last[0], "line 10");
        assert!(!s.final_sync_failed());
        s.keep("level=ERROR msg=\"failed to close database\"");
        assert!(s.final_sync_failed());
    }
}
