//! The validation rules of a litestream config, each failure naming its key and what to do.
//!
//! They follow litestream 0.5.17: whatever `litestream databases -no-expand-env` refuses from the
//! config alone is refused here too (its yaml.v2 type errors, `Config.Validate`,
//! `NewDBFromConfig`, `NewReplicaFromConfig`), and so is a little more on purpose: `exec:`,
//! `mcp-addr:`, placeholders, bare-number durations, repeated keys, an unknown log level, an
//! empty config, a metrics `addr` without a port. What depends on the machine (a bucket that
//! does not exist, an `sse-customer-key-path` file, a `dir:` with no database in it) is left to
//! litestream itself (`config check` asks it).

mod replica;

use std::path::PathBuf;
use std::time::Duration;

use super::document::{self, Kind, Node, Note, Value};
use super::duration::parse_go_duration;
use super::placeholder;
use super::schema::{type_of, Section, Type};
use super::{DbTarget, Problem, SocketSection, Strictness};

/// What validation found, and the facts the supervisor reads from a valid config.
#[derive(Default)]
pub(super) struct Report {
    pub errors: Vec<Problem>,
    pub warnings: Vec<Problem>,
    pub facts: Facts,
}

#[derive(Default)]
pub(super) struct Facts {
    pub dbs: Vec<DbTarget>,
    pub socket: Option<SocketSection>,
    pub shutdown_sync_timeout: Option<Duration>,
    pub sync_interval: Option<Duration>,
    /// `meta-path` of `path` databases that set one.
    pub meta_paths: Vec<(PathBuf, PathBuf)>,
}

/// litestream's floor for `heartbeat-interval` (`MinHeartbeatInterval`).
const MIN_HEARTBEAT_INTERVAL: Duration = Duration::from_secs(60);

struct Checker {
    strictness: Strictness,
    report: Report,
}

/// Runs every rule over `yaml`.
pub(super) fn check(yaml: &str, strictness: Strictness) -> Report {
    let mut checker = Checker {
        strictness,
        report: Report::default(),
    };
    match document::parse(yaml) {
        Ok(doc) => {
            checker.notes(&doc.notes);
            match doc.root {
                Some(root) if root.as_map().is_some() => checker.root(&root),
                Some(root) if !root.is_null() => checker.error(
                    "(root)",
                    format!(
                        "the config must be a mapping of keys, found {}",
                        describe(&root)
                    ),
                ),
                _ => checker.error(
                    "(root)",
                    "the config is empty: it needs at least a `dbs:` list",
                ),
            }
        }
        Err(e) => checker.error("(root)", format!("is not valid YAML: {}", e.message)),
    }
    checker.report
}

impl Checker {
    fn error(&mut self, key: &str, message: impl Into<String>) {
        self.report.errors.push(Problem {
            key: key.into(),
            message: message.into(),
        });
    }

    fn warn(&mut self, key: &str, message: impl Into<String>) {
        self.report.warnings.push(Problem {
            key: key.into(),
            message: message.into(),
        });
    }

    fn notes(&mut self, notes: &[Note]) {
        for note in notes {
            match note {
                // Our policy: yaml.v2 keeps the last one without a word.
                Note::Duplicate { at, key, line } => {
                    let place = if at.is_empty() {
                        String::new()
                    } else {
                        format!(" in {at}")
                    };
                    self.error(
                        "(root)",
                        format!("duplicate key `{key}`{place} at line {line}: litestream would silently keep only the last one; keep one"),
                    );
                }
                Note::MergeOverrides { at, key, line } => self.warn(
                    &join(at, key),
                    format!("is set at line {line}, but the `<<` merge below it sets it too and wins (litestream applies a mapping's keys in order): put `<<` first"),
                ),
            }
        }
    }

