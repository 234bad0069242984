//! The litestream config model: parsing the stored YAML, every validation rule, and the few
//! facts the supervisor needs from it (databases, control socket, shutdown timeout).
//!
//! The user's bytes are kept as they are: litestream reads exactly what was saved (plus an
//! appended block when the supervisor injects one), never a re-serialisation, because litestream
//! parses YAML 1.1 and a round trip through another YAML dialect can change meanings.

mod duration;
mod rules;

use std::path::PathBuf;
use std::time::Duration;

use zeroize::Zeroizing;

pub use duration::parse_go_duration;

use crate::error::{Error, Result};

/// litestream's default `shutdown-sync-timeout`.
pub const DEFAULT_SHUTDOWN_SYNC_TIMEOUT: Duration = Duration::from_secs(30);

/// One validation finding: the key it is about and what is wrong or what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Where in the config, e.g. `dbs[1].replica.type` (`(root)` for the whole document).
    pub key: String,
    /// What is wrong and what to do.
    pub message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

/// A database entry of the config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DbTarget {
    /// `path:` a single database file.
    Path(PathBuf),
    /// `dir:` + `pattern:` a directory of databases.
    Dir { dir: PathBuf, pattern: String },
}

/// The user's own `socket:` section, when there is one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SocketSection {
    /// `enabled: true`.
    pub enabled: bool,
    /// `path:` (litestream's default when absent).
    pub path: Option<PathBuf>,
}

/// A validated litestream config: the user's bytes plus what the supervisor reads from them.
pub struct LitestreamConfig {
    yaml: Zeroizing<String>,
    dbs: Vec<DbTarget>,
    socket: Option<SocketSection>,
    shutdown_sync_timeout: Duration,
    sync_interval: Option<Duration>,
    meta_paths: Vec<(PathBuf, PathBuf)>,
    warnings: Vec<Problem>,
}

impl std::fmt::Debug for LitestreamConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LitestreamConfig")
            .field(
                "yaml",
                &format_args!("<{} bytes redacted>", self.yaml.len()),
            )
            .field("dbs", &self.dbs)
            .field("socket", &self.socket)
            .field("shutdown_sync_timeout", &self.shutdown_sync_timeout)
            .finish_non_exhaustive()
    }
}

/// How strict validation is about keys litestream does not know.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Strictness {
    /// Unknown keys are warnings.
    #[default]
    Lenient,
    /// Unknown keys are errors.
    Strict,
}

impl LitestreamConfig {
    /// Parses and validates `bytes`. Every problem found is reported at once, each naming its
    /// key; warnings are kept for the caller to show ([`LitestreamConfig::warnings`]).
    pub fn parse(bytes: &[u8], strictness: Strictness) -> Result<Self> {
        let text = std::str::from_utf8(bytes).map_err(|_| {
            Error::InvalidConfig(vec![Problem {
                key: "(root)".into(),
                message: "the config is not UTF-8 text".into(),
            }])
        })?;
        let yaml = Zeroizing::new(text.to_owned());
        let report = rules::check(&yaml, strictness);
        if !report.errors.is_empty() {
            return Err(Error::InvalidConfig(report.errors));
        }
        Ok(LitestreamConfig {
            yaml,
            dbs: report.facts.dbs,
            socket: report.facts.socket,
            shutdown_sync_timeout: report
                .facts
                .shutdown_sync_timeout
                .unwrap_or(DEFAULT_SHUTDOWN_SYNC_TIMEOUT),
            sync_interval: report.facts.sync_interval,
            meta_paths: report.facts.meta_paths,
            warnings: report.warnings,
        })
    }

    /// The user's YAML, exactly as stored.
    pub fn yaml(&self) -> &str {
        &self.yaml
    }

    /// The databases it replicates.
    pub fn dbs(&self) -> &[DbTarget] {
        &self.dbs
    }

    /// The user's `socket:` section, if any.
    pub fn socket(&self) -> Option<&SocketSection> {
        self.socket.as_ref()
    }

    /// `shutdown-sync-timeout`, or litestream's default of 30 s.
    pub fn shutdown_sync_timeout(&self) -> Duration {
        self.shutdown_sync_timeout
    }

    /// The longest `sync-interval` set anywhere (global or per replica), if any; litestream's
    /// default is 1 s.
    pub fn sync_interval(&self) -> Option<Duration> {
        self.sync_interval
    }

    /// Where litestream keeps its state for the `path` database `db`: its `meta-path`, or
    /// `.NAME-litestream` beside it.
    pub fn state_dir(&self, db: &std::path::Path) -> PathBuf {
        match self.meta_paths.iter().find(|(p, _)| p == db) {
            Some((_, meta)) => meta.clone(),
            None => default_state_dir(db),
        }
    }

