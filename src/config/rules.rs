//! The validation rules of a litestream config, each failure naming its key and what to do.

use std::path::PathBuf;
use std::time::Duration;

use serde_yaml::{Mapping, Value};

use super::duration::parse_go_duration;
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

/// The sections of the config, for the table of known keys.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Section {
    Root,
    Socket,
    Level,
    Snapshot,
    Validation,
    Retention,
    Logging,
    Db,
    Replica,
    Age,
}

enum Kind {
    Scalar,
    Duration,
    Map(Section),
    List(Section),
}

/// Replica types litestream 0.5 knows.
pub const REPLICA_TYPES: &[&str] = &["file", "s3", "gs", "abs", "sftp", "nats", "oss", "webdav"];

/// Settings allowed on each replica, and globally as defaults for all replicas.
const REPLICA_SETTINGS: &[&str] = &[
    "max-sync-ltx-files",
    "auto-recover",
    "access-key-id",
    "secret-access-key",
    "region",
    "bucket",
    "endpoint",
    "force-path-style",
    "sign-payload",
    "require-content-md5",
    "skip-verify",
    "storage-class",
    "part-size",
    "concurrency",
    "sse-customer-algorithm",
    "sse-customer-key",
    "sse-customer-key-path",
    "sse-kms-key-id",
    "account-name",
    "account-key",
    "sas-token",
    "host",
    "user",
    "password",
    "key-path",
    "concurrent-writes",
    "host-key",
    "webdav-url",
    "webdav-username",
    "webdav-password",
    "jwt",
    "seed",
    "creds",
    "nkey",
    "username",
    "token",
    "tls",
    "root-cas",
    "client-cert",
    "client-key",
    "max-reconnects",
];
const REPLICA_DURATIONS: &[&str] = &[
    "sync-interval",
    "validation-interval",
    "reconnect-wait",
    "timeout",
];

fn kind_of(section: Section, key: &str) -> Option<Kind> {
    use Kind::*;
    use Section as S;
    let replica_setting = |key: &str| {
        if REPLICA_DURATIONS.contains(&key) {
            Some(Duration)
        } else if key == "age" {
            Some(Map(S::Age))
        } else if REPLICA_SETTINGS.contains(&key) {
            Some(Scalar)
        } else {
            None
        }
    };
    match (section, key) {
        (S::Root, "addr" | "heartbeat-url" | "verify-compaction" | "exec" | "mcp-addr") => {
            Some(Scalar)
        }
        (S::Root, "socket") => Some(Map(S::Socket)),
        (S::Root, "levels") => Some(List(S::Level)),
        (S::Root, "snapshot") | (S::Db, "snapshot") => Some(Map(S::Snapshot)),
        (S::Root, "validation") => Some(Map(S::Validation)),
        (S::Root, "retention") => Some(Map(S::Retention)),
        (S::Root, "logging") => Some(Map(S::Logging)),
        (S::Root, "dbs") => Some(List(S::Db)),
        (
            S::Root,
            "l0-retention"
            | "l0-retention-check-interval"
            | "heartbeat-interval"
            | "shutdown-sync-timeout"
            | "shutdown-sync-interval",
        ) => Some(Duration),
        (S::Root, k) => replica_setting(k),
        (S::Socket, "enabled" | "path" | "permissions") => Some(Scalar),
        (S::Level, "interval") | (S::Validation, "interval") => Some(Duration),
        (S::Snapshot, "interval" | "retention") => Some(Duration),
        (S::Retention, "enabled") => Some(Scalar),
        (S::Logging, "level" | "type" | "stderr" | "source") => Some(Scalar),
        (
            S::Db,
            "path"
            | "dir"
            | "pattern"
            | "recursive"
            | "watch"
            | "meta-path"
            | "meta-dir"
            | "min-checkpoint-page-count"
            | "truncate-page-n"
            | "max-sync-wal-bytes"
            | "restore-if-db-not-exists",
        ) => Some(Scalar),
        (S::Db, "monitor-interval" | "checkpoint-interval" | "busy-timeout") => Some(Duration),
        (S::Db, "replica") => Some(Map(S::Replica)),
        (S::Db, "replicas") => Some(List(S::Replica)),
        (S::Replica, "type" | "name" | "path" | "url") => Some(Scalar),
        (S::Replica, k) => replica_setting(k),
        (S::Age, "identities" | "recipients") => Some(Scalar),
        _ => None,
    }
}

struct Checker {
    strictness: Strictness,
    report: Report,
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