    /// Checks every key of `map` against the table for `section`, recursing into sections.
    fn walk(&mut self, map: &[(String, Node)], section: Section, at: &str) {
        for (name, v) in map {
            let key = join(at, name);
            match type_of(section, name) {
                // A key that only holds an anchor used elsewhere is a template, not a mistake.
                None if v.shared => {}
                None => {
                    let message = format!(
                        "unknown key `{name}` (litestream ignores it silently): check its spelling and indentation"
                    );
                    match self.strictness {
                        Strictness::Strict => self.error(&key, message),
                        Strictness::Lenient => self.warn(&key, message),
                    }
                }
                Some(t) => self.typed(&key, name, v, t),
            }
        }
    }

    /// yaml.v2's type check of `v` for a field of type `t`: litestream refuses the whole config
    /// on a mismatch. A null is Go's zero value and fits every type.
    // Long on purpose: the rule table for typed values, one arm per Go type litestream decodes into.
    fn typed(&mut self, key: &str, name: &str, v: &Node, t: Type) {
        if v.is_null() {
            return;
        }
        let kind = v.as_scalar().map(|s| s.kind);
        match t {
            Type::Str | Type::Bytes if kind.is_none() => self.error(
                key,
                format!("must be a single value, found {}", describe(v)),
            ),
            Type::Str => {}
            Type::Bytes => {
                let text = v.text().unwrap_or_default();
                if parse_byte_size(text).is_none() {
                    self.error(
                        key,
                        format!(
                            "`{text}` is not a size: write it like \"5MB\", \"8MiB\" or 5242880"
                        ),
                    );
                }
            }
            Type::Bool if kind.is_some_and(|k| matches!(k, Kind::Bool(_))) => {}
            Type::Bool => self.error(
                key,
                format!(
                    "must be true or false, found {}{}",
                    shown(v),
                    quoted_hint(v)
                ),
            ),
            Type::Int => match kind {
                Some(Kind::Int(i)) if i64::try_from(i).is_ok() => {}
                Some(Kind::Float(f)) if f.is_finite() => {}
                _ => self.error(
                    key,
                    format!(
                        "must be a whole number, found {}{}",
                        shown(v),
                        quoted_hint(v)
                    ),
                ),
            },
            Type::Mode => match kind {
                Some(Kind::Int(i)) if u32::try_from(i).is_ok() => {
                    let text = v.text().unwrap_or_default();
                    let octal_digits = text.bytes().all(|b| (b'0'..=b'7').contains(&b));
                    if !text.starts_with('0') && octal_digits && i > 7 {
                        self.warn(
                            key,
                            format!("`{text}` is decimal to litestream (mode {i:o} in octal): write 0{text} for the file mode {text}"),
                        );
                    }
                }
                _ => self.error(
                    key,
                    format!(
                        "must be a file mode such as 0600 (unquoted: octal), found {}{}",
                        shown(v),
                        quoted_hint(v)
                    ),
                ),
            },
            Type::Duration => {
                if let Some(d) = self.duration(key, v) {
                    if name == "sync-interval" {
                        let longest = self.report.facts.sync_interval.unwrap_or_default();
                        self.report.facts.sync_interval = Some(longest.max(d));
                    }
                }
            }
            Type::List => match v.as_seq() {
                Some(items) => {
                    for (i, item) in items.iter().enumerate() {
                        if item.as_scalar().is_none() {
                            self.error(
                                &format!("{key}[{i}]"),
                                format!("must be a single value, found {}", describe(item)),
                            );
                        }
                    }
                }
                None => self.error(
                    key,
                    format!("must be a list (`[a, b]`), found {}", describe(v)),
                ),
            },
            Type::Map(inner) => match v.as_map() {
                Some(m) => self.walk(m, inner, key),
                None => self.error(key, format!("must be a mapping, found {}", describe(v))),
            },
            Type::Maps(inner) => match v.as_seq() {
                Some(items) => {
                    for (i, item) in items.iter().enumerate() {
                        let item_key = format!("{key}[{i}]");
                        match item.as_map() {
                            Some(m) => self.walk(m, inner, &item_key),
                            None if item.is_null() => self.error(
                                &item_key,
                                "is an empty entry (litestream crashes on it): remove the `-` or fill it in",
                            ),
                            None => self.error(
                                &item_key,
                                format!("must be a mapping, found {}", describe(item)),
                            ),
                        }
                    }
                }
                None => self.error(key, format!("must be a list, found {}", describe(v))),
            },
        }
    }

