//! The validation rules of a litestream config, each failure naming its key and what to do.

use std::path::PathBuf;
use std::time::Duration;

use super::document::{self, Kind, Node, Note, Value};

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

enum Type {
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

fn kind_of(section: Section, key: &str) -> Option<Type> {
    use Section as S;
    use Type::*;
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
    fn walk(&mut self, map: &[(String, Node)], section: Section, at: &str) {
        for (name, v) in map {
            let name = name.as_str();
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
                Some(Type::Scalar) => {}
                Some(Type::Duration) => {
                    if let Some(d) = self.duration(&key, v) {
                        if name == "sync-interval" {
                            let longest = self.report.facts.sync_interval.unwrap_or_default();
                            self.report.facts.sync_interval = Some(longest.max(d));
                        }
                    }
                }
                Some(Type::Map(inner)) => match &v.value {
                    Value::Map(m) => self.walk(m, inner, &key),
                    _ if v.is_null() => {}
                    _ => self.error(&key, format!("must be a mapping, found {}", describe(v))),
                },
                Some(Type::List(inner)) => match &v.value {
                    Value::Seq(items) => {
                        for (i, item) in items.iter().enumerate() {
                            let item_key = format!("{key}[{i}]");
                            match &item.value {
                                Value::Map(m) => self.walk(m, inner, &item_key),
                                _ => self.error(
                                    &item_key,
                                    format!("must be a mapping, found {}", describe(item)),
                                ),
                            }
                        }
                    }
                    _ if v.is_null() => {}
                    _ => self.error(&key, format!("must be a list, found {}", describe(v))),
                },
            }
        }
    }

    fn duration(&mut self, key: &str, v: &Node) -> Option<Duration> {
        let number =
            matches!(v.as_scalar(), Some(s) if matches!(s.kind, Kind::Int(_) | Kind::Float(_)));
        match v.as_str() {
            _ if number => {
                let n = v.text().unwrap_or_default();
                self.error(
                    key,
                    format!("a bare number ({n}) means nanoseconds to litestream: write a duration with its unit, like \"{n}s\""),
                );
                None
            }
            Some(s) => {
                match parse_go_duration(s) {
                    Some(d) => Some(d),
                    None => {
                        self.error(key, format!("`{s}` is not a duration: write it like \"1s\", \"500ms\" or \"5m\""));
                        None
                    }
                }
            }
            None => {
                self.error(
                    key,
                    format!("must be a duration like \"1s\", found {}", describe(v)),
                );
                None
            }
        }
    }

    /// Rejects `$NAME` and `${NAME}` anywhere: the stored config must be self-contained.
    fn no_env_vars(&mut self, v: &Node, at: &str) {
        match &v.value {
            Value::Scalar(s) if has_env_reference(&s.text) => self.error(
                at,
                "contains environment-variable syntax ($NAME or ${NAME}): the stored config must be self-contained, put the value itself in the config",
            ),
            Value::Seq(items) => {
                for (i, item) in items.iter().enumerate() {
                    self.no_env_vars(item, &format!("{at}[{i}]"));
                }
            }
            Value::Map(m) => {
                for (name, item) in m {
                    self.no_env_vars(item, &join(at, name));
                }
            }
            Value::Scalar(_) => {}
        }
    }

