//! The supervisor's own logs (the "framework" half of the split-logging model), for binaries
//! that install a subscriber: a JSON-lines layer for stderr, and a sink into a SQLite `logs`
//! table with restinpieces' schema. The library itself never installs a subscriber.
//!
//! The sink never blocks the code that logs: records go through a bounded queue (1000) to a
//! writer thread that commits them in batches (100 records or 5 s, one `BEGIN IMMEDIATE`
//! transaction each); when the queue is full records are dropped and counted, and the count is
//! logged. Dropping the [`LogDbGuard`] drains the queue.
//!
//! stderr never blocks the code that logs either ([`queued_stderr`]): when nobody reads it (a
//! stalled terminal, a full pipe), a tracing event on an async worker would otherwise wait on
//! the process-wide stderr lock, and two such events stop the runtime that drains litestream's
//! pipes. Lines go through a bounded queue to a thread of their own; when it is full they are
//! dropped and counted.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::Context;
use tracing_subscriber::Layer;

use crate::error::{Error, Result};

mod lines;
pub use lines::{json_line, level_name, Style, FATAL_TARGET};

use crate::journal::journal_priority;

/// restinpieces' `logs` table, byte for byte.
pub const LOGS_SCHEMA: &str = "CREATE TABLE IF NOT EXISTS logs (
    id TEXT PRIMARY KEY DEFAULT ('r'||lower(hex(randomblob(7)))) NOT NULL,
    level INTEGER DEFAULT 0 NOT NULL,
    message TEXT DEFAULT '' NOT NULL,
    data JSON DEFAULT '{}' NOT NULL,
    created TEXT DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ')) NOT NULL
);
CREATE INDEX IF NOT EXISTS idx_logs_level ON logs (level);
CREATE INDEX IF NOT EXISTS idx_logs_message ON logs (message);";

const QUEUE: usize = 1000;
const BATCH: usize = 100;
const FLUSH_EVERY: Duration = Duration::from_secs(5);

/// slog's level numbers, as restinpieces stores them.
pub fn slog_level(level: &Level) -> i64 {
    match *level {
        Level::TRACE => -8,
        Level::DEBUG => -4,
        Level::INFO => 0,
        Level::WARN => 4,
        Level::ERROR => 8,
    }
}

/// An event's message and other fields.
#[derive(Default)]
pub struct Fields {
    /// The message.
    pub message: String,
    /// The event's other fields.
    pub fields: Map<String, Value>,
}

impl Fields {
    /// Collects `event`'s fields.
    pub fn of(event: &Event<'_>) -> Self {
        let mut f = Fields::default();
        event.record(&mut f);
        f
    }
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message = value.to_string();
        } else {
            self.fields.insert(field.name().into(), value.into());
        }
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.fields.insert(field.name().into(), value.into());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.fields.insert(field.name().into(), value.into());
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.fields.insert(field.name().into(), value.into());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.fields.insert(field.name().into(), value.into());
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.message = format!("{value:?}");
        } else {
            self.fields
                .insert(field.name().into(), format!("{value:?}").into());
        }
    }
}

/// A `MakeWriter` for stderr that never blocks: each event's bytes are queued for a writer
/// thread (see the module doc).
#[derive(Clone)]
pub struct QueuedStderr {
    tx: SyncSender<Vec<u8>>,
    queued: Arc<AtomicU64>,
    written: Arc<AtomicU64>,
    dropped: Arc<AtomicU64>,
    style: Arc<AtomicU8>,
}

/// One event's bytes, queued when dropped.
pub struct QueuedLine {
    buf: Vec<u8>,
    to: QueuedStderr,
}