    fn duration(&mut self, key: &str, v: &Node) -> Option<Duration> {
        match v.as_scalar().map(|s| s.kind) {
            // yaml.v2 reads a number into a time.Duration as nanoseconds: refused on purpose.
            Some(Kind::Int(_) | Kind::Float(_)) => {
                let n = v.text().unwrap_or_default();
                self.error(
                    key,
                    format!("a bare number ({n}) means nanoseconds to litestream: write a duration with its unit, like \"{n}s\""),
                );
                None
            }
            Some(Kind::Str) => {
                let s = v.text().unwrap_or_default();
                let parsed = parse_go_duration(s);
                if parsed.is_none() {
                    let why = if s.trim_start().starts_with('-') {
                        "is negative: litestream needs a positive duration".to_string()
                    } else {
                        "is not a duration: write it like \"1s\", \"500ms\" or \"5m\"".to_string()
                    };
                    self.error(key, format!("`{s}` {why}"));
                }
                parsed
            }
            _ => {
                self.error(
                    key,
                    format!("must be a duration like \"1s\", found {}", describe(v)),
                );
                None
            }
        }
    }

    /// Refuses placeholder-shaped `$NAME` and `${NAME}` in values ([`placeholder`]).
    fn no_placeholders(&mut self, v: &Node, key: Option<&str>, at: &str) {
        match &v.value {
            Value::Scalar(s) => {
                let credential = key.is_some_and(|k| crate::redact::SECRET_KEYS.contains(&k));
                match placeholder::find(&s.text, credential) {
                    Some(_) if credential => self.error(
                        at,
                        "the value is shaped like an environment-variable placeholder ($NAME or ${NAME}), but litestream runs with -no-expand-env and would use it as the secret itself: write the secret itself (the stored config is encrypted)",
                    ),
                    Some(p) => self.error(
                        at,
                        format!("`{p}` is shaped like an environment-variable placeholder, but litestream runs with -no-expand-env and would read it as text: write the value itself (a `$` that is part of a value, as in a password, is fine)"),
                    ),
                    None => {}
                }
            }
            Value::Seq(items) => {
                for (i, item) in items.iter().enumerate() {
                    self.no_placeholders(item, key, &format!("{at}[{i}]"));
                }
            }
            Value::Map(m) => {
                for (name, item) in m {
                    self.no_placeholders(item, Some(name), &join(at, name));
                }
            }
        }
    }

