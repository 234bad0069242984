//! Our JSON stderr lines, shaped as Go slog's `JSONHandler` writes them: litestream and
//! restinpieces log that way, so one parser reads all three. (journald's priority prefixes are
//! in [`crate::journal`].)

use std::fmt::Write as _;
use std::time::SystemTime;

use serde_json::{Map, Value};
use tracing::Level;

/// The target of the event every fatal error becomes (see the binary's `report`): the text
/// layer leaves it out (the `error:` line says it already), the JSON and database sinks keep it.
pub const FATAL_TARGET: &str = "rip_litestream::fatal";

/// slog's name for a level: `DEBUG`, `INFO`, `WARN`, `ERROR`; TRACE is below DEBUG by 4, which
/// slog names `DEBUG-4`.
pub fn level_name(level: &Level) -> &'static str {
    match *level {
        Level::TRACE => "DEBUG-4",
        Level::DEBUG => "DEBUG",
        Level::INFO => "INFO",
        Level::WARN => "WARN",
        Level::ERROR => "ERROR",
    }
}

/// One JSON line (with its newline) shaped like slog's `JSONHandler`: `time` (RFC 3339 UTC with
/// nanoseconds), `level`, `msg`, then `fields` flat, by name. A field named like one of
/// the first three is written as `fields.<name>` so that no key repeats.
pub fn json_line(
    time: SystemTime,
    level: &Level,
    msg: &str,
    fields: &Map<String, Value>,
) -> String {
    let quote = |s: &str| Value::from(s).to_string();
    let mut out = String::with_capacity(128 + msg.len());
    let _ = write!(
        out,
        "{{\"time\":\"{}\",\"level\":\"{}\",\"msg\":{}",
        humantime::format_rfc3339_nanos(time),
        level_name(level),
        quote(msg)
    );
    for (k, v) in fields {
        let key = match k.as_str() {
            "time" | "level" | "msg" => format!("fields.{k}"),
            _ => k.clone(),
        };
        let _ = write!(out, ",{}:{}", quote(&key), v);
    }
    out.push_str("}\n");
    out
}

/// How [`QueuedStderr`](super::QueuedStderr) shapes lines of its own (its notice of dropped lines) and whether it
/// prefixes each event with journald's priority.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Style {
    /// Plain text lines.
    Text = 0,
    /// Text lines, each prefixed with its sd-daemon priority (`<3>` ...): stderr is the journal.
    Journald = 1,
    /// JSON lines ([`json_line`]).
    Json = 2,
}

impl Style {
    pub(crate) fn of(v: u8) -> Style {
        match v {
            1 => Style::Journald,
            2 => Style::Json,
            _ => Style::Text,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_lines_start_with_time_level_msg_and_keep_fields_flat() {
        let mut fields = Map::new();
        fields.insert("pid".into(), 42.into());
        fields.insert("msg".into(), "again".into());
        fields.insert("db".into(), "/a \"b\".db".into());
        let t = SystemTime::UNIX_EPOCH + std::time::Duration::new(1, 5);
        let line = json_line(t, &Level::WARN, "hello \"x\"\n", &fields);
        assert_eq!(
            line,
            "{\"time\":\"1970-01-01T00:00:01.000000005Z\",\"level\":\"WARN\",\"msg\":\"hello \\\"x\\\"\\n\",\"db\":\"/a \\\"b\\\".db\",\"fields.msg\":\"again\",\"pid\":42}\n"
        );
        let v: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["fields.msg"], "again");
        assert_eq!(level_name(&Level::TRACE), "DEBUG-4");
    }
}