impl Write for QueuedLine {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for QueuedLine {
    fn drop(&mut self) {
        if self.buf.is_empty() {
            return;
        }
        match self.to.tx.try_send(std::mem::take(&mut self.buf)) {
            Ok(()) => {
                self.to.queued.fetch_add(1, Ordering::SeqCst);
            }
            Err(_) => {
                self.to.dropped.fetch_add(1, Ordering::Relaxed);
                crate::metrics::count_dropped(crate::metrics::LogSink::Stderr);
            }
        }
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for QueuedStderr {
    type Writer = QueuedLine;
    fn make_writer(&'a self) -> QueuedLine {
        QueuedLine {
            buf: Vec::new(),
            to: self.clone(),
        }
    }
    fn make_writer_for(&'a self, meta: &tracing::Metadata<'_>) -> QueuedLine {
        let mut line = self.make_writer();
        if self.style() == Style::Journald {
            line.buf
                .extend_from_slice(journal_priority(meta.level()).as_bytes());
        }
        line
    }
}

impl QueuedStderr {
    /// Sets the [`Style`] (before the subscriber is installed).
    pub fn set_style(&self, style: Style) {
        self.style.store(style as u8, Ordering::Relaxed);
    }

    /// The [`Style`].
    pub fn style(&self) -> Style {
        Style::of(self.style.load(Ordering::Relaxed))
    }

    /// Waits (at most `timeout`) until every line queued so far is written: before the process
    /// prints its last words or exits.
    pub fn flush(&self, timeout: Duration) {
        let until = Instant::now() + timeout;
        while self.written.load(Ordering::SeqCst) < self.queued.load(Ordering::SeqCst)
            && Instant::now() < until
        {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

/// stderr behind a queue of `capacity` lines and a writer thread; see [`QueuedStderr`].
pub fn queued_stderr(capacity: usize) -> QueuedStderr {
    let (tx, rx) = sync_channel::<Vec<u8>>(capacity);
    let q = QueuedStderr {
        tx,
        queued: Arc::new(AtomicU64::new(0)),
        written: Arc::new(AtomicU64::new(0)),
        dropped: Arc::new(AtomicU64::new(0)),
        style: Arc::new(AtomicU8::new(Style::Text as u8)),
    };
    let (written, dropped, style) = (q.written.clone(), q.dropped.clone(), q.style.clone());
    let _ = std::thread::Builder::new()
        .name("stderr".into())
        .spawn(move || {
            let mut reported = 0;
            while let Ok(line) = rx.recv() {
                let mut err = std::io::stderr().lock();
                let _ = err.write_all(&line);
                let lost = dropped.load(Ordering::Relaxed);
                if lost > reported {
                    let msg = format!(
                        "{} log line(s) dropped: stderr is not being read fast enough",
                        lost - reported
                    );
                    let _ = match Style::of(style.load(Ordering::Relaxed)) {
                        Style::Json => {
                            let mut fields = Map::new();
                            fields.insert("dropped_total".into(), lost.into());
                            let line = json_line(SystemTime::now(), &Level::WARN, &msg, &fields);
                            err.write_all(line.as_bytes())
                        }
                        Style::Journald => writeln!(err, "<4>rip-litestream: {msg}"),
                        Style::Text => writeln!(err, "rip-litestream: {msg}"),
                    };
                    reported = lost;
                }
                drop(err);
                written.fetch_add(1, Ordering::SeqCst);
            }
        });
    q
}

/// Writes each event to stderr as one JSON line shaped like Go slog's `JSONHandler`
/// ([`json_line`]): `time`, `level`, `msg`, then the event's fields flat, with `target` among
/// them. A litestream line forwarded as an event (target `litestream`) carries its own JSON
/// fields as one string field `fields`: they are spread flat as well.
pub struct JsonStderrLayer(pub QueuedStderr);

impl<S: Subscriber> Layer<S> for JsonStderrLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let meta = event.metadata();
        let mut f = Fields::of(event);
        if meta.target() == "litestream" {
            let inner = match f.fields.get("fields") {
                Some(Value::String(s)) if s.starts_with('{') => serde_json::from_str(s).ok(),
                _ => None,
            };
            if let Some(Value::Object(inner)) = inner {
                f.fields.remove("fields");
                for (k, v) in inner {
                    f.fields.entry(k).or_insert(v);
                }
            }
        }
        f.fields.insert("target".into(), meta.target().into());
        let line = json_line(SystemTime::now(), meta.level(), &f.message, &f.fields);
        use tracing_subscriber::fmt::MakeWriter;
        let _ = self.0.make_writer().write_all(line.as_bytes());
    }
}

enum Msg {
    Record(Record),
    /// Write what is queued, then stop.
    Close,
}

struct Record {
    level: i64,
    message: String,
    data: String,
    created: String,
}

/// The SQLite sink as a `tracing` layer.
pub struct LogDbLayer {
    tx: SyncSender<Msg>,
    dropped: Arc<AtomicU64>,
}

/// Keeps the sink's writer running; dropping it drains the queue and waits for the last batch.
pub struct LogDbGuard {
    tx: Option<SyncSender<Msg>>,
    writer: Option<std::thread::JoinHandle<()>>,
}

impl Drop for LogDbGuard {
    fn drop(&mut self) {
        // The layer keeps a sender too (inside the global subscriber): say so explicitly.
        if let Some(tx) = self.tx.take() {
            let _ = tx.send(Msg::Close);
        }
        if let Some(w) = self.writer.take() {
            let _ = w.join();
        }
    }
}

/// Opens (creating when missing) the `logs` table in `path` and starts the writer thread.
pub fn log_db(path: &Path) -> Result<(LogDbLayer, LogDbGuard)> {
    let conn = open(path)?;
    let (tx, rx) = sync_channel(QUEUE);
    let dropped = Arc::new(AtomicU64::new(0));
    let writer_dropped = dropped.clone();
    let writer_path = path.to_path_buf();
    let writer = std::thread::Builder::new()
        .name("log-db".into())
        .spawn(move || write_batches(conn, writer_path, rx, writer_dropped))
        .map_err(|e| Error::io("cannot start the log writer for", path, e))?;
    Ok((
        LogDbLayer {
            tx: tx.clone(),
            dropped,
        },
        LogDbGuard {
            tx: Some(tx),
            writer: Some(writer),
        },
    ))
}

fn open(path: &Path) -> Result<rusqlite::Connection> {
    let sqlite = |e| Error::Sqlite {
        op: "cannot open the log database",
        path: path.into(),
        source: e,
    };
    let conn = rusqlite::Connection::open(path).map_err(sqlite)?;
    conn.busy_timeout(Duration::from_secs(5)).map_err(sqlite)?;
    conn.execute_batch(LOGS_SCHEMA).map_err(|e| {
        if e.sqlite_error_code() == Some(rusqlite::ErrorCode::NotADatabase) {
            Error::NotSqlite { path: path.into() }
        } else {
            sqlite(e)
        }
    })?;
    Ok(conn)
}

impl<S: Subscriber> Layer<S> for LogDbLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let meta = event.metadata();
        let mut f = Fields::of(event);
        f.fields.insert("target".into(), meta.target().into());
        let record = Record {
            level: slog_level(meta.level()),
            message: f.message,
            data: Value::Object(f.fields).to_string(),
            created: humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
        };
        if let Err(TrySendError::Full(_)) = self.tx.try_send(Msg::Record(record)) {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            crate::metrics::count_dropped(crate::metrics::LogSink::LogDb);
        }
    }
}

fn write_batches(
    mut conn: rusqlite::Connection,
    path: PathBuf,
    rx: Receiver<Msg>,
    dropped: Arc<AtomicU64>,
) {
    let mut batch = Vec::with_capacity(BATCH);
    let mut reported = 0;
    let mut last_flush = Instant::now();
    loop {
        let wait = FLUSH_EVERY.saturating_sub(last_flush.elapsed());
        let closed = match rx.recv_timeout(wait) {
            Ok(Msg::Record(r)) => {
                batch.push(r);
                false
            }
            Ok(Msg::Close) | Err(RecvTimeoutError::Disconnected) => {
                while let Ok(Msg::Record(r)) = rx.try_recv() {
                    batch.push(r);
                }
                true
            }
            Err(RecvTimeoutError::Timeout) => false,
        };
        let lost = dropped.load(Ordering::Relaxed);
        if lost > reported {
            let data = serde_json::json!({"dropped_total": lost, "dropped_now": lost - reported});
            batch.push(Record {
                level: slog_level(&Level::WARN),
                message: "log records dropped: the log database could not keep up".into(),
                data: data.to_string(),
                created: humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
            });
            eprintln!(
                "rip-litestream: {} log record(s) dropped: the log database could not keep up",
                lost - reported
            );
            reported = lost;
        }
        if batch.len() >= BATCH
            || (!batch.is_empty() && (closed || last_flush.elapsed() >= FLUSH_EVERY))
        {
            if let Err(e) = insert(&mut conn, &batch) {
                eprintln!(
                    "rip-litestream: cannot write logs to {}: {e}",
                    path.display()
                );
            }
            batch.clear();
            last_flush = Instant::now();
        } else if batch.is_empty() {
            last_flush = Instant::now();
        }
        if closed {
            return;
        }
    }
}

fn insert(conn: &mut rusqlite::Connection, batch: &[Record]) -> rusqlite::Result<()> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    {
        let mut stmt = tx.prepare_cached(
            "INSERT INTO logs (level, message, data, created) VALUES (?, ?, ?, ?)",
        )?;
        for r in batch {
            stmt.execute(rusqlite::params![r.level, r.message, r.data, r.created])?;
        }
    }
    tx.commit()
}