    /// A config naming only `file`, one database of the `dir` entry `dir`, with that entry's
    /// replica moved to where litestream replicates the file (its path or URL joined with the
    /// file's name): for one-off litestream commands, which do not know the files of a `dir:`
    /// entry. Only ever given to `ltx` and `restore`, never to `replicate` (which reads the
    /// user's own bytes).
    pub fn for_dir_file(&self, dir: &std::path::Path, file: &std::path::Path) -> Option<Self> {
        use serde_yaml::Value;
        let rel = file.strip_prefix(dir).ok()?.to_str()?.to_string();
        let mut root: Value = serde_yaml::from_str(&self.yaml).ok()?;
        let entry = root
            .get("dbs")?
            .as_sequence()?
            .iter()
            .find(|d| {
                d.get("dir")
                    .and_then(Value::as_str)
                    .is_some_and(|d| crate::runtime::litestream_path(d) == dir)
            })?
            .clone();
        let mut replica = match (entry.get("replica"), entry.get("replicas")) {
            (Some(r), _) => r.clone(),
            (None, Some(Value::Sequence(rs))) => rs.first()?.clone(),
            _ => return None,
        };
        let join = |base: &str| format!("{}/{rel}", base.trim_end_matches('/'));
        let map = replica.as_mapping_mut()?;
        if let Some(url) = map.get("url").and_then(Value::as_str).map(join) {
            map.insert("url".into(), url.into());
        } else {
            let base = map.get("path").and_then(Value::as_str).unwrap_or("");
            map.insert("path".into(), join(base).into());
        }
        let mut db = serde_yaml::Mapping::new();
        db.insert("path".into(), file.to_string_lossy().into_owned().into());
        db.insert("replica".into(), replica);
        let top = root.as_mapping_mut()?;
        top.remove("socket");
        top.insert("dbs".into(), Value::Sequence(vec![Value::Mapping(db)]));
        let yaml = serde_yaml::to_string(&root).ok()?;
        LitestreamConfig::parse(yaml.as_bytes(), Strictness::Lenient).ok()
    }

    /// A redactor for this config's credentials.
    pub fn redactor(&self) -> crate::redact::Redactor {
        crate::redact::Redactor::from_yaml(&self.yaml)
    }

    /// Findings that do not stop litestream from running but are probably mistakes.
    pub fn warnings(&self) -> &[Problem] {
        &self.warnings
    }

    /// Logs each warning through `tracing`.
    pub fn log_warnings(&self) {
        for w in &self.warnings {
            tracing::warn!(key = %w.key, "config: {}", w.message);
        }
    }
}

/// litestream's state directory beside `db` when no `meta-path` is set: `.NAME-litestream`.
pub fn default_state_dir(db: &std::path::Path) -> PathBuf {
    let name = db
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    db.with_file_name(format!(".{name}-litestream"))
}

/// The default config `init` writes: one database, one replica (a URL or a local directory).
pub fn default_yaml(db: &std::path::Path, replica: &str) -> String {
    let replica_line = if replica.contains("://") {
        format!("      url: {}\n", yaml_quote(replica))
    } else {
        format!("      type: file\n      path: {}\n", yaml_quote(replica))
    };
    format!(
        "# litestream config, saved encrypted by rip-litestream init\n\
         dbs:\n  - path: {}\n    replica:\n{replica_line}      sync-interval: 1s\n",
        yaml_quote(&db.to_string_lossy())
    )
}

/// A double-quoted YAML scalar (escapes `\` and `"`), so any path or URL reads back as itself.
pub(crate) fn yaml_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn a_dir_file_gets_its_own_place_in_the_replica() {
        let yaml = "access-key-id: AK\ndbs:\n  - dir: /data/tenants\n    pattern: \"*.db\"\n    replica:\n      type: s3\n      bucket: b\n      path: backups/\n  - dir: /data/other\n    pattern: \"*.db\"\n    replica:\n      url: s3://b/other\n";
        let config = LitestreamConfig::parse(yaml.as_bytes(), Strictness::Lenient).unwrap();
        let one = config
            .for_dir_file(Path::new("/data/tenants"), Path::new("/data/tenants/a.db"))
            .unwrap();
        assert_eq!(one.dbs(), &[DbTarget::Path("/data/tenants/a.db".into())]);
        assert!(one.yaml().contains("path: backups/a.db"), "{}", one.yaml());
        assert!(one.yaml().contains("access-key-id: AK"));
        let other = config
            .for_dir_file(Path::new("/data/other"), Path::new("/data/other/x.db"))
            .unwrap();
        assert!(
            other.yaml().contains("url: s3://b/other/x.db"),
            "{}",
            other.yaml()
        );
        assert!(config
            .for_dir_file(Path::new("/elsewhere"), Path::new("/elsewhere/a.db"))
            .is_none());
    }
}
