//! The shapes of our stderr lines for the platforms that read them: JSON objects as Go slog's
//! `JSONHandler` writes them (litestream and restinpieces log that way, so one parser reads all
//! three), and the sd-daemon priority prefixes (`<3>` ... `<7>`) journald reads from a service's
//! stderr.

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

/// The sd-daemon prefix journald reads a line's priority from: `<3>` error, `<4>` warning,
/// `<6>` info, `<7>` debug (and trace).
pub fn journal_priority(level: &Level) -> &'static str {
    match *level {
        Level::ERROR => "<3>",
        Level::WARN => "<4>",
        Level::INFO => "<6>",
        Level::DEBUG | Level::TRACE => "<7>",
    }
}

/// True when our stderr is the journal stream systemd connected: `JOURNAL_STREAM` (`dev:inode`)
/// names the file stderr is. False when stderr was redirected elsewhere (the variable is
/// inherited, the stream is not).
pub fn stderr_is_journal() -> bool {
    let Some(var) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    // dev_t and ino_t are u64 on Linux, other widths elsewhere.
    #[allow(clippy::unnecessary_cast)]
    match nix::sys::stat::fstat(2) {
        Ok(st) => journal_matches(&var.to_string_lossy(), st.st_dev as u64, st.st_ino as u64),
        Err(_) => false,
    }
}

fn journal_matches(var: &str, dev: u64, ino: u64) -> bool {
    let Some((d, i)) = var.trim().split_once(':') else {
        return false;
    };
    d.parse::<u64>().ok() == Some(dev) && i.parse::<u64>().ok() == Some(ino)
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

    #[test]
    fn journal_stream_must_name_stderr() {
        assert!(journal_matches("8:12345", 8, 12345));
        assert!(!journal_matches("8:12345", 8, 1));
        assert!(!journal_matches("9:12345", 8, 12345));
        assert!(!journal_matches("garbage", 8, 12345));
    }
}
