//! The litestream config model: parsing the stored YAML, every validation rule, and the few
//! facts the supervisor needs from it (databases, control socket, shutdown timeout).
//!
//! The user's bytes are kept as they are: litestream reads exactly what was saved (plus an
//! appended block when the supervisor injects one), never a re-serialisation, because litestream
//! parses YAML 1.1 and a round trip through another YAML dialect can change meanings.

pub(crate) mod document;
mod duration;
mod placeholder;
mod rules;
mod schema;

use std::path::PathBuf;
use std::time::Duration;

use zeroize::Zeroizing;

pub use duration::parse_go_duration;

pub use crate::error::Problem;
use crate::error::{Error, Result};

/// litestream's default `shutdown-sync-timeout`.
pub const DEFAULT_SHUTDOWN_SYNC_TIMEOUT: Duration = Duration::from_secs(30);

/// A database entry of the config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DbTarget {
    /// `path:` a single database file.
    Path(PathBuf),
    /// `dir:` + `pattern:` a directory of databases.
    Dir {
        /// The directory.
        dir: PathBuf,
        /// The file pattern (Go glob).
        pattern: String,
    },
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
        use document::{Node, Value};
        let rel = file.strip_prefix(dir).ok()?.to_str()?.to_string();
        // The merged view (anchors, aliases and merge keys resolved), written anew.
        let Value::Map(mut top) = document::parse(&self.yaml).ok()?.root?.value else {
            return None;
        };
        let dbs = top.iter().find(|(k, _)| k == "dbs")?.1.as_seq()?;
        let entry = dbs.iter().find(|d| {
            d.get("dir")
                .and_then(Node::text)
                .is_some_and(|d| crate::runtime::litestream_path(d) == dir)
        })?;
        let mut replica = match (entry.get("replica"), entry.get("replicas")) {
            (Some(r), _) => r.clone(),
            (None, Some(rs)) => rs.as_seq()?.first()?.clone(),
            _ => return None,
        };
        let Value::Map(map) = &mut replica.value else {
            return None;
        };
        let join = |base: &str| format!("{}/{rel}", base.trim_end_matches('/'));
        let text = |map: &[(String, Node)], key: &str| {
            map.iter()
                .find(|(k, _)| k == key)
                .and_then(|(_, v)| v.text().map(str::to_owned))
        };
        let (key, value) = match text(map, "url") {
            Some(url) => ("url", join(&url)),
            None => ("path", join(&text(map, "path").unwrap_or_default())),
        };
        map.retain(|(k, _)| k != key);
        map.push((key.into(), Node::string(value)));
        let db = Node::map(vec![
            ("path".into(), Node::string(file.to_string_lossy())),
            ("replica".into(), replica),
        ]);
        top.retain(|(k, _)| k != "socket");
        for (k, v) in top.iter_mut() {
            if k == "dbs" {
                *v = Node {
                    value: Value::Seq(vec![db.clone()]),
                    ..v.clone()
                };
            }
        }
        let yaml = document::to_yaml(&Node::map(top));
        LitestreamConfig::parse(yaml.as_bytes(), Strictness::Lenient).ok()
    }

    /// A config for each `path` database, naming that database alone (the other keys as they
    /// are, the control socket left out), in config order: for one-off litestream commands,
    /// which then read one database entry instead of all of them. Only ever given to `ltx`, never
    /// to `replicate` (which reads the user's own bytes). Empty when the YAML cannot be read
    /// anew; a database missing from the answer is asked about with the whole config.
    pub fn for_each_path_db(&self) -> Vec<(PathBuf, Self)> {
        use document::{Node, Value};
        let Some(Value::Map(top)) = document::parse(&self.yaml)
            .ok()
            .and_then(|d| d.root)
            .map(|r| r.value)
        else {
            return Vec::new();
        };
        let Some(entries) = top
            .iter()
            .find(|(k, _)| k == "dbs")
            .and_then(|(_, v)| v.as_seq())
        else {
            return Vec::new();
        };
        let mut rest: Vec<(String, Node)> = top
            .iter()
            .filter(|(k, _)| k != "socket" && k != "dbs")
            .cloned()
            .collect();
        rest.push(("dbs".into(), Node::map(Vec::new())));
        let mut out = Vec::new();
        for entry in entries {
            let Some(path) = entry.get("path").and_then(Node::text) else {
                continue;
            };
            let mut top = rest.clone();
            if let Some(last) = top.last_mut() {
                last.1.value = Value::Seq(vec![entry.clone()]);
            }
            let yaml = document::to_yaml(&Node::map(top));
            if let Ok(one) = LitestreamConfig::parse(yaml.as_bytes(), Strictness::Lenient) {
                out.push((crate::runtime::litestream_path(path), one));
            }
        }
        out
    }

    /// The directory of the first database's replica when it is a local `file` replica at an
    /// absolute path (`type: file` or no type, or a `file://` URL), as litestream writes it;
    /// `None` for any other replica, or when that cannot be told for certain.
    pub fn local_replica_dir(&self) -> Option<PathBuf> {
        use document::Node;
        let root = document::parse(&self.yaml).ok()?.root?;
        let entry = root.get("dbs")?.as_seq()?.first()?.clone();
        let replica = match (entry.get("replica"), entry.get("replicas")) {
            (Some(r), _) => r.clone(),
            (None, Some(rs)) => rs.as_seq()?.first()?.clone(),
            _ => return None,
        };
        let text = |key: &str| {
            replica
                .get(key)
                .and_then(Node::text)
                .filter(|t| !t.is_empty())
        };
        let path = match (text("url"), text("type")) {
            (Some(url), _) => url.strip_prefix("file://")?.to_owned(),
            (None, None | Some("file")) => text("path")?.to_owned(),
            (None, Some(_)) => return None,
        };
        (path.starts_with('/') && !path.contains(['?', '#']))
            .then(|| crate::runtime::litestream_path(&path))
    }

    /// The `path` database that `arg` names (compared as litestream reads paths), a file under
    /// one of its `dir:` entries, or, when `arg` is absent, the only `path` database. What a
    /// command acts on is named this way, never by the store's `--db`.
    pub fn database(&self, arg: Option<&std::path::Path>) -> Result<PathBuf> {
        let paths: Vec<&PathBuf> = self
            .dbs()
            .iter()
            .filter_map(|d| match d {
                DbTarget::Path(p) => Some(p),
                DbTarget::Dir { .. } => None,
            })
            .collect();
        let listed = || {
            paths
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        };
        match arg {
            None if paths.len() == 1 => Ok(paths[0].clone()),
            None => Err(Error::Usage(format!(
                "name the database: the config replicates {}",
                listed()
            ))),
            Some(a) => {
                let want = crate::runtime::absolute(a)?;
                let in_dir = self.dbs().iter().any(|d| {
                matches!(d, DbTarget::Dir { dir, .. } if crate::runtime::absolute(dir).is_ok_and(|d| want.starts_with(d)))
            });
                paths
                    .iter()
                    .find(|p| crate::runtime::absolute(p).is_ok_and(|p| p == want))
                    .map(|p| (*p).clone())
                    .or_else(|| in_dir.then(|| a.to_path_buf()))
                    .ok_or_else(|| {
                        Error::Usage(format!(
                            "{} is not in the stored config (it replicates {})",
                            a.display(),
                            listed()
                        ))
                    })
            }
        }
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

/// A double-quoted YAML scalar (`\`, `"`, control characters and line separators escaped), so
/// any path, URL or secret reads back as itself.
pub(crate) fn yaml_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() || matches!(c, '\u{2028}' | '\u{2029}' | '\u{feff}') => {
                out.push_str(&format!("\\u{:04x}", c as u32))
            }
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
    fn a_command_names_its_database_or_there_is_only_one() {
        let two = "dbs:\n  - path: /srv/a.db\n    replica: {type: file, path: /b/a}\n  - path: /srv/b.db\n    replica: {type: file, path: /b/b}\n  - dir: /srv/tenants\n    pattern: \"*.db\"\n    replica: {type: file, path: /b/t}\n";
        let config = LitestreamConfig::parse(two.as_bytes(), Strictness::Lenient).unwrap();
        let err = config.database(None).unwrap_err().to_string();
        assert!(
            err.contains("name the database") && err.contains("/srv/b.db"),
            "{err}"
        );
        assert_eq!(
            config.database(Some(Path::new("/srv/./b.db"))).unwrap(),
            Path::new("/srv/b.db")
        );
        assert_eq!(
            config
                .database(Some(Path::new("/srv/tenants/x.db")))
                .unwrap(),
            Path::new("/srv/tenants/x.db")
        );
        let err = config.database(Some(Path::new("/srv/c.db"))).unwrap_err();
        assert!(
            err.to_string().contains("not in the stored config"),
            "{err}"
        );
        let one = "dbs:\n  - path: /srv/a.db\n    replica: {type: file, path: /b/a}\n";
        let config = LitestreamConfig::parse(one.as_bytes(), Strictness::Lenient).unwrap();
        assert_eq!(config.database(None).unwrap(), Path::new("/srv/a.db"));
    }

    /// The text at `dbs[0].replica.KEY` of `yaml`, and at the root key `root`.
    fn replica_and_root(yaml: &str, key: &str, root: &str) -> (Option<String>, Option<String>) {
        let doc = document::parse(yaml).unwrap().root.unwrap();
        let replica = doc.get("dbs").unwrap().as_seq().unwrap()[0]
            .get("replica")
            .unwrap();
        let text = |n: Option<&document::Node>| n.and_then(|n| n.text()).map(str::to_owned);
        (text(replica.get(key)), text(doc.get(root)))
    }

    #[test]
    fn a_dir_file_gets_its_own_place_in_the_replica() {
        let yaml = "access-key-id: AK\ns3: &s3 {type: s3, bucket: b}\ndbs:\n  - dir: /data/tenants\n    pattern: \"*.db\"\n    replica:\n      <<: *s3\n      path: backups/\n  - dir: /data/other\n    pattern: \"*.db\"\n    replica:\n      url: s3://b/other\n";
        let config = LitestreamConfig::parse(yaml.as_bytes(), Strictness::Lenient).unwrap();
        let one = config
            .for_dir_file(Path::new("/data/tenants"), Path::new("/data/tenants/a.db"))
            .unwrap();
        assert_eq!(one.dbs(), &[DbTarget::Path("/data/tenants/a.db".into())]);
        let (path, key) = replica_and_root(one.yaml(), "path", "access-key-id");
        assert_eq!(path.as_deref(), Some("backups/a.db"), "{}", one.yaml());
        assert_eq!(key.as_deref(), Some("AK"));
        // Written from the merged view: the anchor's keys are in the replica itself.
        let (bucket, _) = replica_and_root(one.yaml(), "bucket", "");
        assert_eq!(bucket.as_deref(), Some("b"), "{}", one.yaml());
        assert!(!one.yaml().contains("<<"));
        let other = config
            .for_dir_file(Path::new("/data/other"), Path::new("/data/other/x.db"))
            .unwrap();
        let (url, _) = replica_and_root(other.yaml(), "url", "");
        assert_eq!(
            url.as_deref(),
            Some("s3://b/other/x.db"),
            "{}",
            other.yaml()
        );
        assert!(config
            .for_dir_file(Path::new("/elsewhere"), Path::new("/elsewhere/a.db"))
            .is_none());
    }
}