    // Long on purpose: the rules of the top level, one after the other, each naming its key.
    fn root(&mut self, root: &Node) {
        let entries = root.as_map().unwrap_or_default();
        self.walk(entries, Section::Root, "");
        for (name, item) in entries {
            self.no_placeholders(item, Some(name), name);
        }
        if root
            .get("exec")
            .and_then(Node::text)
            .is_some_and(|t| !t.is_empty())
        {
            self.error(
                "exec",
                "is not supported: rip-litestream is the process manager, run the application with `rip-litestream run -- APP ARGS...`",
            );
        }
        if root
            .get("mcp-addr")
            .and_then(Node::text)
            .is_some_and(|t| !t.is_empty())
        {
            self.error(
                "mcp-addr",
                "is not supported: it re-reads the config from disk and exposes control over HTTP; remove it",
            );
        }
        if let Some(addr) = root
            .get("addr")
            .and_then(Node::text)
            .filter(|a| !a.is_empty())
        {
            self.addr(addr);
        }
        if let Some(logging) = root.get("logging").filter(|l| l.as_map().is_some()) {
            self.logging(logging);
        }
        if let Some(socket) = root.get("socket").filter(|s| s.as_map().is_some()) {
            self.report.facts.socket = Some(SocketSection {
                enabled: socket
                    .get("enabled")
                    .and_then(Node::as_bool)
                    .unwrap_or(false),
                path: socket.get("path").and_then(Node::text).map(PathBuf::from),
            });
        }
        self.report.facts.shutdown_sync_timeout = duration_at(root, &["shutdown-sync-timeout"]);
        self.positive(root, "", &["snapshot", "interval"]);
        self.positive(root, "", &["snapshot", "retention"]);
        self.positive(root, "", &["l0-retention-check-interval"]);
        self.positive(root, "", &["shutdown-sync-interval"]);
        self.heartbeat(root);
        if let Some(levels) = root.get("levels").and_then(Node::as_seq) {
            for (i, level) in levels.iter().enumerate() {
                let at = format!("levels[{i}]");
                match level.get("interval").filter(|v| !v.is_null()) {
                    Some(_) => self.positive(level, &at, &["interval"]),
                    None if level.as_map().is_some() => self.error(
                        &join(&at, "interval"),
                        "is missing: every compaction level needs an interval, such as \"5m\"",
                    ),
                    None => {}
                }
            }
        }
        match root.get("dbs").map(|d| (d, d.as_seq())) {
            Some((_, Some(dbs))) if !dbs.is_empty() => {
                for (i, db) in dbs.iter().enumerate() {
                    if db.as_map().is_some() {
                        self.db(db, root, &format!("dbs[{i}]"));
                    }
                }
                self.snapshot_conflicts(dbs, "interval");
                self.snapshot_conflicts(dbs, "retention");
            }
            Some((d, None)) if !d.is_null() => {} // reported by walk
            _ => self.error(
                "dbs",
                "no database to replicate: add a `dbs:` list with at least one `- path: /path/to/app.db` and its `replica:`",
            ),
        }
    }

    /// litestream refuses zero for `path` (negative durations are refused as durations).
    fn positive(&mut self, node: &Node, at: &str, path: &[&str]) {
        if duration_at(node, path) == Some(Duration::ZERO) {
            self.error(
                &join(at, &path.join(".")),
                "must be greater than 0 (litestream refuses 0): remove it for the default or give a duration such as \"1m\"",
            );
        }
    }

    fn heartbeat(&mut self, root: &Node) {
        if let Some(url) = root.get("heartbeat-url").and_then(Node::text) {
            if !url.is_empty() && !url.starts_with("http://") && !url.starts_with("https://") {
                self.error(
                    "heartbeat-url",
                    "must be an http:// or https:// URL (litestream refuses anything else)",
                );
            }
        }
        if let Some(d) = duration_at(root, &["heartbeat-interval"]) {
            if d < MIN_HEARTBEAT_INTERVAL {
                self.error(
                    "heartbeat-interval",
                    format!("{} is below litestream's minimum of 1 minute (it refuses shorter ones, with or without `heartbeat-url`): use \"1m\" or more", humantime::format_duration(d)),
                );
            }
        }
    }

    /// `addr:` for the metrics server: `replicate` refuses it without a port; off loopback it also
    /// serves /debug/pprof.
    fn addr(&mut self, addr: &str) {
        let Some((host, port)) = split_host_port(addr) else {
            self.error(
                "addr",
                format!("`{addr}` has no port: litestream refuses to start; write it as host:port, such as 127.0.0.1:9090"),
            );
            return;
        };
        if !is_loopback(host) {
            self.warn(
                "addr",
                format!("`{addr}` is not a loopback address: the metrics server also serves /debug/pprof; bind it to 127.0.0.1:{port}"),
            );
        }
    }

    fn logging(&mut self, logging: &Node) {
        if let Some(level) = logging.get("level").filter(|l| !l.is_null()) {
            let ok = level.text().is_some_and(|l| {
                matches!(
                    l.to_ascii_lowercase().as_str(),
                    "trace" | "debug" | "info" | "warn" | "warning" | "error"
                )
            });
            // Our policy: litestream falls back to INFO without a word.
            if !ok {
                self.error(
                    "logging.level",
                    format!(
                        "{} is not a level (litestream would silently log at INFO): use trace, debug, info, warn or error",
                        shown(level)
                    ),
                );
            }
        }
        if let Some(kind) = logging.get("type").filter(|k| !k.is_null()) {
            if !matches!(kind.text(), Some("text" | "json" | "pretty" | "")) {
                self.error(
                    "logging.type",
                    format!(
                        "{} is not a log format (litestream would panic): use text, json or pretty",
                        shown(kind)
                    ),
                );
            }
        }
    }