    /// Checks every key of `map` against the table for `section`, recursing into sections.
    fn walk(&mut self, map: &Mapping, section: Section, at: &str) {
        for (k, v) in map {
            let Some(name) = k.as_str() else {
                self.error(at, format!("keys must be strings, found {}", describe(k)));
                continue;
            };
            let key = join(at, name);
            match kind_of(section, name) {
                None => {
                    let message = format!(
                        "unknown key `{name}` (litestream ignores it silently): check its spelling and indentation"
                    );
                    match self.strictness {
                        Strictness::Strict => self.error(&key, message),
                        Strictness::Lenient => self.warn(&key, message),
                    }
                }
                Some(Kind::Scalar) => {}
                Some(Kind::Duration) => {
                    if let Some(d) = self.duration(&key, v) {
                        if name == "sync-interval" {
                            let longest = self.report.facts.sync_interval.unwrap_or_default();
                            self.report.facts.sync_interval = Some(longest.max(d));
                        }
                    }
                }
                Some(Kind::Map(inner)) => match v {
                    Value::Mapping(m) => self.walk(m, inner, &key),
                    Value::Null => {}
                    other => self.error(
                        &key,
                        format!("must be a mapping, found {}", describe(other)),
                    ),
                },
                Some(Kind::List(inner)) => match v {
                    Value::Sequence(items) => {
                        for (i, item) in items.iter().enumerate() {
                            let item_key = format!("{key}[{i}]");
                            match item {
                                Value::Mapping(m) => self.walk(m, inner, &item_key),
                                other => self.error(
                                    &item_key,
                                    format!("must be a mapping, found {}", describe(other)),
                                ),
                            }
                        }
                    }
                    Value::Null => {}
                    other => self.error(&key, format!("must be a list, found {}", describe(other))),
                },
            }
        }
    }

    fn duration(&mut self, key: &str, v: &Value) -> Option<Duration> {
        match v {
            Value::String(s) => {
                match parse_go_duration(s) {
                    Some(d) => Some(d),
                    None => {
                        self.error(key, format!("`{s}` is not a duration: write it like \"1s\", \"500ms\" or \"5m\""));
                        None
                    }
                }
            }
            Value::Number(n) => {
                self.error(
                    key,
                    format!("a bare number ({n}) means nanoseconds to litestream: write a duration with its unit, like \"{n}s\""),
                );
                None
            }
            other => {
                self.error(
                    key,
                    format!("must be a duration like \"1s\", found {}", describe(other)),
                );
                None
            }
        }
    }

    /// Rejects `$NAME` and `${NAME}` anywhere: the stored config must be self-contained.
    fn no_env_vars(&mut self, v: &Value, at: &str) {
        match v {
            Value::String(s) if has_env_reference(s) => self.error(
                at,
                "contains environment-variable syntax ($NAME or ${NAME}): the stored config must be self-contained, put the value itself in the config",
            ),
            Value::Sequence(items) => {
                for (i, item) in items.iter().enumerate() {
                    self.no_env_vars(item, &format!("{at}[{i}]"));
                }
            }
            Value::Mapping(m) => {
                for (k, item) in m {
                    let name = k.as_str().map(str::to_owned).unwrap_or_else(|| describe(k));
                    self.no_env_vars(item, &join(at, &name));
                }
            }
            Value::Tagged(t) => self.no_env_vars(&t.value, at),
            _ => {}
        }
    }