    fn root(&mut self, root: &Node, text: &str) {
        let Some(entries) = root.as_map() else {
            return;
        };
        self.walk(entries, Section::Root, "");
        // Most configs hold no `$` at all: then there is nothing to look for.
        if text.contains('$') {
            for (name, item) in entries {
                self.no_env_vars(item, name);
            }
        }
        if root.get("exec").is_some() {
            self.error(
                "exec",
                "is not supported: rip-litestream is the process manager, run the application with `rip-litestream run -- APP ARGS...`",
            );
        }
        if root.get("mcp-addr").is_some() {
            self.error(
                "mcp-addr",
                "is not supported: it re-reads the config from disk and exposes control over HTTP; remove it",
            );
        }
        if let Some(addr) = root.get("addr").and_then(Node::as_str) {
            if !is_loopback_addr(addr) {
                self.warn(
                    "addr",
                    format!("`{addr}` is not a loopback address: the metrics server also serves /debug/pprof; bind it to 127.0.0.1"),
                );
            }
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
                path: socket.get("path").and_then(Node::as_str).map(PathBuf::from),
            });
        }
        if let Some(s) = root.get("shutdown-sync-timeout").and_then(Node::as_str) {
            self.report.facts.shutdown_sync_timeout = parse_go_duration(s);
        }
        match root.get("dbs").map(|d| (d, d.as_seq())) {
            Some((_, Some(dbs))) if !dbs.is_empty() => {
                for (i, db) in dbs.iter().enumerate() {
                    if db.as_map().is_some() {
                        self.db(db, &format!("dbs[{i}]"));
                    }
                }
            }
            Some((_, Some(_))) | None => self.error(
                "dbs",
                "no database to replicate: add a `dbs:` list with at least one `- path: /path/to/app.db` and its `replica:`",
            ),
            Some((d, None)) if d.is_null() => self.error(
                "dbs",
                "no database to replicate: add a `dbs:` list with at least one `- path: /path/to/app.db` and its `replica:`",
            ),
            Some(_) => {} // reported by walk
        }
    }

    fn logging(&mut self, logging: &Node) {
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

    fn db(&mut self, db: &Node, at: &str) {
        let path = db
            .get("path")
            .and_then(Node::as_str)
            .filter(|s| !s.is_empty());
        let dir = db
            .get("dir")
            .and_then(Node::as_str)
            .filter(|s| !s.is_empty());
        match (path, dir) {
            (Some(_), Some(_)) => self.error(at, "has both `path` and `dir`: keep one (`path` for a file, `dir` + `pattern` for a directory)"),
            (None, None) => self.error(&join(at, "path"), "is missing: set `path` to the database file (or `dir` and `pattern` for a directory)"),
            (Some(p), None) => {
                // Paths as litestream resolves them (`~`, relative paths, `sqlite://`).
                let p = crate::runtime::litestream_path(p);
                self.report.facts.dbs.push(DbTarget::Path(p.clone()));
                if let Some(meta) = db.get("meta-path").and_then(Node::as_str) {
                    self.report
                        .facts
                        .meta_paths
                        .push((p, crate::runtime::litestream_path(meta)));
                }
            }
            (None, Some(d)) => match db.get("pattern").and_then(Node::as_str).filter(|s| !s.is_empty()) {
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
            (Some(r), None) if r.as_map().is_some() => self.replica(r, &join(at, "replica")),
            (None, Some(rs)) if rs.as_seq().is_some() => {
                let rs = rs.as_seq().unwrap_or_default();
                if rs.len() != 1 {
                    self.error(
                        &join(at, "replicas"),
                        format!("has {} entries; litestream 0.5 supports exactly one replica per database: use a single `replica:`", rs.len()),
                    );
                } else if rs[0].as_map().is_some() {
                    self.replica(&rs[0], &format!("{at}.replicas[0]"));
                }
            }
            (Some(r), None) | (None, Some(r)) if r.is_null() => self.error(
                &join(at, "replica"),
                "is empty: give it a `type` (file, s3, ...) or a `url`",
            ),
            _ => {} // other wrong shapes are reported by walk
        }
    }

    fn replica(&mut self, replica: &Node, at: &str) {
        let url = replica
            .get("url")
            .and_then(Node::as_str)
            .filter(|s| !s.is_empty());
        match replica.get("type").map(|t| (t, t.as_str())) {
            Some((_, Some(t)))
                if t == "file"
                    && url.is_none()
                    && replica.get("path").and_then(Node::as_str).is_none() =>
            {
                self.error(
                    &join(at, "path"),
                    "is missing: a file replica needs the directory it writes to",
                );
            }
            Some((_, Some(t))) if REPLICA_TYPES.contains(&t) => {}
            Some((t, _)) => self.error(
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
    match document::parse(yaml) {
        Ok(doc) => {
            for note in &doc.notes {
                if let Note::Duplicate { at, key, line } = note {
                    let place = if at.is_empty() {
                        String::new()
                    } else {
                        format!(" in {at}")
                    };
                    checker.error(
                        "(root)",
                        format!("duplicate key `{key}`{place} at line {line}: litestream would silently keep only the last one; keep one"),
                    );
                }
            }
            match doc.root {
                Some(root) if root.as_map().is_some() => checker.root(&root, yaml),
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

fn join(at: &str, key: &str) -> String {
    if at.is_empty() {
        key.into()
    } else {
        format!("{at}.{key}")
    }
}

fn describe(v: &Node) -> String {
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
fn shown(v: &Node) -> String {
    match v.text() {
        Some(text) => format!("`{text}`"),
        None => describe(v),
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