    fn db(&mut self, db: &Node, root: &Node, at: &str) {
        let text = |key: &str| db.get(key).and_then(Node::text).filter(|s| !s.is_empty());
        let (path, dir) = (text("path"), text("dir"));
        match (path, dir) {
            (Some(_), Some(_)) => self.error(at, "has both `path` and `dir`: keep one (`path` for a file, `dir` + `pattern` for a directory)"),
            (None, None) => self.error(&join(at, "path"), "is missing: set `path` to the database file (or `dir` and `pattern` for a directory)"),
            (Some(p), None) => {
                // Paths as litestream resolves them (`~`, relative paths, `sqlite://`).
                let p = crate::runtime::litestream_path(p);
                self.report.facts.dbs.push(DbTarget::Path(p.clone()));
                if let Some(meta) = text("meta-path") {
                    self.report
                        .facts
                        .meta_paths
                        .push((p, crate::runtime::litestream_path(meta)));
                }
            }
            (None, Some(d)) => match text("pattern") {
                Some(pattern) => self.report.facts.dbs.push(DbTarget::Dir {
                    dir: crate::runtime::litestream_path(d),
                    pattern: pattern.into(),
                }),
                None => self.error(&join(at, "pattern"), "is missing: `dir` needs a file pattern such as \"*.db\""),
            },
        }
        if db.get("watch").and_then(Node::as_bool) == Some(true) && dir.is_none() {
            self.error(
                &join(at, "watch"),
                "only works with `dir` (it watches a directory for new databases): remove it for a `path` database",
            );
        }
        if text("meta-dir").is_some() {
            let message = if text("meta-path").is_some() {
                "is set together with `meta-path`: litestream refuses both; keep `meta-path`"
            } else if dir.is_none() {
                "only works with `dir`: for a single database set `meta-path`, the state directory itself"
            } else {
                // `replicate` takes it, but `databases` (what `config check` asks) refuses it.
                "is refused by litestream 0.5.17's `databases` check even with `dir`, though `replicate` takes it: use `meta-path` instead (litestream derives each database's own state directory under it)"
            };
            self.error(&join(at, "meta-dir"), message);
        }
        self.positive(db, at, &["snapshot", "interval"]);
        self.positive(db, at, &["snapshot", "retention"]);
        // litestream sees no replica in a null `replica` or an empty `replicas` list.
        let replica = db.get("replica").filter(|r| !r.is_null());
        let replicas = db
            .get("replicas")
            .filter(|r| !r.is_null() && r.as_seq().is_none_or(|s| !s.is_empty()));
        match (replica, replicas) {
            (Some(_), Some(_)) => {
                self.error(at, "has both `replica` and `replicas`: keep only `replica`")
            }
            (None, None) => self.error(
                &join(at, "replica"),
                "is missing: add a `replica:` with a `path` (a directory), a `url` such as s3://bucket/path, or a `type` and its settings",
            ),
            (Some(r), None) => {
                if r.as_map().is_some() {
                    replica::check(self, r, root, &join(at, "replica"));
                }
            }
            (None, Some(rs)) => match rs.as_seq() {
                Some(rs) if rs.len() != 1 => self.error(
                    &join(at, "replicas"),
                    format!("has {} entries; litestream 0.5 supports exactly one replica per database: use a single `replica:`", rs.len()),
                ),
                Some(rs) if rs[0].as_map().is_some() => {
                    replica::check(self, &rs[0], root, &format!("{at}.replicas[0]"))
                }
                _ => {} // wrong shapes: reported by walk
            },
        }
    }