    fn root(&mut self, root: &Mapping, text: &str) {
        self.walk(root, Section::Root, "");
        // Most configs hold no `$` at all: then there is nothing to look for.
        if text.contains('$') {
            for (k, item) in root {
                let name = k.as_str().map(str::to_owned).unwrap_or_else(|| describe(k));
                self.no_env_vars(item, &name);
            }
        }
        if root.contains_key("exec") {
            self.error(
                "exec",
                "is not supported: rip-litestream is the process manager, run the application with `rip-litestream run -- APP ARGS...`",
            );
        }
        if root.contains_key("mcp-addr") {
            self.error(
                "mcp-addr",
                "is not supported: it re-reads the config from disk and exposes control over HTTP; remove it",
            );
        }
        if let Some(addr) = root.get("addr").and_then(Value::as_str) {
            if !is_loopback_addr(addr) {
                self.warn(
                    "addr",
                    format!("`{addr}` is not a loopback address: the metrics server also serves /debug/pprof; bind it to 127.0.0.1"),
                );
            }
        }
        if let Some(Value::Mapping(logging)) = root.get("logging") {
            self.logging(logging);
        }
        if let Some(Value::Mapping(socket)) = root.get("socket") {
            self.report.facts.socket = Some(SocketSection {
                enabled: socket.get("enabled").map(yaml11_true).unwrap_or(false),
                path: socket
                    .get("path")
                    .and_then(Value::as_str)
                    .map(PathBuf::from),
            });
        }
        if let Some(Value::String(s)) = root.get("shutdown-sync-timeout") {
            self.report.facts.shutdown_sync_timeout = parse_go_duration(s);
        }
        match root.get("dbs") {
            Some(Value::Sequence(dbs)) if !dbs.is_empty() => {
                for (i, db) in dbs.iter().enumerate() {
                    if let Value::Mapping(db) = db {
                        self.db(db, &format!("dbs[{i}]"));
                    }
                }
            }
            Some(Value::Sequence(_)) | Some(Value::Null) | None => self.error(
                "dbs",
                "no database to replicate: add a `dbs:` list with at least one `- path: /path/to/app.db` and its `replica:`",
            ),
            Some(_) => {} // reported by walk
        }
    }

    fn logging(&mut self, logging: &Mapping) {
        if let Some(level) = logging.get("level") {
            let ok = level
                .as_str()
                .map(|l| {
                    matches!(
                        l.to_ascii_lowercase().as_str(),
                        "trace" | "debug" | "info" | "warn" | "warning" | "error"
                    )
                })
                .unwrap_or(false);
            if !ok {
                self.error(
                    "logging.level",
                    format!(
                        "{} is not a level: use trace, debug, info, warn or error",
                        shown(level)
                    ),
                );
            }
        }
        if let Some(kind) = logging.get("type") {
            if !matches!(kind.as_str(), Some("text" | "json")) {
                self.error(
                    "logging.type",
                    format!(
                        "{} is not a log format (litestream would panic): use text or json",
                        shown(kind)
                    ),
                );
            }
        }
    }

    fn db(&mut self, db: &Mapping, at: &str) {
        let path = db
            .get("path")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty());
        let dir = db
            .get("dir")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty());
        match (path, dir) {
            (Some(_), Some(_)) => self.error(at, "has both `path` and `dir`: keep one (`path` for a file, `dir` + `pattern` for a directory)"),
            (None, None) => self.error(&join(at, "path"), "is missing: set `path` to the database file (or `dir` and `pattern` for a directory)"),
            (Some(p), None) => {
                // Paths as litestream resolves them (`~`, relative paths, `sqlite://`).
                let p = crate::runtime::litestream_path(p);
                self.report.facts.dbs.push(DbTarget::Path(p.clone()));
                if let Some(meta) = db.get("meta-path").and_then(Value::as_str) {
                    self.report
                        .facts
                        .meta_paths
                        .push((p, crate::runtime::litestream_path(meta)));
                }
            }
            (None, Some(d)) => match db.get("pattern").and_then(Value::as_str).filter(|s| !s.is_empty()) {
                Some(pattern) => self.report.facts.dbs.push(DbTarget::Dir {
                    dir: crate::runtime::litestream_path(d),
                    pattern: pattern.into(),
                }),
                None => self.error(&join(at, "pattern"), "is missing: `dir` needs a file pattern such as \"*.db\""),
            },
        }
        match (db.get("replica"), db.get("replicas")) {
            (Some(_), Some(_)) => {
                self.error(at, "has both `replica` and `replicas`: keep only `replica`")
            }
            (None, None) => self.error(
                &join(at, "replica"),
                "is missing: add a `replica:` with a `type` (file, s3, ...) or a `url`",
            ),
            (Some(Value::Mapping(r)), None) => self.replica(r, &join(at, "replica")),
            (None, Some(Value::Sequence(rs))) => {
                if rs.len() != 1 {
                    self.error(
                        &join(at, "replicas"),
                        format!("has {} entries; litestream 0.5 supports exactly one replica per database: use a single `replica:`", rs.len()),
                    );
                } else if let Value::Mapping(r) = &rs[0] {
                    self.replica(r, &format!("{at}.replicas[0]"));
                }
            }
            (Some(Value::Null), None) | (None, Some(Value::Null)) => self.error(
                &join(at, "replica"),
                "is empty: give it a `type` (file, s3, ...) or a `url`",
            ),
            _ => {} // other wrong shapes are reported by walk
        }
    }

    fn replica(&mut self, replica: &Mapping, at: &str) {
        let url = replica
            .get("url")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty());
        match replica.get("type") {
            Some(Value::String(t))
                if t == "file"
                    && url.is_none()
                    && replica.get("path").and_then(Value::as_str).is_none() =>
            {
                self.error(
                    &join(at, "path"),
                    "is missing: a file replica needs the directory it writes to",
                );
            }
            Some(Value::String(t)) if REPLICA_TYPES.contains(&t.as_str()) => {}
            Some(t) => self.error(
                &join(at, "type"),
                format!(
                    "{} is not a replica type: use one of {}",
                    shown(t),
                    REPLICA_TYPES.join(", ")
                ),
            ),
            None if url.is_none() => self.error(
                &join(at, "type"),
                format!(
                    "is missing: set `type` ({}) or a `url` such as s3://bucket/path",
                    REPLICA_TYPES.join(", ")
                ),
            ),
            None => {}
        }
        if let Some(url) = url {
            let scheme = url.split_once("://").map(|(s, _)| s);
            let known = matches!(
                scheme,
                Some("file" | "s3" | "gs" | "abs" | "sftp" | "nats" | "oss" | "webdav" | "webdavs")
            );
            if !known {
                self.error(
                    &join(at, "url"),
                    "is not a replica URL: use a scheme litestream knows, such as s3://bucket/path or file:///backups/app",
                );
            }
        }
    }
}