    /// litestream keeps one snapshot interval (and retention) for all databases: two databases
    /// setting different ones is refused.
    fn snapshot_conflicts(&mut self, dbs: &[Node], what: &str) {
        let mut first: Option<(usize, Duration)> = None;
        for (i, db) in dbs.iter().enumerate() {
            let Some(d) = duration_at(db, &["snapshot", what]) else {
                continue;
            };
            match first {
                None => first = Some((i, d)),
                Some((j, e)) if e != d => {
                    self.error(
                        &format!("dbs[{i}].snapshot.{what}"),
                        format!("differs from dbs[{j}].snapshot.{what} ({} vs {}): litestream has one snapshot {what} for all databases; set the same value, or `snapshot.{what}` once at the top level", humantime::format_duration(d), humantime::format_duration(e)),
                    );
                }
                Some(_) => {}
            }
        }
    }
}

/// The duration at `path` under `node`, when it is a valid duration string.
fn duration_at(node: &Node, path: &[&str]) -> Option<Duration> {
    let v = path.iter().try_fold(node, |n, k| n.get(k))?;
    match v.as_scalar()?.kind {
        Kind::Str => parse_go_duration(v.text()?),
        _ => None,
    }
}

/// Go's `net.SplitHostPort`, answering only when there is a port.
fn split_host_port(addr: &str) -> Option<(&str, &str)> {
    let (host, port) = if let Some(rest) = addr.strip_prefix('[') {
        let (host, rest) = rest.split_once(']')?;
        (host, rest.strip_prefix(':')?)
    } else {
        let (host, port) = addr.rsplit_once(':')?;
        if host.contains(':') {
            return None;
        }
        (host, port)
    };
    (!port.is_empty()).then_some((host, port))
}

fn is_loopback(host: &str) -> bool {
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .map(|ip| ip.is_loopback())
            .unwrap_or(false)
}

/// go-humanize's `ParseBytes`, as litestream's `ByteSize` uses it: a number, then an optional
/// unit (`B`, `K`/`KB`/`KiB`, `M`... up to `E`), any case.
fn parse_byte_size(text: &str) -> Option<u64> {
    let text = text.trim();
    let digits = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == ','))
        .unwrap_or(text.len());
    let number: f64 = text[..digits].replace(',', "").parse().ok()?;
    let unit = text[digits..].trim().to_ascii_lowercase();
    let multiplier = match unit.as_str() {
        "" | "b" => 1.0,
        unit => {
            // `kb`, `k`, `kib`, `ki`, ... `eib`.
            let unit = unit.strip_suffix('b').unwrap_or(unit);
            let (prefix, base) = match unit.strip_suffix('i') {
                Some(p) => (p, 1024f64),
                None => (unit, 1000f64),
            };
            let power = "kmgtpe".find(prefix).filter(|_| prefix.len() == 1)? + 1;
            base.powi(power as i32)
        }
    };
    let bytes = number * multiplier;
    (bytes < u64::MAX as f64).then_some(bytes as u64)
}

pub(super) fn join(at: &str, key: &str) -> String {
    if at.is_empty() {
        key.into()
    } else {
        format!("{at}.{key}")
    }
}

pub(super) fn describe(v: &Node) -> String {
    match &v.value {
        Value::Scalar(s) => match s.kind {
            Kind::Null => "nothing".into(),
            Kind::Bool(_) => "a boolean".into(),
            Kind::Int(_) | Kind::Float(_) => "a number".into(),
            Kind::Str => "a string".into(),
        },
        Value::Seq(_) => "a list".into(),
        Value::Map(_) => "a mapping".into(),
    }
}

/// A short rendering of a non-secret scalar for messages.
pub(super) fn shown(v: &Node) -> String {
    match v.text() {
        Some(text) => format!("`{text}`"),
        None => describe(v),
    }
}

/// A hint for a quoted value that would be right unquoted: yaml.v2 reads quotes as text.
fn quoted_hint(v: &Node) -> &'static str {
    match v.as_scalar() {
        Some(s)
            if s.kind == Kind::Str
                && !matches!(document::plain_kind(&s.text), Kind::Str | Kind::Null) =>
        {
            " (quoted, so text to litestream: drop the quotes)"
        }
        _ => "",
    }
}

#[cfg(test)]
mod tests;