/// Runs every rule over `yaml`.
pub(super) fn check(yaml: &str, strictness: Strictness) -> Report {
    let mut checker = Checker {
        strictness,
        report: Report::default(),
    };
    match serde_yaml::from_str::<Value>(yaml) {
        Ok(Value::Mapping(root)) => checker.root(&root, yaml),
        Ok(Value::Null) => checker.error(
            "(root)",
            "the config is empty: it needs at least a `dbs:` list",
        ),
        Ok(other) => checker.error(
            "(root)",
            format!(
                "the config must be a mapping of keys, found {}",
                describe(&other)
            ),
        ),
        Err(e) => checker.error("(root)", scrub_yaml_error(&e)),
    }
    checker.report
}

/// A YAML error message without the offending content (it may hold a secret), keeping the
/// position.
fn scrub_yaml_error(e: &serde_yaml::Error) -> String {
    // serde_yaml's duplicate-key message names the key (not a value): keep it.
    let text = e.to_string();
    if let Some((place, rest)) = text.split_once("duplicate entry with key ") {
        let key = rest.split(" at ").next().unwrap_or(rest);
        let place = place.trim_end_matches(": ");
        let place = if place.is_empty() {
            String::new()
        } else {
            format!(" in {place}")
        };
        return format!(
            "duplicate key {key}{place}{}: litestream would silently keep only the last one; keep one",
            e.location()
                .map(|l| format!(" at line {}", l.line()))
                .unwrap_or_default()
        );
    }
    match e.location() {
        Some(loc) => format!(
            "is not valid YAML: syntax error at line {} column {}",
            loc.line(),
            loc.column()
        ),
        None => "is not valid YAML: syntax error".into(),
    }
}

fn join(at: &str, key: &str) -> String {
    if at.is_empty() {
        key.into()
    } else {
        format!("{at}.{key}")
    }
}

fn describe(v: &Value) -> String {
    match v {
        Value::Null => "nothing".into(),
        Value::Bool(_) => "a boolean".into(),
        Value::Number(_) => "a number".into(),
        Value::String(_) => "a string".into(),
        Value::Sequence(_) => "a list".into(),
        Value::Mapping(_) => "a mapping".into(),
        Value::Tagged(_) => "a tagged value".into(),
    }
}

/// A short rendering of a non-secret scalar for messages.
fn shown(v: &Value) -> String {
    match v {
        Value::String(s) => format!("`{s}`"),
        Value::Number(n) => format!("`{n}`"),
        Value::Bool(b) => format!("`{b}`"),
        other => describe(other),
    }
}

/// YAML 1.1 truth, as litestream's Go parser reads it.
fn yaml11_true(v: &Value) -> bool {
    match v {
        Value::Bool(b) => *b,
        Value::String(s) => matches!(
            s.as_str(),
            "y" | "Y" | "yes" | "Yes" | "YES" | "on" | "On" | "ON" | "true" | "True" | "TRUE"
        ),
        _ => false,
    }
}

/// `$NAME`, `${NAME}` or a shell special (`$1`, `$@`, ...) as Go's `os.ExpandEnv` would expand.
pub(crate) fn has_env_reference(s: &str) -> bool {
    let b = s.as_bytes();
    b.windows(2).any(|w| {
        w[0] == b'$'
            && (w[1] == b'{'
                || w[1] == b'_'
                || w[1].is_ascii_alphanumeric()
                || b"*#$@!?-".contains(&w[1]))
    })
}

fn is_loopback_addr(addr: &str) -> bool {
    let host = match addr.rsplit_once(':') {
        Some((h, _)) => h.trim_start_matches('[').trim_end_matches(']'),
        None => addr,
    };
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .map(|ip| ip.is_loopback())
            .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errors(yaml: &str) -> Vec<String> {
        check(yaml, Strictness::Lenient)
            .errors
            .iter()
            .map(|p| p.to_string())
            .collect()
    }

    const GOOD: &str =
        "dbs:\n  - path: /data/app.db\n    replica:\n      type: file\n      path: /backup\n";

    #[test]
    fn good_config_passes() {
        let r = check(GOOD, Strictness::Strict);
        assert!(r.errors.is_empty(), "{:?}", r.errors);
        assert_eq!(r.facts.dbs, vec![DbTarget::Path("/data/app.db".into())]);
    }

    #[test]
    fn env_references() {
        assert!(has_env_reference("$HOME"));
        assert!(has_env_reference("a${X}b"));
        assert!(has_env_reference("$1"));
        assert!(!has_env_reference("price $"));
        assert!(!has_env_reference("a $ b"));
    }

    #[test]
    fn each_rule_names_its_key() {
        let cases: &[(&str, &str)] = &[
            ("dbs: []\n", "dbs:"),
            ("dbs:\n  - replica: {type: file, path: /b}\n", "dbs[0].path:"),
            ("dbs:\n  - {path: /a, dir: /d, replica: {type: file, path: /b}}\n", "dbs[0]: has both"),
            ("dbs:\n  - {dir: /d, replica: {type: file, path: /b}}\n", "dbs[0].pattern:"),
            ("dbs:\n  - {path: /a}\n", "dbs[0].replica:"),
            ("dbs:\n  - path: /a\n    replica:\n", "dbs[0].replica:"),
            ("dbs:\n  - path: /a\n    path: /b\n    replica: {type: file, path: /b}\n", "(root): duplicate key"),
            ("dbs:\n  - {path: /a, replica: {type: ftp}}\n", "dbs[0].replica.type:"),
            ("dbs:\n  - {path: /a, replicas: [{type: file, path: /b}, {type: file, path: /c}]}\n", "dbs[0].replicas:"),
            ("dbs:\n  - {path: /a, replica: {type: file, path: /b, sync-interval: 10}}\n", "dbs[0].replica.sync-interval:"),
            ("logging: {level: loud}\ndbs:\n  - {path: /a, replica: {type: file, path: /b}}\n", "logging.level:"),
            ("logging: {type: xml}\ndbs:\n  - {path: /a, replica: {type: file, path: /b}}\n", "logging.type:"),
            ("dbs:\n  - {path: $HOME/a, replica: {type: file, path: /b}}\n", "dbs[0].path:"),
            ("exec: myapp\ndbs:\n  - {path: /a, replica: {type: file, path: /b}}\n", "exec:"),
            ("mcp-addr: ':3001'\ndbs:\n  - {path: /a, replica: {type: file, path: /b}}\n", "mcp-addr:"),
        ];
        for (yaml, key) in cases {
            let errs = errors(yaml);
            assert!(
                errs.iter().any(|e| e.starts_with(key)),
                "{yaml:?}: expected {key}, got {errs:?}"
            );
        }
    }

    #[test]
    fn unknown_keys_warn_or_fail() {
        let yaml = format!("{GOOD}    sync-intervall: 1s\n");
        let lenient = check(&yaml, Strictness::Lenient);
        assert!(lenient.errors.is_empty());
        assert_eq!(lenient.warnings[0].key, "dbs[0].sync-intervall");
        assert_eq!(
            check(&yaml, Strictness::Strict).errors[0].key,
            "dbs[0].sync-intervall"
        );
    }

    #[test]
    fn public_addr_warns() {
        let yaml = format!("addr: ':9090'\n{GOOD}");
        assert_eq!(check(&yaml, Strictness::Lenient).warnings[0].key, "addr");
        let yaml = format!("addr: '127.0.0.1:9090'\n{GOOD}");
        assert!(check(&yaml, Strictness::Lenient).warnings.is_empty());
    }
}
